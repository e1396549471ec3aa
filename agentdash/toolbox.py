"""The bridge between agentdash and the framework-free tool engine in tools/."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from tools import ToolRegistry
from tools.builtin import build_registry
from tools.sandbox import get_sandbox

if TYPE_CHECKING:
    from agentdash.models import AgentSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    requires_confirmation: bool
    tags: tuple[str, ...]
    schema_json: str


@lru_cache(maxsize=256)
def _registry(workspace: Path, enabled: tuple[str, ...]) -> ToolRegistry:
    # Building the tools compiles their validators: done once per session, not per step.
    workspace.mkdir(parents=True, exist_ok=True)
    registry = build_registry(workspace, http_allow_hosts=settings.AGENTDASH_HTTP_ALLOW_HOSTS)
    if not enabled:
        return registry
    chosen = ToolRegistry()
    for tool in registry.list_tools():
        if tool.name in enabled:
            chosen.add(tool)
    return chosen


def registry_for_session(session: AgentSession) -> ToolRegistry:
    """The tools this session may use, confined to its own workspace."""
    return _registry(session.workspace, tuple(sorted(session.enabled_tools or ())))


def catalogue() -> ToolRegistry:
    """Every built-in tool, for checking and previewing what applies to any session."""
    return _registry(Path(settings.AGENTDASH_WORKSPACES_DIR) / "_catalogue", ())


def tool_catalogue() -> list[ToolInfo]:
    """What the built-in tools are, for pages and forms that list them."""
    registry = catalogue()
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


def announce_sandbox() -> None:
    """Make the sandbox the code tools use, as they make it, for the server and workers
    to say as they start what it enforces on this host and what not (the sandbox logs
    that as it is made), or that it cannot be made here."""
    try:
        get_sandbox()
    except Exception as error:  # any backend's, e.g. the Docker SDK's for a bad DOCKER_HOST
        logger.error("Code tools cannot run here: %s", error)
