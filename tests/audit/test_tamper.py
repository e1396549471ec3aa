"""verify() finds an edited, deleted or inserted event and names the first bad one."""

import datetime as dt
import json

import pytest
from django.db import connection

from agentdash import audit
from agentdash.models import AuditEvent

from .scheme import outsider_hash

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unguarded")]

TABLE = AuditEvent._meta.db_table


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement.format(table=TABLE), params)


def exported(seq: int) -> dict:
    """One event as the JSONL export shows it."""
    line = next(audit.export_lines(AuditEvent.objects.filter(seq=seq), "jsonl"))
    return json.loads(line)


def insert(**event: object) -> None:
    """Insert a row behind the application's back, as someone with SQL access could."""
    fields = [AuditEvent._meta.get_field(name) for name in event]
    columns = ", ".join(field.column for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    values = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, event.values(), strict=True)
    ]
    sql(f"INSERT INTO {{table}} ({columns}) VALUES ({placeholders})", values)


def forge(**fields: object) -> None:
    """Insert an event with a hash that is correct for its own contents."""
    now = dt.datetime.now(dt.UTC)
    event = {"session_id": None, "tool_call_id": None, "payload": {}, **fields}
    stamp = now.isoformat(timespec="microseconds")
    insert(**event, created_at=now, hash=outsider_hash(event | {"created_at": stamp}))


def shift_up_from(seq: int, last: int) -> None:
    """Renumber events seq..last one up (from the top: seq is unique), leaving a hole."""
    for number in range(last, seq - 1, -1):
        sql("UPDATE {table} SET seq = seq + 1 WHERE seq = %s", [number])


def test_an_intact_chain_verifies(make_events):
    make_events(5)

    report = audit.verify()

    assert report.ok
    assert (report.events_checked, report.first_bad_seq, report.problem) == (5, None, "")
    assert (report.head_seq, report.head_hash) == (5, AuditEvent.objects.get(seq=5).hash)


def test_an_empty_log_verifies():
    report = audit.verify()

    assert report.ok
    assert (report.events_checked, report.head_seq, report.head_hash) == (
        0,
        0,
        audit.GENESIS_HASH,
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "user:mallory"), ("kind", "toolcall.rejected"), ("session_id", 99)],
)
def test_it_names_an_edited_event(make_events, column, value):
    make_events(5)
    sql(f"UPDATE {{table}} SET {column} = %s WHERE seq = 3", [value])

    report = audit.verify()

    assert not report.ok
    assert report.first_bad_seq == 3
    assert report.events_checked == 3
    assert report.problem.startswith("event 3 (")
    assert "hash does not match its contents: the event was edited" in report.problem
    assert report.head_seq == 2


def test_it_names_the_event_after_one_edited_and_re_hashed(make_events):
    make_events(5)
    event = exported(3) | {"actor": "user:mallory"}
    sql(
        "UPDATE {table} SET actor = %s, hash = %s WHERE seq = 3",
        [
            event["actor"],
            outsider_hash(event),
        ],
    )

    report = audit.verify()

    assert report.first_bad_seq == 4
    assert "prev_hash is not the hash of event 3" in report.problem


@pytest.mark.parametrize(
    ("deleted", "first_bad", "missing"),
    [([3], 4, "event(s) 3 missing"), ([3, 4], 5, "event(s) 3-4 missing"), ([1], 2, "1 missing")],
)
def test_it_names_the_event_after_a_deleted_one(make_events, deleted, first_bad, missing):
    make_events(5)
    for seq in deleted:
        sql("DELETE FROM {table} WHERE seq = %s", [seq])

    report = audit.verify()

    assert not report.ok
    assert report.first_bad_seq == first_bad
    assert missing in report.problem


def test_a_cut_tail_is_visible_only_against_a_kept_head(make_events):
    make_events(5)
    kept = audit.verify()
    sql("DELETE FROM {table} WHERE seq = 5")

    report = audit.verify()

    # What the module docstring promises: the chain alone cannot see it, the head can.
    assert report.ok
    assert (report.head_seq, report.head_hash) != (kept.head_seq, kept.head_hash)


def test_it_names_an_event_inserted_with_a_wrong_hash(make_events):
    make_events(5)
    shift_up_from(3, last=5)
    insert(
        seq=3,
        created_at=dt.datetime.now(dt.UTC),
        actor="user:mallory",
        kind="toolcall.approved",
        payload={},
        prev_hash=exported(2)["hash"],
        hash="f" * 64,
    )

    report = audit.verify()

    assert report.first_bad_seq == 3
    assert "the event was edited" in report.problem


def test_it_names_the_event_after_one_inserted_with_a_forged_hash(make_events):
    make_events(5)
    shift_up_from(3, last=5)
    forge(seq=3, actor="user:mallory", kind="toolcall.approved", prev_hash=exported(2)["hash"])

    report = audit.verify()

    # The forged event is self-consistent; its successor no longer follows it.
    assert report.first_bad_seq == 4
    assert "prev_hash is not the hash of event 3" in report.problem


def test_it_names_an_appended_event_that_does_not_link(make_events):
    make_events(3)
    forge(seq=4, actor="user:mallory", kind="toolcall.approved", prev_hash="0" * 64)

    report = audit.verify()

    assert report.first_bad_seq == 4
    assert "prev_hash is not the hash of event 3" in report.problem


@pytest.mark.parametrize("seq", [0, -7])
def test_it_names_an_event_inserted_before_the_first(make_events, seq):
    """seq starts at 1; a row below it is outside the chain, however well it is forged."""
    make_events(3)
    forge(seq=seq, actor="user:mallory", kind="toolcall.approved", prev_hash="0" * 64)

    report = audit.verify()

    assert not report.ok
    assert report.first_bad_seq == seq
    assert "an event was inserted" in report.problem
    assert report.head_seq == 0


def test_it_reports_progress_every_chunk(make_events, monkeypatch):
    monkeypatch.setattr(audit, "CHUNK_SIZE", 2)
    make_events(5)
    seen: list[int] = []

    assert audit.verify(progress=seen.append).ok
    assert seen == [2, 4]
