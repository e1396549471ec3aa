"""The live layer: from an operator's approval POST to the fragment at every open queue.

Fifty operators have the approval queue open: 50 websockets on /ws/approvals/, each
with its own logged-in session cookie and an Origin header, as browsers would send.
The server is the real product on the embedded default (`manage.py serve`: Daphne,
SQLite, the in-memory channel layer, the step worker inside the server process) in a
fresh var dir. For each of CALLS pending calls, one operator POSTs the approval as the
page does (htmx headers, CSRF token); every socket's arrival of the fragment that
deletes that call's card is timed from just before the POST. Figures are over all
(socket, call) pairs. Each approved session is left to finish before the next POST,
so that one measurement does not overlap the previous call's tool run.

The client (50 sockets on one asyncio loop in this process) shares the machine's cores
with the server, so its own scheduling is part of the figures.

    python -m benchmarks live
    python -m benchmarks.live --probe sqlite    # the measurement alone, raw JSON on stdout
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import statistics
import sys
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.harness import Figure, percentile, probe_in_child

if TYPE_CHECKING:
    from tests.e2e.server import Server

SOCKETS = 50
CALLS = 100
WARMUP_CALLS = 5  # not counted: the first ones warm caches, connections and templates
MEDIAN_TARGET_MS = 30
P99_TARGET_MS = 150
# Bounds, so that a broken server stops the benchmark instead of hanging it.
PENDING_SECONDS = 120
FRAGMENT_SECONDS = 10
SESSION_END_SECONDS = 10
# The card's removal, as the live layer pushes it to the queue (agentdash.live.fragments).
CARD_DELETED = re.compile(r'<div id="queue-card-(\d+)" hx-swap-oob="delete">')


def run() -> list[Figure]:
    try:
        data = probe_in_child("benchmarks.live", "sqlite", timeout=900)
    except RuntimeError as error:
        return [Figure("approval to fragment at 50 sockets", None, "ms", note=str(error))]
    return _figures(data)


def _figures(data: dict[str, Any]) -> list[Figure]:
    latencies, slowest, posts = data["latency_ms"], data["slowest_socket_ms"], data["post_ms"]
    median, p99 = statistics.median(latencies), percentile(latencies, 99)
    pairs = f"{len(latencies)} (socket, call) pairs: {data['sockets']} sockets x {data['calls']}"
    return [
        Figure(
            "approval to fragment at every socket, median",
            median,
            "ms",
            target=f"< {MEDIAN_TARGET_MS}",
            passed=median < MEDIAN_TARGET_MS,
            note=f"{pairs} calls; embedded default (SQLite, in-memory layer)",
        ),
        Figure(
            "approval to fragment at every socket, p99",
            p99,
            "ms",
            target=f"< {P99_TARGET_MS}",
            passed=p99 < P99_TARGET_MS,
            note=f"max {max(latencies):.1f} ms",
        ),
        Figure(
            "approval to the last of 50 sockets, median",
            statistics.median(slowest),
            "ms",
            note=f"p99 {percentile(slowest, 99):.1f} ms; per call, the slowest socket",
        ),
        Figure(
            "approval POST round trip, median",
            statistics.median(posts),
            "ms",
            note=f"p99 {percentile(posts, 99):.1f} ms; the deciding operator's own answer",
        ),
    ]


# -- inside the child process ----------------------------------------------------------


def _probe() -> dict[str, Any]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdash.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tests.e2e.server import serving

    operators = make_operators(SOCKETS)
    cookies = cookies_of(operators)

    def pending_calls() -> list[tuple[int, int]]:
        sessions = [_pending_session(operators[0], n) for n in range(WARMUP_CALLS + CALLS)]
        return _wait_until_pending(sessions)

    with serving(var_dir=Path(os.environ["AGENTDASH_VAR_DIR"])) as server:
        return asyncio.run(_measure(server, cookies, pending_calls))


def make_operators(count: int) -> list[Any]:
    """`count` users who may decide calls, operator00, operator01, ..."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    decide = Permission.objects.get(codename="decide_toolcall")
    users = []
    for n in range(count):
        # No password: hashing 50 of them would take longer than the measurement.
        user = get_user_model().objects.create_user(f"operator{n:02}")
        user.user_permissions.add(decide)
        users.append(user)
    return users


def cookies_of(users: list[Any]) -> list[str]:
    """A logged-in session cookie (`name=value`) for each user."""
    from tests.e2e.server import session_cookie

    return ["=".join(session_cookie(user)) for user in users]


def _pending_session(owner: Any, n: int) -> int:
    from agentdash.sessions import start_session

    write = {"path": "notes.md", "content": f"version {n}\n"}
    script = [[{"type": "tool_use", "name": "write_file", "input": write}]]
    return start_session(goal=f"Live benchmark {n}", owner=owner, script=script).pk


def _wait_until_pending(sessions: list[int]) -> list[tuple[int, int]]:
    """(session, call) for each session, once the server's worker has paused them all."""
    from agentdash.models import ToolCall
    from agentdash.states import CallState

    pending = ToolCall.objects.filter(session_id__in=sessions, state=CallState.PENDING_APPROVAL)
    deadline = time.monotonic() + PENDING_SECONDS
    while pending.count() < len(sessions):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending.count()} of {len(sessions)} calls are pending")
        time.sleep(0.1)
    return list(pending.order_by("pk").values_list("session_id", "pk"))


def _wait_until_finished(session_id: int) -> None:
    from agentdash.models import AgentSession
    from agentdash.states import SESSION_FINAL

    deadline = time.monotonic() + SESSION_END_SECONDS
    while AgentSession.objects.get(pk=session_id).status not in SESSION_FINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {session_id} did not finish after its approval")
        time.sleep(0.005)


class Operator:
    """One operator's HTTP connection, deciding calls as the queue page's buttons do."""

    def __init__(self, server: Server, cookie: str) -> None:
        self.server = server
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.cookie = cookie
        # The page's GET gives the CSRF cookie that htmx sends back as X-CSRFToken.
        self.connection.request("GET", "/approvals/", headers={"Cookie": cookie})
        response = self.connection.getresponse()
        response.read()
        csrf = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "")
        if response.status != 200 or csrf is None:
            raise RuntimeError(f"the queue page answered {response.status} without a CSRF cookie")
        self.csrf_token = csrf.group(1)

    def approve(self, call_id: int) -> None:
        body = urllib.parse.urlencode({"action": "approve", "card": "queue"})
        headers = {
            "Cookie": f"{self.cookie}; csrftoken={self.csrf_token}",
            "X-CSRFToken": self.csrf_token,
            "HX-Request": "true",
            "Origin": self.server.url,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self.connection.request("POST", f"/calls/{call_id}/decide/", body, headers)
        response = self.connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"approving call {call_id} answered {response.status}")


QUEUE_PATH = "/ws/approvals/"


async def open_socket(server: Server, cookie: str, path: str = QUEUE_PATH) -> Any:
    """A logged-in browser's websocket on one of the live pages, once its snapshot has
    arrived: from then on it is in the page's group."""
    from websockets.asyncio.client import connect

    socket = await connect(
        server.ws_url(path),
        origin=server.url,
        additional_headers={"Cookie": cookie},
        proxy=None,
        max_size=None,
    )
    await socket.recv()
    return socket


class CardRemovals:
    """When each call's card removal reaches each of `sockets` queue sockets."""

    def __init__(self, sockets: int) -> None:
        self.sockets = sockets
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self._complete: dict[int, asyncio.Event] = defaultdict(asyncio.Event)

    async def listen(self, socket: Any, on_message: Callable[[str], None] | None = None) -> None:
        """Record the removals the socket receives until it closes; `on_message` sees
        every message too."""
        async for message in socket:
            now = time.perf_counter()
            for call_id in CARD_DELETED.findall(message):
                seen = self.arrivals[int(call_id)]
                seen.append(now)
                if len(seen) == self.sockets:
                    self._complete[int(call_id)].set()
            if on_message is not None:
                on_message(message)

    async def everywhere(self, call_id: int, within: float) -> None:
        """Wait until every socket has the call's removal (TimeoutError after `within` s)."""
        await asyncio.wait_for(self._complete[call_id].wait(), within)

    def latencies_ms(self, call_id: int, began: float) -> list[float]:
        """Each socket's arrival of the removal, in ms after `began` (perf_counter)."""
        return [(arrived - began) * 1000 for arrived in self.arrivals[call_id]]


async def _measure(
    server: Server, cookies: list[str], pending_calls: Callable[[], list[tuple[int, int]]]
) -> dict[str, Any]:
    """Connect the sockets, then make the calls (each pushed to every socket as it
    pauses), then approve them one by one."""
    removals = CardRemovals(SOCKETS)

    # Connected before the calls exist: each snapshot renders every pending card, and
    # 50 of them rendering a long queue at once outlast Daphne's handshake timeout.
    sockets = await asyncio.gather(*(open_socket(server, cookie) for cookie in cookies))
    listeners = [asyncio.create_task(removals.listen(socket)) for socket in sockets]
    calls = await asyncio.to_thread(pending_calls)
    operator = await asyncio.to_thread(Operator, server, cookies[0])
    latency_ms, slowest_ms, post_ms = [], [], []
    try:
        for n, (session_id, call_id) in enumerate(calls):
            began = time.perf_counter()
            await asyncio.to_thread(operator.approve, call_id)
            answered = time.perf_counter()
            await removals.everywhere(call_id, FRAGMENT_SECONDS)
            if n >= WARMUP_CALLS:
                arrived_ms = removals.latencies_ms(call_id, began)
                latency_ms += arrived_ms
                slowest_ms.append(max(arrived_ms))
                post_ms.append((answered - began) * 1000)
            await asyncio.to_thread(_wait_until_finished, session_id)
    finally:
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*(socket.close() for socket in sockets))
    return {
        "sockets": len(sockets),
        "calls": len(calls) - WARMUP_CALLS,
        "latency_ms": latency_ms,
        "slowest_socket_ms": slowest_ms,
        "post_ms": post_ms,
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["--probe", "sqlite"]:
        sys.exit("usage: python -m benchmarks.live --probe sqlite  (or: python -m benchmarks live)")
    print(json.dumps(_probe()))
