"""Approvals bind the exact arguments they approved; batches; allowing a tool for a session."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django_tasks_db.models import DBTaskResult

from agentdash import audit
from agentdash.approvals import AlreadyDecided, ArgumentsChanged, decide, decide_many
from agentdash.models import (
    AgentSession,
    ApprovalDecision,
    AuditEvent,
    Message,
    PolicyRule,
    ToolCall,
)
from agentdash.models.sessions import arguments_hash
from agentdash.states import CallState, SessionStatus
from tests.governance.helpers import (
    a_minute_passes,
    calls_of,
    listings,
    make_rule,
    paused_on,
    reload,
    start,
    text,
    tool_use,
)

pytestmark = pytest.mark.django_db(transaction=True)


def writes(*names: str) -> list[dict]:
    return [tool_use("write_file", name, path=f"{name}.txt", content=name) for name in names]


def test_arguments_changed_after_approval_go_back_to_the_queue(run_queued_steps, operator):
    [call] = paused_on(run_queued_steps, *writes("a"))
    decision = decide(call.pk, user=operator, approve=True)
    approved_hash = arguments_hash({"path": "a.txt", "content": "a"})
    assert decision.arguments_hash == approved_hash

    # Behind the approval's back (a bug, a hand in the database): other arguments.
    ToolCall.objects.filter(pk=call.pk).update(arguments={"path": "a.txt", "content": "evil"})
    run_queued_steps()

    call = ToolCall.objects.get(pk=call.pk)
    assert call.state == CallState.PENDING_APPROVAL
    assert call.approval_round == 2
    assert not (call.session.workspace / "a.txt").exists()
    back = AuditEvent.objects.filter(tool_call_id=call.pk, kind="toolcall.pending_approval").last()
    assert back.payload["from"] == "approved"
    assert back.payload["decided_hash"] == approved_hash
    assert back.payload["arguments_hash"] == arguments_hash(call.arguments)
    assert reload(call.session).status == SessionStatus.WAITING_APPROVAL

    # Approved again, by the same person, now that they have seen these arguments.
    decide(call.pk, user=operator, approve=True, expected_hash=call.arguments_hash)
    run_queued_steps()
    assert (call.session.workspace / "a.txt").read_text() == "evil"
    assert audit.verify().ok


def test_an_allowed_call_whose_arguments_change_before_it_runs_waits_for_a_human(
    run_queued_steps,
):
    session = start(listings(2), [text("Listed.")])
    AgentSession.objects.filter(pk=session.pk).update(calls_per_minute=1)
    run_queued_steps()  # the second call, allowed by the policy, waits for the limit
    held = calls_of(session)[1]
    assert held.state == CallState.AUTO_APPROVED
    ToolCall.objects.filter(pk=held.pk).update(arguments={"path": ".."})

    a_minute_passes()
    run_queued_steps()

    held = ToolCall.objects.get(pk=held.pk)
    assert held.state == CallState.PENDING_APPROVAL
    assert held.approval_reason == "Its arguments changed after they were allowed by the policy."
    assert reload(session).status == SessionStatus.WAITING_APPROVAL


def test_an_operator_decides_only_the_arguments_they_saw(run_queued_steps, operator):
    [call] = paused_on(run_queued_steps, *writes("a"))
    shown = call.arguments_hash
    ToolCall.objects.filter(pk=call.pk).update(arguments={"path": "b.txt", "content": "b"})
    events = AuditEvent.objects.count()

    with pytest.raises(ArgumentsChanged, match="changed after they were shown"):
        decide(call.pk, user=operator, approve=True, expected_hash=shown)
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    assert AuditEvent.objects.count() == events
    assert not ApprovalDecision.objects.exists()


@pytest.mark.parametrize(
    "arguments",
    [
        {"b": 1e20, "a": 1.5, "c": [1.0, "é", {"z": None, "y": True}]},
        {"text": "\u2603 snow", "n": -0.25},
    ],
)
def test_the_hash_survives_the_database_round_trip(run_queued_steps, arguments):
    # On PostgreSQL (make test's second pass) jsonb gives 1e20 back as an integer.
    [call] = paused_on(run_queued_steps, *writes("a"))
    ToolCall.objects.filter(pk=call.pk).update(arguments=arguments)
    assert ToolCall.objects.get(pk=call.pk).arguments_hash == arguments_hash(arguments)


def test_a_batch_of_one_step_is_decided_together_each_call_audited(run_queued_steps, operator):
    calls = paused_on(run_queued_steps, *writes("a", "b", "c"))
    assert not DBTaskResult.objects.ready().exists()

    decisions = decide_many(
        [call.pk for call in calls],
        user=operator,
        approve=True,
        reason="all three",
        expected_hashes={call.pk: call.arguments_hash for call in calls},
    )

    assert [d.tool_call_id for d in decisions] == [call.pk for call in calls]
    approved = AuditEvent.objects.filter(kind="toolcall.approved").order_by("seq")
    assert [event.tool_call_id for event in approved] == [call.pk for call in calls]
    assert DBTaskResult.objects.ready().count() == 1  # one next step for the session
    run_queued_steps()
    session = calls[0].session
    assert [(session.workspace / f"{n}.txt").read_text() for n in "abc"] == ["a", "b", "c"]


def test_a_rejected_batch_tells_the_model_about_each_call(run_queued_steps, operator):
    calls = paused_on(run_queued_steps, *writes("a", "b"))
    decide_many([call.pk for call in calls], user=operator, approve=False, reason="no files")
    run_queued_steps()
    results = Message.objects.get(session=calls[0].session, index=2).content
    assert [(r["is_error"], "no files" in r["content"]) for r in results] == [(True, True)] * 2


def test_a_batch_is_all_or_nothing(run_queued_steps, operator, second_operator):
    first, second, third = paused_on(run_queued_steps, *writes("a", "b", "c"))
    decide(second.pk, user=second_operator, approve=False)
    events = AuditEvent.objects.count()

    with pytest.raises(
        AlreadyDecided, match=f"Call {second.pk} was already rejected by user:oscar"
    ):
        decide_many([first.pk, second.pk, third.pk], user=operator, approve=True)

    assert AuditEvent.objects.count() == events
    assert [ToolCall.objects.get(pk=c.pk).state for c in (first, third)] == [
        CallState.PENDING_APPROVAL
    ] * 2
    assert ApprovalDecision.objects.count() == 1


def test_a_batch_holds_calls_of_one_step(run_queued_steps, operator):
    [one] = paused_on(run_queued_steps, *writes("a"))
    [other] = paused_on(run_queued_steps, *writes("b"))
    with pytest.raises(ValueError, match="one step"):
        decide_many([one.pk, other.pk], user=operator, approve=True)
    with pytest.raises(ToolCall.DoesNotExist, match="No tool call"):
        decide_many([one.pk, other.pk + 1000], user=operator, approve=True)
    assert not ApprovalDecision.objects.exists()


def test_a_batch_obeys_the_roles_of_each_call(run_queued_steps, operator):
    make_rule(tool="write_file", action="ask", four_eyes=True)
    calls = paused_on(run_queued_steps, *writes("a", "b"), owner=operator)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        decide_many([call.pk for call in calls], user=operator, approve=True)
    assert not ApprovalDecision.objects.exists()


def test_approve_and_allow_the_tool_for_the_rest_of_the_session(run_queued_steps, operator):
    session = start(
        writes("a"),
        writes("b"),
        [text("Both written.")],
    )
    other = start(writes("c"))
    make_rule(session=session, tool="write_file", action="ask", position=-5)
    run_queued_steps()
    [first] = calls_of(session)

    decide(first.pk, user=operator, approve=True, allow_for_session=True)
    run_queued_steps()

    rule = PolicyRule.objects.get(action="allow")
    assert (rule.session_id, rule.tool, rule.position) == (session.pk, "write_file", -6)
    created = AuditEvent.objects.get(kind="policy.rule_created")
    assert (created.actor, created.tool_call_id) == ("user:olivia", first.pk)
    assert ApprovalDecision.objects.get(tool_call=first).allow_for_session is True
    _, second = calls_of(session)
    assert second.state == CallState.SUCCEEDED
    assert second.policy_rule == f"rule:{rule.pk}"
    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED
    assert calls_of(other)[0].state == CallState.PENDING_APPROVAL  # other sessions still ask
