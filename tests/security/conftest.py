"""The sandbox backends this host can run, each with small limits so that every escape
attempt ends in seconds. Nothing here skips a backend for a missing protection: a host
without bubblewrap or cgroups must fail these tests (scripts/system-deps.sh installs
bubblewrap); only Docker, which needs an engine these machines lack, is skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tools.sandbox import Limits, Sandbox, get_sandbox

SMALL = Limits(
    memory_mb=64,
    cpu_seconds=1,
    wall_seconds=5,
    max_processes=16,
    max_file_mb=1,
    max_open_files=64,
    max_output_bytes=64 * 1024,
)

BACKENDS = ["process", "warm"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture(params=BACKENDS)
async def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    options = {"workspace_root": tmp_path} if request.param == "warm" else {}
    backend = get_sandbox(request.param, limits=SMALL, **options)
    try:
        yield backend
    finally:
        await backend.aclose()
