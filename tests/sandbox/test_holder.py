"""The process backend's holder: started ahead of a run inside the run's cgroups, it runs
its program only once that arrived whole."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tools.sandbox.cgroups import own_cgroup_dir, usable_controllers
from tools.sandbox.process import Holder, ProcessSandbox


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
    fields = b"".join(part.encode() + b"\0" for part in [str(tmp_path), "/bin/touch", "ran"])
    holder._program_pipe.write(b"%d\n%s" % (len(fields), fields[:-4]))
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
