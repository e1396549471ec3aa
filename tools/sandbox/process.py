"""The process backend: each run is a fresh process in its own namespaces (bubblewrap), its
own pids and memory cgroups, under rlimits, with nothing of the server's environment.

How a run starts, and why in this order: a small holder process (perl, HOLDER below) is
started ahead of the run, moved into fresh cgroups, and left blocked reading its program
from a pipe. When the run comes, the server sets the holder's rlimits (`prlimit`) and the
groups' limits, then writes the program (the bubblewrap command line with the code) and
closes the pipe; the holder execs it, and bubblewrap builds the namespaces and the private
filesystem view and runs the code. So everything of the run is born inside its limits,
with no `preexec_fn` (unsafe in a threaded server), and joining the cgroups (which waits
for an RCU grace period, milliseconds) happens while the previous run is going, not on
this run's critical path. Should the server die before writing, the holder reads an
incomplete program and runs nothing. (bubblewrap's own --block-fd would let the run go on
end-of-file, unconfined.)

A session's runs follow one another in its workspace, so while a run goes on, the next
run's sandbox is set up too: another holder gets the rlimits and bubblewrap's command
line (binding that workspace) ahead, and runs the holder again inside, blocked on the same
pipe. A run in the same workspace (the same directory, not only the same path) with the
same rlimits takes it and only writes its program: what is left on its critical path is
the interpreter's own start. Any other run takes an unbound holder as above.

Without bubblewrap (or where user namespaces are refused) the holder execs the program
itself; what that leaves unenforced is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tools.sandbox.base import (
    MEMORY,
    PROCESSES,
    SIGNAL_EXIT_BASE,
    Command,
    Limits,
    Sandbox,
    SandboxResult,
    log_protections,
    logger,
    signal_limit,
)
from tools.sandbox.cgroups import (
    ORPHAN_REMOVE_TRIES,
    RunCgroups,
    own_cgroup_dir,
    usable_controllers,
)

MIB: Final = 1024 * 1024
NOBODY: Final = 65534
SANDBOX_WORKDIR: Final = "/workspace"
SANDBOX_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_TMP: Final = "/tmp"  # noqa: S108 - inside the sandbox: a fresh tmpfs per run
CGROUP_FIRST_PAUSE: Final = 0.0005  # seconds; doubled up to CGROUP_LAST_PAUSE (~2 s in all)
CGROUP_LAST_PAUSE: Final = 1.0
STREAM_LIMIT: Final = 64 * 1024  # asyncio's default buffer for a subprocess's pipes
PIPE_BUFFER: Final = 64 * 1024  # what a Linux pipe holds unless made larger
PERL: Final = "/usr/bin/perl"
HOLDER_NOTHING_TO_RUN: Final = 111  # HOLDER's exit status when its program did not come whole


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


def limit_hit(exit_code: int, *, memory: bool, processes: bool) -> str | None:
    """Which limit stopped or hampered the run, from its exit status and whether its
    cgroups counted a memory kill or a refused fork."""
    if memory:
        return MEMORY
    if by_signal := signal_limit(exit_code):
        return by_signal
    if processes:
        return PROCESSES
    return None


class CgroupRemovals:
    """Removes runs' groups, in the background when need be. The kernel lets go of a group
    about a millisecond after its last process was reaped; a run's result need not wait
    for that (everything in the group is dead by then)."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    def remove(self, groups: RunCgroups) -> None:
        if groups.remove():
            return
        task = asyncio.get_running_loop().create_task(self.remove_when_released(groups))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def wait(self) -> None:
        await asyncio.gather(*self._pending)

    @staticmethod
    async def remove_when_released(groups: RunCgroups) -> None:
        pause = CGROUP_FIRST_PAUSE
        while pause < CGROUP_LAST_PAUSE:
            await asyncio.sleep(pause)
            if groups.remove():
                return
            groups.kill()
            pause *= 2
        logger.warning("could not remove the sandbox cgroups %s", list(groups.directories.values()))


@functools.cache
def filesystem_binds(interpreter: Interpreter) -> tuple[str, ...]:
    """bubblewrap arguments for the read-only view: /usr, the top-level links into it
    (merged-/usr Debian) and the interpreter's prefix when it lives elsewhere (pyenv's
    under /root, mode 0700). Looked up once: they are the same for every run."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    if not interpreter.prefix.is_relative_to("/usr"):
        args += ["--ro-bind", str(interpreter.prefix), str(interpreter.prefix)]
    return tuple(args)


def uid_outside() -> str:
    """Who a sandbox's user namespace maps its uid to on the host: this process's uid."""
    return "the host's root" if os.geteuid() == 0 else f"the server's uid {os.geteuid()}"


@functools.cache
def bwrap_path() -> str:
    return shutil.which("bwrap") or "bwrap"


def bwrap_argv(
    interpreter: Interpreter, workdir: Path, *, held_namespaces: bool = False
) -> list[str]:
    """The bubblewrap command line for a run in `workdir`. With `held_namespaces`, the
    run's holder has already made its network, ipc and uts namespaces (HELD_NAMESPACES)."""
    namespaces = (
        ("--unshare-user", "--unshare-pid", "--unshare-cgroup-try")
        if held_namespaces
        else ("--unshare-all", "--unshare-user")
    )
    return [
        bwrap_path(),
        # user, pid, network, ipc, uts and cgroup namespaces; no new user namespaces inside
        *namespaces,
        "--disable-userns",
        *("--uid", str(NOBODY), "--gid", str(NOBODY)),
        # --die-with-parent also ends the whole run when it has finished (see _run_held).
        *("--die-with-parent", "--new-session", "--clearenv"),
        *("--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", SANDBOX_TMP),
        *("--setenv", "LANG", "C.UTF-8"),
        *filesystem_binds(interpreter),
        *("--proc", "/proc", "--dev", "/dev", "--tmpfs", SANDBOX_TMP),
        # The run's uid maps to the host's root, whom the kernel lets write /proc/sys (the
        # host's kernel settings, not the run's namespaces') without any capability, and
        # bubblewrap leaves it writable (it only looks whether the directory is). Its
        # files read the same through the host's /proc: what they show follows the reader.
        *("--ro-bind", "/proc/sys", "/proc/sys"),
        *("--bind", str(workdir), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR),
        "--",
    ]


@functools.cache
def bwrap_works(interpreter: Interpreter) -> str | None:
    """None when bubblewrap runs the interpreter with every namespace this backend asks
    for; otherwise why not (missing, or user namespaces refused by this kernel)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed; run scripts/system-deps.sh"
    workdir = tempfile.TemporaryDirectory(prefix="agentdash-probe-")
    argv = bwrap_argv(interpreter, Path(workdir.name))
    try:
        probe = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [*argv, *interpreter.argv("pass")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={},
            timeout=30,
            check=False,
        )
    finally:
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
        self.controllers = usable_controllers() if use_cgroups is not False else ()
        # Making a network namespace is the costliest part of bubblewrap's start: as root,
        # the holder makes it (and the ipc and uts ones) ahead, off the run's critical path.
        self._held_namespaces = self.use_bwrap and held_namespaces_work()
        self._removals = CgroupRemovals()
        log_protections(self)

    def protections(self) -> dict[str, bool | str]:
        isolated = self.use_bwrap
        # Outside a user namespace the run has the server's uid: root raises its own hard
        # rlimits, and whoever may write the server's own cgroup (root, or a user it was
        # delegated to) moves into it, out of the run's. For code that tries, those bind
        # not at all.
        rlimits_bind = isolated or os.geteuid() != 0
        cgroups_bind = isolated or not any(
            os.access(directory / "cgroup.procs", os.W_OK)
            for directory in map(own_cgroup_dir, self.controllers)
            if directory is not None
        )
        return {
            "backend": self.name,
            "network": "own empty network namespace" if isolated else False,
            "filesystem": (
                "private view: /usr and the interpreter read-only, a fresh /tmp, "
                "the workspace read-write, /proc/sys read-only"
                if isolated
                else False
            ),
            "processes_hidden": "own pid namespace and /proc" if isolated else False,
            "user": (
                f"uid {NOBODY} in a user namespace ({uid_outside()} outside it), "
                "no capabilities, no new user namespaces"
                if isolated
                else False
            ),
            "environment": "empty but PATH, HOME, LANG and PWD",
            "workdir": f"the workspace at {SANDBOX_WORKDIR}" if isolated else "the workspace",
            "stdin": "closed",
            "memory": (
                ("memory cgroup per run" if cgroups_bind else False)
                if "memory" in self.controllers  # then no RLIMIT_AS (see _run)
                else ("RLIMIT_AS (address space, not resident memory)" if rlimits_bind else False)
            ),
            "processes": (
                "pids cgroup per run" if "pids" in self.controllers and cgroups_bind else False
            ),
            "cpu_time": "RLIMIT_CPU per process" if rlimits_bind else False,
            "wall_time": True,
            "file_size": "RLIMIT_FSIZE per file" if rlimits_bind else False,
            "open_files": "RLIMIT_NOFILE" if rlimits_bind else False,
            "workspace_total_size": False,
            "kill_on_timeout": self._kill_reach(cgroups_bind),
        }

    async def aclose(self) -> None:
        await _holders_of_running_loop(self.controllers, self._held_namespaces).release()
        await self._removals.wait()

    def _kill_reach(self, cgroups_bind: bool) -> str:
        if self.use_bwrap:
            return "pid namespace" + (" and cgroups" if self.controllers else "")
        if self.controllers and cgroups_bind:
            return "cgroups"
        return "process group only: a grandchild that called setsid (or left its cgroups) survives"

    async def _run(self, command: Command, workdir: Path, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        program = list(command.argv) if command.argv else self.interpreter.argv(command.code or "")
        run_rlimits = rlimits(limits, address_space="memory" not in self.controllers)
        setup = None
        if self.use_bwrap:
            bwrap = bwrap_argv(self.interpreter, workdir, held_namespaces=self._held_namespaces)
            setup = SandboxSetup.of(bwrap, run_rlimits, workdir)
        holders = _holders_of_running_loop(self.controllers, self._held_namespaces)
        holder = await holders.take(setup)
        holder = await self._start(holders, holder, setup, program, workdir, limits, run_rlimits)
        try:
            return await self._run_held(holder, limits, started)
        finally:
            holders.ran(setup)
            if holder.groups is not None:
                self._removals.remove(holder.groups)

    async def _start(
        self,
        holders: Holders,
        holder: Holder,
        setup: SandboxSetup | None,
        program: list[str],
        workdir: Path,
        limits: Limits,
        run_rlimits: dict[int, tuple[int, int]],
    ) -> Holder:
        """Start the run's program in `holder`, or in an unbound one should a holder bound
        ahead fail to take it (it died while idle, or its sandbox already uses more memory
        than this run may). Returns the holder the run is in."""
        start = functools.partial(
            Holder.start,
            workdir=workdir,
            rlimits=run_rlimits,
            # bubblewrap's two processes (outside, and pid 1 inside) count too
            max_tasks=limits.max_processes + (2 if self.use_bwrap else 0),
            memory_bytes=limits.memory_mb * MIB,
        )
        if holder.bound_to is not None:
            try:
                start(holder, program=program)
                return holder
            except OSError:
                logger.info("a sandbox set up ahead could not take its run; setting up another")
                await holder.discard()
                holder = await holders.take(None)
        if setup is not None:
            program = [*setup.bwrap, *program]  # the run sets up its sandbox itself
        try:
            start(holder, program=program)
        except BaseException:
            holder.kill()  # its program may not have been written whole; make sure of it
            await holder.exit_code
            if holder.groups is not None:
                self._removals.remove(holder.groups)
            raise
        return holder

    async def _run_held(self, holder: Holder, limits: Limits, started: float) -> SandboxResult:
        finished = await self.supervise(
            wait=holder.exit_code,
            stdout=holder.stdout,
            stderr=holder.stderr,
            kill=holder.kill,
            limits=limits,
            started=started,
        )
        if not self.use_bwrap:
            # Nothing of a finished run may outlive it. Inside bubblewrap the kernel sees to
            # that: bubblewrap's outer process (the holder) exits once the program has, its
            # pid 1 dies with it (--die-with-parent), and with the namespace's pid 1 every
            # process left in the namespace is killed. The cgroups' removal, which kills
            # what it finds, is the backstop.
            holder.kill()
        groups = holder.groups
        return finished.result(
            limit_hit(
                finished.exit_code,
                memory=groups is not None and groups.memory_limit_hit(),
                processes=groups is not None and groups.process_limit_hit(),
            )
        )


# The holder: reads its program from stdin as one frame (the length of what follows, a
# newline, then a mode, the working directory and the arguments, each ended by a NUL),
# checks it arrived whole, and execs it. It reads no byte past its frame: with mode "hold"
# the program is bubblewrap running the holder again inside the sandbox, which reads the
# run's own frame from the same pipe. Mode "run" (no sandbox) also points HOME at the
# working directory; "run" and "sandboxed" put stdin on /dev/null. A pipe closed early
# (the server died, or let a prepared holder go) gives an incomplete frame, and nothing
# runs. Perl because it is always there on Debian (perl-base is essential) and starts in
# about a millisecond, and because a shell cannot read NUL-separated arguments.
HOLDER: Final = r"""
if (@ARGV && $ARGV[0] eq "workspace") {
    # Run again inside the sandbox: its working directory must be the workspace that was
    # looked at when it was set up (device and inode), not whatever its path pointed at by
    # the time bubblewrap bound it. Otherwise it ends, and no run takes it.
    shift @ARGV;
    my $expected = shift @ARGV;
    my @here = stat(".");
    exit 114 unless @here && "$here[0]:$here[1]" eq $expected;
}
if (@ARGV && $ARGV[0] eq "loopback") {
    shift @ARGV;
    # In the network namespace made for the run, loopback up, as bubblewrap would do:
    # SIOCSIFFLAGS on "lo" with IFF_UP | IFF_LOOPBACK | IFF_RUNNING.
    socket(my $probe, 2, 2, 0) or exit 112;
    my $request = pack("a16 s x22", "lo", 0x49);
    ioctl($probe, 0x8914, $request) or exit 112;
    close $probe;
}
# The run's cgroups, joined by writing "0" (this thread) to their "tasks" files: a thread
# that moves itself takes no global lock, where moving a process by its pid (cgroup.procs)
# waits for an RCU grace period and meanwhile holds up every fork and exit on the host.
for my $tasks (@ARGV) {
    my $file;
    unless (open($file, ">", $tasks) && print($file "0") && close($file)) {
        print STDERR "sandbox: cannot join the cgroup $tasks: $!\n";
        exit 113;
    }
}
my ($length, $byte, $data) = ("", "", "");
while (1) {
    sysread(STDIN, $byte, 1) or exit 111;
    last if $byte eq "\n";
    exit 111 unless $byte =~ /\A[0-9]\z/ && length($length) < 9;
    $length .= $byte;
}
exit 111 unless length($length);
while (length($data) < $length) {
    sysread(STDIN, $data, $length - length($data), length($data)) or exit 111;
}
exit 111 unless substr($data, -1) eq "\0";
my @args = split /\0/, substr($data, 0, -1), -1;
my $mode = shift @args;
my $cwd = shift @args;
exit 111 unless @args && defined $cwd && chdir $cwd;
if ($mode eq "run") {
    $ENV{HOME} = $cwd;
} elsif ($mode ne "sandboxed" && $mode ne "hold") {
    exit 111;
}
if ($mode ne "hold") {
    open STDIN, "<", "/dev/null" or exit 111;
}
exec { $args[0] } @args;
print STDERR "$args[0]: $!\n";
exit 127;
"""


def holder_frame(mode: str, cwd: str, program: list[str]) -> bytes:
    """What a holder reads from its stdin (see HOLDER)."""
    fields = b"".join(os.fsencode(part) + b"\0" for part in [mode, cwd, *program])
    return b"%d\n%s" % (len(fields), fields)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for a process with stream pipes, which also says when the
    process ends. `Process.wait()` says so only once its pipes are closed too, which a
    daemonised grandchild holding them can put off forever."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=STREAM_LIMIT, loop=loop)
        self.exit_status: asyncio.Future[int] = loop.create_future()
        self._process: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._process = transport

    def process_exited(self) -> None:
        super().process_exited()
        assert self._process is not None
        returncode = self._process.get_returncode()
        if returncode is not None and not self.exit_status.done():
            self.exit_status.set_result(exit_status(returncode))


# What a holder runs in when it makes the run's network, ipc and uts namespaces (as root:
# bubblewrap then keeps them, so they are the run's own, as --unshare-all would make).
HELD_NAMESPACES: Final = ("/usr/bin/unshare", "--net", "--ipc", "--uts", "--")


@functools.cache
def held_namespaces_work() -> bool:
    """Whether holders can make the run's network, ipc and uts namespaces (tried once)."""
    if os.geteuid() != 0 or not Path(HELD_NAMESPACES[0]).exists():
        return False
    probe = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [*HELD_NAMESPACES, PERL, "-e", HOLDER, "loopback"],
        input=b"",
        capture_output=True,
        env={},
        timeout=30,
        check=False,
    )
    return probe.returncode == HOLDER_NOTHING_TO_RUN


@dataclass(frozen=True)
class SandboxSetup:
    """What a holder can set up ahead of a run: bubblewrap's command line (which binds
    the workspace) and the rlimits, for the workspace directory that `workspace`
    identifies (one removed and made again at the same path is another)."""

    bwrap: tuple[str, ...]
    rlimits: tuple[tuple[int, tuple[int, int]], ...]
    workspace: tuple[int, int]  # st_dev, st_ino

    @classmethod
    def of(
        cls, bwrap: list[str], run_rlimits: dict[int, tuple[int, int]], workdir: Path
    ) -> SandboxSetup:
        identity = os.stat(workdir)
        return cls(
            tuple(bwrap), tuple(sorted(run_rlimits.items())), (identity.st_dev, identity.st_ino)
        )


class Holder:
    """A process started ahead of a run, already in the run's cgroups (and, with
    `namespaces`, in the run's own network, ipc and uts namespaces, loopback up), blocked
    until it is given its program (see HOLDER). A holder can also be bound ahead to the
    sandbox of a run to come (`bind`)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        exit_code: asyncio.Future[int],
        program_pipe: int,
        groups: RunCgroups | None,
    ) -> None:
        self.process = process
        self.exit_code = exit_code
        self.groups = groups
        # A file object, so that a holder dropped unused closes its pipe and ends.
        self._program_pipe = os.fdopen(program_pipe, "wb", buffering=0)
        self._written = 0  # bytes written to it, to size the pipe
        self.bound_to: SandboxSetup | None = None
        # A holder dropped unused (its event loop closed first), or left at exit: end it
        # and remove its groups then, not at the next server's start.
        self._abandoned = weakref.finalize(self, _end_abandoned, process.pid, groups)
        assert process.stdout is not None
        assert process.stderr is not None
        self.stdout: asyncio.StreamReader = process.stdout
        self.stderr: asyncio.StreamReader = process.stderr

    @classmethod
    async def start_new(cls, controllers: tuple[str, ...], *, namespaces: bool = False) -> Holder:
        """Make fresh cgroups and start a holder that joins them (before it reads its
        program). Their limits are set when it is given its program."""
        groups = RunCgroups.create(controllers) if controllers else None
        program_r, program_w = os.pipe()
        try:
            process, exit_code = await _spawn_holder(
                stdin=program_r,
                namespaces=namespaces,
                tasks_files=groups.tasks_files() if groups is not None else [],
            )
        except BaseException:
            os.close(program_w)
            if groups is not None:
                groups.remove()
            raise
        finally:
            os.close(program_r)
        return cls(process, exit_code, program_w, groups)

    def alive(self) -> bool:
        return not self.exit_code.done()

    def bind(self, setup: SandboxSetup) -> None:
        """Set up the sandbox of a run to come, ahead of it: its rlimits, then bubblewrap
        (which binds the workspace and builds the private view), in which the holder
        runs again, waiting for the run's own program."""
        for which, value in setup.rlimits:
            resource.prlimit(self.process.pid, which, value)
        device, inode = setup.workspace
        inside = [PERL, "-e", HOLDER, "workspace", f"{device}:{inode}"]
        self._write(holder_frame("hold", "/", [*setup.bwrap, *inside]))
        self.bound_to = setup

    def start(
        self,
        program: list[str],
        workdir: Path,
        rlimits: dict[int, tuple[int, int]],
        *,
        max_tasks: int,
        memory_bytes: int,
    ) -> None:
        """Set the run's limits, then give the holder its program, which it runs at once.
        A bound holder has its rlimits and sandbox already: `program` runs inside."""
        self._abandoned.detach()  # the run ends it, and removes its groups
        if self.groups is not None:
            self.groups.set_limits(max_tasks=max_tasks, memory_bytes=memory_bytes)
        if self.bound_to is not None:  # (the run's rlimits are part of what it matched)
            self._write(holder_frame("sandboxed", SANDBOX_WORKDIR, program))
        else:
            for which, value in rlimits.items():
                resource.prlimit(self.process.pid, which, value)
            self._write(holder_frame("run", str(workdir), program))
        self._program_pipe.close()

    def _write(self, frame: bytes) -> None:
        self._written += len(frame)
        if self._written > PIPE_BUFFER:
            # Room for all of it, so that the write does not wait for the holder to read.
            fcntl.fcntl(self._program_pipe, fcntl.F_SETPIPE_SZ, self._written)
        self._program_pipe.write(frame)

    def kill(self) -> None:
        """End everything of the run: its cgroups' processes, and its process group."""
        if self.groups is not None:
            self.groups.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def discard(self) -> None:
        """End a holder that will not run anything, and remove its groups."""
        self._abandoned.detach()
        self._program_pipe.close()  # it reads an incomplete program and exits
        self.kill()
        await self.exit_code
        await self.process.wait()  # its pipes' transports close with it
        if self.groups is not None:
            await CgroupRemovals.remove_when_released(self.groups)


def _end_abandoned(pid: int, groups: RunCgroups | None) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if groups is not None:
        groups.kill()
        for _ in range(ORPHAN_REMOVE_TRIES):  # until the kernel lets go of them
            if groups.remove():
                return
            time.sleep(0.005)


class Holders:
    """Keeps holders ready for the next runs of an event loop, prepared while the current
    one runs. One per loop, set of cgroup controllers and way of making the network
    namespace, shared by every process sandbox there. A session's runs follow one another
    in its workspace, so a holder is kept bound to the sandbox of each of the last few
    runs' (bubblewrap already set up in its workspace, with its rlimits): the next run
    there only starts its program. One more is kept unbound, for a run in any other
    workspace, which then sets up its sandbox."""

    BOUND_KEPT: Final = 4  # sandboxes set up ahead, for as many sessions taking turns

    def __init__(self, controllers: tuple[str, ...], namespaces: bool) -> None:
        self.controllers = controllers
        self.namespaces = namespaces
        self._unbound: asyncio.Task[Holder] | None = None
        # Oldest first: the one let go when another is set up.
        self._bound: dict[SandboxSetup, asyncio.Task[Holder]] = {}
        self._leaving: set[asyncio.Task[None]] = set()

    def _start_new(self) -> Coroutine[Any, Any, Holder]:
        return Holder.start_new(self.controllers, namespaces=self.namespaces)

    async def _start_bound(self, setup: SandboxSetup) -> Holder:
        holder = await self._start_new()
        try:
            holder.bind(setup)
        except BaseException:
            await holder.discard()
            raise
        return holder

    async def take(self, setup: SandboxSetup | None) -> Holder:
        """A holder for a run: the one bound to `setup` if there is one (the next run's
        sandbox there is then set up while this one goes on), else an unbound one."""
        holder = None
        if setup is not None and (bound := self._bound.pop(setup, None)) is not None:
            holder = await self._usable(bound)
        if holder is None and self._unbound is not None:
            unbound, self._unbound = self._unbound, None
            holder = await self._usable(unbound)
        if holder is None:
            holder = await self._start_new()
        if self._unbound is None:  # (a run that overlapped this one may have started one)
            self._unbound = asyncio.get_running_loop().create_task(self._start_new())
        if holder.bound_to is not None:
            self.ran(setup)
        return holder

    def ran(self, setup: SandboxSetup | None) -> None:
        """Set up the next run's sandbox in `setup`'s workspace, unless one is. A run that
        found none calls this once it is over, not as it starts: it may well be a
        session's first, whose next run comes later, and it runs faster without that work
        beside it on the machine."""
        if setup is None or setup in self._bound:
            return
        self._bound[setup] = asyncio.get_running_loop().create_task(self._start_bound(setup))
        while len(self._bound) > self.BOUND_KEPT:
            self._let_go(self._bound.pop(next(iter(self._bound))))

    @staticmethod
    async def _usable(prepared: asyncio.Task[Holder]) -> Holder | None:
        try:
            holder = await prepared
        except Exception:
            logger.exception("a sandbox holder prepared ahead failed; starting another")
            return None
        if not holder.alive():  # (a bound one whose bubblewrap failed, say)
            await holder.discard()
            return None
        return holder

    def _let_go(self, prepared: asyncio.Task[Holder]) -> None:
        """End a prepared holder no run will take, in the background."""

        async def discard() -> None:
            try:
                holder = await prepared
            except Exception:
                return
            await holder.discard()

        task = asyncio.get_running_loop().create_task(discard())
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def release(self) -> None:
        """End the holders kept ready (a sandbox closing; the next run starts others)."""
        for prepared in [self._unbound, *self._bound.values()]:
            if prepared is not None:
                self._let_go(prepared)
        self._unbound = None
        self._bound.clear()
        await asyncio.gather(*self._leaving)


_holders: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[tuple[str, ...], bool], Holders]
] = weakref.WeakKeyDictionary()


def _holders_of_running_loop(controllers: tuple[str, ...], namespaces: bool) -> Holders:
    of_loop = _holders.setdefault(asyncio.get_running_loop(), {})
    key = (controllers, namespaces)
    if key not in of_loop:
        of_loop[key] = Holders(controllers, namespaces)
    return of_loop[key]


async def _spawn_holder(
    *, stdin: int, namespaces: bool, tasks_files: list[Path]
) -> tuple[asyncio.subprocess.Process, asyncio.Future[int]]:
    """Start HOLDER joining the cgroups of `tasks_files` and reading its program from
    `stdin`, in a new session, with only PATH, HOME and LANG in its environment
    (bubblewrap clears even those). Returns the process and its exit status to come."""
    loop = asyncio.get_running_loop()
    protocol = _Protocol(loop)
    holder = [PERL, "-e", HOLDER]
    if namespaces:
        holder = [*HELD_NAMESPACES, *holder, "loopback"]
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        *holder,
        *map(str, tasks_files),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": SANDBOX_PATH, "HOME": SANDBOX_TMP, "LANG": "C.UTF-8"},
        cwd="/",
        start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exit_status
