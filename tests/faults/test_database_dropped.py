"""The database connection lost (PostgreSQL) or the database briefly locked (SQLite)
in the middle of a step of a real `manage.py agent worker`.

On PostgreSQL the worker's backends are terminated from another connection
(pg_terminate_backend), found by the application_name the worker was started with.
The worker must survive and reconnect; the step whose writes failed is taken again
once its lease lapses: a model call is asked again, a tool call that may have run is
marked interrupted (re-run only when idempotent) and the model told.

SQLite has no connection to cut: the database is a file the worker opens itself. Its
fault is another process holding the write lock; a step must wait it out (the busy
timeout), not fail.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from agentdash.approvals import decide
from agentdash.models import AgentSession, Message
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.faults.checks import assert_nothing_lost_or_doubled
from tests.faults.providers import FakeProvider, serving_fake
from tests.runner.test_crash_safety import WorkerProcess, call_in, status_of, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def anthropic(monkeypatch) -> Iterator[FakeProvider]:
    with serving_fake("anthropic", monkeypatch) as fake:
        yield fake


@pytest.fixture
def spawn_named_worker(spawn_worker) -> Callable[[], tuple[WorkerProcess, str]]:
    """Start a worker whose PostgreSQL connections carry an application_name of their
    own (libpq's PGAPPNAME), so that exactly they can be terminated: (worker, name)."""

    def spawn() -> tuple[WorkerProcess, str]:
        name = f"agentdash-fault-{uuid.uuid4().hex[:8]}"
        with pytest.MonkeyPatch.context() as only_for_the_worker:
            only_for_the_worker.setenv("PGAPPNAME", name)
            return spawn_worker(), name

    return spawn


def terminate_backends(application_name: str) -> int:
    """Cut every connection of that application, as a failover or an admin would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


def connected(application_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.postgres
def test_connections_cut_while_the_model_answers_and_the_step_is_taken_again(
    spawn_named_worker, anthropic
):
    released = threading.Event()
    anthropic.server.enqueue(
        anthropic.text("Stored nowhere: the database went away.", hold=released),
        anthropic.text("Done."),
    )
    session = start_session(goal="Say something", provider="anthropic")
    worker, name = spawn_named_worker()
    wait_for(lambda: len(anthropic.server.requests) == 1, "the model call", timeout=45)
    assert terminate_backends(name) >= 1
    released.set()  # the reply arrives; storing it fails on the dead connection

    wait_for(lambda: status_of(session) == SessionStatus.COMPLETED, "completion", timeout=45)
    assert worker.process.poll() is None, "the worker died with its connection"
    assert wait_for(lambda: connected(name), "the worker to reconnect")
    assert len(anthropic.server.requests) == 2
    session = AgentSession.objects.get(pk=session.pk)
    assert [m.text for m in session.messages.order_by("index")][1:] == ["Done."]
    assert session.steps == 1
    assert_nothing_lost_or_doubled(session, runs={})


@pytest.mark.postgres
def test_connections_cut_while_a_tool_runs_and_the_call_is_interrupted(
    spawn_named_worker, operator
):
    session = start_session(
        goal="Run something slow",
        script=[
            [
                {
                    "type": "tool_use",
                    "id": "slow_1",
                    "name": "run_python",
                    "input": {"code": "import time\ntime.sleep(2)\nprint('slept')"},
                }
            ],
            [{"type": "text", "text": "Told it was interrupted; stopping."}],
        ],
    )
    worker, name = spawn_named_worker()
    call = wait_for(lambda: call_in(session, CallState.PENDING_APPROVAL), "the pending call")
    decide(call.pk, user=operator, approve=True)
    wait_for(lambda: call_in(session, CallState.RUNNING), "the call to start running")
    assert terminate_backends(name) >= 1

    wait_for(lambda: status_of(session) == SessionStatus.COMPLETED, "completion", timeout=45)
    assert worker.process.poll() is None, "the worker died with its connection"
    call.refresh_from_db()
    # The code ran, but its result could not be stored: run_python is not idempotent,
    # so it is not run again, and the model hears that it may or may not have run.
    assert call.state == CallState.INTERRUPTED
    [told] = Message.objects.get(session=session, index=2).content
    assert told["is_error"] is True
    assert "stopped before it finished" in told["content"]
    assert_nothing_lost_or_doubled(AgentSession.objects.get(pk=session.pk), runs={"slow_1": 1})


def test_a_database_locked_while_the_model_answers_only_delays_the_step(spawn_worker, anthropic):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's file lock; PostgreSQL's fault is the terminated connection")
    released = threading.Event()
    anthropic.server.enqueue(anthropic.text("Stored once the lock is gone.", hold=released))
    session = start_session(goal="Say something", provider="anthropic")
    worker = spawn_worker()
    wait_for(lambda: len(anthropic.server.requests) == 1, "the model call", timeout=45)

    # Another process takes the write lock (readers go on: WAL) and holds it a while.
    locker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        released.set()
        time.sleep(2)  # the fault's length, well inside the worker's busy timeout (20 s)
        assert status_of(session) == SessionStatus.RUNNING
        assert not session.messages.filter(role="assistant").exists()
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    wait_for(lambda: status_of(session) == SessionStatus.COMPLETED, "completion", timeout=45)
    assert worker.process.poll() is None
    assert len(anthropic.server.requests) == 1  # waited, not failed and asked again
    assert_nothing_lost_or_doubled(AgentSession.objects.get(pk=session.pk), runs={})
