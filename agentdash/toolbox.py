"""The bridge between agentdash and the framework-free tool engine in tools/."""

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from tools import ToolRegistry
from tools.builtin import build_registry


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    requires_confirmation: bool
    tags: tuple[str, ...]
    schema_json: str


def registry_for_workspace(workspace: Path) -> ToolRegistry:
    """Every built-in tool, confined to one session's workspace."""
    workspace.mkdir(parents=True, exist_ok=True)
    return build_registry(workspace)


def tool_catalogue() -> list[ToolInfo]:
    """What the built-in tools are, for pages that list them (no workspace is touched)."""
    registry = registry_for_workspace(Path(settings.AGENTDASH_WORKSPACES_DIR) / "_catalogue")
    return [
        ToolInfo(
            name=tool.name,
            description=tool.description,
            requires_confirmation=tool.requires_confirmation,
            tags=tuple(tool.tags),
            schema_json=json.dumps(tool.parameters, indent=2),
        )
        for tool in registry.list_tools()
    ]
