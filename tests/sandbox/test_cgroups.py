"""The per-run cgroups are swept when a server died and left a run behind in one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.sandbox.cgroups import RUN_PREFIX, own_cgroup_dir, sweep_orphans, usable_controllers


@pytest.fixture
def pids_parent() -> Path:
    assert "pids" in usable_controllers(), "this host must give runs a pids cgroup"
    parent = own_cgroup_dir("pids")
    assert parent is not None
    return parent


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has ended, standing for a server that crashed."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    return ended.pid


@pytest.fixture
def orphan(pids_parent: Path, dead_pid: int) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A run left in its pids cgroup by a server that is gone."""
    directory = pids_parent / f"{RUN_PREFIX}{dead_pid}-0"
    directory.mkdir()
    left = subprocess.Popen(["sleep", "60"])
    (directory / "cgroup.procs").write_text(str(left.pid))
    try:
        yield left, directory
    finally:
        left.kill()
        left.wait()
        if directory.exists():
            directory.rmdir()


def test_a_run_left_by_a_dead_server_is_killed_and_its_group_removed(pids_parent, orphan):
    left, directory = orphan
    sweep_orphans("pids", pids_parent)
    assert left.wait(timeout=5) == -9
    assert not directory.exists()


def test_the_groups_of_this_server_are_left_alone(pids_parent: Path):
    mine = pids_parent / f"{RUN_PREFIX}{os.getpid()}-999999"
    mine.mkdir()
    try:
        sweep_orphans("pids", pids_parent)
        assert mine.exists()
    finally:
        mine.rmdir()
