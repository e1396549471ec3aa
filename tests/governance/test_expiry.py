"""Approval deadlines: an unanswered call expires, the model is told, the session goes on."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agentdash import audit
from agentdash.approvals import AlreadyDecided, decide
from agentdash.models import AgentSession, AuditEvent, Message, ToolCall
from agentdash.states import CallState, SessionStatus
from agentdash.worker import sweep
from tests.governance.helpers import calls_of, make_rule, paused_on, reload, start, text, tool_use

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_SECONDS = 0.3


@pytest.fixture
def tiny_deadlines(settings) -> None:
    settings.AGENTDASH_APPROVAL_TIMEOUT_SECONDS = DEADLINE_SECONDS


def later_steps() -> list[DBTaskResult]:
    """Steps queued to run later (a step queued to run at once has no run_after)."""
    now = timezone.now()
    return list(
        DBTaskResult.objects.filter(run_after__gt=now, run_after__lt=now + timedelta(days=1))
    )


def wait_past(call: ToolCall) -> None:
    """Sleep until the call's deadline has certainly passed."""
    left = (call.expires_at - timezone.now()).total_seconds()
    time.sleep(max(left, 0) + 0.05)


def test_an_unanswered_call_expires_and_the_model_is_told(tiny_deadlines, run_queued_steps):
    session = start(
        [tool_use("write_file", "w1", path="a.txt", content="a")],
        [text("I will manage without it.")],
    )
    run_queued_steps()
    [call] = calls_of(session)
    assert call.expires_at == call.proposed_at + timedelta(seconds=DEADLINE_SECONDS)
    # The step that will expire it is queued for the deadline, and not runnable before.
    assert DBTaskResult.objects.filter(run_after=call.expires_at).exists()
    assert not DBTaskResult.objects.ready().exists()

    wait_past(call)
    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.EXPIRED
    assert not (session.workspace / "a.txt").exists()
    [block] = Message.objects.get(session=session, index=2).content
    assert block["is_error"] is True
    assert block["content"].startswith("Nobody approved this call before its deadline")
    assert block["content"].endswith("it was not run.")
    assert call.latest_result.status == "expired"
    expired = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.expired")
    assert expired.actor == "system"
    assert reload(session).status == SessionStatus.COMPLETED
    assert audit.verify().ok


def test_a_decision_after_the_deadline_is_refused_naming_the_expiry(
    tiny_deadlines, run_queued_steps, operator
):
    [call] = paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a"))
    wait_past(call)
    events = AuditEvent.objects.count()

    # Before the expiry step has run: refused all the same, and nothing is written.
    with pytest.raises(AlreadyDecided, match=f"Call {call.pk} expired at .*will not run"):
        decide(call.pk, user=operator, approve=True)
    assert AuditEvent.objects.count() == events

    run_queued_steps()
    with pytest.raises(AlreadyDecided, match="expired"):
        decide(call.pk, user=operator, approve=True)
    assert ToolCall.objects.get(pk=call.pk).state == CallState.EXPIRED


def test_a_call_approved_in_time_still_runs_after_its_deadline(
    tiny_deadlines, run_queued_steps, operator
):
    [call] = paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a"))
    decide(call.pk, user=operator, approve=True)
    wait_past(call)
    run_queued_steps()
    assert ToolCall.objects.get(pk=call.pk).state == CallState.SUCCEEDED


def test_the_sweep_expires_calls_whose_step_was_lost(tiny_deadlines, run_queued_steps, settings):
    settings.AGENTDASH_SWEEP_SECONDS = 0.1  # sessions idle for 0.05 s count as abandoned
    [call] = paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a"))
    DBTaskResult.objects.all().delete()  # as if the queued expiry had been lost
    assert sweep() == 0  # not overdue yet: nothing owed

    wait_past(call)
    assert sweep() == 1
    run_queued_steps()
    assert ToolCall.objects.get(pk=call.pk).state == CallState.EXPIRED
    assert AgentSession.objects.get(pk=call.session_id).status == SessionStatus.COMPLETED


def test_one_expired_call_does_not_hold_up_the_decided_ones(
    tiny_deadlines, run_queued_steps, operator
):
    decided, unanswered = paused_on(
        run_queued_steps,
        tool_use("write_file", "w1", path="a.txt", content="a"),
        tool_use("write_file", "w2", path="b.txt", content="b"),
    )
    decide(decided.pk, user=operator, approve=True)
    run_queued_steps()  # runs the approved call, then waits for the other
    wait_past(unanswered)
    run_queued_steps()

    assert [c.state for c in calls_of(decided.session)] == [CallState.SUCCEEDED, CallState.EXPIRED]
    assert reload(decided.session).status == SessionStatus.COMPLETED


def test_a_rule_sets_its_own_deadline(run_queued_steps):
    make_rule(tool="write_file", action="ask", expires_after=timedelta(hours=8))
    [call] = paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a"))
    assert call.expires_at - call.proposed_at == timedelta(hours=8)


def test_a_session_pausing_again_within_a_deadline_queues_one_expiry_step(
    run_queued_steps, operator
):
    session = start(
        [tool_use("write_file", "w1", path="a.txt", content="a")],
        [tool_use("write_file", "w2", path="b.txt", content="b")],
        [text("Done.")],
    )
    run_queued_steps()
    first = calls_of(session)[0]
    decide(first.pk, user=operator, approve=True)
    run_queued_steps()  # runs it, and the session pauses again on the second call
    second = calls_of(session)[1]
    assert second.state == CallState.PENDING_APPROVAL
    [queued] = later_steps()
    assert queued.run_after == first.expires_at  # the first pause's, earlier than needed

    # Its time comes: nothing is overdue yet, so it queues one for the second call.
    AgentSession.objects.filter(pk=session.pk).update(expiry_check_at=timezone.now())
    DBTaskResult.objects.filter(pk=queued.pk).update(run_after=timezone.now())
    run_queued_steps()
    assert ToolCall.objects.get(pk=second.pk).state == CallState.PENDING_APPROVAL
    assert DBTaskResult.objects.filter(run_after=second.expires_at).exists()

    ToolCall.objects.filter(pk=second.pk).update(expires_at=timezone.now())
    DBTaskResult.objects.update(run_after=timezone.now())
    run_queued_steps()
    assert ToolCall.objects.get(pk=second.pk).state == CallState.EXPIRED
    assert reload(session).status == SessionStatus.COMPLETED
