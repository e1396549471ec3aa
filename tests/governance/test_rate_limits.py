"""Rate limits: a session over a limit waits (its step queued for later), then runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agentdash import audit
from agentdash.models import AgentSession, AuditEvent, ToolCall
from agentdash.runner import SessionRunner
from agentdash.states import CallState, SessionStatus, transition
from agentdash.worker import sweep
from tests.governance.helpers import (
    a_minute_passes,
    calls_of,
    listings,
    make_rule,
    reload,
    start,
    text,
)

pytestmark = pytest.mark.django_db(transaction=True)


def rate_limited_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(kind="session.rate_limited"))


def test_a_session_over_its_calls_per_minute_waits_then_runs(run_queued_steps):
    session = start(listings(3), [text("Listed.")])
    AgentSession.objects.filter(pk=session.pk).update(calls_per_minute=2)
    run_queued_steps()

    calls = calls_of(session)
    assert [c.state for c in calls] == [CallState.SUCCEEDED] * 2 + [CallState.AUTO_APPROVED]
    held = reload(session)
    assert held.status == SessionStatus.RUNNING  # waiting, not failed
    assert held.lease_owner == ""
    # It may go on when the first of the two starts leaves the minute.
    assert held.rate_limited_until == calls[0].started_at + timedelta(minutes=1)
    assert DBTaskResult.objects.filter(run_after=held.rate_limited_until).exists()
    [event] = rate_limited_events()
    assert event.payload["limit"] == "session"
    assert event.payload["detail"] == "2 tool calls per minute in this session"

    # A retry within the minute is held again, and not audited again.
    assert SessionRunner(session.pk).advance() == "rate_limited"
    assert len(rate_limited_events()) == 1

    a_minute_passes()
    run_queued_steps()
    assert [c.state for c in calls_of(session)] == [CallState.SUCCEEDED] * 3
    session = reload(session)
    assert session.status == SessionStatus.COMPLETED
    assert session.rate_limited_until is None
    assert audit.verify().ok


def test_the_settings_limit_sessions_without_their_own(run_queued_steps, settings):
    settings.AGENTDASH_SESSION_CALLS_PER_MINUTE = 1
    session = start(listings(2), [text("Listed.")])
    run_queued_steps()
    assert [c.state for c in calls_of(session)] == [CallState.SUCCEEDED, CallState.AUTO_APPROVED]


def test_a_tool_limit_counts_that_tools_calls_in_every_session(run_queued_steps, settings):
    settings.AGENTDASH_TOOL_CALLS_PER_MINUTE = {"list_dir": 2}
    first = start(listings(1), [text("Listed.")])
    second = start(listings(2), [text("Listed.")])
    run_queued_steps()

    assert reload(first).status == SessionStatus.COMPLETED
    assert [c.state for c in calls_of(second)] == [CallState.SUCCEEDED, CallState.AUTO_APPROVED]
    [event] = rate_limited_events()
    assert (event.session_id, event.payload["limit"]) == (second.pk, "tool")

    a_minute_passes()
    run_queued_steps()
    assert reload(second).status == SessionStatus.COMPLETED


def test_the_running_tools_cap_holds_back_calls_until_one_ends(run_queued_steps, settings):
    settings.AGENTDASH_MAX_RUNNING_TOOLS = 1
    busy = start([text("busy")])
    # Another worker holds that session and is running one of its tools.
    AgentSession.objects.filter(pk=busy.pk).update(
        lease_owner="another worker", lease_expires_at=timezone.now() + timedelta(hours=1)
    )
    elsewhere = ToolCall.objects.create(
        session=busy,
        message=busy.messages.get(),
        position=0,
        call_id="x",
        tool_name="run_shell",
        state=CallState.RUNNING,
    )
    session = start(listings(1), [text("Listed.")])
    run_queued_steps()

    assert calls_of(session)[0].state == CallState.AUTO_APPROVED
    [event] = rate_limited_events()
    assert event.payload["detail"] == "1 tools running at once"

    transition(elsewhere, CallState.SUCCEEDED, actor="test")
    DBTaskResult.objects.update(run_after=timezone.now())  # its retry second is up
    run_queued_steps()
    assert reload(session).status == SessionStatus.COMPLETED


def test_the_sweep_leaves_a_held_back_session_alone_until_its_time(run_queued_steps, settings):
    settings.AGENTDASH_SWEEP_SECONDS = 0  # every idle session counts as abandoned
    session = start(listings(2), [text("Listed.")])
    AgentSession.objects.filter(pk=session.pk).update(calls_per_minute=1)
    run_queued_steps()
    assert reload(session).rate_limited_until is not None

    assert sweep() == 0
    AgentSession.objects.filter(pk=session.pk).update(rate_limited_until=timezone.now())
    assert sweep() == 1


def test_a_call_held_back_meets_the_rules_of_when_it_runs(run_queued_steps, operator):
    session = start(listings(2), [text("Listed.")])
    AgentSession.objects.filter(pk=session.pk).update(calls_per_minute=1)
    run_queued_steps()
    held = calls_of(session)[1]
    assert held.state == CallState.AUTO_APPROVED
    # Meanwhile an operator decides that listings need a look first.
    make_rule(tool="list_dir", action="ask", approvals_required=2)

    a_minute_passes()
    run_queued_steps()

    held.refresh_from_db()
    assert held.state == CallState.PENDING_APPROVAL
    assert held.approvals_required == 2
    assert held.approval_reason.startswith("Allowed when proposed, but now:")
    assert reload(session).status == SessionStatus.WAITING_APPROVAL
    assert audit.verify().ok
