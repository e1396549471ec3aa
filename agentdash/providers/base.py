"""The one small interface every LLM provider implements, and the values it exchanges.

The provider-neutral conversation format is Anthropic's Messages format: a list of
`{"role": "user" | "assistant", "content": [block, ...]}` where blocks are plain dicts
(`text`, `tool_use`, `tool_result`, `thinking`, ...). Providers that speak another wire
format convert at their edge, so the runner and the database only ever see this one.
"""

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import httpx2
from django.conf import settings

from .errors import (
    BrokenStream,
    ErrorKind,
    ProviderError,
    error_for_broken_stream,
    retries_taken,
)

logger = logging.getLogger(__name__)

# A text delta, as the model streams it; the web layer shows these live.
TextCallback = Callable[[str], None]


class StopReason(StrEnum):
    """Why the model stopped, and so what the runner does next."""

    END_TURN = "end_turn"  # the model is done: the session completes
    TOOL_USE = "tool_use"  # run the tool calls, then call the model again
    MAX_TOKENS = "max_tokens"  # the reply was cut at max_tokens
    STOP_SEQUENCE = "stop_sequence"  # a stop sequence ended the reply
    PAUSE_TURN = "pause_turn"  # call again with the reply appended, unchanged
    REFUSAL = "refusal"  # the model declined: end the session with a clear error
    CONTEXT_EXCEEDED = "context_exceeded"  # the conversation no longer fits: end it clearly


@dataclass(frozen=True)
class Usage:
    """Tokens one model call used. `input_tokens` excludes cached input, which is
    counted (and priced) separately as cache reads and cache writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True)
class ModelRequest:
    model: str
    messages: list[dict[str, Any]]
    system: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)  # Anthropic tool dicts
    max_tokens: int = 4096


# JSON can carry lone surrogates ("\ud800"), which no UTF-8 encoder, database or
# channel layer accepts, and NUL ("\u0000"), which PostgreSQL's jsonb and text refuse: a
# model (or a server) sending one must not break the session.
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


def storable(value: Any) -> Any:
    """`value` (JSON-shaped) with each lone surrogate and NUL replaced by U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class ModelReply:
    content: list[dict[str, Any]]  # Anthropic-format blocks, thinking kept verbatim
    stop_reason: StopReason
    usage: Usage
    model: str

    def __post_init__(self) -> None:
        # Every provider's reply passes here on its way to the database and the pages.
        object.__setattr__(self, "content", storable(self.content))
        object.__setattr__(self, "model", storable(self.model))

    @property
    def text(self) -> str:
        return "".join(block["text"] for block in self.content if block.get("type") == "text")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [block for block in self.content if block.get("type") == "tool_use"]


class Provider(Protocol):
    name: str

    def complete(self, request: ModelRequest, on_text: TextCallback | None = None) -> ModelReply:
        """One model call: stream text deltas to `on_text`, return the whole reply.

        Raises ProviderError when the call fails for good; malformed model output
        (bad tool arguments) is never an exception, see `decode_tool_input`."""
        ...


def guarded(on_text: TextCallback | None) -> TextCallback:
    """`on_text` made safe to call for every delta of one reply. A broken live view
    must not cost the reply the model already produced (and that was paid for): its
    first failure is logged and the rest of the reply is simply not shown to it."""
    if on_text is None:
        return _ignore
    callback = on_text
    broken = False

    def emit(delta: str) -> None:
        nonlocal broken
        if broken or not delta:
            return
        try:
            callback(storable(delta))
        except Exception:
            broken = True
            logger.exception("The on_text callback failed: the rest of this reply skips it")

    return emit


def _ignore(delta: str) -> None:
    pass


# Private keys a provider adds to a tool_use block whose arguments could not be used.
# They are for the runner and the audit log; no API ever receives them as such.
INPUT_ERROR = "input_error"
RAW_ARGUMENTS = "raw_arguments"
# How much of oversized arguments is kept in raw_arguments, for the audit log.
_OVERSIZE_KEPT_CHARS = 2_000
_JSON_TYPE_NAMES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def max_tool_input_bytes() -> int:
    return int(settings.AGENTDASH_MAX_TOOL_INPUT_BYTES)


def decode_tool_input(tool_name: str, raw: str, size: int | None = None) -> dict[str, Any]:
    """The `input` of a tool_use block from the model's raw JSON arguments.

    Bad arguments are the model's mistake, not a failed call: they come back as
    `input: {}` plus `input_error` (a message the model can act on) and `raw_arguments`
    (what it sent), and the runner turns that into an error result the model reads.
    `size` is the full size in bytes when `raw` holds only a kept prefix of it.
    """
    limit = max_tool_input_bytes()
    size = len(raw.encode("utf-8", "surrogatepass")) if size is None else size
    if size > limit:
        return {
            "input": {},
            INPUT_ERROR: (
                f"The arguments for {tool_name} were {size:,} bytes, over the limit of "
                f"{limit:,} bytes, and were not used. Send smaller arguments, for example "
                "by splitting large content across several calls."
            ),
            RAW_ARGUMENTS: raw[:_OVERSIZE_KEPT_CHARS] + f"... [cut: {size:,} bytes in all]",
        }
    if not raw.strip():
        return {"input": {}}  # some servers send "" for a call without arguments
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        reason = f"are not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    else:
        if isinstance(value, dict):
            return {"input": value}
        reason = f"are a JSON {_JSON_TYPE_NAMES[type(value)]}, not an object"
    return {
        "input": {},
        INPUT_ERROR: f"The arguments for {tool_name} {reason}. Send one JSON object.",
        RAW_ARGUMENTS: raw,
    }


class ToolInputBuffer:
    """Collects a tool call's streamed JSON arguments, holding at most the size limit
    in memory however much the model sends (a 100 MB argument is counted, not kept)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._limit = max_tool_input_bytes()

    def append(self, piece: str) -> None:
        was_within_limit = self._size <= self._limit
        self._size += len(piece.encode("utf-8", "surrogatepass"))
        if self._size <= self._limit:
            self._parts.append(piece)
        elif was_within_limit:  # first piece over the limit: keep a prefix for the audit
            self._parts = [("".join(self._parts) + piece)[:_OVERSIZE_KEPT_CHARS]]

    def decode(self, tool_name: str) -> dict[str, Any]:
        return decode_tool_input(tool_name, "".join(self._parts), size=self._size)


# Local servers (Ollama, vLLM) and some gateways need no key, but both SDKs insist on one.
KEYLESS_PLACEHOLDER = "no-key-configured"


@dataclass(frozen=True)
class Endpoint:
    """Where and how an API provider calls: explicit options, else the SDK's usual
    environment variables, else settings. `repr` leaves the key out."""

    api_key: str | None = field(repr=False)
    base_url: str
    max_retries: int
    timeout: float


def resolve_endpoint(
    env_prefix: str,
    default_base_url: str,
    *,
    api_key: str | None,
    base_url: str | None,
    max_retries: int | None,
    timeout: float | None,
) -> Endpoint:
    """Raises ProviderError(kind=auth) when there is neither a key nor an endpoint of
    one's own (which may need no key), since every call would then fail."""
    api_key = api_key or os.environ.get(f"{env_prefix}_API_KEY") or None
    base_url = base_url or os.environ.get(f"{env_prefix}_BASE_URL") or None
    if api_key is None and base_url is None:
        raise ProviderError(
            f"No API key is configured: set {env_prefix}_API_KEY, or {env_prefix}_BASE_URL "
            "for a gateway or local server that needs none.",
            ErrorKind.AUTH,
            retryable=False,
        )
    return Endpoint(
        api_key=api_key,
        base_url=base_url or default_base_url,
        max_retries=settings.AGENTDASH_PROVIDER_MAX_RETRIES if max_retries is None else max_retries,
        timeout=settings.AGENTDASH_PROVIDER_TIMEOUT if timeout is None else timeout,
    )


# The longest wait before a retry SDKProvider makes itself, as the SDKs cap theirs.
MAX_RETRY_DELAY_SECONDS = 8.0


def retry_delay(retry: int) -> float:
    """Seconds to wait before retry number `retry` (1 for the first) of one call."""
    first = max(settings.AGENTDASH_PROVIDER_RETRY_DELAY, 0.0)
    delay = min(first * 2 ** (retry - 1), MAX_RETRY_DELAY_SECONDS)
    # Up to a quarter less at random, so that sessions hit together do not retry together.
    return delay * (1 - 0.25 * random.random())  # noqa: S311 (jitter, not a secret)


@dataclass
class Attempt:
    """One request of a model call, as SDKProvider.complete's retry loop needs it."""

    client: Any  # the SDK client, allowed only the retries the call has left
    retries: int  # retries made for the call so far; `answered` adds the SDK's for this one
    # Text or tool input arrived: it may have been shown, and a retry would repeat it.
    content_started: bool = False

    def answered(self, request_headers: Mapping[str, str]) -> int:
        """Count the retries the SDK made before the response it streamed or gave up on."""
        self.retries += retries_taken(request_headers)
        return self.retries


class SDKProvider:
    """A provider that calls an HTTP API through its vendor's SDK client: where and how
    it calls comes from `resolve_endpoint`, under the SDK's own environment variables."""

    label: ClassVar[str]  # how messages name the API: "Anthropic"
    env_prefix: ClassVar[str]  # "ANTHROPIC" reads ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
    default_base_url: ClassVar[str]
    client_class: ClassVar[Callable[..., Any]]  # anthropic.Anthropic, openai.OpenAI

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.endpoint = resolve_endpoint(
            self.env_prefix,
            self.default_base_url,
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
        )
        self._client = self.client_class(
            api_key=self.endpoint.api_key or KEYLESS_PLACEHOLDER,
            base_url=self.endpoint.base_url,
            max_retries=self.endpoint.max_retries,
            timeout=self.endpoint.timeout,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint!r})"

    def complete(self, request: ModelRequest, on_text: TextCallback | None = None) -> ModelReply:
        """See Provider.complete. A stream that begins (HTTP 200) and then fails with a
        retryable error, or stops short, before any content arrived is retried like a
        429 or 5xx response, within the same budget of retries; after content arrived it
        is not, since the caller may already have shown that part of the reply."""
        emit = guarded(on_text)  # once: a callback that failed stays skipped on a retry
        budget = self.endpoint.max_retries
        retries = 0
        while True:
            attempt = Attempt(self._client.with_options(max_retries=budget - retries), retries)
            try:
                return self._stream_reply(attempt, request, emit)
            except (BrokenStream, httpx2.TransportError) as err:
                # A transport error escaping the SDK means the connection broke mid-stream.
                broken = err if isinstance(err, BrokenStream) else BrokenStream(None)
                error = error_for_broken_stream(
                    self.label, broken, retries=attempt.retries, streamed=attempt.content_started
                )
                if attempt.content_started or not error.retryable or attempt.retries >= budget:
                    raise error from err
                retries = attempt.retries + 1
                delay = retry_delay(retries)
                logger.warning(
                    "%s: %s; retry %d of %d in %.2f s", self.label, broken, retries, budget, delay
                )
                time.sleep(delay)

    def _stream_reply(
        self, attempt: Attempt, request: ModelRequest, on_text: TextCallback
    ) -> ModelReply:
        """One request through `attempt.client`. Raises BrokenStream when the stream
        failed after it began (setting `attempt.content_started` when it delivered any
        content first) and ProviderError for any other failure."""
        raise NotImplementedError


def configured_reason(env_prefix: str) -> str | None:
    """Why an API provider can be used here, or None when it cannot."""
    if os.environ.get(f"{env_prefix}_API_KEY"):
        return f"{env_prefix}_API_KEY is set."
    if base_url := os.environ.get(f"{env_prefix}_BASE_URL"):
        return f"{env_prefix}_BASE_URL is set ({base_url}), with no API key."
    return None
