"""The approval logic: an operator approves, edits then approves, or rejects a pending call.

`decide()` is the only way a human decision enters the system, from the browser, the
command line or any future API. It is race-safe: the database allows one decision per
call and the state change is conditional, so when two operators click at once exactly
one wins and the other gets `AlreadyDecided` naming the winner.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from agentdash import runner, toolbox
from agentdash.models import AgentSession, ApprovalDecision, ExecutionResult, ToolCall
from agentdash.sessions import actor_for
from agentdash.states import CallState, SessionStatus, StaleState, transition
from tools import ToolValidationError

DECIDE_PERMISSION = "agentdash.decide_toolcall"


class AlreadyDecided(Exception):
    """Someone decided this call first (or it is no longer waiting for anyone)."""

    def __init__(self, call: ToolCall, decision: ApprovalDecision | None) -> None:
        self.call = call
        self.decision = decision
        if decision is not None:
            verb = "approved" if decision.approved else "rejected"
            when = decision.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            message = f"Call {call.pk} was already {verb} by {decision.actor} at {when}."
        else:
            message = f"Call {call.pk} is {call.state}, not waiting for approval."
        super().__init__(message)


class InvalidEdit(Exception):
    """Edited arguments that the tool's schema refuses; nothing was decided."""

    def __init__(self, error: ToolValidationError) -> None:
        super().__init__(str(error))
        self.errors = error.errors


def rejection_observation(reason: str) -> str:
    """What the model reads when an operator says no."""
    reason = reason.strip()
    return (
        f"An operator rejected this call. Reason: {reason}"
        if reason
        else ("An operator rejected this call (no reason given).")
    )


def decide(
    call_id: int,
    *,
    user: AbstractBaseUser,
    approve: bool,
    reason: str = "",
    edited_arguments: dict[str, Any] | None = None,
) -> ApprovalDecision:
    """Record `user`'s decision on a pending call and schedule the session's next step.

    Raises PermissionDenied, ToolCall.DoesNotExist, AlreadyDecided, or InvalidEdit
    (the edit failed the tool's schema); in every case nothing is written.
    """
    if not user.has_perm(DECIDE_PERMISSION):
        raise PermissionDenied(f"{user.get_username()} may not approve or reject tool calls.")
    actor = actor_for(user)
    try:
        with transaction.atomic():
            call = ToolCall.objects.select_for_update().select_related("session").get(pk=call_id)
            if call.state != CallState.PENDING_APPROVAL:
                raise AlreadyDecided(call, call.decision)
            arguments = call.arguments
            if approve and edited_arguments is not None:
                arguments = _validated_edit(call, edited_arguments)
            decision = ApprovalDecision.objects.create(
                tool_call=call,
                approved=approve,
                decided_by=user,
                actor=actor,
                reason=reason,
                original_arguments=call.arguments,
                edited_arguments=arguments if arguments != call.arguments else None,
            )
            payload: dict[str, Any] = {"reason": reason}
            if decision.edited_arguments is not None:
                payload |= {"original_arguments": call.arguments, "edited_arguments": arguments}
            if approve:
                transition(
                    call, CallState.APPROVED, actor=actor, payload=payload, arguments=arguments
                )
            else:
                transition(call, CallState.REJECTED, actor=actor, payload=payload)
                observation = rejection_observation(reason)
                ExecutionResult.objects.create(
                    tool_call=call, status="rejected", error=observation, observation=observation
                )
            _resume_if_nothing_pending(call.session, actor)
    except (IntegrityError, StaleState):
        # Lost a race that the row lock could not see (SQLite has none): report the winner.
        call = ToolCall.objects.get(pk=call_id)
        raise AlreadyDecided(call, call.decision) from None
    return decision


def _validated_edit(call: ToolCall, edited: dict[str, Any]) -> dict[str, Any]:
    tool = toolbox.registry_for_session(call.session).get(call.tool_name)
    if tool is None:
        raise InvalidEdit(ToolValidationError(f"The tool {call.tool_name!r} no longer exists."))
    try:
        return tool.validate(edited)
    except ToolValidationError as error:
        raise InvalidEdit(error) from None


def _resume_if_nothing_pending(session: AgentSession, actor: str) -> None:
    """Schedule the next step; wake the session if this was the last pending call."""
    still_pending = ToolCall.objects.filter(
        session=session, state=CallState.PENDING_APPROVAL
    ).exists()
    if not still_pending and session.status == SessionStatus.WAITING_APPROVAL:
        transition(session, SessionStatus.RUNNING, actor=actor)
    if not session.is_finished:
        runner.schedule(session.pk)
