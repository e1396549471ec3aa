"""Fake LLM APIs that worker processes are pointed at, with replies in each one's format."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest

from tests.fakes import anthropic_server, openai_server
from tests.fakes.http_server import FakeHTTPServer, FakeResponse

# A reply held back until the test sets the event (see FakeResponse.hold).
Hold = threading.Event | None


@dataclass(frozen=True)
class FakeProvider:
    """A fake LLM API the worker processes are pointed at, and how to speak its format."""

    name: str
    server: FakeHTTPServer
    tool_use: Callable[..., FakeResponse]  # (call_id, tool, arguments, hold: Hold = None)
    text: Callable[..., FakeResponse]  # (words, hold: Hold = None)


def _anthropic(server: anthropic_server.FakeAnthropicServer) -> FakeProvider:
    def tool_use(call_id: str, tool: str, arguments: dict, hold: Hold = None) -> FakeResponse:
        block = {"type": "tool_use", "id": call_id, "name": tool, "input": arguments}
        response = anthropic_server.message_stream([block], stop_reason="tool_use")
        return replace(response, hold=hold)

    def text(words: str, hold: Hold = None) -> FakeResponse:
        response = anthropic_server.message_stream([{"type": "text", "text": words}])
        return replace(response, hold=hold)

    return FakeProvider("anthropic", server, tool_use, text)


def _openai(server: openai_server.FakeOpenAIServer) -> FakeProvider:
    def tool_use(call_id: str, tool: str, arguments: dict, hold: Hold = None) -> FakeResponse:
        call = {"id": call_id, "name": tool, "arguments": json.dumps(arguments)}
        response = openai_server.chat_stream(tool_calls=[call], finish_reason="tool_calls")
        return replace(response, hold=hold)

    def text(words: str, hold: Hold = None) -> FakeResponse:
        return replace(openai_server.chat_stream(text=words), hold=hold)

    return FakeProvider("openai", server, tool_use, text)


@contextmanager
def serving_fake(name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    """The fake API `name` ("anthropic" or "openai"), with the environment that points
    worker processes started meanwhile at it."""
    if name == "anthropic":
        with anthropic_server.FakeAnthropicServer() as server:
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fault-test")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
            yield _anthropic(server)
    else:
        with openai_server.FakeOpenAIServer() as server:
            monkeypatch.setenv("OPENAI_API_KEY", "sk-fault-test")
            monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
            yield _openai(server)
