"""ProviderError, and how an HTTP failure of any LLM API becomes one an operator understands.

Both SDKs retry 408, 409, 429 and 5xx (and connection failures) themselves, with
exponential backoff that honours `retry-after`; SDKProvider.complete retries the same
failures when they arrive inside a stream that had begun (which the SDKs cannot), as
long as none of the reply had been streamed. By the time one of these errors is built,
the retries are spent, and the message says so.
"""

import json
import re
from collections.abc import Mapping
from enum import StrEnum

import httpx2


class ErrorKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    CONTEXT_EXCEEDED = "context_exceeded"
    CONNECTION = "connection"
    TIMEOUT = "timeout"


class ProviderError(Exception):
    """A model call that failed for good.

    `message` is written for an operator and never contains an API key; `retryable`
    says whether the same call could succeed later (a rate limit, an outage), as
    opposed to one that never will (a bad key, a request the API rejects).
    """

    def __init__(
        self, message: str, kind: ErrorKind, retryable: bool, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = ErrorKind(kind)
        self.retryable = retryable
        self.status_code = status_code

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.message!r}, kind={self.kind.value!r}, "
            f"retryable={self.retryable}, status_code={self.status_code})"
        )


# How APIs word "the prompt is longer than the context window": Anthropic ("prompt is
# too long: 210000 tokens > 200000 maximum"), OpenAI and vLLM ("maximum context length
# is 8192 tokens"), llama.cpp and others ("exceeds the context size").
_CONTEXT_OVERFLOW = re.compile(
    r"prompt is too long|context[ _](length|window|size)|maximum context|too many tokens",
    re.IGNORECASE,
)
_CONTEXT_OVERFLOW_CODES = {"context_length_exceeded", "model_context_window_exceeded"}

# Anthropic names the error in a stream's `error` event by type, not by status.
STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_DETAIL_LIMIT = 500  # a proxy may answer with a whole HTML page


def retries_taken(request_headers: Mapping[str, str]) -> int:
    """How many retries the SDK had made when it gave up: both SDKs number each attempt
    in this header, which is more truthful than max_retries (a server can say "don't")."""
    return int(request_headers.get("x-stainless-retry-count", "0"))


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _short(detail: str) -> str:
    detail = " ".join(detail.split())
    return detail if len(detail) <= _DETAIL_LIMIT else detail[:_DETAIL_LIMIT] + "..."


def _persisted(retries: int, streamed: bool) -> str:
    """How the retries went; `streamed` means the failure came after part of the reply
    had been streamed (and perhaps shown), where a retry would repeat it."""
    if streamed:
        return " in the middle of the reply, not retried because part of it had been streamed"
    if retries == 0:
        return ", not retried"  # retries were off, or the server said not to
    return f" persisted after {retries} {'retry' if retries == 1 else 'retries'}"


def _tried(retries: int) -> str:
    return "tried once" if retries == 0 else f"tried {retries + 1} times"


def is_context_overflow(status_code: int, detail: str, error_code: str | None = None) -> bool:
    if status_code == 413:  # the request itself is larger than the API accepts
        return True
    if status_code != 400:
        return False
    return error_code in _CONTEXT_OVERFLOW_CODES or bool(_CONTEXT_OVERFLOW.search(detail))


def error_for_status(
    label: str,
    status_code: int,
    detail: str,
    *,
    retries: int,
    error_code: str | None = None,
    streamed: bool = False,
) -> ProviderError:
    """The ProviderError for an HTTP error status (or its stream-event equivalent)."""
    detail = _short(detail)
    if is_context_overflow(status_code, detail, error_code):
        return ProviderError(
            f"The conversation no longer fits the model's context window "
            f"({label} answered {status_code}: {detail})",
            ErrorKind.CONTEXT_EXCEEDED,
            retryable=False,
            status_code=status_code,
        )
    if status_code == 429:
        kind, what = ErrorKind.RATE_LIMITED, "rate limit"
    elif status_code == 529:
        kind, what = ErrorKind.OVERLOADED, "overload"
    elif status_code in (408, 504):
        kind, what = ErrorKind.TIMEOUT, "timeout"
    elif status_code >= 500 or status_code == 409:
        kind, what = ErrorKind.SERVER_ERROR, "server error"
    elif status_code in (401, 403):
        return ProviderError(
            f"{label} refused the credentials ({status_code}): {detail}. Check the API key.",
            ErrorKind.AUTH,
            retryable=False,
            status_code=status_code,
        )
    else:
        return ProviderError(
            f"{label} rejected the request ({status_code}): {detail}",
            ErrorKind.BAD_REQUEST,
            retryable=False,
            status_code=status_code,
        )
    return ProviderError(
        f"{label} {what} ({status_code}){_persisted(retries, streamed)}: {detail}",
        kind,
        retryable=True,
        status_code=status_code,
    )


def error_for_timeout(label: str, timeout: float, retries: int) -> ProviderError:
    return ProviderError(
        f"{label} did not answer within {timeout:g} s ({_tried(retries)})",
        ErrorKind.TIMEOUT,
        retryable=True,
    )


def error_for_connection(label: str, base_url: str, detail: str, retries: int) -> ProviderError:
    return ProviderError(
        f"Could not reach {label} at {base_url} ({_tried(retries)}): {_short(detail)}",
        ErrorKind.CONNECTION,
        retryable=True,
    )


class BrokenStream(Exception):
    """A reply whose stream had begun (HTTP 200) failed before its end, by an error
    event or by the stream stopping short. The SDKs retry only failed responses, so
    SDKProvider.complete decides whether to retry this, then makes it a ProviderError."""

    def __init__(
        self, status_code: int | None, detail: str = "", error_code: str | None = None
    ) -> None:
        super().__init__(detail or "the stream stopped before the reply was complete")
        self.status_code = status_code  # as HTTP would have said it; None: cut short
        self.detail = detail
        self.error_code = error_code


def raise_for_error_body(response: httpx2.Response, secret: str | None) -> None:
    """Some gateways answer a streamed request with HTTP 200 and a plain JSON error
    (`{"error": {...}}`) where the event stream should be. Read as a stream it would be
    empty, a stream cut short: raise it as the error it says it is instead."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return
    try:
        error = json.loads(response.read()).get("error")
    except (ValueError, AttributeError):
        return  # not a JSON object: the stream reader reports what it makes of it
    if not isinstance(error, dict):
        return
    code = str(error.get("code") or "")
    # Anthropic names the error by type; vLLM and others put the status they mean in code.
    status = STATUS_OF_ERROR_TYPE.get(str(error.get("type")))
    status = status or (int(code) if code.isdigit() else 500)
    detail = redact(str(error.get("message") or error), secret)
    raise BrokenStream(status, detail, error_code=code or None)


def error_for_broken_stream(
    label: str, broken: BrokenStream, *, retries: int, streamed: bool
) -> ProviderError:
    if broken.status_code is not None:
        return error_for_status(
            label,
            broken.status_code,
            broken.detail,
            retries=retries,
            error_code=broken.error_code,
            streamed=streamed,
        )
    how = "not retried because part of it had been streamed" if streamed else _tried(retries)
    return ProviderError(
        f"{label} closed the stream before the reply was complete ({how})",
        ErrorKind.CONNECTION,
        retryable=True,
    )


# What reading a stream the API garbled raises: bad JSON or bytes (ValueError), events
# missing fields or naming blocks never started (KeyError, AttributeError, IndexError),
# fields of the wrong type (TypeError).
MALFORMED_STREAM_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError)


def error_for_malformed_stream(label: str, error: Exception) -> ProviderError:
    """The API (or something between it and us) sent a reply that is not its protocol."""
    return ProviderError(
        f"{label} sent a reply that could not be read ({type(error).__name__}: "
        f"{_short(str(error))})",
        ErrorKind.SERVER_ERROR,
        retryable=True,
    )
