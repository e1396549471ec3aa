"""The OpenAI-compatible provider against a fake Chat Completions API streaming SSE."""

import json
from decimal import Decimal

import pytest

from agentdash.providers import (
    ErrorKind,
    ModelRequest,
    ProviderError,
    StopReason,
    Usage,
    cost_of,
    get_provider,
)
from tests.fakes.http_server import FakeResponse
from tests.fakes.openai_server import chat_chunks, chat_stream, error_response, stream_of

KEY = "sk-openai-test-0123456789"
TINY_RETRY_AFTER = "0.001"
HELLO = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
READ_FILE_TOOL = {
    "name": "read_file",
    "description": "Read a file from the workspace.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


def provider_for(server, **options):
    return get_provider("openai", api_key=KEY, base_url=server.base_url, **options)


def request(messages=HELLO, **fields):
    return ModelRequest(model="gpt-4.1-mini", messages=messages, **fields)


def test_it_streams_text_deltas_to_the_callback_in_order(fake_openai):
    fake_openai.enqueue(chat_stream(text="Hello, operator!", chunk=5))
    deltas = []

    reply = provider_for(fake_openai).complete(request(), on_text=deltas.append)

    assert deltas == ["Hello", ", ope", "rator", "!"]
    assert reply.content == [{"type": "text", "text": "Hello, operator!"}]
    assert reply.stop_reason is StopReason.END_TURN
    assert reply.model == "gpt-4.1-mini"


def test_it_sends_chat_completions_with_usage_requested_and_no_sampling(fake_openai):
    fake_openai.enqueue(chat_stream(text="ok"))

    provider_for(fake_openai).complete(
        request(system="Be brief.", tools=[READ_FILE_TOOL], max_tokens=800)
    )

    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        "max_completion_tokens": 800,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read_file",
                    "description": "Read a file from the workspace.",
                    "parameters": READ_FILE_TOOL["input_schema"],
                },
            }
        ],
    }


def test_it_converts_the_whole_conversation_to_chat_messages(fake_openai):
    fake_openai.enqueue(chat_stream(text="ok"))
    conversation = [
        {"role": "user", "content": "List the files, then read a.txt."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "c2ln"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "call_1", "name": "list_dir", "input": {"path": "."}},
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "read_file",
                    "input": {},
                    "input_error": "The arguments for read_file are not valid JSON.",
                    "raw_arguments": '{"path": a.txt}',
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "Invalid arguments."}],
                    "is_error": True,
                },
                {"type": "text", "text": "Carry on."},
            ],
        },
    ]

    provider_for(fake_openai).complete(request(conversation))

    assert fake_openai.requests[0].body["messages"] == [
        {"role": "user", "content": "List the files, then read a.txt."},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "list_dir", "arguments": '{"path": "."}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    # sent back exactly as the model wrote it
                    "function": {"name": "read_file", "arguments": '{"path": a.txt}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: Invalid arguments."},
        {"role": "user", "content": "Carry on."},
    ]


def test_it_assembles_streamed_tool_calls_into_tool_use_blocks(fake_openai):
    fake_openai.enqueue(
        chat_stream(
            text="Reading both.",
            tool_calls=[
                {"id": "call_a", "name": "read_file", "arguments": '{"path": "a.txt"}'},
                {"id": "call_b", "name": "read_file", "arguments": '{"path": "b/ü.txt"}'},
            ],
            finish_reason="tool_calls",
            chunk=3,
        )
    )

    reply = provider_for(fake_openai).complete(request(tools=[READ_FILE_TOOL]))

    assert reply.stop_reason is StopReason.TOOL_USE
    assert reply.content == [
        {"type": "text", "text": "Reading both."},
        {"type": "tool_use", "id": "call_a", "name": "read_file", "input": {"path": "a.txt"}},
        {"type": "tool_use", "id": "call_b", "name": "read_file", "input": {"path": "b/ü.txt"}},
    ]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ('{"path": "a.txt"', "are not valid JSON (Expecting ',' delimiter"),
        ("path=a.txt", "are not valid JSON (Expecting value at line 1, column 1)"),
        ('["a.txt"]', "are a JSON array, not an object"),
        ('"a.txt"', "are a JSON string, not an object"),
    ],
)
def test_unusable_arguments_become_an_input_error_not_an_exception(
    fake_openai, arguments, complaint
):
    fake_openai.enqueue(
        chat_stream(
            tool_calls=[{"id": "call_x", "name": "read_file", "arguments": arguments}],
            finish_reason="tool_calls",
        )
    )

    reply = provider_for(fake_openai).complete(request())

    call = reply.content[0]
    assert call["input"] == {}
    assert call["raw_arguments"] == arguments
    assert call["input_error"].startswith(f"The arguments for read_file {complaint}")
    assert reply.stop_reason is StopReason.TOOL_USE


def test_empty_arguments_mean_no_arguments(fake_openai):
    fake_openai.enqueue(
        chat_stream(
            tool_calls=[{"id": "call_y", "name": "list_dir", "arguments": ""}],
            finish_reason="tool_calls",
        )
    )

    reply = provider_for(fake_openai).complete(request())

    assert reply.content == [{"type": "tool_use", "id": "call_y", "name": "list_dir", "input": {}}]


def test_a_100_mb_argument_is_reported_without_being_kept(fake_openai):
    size = 100 * 1024 * 1024
    payload = json.dumps({"path": "big.txt", "content": "x" * size})
    fake_openai.enqueue(
        chat_stream(
            tool_calls=[{"id": "call_big", "name": "write_file", "arguments": payload}],
            finish_reason="tool_calls",
            chunk=4 * 1024 * 1024,
        )
    )

    reply = provider_for(fake_openai).complete(request())

    call = reply.content[0]
    assert call["input"] == {}
    assert f"were {len(payload):,} bytes, over the limit of 1,000,000 bytes" in call["input_error"]
    assert len(call["raw_arguments"]) < 3_000  # a prefix for the audit log, not 100 MB


@pytest.mark.parametrize(
    ("finish_reason", "expected"),
    [
        ("stop", StopReason.END_TURN),
        ("length", StopReason.MAX_TOKENS),
        ("content_filter", StopReason.REFUSAL),
        ("tool_calls", StopReason.TOOL_USE),
    ],
)
def test_every_finish_reason_maps_to_a_stop_reason(fake_openai, finish_reason, expected):
    fake_openai.enqueue(chat_stream(text="...", finish_reason=finish_reason))

    assert provider_for(fake_openai).complete(request()).stop_reason is expected


def test_tool_calls_with_finish_reason_stop_still_mean_tool_use(fake_openai):
    # Older Ollama releases say "stop" even when the reply holds tool calls.
    fake_openai.enqueue(
        chat_stream(
            tool_calls=[{"id": "call_z", "name": "list_dir", "arguments": "{}"}],
            finish_reason="stop",
        )
    )

    assert provider_for(fake_openai).complete(request()).stop_reason is StopReason.TOOL_USE


def test_a_refusal_is_a_refusal_with_its_text(fake_openai):
    fake_openai.enqueue(chat_stream(refusal="I can't help with that."))

    reply = provider_for(fake_openai).complete(request())

    assert reply.stop_reason is StopReason.REFUSAL
    assert reply.text == "I can't help with that."


def test_usage_counts_cached_prompt_tokens_as_cache_reads(fake_openai):
    fake_openai.enqueue(
        chat_stream(text="ok", prompt_tokens=5_000, completion_tokens=1_000, cached_tokens=4_000)
    )

    reply = provider_for(fake_openai).complete(request())

    assert reply.usage == Usage(input_tokens=1_000, output_tokens=1_000, cache_read_tokens=4_000)
    # (1000 * $0.40 + 1000 * $1.60 + 4000 * $0.10) per million tokens
    assert cost_of(reply.model, reply.usage) == Decimal("0.0024")


def test_context_overflow_is_not_retried_and_says_so(fake_openai):
    fake_openai.enqueue(
        error_response(
            400,
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens.",
            code="context_length_exceeded",
        )
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai).complete(request())

    assert caught.value.kind is ErrorKind.CONTEXT_EXCEEDED
    assert not caught.value.retryable
    assert "maximum context length is 128000 tokens" in caught.value.message
    assert len(fake_openai.requests) == 1


def test_a_rate_limit_is_retried_then_succeeds(fake_openai):
    fake_openai.enqueue(
        error_response(429, "Rate limit reached", retry_after=TINY_RETRY_AFTER),
        chat_stream(text="Made it."),
    )

    reply = provider_for(fake_openai, max_retries=3).complete(request())

    assert reply.text == "Made it."
    assert [sent.retry_count for sent in fake_openai.requests] == [0, 1]


def test_a_rate_limit_asking_for_a_long_wait_is_not_retried_and_says_so(fake_openai):
    # The SDK will not sleep for ten minutes inside a step; the session ends instead.
    fake_openai.enqueue(error_response(429, "Quota exceeded", retry_after="600"))

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.message == (
        "OpenAI-compatible API rate limit (429), not retried: Quota exceeded"
    )
    assert len(fake_openai.requests) == 1


def test_a_persistent_5xx_ends_with_a_clear_server_error(fake_openai):
    fake_openai.enqueue(
        *[error_response(503, "Service unavailable", retry_after=TINY_RETRY_AFTER)] * 4
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert caught.value.retryable
    assert caught.value.message == (
        "OpenAI-compatible API server error (503) persisted after 3 retries: Service unavailable"
    )
    assert len(fake_openai.requests) == 4


# What a stream holds before its first content: the assistant's empty opening chunk.
BEFORE_CONTENT = chat_chunks(finish_reason=None)
SERVER_ERROR = {
    "error": {"message": "The server had an error", "type": "server_error", "code": None}
}


def test_an_error_inside_the_stream_before_any_content_is_retried(fake_openai):
    fake_openai.enqueue(stream_of([*BEFORE_CONTENT, SERVER_ERROR]), chat_stream(text="Made it."))
    deltas = []

    reply = provider_for(fake_openai, max_retries=3).complete(request(), on_text=deltas.append)

    assert reply.text == "Made it."
    assert "".join(deltas) == "Made it."
    assert len(fake_openai.requests) == 2


def test_an_error_inside_the_stream_before_content_every_time_ends_after_the_retries(
    fake_openai,
):
    rate_limited = {"error": {"message": "Slow down", "type": "rate_limit", "code": "429"}}
    fake_openai.enqueue(*[stream_of([*BEFORE_CONTENT, rate_limited])] * 4)

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retryable
    assert caught.value.message == (
        "OpenAI-compatible API rate limit (429) persisted after 3 retries: Slow down"
    )
    assert len(fake_openai.requests) == 4


@pytest.mark.parametrize(
    "options",
    [
        {"text": "Partial"},
        {"tool_calls": [{"id": "call_1", "name": "read_file", "arguments": '{"path"'}]},
    ],
)
def test_an_error_inside_the_stream_after_content_is_not_retried(fake_openai, options):
    chunks = chat_chunks(**options, finish_reason=None)
    fake_openai.enqueue(stream_of([*chunks, SERVER_ERROR]))

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert caught.value.message == (
        "OpenAI-compatible API server error (500) in the middle of the reply, not retried "
        "because part of it had been streamed: The server had an error"
    )
    assert len(fake_openai.requests) == 1


def test_a_200_holding_a_json_error_is_that_error_and_is_retried(fake_openai):
    body = {"error": {"message": "Model is loading", "type": "server_error", "code": "503"}}
    fake_openai.enqueue(*[FakeResponse.json(200, body)] * 2)

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai, max_retries=1).complete(request())

    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert caught.value.message == (
        "OpenAI-compatible API server error (503) persisted after 1 retry: Model is loading"
    )
    assert len(fake_openai.requests) == 2


def test_a_stream_cut_before_any_content_is_retried(fake_openai):
    fake_openai.enqueue(stream_of(BEFORE_CONTENT), chat_stream(text="Made it."))

    reply = provider_for(fake_openai, max_retries=1).complete(request())

    assert reply.text == "Made it."
    assert len(fake_openai.requests) == 2


def test_a_stream_cut_after_content_is_a_connection_error_not_retried(fake_openai):
    fake_openai.enqueue(stream_of(chat_chunks(text="Partial", finish_reason=None)))

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_openai, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.retryable
    assert "not retried because part of it had been streamed" in caught.value.message
    assert len(fake_openai.requests) == 1


def test_a_rejected_key_is_never_repeated_in_the_error(fake_openai):
    fake_openai.enqueue(error_response(401, f"Incorrect API key provided: {KEY}"))
    provider = provider_for(fake_openai)

    with pytest.raises(ProviderError) as caught:
        provider.complete(request())

    assert caught.value.kind is ErrorKind.AUTH
    assert KEY not in str(caught.value)
    assert KEY not in repr(provider)


def test_a_local_server_needs_no_key(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.enqueue(chat_stream(text="Hi from a local model", model="llama3.2"))

    reply = get_provider("openai").complete(request())

    assert reply.text == "Hi from a local model"
    assert fake_openai.requests[0].headers["authorization"] == "Bearer no-key-configured"


def test_without_a_key_or_endpoint_it_says_what_to_set():
    with pytest.raises(ProviderError) as caught:
        get_provider("openai")

    assert caught.value.kind is ErrorKind.AUTH
    assert "OPENAI_API_KEY" in caught.value.message
    assert "OPENAI_BASE_URL" in caught.value.message
