"""The sandbox backends this host can run, each with small limits so that every escape
attempt ends in seconds. Nothing here skips a backend for a missing protection: a host
without bubblewrap or cgroups must fail these tests (scripts/system-deps.sh installs
bubblewrap); only Docker is skipped where no engine answers (none runs on these
machines)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sandbox.holders_taken import record_holders_taken
from tools.sandbox import Limits, Sandbox, get_sandbox
from tools.sandbox.docker import DockerSandbox
from tools.sandbox.warm import stop_shared_launchers

SMALL = Limits(
    memory_mb=64,
    cpu_seconds=1,
    wall_seconds=5,
    max_processes=16,
    max_file_mb=1,
    max_open_files=64,
    max_output_bytes=64 * 1024,
)

# "process-set-up-ahead" is the process backend as a session's second and later runs meet
# it: their sandbox set up in their workspace while the previous run went on.
# "warm-shared" is the warm backend as Django uses it (AGENTDASH_SANDBOX=warm): no root of
# its own, the process's launcher for the workspace's parent directory.
BACKENDS = ["process", "process-set-up-ahead", "warm", "warm-shared", "docker"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture(params=BACKENDS)
async def sandbox(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Sandbox]:
    if request.param == "docker":
        backend: Sandbox = DockerSandbox(SMALL)
        if not backend.ping():
            await backend.aclose()
            pytest.skip("no Docker engine answers at DOCKER_HOST or /var/run/docker.sock")
        os.chmod(workspace, 0o777)  # the container's user, 65534, writes there
    elif request.param == "warm":
        backend = get_sandbox("warm", limits=SMALL, workspace_root=tmp_path)
    elif request.param == "warm-shared":
        backend = get_sandbox("warm", limits=SMALL)
    elif request.param == "process-set-up-ahead":
        backend = get_sandbox("process", limits=SMALL)
        taken = record_holders_taken(monkeypatch)
        await backend.run(code="pass", workdir=workspace)  # sets up the next run's sandbox
    else:
        backend = get_sandbox(request.param, limits=SMALL)
    try:
        yield backend
    finally:
        await backend.aclose()
        if request.param == "warm-shared":
            await asyncio.to_thread(stop_shared_launchers)
    if request.param == "process-set-up-ahead":
        # The test's first run takes the sandbox set up for it, unless it has rlimits of
        # its own (then it sets up its own, as under "process").
        (_, set_up_for), (first_took_it, first) = taken[:2]
        assert first_took_it or first.rlimits != set_up_for.rlimits, taken
