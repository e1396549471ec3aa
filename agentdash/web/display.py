"""What the dashboard shows of sessions and tool calls, loaded in a few queries.

The pages (agentdash.web) and the live layer's fragments (agentdash.live) render the
same partial templates from these objects, so a page and the fragment that later
updates it always agree.

Each object carries a `rev`: the moment it last changed, in microseconds. The page keeps
it in a `data-rev` attribute and ignores a pushed fragment older than what it shows
(two processes can push changes of one call in either order).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Prefetch, Q, QuerySet

from agentdash import toolbox
from agentdash.models import AgentSession, ApprovalDecision, ExecutionResult, Message, ToolCall
from agentdash.states import CALL_DECIDED, CallState

logger = logging.getLogger(__name__)

# The sessions list shows the newest sessions only; older ones are in the audit history.
SESSION_LIST_LIMIT = 100


def rev_of(*moments: dt.datetime | None) -> int:
    """The latest of `moments` as microseconds since the epoch."""
    return max((round(m.timestamp() * 1_000_000) for m in moments if m is not None), default=0)


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --- sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSummary:
    """A session with what the list and the page header show beside it."""

    session: AgentSession
    waiting: int  # its calls that wait for an operator
    rev: int

    @property
    def pk(self) -> int:
        return self.session.pk


def _summaries() -> QuerySet[AgentSession]:
    pending = Q(tool_calls__state=CallState.PENDING_APPROVAL)
    return AgentSession.objects.select_related("owner").annotate(
        waiting=Count("tool_calls", filter=pending),
        calls_changed=Max("tool_calls__updated_at"),
    )


def _summary(session: Any) -> SessionSummary:
    return SessionSummary(
        session=session,
        waiting=session.waiting,
        rev=rev_of(session.updated_at, session.calls_changed),
    )


def session_summary(session_id: int) -> SessionSummary | None:
    session = _summaries().filter(pk=session_id).first()
    return _summary(session) if session is not None else None


def session_rows(limit: int = SESSION_LIST_LIMIT) -> list[SessionSummary]:
    """The newest sessions, newest first."""
    return [_summary(session) for session in _summaries().order_by("-created_at")[:limit]]


# --- tool calls -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallCard:
    """One tool call as a card shows it: what runs, why it waits, what was decided and
    what came of it."""

    call: ToolCall
    description: str
    arguments: str  # JSON of the arguments that run (or will, once approved)
    proposed: str  # JSON of what the model sent, when it differs from `arguments`
    preview: str
    decisions: list[ApprovalDecision]  # oldest first: a call may need two approvals
    result: ExecutionResult | None
    attempts: int
    rev: int

    @property
    def pk(self) -> int:
        return self.call.pk

    @property
    def session(self) -> AgentSession:
        return self.call.session

    @property
    def is_pending(self) -> bool:
        return self.call.state == CallState.PENDING_APPROVAL

    @property
    def is_to_run(self) -> bool:
        """Whether the call may still run: waiting for a human, or decided and not started."""
        return self.is_pending or self.call.state in CALL_DECIDED

    @property
    def preview_is_diff(self) -> bool:
        return self.preview.startswith("--- ")

    @property
    def decision(self) -> ApprovalDecision | None:
        """The latest decision: the one that settled the call, once it is settled."""
        return self.decisions[-1] if self.decisions else None

    @property
    def approvals_given(self) -> int:
        """Approvals of the current arguments, for a call that needs more than one."""
        return self.call.approvals_given()

    @property
    def requirements(self) -> list[str]:
        """What the policy asks of whoever approves a waiting call, in words (its deadline
        apart: `deadline`)."""
        call = self.call
        if not self.is_pending:
            return []
        asks = []
        if call.approvals_required > 1:
            asks.append(f"Needs {call.approvals_required} approvals ({self.approvals_given} given)")
        if call.required_group:
            asks.append(f"Only members of “{call.required_group}” may approve")
        if call.four_eyes or settings.AGENTDASH_FOUR_EYES:
            asks.append("Four eyes: the session's owner may not approve")
        return asks

    @property
    def deadline(self) -> dt.datetime | None:
        """When a waiting call expires unless decided (shown with a countdown)."""
        return self.call.expires_at if self.is_pending else None

    @property
    def edit(self) -> ApprovalDecision | None:
        """The latest approval that changed the arguments."""
        edits = [d for d in self.decisions if d.edited_arguments is not None]
        return edits[-1] if edits else None

    @property
    def edited(self) -> str:
        """JSON of an operator's edit, with `original` the arguments it replaced."""
        return as_json(self.edit.edited_arguments) if self.edit is not None else ""

    @property
    def original(self) -> str:
        return as_json(self.edit.original_arguments) if self.edit is not None else ""

    @property
    def waited_ms(self) -> float | None:
        """How long the call waited for its decision."""
        call = self.call
        if call.proposed_at is None or call.decided_at is None:
            return None
        return (call.decided_at - call.proposed_at).total_seconds() * 1000


def _calls() -> QuerySet[ToolCall]:
    return ToolCall.objects.select_related("session", "session__owner").prefetch_related(
        Prefetch("decisions", queryset=ApprovalDecision.objects.select_related("decided_by")),
        Prefetch("results", queryset=ExecutionResult.objects.order_by("attempt")),
    )


def _card(call: ToolCall) -> CallCard:
    tool = toolbox.registry_for_session(call.session).get(call.tool_name)
    runs = call.arguments if call.arguments is not None else call.proposed_arguments
    results = list(call.results.all())
    return CallCard(
        call=call,
        description=tool.description if tool is not None else "",
        arguments=as_json(runs),
        proposed=as_json(call.proposed_arguments) if call.proposed_arguments != runs else "",
        preview=_fresh_preview(call, tool) if tool is not None else call.preview,
        decisions=sorted(call.decisions.all(), key=lambda decision: decision.pk),
        result=results[-1] if results else None,
        attempts=len(results),
        rev=rev_of(call.updated_at),
    )


def _fresh_preview(call: ToolCall, tool: Any) -> str:
    """A waiting call's preview made now (a diff against the file as it is now, not as it
    was when the model asked); a decided call keeps the one recorded with it."""
    if call.state != CallState.PENDING_APPROVAL or tool.preview is None:
        return call.preview
    try:
        return tool.preview(call.arguments or {}) or ""
    except Exception as error:  # a preview is a courtesy: the recorded one will do
        logger.warning("preview of call %s failed: %s", call.pk, error)
        return call.preview


def call_card(call_id: int) -> CallCard | None:
    call = _calls().filter(pk=call_id).order_by().first()  # no join for the model's ordering
    return _card(call) if call is not None else None


def pending_cards() -> list[CallCard]:
    """The approval queue: every call waiting for an operator, oldest first."""
    calls = _calls().filter(state=CallState.PENDING_APPROVAL).order_by("created_at", "pk")
    return [_card(call) for call in calls]


@dataclass(frozen=True)
class StepBatch:
    """The pending calls of one model step, decided together from the queue's batch bar.

    Only a step with more than one pending call has a batch: one call has its card.
    """

    message_id: int
    cards: list[CallCard]  # in the order the model made the calls
    rev: int

    @property
    def session(self) -> AgentSession:
        return self.cards[0].session


def batches(cards: list[CallCard]) -> list[StepBatch]:
    """The steps with more than one of these pending calls, oldest step first."""
    by_step: dict[int, list[CallCard]] = {}
    for card in cards:
        if card.is_pending:
            by_step.setdefault(card.call.message_id, []).append(card)
    return [
        StepBatch(
            message_id,
            sorted(step, key=lambda card: card.call.position),
            max(card.rev for card in step),
        )
        for message_id, step in sorted(by_step.items())
        if len(step) > 1
    ]


def step_batch(message_id: int) -> tuple[StepBatch | None, int]:
    """The batch of one step (None when fewer than two of its calls wait), and how many
    calls the step made: a step of one call never had a batch to take away.

    The batch's rev counts the step's decided calls too: a batch that lost a call is
    newer than the one that had it, though the calls it keeps did not change.
    """
    calls = list(_calls().filter(message_id=message_id).order_by("position"))
    cards = [_card(call) for call in calls if call.state == CallState.PENDING_APPROVAL]
    if len(cards) < 2:
        return None, len(calls)
    return StepBatch(message_id, cards, rev_of(*(call.updated_at for call in calls))), len(calls)


# --- the transcript ---------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptEntry:
    """A message of the conversation with the calls it made.

    The user turns that only carry tool results back to the model are not entries:
    each result is shown on its call's card instead.
    """

    message: Message
    texts: list[str]
    calls: list[CallCard]
    rev: int

    @property
    def pk(self) -> int:
        return self.message.pk

    @property
    def is_goal(self) -> bool:
        return self.message.index == 0


def _entries(messages: QuerySet[Message]) -> list[TranscriptEntry]:
    messages = messages.order_by("index").prefetch_related(
        Prefetch("tool_calls", queryset=_calls().order_by("position"))
    )
    entries = []
    for message in messages:
        texts = [
            block["text"]
            for block in message.content
            if block.get("type") == "text" and block.get("text")
        ]
        calls = [_card(call) for call in message.tool_calls.all()]
        if texts or calls:
            entries.append(
                TranscriptEntry(
                    message=message,
                    texts=texts,
                    calls=calls,
                    rev=rev_of(message.created_at, *(card.call.updated_at for card in calls)),
                )
            )
    return entries


def transcript(session: AgentSession) -> list[TranscriptEntry]:
    return _entries(Message.objects.filter(session=session))


def transcript_entry(message_id: int) -> TranscriptEntry | None:
    entries = _entries(Message.objects.filter(pk=message_id))
    return entries[0] if entries else None
