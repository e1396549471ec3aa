"""Verifying the audit log's hash chain: one walk for every caller, and a background job.

    from agentdash import verification

    state, started = verification.request("user:alice", full=False)   # the history page

`audit.verify()` walks events in seq order from any point whose seq and hash are known
(agentdash/audit.py documents the scheme). `manage.py audit verify` calls it from event
1; the job calls it slice by slice.

The job. A check of a million events takes tens of seconds, far too long for a request,
so `request()` only records that a check is wanted (in ChainVerification, the one row
that holds the run in progress and the last result) and queues a task. The task,
`continue_verification`, checks one slice (VERIFY_SLICE_EVENTS events), saves how far it
got, and queues the next slice; so the progress is in the database for any process to
show, a worker is never held for long (session steps queued meanwhile run between
slices, and slices queue at a lower priority than steps), and a run whose worker died
resumes where it stopped once someone asks again (request() re-queues a stalled run).
Only one run exists at a time: asking while one is in progress returns that one.

Incremental checks. The log is append-only and each event's hash covers the previous
one's, so a check may start after the last event a previous check found good: the
first new event must carry that event's hash as its prev_hash. That makes routine
checks cheap; what they cannot see is a change to the events before that point (an
edited old event, or a chain rewritten from there by someone who can write the table),
which is what a full re-check, from event 1, is for. Either kind notices a log that
got shorter than what was verified before (events cut off the end).

The result of every run is also appended to the log as an "audit.verified" event, in
the transaction that stores it: who checked and what they found is worth keeping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.db import transaction
from django.db.models import QuerySet
from django.tasks import task
from django.utils import timezone

from agentdash import audit, worker
from agentdash.models import ChainVerification

# Events one task checks before it saves its progress and queues the next slice: about
# half a second of work, so progress moves visibly and steps never wait long.
VERIFY_SLICE_EVENTS = 20_000
# Below the default (0) so that session steps queued meanwhile run first.
SLICE_PRIORITY = -10
# A run whose last slice is older than this is presumed abandoned (its worker died, or
# no worker runs): asking again re-queues it from where it stopped.
STALLED_AFTER = dt.timedelta(seconds=60)

RunState = ChainVerification.RunState


# --- the background job ----------------------------------------------------------------


def state() -> ChainVerification:
    """The verification row as it is now (a fresh, never-verified one if none exists)."""
    return ChainVerification.objects.filter(pk=ChainVerification.SINGLETON_PK).first() or (
        ChainVerification(pk=ChainVerification.SINGLETON_PK)
    )


def _locked_state() -> ChainVerification:
    """The row, locked until the caller's transaction ends (SQLite's BEGIN IMMEDIATE
    already serialises writers), created on first use."""
    row, _ = ChainVerification.objects.select_for_update().get_or_create(
        pk=ChainVerification.SINGLETON_PK
    )
    return row


def _queue_slice() -> None:
    """Queue the next slice in the caller's transaction; wake workers when it commits."""
    continue_verification.enqueue()
    worker.notify_other_processes()
    transaction.on_commit(worker.wake)


def request(actor: str, *, full: bool) -> tuple[ChainVerification, bool]:
    """Ask for a check of the chain, in the background. Returns the run and whether this
    call started it (False: one was in progress already, and that one is returned).

    Incremental (`full=False`) resumes after the last event a previous check found good;
    `full` starts from event 1. A stalled run is queued again from where it stopped.
    """
    now = timezone.now()
    with transaction.atomic():
        row = _locked_state()
        if row.in_progress:
            if row.stalled(now, STALLED_AFTER):
                row.run_touched_at = now
                row.save(update_fields=["run_touched_at"])
                _queue_slice()
            return row, False
        start_seq, start_hash = (
            (0, audit.GENESIS_HASH)
            if full or row.verified_at is None
            else (row.verified_up_to_seq, row.verified_hash)
        )
        row.run_state = RunState.QUEUED
        row.run_number += 1
        row.run_full = full or row.verified_at is None
        row.run_requested_by = actor
        row.run_requested_at = row.run_touched_at = now
        row.run_from_seq = row.run_cursor_seq = start_seq
        row.run_cursor_hash = start_hash
        # A full check must also notice events cut off the end since the last check.
        head = audit.head_seq()
        row.run_target_seq = max(head, row.verified_up_to_seq) if row.run_full else head
        row.run_seconds = 0.0
        row.save()
        _queue_slice()
    return row, True


@task(priority=SLICE_PRIORITY)
def continue_verification() -> str:
    """Check the next slice of the run in progress. Idempotent: a duplicate task finds
    the cursor moved (or the run over) and changes nothing."""
    return advance()


def advance(slice_events: int | None = None) -> str:
    """One slice of the run in progress (continue_verification's work)."""
    run = state()
    if not run.in_progress:
        return "no verification in progress"
    if run.run_state == RunState.QUEUED:
        # Say so as the first slice starts, not once it ends: "queued" means "no worker".
        ChainVerification.objects.filter(
            pk=run.pk, run_number=run.run_number, run_state=RunState.QUEUED
        ).update(run_state=RunState.RUNNING, run_touched_at=timezone.now())
    if run.run_target_seq < run.run_cursor_seq:
        # Only possible before the first slice of an incremental run: the log holds
        # fewer events than a previous check found good.
        report = audit.VerifyReport(
            ok=False,
            events_checked=0,
            first_bad_seq=run.run_target_seq + 1,
            problem=f"event {run.run_target_seq + 1}: the log ends at event "
            f"{run.run_target_seq} but a previous check found {run.run_cursor_seq} events "
            "good: events were cut off the end",
            head_seq=run.run_from_seq,
            head_hash=run.run_cursor_hash,
        )
    else:
        report = audit.verify(
            after_seq=run.run_cursor_seq,
            after_hash=run.run_cursor_hash,
            up_to=run.run_target_seq,
            limit=slice_events or VERIFY_SLICE_EVENTS,
        )
    finished = not report.ok or report.head_seq >= run.run_target_seq
    with transaction.atomic():
        # Conditional on the run and the cursor this slice started from: of two tasks
        # that raced over the same slice, one moves the cursor and the other nothing.
        this_slice = ChainVerification.objects.filter(
            pk=run.pk,
            run_state__in=[RunState.QUEUED, RunState.RUNNING],
            run_number=run.run_number,
            run_cursor_seq=run.run_cursor_seq,
        )
        if not finished:
            moved = this_slice.update(
                run_state=RunState.RUNNING,
                run_cursor_seq=report.head_seq,
                run_cursor_hash=report.head_hash,
                run_touched_at=timezone.now(),
                run_seconds=run.run_seconds + report.seconds,
            )
            if moved:
                _queue_slice()
            return f"checked up to event {report.head_seq}" if moved else "slice taken by another"
        if not _finish(this_slice, run, report):
            return "slice taken by another"
    return "chain intact" if report.ok else f"chain broken at event {report.first_bad_seq}"


def _finish(
    this_slice: QuerySet[ChainVerification], run: ChainVerification, report: audit.VerifyReport
) -> bool:
    """Store the run's result and append it to the log, in the caller's transaction."""
    seconds = run.run_seconds + report.seconds
    # Events found good by earlier slices, and those this one read (the bad one included).
    checked = run.run_checked + report.events_checked
    now = timezone.now()
    stored = this_slice.update(
        run_state=RunState.IDLE,
        run_touched_at=now,
        run_seconds=seconds,
        verified_at=now,
        verified_by=run.run_requested_by,
        verified_full=run.run_full,
        verified_ok=report.ok,
        verified_from_seq=run.run_from_seq,
        verified_up_to_seq=report.head_seq,
        verified_hash=report.head_hash,
        verified_events=checked,
        verified_seconds=seconds,
        first_bad_seq=report.first_bad_seq,
        problem=report.problem,
    )
    if stored:
        audit.record(
            audit.VERIFIED_KIND,
            actor=run.run_requested_by,
            payload={
                "ok": report.ok,
                "full": run.run_full,
                "from_seq": run.run_from_seq,
                "events_checked": checked,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "seconds": round(seconds, 3),
            },
        )
    return bool(stored)


# --- what the page shows ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChainStatus:
    """The verification row measured against the log's head, for the history page."""

    verification: ChainVerification
    head_seq: int

    @property
    def checked(self) -> bool:
        return self.verification.verified_at is not None

    @property
    def unchecked(self) -> int:
        """Events appended after the last check's last event, its own record left out."""
        if not self.checked:
            return self.head_seq
        found = self.verification
        read_up_to = found.first_bad_seq or found.verified_up_to_seq
        return max(0, self.head_seq - read_up_to - 1)

    @property
    def stale(self) -> bool:
        return self.checked and self.unchecked > 0

    @property
    def stalled(self) -> bool:
        """A run in progress that has not moved for a while: asking again resumes it."""
        return self.verification.stalled(timezone.now(), STALLED_AFTER)


def status(head: int) -> ChainStatus:
    """The chain's status from one indexed read: nothing walks the chain on a page load."""
    return ChainStatus(verification=state(), head_seq=head)
