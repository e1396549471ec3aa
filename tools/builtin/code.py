"""run_python and run_shell: code the model wrote, run in the sandbox, in the session's
workspace (the directory the file tools see). Both need an operator's confirmation by
default, and the approval card shows exactly what would run and where.

Their docstrings are what the model reads about them.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from tools.registry import ToolRegistry
from tools.results import ToolOutput
from tools.sandbox import Limits, Sandbox, SandboxResult

# The executor's own timeout is a backstop: the sandbox's wall-clock limit ends a run
# first and says so in the result. Past it, the executor cancels the call, which kills
# the run too.
EXECUTOR_GRACE_SECONDS = 10.0

Timeout = Annotated[float, Field(gt=0, description="Wall-clock limit in seconds.")]


class CodeTools:
    def __init__(self, workspace: Path, sandbox: Sandbox) -> None:
        self.workspace = Path(workspace).resolve()
        self.sandbox = sandbox

    @property
    def max_seconds(self) -> float:
        return self.sandbox.limits.wall_seconds

    async def run_python(self, code: str, timeout_seconds: Timeout = 30.0) -> ToolOutput:
        """Run Python 3 code in an isolated sandbox and return its exit code and output.

        The working directory is the workspace, so files the file tools see are there.
        There is no network, only the standard library, and limits on memory, CPU time,
        processes and file size; the result says if one was hit. Print what you need.

        Args:
            code: The Python source to run, as a script (it runs as __main__).
            timeout_seconds: Stop the run after this many seconds (capped by the sandbox).
        """
        return _facts(
            await self.sandbox.run(
                code=code, workdir=self.workspace, limits=self._limits(timeout_seconds)
            )
        )

    async def run_shell(self, command: str, timeout_seconds: Timeout = 30.0) -> ToolOutput:
        """Run a shell command (/bin/sh -c) in an isolated sandbox; return its exit code and output.

        The working directory is the workspace. There is no network; the usual command
        line tools are there, with limits on memory, CPU time, processes and file size.

        Args:
            command: The command line, as you would type it in sh.
            timeout_seconds: Stop the command after this many seconds (capped by the sandbox).
        """
        return _facts(
            await self.sandbox.run(
                argv=["/bin/sh", "-c", command],
                workdir=self.workspace,
                limits=self._limits(timeout_seconds),
            )
        )

    def preview_python(self, arguments: dict[str, Any]) -> str:
        return f"{self._where(arguments)}\n\n{arguments['code']}"

    def preview_shell(self, arguments: dict[str, Any]) -> str:
        return f"{self._where(arguments)}\n\n$ /bin/sh -c {shlex.quote(arguments['command'])}"

    def _where(self, arguments: dict[str, Any]) -> str:
        seconds = min(float(arguments.get("timeout_seconds", 30.0)), self.max_seconds)
        return (
            f"Working directory: {self.workspace} (the session's workspace)\n"
            f"Sandbox: {self.sandbox.name}, stopped after {seconds:g} s"
        )

    def _limits(self, timeout_seconds: float) -> Limits:
        return dataclasses.replace(
            self.sandbox.limits, wall_seconds=min(timeout_seconds, self.max_seconds)
        )


def _facts(result: SandboxResult) -> ToolOutput:
    """What the model reads (the output first, then the facts that explain it), with the
    facts an operator filters on also in the result's metadata."""
    facts = result.to_dict()
    facts["duration_ms"] = round(result.duration_ms, 1)
    metadata = {
        key: facts[key]
        for key in ("exit_code", "limit_hit", "timed_out", "stdout_truncated", "stderr_truncated")
        if key in facts
    }
    return ToolOutput(facts, metadata=metadata)


def register_code_tools(registry: ToolRegistry, workspace: Path, sandbox: Sandbox) -> None:
    """Register run_python and run_shell, running in `sandbox` with `workspace` as their
    working directory."""
    tools = CodeTools(workspace, sandbox)
    options: dict[str, Any] = {
        "tags": ("code",),
        "requires_confirmation": True,
        "timeout": tools.max_seconds + EXECUTOR_GRACE_SECONDS,
        "open_world": False,
        "destructive": True,
        "read_only": False,
        "idempotent": False,
    }
    registry.register(preview=tools.preview_python, **options)(tools.run_python)
    registry.register(preview=tools.preview_shell, **options)(tools.run_shell)
