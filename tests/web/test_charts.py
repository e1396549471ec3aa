"""The charts: geometry that matches the numbers, valid accessible SVG, escaped text."""

from __future__ import annotations

import datetime as dt
import io
import re
import statistics
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from agentdash import audit
from agentdash.models import AgentSession, AuditEvent, ToolCall
from agentdash.sessions import start_session
from agentdash.web import charts
from agentdash.web.charts import SessionCost, Window

NOW = dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC)
PLOT_HEIGHT = charts.HEIGHT - charts.MARGIN_TOP - charts.MARGIN_BOTTOM
SVG = "{http://www.w3.org/2000/svg}"


def window(key: str = "24h") -> Window:
    form = charts.ChartRangeForm({"range": key})
    assert form.is_valid()
    return form.window(now=NOW)


def svgs(html: str) -> dict[str, ET.Element]:
    """Every inline SVG of a page, parsed as XML (so it must be well formed), by chart slug."""
    found = {}
    for text in re.findall(r"<svg\b.*?</svg>", html, flags=re.DOTALL):
        svg = ET.fromstring(text)
        found[svg.get("aria-labelledby").split("-")[0]] = svg
    return found


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (24, 25), (26, 50), (0.3, 0.5), (999, 1000)],
)
def test_the_axis_ends_at_a_round_number(value, ceiling):
    assert charts.nice_ceiling(value) == ceiling


def test_percentiles_are_nearest_rank():
    values = list(range(1, 21))  # 1..20

    assert charts.percentile(values, 0.95) == 19
    assert charts.percentile(values, 0.5) == 10
    assert charts.percentile([7], 0.95) == 7


def test_the_windows_cover_the_period_in_hours_or_days():
    hours, days = charts.buckets(window("24h")), charts.buckets(window("7d"))

    assert (len(hours), hours[0], hours[-1]) == (
        25,
        NOW.replace(minute=0) - dt.timedelta(hours=24),
        NOW.replace(minute=0),
    )
    assert (len(days), days[-1]) == (8, NOW.replace(hour=0, minute=0))


def test_outcome_bars_stack_in_proportion_to_the_counts():
    hour = NOW.replace(minute=0)
    counts = {
        (hour, "toolcall.succeeded"): 6,
        (hour, "toolcall.errored"): 2,
        (hour - dt.timedelta(hours=1), "toolcall.rejected"): 3,
    }

    chart = charts.outcomes_chart(window(), counts)

    succeeded, errored = (r for r in chart.rects if r.title.startswith("Nov 25 14:00"))
    assert succeeded.title == "Nov 25 14:00-15:00 UTC: 6 succeeded"
    assert errored.title == "Nov 25 14:00-15:00 UTC: 2 errored"
    # The busiest hour holds 8, so the axis runs to 10.
    assert succeeded.height == pytest.approx(PLOT_HEIGHT * 0.6, abs=0.1)
    assert errored.height == pytest.approx(PLOT_HEIGHT * 0.2, abs=0.1)
    assert errored.y + errored.height == pytest.approx(succeeded.y, abs=0.1)  # stacked on top
    assert succeeded.y + succeeded.height == pytest.approx(charts.MARGIN_TOP + PLOT_HEIGHT, abs=0.1)
    assert [t.text for t in chart.texts if t.css_class == "axis"][:5] == [
        "0",
        "2.5",
        "5",
        "7.5",
        "10",
    ]
    assert chart.summary == "11 tool calls finished; the busiest hour saw 8."
    assert chart.table_rows == [
        ["Nov 25 13:00-14:00 UTC", "0", "0", "0", "0", "3", "0", "3"],
        ["Nov 25 14:00-15:00 UTC", "6", "2", "0", "0", "0", "0", "8"],
    ]


def test_an_empty_period_draws_nothing():
    chart = charts.outcomes_chart(window(), {})

    assert chart.empty
    assert chart.summary.startswith("0 tool calls finished")


def test_the_wait_histogram_counts_each_bin_and_marks_median_and_p95():
    waits = [2, 4, 12, 40, 45, 50, 90, 200, 1000, 5000, 20_000] + [8] * 9  # 20 waits

    chart = charts.waits_chart(window(), waits)

    assert dict(chart.table_rows) == {
        "<10 s": "11",
        "10-30 s": "1",
        "30 s-1 min": "3",
        "1-2 min": "1",
        "2-5 min": "1",
        "5-15 min": "0",
        "15-60 min": "1",
        "1-4 h": "1",
        "≥4 h": "1",
    }
    assert chart.summary == (
        "20 decisions: median wait 8.0 s, 95th percentile 1.4 h, longest 5.6 h."
    )
    slot = (charts.WIDTH - charts.MARGIN_LEFT - charts.MARGIN_RIGHT) / len(charts.WAIT_BINS)
    median, p95 = chart.lines[-2:]
    assert median.css_class == "marker median"
    assert median.x1 == pytest.approx(charts.MARGIN_LEFT + 0.8 * slot, abs=0.1)  # 8 s of <10 s
    assert p95.x1 == pytest.approx(charts.MARGIN_LEFT + (7 + 1400 / 10800) * slot, abs=0.1)
    tallest = max(chart.rects, key=lambda rect: rect.height)
    assert tallest.title == "<10 s: 11 calls"
    assert tallest.height == pytest.approx(PLOT_HEIGHT * 11 / 20, abs=0.1)


def test_no_waits_say_so():
    chart = charts.waits_chart(window(), [])

    assert chart.empty
    assert chart.summary == "No tool call waited for an operator in this period."


def test_cost_bars_scale_to_the_costliest_session_and_link_to_its_history():
    costs = [SessionCost(7, "Refactor", Decimal("2.50")), SessionCost(3, "Read", Decimal("0.25"))]

    chart = charts.costs_chart(window(), costs, total=Decimal("2.80"), count=5)

    first, second = chart.rects
    assert second.width == pytest.approx(first.width / 10, abs=0.1)
    assert first.href == f"{reverse('history:index')}?session=7"
    assert first.title == "Session #7: $2.50 — Refactor"
    assert [t.text for t in chart.texts if t.css_class == "value"] == ["$2.50", "$0.2500"]
    assert chart.summary == "5 sessions started, $2.80 in all; the costliest 2 are shown."


@pytest.mark.django_db
def test_a_bad_period_is_refused(client, viewer):
    client.force_login(viewer)

    response = client.get(reverse("history:charts"), {"range": "1y"})

    assert response.status_code == 400
    assert "Select a valid choice." in response.text


@pytest.mark.django_db(transaction=True)
def test_the_page_draws_the_log_as_valid_accessible_svg(client, viewer, operator):
    hostile = "<script>alert('goal')</script> and more"
    session = start_session(goal=hostile, owner=operator)
    AgentSession.objects.filter(pk=session.pk).update(
        cost=Decimal("0.75"), started_at=timezone.now()
    )
    with transaction.atomic():
        for kind in ["toolcall.succeeded"] * 3 + ["toolcall.errored"]:
            audit.record(kind, actor="runner", session_id=session.pk, tool_call_id=1)
    client.force_login(viewer)

    response = client.get(reverse("history:charts"))

    assert response.status_code == 200
    assert "<script>alert" not in response.text
    assert "&lt;script&gt;alert(&#x27;goal&#x27;)&lt;/script&gt;" in response.text
    pictures = svgs(response.text)
    assert set(pictures) == {"outcomes", "costs"}  # no decision waited: that chart is text only
    for svg in pictures.values():
        assert svg.get("role") == "img"
        assert svg.find(f"{SVG}title").text
        assert svg.find(f"{SVG}desc").text
    bars = [rect.find(f"{SVG}title").text for rect in pictures["outcomes"].iter(f"{SVG}rect")]
    assert sorted(bar.split(": ")[1] for bar in bars) == ["1 errored", "3 succeeded"]
    [cost_bar] = pictures["costs"].iter(f"{SVG}rect")
    assert cost_bar.find(f"{SVG}title").text == f"Session #{session.pk}: $0.7500 — {hostile}"
    assert "No tool call waited for an operator" in response.text


@pytest.mark.django_db
def test_the_charts_of_a_seeded_log_count_what_the_tables_hold(client, viewer):
    call_command("seed_audit", "--events", "2000", "--days", "20", stdout=io.StringIO())
    client.force_login(viewer)

    response = client.get(reverse("history:charts"), {"range": "30d"})

    assert response.status_code == 200
    outcomes, waits, costs = (
        response.context[name] for name in ("status_chart", "wait_chart", "cost_chart")
    )
    finished = AuditEvent.objects.filter(kind__in=[kind for kind, _, _ in charts.OUTCOMES])
    assert sum(int(row[-1]) for row in outcomes.table_rows) == finished.count()
    decided = ToolCall.objects.filter(proposed_at__isnull=False, decided_at__isnull=False)
    assert sum(int(count) for _, count in waits.table_rows) == decided.count()
    median = statistics.median((c.decided_at - c.proposed_at).total_seconds() for c in decided)
    assert f"median wait {charts.duration_text(median)}" in waits.summary
    costliest = AgentSession.objects.order_by("-cost").first()
    assert costs.rects[0].title.startswith(f"Session #{costliest.pk}: ")
    assert len(costs.rects) == charts.COST_TOP
    assert set(svgs(response.text)) == {"outcomes", "waits", "costs"}
