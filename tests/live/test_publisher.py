"""The publisher thread: changes that pile up while it renders are pushed once."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from agentdash.live import publisher
from agentdash.models import ToolCall
from tests.governance.helpers import paused_on, tool_use
from tests.web.html import parse

pytestmark = pytest.mark.django_db(transaction=True)


async def test_changes_of_one_session_that_pile_up_are_rendered_once(
    layer, open_socket, operator, run_queued_steps
):
    calls: list[ToolCall] = await database_sync_to_async(paused_on)(
        run_queued_steps,
        tool_use("write_file", "w1", path="a.txt", content="a"),
        tool_use("write_file", "w2", path="b.txt", content="b"),
    )
    session_id = calls[0].session_id
    socket = await open_socket(f"/ws/sessions/{session_id}/", operator)
    assert (await socket.connect())[0]
    await socket.receive_from()  # the snapshot

    def change_each_call_while_the_publisher_is_held_back() -> None:
        # The publisher cannot take its next batch while its condition is held.
        with publisher._publisher._condition:
            for call in calls:
                publisher.changed(session_id, call_id=call.pk)

    await database_sync_to_async(change_each_call_while_the_publisher_is_held_back)()

    pushed = parse(await socket.receive_from())
    for call in calls:
        pushed.by_id(f"call-{call.pk}")  # both cards, in one message
    assert len(pushed.all(id=f"session-header-{session_id}")) == 1
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


async def test_the_publisher_outlives_a_failure_around_its_batch(
    layer, open_socket, operator, run_queued_steps, monkeypatch
):
    """A dead publisher thread would silence every page: a batch that fails outside the
    rendering (here the connection check) is logged, and the next change still arrives."""
    calls: list[ToolCall] = await database_sync_to_async(paused_on)(
        run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a")
    )
    session_id = calls[0].session_id
    socket = await open_socket(f"/ws/sessions/{session_id}/", operator)
    assert (await socket.connect())[0]
    await socket.receive_from()  # the snapshot

    failures = iter([RuntimeError("the database went away")])

    def close_old_connections() -> None:
        if (failure := next(failures, None)) is not None:
            raise failure

    monkeypatch.setattr(publisher, "close_old_connections", close_old_connections)
    await database_sync_to_async(publisher.changed)(session_id, call_id=calls[0].pk)
    assert await database_sync_to_async(publisher.flush)()
    await database_sync_to_async(publisher.changed)(session_id, call_id=calls[0].pk)

    pushed = parse(await socket.receive_from())
    pushed.by_id(f"call-{calls[0].pk}")
    await socket.disconnect()
