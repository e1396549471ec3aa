"""Who decides a proposed tool call: the policy (automatically) or a human.

At this stage the rule is the tool's own flag: a tool marked `requires_confirmation`
waits for an operator, every other tool is approved automatically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tools import Tool


@dataclass(frozen=True)
class PolicyDecision:
    action: Literal["allow", "ask"]
    reason: str
    rule: str


def decide_call(tool: Tool, arguments: dict[str, Any]) -> PolicyDecision:
    """What happens to a valid call of `tool` with `arguments` before anything runs."""
    if tool.requires_confirmation:
        effects = [
            hint
            for hint, present in (
                ("destructive", tool.destructive),
                ("reaches outside the sandbox", tool.open_world),
            )
            if present
        ]
        detail = f" ({', '.join(effects)})" if effects else ""
        return PolicyDecision(
            "ask", f"{tool.name} requires confirmation{detail}", "tool.requires_confirmation"
        )
    return PolicyDecision(
        "allow", f"{tool.name} does not require confirmation", "tool.default_allow"
    )
