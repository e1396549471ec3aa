"""`manage.py seed_audit`: a valid chain of exactly N events that tells consistent stories."""

from __future__ import annotations

import io
import itertools

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from agentdash import audit
from agentdash.models import AgentSession, AuditEvent, ToolCall

pytestmark = pytest.mark.django_db


def seed(events: int, *extra: str) -> str:
    out = io.StringIO()
    call_command("seed_audit", "--events", str(events), *extra, stdout=out)
    return out.getvalue()


def test_it_appends_exactly_n_events_that_verify():
    assert seed(700) == "700 events appended\n"

    report = audit.verify()
    assert report.ok, report.problem
    assert report.events_checked == 700


def test_time_grows_with_seq_and_stays_in_the_period():
    seed(700, "--days", "2")

    times = list(AuditEvent.objects.order_by("seq").values_list("created_at", flat=True))
    assert all(earlier <= later for earlier, later in itertools.pairwise(times))
    assert (times[-1] - times[0]).total_seconds() > 86_400  # spread, not bunched


def test_it_continues_a_chain_that_already_has_events():
    with transaction.atomic():
        before = audit.record("session.created", actor="user:alice", payload={"goal": "x"})

    seed(300)

    assert audit.verify().ok
    assert AuditEvent.objects.count() == 301
    assert AuditEvent.objects.get(seq=2).created_at >= before.created_at


def test_the_events_agree_with_the_calls_and_sessions_they_name():
    seed(1500)

    calls = {call.pk: call for call in ToolCall.objects.all()}
    sessions = set(AgentSession.objects.values_list("pk", flat=True))
    proposals = AuditEvent.objects.filter(
        kind__in=["toolcall.pending_approval", "toolcall.auto_approved"]
    )
    assert proposals.exists()
    for event in proposals:
        call = calls[event.tool_call_id]
        assert event.payload["tool"] == call.tool_name
        assert event.session_id == call.session_id in sessions
    for decision in AuditEvent.objects.filter(kind__in=["toolcall.approved", "toolcall.rejected"]):
        call = calls[decision.tool_call_id]
        assert call.decided_at == decision.created_at
        assert call.decided_at >= call.proposed_at
    # Every kind a real run writes shows up, each state of a call at least once.
    kinds = set(AuditEvent.objects.values_list("kind", flat=True))
    assert kinds >= {
        "session.created",
        "session.running",
        "session.waiting_approval",
        "session.completed",
        "model.replied",
        "toolcall.pending_approval",
        "toolcall.auto_approved",
        "toolcall.approved",
        "toolcall.rejected",
        "toolcall.running",
        "toolcall.succeeded",
        "toolcall.errored",
    }
    assert AgentSession.objects.filter(cost__gt=0).exists()


def test_zero_events_is_refused():
    with pytest.raises(CommandError, match="at least 1"):
        seed(0)
