"""Each test attempts one escape from the sandbox for real and proves it fails.

The docstring of each test names the protection it proves. Every backend this host runs
is tried (see conftest.py); CI runs these as root, as an operator's server would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tools.sandbox import Sandbox
from tools.sandbox.base import DRAIN_SECONDS

from .conftest import SMALL

pytestmark = pytest.mark.security

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECRET = "agentdash-test-secret-3f9a1c"


async def run_python(sandbox: Sandbox, workspace: Path, code: str, **limits: object):
    limit = SMALL if not limits else type(SMALL)(**{**SMALL.__dict__, **limits})
    return await sandbox.run(code=textwrap.dedent(code), workdir=workspace, limits=limit)


async def test_no_network_to_a_port_listening_on_the_host(sandbox: Sandbox, workspace: Path):
    """Protection: an empty network namespace. A TCP listener on the host's 127.0.0.1
    cannot be reached, and nothing connects to it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = await run_python(
            sandbox,
            workspace,
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2)
                print("connected")
            except OSError as error:
                print("refused", error)
            """,
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.stdout.startswith("refused"), result


async def test_no_dns(sandbox: Sandbox, workspace: Path):
    """Protection: no network for name lookups either. A query sent to a DNS server on
    the host's loopback never arrives, and names do not resolve."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        result = await run_python(
            sandbox,
            workspace,
            f"""
            import socket
            query = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
            try:
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.sendto(query, ("127.0.0.1", {port}))
            except OSError as error:
                print("send failed", error)
            try:
                print("resolved", socket.getaddrinfo("example.com", 80))
            except OSError as error:
                print("no resolution", error)
            """,
        )
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.recvfrom(512)
    assert "resolved" not in result.stdout, result
    assert "no resolution" in result.stdout, result


async def test_parent_environment_is_not_inherited(
    sandbox: Sandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    """Protection: nothing of the server's environment is passed on. A secret there is
    not in the sandbox's environment, nor any other of the server's variables."""
    monkeypatch.setenv("AGENTDASH_SECRET_KEY", SECRET)
    result = await run_python(
        sandbox, workspace, "import os; print(*os.environ); print(*os.environ.values())"
    )
    names, values = result.stdout.splitlines()
    assert SECRET not in values
    inherited = set(names.split()) & (set(os.environ) - {"HOME", "LANG", "PATH", "PWD"})
    assert not inherited, result


async def test_parent_secrets_unreadable_through_proc(sandbox: Sandbox, workspace: Path):
    """Protection: an own pid namespace and /proc. A secret in the environment a process
    started with (as a server's API keys are) is out of reach through /proc/<pid>/environ,
    by that process's pid, the server's, or any pid."""
    holder = subprocess.Popen(["sleep", "60"], env={"AGENTDASH_SECRET_KEY": SECRET})  # noqa: ASYNC220
    try:
        result = await run_python(
            sandbox,
            workspace,
            f"""
            import os
            found = []
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
            for pid in [{holder.pid}, {os.getpid()}, os.getppid(), 1, *pids]:
                try:
                    with open(f"/proc/{{pid}}/environ", "rb") as f:
                        if b"{SECRET}" in f.read():
                            found.append(pid)
                except OSError:
                    pass
            print("found", found)
            """,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.stdout.strip() == "found []", result


async def test_no_new_user_namespace_and_no_privilege(sandbox: Sandbox, workspace: Path):
    """Protection: an unprivileged user (uid 65534) that cannot make user namespaces. No
    new user namespace (where it would be root again, with the capabilities to rearrange
    its mounts), by the system call or by the shell's unshare, and no capability."""
    result = await run_python(
        sandbox,
        workspace,
        """
        import os, subprocess
        try:
            os.unshare(os.CLONE_NEWUSER)
            print("unshared")
        except OSError as error:
            print("refused", error.errno)
        shell = subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"])
        print("shell", shell.returncode)
        status = open("/proc/self/status").read().splitlines()
        print(os.getuid(), [line.split()[1] for line in status if line.startswith("CapEff")])
        """,
    )
    assert result.exit_code == 0, result
    refused, shell, user = result.stdout.splitlines()
    assert refused.startswith("refused"), result
    assert shell != "shell 0", result
    assert user == "65534 ['0000000000000000']", result


async def test_the_hosts_kernel_settings_cannot_be_changed(sandbox: Sandbox, workspace: Path):
    """Protection: /proc/sys, /proc/sysrq-trigger, /proc/irq and /proc/bus read-only. The
    run's uid is the host's root seen from outside, and the kernel lets that uid write
    global settings (kernel.core_pattern would have the host's root run a program) with
    no capability at all. Every file there is opened for writing, and one setting is
    written (with the value it has, so a failure changes nothing)."""
    result = await run_python(
        sandbox,
        workspace,
        """
        import os
        opened, tried = [], 0
        for top in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"):
            paths = [top] if os.path.isfile(top) else [
                os.path.join(folder, name) for folder, _, names in os.walk(top) for name in names
            ]
            for path in paths:
                tried += 1
                try:
                    os.close(os.open(path, os.O_WRONLY))
                    opened.append(path)
                except OSError:
                    pass
        setting = "/proc/sys/kernel/printk_ratelimit"
        value = open(setting).read()
        try:
            with open(setting, "w") as file:
                file.write(value)
            print("written")
        except OSError as error:
            print("refused", error.strerror)
        print(tried > 100, opened[:5])
        """,
    )
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() in (
        ["refused Read-only file system", "True []"],
        ["refused Permission denied", "True []"],  # Docker: not the host's root at all
    ), result


@pytest.mark.parametrize(
    "path",
    ["/etc/shadow", str(PROJECT_ROOT / "pyproject.toml"), str(Path.home() / ".bashrc")],
    ids=["etc-shadow", "project", "home"],
)
async def test_files_outside_the_workspace_are_unreadable(
    sandbox: Sandbox, workspace: Path, path: str
):
    """Protection: a private filesystem view. /etc/shadow, the project's own files and
    the home directory are not there to read (nor to list)."""
    assert _host_paths_existing([path]), f"the test needs {path} on the host"
    result = await run_python(
        sandbox,
        workspace,
        f"""
        import os
        try:
            print("read", len(open({path!r}, "rb").read()))
        except OSError as error:
            print("refused", type(error).__name__)
        try:
            print(*os.listdir(os.path.dirname({path!r})))
        except OSError as error:
            print("refused", type(error).__name__)
        """,
    )
    read, listing = result.stdout.splitlines()
    assert read.startswith("refused"), result
    assert os.path.basename(path) not in listing.split(), result


async def test_writes_outside_the_workspace_do_not_land(
    sandbox: Sandbox, workspace: Path, tmp_path: Path
):
    """Protection: the workspace is the only writable place the host sees. Writing to a
    host directory by absolute path, to /usr, or climbing out with .. changes nothing."""
    outside = tmp_path / "outside"
    outside.mkdir()
    result = await run_python(
        sandbox,
        workspace,
        f"""
        for path in [{str(outside / "planted")!r}, "/usr/planted", "../planted", "../../planted"]:
            try:
                with open(path, "w") as f:
                    f.write("x")
                print("wrote", path)
            except OSError as error:
                print("refused", path, type(error).__name__)
        open("inside", "w").write("ok")
        """,
    )
    assert result.exit_code == 0, result
    planted = [outside / "planted", "/usr/planted", workspace.parent / "planted"]
    assert _host_paths_existing([*planted, tmp_path / "planted"]) == []
    assert _host_paths_existing([workspace / "inside"]) == [workspace / "inside"]


async def test_fork_bomb_is_bounded(sandbox: Sandbox, workspace: Path):
    """Protection: a pids cgroup per run (root ignores RLIMIT_NPROC). Forking as many
    children as possible stops at the process limit, and the run reports it."""
    result = await run_python(
        sandbox,
        workspace,
        """
        import os, time
        children = 0
        for _ in range(500):
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
            except OSError:
                break
        print(children)
        """,
    )
    assert int(result.stdout) < SMALL.max_processes, result
    if sandbox.name != "docker":  # the engine does not say when its pids limit refused a fork
        assert result.limit_hit == "processes", result


async def test_endless_fork_bomb_ends_and_leaves_nothing(sandbox: Sandbox, workspace: Path):
    """Protection: pids cgroup, wall-clock limit and kill of the whole run. A classic
    fork bomb ends by the wall-clock limit at the latest, and none of it survives."""
    started = time.monotonic()
    result = await run_python(
        sandbox,
        workspace,
        """
        import os
        alive = open("alive", "w")  # every process of the bomb holds it open
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        wall_seconds=2,
    )
    assert time.monotonic() - started < 2 + 2 * DRAIN_SECONDS + 2
    assert result.limit_hit in {"wall_time", "processes", "cpu_time"}, result
    assert not _host_processes_holding(workspace / "alive")


async def test_memory_beyond_the_limit_is_refused(sandbox: Sandbox, workspace: Path):
    """Protection: a memory cgroup per run. Touching 4x the memory limit kills the run,
    which reports the memory limit."""
    result = await run_python(
        sandbox, workspace, f"data = b'x' * ({SMALL.memory_mb * 4} << 20); print(len(data))"
    )
    assert result.exit_code != 0, result
    assert result.stdout == "", result
    assert result.limit_hit == "memory", result


async def test_a_file_cannot_grow_beyond_the_file_limit(sandbox: Sandbox, workspace: Path):
    """Protection: RLIMIT_FSIZE. Writing 8x the file limit stops at the limit, from
    Python (EFBIG) and from a shell tool (killed by SIGXFSZ, reported)."""
    limit = SMALL.max_file_mb << 20
    result = await run_python(
        sandbox,
        workspace,
        f"""
        with open("big", "wb") as f:
            for _ in range(8):
                f.write(b"x" * {limit})
        """,
    )
    assert result.exit_code != 0, result
    assert "File too large" in result.stderr, result
    assert (workspace / "big").stat().st_size <= limit

    shell = await sandbox.run(
        argv=["sh", "-c", f"head -c {limit * 8} /dev/zero > big2"], workdir=workspace, limits=SMALL
    )
    assert shell.limit_hit == "file_size", shell
    assert (workspace / "big2").stat().st_size <= limit


async def test_cpu_spinning_stops_at_the_cpu_limit(sandbox: Sandbox, workspace: Path):
    """Protection: RLIMIT_CPU. A busy loop is stopped after its CPU seconds, well before
    the wall-clock limit, and the run says which limit."""
    result = await run_python(sandbox, workspace, "while True: pass", wall_seconds=30)
    assert result.limit_hit == "cpu_time", result
    assert not result.timed_out
    assert result.duration_ms < 15_000


@pytest.mark.parametrize("main_waits", [True, False], ids=["timeout", "main-exits"])
async def test_a_setsid_grandchild_does_not_outlive_the_run(
    sandbox: Sandbox, workspace: Path, main_waits: bool
):
    """Protection: the whole run is killed (pid namespace, cgroups), not just its process
    group. A grandchild that called setsid and holds stdout open dies with the run,
    whether the run times out or its main process simply exits; the run returns soon."""
    started = time.monotonic()
    result = await run_python(
        sandbox,
        workspace,
        f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    with open("heartbeat", "a") as f:
                        f.write(".")
                    time.sleep(0.05)
            os._exit(0)
        time.sleep(0.5)
        print("main done")
        if {main_waits}:
            time.sleep(60)
        """,
        wall_seconds=2,
    )
    assert time.monotonic() - started < 2 + 2 * DRAIN_SECONDS + 2
    assert result.timed_out is main_waits, result
    beats = (workspace / "heartbeat").stat().st_size
    assert beats > 0
    await asyncio.sleep(0.5)
    assert (workspace / "heartbeat").stat().st_size == beats, "the grandchild is still alive"


async def test_cancelling_the_run_kills_everything_it_started(sandbox: Sandbox, workspace: Path):
    """Protection: cancellation kills the run before CancelledError reaches the caller.
    A setsid grandchild stops writing the moment the awaiting task is cancelled."""
    task = asyncio.ensure_future(
        run_python(
            sandbox,
            workspace,
            """
            import os, time
            if os.fork() == 0:
                os.setsid()
                while True:
                    with open("heartbeat", "a") as f:
                        f.write(".")
                    time.sleep(0.05)
            time.sleep(60)
            """,
            wall_seconds=30,
        )
    )
    heartbeat = workspace / "heartbeat"
    for _ in range(100):
        await asyncio.sleep(0.05)
        if heartbeat.exists():
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    beats = heartbeat.stat().st_size
    await asyncio.sleep(0.5)
    assert heartbeat.stat().st_size == beats, "the run outlived its cancellation"


async def test_100_mb_of_output_is_cut_and_server_memory_stays_flat(
    sandbox: Sandbox, workspace: Path
):
    """Protection: output capped per stream, the rest read and dropped. Printing 100 MB
    gives max_output_bytes of it, marked truncated, and the server's peak resident
    memory grows by far less than 100 MB."""
    _reset_peak_memory()
    before = _status_kib("VmRSS")
    result = await run_python(
        sandbox,
        workspace,
        """
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(100):
            sys.stdout.write(chunk)
        """,
        cpu_seconds=5,
        wall_seconds=20,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout_truncated
    assert len(result.stdout) == SMALL.max_output_bytes
    assert _status_kib("VmHWM") - before < 30 * 1024


def _host_paths_existing(paths: list[Path | str]) -> list[Path | str]:
    return [path for path in paths if os.path.lexists(path)]


def _reset_peak_memory() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM, the peak resident size


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _host_processes_holding(path: Path) -> list[int]:
    """Host processes that have `path` open (left over from a run)."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                found.append(int(fd_dir.parent.name))
        except OSError:
            pass  # the process ended meanwhile
    return found


async def test_runs_share_nothing_but_their_own_workspace(
    sandbox: Sandbox, workspace: Path, tmp_path: Path
):
    """Protection: a fresh /tmp, /dev/shm and namespaces per run. What one run leaves
    there, or listens on, the next run (of another session, in another workspace) does
    not find; nor does it find the first session's workspace."""
    other = tmp_path / "other-session"
    other.mkdir()
    first = await run_python(
        sandbox,
        workspace,
        """
        for path in ["/tmp/left", "/dev/shm/left", "mine"]:
            open(path, "w").write("secret")
        """,
    )
    assert first.exit_code == 0, first
    second = await sandbox.run(
        code=textwrap.dedent(
            f"""
            import os
            for path in ["/tmp/left", "/dev/shm/left", "mine", {str(workspace / "mine")!r}]:
                print(path, os.path.exists(path))
            print(os.listdir("/workspace"))
            """
        ),
        workdir=other,
        limits=SMALL,
    )
    assert "True" not in second.stdout, second
    assert second.stdout.splitlines()[-1] == "[]", second
