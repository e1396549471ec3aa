"""The built-in tools, each confined to one session's workspace."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tools.builtin.files import register_file_tools
from tools.builtin.workspace import Workspace
from tools.registry import ToolRegistry

if TYPE_CHECKING:
    from tools.sandbox import Sandbox


def build_registry(
    workspace: Path,
    *,
    sandbox: Sandbox | None = None,
    http_allow_hosts: Sequence[str] = (),
) -> ToolRegistry:
    """A registry of every built-in tool, confined to `workspace` (an existing directory).

    `sandbox` runs run_python and run_shell; `http_allow_hosts` are the hosts http_fetch
    may reach.
    """
    registry = ToolRegistry()
    confined = Workspace(workspace)
    register_file_tools(registry, confined)
    # The code and HTTP tools join here, registered by tools/builtin/code.py and http.py:
    # register_code_tools(registry, confined, sandbox); register_http_tools(registry, hosts).
    return registry
