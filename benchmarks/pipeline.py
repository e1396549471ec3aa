"""The whole pipeline: model step (scripted), persistence, audit, policy, execution.

Each database is measured in a child process of its own (Django is configured once
per process), on a fresh database, with the worker running as a thread in that
process exactly as `make run` runs it:

- throughput: auto-approved list_dir calls per second, from a session's start to its
  completion (10 calls per model turn);
- pause: from the model's reply in hand to the session waiting with its lease
  released and its step's task row marked finished (the reply, its call, the policy's
  decision and their audit rows stored): only then does it hold no process. The
  operator decides 20 ms later, with the worker asleep as a human would find it
  (deciding the very moment the worker wrote its last rows measured SQLite's write
  lock and the interpreter's switch interval, not the resume);
- resume: from an operator's decide() to the next model call (the decision and its
  audit rows, the task queued, the worker woken, the claim, the tool run, its result
  and the message carrying it back). Resume, model time and pause together are one
  whole cycle, with no overlap;
- decision to tool start: decide() to the call's `started_at`.

LangGraph's interrupt and resume (SQLite checkpointer), measured the same way with the
same tool (benchmarks/_peer_langgraph.py), are reported from the same run: the targets
were set as LangGraph's figures on a faster machine, and both move with the machine.

The resume figure's note also gives the median time write_file itself took (its
recorded duration_ms): on ext4, rewriting a file in place makes close() wait for its
blocks to be allocated, so the tool alone is a large share of the cycle.

On SQLite, one resume cycle's statements are also captured (sqlite3's trace hook gives
each as SQLite ran it, values and COMMITs included) and replayed by sqlite3 alone on
copies of the database as it was before that decision: the cycle's floor, what its
writes cost with no Django, no Python of ours and no hand-off between threads.

    python -m benchmarks pipeline              # both databases
    python -m benchmarks.pipeline --probe sqlite   # one, printing raw JSON
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, percentile, probe_in_child

BENCH_DB = "agentdash_bench"
TURNS = 100
CALLS_PER_TURN = 10
PAUSE_CYCLES = 200
OPERATOR_THINKS_SECONDS = 0.02
FLOOR_REPLAYS = 50


def run() -> list[Figure]:
    figures: list[Figure] = []
    try:
        peer = probe_in_child("benchmarks._peer_langgraph", "sqlite", timeout=300)
    except RuntimeError as error:
        peer = None
        figures.append(Figure("LangGraph interrupt/resume", None, "", note=str(error)))
    for database in ("sqlite", "postgres"):
        try:
            data = _probe_in_child(database)
        except RuntimeError as error:
            figures.append(Figure(f"pipeline ({database})", None, "", note=str(error)))
            continue
        figures += _figures(database, data, peer if database == "sqlite" else None)
    if peer is not None:
        figures += _peer_figures(peer)
    return figures


def _peer_figures(peer: dict[str, Any]) -> list[Figure]:
    """LangGraph's figures from this same run (see benchmarks/_peer_langgraph.py)."""
    return [
        Figure(
            f"LangGraph {what} median (SQLite checkpointer)",
            statistics.median(peer[f"{what}_ms"]),
            "ms",
            note=f"p95 {percentile(peer[f'{what}_ms'], 95):.2f} ms over "
            f"{len(peer[f'{what}_ms'])}; the same tool, measured the same way in this run",
        )
        for what in ("pause", "resume")
    ]


def _peer_note(peer: dict[str, Any] | None, what: str) -> str:
    if peer is None:
        return ""
    return f"; LangGraph {statistics.median(peer[f'{what}_ms']):.2f} ms in this run"


def _figures(database: str, data: dict[str, Any], peer: dict[str, Any] | None) -> list[Figure]:
    sqlite = database == "sqlite"
    pause, resume, start = data["pause_ms"], data["resume_ms"], data["decision_to_start_ms"]
    return [
        Figure(
            f"pipeline throughput ({database})",
            data["calls_per_second"],
            "calls/s",
            target="≥ 300" if sqlite else "",
            passed=data["calls_per_second"] >= 300 if sqlite else None,
            note=f"{data['calls']} auto-approved list_dir calls, {CALLS_PER_TURN} per turn",
        ),
        Figure(
            f"pause cycle median ({database})",
            statistics.median(pause),
            "ms",
            target="< 3.5" if sqlite else "",
            passed=statistics.median(pause) < 3.5 if sqlite else None,
            note=f"p95 {percentile(pause, 95):.2f} ms over {len(pause)} pauses"
            + _peer_note(peer, "pause"),
        ),
        Figure(
            f"resume cycle median ({database})",
            statistics.median(resume),
            "ms",
            target="< 3.5" if sqlite else "",
            passed=statistics.median(resume) < 3.5 if sqlite else None,
            note=f"p95 {percentile(resume, 95):.2f} ms, model time excluded, tool time "
            f"included (write_file itself: median {statistics.median(data['tool_ms']):.2f} ms)"
            + _peer_note(peer, "resume"),
        ),
        *(_floor_figures(data) if "floor_ms" in data else []),
        Figure(
            f"decision to tool start median ({database})",
            statistics.median(start),
            "ms",
            target="< 10" if sqlite else "",
            passed=statistics.median(start) < 10 if sqlite else None,
            note=f"p95 {percentile(start, 95):.2f} ms",
        ),
    ]


def _floor_figures(data: dict[str, Any]) -> list[Figure]:
    floor, tool = statistics.median(data["floor_ms"]), statistics.median(data["tool_ms"])
    return [
        Figure(
            "resume cycle's SQL alone, replayed by sqlite3 (sqlite)",
            floor,
            "ms",
            note=f"{data['floor_statements']} statements (BEGIN and COMMIT included; each "
            "compiled afresh, its values being in its text) in "
            f"{data['floor_transactions']} transactions, replayed {len(data['floor_ms'])} "
            f"times; with write_file's own {tool:.2f} ms, {floor + tool:.2f} ms of the "
            "cycle go before any Python of ours runs",
        )
    ]


def _probe_in_child(database: str) -> dict[str, Any]:
    return probe_in_child("benchmarks.pipeline", database, bench_db=BENCH_DB, timeout=600)


# -- inside the child process ----------------------------------------------------------


def _probe() -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from agentdash import runner
    from agentdash.approvals import decide
    from agentdash.models import AgentSession, ExecutionResult, ToolCall
    from agentdash.sessions import start_session
    from agentdash.states import CallState, SessionStatus
    from agentdash.worker import StepWorker

    recorder = _Recorder() if connection.vendor == "sqlite" else None
    clock = _Clock(runner, on_model_call=recorder.stop if recorder else None)
    worker = StepWorker(poll_interval=1.0)
    worker.start_thread()
    try:
        # Throughput: many auto-approved calls, one session, start to completion.
        turns = [
            [
                {"type": "tool_use", "id": f"t{turn}_{n}", "name": "list_dir", "input": {}}
                for n in range(CALLS_PER_TURN)
            ]
            for turn in range(TURNS)
        ]
        clock.step_done.clear()
        began = time.perf_counter()
        session = start_session(goal="throughput", script=turns, max_steps=TURNS + 5)
        while not AgentSession.objects.get(pk=session.pk).is_finished:
            _wait(clock.step_done)
        elapsed = clock.step_returned - began
        finished = AgentSession.objects.get(pk=session.pk)
        assert finished.status == SessionStatus.COMPLETED, finished.status_reason
        calls = ToolCall.objects.filter(session=session, state=CallState.SUCCEEDED).count()
        assert calls == TURNS * CALLS_PER_TURN

        # Pause and resume: a chain of confirmation-required calls, each approved.
        operator = get_user_model().objects.create_superuser("bench", password="bench-pw-123")
        chain = [
            [
                {
                    "type": "tool_use",
                    "id": f"w{n}",
                    "name": "write_file",
                    "input": {"path": "note.txt", "content": f"version {n}"},
                }
            ]
            for n in range(PAUSE_CYCLES + 1)
        ]
        clock.step_done.clear()
        clock.task_done.clear()
        session = start_session(goal="pause and resume", script=chain, max_steps=PAUSE_CYCLES + 5)
        pause_ms, resume_ms, start_ms = [], [], []
        for n in range(PAUSE_CYCLES + 1):
            _wait(clock.step_done)
            _wait(clock.task_done)
            call = ToolCall.objects.get(session=session, call_id=f"w{n}")
            assert call.state == CallState.PENDING_APPROVAL, call.state
            pause_ms.append((clock.task_finished - clock.model_returned) * 1000)
            if n == PAUSE_CYCLES:
                break
            clock.model_call.clear()
            # The operator's moment of thought: the worker, done with the step, goes back
            # to sleep (a decision racing its last writes measured SQLite's lock wait).
            time.sleep(OPERATOR_THINKS_SECONDS)
            if recorder is not None and n == PAUSE_CYCLES - 1:  # the last: no warm-up left
                recorder.start()
            decided_at = time.time()
            began = time.perf_counter()
            decide(call.pk, user=operator, approve=True)
            _wait(clock.model_call)
            resume_ms.append((clock.model_called - began) * 1000)
            started = ToolCall.objects.get(pk=call.pk).started_at.timestamp()
            start_ms.append((started - decided_at) * 1000)
    finally:
        worker.shutdown()
    tool_ms = ExecutionResult.objects.filter(tool_call__session=session).values_list(
        "duration_ms", flat=True
    )
    data = {
        "calls": calls,
        "calls_per_second": calls / elapsed,
        "pause_ms": pause_ms[5:],  # the first few warm caches and connections
        "resume_ms": resume_ms[5:],
        "decision_to_start_ms": start_ms[5:],
        "tool_ms": list(tool_ms)[5:],
    }
    if recorder is not None:
        data |= recorder.replay(FLOOR_REPLAYS)
    return data


class _Recorder:
    """One resume cycle's statements as SQLite ran them on this process's connections
    (the benchmark's and the worker's), and the database as it was before them."""

    def __init__(self) -> None:
        from django.db import connection
        from django.db.backends.signals import connection_created

        self.path = connection.settings_dict["NAME"]
        self.statements: list[str] = []
        self.snapshot = Path(tempfile.mkdtemp(prefix="agentdash-floor-")) / "before.sqlite3"
        self._connections: list[sqlite3.Connection] = []
        self._callback: Callable[[str], None] | None = None
        self._receiver = self._connection_created  # signals hold weak references
        connection_created.connect(self._receiver)
        connection.ensure_connection()
        self._connections.append(connection.connection)

    def _connection_created(self, connection: Any, **kwargs: Any) -> None:
        if connection.vendor == "sqlite":
            self._connections.append(connection.connection)
            connection.connection.set_trace_callback(self._callback)  # opened mid-cycle

    def start(self) -> None:
        with sqlite3.connect(self.path) as source, sqlite3.connect(self.snapshot) as copy:
            source.backup(copy)
        self._trace(self.statements.append)

    def stop(self) -> None:
        self._trace(None)

    def _trace(self, callback: Callable[[str], None] | None) -> None:
        self._callback = callback
        # Django opens them with check_same_thread=False: any thread may set the hook.
        for raw in self._connections:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed since
                raw.set_trace_callback(callback)

    def replay(self, times: int) -> dict[str, Any]:
        try:
            timings = [self._replay_once() for _ in range(times)]
        finally:
            shutil.rmtree(self.snapshot.parent)
        return {
            "floor_ms": timings,
            "floor_statements": len(self.statements),
            "floor_transactions": _transactions(self.statements),
        }

    def _replay_once(self) -> float:
        work = self.snapshot.with_name("replay.sqlite3")
        shutil.copyfile(self.snapshot, work)
        database = sqlite3.connect(work, isolation_level=None)
        try:
            database.execute("PRAGMA journal_mode=WAL")
            database.execute("PRAGMA synchronous=NORMAL")
            # As in the running server: the pages cached, the write-ahead log in use.
            tables = database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for (table,) in tables.fetchall():
                database.execute(f'SELECT count(*) FROM "{table}"').fetchall()
            for _ in range(3):
                database.execute("BEGIN IMMEDIATE")
                database.execute("UPDATE django_migrations SET app = app WHERE id = 1")
                database.execute("COMMIT")
            began = time.perf_counter()
            for sql in self.statements:
                database.execute(sql).fetchall()
            return (time.perf_counter() - began) * 1000
        finally:
            database.close()
            for path in work.parent.glob("replay.sqlite3*"):
                path.unlink()


def _transactions(statements: list[str]) -> int:
    """How many transactions committed `statements`: each BEGIN ... COMMIT, and each
    write outside one (SQLite commits it on its own)."""
    count, within = 0, False
    for sql in statements:
        keyword = sql.split(None, 1)[0].upper()
        if keyword == "BEGIN":
            within = True
        elif keyword == "COMMIT":
            within, count = False, count + 1
        elif not within and keyword != "SELECT":
            count += 1
    return count


class _Clock:
    """When the runner last called the model, got its reply, and finished a step, and
    when the worker last marked a step's task row finished; the benchmark waits on these
    events rather than polling the database, which would compete with the worker for the
    interpreter."""

    def __init__(
        self, runner_module: Any, *, on_model_call: Callable[[], None] | None = None
    ) -> None:
        from django.tasks.signals import task_finished

        self.model_called = self.model_returned = self.step_returned = 0.0
        self.task_finished = 0.0
        self.model_call = threading.Event()
        self.step_done = threading.Event()
        self.task_done = threading.Event()

        def timed_task_finished(task_result: Any, **kwargs: Any) -> None:
            if task_result.task.func is runner_module.advance_session.func:  # a step's
                self.task_finished = time.perf_counter()
                self.task_done.set()

        self._receiver = timed_task_finished  # signals hold weak references
        task_finished.connect(timed_task_finished)
        get_provider = runner_module.get_provider
        advance = runner_module.SessionRunner.advance

        def timed_provider(name: str, **options: Any) -> Any:
            provider = get_provider(name, **options)
            complete = provider.complete

            def timed_complete(*args: Any, **kwargs: Any) -> Any:
                self.model_called = time.perf_counter()
                if on_model_call is not None:
                    on_model_call()
                self.model_call.set()
                reply = complete(*args, **kwargs)
                self.model_returned = time.perf_counter()
                return reply

            provider.complete = timed_complete
            return provider

        def timed_advance(runner: Any) -> str:
            outcome = advance(runner)
            self.step_returned = time.perf_counter()
            self.step_done.set()
            return outcome

        runner_module.get_provider = timed_provider
        runner_module.SessionRunner.advance = timed_advance


def _wait(event: threading.Event, timeout: float = 120) -> None:
    if not event.wait(timeout):
        raise TimeoutError("the pipeline stalled")
    event.clear()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(_probe()))
    else:
        for figure in run():
            print(figure)
