"""ToolExecutor's cost per call, beside a direct call and Pydantic validation alone.

The tool is trivial and async, with three typed arguments, so what is measured is the
executor itself: lookup, validation, the timeout, the result object. Every variant is
timed call by call, in interleaved rounds on one event loop, so that drift on a shared
machine touches them all alike; figures are medians.

    python -m benchmarks executor
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from time import perf_counter, perf_counter_ns
from typing import Any

from pydantic import BaseModel

from benchmarks.harness import Figure, percentile
from tools import ExecutionResult, ExecutionStatus, ToolCall, ToolExecutor, ToolRegistry

ROUNDS = 10
CALLS_PER_ROUND = 5_000
BATCH = 10_000
CONCURRENCY = 10
BATCH_REPEATS = 5
OVERHEAD_TARGET_US = 8.0
THROUGHPUT_TARGET = 50_000
ARGUMENTS = {"a": 1, "b": 2.5, "c": "x"}


async def add(a: int, b: float, c: str) -> str:
    """The trivial tool: three typed arguments, no work."""
    return c


class AddArguments(BaseModel):
    a: int
    b: float
    c: str


async def direct() -> str:
    return await add(**ARGUMENTS)


async def validation_alone() -> AddArguments:
    return AddArguments.model_validate(ARGUMENTS)


async def by_hand() -> ExecutionResult:
    """What the executor does, written plainly: validate, run under a timeout, wrap."""
    started = perf_counter()
    values = AddArguments.model_validate(ARGUMENTS).model_dump()
    async with asyncio.timeout(30):
        value = await add(**values)
    return ExecutionResult(
        status=ExecutionStatus.SUCCESS,
        tool_name="add",
        result=value,
        parameters=values,
        duration_ms=(perf_counter() - started) * 1000,
    )


def run() -> list[Figure]:
    return asyncio.run(_measure())


async def _measure() -> list[Figure]:
    registry = ToolRegistry()
    registry.register(add)
    executor = ToolExecutor(registry)
    check = await executor.execute("add", ARGUMENTS)
    assert check.status == ExecutionStatus.SUCCESS, check  # measure nothing broken

    samples = await _per_call(
        {
            "direct": direct,
            "validation": validation_alone,
            "by hand": by_hand,
            "executor": lambda: executor.execute("add", ARGUMENTS),
        }
    )
    median = {name: statistics.median(times) for name, times in samples.items()}
    overhead = median["executor"] - median["direct"]

    calls = [ToolCall(id=str(i), name="add", arguments=ARGUMENTS) for i in range(BATCH)]
    batch_rates = [
        BATCH / await _seconds(executor.execute_many(calls, max_concurrency=CONCURRENCY))
        for _ in range(BATCH_REPEATS)
    ]
    direct_rate = BATCH / await _seconds(_in_sequence(direct, BATCH))
    validation_rate = BATCH / await _seconds(_in_sequence(validation_alone, BATCH))
    rate = statistics.median(batch_rates)
    n = len(samples["executor"])

    def spread(name: str) -> str:
        return f"p99 {percentile(samples[name], 99):.2f} µs over {n:,} calls"

    return [
        Figure("direct call", median["direct"], "µs", note=spread("direct")),
        Figure(
            "Pydantic validation alone",
            median["validation"],
            "µs",
            note=f"BaseModel.model_validate; {spread('validation')}",
        ),
        Figure(
            "validate + timeout + result, by hand",
            median["by hand"],
            "µs",
            note=f"reference: the executor's work written plainly; {spread('by hand')}",
        ),
        Figure("ToolExecutor.execute", median["executor"], "µs", note=spread("executor")),
        Figure(
            "executor overhead over a direct call",
            overhead,
            "µs",
            target=f"< {OVERHEAD_TARGET_US:g} µs",
            passed=overhead < OVERHEAD_TARGET_US,
            note="median execute - median direct call",
        ),
        Figure(
            "executor overhead over validation alone",
            median["executor"] - median["validation"],
            "µs",
            note="median execute - median validation (the call itself included)",
        ),
        Figure(
            f"execute_many, {BATCH:,} calls at concurrency {CONCURRENCY}",
            rate,
            "calls/s",
            target=f"> {THROUGHPUT_TARGET:,}",
            passed=rate > THROUGHPUT_TARGET,
            note=f"median of {BATCH_REPEATS}; best {max(batch_rates):,.0f}",
        ),
        Figure(f"direct calls, {BATCH:,} in sequence", direct_rate, "calls/s"),
        Figure(f"validation alone, {BATCH:,} in sequence", validation_rate, "calls/s"),
    ]


async def _per_call(variants: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, list[float]]:
    """Microseconds per call of each variant, timed one call at a time."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, variant in variants.items():
            times = samples[name]
            for i in range(CALLS_PER_ROUND):
                start = perf_counter_ns()
                await variant()
                times.append((perf_counter_ns() - start) / 1000)
                if i % 100 == 0:
                    # Let the loop turn, as it does between real calls (it also drops the
                    # cancelled timers that finished timeouts leave behind).
                    await asyncio.sleep(0)
    return samples


async def _in_sequence(variant: Callable[[], Awaitable[Any]], count: int) -> None:
    for _ in range(count):
        await variant()


async def _seconds(work: Awaitable[Any]) -> float:
    start = perf_counter()
    await work
    return perf_counter() - start
