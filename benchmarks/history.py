"""The audit history page and its export on a large seeded log, on SQLite and PostgreSQL.

Each database is measured in a child process of its own on a fresh database, seeded by
`manage.py seed_audit` (BENCH_HISTORY_EVENTS events, 200,000 by default; issue 8 asks
for 1,000,000). Requests go through Django's whole stack in process (middleware, login,
the view, the template) with the test client:

- page p95: each filter combination below, newest page and a deep page, 40 requests
  each after warm-up; target < 100 ms;
- export: the whole log as JSONL through the ASGI handler (as Daphne serves it),
  events per second and the growth of the process's peak RSS while it streams;
  target: under 64 MB whatever the size, i.e. constant memory;
- chain verify: how long "Verify now" takes to answer (it only queues the check), then
  the background check of the whole log run to its end by a worker, slice by slice,
  and an incremental check right after it (the events since: a handful);
- /metrics: one scrape once the settled rows are in the running totals (the first
  scrape of a process reads them once; that one is reported in the note).

    python -m benchmarks history                  # both databases
    BENCH_HISTORY_EVENTS=1000000 BENCH_HISTORY_DATABASES=postgres python -m benchmarks history
    python -m benchmarks.history --probe sqlite   # one, printing raw JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.harness import ROOT, Figure, percentile, probe_in_child

BENCH_DB = "agentdash_bench_history"
EVENTS = int(os.environ.get("BENCH_HISTORY_EVENTS", "200000"))
DATABASES = os.environ.get("BENCH_HISTORY_DATABASES", "sqlite,postgres").split(",")
REQUESTS = 40
PAGE_TARGET_MS = 100
EXPORT_TARGET_MB = 64


def run() -> list[Figure]:
    figures: list[Figure] = []
    for database in DATABASES:
        try:
            data = _probe_in_child(database)
        except RuntimeError as error:
            figures.append(Figure(f"history ({database})", None, "", note=str(error)))
            continue
        figures += _figures(database, data)
    return figures


def _figures(database: str, data: dict[str, Any]) -> list[Figure]:
    size = f"{data['events']:,} events"
    figures = [Figure(f"{database}: seeding", data["seed_seconds"], "s", note=size)]
    for name, timings in data["pages_ms"].items():
        p95 = percentile(timings, 95)
        figures.append(
            Figure(
                f"{database}: page p95, {name}",
                p95,
                "ms",
                target=f"< {PAGE_TARGET_MS} ms",
                passed=p95 < PAGE_TARGET_MS,
                note=f"median {percentile(timings, 50):.1f} ms, {len(timings)} requests",
            )
        )
    for name, timings in data["unbounded_ms"].items():
        figures.append(
            Figure(
                f"{database}: {name}",
                percentile(timings, 95),
                "ms",
                note="p95; no target: a search nothing narrows reads the whole log",
            )
        )
    export = data["export"]
    figures += [
        Figure(
            f"{database}: export JSONL via ASGI",
            export["events"] / export["seconds"],
            "events/s",
            note=f"{export['megabytes']:.0f} MB in {export['seconds']:.1f} s",
        ),
        Figure(
            f"{database}: export peak RSS growth",
            export["rss_growth_mb"],
            "MB",
            target=f"< {EXPORT_TARGET_MB} MB",
            passed=export["rss_growth_mb"] < EXPORT_TARGET_MB,
            note=f"while streaming {export['megabytes']:.0f} MB",
        ),
        Figure(f"{database}: Verify now, answer", data["verify_request_ms"], "ms"),
        Figure(
            f"{database}: chain verify, background",
            data["verify_seconds"],
            "s",
            note=f"{data['events'] / data['verify_seconds']:,.0f} events/s; incremental "
            f"re-check after it {data['verify_again_seconds'] * 1000:.0f} ms",
        ),
        Figure(
            f"{database}: /metrics scrape",
            percentile(data["scrape_ms"], 50),
            "ms",
            note=f"median of {len(data['scrape_ms'])}; the process's first scrape "
            f"{data['first_scrape_ms']:.0f} ms",
        ),
    ]
    return figures


def _probe_in_child(database: str) -> dict[str, Any]:
    return probe_in_child(
        "benchmarks.history",
        database,
        bench_db=BENCH_DB,
        timeout=3600,
        env={"AGENTDASH_INPROCESS_WORKER": "0", "DJANGO_ALLOWED_HOSTS": "testserver"},
    )


# -- inside the child process ----------------------------------------------------------


def _probe() -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    # In a process of its own, so that its memory does not hide the export's peak here.
    subprocess.run(
        [sys.executable, "manage.py", "seed_audit", "--events", str(EVENTS)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seed_seconds = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # as autovacuum would have, long before 1M rows
    user = get_user_model().objects.create_user("bench", password="bench-password-1")

    from django.test import Client

    client = Client()
    client.force_login(user)
    pages, unbounded = _page_timings(client)
    export = _export(user)
    verify = _verify(client)
    first_scrape_ms, scrape_ms = _scrapes(client)
    return {
        "events": EVENTS,
        "seed_seconds": seed_seconds,
        "pages_ms": pages,
        "unbounded_ms": unbounded,
        "export": export,
        **verify,
        "first_scrape_ms": first_scrape_ms,
        "scrape_ms": scrape_ms,
    }


def _verify(client: Any) -> dict[str, float]:
    """The button's answer, then the check it queued, run by a worker to its end."""
    from agentdash import verification
    from agentdash.worker import StepWorker

    def check(params: dict[str, str]) -> tuple[float, float]:
        started = time.perf_counter()
        response = client.post("/history/verify/", params)
        answered = time.perf_counter() - started
        assert response.status_code == 302, response.status_code
        StepWorker().tasks.run()  # drains the queue: every slice of the check
        assert verification.state().verified_ok
        return answered, time.perf_counter() - started

    request_seconds, verify_seconds = check({"full": "1"})
    _, again_seconds = check({})
    return {
        "verify_request_ms": request_seconds * 1000,
        "verify_seconds": verify_seconds,
        "verify_again_seconds": again_seconds,
    }


def _scrapes(client: Any) -> tuple[float, list[float]]:
    """The first /metrics scrape of this process (it folds the settled rows), then
    REQUESTS more."""
    client.force_login(_staff())
    timings = []
    for _ in range(REQUESTS + 1):
        started = time.perf_counter()
        response = client.get("/metrics")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return timings[0], timings[1:]


def _staff() -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(
        "bench-staff", password="bench-password-1", is_staff=True
    )


def _filter_cases() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The filter combinations measured, with values taken from the seeded log."""
    import datetime as dt

    from agentdash.models import AgentSession, AuditEvent

    deep = str(EVENTS // 50)  # 98% of the way back
    middle = AgentSession.objects.order_by("pk")[AgentSession.objects.count() // 2]
    day = AuditEvent.objects.get(seq=EVENTS // 2).created_at
    since, until = day - dt.timedelta(hours=12), day + dt.timedelta(hours=12)
    bounded = {
        "newest, no filter": {},
        "deep page, no filter": {"before": deep},
        "one session": {"session": str(middle.pk)},
        "status rejected, deep page": {"kind": "toolcall.rejected", "before": deep},
        "actor, deep page": {"actor": "user:carol", "before": deep},
        "tool write_file": {"tool": "write_file"},
        "tool write_file, deep page": {"tool": "write_file", "before": deep},
        "tool + status": {"tool": "run_shell", "kind": "toolcall.timed_out"},
        "one day, mid-log": {"since": since.isoformat(), "until": until.isoformat()},
        "search, common word": {"q": "grep -rn"},
        "search within a session": {"q": "looks fine", "session": str(middle.pk)},
    }
    unbounded = {"search, word found nowhere (p95)": {"q": "no such words anywhere"}}
    return bounded, unbounded


def _page_timings(client: Any) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    bounded, unbounded = _filter_cases()
    results: list[dict[str, list[float]]] = []
    for cases, count in ((bounded, REQUESTS), (unbounded, 5)):
        timings: dict[str, list[float]] = {}
        for name, params in cases.items():
            for _ in range(3):  # warm-up: connection, caches, compiled templates
                response = client.get("/history/", params)
                assert response.status_code == 200, (name, response.status_code)
            runs = []
            for _ in range(count):
                started = time.perf_counter()
                response = client.get("/history/", params)
                runs.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (name, response.status_code)
            timings[name] = runs
        results.append(timings)
    return results[0], results[1]


def _export(user: Any) -> dict[str, float]:
    import asyncio
    import resource

    from django.test import AsyncClient

    async def stream() -> tuple[int, int]:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get("/history/export.jsonl")
        lines = size = 0
        async for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            size += len(chunk)
        return lines, size

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    lines, size = asyncio.run(stream())
    seconds = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert lines == EVENTS, lines
    return {
        "events": lines,
        "seconds": seconds,
        "megabytes": size / 1e6,
        "rss_growth_mb": (rss_after - rss_before) / 1024,  # ru_maxrss is in KiB on Linux
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(_probe()))
    else:
        sys.exit("use: python -m benchmarks history, or --probe sqlite|postgres")
