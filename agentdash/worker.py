"""Workers: the processes (or the thread inside the web server) that run session steps.

Steps are Django tasks stored by django-tasks-db. Its own worker loop polls on a fixed
interval, claims a row in an exclusive transaction of three statements and closes the
database connection around every task (with CONN_MAX_AGE 0, reconnecting each time).
Ours claims the next ready row with one UPDATE ... RETURNING (SKIP LOCKED on
PostgreSQL), runs it as django-tasks-db's worker does (`run_task`: the same signals, the
same outcome recorded), keeps its connection while there is work (closing it only after
an error), and sleeps on an event that `wake()` sets the moment a step is queued in this
process, so a decision reaches its tool in milliseconds rather than an interval later.

Workers in other processes are woken too: on PostgreSQL, `schedule()` sends a NOTIFY in
the transaction that queues the step (delivered when it commits) and every worker
LISTENs for it on a connection of its own. On SQLite, separate workers poll
(AGENTDASH_WORKER_POLL_SECONDS); the embedded default needs neither.

django-tasks-db neither retries nor notices a worker that died mid-task, so every
worker also sweeps: it re-queues live sessions that nobody holds and nobody is
running (their lease is free or has lapsed), and webhook deliveries whose try is long
overdue (notifications.sweep_deliveries). A duplicate step is harmless: steps are
idempotent and claim the session's lease first. The sweep is also the backstop of
approval deadlines (each pause queues a step for its deadline; the step expires what
nobody decided) and leaves alone sessions that a rate limit holds back until later.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResultStatus
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django_tasks_db.models import DBTaskResult, get_date_max

from agentdash import rows
from agentdash.states import update_if

logger = logging.getLogger(__name__)

_wake = threading.Event()
NOTIFY_CHANNEL = "agentdash_steps"
TASK_BACKEND = "default"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def wake() -> None:
    """Tell this process's worker that a step is waiting."""
    _wake.set()


def notify_other_processes() -> None:
    """Wake the workers of other processes when the current transaction commits."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")


def _listen_for_steps(stop: threading.Event) -> None:
    """Turn PostgreSQL notifications from other processes into wake-ups of this worker."""
    import psycopg

    params = connection.get_connection_params()
    while not stop.is_set():
        try:
            with psycopg.connect(**params, autocommit=True) as listener:
                listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while not stop.is_set():
                    for _ in listener.notifies(timeout=1.0, stop_after=1):
                        _wake.set()
        except psycopg.OperationalError as error:
            logger.warning("listening for new steps failed (%s); polling until it is back", error)
            stop.wait(1.0)


def sweep() -> int:
    """Re-queue every live session that no worker holds. Returns how many."""
    from agentdash import notifications
    from agentdash.models import AgentSession
    from agentdash.runner import schedule
    from agentdash.states import CallState, SessionStatus

    now = timezone.now()
    # A session waiting for a human can still owe work: a call approved (or left
    # running) just before its worker died, or one whose deadline passed.
    waiting = Q(status=SessionStatus.WAITING_APPROVAL)
    owed = [CallState.APPROVED, CallState.AUTO_APPROVED, CallState.RUNNING]
    overdue = Q(tool_calls__state=CallState.PENDING_APPROVAL, tool_calls__expires_at__lte=now)
    owes_work = (
        Q(status__in=[SessionStatus.QUEUED, SessionStatus.RUNNING])
        | (waiting & Q(tool_calls__state__in=owed))
        | (waiting & overdue)
    )
    stale = (
        AgentSession.objects.filter(owes_work)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .exclude(rate_limited_until__gt=now)  # its step is queued for when the limit allows
        # Recently touched sessions most likely have their next step queued already.
        .filter(updated_at__lt=now - timedelta(seconds=settings.AGENTDASH_SWEEP_SECONDS / 2))
        .values_list("pk", flat=True)
        .distinct()
    )
    count = 0
    with transaction.atomic():
        for session_id in stale:
            schedule(session_id)
            count += 1
    notifications.sweep_deliveries()
    # Finished task rows are bookkeeping only (the sessions hold the truth): keep a day.
    DBTaskResult.objects.finished().filter(finished_at__lt=now - timedelta(days=1)).delete()
    if count:
        logger.info("sweep re-queued %d session(s)", count)
    return count


class StepWorker:
    """Runs queued steps until stopped; sweeps for abandoned work every so often."""

    def __init__(
        self,
        *,
        poll_interval: float | None = None,
        sweep_interval: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.poll_interval = poll_interval or settings.AGENTDASH_WORKER_POLL_SECONDS
        self.sweep_interval = sweep_interval or settings.AGENTDASH_SWEEP_SECONDS
        self.stop = stop or threading.Event()
        self.worker_id = worker_id()

    def run(self) -> None:
        logger.info("worker %s started", worker_id())
        if connection.vendor == "postgresql":
            threading.Thread(
                target=_listen_for_steps, args=(self.stop,), name="step-listener", daemon=True
            ).start()
        next_sweep = 0.0
        while not self.stop.is_set():
            _wake.clear()
            try:
                if time.monotonic() >= next_sweep:
                    sweep()
                    next_sweep = time.monotonic() + self.sweep_interval
                self.run_ready_steps()
            except Exception:
                # The database went away or a task row vanished: nothing is lost (the
                # sessions hold the truth and the sweep finds their work again), so log
                # it and keep working rather than let the worker die silently. The
                # connection may be the broken part: the next query opens a new one.
                logger.exception("worker %s: running steps failed; retrying", worker_id())
                connection.close()
                self.stop.wait(min(self.poll_interval * 4, 5.0))
            _wake.wait(self.poll_interval)
        logger.info("worker %s stopped", worker_id())

    def run_ready_steps(self) -> int:
        """Run every task that is ready, one after the other; returns how many ran."""
        count = 0
        while not self.stop.is_set() and (row := claim_next_task(self.worker_id)):
            run_task(row)
            count += 1
        return count

    def shutdown(self) -> None:
        self.stop.set()
        _wake.set()

    def start_thread(self) -> threading.Thread:
        """Run inside this process (the embedded default: the web server hosts it)."""
        thread = threading.Thread(target=self._run_closing, name="agentdash-worker", daemon=True)
        thread.start()
        return thread

    def _run_closing(self) -> None:
        try:
            self.run()
        finally:
            connection.close()


def claim_next_task(worker: str) -> DBTaskResult | None:
    """Mark the next ready task row (by django-tasks-db's order: priority, then run_after,
    then age) running for `worker` and return it, in one statement: an UPDATE is atomic
    on its own, and on PostgreSQL SKIP LOCKED lets concurrent workers take different
    rows rather than queue on one. None when nothing is ready."""
    now = timezone.now()
    ops = connection.ops
    params = [
        TaskResultStatus.RUNNING,
        ops.adapt_datetimefield_value(now),
        worker,
        TaskResultStatus.READY,
        TASK_BACKEND,
        DEFAULT_TASK_QUEUE_NAME,
        ops.adapt_datetimefield_value(get_date_max()),
        ops.adapt_datetimefield_value(now),
    ]
    claimed = rows.fetch(_TASK_COLUMNS, _claim_sql(connection.vendor), params)
    return claimed[0] if claimed else None


def run_task(row: DBTaskResult) -> None:
    """Run a claimed task row and record how it ended, as django-tasks-db's own worker
    does (Worker.run_task: task_started, the call, the outcome, task_finished; a failure
    recorded by the row's set_failed), but a success with one plain UPDATE: the ORM's
    save() was the largest part of ending a step, the moment its session holds no
    process any more."""
    try:
        task = row.task
        task_result = row.task_result
        backend = type(task.get_backend())
        task_started.send(sender=backend, task_result=task_result)
        if task.takes_context:
            context = TaskContext(task_result=task_result)
            return_value = task.call(context, *task_result.args, **task_result.kwargs)
        else:
            return_value = task.call(*task_result.args, **task_result.kwargs)
        outcome = {
            "status": TaskResultStatus.SUCCESSFUL,
            "return_value": return_value,
            "finished_at": timezone.now(),
            "exception_class_path": "",
            "traceback": "",
        }
        update_if(row, {}, outcome)
        for name, value in outcome.items():
            setattr(row, name, value)
        task_finished.send(sender=backend, task_result=row.task_result)
    except BaseException as error:
        row.set_failed(error)
        try:
            backend = type(row.task.get_backend())
        except Exception:
            logger.exception("task %s failed and names no task that can be loaded", row.id)
        else:
            task_finished.send(sender=backend, task_result=row.task_result)


_CLAIM_SQL: dict[str, str] = {}
_TASK_COLUMNS = rows.Columns(DBTaskResult)


def _claim_sql(vendor: str) -> str:
    if (sql := _CLAIM_SQL.get(vendor)) is None:
        table = DBTaskResult._meta.db_table
        append_worker, lock = "json_insert(worker_ids, '$[#]', %s)", ""
        if vendor == "postgresql":
            append_worker = "worker_ids || jsonb_build_array(%s::text)"
            lock = "FOR UPDATE SKIP LOCKED"
        # The same filter and order as DBTaskResult.objects.ready() and its Meta.ordering,
        # which the partial index tasks_db_new_ordering_idx serves. Only names of the
        # model's own table and columns are formatted in; every value is a parameter.
        sql = _CLAIM_SQL[vendor] = f"""
            UPDATE {table} SET status = %s, started_at = %s, worker_ids = {append_worker}
            WHERE id = (
                SELECT id FROM {table}
                WHERE status = %s AND backend_name = %s AND queue_name = %s
                  AND (run_after = %s OR run_after <= %s)
                ORDER BY priority DESC, run_after ASC, enqueued_at ASC
                LIMIT 1 {lock}
            )
            RETURNING {_TASK_COLUMNS.sql}"""  # noqa: S608
    return sql
