"""Hostile clients on the live sockets: garbage, huge and out-of-order messages on every
consumer, anonymous and logged in. The consumer never crashes, acts on nothing a client
sends, closes a socket whose message is too big (4413) and keeps serving everyone else.
The last test goes through a real Daphne server, whose own size limit (1 MiB) is what
a 2 MB frame meets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from agentdash.live import groups, publisher
from agentdash.live.consumers import (
    CLOSE_LOGIN_REQUIRED,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NOT_FOUND,
)
from agentdash.models import AgentSession
from agentdash.sessions import start_session

pytestmark = pytest.mark.django_db(transaction=True)

DAPHNE_TOO_BIG = 1009  # RFC 6455's "message too big", as Daphne (autobahn) sends it
NESTED = "[" * 100_000 + "]" * 100_000
GARBAGE: list[dict[str, Any]] = [
    {"text_data": "not json at all {"},
    {"text_data": ""},
    {"text_data": "\x00\x01\x02 \ufffd \U0001f4a5 \u202e"},
    {"bytes_data": b"\x00\xff\xfe\x80 binary"},
    {"bytes_data": b""},
    {"text_data": NESTED[:200_000]},  # deep nesting, under the size limit
    {"text_data": json.dumps({"type": "subscribe", "group": "approvals"})},
    {"text_data": json.dumps({"type": "subscribe", "group": "approvals"})},  # again
    # A client naming a consumer's handler must not reach it: text is never dispatched.
    {"text_data": json.dumps({"type": "live.html", "html": "<p id='forged'>owned</p>"})},
    {"text_data": json.dumps({"type": "websocket.disconnect", "code": 1000})},
    {"text_data": json.dumps({"HEADERS": {"HX-Trigger": "decide"}, "action": "approve"})},
]


@pytest.fixture
def a_session(operator) -> Callable[[], Any]:
    def make() -> AgentSession:
        return start_session(goal="Be poked at", owner=operator, script=[[]])

    return database_sync_to_async(make)


async def paths_to_try(a_session) -> list[tuple[str, str]]:
    """Every consumer: (its path, the group its logged-in operators hear)."""
    session = await a_session()
    return [
        ("/ws/sessions/", groups.SESSIONS),
        (f"/ws/sessions/{session.pk}/", groups.session(session.pk)),
        ("/ws/approvals/", groups.APPROVALS),
    ]


async def send_raw(socket: WebsocketCommunicator, message: dict[str, Any]) -> None:
    """One frame as the server hands it over (the communicator's send_to refuses empty
    frames, which a real client can send)."""
    if "text_data" in message:
        await socket.send_input({"type": "websocket.receive", "text": message["text_data"]})
    else:
        await socket.send_input({"type": "websocket.receive", "bytes": message["bytes_data"]})


async def push(group: str, marker: str) -> None:
    html = f'<p id="{marker}">pushed</p>'
    await get_channel_layer().group_send(group, {"type": publisher.MESSAGE_TYPE, "html": html})


# Words of the garbage above that no fragment of the server's ever holds: a message
# holding one would be an echo of what the client sent.
ECHOES = ("forged", "not json at all", "too early", "operators-only")


async def drain(socket: WebsocketCommunicator, seconds: float) -> list[str]:
    """Whatever arrives within `seconds` (pushes of the sessions other tests' steps
    changed may still be on their way: the publisher renders on its own thread)."""
    received = []
    while not await socket.receive_nothing(seconds):
        received.append(await socket.receive_from())
    return received


async def still_serving(socket: WebsocketCommunicator, group: str) -> str:
    """The socket is open and still gets the group's pushes, and it was sent nothing
    that echoes the client. Returns the probe's marker."""
    marker = f"probe-{time.monotonic_ns()}"
    await push(group, marker)
    received = []
    async with asyncio.timeout(10):
        while not received or marker not in received[-1]:
            received.append(await socket.receive_from(10))
    for message in received:
        assert not any(echo in message for echo in ECHOES), message
    return marker


async def assert_closed_with(socket: WebsocketCommunicator, code: int) -> None:
    output = await socket.receive_output(5)
    assert output == {"type": "websocket.close", "code": code}


async def finished_cleanly(socket: WebsocketCommunicator) -> None:
    """The browser goes: the consumer ends without an exception (wait() re-raises one)."""
    await socket.send_input({"type": "websocket.disconnect", "code": 1001})
    await socket.wait(5)


async def test_garbage_is_ignored_and_the_socket_keeps_serving(
    open_socket, operator, a_session, layer
):
    for path, group in await paths_to_try(a_session):
        socket = await open_socket(path, operator)
        assert (await socket.connect())[0]
        await socket.receive_from()  # the snapshot

        for message in GARBAGE:
            await send_raw(socket, message)

        await still_serving(socket, group)
        await finished_cleanly(socket)


async def test_a_viewer_sending_garbage_hears_only_the_read_only_pushes(
    open_socket, viewer, a_session, layer
):
    for path, group in await paths_to_try(a_session):
        readonly = (
            group if group == groups.SESSIONS else groups.for_audience(group, can_decide=False)
        )
        socket = await open_socket(path, viewer)
        assert (await socket.connect())[0]
        await socket.receive_from()
        for message in GARBAGE:
            await send_raw(socket, message)

        if readonly != group:  # a page with decision controls: operators' pushes stay theirs
            await push(group, "operators-only")
        await still_serving(socket, readonly)
        await finished_cleanly(socket)


async def test_anonymous_garbage_meets_a_closed_door(open_socket, a_session, layer):
    for path, _ in await paths_to_try(a_session):
        socket = await open_socket(path, user=None)
        assert (await socket.connect())[0]
        await assert_closed_with(socket, CLOSE_LOGIN_REQUIRED)

        for message in GARBAGE:
            await send_raw(socket, message)

        assert await socket.receive_nothing(0.2)
        await finished_cleanly(socket)


OVER_THE_LIMIT = django_settings.AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES + 1


@pytest.mark.parametrize(
    "message",
    [{"text_data": "x" * OVER_THE_LIMIT}, {"bytes_data": b"\x00" * OVER_THE_LIMIT}],
    ids=["text", "binary"],
)
async def test_a_message_over_the_limit_closes_that_socket_only(
    open_socket, operator, a_session, layer, message
):
    bystander = await open_socket("/ws/approvals/", operator)
    assert (await bystander.connect())[0]
    await bystander.receive_from()
    for path, _ in await paths_to_try(a_session):
        socket = await open_socket(path, operator)
        assert (await socket.connect())[0]
        await socket.receive_from()

        await send_raw(socket, message)

        await assert_closed_with(socket, CLOSE_MESSAGE_TOO_BIG)
        await socket.send_to(text_data="after the close")  # out of order: ignored
        await finished_cleanly(socket)
    await still_serving(bystander, groups.APPROVALS)
    await finished_cleanly(bystander)


async def test_the_limit_is_a_setting(open_socket, operator, settings, layer):
    settings.AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES = 10
    socket = await open_socket("/ws/sessions/", operator)
    assert (await socket.connect())[0]
    await socket.receive_from()

    await socket.send_to(text_data="0123456789")  # at the limit: ignored
    await still_serving(socket, groups.SESSIONS)
    await socket.send_to(text_data="0123456789!")

    await assert_closed_with(socket, CLOSE_MESSAGE_TOO_BIG)
    await finished_cleanly(socket)


async def test_messages_before_the_handshake_are_ignored(open_socket, operator, a_session, layer):
    for path, group in await paths_to_try(a_session):
        socket = await open_socket(path, operator)
        # The client speaks before the server has accepted (or even seen) the handshake.
        await socket.send_input({"type": "websocket.receive", "text": "too early"})
        await socket.send_input({"type": "websocket.receive", "bytes": b"\xff" * 10})

        assert (await socket.connect())[0]
        await socket.receive_from()  # the snapshot, as usual
        await still_serving(socket, group)
        await finished_cleanly(socket)


# "000...01" reads as session 1, which does not exist here either.
@pytest.mark.parametrize("session_id", ["0", "9" * 30, "9" * 200, "0" * 50 + "1"])
async def test_a_session_id_that_cannot_exist_is_refused_not_crashed(
    open_socket, operator, layer, session_id
):
    socket = await open_socket(f"/ws/sessions/{session_id}/", operator)

    accepted, _ = await socket.connect()

    assert accepted
    await assert_closed_with(socket, CLOSE_NOT_FOUND)
    await finished_cleanly(socket)


async def test_a_storm_of_repeated_subscriptions_leaves_one_working_socket(
    open_socket, operator, layer
):
    """A client reconnecting as fast as it can: each socket joins and leaves its group;
    the one that stays open gets each push once."""
    for _ in range(15):
        socket = await open_socket("/ws/approvals/", operator)
        assert (await socket.connect())[0]
        await socket.receive_from()
        await socket.disconnect()
    survivor = await open_socket("/ws/approvals/", operator)
    assert (await survivor.connect())[0]
    await survivor.receive_from()

    marker = await still_serving(survivor, groups.APPROVALS)

    assert not [message for message in await drain(survivor, 0.3) if marker in message]
    await finished_cleanly(survivor)


# --- through a real Daphne server -----------------------------------------------------------


@pytest.fixture
def daphne(tmp_path, operator):
    from tests.e2e.server import serving
    from tests.subprocesses import database_url

    with serving(var_dir=tmp_path, database_url=database_url()) as server:
        yield server


def real_socket(server, path: str, user):
    from websockets.sync.client import connect

    from tests.e2e.server import session_cookie

    name, value = session_cookie(user)
    return connect(
        server.ws_url(path),
        origin=server.url,
        additional_headers={"Cookie": f"{name}={value}"},
        open_timeout=10,
        close_timeout=5,
    )


def send_and_wait(socket, data: str | bytes) -> None:
    """Sends one message and waits for the next. Daphne may fail the connection while
    the client is still sending a refused frame (the send meets a reset) or after it
    (the recv meets the close): either raises ConnectionClosed."""
    socket.send(data)
    socket.recv(timeout=10)


@pytest.mark.slow
def test_daphne_refuses_a_2_mb_frame_and_keeps_serving(daphne, operator):
    import http.client

    from websockets.exceptions import ConnectionClosed

    with real_socket(daphne, "/ws/approvals/", operator) as bystander:
        bystander.recv(timeout=10)  # the snapshot
        with real_socket(daphne, "/ws/sessions/", operator) as hostile:
            hostile.recv(timeout=10)
            with pytest.raises(ConnectionClosed) as closed:
                send_and_wait(hostile, b"\x00" * (2 * 1024 * 1024))
        # Daphne fails the connection (1009, though the close frame is often lost while
        # the client is still sending); never a normal close.
        received = closed.value.rcvd
        assert received is None or received.code == DAPHNE_TOO_BIG

        with real_socket(daphne, "/ws/sessions/", operator) as middling:
            middling.recv(timeout=10)
            with pytest.raises(ConnectionClosed) as closed:
                send_and_wait(
                    middling, "x" * (django_settings.AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES + 1)
                )
        # Just over our limit: `serve` gives Daphne the same limit, so Daphne refuses it
        # before buffering it (the consumer's own 4413 is tested without Daphne above).
        received = closed.value.rcvd
        assert received is None or received.code == DAPHNE_TOO_BIG, daphne.log.read_text()

        for message in GARBAGE:
            data = message.get("text_data", message.get("bytes_data"))
            bystander.send(data)
        bystander.ping().wait(10)  # still open, still answering
        with real_socket(daphne, "/ws/approvals/", operator) as newcomer:
            assert newcomer.recv(timeout=10)  # a newcomer still gets its snapshot

    connection = http.client.HTTPConnection("127.0.0.1", daphne.port, timeout=10)
    connection.request("GET", "/login/")
    assert connection.getresponse().status == 200
    log = daphne.log.read_text()
    assert "Traceback" not in log, log
