"""The audit log: append an event, verify the chain, export it, and keep secrets out.

    from agentdash import audit

    with transaction.atomic():
        ...  # the change being recorded
        audit.record("toolcall.approved", actor="user:alice", session_id=s.pk,
                     tool_call_id=call.pk, payload={"reason": "looks fine"})

Every event is appended by `record()` in the caller's transaction, so it commits or
rolls back with the change it describes. The log is append-only (see
agentdash/models/audit.py for the guards in the ORM and in the database).

The hash chain, exactly (enough for an outsider to verify an export)
-------------------------------------------------------------------
Events are numbered `seq` = 1, 2, 3, ... with no gap. Each event's `hash` is the
lower-case hex SHA-256 of the ASCII bytes of this canonical JSON text:

    json.dumps({"seq": <int>, "created_at": <str>, "actor": <str>,
                "session_id": <int|null>, "tool_call_id": <int|null>, "kind": <str>,
                "payload": <object>, "prev_hash": <str>},
               sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

that is: keys sorted at every depth, no whitespace, every non-ASCII character written
as a \\uXXXX escape (surrogate pairs beyond the BMP), Python's float repr for
non-integral numbers. `created_at` is UTC in ISO 8601 with microseconds,
"2026-11-25T14:33:07.123456+00:00". `prev_hash` is the previous event's `hash`; event
1's is 64 zeros. The payload is hashed as stored, and record() stores it normalised
so that the database gives back exactly what was hashed: secrets redacted (below),
keys as strings, tuples as lists, integral floats as integers (1.0 -> 1; JSON does
not tell them apart and PostgreSQL's jsonb rewrites 1e20 as an integer), Decimal,
UUID and date/time values as strings, NUL characters and lone surrogates (which
PostgreSQL cannot store) as U+FFFD. NaN and infinities are refused.

`verify()` walks the events in seq order and reports the first that breaks the chain:
a gap in seq (a deleted event), a prev_hash that is not the previous event's hash (an
inserted, deleted or re-hashed event before it), or a hash that does not match the
event's contents (an edited event). What a bare hash chain cannot show: events cut
off the end, or a chain rewritten from some point on by someone who can write the
table. Keeping the head's seq and hash somewhere else (`audit verify` prints them)
and checking that they are still in the chain covers both.

Secrets
-------
`redact()` replaces the value under any key that names a secret (api_key, x-api-key,
authorization, password, secret, token, cookie, ...; any case, nested at any depth)
and any string that looks like a key ("sk-...", "sk-ant-...", "Bearer ...") with
"[REDACTED]". record() applies it to every payload; others call it before they log
anything that came from or goes to a provider.
"""

import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import QuerySet
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from agentdash.models.audit import AppendOnlyError, AuditEvent

__all__ = [
    "GENESIS_HASH",
    "REDACTED",
    "AppendOnlyError",
    "VerifyReport",
    "export_lines",
    "record",
    "redact",
    "verify",
]

GENESIS_HASH = "0" * 64
REDACTED = "[REDACTED]"

# The fields that the hash covers (the module doc), in the model's column order.
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor",
    "session_id",
    "tool_call_id",
    "kind",
    "payload",
    "prev_hash",
)
EXPORT_FIELDS = (*HASHED_FIELDS, "hash")

# Rows fetched per round trip when streaming; memory stays bounded by this.
CHUNK_SIZE = 2000

# The PostgreSQL advisory lock that serialises appends; any 64-bit constant would do,
# this one is derived from a name so that it cannot collide by accident.
CHAIN_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"agentdash.audit.chain").digest()[:8], "big", signed=True
)

type ExportFormat = Literal["jsonl", "csv"]


# --- secrets ---------------------------------------------------------------------------

# Words that make a key secret wherever they appear in it ("db_password", "X-Api-Key").
_SECRET_WORDS = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "secret",
        "secrets",
        "token",
    }
)
_SECRET_WORD_PAIRS = frozenset({("api", "key"), ("private", "key"), ("secret", "key")})
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# Values that are keys whatever their key says. Both need a digit in the token so that
# prose ("the bearer of bad news", "sk-learn-compatible") is left alone.
_SECRET_VALUE = re.compile(
    r"(?P<scheme>\b(?i:bearer)\s+)(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{8,}=*"
    r"|\bsk-(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
)


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret; "max_tokens" and "input_tokens" do not."""
    words = _NON_ALNUM.split(_CAMEL_HUMP.sub("_", key).lower())
    if any(word in _SECRET_WORDS or word.endswith("token") for word in words):
        return True
    return any(pair in _SECRET_WORD_PAIRS for pair in itertools.pairwise(words))


def _mask(match: re.Match[str]) -> str:
    return (match["scheme"] or "") + REDACTED


def redact(value: Any) -> Any:
    """A copy of `value` with secrets replaced by "[REDACTED]".

    Walks dicts, lists and tuples at any depth (a subclass comes back as its base type);
    other values are returned as they are, and the input is never modified.
    """
    if isinstance(value, str):
        return _SECRET_VALUE.sub(_mask, value)
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and _is_secret_key(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    return value


# --- canonical form and hash -----------------------------------------------------------


def storable_text(text: str) -> str:
    """`text` as every database stores it: NUL and lone surrogates replaced by U+FFFD."""
    # PostgreSQL refuses NUL in text and jsonb, and no database can store a lone
    # surrogate (e.g. from bytes decoded with errors="surrogateescape").
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _json_payload(value: Any) -> Any:
    """`value` as the JSON value the database will hand back unchanged (see module doc)."""
    if isinstance(value, str):
        return storable_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit payloads cannot hold {value!r}: JSON has no such number")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {storable_text(str(key)): _json_payload(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_payload(item) for item in value]
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    raise TypeError(
        f"audit payloads hold JSON values; convert {type(value).__name__} first "
        "(e.g. model_dump(mode='json'))"
    )


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _event_hash(values: Sequence[Any]) -> str:
    """The chain hash of one event, from its HASHED_FIELDS values in that order."""
    fields = dict(zip(HASHED_FIELDS, values, strict=True))
    fields["created_at"] = _timestamp(fields["created_at"])
    return hashlib.sha256(_canonical_json(fields).encode("ascii")).hexdigest()


# --- append ----------------------------------------------------------------------------


# record() appends with two fixed statements rather than the ORM, because compiling the
# ORM's queries cost several times the database work on this hot path (measured on
# SQLite: ~330 µs per event through the ORM). Values are still adapted by the fields.
_COLUMNS = [AuditEvent._meta.get_field(name) for name in EXPORT_FIELDS]
_TABLE = AuditEvent._meta.db_table
_COLUMN_LIST = ", ".join(f'"{field.column}"' for field in _COLUMNS)
_PLACEHOLDERS = ", ".join(["%s"] * len(_COLUMNS))
# S608: the names come from the model, never from input.
_HEAD_SQL = f'SELECT "seq", "hash" FROM "{_TABLE}" ORDER BY "seq" DESC LIMIT 1'  # noqa: S608
_INSERT_SQL = f'INSERT INTO "{_TABLE}" ({_COLUMN_LIST}) VALUES ({_PLACEHOLDERS})'  # noqa: S608


def _lock_chain_head(connection: BaseDatabaseWrapper, cursor: CursorWrapper) -> None:
    """Serialise appends until the caller's transaction ends, so the chain never forks."""
    if connection.vendor == "postgresql":
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
    elif connection.vendor == "sqlite":
        # Nothing to take: BEGIN IMMEDIATE already holds the database's one write lock.
        # A deferred transaction would read a head that a concurrent writer can move
        # before this one upgrades to write; better to say so than fail at random.
        if connection.transaction_mode not in {"IMMEDIATE", "EXCLUSIVE"}:
            raise ImproperlyConfigured(
                "the audit chain needs SQLite transactions to take the write lock at BEGIN: "
                'set DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"'
            )
    else:
        raise NotSupportedError(f"the audit chain has no lock for {connection.vendor}")


class _ChainHead:
    """The event this transaction appended last, so that its next append neither takes
    the lock again nor reads the head back: a state change writes two or three events
    in one transaction, and each read cost a statement (two on PostgreSQL).

    Exact, not a guess: the transaction holds the chain-head lock from its first append
    to its end, so no one else can append meanwhile, and only record() writes events.
    What could make the remembered head wrong is the append being undone, by the
    transaction's rollback or by rolling back the savepoint it was made in. Both are
    seen through an on_commit marker registered with the append: Django discards the
    callbacks of a rolled-back savepoint (and all of them on rollback or commit), so
    the head is trusted only while its marker is still queued."""

    __slots__ = ("hash", "seq")

    _ATTRIBUTE = "_agentdash_chain_head"

    def __init__(self, seq: int, hash_: str) -> None:
        self.seq, self.hash = seq, hash_

    def __call__(self) -> None:
        """The on_commit marker itself: nothing to do once committed."""

    @classmethod
    def remember(cls, connection: BaseDatabaseWrapper, seq: int, hash_: str) -> None:
        marker = cls(seq, hash_)
        transaction.on_commit(marker, using=connection.alias)
        setattr(connection, cls._ATTRIBUTE, marker)

    @classmethod
    def written_in_this_transaction(cls, connection: BaseDatabaseWrapper) -> tuple[int, str] | None:
        marker = getattr(connection, cls._ATTRIBUTE, None)
        if marker is None:
            return None
        if not any(queued is marker for _, queued, _ in connection.run_on_commit):
            setattr(connection, cls._ATTRIBUTE, None)
            return None
        return marker.seq, marker.hash


def record(
    kind: str,
    *,
    actor: str,
    session_id: int | None = None,
    tool_call_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction.

    Must run inside `transaction.atomic()`: the event commits or rolls back with the
    change it records. Takes the chain-head lock, which the transaction then holds
    until it ends, so call it late in the transaction and keep the transaction short.
    The payload is redacted and normalised (module doc) before it is hashed and saved.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise TransactionManagementError(
            "audit.record() must be called inside transaction.atomic(), so that the event "
            "commits or rolls back with the change it records"
        )
    payload = _json_payload(redact(payload or {}))
    with connection.cursor() as cursor:
        head = _ChainHead.written_in_this_transaction(connection)
        if head is None:
            _lock_chain_head(connection, cursor)
            # Read the head only once the lock is held: under READ COMMITTED this
            # statement sees the event that the previous holder committed.
            cursor.execute(_HEAD_SQL)
            head = cursor.fetchone()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
        hashed = (seq, timezone.now(), actor, session_id, tool_call_id, kind, payload, prev_hash)
        values = (*hashed, _event_hash(hashed))
        cursor.execute(
            _INSERT_SQL,
            [
                field.get_db_prep_save(value, connection)
                for field, value in zip(_COLUMNS, values, strict=True)
            ],
        )
        _ChainHead.remember(connection, seq, values[-1])
    event = AuditEvent(**dict(zip(EXPORT_FIELDS, values, strict=True)))
    # The row exists now: mark the instance as loaded, so that save() refuses it.
    event._state.adding = False
    event._state.db = connection.alias
    return event


# --- verify ---------------------------------------------------------------------------

# The kind of the event that records a verification of the chain (agentdash/verification.py).
VERIFIED_KIND = "audit.verified"


def head_seq() -> int:
    """The newest event's seq, which is also how many events the log holds (no gaps)."""
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    events_checked: int  # events read, the bad one included
    first_bad_seq: int | None
    problem: str  # "" when ok; otherwise names the first bad event and what is wrong
    head_seq: int = 0  # the last event that checked out: keep it to detect a cut tail
    head_hash: str = GENESIS_HASH
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_checked / self.seconds if self.seconds else 0.0


def _chain_fault(row: Any, expected_seq: int, prev_hash: str) -> str | None:
    """What is wrong with one event (a named row of EXPORT_FIELDS), given the one before."""
    if row.seq < expected_seq:  # only rows outside the chain: seq starts at 1
        return f"its seq comes before event {expected_seq}: an event was inserted"
    if row.seq != expected_seq:
        gap = f"{expected_seq}" if row.seq == expected_seq + 1 else f"{expected_seq}-{row.seq - 1}"
        return f"seq jumps from {expected_seq - 1} to {row.seq}: event(s) {gap} missing"
    if row.prev_hash != prev_hash:
        return (
            f"its prev_hash is not the hash of event {row.seq - 1}: an event before it was "
            "inserted, deleted or re-hashed"
        )
    if row.hash != _event_hash(row[: len(HASHED_FIELDS)]):
        return "its hash does not match its contents: the event was edited"
    return None


def verify(
    *,
    after_seq: int = 0,
    after_hash: str = GENESIS_HASH,
    up_to: int | None = None,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check the events after `after_seq` (whose hash is `after_hash`; by default the whole
    chain), in seq order.

    Reads at most `limit` events. With `up_to`, stops after that event and reports the
    events up to it that are missing from the end of the log. `progress(events_checked)`
    is called every CHUNK_SIZE events. Streams in constant memory. The report's
    head_seq and head_hash are the last event found good: where the next check resumes.
    """
    started = time.perf_counter()
    expected_seq, prev_hash, checked = after_seq + 1, after_hash, 0

    def report(*, bad_seq: int | None = None, problem: str = "") -> VerifyReport:
        return VerifyReport(
            ok=bad_seq is None,
            events_checked=checked,
            first_bad_seq=bad_seq,
            problem=problem,
            head_seq=expected_seq - 1,
            head_hash=prev_hash,
            seconds=time.perf_counter() - started,
        )

    events = AuditEvent.objects.order_by("seq")
    if after_seq:
        events = events.filter(seq__gt=after_seq)
    # else the whole table: a row inserted with a seq of 0 or less is outside the chain.
    if up_to is not None:
        events = events.filter(seq__lte=up_to)
    rows = events.values_list(*EXPORT_FIELDS, named=True)
    if limit is not None:
        rows = rows[:limit]
    chunk_size = CHUNK_SIZE
    for row in rows.iterator(chunk_size=chunk_size):
        checked += 1
        if fault := _chain_fault(row, expected_seq, prev_hash):
            return report(bad_seq=row.seq, problem=f"event {row.seq} ({row.kind}): {fault}")
        expected_seq, prev_hash = row.seq + 1, row.hash
        if progress is not None and checked % chunk_size == 0:
            progress(checked)
    cut_short = limit is None or checked < limit
    if up_to is not None and cut_short and expected_seq <= up_to:
        gap = f"{expected_seq}" if expected_seq == up_to else f"{expected_seq}-{up_to}"
        return report(
            bad_seq=expected_seq,
            problem=f"event {expected_seq}: the log ends at event {expected_seq - 1} but "
            f"held {up_to} when the check began: event(s) {gap} missing",
        )
    return report()


# --- export ----------------------------------------------------------------------------


class _Echo:
    """A file-like object whose write() returns the text, so csv.writer yields lines."""

    def write(self, text: str) -> str:
        return text


def _export_record(row: Sequence[Any]) -> dict[str, Any]:
    fields = dict(zip(EXPORT_FIELDS, row, strict=True))
    fields["created_at"] = _timestamp(fields["created_at"])
    return fields


def _jsonl_lines(rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(_export_record(row), ensure_ascii=False) + "\n"


def _csv_lines(rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        fields = _export_record(row)
        fields["payload"] = json.dumps(
            fields["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        yield writer.writerow(fields.values())


def export_lines(queryset: QuerySet[AuditEvent] | None, fmt: ExportFormat) -> Iterator[str]:
    """The events (all, or those of `queryset`) in seq order as text lines, streamed.

    "jsonl": one JSON object per event with every field. "csv": a header, then one row
    per event with the payload as JSON text. Each line ends with its newline; memory
    stays constant whatever the size, so the result can feed stdout or a
    StreamingHttpResponse directly. An unknown format raises ValueError at once.
    """
    writers = {"jsonl": _jsonl_lines, "csv": _csv_lines}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}: use 'jsonl' or 'csv'")
    events = AuditEvent.objects.all() if queryset is None else queryset
    rows = events.order_by("seq").values_list(*EXPORT_FIELDS).iterator(chunk_size=CHUNK_SIZE)
    return writers[fmt](rows)
