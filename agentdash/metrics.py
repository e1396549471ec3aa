"""/metrics for Prometheus: read from the database at scrape time.

The numbers are the database's, not one process's, so every web process and worker
reports the same thing and nothing is lost on a restart. Each scrape runs a fixed
handful of aggregate queries, none of which loads rows into Python; the histograms are
counted by the database (one COUNT per bucket in a single grouped pass). Grouped
queries drop the models' default ordering, which would join every call's message.

    agentdash_tool_calls{tool,state}                     gauge: calls in each state now
    agentdash_tool_executions_total{tool,status}         counter: results of tools that ran
    agentdash_tool_execution_seconds{tool}               histogram: how long those runs took
    agentdash_approval_wait_seconds{tool}                histogram: proposal to decision
    agentdash_approval_queue_depth                       gauge: calls waiting for an operator
    agentdash_approval_oldest_wait_seconds               gauge: how long the oldest has waited
    agentdash_sessions{status}                           gauge
    agentdash_tokens_total{provider,model,direction}     counter: input / output tokens
    agentdash_cost_usd_total{provider,model}             counter

Tool names come from the model, which may invent any; a name that is not one of the
built-in tools is reported as "(unknown)" so that a misbehaving model cannot blow up
the number of series. Access: a Bearer API token, or a logged-in staff user.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import NotSupportedError
from django.db.models import Count, F, FloatField, Func, Min, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from ninja.errors import AuthenticationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from agentdash.api.auth import UNAUTHENTICATED, token_user
from agentdash.models import AgentSession, ExecutionResult, ToolCall
from agentdash.states import CallState
from agentdash.toolbox import tool_catalogue
from tools import ExecutionStatus

UNKNOWN_TOOL = "(unknown)"
# Upper bounds of the histogram buckets, in seconds.
EXECUTION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
APPROVAL_WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400)
# Results of calls that never reached their tool: they have no execution time.
NOT_RUN = frozenset(
    {
        ExecutionStatus.REJECTED,
        ExecutionStatus.EXPIRED,
        ExecutionStatus.VALIDATION_ERROR,
        ExecutionStatus.PERMISSION_DENIED,
    }
)


class SecondsBetween(Func):
    """`end - start` in seconds, computed by the database's own date functions.

    Django's DurationField arithmetic on SQLite goes through a Python function per
    row, which made the approval-wait histogram take seconds on 170k calls.
    """

    output_field = FloatField()

    def __init__(self, end: str, start: str) -> None:
        super().__init__(F(end), F(start))

    def as_sql(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError("SecondsBetween supports SQLite and PostgreSQL")

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(
            compiler,
            connection,
            template="EXTRACT(EPOCH FROM (%(expressions)s))::double precision",
            arg_joiner=" - ",
            **extra,
        )


def _tool_label(known: frozenset[str]) -> Callable[[str], str]:
    return lambda name: name if name in known else UNKNOWN_TOOL


def _bucketed(
    rows: QuerySet[Any],
    field: str,
    bounds: Sequence[float],
    to_db: Callable[[float], Any],
) -> QuerySet[Any]:
    """`rows` (grouped with values()) annotated with cumulative bucket counts of `field`,
    its count and its sum: one pass of the database over the group."""
    buckets = {
        f"le_{index}": Count("pk", filter=Q(**{f"{field}__lte": to_db(bound)}))
        for index, bound in enumerate(bounds)
    }
    return rows.order_by().annotate(**buckets, observed=Count("pk"), total=Sum(field))


def _histogram(
    name: str,
    documentation: str,
    rows: QuerySet[Any],
    bounds: Sequence[float],
    tool_label: Callable[[str], str],
    total_seconds: Callable[[Any], float],
) -> HistogramMetricFamily:
    """A histogram family per tool from `_bucketed()` rows grouped by tool_name."""
    # Per tool: the bucket counts, then the count and the sum of all observations.
    merged: dict[str, list[float]] = {}
    for row in rows:
        values = [row[f"le_{index}"] for index in range(len(bounds))]
        values += [row["observed"], total_seconds(row["total"])]
        tool = tool_label(row["tool_name"])
        if tool in merged:  # several unknown names fold into one series
            values = [a + b for a, b in zip(merged[tool], values, strict=True)]
        merged[tool] = values
    family = HistogramMetricFamily(name, documentation, labels=["tool"])
    for tool, values in sorted(merged.items()):
        *counts, observed, seconds = values
        buckets = [(f"{bound:g}", count) for bound, count in zip(bounds, counts, strict=True)]
        family.add_metric([tool], [*buckets, ("+Inf", observed)], seconds)
    return family


class DatabaseCollector:
    """A prometheus_client collector that asks the database on every scrape."""

    def collect(self) -> Iterator[Metric]:
        label = _tool_label(frozenset(tool.name for tool in tool_catalogue()))
        yield self._calls(label)
        yield self._executions(label)
        yield self._execution_seconds(label)
        yield self._approval_wait_seconds(label)
        yield from self._queue()
        yield self._sessions()
        yield from self._usage()

    def _calls(self, label: Callable[[str], str]) -> Metric:
        counts: Counter[tuple[str, str]] = Counter()
        rows = ToolCall.objects.order_by().values("tool_name", "state").annotate(n=Count("pk"))
        for row in rows:
            counts[label(row["tool_name"]), row["state"]] += row["n"]
        family = GaugeMetricFamily(
            "agentdash_tool_calls",
            "Tool calls by tool and current state.",
            labels=["tool", "state"],
        )
        for (tool, state), n in sorted(counts.items()):
            family.add_metric([tool, state], n)
        return family

    def _executions(self, label: Callable[[str], str]) -> Metric:
        counts: Counter[tuple[str, str]] = Counter()
        rows = (
            ExecutionResult.objects.exclude(status__in=NOT_RUN)
            .order_by()
            .values("tool_call__tool_name", "status")
            .annotate(n=Count("pk"))
        )
        for row in rows:
            counts[label(row["tool_call__tool_name"]), row["status"]] += row["n"]
        family = CounterMetricFamily(
            "agentdash_tool_executions",
            "Tool runs by tool and outcome (success, error, timeout, interrupted).",
            labels=["tool", "status"],
        )
        for (tool, status), n in sorted(counts.items()):
            family.add_metric([tool, status], n)
        return family

    def _execution_seconds(self, label: Callable[[str], str]) -> Metric:
        rows = (
            ExecutionResult.objects.exclude(status__in=NOT_RUN)
            .annotate(tool_name=F("tool_call__tool_name"))
            .values("tool_name")
        )
        return _histogram(
            "agentdash_tool_execution_seconds",
            "How long tool runs took.",
            _bucketed(rows, "duration_ms", EXECUTION_BUCKETS, to_db=lambda s: s * 1000),
            EXECUTION_BUCKETS,
            label,
            total_seconds=lambda ms: (ms or 0) / 1000,
        )

    def _approval_wait_seconds(self, label: Callable[[str], str]) -> Metric:
        # Calls that waited for a human and got an answer (or expired): still-pending
        # ones are in agentdash_approval_oldest_wait_seconds instead.
        rows = (
            ToolCall.objects.filter(proposed_at__isnull=False, decided_at__isnull=False)
            .annotate(wait=SecondsBetween("decided_at", "proposed_at"))
            .values("tool_name")
        )
        return _histogram(
            "agentdash_approval_wait_seconds",
            "How long calls waited for an operator's decision.",
            _bucketed(rows, "wait", APPROVAL_WAIT_BUCKETS, to_db=float),
            APPROVAL_WAIT_BUCKETS,
            label,
            total_seconds=lambda seconds: seconds or 0.0,
        )

    def _queue(self) -> Iterator[Metric]:
        queue = ToolCall.objects.filter(state=CallState.PENDING_APPROVAL).aggregate(
            depth=Count("pk"), oldest=Min("proposed_at")
        )
        yield GaugeMetricFamily(
            "agentdash_approval_queue_depth",
            "Tool calls waiting for an operator now.",
            value=queue["depth"],
        )
        oldest = queue["oldest"]
        yield GaugeMetricFamily(
            "agentdash_approval_oldest_wait_seconds",
            "How long the oldest waiting call has waited (0: none waits).",
            value=(timezone.now() - oldest).total_seconds() if oldest else 0.0,
        )

    def _sessions(self) -> Metric:
        family = GaugeMetricFamily("agentdash_sessions", "Sessions by status.", labels=["status"])
        rows = AgentSession.objects.values("status").annotate(n=Count("pk")).order_by("status")
        for row in rows:
            family.add_metric([row["status"]], row["n"])
        return family

    def _usage(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "agentdash_tokens",
            "Model tokens used, by provider, model and direction (input includes cached).",
            labels=["provider", "model", "direction"],
        )
        cost = CounterMetricFamily(
            "agentdash_cost_usd", "Model cost in US dollars.", labels=["provider", "model"]
        )
        rows = (
            AgentSession.objects.values("provider", "model")
            .annotate(input=Sum("input_tokens"), output=Sum("output_tokens"), usd=Sum("cost"))
            .order_by("provider", "model")
        )
        for row in rows:
            tokens.add_metric([row["provider"], row["model"], "input"], row["input"])
            tokens.add_metric([row["provider"], row["model"], "output"], row["output"])
            cost.add_metric([row["provider"], row["model"]], float(row["usd"]))
        yield tokens
        yield cost


# The collector describes nothing, so registering it runs no query at import time.
registry = CollectorRegistry()
registry.register(DatabaseCollector())


def _refused(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="agentdash"'
    return response


@login_not_required  # answers 401 itself: a scraper is not sent to a login page
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if "Authorization" in request.headers:
        try:
            if token_user(request) is None:
                return _refused(401, UNAUTHENTICATED)
        except AuthenticationError as error:
            return _refused(401, error.message)
    elif not request.user.is_authenticated:
        return _refused(401, UNAUTHENTICATED)
    elif not request.user.is_staff:
        return _refused(403, "Metrics are for staff users, or send an API token.")
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
