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

# "warm-shared" is the warm backend as Django uses it (AGENTDASH_SANDBOX=warm): no root of
# its own, the process's launcher for the workspace's parent directory.
BACKENDS = ["process", "warm", "warm-shared", "docker"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture(params=BACKENDS)
async def sandbox(
    request: pytest.FixtureRequest, tmp_path: Path, workspace: Path
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
    else:
        backend = get_sandbox(request.param, limits=SMALL)
    try:
        yield backend
    finally:
        await backend.aclose()
        if request.param == "warm-shared":
            await asyncio.to_thread(stop_shared_launchers)
