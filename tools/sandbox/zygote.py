"""The warm sandbox's launcher (zygote). Not imported by the server: the warm backend runs
this file with the base interpreter (`python -I -S`), inside bubblewrap, with an empty
environment, so it starts clean and holds nothing of the server's memory or secrets.

bubblewrap gives it, once, what every run shares: user, pid, network, ipc and uts
namespaces, a read-only root holding /usr and the interpreter, and the workspaces'
parent directory at /workspaces. It keeps SPARES runs prepared ahead. Each spare is
forked as pid 1 of a fresh pid namespace and is its run's supervisor: it has unshared
fresh mount, network, ipc and uts namespaces, with a fresh /tmp and /dev/shm, made the
run's cgroups (in the server's own, lent at /cgroup, then covered) with the server's
default limits, and started its runner, pid 2, which has joined those cgroups, mounted
its own /proc and become uid 65534 with no capabilities in a user namespace of its own.
When a run comes, the spare mounts the run's workspace (at /workspace, and covers every
other one) and sets other limits if the run has them, and the runner sets the rlimits
and runs the code in the interpreter that is already started; the launcher meanwhile
prepares the next spare. So a run pays for neither an interpreter's start nor its
namespaces' and cgroups' creation, and two processes are all it costs.

Protocol, on the socket passed as argv[1] (SOCK_SEQPACKET; argv[2] names the launcher,
argv[3] and argv[4] are the default pids.max and memory limit): the zygote sends
b"ready"; then per run the server sends b"run" with the file descriptors [run socket,
stdout, stderr]. On the run socket the server sends one line of JSON (code or argv,
workspace, limits); once the runner has ended and whatever it left is killed, the spare
answers {"status": <the runner's wait status>, "limits_hit": ...} and closes it. The
server hanging up the run socket kills the run.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback
import types
from typing import TextIO

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PTRACE_DETACH = 17
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCSIFFLAGS = 0x8914
IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40
NOBODY = 65534
MIB = 1024 * 1024
MAX_FDS = 16
MAX_REQUEST_BYTES = 1 << 20
CGROUPS = "/cgroup"
RUN_PREFIX = "agentdash-run-"  # then the launcher's name, which starts with the server's pid
REMOVE_TRIES = 2000  # milliseconds
SPARES = 3
REPORTS_AT_ONCE = 64  # children's reports pid 1 takes before it looks at the server again
# The server's default pids.max and memory limit (argv[3], argv[4]), set on each spare's
# groups while it is prepared.
DEFAULT_GROUP_LIMITS: tuple[int, int] | None = None
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",  # noqa: S108 - the run's own fresh tmpfs
    "LANG": "C.UTF-8",
    "PWD": "/workspace",
}

_libc = ctypes.CDLL(None, use_errno=True)
# Looked up, and what does not change made, once in the launcher rather than in every
# spare and runner: what a forked process does first costs it page copies.
_mount, _prctl, _capset, _ptrace = _libc.mount, _libc.prctl, _libc.capset, _libc.ptrace
LOOPBACK_UP = struct.pack("16sh", b"lo", IFF_UP_LOOPBACK_RUNNING)
CAPABILITY_HEADER = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
with open("/proc/sys/kernel/cap_last_cap") as _file:
    LAST_CAPABILITY = int(_file.read())


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() or None,
        ),
        f"mount {target}",
    )


def cover(target: str) -> None:
    """Hide what is mounted at `target` under an empty read-only tmpfs. Not an unmount:
    that waits for an RCU grace period (milliseconds here), a mount does not. Nothing in a
    run can uncover it: that takes CAP_SYS_ADMIN over the launcher's user namespace."""
    mount("none", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0")


def prepare_filesystem() -> None:
    """In the spare's fresh mount namespace: a fresh /tmp and /dev/shm, /dev read-only
    (the root already is). Raises if any step fails: no run without its view."""
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")  # noqa: S108
    mount("none", "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")  # noqa: S108


def show_only_workspace(workspace: str) -> None:
    """The run's workspace at /workspace, and no other session's workspace reachable."""
    if os.path.isabs(workspace) or ".." in workspace.split("/"):
        raise ValueError(f"bad workspace {workspace!r}")
    mount(f"/workspaces/{workspace}", "/workspace", None, MS_BIND)
    mount("none", "/workspace", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    cover("/workspaces")


PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
# Parts of /proc that change the host's kernel, not the run's namespaces: the run's uid
# maps to the host's root, whom the kernel lets write them without any capability
# (core_pattern alone would have the host's root run a program). Read-only, as bubblewrap
# makes them for the process backend.
# /proc/1 too: pid 1 is the run's supervisor, whose files there (oom_score_adj, say) the
# run's uid would otherwise let it write.
READ_ONLY_PROC = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/1")


def protect_proc() -> None:
    """READ_ONLY_PROC of the runner's /proc made read-only, by binds of themselves. Done by
    the supervisor once the runner is ready: the runner first writes a sysctl of its own
    user namespace (become_nobody), and has no capability left to undo the binds."""
    for path in READ_ONLY_PROC:
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | PROC_FLAGS)


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        fcntl.ioctl(probe, SIOCSIFFLAGS, LOOPBACK_UP)


def become_nobody() -> None:
    """A user namespace of the run's own where it is uid 65534 with no capability, no new
    user namespace can be made below it, no exec can give privileges back, and no
    prlimit reaches its supervisor."""
    os.unshare(os.CLONE_NEWUSER)
    # Mapping only our own ids needs no privilege, as long as setgroups is denied.
    for path, content in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{NOBODY} 0 1"),
        ("/proc/self/gid_map", f"{NOBODY} 0 1"),
        ("/proc/sys/user/max_user_namespaces", "0"),
    ):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, content.encode())
        finally:
            os.close(fd)
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    drop_capabilities()
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    refuse_prlimit_on_others()


# seccomp, for the one thing its uid lets the run do to its supervisor. The run's uid and
# gid are pid 1's (both the host's root: the launcher's user namespace maps nothing else),
# and for prlimit the kernel asks no more than that: the run could set pid 1's limits (an
# open-file limit of 0, a CPU limit of a second) and leave its cgroups behind. prlimit64
# on any process but the caller itself (pid 0) is refused, and so is every system call of
# another ABI (i386's int 0x80, x32), whose numbers differ.
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_EPERM = 0x00050000 | 1
X32_SYSCALL_BIT = 0x40000000
# The machine's audit architecture and prlimit64's number on it.
NATIVE_PRLIMIT64 = {"x86_64": (0xC000003E, 302), "aarch64": (0xC00000B7, 261)}


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def refuse_prlimit_on_others() -> None:
    machine = os.uname().machine
    if machine not in NATIVE_PRLIMIT64:  # no run, rather than one that could break pid 1
        raise OSError(f"prlimit64's system call number on {machine} is not known here")
    architecture, prlimit64 = NATIVE_PRLIMIT64[machine]
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 1, 0, architecture),
        (BPF_RET_K, 0, 0, SECCOMP_RET_EPERM),
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JGE_K, 3, 0, X32_SYSCALL_BIT),
        (BPF_JEQ_K, 0, 3, prlimit64),
        (BPF_LD_W_ABS, 0, 0, 16),  # the low half of args[0], the pid
        (BPF_JEQ_K, 1, 0, 0),
        (BPF_RET_K, 0, 0, SECCOMP_RET_EPERM),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.c_void_p))
    _check(_prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def drop_capabilities() -> None:
    """Every capability, from every set. The namespace's creator holds them all there, and
    its uid never changed from 0 inside it (it was 65534 from the start), so they did not
    go with a uid change."""
    for capability in range(LAST_CAPABILITY + 1):  # the bounding set first: takes CAP_SETPCAP
        _check(_prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), "drop from bounding set")
    _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    header = ctypes.create_string_buffer(CAPABILITY_HEADER, 8)
    no_capabilities = ctypes.create_string_buffer(24)  # effective, permitted, inheritable x 2
    _check(_capset(header, no_capabilities), "capset")


def set_limits(limits: dict[str, int]) -> None:
    values = {
        resource.RLIMIT_CPU: (limits["cpu_seconds"], limits["cpu_seconds"] + 1),
        resource.RLIMIT_FSIZE: (limits["max_file_mb"] * MIB,) * 2,
        resource.RLIMIT_NOFILE: (limits["max_open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if limits.get("address_space_mb"):
        values[resource.RLIMIT_AS] = (limits["address_space_mb"] * MIB,) * 2
    for which, value in values.items():
        resource.setrlimit(which, value)


class RunGroups:
    """The cgroups of a spare's run, one per controller the server lent (its own groups,
    at /cgroup/<controller>). Made, and joined by the runner, while the spare is prepared,
    because joining a cgroup can wait for an RCU grace period, milliseconds a run need not
    spend.
    Reached through directory descriptors, so that /cgroup can be covered before the
    run: its uid maps to root, which could otherwise rewrite its own limits. Their limits
    are set ahead too, to the server's defaults; a run with others changes them."""

    def __init__(self, launcher: str) -> None:
        self.name = f"{RUN_PREFIX}{launcher}-{os.urandom(4).hex()}"
        self.parents: dict[str, int] = {}
        self.groups: dict[str, int] = {}
        self.limits: tuple[int, int] | None = None
        controllers = sorted(os.listdir(CGROUPS)) if os.path.isdir(CGROUPS) else []
        for controller in controllers:
            parent = os.open(f"{CGROUPS}/{controller}", os.O_RDONLY | os.O_DIRECTORY)
            self.parents[controller] = parent
            os.mkdir(self.name, dir_fd=parent)
            self.groups[controller] = os.open(
                self.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent
            )
        if controllers:
            cover(CGROUPS)
        if DEFAULT_GROUP_LIMITS is not None:
            self.set_limits(*DEFAULT_GROUP_LIMITS)

    def tasks(self) -> list[int]:
        """The groups' "tasks" files, open for the runner to write "0" to: a thread that
        moves itself takes no global lock, where moving a process by pid (cgroup.procs)
        waits for an RCU grace period and meanwhile holds up every fork and exit on the
        host. (The runner is single-threaded, so its one thread is all of it.) The spare,
        pid 1, stays out of them: it removes them once the run is over."""
        return [os.open("tasks", os.O_WRONLY, dir_fd=group) for group in self.groups.values()]

    def set_limits(self, max_tasks: int, memory_bytes: int) -> None:
        if self.limits == (max_tasks, memory_bytes):
            return
        self.limits = (max_tasks, memory_bytes)
        if "pids" in self.groups:
            _write(self.groups["pids"], "pids.max", str(max_tasks))
        if "memory" in self.groups:
            names = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            try:
                for name in names:
                    _write(self.groups["memory"], name, str(memory_bytes))
            except FileNotFoundError:  # no swap accounting here
                pass
            except OSError:
                # The kernel keeps memory <= memory+swap at every step: to raise both,
                # the second goes first.
                for name in reversed(names):
                    _write(self.groups["memory"], name, str(memory_bytes))

    def limits_hit(self) -> dict[str, bool]:
        return {
            "memory": "memory" in self.groups
            and _counter(self.groups["memory"], "memory.oom_control", "oom_kill") > 0,
            "processes": "pids" in self.groups
            and _counter(self.groups["pids"], "pids.events", "max") > 0,
        }

    def remove(self) -> None:
        """Remove the groups, waiting for the kernel to let go of each (about a
        millisecond after its last process was reaped)."""
        for controller, parent in self.parents.items():
            for _ in range(REMOVE_TRIES):
                try:
                    os.rmdir(self.name, dir_fd=parent)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.001)
            else:
                print(f"could not remove the {controller} cgroup {self.name}", file=sys.stderr)


def _write(directory: int, name: str, text: str) -> None:
    fd = os.open(name, os.O_WRONLY, dir_fd=directory)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _counter(directory: int, name: str, key: str) -> int:
    fd = os.open(name, os.O_RDONLY, dir_fd=directory)
    try:
        lines = os.read(fd, 4096).decode().splitlines()
    finally:
        os.close(fd)
    return next((int(line.split()[1]) for line in lines if line.split()[0] == key), 0)


def runner(jobs: socket.socket, tasks: list[int]) -> None:
    """pid 2 of the spare's pid namespace. Joins the run's cgroups, gets ready (its /proc,
    uid 65534, the standard streams, the compiler paged in), waits for its run, then runs
    it. Never returns."""
    status = 1
    try:
        # What the spare set up for itself is not the run's.
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in tasks:
            os.write(fd, b"0")  # "0": this thread; the run's processes are born in them
            os.close(fd)
        mount("proc", "/proc", "proc", PROC_FLAGS)
        become_nobody()
        streams = standard_streams()
        compile("pass", "<string>", "exec")  # copies the compiler's pages before the run
        # What every run gets, done while waiting (each step touches memory the fork
        # shares with the launcher, so it costs page copies).
        os.environ.clear()
        os.environ.update(ENVIRONMENT)
        null = os.open("/dev/null", os.O_RDONLY)
        jobs.send(b"ready")
        line, fds, _, _ = socket.recv_fds(jobs, MAX_REQUEST_BYTES, MAX_FDS)
        if not line:
            os._exit(0)  # pid 1 closed its end: no run is coming
        request = json.loads(line)
        stdout, stderr = fds
        os.chdir("/workspace")  # the spare has mounted the run's workspace there
        set_limits(request["limits"])
        for fd, target in ((null, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        os.closerange(3, 1 << 20)
        if request.get("argv"):
            # The interpreter ignores these; a program it starts must not (as subprocess's
            # restore_signals does): `head` past the file limit dies of SIGXFSZ.
            for number in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(number, signal.SIG_DFL)
            os.execvpe(request["argv"][0], request["argv"], ENVIRONMENT)  # noqa: S606
        gc.enable()  # the launcher's objects stay frozen; the code's cycles are collected
        status = run_code(request["code"], streams)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def standard_streams() -> tuple[TextIO, TextIO, TextIO]:
    """New sys.stdin, stdout and stderr, on descriptors 0, 1 and 2 whatever they will be
    (the run's /dev/null and pipes are put there later)."""
    return (
        open(0, closefd=False),  # they live as long as the run
        open(1, "w", closefd=False),
        open(2, "w", closefd=False, errors="backslashreplace"),
    )


def run_code(code: str, streams: tuple[TextIO, TextIO, TextIO]) -> int:
    """Run `code` as `python -c` would, in this already started interpreter."""
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    sys.stdin, sys.stdout, sys.stderr = streams
    status = 0
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)  # noqa: S102 - the sandboxed code
    except SystemExit as exit_:
        status = _exit_status(exit_.code)
    except BaseException as error:
        # From the code's own frames, as `python -c` prints it (not this function's).
        traceback.print_exception(error.with_traceback(error.__traceback__.tb_next))
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            status = status or 120  # as the interpreter does when stdout cannot be flushed
    return status


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def spare(control: socket.socket, taken: int, launcher: str) -> None:
    """A prepared run, forked by the launcher as pid 1 of a fresh pid namespace: its other
    namespaces, its cgroups, its runner (pid 2), then waiting for a run on the control
    socket, which it supervises. Never returns.

    It tells the launcher on `taken`: b"+" when it took a run (prepare the next one),
    b"-" when the control socket closed (the launcher is stopping), b"x" when it could
    not be prepared (then the launcher stops, and the server sees it gone, rather than
    runs waiting for a spare that never comes)."""
    try:
        # A session of its own, which the runner inherits: kill(0) from the run reaches
        # the run's process group, which would otherwise be the launcher's, and so every
        # other run's too (a process group spans pid namespaces).
        os.setsid()
        # Woken by a child's end (wait_for_runner's select() also watches the server's
        # socket). Only a signal with a handler reaches pid 1 from inside its namespace:
        # the run may wake it at will, but not interrupt it, as Python's SIGINT handler
        # would. A full pipe only means a wake-up is pending already.
        child_ended, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _signal, _frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.unshare(os.CLONE_NEWNS | os.CLONE_NEWNET | os.CLONE_NEWIPC | os.CLONE_NEWUTS)
        prepare_filesystem()
        groups = RunGroups(launcher)
        tasks = groups.tasks()
        bring_up_loopback()
        jobs, runner_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:  # never back into this function's handler, which speaks for the spare
                for end in (jobs, control):
                    end.close()
                runner(runner_end, tasks)
            finally:
                os._exit(1)
        runner_end.close()
        for fd in tasks:
            os.close(fd)
        if jobs.recv(16) != b"ready":
            raise RuntimeError("the runner could not get ready")
        protect_proc()
    except BaseException:
        _print_error()
        os.write(taken, b"x")
        os._exit(1)  # and with pid 1, everything of this spare
    try:
        message, fds, _, _ = socket.recv_fds(control, 16, MAX_FDS)
        if not message:
            os.write(taken, b"-")
            return
        os.write(taken, b"+")
        control.close()
        run = socket.socket(fileno=fds[0])
        try:
            supervise(run, fds[1:], jobs, pid, child_ended, groups)
        finally:
            run.close()
    except BaseException:
        _print_error()  # this run fails (the server sees its socket close); no other
    finally:
        _end(groups)


def _print_error() -> None:
    with contextlib.suppress(BaseException):  # (out of descriptors, say)
        traceback.print_exc()


def supervise(
    run: socket.socket,
    fds: list[int],
    jobs: socket.socket,
    pid: int,
    child_ended: int,
    groups: RunGroups,
) -> None:
    """Hand the run to the prepared runner; when it has ended, end what it left and tell
    the server how it ended. If the server hangs up first, the run ends then."""
    request = _receive_line(run)
    parsed = json.loads(request)
    show_only_workspace(parsed["workspace"])
    groups.set_limits(parsed["limits"]["max_tasks"], parsed["limits"]["memory_bytes"])
    socket.send_fds(jobs, [request], fds)
    for fd in fds:
        os.close(fd)
    status = wait_for_runner(pid, run, child_ended)
    end_all()
    if status is not None:
        with contextlib.suppress(OSError):  # the server gave up as the run ended
            run.sendall(json.dumps({"status": status, "limits_hit": groups.limits_hit()}).encode())


def wait_for_runner(pid: int, run: socket.socket, child_ended: int) -> int | None:
    """The runner's wait status once it has ended, reaping orphans meanwhile (they count
    against the run's process limit until reaped); None if the server hung up first."""
    while True:
        with contextlib.suppress(BlockingIOError):
            os.read(child_ended, 4096)  # first: a child that ends from here on wakes select
        ended, more = reap()
        for child, status in ended:
            if child == pid:
                return status
        ready, _, _ = select.select([child_ended, run], [], [], 0 if more else None)
        if run in ready:
            return None


def reap(*, block: bool = False) -> tuple[list[tuple[int, int]], bool]:
    """The children that ended, reaped, as (pid, wait status); with `block`, waiting
    until one has. At most REPORTS_AT_ONCE reports are taken: the second value says that
    more may be waiting."""
    ended = []
    for _ in range(REPORTS_AT_ONCE):
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return ended, False
        if pid == 0:
            return ended, False
        if os.WIFSTOPPED(status):
            # A process that asked to be traced (PTRACE_TRACEME) made its parent, pid 1, its
            # tracer: let it go on untraced, with the signal that stopped it. One that does
            # so again and again makes reports without end, hence the bound: pid 1 must get
            # back to the server's socket.
            _ptrace(PTRACE_DETACH, pid, None, os.WSTOPSIG(status))
        else:
            ended.append((pid, status))
    return ended, True


def end_all() -> None:
    """Kill whatever of the run is left and reap it. From pid 1, kill(-1) reaches every
    process of the namespace and nothing else; a fork racing it either is reached or fails."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)
    while reap(block=True)[1]:
        pass


def _end(groups: RunGroups) -> None:
    """End the spare: whatever is left of its run killed and reaped, its cgroups removed.
    Never returns."""
    try:
        end_all()
        groups.remove()
    finally:
        os._exit(0)


def _receive_line(run: socket.socket) -> bytes:
    """The request: one line of JSON. The server keeps its side open after it, so the
    socket becomes readable again only when the server hangs up."""
    received = b""
    while not received.endswith(b"\n"):
        part = run.recv(1 << 16)
        if not part:
            raise ConnectionError("the server hung up before its request was complete")
        received += part
    return received


def serve(control: socket.socket, launcher: str) -> None:
    # What every run would otherwise do once for itself: the compiler's and the JSON
    # module's first use (about a millisecond of page faults in each run).
    compile("pass", "<string>", "exec")
    json.loads(json.dumps({"warm": [1]}))
    # Forked children share the launcher's memory until they write to it; a collection
    # in a child would touch (and so copy) every object. Nothing here makes cycles.
    gc.freeze()
    gc.disable()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # spares are reaped by the kernel
    own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    taken_r, taken = os.pipe()
    for _ in range(SPARES):
        _fork_spare(control, taken, launcher, own_pid_namespace)
    control.send(b"ready")
    while os.read(taken_r, 1) == b"+":  # a spare took a run: prepare the next one
        _fork_spare(control, taken, launcher, own_pid_namespace)
    # The server hung up, or a spare could not be prepared: stop, and with this process
    # (the sandbox's pid namespace ends with it) every spare and run still going.


def _fork_spare(control: socket.socket, taken: int, launcher: str, own_pid_namespace: int) -> None:
    """Fork a spare as pid 1 of a new pid namespace. The launcher's next child is born
    in the namespace it unshares, so it goes back to its own right after: one fork, where
    unsharing in the child would take a second fork to get a process into it."""
    os.unshare(os.CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        os.setns(own_pid_namespace, os.CLONE_NEWPID)
        raise
    if pid == 0:
        spare(control, taken, launcher)
    os.setns(own_pid_namespace, os.CLONE_NEWPID)


if __name__ == "__main__":
    if len(sys.argv) > 4:
        DEFAULT_GROUP_LIMITS = (int(sys.argv[3]), int(sys.argv[4]))
    serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2])
