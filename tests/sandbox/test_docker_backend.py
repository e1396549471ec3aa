"""The Docker backend: the exact container it asks for, checked against a fake engine on
a unix socket, and one run on a real engine wherever DOCKER_HOST (or the default socket)
answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.sandbox import Limits, get_sandbox
from tools.sandbox import docker as docker_backend
from tools.sandbox.docker import DockerSandbox

from .fake_docker import CONTAINER_ID, FakeDockerEngine, Script

LIMITS = Limits(memory_mb=64, cpu_seconds=2, wall_seconds=5, max_processes=16, max_file_mb=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeDockerEngine]:
    with FakeDockerEngine(tmp_path / "docker.sock") as fake:
        yield fake


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


async def test_the_container_is_locked_down(engine: FakeDockerEngine, workspace: Path):
    engine.script = Script(exit_code=0, stdout=b"1\n")
    sandbox = get_sandbox("docker", base_url=engine.base_url, limits=LIMITS)
    result = await sandbox.run(code="print(1)", workdir=workspace)

    assert result.exit_code == 0
    assert result.stdout == "1\n"
    [created] = engine.created
    host = created["HostConfig"]
    assert created["NetworkDisabled"] is True
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["MemorySwap"] == 64 * 1024 * 1024  # no swap beyond the memory limit
    assert host["PidsLimit"] == 16
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert created["User"] == "65534:65534"
    assert created["Cmd"] == ["python", "-I", "-S", "-c", "print(1)"]
    assert created["WorkingDir"] == "/workspace"
    assert host["Binds"] == [f"{workspace}:/workspace:rw"]
    assert {u["Name"]: u["Hard"] for u in host["Ulimits"]} == {
        "cpu": 3,
        "fsize": 1024 * 1024,
        "nofile": 256,
        "core": 0,
    }
    assert not created.get("Env"), "nothing of the server's environment goes in"
    assert created["AttachStdin"] is False
    assert f"DELETE /containers/{CONTAINER_ID}" in engine.calls, "the container is removed"


async def test_output_is_capped_and_a_memory_kill_is_reported(
    engine: FakeDockerEngine, workspace: Path
):
    engine.script = Script(exit_code=137, stdout=b"x" * 5000, stderr=b"oops", oom_killed=True)
    sandbox = DockerSandbox(LIMITS.__class__(max_output_bytes=1000), base_url=engine.base_url)
    result = await sandbox.run(argv=["sh", "-c", "yes"], workdir=workspace)
    assert result.stdout == "x" * 1000
    assert result.stdout_truncated
    assert result.stderr == "oops"
    assert result.limit_hit == "memory"
    assert engine.created[0]["Cmd"] == ["sh", "-c", "yes"]


async def test_a_run_past_its_wall_time_is_killed_and_removed(
    engine: FakeDockerEngine, workspace: Path
):
    engine.script = Script(runs_for=3)
    sandbox = DockerSandbox(Limits(wall_seconds=0.5), base_url=engine.base_url)
    result = await sandbox.run(code="import time; time.sleep(60)", workdir=workspace)
    assert result.timed_out
    assert result.limit_hit == "wall_time"
    assert f"POST /containers/{CONTAINER_ID}/kill" in engine.calls
    assert f"DELETE /containers/{CONTAINER_ID}" in engine.calls


async def test_a_run_cancelled_while_its_container_is_created_removes_it(
    engine: FakeDockerEngine, workspace: Path
):
    """Cancelled before the engine answered the create (an image pull takes seconds): the
    container it makes anyway is removed before the cancellation goes on."""
    engine.script = Script(creates_for=0.5)
    sandbox = DockerSandbox(LIMITS, base_url=engine.base_url)
    run = asyncio.ensure_future(sandbox.run(code="print(1)", workdir=workspace))
    await asyncio.sleep(0.2)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert engine.created
    assert f"DELETE /containers/{CONTAINER_ID}" in engine.calls
    assert f"POST /containers/{CONTAINER_ID}/start" not in engine.calls
    await sandbox.aclose()


async def test_a_second_cancellation_does_not_stop_the_removal(
    engine: FakeDockerEngine, workspace: Path
):
    """A session cancelled while the tool's own time limit also ran out: the run is
    cancelled twice while the engine is still creating its container."""
    engine.script = Script(creates_for=0.5)
    sandbox = DockerSandbox(LIMITS, base_url=engine.base_url)
    run = asyncio.ensure_future(sandbox.run(code="print(1)", workdir=workspace))
    await asyncio.sleep(0.2)
    run.cancel()
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    async with asyncio.timeout(5):  # the removal goes on after the run's cancellation
        await asyncio.gather(*docker_backend._cleanups)
    assert f"DELETE /containers/{CONTAINER_ID}" in engine.calls
    await sandbox.aclose()


def test_the_docker_sandbox_refuses_to_run_code_as_root(engine: FakeDockerEngine):
    with pytest.raises(ValueError, match="root"):
        DockerSandbox(base_url=engine.base_url, user="0:0")


@pytest.fixture
def shared_workspace(workspace: Path) -> Path:
    workspace.chmod(0o777)  # the container's user (65534) writes here
    return workspace


async def test_a_real_engine_runs_code_without_network(shared_workspace: Path):
    sandbox = DockerSandbox(LIMITS)
    if not sandbox.ping():
        pytest.skip("no Docker engine answers at DOCKER_HOST or /var/run/docker.sock")
    result = await sandbox.run(
        code="import os, pathlib\n"
        "pathlib.Path('out').write_text('hi')\n"
        "print(*sorted(os.listdir('/sys/class/net')))\n",
        workdir=shared_workspace,
    )
    assert result.stdout == "lo\n", result  # no interface but loopback
    assert (shared_workspace / "out").read_text() == "hi"
