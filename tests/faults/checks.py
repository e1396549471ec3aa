"""What every fault test checks once the dust settles: nothing lost, nothing done twice,
and the audit chain intact."""

from __future__ import annotations

from collections import Counter

from agentdash import audit
from agentdash.models import AgentSession, AuditEvent, ToolCall


def assert_nothing_lost_or_doubled(session: AgentSession, *, runs: dict[str, int]) -> None:
    """The session's transcript has every turn once and in order, each model turn was
    taken (stored) once, each tool call was started exactly `runs[call_id]` times (a
    call missing from `runs` must not have started at all), and `audit verify` passes."""
    indexes = list(session.messages.order_by("index").values_list("index", flat=True))
    assert indexes == list(range(len(indexes))), f"transcript has gaps: {indexes}"

    replied = AuditEvent.objects.filter(session_id=session.pk, kind="model.replied")
    taken = Counter(event.payload["message_index"] for event in replied)
    assert all(count == 1 for count in taken.values()), f"model turns stored twice: {taken}"
    assistant_turns = session.messages.filter(role="assistant").count()
    assert len(taken) == assistant_turns, "a stored reply has no model.replied event"

    calls = ToolCall.objects.filter(session=session)
    call_ids = Counter(calls.values_list("call_id", flat=True))
    assert all(count == 1 for count in call_ids.values()), f"calls proposed twice: {call_ids}"
    started = {
        call.call_id: AuditEvent.objects.filter(
            tool_call_id=call.pk, kind="toolcall.running"
        ).count()
        for call in calls
    }
    assert started == {call_id: runs.get(call_id, 0) for call_id in started}, started

    report = audit.verify()
    assert report.ok, report.problem
