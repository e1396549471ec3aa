"""Sandboxed execution: one interface (`Sandbox.run`), three backends.

- "process" (the default): bubblewrap namespaces, per-run cgroups and rlimits.
- "warm": the same protections, started by a pre-started launcher that forks per run
  (AGENTDASH_SANDBOX=warm makes it the default).
- "docker": a locked-down container through the Docker Engine API.

`python -m tools.sandbox` prints what this host enforces.
"""

from __future__ import annotations

import os
from typing import Any

from tools.sandbox.base import Limits, Sandbox, SandboxResult

__all__ = ["Limits", "Sandbox", "SandboxResult", "get_sandbox"]


def get_sandbox(name: str | None = None, **options: Any) -> Sandbox:
    """A sandbox backend by name; `options` go to its constructor. The name defaults to
    the AGENTDASH_SANDBOX environment variable, else "process". A "warm" sandbox made
    without a `workspace_root` shares one launcher per workspaces' parent directory with
    every other in the process (one per worker process in Django)."""
    name = name or os.environ.get("AGENTDASH_SANDBOX") or "process"
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
