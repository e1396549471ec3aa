"""Redis, the channel layer between the server's worker and the pages' sockets, stopped
and started again (same port) while operators' pages are open and a session works.

The database is the truth and the channel layer only its echo: a step must neither fail
nor be lost while Redis is away, and once it is back the pages must show what happened
meanwhile and receive new pushes.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
import websockets
import websockets.sync.client
from django.conf import settings
from playwright.sync_api import expect
from websockets.sync.client import ClientConnection

from agentdash.live import groups, publisher
from agentdash.models import AgentSession
from agentdash.states import CallState, SessionStatus
from tests.e2e import scripts
from tests.e2e.server import free_port, session_cookie
from tests.e2e.test_approvals import call_card, queue_card, watch
from tests.faults.checks import assert_nothing_lost_or_doubled
from tests.faults.test_server_killed import RECONNECT_MS, live_status
from tests.live.conftest import PUSH_TIMEOUT as PUSH_SECONDS
from tests.live.conftest import redis_layer
from tests.runner.test_crash_safety import call_in, status_of, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.slow]

REDIS_SERVER = Path("/usr/bin/redis-server")
START_SECONDS = 10


class RedisProcess:
    """A redis-server of this test's own, on a loopback port it keeps across restarts."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            str(REDIS_SERVER),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "no"),
        ]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def redis_process(tmp_path) -> Iterator[RedisProcess]:
    if not REDIS_SERVER.exists():
        # Never a skip: Redis is part of the test setup, like Chromium.
        raise RuntimeError(f"{REDIS_SERVER} is missing: install the redis-server package")
    directory = tmp_path / "redis"
    directory.mkdir()
    process = RedisProcess(directory)
    process.start()
    yield process
    if process.process is not None and process.process.poll() is None:
        process.kill()


@pytest.fixture
def separate_worker() -> bool:
    """Whether steps run in a separate `agent worker` (which publishes through Redis
    from a loop of its own) rather than in the web server (which publishes on the loop
    its sockets run on). Tests parametrize it."""
    return False


@pytest.fixture
def server_environment(redis_process: RedisProcess, separate_worker: bool) -> dict[str, str]:
    return {
        "REDIS_URL": redis_process.url,
        "AGENTDASH_INPROCESS_WORKER": "0" if separate_worker else "1",
    }


@pytest.fixture
def workspaces(separate_worker: bool, server_process, redis_process, spawn_worker) -> Path:
    """Where the sessions' files are written: by the server's worker, or by a worker
    process of its own, started here, on the same Redis."""
    if not separate_worker:
        return server_process.server.workspaces
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("REDIS_URL", redis_process.url)
        # Set for the browser in this process (see conftest.py), not for the worker.
        environment.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
        spawn_worker()
    return settings.AGENTDASH_WORKSPACES_DIR


@pytest.mark.parametrize(
    "separate_worker", [False, True], ids=["worker in the server", "worker process"]
)
def test_steps_go_on_while_redis_is_away_and_the_pages_catch_up(
    workspaces, redis_process, open_page, operator, second_operator
):
    first = scripts.write_then_finish(operator, content="written while Redis was away\n")
    first_call = wait_for(lambda: call_in(first, CallState.PENDING_APPROVAL), "the first call")
    queue = watch(open_page(second_operator, "/approvals/"))
    session_page = watch(open_page(operator, f"/sessions/{first.pk}/"))
    card = queue_card(queue, first.pk)
    expect(card).to_be_visible()

    redis_process.kill()
    card.get_by_test_id("approve").click()
    # The decision and the step it set going are in the database, Redis or not.
    wait_for(lambda: status_of(first) == SessionStatus.COMPLETED, "the first session to end")
    redis_process.start()

    # The pages show what happened while the pushes could not reach them...
    for page in (queue, session_page):
        expect(live_status(page)).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
    expect(card).to_have_count(0)
    expect(call_card(session_page, first_call.pk)).to_have_attribute(
        "data-state", "succeeded", timeout=RECONNECT_MS
    )
    expect(session_page.get_by_test_id("session-header")).to_have_attribute(
        "data-status", "completed"
    )
    # ...and what happens now reaches them live.
    second = scripts.write_then_finish(operator, content="written once Redis was back\n")
    second_card = queue_card(queue, second.pk)
    expect(second_card).to_be_visible(timeout=RECONNECT_MS)
    second_card.get_by_test_id("approve").click()
    expect(second_card).to_have_count(0)
    wait_for(lambda: status_of(second) == SessionStatus.COMPLETED, "the second session to end")

    for session in (first, second):
        session = AgentSession.objects.get(pk=session.pk)
        [call] = session.tool_calls.all()
        assert call.state == CallState.SUCCEEDED
        assert (workspaces / str(session.pk) / "notes.md").exists()
        assert_nothing_lost_or_doubled(session, runs={call.call_id: 1})


def test_the_first_push_after_redis_restarted_arrives(
    server_process, redis_process, settings, operator
):
    """A process that publishes without serving sockets (`agent worker`, `agent decide`)
    keeps its Redis connections between pushes. After a restart of Redis the first push
    went out on a connection Redis had closed, failed, and was lost: a page that had
    reconnected, and taken its snapshot, before that change never showed it.

    This process publishes as those do: through the publisher's own loop, on the same
    Redis as the server."""
    settings.CHANNEL_LAYERS = {"default": redis_layer(redis_process.url)}
    server = server_process.server
    name, value = session_cookie(operator)
    headers = {"Cookie": f"{name}={value}", "Origin": server.url}

    def connect(sockets: ExitStack) -> ClientConnection:
        """A socket to the sessions list, its snapshot read; tried again, as htmx does,
        while the server refuses it."""
        deadline = time.monotonic() + RECONNECT_MS / 1000
        while True:
            try:
                socket = sockets.enter_context(
                    websockets.sync.client.connect(
                        server.ws_url("/ws/sessions/"), additional_headers=headers
                    )
                )
                socket.recv(timeout=10)  # the snapshot
                return socket
            except (websockets.InvalidStatus, websockets.ConnectionClosed):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def push_arrives(socket: ClientConnection, probe: str) -> None:
        publisher.send([(groups.SESSIONS, f'<p id="{probe}"></p>')])
        deadline = time.monotonic() + PUSH_SECONDS
        while probe not in socket.recv(timeout=max(deadline - time.monotonic(), 0.01)):
            pass

    with ExitStack() as sockets:
        socket = connect(sockets)
        push_arrives(socket, "before-the-restart")  # this process now holds a connection

        redis_process.kill()
        with pytest.raises(websockets.ConnectionClosed):
            socket.recv(timeout=10)  # the server lets go of sockets it can no longer feed
        redis_process.start()

        socket = connect(sockets)  # as the browser reconnects: its snapshot is taken now
        push_arrives(socket, "after-the-restart")


def test_the_first_page_to_connect_after_redis_restarted_is_served(
    server_process, redis_process, operator
):
    """The server's pooled Redis connections all died with Redis: the first socket to
    join a group after the restart met one of them and its handshake failed (500), so
    every page waited out a reconnect delay. The join is tried once more, on a fresh
    connection, as a push is."""
    server = server_process.server
    name, value = session_cookie(operator)
    headers = {"Cookie": f"{name}={value}", "Origin": server.url}
    url = server.ws_url("/ws/sessions/")

    with websockets.sync.client.connect(url, additional_headers=headers) as socket:
        socket.recv(timeout=10)  # the snapshot: the server now holds a Redis connection
        redis_process.kill()
        with pytest.raises(websockets.ConnectionClosed):
            socket.recv(timeout=10)
    redis_process.start()

    with websockets.sync.client.connect(url, additional_headers=headers) as socket:
        assert "session-rows" in socket.recv(timeout=10)
