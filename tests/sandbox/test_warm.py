"""What is particular to the warm sandbox: code runs in a forked, already started
interpreter as `python -c` would run it, runs overlap safely, and the launcher comes
back if it dies. (Its protections are proven in tests/security with the others.)"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tools.sandbox.warm as warm_module
from tools import ExecutionStatus, ToolExecutor
from tools.builtin import build_registry
from tools.sandbox import Limits, SandboxResult
from tools.sandbox.warm import WarmSandbox, shared_launcher, stop_shared_launchers


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
    assert result.stderr.startswith('Traceback (most recent call last):\n  File "<string>", line 3')
    assert 'File "<string>", line 2, in f' in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


# The run's main process forks, then ends: its child has ended first (a zombie, which
# pid 1 reaps) or still runs, writing a heartbeat (which pid 1's end kills).
LEAVES_A_ZOMBIE = "import os, time\nif os.fork() == 0:\n    os._exit(0)\ntime.sleep(0.1)\n"
LEAVES_A_CHILD = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    while True:\n"
    "        with open('heartbeat', 'a') as beat:\n"
    "            beat.write('.')\n"
    "        time.sleep(0.02)\n"
    "time.sleep(0.1)\n"
)


@pytest.mark.parametrize("left_behind", [LEAVES_A_ZOMBIE, LEAVES_A_CHILD], ids=["zombie", "child"])
@pytest.mark.parametrize(
    ("ending", "exit_code"),
    [("import sys; sys.exit(7)", 7), ("import os; os.kill(os.getpid(), 15)", 128 + 15)],
    ids=["exit", "signal"],
)
async def test_the_run_reports_its_status_whatever_it_leaves_behind(
    warm: WarmSandbox, workspace: Path, left_behind: str, ending: str, exit_code: int
):
    """A run's pid 1 reports it once the main process has ended and whatever it left has
    been killed and reaped. The status is the same either way, and nothing outlives the
    run."""
    result = await warm.run(code=left_behind + ending, workdir=workspace)
    assert result.exit_code == exit_code, result
    assert not result.timed_out
    heartbeat = workspace / "heartbeat"
    beats = heartbeat.stat().st_size if heartbeat.exists() else 0
    assert beats > 0 or left_behind == LEAVES_A_ZOMBIE
    await asyncio.sleep(0.3)
    assert (heartbeat.stat().st_size if heartbeat.exists() else 0) == beats, "still alive"


# 200 processes that outlive their parents one after another, never more than a few at
# once: each becomes a child of pid 1 when its parent ends. A fork refused for the
# process limit is tried again; it would be refused for ever if pid 1 left them as
# zombies (which count against the limit until reaped).
ORPHANS = (
    "import os, time\n"
    "def fork():\n"
    "    for _ in range(500):\n"
    "        try:\n"
    "            return os.fork()\n"
    "        except BlockingIOError:\n"
    "            time.sleep(0.01)\n"
    "    raise SystemExit('orphans are not reaped')\n"
    "for _ in range(200):\n"
    "    child = fork()\n"
    "    if child == 0:\n"
    "        if fork() == 0:\n"
    "            os._exit(0)\n"
    "        os._exit(0)\n"
    "    os.waitpid(child, 0)\n"
    "print('all forked')\n"
)


async def test_pid_1_reaps_orphans_while_the_run_goes_on(tmp_path: Path, workspace: Path):
    """The process limit counts processes that ended but were not reaped: pid 1 reaps
    the run's orphans as they end, not only once the run is over."""
    sandbox = WarmSandbox(Limits(max_processes=8), workspace_root=tmp_path)
    try:
        result = await sandbox.run(code=ORPHANS, workdir=workspace)
    finally:
        await sandbox.aclose()
    assert (result.stdout, result.stderr) == ("all forked\n", ""), result


async def test_signals_the_run_sends_its_pid_1_change_nothing(warm: WarmSandbox, workspace: Path):
    """pid 1 of the run's namespace supervises the run. The signals it has a handler for
    reach it from the run: they neither end the run early nor lose its result."""
    code = (
        "import os, signal, time\n"
        "for _ in range(50):\n"
        "    os.kill(1, signal.SIGINT)\n"
        "    os.kill(1, signal.SIGCHLD)\n"
        "time.sleep(0.05)\n"
        "print('done')\n"
    )
    result = await warm.run(code=code, workdir=workspace)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "done\n", ""), result
    # pid 1 ignores SIGINT; the code, as under python -c, gets KeyboardInterrupt.
    interrupted = await warm.run(
        code="import os, signal\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\n"
        "except KeyboardInterrupt:\n    print('interrupted')\n",
        workdir=workspace,
    )
    assert interrupted.stdout == "interrupted\n", interrupted


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGSTOP"])
async def test_a_run_signalling_its_process_group_reaches_no_other_run(
    warm: WarmSandbox, tmp_path: Path, signal_name: str
):
    """A process group spans pid namespaces: each run's pid 1 starts a session of its
    own, so kill(0) from a run reaches that run alone, not the launcher (which every
    other run would go down with) nor a run going on beside it."""
    await attack_beside_a_victim(
        warm,
        tmp_path,
        f"import os, signal; os.kill(0, signal.{signal_name})",
        Limits(wall_seconds=1),
    )


async def test_a_run_cannot_change_its_supervisor(warm: WarmSandbox, workspace: Path):
    """pid 1 supervises the run and has its uid (the host's root, outside). Its limits and
    its files in /proc are out of the run's reach (a run that could set pid 1's limits
    would break it, and leave its cgroups behind); the run's own limits are its to lower."""
    code = (
        "import resource\n"
        "try:\n"
        "    resource.prlimit(1, resource.RLIMIT_NOFILE, (0, 0))\n"
        "    print('prlimit: changed')\n"
        "except PermissionError:\n"
        "    print('prlimit: refused')\n"
        "try:\n"
        "    open('/proc/1/oom_score_adj', 'w').write('1000')\n"
        "    print('oom_score_adj: written')\n"
        "except OSError:\n"
        "    print('oom_score_adj: refused')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
        "print('own:', resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = await warm.run(code=code, workdir=workspace)
    assert result.stdout.splitlines() == [
        "prlimit: refused",
        "oom_score_adj: refused",
        "own: (32, 32)",
    ], result


# Orphans, so children of pid 1, that ask to be traced and stop themselves, without end:
# each stop is a report that pid 1 answers (it lets them go on untraced).
STOPPING_WITHOUT_END = (
    "import ctypes, os, signal, time\n"
    "libc = ctypes.CDLL(None)\n"
    "for number in range(60):\n"
    "    if os.fork() == 0:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(0.05)\n"
    "            beat = time.monotonic()\n"
    "            me, trace_me, stop = os.getpid(), libc.ptrace, os.kill\n"
    "            while True:\n"
    "                trace_me(0, 0, None, None)\n"
    "                stop(me, signal.SIGWINCH)\n"
    "                if number == 0 and time.monotonic() - beat > 0.05:\n"
    "                    beat = time.monotonic()\n"
    "                    with open('heartbeat', 'a') as heartbeat:\n"
    "                        heartbeat.write('.')\n"
    "        os._exit(0)\n"
    "    os.wait()\n"
    "time.sleep(60)\n"
)


async def test_a_run_stopping_under_trace_without_end_still_ends_at_its_time(
    warm: WarmSandbox, workspace: Path
):
    """Reports without end must not keep pid 1 from seeing the server hang up at the
    run's wall-time limit, and so from killing the run."""
    result = await warm.run(
        code=STOPPING_WITHOUT_END, workdir=workspace, limits=Limits(wall_seconds=1)
    )
    assert result.timed_out, result
    heartbeat = workspace / "heartbeat"
    await asyncio.sleep(0.2)
    beats = heartbeat.stat().st_size
    await asyncio.sleep(0.5)
    assert heartbeat.stat().st_size == beats, "still alive"


async def test_a_run_that_asks_to_be_traced_harms_no_other_run(warm: WarmSandbox, tmp_path: Path):
    """PTRACE_TRACEME makes the run's parent, pid 1 of its namespace, its tracer, whose
    wait() then sees it stopped. That must neither end pid 1 nor reach the launcher (which
    stopped, and took every other session's run with it): pid 1 lets the run go on."""
    attack = await attack_beside_a_victim(
        warm,
        tmp_path,
        "import ctypes, os, signal\n"
        "assert ctypes.CDLL(None).ptrace(0, 0, 0, 0) == 0  # PTRACE_TRACEME\n"
        "signal.signal(signal.SIGUSR1, lambda *_: print('handled', flush=True))\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n",
    )
    assert (attack.exit_code, attack.stdout) == (128 + signal.SIGTERM, "handled\n"), attack


async def attack_beside_a_victim(
    warm: WarmSandbox, tmp_path: Path, attack: str, limits: Limits | None = None
) -> SandboxResult:
    """Run `attack` while another session's run goes on: that run must end as it would
    have, and the sandbox go on serving. Returns the attack's result."""
    victim_workspace, attacker_workspace = tmp_path / "victim", tmp_path / "attacker"
    victim_workspace.mkdir()
    attacker_workspace.mkdir()
    victim = asyncio.ensure_future(
        warm.run(code="import time; time.sleep(1); print('done')", workdir=victim_workspace)
    )
    await asyncio.sleep(0.3)
    result = await warm.run(code=attack, workdir=attacker_workspace, limits=limits)
    assert (await victim).stdout == "done\n"
    after = await warm.run(code="print('still serving')", workdir=victim_workspace)
    assert after.stdout == "still serving\n", after
    return result


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
    launcher = warm.launcher
    assert launcher is not None
    assert launcher.pid is not None
    first = launcher.pid
    os.killpg(first, signal.SIGKILL)
    for _ in range(500):  # until it has ended
        await asyncio.sleep(0.01)
        if launcher.running() is None:
            break
    result = await warm.run(code="print('again')", workdir=workspace)
    assert result.stdout == "again\n"
    assert launcher.pid != first


@pytest.fixture
async def shared_launchers() -> AsyncIterator[None]:
    yield
    await asyncio.to_thread(stop_shared_launchers)


async def test_sandboxes_without_a_root_share_one_launcher_per_workspaces_parent(
    shared_launchers: None, tmp_path: Path
):
    """As Django's registries do: a sandbox per session, one launcher for them all."""
    sandboxes = [WarmSandbox(Limits(wall_seconds=10)) for _ in range(2)]
    for number, sandbox in enumerate(sandboxes):
        workspace = tmp_path / f"session-{number}"
        workspace.mkdir()
        (workspace / "name").write_text(str(number))
        result = await sandbox.run(code="print(open('name').read())", workdir=workspace)
        assert result.stdout == f"{number}\n", result
    launcher = shared_launcher(tmp_path, sandboxes[0].interpreter, sandboxes[0].limits)
    assert launcher.pid is not None
    assert len([key for key in warm_module._shared if key[0] == tmp_path]) == 1


def test_a_shared_launcher_serves_threads_with_event_loops_of_their_own(
    shared_launchers: None, tmp_path: Path
):
    """As Django's runner threads do, each with its own event loop."""
    workspace = tmp_path / "session-1"
    workspace.mkdir()
    sandbox = WarmSandbox(Limits(wall_seconds=10))

    def run_in_a_loop_of_its_own() -> str:
        return asyncio.run(sandbox.run(code="print('ran')", workdir=workspace)).stdout

    with ThreadPoolExecutor(3) as pool:
        outputs = list(pool.map(lambda _: run_in_a_loop_of_its_own(), range(6)))
    assert outputs == ["ran\n"] * 6


async def test_the_default_sandbox_comes_from_agentdash_sandbox(
    monkeypatch: pytest.MonkeyPatch, shared_launchers: None, tmp_path: Path
):
    monkeypatch.setenv("AGENTDASH_SANDBOX", "warm")
    workspace = tmp_path / "session-1"
    workspace.mkdir()
    registry = build_registry(workspace)
    run_python = registry.get("run_python")
    assert run_python is not None
    assert run_python.preview is not None
    assert "Sandbox: warm" in run_python.preview({"code": "print(2)"})
    output = await ToolExecutor(registry).execute(
        "run_python", {"code": "print(2)"}, context={"confirmed": True}
    )
    assert output.status == ExecutionStatus.SUCCESS, output
    assert output.result["stdout"] == "2\n"
