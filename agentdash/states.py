"""The two state machines of agentdash, in one place.

Every status change of a session or a tool call goes through `transition()`, which
refuses a move the tables below do not allow, applies it with a conditional UPDATE (so
two processes racing for the same change cannot both win), and writes the AuditEvent
in the same transaction; or, for a tool call the model just proposed, through
`enter()`, which stores the new row directly in the state the policy chose, checked
against the same table and audited the same way. Nothing else in the code base writes
a `status` or `state` column.

    AgentSession: queued → running → waiting_approval ⇄ running →
                  completed | failed | cancelled | budget_exceeded
    ToolCall:     proposed → pending_approval | auto_approved → approved | rejected |
                  expired → running → succeeded | errored | timed_out | interrupted

Five edges extend DESIGN's picture, each for a reason:
- proposed → errored: a call the model got wrong (unknown tool, invalid or unparsable
  arguments, a duplicate id) never reaches a human or a tool; its error result goes
  straight back to the model.
- proposed → rejected: a policy rule denied the call (actor "policy"); it never runs,
  and the model reads which rule said no.
- approved | auto_approved → pending_approval: the call's arguments no longer hash to
  what was approved (or allowed) when the runner is about to run it, so a human must
  look again; the audit event carries both hashes.
- approved | auto_approved → rejected: the policy, asked once more right before the
  call runs, now denies it (actor "policy"; a link made meanwhile leads its path under
  a denied folder, or a rule changed), or the session was cancelled before the call
  could start (runner.SessionRunner._start). The policy may also send an
  auto_approved call to pending_approval, when it now asks a human about it.
- interrupted → running: a call whose worker died is re-run, but only when its tool
  is marked idempotent (the runner checks that).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.db import models, transaction
from django.utils import timezone


class SessionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"


class CallState(models.TextChoices):
    PROPOSED = "proposed"
    PENDING_APPROVAL = "pending_approval"
    AUTO_APPROVED = "auto_approved"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


_S = SessionStatus
SESSION_FINAL = frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.BUDGET_EXCEEDED})
SESSION_TRANSITIONS: Mapping[str, frozenset[str]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.WAITING_APPROVAL, *SESSION_FINAL}),
    _S.WAITING_APPROVAL: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
    **{final: frozenset() for final in SESSION_FINAL},
}

_C = CallState
CALL_FINAL = frozenset({_C.SUCCEEDED, _C.ERRORED, _C.TIMED_OUT, _C.REJECTED, _C.EXPIRED})
CALL_DECIDED = frozenset({_C.AUTO_APPROVED, _C.APPROVED})
CALL_TRANSITIONS: Mapping[str, frozenset[str]] = {
    _C.PROPOSED: frozenset({_C.PENDING_APPROVAL, _C.AUTO_APPROVED, _C.REJECTED, _C.ERRORED}),
    _C.PENDING_APPROVAL: frozenset({_C.APPROVED, _C.REJECTED, _C.EXPIRED}),
    _C.AUTO_APPROVED: frozenset({_C.RUNNING, _C.PENDING_APPROVAL, _C.REJECTED}),
    _C.APPROVED: frozenset({_C.RUNNING, _C.PENDING_APPROVAL, _C.REJECTED}),
    _C.RUNNING: frozenset({_C.SUCCEEDED, _C.ERRORED, _C.TIMED_OUT, _C.INTERRUPTED}),
    _C.INTERRUPTED: frozenset({_C.RUNNING}),
    **{final: frozenset() for final in CALL_FINAL},
}

# When each state was entered, for the models that keep a timestamp per state.
_CALL_TIMESTAMP = {
    _C.PENDING_APPROVAL: "proposed_at",
    _C.AUTO_APPROVED: "decided_at",
    _C.APPROVED: "decided_at",
    _C.REJECTED: "decided_at",
    _C.EXPIRED: "decided_at",
    _C.RUNNING: "started_at",
    _C.SUCCEEDED: "finished_at",
    _C.ERRORED: "finished_at",
    _C.TIMED_OUT: "finished_at",
    _C.INTERRUPTED: "finished_at",
}
_SESSION_TIMESTAMP = {
    _S.RUNNING: "started_at",
    **{final: "finished_at" for final in SESSION_FINAL},
}


class IllegalTransition(Exception):
    """A state change the state machine does not allow; nothing was changed."""


class StaleState(IllegalTransition):
    """The row moved on since it was read (another process won the race)."""

    def __init__(self, message: str, current: str) -> None:
        super().__init__(message)
        self.current = current


def transition(
    obj: models.Model,
    new: str,
    *,
    actor: str,
    payload: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Move `obj` (an AgentSession or a ToolCall) to state `new` and audit it.

    `fields` are further columns to set in the same UPDATE. Runs in its own atomic
    block (joining the caller's when there is one). Raises IllegalTransition when the
    table forbids the move and StaleState when another process changed the row
    first; in both cases nothing is written.
    """
    from agentdash.models import AgentSession, ToolCall

    if isinstance(obj, AgentSession):
        field, table, stamps, kind = "status", SESSION_TRANSITIONS, _SESSION_TIMESTAMP, "session"
        call_id = None
    elif isinstance(obj, ToolCall):
        field, table, stamps, kind = "state", CALL_TRANSITIONS, _CALL_TIMESTAMP, "toolcall"
        call_id = obj.pk
    else:
        raise TypeError(f"{type(obj).__name__} has no state machine")

    old = getattr(obj, field)
    if new not in table[old]:
        raise IllegalTransition(
            f"{type(obj).__name__} {obj.pk}: {old} → {new} is not allowed"
            f" (from {old} it can go to {', '.join(sorted(table[old])) or 'nowhere: it is final'})"
        )
    now = timezone.now()
    updates = {field: new, "updated_at": now, **fields}
    if (stamp := stamps.get(new)) and stamp not in fields:
        updates[stamp] = now
    # No savepoint: nothing in here can fail half-way without failing the caller too, and
    # a stale row is reported after the block, once it is known that nothing was written.
    with transaction.atomic(savepoint=False):
        changed = update_if(obj, {field: old}, updates)
        if changed == 1:
            _announce(obj, kind, old, new, actor=actor, payload=payload, call_id=call_id)
    if changed != 1:
        current = type(obj).objects.filter(pk=obj.pk).values_list(field, flat=True).first()
        raise StaleState(
            f"{type(obj).__name__} {obj.pk} is {current}, no longer {old}: not moved to {new}",
            current=current or "",
        )
    for name, value in updates.items():
        setattr(obj, name, value)


def enter(
    call: models.Model,
    new: str,
    *,
    actor: str,
    payload: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Store a new tool call (built, not yet saved, so still `proposed`) directly in state
    `new`, auditing it exactly as transition() audits the move from proposed: one INSERT
    where creating the row and then moving it took an INSERT and an UPDATE. Nobody can
    have seen the proposed row, so nothing is lost. Same rules: raises IllegalTransition
    for a state that proposed cannot move to. Call inside the transaction that records
    the model's reply."""
    from agentdash.models import ToolCall

    if not isinstance(call, ToolCall) or not call._state.adding:
        raise TypeError(
            "enter() stores a new, unsaved ToolCall; move a stored one with transition()"
        )
    old = call.state
    if old != CallState.PROPOSED or "state" in fields:
        raise TypeError("enter() starts from proposed and sets the state itself, to `new`")
    if new not in CALL_TRANSITIONS[old]:
        raise IllegalTransition(f"a new tool call cannot go from {old} to {new}")
    now = timezone.now()
    if (stamp := _CALL_TIMESTAMP.get(new)) and stamp not in fields:
        fields[stamp] = now
    for name, value in {"state": new, **fields}.items():
        setattr(call, name, value)
    with transaction.atomic(savepoint=False):
        insert(call)
        _announce(call, "toolcall", old, new, actor=actor, payload=payload, call_id=call.pk)


def insert(obj: models.Model) -> None:
    """Store a new row (`obj`, built and not yet saved) with one plain INSERT, as
    `obj.save(force_insert=True)` would, setting its primary key.

    For the rows every step writes (messages, calls, results, decisions): on SQLite
    building the ORM's INSERT cost several times running it. Values come from the
    fields as the ORM takes them (`pre_save`, so auto_now_add and the like still apply,
    then `get_db_prep_save`); a value the ORM would have to compile (an expression) or a
    database that cannot return the new key goes through the ORM. No signals are sent:
    none of agentdash's models has a receiver."""
    connection = transaction.get_connection()
    fields = _insert_fields(type(obj))
    values = [field.pre_save(obj, add=True) for field in fields]
    if not connection.features.can_return_columns_from_insert or any(
        hasattr(value, "resolve_expression") for value in values
    ):
        obj.save(force_insert=True)
        return
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(type(obj)), params)
        obj.pk = cursor.fetchone()[0]
    obj._state.adding = False
    obj._state.db = connection.alias


@functools.cache
def _insert_fields(model: type[models.Model]) -> list[models.Field]:
    """The columns an INSERT of `model` sets: all but the generated key, as the ORM's."""
    meta = model._meta
    return [
        field
        for field in meta.local_concrete_fields
        if field is not meta.auto_field and not field.generated
    ]


@functools.cache
def _insert_sql(model: type[models.Model]) -> str:
    # S608: only the model's own table and column names are formatted in.
    fields = _insert_fields(model)
    columns = ", ".join(f'"{field.column}"' for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table, pk = model._meta.db_table, model._meta.pk.column
    return f'INSERT INTO "{table}" ({columns}) VALUES ({placeholders}) RETURNING "{pk}"'  # noqa: S608


def update_if(obj: models.Model, expected: Mapping[str, Any], updates: Mapping[str, Any]) -> int:
    """UPDATE obj's row with `updates` if its columns still hold the `expected` values;
    the rows changed (0 or 1).

    Plain SQL, as audit.record() writes its rows: every state change runs this, and on
    SQLite building the ORM's UPDATE costs several times running it. Values are
    prepared by their fields exactly as the ORM prepares them; anything the ORM would
    have to compile (an expression) or resolve (a relation) goes through the ORM."""
    model = type(obj)
    set_fields = [model._meta.get_field(name) for name in updates]
    where_fields = [model._meta.get_field(name) for name in expected]
    values = [*updates.values(), *expected.values()]
    if any(field.is_relation for field in (*set_fields, *where_fields)) or any(
        hasattr(value, "resolve_expression") for value in values
    ):
        return model.objects.filter(pk=obj.pk, **expected).update(**updates)
    connection = transaction.get_connection()
    assignments = ", ".join(f'"{field.column}" = %s' for field in set_fields)
    conditions = "".join(f' AND "{field.column}" = %s' for field in where_fields)
    # S608: only the model's own table and column names are formatted in.
    table, pk = model._meta.db_table, model._meta.pk.column
    sql = f'UPDATE "{table}" SET {assignments} WHERE "{pk}" = %s{conditions}'  # noqa: S608
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip([*set_fields, *where_fields], values, strict=True)
    ]
    with connection.cursor() as cursor:
        key = model._meta.pk.get_db_prep_value(obj.pk, connection)  # a UUID is text on SQLite
        cursor.execute(sql, [*params[: len(set_fields)], key, *params[len(set_fields) :]])
        return cursor.rowcount


def _announce(
    obj: models.Model,
    kind: str,
    old: str,
    new: str,
    *,
    actor: str,
    payload: Mapping[str, Any] | None,
    call_id: int | None,
) -> None:
    """What every state change does once its row is written, in its transaction."""
    from agentdash import audit, live, notifications

    session_id = obj.session_id if call_id is not None else obj.pk
    audit.record(
        f"{kind}.{new}",
        actor=actor,
        session_id=session_id,
        tool_call_id=call_id,
        payload={"from": old, "to": new, **(payload or {})},
    )
    live.changed(session_id, call_id=call_id)  # pushed to open pages after commit
    notifications.on_transition(obj, new)  # webhooks, queued after commit
