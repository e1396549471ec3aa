"""Nothing in the application, and no plain SQL, changes or removes an audit event."""

import pytest
from django.db import IntegrityError, connection, transaction

from agentdash.audit import AppendOnlyError
from agentdash.models import AuditEvent

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table


@pytest.fixture
def event(make_events) -> AuditEvent:
    make_events(2)
    return AuditEvent.objects.get(seq=1)


def test_saving_an_existing_event_raises(event):
    event.actor = "user:mallory"

    with pytest.raises(AppendOnlyError, match="append-only"):
        event.save()
    assert AuditEvent.objects.get(seq=1).actor == "model"


@pytest.mark.parametrize(
    "append",
    [
        lambda: AuditEvent(seq=3, actor="x", kind="x", prev_hash="", hash="").save(),
        lambda: AuditEvent.objects.create(seq=3, actor="x", kind="x", prev_hash="", hash=""),
    ],
    ids=["save", "create"],
)
def test_appending_other_than_through_record_raises(event, append):
    with pytest.raises(AppendOnlyError, match=r"append with audit\.record\(\)"):
        append()
    assert AuditEvent.objects.count() == 2


def test_deleting_an_event_raises(event):
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.count() == 2


@pytest.mark.parametrize(
    "change",
    [
        lambda events: events.update(actor="user:mallory"),
        lambda events: events.filter(seq=1).update(kind="x"),
        lambda events: events.delete(),
        lambda events: events.filter(seq=2).delete(),
        lambda events: events.bulk_update([AuditEvent(seq=1, actor="x")], ["actor"]),
        lambda events: events.bulk_create([AuditEvent(seq=3)]),
    ],
    ids=["update", "filtered-update", "delete", "filtered-delete", "bulk_update", "bulk_create"],
)
def test_the_queryset_refuses_bulk_changes(event, change):
    with pytest.raises(AppendOnlyError):
        change(AuditEvent.objects.all())
    assert list(AuditEvent.objects.values_list("seq", "actor")) == [(1, "model"), (2, "model")]


def run_in_savepoint(sql: str) -> None:
    # The savepoint keeps the test's own transaction usable after the refusal.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)


def test_the_database_refuses_a_raw_update(event):
    with pytest.raises(IntegrityError, match="append-only"):
        run_in_savepoint(f"UPDATE {TABLE} SET actor = 'user:mallory'")


@pytest.mark.postgres
def test_postgresql_refuses_a_raw_delete(event):
    with pytest.raises(IntegrityError, match="append-only"):
        run_in_savepoint(f"DELETE FROM {TABLE}")
