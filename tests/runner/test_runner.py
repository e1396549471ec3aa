"""The durable runner, driven with the scripted provider and the real built-in tools."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.db import OperationalError, connection, transaction
from django.tasks.signals import task_finished
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agentdash import audit, runner
from agentdash.approvals import AlreadyDecided, InvalidEdit, decide, decide_many
from agentdash.models import AgentSession, AuditEvent, Message, ToolCall
from agentdash.providers.scripted import ScriptedProvider
from agentdash.runner import SessionRunner, advance_session
from agentdash.sessions import cancel_session, start_session
from agentdash.states import (
    CallState,
    IllegalTransition,
    SessionStatus,
    enter,
    insert,
    transition,
    update_if,
)
from agentdash.worker import StepWorker, claim_next_task, run_task

pytestmark = pytest.mark.django_db(transaction=True)


def tool_use(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def text(words: str) -> dict[str, Any]:
    return {"type": "text", "text": words}


def start(*turns: list[dict[str, Any]], **options: Any) -> AgentSession:
    return start_session(goal="Test the runner", script=list(turns), **options)


def reload(session: AgentSession) -> AgentSession:
    return AgentSession.objects.get(pk=session.pk)


def tool_results(session: AgentSession, index: int) -> list[dict[str, Any]]:
    return Message.objects.get(session=session, index=index).content


def test_it_runs_auto_approved_calls_to_completion(run_queued_steps):
    session = start(
        [text("Let me look."), tool_use("list_dir", "c1", path=".")],
        [text("The workspace is empty. Done.")],
    )
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.COMPLETED
    assert session.steps == 2
    call = ToolCall.objects.get(session=session)
    assert call.state == CallState.SUCCEEDED
    # The tool's read-only hint decided it (no rule matched); the reason says so.
    assert call.approval_reason == "list_dir does not require confirmation (read-only)"
    assert call.policy_rule == "default:read_only"
    [result] = tool_results(session, 2)
    assert result["type"] == "tool_result"
    assert result["tool_use_id"] == "c1"
    assert result["is_error"] is False
    assert audit.verify().ok


def test_it_pauses_for_confirmation_and_holds_no_process(run_queued_steps):
    session = start([tool_use("write_file", "w1", path="notes.md", content="hello")])
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.WAITING_APPROVAL
    call = ToolCall.objects.get(session=session)
    assert call.state == CallState.PENDING_APPROVAL
    assert "requires confirmation" in call.approval_reason
    assert call.arguments == {"path": "notes.md", "content": "hello"} | (call.arguments or {})
    # Nothing runs and nothing is queued while the human thinks: no lease, no task.
    assert session.lease_owner == ""
    assert session.lease_expires_at is None
    assert not DBTaskResult.objects.ready().exists()
    assert not (session.workspace / "notes.md").exists()


def test_an_approval_runs_the_call_and_resumes_the_session(run_queued_steps, operator):
    session = start([tool_use("write_file", "w1", path="notes.md", content="hello")])
    run_queued_steps()
    call = ToolCall.objects.get(session=session)

    decision = decide(call.pk, user=operator, approve=True, reason="looks fine")
    assert decision.actor == "user:olivia"
    run_queued_steps()

    assert (session.workspace / "notes.md").read_text() == "hello"
    assert reload(session).status == SessionStatus.COMPLETED
    call.refresh_from_db()
    assert call.state == CallState.SUCCEEDED
    kinds = list(
        AuditEvent.objects.filter(tool_call_id=call.pk)
        .order_by("seq")
        .values_list("kind", flat=True)
    )
    assert kinds == [
        "toolcall.pending_approval",
        "toolcall.approved",
        "toolcall.running",
        "toolcall.succeeded",
    ]
    assert audit.verify().ok


def test_a_rejection_reason_reaches_the_model(run_queued_steps, operator):
    session = start(
        [tool_use("write_file", "w1", path="notes.md", content="hello")],
        [text("Understood, I will not write it.")],
    )
    run_queued_steps()
    call = ToolCall.objects.get(session=session)

    decide(call.pk, user=operator, approve=False, reason="Use docs/ instead")
    run_queued_steps()

    [result] = tool_results(session, 2)
    assert result["is_error"] is True
    assert "Use docs/ instead" in result["content"]
    assert not (session.workspace / "notes.md").exists()
    assert reload(session).status == SessionStatus.COMPLETED


def test_edited_arguments_are_validated_run_and_audited_in_both_versions(
    run_queued_steps, operator
):
    session = start([tool_use("write_file", "w1", path="notes.md", content="draft")])
    run_queued_steps()
    call = ToolCall.objects.get(session=session)

    with pytest.raises(InvalidEdit) as invalid:
        decide(call.pk, user=operator, approve=True, edited_arguments={"content": "x"})
    assert "path" in str(invalid.value)
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL

    decide(
        call.pk,
        user=operator,
        approve=True,
        edited_arguments={"path": "final.md", "content": "edited"},
    )
    run_queued_steps()

    assert (session.workspace / "final.md").read_text() == "edited"
    assert not (session.workspace / "notes.md").exists()
    approved = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.approved")
    assert approved.payload["original_arguments"]["content"] == "draft"
    assert approved.payload["edited_arguments"]["content"] == "edited"


def test_a_second_decision_is_refused_naming_who_decided(
    run_queued_steps, operator, second_operator
):
    session = start([tool_use("write_file", "w1", path="a.txt", content="a")])
    run_queued_steps()
    call = ToolCall.objects.get(session=session)

    decide(call.pk, user=operator, approve=True)
    with pytest.raises(AlreadyDecided, match="approved by user:olivia"):
        decide(call.pk, user=second_operator, approve=False, reason="too late")
    assert call.decisions.count() == 1


@pytest.mark.parametrize("call_id", [987654, 2**63, 0], ids=["unknown", "beyond-a-bigint", "zero"])
def test_deciding_a_call_that_does_not_exist_says_so(operator, call_id):
    with pytest.raises(ToolCall.DoesNotExist):
        decide(call_id, user=operator, approve=True)
    with pytest.raises(ToolCall.DoesNotExist):
        decide_many([call_id], user=operator, approve=False)


def test_deciding_needs_the_permission(run_queued_steps, viewer):
    session = start([tool_use("write_file", "w1", path="a.txt", content="a")])
    run_queued_steps()
    call = ToolCall.objects.get(session=session)
    events = AuditEvent.objects.count()

    with pytest.raises(PermissionDenied):
        decide(call.pk, user=viewer, approve=True)
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    assert AuditEvent.objects.count() == events


def test_an_illegal_transition_is_refused_and_changes_nothing():
    session = start([text("hi")])
    events = AuditEvent.objects.count()

    with pytest.raises(IllegalTransition, match="queued → completed is not allowed"):
        transition(session, SessionStatus.COMPLETED, actor="test")
    assert reload(session).status == SessionStatus.QUEUED
    assert AuditEvent.objects.count() == events


def test_a_stale_transition_loses_the_race_and_changes_nothing():
    session = start([text("hi")])
    stale_copy = reload(session)
    transition(session, SessionStatus.RUNNING, actor="first")
    events = AuditEvent.objects.count()

    with pytest.raises(IllegalTransition, match="no longer queued"):
        transition(stale_copy, SessionStatus.CANCELLED, actor="second")
    assert reload(session).status == SessionStatus.RUNNING
    assert AuditEvent.objects.count() == events


def test_bad_model_output_becomes_error_results_and_the_session_goes_on(run_queued_steps):
    huge = "x" * (100 * 1024 * 1024)
    session = start(
        [
            tool_use("no_such_tool", "b1"),
            tool_use("read_file", "b2"),  # missing its required path
            tool_use("list_dir", "b1", path="."),  # a duplicate id
            tool_use("write_file", "b4", path="big.txt", content=huge),
        ],
        [text("I will try again more carefully.")],
    )
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.COMPLETED
    calls = list(ToolCall.objects.filter(session=session).order_by("position"))
    assert [c.state for c in calls] == [CallState.ERRORED] * 4
    results = tool_results(session, 2)
    assert all(r["is_error"] for r in results)
    assert "Unknown tool 'no_such_tool'" in results[0]["content"]
    assert "path" in results[1]["content"]
    assert "already used" in results[2]["content"]
    assert "bytes" in results[3]["content"]
    # The 100 MB argument is neither run, nor kept, nor sent back to the model.
    assert not (session.workspace / "big.txt").exists()
    assert len(str(Message.objects.get(session=session, index=1).content)) < 100_000
    assert audit.verify().ok


def expensive_scripted_model(settings: Any) -> None:
    """Price the scripted model so that any reply costs far more than a cent."""
    settings.AGENTDASH_MODEL_PRICES = {
        **settings.AGENTDASH_MODEL_PRICES,
        "scripted": {"input": 1_000_000, "output": 1_000_000},
    }


def assert_settled_unrun(call: ToolCall) -> None:
    """The call never started: it was rejected as its session ended, and says why."""
    call.refresh_from_db()
    assert call.state == CallState.REJECTED
    assert not AuditEvent.objects.filter(tool_call_id=call.pk, kind="toolcall.running").exists()
    assert call.latest_result.observation.startswith("The session ended: ")


def test_the_step_limit_ends_the_session_as_budget_exceeded(run_queued_steps):
    session = start(
        [tool_use("list_dir", "c1", path=".")],
        [tool_use("list_dir", "c2", path=".")],
        [text("done")],
        max_steps=2,
    )
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.BUDGET_EXCEEDED
    assert session.steps == 2
    assert "limit of 2 model steps" in session.status_reason
    # The limit counts model calls: the calls of the last reply it allowed still ran.
    states = ToolCall.objects.filter(session=session).values_list("state", flat=True)
    assert list(states) == [CallState.SUCCEEDED, CallState.SUCCEEDED]


def test_the_token_limit_ends_the_session(run_queued_steps):
    session = start(
        [tool_use("list_dir", "c1", path=".")],
        [tool_use("list_dir", "c2", path=".")],
        [text("done")],
        max_tokens=1,
    )
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.BUDGET_EXCEEDED
    assert session.steps == 1
    assert "the limit is 1" in session.status_reason
    assert_settled_unrun(ToolCall.objects.get(session=session))


def test_the_cost_limit_ends_the_session(run_queued_steps, settings):
    expensive_scripted_model(settings)
    session = start(
        [tool_use("list_dir", "c1", path=".")],
        [text("done")],
        max_cost=Decimal("0.01"),
    )
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.BUDGET_EXCEEDED
    assert session.cost > Decimal("0.01")
    assert session.steps == 1
    # The reply that went over the budget was the last thing done: its call, though
    # auto-approved, never ran.
    assert_settled_unrun(ToolCall.objects.get(session=session))
    assert audit.verify().ok


def test_a_reply_over_the_budget_asks_nobody_to_approve_its_calls(run_queued_steps, settings):
    expensive_scripted_model(settings)
    session = start(
        [tool_use("write_file", "w1", path="a.txt", content="a")],
        [text("done")],
        max_cost=Decimal("0.01"),
    )
    run_queued_steps()

    assert reload(session).status == SessionStatus.BUDGET_EXCEEDED
    call = ToolCall.objects.get(session=session)
    assert_settled_unrun(call)
    assert call.decision.actor == "runner"
    assert not (session.workspace / "a.txt").exists()


def test_an_approval_does_not_run_a_call_once_the_session_is_over_budget(
    run_queued_steps, operator
):
    session = start([tool_use("write_file", "w1", path="a.txt", content="a")], [text("done")])
    run_queued_steps()
    assert reload(session).status == SessionStatus.WAITING_APPROVAL
    # Its budget lowered below what it spent while the call waited for a human.
    AgentSession.objects.filter(pk=session.pk).update(max_tokens=1)
    call = ToolCall.objects.get(session=session)
    decide(call.pk, user=operator, approve=True)

    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.BUDGET_EXCEEDED
    assert_settled_unrun(call)
    assert not (session.workspace / "a.txt").exists()
    assert audit.verify().ok


def test_a_reply_that_arrives_after_a_cancel_is_still_paid_for(
    run_queued_steps, operator, monkeypatch, settings
):
    expensive_scripted_model(settings)
    session = start([tool_use("list_dir", "c1", path=".")], [text("done")])
    answer = ScriptedProvider.complete

    def cancelled_while_thinking(provider: ScriptedProvider, *args: Any, **kwargs: Any) -> Any:
        reply = answer(provider, *args, **kwargs)
        cancel_session(reload(session), user=operator)
        return reply

    monkeypatch.setattr(ScriptedProvider, "complete", cancelled_while_thinking)
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.CANCELLED
    # Not used: no turn, no call.
    assert list(session.messages.values_list("role", flat=True)) == ["user"]
    assert not ToolCall.objects.filter(session=session).exists()
    # But paid for, and audited.
    assert session.input_tokens > 0
    assert session.output_tokens > 0
    assert session.cost > Decimal("0.01")
    [discarded] = AuditEvent.objects.filter(session_id=session.pk, kind="model.reply_discarded")
    assert discarded.payload["input_tokens"] == session.input_tokens
    assert discarded.payload["output_tokens"] == session.output_tokens
    assert Decimal(discarded.payload["cost"]) == session.cost
    assert audit.verify().ok


def test_cancelling_a_waiting_session_rejects_its_pending_calls(run_queued_steps, operator):
    session = start([tool_use("write_file", "w1", path="a.txt", content="a")])
    run_queued_steps()

    cancel_session(reload(session), user=operator)
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.CANCELLED
    call = ToolCall.objects.get(session=session)
    assert call.state == CallState.REJECTED
    assert call.decision.actor == "user:olivia"
    with pytest.raises(IllegalTransition):
        cancel_session(session, user=operator)


def test_a_cancel_that_lands_after_the_step_loaded_the_session_still_stops_its_call(
    run_queued_steps, operator, monkeypatch
):
    session = start([tool_use("write_file", "w1", path="a.txt", content="a")], [text("done")])
    run_queued_steps()
    call = ToolCall.objects.get(session=session)
    decide(call.pk, user=operator, approve=True)
    # The step has read the session (running) and its approved call; the cancel comes
    # just before the call would start.
    start_call = SessionRunner._start

    def cancelled_meanwhile(runner: SessionRunner, *args: Any) -> Any:
        cancel_session(reload(session), user=operator)
        return start_call(runner, *args)

    monkeypatch.setattr(SessionRunner, "_start", cancelled_meanwhile)
    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.REJECTED
    assert call.latest_result.observation == "The session was cancelled."
    assert not (session.workspace / "a.txt").exists()
    assert reload(session).status == SessionStatus.CANCELLED
    assert Message.objects.filter(session=session).count() == 2  # no further model turn
    assert audit.verify().ok


def test_cancelling_leaves_no_call_approved_for_ever(run_queued_steps, operator):
    session = start(
        [
            tool_use("write_file", "w1", path="a.txt", content="a"),
            tool_use("write_file", "w2", path="b.txt", content="b"),
        ]
    )
    run_queued_steps()
    first, _waiting = ToolCall.objects.filter(session=session).order_by("position")
    decide(first.pk, user=operator, approve=True)  # the step waits for the second

    cancel_session(reload(session), user=operator)
    run_queued_steps()

    states = set(ToolCall.objects.filter(session=session).values_list("state", flat=True))
    assert states == {CallState.REJECTED}
    assert not (session.workspace / "a.txt").exists()
    assert audit.verify().ok


def test_a_step_that_runs_twice_does_nothing_the_second_time(run_queued_steps):
    session = start([tool_use("list_dir", "c1", path=".")], [text("done")])
    run_queued_steps()
    events = AuditEvent.objects.count()

    assert (
        SessionRunner(session.pk).advance() == "not claimed: finished, or another worker holds it"
    )
    assert AuditEvent.objects.count() == events


def test_a_claimed_session_is_not_advanced_by_a_second_runner():
    session = start([text("hi")])
    first = SessionRunner(session.pk)
    assert first._claim()

    assert SessionRunner(session.pk).advance().startswith("not claimed")
    assert reload(session).status == SessionStatus.QUEUED


def test_cancelling_stops_a_tool_while_it_runs(operator):
    session = start(
        [tool_use("run_shell", "s1", command="sleep 30")],
        [text("never reached")],
    )
    worker = StepWorker(poll_interval=0.05)
    thread = worker.start_thread()
    try:
        deadline = time.monotonic() + 30
        call = None
        while time.monotonic() < deadline and call is None:
            call = ToolCall.objects.filter(
                session=session, state=CallState.PENDING_APPROVAL
            ).first()
            time.sleep(0.02)
        assert call is not None
        decide(call.pk, user=operator, approve=True)
        while time.monotonic() < deadline:
            if ToolCall.objects.get(pk=call.pk).state == CallState.RUNNING:
                break
            time.sleep(0.02)
        cancelled_at = time.monotonic()
        cancel_session(reload(session), user=operator)
        while time.monotonic() < deadline:
            if ToolCall.objects.get(pk=call.pk).state == CallState.INTERRUPTED:
                break
            time.sleep(0.02)
        stopped_after = time.monotonic() - cancelled_at
    finally:
        worker.shutdown()
        thread.join(timeout=30)
    call.refresh_from_db()
    assert call.state == CallState.INTERRUPTED
    assert stopped_after < 10  # far less than the 30 s the command wanted
    assert "cancelled" in call.latest_result.observation
    assert reload(session).status == SessionStatus.CANCELLED
    assert not thread.is_alive()
    # The step ended with the call: no results turn, no further model call.
    assert list(Message.objects.filter(session=session).values_list("index", flat=True)) == [0, 1]


def test_the_worker_claims_ready_steps_oldest_first_each_once():
    first, second = advance_session.enqueue(1), advance_session.enqueue(2)
    advance_session.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(3)

    claimed = [claim_next_task("worker-a"), claim_next_task("worker-b")]

    assert [str(row.pk) for row in claimed] == [first.id, second.id]
    assert [row.worker_ids for row in claimed] == [["worker-a"], ["worker-b"]]
    for row in claimed:
        stored = DBTaskResult.objects.get(pk=row.pk)
        assert stored.status == "RUNNING"
        assert stored.started_at is not None
    assert claim_next_task("worker-a") is None  # the third is not due for an hour


def test_a_finished_step_records_its_outcome_and_says_so():
    session = start_session(goal="Say hi.", script=[[text("Hi.")]])
    finished: list[Any] = []

    def on_finished(task_result: Any, **kwargs: Any) -> None:
        finished.append(task_result)

    task_finished.connect(on_finished)
    try:
        run_task(claim_next_task("worker-a"))
    finally:
        task_finished.disconnect(on_finished)

    [row] = DBTaskResult.objects.all()
    assert row.status == "SUCCESSFUL"
    assert row.return_value == SessionStatus.COMPLETED
    assert row.finished_at is not None
    assert [(r.status, r.return_value) for r in finished] == [
        ("SUCCESSFUL", SessionStatus.COMPLETED)
    ]
    assert reload(session).status == SessionStatus.COMPLETED


def test_a_failed_step_is_recorded_as_failed(monkeypatch):
    start_session(goal="Say hi.", script=[[text("Hi.")]])

    def database_gone(runner: SessionRunner) -> str:
        raise OperationalError("the database went away")

    monkeypatch.setattr(SessionRunner, "advance", database_gone)
    run_task(claim_next_task("worker-a"))

    [row] = DBTaskResult.objects.all()
    assert row.status == "FAILED"
    assert row.exception_class_path == "django.db.utils.OperationalError"
    assert "the database went away" in row.traceback


def test_steps_in_one_process_send_the_model_the_whole_conversation(operator):
    session = start(
        [tool_use("write_file", "w1", path="a.txt", content="one")],
        [
            tool_use("list_dir", "l1", path="."),
            tool_use("write_file", "w2", path="b.txt", content="2"),
        ],
        [text("done")],
    )
    worker = StepWorker()
    sent: list[list[dict[str, Any]]] = []
    messages = runner._Conversations.messages

    def recording(self: Any, session: AgentSession, in_hand: list[Message]) -> list[dict[str, Any]]:
        sent.append(messages(self, session, in_hand))
        return sent[-1]

    runner._Conversations.messages = recording  # type: ignore[method-assign]
    try:
        worker.run_ready_steps()
        for call_id in ("w1", "w2"):
            decide(
                ToolCall.objects.get(session=session, call_id=call_id).pk,
                user=operator,
                approve=True,
            )
            worker.run_ready_steps()
    finally:
        runner._Conversations.messages = messages  # type: ignore[method-assign]

    assert reload(session).status == SessionStatus.COMPLETED
    stored = [
        {"role": message.role, "content": message.content}
        for message in Message.objects.filter(session=session).order_by("index")
    ]
    # Each model call got exactly the conversation stored up to then, read in part.
    assert len(sent) == 3
    for conversation in sent:
        assert conversation == stored[: len(conversation)]
    assert len(sent[-1]) == len(stored) - 1  # all but the final reply


def test_a_cached_conversation_that_does_not_match_the_rows_is_read_again():
    session = start([text("hi")])
    key = (session.pk, session.created_at)
    conversations = runner._Conversations(4)
    # Longer than the session's conversation: only a changed database could do this.
    conversations.entries[key] = [{"role": "user", "content": "stale"}] * 3

    goal = Message.objects.get(session=session, index=0)

    assert conversations.messages(session, [goal]) == [
        {"role": "user", "content": [{"type": "text", "text": "Test the runner"}]}
    ]


def test_the_messages_a_step_has_in_hand_are_not_read_back_unless_more_are_missing():
    session = start([text("hi")])
    goal = Message.objects.get(session=session, index=0)
    reply = Message.objects.create(
        session=session, index=1, role=Message.Role.ASSISTANT, content=[text("hi")]
    )
    conversations = runner._Conversations(4)
    with CaptureQueriesContext(connection) as cold:  # nothing cached: reads what is missing
        conversation = conversations.messages(session, [reply])
    results = Message.objects.create(
        session=session, index=2, role=Message.Role.USER, content=[text("more")]
    )
    stored = [{"role": m.role, "content": m.content} for m in (goal, reply, results)]

    assert conversation == stored[:2]
    with CaptureQueriesContext(connection) as warm:  # exactly the missing ones in hand
        assert conversations.messages(session, [reply, results]) == stored
    del conversations.entries[(session.pk, session.created_at)]
    with CaptureQueriesContext(connection) as gap:  # in hand, but not all that is missing
        assert conversations.messages(session, [reply, results]) == stored

    assert (len(cold), len(warm), len(gap)) == (1, 0, 1)


def test_insert_stores_a_row_exactly_as_the_orm_would():
    session = start([text("hi")])
    content = [{"type": "text", "text": "é ✓", "nested": {"n": 1, "f": 0.5, "none": None}}]
    fast = Message(session=session, index=1, role=Message.Role.ASSISTANT, content=content)
    insert(fast)
    orm = Message.objects.create(
        session=session, index=2, role=Message.Role.ASSISTANT, content=content
    )

    assert fast.pk is not None
    assert not fast._state.adding
    assert fast.created_at is not None  # auto_now_add applied, as save() applies it
    columns = [field.attname for field in Message._meta.concrete_fields]
    read = {row["id"]: row for row in Message.objects.filter(index__gt=0).values(*columns)}
    for stored in (fast, orm):
        assert read[stored.pk] == {name: getattr(stored, name) for name in columns}
    assert {k: v for k, v in read[fast.pk].items() if k not in {"id", "index", "created_at"}} == {
        k: v for k, v in read[orm.pk].items() if k not in {"id", "index", "created_at"}
    }


def test_update_if_writes_only_while_the_expected_values_hold():
    session = start([text("hi")])

    assert update_if(session, {"steps": 5}, {"steps": 6}) == 0
    assert (
        update_if(
            session,
            {"status": session.status, "steps": 0},
            {"steps": 1, "cost": Decimal("0.250001")},
        )
        == 1
    )
    session.refresh_from_db()
    assert (session.steps, session.cost) == (1, Decimal("0.250001"))


def test_a_new_call_enters_its_first_state_audited_as_a_transition(run_queued_steps):
    session = start([text("hi")])
    message = Message.objects.get(session=session, index=0)
    call = ToolCall(session=session, message=message, position=0, call_id="c1", tool_name="x")
    with pytest.raises(IllegalTransition):
        enter(call, CallState.RUNNING, actor="runner")  # proposed cannot go there
    with pytest.raises(TypeError):  # the checked state, not one slipped in with the fields
        enter(call, CallState.ERRORED, actor="runner", state=CallState.SUCCEEDED)
    assert not ToolCall.objects.exists()

    with transaction.atomic():
        enter(call, CallState.ERRORED, actor="runner", payload={"error": "bad"})
    stored = ToolCall.objects.get()
    assert stored.state == CallState.ERRORED
    assert stored.finished_at is not None
    event = AuditEvent.objects.get(tool_call_id=stored.pk)
    assert event.kind == "toolcall.errored"
    assert event.payload == {"from": "proposed", "to": "errored", "error": "bad"}
    with pytest.raises(TypeError):
        enter(stored, CallState.ERRORED, actor="runner")  # stored calls move by transition()
    assert audit.verify().ok


def test_a_session_is_not_started_with_a_tool_no_tool_has():
    with pytest.raises(ValueError, match=r"No tool is called 'bogus'\. The tools: .*list_dir"):
        start_session(goal="Use a bogus tool", enabled_tools=["list_dir", "bogus"])
    assert not AgentSession.objects.exists()
