"""The hash chain's verification: the check in progress, if any, and the last result.

One row (pk=1), written only by `agentdash.verification`. A check runs in the
background in slices (one task per slice), so this row is also its progress: how far it
has read, where it stops, and which run it is (`run_number`), so that a duplicate task
can never move a newer run's cursor. The last result is kept apart from the run in
progress, so the history page shows the chain's status without reading the log, and an
incremental check resumes after the last event found good.
"""

from __future__ import annotations

import datetime as dt

from django.db import models

# audit.GENESIS_HASH, the hash before event 1 (audit imports the models, not the reverse).
GENESIS_HASH = "0" * 64


class ChainVerification(models.Model):
    SINGLETON_PK = 1

    class RunState(models.TextChoices):
        IDLE = "idle", "idle"
        QUEUED = "queued", "queued"  # waiting for a worker to take its first slice
        RUNNING = "running", "running"

    # -- the run in progress (meaningless while idle) --------------------------------------
    run_state = models.CharField(max_length=16, choices=RunState, default=RunState.IDLE)
    run_number = models.PositiveBigIntegerField(default=0)  # +1 per run: the run's identity
    run_full = models.BooleanField(default=False)  # from event 1, not from the last result
    run_requested_by = models.CharField(max_length=200, blank=True)
    run_requested_at = models.DateTimeField(null=True, blank=True)
    # Set by every slice: a run whose worker died stops being touched (see stalled).
    run_touched_at = models.DateTimeField(null=True, blank=True)
    run_from_seq = models.BigIntegerField(default=0)  # checks the events after this one
    run_target_seq = models.BigIntegerField(default=0)  # ...up to the head when it was asked
    run_cursor_seq = models.BigIntegerField(default=0)  # the last event it found good so far
    run_cursor_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    run_seconds = models.FloatField(default=0.0)  # time spent in its slices so far

    # -- the last finished run (verified_at is None: never verified) ----------------------
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_by = models.CharField(max_length=200, blank=True)
    verified_full = models.BooleanField(default=False)
    verified_ok = models.BooleanField(default=False)
    verified_from_seq = models.BigIntegerField(default=0)
    # The last event found good and its hash: where the next incremental check resumes.
    verified_up_to_seq = models.BigIntegerField(default=0)
    verified_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    verified_events = models.BigIntegerField(default=0)  # events that run read
    verified_seconds = models.FloatField(default=0.0)
    first_bad_seq = models.BigIntegerField(null=True, blank=True)
    problem = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(pk=1), name="chain_verification_is_a_singleton"
            )
        ]

    def __str__(self) -> str:
        return f"chain verification ({self.run_state})"

    @property
    def in_progress(self) -> bool:
        return self.run_state != self.RunState.IDLE

    @property
    def run_checked(self) -> int:
        """Events the run in progress has found good so far."""
        return self.run_cursor_seq - self.run_from_seq

    @property
    def run_total(self) -> int:
        """Events the run in progress will read."""
        return max(0, self.run_target_seq - self.run_from_seq)

    @property
    def run_percent(self) -> int:
        return 100 if not self.run_total else min(100, 100 * self.run_checked // self.run_total)

    def stalled(self, now: dt.datetime, after: dt.timedelta) -> bool:
        """True when a run has not moved for `after`: its worker died or none is running."""
        touched = self.run_touched_at or self.run_requested_at
        return self.in_progress and touched is not None and now - touched > after
