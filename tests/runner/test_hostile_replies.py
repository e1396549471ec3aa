"""Hostile model replies through the whole runner: a session on the real Anthropic client,
against the fake server, whose model answers with Hypothesis-generated garbage (the
strategies of tests/providers/test_hostile_replies.py), then says it is done.

The property: the session never ends with the runner's internal error. Every tool_use
the reply held is a recorded call; each one that cannot run (unknown tool, arguments
that are not an object, not JSON or too big, a reused id) is errored with a result
whose text the model reads in its next request, as a tool_result for that call's id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from agentdash.models import AgentSession, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.fakes.anthropic_server import FakeAnthropicServer, message_stream
from tests.providers.test_hostile_replies import (
    MAX_TOOL_INPUT_BYTES,
    anthropic_blocks,
    stop_reasons,
)

pytestmark = pytest.mark.django_db(transaction=True)

RUNS = settings(
    max_examples=int(os.environ.get("AGENTDASH_FUZZ_EXAMPLES", "20")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as fake:
        yield fake


@pytest.fixture
def anthropic_session(server, monkeypatch, settings):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    settings.AGENTDASH_PROVIDER_MAX_RETRIES = 0
    settings.AGENTDASH_MAX_TOOL_INPUT_BYTES = MAX_TOOL_INPUT_BYTES
    # Only tools that need no sandbox and no approval: the property is about the runner
    # reading the reply, not about running code.
    return lambda: start_session(
        goal="Survive this", provider="anthropic", enabled_tools=["read_file", "list_dir"]
    )


@RUNS
@given(content=anthropic_blocks(), stop_reason=stop_reasons)
def test_a_hostile_reply_never_crashes_the_session(
    server, anthropic_session, run_queued_steps, content, stop_reason
):
    server.requests.clear()
    server.enqueue(
        message_stream(content, stop_reason=stop_reason),
        message_stream([{"type": "text", "text": "Done."}]),
    )
    session = anthropic_session()

    run_queued_steps()

    session = AgentSession.objects.get(pk=session.pk)
    assert "Internal error" not in session.status_reason, session.status_reason
    assert session.status in (SessionStatus.COMPLETED, SessionStatus.FAILED), session.status
    calls = list(ToolCall.objects.filter(session=session).order_by("position"))
    assert len(calls) == sum(block["type"] == "tool_use" for block in content)
    for call in calls:
        assert call.state in (CallState.ERRORED, CallState.SUCCEEDED), call.state
        (result,) = call.results.all()
        if call.state == CallState.ERRORED:
            assert result.error or result.observation
    if calls and len(server.requests) == 2:
        # The model was called again: it reads one result per call, by the call's id.
        told = server.requests[1].body["messages"][-1]["content"]
        results = [block for block in told if block.get("type") == "tool_result"]
        assert [block["tool_use_id"] for block in results] == [call.call_id for call in calls]
    server._responses.clear()  # a session that ended early left its second reply


@pytest.mark.parametrize(
    "arguments",
    ['{"path": ', "[1, 2, 3]", '"just a string"', "null", '{"path": "' + "x" * 5000 + '"}'],
    ids=["broken", "array", "string", "null", "oversized"],
)
def test_each_kind_of_bad_arguments_is_an_error_the_model_reads(
    server, anthropic_session, run_queued_steps, arguments
):
    server.requests.clear()
    call = {"type": "tool_use", "id": "toolu_bad", "name": "read_file", "raw_input": arguments}
    server.enqueue(
        message_stream([call], stop_reason="tool_use"),
        message_stream([{"type": "text", "text": "Sorry."}]),
    )
    session = anthropic_session()

    run_queued_steps()

    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED
    (told,) = [
        block
        for block in server.requests[1].body["messages"][-1]["content"]
        if block["type"] == "tool_result"
    ]
    assert told["tool_use_id"] == "toolu_bad"
    assert told["is_error"] is True
    text = str(told["content"])
    assert "JSON" in text or "object" in text or "limit" in text, text


def test_a_reused_call_id_is_refused_not_run_twice(server, anthropic_session, run_queued_steps):
    server.requests.clear()
    listing = {"type": "tool_use", "id": "toolu_same", "name": "list_dir", "input": {"path": "."}}
    server.enqueue(
        message_stream([listing, listing], stop_reason="tool_use"),
        message_stream([{"type": "text", "text": "Done."}]),
    )
    session = anthropic_session()

    run_queued_steps()

    first, second = ToolCall.objects.filter(session=session).order_by("position")
    assert first.state == CallState.SUCCEEDED
    assert second.state == CallState.ERRORED
    assert "already used" in second.results.get().error
    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED
