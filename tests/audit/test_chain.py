"""Building the chain: seq, links, hashes an outsider can recompute, and normalised payloads."""

import datetime as dt
import itertools
import json
import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from agentdash import audit
from agentdash.models import AuditEvent

from .scheme import outsider_hash

pytestmark = pytest.mark.django_db


def test_it_numbers_events_from_one_and_links_each_to_the_previous(make_events):
    events = make_events(4)

    assert [event.seq for event in events] == [1, 2, 3, 4]
    assert events[0].prev_hash == audit.GENESIS_HASH
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash
    assert len({event.hash for event in events}) == 4


def test_it_stores_what_the_caller_said(make_events):
    with transaction.atomic():
        event = audit.record(
            "toolcall.approved",
            actor="user:alice",
            session_id=7,
            tool_call_id=70,
            payload={"reason": "looks fine"},
        )

    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.kind, stored.actor, stored.session_id, stored.tool_call_id) == (
        "toolcall.approved",
        "user:alice",
        7,
        70,
    )
    assert stored.payload == {"reason": "looks fine"}
    assert stored.created_at == event.created_at


def test_an_outsider_can_recompute_every_hash_from_the_jsonl_export(make_events):
    make_events(3, note="café ☕ \U0001f600", nested={"b": [1, 2.5, None], "a": True})

    for line in audit.export_lines(None, "jsonl"):
        exported = json.loads(line)
        assert outsider_hash(exported) == exported["hash"]


@pytest.mark.django_db(transaction=True)  # otherwise the test itself runs in a transaction
def test_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(TransactionManagementError, match=r"inside transaction\.atomic"):
        audit.record("session.created", actor="system")

    assert not AuditEvent.objects.exists()


def test_an_event_rolls_back_with_its_transaction_and_leaves_no_hole(make_events):
    make_events(2)

    def failing_change() -> None:
        with transaction.atomic():
            audit.record("session.created", actor="system")
            raise RuntimeError("the change being recorded failed")

    with pytest.raises(RuntimeError):
        failing_change()
    (event,) = make_events(1)

    assert event.seq == 3
    assert audit.verify().ok


def _head_reads(queries: CaptureQueriesContext) -> int:
    return sum(audit._HEAD_SQL in query["sql"] for query in queries.captured_queries)


@pytest.mark.django_db(transaction=True)  # each block below is a transaction of its own
def test_a_transaction_reads_the_head_once_however_many_events_it_appends():
    with CaptureQueriesContext(connection) as first, transaction.atomic():
        events = [audit.record("session.created", actor="system") for _ in range(3)]
    # A new transaction reads the head again: another could have appended meanwhile.
    with CaptureQueriesContext(connection) as second, transaction.atomic():
        events.append(audit.record("session.created", actor="system"))

    assert (_head_reads(first), _head_reads(second)) == (1, 1)
    assert [event.seq for event in events] == [1, 2, 3, 4]
    assert audit.verify().ok


def test_an_event_undone_with_its_savepoint_is_not_taken_for_the_head(make_events):
    with transaction.atomic():
        audit.record("session.created", actor="system")
        try:
            with transaction.atomic():
                audit.record("session.created", actor="system")
                raise RuntimeError("the nested change failed")
        except RuntimeError:
            pass
        with CaptureQueriesContext(connection) as queries:
            event = audit.record("session.created", actor="system")
        kept = audit.record("session.created", actor="system")

    assert _head_reads(queries) == 1
    assert (event.seq, kept.seq) == (2, 3)
    assert audit.verify().ok


def test_payloads_come_back_from_the_database_exactly_as_hashed():
    awkward = {
        "integral floats": [1.0, 1e20, -0.0],
        "fraction": 0.1 + 0.2,
        "tiny": 1.5e-7,
        "big int": 2**70,
        "cost": Decimal("0.0123"),
        "when": dt.datetime(2026, 11, 25, 14, 33, tzinfo=dt.UTC),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "tuple": (1, "two"),
        7: "a non-string key",
        "binary-ish": "a\x00b \udc80",
    }
    with transaction.atomic():
        event = audit.record("sandbox.ran", actor="worker", payload=awkward)

    stored = AuditEvent.objects.get(seq=event.seq).payload
    assert stored == event.payload
    assert stored["integral floats"] == [1, 10**20, 0]
    assert stored["cost"] == "0.0123"
    assert stored["when"] == "2026-11-25T14:33:00+00:00"
    assert stored["tuple"] == [1, "two"]
    assert stored["7"] == "a non-string key"
    assert "\x00" not in stored["binary-ish"]
    assert audit.verify().ok


@pytest.mark.parametrize("number", [float("nan"), float("inf")])
def test_it_refuses_numbers_json_cannot_hold(number):
    with pytest.raises(ValueError, match="JSON has no such number"), transaction.atomic():
        audit.record("session.created", actor="system", payload={"x": number})


def test_it_refuses_values_that_are_not_json():
    with pytest.raises(TypeError, match="convert set first"), transaction.atomic():
        audit.record("session.created", actor="system", payload={"x": {1, 2}})


def test_on_sqlite_it_refuses_transactions_that_take_no_write_lock_at_begin(monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("about SQLite's transaction mode")
    monkeypatch.setattr(connections["default"], "transaction_mode", "DEFERRED")

    with pytest.raises(ImproperlyConfigured, match="IMMEDIATE"), transaction.atomic():
        audit.record("session.created", actor="system")
