"""`python -m tools.sandbox`: what each sandbox backend enforces on this host."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from tools.sandbox import Sandbox, get_sandbox
from tools.sandbox.docker import DockerSandbox


def describe(sandbox: Sandbox) -> str:
    lines = [f"{sandbox.name}:"]
    for name, value in sandbox.protections().items():
        shown = "NOT ENFORCED" if value is False else "yes" if value is True else value
        lines.append(f"  {name:22} {shown}")
    return "\n".join(lines)


async def main() -> int:
    with tempfile.TemporaryDirectory() as root:
        backends: list[Sandbox] = [get_sandbox("process")]
        try:
            backends.append(get_sandbox("warm", workspace_root=Path(root)))
        except RuntimeError as unavailable:
            print(f"warm: unavailable ({unavailable})\n")
        docker = DockerSandbox()
        if docker.ping():
            backends.append(docker)
        else:
            print("docker: no engine answers at DOCKER_HOST or /var/run/docker.sock\n")
            await docker.aclose()
        for backend in backends:
            print(describe(backend), end="\n\n")
            await backend.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
