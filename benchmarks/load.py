"""Load: 100 busy sessions and 50 operators' browsers for a bounded time, on loopback.

The product runs in each of its two configurations, on a fresh database:
- embedded: `manage.py serve` alone (Daphne, SQLite, the in-memory channel layer, the
  step worker inside the server process), as benchmarks/live.py starts it;
- scale-out: PostgreSQL, Redis as the channel layer, the web server serving only and
  two `manage.py agent worker` processes running the steps (README, Scale-out).
Fifty operators are logged in, each
with a websocket open: 40 on the approval queue (/ws/approvals/) and 10 on the
sessions list (/ws/sessions/). Through the HTTP API, 100 sessions of the built-in
scripted demo are started (a directory listing that runs at once, then a file write and
a Python run in the sandbox that each wait for an operator); whenever one finishes,
another starts, so that 100 stay active. Operators approve each call as its card
arrives on the queue socket, through the page's own POST, DECIDERS at a time. This
goes on for BENCH_LOAD_SECONDS (300 by default).

Figures:
- errors: HTTP answers other than the expected ones, websockets that closed under the
  operators, sessions that ended other than completed, cards whose removal did not
  reach every queue socket. Target: none.
- server RSS, sampled every RSS_EVERY seconds: the mean of the last minute against the
  second (a fifth of the run each when it is shorter than five minutes). The first
  minute is warm-up: caches, templates, imports and the connection pools fill once
  (about 20 MB here), which is no leak; a leak keeps growing after it. Target: memory
  flat, growth < 50 MB and < 10 %.
- approval push: from an approval's POST to its card's removal at each queue socket,
  p50 and p99 over all (socket, call) pairs. No target under load (benchmarks/live.py
  has the targets, measured one call at a time).
- end-to-end tool calls per second: calls that finished with a result during the run,
  over its duration. No target.

The client (sockets, operators and session starts on one asyncio loop, in this process)
shares the machine's two cores with the server: its own work is part of the figures.

BENCH_LOAD_CONFIGS picks configurations (default "embedded,scale-out"); each runs for
BENCH_LOAD_SECONDS.

    python -m benchmarks load
    BENCH_LOAD_SECONDS=60 python -m benchmarks.load --probe sqlite    # raw JSON on stdout
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.harness import ROOT, Figure, percentile, probe_in_child
from benchmarks.live import (
    FRAGMENT_SECONDS,
    CardRemovals,
    Operator,
    cookies_of,
    make_operators,
    open_socket,
)

if TYPE_CHECKING:
    from tests.e2e.server import Server

SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", 300))
# Configuration name: the database probe_in_child gives its child.
CONFIGURATIONS = {"embedded": "sqlite", "scale-out": "postgres"}
CHOSEN = os.environ.get("BENCH_LOAD_CONFIGS", ",".join(CONFIGURATIONS)).split(",")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
BENCH_DB = "agentdash_load"
SCALE_OUT_WORKERS = 2
SESSIONS = 100
QUEUE_SOCKETS = 40
LIST_SOCKETS = 10  # 50 browsers in all
DECIDERS = 5  # operators approving at the same time
CONNECT_AT_ONCE = 10
RSS_EVERY = 5.0
TOP_UP_EVERY = 0.5
RSS_GROWTH_MB_TARGET = 50
RSS_GROWTH_PERCENT_TARGET = 10
# A card as the live layer adds it to the queue (templates/agentdash/partials/queue_card.html).
CARD_ADDED = re.compile(r'<article id="queue-card-(\d+)"')


def run() -> list[Figure]:
    figures: list[Figure] = []
    for name in CHOSEN:
        database = CONFIGURATIONS[name]
        env = {"REDIS_URL": REDIS_URL} if database == "postgres" else None
        try:
            data = probe_in_child(
                "benchmarks.load", database, bench_db=BENCH_DB, env=env, timeout=SECONDS + 900
            )
        except RuntimeError as error:
            figures.append(Figure(f"load ({name})", None, "", note=str(error)))
            continue
        figures += _figures(data, name)
    return figures


def _figures(data: dict[str, Any], configuration: str = "embedded") -> list[Figure]:
    errors: dict[str, int] = data["errors"]
    error_count = sum(errors.values())
    first, last = data["rss_first_mb"], data["rss_last_mb"]
    growth_mb = last - first
    growth_percent = growth_mb / first * 100
    flat = growth_mb < RSS_GROWTH_MB_TARGET and growth_percent < RSS_GROWTH_PERCENT_TARGET
    latencies = data["push_ms"]
    run = (
        f"{data['seconds']:.0f} s, {data['sessions_started']} sessions started "
        f"({data['sessions_completed']} completed), {data['approvals']} approvals, "
        f"{data['sockets']} sockets"
    )
    breakdown = ", ".join(f"{count} {kind}" for kind, count in errors.items() if count)
    figures = [
        Figure(
            "errors",
            error_count,
            "",
            target="0",
            passed=error_count == 0,
            note=f"{breakdown or 'none'}; {run}",
        ),
        Figure(
            "server RSS growth, second minute to last",
            growth_mb,
            "MB",
            target=f"< {RSS_GROWTH_MB_TARGET} MB and < {RSS_GROWTH_PERCENT_TARGET} %",
            passed=flat,
            note=f"{first:.0f} MB to {last:.0f} MB ({growth_percent:+.1f} %), "
            f"peak {max(data['rss_mb']):.0f} MB; {data['rss_of']}; sampled every {RSS_EVERY:.0f} s",
        ),
    ]
    if latencies:
        pairs = f"{len(latencies)} (socket, call) pairs under load"
        figures += [
            Figure("approval push p50", statistics.median(latencies), "ms", note=pairs),
            Figure(
                "approval push p99",
                percentile(latencies, 99),
                "ms",
                note=f"max {max(latencies):.0f} ms",
            ),
        ]
    else:
        figures.append(Figure("approval push", None, "ms", note="no approval was timed"))
    figures.append(
        Figure(
            "end-to-end tool calls",
            data["tool_calls"] / data["seconds"],
            "calls/s",
            note=f"{data['tool_calls']} calls finished with a result, "
            f"{data['model_turns']} model turns; the scripted demo (1 auto-approved, "
            "2 approved by an operator, one in the sandbox)",
        )
    )
    return [
        dataclasses.replace(figure, name=f"load, {configuration}: {figure.name}")
        for figure in figures
    ]


# -- inside the child process ----------------------------------------------------------


def _probe(database: str) -> dict[str, Any]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdash.settings")
    django.setup()
    from django.core.management import call_command

    from agentdash.models import ApiToken

    call_command("migrate", verbosity=0)
    operators = make_operators(QUEUE_SOCKETS + LIST_SOCKETS)
    cookies = cookies_of(operators)
    _, token = ApiToken.issue(operators[0], "load benchmark")
    with _product(database, Path(os.environ["AGENTDASH_VAR_DIR"])) as (server, pids, rss_of):
        return asyncio.run(_Load(server, cookies, token, pids).run()) | {"rss_of": rss_of}


@contextmanager
def _product(database: str, var_dir: Path) -> Iterator[tuple[Server, list[int], str]]:
    """The product answering on this process's database: the embedded server alone
    (sqlite), or (postgres) the web server serving only, on Redis, with
    SCALE_OUT_WORKERS `agent worker` processes. Yields the server, the ids of its
    processes and what they are."""
    from tests.e2e.server import running

    if database == "sqlite":
        with running(var_dir=var_dir) as web:
            assert web.process is not None
            yield web.server, [web.process.pid], "the server process"
        return
    scale_out = {"REDIS_URL": os.environ["REDIS_URL"], "AGENTDASH_INPROCESS_WORKER": "0"}
    database_url = os.environ["DATABASE_URL"]
    with running(var_dir=var_dir, database_url=database_url, environment=scale_out) as web:
        assert web.process is not None
        with (var_dir / "workers.log").open("ab") as log:
            workers = [
                subprocess.Popen(
                    [sys.executable, "manage.py", "agent", "worker"],
                    cwd=ROOT,
                    env=web.env,  # the server's own environment: same database and Redis
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                for _ in range(SCALE_OUT_WORKERS)
            ]
        try:
            pids = [web.process.pid, *(worker.pid for worker in workers)]
            yield web.server, pids, f"the web server and {SCALE_OUT_WORKERS} workers together"
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


class _Load:
    def __init__(self, server: Server, cookies: list[str], token: str, pids: list[int]) -> None:
        self.server = server
        self.cookies = cookies
        self.token = token
        self.pids = pids  # whose memory is sampled, summed
        self.errors: Counter[str] = Counter()
        self.removals = CardRemovals(QUEUE_SOCKETS)
        self.to_approve: asyncio.Queue[int] = asyncio.Queue()
        self.seen_cards: set[int] = set()
        self.push_ms: list[float] = []
        self.approvals = 0
        self.rss: list[tuple[float, float]] = []  # (seconds since the start, MB)
        self.sessions: list[int] = []
        self.stopping = False

    async def run(self) -> dict[str, Any]:
        from agentdash.models import AgentSession, AuditEvent, ToolCall
        from agentdash.states import SessionStatus

        queue = self.cookies[:QUEUE_SOCKETS]
        lists = self.cookies[QUEUE_SOCKETS:]
        # Connected before the sessions exist, as in live.py: snapshots stay small. And
        # CONNECT_AT_ONCE at a time: each handshake's database work runs in the server's
        # one thread for it, and 50 at once on a busy machine outlast Daphne's 5 s
        # handshake timeout (seen in the scale-out configuration).
        pages = [(cookie, "/ws/approvals/") for cookie in queue]
        pages += [(cookie, "/ws/sessions/") for cookie in lists]
        sockets = []
        for first in range(0, len(pages), CONNECT_AT_ONCE):
            batch = pages[first : first + CONNECT_AT_ONCE]
            sockets += await asyncio.gather(
                *(open_socket(self.server, cookie, path) for cookie, path in batch)
            )
        listeners = [
            asyncio.create_task(self._listen(socket, watch_cards=n == 0))
            for n, socket in enumerate(sockets)
        ]
        deciders = [await asyncio.to_thread(Operator, self.server, c) for c in queue[:DECIDERS]]
        started = time.monotonic()
        wall_start = await asyncio.to_thread(_now)
        workers = [
            asyncio.create_task(self._sample_rss(started)),
            asyncio.create_task(self._keep_sessions_busy()),
            *(asyncio.create_task(self._approve(decider)) for decider in deciders),
        ]
        await asyncio.sleep(SECONDS)
        self.stopping = True
        seconds = time.monotonic() - started
        wall_end = await asyncio.to_thread(_now)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await asyncio.gather(*(socket.close() for socket in sockets))

        def tally() -> dict[str, Any]:
            ours = AgentSession.objects.filter(pk__in=self.sessions)
            ended = Counter(
                ours.exclude(finished_at=None).values_list("status", flat=True).order_by()
            )
            self.errors["sessions ended other than completed"] += sum(
                count for status, count in ended.items() if status != SessionStatus.COMPLETED
            )
            during = {"finished_at__gte": wall_start, "finished_at__lt": wall_end}
            turns = AuditEvent.objects.filter(
                kind="model.replied", created_at__gte=wall_start, created_at__lt=wall_end
            )
            return {
                "tool_calls": ToolCall.objects.filter(**during).exclude(results=None).count(),
                "model_turns": turns.count(),
                "sessions_completed": ended[SessionStatus.COMPLETED],
            }

        counts = await asyncio.to_thread(tally)
        window = min(60.0, seconds / 5)
        first = [mb for at, mb in self.rss if window <= at < 2 * window]  # after warm-up
        last = [mb for at, mb in self.rss if at >= seconds - window]
        return {
            **counts,
            "seconds": seconds,
            "sockets": len(sockets),
            "sessions_started": len(self.sessions),
            "approvals": self.approvals,
            "errors": dict(self.errors),
            "push_ms": self.push_ms,
            "rss_mb": [mb for _, mb in self.rss],
            "rss_first_mb": statistics.mean(first),
            "rss_last_mb": statistics.mean(last),
        }

    async def _listen(self, socket: Any, *, watch_cards: bool) -> None:
        """Receive until closed; one queue socket also tells the operators of new cards."""
        await self.removals.listen(socket, self._new_cards if watch_cards else None)
        if not self.stopping:
            self.errors["websockets closed by the server"] += 1

    def _new_cards(self, message: str) -> None:
        for call_id in map(int, CARD_ADDED.findall(message)):
            if call_id not in self.seen_cards:  # cards are re-sent as they change
                self.seen_cards.add(call_id)
                self.to_approve.put_nowait(call_id)

    async def _approve(self, operator: Operator) -> None:
        while True:
            call_id = await self.to_approve.get()
            began = time.perf_counter()
            try:
                await asyncio.to_thread(operator.approve, call_id)
            except (RuntimeError, OSError) as error:
                self.errors[f"approvals refused ({error})"] += 1
                continue
            self.approvals += 1
            try:
                await self.removals.everywhere(call_id, FRAGMENT_SECONDS)
            except TimeoutError:
                self.errors["removals that missed a queue socket"] += 1
            else:
                self.push_ms += self.removals.latencies_ms(call_id, began)

    async def _sample_rss(self, started: float) -> None:
        while True:
            total = sum(_rss_mb(pid) for pid in self.pids)
            self.rss.append((time.monotonic() - started, total))
            await asyncio.sleep(RSS_EVERY)

    async def _keep_sessions_busy(self) -> None:
        """Start sessions through the API until SESSIONS are active, and keep it so."""
        from agentdash.models import AgentSession
        from agentdash.states import SESSION_FINAL

        def active() -> int:
            return (
                AgentSession.objects.filter(pk__in=self.sessions)
                .exclude(status__in=SESSION_FINAL)
                .count()
            )

        api = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        body = json.dumps({"goal": "Keep the notes and check the numbers"})

        def start() -> None:
            api.request("POST", "/api/v1/sessions", body, headers)
            response = api.getresponse()
            answer = response.read()
            if response.status != 201:
                self.errors[f"session starts answered {response.status}"] += 1
                return
            self.sessions.append(json.loads(answer)["id"])

        while True:
            for _ in range(SESSIONS - await asyncio.to_thread(active)):
                await asyncio.to_thread(start)
            await asyncio.sleep(TOP_UP_EVERY)


def _now() -> Any:
    from django.utils import timezone

    return timezone.now()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--probe" or sys.argv[2] not in ("sqlite", "postgres"):
        sys.exit(
            "usage: python -m benchmarks.load --probe sqlite|postgres  (or: -m benchmarks load)"
        )
    print(json.dumps(_probe(sys.argv[2])))
