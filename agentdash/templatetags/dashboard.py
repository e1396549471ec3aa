"""Formatting for the operator dashboard: money, durations, JSON, diffs, status badges.

Every filter returns plain text, which the template then autoescapes: whatever a model
or a tool produced reaches the page as text, never as markup.
"""

from __future__ import annotations

from decimal import Decimal

from django import template

from agentdash.models import ToolCall
from agentdash.states import CallState, SessionStatus
from agentdash.web.display import as_json

register = template.Library()

# Badge colours by meaning; the badge always spells the status out as well.
_TONES: dict[str, str] = {
    SessionStatus.QUEUED: "info",
    SessionStatus.RUNNING: "info",
    SessionStatus.WAITING_APPROVAL: "warn",
    SessionStatus.COMPLETED: "good",
    SessionStatus.FAILED: "bad",
    SessionStatus.CANCELLED: "muted",
    SessionStatus.BUDGET_EXCEEDED: "bad",
    CallState.PROPOSED: "info",
    CallState.PENDING_APPROVAL: "warn",
    CallState.AUTO_APPROVED: "good",
    CallState.APPROVED: "good",
    CallState.REJECTED: "bad",
    CallState.EXPIRED: "bad",
    CallState.SUCCEEDED: "good",
    CallState.ERRORED: "bad",
    CallState.TIMED_OUT: "bad",
    CallState.INTERRUPTED: "bad",
}
_LABELS = {
    SessionStatus.WAITING_APPROVAL: "waiting for approval",
    CallState.PENDING_APPROVAL: "waiting for approval",
    SessionStatus.BUDGET_EXCEEDED: "over budget",
}


@register.filter
def tone(status: str) -> str:
    """The badge class for a session status or a call state."""
    return _TONES.get(status, "muted")


@register.filter
def status_label(status: str) -> str:
    return _LABELS.get(status, status.replace("_", " "))


@register.filter
def usd(value: Decimal | float | None) -> str:
    """$0.0123 for the small sums a step costs, $12.34 once there are dollars, $0.00."""
    if value is None:
        return "no limit"
    amount = Decimal(value)
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:.4f}"


@register.filter
def duration(milliseconds: float | None) -> str:
    if milliseconds is None:
        return ""
    if milliseconds < 10:
        return f"{milliseconds:.1f} ms"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"


@register.filter
def thousands(value: int | None) -> str:
    return f"{value or 0:,}"


@register.filter
def diff_lines(text: str) -> list[tuple[str, str]]:
    """A unified diff's lines, each with the class that colours it (add, del, hunk, file)."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("--- ", "+++ ")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = ""
        lines.append((kind, line))
    return lines


@register.simple_tag
def pending_approvals() -> int:
    """How many calls wait for an operator (the indexed queue query, counted)."""
    return ToolCall.objects.filter(state=CallState.PENDING_APPROVAL).count()


@register.filter
def pretty_json(value: object) -> str:
    """A JSON value indented for reading (the cards' arguments look the same)."""
    return as_json(value)
