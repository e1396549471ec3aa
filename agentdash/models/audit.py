"""The audit log's row: one event in the append-only, hash-chained history.

Rows are written only by `agentdash.audit.record()`, which computes `seq`, `prev_hash`
and `hash` under the chain-head lock; the hashing scheme is documented in
`agentdash/audit.py`. The application never changes or removes a row: `save()` (of an
existing row, and of a new one, which must go through record()), `delete()`, and the
queryset's `create()`, `update()`, `delete()`, `bulk_update()` and `bulk_create()` raise
`AppendOnlyError`.

The database refuses too, as defence in depth against raw SQL (migration 0001):
- PostgreSQL: a row trigger refuses UPDATE and DELETE. TRUNCATE stays possible: it
  needs the table's owner, and it is what `manage.py flush` and Django's test runner use.
- SQLite: a trigger refuses UPDATE. DELETE is not refused there, because SQLite's flush
  (and so every transactional test) is a plain `DELETE FROM`; `audit verify` detects a
  deleted row by the gap it leaves. Beware: SQLite rebuilds a table for most schema
  changes and a rebuild drops its triggers, so a migration that alters this table on
  SQLite must create the trigger again.
To tamper on purpose (tests proving that `audit verify` catches it), drop the trigger
inside the transaction that tampers: `DROP TRIGGER agentdash_auditevent_append_only ON
agentdash_auditevent` (PostgreSQL) or `DROP TRIGGER agentdash_auditevent_no_update`
(SQLite); DDL is transactional on both, so a rollback restores it.

`session_id` and `tool_call_id` are plain integers, not foreign keys: deleting a session
must never cascade into the log, and the log outlives whatever it describes.
"""

from typing import Any, NoReturn

from django.db import models
from django.db.models import Q


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove an audit event through the ORM."""


def _refuse(action: str) -> NoReturn:
    raise AppendOnlyError(
        f"the audit log is append-only: {action} is refused; append with audit.record()"
    )


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        _refuse("update()")

    def delete(self) -> NoReturn:
        _refuse("delete()")

    # Refused here rather than in the update() it calls, because it calls update()
    # inside a transaction that the refusal would leave broken for the caller.
    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("bulk_update()")

    # bulk_create would skip the chain-head lock and the hashing that record() does.
    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("bulk_create()")


class AuditEvent(models.Model):
    # The global order of the chain, 1, 2, 3, ... with no gaps; also the key that
    # keyset pagination walks.
    seq = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=200)  # "user:alice", "system", "worker", "model"
    session_id = models.BigIntegerField(null=True, blank=True)
    tool_call_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=64)  # "session.created", "toolcall.approved", ...
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        indexes = [
            # Audit history filtered to one session (and the session page's audit tab),
            # newest first, keyset-paged on seq. Partial: system events have no session.
            models.Index(
                fields=["session_id", "seq"],
                name="audit_session_seq_idx",
                condition=Q(session_id__isnull=False),
            ),
            # The history of one tool call: proposed → decided → ran.
            models.Index(
                fields=["tool_call_id", "seq"],
                name="audit_toolcall_seq_idx",
                condition=Q(tool_call_id__isnull=False),
            ),
            # Audit history filtered by kind ("every rejection"), keyset-paged on seq.
            models.Index(fields=["kind", "seq"], name="audit_kind_seq_idx"),
            # Audit history filtered by actor ("everything alice did"), keyset-paged on seq.
            models.Index(fields=["actor", "seq"], name="audit_actor_seq_idx"),
            # Audit history filtered by a time range.
            models.Index(fields=["created_at"], name="audit_created_at_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} by {self.actor}"

    # Appending, too, goes only through record(): it takes the chain-head lock and
    # computes seq and the hashes, which a plain save() would not.
    def save(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("save()" if self._state.adding else "saving an existing event")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("delete()")
