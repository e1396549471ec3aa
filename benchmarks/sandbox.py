"""Latency of run_python("print(1)") per sandbox backend, beside a bare interpreter start.

The bare start is `python -I -S -c "print(1)"` with no sandbox at all, started the same
way (an asyncio subprocess, output read through pipes), so the difference is what the
sandbox costs. Variants are timed one run at a time in interleaved rounds, so that drift
on a shared machine touches them all alike. Every backend runs with its full
protections, as tests/security proves them.

Targets: the process backend within 1.5x of the bare start at the median; the warm
backend under 5 ms and faster than the bare start. The process backend sets up the next
run's sandbox in the last run's workspace while a run goes on, so its runs here, all in
one workspace as a session's are, find theirs ready; its runs each in a new workspace,
for which nothing can be set up ahead, are shown beside them, and so are runs spaced as a
session's are: its first and second run, with a bare start, 50 ms apart. Docker is
measured wherever an engine answers (published cold starts are about 0.5-1 s).

    python -m benchmarks sandbox
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter

from benchmarks.harness import Figure, percentile
from tools.sandbox import Sandbox, get_sandbox
from tools.sandbox.docker import DockerSandbox
from tools.sandbox.process import Interpreter

ROUNDS = 10
RUNS_PER_ROUND = 10
DOCKER_RUNS = 10
SESSIONS = 20
PAUSE_SECONDS = 0.05
CODE = "print(1)"
PROCESS_RATIO_TARGET = 1.5
WARM_TARGET_MS = 5.0


async def bare_start(interpreter: Interpreter) -> None:
    process = await asyncio.create_subprocess_exec(
        *interpreter.argv(CODE),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={},
    )
    stdout, _ = await process.communicate()
    assert stdout == b"1\n", stdout


def sandboxed(sandbox: Sandbox, workdir: Path) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        result = await sandbox.run(code=CODE, workdir=workdir)
        assert result.stdout == "1\n", result

    return run


def in_new_workspaces(sandbox: Sandbox, root: Path) -> Callable[[], Awaitable[None]]:
    """Each run in a workspace of its own: nothing can be set up for it ahead (the
    process backend sets up the next run's sandbox in the last run's workspace)."""
    made = itertools.count()

    async def run() -> None:
        workdir = root / f"new-{next(made)}"
        workdir.mkdir()
        await sandboxed(sandbox, workdir)()

    return run


async def time_sessions(
    process: Sandbox, interpreter: Interpreter, root: Path
) -> dict[str, list[float]]:
    """Runs spaced as a session's are (an agent's next step takes far longer than a run):
    each session's first and second run in its own workspace, and a bare start beside
    them, PAUSE_SECONDS apart."""
    timings: dict[str, list[float]] = {"first": [], "second": [], "bare": []}
    for number in range(SESSIONS):
        workdir = root / f"session-{number}"
        workdir.mkdir()
        run = sandboxed(process, workdir)
        for name, variant in (
            ("first", run),
            ("second", run),
            ("bare", lambda: bare_start(interpreter)),
        ):
            await asyncio.sleep(PAUSE_SECONDS)
            started = perf_counter()
            await variant()
            timings[name].append((perf_counter() - started) * 1000)
    return timings


async def time_interleaved(
    variants: dict[str, Callable[[], Awaitable[None]]], rounds: int, runs: int
) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for variant in variants.values():
        await variant()  # warm-up: caches, the launcher, the first cgroup
    for _ in range(rounds):
        for name, variant in variants.items():
            for _ in range(runs):
                started = perf_counter()
                await variant()
                timings[name].append((perf_counter() - started) * 1000)
    return timings


def figures_for(name: str, timings: list[float], target: str = "", passed: bool | None = None):
    return [
        Figure(f"{name}, median", statistics.median(timings), "ms", target, passed),
        Figure(f"{name}, p95", percentile(timings, 95), "ms"),
    ]


async def measure() -> list[Figure]:
    interpreter = Interpreter.current()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="agentdash-bench-") as root:
        workdir = Path(root) / "workspace"
        workdir.mkdir()
        process = get_sandbox("process")
        warm = get_sandbox("warm", workspace_root=Path(root))
        try:
            timings = await time_interleaved(
                {
                    "bare": lambda: bare_start(interpreter),
                    "process": sandboxed(process, workdir),
                    "warm": sandboxed(warm, workdir),
                },
                ROUNDS,
                RUNS_PER_ROUND,
            )
            # Apart: its discarded set-ups would weigh on the runs timed beside it.
            timings |= await time_interleaved(
                {"process, new workspaces": in_new_workspaces(process, Path(root))},
                1,
                ROUNDS * RUNS_PER_ROUND // 2,
            )
            sessions = await time_sessions(process, interpreter, Path(root))
        finally:
            await warm.aclose()
            await process.aclose()
        docker = DockerSandbox()
        try:
            docker_timings = (
                await time_interleaved({"docker": sandboxed(docker, workdir)}, 1, DOCKER_RUNS)
                if docker.ping()
                else None
            )
        finally:
            await docker.aclose()

    load_after = os.getloadavg()[0]
    bare = statistics.median(timings["bare"])
    process_median = statistics.median(timings["process"])
    warm_median = statistics.median(timings["warm"])
    figures = [
        # Every figure here is wall-clock time on a 2-core machine: read them beside this.
        Figure(
            "load average (1 min) before and after",
            load_before,
            "",
            note=f"{load_before:.2f} before, {load_after:.2f} after",
        ),
        *figures_for("bare `python -I -S -c` start (no sandbox)", timings["bare"]),
        *figures_for(
            "process backend run_python",
            timings["process"],
            f"< {PROCESS_RATIO_TARGET}x bare ({PROCESS_RATIO_TARGET * bare:.1f} ms)",
            process_median < PROCESS_RATIO_TARGET * bare,
        ),
        Figure("process backend / bare start, medians", process_median / bare, "x"),
        *figures_for(
            "process backend run_python, a new workspace each run",
            timings["process, new workspaces"],
        ),
        *figures_for(
            f"process backend, a session's first run ({PAUSE_SECONDS * 1000:g} ms apart)",
            sessions["first"],
        ),
        *figures_for(
            f"process backend, a session's second run ({PAUSE_SECONDS * 1000:g} ms apart)",
            sessions["second"],
        ),
        *figures_for(f"bare start ({PAUSE_SECONDS * 1000:g} ms apart)", sessions["bare"]),
        *figures_for(
            "warm backend run_python",
            timings["warm"],
            f"< {WARM_TARGET_MS:g} ms and < bare",
            warm_median < WARM_TARGET_MS and warm_median < bare,
        ),
    ]
    if docker_timings is None:
        figures.append(
            Figure(
                "docker backend run_python, median",
                None,
                "ms",
                note="no Docker engine answers at DOCKER_HOST or /var/run/docker.sock",
            )
        )
    else:
        figures += figures_for("docker backend run_python", docker_timings["docker"])
    return figures


def run() -> list[Figure]:
    return asyncio.run(measure())
