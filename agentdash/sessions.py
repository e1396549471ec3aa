"""Starting and cancelling agent sessions: the two lifecycle changes an operator makes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from agentdash import audit, live, runner
from agentdash.models import AgentSession, Message
from agentdash.states import SessionStatus, transition


def actor_for(user: AbstractBaseUser | None) -> str:
    """How the audit log names whoever acted."""
    return f"user:{user.get_username()}" if user is not None else "system"


def start_session(
    *,
    goal: str,
    owner: AbstractBaseUser | None = None,
    provider: str = "scripted",
    model: str = "",
    script: list[Any] | None = None,
    enabled_tools: list[str] | None = None,
    system_prompt: str = "",
    max_steps: int | None = None,
    max_tokens: int | None = None,
    max_cost: Decimal | None = None,
) -> AgentSession:
    """Create a session with the goal as its first message, audit it, schedule step one."""
    from agentdash.providers import default_model

    goal = goal.strip()
    if not goal:
        raise ValueError("A session needs a goal.")
    check_provider(provider)
    check_tools(enabled_tools or [])
    fields: dict[str, Any] = {}
    if max_steps is not None:
        fields["max_steps"] = max_steps
    with transaction.atomic():
        session = AgentSession.objects.create(
            goal=goal,
            owner=owner,
            provider=provider,
            model=model or default_model(provider),
            script=script,
            enabled_tools=enabled_tools or [],
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            max_cost=max_cost,
            **fields,
        )
        Message.objects.create(
            session=session,
            index=0,
            role=Message.Role.USER,
            content=[{"type": "text", "text": goal}],
        )
        audit.record(
            "session.created",
            actor=actor_for(owner),
            session_id=session.pk,
            payload={
                "goal": goal,
                "provider": session.provider,
                "model": session.model,
                "enabled_tools": session.enabled_tools,
                "max_steps": session.max_steps,
                "max_tokens": max_tokens,
                "max_cost": str(max_cost) if max_cost is not None else None,
                "scripted_turns": len(script) if script is not None else None,
            },
        )
        runner.schedule(session.pk)
        live.changed(session.pk)
    return session


def check_provider(name: str) -> None:
    """Refuse a provider that does not exist, or cannot be used here (no API key): a
    session started with it would only fail at its first step."""
    from agentdash.providers import available_providers

    providers = available_providers()
    info = next((info for info in providers if info.name == name), None)
    if info is None:
        names = ", ".join(info.name for info in providers)
        raise ValueError(f"No provider is called {name!r}. The providers: {names}.")
    if not info.configured:
        raise ValueError(f"{info.label} is not configured here. {info.reason}")


def check_tools(names: list[str]) -> None:
    """Refuse tool names that no tool has: every call of such a session would fail."""
    from agentdash import toolbox

    known = sorted(tool.name for tool in toolbox.catalogue().list_tools())
    if unknown := sorted(set(names) - set(known)):
        raise ValueError(
            f"No tool is called {', '.join(map(repr, unknown))}. The tools: {', '.join(known)}."
        )


def cancel_session(session: AgentSession, *, user: AbstractBaseUser | None = None) -> None:
    """Stop a session now, whatever it is doing.

    Pending approvals are rejected in the canceller's name, and approved calls that have
    not started are rejected too; a tool that is running is stopped by the runner, which
    watches for this (its call ends `interrupted`).
    Raises IllegalTransition when the session has already ended.
    """
    actor = actor_for(user)
    with transaction.atomic():
        # Read the status under a lock: the runner may have moved it since the caller
        # looked, and only a session that has really ended may be refused.
        session = AgentSession.objects.select_for_update().get(pk=session.pk)
        transition(
            session,
            SessionStatus.CANCELLED,
            actor=actor,
            cancel_requested=True,
            status_reason=f"Cancelled by {actor}.",
        )
        runner.settle_open_calls(
            session, actor=actor, reason="The session was cancelled.", user=user
        )
