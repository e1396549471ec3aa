"""Scale-out: a change made in another process reaches this process's sockets through Redis."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from channels.db import database_sync_to_async
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from agentdash.live import publisher
from agentdash.models import ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState
from tests.live.conftest import (
    REDIS_HOST,
    REDIS_PORT,
    receive_until,
    redis_answers,
    redis_layer,
)
from tests.subprocesses import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]

# A database of its own, so that the other process (which knows only REDIS_URL) and this
# one meet on the default prefix without meeting anyone else's development server.
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/9"


@pytest.fixture
def shared_redis(settings) -> None:
    if not redis_answers():
        pytest.skip(f"needs Redis at {REDIS_HOST}:{REDIS_PORT}")
    settings.CHANNEL_LAYERS = {"default": redis_layer(REDIS_URL)}


async def test_an_idle_socket_outlives_the_layers_blocking_read(
    open_socket, operator, shared_redis
):
    """A consumer waits on Redis in blocking pops of brpop_timeout seconds: a client read
    timeout no longer than that killed every idle socket's consumer (redis-py 8)."""
    socket = await open_socket("/ws/sessions/", operator)
    assert (await socket.connect())[0]
    await socket.receive_from()  # the snapshot

    await asyncio.sleep(RedisChannelLayer.brpop_timeout + 1.5)
    await database_sync_to_async(publisher.send)([("sessions", '<p id="probe">ok</p>')])

    # Other pushes may come first (sessions of other tests sharing this Redis database).
    await receive_until(socket, lambda html: 'id="probe"' in html)
    await socket.disconnect()


async def test_a_decision_made_by_the_command_line_leaves_the_browsers_queue(
    open_socket, operator, second_operator, run_queued_steps, shared_redis
):
    def pending_call() -> ToolCall:
        session = start_session(
            goal="Across processes",
            owner=operator,
            script=[
                [{"type": "tool_use", "name": "write_file", "input": {"path": "a", "content": ""}}]
            ],
        )
        run_queued_steps()
        return ToolCall.objects.get(session=session)

    call = await database_sync_to_async(pending_call)()
    socket = await open_socket("/ws/approvals/", second_operator)
    assert (await socket.connect())[0]
    assert f"queue-card-{call.pk}" in await socket.receive_from()

    environment = os.environ | {
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": database_url(),
        "AGENTDASH_WORKSPACES_DIR": str(settings.AGENTDASH_WORKSPACES_DIR),
    }
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "agent",
        "decide",
        str(call.pk),
        "--approve",
        "--user",
        operator.username,
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await command.communicate()
    assert command.returncode == 0, output.decode()

    removal = f'<div id="queue-card-{call.pk}" hx-swap-oob="delete"></div>'
    received = await receive_until(socket, lambda message: removal in message)
    assert removal in received[-1]
    state = await database_sync_to_async(lambda: ToolCall.objects.get(pk=call.pk).state)()
    assert state == CallState.APPROVED
    await socket.disconnect()
