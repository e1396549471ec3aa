"""The warm sandbox's launcher (zygote). Not imported by the server: the warm backend runs
this file with the base interpreter (`python -I -S`), inside bubblewrap, with an empty
environment, so it starts clean and holds nothing of the server's memory or secrets.

bubblewrap gives it, once, what every run shares: user, pid, network, ipc and uts
namespaces, a read-only root holding /usr and the interpreter, and the workspaces'
parent directory at /workspaces. It keeps SPARES runs prepared ahead: each spare is a
supervisor that has unshared fresh mount, network, ipc, uts and pid namespaces, with a
fresh /tmp and /dev/shm, and has started its runner, pid 2 of the new pid namespace,
with its own /proc, already uid 65534 with no capabilities in a user namespace of its own.
Its pid 1 has joined the run's cgroups (made in the server's own, lent at /cgroup, then
covered), with the server's default limits. When a run comes, the supervisor mounts the
run's workspace (at /workspace, and covers every other one) and sets other limits if the
run has them, and the runner sets the rlimits and runs the code in the interpreter that
is already started; the launcher meanwhile prepares the next spare. So a run pays for
neither an interpreter's start nor its namespaces' and cgroups' creation.

Protocol, on the socket passed as argv[1] (SOCK_SEQPACKET; argv[2] names the launcher,
argv[3] and argv[4] are the default pids.max and memory limit): the zygote sends
b"ready"; then per run the server sends b"run" with the file descriptors [run socket,
stdout, stderr]. On the run socket the server sends one line of JSON (code or argv,
workspace, limits); the supervisor answers {"status": <wait status>, "limits_hit": ...}
once nothing of the run is left (pid 1 of its namespace says so, or has ended), and
closes it. The server hanging up the
run socket kills the run.
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


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
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
READ_ONLY_PROC = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")


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
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sh", b"lo", IFF_UP_LOOPBACK_RUNNING))


def become_nobody() -> None:
    """A user namespace of the run's own where it is uid 65534 with no capability, no new
    user namespace can be made below it, and no exec can give privileges back."""
    os.unshare(os.CLONE_NEWUSER)
    # Mapping only our own ids needs no privilege, as long as setgroups is denied.
    for path, content in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{NOBODY} 0 1"),
        ("/proc/self/gid_map", f"{NOBODY} 0 1"),
        ("/proc/sys/user/max_user_namespaces", "0"),
    ):
        with open(path, "w") as file:
            file.write(content)
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    drop_capabilities()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def drop_capabilities() -> None:
    """Every capability, from every set. The namespace's creator holds them all there, and
    its uid never changed from 0 inside it (it was 65534 from the start), so they did not
    go with a uid change."""
    with open("/proc/sys/kernel/cap_last_cap") as file:
        last = int(file.read())
    for capability in range(last + 1):  # the bounding set first: that takes CAP_SETPCAP
        _check(_libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), "drop from bounding set")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    header = ctypes.create_string_buffer(struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0), 8)
    no_capabilities = ctypes.create_string_buffer(24)  # effective, permitted, inheritable x 2
    _check(_libc.capset(header, no_capabilities), "capset")


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
    at /cgroup/<controller>). Made and joined while the spare is prepared, because
    joining a cgroup waits for an RCU grace period, milliseconds a run need not spend.
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

    def procs(self) -> list[int]:
        """The groups' "tasks" files, open for init to write "0" to: a thread that moves
        itself takes no global lock, where moving a process by pid (cgroup.procs) waits
        for an RCU grace period and meanwhile holds up every fork and exit on the host.
        (init is single-threaded, so its one thread is all of it.)"""
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


def init(jobs: socket.socket, procs: list[int], report: int) -> None:
    """pid 1 of the spare's pid namespace: joins the run's cgroups (its children are born
    in them), starts the runner as pid 2 (pid 1 would be spared the default action of
    signals like SIGXCPU), reaps orphans, and ends with the runner's status, in the
    shell's convention. Never returns.

    When the runner has ended and left nothing behind (init has no child, not even a
    zombie: every process of the namespace is init's descendant, and an orphan is
    re-parented before its parent's end is reported), the run is over, and init writes
    the status on `report` before it exits: the supervisor need not wait for init's own
    exit, a whole process's teardown, to tell the server. Otherwise init's exit kills
    what is left, and the supervisor reports once it has reaped init."""
    for fd in procs:
        os.write(fd, b"0")  # "0": this thread
        os.close(fd)
    runner_pid = os.fork()
    if runner_pid == 0:
        os.close(report)
        runner(jobs)
    jobs.close()
    while True:
        pid, status = os.wait()
        if os.WIFSTOPPED(status):
            # A process that asked to be traced (PTRACE_TRACEME) made its parent, init, its
            # tracer: let it go on untraced, with the signal that stopped it.
            _libc.ptrace(PTRACE_DETACH, pid, None, os.WSTOPSIG(status))
            continue
        if pid == runner_pid:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            if nothing_left():
                os.write(report, str(code).encode())
            os._exit(code)


def nothing_left() -> bool:
    """Whether init has no child left, once it has reaped those that ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False  # one still runs


def runner(jobs: socket.socket) -> None:
    """pid 2 of the spare's pid namespace. Gets ready (its /proc, uid 65534, the standard
    streams, the compiler paged in), waits for its run, then runs it. Never returns."""
    status = 1
    try:
        mount("proc", "/proc", "proc", PROC_FLAGS)
        become_nobody()
        streams = standard_streams()
        compile("pass", "<string>", "exec")  # copies the compiler's pages before the run
        # What every run gets, done while waiting (each step touches memory the fork
        # shares with the launcher, so it costs page copies).
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(ENVIRONMENT)
        null = os.open("/dev/null", os.O_RDONLY)
        jobs.send(b"ready")
        line, fds, _, _ = socket.recv_fds(jobs, MAX_REQUEST_BYTES, MAX_FDS)
        if not line:
            os._exit(0)  # the launcher is stopping: this spare is not needed
        request = json.loads(line)
        stdout, stderr = fds
        os.chdir("/workspace")  # the supervisor has mounted the run's workspace there
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
    """A prepared run, forked by the launcher: its namespaces, its cgroups, its runner,
    then waiting for a run on the control socket. Never returns.

    It tells the launcher on `taken`: b"+" when it took a run (prepare the next one),
    b"-" when the server hung up, b"x" when it could not be prepared (then the launcher
    stops, and the server sees it gone, rather than runs waiting for a spare that never
    comes)."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the launcher ignores it; we wait
        os.unshare(
            os.CLONE_NEWNS | os.CLONE_NEWNET | os.CLONE_NEWIPC | os.CLONE_NEWUTS | os.CLONE_NEWPID
        )
        prepare_filesystem()
        groups = RunGroups(launcher)
        procs = groups.procs()
        bring_up_loopback()
        jobs, runner_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:  # never back into this function's handler, which speaks for the spare
                jobs.close()
                control.close()
                os.close(report_r)
                init(runner_end, procs, report_w)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)
        runner_end.close()
        os.close(report_w)
        for fd in procs:
            os.close(fd)
        if jobs.recv(16) != b"ready":
            raise RuntimeError("the runner could not get ready")
        protect_proc()
    except BaseException:
        traceback.print_exc()
        os.write(taken, b"x")
        os._exit(1)
    message, fds, _, _ = socket.recv_fds(control, 16, MAX_FDS)
    if not message:
        os.write(taken, b"-")
        _end(pid, groups)
        os._exit(0)
    os.write(taken, b"+")
    control.close()
    try:
        supervise(socket.socket(fileno=fds[0]), fds[1:], jobs, pid, report_r, groups)
    except BaseException:
        traceback.print_exc()  # this run fails (the server sees its socket close); no other
    _end(pid, groups)
    os._exit(0)


def supervise(
    run: socket.socket,
    fds: list[int],
    jobs: socket.socket,
    pid: int,
    report: int,
    groups: RunGroups,
) -> None:
    """Hand the run to the prepared runner, report how it ended (as init reported it, or
    as init ended), and kill it if the server hangs up first."""
    request = _receive_line(run)
    parsed = json.loads(request)
    show_only_workspace(parsed["workspace"])
    groups.set_limits(parsed["limits"]["max_tasks"], parsed["limits"]["memory_bytes"])
    socket.send_fds(jobs, [request], fds)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([report, pidfd, run], [], [])
    # Empty when init died without reporting (killed, or ended leaving processes behind).
    reported = os.read(report, 16) if report in ready else b""
    if reported:
        status = int(reported) << 8  # as waitpid() gives init's exit with that code
    else:
        if run in ready and pidfd not in ready:  # the server hung up: the run ends now
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):  # if the server is gone, nobody is told
        run.sendall(json.dumps({"status": status, "limits_hit": groups.limits_hit()}).encode())
    # The end of the message, now: removing the groups afterwards takes a while.
    run.close()


def _end(pid: int, groups: RunGroups) -> None:
    """Whatever is left of a spare's run: killed (with pid 1 the whole namespace goes),
    reaped, and its cgroups removed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    groups.remove()


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
    # Forked children share the launcher's memory until they write to it; a collection
    # in a child would touch (and so copy) every object. Nothing here makes cycles.
    gc.freeze()
    gc.disable()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # spares are reaped by the kernel
    taken_r, taken = os.pipe()
    for _ in range(SPARES):
        _fork_spare(control, taken, launcher)
    control.send(b"ready")
    while os.read(taken_r, 1) == b"+":  # a spare took a run: prepare the next one
        _fork_spare(control, taken, launcher)
    # The server hung up, or a spare could not be prepared: stop, and with this process
    # (the sandbox's pid namespace ends with it) every spare and run still going.


def _fork_spare(control: socket.socket, taken: int, launcher: str) -> None:
    if os.fork() == 0:
        spare(control, taken, launcher)


if __name__ == "__main__":
    if len(sys.argv) > 4:
        DEFAULT_GROUP_LIMITS = (int(sys.argv[3]), int(sys.argv[4]))
    serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2])
