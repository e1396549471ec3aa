"""The HTML pushed over the websockets, rendered from the pages' own partial templates.

Every message is a run of top-level elements that htmx's websocket extension swaps out
of band, by id (the contract the browser tests and the pages rely on):

    #session-header-<session>   replaced                        session page
    #transcript                 <article id="message-<id>"> appended, or all replaced
    #stream-<session>           a reply's text appended as it streams; emptied when
                                the message is stored
    #call-<call>                replaced                        session page
    #queue-list                 <article id="queue-card-<call>"> appended, or all
                                replaced; a decided card is deleted
    #queue-batches              <section id="queue-batch-<message>"> (a step's pending
                                calls, when more than one) appended, or all replaced;
                                deleted once fewer than two of its calls wait
    #session-rows               <tr id="session-row-<session>"> put first, or all replaced

Appended elements whose id is already on the page replace that element instead, and a
fragment older (`data-rev`) than what the page shows is ignored: see dashboard.js.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import format_html

from agentdash.live import groups
from agentdash.models import ToolCall
from agentdash.states import CallState
from agentdash.web import display

# Pushes are (group, html) pairs, sent in order.
Push = tuple[str, str]


def change(
    session_id: int, *, call_ids: Collection[int] = (), message_ids: Collection[int] = ()
) -> Iterator[list[Push]]:
    """What every open page must receive after session `session_id` changed (and, when
    given, some of its calls or new messages), in batches to send as they come.

    The approval queue goes first, since operators race for it: a call that leaves the
    queue costs one indexed read before its removal is sent. Each call and message is
    rendered as it is now, so changes coalesced into one push show the latest state.
    """
    cards: dict[int, display.CallCard | None] = {}
    for call_id in call_ids:
        # order_by(): without it the model's ordering joins the message table.
        state, step, waited = (
            ToolCall.objects.filter(pk=call_id)
            .order_by()
            .values_list("state", "message_id", "proposed_at")
            .first()
        ) or (None, None, None)
        if state != CallState.PENDING_APPROVAL and waited is not None:
            # It left the queue. Not only "approved": by the time changes coalesced here
            # are read, the worker may already be running the call, or be done with it.
            # So every later change of a call that once waited sends the deletion again:
            # a few bytes to the queue pages, which ignore a card they do not show.
            removal = queue_removal(call_id)
            yield [(queue, removal) for queue, _ in _audiences(groups.APPROVALS)]
            yield _batch_change(step)
        elif state == CallState.PENDING_APPROVAL:
            card = cards[call_id] = display.call_card(call_id)
            yield [
                (queue, render_to_string("agentdash/live/queue_append.html", context))
                for queue, context in _audiences(groups.APPROVALS, card=card)
            ] + _batch_change(step)
    summary = display.session_summary(session_id)
    if summary is None:
        return
    for call_id in call_ids:
        if call_id not in cards:
            cards[call_id] = display.call_card(call_id)
    entries = [display.transcript_entry(message_id) for message_id in message_ids]
    row = render_to_string("agentdash/live/sessions_change.html", {"summary": summary})
    session_context = {
        "summary": summary,
        "cards": [card for card in cards.values() if card is not None],
        "entries": [entry for entry in entries if entry is not None],
        "session_id": session_id,
    }
    yield [
        (groups.SESSIONS, row),
        *(
            (page, render_to_string("agentdash/live/session_change.html", context))
            for page, context in _audiences(groups.session(session_id), **session_context)
        ),
    ]


def _batch_change(message_id: int) -> list[Push]:
    """The queue's batch bar of a step whose pending calls changed: replaced, added, or
    deleted once fewer than two of its calls wait (a step of one call has none)."""
    batch, size = display.step_batch(message_id)
    if batch is None and size < 2:
        return []
    return [
        (queue, render_to_string("agentdash/live/queue_batch_change.html", context))
        for queue, context in _audiences(groups.APPROVALS, batch=batch, message_id=message_id)
    ]


def _audiences(topic: str, **context: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each audience's group for `topic`, with the context to render its fragment."""
    for can_decide in (True, False):
        group = groups.for_audience(topic, can_decide=can_decide)
        yield group, context | {"can_decide": can_decide}


def queue_removal(call_id: int) -> str:
    """Takes a decided call's card out of the queue."""
    return format_html('<div id="queue-card-{}" hx-swap-oob="delete"></div>', call_id)


def text_delta(session_id: int, text: str) -> str:
    """A piece of a reply the model is still writing, appended to the page as text."""
    return format_html('<span hx-swap-oob="beforeend:#stream-{}">{}</span>', session_id, text)


# --- snapshots: what a page shows, sent whole when its socket (re)connects --------------


def session_snapshot(session_id: int, *, can_decide: bool) -> str | None:
    summary = display.session_summary(session_id)
    if summary is None:
        return None
    context = {
        "summary": summary,
        "entries": display.transcript(summary.session),
        "session_id": session_id,
        "can_decide": can_decide,
    }
    return render_to_string("agentdash/live/session_snapshot.html", context)


def queue_snapshot(*, can_decide: bool) -> str:
    cards = display.pending_cards()
    context = {
        "cards": cards,
        "batches": display.batches(cards),
        "can_decide": can_decide,
        "oob": True,
    }
    return render_to_string("agentdash/partials/queue_batches.html", context) + render_to_string(
        "agentdash/partials/queue_list.html", context
    )


def sessions_snapshot() -> str:
    context = {"rows": display.session_rows(), "oob": True}
    return render_to_string("agentdash/partials/session_rows.html", context)
