"""Races on PostgreSQL, where nothing serialises writers but the row locks and leases.

Two operators decide each of 100 pending calls at the same moment (through the decision
service, then through the approval form over HTTP): exactly one decision per call, and
the other is told who decided. Two real `agent worker` processes race over the steps of
many sessions: each tool call runs exactly once, each model turn is taken once.

(tests/governance/test_roles.py races single calls on both databases; this is the
PostgreSQL-only, many-calls version, with real worker processes.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import Client
from django_tasks_db.models import DBTaskResult

from agentdash import audit
from agentdash.approvals import AlreadyDecided, decide
from agentdash.models import AgentSession, ApprovalDecision, AuditEvent, ExecutionResult, ToolCall
from agentdash.models.policy import PolicyRule
from agentdash.runner import SessionRunner, settle_open_calls
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus, transition
from agentdash.worker import StepWorker
from tests.subprocesses import ROOT, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

SESSIONS = 25
CALLS_PER_SESSION = 4  # 100 pending calls


def pending_calls(owner: Any) -> list[ToolCall]:
    """SESSIONS sessions, each paused on CALLS_PER_SESSION write_file calls of one turn."""
    for n in range(SESSIONS):
        writes = [
            {
                "type": "tool_use",
                "name": "write_file",
                "input": {"path": f"{k}.txt", "content": "x"},
            }
            for k in range(CALLS_PER_SESSION)
        ]
        start_session(
            goal=f"Race {n}", owner=owner, script=[writes, [{"type": "text", "text": "Done."}]]
        )
    StepWorker().run_ready_steps()
    calls = list(ToolCall.objects.order_by("pk"))
    assert len(calls) == SESSIONS * CALLS_PER_SESSION
    assert {call.state for call in calls} == {CallState.PENDING_APPROVAL}
    return calls


def race_each(calls: list[ToolCall], *deciders: Callable[[ToolCall], Any]) -> dict[int, list[Any]]:
    """For each call in turn, release one thread per decider at the same moment (a barrier
    per call), each on its own database connection. Returns, per call, what each decider
    got: its return value or the exception it raised, in the deciders' order."""
    barrier = threading.Barrier(len(deciders))
    outcomes: dict[int, list[Any]] = {call.pk: [None] * len(deciders) for call in calls}

    def run(index: int, decider: Callable[[ToolCall], Any]) -> None:
        try:
            for call in calls:
                barrier.wait(timeout=60)
                try:
                    outcomes[call.pk][index] = decider(call)
                except Exception as error:  # the loser's refusal is what is checked
                    outcomes[call.pk][index] = error
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=(index, decider))
        for index, decider in enumerate(deciders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def assert_one_decision_per_call(calls: list[ToolCall]) -> dict[int, ApprovalDecision]:
    per_call = Counter(ApprovalDecision.objects.values_list("tool_call_id", flat=True))
    assert per_call == {call.pk: 1 for call in calls}
    decisions = {d.tool_call_id: d for d in ApprovalDecision.objects.all()}
    for call in ToolCall.objects.filter(pk__in=[call.pk for call in calls]):
        expected = CallState.APPROVED if decisions[call.pk].approved else CallState.REJECTED
        assert call.state == expected
        # One settling event per call in the log, whoever won.
        settled = AuditEvent.objects.filter(
            tool_call_id=call.pk, kind__in=["toolcall.approved", "toolcall.rejected"]
        )
        assert settled.count() == 1
    return decisions


def test_two_operators_deciding_each_of_100_calls_at_once(operator, second_operator):
    calls = pending_calls(operator)

    outcomes = race_each(
        calls,
        lambda call: decide(call.pk, user=operator, approve=True),
        lambda call: decide(call.pk, user=second_operator, approve=False, reason="no"),
    )

    decisions = assert_one_decision_per_call(calls)
    for call in calls:
        winner = decisions[call.pk]
        [won] = [o for o in outcomes[call.pk] if isinstance(o, ApprovalDecision)]
        [lost] = [o for o in outcomes[call.pk] if not isinstance(o, ApprovalDecision)]
        assert won.pk == winner.pk
        assert isinstance(lost, AlreadyDecided), repr(lost)
        assert lost.decision is not None
        assert lost.decision.pk == winner.pk
        verb = "approved" if winner.approved else "rejected"
        assert f"already {verb} by {winner.actor}" in str(lost)
    assert audit.verify().ok


def test_two_operators_posting_the_approval_form_for_each_of_100_calls_at_once(
    operator, second_operator
):
    calls = pending_calls(operator)
    browsers = []
    for user in (operator, second_operator):
        browser = Client(enforce_csrf_checks=False)
        browser.force_login(user)
        browsers.append(browser)

    def post(browser: Client, action: str) -> Callable[[ToolCall], Any]:
        return lambda call: browser.post(
            f"/calls/{call.pk}/decide/",
            {"action": action, "card": "queue", "reason": "no"},
            HTTP_HX_REQUEST="true",
        )

    outcomes = race_each(calls, post(browsers[0], "approve"), post(browsers[1], "reject"))

    decisions = assert_one_decision_per_call(calls)
    for call in calls:
        winner = decisions[call.pk]
        statuses = sorted(response.status_code for response in outcomes[call.pk])
        assert statuses == [200, 409], statuses
        [lost] = [r for r in outcomes[call.pk] if r.status_code == 409]
        verb = "approved" if winner.approved else "rejected"
        assert f"already {verb} by {winner.actor}" in lost.content.decode()
    assert audit.verify().ok


# -- two worker processes --------------------------------------------------------------

WORKER_SESSIONS = 30
TURNS_WITH_CALLS = 3


class Workers:
    """Real `manage.py agent worker` processes on the test database. Short leases and
    frequent sweeps make them re-queue each other's sessions: more duplicate steps, more
    chances to run one twice."""

    def __init__(self, count: int, workspaces: Path, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "AGENTDASH_WORKSPACES_DIR": str(workspaces),
            "AGENTDASH_INPROCESS_WORKER": "0",
            "AGENTDASH_LEASE_SECONDS": "2",
            "AGENTDASH_SWEEP_SECONDS": "0.2",
            "AGENTDASH_WORKER_POLL_SECONDS": "0.05",
        }
        self.log = log.open("ab")
        self.processes = [
            subprocess.Popen(
                [sys.executable, "manage.py", "agent", "worker"],
                cwd=ROOT,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            for _ in range(count)
        ]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def two_workers(tmp_path) -> Iterator[Workers]:
    workers = Workers(2, settings.AGENTDASH_WORKSPACES_DIR, tmp_path / "workers.log")
    yield workers
    workers.stop()


def appending_script(session_number: int) -> list[list[dict[str, Any]]]:
    """Each turn appends its own line to runs.log in the workspace (run_python: not
    idempotent, never re-run) and lists the directory (auto-approved)."""
    turns: list[list[dict[str, Any]]] = []
    for turn in range(TURNS_WITH_CALLS):
        code = f"open('runs.log', 'a').write('s{session_number}-t{turn}\\n')"
        turns.append(
            [
                {"type": "tool_use", "name": "run_python", "input": {"code": code}},
                {"type": "tool_use", "name": "list_dir", "input": {"path": "."}},
            ]
        )
    return [*turns, [{"type": "text", "text": "Done."}]]


def test_two_worker_processes_run_each_step_exactly_once(two_workers, tmp_path):
    PolicyRule.objects.create(name="run code unasked", tool="run_python", action="allow")
    time.sleep(1)  # both workers started and listening: the sessions' NOTIFY wakes both
    sessions = [
        start_session(goal=f"Append {n}", script=appending_script(n))
        for n in range(WORKER_SESSIONS)
    ]

    deadline = time.monotonic() + 180
    finished = AgentSession.objects.filter(
        pk__in=[s.pk for s in sessions], status=SessionStatus.COMPLETED
    )
    while finished.count() < len(sessions):
        failed = AgentSession.objects.exclude(
            status__in=[SessionStatus.COMPLETED, SessionStatus.RUNNING, SessionStatus.QUEUED]
        )
        assert not failed.exists(), list(failed.values("pk", "status", "status_reason"))
        assert time.monotonic() < deadline, f"{finished.count()} of {len(sessions)} completed"
        time.sleep(0.2)

    for n, session in enumerate(sessions):
        lines = (session.workspace / "runs.log").read_text().splitlines()
        assert lines == [f"s{n}-t{turn}" for turn in range(TURNS_WITH_CALLS)]
    calls = ToolCall.objects.filter(session__in=sessions)
    assert calls.count() == WORKER_SESSIONS * TURNS_WITH_CALLS * 2
    assert set(calls.values_list("state", flat=True)) == {CallState.SUCCEEDED}
    runs = Counter(
        AuditEvent.objects.filter(kind="toolcall.running").values_list("tool_call_id", flat=True)
    )
    assert runs == {pk: 1 for pk in calls.values_list("pk", flat=True)}
    results = Counter(ExecutionResult.objects.values_list("tool_call_id", flat=True))
    assert results == runs
    # Each model turn was taken exactly once.
    replies = AuditEvent.objects.filter(kind="model.replied")
    turns = Counter((e.session_id, e.payload["message_index"]) for e in replies)
    assert set(turns.values()) == {1}
    assert len(turns) == WORKER_SESSIONS * (TURNS_WITH_CALLS + 1)
    # Both processes did run steps: the race was real.
    pids = {str(p.pid) for p in two_workers.processes}
    ran = {
        worker.rsplit(":", 1)[1]
        for ids in DBTaskResult.objects.values_list("worker_ids", flat=True)
        for worker in ids
    }
    assert pids <= ran, (pids, ran)
    assert audit.verify().ok


def test_a_call_never_starts_while_a_cancel_holds_its_session(
    operator, run_queued_steps, monkeypatch
):
    """The cancel locks the session's row to end it and settle its calls. A step that has
    claimed the session and is about to start an approved call reads the status under a
    share lock, so it waits for the cancel and then finds the session ended: the call is
    never started, never run."""
    session = start_session(
        goal="Cancelled at the worst moment",
        owner=operator,
        script=[
            [{"type": "tool_use", "name": "write_file", "input": {"path": "a.txt", "content": ""}}],
            [{"type": "text", "text": "Done."}],
        ],
    )
    run_queued_steps()
    call = ToolCall.objects.get(session=session)
    decide(call.pk, user=operator, approve=True)

    cancel_holds_the_row = threading.Event()
    finish_the_cancel = threading.Event()

    def cancel_slowly() -> None:
        try:
            with transaction.atomic():
                held = AgentSession.objects.select_for_update().get(pk=session.pk)
                cancel_holds_the_row.set()
                finish_the_cancel.wait(10)
                transition(held, SessionStatus.CANCELLED, actor="user:olivia")
                settle_open_calls(held, actor="user:olivia", reason="The session was cancelled.")
        finally:
            connections.close_all()

    canceller = threading.Thread(target=cancel_slowly)
    start_call = SessionRunner._start
    waited: list[float] = []

    def start_during_the_cancel(runner: SessionRunner, *args: Any) -> Any:
        # The step has claimed the session and read its approved call: now the cancel.
        canceller.start()
        assert cancel_holds_the_row.wait(10)
        threading.Timer(0.5, finish_the_cancel.set).start()
        began = time.monotonic()
        try:
            return start_call(runner, *args)
        finally:
            waited.append(time.monotonic() - began)

    monkeypatch.setattr(SessionRunner, "_start", start_during_the_cancel)
    run_queued_steps()
    canceller.join(10)

    [start_took] = waited
    assert start_took >= 0.4  # it waited for the cancel
    call.refresh_from_db()
    assert call.state == CallState.REJECTED
    assert call.started_at is None
    assert not (session.workspace / "a.txt").exists()
    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.CANCELLED
    assert audit.verify().ok
