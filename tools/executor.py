"""Running tool calls: validate, police, approve, run under a timeout, and report.

`ToolExecutor.execute` never raises for anything a model, a tool or a hook does: every
outcome is an `ExecutionResult`. Only the caller's own cancellation propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any, Literal, cast

from tools.arguments import ToolValidationError
from tools.registry import ToolRegistry
from tools.results import (
    DEFAULT_MAX_OBSERVATION_CHARS,
    ExecutionResult,
    ExecutionStatus,
    ToolCall,
    ToolOutput,
)
from tools.tool import Tool

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 10

type MaybeAwaitable[T] = T | Awaitable[T]


class PermissionDeniedError(Exception):
    """Raised by a before hook, or by a tool itself, to refuse a call (PERMISSION_DENIED)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """An approval gate's answer. Approved arguments may be edited; they are validated again."""

    approve: bool
    reason: str = ""
    edited_arguments: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """One step of a streamed batch: a call started, or a call completed with its result."""

    kind: Literal["start", "complete"]
    call: ToolCall
    result: ExecutionResult | None = None


ApprovalGate = Callable[[ToolCall], MaybeAwaitable[Decision]]
# May return rewritten arguments, or raise PermissionDeniedError to refuse the call.
BeforeHook = Callable[[ToolCall, Tool], MaybeAwaitable[dict[str, Any] | None]]
AfterHook = Callable[[ToolCall, ExecutionResult], MaybeAwaitable[None]]
OnStart = Callable[[ToolCall], MaybeAwaitable[None]]
OnComplete = Callable[[ToolCall, ExecutionResult], MaybeAwaitable[None]]


class ToolExecutor:
    """Runs calls against a registry: unknown tool → validation → before hooks → approval
    → the function under a timeout → after hooks.

    Confirmation-required tools ask `approval_gate`; without one they run only when the
    caller passes `context={"confirmed": True}`. A before hook may rewrite the arguments
    (validated again) or raise PermissionDeniedError. A hook that fails otherwise is logged
    and noted in `result.metadata["hook_errors"]`; the call goes on.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        approval_gate: ApprovalGate | None = None,
        before_hooks: Sequence[BeforeHook] = (),
        after_hooks: Sequence[AfterHook] = (),
        default_timeout: float | None = None,
    ) -> None:
        self._registry = registry
        self._approval_gate = approval_gate
        self._before_hooks = tuple(before_hooks)
        self._after_hooks = tuple(after_hooks)
        self._default_timeout = default_timeout  # for tools whose timeout_seconds is None

    async def execute(
        self,
        tool_name: str,
        arguments: Any,
        context: Mapping[str, Any] | None = None,
        *,
        call_id: str | None = None,
    ) -> ExecutionResult:
        """Run one call; whatever happens, the outcome is the returned result."""
        call = ToolCall(id=call_id, name=tool_name, arguments=arguments)
        return await self._execute(call, context)

    async def execute_many(
        self,
        calls: Iterable[ToolCall],
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        *,
        context: Mapping[str, Any] | None = None,
        on_start: OnStart | None = None,
        on_complete: OnComplete | None = None,
    ) -> list[ExecutionResult]:
        """Run calls at most `max_concurrency` at a time; results come in the calls' order.

        One call's failure never cancels another. `on_start(call)` and
        `on_complete(call, result)` are told as each call starts and completes.
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        calls = list(calls)
        results: list[ExecutionResult | None] = [None] * len(calls)
        # A few workers sharing one iterator cost far less than a task per call, and each
        # call is taken by exactly one worker since asyncio switches only at an await.
        pending = iter(enumerate(calls))

        async def worker() -> None:
            for index, call in pending:
                if on_start is not None:
                    await _call_safely("on_start", on_start, call)
                results[index] = result = await self._execute(call, context)
                if on_complete is not None:
                    await _call_safely("on_complete", on_complete, call, result)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(max_concurrency, len(calls))):
                group.create_task(worker())
        return cast(list[ExecutionResult], results)  # every slot is filled by now

    async def stream(
        self,
        calls: Iterable[ToolCall],
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[ToolEvent]:
        """Run calls as `execute_many` does, yielding a ToolEvent as each starts and completes.

        Leaving the loop early cancels the calls still running.
        """
        events: asyncio.Queue[ToolEvent | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await self.execute_many(
                    calls,
                    max_concurrency,
                    context=context,
                    on_start=lambda call: events.put_nowait(ToolEvent("start", call)),
                    on_complete=lambda call, result: events.put_nowait(
                        ToolEvent("complete", call, result)
                    ),
                )
            finally:
                events.put_nowait(None)

        task = asyncio.create_task(run())
        try:
            while (event := await events.get()) is not None:
                yield event
            await task  # surfaces a failure of the batch itself, should there ever be one
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait([task])

    async def _execute(self, call: ToolCall, context: Mapping[str, Any] | None) -> ExecutionResult:
        hook_errors: list[str] = []
        try:
            result = await self._run(call, context, hook_errors)
        except Exception as failure:  # a bug here must still become a result, not a crash
            logger.exception("executing %s failed unexpectedly", call.name)
            result = ExecutionResult(
                status=ExecutionStatus.ERROR,
                tool_name=call.name,
                error=f"Internal error while executing {call.name}: {failure!r}",
                parameters=call.arguments,
                call_id=call.id,
            )
        for hook in self._after_hooks:
            if error := await _call_safely("after hook", hook, call, result):
                hook_errors.append(error)
        if hook_errors:
            result.metadata["hook_errors"] = hook_errors
        return result

    async def _run(
        self, call: ToolCall, context: Mapping[str, Any] | None, hook_errors: list[str]
    ) -> ExecutionResult:
        started = perf_counter()
        tool = self._registry.get(call.name)
        try:
            if tool is None:
                names = ", ".join(t.name for t in self._registry.list_tools()) or "none"
                error = f"Unknown tool {call.name!r}. Available tools: {names}."
                raise _Refusal(ExecutionStatus.ERROR, error)
            arguments = _validated(tool, call.arguments)
            if self._before_hooks or tool.requires_confirmation:
                call = replace(call, arguments=arguments)  # hooks and approvers see what will run
                if self._before_hooks:
                    call = await self._police(call, tool, hook_errors)
                if tool.requires_confirmation:
                    call = await self._approve(call, tool, context)
                    started = perf_counter()  # an operator's thinking time is not the tool's
                arguments = call.arguments
        except _Refusal as refusal:
            return _outcome(
                call, tool, started, refusal.status, error=str(refusal), metadata=refusal.metadata
            )
        return await self._call(tool, arguments, call, started)

    async def _police(self, call: ToolCall, tool: Tool, hook_errors: list[str]) -> ToolCall:
        """The call as the before hooks leave it; raises _Refusal when one denies it."""
        for hook in self._before_hooks:
            try:
                rewritten = await _resolve(hook(call, tool))
            except PermissionDeniedError as denied:
                error = str(denied) or f"A policy refused this call to {tool.name}."
                raise _Refusal(ExecutionStatus.PERMISSION_DENIED, error) from None
            except Exception as failure:
                hook_errors.append(_failure_note("before hook", hook, failure))
                continue
            if rewritten is not None:
                arguments = _validated(tool, rewritten, "rewritten by a hook: ")
                call = replace(call, arguments=arguments)
        return call

    async def _approve(
        self, call: ToolCall, tool: Tool, context: Mapping[str, Any] | None
    ) -> ToolCall:
        """The call as approved (perhaps edited); raises _Refusal unless it is approved."""
        if self._approval_gate is None:
            if context and context.get("confirmed") is True:
                return call
            error = f"{tool.name} requires confirmation, and this call was not confirmed; "
            raise _Refusal(ExecutionStatus.PERMISSION_DENIED, error + "it was not run.")
        try:
            decision = await _resolve(self._approval_gate(call))
            if not isinstance(decision, Decision):
                raise TypeError(f"the approval gate returned {decision!r}, not a Decision")
        except Exception as failure:  # no decision is never an approval
            logger.exception("the approval gate failed for %s", tool.name)
            error = f"The approval gate failed ({failure!r}); the call was not run."
            raise _Refusal(ExecutionStatus.ERROR, error) from None
        if not decision.approve:
            reason = f": {decision.reason}" if decision.reason else "."
            raise _Refusal(ExecutionStatus.REJECTED, f"An operator rejected this call{reason}")
        if decision.edited_arguments is None:
            return call
        edited = _validated(tool, decision.edited_arguments, "edited by the approver: ")
        return replace(call, arguments=edited)

    async def _call(
        self, tool: Tool, arguments: dict[str, Any], call: ToolCall, started: float
    ) -> ExecutionResult:
        seconds = self._default_timeout if tool.timeout_seconds is None else tool.timeout_seconds
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                if tool.is_async:
                    value = await tool.function(**arguments)
                else:
                    value = await asyncio.to_thread(tool.function, **arguments)
                    if inspect.isawaitable(value):  # a plain callable that returned a coroutine
                        value = await value
        except TimeoutError as timeout:
            if not deadline.expired():  # the tool's own TimeoutError, not ours
                return _failed(call, tool, arguments, started, timeout)
            # An async tool is cancelled; a thread cannot be killed and may still be running.
            fate = "it was cancelled" if tool.is_async else "its thread may still be running"
            error = f"{tool.name} did not finish within {seconds:g} s; {fate}."
            return _outcome(
                call, tool, started, ExecutionStatus.TIMEOUT, error=error, parameters=arguments
            )
        except PermissionDeniedError as denied:
            return _outcome(
                call,
                tool,
                started,
                ExecutionStatus.PERMISSION_DENIED,
                error=str(denied) or f"{tool.name} refused this call.",
                parameters=arguments,
            )
        # SystemExit too: a tool calling sys.exit() must not end the agent's process.
        except (Exception, SystemExit) as failure:
            return _failed(call, tool, arguments, started, failure)
        except asyncio.CancelledError as cancelled:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller is cancelling us: that is theirs to see
            return _failed(call, tool, arguments, started, cancelled)
        metadata = None
        if type(value) is ToolOutput:
            value, metadata = value.value, dict(value.metadata)
        return _outcome(
            call,
            tool,
            started,
            ExecutionStatus.SUCCESS,
            result=value,
            parameters=arguments,
            metadata=metadata,
        )


def _outcome(
    call: ToolCall,
    tool: Tool | None,
    started: float,
    status: ExecutionStatus,
    *,
    result: Any = None,
    error: str | None = None,
    parameters: Any = None,
    metadata: dict[str, Any] | None = None,
) -> ExecutionResult:
    return ExecutionResult(
        status=status,
        tool_name=call.name,
        result=result,
        error=error,
        duration_ms=(perf_counter() - started) * 1000,
        parameters=call.arguments if parameters is None else parameters,
        call_id=call.id,
        metadata={} if metadata is None else metadata,
        max_observation_chars=(
            DEFAULT_MAX_OBSERVATION_CHARS if tool is None else tool.max_observation_chars
        ),
    )


class _Refusal(Exception):
    """A call stopped before it ran: carries the status and words of its result."""

    def __init__(
        self, status: ExecutionStatus, error: str, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.metadata = metadata


def _validated(tool: Tool, arguments: object, origin: str = "") -> dict[str, Any]:
    """The tool's keyword arguments; `origin` says whose arguments failed, if not the model's."""
    try:
        return tool.coerce(arguments)
    except ToolValidationError as invalid:
        status = ExecutionStatus.VALIDATION_ERROR
        raise _Refusal(status, f"{origin}{invalid}", {"errors": invalid.errors}) from None


def _failed(
    call: ToolCall, tool: Tool, arguments: dict[str, Any], started: float, failure: BaseException
) -> ExecutionResult:
    # A failing tool (a missing file, a bad regex) is an everyday outcome the model is
    # told of, not an operator alarm: one line, and the traceback only when debugging.
    error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
    logger.info("tool %s failed: %s", tool.name, " ".join(error.split())[:500])
    logger.debug("tool %s failed", tool.name, exc_info=failure)
    return _outcome(call, tool, started, ExecutionStatus.ERROR, error=error, parameters=arguments)


async def _resolve[T](value: MaybeAwaitable[T]) -> T:
    return await value if inspect.isawaitable(value) else value


async def _call_safely(role: str, callback: Callable[..., Any], *args: Any) -> str | None:
    """Call a hook or a listener; its failure is logged and described, never raised."""
    try:
        await _resolve(callback(*args))
    except Exception as failure:
        return _failure_note(role, callback, failure)
    return None


def _failure_note(role: str, callback: Callable[..., Any], failure: Exception) -> str:
    name = getattr(callback, "__qualname__", repr(callback))
    logger.error("%s %s failed", role, name, exc_info=failure)
    return f"{role} {name} failed: {type(failure).__name__}: {failure}"
