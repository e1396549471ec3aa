"""Shared by the governance tests: rules, sessions paused on their calls, audit kinds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agentdash.models import AgentSession, AuditEvent, PolicyRule, ToolCall
from agentdash.states import CallState
from tests.runner.test_runner import reload, start, text, tool_use

__all__ = [
    "a_minute_passes",
    "audit_kinds",
    "calls_of",
    "listings",
    "make_rule",
    "paused_on",
    "reload",
    "start",
    "text",
    "tool_use",
]


def make_rule(**fields: Any) -> PolicyRule:
    """A saved rule (not validated: tests of validation build theirs with a form)."""
    fields.setdefault("name", f"{fields.get('action', 'rule')} {fields.get('tool', 'any tool')}")
    return PolicyRule.objects.create(**fields)


def calls_of(session: AgentSession) -> list[ToolCall]:
    return list(ToolCall.objects.filter(session=session).order_by("message__index", "position"))


def paused_on(run_queued_steps: Any, *blocks: dict[str, Any], **options: Any) -> list[ToolCall]:
    """Start a session whose first turn makes these calls (then says it is done), run it
    until it stops, and return its calls, which the test expects to be pending."""
    session = start(list(blocks), [text("Done.")], **options)
    run_queued_steps()
    calls = calls_of(session)
    assert [call.state for call in calls] == [CallState.PENDING_APPROVAL] * len(calls)
    return calls


def audit_kinds(call: ToolCall) -> list[str]:
    return list(
        AuditEvent.objects.filter(tool_call_id=call.pk)
        .order_by("seq")
        .values_list("kind", flat=True)
    )


def listings(count: int) -> list[dict[str, Any]]:
    """A turn of `count` list_dir calls (allowed by the read-only hint)."""
    return [tool_use("list_dir", f"l{n}", path=".") for n in range(count)]


def a_minute_passes() -> None:
    """Move every call's start a minute back and make the steps queued for later due."""
    ToolCall.objects.update(started_at=F("started_at") - timedelta(minutes=1, seconds=1))
    DBTaskResult.objects.update(run_after=timezone.now())
