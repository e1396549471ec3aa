"""The audit history pages: the filtered log, its export, the chain's check, the charts.

Thin views: the filters and pages come from `history_query`, the chain's check and its
status from `agentdash.verification` (a background job: no request walks the chain),
the pictures from `charts`. Login is required by LoginRequiredMiddleware, as everywhere.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from agentdash import audit, verification
from agentdash.models import AuditEvent
from agentdash.sessions import actor_for
from agentdash.web import charts
from agentdash.web.history_query import HistoryFilterForm, page_of, tool_names

# A payload longer than this is cut on the page (the export has it whole), so that a
# page of fifty events with huge arguments stays light.
PAYLOAD_PREVIEW_CHARS = 4000

EXPORT_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
# Lines per chunk when an export streams through ASGI: one thread hop per chunk.
EXPORT_LINES_PER_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class EventRow:
    """An event as the page shows it: its payload as JSON text, to be autoescaped."""

    event: AuditEvent
    tool: str
    payload: str
    cut_chars: int  # how much of the payload's text the page leaves out


def _row(event: AuditEvent, tool: str) -> EventRow:
    text = json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False)
    return EventRow(
        event=event,
        tool=tool,
        payload=text[:PAYLOAD_PREVIEW_CHARS],
        cut_chars=max(0, len(text) - PAYLOAD_PREVIEW_CHARS),
    )


def _link(params: dict[str, str], **cursor: int) -> str:
    return "?" + urlencode(params | {name: str(value) for name, value in cursor.items()})


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    form = HistoryFilterForm(request.GET)
    head = audit.head_seq()
    context: dict[str, object] = {
        "form": form,
        "chain": verification.status(head),
        "head_seq": head,
    }
    if not form.is_valid():
        return render(request, "agentdash/history/index.html", context, status=400)

    page = page_of(
        form.events(), before=form.cleaned_data["before"], after=form.cleaned_data["after"]
    )
    names = tool_names(page.events)
    params = form.filter_params()
    context |= {
        "rows": [_row(event, names.get(event.tool_call_id, "")) for event in page.events],
        "filtered": bool(params),
        "filter_query": urlencode(params),
        "newer_url": _link(params, after=page.newer_after) if page.newer_after else None,
        "older_url": _link(params, before=page.older_before) if page.older_before else None,
        "newest_url": _link(params),
        "oldest_url": _link(params, after=0),
    }
    return render(request, "agentdash/history/index.html", context)


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """POST: queue a check of the chain (full=1: from event 1; otherwise the events since
    the last check), or join the one in progress. GET: the chain's status as a fragment,
    which the page polls while a check runs. Neither walks the chain."""
    # Re-encoded through QueryDict so that only a query string can come back from it.
    filters = QueryDict(request.POST.get("filters") or request.GET.get("filters", "")).urlencode()
    if request.method == "POST":
        verification.request(actor_for(request.user), full=request.POST.get("full") == "1")
        if not request.htmx:
            return redirect(reverse("history:index") + (f"?{filters}" if filters else ""))
    context = {"chain": verification.status(audit.head_seq()), "filter_query": filters}
    return render(request, "agentdash/history/chain_status.html", context)


@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The events of the current filter (all of them, not one page), streamed."""
    if fmt not in EXPORT_CONTENT_TYPES:
        raise Http404(f"No export format {fmt!r}: use jsonl or csv.")
    form = HistoryFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest(form.errors.as_text(), content_type="text/plain")
    return export_response(request, form.events(), fmt)


def export_response(
    request: HttpRequest, events: QuerySet[AuditEvent], fmt: audit.ExportFormat
) -> StreamingHttpResponse:
    """`events` as a streamed attachment (the API's export answers with it too)."""
    lines = audit.export_lines(events, fmt)
    response = StreamingHttpResponse(
        _in_chunks_off_loop(lines) if isinstance(request, ASGIRequest) else lines,
        content_type=f"{EXPORT_CONTENT_TYPES[fmt]}; charset=utf-8",
    )
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="agentdash-audit-{stamp}.{fmt}"'
    return response


async def _in_chunks_off_loop(lines: Iterator[str]) -> AsyncIterator[str]:
    """The lines in chunks, each read in the request's sync thread.

    Under ASGI (Daphne) a StreamingHttpResponse given a sync iterator collects it into
    one list before sending a byte; an async iterator keeps memory constant. The reads
    stay on one thread (thread_sensitive) because the database cursor belongs to it.
    """
    read_chunk = sync_to_async(
        lambda: "".join(itertools.islice(lines, EXPORT_LINES_PER_CHUNK)), thread_sensitive=True
    )
    while chunk := await read_chunk():
        yield chunk


@require_GET
def chart_page(request: HttpRequest) -> HttpResponse:
    form = charts.ChartRangeForm(request.GET)
    if not form.is_valid():
        return render(request, "agentdash/charts/index.html", {"form": form}, status=400)
    window = form.window()
    context = {
        "form": form,
        "window": window,
        "status_chart": charts.calls_by_status(window),
        "wait_chart": charts.approval_waits(window),
        "cost_chart": charts.cost_per_session(window),
    }
    return render(request, "agentdash/charts/index.html", context)
