"""Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LiteLLM, ...) through Chat
Completions, converting to and from the Anthropic-format conversation at this edge."""

import json
import logging
import uuid
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from .base import (
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
    BrokenStream,
    error_for_connection,
    error_for_malformed_stream,
    error_for_status,
    error_for_timeout,
    raise_for_error_body,
    redact,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_FINISH_REASONS = {
    "stop": StopReason.END_TURN,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "length": StopReason.MAX_TOKENS,
    "content_filter": StopReason.REFUSAL,
}


class OpenAICompatibleProvider(SDKProvider):
    name = "openai"
    label = "OpenAI-compatible API"
    env_prefix = "OPENAI"
    default_base_url = DEFAULT_BASE_URL
    client_class = openai.OpenAI

    def _stream_reply(
        self, attempt: Attempt, request: ModelRequest, on_text: TextCallback
    ) -> ModelReply:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.system, request.messages),
            "max_completion_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # No temperature, top_p or forced tool_choice: the server's defaults apply.
        if request.tools:
            params["tools"] = [to_openai_tool(tool) for tool in request.tools]
        try:
            with attempt.client.chat.completions.create(**params) as stream:
                attempt.answered(stream.response.request.headers)
                raise_for_error_body(stream.response, self.endpoint.api_key)
                return _read_stream(stream, on_text, attempt)
        except openai.APIStatusError as err:
            detail = redact(_api_message(err.body) or err.message, self.endpoint.api_key)
            retries = attempt.answered(err.response.request.headers)
            raise error_for_status(
                self.label, err.status_code, detail, retries=retries, error_code=err.code
            ) from err
        except openai.APITimeoutError as err:
            retries = attempt.answered(err.request.headers)
            raise error_for_timeout(self.label, self.endpoint.timeout, retries) from err
        except openai.APIConnectionError as err:
            detail = redact(str(err.__cause__ or err), self.endpoint.api_key)
            retries = attempt.answered(err.request.headers)
            raise error_for_connection(self.label, self.endpoint.base_url, detail, retries) from err
        except openai.APIError as err:
            # An error object inside a stream that had begun with 200. vLLM and others
            # put the HTTP status they mean in `code`.
            status = int(err.code) if err.code and err.code.isdigit() else 500
            detail = redact(err.message, self.endpoint.api_key)
            raise BrokenStream(status, detail, error_code=err.code) from err
        except MALFORMED_STREAM_ERRORS as err:
            logger.warning("%s sent an unreadable stream", self.label, exc_info=True)
            raise error_for_malformed_stream(self.label, err) from err


def _api_message(body: object) -> str | None:
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else None


def to_openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "parameters": tool["input_schema"],
        },
    }


def to_openai_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Anthropic-format conversation as Chat Completions messages."""
    converted: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            converted.append({"role": message["role"], "content": content})
        elif message["role"] == "assistant":
            converted.append(_assistant_message(content))
        else:
            converted.extend(_user_messages(content))
    return converted


def _assistant_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    # Thinking blocks are Anthropic's alone and are dropped here.
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    tool_calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {
                "name": block["name"],
                # Arguments that were not valid JSON go back exactly as the model wrote
                # them, so that its next turn sees its own mistake.
                "arguments": block.get(RAW_ARGUMENTS) or json.dumps(block["input"]),
            },
        }
        for block in blocks
        if block["type"] == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _user_messages(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A user turn: each tool_result becomes a `tool` message, which must directly follow
    the assistant's tool calls, so any text of the turn comes after them."""
    converted = [
        {
            "role": "tool",
            "tool_call_id": block["tool_use_id"],
            "content": _tool_result_text(block),
        }
        for block in blocks
        if block["type"] == "tool_result"
    ]
    text = "\n\n".join(block["text"] for block in blocks if block["type"] == "text")
    if text:
        converted.append({"role": "user", "content": text})
    return converted


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    if isinstance(content, list):
        content = "\n".join(part["text"] for part in content if part.get("type") == "text")
    # Chat Completions has no is_error flag: the model has to read it.
    return f"Error: {content}" if block.get("is_error") else content


def _read_stream(
    stream: openai.Stream[ChatCompletionChunk], on_text: TextCallback, attempt: Attempt
) -> ModelReply:
    model = ""
    text: list[str] = []
    refusal: list[str] = []
    calls: dict[int, dict[str, Any]] = {}  # by the index the server gives each call
    arguments: dict[int, ToolInputBuffer] = {}
    finish_reason: str | None = None
    usage = Usage()
    for chunk in stream:
        model = chunk.model or model
        if chunk.usage is not None:  # the last chunk, with include_usage, has no choices
            usage = _usage(chunk.usage)
        for choice in chunk.choices[:1]:
            delta = choice.delta
            # Content a retry would repeat: text is shown as it comes.
            attempt.content_started |= bool(delta.content or delta.refusal or delta.tool_calls)
            if delta.content:
                text.append(delta.content)
                on_text(delta.content)
            if delta.refusal:
                refusal.append(delta.refusal)
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": ""})
                arguments.setdefault(call.index, ToolInputBuffer())
                entry["id"] = entry["id"] or call.id
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    arguments[call.index].append(call.function.arguments or "")
            finish_reason = choice.finish_reason or finish_reason
    if finish_reason is None:  # every choice ends with one: the stream was cut short
        raise BrokenStream(None)
    content: list[dict[str, Any]] = []
    if text or refusal:
        content.append({"type": "text", "text": "".join(text + refusal)})
    for index in sorted(calls):
        call = calls[index]
        content.append(
            {
                "type": "tool_use",
                # A few servers leave ids out; the conversation needs one per call.
                "id": call["id"] or f"call_{uuid.uuid4().hex[:24]}",
                "name": call["name"],
                **arguments[index].decode(call["name"]),
            }
        )
    return ModelReply(
        content=content,
        stop_reason=_stop_reason(finish_reason, has_calls=bool(calls), refused=bool(refusal)),
        usage=usage,
        model=model,
    )


def _usage(usage: Any) -> Usage:
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    # prompt_tokens counts cached tokens too; they are priced apart, as cache reads.
    return Usage(
        input_tokens=(usage.prompt_tokens or 0) - cached,
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=cached,
    )


def _stop_reason(finish_reason: str, *, has_calls: bool, refused: bool) -> StopReason:
    if refused:
        return StopReason.REFUSAL
    # Some servers (older Ollama) say "stop" even when the reply holds tool calls.
    if has_calls and finish_reason == "stop":
        return StopReason.TOOL_USE
    if finish_reason in _FINISH_REASONS:
        return _FINISH_REASONS[finish_reason]
    logger.warning("Unknown finish_reason %r: treated as end_turn", finish_reason)
    return StopReason.END_TURN
