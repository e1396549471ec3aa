"""ToolExecutor: every outcome is a result, in the order validate → hooks → approval → run."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from tools import (
    Decision,
    ExecutionResult,
    ExecutionStatus,
    PermissionDeniedError,
    Tool,
    ToolCall,
    ToolEvent,
    ToolExecutor,
    ToolOutput,
    ToolRegistry,
)

TINY_TIMEOUT = 0.05


@pytest.fixture
def received() -> list[dict]:
    """The keyword arguments the tools below were actually called with."""
    return []


@pytest.fixture
def registry(received: list[dict]) -> ToolRegistry:
    registry = ToolRegistry()

    @registry.register
    async def add(a: int, b: float, label: str = "sum") -> str:
        received.append({"a": a, "b": b, "label": label})
        return f"{label}={a + b}"

    @registry.register(requires_confirmation=True)
    def delete(name: str) -> str:
        received.append({"name": name})
        return f"deleted {name}"

    @registry.register
    async def crash(message: str) -> None:
        raise RuntimeError(message)

    @registry.register(timeout=TINY_TIMEOUT)
    async def hang() -> None:
        await asyncio.Event().wait()

    @registry.register
    async def own_timeout() -> None:
        raise TimeoutError("upstream did not answer")

    @registry.register
    def leave() -> None:
        raise SystemExit(3)

    @registry.register
    async def refuse() -> None:
        raise PermissionDeniedError("not on the allow-list")

    return registry


async def test_it_runs_a_tool_with_validated_coerced_values(registry, received):
    result = await ToolExecutor(registry).execute("add", {"a": "2", "b": 1}, call_id="c1")

    assert result.status == ExecutionStatus.SUCCESS
    assert result.result == "sum=3.0"
    assert received == [{"a": 2, "b": 1.0, "label": "sum"}]
    assert type(received[0]["b"]) is float
    assert result.parameters == {"a": 2, "b": 1.0, "label": "sum"}
    assert (result.tool_name, result.call_id, result.error) == ("add", "c1", None)
    assert result.duration_ms >= 0
    assert not result.is_error


async def test_a_tool_may_add_facts_to_its_results_metadata():
    registry = ToolRegistry()
    registry.register(name="run")(lambda: ToolOutput("output", {"exit_code": 3}))

    result = await ToolExecutor(registry).execute("run", {})

    assert result.result == "output"
    assert result.metadata == {"exit_code": 3}


async def test_an_unknown_tool_is_an_error_naming_it(registry):
    result = await ToolExecutor(registry).execute("rm_rf", {})

    assert result.status == ExecutionStatus.ERROR
    assert "'rm_rf'" in result.error
    assert "add" in result.error  # the model learns what it may call instead


async def test_invalid_arguments_are_reported_field_by_field_and_never_run(registry, received):
    result = await ToolExecutor(registry).execute("add", {"a": "two", "label": 5, "c": 1})

    assert result.status == ExecutionStatus.VALIDATION_ERROR
    assert received == []
    fields = {error["field"]: error["message"] for error in result.metadata["errors"]}
    assert set(fields) == {"a", "b", "label", "c"}
    assert "integer" in fields["a"]
    assert fields["b"] == "required, but missing"
    assert "it takes: a, b, label" in fields["c"]
    assert result.to_observation().startswith("Invalid arguments: a: ")


async def test_arguments_that_are_not_an_object_are_a_validation_error(registry):
    result = await ToolExecutor(registry).execute("add", ["a", 1])

    assert result.status == ExecutionStatus.VALIDATION_ERROR
    assert "must be a JSON object, not an array" in result.error


async def test_a_tool_that_raises_is_an_error_result(registry):
    result = await ToolExecutor(registry).execute("crash", {"message": "disk on fire"})

    assert result.status == ExecutionStatus.ERROR
    assert result.error == "RuntimeError: disk on fire"
    assert result.is_error


async def test_a_tool_that_calls_sys_exit_does_not_end_the_process(registry):
    result = await ToolExecutor(registry).execute("leave", {})

    assert result.status == ExecutionStatus.ERROR
    assert result.error == "SystemExit: 3"


async def test_a_tool_may_refuse_a_call_itself(registry):
    result = await ToolExecutor(registry).execute("refuse", {})

    assert result.status == ExecutionStatus.PERMISSION_DENIED
    assert result.error == "not on the allow-list"


async def test_an_async_tool_that_never_returns_times_out_and_is_cancelled(registry):
    result = await ToolExecutor(registry).execute("hang", {})

    assert result.status == ExecutionStatus.TIMEOUT
    assert "within 0.05 s" in result.error
    assert "cancelled" in result.error
    assert result.duration_ms >= TINY_TIMEOUT * 1000


async def test_a_sync_tool_that_blocks_is_reported_as_timed_out():
    release = threading.Event()
    registry = ToolRegistry()
    registry.register(name="block", timeout=TINY_TIMEOUT)(lambda: release.wait(10))
    try:
        result = await ToolExecutor(registry).execute("block", {})
    finally:
        release.set()  # the thread cannot be killed: let it end so the loop can close

    assert result.status == ExecutionStatus.TIMEOUT
    assert "thread may still be running" in result.error


async def test_a_tools_own_timeout_error_is_an_error_not_our_timeout(registry):
    result = await ToolExecutor(registry).execute("own_timeout", {})

    assert result.status == ExecutionStatus.ERROR
    assert result.error == "TimeoutError: upstream did not answer"


async def test_the_default_timeout_applies_to_tools_without_their_own():
    registry = ToolRegistry()

    @registry.register(timeout=None)
    async def slow() -> None:
        await asyncio.sleep(10)

    result = await ToolExecutor(registry, default_timeout=TINY_TIMEOUT).execute("slow", {})

    assert result.status == ExecutionStatus.TIMEOUT


async def test_sync_tools_run_off_the_event_loop():
    registry = ToolRegistry()
    registry.register(name="where")(lambda: threading.current_thread() is threading.main_thread())

    result = await ToolExecutor(registry).execute("where", {})

    assert result.result is False


async def test_the_callers_cancellation_propagates(registry):
    task = asyncio.create_task(ToolExecutor(registry).execute("hang", {}))
    await asyncio.sleep(0)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


# Confirmation and the approval gate


async def test_a_confirmation_required_tool_without_a_gate_needs_confirmed_context(
    registry, received
):
    executor = ToolExecutor(registry)

    for context in (None, {}, {"confirmed": False}, {"confirmed": "yes"}):
        result = await executor.execute("delete", {"name": "x"}, context=context)
        assert result.status == ExecutionStatus.PERMISSION_DENIED
        assert "requires confirmation" in result.error
    assert received == []

    confirmed = await executor.execute("delete", {"name": "x"}, context={"confirmed": True})
    assert confirmed.status == ExecutionStatus.SUCCESS
    assert received == [{"name": "x"}]


async def test_the_gate_sees_validated_arguments_and_may_approve(registry, received):
    asked: list[ToolCall] = []

    async def gate(call: ToolCall) -> Decision:
        asked.append(call)
        return Decision(approve=True)

    executor = ToolExecutor(registry, approval_gate=gate)
    result = await executor.execute("delete", {"name": "x"}, call_id="c7")
    await executor.execute("add", {"a": 1, "b": 2})  # no confirmation needed: gate not asked

    assert result.status == ExecutionStatus.SUCCESS
    assert asked == [ToolCall(id="c7", name="delete", arguments={"name": "x"})]


async def test_a_rejection_is_rejected_with_the_reason(registry, received):
    executor = ToolExecutor(registry, approval_gate=lambda call: Decision(False, "too risky"))

    result = await executor.execute("delete", {"name": "x"})

    assert result.status == ExecutionStatus.REJECTED
    assert result.error == "An operator rejected this call: too risky"
    assert received == []


async def test_edited_arguments_are_validated_and_run(registry, received):
    executor = ToolExecutor(
        registry, approval_gate=lambda call: Decision(True, edited_arguments={"name": "y"})
    )

    result = await executor.execute("delete", {"name": "x"})

    assert result.result == "deleted y"
    assert result.parameters == {"name": "y"}


async def test_invalid_edited_arguments_are_a_validation_error(registry, received):
    executor = ToolExecutor(
        registry, approval_gate=lambda call: Decision(True, edited_arguments={"nom": "y"})
    )

    result = await executor.execute("delete", {"name": "x"})

    assert result.status == ExecutionStatus.VALIDATION_ERROR
    assert result.error.startswith("edited by the approver: Invalid arguments")
    assert received == []


@pytest.mark.parametrize("answer", [RuntimeError("queue down"), "yes"])
async def test_a_failing_gate_never_approves(registry, received, answer, caplog):
    def gate(call: ToolCall) -> Decision:
        if isinstance(answer, Exception):
            raise answer
        return answer

    result = await ToolExecutor(registry, approval_gate=gate).execute("delete", {"name": "x"})

    assert result.status == ExecutionStatus.ERROR
    assert "approval gate failed" in result.error
    assert received == []
    assert "approval gate failed" in caplog.text


# Hooks


async def test_a_before_hook_may_rewrite_arguments_which_are_validated_again(registry, received):
    seen: list[ToolCall] = []

    async def clamp(call: ToolCall, tool: Tool) -> dict:
        seen.append(call)
        return {**call.arguments, "a": str(min(call.arguments["a"], 10))}

    result = await ToolExecutor(registry, before_hooks=[clamp]).execute("add", {"a": 99, "b": 0})

    assert seen[0].arguments == {"a": 99, "b": 0.0, "label": "sum"}  # validated already
    assert received == [{"a": 10, "b": 0.0, "label": "sum"}]  # "10" coerced again
    assert result.parameters["a"] == 10


async def test_a_before_hook_rewriting_into_invalid_arguments_stops_the_call(registry, received):
    result = await ToolExecutor(registry, before_hooks=[lambda call, tool: {"a": []}]).execute(
        "add", {"a": 1, "b": 2}
    )

    assert result.status == ExecutionStatus.VALIDATION_ERROR
    assert result.error.startswith("rewritten by a hook: ")
    assert received == []


async def test_a_before_hook_may_deny(registry, received):
    def policy(call: ToolCall, tool: Tool) -> None:
        if call.arguments["a"] > 5:
            raise PermissionDeniedError("a is capped at 5")

    executor = ToolExecutor(registry, before_hooks=[policy])

    denied = await executor.execute("add", {"a": 6, "b": 0})
    allowed = await executor.execute("add", {"a": 5, "b": 0})

    assert denied.status == ExecutionStatus.PERMISSION_DENIED
    assert denied.error == "a is capped at 5"
    assert allowed.status == ExecutionStatus.SUCCESS
    assert len(received) == 1


async def test_hooks_that_fail_are_logged_and_noted_and_the_call_goes_on(registry, caplog):
    def broken_before(call: ToolCall, tool: Tool) -> None:
        raise ValueError("before broke")

    async def broken_after(call: ToolCall, result: ExecutionResult) -> None:
        raise KeyError("after broke")

    executor = ToolExecutor(registry, before_hooks=[broken_before], after_hooks=[broken_after])
    with caplog.at_level(logging.ERROR, logger="tools.executor"):
        result = await executor.execute("add", {"a": 1, "b": 1})

    assert result.status == ExecutionStatus.SUCCESS
    notes = result.metadata["hook_errors"]
    assert len(notes) == 2
    assert "broken_before" in notes[0]
    assert "ValueError: before broke" in notes[0]
    assert "broken_after" in notes[1]
    assert "KeyError" in notes[1]
    assert "broken_before failed" in caplog.text
    assert "broken_after failed" in caplog.text


async def test_after_hooks_see_every_outcome(registry):
    outcomes: list[tuple[str, ExecutionStatus]] = []
    executor = ToolExecutor(
        registry, after_hooks=[lambda call, result: outcomes.append((call.name, result.status))]
    )

    await executor.execute("add", {"a": 1, "b": 1})
    await executor.execute("nope", {})
    await executor.execute("add", {})

    assert outcomes == [
        ("add", ExecutionStatus.SUCCESS),
        ("nope", ExecutionStatus.ERROR),
        ("add", ExecutionStatus.VALIDATION_ERROR),
    ]


# Batches and streaming


def _calls(*specs: tuple[str, dict]) -> list[ToolCall]:
    return [ToolCall(id=f"c{i}", name=name, arguments=args) for i, (name, args) in enumerate(specs)]


async def test_execute_many_keeps_call_order_and_isolates_failures(registry):
    calls = _calls(
        ("hang", {}),
        ("crash", {"message": "boom"}),
        ("add", {"a": 1, "b": 1}),
        ("add", {"a": "x"}),
        ("missing", {}),
    )

    results = await ToolExecutor(registry).execute_many(calls)

    assert [r.call_id for r in results] == ["c0", "c1", "c2", "c3", "c4"]
    assert [r.status for r in results] == [
        ExecutionStatus.TIMEOUT,
        ExecutionStatus.ERROR,
        ExecutionStatus.SUCCESS,
        ExecutionStatus.VALIDATION_ERROR,
        ExecutionStatus.ERROR,
    ]


async def test_execute_many_never_exceeds_max_concurrency():
    running = peak = 0
    registry = ToolRegistry()

    @registry.register
    async def step(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (n % 3))
        running -= 1
        return n

    calls = [ToolCall(id=str(n), name="step", arguments={"n": n}) for n in range(40)]
    results = await ToolExecutor(registry).execute_many(calls, max_concurrency=3)

    assert peak == 3
    assert [r.result for r in results] == list(range(40))


async def test_execute_many_defaults_to_ten_at_a_time():
    gate = asyncio.Event()
    registry = ToolRegistry()
    registry.register(name="wait")(gate.wait)
    started: list[str] = []
    executor = ToolExecutor(registry)

    calls = [ToolCall(id=str(n), name="wait", arguments={}) for n in range(25)]
    batch = asyncio.create_task(
        executor.execute_many(calls, on_start=lambda c: started.append(c.id))
    )
    await asyncio.sleep(0.01)
    assert len(started) == 10
    gate.set()
    assert len(await batch) == 25


async def test_execute_many_tells_listeners_and_survives_their_failures(registry, caplog):
    log: list[str] = []

    async def on_start(call: ToolCall) -> None:
        log.append(f"start {call.id}")

    def on_complete(call: ToolCall, result: ExecutionResult) -> None:
        log.append(f"complete {call.id} {result.status}")
        raise RuntimeError("listener broke")

    calls = _calls(("add", {"a": 1, "b": 1}), ("crash", {"message": "x"}))
    results = await ToolExecutor(registry).execute_many(
        calls, max_concurrency=1, on_start=on_start, on_complete=on_complete
    )

    assert log == ["start c0", "complete c0 success", "start c1", "complete c1 error"]
    assert [r.status for r in results] == [ExecutionStatus.SUCCESS, ExecutionStatus.ERROR]
    assert "on_complete" in caplog.text


async def test_execute_many_refuses_a_concurrency_below_one(registry):
    with pytest.raises(ValueError, match="max_concurrency"):
        await ToolExecutor(registry).execute_many([], max_concurrency=0)


async def test_stream_yields_start_and_complete_events(registry):
    calls = _calls(("add", {"a": 1, "b": 1}), ("crash", {"message": "x"}))

    events = [event async for event in ToolExecutor(registry).stream(calls, max_concurrency=1)]

    assert [(e.kind, e.call.id) for e in events] == [
        ("start", "c0"),
        ("complete", "c0"),
        ("start", "c1"),
        ("complete", "c1"),
    ]
    assert events[0].result is None
    assert events[1].result.status == ExecutionStatus.SUCCESS
    assert events[3].result.status == ExecutionStatus.ERROR


async def test_leaving_a_stream_early_cancels_the_calls_still_running():
    cancelled = asyncio.Event()
    registry = ToolRegistry()

    @registry.register
    async def wait_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    stream = ToolExecutor(registry).stream([ToolCall(id="c", name="wait_forever", arguments={})])
    first: ToolEvent = await anext(stream)
    await stream.aclose()

    assert first.kind == "start"
    assert cancelled.is_set()
