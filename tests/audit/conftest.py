"""Fixtures for the audit log's tests: a filled chain, and a way to tamper with it."""

import importlib
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, transaction

from agentdash import audit
from agentdash.models import AuditEvent

# The SQL that migration 0001 runs, so that the tests drop and restore exactly its triggers.
_migration = importlib.import_module("agentdash.migrations.0001_initial")


def execute(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def unguarded() -> Iterator[None]:
    """The database's append-only triggers dropped for the test, restored afterwards.

    This is the documented way to tamper with the log on purpose: raw SQL with the
    trigger gone. The ORM's guards stay in place.
    """
    for sql in _migration.DROP_SQL[connection.vendor]:
        execute(sql)
    yield
    for sql in _migration.APPEND_ONLY_SQL[connection.vendor]:
        execute(sql)


@pytest.fixture
def make_events() -> Callable[..., list[AuditEvent]]:
    """Append `count` events in one transaction, spread over sessions 1 and 2."""

    def make(count: int, **payload: object) -> list[AuditEvent]:
        with transaction.atomic():
            return [
                audit.record(
                    "toolcall.proposed",
                    actor="model",
                    session_id=1 + number % 2,
                    tool_call_id=number,
                    payload={"number": number, **payload},
                )
                for number in range(count)
            ]

    return make
