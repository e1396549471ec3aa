"""run_python and run_shell through the real tool engine and the real process sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tools import ExecutionStatus, ToolExecutor, ToolRegistry
from tools.builtin import build_registry
from tools.sandbox import Limits, get_sandbox

CONFIRMED = {"confirmed": True}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
async def registry(workspace: Path) -> AsyncIterator[ToolRegistry]:
    sandbox = get_sandbox(limits=Limits(wall_seconds=10, cpu_seconds=5, memory_mb=128))
    yield build_registry(workspace, sandbox=sandbox)
    await sandbox.aclose()


@pytest.fixture
def executor(registry: ToolRegistry) -> ToolExecutor:
    return ToolExecutor(registry)


def test_code_tools_need_confirmation_and_say_they_are_destructive(registry: ToolRegistry):
    for name in ("run_python", "run_shell"):
        tool = registry.get(name)
        assert tool is not None
        assert tool.requires_confirmation
        assert tool.destructive
        assert not tool.open_world


async def test_unconfirmed_code_does_not_run(executor: ToolExecutor, workspace: Path):
    result = await executor.execute("run_python", {"code": "open('ran', 'w')"})
    assert result.status == ExecutionStatus.PERMISSION_DENIED
    assert not (workspace / "ran").exists()


async def test_sandbox_and_file_tools_share_the_workspace_both_ways(executor: ToolExecutor):
    written = await executor.execute(
        "write_file", {"path": "data.txt", "content": "from the file tool"}, CONFIRMED
    )
    assert written.status == ExecutionStatus.SUCCESS, written.error
    ran = await executor.execute(
        "run_python",
        {"code": "s = open('data.txt').read(); open('data.txt', 'w').write(s.upper()); print(s)"},
        CONFIRMED,
    )
    assert ran.status == ExecutionStatus.SUCCESS, ran.error
    assert ran.result["stdout"] == "from the file tool\n"
    # A file the sandbox rewrote stays readable and writable by the server's file tools.
    read = await executor.execute("read_file", {"path": "data.txt"})
    assert read.result == "FROM THE FILE TOOL"
    again = await executor.execute("write_file", {"path": "data.txt", "content": "x"}, CONFIRMED)
    assert again.status == ExecutionStatus.SUCCESS, again.error


async def test_run_shell_reports_exit_code_and_both_streams(executor: ToolExecutor):
    result = await executor.execute(
        "run_shell", {"command": "echo out; echo err >&2; exit 3"}, CONFIRMED
    )
    assert result.status == ExecutionStatus.SUCCESS, result.error
    assert result.result["exit_code"] == 3
    assert result.result["stdout"] == "out\n"
    assert result.result["stderr"] == "err\n"
    assert result.result["limit_hit"] is None
    # The same facts in the result's metadata, where the runner stores them apart.
    assert result.metadata["exit_code"] == 3
    assert result.metadata["limit_hit"] is None


async def test_timeout_seconds_stops_the_run_and_says_so(executor: ToolExecutor):
    result = await executor.execute(
        "run_python", {"code": "import time; time.sleep(30)", "timeout_seconds": 0.5}, CONFIRMED
    )
    assert result.result["timed_out"]
    assert result.result["limit_hit"] == "wall_time"
    assert result.duration_ms < 5000


async def test_a_non_positive_timeout_is_a_validation_error(executor: ToolExecutor):
    result = await executor.execute(
        "run_shell", {"command": "true", "timeout_seconds": 0}, CONFIRMED
    )
    assert result.status == ExecutionStatus.VALIDATION_ERROR


def test_previews_show_what_runs_and_where(registry: ToolRegistry, workspace: Path):
    shell = registry.get("run_shell")
    python = registry.get("run_python")
    assert shell is not None
    assert python is not None
    shell_preview = shell.preview({"command": "rm -rf 'x y'", "timeout_seconds": 5})
    assert "$ /bin/sh -c 'rm -rf '\"'\"'x y'\"'\"''" in shell_preview
    assert str(workspace.resolve()) in shell_preview
    python_preview = python.preview({"code": "print('hi')", "timeout_seconds": 99})
    assert "print('hi')" in python_preview
    assert str(workspace.resolve()) in python_preview
    assert "stopped after 10 s" in python_preview  # capped by the sandbox's limit
