"""Claude models through the `anthropic` SDK's streaming Messages API."""

import logging
from typing import Any

import anthropic
from anthropic.types import RawMessageStreamEvent

from .base import (
    INPUT_ERROR,
    RAW_ARGUMENTS,
    Attempt,
    ModelReply,
    ModelRequest,
    SDKProvider,
    StopReason,
    TextCallback,
    ToolInputBuffer,
    Usage,
)
from .errors import (
    MALFORMED_STREAM_ERRORS,
    STATUS_OF_ERROR_TYPE,
    BrokenStream,
    error_for_connection,
    error_for_malformed_stream,
    error_for_status,
    error_for_timeout,
    raise_for_error_body,
    redact,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
_STOP_REASONS = {
    "end_turn": StopReason.END_TURN,
    "tool_use": StopReason.TOOL_USE,
    "max_tokens": StopReason.MAX_TOKENS,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "pause_turn": StopReason.PAUSE_TURN,
    "refusal": StopReason.REFUSAL,
    "model_context_window_exceeded": StopReason.CONTEXT_EXCEEDED,
}
# Deltas of what the reply is made of: text (shown as it comes) and tool input.
_CONTENT_DELTAS = {"text_delta", "input_json_delta"}
_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class AnthropicProvider(SDKProvider):
    name = "anthropic"
    label = "Anthropic"
    env_prefix = "ANTHROPIC"
    default_base_url = DEFAULT_BASE_URL
    client_class = anthropic.Anthropic

    def _stream_reply(
        self, attempt: Attempt, request: ModelRequest, on_text: TextCallback
    ) -> ModelReply:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [_outgoing_message(message) for message in request.messages],
        }
        # Sampling parameters and a forced tool_choice are left out on purpose: the
        # newest models reject them, and the API's defaults are what we want.
        if request.system:
            params["system"] = request.system
        if request.tools:
            params["tools"] = request.tools
        try:
            with attempt.client.messages.create(**params, stream=True) as stream:
                attempt.answered(stream.response.request.headers)
                raise_for_error_body(stream.response, self.endpoint.api_key)
                return _read_stream(stream, on_text, attempt)
        except anthropic.APIStatusError as err:
            detail = redact(err.api_message or str(err.body or err.message), self.endpoint.api_key)
            if err.status_code < 400:
                # An `error` event inside a stream that had begun with 200: its type says
                # what happened.
                status = STATUS_OF_ERROR_TYPE.get(err.type or "", 500)
                raise BrokenStream(status, f"{err.type}: {detail}") from err
            raise error_for_status(
                self.label,
                err.status_code,
                detail,
                retries=attempt.answered(err.response.request.headers),
                error_code=err.error_code,
            ) from err
        except anthropic.APITimeoutError as err:
            retries = attempt.answered(err.request.headers)
            raise error_for_timeout(self.label, self.endpoint.timeout, retries) from err
        except anthropic.APIConnectionError as err:
            detail = redact(str(err.__cause__ or err), self.endpoint.api_key)
            retries = attempt.answered(err.request.headers)
            raise error_for_connection(self.label, self.endpoint.base_url, detail, retries) from err
        except MALFORMED_STREAM_ERRORS as err:
            logger.warning("%s sent an unreadable stream", self.label, exc_info=True)
            raise error_for_malformed_stream(self.label, err) from err


def _outgoing_message(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API takes it: the same blocks, thinking included, minus
    the private keys a tool_use carries when its arguments were unusable."""
    content = message["content"]
    if isinstance(content, str):
        return message
    return {
        **message,
        "content": [
            {k: v for k, v in block.items() if k not in (INPUT_ERROR, RAW_ARGUMENTS)}
            if block.get("type") == "tool_use"
            else block
            for block in content
        ],
    }


def _read_stream(
    stream: anthropic.Stream[RawMessageStreamEvent], on_text: TextCallback, attempt: Attempt
) -> ModelReply:
    """Build the reply from the raw stream events, as plain dicts.

    The SDK's own accumulator (`messages.stream()`) raises on tool arguments that are
    not JSON and keeps arguments of any size in memory; bad model output must instead
    become an error the model reads, so the events are folded here.
    """
    model = ""
    usage: dict[str, int] = {}
    blocks: dict[int, dict[str, Any]] = {}
    tool_inputs: dict[int, ToolInputBuffer] = {}
    stop_reason: str | None = None
    finished = False
    for event in stream:
        if event.type == "message_start":
            model = event.message.model
            usage = _usage_counts(event.message.usage)
        elif event.type == "content_block_start":
            block = _block_dict(event.content_block)
            if block["type"] == "tool_use":
                tool_inputs[event.index] = ToolInputBuffer()
            blocks[event.index] = block
        elif event.type == "content_block_delta":
            attempt.content_started |= event.delta.type in _CONTENT_DELTAS
            _apply_delta(blocks[event.index], tool_inputs.get(event.index), event.delta, on_text)
        elif event.type == "content_block_stop" and event.index in tool_inputs:
            block = blocks[event.index]
            block.update(tool_inputs.pop(event.index).decode(block["name"]))
        elif event.type == "message_delta":
            stop_reason = event.delta.stop_reason
            # Counts on message_delta are running totals: they replace, never add.
            usage |= _usage_counts(event.usage)
        elif event.type == "message_stop":
            finished = True
    if not finished or stop_reason is None:
        raise BrokenStream(None)
    # A tool_use cut off by max_tokens never got its content_block_stop.
    for index, buffer in tool_inputs.items():
        blocks[index].update(buffer.decode(blocks[index]["name"]))
    # The API refuses an empty text block when the turn is sent back, and it can send one.
    content = [blocks[index] for index in sorted(blocks)]
    content = [block for block in content if block["type"] != "text" or block["text"]]
    return ModelReply(
        content=content,
        stop_reason=_stop_reason(stop_reason),
        usage=Usage(
            input_tokens=usage.get("input_tokens", 0),
            output_tokens=usage.get("output_tokens", 0),
            cache_read_tokens=usage.get("cache_read_input_tokens", 0),
            cache_write_tokens=usage.get("cache_creation_input_tokens", 0),
        ),
        model=model,
    )


def _block_dict(block: Any) -> dict[str, Any]:
    try:
        return block.to_dict()
    except UnicodeEncodeError:
        # pydantic cannot serialise a lone surrogate ("\ud800" in the JSON): take the
        # fields as they are; ModelReply replaces the surrogates.
        return {**vars(block), **(block.model_extra or {})}


def _apply_delta(
    block: dict[str, Any],
    tool_input: ToolInputBuffer | None,
    delta: Any,
    on_text: TextCallback,
) -> None:
    if delta.type == "text_delta":
        block["text"] += delta.text
        on_text(delta.text)
    elif delta.type == "input_json_delta" and tool_input is not None:
        tool_input.append(delta.partial_json)
    elif delta.type == "thinking_delta":
        block["thinking"] += delta.thinking
    elif delta.type == "signature_delta":
        block["signature"] = delta.signature
    # citations_delta and later kinds need nothing: we enable no feature that sends them.


def _usage_counts(usage: Any) -> dict[str, int]:
    """The counts a usage object carries; message_delta leaves out those that did not change."""
    return {
        name: value for name in _USAGE_FIELDS if (value := getattr(usage, name, None)) is not None
    }


def _stop_reason(raw: str) -> StopReason:
    if raw in _STOP_REASONS:
        return _STOP_REASONS[raw]
    # A newer API than this code: the reply is kept and the session ends as if the
    # model had finished, rather than looping on something we cannot interpret.
    logger.warning("Unknown Anthropic stop_reason %r: treated as end_turn", raw)
    return StopReason.END_TURN
