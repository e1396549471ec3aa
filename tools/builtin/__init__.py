"""The built-in tools, each confined to one session's workspace."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tools.builtin.code import register_code_tools
from tools.builtin.files import register_file_tools
from tools.builtin.http import register_http_tools
from tools.builtin.workspace import Workspace
from tools.registry import ToolRegistry
from tools.sandbox import Sandbox, get_sandbox


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
    register_code_tools(registry, confined.root, sandbox or get_sandbox())
    register_http_tools(registry, http_allow_hosts)
    return registry
