"""Hostile model replies through the whole runner: a session on the real Anthropic client,
against the fake server, whose model answers with Hypothesis-generated garbage (the
strategies of tests/providers/test_hostile_replies.py), then says it is done.

The property: the session never ends with the runner's internal error. Every tool_use
the reply held is a recorded call; each one that cannot run (unknown tool, arguments
that are not an object, not JSON or too big, a reused id) is errored with a result
whose text the model reads in its next request, as a tool_result for that call's id.
And that next request is one the real APIs accept, whatever ids the model sent: every
tool_use id in it unique and well-formed, and answered by exactly one tool_result.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from agentdash.models import AgentSession, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.fakes.anthropic_server import FakeAnthropicServer, message_stream
from tests.fakes.openai_server import FakeOpenAIServer, chat_stream
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


# What Anthropic accepts as a tool_use id (OpenAI's own ids fit it too).
WELL_FORMED_ID = re.compile(r"[a-zA-Z0-9_-]+")


def assert_each_call_answered_once(messages: list[dict[str, Any]]) -> None:
    """The ids of a conversation (Anthropic's format, as stored and sent) as the real APIs
    check them: every tool_use id well-formed and used once in the whole conversation,
    and the turn after each assistant turn holding exactly one tool_result per tool_use,
    by its id."""
    every_id: list[str] = []
    for asked, told in itertools.pairwise(messages):
        if asked["role"] != "assistant" or isinstance(asked["content"], str):
            continue
        ids = [block["id"] for block in asked["content"] if block["type"] == "tool_use"]
        answered = [
            block["tool_use_id"]
            for block in ([] if isinstance(told["content"], str) else told["content"])
            if block["type"] == "tool_result"
        ]
        assert sorted(answered) == sorted(ids), (ids, answered)
        every_id += ids
    assert all(WELL_FORMED_ID.fullmatch(call_id) for call_id in every_id), every_id
    assert len(set(every_id)) == len(every_id), every_id


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as fake:
        yield fake


def forget(server: FakeAnthropicServer) -> None:
    """Start afresh: a session that ended early (or a test that failed) left replies."""
    server.requests.clear()
    server._responses.clear()


@pytest.fixture(autouse=True)
def _fresh_server(server: FakeAnthropicServer) -> None:
    forget(server)


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
    forget(server)  # each example, not only each test
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
    # A reply that ends the session (a refusal, a full context window) leaves its calls
    # rejected, as ending a session does.
    settled = [CallState.REJECTED] if session.status == SessionStatus.FAILED else []
    for call in calls:
        assert call.state in (CallState.ERRORED, CallState.SUCCEEDED, *settled), call.state
        (result,) = call.results.all()
        if call.state != CallState.SUCCEEDED:
            assert result.error or result.observation
    if calls and len(server.requests) == 2:
        # The model was called again: it reads one result per call, by the call's id,
        # which is the id its tool_use carries in the turn sent back.
        sent = server.requests[1].body["messages"]
        assert_each_call_answered_once(sent)
        asked = [block["id"] for block in sent[-2]["content"] if block["type"] == "tool_use"]
        assert asked == [call.call_id for call in calls]


@pytest.mark.parametrize(
    "arguments",
    ['{"path": ', "[1, 2, 3]", '"just a string"', "null", '{"path": "' + "x" * 5000 + '"}'],
    ids=["broken", "array", "string", "null", "oversized"],
)
def test_each_kind_of_bad_arguments_is_an_error_the_model_reads(
    server, anthropic_session, run_queued_steps, arguments
):
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
    # The next request names each call once: the second under an id of its own, and
    # the model reads, under that id, that the id it sent was taken.
    sent = server.requests[1].body["messages"]
    assert_each_call_answered_once(sent)
    assert first.call_id == "toolu_same"
    assert second.call_id != "toolu_same"
    [told] = [block for block in sent[-1]["content"] if block["tool_use_id"] == second.call_id]
    assert told["is_error"] is True
    assert "'toolu_same' was already used" in told["content"]


def test_a_reused_id_from_an_earlier_turn_is_refused_too(
    server, anthropic_session, run_queued_steps
):
    listing = {"type": "tool_use", "id": "toolu_again", "name": "list_dir", "input": {"path": "."}}
    server.enqueue(
        message_stream([listing], stop_reason="tool_use"),
        message_stream([listing], stop_reason="tool_use"),
        message_stream([{"type": "text", "text": "Done."}]),
    )
    session = anthropic_session()

    run_queued_steps()

    first, second = ToolCall.objects.filter(session=session).order_by("message__index")
    assert (first.state, second.state) == (CallState.SUCCEEDED, CallState.ERRORED)
    assert_each_call_answered_once(server.requests[2].body["messages"])


@pytest.mark.parametrize(
    "call_id",
    ["", "toolu 1", "toolu/1", "tø", "x" * 201],
    ids=["empty", "space", "slash", "non-ascii", "long"],
)
def test_a_call_without_a_usable_id_runs_under_a_fresh_one(
    server, anthropic_session, run_queued_steps, call_id
):
    listing = {"type": "tool_use", "id": call_id, "name": "list_dir", "input": {"path": "."}}
    server.enqueue(
        message_stream([listing, listing], stop_reason="tool_use"),
        message_stream([{"type": "text", "text": "Done."}]),
    )
    session = anthropic_session()

    run_queued_steps()

    # Nothing the model did wrong: both calls run, each under an id of its own.
    calls = list(ToolCall.objects.filter(session=session).order_by("position"))
    assert [call.state for call in calls] == [CallState.SUCCEEDED, CallState.SUCCEEDED]
    sent = server.requests[1].body["messages"]
    assert_each_call_answered_once(sent)
    asked = [block["id"] for block in sent[-2]["content"] if block["type"] == "tool_use"]
    assert asked == [call.call_id for call in calls]


def test_an_openai_reply_with_a_reused_id_makes_a_request_openai_accepts(
    monkeypatch, run_queued_steps
):
    """On Chat Completions the ids come back as the assistant's tool_calls and one `tool`
    message per result: a reused id would be two `tool` messages with one tool_call_id."""
    listing = {"id": "call_same", "name": "list_dir", "arguments": '{"path": "."}'}
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        server.enqueue(
            chat_stream(tool_calls=[listing, listing], finish_reason="tool_calls"),
            chat_stream(text="Done."),
        )
        session = start_session(goal="Survive this", provider="openai", enabled_tools=["list_dir"])

        run_queued_steps()

    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED
    sent = server.requests[1].body["messages"]
    [asked] = [message for message in sent if message.get("tool_calls")]
    ids = [call["id"] for call in asked["tool_calls"]]
    answered = [message["tool_call_id"] for message in sent if message["role"] == "tool"]
    assert len(set(ids)) == 2
    assert sorted(answered) == sorted(ids)
    assert ids[0] == "call_same"
