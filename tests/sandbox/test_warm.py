"""What is particular to the warm sandbox: code runs in a forked, already started
interpreter as `python -c` would run it, runs overlap safely, and the launcher comes
back if it dies. (Its protections are proven in tests/security with the others.)"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tools.sandbox import Limits
from tools.sandbox.warm import WarmSandbox


@pytest.fixture
async def warm(tmp_path: Path) -> AsyncIterator[WarmSandbox]:
    sandbox = WarmSandbox(Limits(wall_seconds=10, cpu_seconds=5), workspace_root=tmp_path)
    try:
        yield sandbox
    finally:
        await sandbox.aclose()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "session-1"
    path.mkdir()
    return path


async def test_code_runs_as_python_c_would(warm: WarmSandbox, workspace: Path):
    result = await warm.run(
        code="import sys, atexit\n"
        "atexit.register(lambda: print('at exit'))\n"
        "print(__name__, sys.argv, sys.flags.isolated, sys.flags.no_site)\n"
        "sys.exit(3)\n",
        workdir=workspace,
    )
    assert result.stdout == "__main__ ['-c'] 1 1\nat exit\n"
    assert result.exit_code == 3


async def test_an_uncaught_exception_prints_its_traceback_and_exits_1(
    warm: WarmSandbox, workspace: Path
):
    result = await warm.run(code="def f():\n    1 / 0\nf()\n", workdir=workspace)
    assert result.exit_code == 1
    assert 'File "<string>", line 2, in f' in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


async def test_overlapping_runs_each_see_their_own_workspace(warm: WarmSandbox, tmp_path: Path):
    workspaces = [tmp_path / f"session-{n}" for n in range(5)]
    for number, path in enumerate(workspaces):
        path.mkdir(exist_ok=True)
        (path / "name").write_text(str(number))
    results = await asyncio.gather(
        *(
            warm.run(code="import time; time.sleep(0.2); print(open('name').read())", workdir=path)
            for path in workspaces
        )
    )
    assert [result.stdout for result in results] == [f"{n}\n" for n in range(5)]


async def test_workdirs_outside_the_root_or_the_root_itself_are_refused(
    warm: WarmSandbox, tmp_path_factory: pytest.TempPathFactory
):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(ValueError, match="is not in the subpath"):
        await warm.run(code="pass", workdir=elsewhere)
    with pytest.raises(ValueError, match="not the root"):
        await warm.run(code="pass", workdir=warm.workspace_root)


async def test_the_launcher_comes_back_after_it_died(warm: WarmSandbox, workspace: Path):
    await warm.start()
    assert warm.launcher_pid is not None
    os.killpg(warm.launcher_pid, signal.SIGKILL)
    for _ in range(500):  # until it has ended and been reaped
        await asyncio.sleep(0.01)
        if not _exists(warm.launcher_pid):
            break
    result = await warm.run(code="print('again')", workdir=workspace)
    assert result.stdout == "again\n"


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
