"""Sandboxed execution: one interface (`Sandbox.run`), three backends.

- "process" (the default): bubblewrap namespaces, per-run cgroups and rlimits.
- "warm": the same protections, started by a pre-started launcher that forks per run.
- "docker": a locked-down container through the Docker Engine API.

`python -m tools.sandbox` prints what this host enforces.
"""

from __future__ import annotations

from typing import Any

from tools.sandbox.base import Limits, Sandbox, SandboxResult

__all__ = ["Limits", "Sandbox", "SandboxResult", "get_sandbox"]


def get_sandbox(name: str = "process", **options: Any) -> Sandbox:
    """A sandbox backend by name; `options` go to its constructor."""
    if name == "process":
        from tools.sandbox.process import ProcessSandbox

        return ProcessSandbox(**options)
    if name == "warm":
        from tools.sandbox.warm import WarmSandbox

        return WarmSandbox(**options)
    if name == "docker":
        from tools.sandbox.docker import DockerSandbox

        return DockerSandbox(**options)
    raise ValueError(f"unknown sandbox {name!r}: choose process, warm or docker")
