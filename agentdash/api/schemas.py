"""What the HTTP API reads and writes: Pydantic models, which ninja turns into the schema.

Inputs are bounded wherever the database is (id ranges, lengths, decimals) and refuse
anywhere what no database stores or no later walk takes (agentdash/json_input.py), so
that bad input is a 4xx with the field named, never a database error.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import AfterValidator, BeforeValidator, field_validator, model_validator

from agentdash.json_input import check_storable
from agentdash.models import AgentSession, ApprovalDecision, ToolCall
from agentdash.models.sessions import DEFAULT_MAX_STEPS
from agentdash.providers import validate_script
from agentdash.sessions import check_provider, check_tools
from agentdash.web.history_query import EARLIEST, LATEST, MAX_ID

MAX_STEPS = 1000
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _storable(value: Any) -> Any:
    """`value` unchanged, or ValueError (json_input.check_storable)."""
    check_storable(value)
    return value


def _iso_8601(value: Any) -> Any:
    # Pydantic also takes a number as Unix seconds; the schema promises a date-time.
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-25T14:30:00Z")
    return value


def _in_calendar(moment: dt.datetime) -> dt.datetime:
    """`moment` in UTC (a time without a zone is taken as UTC), within EARLIEST..LATEST."""
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    if not EARLIEST <= moment < LATEST:
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return moment


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Text = Annotated[str, AfterValidator(_storable)]  # give each its max_length
Name = Annotated[str, Field(max_length=200), AfterValidator(_storable)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]
Moment = Annotated[dt.datetime, BeforeValidator(_iso_8601), AfterValidator(_in_calendar)]


# --- errors -----------------------------------------------------------------------------


class ErrorOut(Schema):
    detail: str


class FieldErrorOut(Schema):
    field: str = Field(description='Where: "body.goal", "query.limit", "arguments.path", ...')
    message: str


class ValidationErrorOut(Schema):
    detail: str
    errors: list[FieldErrorOut]


class ConflictOut(Schema):
    """The call (or session) moved on before this request: what it is now, and who did it."""

    detail: str
    state: str
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    approved: bool | None = None


# --- sessions ---------------------------------------------------------------------------


class SessionStartIn(Schema):
    goal: Text = Field(max_length=20_000)
    provider: Name = Field("scripted", description="scripted, anthropic or openai")
    model: Text = Field("", max_length=100, description="Empty: the provider's default model.")
    script: list[list[JsonObject]] | None = Field(
        None,
        description="Scripted provider only: turns of Anthropic content blocks. "
        "None plays the built-in demo.",
    )
    tools: list[Name] | None = Field(None, description="Tool names; None: every tool.")
    system_prompt: Text = Field("", max_length=20_000)
    max_steps: int = Field(DEFAULT_MAX_STEPS, ge=1, le=MAX_STEPS)
    max_tokens: int | None = Field(None, ge=1, le=MAX_ID)
    max_cost: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=6)

    @field_validator("goal")
    @classmethod
    def _goal_has_words(cls, goal: str) -> str:
        if not goal.strip():
            raise ValueError("A session needs a goal.")
        return goal.strip()

    @field_validator("provider")
    @classmethod
    def _provider_usable_here(cls, name: str) -> str:
        check_provider(name)
        return name

    @field_validator("script")
    @classmethod
    def _script_playable(cls, script: list[list[dict[str, Any]]] | None) -> list[Any] | None:
        return None if script is None else validate_script(script)

    @field_validator("tools")
    @classmethod
    def _tools_exist(cls, tools: list[str] | None) -> list[str] | None:
        check_tools(tools or [])
        return tools

    @model_validator(mode="after")
    def _script_only_when_scripted(self) -> SessionStartIn:
        if self.script is not None and self.provider != "scripted":
            raise ValueError("Only the scripted provider plays a script.")
        return self


class SessionQuery(Schema):
    status: AgentSession.Status | None = None
    before: Id | None = Field(None, description="Keyset cursor: sessions older than this id.")
    limit: int = Field(50, ge=1, le=200)


class SessionOut(Schema):
    id: int
    goal: str
    status: AgentSession.Status
    status_reason: str
    provider: str
    model: str
    enabled_tools: list[str]
    owner: str | None
    steps: int
    max_steps: int
    max_tokens: int | None
    max_cost: Decimal | None
    input_tokens: int
    output_tokens: int
    cost: Decimal
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @staticmethod
    def resolve_owner(session: AgentSession) -> str | None:
        return session.owner.get_username() if session.owner else None


class SessionPageOut(Schema):
    items: list[SessionOut]
    next_before: int | None = Field(description="Pass as `before` for the next page; null: none.")


# --- tool calls and decisions -----------------------------------------------------------

ARGUMENTS_HASH = (
    "SHA-256 of the arguments' canonical JSON: send it back as expected_hash when deciding, "
    "so that nobody approves arguments they did not see."
)


class DecisionOut(Schema):
    approved: bool
    decided_by: str = Field(description='As the audit log names them: "user:alice".')
    reason: str
    edited_arguments: dict[str, Any] | None
    decided_at: dt.datetime

    @staticmethod
    def resolve_decided_by(decision: ApprovalDecision) -> str:
        return decision.actor

    @staticmethod
    def resolve_decided_at(decision: ApprovalDecision) -> dt.datetime:
        return decision.created_at


class ResultOut(Schema):
    attempt: int
    status: str
    observation: str = Field(description="Exactly what the model was told.")
    error: str
    duration_ms: float
    truncated: bool


class CallOut(Schema):
    id: int
    session_id: int
    call_id: str = Field(description="The model's id for this call.")
    tool: str
    state: ToolCall.State
    arguments: dict[str, Any] | None = Field(
        description="The validated arguments that run (edited, where an operator did so)."
    )
    arguments_hash: str = Field(description=ARGUMENTS_HASH)
    proposed_arguments: dict[str, Any]
    approval_reason: str
    preview: str
    approvals_required: int
    expires_at: dt.datetime | None = Field(description="When it expires unless decided.")
    created_at: dt.datetime
    proposed_at: dt.datetime | None
    decided_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    decisions: list[DecisionOut] = Field(description="Newest first: the last settled it.")
    result: ResultOut | None

    @staticmethod
    def resolve_tool(call: ToolCall) -> str:
        return call.tool_name

    @staticmethod
    def resolve_decisions(call: ToolCall) -> list[ApprovalDecision]:
        return list(call.decisions.all())  # prefetched by the views

    @staticmethod
    def resolve_result(call: ToolCall) -> Any:
        results = list(call.results.all())  # prefetched, in attempt order
        return results[-1] if results else None


class SessionDetailOut(SessionOut):
    tool_calls: list[CallOut]

    @staticmethod
    def resolve_tool_calls(session: AgentSession) -> list[ToolCall]:
        return list(session.tool_calls.all())  # prefetched by the view, in order


class PendingCallOut(Schema):
    """A call in the approval queue, with what an operator needs to decide it."""

    id: int
    session_id: int
    session_goal: str
    tool: str
    tool_description: str
    arguments: dict[str, Any] | None = Field(description="Exactly what will run if approved.")
    arguments_hash: str = Field(description=ARGUMENTS_HASH)
    approval_reason: str
    preview: str = Field(description="What the tool says it would do, made now.")
    approvals_required: int
    approvals_given: int
    proposed_at: dt.datetime | None
    expires_at: dt.datetime | None


class DecisionIn(Schema):
    decision: Literal["approve", "reject"]
    reason: Text = Field("", max_length=5_000)
    arguments: JsonObject | None = Field(
        None, description="Approve with these arguments instead (the tool's schema checks them)."
    )
    expected_hash: str | None = Field(
        None,
        pattern="^[0-9a-f]{64}$",
        description="The arguments_hash you were shown: 409 if the arguments changed since.",
    )
    allow_for_session: bool = Field(
        False, description="With approve: also allow this tool for the rest of the session."
    )

    @model_validator(mode="after")
    def _edits_only_when_approving(self) -> DecisionIn:
        if self.arguments is not None and self.decision != "approve":
            raise ValueError("Edited arguments go with approve, not reject.")
        return self


# --- the audit log ----------------------------------------------------------------------


class AuditFilters(Schema):
    session: Id | None = None
    tool: Name | None = None
    kind: Name | None = Field(None, description='e.g. "toolcall.approved", "session.created"')
    actor: Name | None = Field(None, description='e.g. "user:alice", "runner"')
    since: Moment | None = None
    until: Moment | None = None
    q: Name | None = Field(None, description="Search the payloads, case-insensitive.")


class AuditQuery(AuditFilters):
    before: Id | None = Field(None, description="Keyset cursor: events older than this seq.")
    after: int | None = Field(None, ge=0, le=MAX_ID, description="Events newer than this seq.")
    limit: int = Field(50, ge=1, le=500)


class AuditEventOut(Schema):
    seq: int
    created_at: dt.datetime
    actor: str
    session_id: int | None
    tool_call_id: int | None
    kind: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPageOut(Schema):
    items: list[AuditEventOut] = Field(description="Newest first.")
    newer_after: int | None = Field(description="Pass as `after` for the newer page.")
    older_before: int | None = Field(description="Pass as `before` for the older page.")
