"""`manage.py seed_audit --events N`: a realistic, valid audit log of N events, quickly.

    python manage.py seed_audit --events 1000000 [--days 30] [--seed 1]

For demos and for benchmarks/history.py. It plays many concurrent sessions the way the
runner would (sessions, their messages and tool calls, approvals that wait seconds to
hours, successes, failures, rejections, costs) and writes the rows and their audit
events with bulk_create, appended after the chain's current head. The events are
hashed with the audit module's own function, so `manage.py audit verify` passes.

It bypasses record() only for speed: each batch of events is written in one
transaction that holds the chain-head lock, exactly as record() would, so the app may
keep running while it seeds. Payloads hold only strings, integers, booleans, None,
lists and objects, which every database gives back exactly as they were hashed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.utils import timezone

from agentdash import audit

# The audit module's own chain scheme and lock: nothing of it is re-implemented here.
from agentdash.audit import HASHED_FIELDS, _event_hash, _lock_chain_head
from agentdash.models import AgentSession, AuditEvent, Message, ToolCall
from agentdash.providers import Usage, cost_of

SESSIONS_PER_BATCH = 50
EVENTS_PER_WRITE = 5000
# The last sessions' tails (approval waits) land before now, not in the future.
TAIL_ROOM = dt.timedelta(hours=12)

OWNERS = ("user:alice", "user:bob", "user:carol", "user:dmitri", "user:eve")
MODELS = ("claude-sonnet-5-5", "claude-haiku-5-5", "gpt-4.1-mini")
GOALS = (
    "Summarise the open issues in {path}",
    "Fix the failing test in {path}",
    "Write release notes from {path}",
    "Find why the nightly job in {path} is slow",
    "Rename the config keys used by {path}",
    "Draft a reply to the customer email in {path}",
)
PATHS = ("notes/todo.md", "src/app.py", "tests/test_api.py", "docs/CHANGELOG.md", "jobs/nightly.sh")
# name: whether the policy asks a human, how long a run takes (ms, low..high).
TOOLS: dict[str, tuple[bool, int, int]] = {
    "read_file": (False, 2, 40),
    "list_dir": (False, 1, 20),
    "write_file": (True, 5, 80),
    "run_python": (True, 150, 8000),
    "run_shell": (True, 50, 15000),
    "http_fetch": (False, 80, 3000),
}
APPROVAL_EXPIRY_SECONDS = 3600


@dataclasses.dataclass
class PlannedCall:
    tool: str
    arguments: dict[str, Any]
    turn: int
    position: int
    state: str = "proposed"
    approval_reason: str = ""
    times: dict[str, float] = dataclasses.field(default_factory=dict)  # proposed_at, ...
    pk: int | None = None  # once its row exists


@dataclasses.dataclass
class PlannedEvent:
    at: float  # seconds from the session's start
    kind: str
    actor: str
    payload: dict[str, Any]
    call: PlannedCall | None = None


@dataclasses.dataclass
class PlannedSession:
    """One session's whole story, in seconds from its start, before any row exists."""

    goal: str
    owner: str
    model: str
    status: str = "running"
    status_reason: str = ""
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    turns: list[tuple[str, list[PlannedCall]]] = dataclasses.field(default_factory=list)
    events: list[PlannedEvent] = dataclasses.field(default_factory=list)
    clock: float = 0.0

    @property
    def provider(self) -> str:
        return "anthropic" if self.model.startswith("claude") else "openai"

    def emit(
        self,
        gap: float,
        kind: str,
        actor: str,
        payload: dict[str, Any],
        call: PlannedCall | None = None,
    ) -> None:
        """The next event, `gap` seconds after the previous one."""
        self.clock += gap
        self.events.append(PlannedEvent(self.clock, kind, actor, payload, call))
        if call is not None:
            call.times[_CALL_TIMESTAMPS[kind.removeprefix("toolcall.")]] = self.clock


class SessionPlanner:
    """Plays sessions as the runner, the policy and the operators would, at random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def plan(self) -> PlannedSession:
        rng = self.rng
        path = rng.choice(PATHS)
        session = PlannedSession(
            goal=rng.choice(GOALS).format(path=path),
            owner=rng.choice(OWNERS),
            model=rng.choice(MODELS),
        )
        session.emit(
            0,
            "session.created",
            session.owner,
            {"goal": session.goal, "provider": session.provider, "model": session.model},
        )
        session.emit(0.05, "session.running", "runner", {"from": "queued", "to": "running"})
        turns = rng.choices((1, 2, 3, 4, 5, 6), weights=(2, 4, 5, 4, 2, 1))[0]
        for turn in range(turns):
            last = turn == turns - 1
            calls = [] if last else self._calls(turn, path)
            self._model_reply(session, turn, calls)
            self._decide(session, calls)
            self._run(session, calls)
        self._end(session)
        return session

    def _calls(self, turn: int, path: str) -> list[PlannedCall]:
        count = self.rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
        tools = self.rng.choices(list(TOOLS), weights=(5, 3, 3, 2, 1, 1), k=count)
        return [
            PlannedCall(tool, self._arguments(tool, path), turn, position)
            for position, tool in enumerate(tools)
        ]

    def _arguments(self, tool: str, path: str) -> dict[str, Any]:
        folder = path.rsplit("/", 1)[0]
        match tool:
            case "read_file":
                return {"path": path}
            case "list_dir":
                return {"path": folder}
            case "write_file":
                return {"path": path, "content": f"# updated\n{self.rng.randrange(10**6)}\n"}
            case "run_python":
                return {"code": f"print(sum(range({self.rng.randrange(10**4)})))"}
            case "run_shell":
                return {"command": f"grep -rn TODO {folder} | head"}
            case _:
                return {"url": f"https://docs.example.com/page/{self.rng.randrange(500)}"}

    def _model_reply(self, session: PlannedSession, turn: int, calls: list[PlannedCall]) -> None:
        rng = self.rng
        usage = Usage(
            input_tokens=rng.randrange(800, 12_000) * (turn + 1),
            output_tokens=rng.randrange(40, 1500),
        )
        cost = cost_of(session.model, usage)
        session.steps += 1
        session.input_tokens += usage.input_tokens
        session.output_tokens += usage.output_tokens
        session.cost += cost
        text = "Done: the work is finished." if not calls else f"Next I will use {calls[0].tool}."
        session.turns.append((text, calls))
        session.emit(
            rng.uniform(1.5, 15),
            "model.replied",
            "model",
            {
                "message_index": 2 * turn + 1,
                "stop_reason": "tool_use" if calls else "end_turn",
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cost": str(cost),
                "text": text,
            },
        )
        for call in calls:
            if self.rng.random() < 0.04:  # the model got the arguments wrong
                call.state = "errored"
                session.emit(
                    0.002,
                    "toolcall.errored",
                    "runner",
                    {
                        "from": "proposed",
                        "to": "errored",
                        "error": f"{call.tool}: a required argument is missing",
                    },
                    call,
                )
                continue
            asks = TOOLS[call.tool][0]
            call.state = "pending_approval" if asks else "auto_approved"
            call.approval_reason = (
                f"{call.tool} requires confirmation"
                if asks
                else f"{call.tool} does not require confirmation"
            )
            session.emit(
                0.003,
                f"toolcall.{call.state}",
                "policy",
                {
                    "from": "proposed",
                    "to": call.state,
                    "tool": call.tool,
                    "arguments": call.arguments,
                    "rule": "requires_confirmation" if asks else "default",
                    "reason": call.approval_reason,
                },
                call,
            )

    def _decide(self, session: PlannedSession, calls: list[PlannedCall]) -> None:
        pending = [call for call in calls if call.state == "pending_approval"]
        if not pending:
            return
        session.emit(
            0.01,
            "session.waiting_approval",
            "runner",
            {"from": "running", "to": "waiting_approval"},
        )
        decider = session.owner
        for call in pending:
            roll = self.rng.random()
            if roll < 0.03:
                call.state, decider, reason = "expired", "system", "Nobody decided in time."
                wait = APPROVAL_EXPIRY_SECONDS
            else:
                call.state = "approved" if roll < 0.88 else "rejected"
                decider = self.rng.choice((session.owner, *OWNERS[:2]))
                reason = "looks fine" if call.state == "approved" else "not in this repo"
                # Operators answer in about 40 s as a rule, in minutes or hours now and then.
                wait = min(self.rng.lognormvariate(math.log(40), 1.6), 8 * 3600)
            session.emit(
                wait,
                f"toolcall.{call.state}",
                decider,
                {"from": "pending_approval", "to": call.state, "reason": reason},
                call,
            )
        session.emit(
            0.01, "session.running", decider, {"from": "waiting_approval", "to": "running"}
        )

    def _run(self, session: PlannedSession, calls: list[PlannedCall]) -> None:
        for call in calls:
            if call.state not in ("approved", "auto_approved"):
                continue
            session.emit(
                0.02, "toolcall.running", "runner", {"from": call.state, "to": "running"}, call
            )
            low, high = TOOLS[call.tool][1:]
            duration = self.rng.randint(low, high)
            roll = self.rng.random()
            outcome, status = (
                ("succeeded", "success")
                if roll < 0.88
                else ("errored", "error")
                if roll < 0.96
                else ("timed_out", "timeout")
            )
            call.state = outcome
            session.emit(
                duration / 1000,
                f"toolcall.{outcome}",
                "runner",
                {"from": "running", "to": outcome, "status": status, "duration_ms": duration},
                call,
            )

    def _end(self, session: PlannedSession) -> None:
        status, reason, actor = self.rng.choices(
            (
                ("completed", "", "runner"),
                ("failed", "The model refused to continue.", "runner"),
                ("cancelled", f"Cancelled by {session.owner}.", session.owner),
                ("budget_exceeded", "The session reached its cost limit.", "runner"),
            ),
            weights=(90, 5, 3, 2),
        )[0]
        session.status, session.status_reason = status, reason
        session.emit(
            0.05, f"session.{status}", actor, {"from": "running", "to": status, "reason": reason}
        )


# Which timestamp of a ToolCall each state sets, as agentdash.states does.
_CALL_TIMESTAMPS = {
    "pending_approval": "proposed_at",
    "auto_approved": "decided_at",
    "approved": "decided_at",
    "rejected": "decided_at",
    "expired": "decided_at",
    "running": "started_at",
    "succeeded": "finished_at",
    "errored": "finished_at",
    "timed_out": "finished_at",
}


class Seeder:
    """Writes `events` events whose sessions start evenly over `start`..`end`.

    The last sessions' tails (an approval can wait hours) run past `end`; no event is
    ever dated after `latest`.
    """

    def __init__(
        self, *, events: int, start: dt.datetime, end: dt.datetime, latest: dt.datetime, seed: int
    ) -> None:
        self.target = events
        # Seeded, reproducible demo data: nothing here needs to be unpredictable.
        self.planner = SessionPlanner(random.Random(seed))  # noqa: S311
        self.rng = random.Random(seed + 1)  # noqa: S311
        self.origin = start
        self.latest = latest
        self.seconds_per_event = max(0.0, (end - start).total_seconds()) / events
        self.order = itertools.count()  # breaks ties in time, keeping each session's order

    def run(self, progress: Callable[[int], None]) -> int:
        """Write everything; returns how many events were written."""
        # Events wait here, ordered by time, until no later batch can start before them.
        queue: list[tuple[dt.datetime, int, dict[str, Any]]] = []
        batch_start, planned, written = 0.0, 0, 0
        while planned < self.target:
            sessions = [self.planner.plan() for _ in range(SESSIONS_PER_BATCH)]
            count = sum(len(session.events) for session in sessions)
            # The batch's sessions start anywhere in a window as long as its events would
            # take at the log's average pace, so the log's density is even over the period.
            window = count * self.seconds_per_event
            starts = [batch_start + self.rng.random() * window for _ in sessions]
            for event in self._store_rows(sessions, starts):
                heapq.heappush(queue, event)
            planned += count
            batch_start += window
            written += self._write_due(queue, until=self._moment(batch_start), written=written)
            progress(written)
        written += self._write_due(queue, until=None, written=written)
        return written

    def _moment(self, offset: float) -> dt.datetime:
        return min(self.origin + dt.timedelta(seconds=offset), self.latest)

    def _store_rows(
        self, sessions: list[PlannedSession], starts: list[float]
    ) -> Iterator[tuple[dt.datetime, int, dict[str, Any]]]:
        """Create the sessions, messages and calls; yield their events, ids filled in."""
        rows = AgentSession.objects.bulk_create(
            AgentSession(
                goal=plan.goal,
                provider=plan.provider,
                model=plan.model,
                status=plan.status,
                status_reason=plan.status_reason,
                steps=plan.steps,
                input_tokens=plan.input_tokens,
                output_tokens=plan.output_tokens,
                cost=plan.cost,
                started_at=self._moment(start),
                finished_at=self._moment(start + plan.events[-1].at),
            )
            for plan, start in zip(sessions, starts, strict=True)
        )
        messages, calls = [], []
        for plan, row, start in zip(sessions, rows, starts, strict=True):
            messages.append(
                Message(
                    session=row, index=0, role="user", content=[{"type": "text", "text": plan.goal}]
                )
            )
            for turn, (text, planned_calls) in enumerate(plan.turns):
                reply = Message(
                    session=row,
                    index=2 * turn + 1,
                    role="assistant",
                    model=plan.model,
                    content=[{"type": "text", "text": text}]
                    + [
                        {
                            "type": "tool_use",
                            "id": f"toolu_{turn}_{c.position}",
                            "name": c.tool,
                            "input": c.arguments,
                        }
                        for c in planned_calls
                    ],
                )
                messages.append(reply)
                for call in planned_calls:
                    calls.append(
                        ToolCall(
                            session=row,
                            message=reply,
                            position=call.position,
                            call_id=f"toolu_{turn}_{call.position}",
                            tool_name=call.tool,
                            proposed_arguments=call.arguments,
                            arguments=None if call.state == "errored" else call.arguments,
                            approval_reason=call.approval_reason,
                            state=call.state,
                            **{name: self._moment(start + at) for name, at in call.times.items()},
                        )
                    )
                if planned_calls:
                    messages.append(
                        Message(
                            session=row,
                            index=2 * turn + 2,
                            role="user",
                            content=[
                                {
                                    "type": "tool_result",
                                    "tool_use_id": f"toolu_{turn}_{c.position}",
                                    "content": c.state,
                                }
                                for c in planned_calls
                            ],
                        )
                    )
        Message.objects.bulk_create(messages)
        planned_calls = [
            call for plan in sessions for _, turn_calls in plan.turns for call in turn_calls
        ]
        for planned, row in zip(planned_calls, ToolCall.objects.bulk_create(calls), strict=True):
            planned.pk = row.pk
        for plan, row, start in zip(sessions, rows, starts, strict=True):
            for event in plan.events:
                yield (
                    self._moment(start + event.at),
                    next(self.order),
                    {
                        "actor": event.actor,
                        "session_id": row.pk,
                        "tool_call_id": event.call.pk if event.call else None,
                        "kind": event.kind,
                        "payload": event.payload,
                    },
                )

    def _write_due(
        self,
        queue: list[tuple[dt.datetime, int, dict[str, Any]]],
        *,
        until: dt.datetime | None,
        written: int,
    ) -> int:
        """Append the queued events older than `until` (all when None), up to the target."""
        due = []
        while queue and (until is None or queue[0][0] < until) and written + len(due) < self.target:
            moment, _, fields = heapq.heappop(queue)
            due.append(fields | {"created_at": moment})
        for start in range(0, len(due), EVENTS_PER_WRITE):
            _append(due[start : start + EVENTS_PER_WRITE])
        return len(due)


def _append(events: list[dict[str, Any]]) -> None:
    """Append events after the head, chained and hashed, in one locked transaction."""
    with transaction.atomic():
        connection = transaction.get_connection()
        with connection.cursor() as cursor:
            _lock_chain_head(connection, cursor)
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = head if head else (0, audit.GENESIS_HASH)
        rows = []
        for fields in events:
            seq += 1
            event = AuditEvent(seq=seq, prev_hash=prev_hash, **fields)
            event.hash = prev_hash = _event_hash([getattr(event, name) for name in HASHED_FIELDS])
            rows.append(event)
        # The model's manager refuses bulk_create, to keep the application on record();
        # this is the one writer allowed past it, holding the same lock record() takes.
        models.QuerySet(model=AuditEvent).bulk_create(rows)


class Command(BaseCommand):
    help = "Append N realistic, validly chained audit events (with their sessions and calls)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--events", type=int, required=True, help="how many events to append")
        parser.add_argument("--days", type=float, default=30, help="the period they span (30)")
        parser.add_argument("--seed", type=int, default=1, help="the random seed (1)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["events"] < 1:
            raise CommandError("--events must be at least 1")
        now = timezone.now()
        head = AuditEvent.objects.order_by("-seq").values_list("created_at", flat=True).first()
        start = now - dt.timedelta(days=options["days"])
        if head is not None:  # after the current head, so that time still grows with seq
            start = max(start, head)
        seeder = Seeder(
            events=options["events"],
            start=start,
            end=max(start, now - TAIL_ROOM),
            latest=now,
            seed=options["seed"],
        )
        written = seeder.run(
            lambda count: (
                self.stderr.write(f"... {count} events") if options["verbosity"] >= 2 else None
            )
        )
        self.stdout.write(f"{written} events appended")
