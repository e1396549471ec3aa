"""One pids cgroup and one memory cgroup per sandbox run (cgroup v1).

A pids cgroup is the only bound on a fork bomb here: the kernel ignores RLIMIT_NPROC for
root, and a user namespace does not change that (the sandbox's uid maps back to root). A
memory cgroup bounds real memory where RLIMIT_AS would bound address space (which breaks
runtimes that reserve large ranges). Both also list every process of the run, so a kill
reaches a grandchild that left the process group. The groups are made beside this
process's own ones (so a service's own limits still bound its runs) and removed after.

Only cgroup v1 controllers are used: these machines mount v1 `pids` and `memory`, and
their v2 mount offers no controllers.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

V1_ROOT: Final = Path("/sys/fs/cgroup")
CONTROLLERS: Final = ("pids", "memory")
RUN_PREFIX: Final = "agentdash-run-"  # then the server's pid and a counter
ORPHAN_REMOVE_TRIES: Final = 200
_counter = itertools.count()
logger = logging.getLogger("tools.sandbox")


def own_cgroup_dir(controller: str) -> Path | None:
    """The directory of this process's cgroup for a v1 controller, if it is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            directory = V1_ROOT / controller / path.lstrip("/")
            return directory if (directory / "cgroup.procs").exists() else None
    return None


@functools.cache
def usable_controllers() -> tuple[str, ...]:
    """The controllers this process can make child groups in (tried once, not assumed).
    Groups left by a server that died are swept on the way."""
    usable = []
    for controller in CONTROLLERS:
        parent = own_cgroup_dir(controller)
        if parent is None:
            continue
        sweep_orphans(controller, parent)
        probe = parent / f"agentdash-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            continue
        usable.append(controller)
    return tuple(usable)


def sweep_orphans(controller: str, parent: Path) -> None:
    """Kill what is left in, and remove, the run groups of servers that are gone (a run
    cut off by its server's crash keeps its limits but has nobody to end it)."""
    for directory in parent.glob(f"{RUN_PREFIX}*"):
        server_pid = int(directory.name.removeprefix(RUN_PREFIX).split("-")[0])
        if server_pid != os.getpid() and not Path(f"/proc/{server_pid}").exists():
            _kill_and_remove(controller, directory)


def remove_groups(name_prefix: str) -> None:
    """Kill what is left in, and remove, this process's run groups whose names start
    with `name_prefix` (those of a warm launcher that stopped). Blocks while the kernel
    lets go of each: call it from a thread."""
    for controller in usable_controllers():
        parent = own_cgroup_dir(controller)
        if parent is not None:
            for directory in parent.glob(f"{name_prefix}*"):
                _kill_and_remove(controller, directory)


def _kill_and_remove(controller: str, directory: Path) -> None:
    group = RunCgroups({controller: directory})
    group.kill()
    # The kernel lets go of a group a moment after its last process is reaped.
    for _ in range(ORPHAN_REMOVE_TRIES):
        if group.remove():
            return
        time.sleep(0.005)
    logger.warning("could not remove the sandbox cgroup %s", directory)


@dataclass
class RunCgroups:
    """The cgroups of one run: `directories` maps a controller to its group."""

    directories: dict[str, Path]

    @classmethod
    def create(cls, controllers: tuple[str, ...]) -> RunCgroups:
        """New groups, with no limits until `set_limits`."""
        name = f"{RUN_PREFIX}{os.getpid()}-{next(_counter)}"
        groups = cls({})
        try:
            for controller in controllers:
                parent = own_cgroup_dir(controller)
                if parent is None:
                    raise OSError(f"the {controller} cgroup is gone")
                directory = parent / name
                directory.mkdir()
                groups.directories[controller] = directory
        except BaseException:
            groups.remove()
            raise
        return groups

    def set_limits(self, *, max_tasks: int, memory_bytes: int) -> None:
        """Set (or change, before the run starts) the groups' limits."""
        if "pids" in self.directories:
            (self.directories["pids"] / "pids.max").write_text(str(max_tasks))
        if "memory" in self.directories:
            directory = self.directories["memory"]
            memory = directory / "memory.limit_in_bytes"
            # Without a memory+swap limit the run could swap instead of meeting its limit.
            memsw = directory / "memory.memsw.limit_in_bytes"
            files = [memory, memsw] if memsw.exists() else [memory]
            try:
                for limit in files:
                    limit.write_text(str(memory_bytes))
            except OSError:
                # The kernel keeps memory <= memory+swap at every step: to raise both,
                # the second goes first.
                for limit in reversed(files):
                    limit.write_text(str(memory_bytes))

    def procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self.directories.values()]

    def tasks_files(self) -> list[Path]:
        """Where a thread writes "0" to move itself in: its children from then on are
        born inside. (Writing a pid to cgroup.procs instead waits for an RCU grace period,
        and meanwhile holds up every fork and exit on the host.)"""
        return [directory / "tasks" for directory in self.directories.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(pid) for pid in procs.read_text().split())
        return found

    def kill(self) -> None:
        """SIGKILL every process in the groups. A process forked between a listing and
        the kill of its parent appears in the next listing; once a listing shows no one
        new, every process left has been killed (dying ones linger there a moment)."""
        killed: set[int] = set()
        while fresh := self.pids() - killed:
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed |= fresh

    def memory_limit_hit(self) -> bool:
        directory = self.directories.get("memory")
        if directory is None:
            return False
        fields = _read_fields(directory / "memory.oom_control")
        return fields.get("oom_kill", 0) > 0

    def process_limit_hit(self) -> bool:
        directory = self.directories.get("pids")
        if directory is None:
            return False
        return _read_fields(directory / "pids.events").get("max", 0) > 0

    def remove(self) -> bool:
        """Remove the groups; False while a process (a zombie not yet reaped) remains."""
        removed = True
        for controller, directory in list(self.directories.items()):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
                continue
            del self.directories[controller]
        return removed


def _read_fields(path: Path) -> dict[str, int]:
    """Parse a cgroup file of `key value` lines."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            fields[key] = int(value)
    return fields
