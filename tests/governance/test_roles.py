"""Who may approve: required groups, four eyes, two approvals (also when they race)."""

from __future__ import annotations

import io
import threading

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.db import connections

from agentdash import audit
from agentdash.approvals import AlreadyDecided, decide
from agentdash.models import ApprovalDecision, AuditEvent, ToolCall
from agentdash.states import CallState, SessionStatus
from tests.governance.helpers import audit_kinds, make_rule, paused_on, reload, tool_use

pytestmark = pytest.mark.django_db(transaction=True)

WRITE = tool_use("write_file", "w1", path="a.txt", content="a")


@pytest.fixture
def reviewers() -> Group:
    return Group.objects.create(name="reviewers")


def state_of(call: ToolCall) -> str:
    return ToolCall.objects.get(pk=call.pk).state


def test_a_required_group_is_checked_for_approvals_not_for_rejections(
    run_queued_steps, operator, second_operator, admin_user, reviewers
):
    make_rule(tool="write_file", action="ask", required_group=reviewers)
    first, second, third = (
        paused_on(run_queued_steps, tool_use("write_file", f"w{n}", path="a.txt", content="a"))[0]
        for n in range(3)
    )
    assert first.required_group == "reviewers"
    events = AuditEvent.objects.count()

    with pytest.raises(PermissionDenied, match="needs a member of the group “reviewers”"):
        decide(first.pk, user=operator, approve=True)
    assert state_of(first) == CallState.PENDING_APPROVAL
    assert AuditEvent.objects.count() == events

    operator.groups.add(reviewers)
    decide(first.pk, user=operator, approve=True)
    decide(second.pk, user=admin_user, approve=True)  # superusers pass group checks
    decide(third.pk, user=second_operator, approve=False, reason="stopping is always allowed")
    assert [state_of(c) for c in (first, second, third)] == [
        CallState.APPROVED,
        CallState.APPROVED,
        CallState.REJECTED,
    ]


@pytest.mark.parametrize("by", ["setting", "rule"])
def test_four_eyes_stop_an_operator_approving_calls_of_a_session_they_started(
    by, run_queued_steps, settings, operator, second_operator
):
    if by == "setting":
        settings.AGENTDASH_FOUR_EYES = True
    else:
        make_rule(tool="write_file", action="ask", four_eyes=True)
    [mine] = paused_on(run_queued_steps, WRITE, owner=operator)
    [also_mine] = paused_on(run_queued_steps, WRITE, owner=operator)

    with pytest.raises(PermissionDenied, match="under the four-eyes rule"):
        decide(mine.pk, user=operator, approve=True)
    decide(mine.pk, user=second_operator, approve=True)
    decide(also_mine.pk, user=operator, approve=False)  # saying no to one's own is fine
    assert state_of(mine) == CallState.APPROVED
    assert state_of(also_mine) == CallState.REJECTED


def test_four_eyes_bind_superusers_too(run_queued_steps, admin_user, settings):
    settings.AGENTDASH_FOUR_EYES = True
    [call] = paused_on(run_queued_steps, WRITE, owner=admin_user)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        decide(call.pk, user=admin_user, approve=True)


def test_without_four_eyes_the_owner_may_approve(run_queued_steps, operator):
    [call] = paused_on(run_queued_steps, WRITE, owner=operator)
    decide(call.pk, user=operator, approve=True)
    assert state_of(call) == CallState.APPROVED


def test_a_call_needing_two_approvals_waits_for_a_second_person(
    run_queued_steps, operator, second_operator
):
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)

    first = decide(call.pk, user=operator, approve=True, reason="fine by me")
    assert first.tool_call.state == CallState.PENDING_APPROVAL
    call = ToolCall.objects.get(pk=call.pk)
    assert (call.approvals_given(), call.approvals_required) == (1, 2)
    added = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.approval_added")
    assert (added.payload["approvals"], added.payload["approvals_required"]) == (1, 2)
    assert reload(call.session).status == SessionStatus.WAITING_APPROVAL

    with pytest.raises(PermissionDenied, match="olivia already approved"):
        decide(call.pk, user=operator, approve=True)
    decide(call.pk, user=second_operator, approve=True)
    run_queued_steps()

    assert state_of(call) == CallState.SUCCEEDED
    assert (call.session.workspace / "a.txt").read_text() == "a"
    assert audit_kinds(call) == [
        "toolcall.pending_approval",
        "toolcall.approval_added",
        "toolcall.approved",
        "toolcall.running",
        "toolcall.succeeded",
    ]
    assert audit.verify().ok


def test_any_rejection_rejects_a_call_needing_two_approvals(
    run_queued_steps, operator, second_operator
):
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)

    decide(call.pk, user=operator, approve=True)
    decide(call.pk, user=second_operator, approve=False, reason="not today")
    run_queued_steps()

    assert state_of(call) == CallState.REJECTED
    assert not (call.session.workspace / "a.txt").exists()


def test_an_edit_starts_a_new_round_in_which_only_approvals_of_the_new_arguments_count(
    run_queued_steps, operator, second_operator
):
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)

    decide(call.pk, user=operator, approve=True)
    edited = {"path": "b.txt", "content": "b"}
    decide(call.pk, user=second_operator, approve=True, edited_arguments=edited)
    call = ToolCall.objects.get(pk=call.pk)
    assert call.state == CallState.PENDING_APPROVAL
    assert (call.arguments, call.approval_round, call.approvals_given()) == (edited, 2, 1)

    decide(call.pk, user=operator, approve=True)  # her first approval of these arguments
    run_queued_steps()
    assert (call.session.workspace / "b.txt").read_text() == "b"
    assert not (call.session.workspace / "a.txt").exists()


def test_an_edit_meets_what_the_rules_ask_of_the_approvers_of_the_new_arguments(
    run_queued_steps, operator, second_operator, admin_user, reviewers
):
    make_rule(
        tool="write_file",
        action="ask",
        required_group=reviewers,
        approvals_required=2,
        conditions=[{"kind": "path", "glob": "prod/**"}],
    )
    [call] = paused_on(run_queued_steps, WRITE)  # a.txt: one approval by anyone
    to_prod = {"path": "prod/a.txt", "content": "a"}

    with pytest.raises(PermissionDenied, match="reviewers"):
        decide(call.pk, user=operator, approve=True, edited_arguments=to_prod)
    assert state_of(call) == CallState.PENDING_APPROVAL
    assert ToolCall.objects.get(pk=call.pk).arguments == {"path": "a.txt", "content": "a"}

    decide(call.pk, user=admin_user, approve=True, edited_arguments=to_prod)
    call = ToolCall.objects.get(pk=call.pk)
    assert call.state == CallState.PENDING_APPROVAL  # a second reviewer must approve
    assert (call.required_group, call.approvals_required) == ("reviewers", 2)
    assert "prod/a.txt" in call.preview  # the preview follows the edit
    second_operator.groups.add(reviewers)
    decide(call.pk, user=second_operator, approve=True)
    run_queued_steps()
    assert (call.session.workspace / "prod" / "a.txt").read_text() == "a"


def test_an_approved_call_goes_back_when_a_rule_now_asks_more_of_its_approvers(
    run_queued_steps, operator, second_operator
):
    [call] = paused_on(run_queued_steps, WRITE)
    decide(call.pk, user=operator, approve=True)
    make_rule(tool="write_file", action="ask", approvals_required=2)

    run_queued_steps()

    call = ToolCall.objects.get(pk=call.pk)
    assert call.state == CallState.PENDING_APPROVAL
    assert call.approvals_required == 2
    assert AuditEvent.objects.filter(
        tool_call_id=call.pk, kind="toolcall.pending_approval", actor="policy"
    ).exists()
    decide(call.pk, user=operator, approve=True)
    decide(call.pk, user=second_operator, approve=True)
    run_queued_steps()
    assert (call.session.workspace / "a.txt").read_text() == "a"


def test_one_person_cannot_allow_a_two_person_call_for_the_whole_session(
    run_queued_steps, operator
):
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)
    with pytest.raises(PermissionDenied, match="cannot allow its tool for the whole session"):
        decide(call.pk, user=operator, approve=True, allow_for_session=True)
    assert not ApprovalDecision.objects.exists()


def test_only_a_call_the_server_recorded_as_pending_can_be_decided(run_queued_steps, operator):
    [call] = paused_on(run_queued_steps, WRITE)
    decide(call.pk, user=operator, approve=True)
    run_queued_steps()
    with pytest.raises(AlreadyDecided, match="already approved by user:olivia"):
        decide(call.pk, user=operator, approve=False)
    with pytest.raises(ToolCall.DoesNotExist):
        decide(call.pk + 1000, user=operator, approve=True)


def race(*attempts) -> tuple[list[object], list[BaseException]]:
    """Run the attempts at the same moment, each on its own connection."""
    start = threading.Barrier(len(attempts))
    results: list[object] = []
    errors: list[BaseException] = []

    def run(attempt) -> None:
        try:
            start.wait()
            results.append(attempt())
        except Exception as error:  # the loser's refusal is what the test checks
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(attempt,)) for attempt in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def two_approvals_race(run_queued_steps, operator, second_operator) -> None:
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)

    results, errors = race(
        lambda: decide(call.pk, user=operator, approve=True),
        lambda: decide(call.pk, user=second_operator, approve=True),
    )

    assert errors == []
    assert len(results) == 2
    assert state_of(call) == CallState.APPROVED
    assert ApprovalDecision.objects.filter(tool_call=call, approved=True).count() == 2
    assert audit_kinds(call)[1:] == ["toolcall.approval_added", "toolcall.approved"]
    assert audit.verify().ok


def one_approval_race(run_queued_steps, operator, second_operator) -> None:
    [call] = paused_on(run_queued_steps, WRITE)

    results, errors = race(
        lambda: decide(call.pk, user=operator, approve=True),
        lambda: decide(call.pk, user=second_operator, approve=False),
    )

    assert len(results) == 1
    [error] = errors
    assert isinstance(error, AlreadyDecided)
    assert ApprovalDecision.objects.filter(tool_call=call).count() == 1
    winner = ApprovalDecision.objects.get(tool_call=call)
    assert winner.actor in str(error)


def same_person_twice_race(run_queued_steps, operator, second_operator) -> None:
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)

    results, errors = race(
        lambda: decide(call.pk, user=operator, approve=True),
        lambda: decide(call.pk, user=operator, approve=True),
    )

    assert len(results) == 1
    assert len(errors) == 1
    assert state_of(call) == CallState.PENDING_APPROVAL
    assert ApprovalDecision.objects.filter(tool_call=call).count() == 1


RACES = [two_approvals_race, one_approval_race, same_person_twice_race]


# `make test` runs these again on PostgreSQL, where the row locks do the work that
# SQLite's single writer does here.
@pytest.mark.parametrize("scenario", RACES)
def test_concurrent_decisions(scenario, run_queued_steps, operator, second_operator):
    scenario(run_queued_steps, operator, second_operator)


def test_the_decide_command_says_when_a_call_waits_for_another_approval(
    run_queued_steps, operator, second_operator
):
    make_rule(tool="write_file", action="ask", approvals_required=2)
    [call] = paused_on(run_queued_steps, WRITE)

    def agent_decide(username: str) -> str:
        out = io.StringIO()
        call_command("agent", "decide", str(call.pk), "--approve", "--user", username, stdout=out)
        return out.getvalue().strip()

    assert agent_decide("olivia") == (
        f"Call {call.pk} approved (1 of 2 approvals; it waits for the rest) by user:olivia."
    )
    assert agent_decide("oscar") == f"Call {call.pk} approved by user:oscar."
