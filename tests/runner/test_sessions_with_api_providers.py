"""Sessions driven by the real Anthropic and OpenAI-compatible clients, against fake
servers on 127.0.0.1 that speak the real wire formats."""

from __future__ import annotations

import pytest

from agentdash.models import AgentSession, Message, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.fakes.anthropic_server import error_response as anthropic_error
from tests.fakes.anthropic_server import fake_anthropic as fake_anthropic
from tests.fakes.anthropic_server import message_stream
from tests.fakes.openai_server import chat_stream
from tests.fakes.openai_server import fake_openai as fake_openai

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def anthropic_env(monkeypatch, fake_anthropic, settings):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    settings.AGENTDASH_PROVIDER_MAX_RETRIES = 1
    return fake_anthropic


@pytest.fixture
def openai_env(monkeypatch, fake_openai):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    return fake_openai


def reload(session: AgentSession) -> AgentSession:
    return AgentSession.objects.get(pk=session.pk)


def test_an_anthropic_session_runs_tools_and_pays_for_its_tokens(anthropic_env, run_queued_steps):
    anthropic_env.enqueue(
        message_stream(
            [
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_1", "name": "list_dir", "input": {"path": "."}},
            ],
            stop_reason="tool_use",
            input_tokens=1000,
            output_tokens=100,
        ),
        message_stream([{"type": "text", "text": "Empty."}], input_tokens=1200, output_tokens=20),
    )
    session = start_session(goal="Look around", provider="anthropic")
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.COMPLETED
    assert session.model == "claude-sonnet-5-5"
    assert (session.input_tokens, session.output_tokens) == (2200, 120)
    assert session.cost > 0
    second = anthropic_env.requests[1].body
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert second["messages"][-1]["content"][0]["tool_use_id"] == "toolu_1"


def test_a_pause_turn_is_continued(anthropic_env, run_queued_steps):
    anthropic_env.enqueue(
        message_stream([{"type": "text", "text": "Thinking..."}], stop_reason="pause_turn"),
        message_stream([{"type": "text", "text": "Done."}]),
    )
    session = start_session(goal="Think", provider="anthropic")
    run_queued_steps()

    assert reload(session).status == SessionStatus.COMPLETED
    assert reload(session).steps == 2
    resumed = anthropic_env.requests[1].body["messages"]
    assert resumed[-1]["role"] == "assistant"


def test_persistent_server_errors_end_the_session_clearly(anthropic_env, run_queued_steps):
    for _ in range(3):
        anthropic_env.enqueue(
            anthropic_error(529, "overloaded_error", "Overloaded", retry_after="0")
        )
    session = start_session(goal="Try", provider="anthropic")
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.FAILED
    assert "The model provider failed" in session.status_reason
    assert "sk-ant-test-key" not in session.status_reason


def test_a_refusal_ends_the_session(anthropic_env, run_queued_steps):
    anthropic_env.enqueue(message_stream([{"type": "text", "text": "No."}], stop_reason="refusal"))
    session = start_session(goal="Something bad", provider="anthropic")
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.FAILED
    assert "refused" in session.status_reason


def test_a_session_is_not_started_on_a_provider_without_its_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"not configured here\. Set ANTHROPIC_API_KEY"):
        start_session(goal="No key", provider="anthropic")
    with pytest.raises(ValueError, match="No provider is called 'gpt'"):
        start_session(goal="No such provider", provider="gpt")
    assert not AgentSession.objects.exists()


def test_a_key_gone_since_the_start_fails_the_session_instead_of_crashing(
    run_queued_steps, monkeypatch
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    session = start_session(goal="No key", provider="anthropic")
    monkeypatch.delenv("ANTHROPIC_API_KEY")  # say, the server restarted without it
    run_queued_steps()

    session = reload(session)
    assert session.status == SessionStatus.FAILED
    assert "ANTHROPIC_API_KEY" in session.status_reason


def test_invalid_json_arguments_from_an_openai_model_become_a_result_it_reads(
    openai_env, run_queued_steps
):
    openai_env.enqueue(
        chat_stream(
            tool_calls=[{"id": "call_1", "name": "list_dir", "arguments": '{"path": '}],
            finish_reason="tool_calls",
        ),
        chat_stream(text="Sorry, fixed."),
    )
    session = start_session(goal="List", provider="openai")
    run_queued_steps()

    assert reload(session).status == SessionStatus.COMPLETED
    call = ToolCall.objects.get(session=session)
    assert call.state == CallState.ERRORED
    [result] = Message.objects.get(session=session, index=2).content
    assert result["is_error"] is True
    assert "not valid JSON" in result["content"]
    sent = openai_env.requests[1].body["messages"]
    assert sent[-1]["role"] == "tool"
    assert sent[-1]["tool_call_id"] == "call_1"
