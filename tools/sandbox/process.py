"""The process backend: each run is a fresh process in its own namespaces (bubblewrap), its
own pids and memory cgroups, under rlimits, with nothing of the server's environment.

How a run starts, and why in this order: bubblewrap builds the namespaces and the private
filesystem view, then blocks (`--block-fd`) before the code starts. While it waits, the
server moves that process into the run's cgroups and sets its rlimits (`prlimit`), then
lets it go: everything the code starts is born inside the limits, without a shell or
`preexec_fn` (which is unsafe in a threaded server) in between.

Without bubblewrap (or where user namespaces are refused) the run is a plain process held
the same way by `sh` until its limits are set; what that leaves unenforced is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tools.sandbox.base import (
    CPU_TIME,
    FILE_SIZE,
    MEMORY,
    PROCESSES,
    SIGNAL_EXIT_BASE,
    Command,
    Limits,
    Sandbox,
    SandboxResult,
    logger,
)
from tools.sandbox.cgroups import RunCgroups, usable_controllers

MIB: Final = 1024 * 1024
NOBODY: Final = 65534
SANDBOX_WORKDIR: Final = "/workspace"
SANDBOX_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_TMP: Final = "/tmp"  # noqa: S108 - inside the sandbox: a fresh tmpfs per run
CGROUP_REMOVE_TRIES: Final = 50


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs sandboxed code: the base interpreter behind this one (a venv's
    packages are not the sandbox's), bound read-only where it lives."""

    executable: Path
    prefix: Path

    @classmethod
    def current(cls) -> Interpreter:
        return cls(Path(sys.executable).resolve(), Path(sys.base_prefix).resolve())

    def argv(self, code: str) -> list[str]:
        # -I: no environment variables, no user site, no script directory on sys.path.
        # -S: no site module (a .pth file there can import a lot: 35 ms against 9 ms).
        return [str(self.executable), "-I", "-S", "-c", code]


def rlimits(limits: Limits, *, address_space: bool) -> dict[int, tuple[int, int]]:
    """The rlimits of a run. The CPU limit's soft value sends SIGXCPU (a clear exit
    status), the hard one a second later SIGKILL for code that catches SIGXCPU.
    RLIMIT_NPROC is left alone: the kernel ignores it for root, and elsewhere it counts
    every process of the uid machine-wide, so concurrent runs would starve each other."""
    values = {
        resource.RLIMIT_CPU: (limits.cpu_seconds, limits.cpu_seconds + 1),
        resource.RLIMIT_FSIZE: (limits.max_file_mb * MIB,) * 2,
        resource.RLIMIT_NOFILE: (limits.max_open_files,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if address_space:
        values[resource.RLIMIT_AS] = (limits.memory_mb * MIB,) * 2
    return values


def exit_status(returncode: int) -> int:
    """asyncio's returncode (-N for signal N) in the shell's convention (128 + N)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


def limit_hit(exit_code: int, groups: RunCgroups | None) -> str | None:
    """Which limit stopped or hampered the run, from its exit status and cgroup counters."""
    if groups is not None and groups.memory_limit_hit():
        return MEMORY
    if exit_code == SIGNAL_EXIT_BASE + signal.SIGXCPU:
        return CPU_TIME
    if groups is not None and groups.process_limit_hit():
        return PROCESSES
    if exit_code == SIGNAL_EXIT_BASE + signal.SIGXFSZ:
        return FILE_SIZE
    return None


async def remove_cgroups(groups: RunCgroups) -> None:
    """Remove a run's groups, waiting a little for its last processes to be reaped."""
    for _ in range(CGROUP_REMOVE_TRIES):
        if groups.remove():
            return
        groups.kill()
        await asyncio.sleep(0.01)
    logger.warning("could not remove the sandbox cgroups %s", list(groups.directories.values()))


def filesystem_binds(interpreter: Interpreter) -> list[str]:
    """bubblewrap arguments for the read-only view: /usr, the top-level links into it
    (merged-/usr Debian) and the interpreter's prefix when it lives elsewhere (pyenv's
    under /root, mode 0700)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    if not interpreter.prefix.is_relative_to("/usr"):
        args += ["--ro-bind", str(interpreter.prefix), str(interpreter.prefix)]
    return args


def bwrap_argv(
    interpreter: Interpreter, workdir: Path, *, info_fd: int, block_fd: int
) -> list[str]:
    return [
        "bwrap",
        # user, pid, network, ipc, uts and cgroup namespaces; no new user namespaces inside
        *("--unshare-all", "--unshare-user", "--disable-userns"),
        *("--uid", str(NOBODY), "--gid", str(NOBODY)),
        *("--die-with-parent", "--new-session", "--clearenv"),
        *("--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", SANDBOX_TMP),
        *("--setenv", "LANG", "C.UTF-8"),
        *filesystem_binds(interpreter),
        *("--proc", "/proc", "--dev", "/dev", "--tmpfs", SANDBOX_TMP),
        *("--bind", str(workdir), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR),
        *("--info-fd", str(info_fd), "--block-fd", str(block_fd)),
        "--",
    ]


@functools.cache
def bwrap_works(interpreter: Interpreter) -> str | None:
    """None when bubblewrap runs the interpreter with every namespace this backend asks
    for; otherwise why not (missing, or user namespaces refused by this kernel)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed; run scripts/system-deps.sh"
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    os.close(block_w)  # the probe runs nothing untrusted: let it go at once
    workdir = tempfile.TemporaryDirectory(prefix="agentdash-probe-")
    argv = bwrap_argv(interpreter, Path(workdir.name), info_fd=info_w, block_fd=block_r)
    try:
        probe = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [*argv, *interpreter.argv("pass")],
            pass_fds=(info_w, block_r),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={},
            timeout=30,
            check=False,
        )
    finally:
        for fd in (info_r, info_w, block_r):
            os.close(fd)
        workdir.cleanup()
    if probe.returncode != 0:
        return f"bubblewrap failed here: {probe.stderr.decode(errors='replace').strip()}"
    return None


class ProcessSandbox(Sandbox):
    """The default backend. `use_bwrap` and `use_cgroups` default to what the host allows;
    turning one off is for showing what the fallback reports and enforces."""

    name = "process"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        use_bwrap: bool | None = None,
        use_cgroups: bool | None = None,
        interpreter: Interpreter | None = None,
    ) -> None:
        super().__init__(limits)
        self.interpreter = interpreter or Interpreter.current()
        bwrap_problem = bwrap_works(self.interpreter)
        self.use_bwrap = bwrap_problem is None if use_bwrap is None else use_bwrap
        if self.use_bwrap and bwrap_problem is not None:
            raise RuntimeError(bwrap_problem)
        self._bwrap_problem = bwrap_problem or "turned off"
        controllers = usable_controllers() if use_cgroups is not False else ()
        self.controllers = controllers
        log_protections(self)

    def protections(self) -> dict[str, bool | str]:
        isolated = self.use_bwrap
        return {
            "backend": self.name,
            "network": "own empty network namespace" if isolated else False,
            "filesystem": (
                "private view: /usr and the interpreter read-only, a fresh /tmp, "
                "the workspace read-write"
                if isolated
                else False
            ),
            "processes_hidden": "own pid namespace and /proc" if isolated else False,
            "user": (
                f"uid {NOBODY} in a user namespace, no capabilities, no new user namespaces"
                if isolated
                else False
            ),
            "environment": "empty but PATH, HOME, LANG and PWD",
            "workdir": f"the workspace at {SANDBOX_WORKDIR}" if isolated else "the workspace",
            "stdin": "closed",
            "memory": (
                "memory cgroup per run"
                if "memory" in self.controllers
                else "RLIMIT_AS (address space, not resident memory)"
            ),
            "processes": "pids cgroup per run" if "pids" in self.controllers else False,
            "cpu_time": "RLIMIT_CPU per process",
            "wall_time": True,
            "file_size": "RLIMIT_FSIZE per file",
            "open_files": "RLIMIT_NOFILE",
            "workspace_total_size": False,
            "kill_on_timeout": (
                "pid namespace"
                + (" and cgroups" if self.controllers else "")
                + (", process group" if not isolated else "")
                if isolated or self.controllers
                else "process group only: a grandchild that called setsid survives"
            ),
        }

    async def _run(self, command: Command, workdir: Path, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        groups = (
            RunCgroups.create(
                self.controllers,
                # bubblewrap's own pid 1 in the namespace counts too
                max_tasks=limits.max_processes + (1 if self.use_bwrap else 0),
                memory_bytes=limits.memory_mb * MIB,
            )
            if self.controllers
            else None
        )
        try:
            return await self._run_in(command, workdir, limits, groups, started)
        finally:
            if groups is not None:
                await remove_cgroups(groups)

    async def _run_in(
        self,
        command: Command,
        workdir: Path,
        limits: Limits,
        groups: RunCgroups | None,
        started: float,
    ) -> SandboxResult:
        program = list(command.argv) if command.argv else self.interpreter.argv(command.code or "")
        block_r, block_w = os.pipe()
        try:
            proc, held = await self._start_held(program, workdir, block_r)
        except BaseException:
            os.close(block_w)
            raise
        finally:
            os.close(block_r)

        def kill() -> None:
            if groups is not None:
                groups.kill()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        try:
            if held is not None:
                if groups is not None:
                    groups.add(held)
                address_space = "memory" not in self.controllers
                for which, value in rlimits(limits, address_space=address_space).items():
                    resource.prlimit(held, which, value)
                os.write(block_w, b"\n")
        except BaseException:
            # Never let a held process go without its limits: closing the block pipe
            # unwritten would release it, so kill it first.
            kill()
            await proc.wait()
            raise
        finally:
            os.close(block_w)

        finished = await self.supervise(
            wait=_exit_code(proc),
            stdout=proc.stdout,  # type: ignore[arg-type]
            stderr=proc.stderr,  # type: ignore[arg-type]
            kill=kill,
            limits=limits,
            started=started,
        )
        kill()  # nothing of a finished run may outlive it (no-op inside a pid namespace)
        return finished.result(limit_hit(finished.exit_code, groups))

    async def _start_held(
        self, program: list[str], workdir: Path, block_r: int
    ) -> tuple[asyncio.subprocess.Process, int | None]:
        """Start the run's process, held until `block_r` is written to; return it and the
        pid that waits (None: bubblewrap failed before it got there, its error is on
        stderr)."""
        if not self.use_bwrap:
            # `read` holds the shell until its limits are set; exec then keeps its pid.
            hold = f'read -r _ <&{block_r}; exec {block_r}<&-; exec "$@"'
            env = {"PATH": SANDBOX_PATH, "HOME": str(workdir), "LANG": "C.UTF-8"}
            proc = await _spawn(["/bin/sh", "-c", hold, "sh", *program], env, workdir, (block_r,))
            return proc, proc.pid
        info_r, info_w = os.pipe()
        argv = bwrap_argv(self.interpreter, workdir, info_fd=info_w, block_fd=block_r)
        try:
            proc = await _spawn([*argv, *program], {}, workdir, (info_w, block_r))
        except BaseException:
            os.close(info_r)
            raise
        finally:
            os.close(info_w)
        try:
            return proc, await _read_child_pid(info_r)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise


async def _spawn(
    argv: list[str], env: dict[str, str], cwd: Path, pass_fds: tuple[int, ...]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        pass_fds=pass_fds,
        start_new_session=True,
    )


async def _read_child_pid(info_r: int) -> int | None:
    """bubblewrap's sandboxed child pid from its info pipe; takes ownership of `info_r`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(info_r, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        info = await reader.read()
    finally:
        transport.close()
    return json.loads(info)["child-pid"] if info else None


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    return exit_status(await proc.wait())


_logged_reports: set[str] = set()


def log_protections(sandbox: Sandbox) -> None:
    """Say at start what this host enforces, and loudly what it does not (once per
    distinct report, not per sandbox made)."""
    report = sandbox.protections()
    if repr(report) in _logged_reports:
        return
    _logged_reports.add(repr(report))
    missing = [name for name, value in report.items() if value is False]
    logger.info(
        "%s sandbox protections: %s",
        sandbox.name,
        "; ".join(f"{name}: {value}" for name, value in report.items() if value is not False),
    )
    if missing:
        logger.warning("%s sandbox does NOT enforce: %s", sandbox.name, ", ".join(missing))
