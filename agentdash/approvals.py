"""The approval logic: operators approve (possibly after an edit) or reject pending calls.

`decide()` and `decide_many()` are the only ways a human decision enters the system,
from the browser, the command line or any future API. A decision must pass, in order:

- the decide permission (PermissionDenied);
- the call is waiting, and its deadline has not passed (AlreadyDecided, naming who
  decided or when it expired): a decision is only ever made on a call that the server
  itself recorded as pending;
- `expected_hash`, when given (the page sends what its operator saw), equals the hash
  of the call's current arguments (ArgumentsChanged);
- to approve, also (PermissionDenied): membership of the call's required group, which
  superusers pass as they pass every permission check; not being the session's owner
  when four eyes apply (AGENTDASH_FOUR_EYES, or the deciding rule's flag), which binds
  superusers too, since four eyes are about two people, not about privilege; and not
  having approved this call already in this round;
- edited arguments must pass the tool's schema and must not be what the policy denies
  (InvalidEdit): an edit cannot carry a call past a deny rule, such as a path rule. What
  a rule asks of the approvers of the edited arguments (a group, more approvals, four
  eyes), where stricter than the call's, applies to them from the editor on.
Rejecting needs only the permission: stopping a call is always safe.

A call that needs two approvals stays pending after the first, which is recorded and
audited ("toolcall.approval_added", 1 of 2); the second, from someone else, approves
it; any rejection rejects it. An edit changes the arguments and starts a new round, in
which only approvals of the new arguments count.

Every approval stores the SHA-256 of exactly the arguments it approved
(`arguments_hash`); the call keeps it as `decided_hash`, and the runner runs the call
only while its arguments still hash to it (runner.SessionRunner._start).

Race safety: the call's row is locked (select_for_update; SQLite's IMMEDIATE
transactions serialise writers anyway), every state change is a conditional update,
and the database allows one approval per person and round. When two operators click
at once, exactly one decision settles the call and the other is told who decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agentdash import audit, live, policy, rows, runner, toolbox
from agentdash.models import AgentSession, ApprovalDecision, ExecutionResult, ToolCall
from agentdash.models.sessions import arguments_hash
from agentdash.sessions import actor_for
from agentdash.states import CallState, SessionStatus, StaleState, insert, transition
from tools import ToolValidationError

__all__ = [
    "DECIDE_PERMISSION",
    "AlreadyDecided",
    "ArgumentsChanged",
    "InvalidEdit",
    "arguments_hash",
    "decide",
    "decide_many",
    "rejection_observation",
]

DECIDE_PERMISSION = "agentdash.decide_toolcall"


class AlreadyDecided(Exception):
    """Someone decided this call first, its deadline passed, or it is not waiting."""

    def __init__(self, call: ToolCall, decision: ApprovalDecision | None) -> None:
        self.call = call
        self.decision = decision
        if call.state == CallState.EXPIRED or _overdue(call):
            assert call.expires_at is not None  # only calls with a deadline expire
            when = call.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            message = (
                f"Call {call.pk} expired at {when}: nobody decided it before its deadline, "
                "and it will not run."
            )
        elif decision is not None:
            verb = "approved" if decision.approved else "rejected"
            when = decision.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            message = f"Call {call.pk} was already {verb} by {decision.actor} at {when}."
        else:
            message = f"Call {call.pk} is {call.state}, not waiting for approval."
        super().__init__(message)


class ArgumentsChanged(Exception):
    """The call's arguments are no longer those its operator saw; nothing was decided."""

    def __init__(self, call: ToolCall, expected_hash: str) -> None:
        self.call = call
        self.expected_hash = expected_hash
        super().__init__(
            f"The arguments of call {call.pk} changed after they were shown to you; "
            "look at them again before deciding."
        )


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
    expected_hash: str | None = None,
    allow_for_session: bool = False,
) -> ApprovalDecision:
    """Record `user`'s decision on a pending call and, once the call is settled,
    schedule the session's next step.

    `allow_for_session` (with `approve`) also allows the call's tool for the rest of
    its session: a session rule above all others, audited; refused for a call that
    needs two approvals, since one person cannot waive a two-person rule. The returned
    decision's `tool_call.state` is still pending_approval when more approvals are due.

    Raises PermissionDenied, ToolCall.DoesNotExist, AlreadyDecided, ArgumentsChanged
    or InvalidEdit (the edit failed the tool's schema, or the policy denies it); in every
    case nothing is written.
    """
    _check_permission(user)
    actor = actor_for(user)
    try:
        with transaction.atomic():
            call = _one(_locked_calls([call_id]), call_id)
            decision = _decide_locked(
                call,
                user=user,
                actor=actor,
                approve=approve,
                reason=reason,
                edited_arguments=edited_arguments,
                expected_hash=expected_hash,
                allow_for_session=allow_for_session,
            )
            if call.state != CallState.PENDING_APPROVAL:
                _resume_if_nothing_pending(call.session, actor)
    except (IntegrityError, StaleState):
        # Lost a race that the row lock could not see: report the winner.
        call = ToolCall.objects.get(pk=call_id)
        raise AlreadyDecided(call, call.decision) from None
    return decision


def decide_many(
    call_ids: Iterable[int],
    *,
    user: AbstractBaseUser,
    approve: bool,
    reason: str = "",
    expected_hashes: Mapping[int, str] | None = None,
) -> list[ApprovalDecision]:
    """Approve or reject several pending calls of one step together.

    One transaction: each call is decided and audited on its own, exactly as decide()
    would, then the session's next step is scheduled once. All or nothing: when any
    call cannot be decided (decided already, expired, changed, not this user's to
    approve), nothing is, and the exception names that call. Returns the decisions in
    the order of `call_ids`.

    Raises ValueError (no calls, or calls of more than one step), the exceptions of
    decide(), and ToolCall.DoesNotExist naming a missing call.
    """
    ids = list(dict.fromkeys(call_ids))
    if not ids:
        raise ValueError("No calls to decide.")
    _check_permission(user)
    actor = actor_for(user)
    try:
        with transaction.atomic():
            # Locked in id order, as every batch locks them: two batches cannot deadlock.
            calls = {call.pk: call for call in _locked_calls(ids)}
            if missing := [call_id for call_id in ids if call_id not in calls]:
                raise ToolCall.DoesNotExist(f"No tool call {missing[0]}.")
            if len({call.message_id for call in calls.values()}) > 1:
                raise ValueError("A batch decides calls of one step of one session only.")
            decisions = [
                _decide_locked(
                    calls[call_id],
                    user=user,
                    actor=actor,
                    approve=approve,
                    reason=reason,
                    edited_arguments=None,
                    expected_hash=(expected_hashes or {}).get(call_id),
                    allow_for_session=False,
                )
                for call_id in ids
            ]
            _resume_if_nothing_pending(calls[ids[0]].session, actor)
    except (IntegrityError, StaleState):
        for call in ToolCall.objects.filter(pk__in=ids).order_by("pk"):
            if call.state != CallState.PENDING_APPROVAL:
                raise AlreadyDecided(call, call.decision) from None
        raise
    return decisions


def _locked_calls(ids: list[int]) -> list[ToolCall]:
    """The calls to decide, in id order (every decision locks them in that order, so two
    batches cannot deadlock), locked, with their session but not its script: a scripted
    session's script holds every turn it will play, and decoding it at each decision
    cost more than the rest of the read (nothing here needs it; it loads if asked).
    Plain SQL: on SQLite the ORM's join took several times as long to build as to run.

    Only the calls' rows are locked: locking the session's too, after the call's,
    deadlocked on PostgreSQL with a runner that holds the session (share) and starts
    that very call (an operator deciding it twice). The runner and the cancel lock the
    session before its calls; a decision changes the session only for a call that was
    pending, which no runner can be starting."""
    # An id beyond the key's range names no call (SQLite's driver would refuse it).
    ids = [call_id for call_id in ids if 0 < call_id <= _MAX_KEY]
    if not ids:
        return []
    lock = f' FOR UPDATE OF "{_CALL_TABLE}"' if connection.features.has_select_for_update else ""
    placeholders = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(_LOCKED_CALLS_SQL % placeholders + lock, ids)
        found = cursor.fetchall()
    calls = []
    for row in found:
        call = _CALL_COLUMNS.instance(row[: len(_CALL_COLUMNS)], connection)
        call.session = _SESSION_COLUMNS.instance(row[len(_CALL_COLUMNS) :], connection)
        calls.append(call)
    return calls


_CALL_TABLE = ToolCall._meta.db_table
_MAX_KEY = 2**63 - 1  # the largest BIGINT
_SESSION_TABLE = AgentSession._meta.db_table
_CALL_COLUMNS = rows.Columns(ToolCall, table=_CALL_TABLE)
_SESSION_COLUMNS = rows.Columns(AgentSession, table=_SESSION_TABLE, exclude=["script"])
# S608: only the models' own table and column names are formatted in; the ids are
# parameters (their placeholders go in at %s).
_LOCKED_CALLS_SQL = (
    f"SELECT {_CALL_COLUMNS.sql}, {_SESSION_COLUMNS.sql} "  # noqa: S608
    f'FROM "{_CALL_TABLE}" INNER JOIN "{_SESSION_TABLE}" '
    f'ON "{_SESSION_TABLE}"."id" = "{_CALL_TABLE}"."session_id" '
    f'WHERE "{_CALL_TABLE}"."id" IN (%s) ORDER BY "{_CALL_TABLE}"."id"'
)


def _one(calls: list[ToolCall], call_id: int) -> ToolCall:
    if not calls:
        raise ToolCall.DoesNotExist(f"No tool call {call_id}.")
    return calls[0]


def _check_permission(user: AbstractBaseUser) -> None:
    if not user.has_perm(DECIDE_PERMISSION):
        raise PermissionDenied(f"{user.get_username()} may not approve or reject tool calls.")


def _decide_locked(
    call: ToolCall,
    *,
    user: AbstractBaseUser,
    actor: str,
    approve: bool,
    reason: str,
    edited_arguments: dict[str, Any] | None,
    expected_hash: str | None,
    allow_for_session: bool,
) -> ApprovalDecision:
    """Decide one call whose row the caller's transaction has locked."""
    if call.state != CallState.PENDING_APPROVAL or _overdue(call):
        raise AlreadyDecided(call, call.decision)
    if expected_hash is not None and expected_hash != call.arguments_hash:
        raise ArgumentsChanged(call, expected_hash)
    if not approve:
        return _reject(call, user=user, actor=actor, reason=reason)

    arguments = call.arguments
    # What changes with an edit: the preview follows the new arguments, and a rule that
    # asks more of the approvers for them than for the model's applies from now on.
    edit_fields: dict[str, Any] = {}
    if edited_arguments is not None:
        arguments, edit_fields = _validated_edit(call, edited_arguments)
    edited = arguments != call.arguments
    if not edited:
        edit_fields = {}
    for name, value in edit_fields.items():
        setattr(call, name, value)
    # Approvals bind arguments: new arguments, a new round in which only theirs count.
    round_ = call.approval_round + 1 if edited else call.approval_round
    _check_may_approve(call, user, round_)
    if allow_for_session and call.approvals_required > 1:
        raise PermissionDenied(
            f"Call {call.pk} needs {call.approvals_required} approvals: one operator "
            "cannot allow its tool for the whole session."
        )
    digest = arguments_hash(arguments)
    decision = ApprovalDecision(
        tool_call=call,
        approved=True,
        decided_by=user,
        actor=actor,
        reason=reason,
        original_arguments=call.arguments,
        edited_arguments=arguments if edited else None,
        allow_for_session=allow_for_session,
        round=round_,
        arguments_hash=digest,
    )
    insert(decision)
    # This approval is the round's first when the arguments just changed, and the only
    # one needed when one suffices: no need to count.
    counted = call.approvals_required > 1 and not edited
    given = call.decisions.filter(round=round_, approved=True).count() if counted else 1
    payload: dict[str, Any] = {
        "reason": reason,
        "arguments_hash": digest,
        "approvals": given,
        "approvals_required": call.approvals_required,
    }
    if edited:
        payload |= {"original_arguments": call.arguments, "edited_arguments": arguments}
    if given < call.approvals_required:
        # Not a state change: the call waits on, its arguments (if edited) updated.
        ToolCall.objects.filter(pk=call.pk).update(
            arguments=arguments, approval_round=round_, updated_at=timezone.now(), **edit_fields
        )
        call.arguments, call.approval_round = arguments, round_
        audit.record(
            "toolcall.approval_added",
            actor=actor,
            session_id=call.session_id,
            tool_call_id=call.pk,
            payload=payload,
        )
        live.changed(call.session_id, call_id=call.pk)
        return decision
    transition(
        call,
        CallState.APPROVED,
        actor=actor,
        payload=payload | ({"allow_for_session": True} if allow_for_session else {}),
        arguments=arguments,
        approval_round=round_,
        decided_hash=digest,
        **edit_fields,
    )
    if allow_for_session:
        policy.allow_for_session(call, user=user, actor=actor)
    return decision


def _reject(call: ToolCall, *, user: AbstractBaseUser, actor: str, reason: str) -> ApprovalDecision:
    decision = ApprovalDecision(
        tool_call=call,
        approved=False,
        decided_by=user,
        actor=actor,
        reason=reason,
        original_arguments=call.arguments,
        round=call.approval_round,
    )
    insert(decision)
    transition(call, CallState.REJECTED, actor=actor, payload={"reason": reason})
    observation = rejection_observation(reason)
    ExecutionResult.objects.create(
        tool_call=call, status="rejected", error=observation, observation=observation
    )
    return decision


def _check_may_approve(call: ToolCall, user: AbstractBaseUser, round_: int) -> None:
    """The roles (module docstring); raises PermissionDenied."""
    name = user.get_username()
    group = call.required_group
    if group and not user.is_superuser and not user.groups.filter(name=group).exists():
        raise PermissionDenied(
            f"Approving call {call.pk} ({call.tool_name}) needs a member of the group "
            f"“{group}”; {name} is not one."
        )
    four_eyes = settings.AGENTDASH_FOUR_EYES or call.four_eyes
    if four_eyes and call.session.owner_id is not None and call.session.owner_id == user.pk:
        raise PermissionDenied(
            f"{name} started session {call.session_id}: under the four-eyes rule, "
            "someone else must approve its calls."
        )
    # With one approval required, a first approval settles the call: none can follow.
    needs_more = call.approvals_required > 1
    if needs_more and call.decisions.filter(round=round_, approved=True, decided_by=user).exists():
        raise PermissionDenied(
            f"{name} already approved call {call.pk}; its next approval must come "
            "from someone else."
        )


def _overdue(call: ToolCall) -> bool:
    return (
        call.state == CallState.PENDING_APPROVAL
        and call.expires_at is not None
        and call.expires_at <= timezone.now()
    )


def _validated_edit(
    call: ToolCall, edited: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The edited arguments as the tool takes them, and the call's fields they change:
    its preview, and what a stricter rule asks of the approvers of these arguments."""
    tool = toolbox.registry_for_session(call.session).get(call.tool_name)
    if tool is None:
        raise InvalidEdit(ToolValidationError(f"The tool {call.tool_name!r} no longer exists."))
    try:
        arguments = tool.validate(edited)
    except ToolValidationError as error:
        raise InvalidEdit(error) from None
    ruling = policy.decide_call(
        tool, arguments, session_id=call.session_id, workspace=call.session.workspace
    )
    if ruling.action == "deny":
        raise InvalidEdit(
            ToolValidationError(
                f"The policy denies these arguments ({ruling.reason}): change them, "
                "or reject the call."
            )
        )
    fields: dict[str, Any] = {"preview": runner.preview_of(tool, arguments)}
    if ruling.action == "ask":
        fields |= policy.stricter_requirements(call, ruling)
    return arguments, fields


def _resume_if_nothing_pending(session: AgentSession, actor: str) -> None:
    """Schedule the next step; wake the session if this was the last pending call."""
    with connection.cursor() as cursor:
        cursor.execute(_PENDING_SQL, [session.pk, CallState.PENDING_APPROVAL.value])
        still_pending = cursor.fetchone() is not None
    if not still_pending and session.status == SessionStatus.WAITING_APPROVAL:
        transition(session, SessionStatus.RUNNING, actor=actor)
    if not session.is_finished:
        runner.schedule(session.pk)


# Asked at every decision, so in plain SQL (building the ORM's query cost several times
# running it). S608: only the model's own table and column names are formatted in.
_PENDING_SQL = (
    f'SELECT 1 FROM "{ToolCall._meta.db_table}" '  # noqa: S608
    f'WHERE "{ToolCall._meta.get_field("session").column}" = %s '
    f'AND "{ToolCall._meta.get_field("state").column}" = %s LIMIT 1'
)
