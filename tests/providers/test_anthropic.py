"""The Anthropic provider against a fake Messages API that streams real SSE."""

import json
import logging
import socket
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
from tests.fakes.anthropic_server import (
    FakeResponse,
    error_event,
    error_response,
    message_events,
    message_stream,
    stream_of,
)

KEY = "sk-ant-test-0123456789"
TINY_RETRY_AFTER = "0.001"  # seconds: the SDK honours it, so retries take no time
HELLO = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
READ_FILE_TOOL = {
    "name": "read_file",
    "description": "Read a file from the workspace.",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
}


def provider_for(server, **options):
    return get_provider("anthropic", api_key=KEY, base_url=server.url, **options)


def request(messages=HELLO, **fields):
    return ModelRequest(model="claude-sonnet-5-5", messages=messages, **fields)


def test_it_streams_text_deltas_to_the_callback_in_order(fake_anthropic):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "Hello, operator!"}], chunk=3))
    deltas = []

    reply = provider_for(fake_anthropic).complete(request(), on_text=deltas.append)

    assert deltas == ["Hel", "lo,", " op", "era", "tor", "!"]
    assert reply.content == [{"type": "text", "text": "Hello, operator!"}]
    assert reply.stop_reason is StopReason.END_TURN
    assert reply.model == "claude-sonnet-5-5"


def test_it_sends_the_conversation_with_the_key_and_no_sampling_parameters(fake_anthropic):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "ok"}]))

    provider_for(fake_anthropic).complete(
        request(system="Be brief.", tools=[READ_FILE_TOOL], max_tokens=1000)
    )

    sent = fake_anthropic.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["anthropic-version"]
    assert sent.body == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 1000,
        "system": "Be brief.",
        "messages": HELLO,
        "tools": [READ_FILE_TOOL],
        "stream": True,
    }


def test_it_leaves_out_an_empty_system_prompt_and_tool_list(fake_anthropic):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "ok"}]))

    provider_for(fake_anthropic).complete(request())

    assert "system" not in fake_anthropic.requests[0].body
    assert "tools" not in fake_anthropic.requests[0].body


def test_it_assembles_tool_input_from_streamed_json(fake_anthropic):
    call = {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "write_file",
        "input": {"path": "notes.md", "content": "line one\nline two ✓", "overwrite": True},
    }
    fake_anthropic.enqueue(
        message_stream(
            [{"type": "text", "text": "Writing."}, call], stop_reason="tool_use", chunk=5
        )
    )
    deltas = []

    reply = provider_for(fake_anthropic).complete(request(), on_text=deltas.append)

    assert reply.content[1] == call
    assert reply.tool_uses == [call]
    assert reply.stop_reason is StopReason.TOOL_USE
    assert "".join(deltas) == "Writing."  # tool input is not text


def test_thinking_blocks_are_kept_and_sent_back_unchanged(fake_anthropic):
    thinking = {"type": "thinking", "thinking": "The user wants a file read.", "signature": "c2ln"}
    redacted = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
    call = {"type": "tool_use", "id": "toolu_02", "name": "read_file", "input": {"path": "a"}}
    fake_anthropic.enqueue(
        message_stream([thinking, redacted, call], stop_reason="tool_use"),
        message_stream([{"type": "text", "text": "Done."}]),
    )
    provider = provider_for(fake_anthropic)
    deltas = []

    first = provider.complete(request(), on_text=deltas.append)
    conversation = [
        *HELLO,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_02", "content": "hi"}],
        },
    ]
    provider.complete(request(conversation))

    assert first.content == [thinking, redacted, call]
    assert deltas == []  # thinking is not shown as text
    assert fake_anthropic.requests[1].body["messages"] == conversation


def test_an_empty_text_block_is_dropped_so_the_turn_can_be_sent_back(fake_anthropic):
    call = {"type": "tool_use", "id": "toolu_07", "name": "list_dir", "input": {}}
    fake_anthropic.enqueue(
        message_stream([{"type": "text", "text": ""}, call], stop_reason="tool_use")
    )

    reply = provider_for(fake_anthropic).complete(request())

    assert reply.content == [call]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("end_turn", StopReason.END_TURN),
        ("tool_use", StopReason.TOOL_USE),
        ("max_tokens", StopReason.MAX_TOKENS),
        ("stop_sequence", StopReason.STOP_SEQUENCE),
        ("pause_turn", StopReason.PAUSE_TURN),
        ("refusal", StopReason.REFUSAL),
        ("model_context_window_exceeded", StopReason.CONTEXT_EXCEEDED),
    ],
)
def test_every_stop_reason_has_its_outcome(fake_anthropic, wire, expected):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "..."}], stop_reason=wire))

    assert provider_for(fake_anthropic).complete(request()).stop_reason is expected


def test_an_unknown_stop_reason_ends_the_turn_with_a_warning(fake_anthropic, caplog):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "..."}], stop_reason="nap"))

    with caplog.at_level(logging.WARNING, logger="agentdash.providers"):
        reply = provider_for(fake_anthropic).complete(request())

    assert reply.stop_reason is StopReason.END_TURN
    assert "nap" in caplog.text


def test_it_reports_usage_including_cache_and_its_cost(fake_anthropic):
    fake_anthropic.enqueue(
        message_stream(
            [{"type": "text", "text": "ok"}],
            input_tokens=1_000,
            output_tokens=500,
            cache_read_tokens=10_000,
            cache_write_tokens=2_000,
        )
    )

    reply = provider_for(fake_anthropic).complete(request())

    assert reply.usage == Usage(
        input_tokens=1_000, output_tokens=500, cache_read_tokens=10_000, cache_write_tokens=2_000
    )
    # (1000 * $2 + 500 * $10 + 10000 * $0.20 + 2000 * $2.50) per million tokens
    assert cost_of(reply.model, reply.usage) == Decimal("0.014")


def test_a_rate_limit_is_retried_with_retry_after_then_succeeds(fake_anthropic):
    fake_anthropic.enqueue(
        error_response(429, "rate_limit_error", "Slow down", retry_after=TINY_RETRY_AFTER),
        error_response(429, "rate_limit_error", "Slow down", retry_after=TINY_RETRY_AFTER),
        message_stream([{"type": "text", "text": "Made it."}]),
    )

    reply = provider_for(fake_anthropic, max_retries=3).complete(request())

    assert reply.text == "Made it."
    assert [sent.retry_count for sent in fake_anthropic.requests] == [0, 1, 2]


def test_a_persistent_rate_limit_ends_with_a_clear_error(fake_anthropic):
    fake_anthropic.enqueue(
        *[error_response(429, "rate_limit_error", "Slow down", retry_after=TINY_RETRY_AFTER)] * 4
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retryable
    assert caught.value.status_code == 429
    assert caught.value.message == "Anthropic rate limit (429) persisted after 3 retries: Slow down"
    assert len(fake_anthropic.requests) == 4


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "wording"),
    [
        (500, "api_error", ErrorKind.SERVER_ERROR, "Anthropic server error (500)"),
        (503, "api_error", ErrorKind.SERVER_ERROR, "Anthropic server error (503)"),
        (529, "overloaded_error", ErrorKind.OVERLOADED, "Anthropic overload (529)"),
    ],
)
def test_persistent_5xx_ends_with_a_server_error(fake_anthropic, status, error_type, kind, wording):
    fake_anthropic.enqueue(
        *[error_response(status, error_type, "Try later", retry_after=TINY_RETRY_AFTER)] * 3
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=2).complete(request())

    assert caught.value.kind is kind
    assert caught.value.retryable
    assert caught.value.message == f"{wording} persisted after 2 retries: Try later"
    assert len(fake_anthropic.requests) == 3


def test_context_overflow_is_not_retried_and_says_so(fake_anthropic):
    fake_anthropic.enqueue(
        error_response(
            400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
        )
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic).complete(request())

    assert caught.value.kind is ErrorKind.CONTEXT_EXCEEDED
    assert not caught.value.retryable
    assert "context window" in caught.value.message
    assert "210000 tokens > 200000" in caught.value.message
    assert len(fake_anthropic.requests) == 1


def test_a_bad_request_is_not_retried(fake_anthropic):
    fake_anthropic.enqueue(
        error_response(400, "invalid_request_error", "tools.0.name: String should match pattern")
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic).complete(request())

    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert caught.value.message == (
        "Anthropic rejected the request (400): tools.0.name: String should match pattern"
    )
    assert len(fake_anthropic.requests) == 1


def test_a_rejected_key_is_never_repeated_in_the_error(fake_anthropic):
    fake_anthropic.enqueue(error_response(401, "authentication_error", f"invalid x-api-key: {KEY}"))
    provider = provider_for(fake_anthropic)

    with pytest.raises(ProviderError) as caught:
        provider.complete(request())

    assert caught.value.kind is ErrorKind.AUTH
    assert not caught.value.retryable
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    assert KEY not in repr(provider)
    assert "[redacted]" in caught.value.message
    assert len(fake_anthropic.requests) == 1


# What a stream holds before its first content: the message, and a keep-alive.
BEFORE_CONTENT = message_events([])[:2]
OVERLOADED = error_event("overloaded_error", "Overloaded")


@pytest.mark.parametrize(
    "error_type", ["overloaded_error", "rate_limit_error", "api_error", "timeout_error"]
)
def test_an_error_event_before_any_content_is_retried(fake_anthropic, error_type):
    fake_anthropic.enqueue(
        stream_of([*BEFORE_CONTENT, error_event(error_type, "Try again")]),
        message_stream([{"type": "text", "text": "Made it."}]),
    )
    deltas = []

    reply = provider_for(fake_anthropic, max_retries=3).complete(request(), on_text=deltas.append)

    assert reply.text == "Made it."
    assert "".join(deltas) == "Made it."
    assert len(fake_anthropic.requests) == 2
    assert fake_anthropic.requests[1].body == fake_anthropic.requests[0].body


def test_thinking_is_not_content_a_retry_would_repeat(fake_anthropic):
    thinking = {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"}
    events = message_events([thinking, {"type": "text", "text": "Never sent"}])
    fake_anthropic.enqueue(
        stream_of([*events[:-6], OVERLOADED]),  # the thinking block, then the error
        message_stream([{"type": "text", "text": "Made it."}]),
    )

    reply = provider_for(fake_anthropic, max_retries=1).complete(request())

    assert reply.text == "Made it."
    assert len(fake_anthropic.requests) == 2


def test_an_error_event_before_content_every_time_ends_after_the_retries(fake_anthropic):
    fake_anthropic.enqueue(*[stream_of([*BEFORE_CONTENT, OVERLOADED])] * 4)

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.OVERLOADED
    assert caught.value.retryable
    assert caught.value.status_code == 529
    assert caught.value.message == (
        "Anthropic overload (529) persisted after 3 retries: overloaded_error: Overloaded"
    )
    assert len(fake_anthropic.requests) == 4


def test_the_sdk_retries_and_the_stream_retries_share_one_budget(fake_anthropic):
    fake_anthropic.enqueue(
        error_response(429, "rate_limit_error", "Slow down", retry_after=TINY_RETRY_AFTER),
        *[stream_of([*BEFORE_CONTENT, error_event("rate_limit_error", "Slow down")])] * 3,
    )

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=2).complete(request())

    # The SDK's retry of the 429, then one of the stream: two retries, three requests.
    assert caught.value.message == (
        "Anthropic rate limit (429) persisted after 2 retries: rate_limit_error: Slow down"
    )
    assert len(fake_anthropic.requests) == 3
    assert fake_anthropic.pending == 1


def test_with_retries_off_an_early_error_event_is_not_retried(fake_anthropic):
    fake_anthropic.enqueue(stream_of([*BEFORE_CONTENT, OVERLOADED]))

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=0).complete(request())

    assert caught.value.message == (
        "Anthropic overload (529), not retried: overloaded_error: Overloaded"
    )
    assert len(fake_anthropic.requests) == 1


def test_an_error_event_that_no_retry_can_fix_is_not_retried(fake_anthropic):
    error = error_event("invalid_request_error", "tools.0: bad schema")
    fake_anthropic.enqueue(stream_of([*BEFORE_CONTENT, error]))

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert not caught.value.retryable
    assert len(fake_anthropic.requests) == 1


@pytest.mark.parametrize(
    ("block", "shown"),
    [
        ({"type": "text", "text": "Partial answer"}, "Partial answer"),
        ({"type": "tool_use", "id": "toolu_08", "name": "read_file", "input": {"path": "a"}}, ""),
    ],
)
def test_an_error_event_after_content_is_not_retried_and_says_so(fake_anthropic, block, shown):
    events = message_events([block])
    # Everything up to the end of the block, then the API's error event.
    fake_anthropic.enqueue(stream_of([*events[:-3], OVERLOADED]))
    deltas = []

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=3).complete(request(), on_text=deltas.append)

    assert caught.value.kind is ErrorKind.OVERLOADED
    assert caught.value.retryable
    assert caught.value.message == (
        "Anthropic overload (529) in the middle of the reply, not retried because part of it "
        "had been streamed: overloaded_error: Overloaded"
    )
    assert "".join(deltas) == shown
    assert len(fake_anthropic.requests) == 1


def test_a_stream_cut_short_before_any_content_is_retried(fake_anthropic):
    fake_anthropic.enqueue(
        stream_of(BEFORE_CONTENT), message_stream([{"type": "text", "text": "Made it."}])
    )

    reply = provider_for(fake_anthropic, max_retries=1).complete(request())

    assert reply.text == "Made it."
    assert len(fake_anthropic.requests) == 2


def test_a_stream_cut_short_before_content_every_time_is_a_connection_error(fake_anthropic):
    fake_anthropic.enqueue(*[stream_of(BEFORE_CONTENT)] * 3)

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=2).complete(request())

    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.retryable
    assert caught.value.message == (
        "Anthropic closed the stream before the reply was complete (tried 3 times)"
    )
    assert len(fake_anthropic.requests) == 3


def test_a_stream_cut_short_after_content_is_not_retried(fake_anthropic):
    events = message_events([{"type": "text", "text": "Partial"}])
    fake_anthropic.enqueue(stream_of(events[:-2]))  # no message_delta, no message_stop

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=3).complete(request())

    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.retryable
    assert caught.value.message == (
        "Anthropic closed the stream before the reply was complete "
        "(not retried because part of it had been streamed)"
    )
    assert len(fake_anthropic.requests) == 1


def test_a_200_holding_a_json_error_is_that_error_and_is_retried(fake_anthropic):
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_anthropic.enqueue(
        FakeResponse.json(200, body), message_stream([{"type": "text", "text": "Made it."}])
    )

    reply = provider_for(fake_anthropic, max_retries=1).complete(request())

    assert reply.text == "Made it."
    assert len(fake_anthropic.requests) == 2


def test_a_slow_api_times_out(fake_anthropic):
    fake_anthropic.enqueue(FakeResponse(delay=2.0))

    with pytest.raises(ProviderError) as caught:
        provider_for(fake_anthropic, max_retries=0, timeout=0.2).complete(request())

    assert caught.value.kind is ErrorKind.TIMEOUT
    assert caught.value.message == "Anthropic did not answer within 0.2 s (tried once)"


def test_an_unreachable_api_is_a_connection_error():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    provider = get_provider("anthropic", api_key=KEY, base_url=base_url, max_retries=0)

    with pytest.raises(ProviderError) as caught:
        provider.complete(request())

    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.message.startswith(f"Could not reach Anthropic at {base_url} (tried once)")
    assert KEY not in caught.value.message


def test_tool_input_that_is_not_json_becomes_an_input_error(fake_anthropic):
    broken = {"type": "tool_use", "id": "toolu_03", "name": "read_file", "raw_input": '{"path": }'}
    fake_anthropic.enqueue(message_stream([broken], stop_reason="tool_use"))

    reply = provider_for(fake_anthropic).complete(request())

    call = reply.content[0]
    assert call["input"] == {}
    assert call["raw_arguments"] == '{"path": }'
    assert call["input_error"].startswith("The arguments for read_file are not valid JSON")


def test_tool_input_cut_off_by_max_tokens_becomes_an_input_error(fake_anthropic):
    events = message_events(
        [{"type": "tool_use", "id": "toolu_04", "name": "write_file", "raw_input": '{"path": "a'}],
        stop_reason="max_tokens",
    )
    del events[-3]  # the API sends no content_block_stop for a block cut off by max_tokens
    fake_anthropic.enqueue(stream_of(events))

    reply = provider_for(fake_anthropic).complete(request())

    assert reply.stop_reason is StopReason.MAX_TOKENS
    assert reply.content[0]["input"] == {}
    assert "not valid JSON" in reply.content[0]["input_error"]


def test_a_call_with_unusable_arguments_goes_back_without_the_private_keys(fake_anthropic):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "ok"}]))
    bad_call = {
        "type": "tool_use",
        "id": "toolu_05",
        "name": "read_file",
        "input": {},
        "input_error": "The arguments for read_file are not valid JSON.",
        "raw_arguments": "{nope",
    }
    conversation = [
        *HELLO,
        {"role": "assistant", "content": [bad_call]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_05",
                    "content": "Invalid arguments",
                    "is_error": True,
                }
            ],
        },
    ]

    provider_for(fake_anthropic).complete(request(conversation))

    sent_call = fake_anthropic.requests[0].body["messages"][1]["content"][0]
    assert sent_call == {"type": "tool_use", "id": "toolu_05", "name": "read_file", "input": {}}


def test_oversized_tool_input_is_counted_not_used(fake_anthropic, settings):
    settings.AGENTDASH_MAX_TOOL_INPUT_BYTES = 1_000
    call = {"type": "tool_use", "id": "toolu_06", "name": "write_file"}
    call["input"] = {"path": "big.txt", "content": "x" * 5_000}
    fake_anthropic.enqueue(message_stream([call], stop_reason="tool_use", chunk=100))

    reply = provider_for(fake_anthropic).complete(request())

    size = len(json.dumps(call["input"]))
    block = reply.content[0]
    assert block["input"] == {}
    assert f"{size:,} bytes, over the limit of 1,000 bytes" in block["input_error"]
    assert block["raw_arguments"].startswith('{"path": "big.txt", "content": "xxx')
    assert block["raw_arguments"].endswith(f"[cut: {size:,} bytes in all]")


def test_a_failing_text_callback_does_not_lose_the_reply(fake_anthropic, caplog):
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "Still here."}], chunk=2))
    calls = []

    def broken_view(delta):
        calls.append(delta)
        raise RuntimeError("websocket gone")

    reply = provider_for(fake_anthropic).complete(request(), on_text=broken_view)

    assert reply.text == "Still here."
    assert calls == ["St"]  # not called again after it failed
    assert caplog.text.count("on_text callback failed") == 1


def test_it_honours_the_sdk_environment(fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    fake_anthropic.enqueue(message_stream([{"type": "text", "text": "ok"}]))

    get_provider("anthropic").complete(request())

    assert fake_anthropic.requests[0].headers["authorization"] == "Bearer sk-ant-from-env"


def test_without_a_key_or_endpoint_it_says_what_to_set():
    with pytest.raises(ProviderError) as caught:
        get_provider("anthropic")

    assert caught.value.kind is ErrorKind.AUTH
    assert "ANTHROPIC_API_KEY" in caught.value.message


def test_retries_and_timeout_default_to_settings(settings, fake_anthropic):
    settings.AGENTDASH_PROVIDER_MAX_RETRIES = 1
    settings.AGENTDASH_PROVIDER_TIMEOUT = 42.0
    fake_anthropic.enqueue(
        *[error_response(500, "api_error", "boom", retry_after=TINY_RETRY_AFTER)] * 2
    )
    provider = provider_for(fake_anthropic)

    with pytest.raises(ProviderError) as caught:
        provider.complete(request())

    assert "persisted after 1 retry:" in caught.value.message
    assert fake_anthropic.requests[0].headers["x-stainless-read-timeout"] == "42.0"
