"""The warm backend: the process backend's protections, with the interpreter already
started. A launcher (tools/sandbox/zygote.py) is started once, as a separate clean
process inside bubblewrap, and forks per run; see that file for what each run gets.

The server lends the launcher its own cgroup directories (pids, memory), in which each
prepared run makes and joins its groups ahead of time. Per run the server gives pipes
for the output and a socket whose closing kills the run. Workspaces must live under
`workspace_root`, which the launcher sees (and hides again from each run but for that
run's own workspace).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from tools.sandbox.base import Command, Limits, Sandbox, SandboxResult, log_protections
from tools.sandbox.cgroups import RUN_PREFIX, own_cgroup_dir, remove_groups, usable_controllers
from tools.sandbox.process import (
    MIB,
    NOBODY,
    SANDBOX_TMP,
    SANDBOX_WORKDIR,
    Interpreter,
    bwrap_works,
    exit_status,
    filesystem_binds,
    limit_hit,
)

ZYGOTE: Final = Path(__file__).with_name("zygote.py")
_launchers = itertools.count()
START_TIMEOUT_SECONDS: Final = 30.0


class LauncherError(RuntimeError):
    """The launcher could not start a run (its traceback is on the server's stderr)."""


class WarmSandbox(Sandbox):
    """One per event loop: its launcher is a subprocess of the loop that started it."""

    name = "warm"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        workspace_root: Path,
        interpreter: Interpreter | None = None,
    ) -> None:
        super().__init__(limits)
        self.workspace_root = Path(workspace_root).resolve()
        self.interpreter = interpreter or Interpreter.current()
        problem = bwrap_works(self.interpreter)
        if problem is not None:
            raise RuntimeError(f"the warm sandbox needs bubblewrap: {problem}")
        self.controllers = usable_controllers()
        self._launcher: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._starting = asyncio.Lock()
        # Names this launcher's run groups (after RUN_PREFIX): this server's pid first, so
        # that they are swept if it dies; then which launcher, to remove them when it stops.
        self._name = f"{os.getpid()}-w{next(_launchers)}"
        log_protections(self)

    def protections(self) -> dict[str, bool | str]:
        return {
            "backend": self.name,
            "launcher": "started once, clean (empty environment, own namespaces), forks per run",
            "network": "own empty network namespace per run",
            "filesystem": (
                "private view: /usr and the interpreter read-only, a fresh /tmp, "
                "the run's own workspace read-write"
            ),
            "processes_hidden": "own pid namespace and /proc per run",
            "user": f"uid {NOBODY} in a user namespace, no capabilities, no new user namespaces",
            "environment": "empty but PATH, HOME, LANG and PWD",
            "workdir": f"the workspace at {SANDBOX_WORKDIR}",
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
            "kill_on_timeout": "pid namespace" + (" and cgroups" if self.controllers else ""),
        }

    @property
    def launcher_pid(self) -> int | None:
        """The launcher's process (a bubblewrap leading its session), once started."""
        return self._launcher.pid if self._launcher is not None else None

    async def start(self) -> None:
        """Start the launcher now rather than at the first run (idempotent)."""
        async with self._starting:
            if self._launcher is not None and self._launcher.returncode is None:
                return
            if self._control is not None:
                self._control.close()  # the socket of a launcher that died
                self._control = None
                await asyncio.to_thread(remove_groups, f"{RUN_PREFIX}{self._name}-")
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._launcher = await asyncio.create_subprocess_exec(
                    *self._launcher_argv(theirs.fileno()),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=None,  # its tracebacks belong in the server's log
                    env={},
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            finally:
                theirs.close()
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            ready = await asyncio.wait_for(loop.sock_recv(ours, 16), START_TIMEOUT_SECONDS)
            if ready != b"ready":
                ours.close()
                raise LauncherError("the warm sandbox's launcher did not start")
            self._control = ours

    def _launcher_argv(self, control_fd: int) -> list[str]:
        return [
            "bwrap",
            *("--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL"),
            *("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"),
            *("--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"),
            *filesystem_binds(self.interpreter),
            *("--proc", "/proc", "--dev", "/dev", "--tmpfs", SANDBOX_TMP),
            *("--dir", SANDBOX_WORKDIR, "--bind", str(self.workspace_root), "/workspaces"),
            *self._cgroup_binds(),
            *("--ro-bind", str(ZYGOTE), "/zygote.py", "--remount-ro", "/"),
            *("--", str(self.interpreter.executable), "-I", "-S", "/zygote.py"),
            *(str(control_fd), self._name, *map(str, self._group_limits(self.limits))),
        ]

    def _cgroup_binds(self) -> list[str]:
        """This server's own cgroup directories, in which the launcher makes the runs'."""
        binds = []
        for controller in self.controllers:
            directory = own_cgroup_dir(controller)
            if directory is not None:
                binds += ["--bind", str(directory), f"/cgroup/{controller}"]
        return binds

    @staticmethod
    def _group_limits(limits: Limits) -> tuple[int, int]:
        """pids.max and the memory limit of a run's groups."""
        return limits.max_processes + 1, limits.memory_mb * MIB  # the run's pid 1 counts too

    async def aclose(self) -> None:
        if self._control is not None:
            self._control.close()  # the launcher stops when its control socket closes
            self._control = None
        if self._launcher is not None and self._launcher.returncode is None:
            try:
                await asyncio.wait_for(self._launcher.wait(), 5)
            except TimeoutError:
                self._launcher.kill()
                await self._launcher.wait()
        # Its prepared runs ended with it, before they could remove their groups.
        await asyncio.to_thread(remove_groups, f"{RUN_PREFIX}{self._name}-")

    async def _run(self, command: Command, workdir: Path, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        relative = workdir.relative_to(self.workspace_root)  # ValueError when outside
        if relative == Path():
            raise ValueError("a run's workdir must be a workspace inside the root, not the root")
        loop = asyncio.get_running_loop()
        run, theirs = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        handed = [out_w, err_w]  # ours to close once the launcher has its copies
        try:
            await self._send_run([theirs.fileno(), *handed])
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            run.close()
            raise
        finally:
            theirs.close()
            for fd in handed:
                os.close(fd)
        killed = False
        hits: dict[str, bool] = {}

        def kill() -> None:
            nonlocal killed
            killed = True
            with contextlib.suppress(OSError):
                # The supervisor kills the run's pid 1, and so all of the run.
                run.shutdown(socket.SHUT_RDWR)

        async def exit_code() -> int:
            received = b""
            while chunk := await loop.sock_recv(run, 4096):
                received += chunk
            if received:
                ended = json.loads(received)
                hits.update(ended["limits_hit"])
                return exit_status(os.waitstatus_to_exitcode(ended["status"]))
            if killed:
                return exit_status(-signal.SIGKILL)
            raise LauncherError("the warm sandbox's launcher failed to start this run")

        transports: list[asyncio.BaseTransport] = []
        unread = [out_r, err_r]  # pipe ends no transport owns yet
        try:
            run.setblocking(False)
            max_tasks, memory_bytes = self._group_limits(limits)
            request = {
                "code": command.code,
                "argv": list(command.argv) if command.argv else None,
                "workspace": str(relative),
                "limits": {
                    "cpu_seconds": limits.cpu_seconds,
                    "max_file_mb": limits.max_file_mb,
                    "max_open_files": limits.max_open_files,
                    "address_space_mb": 0 if "memory" in self.controllers else limits.memory_mb,
                    "max_tasks": max_tasks,
                    "memory_bytes": memory_bytes,
                },
            }
            await loop.sock_sendall(run, json.dumps(request).encode() + b"\n")
            stdout = await _pipe_reader(unread, transports)
            stderr = await _pipe_reader(unread, transports)
            finished = await self.supervise(
                wait=exit_code(),
                stdout=stdout,
                stderr=stderr,
                kill=kill,
                limits=limits,
                started=started,
            )
        except BaseException:
            kill()
            raise
        finally:
            run.close()
            for transport in transports:
                transport.close()
            for fd in unread:
                os.close(fd)
        return finished.result(
            limit_hit(
                finished.exit_code,
                memory=hits.get("memory", False),
                processes=hits.get("processes", False),
            )
        )

    async def _send_run(self, fds: list[int]) -> None:
        """Hand the run's descriptors to the launcher, restarting it once if it died."""
        for attempt in (1, 2):
            await self.start()
            assert self._control is not None
            try:
                await _send_fds(self._control, fds)
                return
            except (BrokenPipeError, ConnectionResetError):
                if attempt == 2:
                    raise LauncherError("the warm sandbox's launcher is gone") from None
                if self._launcher is not None:
                    await self._launcher.wait()


async def _send_fds(control: socket.socket, fds: list[int]) -> None:
    """Send on the non-blocking control socket, waiting while its buffer is full."""
    while True:
        try:
            socket.send_fds(control, [b"run"], fds)
            return
        except BlockingIOError:
            await _writable(control)


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock, wake)
    try:
        await ready
    finally:
        loop.remove_writer(sock)


async def _pipe_reader(
    unread: list[int], transports: list[asyncio.BaseTransport]
) -> asyncio.StreamReader:
    """An asyncio reader over the first pipe end of `unread`, moved from there to a
    transport (which then owns it) in `transports`, for the caller to close."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(unread.pop(0), "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    transports.append(transport)
    return reader
