"""The durable runner: advances a session one step at a time, holding nothing in memory.

A step, run as a task by whichever worker claims it:
  1. claim the session's lease (one step at a time, across processes);
  2. mark calls left `running` by a dead worker `interrupted` (re-run if idempotent);
  3. expire the calls whose deadline for a decision has passed;
  4. end the session if it is over its token or cost budget: nothing more starts;
  5. run the calls that are decided (auto-approved or approved), recording each result,
     unless a rate limit holds the session back (its step is queued for later) or a
     call's arguments changed since they were decided (it goes back to the queue);
  6. if a call of the current turn still waits for a human, stop in waiting_approval;
  7. otherwise hand the results to the model (unless that would pass the step limit,
     which ends the session), store its reply and its new calls, let the policy decide
     each call, and go round again.
The rows are the whole truth: a task that runs twice, late, or after a crash finds the
work already done and does nothing. A process keeps two things between steps only to
avoid reading them again, never instead of the rows: each recent session's
conversation (messages are append-only, so only newer rows are read) and a scripted
session's provider (see _Conversations and _ScriptedProviders). `schedule()` is called
in the same transaction as the change that creates work; a sweep (see worker.py)
re-schedules anything a dead worker left behind.

Rate limits (a session's calls per minute, a tool's calls per minute across sessions,
tools running at once across workers) are counted from the database, so they hold
across worker processes, under a lock taken only when a limit is set (see _start): exact
on SQLite and PostgreSQL, approximate only in that windows use the workers' clocks and
a call whose worker died counts as running until its session is recovered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import F, Q, QuerySet
from django.tasks import task
from django.utils import timezone

from agentdash import audit, live, policy, rows, toolbox, worker
from agentdash.models import AgentSession, ApprovalDecision, ExecutionResult, Message, ToolCall
from agentdash.models.sessions import arguments_hash
from agentdash.providers import (
    ModelReply,
    ModelRequest,
    Provider,
    ProviderError,
    StopReason,
    cost_of,
    get_provider,
)
from agentdash.states import (
    CALL_DECIDED,
    CallState,
    SessionStatus,
    StaleState,
    enter,
    insert,
    transition,
    update_if,
)
from tools import ExecutionResult as ToolResult
from tools import ExecutionStatus, Tool, ToolExecutor, ToolValidationError

logger = logging.getLogger(__name__)

ACTOR = "runner"
# Steps one task may take before it re-queues the session, so that one busy session
# cannot hold a worker while others wait.
STEPS_PER_TASK = 50
# Text deltas and other live events go through this hook; the live layer sets it.
TextCallback = Callable[[int, str], None]
# Rate limits count calls started within this window ("per minute").
RATE_WINDOW = timedelta(minutes=1)
# pg_advisory_xact_lock key serialising call starts while limits are counted.
RATE_LIMIT_LOCK_KEY = 0x61646C696D6974  # "adlimit"


def schedule(session_id: int, *, at: datetime | None = None) -> None:
    """Queue a step for the session, now or (`at`) not before then. Call it inside the
    transaction that made the work: the task row then commits (or rolls back) with it,
    and workers wake on commit."""
    if at is not None:
        # Nobody needs waking: workers poll for steps that come due.
        advance_session.using(run_after=at).enqueue(session_id)
        return
    advance_session.enqueue(session_id)
    worker.notify_other_processes()
    transaction.on_commit(worker.wake)


@task()
def advance_session(session_id: int) -> str:
    """Advance one session as far as it can go without a human. Idempotent."""
    return SessionRunner(session_id, on_text=live.publish_text).advance()


class SessionRunner:
    def __init__(self, session_id: int, *, on_text: TextCallback | None = None) -> None:
        self.session_id = session_id
        self.on_text = on_text
        self.lease_owner = f"{worker.worker_id()}:{threading.get_ident()}"
        self.provider: Provider | None = None
        # The latest result this runner stored for each call: the results turn is built
        # from these without reading them back.
        self.stored_results: dict[int, ExecutionResult] = {}
        # The session's policy rules, read once per step when a call is about to start (a
        # rule saved while the step runs its calls applies from the next step on).
        self.rules: policy.RuleSet | None = None

    # -- the lease --------------------------------------------------------------------

    def _claim(self) -> AgentSession | None:
        """Take the session's lease, if it is live and free (or its holder's lapsed), and
        read the session as it is then (all but its script); None when not claimed.
        One statement, where a conditional UPDATE and then a SELECT took two."""
        now = timezone.now()
        expires = now + timedelta(seconds=settings.AGENTDASH_LEASE_SECONDS)
        adapt = connection.ops.adapt_datetimefield_value
        params = [self.lease_owner, adapt(expires), self.session_id, *_ACTIVE, adapt(now)]
        claimed = rows.fetch(_SESSION_COLUMNS, _CLAIM_SQL, params)
        return claimed[0] if claimed else None

    def _release(self) -> None:
        AgentSession.objects.filter(pk=self.session_id, lease_owner=self.lease_owner).update(
            lease_owner="", lease_expires_at=None
        )

    # -- advancing --------------------------------------------------------------------

    def advance(self) -> str:
        claimed = self._claim()
        if claimed is None:
            return "not claimed: finished, or another worker holds it"
        self.lease_released = False
        # Set when the step paused on calls it proposed itself, in the transaction that
        # released the lease: nobody could decide them while the lease was held.
        self.paused_on_new_calls = False
        _lease_renewer.hold(self.session_id, self.lease_owner)
        outcome = ""
        try:
            for _ in range(STEPS_PER_TASK):
                outcome = self.step(claimed)
                claimed = None  # read again at the next step
                if outcome != "continue":
                    return outcome
            with transaction.atomic():
                self._release()
                schedule(self.session_id)
            return "re-queued"
        except (OperationalError, InterfaceError):
            raise  # the database went away: the sweep retries the step once it is back
        except Exception as error:
            # A bug must not leave the session to be retried forever: end it, loudly.
            logger.exception("session %s: step failed", self.session_id)
            session = AgentSession.objects.get(pk=self.session_id)
            self._end(session, SessionStatus.FAILED, f"Internal error in the runner: {error!r}")
            return session.status
        finally:
            _lease_renewer.let_go(self.session_id)
            if not self.lease_released:
                self._release()
            if outcome == "waiting_approval" and not self.paused_on_new_calls:
                self._reschedule_if_work_arrived()

    def _reschedule_if_work_arrived(self) -> None:
        """A decision made while this step held the lease queued a step that could not
        claim the session and ended. Now that the lease is free, look once more."""
        owes_work = AgentSession.objects.filter(
            Q(status=SessionStatus.RUNNING)
            | Q(tool_calls__state__in=[CallState.APPROVED, CallState.AUTO_APPROVED]),
            pk=self.session_id,
            status__in=_ACTIVE,
        )
        if owes_work.exists():
            with transaction.atomic():
                schedule(self.session_id)

    def step(self, session: AgentSession | None = None) -> str:
        """One step; `session` is the session as just read, if it was."""
        if session is None:
            # The script is only read when the model is called (see _provider).
            session = AgentSession.objects.defer("script").get(pk=self.session_id)
        if session.is_finished:
            return session.status
        if session.status == SessionStatus.QUEUED:
            transition(session, SessionStatus.RUNNING, actor=ACTOR)
        self.registry = toolbox.registry_for_session(session)
        self.rules = None  # read when first needed in this step

        turn, calls = _latest_turn(session)
        assert turn is not None  # every session starts with the goal message
        # A session over its token or cost budget does no more work: no call starts, no
        # human is asked (ending settles the calls that will not run). Only a model that
        # has said its last word is let finish.
        over_budget = "" if _is_last_word(turn, calls) else self._over_budget(session)
        for call in calls:
            if call.state == CallState.RUNNING:
                self._interrupt(session, call, over_budget=over_budget)
            elif call.state == CallState.PENDING_APPROVAL and _overdue(call):
                self._expire(call)
        if over_budget:
            self._end(session, SessionStatus.BUDGET_EXCEEDED, over_budget)
            return session.status
        ran = False
        for call in calls:
            if call.is_decided or self._should_rerun(session, call):
                rerun = call.state == CallState.INTERRUPTED
                # Reads the status afresh: a cancel while the previous call ran ends here.
                if (limit := self._start(session, call)) is not None:
                    return self._hold_back(session, call, limit)
                if call.state != CallState.RUNNING:
                    if session.is_finished:
                        return session.status  # cancelled before the call could start
                    continue  # sent back for approval, or rejected by the policy
                self._run_call(session, call, rerun=rerun)
                ran = True
        if ran:
            session.status = _status_of(session.pk)  # cancelled while the last call ran?
            if session.is_finished:
                return session.status
        if any(call.state == CallState.PENDING_APPROVAL for call in calls):
            self._wait_for_approval(session, calls)
            return "waiting_approval"
        if session.status == SessionStatus.WAITING_APPROVAL:
            transition(session, SessionStatus.RUNNING, actor=ACTOR)

        if _is_last_word(turn, calls):
            return self._finish(session, turn)
        # The newest messages, as this step read or wrote them: the conversation sent
        # to the model need not read them back.
        in_hand = [turn]
        if calls:
            in_hand.append(self._append_results(session, turn, calls))
        if reason := self._over_budget(session, calling_model=True):
            self._end(session, SessionStatus.BUDGET_EXCEEDED, reason)
            return session.status
        return self._call_model(session, in_hand)

    def _wait_for_approval(self, session: AgentSession, calls: list[ToolCall]) -> None:
        """Stop here until a human decides, or until the earliest deadline of the pending
        calls, for which a step is queued (the step expires what is still undecided).

        A session that pauses again and again within one deadline (each approval comes
        quickly) queues that step once, not at every pause: `expiry_check_at` says when
        the queued one runs, and a step that finds it past queues the next.
        """
        fields: dict[str, Any] = {}
        deadlines = [c.expires_at for c in calls if c.state == CallState.PENDING_APPROVAL]
        deadline = min((d for d in deadlines if d is not None), default=None)
        queued = session.expiry_check_at
        with transaction.atomic(savepoint=False):  # a pause joins its reply's transaction
            if deadline is not None and not (queued and timezone.now() < queued <= deadline):
                schedule(session.pk, at=deadline)
                fields["expiry_check_at"] = deadline
            if session.status == SessionStatus.RUNNING:
                # The session lets go of its lease as it stops.
                transition(
                    session,
                    SessionStatus.WAITING_APPROVAL,
                    actor=ACTOR,
                    lease_owner="",
                    lease_expires_at=None,
                    **fields,
                )
                self.lease_released = True
            elif fields:
                AgentSession.objects.filter(pk=session.pk).update(**fields)

    # -- tool calls ---------------------------------------------------------------------

    def _interrupt(self, session: AgentSession, call: ToolCall, *, over_budget: str) -> None:
        """A call still `running` while we hold the lease: its worker died mid-run. It is
        not run again when the session is over its budget (`over_budget` says why)."""
        refusal = (
            f"the session is over its budget ({over_budget.rstrip('.')})"
            if over_budget
            else self._rerun_refusal(session, call, attempts=call.results.count() + 1)
        )
        if refusal is None:
            note = "It is run again (its tool is idempotent)."
        else:
            note = f"It was not run again: {refusal}."
        message = (
            "The worker running this call stopped before it finished; it may or may not "
            f"have taken effect. {note}"
        )
        with transaction.atomic():
            payload = {"rerun": refusal is None, **({"why_not": refusal} if refusal else {})}
            transition(call, CallState.INTERRUPTED, actor=ACTOR, payload=payload)
            self._store_result(call, status=ExecutionStatus.INTERRUPTED, error=message)

    def _expire(self, call: ToolCall) -> None:
        """Nobody decided before the deadline: the call never runs, and the model is told."""
        assert call.expires_at is not None
        when = call.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        message = f"Nobody approved this call before its deadline ({when}); it was not run."
        try:
            with transaction.atomic():
                transition(
                    call,
                    CallState.EXPIRED,
                    actor="system",
                    payload={"expires_at": call.expires_at.isoformat()},
                )
                self._store_result(
                    call, status=ExecutionStatus.EXPIRED, error=message, first_attempt=True
                )
        except StaleState:
            call.refresh_from_db()  # an operator decided it first

    def _start(self, session: AgentSession, call: ToolCall) -> RateLimit | None:
        """Move a decided (or re-run) call to running, unless a rate limit holds it back
        (which is returned), its arguments no longer hash to what was approved (it is
        sent back to pending_approval, for a human to look again), or the policy, asked
        once more, no longer allows it (see _policy_still_allows)."""
        per_session = session.calls_per_minute or settings.AGENTDASH_SESSION_CALLS_PER_MINUTE
        per_tool = settings.AGENTDASH_TOOL_CALLS_PER_MINUTE.get(call.tool_name)
        running = settings.AGENTDASH_MAX_RUNNING_TOOLS
        with transaction.atomic():
            # Under a share lock: a cancel (which locks the row to end the session and
            # settle its calls) either committed before, and the call never starts, or
            # waits until this has committed, and then interrupts the running call. The
            # status this step read may be stale by now.
            session.status = _status_of(session.pk, lock=True)
            if session.is_finished:
                call.refresh_from_db(fields=["state"])  # settled as the session ended
                return None
            if call.state in CALL_DECIDED:
                if (current := arguments_hash(call.arguments)) != call.decided_hash:
                    how = (
                        "approved" if call.state == CallState.APPROVED else "allowed by the policy"
                    )
                    self._send_back(
                        call,
                        f"Its arguments changed after they were {how}.",
                        {"decided_hash": call.decided_hash, "arguments_hash": current},
                    )
                    return None
                if not self._policy_still_allows(session, call):
                    return None
            if per_session or per_tool or running:
                _lock_rate_limits()
                limit = _over_limit(session, call, per_session, per_tool, running)
                if limit is not None:
                    return limit
            transition(call, CallState.RUNNING, actor=ACTOR)
            if session.rate_limited_until is not None:
                AgentSession.objects.filter(pk=session.pk).update(rate_limited_until=None)
                session.rate_limited_until = None
        return None

    def _hold_back(self, session: AgentSession, call: ToolCall, limit: RateLimit) -> str:
        """Queue this step again for when the limit allows; the session waits, holding
        nothing, and is audited once per wait, not at every retry."""
        with transaction.atomic():
            if session.rate_limited_until is None:
                audit.record(
                    "session.rate_limited",
                    actor=ACTOR,
                    session_id=session.pk,
                    tool_call_id=call.pk,
                    payload={"limit": limit.name, "detail": limit.detail, "until": limit.until},
                )
            AgentSession.objects.filter(pk=session.pk).update(rate_limited_until=limit.until)
            schedule(session.pk, at=limit.until)
        return "rate_limited"

    def _policy_still_allows(self, session: AgentSession, call: ToolCall) -> bool:
        """Put a decided call to the policy once more, right before it runs. Its arguments
        are the ones decided (their hash says so), but what they name may not be: a link
        made by an earlier call of the same reply can lead a path under a folder a rule
        denies, and the rules may have changed meanwhile. A call the policy now denies
        is rejected, even one a human approved (a deny rule is not theirs to waive, as
        with edits); one it now asks about, that no human approved, goes to the queue.
        False when the call must not run now."""
        ruling = self._ruling_now(session, call)
        if ruling is None:
            return True  # the executor reports the unknown tool as the call's result
        if ruling.action == "deny":
            with transaction.atomic():
                transition(
                    call,
                    CallState.REJECTED,
                    actor="policy",
                    payload={"when": "before running", **ruling.audit_payload()},
                    approval_reason=ruling.reason,
                    policy_rule=ruling.rule,
                )
                self._store_denial(call, ruling)
            return False
        if not _needs_a_human(call, ruling, human_approved=call.state == CallState.APPROVED):
            return True
        if call.state == CallState.AUTO_APPROVED:
            why = f"Allowed when proposed, but now: {ruling.reason}."
        else:
            why = f"Approved, but a rule now asks more of its approvers: {ruling.reason}."
        self._send_back(
            call, why, {"when": "before running", **ruling.audit_payload()}, ruling=ruling
        )
        return False

    def _store_denial(self, call: ToolCall, ruling: policy.PolicyDecision) -> None:
        """The result the model reads for a call the policy denied."""
        self._store_result(
            call,
            status=ExecutionStatus.PERMISSION_DENIED,
            error=f"{ruling.reason.rstrip('.')}. It was not run.",  # a description may end in one
            first_attempt=True,
        )

    def _send_back(
        self,
        call: ToolCall,
        reason: str,
        payload: dict[str, Any],
        *,
        ruling: policy.PolicyDecision | None = None,
    ) -> None:
        """Back to the approval queue, in a new round, with a fresh deadline (the step
        then waits, see _wait_for_approval): the arguments changed after they were
        decided, or the policy (`ruling`) now asks about a call it had allowed."""
        transition(
            call,
            CallState.PENDING_APPROVAL,
            actor="policy" if ruling is not None else ACTOR,
            payload=payload,
            approval_reason=reason,
            approval_round=call.approval_round + 1,
            decided_hash="",
            **_waiting_for_a_human(ruling),
        )

    def _ruling_now(self, session: AgentSession, call: ToolCall) -> policy.PolicyDecision | None:
        """What the policy says of the call as things are now (None: no such tool)."""
        tool = self.registry.get(call.tool_name)
        if tool is None:
            return None
        if self.rules is None:
            self.rules = policy.rules_for(session.pk)
        return self.rules.decide(tool, call.arguments or {}, workspace=session.workspace)

    def _should_rerun(self, session: AgentSession, call: ToolCall) -> bool:
        """An interrupted call runs again unless _rerun_refusal says why not (it then stays
        interrupted, and its result says so)."""
        if call.state != CallState.INTERRUPTED:
            return False
        return self._rerun_refusal(session, call, attempts=call.results.count()) is None

    def _rerun_refusal(self, session: AgentSession, call: ToolCall, *, attempts: int) -> str | None:
        """Why an interrupted call may not run again, or None when it may: its tool must
        be idempotent, with attempts left, and the policy must allow it now as it would a
        first run (see _policy_still_allows): not denied, and not asked about unless a
        human approved it under what the rule now asks of its approvers."""
        tool = self.registry.get(call.tool_name)
        if tool is None or not tool.idempotent:
            return "its tool is not idempotent, so it might take effect twice"
        if attempts >= settings.AGENTDASH_MAX_ATTEMPTS:
            return f"it was tried {attempts} times"
        ruling = self._ruling_now(session, call)
        assert ruling is not None  # the tool exists
        if ruling.action == "deny":
            return ruling.reason.rstrip(".")
        approved = call.decisions.filter(approved=True, round=call.approval_round).exists()
        if _needs_a_human(call, ruling, human_approved=approved):
            return f"{ruling.reason.rstrip('.')}, and nobody approved it for that"
        return None

    def _run_call(self, session: AgentSession, call: ToolCall, *, rerun: bool) -> None:
        """Run a call that _start() moved to running and record its result."""
        executor = ToolExecutor(self.registry)
        result = _run_cancellable(
            executor.execute(call.tool_name, call.arguments or {}, context={"confirmed": True}),
            is_cancelled=lambda: AgentSession.objects.filter(
                pk=session.pk, cancel_requested=True
            ).exists(),
        )
        if result is None:  # cancelled by an operator while it ran
            with transaction.atomic():
                transition(call, CallState.INTERRUPTED, actor=ACTOR, payload={"cancelled": True})
                self._store_result(
                    call,
                    status=ExecutionStatus.INTERRUPTED,
                    error="The session was cancelled while this call ran; it was stopped.",
                )
            return
        result.call_id = call.call_id
        new_state = {
            ExecutionStatus.SUCCESS: CallState.SUCCEEDED,
            ExecutionStatus.TIMEOUT: CallState.TIMED_OUT,
        }.get(result.status, CallState.ERRORED)
        with transaction.atomic():
            transition(
                call,
                new_state,
                actor=ACTOR,
                payload={"status": str(result.status), "duration_ms": result.duration_ms},
            )
            self._store_result(call, tool_result=result, first_attempt=not rerun)

    def _store_result(
        self,
        call: ToolCall,
        *,
        tool_result: ToolResult | None = None,
        status: ExecutionStatus | None = None,
        error: str = "",
        first_attempt: bool = False,
    ) -> ExecutionResult:
        if tool_result is None:
            tool_result = ToolResult(
                status=status or ExecutionStatus.ERROR,
                error=error,
                tool_name=call.tool_name,
                parameters=call.arguments or {},
                call_id=call.call_id,
            )
        data = tool_result.to_dict()
        previous = 0 if first_attempt else call.results.count()
        observation = tool_result.to_observation()
        if previous:
            # Only an interrupted call is tried again, and the model reads only the last
            # attempt's result: it must say that the call may have taken effect before.
            earlier = "attempt was" if previous == 1 else f"{previous} attempts were"
            observation = (
                f"The first {earlier} interrupted (it may or may not have taken effect), "
                f"so the call was run again:\n{observation}"
            )
        stored = self.stored_results[call.pk] = ExecutionResult(
            tool_call=call,
            attempt=previous + 1,
            status=str(tool_result.status),
            result=data.get("result"),
            error=tool_result.error or "",
            observation=observation,
            duration_ms=tool_result.duration_ms,
            truncated=tool_result.truncated,
            metadata=tool_result.metadata or {},
        )
        insert(stored)
        return stored

    def _append_results(
        self, session: AgentSession, turn: Message, calls: list[ToolCall]
    ) -> Message:
        """The user turn that carries every call's result back to the model."""
        latest = {
            call.pk: self.stored_results[call.pk]
            for call in calls
            if call.pk in self.stored_results
        }
        if unread := [call for call in calls if call.pk not in latest]:
            for result in ExecutionResult.objects.filter(tool_call__in=unread).order_by("attempt"):
                latest[result.tool_call_id] = result
        blocks = [
            {
                "type": "tool_result",
                "tool_use_id": call.call_id,
                "content": latest[call.pk].observation,
                "is_error": latest[call.pk].is_error,
            }
            for call in calls
        ]
        results = Message(
            session=session, index=turn.index + 1, role=Message.Role.USER, content=blocks
        )
        insert(results)
        return results

    # -- the model ------------------------------------------------------------------------

    def _over_budget(self, session: AgentSession, *, calling_model: bool = False) -> str:
        """Why the session must stop, if it must. The step limit counts model calls, so
        it stops only the next one: the calls of the last reply it allowed still run."""
        if calling_model and session.steps >= session.max_steps:
            return f"Reached the limit of {session.max_steps} model steps."
        if session.max_tokens is not None and session.total_tokens >= session.max_tokens:
            return f"Used {session.total_tokens} tokens, the limit is {session.max_tokens}."
        if session.max_cost is not None and session.cost >= session.max_cost:
            return f"Spent ${session.cost:.4f}, the limit is ${session.max_cost:.4f}."
        return ""

    def _call_model(self, session: AgentSession, in_hand: list[Message]) -> str:
        """Send the conversation, whose newest messages are `in_hand` (the last of them
        the latest), to the model, and store its reply."""
        last_index = in_hand[-1].index
        messages = _conversations.messages(session, in_hand)
        request = ModelRequest(
            model=session.model,
            system=session.system_prompt or settings.AGENTDASH_SYSTEM_PROMPT,
            messages=messages,
            tools=self.registry.to_api_format("anthropic"),
            max_tokens=settings.AGENTDASH_MAX_OUTPUT_TOKENS,
        )
        on_text = (lambda text: self.on_text(session.pk, text)) if self.on_text else None
        try:
            reply = self._provider(session).complete(request, on_text=on_text)
        except (ProviderError, ValueError) as error:
            self._end(session, SessionStatus.FAILED, f"The model provider failed: {error}")
            return session.status
        return self._store_reply(session, reply, last_index + 1)

    def _provider(self, session: AgentSession) -> Provider:
        """The session's model client, built once per task; a scripted session's once per
        process (see _ScriptedProviders)."""
        if self.provider is None:
            if session.provider == "scripted":
                self.provider = _scripted_providers.get(session)
            else:
                self.provider = get_provider(session.provider)
        return self.provider

    def _store_reply(self, session: AgentSession, reply: ModelReply, index: int) -> str:
        cost = cost_of(reply.model or session.model, reply.usage)
        usage = reply.usage
        # Cached input is input all the same: it counts against the token limit (and
        # cost_of prices it at the cache rates).
        input_tokens = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        # The counters as read at this step's start plus this reply, written only if the
        # step count is still the one read (every reply moves it, and only under the
        # lease): plain values where adding in SQL took the ORM to compile, and a lapsed
        # lease cannot count a reply twice.
        totals = {
            "steps": session.steps + 1,
            "input_tokens": session.input_tokens + input_tokens,
            "output_tokens": session.output_tokens + usage.output_tokens,
            "cost": session.cost + cost,
        }
        paid = {
            "input_tokens": input_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "output_tokens": usage.output_tokens,
            "cost": str(cost),
        }
        with transaction.atomic():
            changed = update_if(
                session,
                {"status": SessionStatus.RUNNING, "steps": session.steps},
                {**totals, "updated_at": timezone.now()},
            )
            if changed != 1:
                return self._discard_reply(session, input_tokens, usage.output_tokens, cost, paid)
            for name, value in totals.items():
                setattr(session, name, value)
            uses = [block for block in reply.content if block.get("type") == "tool_use"]
            names = self._name_calls(session, uses)
            # Each tool_use is stored (and so sent back to the model) under the id its
            # call has, which its tool_result names: the APIs refuse a conversation whose
            # ids repeat or do not pair up.
            named = iter(names)
            content = [
                {**_shrink_block(block), "id": next(named).call_id}
                if block.get("type") == "tool_use"
                else block
                for block in reply.content
            ]
            message = Message(
                session=session,
                index=index,
                role=Message.Role.ASSISTANT,
                content=content,
                stop_reason=str(reply.stop_reason),
                model=reply.model or session.model,
                input_tokens=input_tokens,
                output_tokens=reply.usage.output_tokens,
                cost=cost,
            )
            insert(message)
            live.changed(session.pk, message_id=message.pk)
            audit.record(
                "model.replied",
                actor="model",
                session_id=session.pk,
                payload={
                    "message_index": message.index,
                    "stop_reason": str(reply.stop_reason),
                    **paid,
                    "text": message.text,
                },
            )
            calls = self._propose_all(session, message, uses, names) if uses else []
            states = [call.state for call in calls]
            if (
                CallState.PENDING_APPROVAL in states
                and CallState.AUTO_APPROVED not in states
                and not self._over_budget(session)
            ):
                # Nothing can run before a human decides: stop now, in this transaction.
                # (A reply that took the session over its budget asks nobody: the next
                # step ends the session.)
                self._wait_for_approval(session, calls)
                self.paused_on_new_calls = self.lease_released
                return "waiting_approval"

        if reply.stop_reason == StopReason.REFUSAL:
            self._end(session, SessionStatus.FAILED, "The model refused to continue.")
            return session.status
        if reply.stop_reason == StopReason.CONTEXT_EXCEEDED:
            self._end(
                session,
                SessionStatus.FAILED,
                "The conversation no longer fits in the model's context window.",
            )
            return session.status
        return "continue"

    def _discard_reply(
        self,
        session: AgentSession,
        input_tokens: int,
        output_tokens: int,
        cost: Decimal,
        paid: dict[str, Any],
    ) -> str:
        """The session stopped running while the model answered (it was cancelled, or
        another worker took a step meanwhile): the reply is not used, but it was paid
        for, so its tokens and cost are added (in SQL: each reply is discarded once, but
        the counters may have moved since this step read them) and audited. Not as a
        step: no turn of the conversation came of it. Call inside the transaction that
        tried to store the reply."""
        AgentSession.objects.filter(pk=session.pk).update(
            input_tokens=F("input_tokens") + input_tokens,
            output_tokens=F("output_tokens") + output_tokens,
            cost=F("cost") + cost,
            updated_at=timezone.now(),
        )
        audit.record(
            "model.reply_discarded",
            actor="model",
            session_id=session.pk,
            payload={"reason": "The session stopped while the model answered.", **paid},
        )
        live.changed(session.pk)
        session.refresh_from_db()
        return session.status

    def _name_calls(self, session: AgentSession, uses: list[dict[str, Any]]) -> list[_CallName]:
        """The id each tool_use of a reply is recorded under: the model's own, unless it
        is empty, not one the APIs accept, or already used in the session (this reply
        included), when it gets a fresh one; a reused id is kept for the error the model
        reads, since such a call is refused."""
        given = [str(block.get("id") or "") for block in uses]
        usable = [call_id for call_id in given if _USABLE_CALL_ID.fullmatch(call_id)]
        seen: set[str] = set()
        if usable:
            with connection.cursor() as cursor:
                placeholders = ", ".join(["%s"] * len(usable))
                cursor.execute(_SEEN_CALL_IDS_SQL % placeholders, [session.pk, *usable])
                seen = {call_id for (call_id,) in cursor.fetchall()}
        names: list[_CallName] = []
        for call_id in given:
            if call_id in seen:
                names.append(_CallName(_fresh_call_id(), reused=call_id))
            elif call_id in usable:
                names.append(_CallName(call_id))
                seen.add(call_id)
            else:
                names.append(_CallName(_fresh_call_id()))
        return names

    def _propose_all(
        self,
        session: AgentSession,
        message: Message,
        uses: list[dict[str, Any]],
        names: list[_CallName],
    ) -> list[ToolCall]:
        """Record the calls of one reply, each decided by the session's current rules."""
        rules = policy.rules_for(session.pk)
        return [
            self._propose(session, message, n, block, name, rules)
            for n, (block, name) in enumerate(zip(uses, names, strict=True))
        ]

    def _propose(
        self,
        session: AgentSession,
        message: Message,
        position: int,
        block: dict[str, Any],
        name: _CallName,
        rules: policy.RuleSet,
    ) -> ToolCall:
        """Record one call the model asked for; the policy decides it, unless it is faulty."""
        raw = block.get("input")
        size = len(json.dumps(raw, default=str))
        # Built here, stored by enter() in the state it is decided into.
        call = ToolCall(
            session=session,
            message=message,
            position=position,
            call_id=name.call_id,
            tool_name=str(block.get("name", ""))[:200],
            proposed_arguments=raw
            if size <= settings.AGENTDASH_MAX_STORED_ARGUMENT_BYTES
            else _omitted(size),
        )
        fault = self._fault(call, block, size, reused=name.reused)
        if fault is not None:
            status, error = fault
            enter(call, CallState.ERRORED, actor=ACTOR, payload={"error": error})
            self._store_result(call, status=status, error=error, first_attempt=True)
            return call
        tool = self.registry.get(call.tool_name)
        assert tool is not None  # _fault() checked
        try:
            arguments = tool.validate(raw)
        except ToolValidationError as invalid:
            enter(call, CallState.ERRORED, actor=ACTOR, payload={"error": str(invalid)})
            self._store_result(
                call,
                status=ExecutionStatus.VALIDATION_ERROR,
                error=str(invalid),
                first_attempt=True,
            )
            return call
        decision = rules.decide(tool, arguments, workspace=session.workspace)
        self._apply(call, tool, arguments, decision)
        return call

    def _apply(
        self,
        call: ToolCall,
        tool: Tool,
        arguments: dict[str, Any],
        decision: policy.PolicyDecision,
    ) -> None:
        """Carry out the policy's decision on a valid new call (stored as it is decided),
        naming its rule in the audit."""
        payload = {"tool": tool.name, "arguments": arguments, **decision.audit_payload()}
        fields: dict[str, Any] = {
            "arguments": arguments,
            "approval_reason": decision.reason,
            "policy_rule": decision.rule,
        }
        if decision.action == "deny":
            enter(call, CallState.REJECTED, actor="policy", payload=payload, **fields)
            self._store_denial(call, decision)
        elif decision.action == "ask":
            enter(
                call,
                CallState.PENDING_APPROVAL,
                actor="policy",
                payload=payload,
                preview=preview_of(tool, arguments),
                **(fields | _waiting_for_a_human(decision)),
            )
        else:
            enter(
                call,
                CallState.AUTO_APPROVED,
                actor="policy",
                payload=payload,
                preview=preview_of(tool, arguments),
                decided_hash=arguments_hash(arguments),
                **fields,
            )

    def _fault(
        self, call: ToolCall, block: dict[str, Any], size: int, *, reused: str
    ) -> tuple[ExecutionStatus, str] | None:
        """What makes a call unusable before its arguments are even validated."""
        limit = settings.AGENTDASH_MAX_TOOL_INPUT_BYTES
        if block.get("input_error"):
            return ExecutionStatus.VALIDATION_ERROR, str(block["input_error"])
        if size > limit:
            return ExecutionStatus.VALIDATION_ERROR, (
                f"The arguments for {call.tool_name} were {size:,} bytes, over the limit of "
                f"{limit:,} bytes, and were not used. Send smaller arguments."
            )
        if reused:
            return ExecutionStatus.ERROR, (
                f"The call id {reused!r} was already used in this session, so this call "
                "was not run: every tool call needs a new id."
            )
        if self.registry.get(call.tool_name) is None:
            available = ", ".join(tool.name for tool in self.registry.list_tools())
            return ExecutionStatus.ERROR, (
                f"Unknown tool {call.tool_name!r}. Available tools: {available}."
            )
        return None

    # -- ending -------------------------------------------------------------------------

    def _finish(self, session: AgentSession, turn: Message) -> str:
        reason = {
            StopReason.MAX_TOKENS: "The model's last reply was cut off at its output limit.",
        }.get(turn.stop_reason, "")
        self._end(session, SessionStatus.COMPLETED, reason)
        return session.status

    def _end(self, session: AgentSession, status: SessionStatus, reason: str) -> None:
        try:
            with transaction.atomic():
                if status == SessionStatus.BUDGET_EXCEEDED and (
                    session.status == SessionStatus.WAITING_APPROVAL
                ):
                    # Only a running session may go over budget (states.py): one that
                    # waited, and was over budget when a decision woke it, resumes to end.
                    transition(session, SessionStatus.RUNNING, actor=ACTOR)
                transition(
                    session, status, actor=ACTOR, status_reason=reason, payload={"reason": reason}
                )
                settle_open_calls(session, actor=ACTOR, reason=f"The session ended: {reason}")
        except StaleState:
            session.refresh_from_db()


def settle_open_calls(
    session: AgentSession, *, actor: str, reason: str, user: AbstractBaseUser | None = None
) -> None:
    """Reject every call of an ended session that still waits, for a human or for its
    turn to run, so that no queue shows it, no one can decide it and none stays approved
    for ever. A running call is left to its runner, which stops it. Call inside the
    transaction that ends the session: with its row locked, no decided call can start
    meanwhile (SessionRunner._start reads the status under a share lock)."""
    waiting = ToolCall.objects.select_for_update().filter(
        session=session, state__in=[CallState.PENDING_APPROVAL, *CALL_DECIDED]
    )
    for call in waiting:
        if call.state == CallState.PENDING_APPROVAL:
            ApprovalDecision.objects.create(
                tool_call=call, approved=False, decided_by=user, actor=actor, reason=reason
            )
        transition(call, CallState.REJECTED, actor=actor, payload={"reason": reason})
        ExecutionResult.objects.create(
            tool_call=call, status="rejected", error=reason, observation=reason
        )


_ACTIVE = frozenset({SessionStatus.QUEUED, SessionStatus.RUNNING, SessionStatus.WAITING_APPROVAL})

# Plain SQL on the hot path of every step (the ORM cannot UPDATE ... RETURNING, and on
# SQLite building its query costs several times running it). S608: only the model's
# own table and column names are formatted in; every value is a parameter.
_SESSION_TABLE = AgentSession._meta.db_table
_SESSION_COLUMNS = rows.Columns(AgentSession, exclude=["script"])
_CLAIM_SQL = (
    f'UPDATE "{_SESSION_TABLE}" SET "lease_owner" = %s, "lease_expires_at" = %s '  # noqa: S608
    f'WHERE "id" = %s AND "status" IN ({", ".join(["%s"] * len(_ACTIVE))}) '
    f'AND ("lease_expires_at" IS NULL OR "lease_expires_at" < %s) RETURNING {_SESSION_COLUMNS.sql}'
)
_STATUS_SQL = f'SELECT "status" FROM "{_SESSION_TABLE}" WHERE "id" = %s'  # noqa: S608
_MESSAGE_COLUMNS = rows.Columns(Message)
_CALL_COLUMNS = rows.Columns(ToolCall)


# Which of a reply's call ids the session already used (the IN list's placeholders are
# filled in per reply; the ids themselves are parameters).
_SEEN_CALL_IDS_SQL = (
    f'SELECT "call_id" FROM "{ToolCall._meta.db_table}" '  # noqa: S608
    'WHERE "session_id" = %%s AND "call_id" IN (%s)'
)
_LATEST_TURN_SQL = (
    f'SELECT {_MESSAGE_COLUMNS.sql} FROM "{Message._meta.db_table}" '  # noqa: S608
    'WHERE "session_id" = %s ORDER BY "index" DESC LIMIT 1'
)
_TURN_CALLS_SQL = (
    f'SELECT {_CALL_COLUMNS.sql} FROM "{ToolCall._meta.db_table}" '  # noqa: S608
    'WHERE "message_id" = %s ORDER BY "position"'
)


def _latest_turn(session: AgentSession) -> tuple[Message | None, list[ToolCall]]:
    """The session's latest message and its tool calls in order, read at every step (in
    plain SQL, as the claim reads the session), their relations set to what is known."""
    latest = rows.fetch(_MESSAGE_COLUMNS, _LATEST_TURN_SQL, [session.pk])
    if not latest:
        return None, []
    turn = latest[0]
    turn.session = session
    calls = rows.fetch(_CALL_COLUMNS, _TURN_CALLS_SQL, [turn.pk])
    for call in calls:
        call.session, call.message = session, turn
    return turn, calls


# A tool call id the APIs accept (Anthropic's pattern; OpenAI's ids fit it), no longer
# than ToolCall.call_id holds.
_USABLE_CALL_ID = re.compile(r"[a-zA-Z0-9_-]{1,200}")


@dataclass(frozen=True, slots=True)
class _CallName:
    """The id a call is recorded under, and the id the model gave it when that id had
    already been used in the session (the call is refused, and the model told)."""

    call_id: str
    reused: str = ""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The limit holding a call back, and when it lets the call start."""

    name: str  # "session", "tool" or "running"
    detail: str
    until: datetime


def _fresh_call_id() -> str:
    """An id for a call whose own id could not be used (in the style of OpenAI's)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _is_last_word(turn: Message, calls: list[ToolCall]) -> bool:
    """Whether the model ended the session with `turn`: a reply with no calls that does
    not ask to be called again (pause_turn)."""
    return (
        turn.role == Message.Role.ASSISTANT
        and not calls
        and turn.stop_reason != StopReason.PAUSE_TURN
    )


def _overdue(call: ToolCall) -> bool:
    return call.expires_at is not None and call.expires_at <= timezone.now()


def _lock_rate_limits() -> None:
    """Serialise call starts while the limits are counted, so that two workers cannot
    both take the last place. SQLite's IMMEDIATE transactions hold its only write lock
    already; PostgreSQL takes an advisory lock until the transaction ends."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RATE_LIMIT_LOCK_KEY])


def _over_limit(
    session: AgentSession,
    call: ToolCall,
    per_session: int | None,
    per_tool: int | None,
    running: int | None,
) -> RateLimit | None:
    """The first limit that starting `call` now would break, if any."""
    now = timezone.now()
    started = ToolCall.objects.filter(started_at__gt=now - RATE_WINDOW)
    if per_session and (until := _window_full(started.filter(session=session), per_session)):
        return RateLimit("session", f"{per_session} tool calls per minute in this session", until)
    if per_tool and (until := _window_full(started.filter(tool_name=call.tool_name), per_tool)):
        return RateLimit("tool", f"{per_tool} {call.tool_name} calls per minute", until)
    if running and ToolCall.objects.filter(state=CallState.RUNNING).count() >= running:
        retry = now + timedelta(seconds=settings.AGENTDASH_RATE_LIMIT_RETRY_SECONDS)
        return RateLimit("running", f"{running} tools running at once", retry)
    return None


def _window_full(started: QuerySet[ToolCall], limit: int) -> datetime | None:
    """When the next call may start, if `limit` calls started within the window."""
    latest = list(started.order_by("-started_at").values_list("started_at", flat=True)[:limit])
    return latest[-1] + RATE_WINDOW if len(latest) >= limit else None


def _omitted(size: int) -> dict[str, str]:
    return {"_omitted": f"{size:,} bytes of arguments, too large to keep"}


def _shrink_block(block: dict[str, Any]) -> dict[str, Any]:
    """Keep a huge tool_use input out of the stored conversation (and the next request)."""
    if block.get("type") != "tool_use":
        return block
    size = len(json.dumps(block.get("input"), default=str))
    if size <= settings.AGENTDASH_MAX_STORED_ARGUMENT_BYTES:
        return block
    return {**block, "input": _omitted(size)}


def _waiting_for_a_human(ruling: policy.PolicyDecision | None) -> dict[str, Any]:
    """The fields of a call that starts to wait for a human now: its deadline, counted
    from this very moment (the ruling's wait, or the default), and what the ruling, when
    there is one, asks of its approvers."""
    now = timezone.now()
    waits = (ruling and ruling.expires_after) or timedelta(
        seconds=settings.AGENTDASH_APPROVAL_TIMEOUT_SECONDS
    )
    fields: dict[str, Any] = {"proposed_at": now, "expires_at": now + waits}
    if ruling is not None:
        fields |= {
            "policy_rule": ruling.rule,
            "required_group": ruling.required_group,
            "approvals_required": ruling.approvals_required,
            "four_eyes": ruling.four_eyes,
        }
    return fields


def _needs_a_human(call: ToolCall, ruling: policy.PolicyDecision, *, human_approved: bool) -> bool:
    """Whether the policy, asked now, wants a human's approval the call does not have: it
    asks, and no human approved the call, or the rule now asks more of its approvers
    than they were asked when they did."""
    if ruling.action != "ask":
        return False
    return not human_approved or bool(policy.stricter_requirements(call, ruling))


def preview_of(tool: Any, arguments: dict[str, Any]) -> str:
    """What `tool` says it would do with `arguments`, recorded with the call."""
    if tool.preview is None:
        return ""
    try:
        return tool.preview(arguments) or ""
    except Exception as error:  # a preview is a courtesy: its failure must not stop the call
        logger.warning("preview of %s failed: %s", tool.name, error)
        return f"(no preview: {error})"


def _run_cancellable(coro: Any, *, is_cancelled: Callable[[], bool]) -> ToolResult | None:
    """Run a tool coroutine, cancelling it (and so its sandbox) if the session is cancelled.

    Returns None when it was cancelled. The database check runs in a thread, since the
    ORM must not be used from the event loop.
    """

    async def main() -> ToolResult | None:
        job = asyncio.ensure_future(coro)
        interval = settings.AGENTDASH_CANCEL_POLL_SECONDS
        while True:
            done, _ = await asyncio.wait({job}, timeout=interval)
            if done:
                return job.result()
            if await asyncio.to_thread(_closing(is_cancelled)):
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
                return None

    return _event_loop().run_until_complete(main())


_thread_state = threading.local()


def _event_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, kept for the thread's life: a loop (and the thread pool
    that runs sync tools) per call would cost more than most tools take to run."""
    loop = getattr(_thread_state, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_state.loop = asyncio.new_event_loop()
    return loop


class _Conversations:
    """Each recent session's conversation as the model is sent it, kept in this process
    between steps so that a step reads only the messages added since it was last read
    (reading and decoding the whole history at every step cost more than the rest of
    the step once a session had a few dozen turns).

    Exact, not a guess: messages are only ever appended (never edited or deleted while
    their session exists), with indexes 0, 1, 2, ... so the rows past the cached length
    are exactly what is missing. A gap, or a length that is not the latest index's,
    which only a changed database can cause, reloads the whole conversation. Keyed by the
    session's id and creation time, so that a re-used id (a flushed test database) is a
    different session. Entries are taken out while in use: two threads never share one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, datetime], list[dict[str, Any]]] = OrderedDict()
        self.lock = threading.Lock()

    def messages(self, session: AgentSession, in_hand: list[Message]) -> list[dict[str, Any]]:
        """The session's messages, in order, as {"role", "content"} dicts (a new list).
        `in_hand` are its newest messages as the caller just read or wrote them, in
        order, the last being its latest: when they are all that is missing from the
        cached conversation, nothing is read."""
        key = (session.pk, session.created_at)
        last_index = in_hand[-1].index
        with self.lock:
            known = self.entries.pop(key, None) or []
        if len(known) > last_index + 1:
            known = []
        columns = ("index", "role", "content")
        missing = [message for message in in_hand if message.index >= len(known)]
        if not missing or missing[0].index == len(known):
            added = [(message.index, str(message.role), message.content) for message in missing]
        else:
            added = list(
                session.messages.filter(index__gte=len(known))
                .order_by("index")
                .values_list(*columns)
            )
        if any(index != len(known) + n for n, (index, _, _) in enumerate(added)):
            known = []
            added = list(session.messages.order_by("index").values_list(*columns))
        known += [{"role": role, "content": content} for _, role, content in added]
        with self.lock:
            self.entries[key] = known
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return list(known)


class _ScriptedProviders:
    """A scripted session's provider, built once per process: the script is read and
    validated once, not at every task. Safe to share between tasks because the provider
    is stateless (the turn it plays is counted from the conversation it is sent), and a
    session's script never changes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, datetime], Provider] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, session: AgentSession) -> Provider:
        key = (session.pk, session.created_at)
        with self.lock:
            provider = self.entries.get(key)
            if provider is not None:
                self.entries.move_to_end(key)
                return provider
        script = AgentSession.objects.filter(pk=session.pk).values_list("script", flat=True)[0]
        provider = get_provider("scripted", script=script)
        with self.lock:
            self.entries[key] = provider
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return provider


# Sessions whose conversation and scripted provider a process keeps: more than a worker
# advances at once, few enough to bound the memory.
CACHED_SESSIONS = 64
_conversations = _Conversations(CACHED_SESSIONS)
_scripted_providers = _ScriptedProviders(CACHED_SESSIONS)


def _status_of(session_id: int, *, lock: bool = False) -> str:
    """The session's status now: asked before every call, so in plain SQL. `lock` holds
    a share lock on the row until the transaction ends (on SQLite the transaction
    already holds the database's write lock)."""
    share = " FOR SHARE" if lock and connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(_STATUS_SQL + share, [session_id])
        return cursor.fetchone()[0]


def _closing(check: Callable[[], bool]) -> Callable[[], bool]:
    """Run an ORM check in a throwaway thread and close that thread's connection."""
    from django.db import connection

    def run() -> bool:
        try:
            return check()
        finally:
            connection.close()

    return run


class _LeaseRenewer:
    """One thread per process that keeps the leases of the steps running here alive,
    however long a model call or a tool takes. A process that dies stops renewing, and
    its claims lapse for the sweep to find."""

    def __init__(self) -> None:
        self.held: dict[int, str] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def hold(self, session_id: int, owner: str) -> None:
        with self.lock:
            self.held[session_id] = owner
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self.thread.start()

    def let_go(self, session_id: int) -> None:
        with self.lock:
            self.held.pop(session_id, None)

    def _run(self) -> None:
        while True:
            time.sleep(settings.AGENTDASH_LEASE_SECONDS / 3)
            with self.lock:
                held = list(self.held.items())
            expires = timezone.now() + timedelta(seconds=settings.AGENTDASH_LEASE_SECONDS)
            try:
                for session_id, owner in held:
                    AgentSession.objects.filter(pk=session_id, lease_owner=owner).update(
                        lease_expires_at=expires
                    )
            except Exception:
                # Keep renewing: a lease that lapses hands a running step to another worker.
                logger.exception("renewing leases failed; trying again shortly")
            close_old_connections()


_lease_renewer = _LeaseRenewer()
