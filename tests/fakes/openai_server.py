"""A fake OpenAI-compatible Chat Completions API on 127.0.0.1 that streams real SSE
chunks, ending with `data: [DONE]`.

    with FakeOpenAIServer() as server:
        server.enqueue(chat_stream(text="Hi"))
        provider = get_provider("openai", api_key="k", base_url=server.base_url)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from .http_server import FakeHTTPServer, FakeResponse

DEFAULT_MODEL = "gpt-4.1-mini"


class FakeOpenAIServer(FakeHTTPServer):
    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_790_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def chat_chunks(
    *,
    text: str = "",
    tool_calls: Sequence[dict[str, str]] = (),
    refusal: str = "",
    finish_reason: str | None = "stop",
    model: str = DEFAULT_MODEL,
    prompt_tokens: int = 30,
    completion_tokens: int = 12,
    cached_tokens: int = 0,
    chunk: int = 4,
) -> list[dict[str, Any] | str]:
    """The chunks of one streamed completion, `[DONE]` last.

    `tool_calls` are dicts with `id`, `name` and `arguments` (a string, sent verbatim,
    so it may be broken JSON). `finish_reason=None` plays a stream cut before the end.
    """
    chunks: list[dict[str, Any] | str] = [_chunk(model, {"role": "assistant", "content": ""})]
    chunks += [_chunk(model, {"content": piece}) for piece in _pieces(text, chunk)]
    chunks += [_chunk(model, {"refusal": piece}) for piece in _pieces(refusal, chunk)]
    for index, call in enumerate(tool_calls):
        opening = {"index": index, "id": call["id"], "type": "function"}
        opening["function"] = {"name": call["name"], "arguments": ""}
        chunks.append(_chunk(model, {"tool_calls": [opening]}))
        chunks += [
            _chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _pieces(call["arguments"], chunk)
        ]
    if finish_reason is None:
        return chunks
    chunks.append(_chunk(model, {}, finish_reason))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
    chunks.append({**_chunk(model, {}), "choices": [], "usage": usage})
    chunks.append("[DONE]")
    return chunks


def stream_of(chunks: list[dict[str, Any] | str]) -> FakeResponse:
    body = b"".join(
        f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode()
        for item in chunks
    )
    return FakeResponse(status=200, body=body, content_type="text/event-stream")


def chat_stream(**options: Any) -> FakeResponse:
    """A 200 streamed completion; options as for `chat_chunks`."""
    return stream_of(chat_chunks(**options))


def error_response(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    retry_after: str | None = None,
) -> FakeResponse:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return FakeResponse.json(status, body, headers=headers)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server
