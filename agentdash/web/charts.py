"""The dashboard's pictures, drawn on the server as inline SVG: no script, no library.

Each chart is built in two steps: a query that reads a small summary (counts per
bucket, a sample of waits, the costliest sessions), then plain geometry that turns it
into a `Chart` of rectangles, lines and labels that one template draws. The geometry is
ordinary Python, so tests check the numbers without parsing pictures. Every text that
came from a model or a user (a session's goal) is autoescaped by the template.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from collections.abc import Sequence
from decimal import Decimal
from typing import Literal
from urllib.parse import urlencode

from django import forms
from django.db.models import Count, Sum
from django.db.models.functions import Trunc
from django.urls import reverse
from django.utils import timezone

from agentdash.models import AgentSession, AuditEvent, ToolCall

WIDTH = 720
HEIGHT = 260
# Room for the y axis's labels on the left and the x axis's below.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 12, 16, 30

type Bucket = Literal["hour", "day"]

# The periods the charts page offers, and the bars that the outcome chart draws for each.
RANGES: dict[str, tuple[str, dt.timedelta, Bucket]] = {
    "24h": ("last 24 hours", dt.timedelta(hours=24), "hour"),
    "7d": ("last 7 days", dt.timedelta(days=7), "day"),
    "30d": ("last 30 days", dt.timedelta(days=30), "day"),
}


@dataclasses.dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    bucket: Bucket
    period: str  # "last 24 hours"


class ChartRangeForm(forms.Form):
    range = forms.ChoiceField(
        required=False,
        choices=[(key, period.capitalize()) for key, (period, _, _) in RANGES.items()],
        label="Period",
    )

    def window(self, now: dt.datetime | None = None) -> Window:
        """The period the charts cover, ending now. The form must be valid."""
        period, span, bucket = RANGES[self.cleaned_data["range"] or "24h"]
        end = now or timezone.now()
        return Window(start=end - span, end=end, bucket=bucket, period=period)


# --- what a chart is made of --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # the tooltip, and what a screen reader says for this shape
    href: str = ""


@dataclasses.dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: Literal["start", "middle", "end"] = "middle"
    css_class: str = ""


@dataclasses.dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    css_class: str


@dataclasses.dataclass
class Chart:
    """A picture to draw, filled in by one of the builders below."""

    slug: str  # unique on the page: ids of the <title> and <desc> elements
    title: str
    summary: str  # the one sentence a reader most needs; also the SVG's <desc>
    width: int = WIDTH
    height: int = HEIGHT
    rects: list[Rect] = dataclasses.field(default_factory=list)
    texts: list[Text] = dataclasses.field(default_factory=list)
    lines: list[Line] = dataclasses.field(default_factory=list)
    legend: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # label, color
    # The same numbers as a table, for those who cannot see the picture.
    table_head: list[str] = dataclasses.field(default_factory=list)
    table_rows: list[list[str]] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rects


def _r(value: float) -> float:
    return round(value, 1)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (1 for 0)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _number(value: float) -> str:
    return f"{value:g}" if value < 1e6 else f"{value:,.0f}"


def _y_axis(chart: Chart, top: float, plot_height: float, *, unit: str = "") -> None:
    """Gridlines and labels at 0, ¼, ½, ¾ and all of `top`."""
    for quarter in range(5):
        value = top * quarter / 4
        y = _r(MARGIN_TOP + plot_height * (1 - quarter / 4))
        chart.lines.append(Line(MARGIN_LEFT, y, WIDTH - MARGIN_RIGHT, y, "grid"))
        chart.texts.append(Text(MARGIN_LEFT - 6, y + 4, _number(value) + unit, "end", "axis"))


def _label_every(count: int, room: float, label_width: float = 44) -> int:
    """Label one bar in so many, so that the x axis's labels never overlap."""
    return max(1, math.ceil(count / max(1, room // label_width)))


# --- tool calls by outcome over time ------------------------------------------------------

# How each way a tool call ends is drawn, bottom of the stack first.
OUTCOMES: tuple[tuple[str, str, str], ...] = (
    ("toolcall.succeeded", "succeeded", "#17803d"),
    ("toolcall.errored", "errored", "#b42318"),
    ("toolcall.timed_out", "timed out", "#e0712c"),
    ("toolcall.interrupted", "interrupted", "#c9a227"),
    ("toolcall.rejected", "rejected", "#7a3fb0"),
    ("toolcall.expired", "expired", "#8a8f98"),
)


def buckets(window: Window) -> list[dt.datetime]:
    """The start of every hour or day that the window touches, oldest first."""
    if window.bucket == "hour":
        first, step = window.start.replace(minute=0, second=0, microsecond=0), dt.timedelta(hours=1)
    else:
        first = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
        step = dt.timedelta(days=1)
    starts = []
    while first < window.end:
        starts.append(first)
        first += step
    return starts


def _bucket_name(start: dt.datetime, bucket: Bucket) -> tuple[str, str]:
    """A short axis label and a full name for one bucket."""
    if bucket == "hour":
        end = start + dt.timedelta(hours=1)
        return f"{start:%H:%M}", f"{start:%b %d} {start:%H:%M}-{end:%H:%M} UTC"
    return f"{start:%b %d}", f"{start:%a %b %d} (UTC)"


def outcome_counts(window: Window) -> dict[tuple[dt.datetime, str], int]:
    """How many calls ended each way in each bucket, from the audit log's outcome events."""
    rows = (
        AuditEvent.objects.filter(
            kind__in=[kind for kind, _, _ in OUTCOMES],
            created_at__gte=window.start,
            created_at__lt=window.end,
        )
        .annotate(bucket=Trunc("created_at", window.bucket, tzinfo=dt.UTC))
        .values_list("bucket", "kind")
        .annotate(count=Count("seq"))
        .order_by()
    )
    return {(bucket, kind): count for bucket, kind, count in rows}


def outcomes_chart(window: Window, counts: dict[tuple[dt.datetime, str], int]) -> Chart:
    starts = buckets(window)
    totals = [sum(counts.get((start, kind), 0) for kind, _, _ in OUTCOMES) for start in starts]
    grand_total = sum(totals)
    chart = Chart(
        slug="outcomes",
        title=f"Tool calls by outcome per {window.bucket}, {window.period}",
        summary=f"{grand_total} tool calls finished; the busiest "
        f"{window.bucket} saw {max(totals, default=0)}.",
        legend=[(label, color) for _, label, color in OUTCOMES],
        table_head=[window.bucket.capitalize(), *(label for _, label, _ in OUTCOMES), "total"],
    )
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = nice_ceiling(max(totals, default=0))
    _y_axis(chart, top, plot_height)
    slot = plot_width / len(starts)
    every = _label_every(len(starts), plot_width)
    for index, (start, total) in enumerate(zip(starts, totals, strict=True)):
        short, full = _bucket_name(start, window.bucket)
        x = MARGIN_LEFT + index * slot
        y = MARGIN_TOP + plot_height
        for kind, label, color in OUTCOMES:
            count = counts.get((start, kind), 0)
            if not count:
                continue
            height = plot_height * count / top
            y -= height
            chart.rects.append(
                Rect(
                    _r(x + slot * 0.1),
                    _r(y),
                    _r(slot * 0.8),
                    _r(height),
                    color,
                    f"{full}: {count} {label}",
                )
            )
        if index % every == 0:
            chart.texts.append(Text(_r(x + slot / 2), HEIGHT - 10, short, "middle", "axis"))
        if total:
            row = [str(counts.get((start, kind), 0)) for kind, _, _ in OUTCOMES]
            chart.table_rows.append([full, *row, str(total)])
    return chart


def calls_by_status(window: Window) -> Chart:
    return outcomes_chart(window, outcome_counts(window))


# --- approval wait times ------------------------------------------------------------------

# The histogram's bins, in seconds: wide where waits are long, so that both a quick
# click and an overnight wait are visible on one axis.
WAIT_BINS: tuple[tuple[float, str], ...] = (
    (0, "<10 s"),
    (10, "10-30 s"),
    (30, "30 s-1 min"),
    (60, "1-2 min"),
    (120, "2-5 min"),
    (300, "5-15 min"),
    (900, "15-60 min"),
    (3600, "1-4 h"),
    (14400, "≥4 h"),
)
# The most recent decisions the chart reads; enough for a stable p95, small enough to stay quick.
WAIT_SAMPLE = 20_000


def approval_wait_seconds(window: Window) -> list[float]:
    """How long each call proposed in the window waited for its decision, newest first."""
    pairs = (
        ToolCall.objects.filter(
            proposed_at__gte=window.start, proposed_at__lt=window.end, decided_at__isnull=False
        )
        .order_by("-proposed_at")
        .values_list("proposed_at", "decided_at")[:WAIT_SAMPLE]
    )
    return [max(0.0, (decided - proposed).total_seconds()) for proposed, decided in pairs]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with `fraction` of all at or below it."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bin_index(seconds: float) -> int:
    return max(index for index, (lower, _) in enumerate(WAIT_BINS) if seconds >= lower)


def waits_chart(window: Window, waits: Sequence[float]) -> Chart:
    ordered = sorted(waits)
    counts = [0] * len(WAIT_BINS)
    for seconds in ordered:
        counts[_bin_index(seconds)] += 1
    if ordered:
        median, p95 = statistics.median(ordered), percentile(ordered, 0.95)
        summary = (
            f"{len(ordered)} decisions: median wait {duration_text(median)}, "
            f"95th percentile {duration_text(p95)}, longest {duration_text(ordered[-1])}."
        )
    else:
        summary = "No tool call waited for an operator in this period."
    if len(ordered) == WAIT_SAMPLE:
        summary += f" (The latest {WAIT_SAMPLE:,} decisions.)"
    chart = Chart(
        slug="waits",
        title=f"Approval wait times, {window.period}",
        summary=summary,
        legend=[("calls", "#2452c8")],
        table_head=["Wait", "Calls"],
        table_rows=[
            [label, str(count)] for (_, label), count in zip(WAIT_BINS, counts, strict=True)
        ],
    )
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = nice_ceiling(max(counts))
    _y_axis(chart, top, plot_height)
    slot = plot_width / len(WAIT_BINS)
    bottom = MARGIN_TOP + plot_height
    for index, ((_, label), count) in enumerate(zip(WAIT_BINS, counts, strict=True)):
        x = MARGIN_LEFT + index * slot
        chart.texts.append(Text(_r(x + slot / 2), HEIGHT - 10, label, "middle", "axis"))
        if count:
            height = plot_height * count / top
            chart.rects.append(
                Rect(
                    _r(x + slot * 0.08),
                    _r(bottom - height),
                    _r(slot * 0.84),
                    _r(height),
                    "#2452c8",
                    f"{label}: {count} calls",
                )
            )
    if ordered:
        for name, value in (("median", median), ("p95", p95)):
            x = _r(_wait_x(value, slot))
            chart.lines.append(Line(x, MARGIN_TOP, x, bottom, f"marker {name}"))
            chart.texts.append(
                Text(
                    x + 4,
                    MARGIN_TOP + (10 if name == "median" else 24),
                    f"{name} {duration_text(value)}",
                    "start",
                    f"marker-label {name}",
                )
            )
    return chart


def _wait_x(seconds: float, slot: float) -> float:
    """Where a wait falls on the histogram's axis: linear inside its bin."""
    index = _bin_index(seconds)
    lower = WAIT_BINS[index][0]
    upper = WAIT_BINS[index + 1][0] if index + 1 < len(WAIT_BINS) else lower * 2
    within = min(1.0, (seconds - lower) / (upper - lower))
    return MARGIN_LEFT + (index + within) * slot


def approval_waits(window: Window) -> Chart:
    return waits_chart(window, approval_wait_seconds(window))


# --- cost per session ---------------------------------------------------------------------

COST_TOP = 15
COST_ROW = 22
COST_LABEL_WIDTH = 250
COST_LABEL_CHARS = 34  # what fits in COST_LABEL_WIDTH at the label's size


@dataclasses.dataclass(frozen=True)
class SessionCost:
    pk: int
    goal: str
    cost: Decimal


def session_costs(window: Window) -> tuple[list[SessionCost], Decimal, int]:
    """The costliest sessions started in the window, with the window's total and count."""
    started = AgentSession.objects.filter(started_at__gte=window.start, started_at__lt=window.end)
    totals = started.aggregate(total=Sum("cost"), count=Count("pk"))
    top = started.filter(cost__gt=0).order_by("-cost", "-pk").values_list("pk", "goal", "cost")
    return (
        [SessionCost(pk, goal, cost) for pk, goal, cost in top[:COST_TOP]],
        totals["total"] or Decimal(0),
        totals["count"],
    )


def money(amount: Decimal) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def costs_chart(window: Window, costs: Sequence[SessionCost], total: Decimal, count: int) -> Chart:
    height = MARGIN_TOP + max(1, len(costs)) * COST_ROW + 8
    chart = Chart(
        slug="costs",
        title=f"Cost per session, {window.period}",
        summary=f"{count} sessions started, {money(total)} in all"
        + (f"; the costliest {len(costs)} are shown." if costs else "."),
        height=height,
        legend=[("cost (USD)", "#a15c00")],
        table_head=["Session", "Goal", "Cost"],
        table_rows=[[f"#{item.pk}", item.goal, money(item.cost)] for item in costs],
    )
    highest = max((item.cost for item in costs), default=Decimal(0))
    bar_left = COST_LABEL_WIDTH + 8
    bar_room = WIDTH - bar_left - 90  # room on the right for the amount
    history = reverse("history:index")
    for index, item in enumerate(costs):
        y = MARGIN_TOP + index * COST_ROW
        width = max(1.0, bar_room * float(item.cost / highest))
        label = f"#{item.pk} {item.goal}"
        label = label if len(label) <= COST_LABEL_CHARS else label[: COST_LABEL_CHARS - 1] + "…"
        chart.texts.append(Text(COST_LABEL_WIDTH, y + 15, label, "end", "bar-label"))
        chart.rects.append(
            Rect(
                bar_left,
                y + 3,
                _r(width),
                COST_ROW - 6,
                "#a15c00",
                f"Session #{item.pk}: {money(item.cost)} — {item.goal}",
                href=f"{history}?{urlencode({'session': item.pk})}",
            )
        )
        chart.texts.append(
            Text(_r(bar_left + width + 6), y + 15, money(item.cost), "start", "value")
        )
    return chart


def cost_per_session(window: Window) -> Chart:
    return costs_chart(window, *session_costs(window))
