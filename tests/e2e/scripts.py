"""Scripted sessions for the browser tests and the screenshots: what a model would send.

Sessions started here are created in this process and advanced by the server's worker,
which finds them within its poll interval (a quarter of a second).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from agentdash.models import AgentSession
from agentdash.sessions import start_session

Block = dict[str, Any]


def text(words: str) -> Block:
    return {"type": "text", "text": words}


def tool_use(name: str, **arguments: Any) -> Block:
    return {"type": "tool_use", "name": name, "input": arguments}


def start(owner: AbstractBaseUser, goal: str, *turns: list[Block]) -> AgentSession:
    """A scripted session that plays `turns`, one per step."""
    return start_session(goal=goal, owner=owner, script=list(turns))


def write_then_finish(owner: AbstractBaseUser, content: str = "first draft\n") -> AgentSession:
    """A session whose first step asks to write notes.md (which waits for approval) and
    whose second step ends it."""
    return start(
        owner,
        "Keep notes of the plan",
        [
            text("I'll write the plan down."),
            tool_use("write_file", path="notes.md", content=content),
        ],
        [text("The notes are written. Done.")],
    )
