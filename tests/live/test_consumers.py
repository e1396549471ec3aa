"""The live pages' websockets: who may connect, the snapshot, and what each change pushes."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import AsyncClient, Client
from django.urls import reverse

from agentdash.live import publisher
from agentdash.live.consumers import CLOSE_LOGIN_REQUIRED, CLOSE_NOT_FOUND
from agentdash.models import ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState
from tests.live.conftest import PUSH_TIMEOUT, receive_until, session_cookie
from tests.web.html import parse

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = "<script>alert('pwned')</script>"


def tool_use(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def text(words: str) -> dict[str, Any]:
    return {"type": "text", "text": words}


@pytest.fixture
def waiting_call(operator, run_queued_steps):
    """A session of `operator`'s stopped on a write_file call (sync: call it in a thread)."""

    def make(goal: str = "Keep notes") -> ToolCall:
        session = start_session(
            goal=goal,
            owner=operator,
            script=[
                [text("Writing."), tool_use("write_file", "w1", path="n.md", content="hi")],
                [text("Done.")],
            ],
        )
        run_queued_steps()
        return ToolCall.objects.get(session=session)

    return database_sync_to_async(make)


async def connected(open_socket, path: str, user):
    """A socket that connected and received its snapshot; returns it and the snapshot."""
    socket = await open_socket(path, user)
    accepted, _ = await socket.connect()
    assert accepted
    return socket, await socket.receive_from()


async def test_an_anonymous_socket_is_closed_with_a_clear_code(open_socket, layer):
    socket = await open_socket("/ws/approvals/", user=None)

    accepted, _ = await socket.connect()
    closing = await socket.receive_output()

    assert accepted  # accepted so that the browser learns the code, then closed at once
    assert closing == {"type": "websocket.close", "code": CLOSE_LOGIN_REQUIRED}


@pytest.mark.parametrize("origin", [b"http://evil.example", None])
async def test_a_foreign_or_missing_origin_is_refused(open_socket, operator, origin):
    socket = await open_socket("/ws/approvals/", operator, origin=origin)

    accepted, _ = await socket.connect()

    assert not accepted


async def test_an_unknown_session_closes_the_socket(open_socket, operator, layer):
    socket = await open_socket("/ws/sessions/999/", operator)

    accepted, _ = await socket.connect()
    closing = await socket.receive_output()

    assert accepted
    assert closing == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}


async def test_a_session_socket_starts_with_a_snapshot_of_the_page(
    open_socket, operator, waiting_call, layer
):
    call = await waiting_call(goal=f"Notes {HOSTILE}")

    socket, snapshot = await connected(open_socket, f"/ws/sessions/{call.session_id}/", operator)

    fragment = parse(snapshot)
    ids = [element.attrs["id"] for element in fragment.top_level()]
    assert ids == [f"session-header-{call.session_id}", "transcript", f"stream-{call.session_id}"]
    assert all(e.attrs["hx-swap-oob"] == "true" for e in fragment.top_level())
    header = fragment.by_id(f"session-header-{call.session_id}")
    assert header.attrs["data-status"] == "waiting_approval"
    assert fragment.by_id(f"call-{call.pk}").one(testid="approve")
    assert HOSTILE not in snapshot
    assert "&lt;script&gt;" in snapshot
    await socket.disconnect()


async def test_a_decision_takes_the_card_out_of_every_other_queue(
    open_socket, operator, second_operator, viewer, waiting_call, layer
):
    call = await waiting_call()
    oscar, snapshot = await connected(open_socket, "/ws/approvals/", second_operator)
    victor, readonly_snapshot = await connected(open_socket, "/ws/approvals/", viewer)
    assert parse(snapshot).by_id(f"queue-card-{call.pk}").one(testid="approve")
    assert not parse(readonly_snapshot).by_id(f"queue-card-{call.pk}").all(testid="approve")

    olivia = AsyncClient()
    await olivia.aforce_login(operator)
    response = await olivia.post(
        reverse("decide-call", args=[call.pk]),
        {"action": "approve", "card": "queue"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200

    removal = f'<div id="queue-card-{call.pk}" hx-swap-oob="delete"></div>'
    for socket in (oscar, victor):
        received = await receive_until(socket, lambda message: removal in message)
        assert removal in received[-1]
        await socket.disconnect()


async def test_a_new_pending_call_is_appended_to_the_queue(
    open_socket, operator, viewer, waiting_call, layer
):
    olivia, snapshot = await connected(open_socket, "/ws/approvals/", operator)
    victor, _ = await connected(open_socket, "/ws/approvals/", viewer)
    assert not parse(snapshot).by_id("queue-list").all(testid="queue-card")

    call = await waiting_call()

    for socket, can_decide in ((olivia, True), (victor, False)):
        messages = await receive_until(socket, lambda message: f"queue-card-{call.pk}" in message)
        wrapper = parse(messages[-1]).top_level()[0]
        assert wrapper.attrs["hx-swap-oob"] == "beforeend:#queue-list"
        assert bool(wrapper.all(testid="approve")) is can_decide
        await socket.disconnect()


async def test_the_reply_streams_to_the_session_page_as_text(
    open_socket, operator, run_queued_steps, layer
):
    session = await database_sync_to_async(start_session)(
        goal="Say hello", owner=operator, script=[[text(f"Hello there {HOSTILE} and bye.")]]
    )
    socket, _ = await connected(open_socket, f"/ws/sessions/{session.pk}/", operator)

    await database_sync_to_async(run_queued_steps)()
    messages = await receive_until(socket, lambda message: 'id="message-' in message)

    deltas = [m for m in messages if f'hx-swap-oob="beforeend:#stream-{session.pk}"' in m]
    assert len(deltas) >= 5  # word by word, as the scripted model writes
    streamed = "".join(parse(delta).raw_text for delta in deltas)
    assert streamed.startswith("Hello there <script>")  # as text: it was escaped on the wire
    assert all(HOSTILE not in delta for delta in deltas)
    stored = parse(messages[-1])
    # The stored message joins the transcript and the streaming area is emptied.
    assert stored.one(testid="message").text.startswith("Model")
    assert stored.by_id(f"stream-{session.pk}").children == []
    await socket.disconnect()


async def test_garbage_from_the_browser_is_ignored(open_socket, operator, layer):
    session = await database_sync_to_async(start_session)(goal="Ignore me", owner=operator)
    # The new session's own push, which the publisher sends from its thread, comes first:
    # what arrives after the garbage could only be an answer to it.
    assert await database_sync_to_async(publisher.flush)()
    socket, _ = await connected(open_socket, f"/ws/sessions/{session.pk}/", operator)

    await socket.send_to(text_data="not json {")
    await socket.send_to(text_data='{"type": "live.html", "html": "<b>forged</b>"}')
    await socket.send_to(bytes_data=b"\x00\xff" * 50_000)
    await socket.send_json_to({"action": "approve", "call": 1})

    assert await socket.receive_nothing(timeout=0.2)
    # Still alive: the next push arrives.
    await database_sync_to_async(publisher.send)(
        [(f"session-{session.pk}", '<p id="probe" hx-swap-oob="true">ok</p>')]
    )
    assert "probe" in await socket.receive_from()
    await socket.disconnect()


async def test_a_push_made_on_the_servers_own_loop_is_delivered(open_socket, operator, layer):
    socket, _ = await connected(open_socket, "/ws/sessions/", operator)

    publisher.send([("sessions", '<p id="probe" hx-swap-oob="true">ok</p>')])

    assert "probe" in await socket.receive_from()
    await socket.disconnect()


async def test_the_sessions_list_gets_new_sessions(open_socket, viewer, operator, layer):
    socket, snapshot = await connected(open_socket, "/ws/sessions/", viewer)
    assert parse(snapshot).by_id("session-rows").attrs["hx-swap-oob"] == "true"

    session = await database_sync_to_async(start_session)(goal="Brand new", owner=operator)

    message = await socket.receive_from()
    row = parse(message).top_level()[0]
    assert row.attrs["hx-swap-oob"] == "afterbegin:#session-rows"
    assert row.by_id(f"session-row-{session.pk}").attrs["data-status"] == "queued"
    await socket.disconnect()


async def test_pending_calls_show_no_controls_to_a_viewer_of_the_session(
    open_socket, operator, viewer, waiting_call, layer
):
    call = await waiting_call()
    path = f"/ws/sessions/{call.session_id}/"
    olivia, _ = await connected(open_socket, path, operator)
    victor, snapshot = await connected(open_socket, path, viewer)
    assert parse(snapshot).by_id(f"call-{call.pk}").one(testid="readonly-note")

    await database_sync_to_async(ToolCall.objects.filter(pk=call.pk).update)(
        state=CallState.PENDING_APPROVAL
    )  # no change of state: push the same card again
    await database_sync_to_async(publisher.changed)(call.session_id, call_id=call.pk)

    for socket, can_decide in ((olivia, True), (victor, False)):
        card = parse(await socket.receive_from()).by_id(f"call-{call.pk}")
        assert bool(card.all(testid="approve")) is can_decide
        await socket.disconnect()


def cycle_key(browser: Client) -> None:
    session = browser.session
    session.cycle_key()
    browser.cookies[settings.SESSION_COOKIE_NAME] = session.session_key


async def test_logging_out_closes_that_logins_sockets_and_no_other(open_socket, operator, layer):
    browser = Client()
    await database_sync_to_async(browser.force_login)(operator)
    page = await open_socket("/ws/approvals/", cookie=session_cookie(browser))
    assert (await page.connect())[0]
    await page.receive_from()  # the snapshot
    other_browser, _ = await connected(open_socket, "/ws/approvals/", operator)
    # The session's key changes while the login goes on, as a password change makes it
    # (update_session_auth_hash): the page opened before is still this login's.
    await database_sync_to_async(cycle_key)(browser)

    await database_sync_to_async(browser.post)(reverse("logout"))

    closing = await page.receive_output(PUSH_TIMEOUT)
    assert closing == {"type": "websocket.close", "code": CLOSE_LOGIN_REQUIRED}
    assert await other_browser.receive_nothing(timeout=0.5)
    await other_browser.disconnect()
