"""/metrics for Prometheus: read from the database at scrape time, cheaply.

The numbers are the database's, not one process's, so every web process and worker
reports the same thing and nothing is lost on a restart. A scrape must stay cheap
however long the history grows (it read whole tables before: 2.3 s at a million audit
events), so each number comes from one of three cheap sources:

- Rows that can no longer change (calls and sessions in a final state, execution
  results, which are never updated) are counted once per process and kept as running
  totals (`SettledRollup`); each scrape folds in only the rows settled since the last
  one and counts the rest (calls and sessions still in progress, and the newest rows)
  live, through the state and primary-key indexes.
- Small live sets (the approval queue) are read through their index.
- The audit log is never counted: its size is its head's seq (seq has no gaps) and the
  chain's status is the stored result of the last verification (agentdash.verification).

    agentdash_tool_calls{tool,state}                     gauge: calls in each state now
    agentdash_tool_executions_total{tool,status}         counter: results of tools that ran
    agentdash_tool_execution_seconds{tool}               histogram: how long those runs took
    agentdash_approval_wait_seconds{tool}                histogram: proposal to decision
    agentdash_approval_queue_depth                       gauge: calls waiting for an operator
    agentdash_approval_oldest_wait_seconds               gauge: how long the oldest has waited
    agentdash_sessions{status}                           gauge
    agentdash_tokens_total{provider,model,direction}     counter: input / output tokens
    agentdash_cost_usd_total{provider,model}             counter
    agentdash_audit_events                               gauge: events in the audit log
    agentdash_audit_chain_ok                             gauge: 1 intact, 0 broken (last check)
    agentdash_audit_chain_verified_up_to_seq             gauge: the last event found good
    agentdash_audit_chain_verified_timestamp_seconds     gauge: when the last check finished
    agentdash_audit_chain_verification_running           gauge: 1 while a check runs

Tool names come from the model, which may invent any; a name that is not one of the
built-in tools is reported as "(unknown)" so that a misbehaving model cannot blow up
the number of series. Access: a Bearer API token, or a logged-in staff user.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import NotSupportedError
from django.db.models import Count, F, FloatField, Func, Max, Min, Model, Q, QuerySet, Sum
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

from agentdash import audit, verification
from agentdash.api.auth import UNAUTHENTICATED, TooManyFailedTokens, token_user
from agentdash.models import AgentSession, ExecutionResult, ToolCall
from agentdash.states import CALL_FINAL, SESSION_FINAL, CallState, SessionStatus
from agentdash.toolbox import tool_catalogue
from tools import ExecutionStatus

UNKNOWN_TOOL = "(unknown)"
# A row is folded into the running totals only once every row with a lower id has had
# this long to commit: ids are handed out when a row is inserted, not when its
# transaction commits, so a lower id can still appear a moment after a higher one. The
# rows' created_at is the app's clock: the margin also covers skew between processes.
COMMIT_MARGIN_SECONDS = 60.0
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


# Totals of one aggregation: label values -> numbers (counts, bucket counts, sums).
type Totals = dict[tuple[str, ...], list[Any]]
type Aggregation = Callable[[QuerySet[Any]], Totals]


def _add(into: Totals, more: Mapping[tuple[str, ...], list[Any]]) -> Totals:
    for key, numbers in more.items():
        if key in into:
            into[key] = [a + b for a, b in zip(into[key], numbers, strict=True)]
        else:
            into[key] = list(numbers)
    return into


class SettledRollup:
    """Aggregates over one table: rows that can no longer change counted once, the rest
    counted on each call.

    Rows "settle" when they can no longer change: not `unsettled` (None: rows never
    change once written), and every row with a lower id has had COMMIT_MARGIN_SECONDS
    to commit. Committed rows are a prefix of the ids, folded into running totals by id
    range as the prefix grows; the rows in it that were still moving are pinned and
    folded once they settle. What lies beyond the prefix (the newest rows) and the
    pinned rows are aggregated again on every call, through the indexes on the id. The
    totals live in this process: its first scrape reads the table once, later ones only
    what is new or still moving. Every table given must have a created_at stamped on
    insert.
    """

    def __init__(
        self,
        model: type[Model],
        aggregations: Mapping[str, Aggregation],
        unsettled: Q | None = None,
    ) -> None:
        self.model = model
        self.aggregations = aggregations
        self.unsettled = unsettled
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the running totals (the next call reads the settled rows again)."""
        self.settled_up_to = 0
        # Rows at or below settled_up_to that were still moving when it passed them:
        # counted live until they settle. A row that never does (a call left interrupted
        # by a cancel) must not hold every later row back from settling.
        self.pinned: set[int] = set()
        self._settled: dict[str, Totals] = {name: {} for name in self.aggregations}

    def _fold(self, rows: QuerySet[Any]) -> None:
        for name, aggregate in self.aggregations.items():
            _add(self._settled[name], aggregate(rows))

    def _committed_up_to(self, rows: QuerySet[Any]) -> int:
        """The newest id of a row inserted COMMIT_MARGIN_SECONDS ago or earlier: every row
        with a lower id was inserted before it, so its transaction has ended by now.

        Walks back from the newest id over the last margin's rows only."""
        cutoff = timezone.now() - dt.timedelta(seconds=COMMIT_MARGIN_SECONDS)
        newest_old = rows.filter(created_at__lte=cutoff).order_by("-pk").values("pk").first()
        return newest_old["pk"] if newest_old else 0

    def totals(self) -> dict[str, Totals]:
        with self._lock:
            rows = self.model.objects.order_by()  # no default ordering: it joins
            newest = rows.aggregate(newest=Max("pk"))["newest"] or 0
            if newest < self.settled_up_to:  # the table was emptied or replaced
                self.reset()
            limit = self._committed_up_to(rows)
            if limit > self.settled_up_to:
                newly_settled = rows.filter(pk__gt=self.settled_up_to, pk__lte=limit)
                if self.unsettled is not None:
                    moving = newly_settled.filter(self.unsettled).values_list("pk", flat=True)
                    self.pinned |= set(moving)
                    newly_settled = newly_settled.exclude(pk__in=self.pinned)
                self._fold(newly_settled)
                self.settled_up_to = limit
            if self.pinned:
                still_moving = set(
                    rows.filter(self.unsettled, pk__in=self.pinned).values_list("pk", flat=True)
                )
                if settled_since := self.pinned - still_moving:
                    self._fold(rows.filter(pk__in=settled_since))
                    self.pinned = still_moving
            # Bounded on both sides: SQLite then walks the id range, where an open range
            # made it scan a whole index that matched the GROUP BY instead.
            live = rows.filter(Q(pk__gt=self.settled_up_to, pk__lte=newest) | Q(pk__in=self.pinned))
            return {
                name: _add({key: list(v) for key, v in self._settled[name].items()}, agg(live))
                for name, agg in self.aggregations.items()
            }


def _bucketed(
    rows: QuerySet[Any],
    field: str,
    bounds: Sequence[float],
    to_db: Callable[[float], Any],
) -> Totals:
    """Per tool: cumulative bucket counts of `field`, its count and its sum, from `rows`
    grouped by tool_name with values(): one pass of the database over the group."""
    buckets = {
        f"le_{index}": Count("pk", filter=Q(**{f"{field}__lte": to_db(bound)}))
        for index, bound in enumerate(bounds)
    }
    grouped = rows.order_by().annotate(**buckets, observed=Count("pk"), total=Sum(field))
    return {
        (row["tool_name"],): [
            *(row[f"le_{index}"] for index in range(len(bounds))),
            row["observed"],
            row["total"] or 0,
        ]
        for row in grouped
    }


def _counted(rows: QuerySet[Any], *fields: str) -> Totals:
    grouped = rows.order_by().values(*fields).annotate(n=Count("pk"))
    return {tuple(row[field] for field in fields): [row["n"]] for row in grouped}


def _calls_by_state(calls: QuerySet[ToolCall]) -> Totals:
    return _counted(calls, "tool_name", "state")


def _approval_waits(calls: QuerySet[ToolCall]) -> Totals:
    # Calls that waited for a human and got an answer (or expired): still-pending ones
    # are in agentdash_approval_oldest_wait_seconds instead.
    rows = (
        calls.filter(proposed_at__isnull=False, decided_at__isnull=False)
        .annotate(wait=SecondsBetween("decided_at", "proposed_at"))
        .values("tool_name")
    )
    return _bucketed(rows, "wait", APPROVAL_WAIT_BUCKETS, to_db=float)


def _executions(results: QuerySet[ExecutionResult]) -> Totals:
    return _counted(
        results.exclude(status__in=NOT_RUN).annotate(tool_name=F("tool_call__tool_name")),
        "tool_name",
        "status",
    )


def _execution_durations(results: QuerySet[ExecutionResult]) -> Totals:
    rows = (
        results.exclude(status__in=NOT_RUN)
        .annotate(tool_name=F("tool_call__tool_name"))
        .values("tool_name")
    )
    return _bucketed(rows, "duration_ms", EXECUTION_BUCKETS, to_db=lambda s: s * 1000)


def _sessions_by_status(sessions: QuerySet[AgentSession]) -> Totals:
    return _counted(sessions, "status")


def _usage(sessions: QuerySet[AgentSession]) -> Totals:
    rows = (
        sessions.order_by()
        .values("provider", "model")
        .annotate(input=Sum("input_tokens"), output=Sum("output_tokens"), usd=Sum("cost"))
    )
    return {
        (row["provider"], row["model"]): [row["input"] or 0, row["output"] or 0, row["usd"] or 0]
        for row in rows
    }


def _moving(states: Sequence[str], final: frozenset[str], field: str) -> Q:
    # Named as a list of the states still moving, so the (state, ...) index serves it.
    return Q(**{f"{field}__in": [state for state in states if state not in final]})


CALLS = SettledRollup(
    ToolCall,
    {"calls": _calls_by_state, "waits": _approval_waits},
    unsettled=_moving(CallState.values, CALL_FINAL, "state"),
)
EXECUTIONS = SettledRollup(
    ExecutionResult, {"runs": _executions, "durations": _execution_durations}
)
SESSIONS = SettledRollup(
    AgentSession,
    {"sessions": _sessions_by_status, "usage": _usage},
    unsettled=_moving(SessionStatus.values, SESSION_FINAL, "status"),
)
ROLLUPS = (CALLS, EXECUTIONS, SESSIONS)


def _by_tool(totals: Totals, tool_label: Callable[[str], str]) -> Totals:
    """`totals` keyed by tool name (first) with unknown names folded into one series."""
    merged: Totals = {}
    for (tool, *rest), numbers in totals.items():
        _add(merged, {(tool_label(tool), *rest): numbers})
    return merged


def _histogram(
    name: str,
    documentation: str,
    totals: Totals,
    bounds: Sequence[float],
    tool_label: Callable[[str], str],
    to_seconds: Callable[[Any], float],
) -> HistogramMetricFamily:
    """A histogram family per tool from `_bucketed()` totals."""
    family = HistogramMetricFamily(name, documentation, labels=["tool"])
    for (tool,), (*counts, observed, total) in sorted(_by_tool(totals, tool_label).items()):
        buckets = [(f"{bound:g}", count) for bound, count in zip(bounds, counts, strict=True)]
        family.add_metric([tool], [*buckets, ("+Inf", observed)], to_seconds(total))
    return family


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    labels: list[str],
    totals: Totals,
) -> Metric:
    family = kind(name, documentation, labels=labels)
    for key, (value,) in sorted(totals.items()):
        family.add_metric(list(key), value)
    return family


class DatabaseCollector:
    """A prometheus_client collector that asks the database on every scrape."""

    def collect(self) -> Iterator[Metric]:
        label = _tool_label(frozenset(tool.name for tool in tool_catalogue()))
        calls, executions, sessions = (rollup.totals() for rollup in ROLLUPS)
        yield _family(
            GaugeMetricFamily,
            "agentdash_tool_calls",
            "Tool calls by tool and current state.",
            ["tool", "state"],
            _by_tool(calls["calls"], label),
        )
        yield _family(
            CounterMetricFamily,
            "agentdash_tool_executions",
            "Tool runs by tool and outcome (success, error, timeout, interrupted).",
            ["tool", "status"],
            _by_tool(executions["runs"], label),
        )
        yield _histogram(
            "agentdash_tool_execution_seconds",
            "How long tool runs took.",
            executions["durations"],
            EXECUTION_BUCKETS,
            label,
            to_seconds=lambda ms: ms / 1000,
        )
        yield _histogram(
            "agentdash_approval_wait_seconds",
            "How long calls waited for an operator's decision (calls still waiting: "
            "agentdash_approval_oldest_wait_seconds).",
            calls["waits"],
            APPROVAL_WAIT_BUCKETS,
            label,
            to_seconds=float,
        )
        yield from self._queue()
        yield _family(
            GaugeMetricFamily,
            "agentdash_sessions",
            "Sessions by status.",
            ["status"],
            sessions["sessions"],
        )
        yield from self._usage(sessions["usage"])
        yield from self._audit()

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

    def _usage(self, usage: Totals) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "agentdash_tokens",
            "Model tokens used, by provider, model and direction (input includes cached).",
            labels=["provider", "model", "direction"],
        )
        cost = CounterMetricFamily(
            "agentdash_cost_usd", "Model cost in US dollars.", labels=["provider", "model"]
        )
        for (provider, model), (input_tokens, output_tokens, usd) in sorted(usage.items()):
            tokens.add_metric([provider, model, "input"], input_tokens)
            tokens.add_metric([provider, model, "output"], output_tokens)
            cost.add_metric([provider, model], float(usd))
        yield tokens
        yield cost

    def _audit(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "agentdash_audit_events",
            "Events in the audit log: the newest event's seq, since seqs have no gaps "
            "(read from the index, not counted).",
            value=audit.head_seq(),
        )
        # The stored result of the last verification; a scrape never walks the chain.
        check = verification.state()
        yield GaugeMetricFamily(
            "agentdash_audit_chain_verification_running",
            "1 while a verification of the hash chain is queued or running, else 0.",
            value=int(check.in_progress),
        )
        if check.verified_at is None:
            return  # never verified: no value is better than a made-up one
        yield GaugeMetricFamily(
            "agentdash_audit_chain_ok",
            "The last finished verification of the hash chain: 1 intact, 0 broken.",
            value=int(check.verified_ok),
        )
        yield GaugeMetricFamily(
            "agentdash_audit_chain_verified_up_to_seq",
            "The last event the last verification found good: events after it are unchecked "
            "(compare with agentdash_audit_events).",
            value=check.verified_up_to_seq,
        )
        yield GaugeMetricFamily(
            "agentdash_audit_chain_verified_timestamp_seconds",
            "When the last verification of the hash chain finished (Unix time).",
            value=check.verified_at.timestamp(),
        )


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
        except TooManyFailedTokens as error:
            response = _refused(429, error.message)
            response["Retry-After"] = str(error.retry_after)
            return response
        except AuthenticationError as error:
            return _refused(401, error.message)
    elif not request.user.is_authenticated:
        return _refused(401, UNAUTHENTICATED)
    elif not request.user.is_staff:
        return _refused(403, "Metrics are for staff users, or send an API token.")
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
