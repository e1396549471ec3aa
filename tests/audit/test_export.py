"""export_lines(): JSONL and CSV that parse back to the log, streamed in constant memory."""

import csv
import json
import tracemalloc

import pytest
from django.db import transaction

from agentdash import audit
from agentdash.models import AuditEvent

from .scheme import outsider_hash

pytestmark = pytest.mark.django_db


def test_jsonl_has_one_event_per_line_with_every_field(make_events):
    make_events(3, note="naïve ☕")

    lines = list(audit.export_lines(None, "jsonl"))

    assert len(lines) == 3
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    first = json.loads(lines[0])
    stored = AuditEvent.objects.get(seq=1)
    assert first == {
        "seq": 1,
        "created_at": stored.created_at.isoformat(timespec="microseconds"),
        "actor": "model",
        "session_id": 1,
        "tool_call_id": 0,
        "kind": "toolcall.proposed",
        "payload": {"number": 0, "note": "naïve ☕"},
        "prev_hash": audit.GENESIS_HASH,
        "hash": stored.hash,
    }


def test_csv_has_a_header_and_one_row_per_event(make_events):
    make_events(3, quote='she said "no", then left')

    rows = list(csv.DictReader(audit.export_lines(None, "csv")))

    assert [row["seq"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0]) == list(audit.EXPORT_FIELDS)
    assert rows[0]["tool_call_id"] == "0"
    assert json.loads(rows[2]["payload"]) == {"number": 2, "quote": 'she said "no", then left'}
    for row in rows:  # every field survives the round trip: the hashes still check out
        event = row | {
            "seq": int(row["seq"]),
            "session_id": int(row["session_id"]),
            "tool_call_id": int(row["tool_call_id"]),
            "payload": json.loads(row["payload"]),
        }
        assert outsider_hash(event) == row["hash"]


def test_csv_writes_missing_ids_as_empty_cells():
    with transaction.atomic():
        audit.record("system.started", actor="system")

    (row,) = csv.DictReader(audit.export_lines(None, "csv"))
    assert (row["session_id"], row["tool_call_id"]) == ("", "")


def test_it_exports_only_the_queryset_given_in_seq_order(make_events):
    make_events(6)
    session_two = AuditEvent.objects.filter(session_id=2).order_by("-seq")

    lines = audit.export_lines(session_two, "jsonl")

    assert [json.loads(line)["seq"] for line in lines] == [2, 4, 6]


def test_an_unknown_format_fails_at_once():
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        audit.export_lines(None, "xml")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_memory_stays_bounded_by_the_chunk_not_the_log(make_events, monkeypatch, fmt):
    monkeypatch.setattr(audit, "CHUNK_SIZE", 50)
    make_events(1000, filler="x" * 2000)  # about 2 MB of export

    tracemalloc.start()
    try:
        exported = sum(len(line) for line in audit.export_lines(None, fmt))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert exported > 2_000_000
    # A materialised export would need at least its own size; 50 rows need ~100 kB.
    assert peak < exported / 4
