"""Crash safety, proven by SIGKILLing a real `manage.py agent worker` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from agentdash import audit
from agentdash.approvals import decide
from agentdash.models import AgentSession, AuditEvent, Message, PolicyRule, ToolCall
from agentdash.runner import SessionRunner
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus, transition
from tests.faults.providers import FakeProvider, serving_fake
from tests.subprocesses import ROOT, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class WorkerProcess:
    """A real worker process on the test database, killed however the test likes."""

    def __init__(self, workspaces: Path, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "AGENTDASH_WORKSPACES_DIR": str(workspaces),
            "AGENTDASH_LEASE_SECONDS": "1",
            "AGENTDASH_SWEEP_SECONDS": "0.5",
            "AGENTDASH_WORKER_POLL_SECONDS": "0.05",
        }
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "agent", "worker"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def spawn_worker(tmp_path) -> Iterator[Callable[[], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def spawn() -> WorkerProcess:
        worker = WorkerProcess(settings.AGENTDASH_WORKSPACES_DIR, tmp_path / "worker.log")
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        worker.stop()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def call_in(session: AgentSession, state: str) -> ToolCall | None:
    return ToolCall.objects.filter(session=session, state=state).first()


def status_of(session: AgentSession) -> str:
    return AgentSession.objects.get(pk=session.pk).status


def runs_of(call: ToolCall) -> int:
    return AuditEvent.objects.filter(tool_call_id=call.pk, kind="toolcall.running").count()


def test_a_pending_approval_survives_a_killed_worker(spawn_worker, operator):
    session = start_session(
        goal="Write a note",
        script=[
            [
                {
                    "type": "tool_use",
                    "id": "w1",
                    "name": "write_file",
                    "input": {"path": "note.txt", "content": "survived"},
                }
            ],
            [{"type": "text", "text": "Done."}],
        ],
    )
    worker = spawn_worker()
    call = wait_for(lambda: call_in(session, CallState.PENDING_APPROVAL), "the pending call")
    worker.kill()

    spawn_worker()
    time.sleep(1.5)  # a sweep or two in the new worker: the call must stay pending
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    assert status_of(session) == SessionStatus.WAITING_APPROVAL

    decide(call.pk, user=operator, approve=True)
    wait_for(lambda: status_of(session) == SessionStatus.COMPLETED, "completion")
    assert (session.workspace / "note.txt").read_text() == "survived"
    assert runs_of(call) == 1
    assert audit.verify().ok


@pytest.fixture
def fake_api(monkeypatch) -> Iterator[FakeProvider]:
    """A fake Anthropic API for the workers: unlike a script, it counts the model calls."""
    with serving_fake("anthropic", monkeypatch) as fake:
        yield fake


def test_a_call_running_when_its_worker_dies_is_interrupted_and_the_model_told(
    fake_api, spawn_worker, operator
):
    fake_api.server.enqueue(
        fake_api.tool_use("p1", "run_python", {"code": "import time\ntime.sleep(60)"}),
        fake_api.text("It was interrupted; stopping here."),
    )
    session = start_session(goal="Run something slow", provider="anthropic")
    worker = spawn_worker()
    call = wait_for(lambda: call_in(session, CallState.PENDING_APPROVAL), "the pending call")
    decide(call.pk, user=operator, approve=True)
    wait_for(lambda: call_in(session, CallState.RUNNING), "the call to start running")
    worker.kill()

    spawn_worker()
    wait_for(lambda: status_of(session) == SessionStatus.COMPLETED, "completion")
    call.refresh_from_db()
    assert call.state == CallState.INTERRUPTED
    assert runs_of(call) == 1  # run_python is not idempotent: never re-run
    [told] = Message.objects.get(session=session, index=2).content
    assert told["is_error"] is True
    assert "stopped before it finished" in told["content"]
    # Each model turn was asked for exactly once: the call, then the reply to its result.
    assert len(fake_api.server.requests) == 2
    assert fake_api.server.pending == 0
    assert audit.verify().ok


def interrupted_listing() -> tuple[AgentSession, ToolCall]:
    """The crash staged: a list_dir call (auto-approved by its read-only hint, no human
    involved) left `running` under a lapsed lease, exactly as a SIGKILLed worker leaves
    it."""
    session = start_session(
        goal="List files",
        script=[
            [{"type": "tool_use", "id": "l1", "name": "list_dir", "input": {"path": "."}}],
            [{"type": "text", "text": "Done."}],
        ],
    )
    runner = SessionRunner(session.pk)
    assert runner._claim()
    runner.step()  # the model's turn: list_dir is proposed and auto-approved
    call = ToolCall.objects.get(session=session)
    transition(call, CallState.RUNNING, actor="runner")
    AgentSession.objects.filter(pk=session.pk).update(lease_expires_at=None, lease_owner="")
    return session, call


def test_an_interrupted_idempotent_call_is_run_again(run_queued_steps):
    """The recovery logic itself, with the crash staged."""
    session, call = interrupted_listing()

    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.SUCCEEDED
    assert [r.status for r in call.results.order_by("attempt")] == ["interrupted", "success"]
    assert status_of(session) == SessionStatus.COMPLETED
    # The model reads the run that finished, and that it was not the first.
    [told] = Message.objects.get(session=session, index=2).content
    assert told["is_error"] is False
    assert told["content"].startswith("The first attempt was interrupted")
    assert "run again" in told["content"]


@pytest.mark.parametrize(
    ("action", "why"),
    [
        ("deny", "It was not run again: Denied by rule"),
        ("ask", "It was not run again: Held for an operator by rule"),
    ],
)
def test_an_interrupted_call_the_policy_no_longer_allows_is_not_run_again(
    run_queued_steps, action, why
):
    session, call = interrupted_listing()
    PolicyRule.objects.create(name="listings", tool="list_dir", action=action)

    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.INTERRUPTED
    [result] = call.results.all()
    assert result.status == "interrupted"
    assert why in result.observation  # the model reads why it was not run again
    interrupted = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.interrupted")
    assert interrupted.payload["rerun"] is False
    assert status_of(session) == SessionStatus.COMPLETED


def test_an_interrupted_call_is_not_run_again_once_the_session_is_over_budget(
    run_queued_steps,
):
    session, call = interrupted_listing()
    AgentSession.objects.filter(pk=session.pk).update(max_tokens=1)

    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.INTERRUPTED
    [result] = call.results.all()
    assert "It was not run again: the session is over its budget (Used " in result.observation
    interrupted = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.interrupted")
    assert interrupted.payload["rerun"] is False
    assert status_of(session) == SessionStatus.BUDGET_EXCEEDED
    assert audit.verify().ok
