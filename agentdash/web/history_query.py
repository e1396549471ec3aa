"""What the audit history page asks of the log: filters, keyset pages, the chain's last check.

Built to stay fast on millions of events: every page is a keyset read on `seq` through
an index (`seq < cursor ORDER BY seq DESC LIMIT n`), never OFFSET, and nothing counts
the whole table; the size of the log is its head's seq, since seq has no gaps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connections
from django.db.models import QuerySet, TextField, Value
from django.db.models.functions import Cast, StrIndex, Upper

from agentdash import audit
from agentdash.models import AuditEvent, ToolCall
from agentdash.states import CALL_TRANSITIONS, SESSION_TRANSITIONS

PAGE_SIZE = 50


def _states_entered(transitions: Mapping[str, frozenset[str]]) -> list[str]:
    """Every state some transition leads to, in the order the state machine declares them."""
    targets = frozenset().union(*transitions.values())
    return [state for state in transitions if state in targets]


def _kind_choices() -> list[tuple[str, Any]]:
    # Derived from the state machines, so a new state is filterable as soon as it exists;
    # states nothing moves into (a call's "proposed", a session's "queued") are left out
    # because no event ever records them.
    def group(prefix: str, states: list[str]) -> list[tuple[str, str]]:
        return [(f"{prefix}.{state}", state.replace("_", " ")) for state in states]

    return [
        ("", "any"),
        ("Tool call", group("toolcall", _states_entered(CALL_TRANSITIONS))),
        (
            "Session",
            [
                ("session.created", "created"),
                *group("session", _states_entered(SESSION_TRANSITIONS)),
            ],
        ),
        (
            "Other",
            [
                ("model.replied", "model replied"),
                ("model.reply_discarded", "model reply discarded (session stopped meanwhile)"),
                (audit.VERIFIED_KIND, "chain verified"),
            ],
        ),
    ]


# Bounds of what the database columns can hold, so bad input is a form error, not a 500.
MAX_ID = 2**63 - 1
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


class HistoryFilterForm(forms.Form):
    """The history page's filters and cursor, read from the query string.

    Every field is optional; an unbound or empty form means "everything, newest first".
    """

    session = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID, label="Session")
    tool = forms.CharField(required=False, max_length=200, label="Tool")
    kind = forms.ChoiceField(required=False, choices=_kind_choices, label="Status")
    actor = forms.CharField(
        required=False,
        max_length=200,
        label="Actor",
        widget=forms.TextInput(attrs={"placeholder": "user:alice, policy, runner, model"}),
    )
    since = forms.DateTimeField(
        required=False,
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        required=False,
        label="Until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search payloads",
        help_text="Arguments, reasons, errors, the model's words; case-insensitive.",
    )
    # The keyset cursor: older than event `before`, or newer than event `after`.
    before = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, widget=forms.HiddenInput
    )
    after = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_ID, widget=forms.HiddenInput
    )

    CURSOR_FIELDS = ("before", "after")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        for name, moment in (("since", since), ("until", until)):
            # The seq bounds look a little past each end: keep that arithmetic in range.
            if moment is not None and not EARLIEST <= moment <= LATEST:
                self.add_error(name, "Must be between 1970 and 9999.")
        if since and until and since >= until:
            self.add_error("until", "Must be later than From.")
        if cleaned.get("before") is not None and cleaned.get("after") is not None:
            raise forms.ValidationError("Page either before or after an event, not both.")
        return cleaned

    def filter_params(self) -> dict[str, str]:
        """The filters as query-string values, cursor left out: the base of every link."""
        return {
            name: self.data[name]
            for name in self.fields
            if name not in self.CURSOR_FIELDS and self.data.get(name)
        }

    def events(self) -> QuerySet[AuditEvent]:
        """The events the filters select, in no order. The form must be valid."""
        data = self.cleaned_data
        events = AuditEvent.objects.all()
        if data["session"] is not None:
            events = events.filter(session_id=data["session"])
        if data["tool"]:
            # The tool's name lives on the call, not on every event of the call.
            calls = ToolCall.objects.filter(tool_name=data["tool"]).values("pk")
            events = events.filter(tool_call_id__in=calls)
        if data["kind"]:
            events = events.filter(kind=data["kind"])
        if data["actor"]:
            events = events.filter(actor=data["actor"])
        if data["since"]:
            events = events.filter(created_at__gte=data["since"], **_seqs_not_before(data["since"]))
        if data["until"]:
            events = events.filter(created_at__lt=data["until"], **_seqs_not_after(data["until"]))
        if data["q"]:
            # strpos() rather than LIKE '%...%': PostgreSQL guesses that such a LIKE
            # matches next to nothing and sorts the whole log; it has no guess for
            # strpos, so it walks the newest events first and stops once a page is full.
            needle = Upper(Value(_as_stored_in_json(data["q"], events.db)))
            events = events.alias(
                found_at=StrIndex(Upper(Cast("payload", TextField())), needle)
            ).filter(found_at__gt=0)
        return events


# A time range is also turned into a range of seqs, so that a page walks the primary key
# inside the window instead of the whole log (PostgreSQL otherwise scans back from the
# head, as the LIMIT makes that look cheap). This holds because record() stamps each
# event under the chain lock, so time follows seq unless a clock steps back; the bounds
# stay exact as long as no clock ever steps back more than this.
CLOCK_SLACK = dt.timedelta(minutes=10)


def _seqs_not_before(since: dt.datetime) -> dict[str, int]:
    """A lower bound on the seq of every event at or after `since`."""
    # Every event older in seq than one stamped before since - slack is before since.
    anchor = (
        AuditEvent.objects.filter(created_at__lt=since - CLOCK_SLACK)
        .order_by("-created_at")
        .values_list("seq", flat=True)
        .first()
    )
    return {} if anchor is None else {"seq__gte": anchor}


def _seqs_not_after(until: dt.datetime) -> dict[str, int]:
    """An upper bound on the seq of every event before `until`."""
    # Every event newer in seq than one stamped at until + slack or later is after until.
    anchor = (
        AuditEvent.objects.filter(created_at__gte=until + CLOCK_SLACK)
        .order_by("created_at")
        .values_list("seq", flat=True)
        .first()
    )
    return {} if anchor is None else {"seq__lte": anchor}


def _as_stored_in_json(text: str, alias: str) -> str:
    """`text` as it appears inside the payload's JSON text, so a search matches it there.

    A quote or a newline is escaped in JSON text, and SQLite keeps the JSON that Python
    wrote, with non-ASCII as \\uXXXX escapes; PostgreSQL's jsonb prints it as it is.
    """
    ascii_only = connections[alias].vendor != "postgresql"
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of events, newest first, and the cursors to its neighbours (None: none)."""

    events: list[AuditEvent]
    newer_after: int | None  # link to ?after=<this> for the newer page
    older_before: int | None  # link to ?before=<this> for the older page


def page_of(
    events: QuerySet[AuditEvent],
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    """The page of `events` just older than `before`, just newer than `after`, or the newest.

    One extra row read in the paging direction tells whether more lie that way; one
    indexed EXISTS tells whether anything lies the other way. Appending events never
    moves a page reached through `before`, since new events only get higher seqs.
    """
    if after is not None:
        rows = list(events.filter(seq__gt=after).order_by("seq")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        more_older = bool(rows) and events.filter(seq__lt=rows[-1].seq).exists()
    else:
        scope = events if before is None else events.filter(seq__lt=before)
        rows = list(scope.order_by("-seq")[: size + 1])
        more_older = len(rows) > size
        rows = rows[:size]
        more_newer = (
            bool(rows) and before is not None and events.filter(seq__gt=rows[0].seq).exists()
        )
    return Page(
        events=rows,
        newer_after=rows[0].seq if more_newer else None,
        older_before=rows[-1].seq if more_older else None,
    )


def tool_names(events: list[AuditEvent]) -> dict[int, str]:
    """The tool of each call that `events` mention, in one query."""
    call_ids = {event.tool_call_id for event in events if event.tool_call_id is not None}
    return dict(ToolCall.objects.filter(pk__in=call_ids).values_list("pk", "tool_name"))
