"""The audit log through the API: the history page's filters, keyset pages, exports."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import transaction
from django.http import StreamingHttpResponse

from agentdash import audit
from agentdash.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def events() -> list[AuditEvent]:
    """Seven events: session 1's three, session 2's four, by two actors."""
    made = []
    with transaction.atomic():
        for n in range(7):
            session = 1 if n < 3 else 2
            made.append(
                audit.record(
                    "toolcall.approved" if n % 2 else "session.created",
                    actor="user:olivia" if n % 3 else "runner",
                    session_id=session,
                    payload={"n": n, "note": "needle" if n == 5 else "hay"},
                )
            )
    return made


def seqs(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["seq"] for item in response.json()["items"]]


def test_events_come_newest_first_in_keyset_pages(as_viewer, events):
    first = as_viewer.get("/audit", limit=3).json()
    older = as_viewer.get("/audit", limit=3, before=first["older_before"]).json()
    newer = as_viewer.get("/audit", limit=3, after=older["newer_after"]).json()

    assert [e["seq"] for e in first["items"]] == [7, 6, 5]
    assert [e["seq"] for e in older["items"]] == [4, 3, 2]
    assert newer == first
    assert first["newer_after"] is None
    item = first["items"][2]
    assert item["payload"] == {"n": 4, "note": "hay"}
    assert item["hash"] == events[4].hash
    assert item["prev_hash"] == events[3].hash


def test_the_history_pages_filters_apply(as_viewer, events):
    assert seqs(as_viewer.get("/audit", session=1)) == [3, 2, 1]
    assert seqs(as_viewer.get("/audit", kind="toolcall.approved")) == [6, 4, 2]
    assert seqs(as_viewer.get("/audit", actor="runner")) == [7, 4, 1]
    assert seqs(as_viewer.get("/audit", q="needle")) == [6]
    assert seqs(as_viewer.get("/audit", since="2000-01-01T00:00:00Z")) == [7, 6, 5, 4, 3, 2, 1]
    assert seqs(as_viewer.get("/audit", until="2000-01-01T00:00:00")) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "toolcall.exploded"}, "query.kind"),
        ({"before": 5, "after": 2}, "query"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "query.until"),
        ({"since": "0001-01-01T00:00:00Z"}, "query.since"),
        ({"session": 2**63}, "query.session"),
        ({"limit": 0}, "query.limit"),
    ],
)
def test_bad_filters_are_a_422_naming_the_parameter(as_viewer, events, params, field):
    response = as_viewer.get("/audit", **params)

    assert response.status_code == 422
    assert field in {error["field"] for error in response.json()["errors"]}


def test_the_export_streams_jsonl_exactly_as_the_cli_does(as_viewer, events):
    response = as_viewer.get("/audit/export", format="jsonl", session=2)

    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    expected = "".join(audit.export_lines(AuditEvent.objects.filter(session_id=2), "jsonl"))
    assert text == expected
    assert [json.loads(line)["seq"] for line in text.splitlines()] == [4, 5, 6, 7]


def test_the_export_streams_csv(as_viewer, events):
    response = as_viewer.get("/audit/export", format="csv")

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == list(audit.EXPORT_FIELDS)
    assert [int(row[0]) for row in rows[1:]] == [1, 2, 3, 4, 5, 6, 7]


def test_the_export_refuses_an_unknown_format(as_viewer):
    response = as_viewer.get("/audit/export", format="xml")

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.format"
