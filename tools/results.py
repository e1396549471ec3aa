"""What a tool call was, what came of it, and how that reads to a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, overload

from pydantic_core import to_json, to_jsonable_python

DEFAULT_MAX_OBSERVATION_CHARS = 100_000


class ExecutionStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    VALIDATION_ERROR = "validation_error"
    PERMISSION_DENIED = "permission_denied"
    REJECTED = "rejected"  # an operator said no
    EXPIRED = "expired"  # nobody decided in time
    INTERRUPTED = "interrupted"  # the process died while the call ran


# What the model reads for a failure that came with no message of its own.
_DEFAULT_ERRORS = {
    ExecutionStatus.ERROR: "The tool failed.",
    ExecutionStatus.TIMEOUT: "The tool timed out.",
    ExecutionStatus.VALIDATION_ERROR: "The arguments were invalid.",
    ExecutionStatus.PERMISSION_DENIED: "This call is not permitted; it was not run.",
    ExecutionStatus.REJECTED: "An operator rejected this call; it was not run.",
    ExecutionStatus.EXPIRED: "Nobody approved this call in time; it was not run.",
    ExecutionStatus.INTERRUPTED: "The call was interrupted; its outcome is unknown.",
}


@dataclass(slots=True)
class ToolCall:
    """One call a model asked for: its id (the provider's tool-use id), tool name, arguments."""

    id: str | None
    name: str
    arguments: Any


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool may return to say more than its value: `value` becomes the result's
    `result`, and `metadata` (say a sandbox's exit_code and limit_hit) its `metadata`."""

    value: Any
    metadata: dict[str, Any] = field(default_factory=dict)


def render(value: Any) -> str:
    """A tool's return value as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    # A value JSON cannot express reads as its str(); bytes inside others are not text.
    return to_json(value, fallback=str, bytes_mode="base64").decode()


def _jsonable(value: Any) -> Any:
    """Strict JSON for storage (PostgreSQL's jsonb refuses NaN): bytes as base64."""
    return to_jsonable_python(value, fallback=str, bytes_mode="base64", inf_nan_mode="null")


@dataclass(slots=True, kw_only=True)
class ExecutionResult:
    """The outcome of one call. `truncated` says whether `to_observation()` cuts the text."""

    status: ExecutionStatus
    tool_name: str
    result: Any = None
    error: str | None = None
    duration_ms: float = 0.0  # measured on the monotonic clock
    parameters: Any = field(default_factory=dict)  # the arguments the tool actually received
    call_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. exit_code, limit_hit
    max_observation_chars: int = DEFAULT_MAX_OBSERVATION_CHARS
    truncated: bool = field(init=False)

    def __post_init__(self) -> None:
        self.truncated = len(self._text()) > self.max_observation_chars

    @property
    def is_error(self) -> bool:
        return self.status != ExecutionStatus.SUCCESS

    def _text(self) -> str:
        if self.status == ExecutionStatus.SUCCESS:
            return render(self.result)
        return self.error or _DEFAULT_ERRORS[self.status]

    def to_observation(self, max_chars: int | None = None) -> str:
        """The text the model reads, at most `max_chars` (default: the tool's cap) long."""
        text = self._text() or "(no output)"
        limit = self.max_observation_chars if max_chars is None else max_chars
        if len(text) <= limit:
            return text
        marker = f"\n[... truncated: the full output has {len(text):,} characters]"
        if len(marker) >= limit:  # a cap too small for the marker is still a cap
            return text[:limit]
        return text[: limit - len(marker)] + marker

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; `ExecutionResult.from_dict` reads it back."""
        return {
            "status": str(self.status),
            "tool_name": self.tool_name,
            "result": _jsonable(self.result),
            "error": self.error,
            "duration_ms": self.duration_ms,
            "parameters": _jsonable(self.parameters),
            "call_id": self.call_id,
            "metadata": _jsonable(self.metadata),
            "max_observation_chars": self.max_observation_chars,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionResult:
        # `truncated` is derived from the rest, so it is recomputed rather than trusted.
        return cls(
            status=ExecutionStatus(data["status"]),
            tool_name=data["tool_name"],
            result=data.get("result"),
            error=data.get("error"),
            duration_ms=data.get("duration_ms", 0.0),
            parameters=data.get("parameters", {}),
            call_id=data.get("call_id"),
            metadata=data.get("metadata", {}),
            max_observation_chars=data.get("max_observation_chars", DEFAULT_MAX_OBSERVATION_CHARS),
        )


@overload
def format_results_for_llm(
    calls: list[ToolCall], results: list[ExecutionResult], provider: Literal["anthropic"] = ...
) -> dict[str, Any]: ...
@overload
def format_results_for_llm(
    calls: list[ToolCall], results: list[ExecutionResult], provider: Literal["openai"]
) -> list[dict[str, Any]]: ...
def format_results_for_llm(
    calls: list[ToolCall], results: list[ExecutionResult], provider: str = "anthropic"
) -> dict[str, Any] | list[dict[str, Any]]:
    """Results as the model expects them back.

    "anthropic": one user message holding a `tool_result` block per call.
    "openai": one `role: tool` message per call (Chat Completions).
    """
    if len(calls) != len(results):
        raise ValueError(f"{len(calls)} calls but {len(results)} results")
    pairs = list(zip(calls, results, strict=True))
    if provider == "anthropic":
        return {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": result.to_observation(),
                    "is_error": result.is_error,
                }
                for call, result in pairs
            ],
        }
    if provider == "openai":
        return [
            {"role": "tool", "tool_call_id": call.id, "content": result.to_observation()}
            for call, result in pairs
        ]
    raise ValueError(f"unknown provider {provider!r}; expected 'anthropic' or 'openai'")
