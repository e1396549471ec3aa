"""The Docker backend: each run is a new container, locked down, removed afterwards.

The container has no network, a read-only root filesystem, a tmpfs /tmp, memory (swap
included) and pids limits, rlimits for CPU time, file size and open files, no
capabilities at all, no-new-privileges and a non-root user. The session's workspace is
bind-mounted read-write at /workspace, its working directory, so the file tools and the
code share files as with the other backends (the user must be able to write there).

The Docker SDK blocks, so every call to the engine runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
import requests
from docker.types import Ulimit

from tools.sandbox.base import (
    MEMORY,
    SIGNAL_EXIT_BASE,
    WALL_TIME,
    BoundedReader,
    Command,
    Limits,
    Sandbox,
    SandboxResult,
    log_protections,
    signal_limit,
)

API_VERSION: Final = "1.45"  # pinned, so the client never asks the engine first
DEFAULT_IMAGE: Final = "python:3.13-slim"
DEFAULT_USER: Final = "65534:65534"
WORKDIR: Final = "/workspace"
TMPFS_MB: Final = 64
MIB: Final = 1024 * 1024
# How long the engine may take to create, start or remove a container.
ENGINE_TIMEOUT_SECONDS: Final = 60


def default_base_url() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


# Removals of containers whose run was cancelled while they were made, kept until done
# (the event loop holds only weak references to tasks).
_cleanups: set[asyncio.Future[None]] = set()


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        base_url: str | None = None,
        image: str = DEFAULT_IMAGE,
        user: str = DEFAULT_USER,
    ) -> None:
        super().__init__(limits)
        if user.split(":")[0] in ("0", "root"):
            raise ValueError("the Docker sandbox never runs code as root")
        self.image = image
        self.user = user
        self.api = docker.APIClient(
            base_url=base_url or default_base_url(),
            version=API_VERSION,
            timeout=ENGINE_TIMEOUT_SECONDS,
        )
        log_protections(self)

    def protections(self) -> dict[str, bool | str]:
        return {
            "backend": self.name,
            "network": "network disabled (mode none)",
            "filesystem": "the image's root read-only, a tmpfs /tmp, the workspace read-write",
            "processes_hidden": "own pid namespace",
            "user": f"{self.user}, all capabilities dropped, no-new-privileges",
            "environment": "the image's own, nothing of the server's",
            "workdir": f"the workspace at {WORKDIR}",
            "stdin": "closed",
            "memory": "container memory limit, swap included",
            "processes": "container pids limit",
            "cpu_time": "RLIMIT_CPU per process",
            "wall_time": True,
            "file_size": "RLIMIT_FSIZE per file",
            "open_files": "RLIMIT_NOFILE",
            "workspace_total_size": False,
            "kill_on_timeout": "the container is killed and removed",
        }

    def container_config(self, command: Command, workdir: Path, limits: Limits) -> dict[str, Any]:
        """The create payload's arguments: everything that locks the container down."""
        argv = list(command.argv or ("python", "-I", "-S", "-c", command.code or ""))
        host_config = self.api.create_host_config(
            binds={str(workdir): {"bind": WORKDIR, "mode": "rw"}},
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={TMPFS_MB}m"},  # noqa: S108 - the container's own
            mem_limit=limits.memory_mb * MIB,
            memswap_limit=limits.memory_mb * MIB,
            pids_limit=limits.max_processes,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            ulimits=[
                Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds + 1),
                Ulimit(name="fsize", soft=limits.max_file_mb * MIB, hard=limits.max_file_mb * MIB),
                Ulimit(name="nofile", soft=limits.max_open_files, hard=limits.max_open_files),
                Ulimit(name="core", soft=0, hard=0),
            ],
            init=True,  # a pid 1 that reaps, so a kill of the container reaches everything
            auto_remove=False,  # removed explicitly once its output is read
        )
        return {
            "image": self.image,
            "command": argv,
            "user": self.user,
            "working_dir": WORKDIR,
            "network_disabled": True,
            "stdin_open": False,
            "tty": False,
            "labels": {"agentdash.sandbox": "run"},
            "host_config": host_config,
        }

    async def _run(self, command: Command, workdir: Path, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        config = self.container_config(command, workdir, limits)
        creating = asyncio.ensure_future(asyncio.to_thread(self._create, config))
        try:
            container = (await asyncio.shield(creating))["Id"]
        except asyncio.CancelledError:
            # The engine goes on creating it (or pulling its image): remove it once made,
            # in a task of its own that a second cancellation does not stop either.
            cleanup = asyncio.ensure_future(self._remove_once_created(creating))
            _cleanups.add(cleanup)
            cleanup.add_done_callback(_cleanups.discard)
            await asyncio.shield(cleanup)
            raise
        try:
            await asyncio.to_thread(self.api.start, container)
            timed_out = False
            try:
                status = await asyncio.to_thread(self.api.wait, container, limits.wall_seconds)
                exit_code = int(status["StatusCode"])
            except requests.exceptions.RequestException:  # the wait timed out
                timed_out = True
                await asyncio.to_thread(self._kill, container)
                exit_code = SIGNAL_EXIT_BASE + signal.SIGKILL
            stdout = await asyncio.to_thread(self._logs, container, "stdout", limits)
            stderr = await asyncio.to_thread(self._logs, container, "stderr", limits)
            state = (await asyncio.to_thread(self.api.inspect_container, container))["State"]
        finally:
            # Also on cancellation: the container must not outlive the call.
            await asyncio.shield(asyncio.to_thread(self._remove, container))
        if timed_out:
            limit_hit: str | None = WALL_TIME
        elif state.get("OOMKilled"):
            limit_hit = MEMORY
        else:
            limit_hit = signal_limit(exit_code)
        return SandboxResult(
            exit_code=exit_code,
            stdout=stdout.text(),
            stderr=stderr.text(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            duration_ms=(time.monotonic() - started) * 1000,
            timed_out=timed_out,
            limit_hit=limit_hit,
        )

    def _create(self, config: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.api.create_container(**config)
        except docker.errors.ImageNotFound:
            self.api.pull(self.image)
            return self.api.create_container(**config)

    def _logs(self, container: str, stream: str, limits: Limits) -> BoundedReader:
        """One output stream, read until the cap and then dropped (the stream is closed,
        not drained)."""
        chunks: Iterator[bytes] = self.api.logs(
            container, stdout=stream == "stdout", stderr=stream == "stderr", stream=True
        )
        return BoundedReader.from_chunks(chunks, limits.max_output_bytes)

    def _kill(self, container: str) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self.api.kill(container)

    async def _remove_once_created(self, creating: asyncio.Future[dict[str, Any]]) -> None:
        with contextlib.suppress(Exception):  # not created: nothing to remove
            await asyncio.to_thread(self._remove, (await creating)["Id"])

    def _remove(self, container: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.api.remove_container(container, force=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.api.close)

    def ping(self) -> bool:
        """Whether an engine answers at this sandbox's address."""
        try:
            return bool(self.api.ping())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False
