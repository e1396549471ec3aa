"""Agent sessions and everything they produce: messages, tool calls, decisions, results.

Status columns change only through `agentdash.states.transition()` (called by the
methods here and by the runner and the approval service), which also writes the
audit event in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models

from agentdash.states import (
    CALL_DECIDED,
    CALL_FINAL,
    SESSION_FINAL,
    CallState,
    SessionStatus,
)

DEFAULT_MAX_STEPS = 25


def arguments_hash(arguments: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of a call's arguments: what an approval binds.

    Canonical: keys sorted at every depth, no whitespace, ASCII only, and integral
    floats written as integers, because the databases do not keep that difference
    (PostgreSQL's jsonb gives 1e20 back as an integer) and a hash must survive the
    round trip through the column it protects.
    """
    text = json.dumps(
        _integral_floats_as_ints(arguments),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_integral_floats_as_ints(item) for item in value]
    return value


class AgentSession(models.Model):
    """One agent working on one goal. Holds no process: its rows are the whole state."""

    Status = SessionStatus

    goal = models.TextField()
    system_prompt = models.TextField(blank=True)
    provider = models.CharField(max_length=32, default="scripted")
    model = models.CharField(max_length=100, default="scripted")
    # The scripted provider's turns (Anthropic content blocks); null plays the demo.
    script = models.JSONField(null=True, blank=True)
    # Names of the tools this session may use; empty means every built-in tool.
    enabled_tools = models.JSONField(default=list, blank=True)
    policy = models.JSONField(default=dict, blank=True)

    max_steps = models.PositiveIntegerField(default=DEFAULT_MAX_STEPS)
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    calls_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most tool calls this session may start in any minute; over it, calls "
        "wait. Empty: AGENTDASH_SESSION_CALLS_PER_MINUTE.",
    )

    steps = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))

    status = models.CharField(
        max_length=20, choices=SessionStatus.choices, default=SessionStatus.QUEUED
    )
    # Why the session ended (an error, a limit, a refusal), in words for the operator.
    status_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    # The runner's claim on this session: one step at a time, across processes. A
    # claim whose holder died simply expires and the sweep hands the session on.
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Set while a rate limit holds the session back: its next step is queued for then,
    # and the sweep leaves it alone until then.
    rate_limited_until = models.DateTimeField(null=True, blank=True)
    # When the step queued to expire its undecided calls runs (runner._wait_for_approval).
    expiry_check_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The sweep and the sessions list look for live sessions by status.
            models.Index(fields=["status", "updated_at"], name="session_status_idx"),
        ]

    def __str__(self) -> str:
        return f"Session {self.pk}: {self.goal[:60]}"

    @property
    def is_finished(self) -> bool:
        return self.status in SESSION_FINAL

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def workspace(self) -> Path:
        """The directory shared by this session's file tools and sandbox runs."""
        return Path(settings.AGENTDASH_WORKSPACES_DIR) / str(self.pk)


class Message(models.Model):
    """One turn of the conversation, in provider-neutral (Anthropic-format) blocks.

    Enough to rebuild the model's context after a restart: the runner reads these,
    in `index` order, and nothing else.
    """

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="messages")
    index = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.JSONField()
    # For assistant turns: why the model stopped, what the turn used and cost.
    stop_reason = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=100, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "index"], name="message_order_unique")
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.index} of session {self.session_id}"

    @property
    def text(self) -> str:
        return "".join(
            block.get("text", "") for block in self.content if block.get("type") == "text"
        )


class ToolCall(models.Model):
    """One tool call the model asked for, from proposal to result."""

    State = CallState

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="tool_calls")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="tool_calls")
    position = models.PositiveIntegerField(help_text="Order of the call within its message.")
    call_id = models.CharField(max_length=200, help_text="The model's id for this call.")
    tool_name = models.CharField(max_length=200)
    # What the model sent (possibly cut short when huge) and what runs: the validated,
    # coerced arguments, edited by an operator where one did so.
    proposed_arguments = models.JSONField(default=dict)
    arguments = models.JSONField(null=True, blank=True)
    approval_reason = models.TextField(blank=True)
    preview = models.TextField(blank=True, help_text="What the tool said it would do.")
    state = models.CharField(max_length=20, choices=CallState.choices, default=CallState.PROPOSED)

    # What the policy decided, and what it asks of the approvers (agentdash.policy): the
    # rule as the audit log names it ("rule:12", "default:read_only"), and for a call
    # that waits, who may approve it, how many must, and until when.
    policy_rule = models.CharField(max_length=100, blank=True)
    required_group = models.CharField(
        max_length=150, blank=True, help_text="Only its members (and superusers) may approve."
    )
    approvals_required = models.PositiveSmallIntegerField(default=1)
    four_eyes = models.BooleanField(
        default=False,
        help_text="The session's owner may not approve (besides AGENTDASH_FOUR_EYES).",
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When a pending call expires unless decided."
    )
    # Approvals count only within the current round: a new round starts whenever the
    # arguments change (an approver's edit, or a change found before running).
    approval_round = models.PositiveSmallIntegerField(default=1)
    # arguments_hash() of the arguments as they were decided (approved, or allowed by the
    # policy): the runner runs the call only while its arguments still hash to this.
    decided_hash = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    proposed_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["message__index", "position"]
        permissions = [("decide_toolcall", "Can approve, edit or reject pending tool calls")]
        indexes = [
            # The approval queue: every pending call, oldest first.
            models.Index(fields=["state", "created_at"], name="toolcall_state_idx"),
            # Per-tool rate limits count one tool's calls started in the last minute.
            models.Index(fields=["tool_name", "started_at"], name="toolcall_tool_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} call {self.pk} ({self.state})"

    @property
    def is_decided(self) -> bool:
        return self.state in CALL_DECIDED

    @property
    def is_finished(self) -> bool:
        return self.state in CALL_FINAL or self.state == CallState.INTERRUPTED

    @property
    def latest_result(self) -> ExecutionResult | None:
        return self.results.order_by("-attempt").first()

    @property
    def decision(self) -> ApprovalDecision | None:
        """The latest decision: the one that settled the call, once it is settled."""
        return self.decisions.select_related("decided_by").first()

    @property
    def arguments_hash(self) -> str:
        """The hash of the arguments as they are now; an approver's page sends it back
        (decide(expected_hash=...)) so that nobody approves what they did not see."""
        return arguments_hash(self.arguments)

    def approvals_given(self) -> int:
        """Approvals in the current round ("1 of 2"); uses prefetched decisions if any."""
        return sum(
            1
            for decision in self.decisions.all()
            if decision.approved and decision.round == self.approval_round
        )


class ApprovalDecision(models.Model):
    """An operator's (or the system's) answer to a pending call.

    Usually one per call; a call that needs two approvals has two, and a call whose
    arguments changed after its approval has those of each round. One person approves
    a call at most once per round (a constraint, whatever races).
    """

    tool_call = models.ForeignKey(ToolCall, on_delete=models.CASCADE, related_name="decisions")
    approved = models.BooleanField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor = models.CharField(max_length=200, help_text="Who decided, as the audit log names it.")
    reason = models.TextField(blank=True)
    original_arguments = models.JSONField(null=True, blank=True)
    edited_arguments = models.JSONField(null=True, blank=True)
    allow_for_session = models.BooleanField(default=False)
    # The ToolCall's approval_round this decision belongs to, and for an approval the
    # arguments_hash() of exactly the arguments it approved.
    round = models.PositiveSmallIntegerField(default=1)
    arguments_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Newest first: the decision that settled a call is its last.
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["tool_call", "decided_by", "round"],
                condition=models.Q(approved=True),
                name="one_approval_per_person_and_round",
            )
        ]

    def __str__(self) -> str:
        verb = "approved" if self.approved else "rejected"
        return f"{verb} by {self.actor}"


class ExecutionResult(models.Model):
    """What running a call produced. A call re-run after a crash has several attempts."""

    tool_call = models.ForeignKey(ToolCall, on_delete=models.CASCADE, related_name="results")
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20)  # a tools.ExecutionStatus value
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    observation = models.TextField(blank=True, help_text="Exactly what the model was told.")
    duration_ms = models.FloatField(default=0)
    truncated = models.BooleanField(default=False)
    # Sandbox facts (exit code, limit hit, ...) and anything else the tool reported.
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tool_call", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["tool_call", "attempt"], name="one_result_per_attempt")
        ]

    def __str__(self) -> str:
        return f"{self.status} (call {self.tool_call_id}, attempt {self.attempt})"

    @property
    def is_error(self) -> bool:
        return self.status != "success"
