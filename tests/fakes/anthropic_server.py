"""A fake Anthropic Messages API on 127.0.0.1 that streams real SSE (`event:` lines).

    with FakeAnthropicServer() as server:
        server.enqueue(message_stream([{"type": "text", "text": "Hi"}]))
        provider = get_provider("anthropic", api_key="k", base_url=server.url)
        ...
        server.requests[0].body["messages"]

Responses are built from the content blocks a reply should hold, in the format the
provider returns them; text, thinking and tool input are cut into deltas as the real
API streams them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .http_server import FakeHTTPServer, FakeResponse

DEFAULT_MODEL = "claude-sonnet-5-5"


class FakeAnthropicServer(FakeHTTPServer):
    path = "/v1/messages"


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _block_events(index: int, block: dict[str, Any], chunk: int) -> list[tuple[str, dict]]:
    """content_block_start, the deltas, content_block_stop for one block.

    A tool_use block may carry `raw_input`: a string streamed as the input JSON
    verbatim, to play a model that writes broken JSON."""
    kind = block["type"]
    if kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"], chunk)]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in _pieces(block["thinking"], chunk)
        ]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        raw = block["raw_input"] if "raw_input" in block else json.dumps(block["input"])
        deltas = [
            {"type": "input_json_delta", "partial_json": piece} for piece in _pieces(raw, chunk)
        ]
    else:  # redacted_thinking and the like arrive whole
        start, deltas = block, []
    return [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        ),
        *(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            for delta in deltas
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def message_events(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "end_turn",
    model: str = DEFAULT_MODEL,
    input_tokens: int = 25,
    output_tokens: int = 10,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    chunk: int = 4,
) -> list[tuple[str, dict[str, Any]]]:
    """The whole event sequence of one streamed message, as the API sends it."""
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": 1,
            "cache_read_input_tokens": cache_read_tokens,
            "cache_creation_input_tokens": cache_write_tokens,
        },
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(content):
        events.extend(_block_events(index, block, chunk))
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def message_stream(content: list[dict[str, Any]], **options: Any) -> FakeResponse:
    """A 200 streamed reply holding `content`; options as for `message_events`."""
    return stream_of(message_events(content, **options))


def stream_of(events: list[tuple[str, dict[str, Any]]]) -> FakeResponse:
    """A 200 event stream of exactly these events (cut one short to play a dropped stream)."""
    return FakeResponse(status=200, body=sse(events), content_type="text/event-stream")


def error_event(error_type: str, message: str) -> tuple[str, dict[str, Any]]:
    """An `error` event, as the API sends inside a stream that had begun."""
    return ("error", {"type": "error", "error": {"type": error_type, "message": message}})


def error_response(
    status: int, error_type: str, message: str, *, retry_after: str | None = None
) -> FakeResponse:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return FakeResponse.json(status, body, headers=headers)


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as server:
        yield server
