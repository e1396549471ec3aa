"""What must hold when things go wrong around a step: database errors in the worker,
decisions that land while another step holds the session, sessions that end early."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError

from agentdash import worker
from agentdash.approvals import decide
from agentdash.models import AgentSession, ToolCall
from agentdash.runner import SessionRunner
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_worker_survives_a_database_error_and_goes_on(monkeypatch):
    real_sweep = worker.sweep
    failures = []

    def failing_once() -> int:
        if not failures:
            failures.append(1)
            raise OperationalError("database is locked")
        return real_sweep()

    monkeypatch.setattr(worker, "sweep", failing_once)
    step_worker = worker.StepWorker(poll_interval=0.05, sweep_interval=0.05)
    thread = step_worker.start_thread()
    try:
        time.sleep(0.5)  # past the failure and the pause after it
        session = start_session(goal="After the error", script=[[{"type": "text", "text": "Hi."}]])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if AgentSession.objects.get(pk=session.pk).is_finished:
                break
            time.sleep(0.05)
        assert failures == [1]
        assert thread.is_alive()
        assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED
    finally:
        step_worker.shutdown()
        thread.join(timeout=30)


def test_a_decision_made_while_a_step_holds_the_session_is_not_lost(operator, run_queued_steps):
    session = start_session(
        goal="Write",
        script=[
            [
                {
                    "type": "tool_use",
                    "id": "w1",
                    "name": "write_file",
                    "input": {"path": "a.txt", "content": "a"},
                }
            ],
            [{"type": "text", "text": "Done."}],
        ],
    )
    run_queued_steps()
    call = ToolCall.objects.get(session=session)
    holder = SessionRunner(session.pk)
    assert holder._claim()  # another worker is in the middle of a step

    decide(call.pk, user=operator, approve=True)
    run_queued_steps()  # the decision's step cannot claim the session and ends
    assert ToolCall.objects.get(pk=call.pk).state == CallState.APPROVED

    holder.lease_released = False
    holder._release()
    holder._reschedule_if_work_arrived()
    run_queued_steps()
    assert ToolCall.objects.get(pk=call.pk).state == CallState.SUCCEEDED
    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED


def test_a_session_that_fails_takes_its_pending_calls_out_of_the_queue(run_queued_steps):
    session = start_session(
        goal="Two calls",
        script=[
            [
                {
                    "type": "tool_use",
                    "id": "w1",
                    "name": "write_file",
                    "input": {"path": "a.txt", "content": "a"},
                }
            ],
        ],
    )
    run_queued_steps()
    runner = SessionRunner(session.pk)
    runner._end(
        AgentSession.objects.get(pk=session.pk), SessionStatus.FAILED, "The provider vanished."
    )

    call = ToolCall.objects.get(session=session)
    assert call.state == CallState.REJECTED
    assert "The provider vanished." in call.latest_result.observation
    assert not ToolCall.objects.filter(state=CallState.PENDING_APPROVAL).exists()
