"""The process backend's holder: started ahead of a run inside the run's cgroups, it runs
its program only once that arrived whole; bound ahead to a workspace's sandbox, it is
taken only by a run in that same workspace with the same rlimits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sandbox.holders_taken import bound, record_holders_taken
from tools.sandbox import Limits
from tools.sandbox.cgroups import own_cgroup_dir, usable_controllers
from tools.sandbox.process import (
    Holder,
    Holders,
    ProcessSandbox,
    SandboxSetup,
    _holders_of_running_loop,
    holder_frame,
)


async def test_a_holder_waits_in_its_cgroups_and_runs_its_program_in_its_workdir(
    tmp_path: Path,
):
    holder = await Holder.start_new(usable_controllers())
    assert holder.groups is not None, "this host must give runs cgroups"
    for _ in range(500):  # it joins them itself, as it starts
        if holder.groups.pids() == {holder.process.pid}:
            break
        await asyncio.sleep(0.01)
    assert holder.groups.pids() == {holder.process.pid}
    holder.start(
        ["/bin/sh", "-c", 'pwd; echo "$HOME"; cat'], tmp_path, {}, max_tasks=8, memory_bytes=1 << 26
    )
    assert await holder.exit_code == 0
    assert (await holder.stdout.read()).decode().split() == [str(tmp_path)] * 2
    await holder.discard()
    assert not any(path.exists() for path in holder.groups.directories.values())


async def test_a_program_cut_short_does_not_run(tmp_path: Path):
    """A server that dies while writing the program leaves the holder an incomplete one:
    it exits without running any of it."""
    holder = await Holder.start_new(())
    holder._program_pipe.write(holder_frame("run", str(tmp_path), ["/bin/touch", "ran"])[:-4])
    holder._program_pipe.close()
    assert await holder.exit_code == 111
    assert not (tmp_path / "ran").exists()
    await holder.discard()


async def test_a_holder_whose_server_went_away_runs_nothing():
    holder = await Holder.start_new(usable_controllers())
    holder._program_pipe.close()  # as when the server's process ends
    assert await holder.exit_code == 111
    await holder.discard()


async def test_each_run_has_a_network_namespace_of_its_own_with_loopback(tmp_path: Path):
    """As root, the holder makes the run's network namespace ahead (bubblewrap keeps it):
    loopback works inside, and no two runs, nor the host, share one."""
    sandbox = ProcessSandbox()
    code = """
import os, socket
server = socket.create_server(("127.0.0.1", 0))
socket.create_connection(server.getsockname()).close()
print(os.readlink("/proc/self/ns/net"))
"""
    try:
        first, second = [await sandbox.run(code=code, workdir=tmp_path) for _ in range(2)]
    finally:
        await sandbox.aclose()
    assert first.exit_code == second.exit_code == 0, (first, second)
    namespaces = {first.stdout, second.stdout, os.readlink("/proc/self/ns/net") + "\n"}
    assert len(namespaces) == 3


async def test_the_fallback_claims_no_limit_that_its_run_could_undo(tmp_path: Path):
    """Without bubblewrap the run has the server's uid. Where that uid may write the
    server's own cgroup (root may), the run moves itself there, out of its own groups
    (shown here), so the report names no cgroup protection; root also raises its own hard
    rlimits, so run by root the report names none of those either."""
    server_group = own_cgroup_dir("pids")
    sandbox = ProcessSandbox(use_bwrap=False)
    try:
        report = sandbox.protections()
        escaped = await sandbox.run(
            code="import os\n"
            "try:\n"  # into the server's own pids cgroup, out of the run's
            f"    open('{server_group}/cgroup.procs', 'w').write(str(os.getpid()))\n"
            "    print('left')\n"
            "except OSError:\n"
            "    print('held')\n",
            workdir=tmp_path,
        )
    finally:
        await sandbox.aclose()
    if server_group is not None and os.access(server_group / "cgroup.procs", os.W_OK):
        assert escaped.stdout == "left\n", escaped
        assert report["processes"] is False
        assert report["kill_on_timeout"].startswith("process group only")
    else:
        assert escaped.stdout == "held\n", escaped
    binding = {report[name] is not False for name in ("cpu_time", "file_size", "open_files")}
    assert binding == {os.geteuid() != 0}  # every rlimit binds, or (run by root) none


@pytest.fixture
async def sandbox() -> AsyncIterator[ProcessSandbox]:
    backend = ProcessSandbox()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, SandboxSetup]]:
    return record_holders_taken(monkeypatch)


async def set_up_ahead(sandbox: ProcessSandbox) -> None:
    """Wait until the sandboxes being set up ahead on this loop are: bubblewrap has bound
    the workspace once the holder inside has started (the third process in its groups)."""
    holders = _holders_of_running_loop(sandbox.controllers, sandbox._held_namespaces)
    for holder in await asyncio.gather(*holders._bound.values()):
        assert holder.groups is not None, "this host must give runs cgroups"
        for _ in range(3000):
            if len(holder.groups.pids()) == 3:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the sandbox set up ahead did not start the holder inside")


FRESH_SANDBOX = """
import os
print(os.listdir("/tmp"))
open("/tmp/left-by-a-run", "w").close()
open("runs", "a").write(".")
"""


async def test_the_next_run_in_a_workspace_takes_a_sandbox_set_up_ahead_and_fresh(
    sandbox: ProcessSandbox, tmp_path: Path, taken: list[tuple[bool, SandboxSetup]]
):
    """While a run goes on, the next run's sandbox is set up in its workspace; the next
    run there takes it, and finds it as fresh as one set up for it then."""
    results = [await sandbox.run(code=FRESH_SANDBOX, workdir=tmp_path) for _ in range(3)]
    assert bound(taken) == [False, True, True]
    assert all(result.exit_code == 0 for result in results), results
    # Nothing left in /tmp by another run (namespace numbers are handed out again once
    # freed, so they prove nothing here).
    assert [result.stdout for result in results] == ["[]\n"] * 3
    assert (tmp_path / "runs").read_text() == "..."


async def test_a_workspace_made_again_at_the_same_path_is_not_the_one_set_up_ahead(
    sandbox: ProcessSandbox, tmp_path: Path, taken: list[tuple[bool, SandboxSetup]]
):
    """A sandbox set up in a workspace keeps that directory mounted, so one made again at
    its path has another inode number, and is not taken for it. (Had the directory been
    made again before bubblewrap bound its path, that sandbox holds the new one, as the
    holder inside checks.)"""
    workspace = tmp_path / "session"
    workspace.mkdir()
    await sandbox.run(code="open('old', 'w').close()", workdir=workspace)
    await set_up_ahead(sandbox)
    (workspace / "old").unlink()
    workspace.rmdir()
    workspace.mkdir()
    result = await sandbox.run(code="open('new', 'w').close()", workdir=workspace)
    assert result.exit_code == 0, result
    assert bound(taken) == [False, False]
    assert [path.name for path in workspace.iterdir()] == ["new"]


async def test_sessions_taking_turns_each_find_their_own_sandbox_set_up(
    sandbox: ProcessSandbox, tmp_path: Path, taken: list[tuple[bool, SandboxSetup]]
):
    """Runs of more sessions than are kept set up take turns: each run's sandbox is set up
    ahead only while its session is among the last few that ran."""
    kept = Holders.BOUND_KEPT
    workspaces = [tmp_path / f"session-{number}" for number in range(kept + 1)]
    for workspace in workspaces:
        workspace.mkdir()
        (workspace / workspace.name).touch()
    order = [*workspaces, *workspaces[1:], workspaces[0]]
    for workspace in order:
        result = await sandbox.run(code="import os; print(os.listdir('.'))", workdir=workspace)
        assert result.stdout == f"['{workspace.name}']\n", result
    # The last session's first run let the first session's sandbox go.
    assert bound(taken) == [False] * (kept + 1) + [True] * kept + [False]


async def test_runs_in_other_workspaces_or_with_other_rlimits_set_up_their_own(
    sandbox: ProcessSandbox, tmp_path: Path, taken: list[tuple[bool, SandboxSetup]]
):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    code = (
        "import os, resource\nprint(os.listdir('.'), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    for workspace in (first, second, first):
        (workspace / workspace.name).touch()
        result = await sandbox.run(code=code, workdir=workspace)
        assert result.stdout == f"['{workspace.name}'] 256\n", result
    fewer_files = Limits(max_open_files=32)
    result = await sandbox.run(code=code, workdir=first, limits=fewer_files)
    assert result.stdout == "['first'] 32\n", result
    result = await sandbox.run(code=code, workdir=first, limits=fewer_files)
    assert result.stdout == "['first'] 32\n", result
    assert bound(taken) == [False, False, True, False, True]


async def test_the_sandbox_set_up_ahead_holds_the_workspace_that_was_looked_at(
    sandbox: ProcessSandbox,
    tmp_path: Path,
    taken: list[tuple[bool, SandboxSetup]],
    monkeypatch: pytest.MonkeyPatch,
):
    """bubblewrap binds the workspace's path a moment after the server looked at it: a
    path pointed elsewhere meanwhile (then back) must not give a later run in that
    workspace another session's directory."""
    workspace, moved, other = tmp_path / "session", tmp_path / "moved", tmp_path / "other"
    for directory in (workspace, other):
        directory.mkdir()
        (directory / directory.name).touch()
    bind = Holder.bind

    def pointed_elsewhere_while_binding(self: Holder, setup: SandboxSetup) -> None:
        workspace.rename(moved)
        workspace.symlink_to(other)
        bind(self, setup)

    monkeypatch.setattr(Holder, "bind", pointed_elsewhere_while_binding)
    await sandbox.run(code="pass", workdir=workspace)
    holders = _holders_of_running_loop(sandbox.controllers, sandbox._held_namespaces)
    (set_up,) = await asyncio.gather(*holders._bound.values())
    # The holder inside found another directory than the one looked at, and ended.
    assert await asyncio.wait_for(set_up.exit_code, 30) == 114
    monkeypatch.setattr(Holder, "bind", bind)
    workspace.unlink()
    moved.rename(workspace)
    result = await sandbox.run(code="import os; print(os.listdir('.'))", workdir=workspace)
    assert result.stdout == "['session']\n", result
    assert bound(taken)[-1] is False


async def test_a_run_the_sandbox_set_up_ahead_cannot_take_sets_up_its_own(
    sandbox: ProcessSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A sandbox set up ahead can fail to take its run: it died while idle, or it already
    uses more memory than the run may. The run then sets up a sandbox of its own."""
    take = Holders.take
    taken: list[Holder] = []

    async def died_once_taken(self: Holders, setup: SandboxSetup | None) -> Holder:
        holder = await take(self, setup)
        taken.append(holder)
        if holder.bound_to is not None:
            holder.kill()
            await holder.exit_code
        return holder

    monkeypatch.setattr(Holders, "take", died_once_taken)
    await sandbox.run(code="pass", workdir=tmp_path)
    result = await sandbox.run(code="print('ran')", workdir=tmp_path)
    assert result.stdout == "ran\n", result
    assert [holder.bound_to is not None for holder in taken] == [False, True, False]
