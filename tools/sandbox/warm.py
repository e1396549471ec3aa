"""The warm backend: the process backend's protections, with the interpreter already
started. A launcher (tools/sandbox/zygote.py) is started once, as a separate clean
process inside bubblewrap, and forks per run; see that file for what each run gets.

The server lends the launcher its own cgroup directories (pids, memory), in which each
prepared run makes and joins its groups ahead of time. Per run the server gives pipes
for the output and a socket whose closing kills the run. Workspaces must live under
the launcher's root, which it sees (and hides again from each run but for that run's
own workspace): a sandbox's own `workspace_root`, or else the parent of the run's
workspace, with one launcher per root shared by the whole process (`shared_launcher`).
The launcher is not bound to an event loop or thread: Django's runner threads, each with
a loop of its own, share it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    uid_outside,
)

ZYGOTE: Final = Path(__file__).with_name("zygote.py")
_launchers = itertools.count()
START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 5.0


# The thread that starts launchers, alive as long as the process: bubblewrap's
# --die-with-parent kills a launcher when the *thread* that started it ends (the parent
# death signal follows the thread), as an event loop's executor threads do.
_STARTER: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-launcher")


class LauncherError(RuntimeError):
    """The launcher could not start a run (its traceback is on the server's stderr)."""


class Launcher:
    """A launcher process (zygote.py inside bubblewrap) for the workspaces under one root,
    usable from any thread and event loop: started when first needed, started again if it
    died, stopped by `stop`. It is started from nothing (an empty environment, a fresh
    interpreter), so it holds none of the server's memory or secrets."""

    def __init__(self, workspace_root: Path, interpreter: Interpreter, limits: Limits) -> None:
        self.workspace_root = workspace_root
        self.interpreter = interpreter
        self.controllers = usable_controllers()
        self._default_limits = limits
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._starting = threading.Lock()
        self._owner = os.getpid()
        # Names this launcher's run groups (after RUN_PREFIX): this server's pid first, so
        # that they are swept if it dies; then which launcher, to remove them when it stops.
        self.name = f"{os.getpid()}-w{next(_launchers)}"

    @property
    def pid(self) -> int | None:
        """The launcher's process (a bubblewrap leading its session), once started."""
        return self._process.pid if self._process is not None else None

    def running(self) -> socket.socket | None:
        """The control socket, if the launcher is running (a cheap check, for every run)."""
        if os.getpid() != self._owner:
            # A fork of the server: the launcher is the parent's. Start one of our own.
            self._process, self._control, self._owner = None, None, os.getpid()
            self.name = f"{os.getpid()}-w{next(_launchers)}"
        process, control = self._process, self._control
        if process is None or control is None or process.poll() is not None:
            return None
        return control

    async def control(self) -> socket.socket:
        """The control socket of a running launcher, started first if need be."""
        if (control := self.running()) is not None:
            return control
        return await asyncio.get_running_loop().run_in_executor(_STARTER, self._start)

    def _start(self) -> socket.socket:
        """Start the launcher and wait until it is ready (blocks: runs in a thread)."""
        with self._starting:
            if (control := self.running()) is not None:
                return control  # another thread started it meanwhile
            self._stop()  # what is left of one that died
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._process = subprocess.Popen(  # noqa: S603 - fixed arguments, no shell
                    self._argv(theirs.fileno()),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=None,  # its tracebacks belong in the server's log
                    env={},
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            finally:
                theirs.close()
            ours.settimeout(START_TIMEOUT_SECONDS)
            try:
                ready = ours.recv(16)
            except TimeoutError:
                ready = b""
            if ready != b"ready":
                ours.close()
                self._stop()
                raise LauncherError("the warm sandbox's launcher did not start")
            ours.setblocking(False)
            self._control = ours
            return ours

    def _argv(self, control_fd: int) -> list[str]:
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
            *(str(control_fd), self.name, *map(str, group_limits(self._default_limits))),
        ]

    def _cgroup_binds(self) -> list[str]:
        """This server's own cgroup directories, in which the launcher makes the runs'."""
        binds = []
        for controller in self.controllers:
            directory = own_cgroup_dir(controller)
            if directory is not None:
                binds += ["--bind", str(directory), f"/cgroup/{controller}"]
        return binds

    def let_go(self) -> None:
        """Close the control socket without waiting: the launcher stops on its own."""
        if self._control is not None:
            self._control.close()

    def failed(self) -> None:
        """The control socket broke: end that launcher, so the next run starts another."""
        with self._starting:
            self._stop()

    def stop(self) -> None:
        """Stop the launcher and remove what its runs left (blocks: call from a thread)."""
        with self._starting:
            self._stop()

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # the launcher stops when its control socket closes
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            self._process = None
            # Its prepared runs ended with it, before they could remove their groups.
            remove_groups(f"{RUN_PREFIX}{self.name}-")


def group_limits(limits: Limits) -> tuple[int, int]:
    """pids.max and the memory limit of a run's groups."""
    return limits.max_processes, limits.memory_mb * MIB


_shared: dict[tuple[Path, Interpreter], Launcher] = {}
_shared_lock = threading.Lock()


def shared_launcher(workspace_root: Path, interpreter: Interpreter, limits: Limits) -> Launcher:
    """The one launcher of this process for the workspaces under `workspace_root`."""
    with _shared_lock:
        key = (workspace_root, interpreter)
        if key not in _shared:
            _shared[key] = Launcher(workspace_root, interpreter, limits)
        return _shared[key]


def stop_shared_launchers() -> None:
    """Stop every shared launcher and remove what their runs left (blocks)."""
    with _shared_lock:
        launchers = list(_shared.values())
        _shared.clear()
    for launcher in launchers:
        launcher.stop()


@atexit.register
def _let_shared_launchers_go() -> None:
    # Each stops when its control socket closes (as it would with this process anyway),
    # without waiting here; what their runs left is swept by the next server to start
    # (the groups' names hold this process's pid).
    for launcher in _shared.values():
        launcher.let_go()


class WarmSandbox(Sandbox):
    """Runs in a launcher's prepared spares. With `workspace_root`, the sandbox has a
    launcher of its own (stopped by `aclose`); without, each run's workspace must be a
    directory directly under a root, and every warm sandbox of the process shares one
    launcher per root (and so per Django worker process: sessions' workspaces share
    their parent)."""

    name = "warm"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        workspace_root: Path | None = None,
        interpreter: Interpreter | None = None,
    ) -> None:
        super().__init__(limits)
        self.interpreter = interpreter or Interpreter.current()
        problem = bwrap_works(self.interpreter)
        if problem is not None:
            raise RuntimeError(f"the warm sandbox needs bubblewrap: {problem}")
        self.controllers = usable_controllers()
        self.workspace_root = Path(workspace_root).resolve() if workspace_root else None
        self._own = (
            Launcher(self.workspace_root, self.interpreter, self.limits)
            if self.workspace_root is not None
            else None
        )
        log_protections(self)

    def protections(self) -> dict[str, bool | str]:
        return {
            "backend": self.name,
            "launcher": "started once, clean (empty environment, own namespaces), forks per run",
            "network": "own empty network namespace per run",
            "filesystem": (
                "private view: /usr and the interpreter read-only, a fresh /tmp, "
                "the run's own workspace read-write, /proc/sys read-only"
            ),
            "processes_hidden": "own pid namespace, /proc and session per run",
            "user": (
                f"uid {NOBODY} in a user namespace ({uid_outside()} outside it), "
                "no capabilities, no new user namespaces, no prlimit on another process "
                "(seccomp)"
            ),
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
    def launcher(self) -> Launcher | None:
        """This sandbox's own launcher (None when it uses shared ones)."""
        return self._own

    async def start(self) -> None:
        """Start this sandbox's own launcher now rather than at the first run."""
        if self._own is None:
            raise ValueError("a warm sandbox without a workspace_root shares launchers")
        await self._own.control()

    def _launcher_for(self, workdir: Path) -> tuple[Launcher, Path]:
        """The launcher for a run in `workdir`, and the workdir relative to its root."""
        if self._own is not None:
            relative = workdir.relative_to(self._own.workspace_root)  # ValueError when outside
            if relative == Path():
                raise ValueError(
                    "a run's workdir must be a workspace inside the root, not the root"
                )
            return self._own, relative
        return shared_launcher(workdir.parent, self.interpreter, self.limits), Path(workdir.name)

    async def aclose(self) -> None:
        if self._own is not None:
            await asyncio.to_thread(self._own.stop)

    def _request(self, command: Command, workspace: Path, limits: Limits) -> bytes:
        """What the run's spare (its pid 1, which supervises it) reads: one line of JSON."""
        max_tasks, memory_bytes = group_limits(limits)
        request = {
            "code": command.code,
            "argv": list(command.argv) if command.argv else None,
            "workspace": str(workspace),
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "max_file_mb": limits.max_file_mb,
                "max_open_files": limits.max_open_files,
                "address_space_mb": 0 if "memory" in self.controllers else limits.memory_mb,
                "max_tasks": max_tasks,
                "memory_bytes": memory_bytes,
            },
        }
        return json.dumps(request).encode() + b"\n"

    async def _run(self, command: Command, workdir: Path, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        launcher, relative = self._launcher_for(workdir)
        loop = asyncio.get_running_loop()
        run, theirs = socket.socketpair()
        run.setblocking(False)
        request = self._request(command, relative, limits)
        # Sent first: the spare finds it as it takes the run (the rest, if the socket's
        # buffer did not hold it all, follows).
        try:
            sent = run.send(request)
        except BlockingIOError:
            sent = 0
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        handed = [out_w, err_w]  # ours to close once the launcher has its copies
        try:
            await _send_run(launcher, [theirs.fileno(), *handed])
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
                # The run's pid 1 sees the socket close and kills all of it.
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
            if sent < len(request):
                await loop.sock_sendall(run, request[sent:])
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


async def _send_run(launcher: Launcher, fds: list[int]) -> None:
    """Hand a run's descriptors to the launcher, starting another once if it died."""
    for attempt in (1, 2):
        control = await launcher.control()
        try:
            await _send_fds(control, fds)
            return
        except OSError:  # the launcher is gone (its end of the socket closed)
            await asyncio.to_thread(launcher.failed)
            if attempt == 2:
                raise LauncherError("the warm sandbox's launcher is gone") from None


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
