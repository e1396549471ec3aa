"""Sockets as a browser opens them: through the project's ASGI application, with a real
session cookie and an Origin header, on the in-memory or the Redis channel layer."""

from __future__ import annotations

import asyncio
import runpy
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
ORIGIN = b"http://127.0.0.1"
# Long enough for a step of the runner on a loaded machine; only a failing test waits it out.
PUSH_TIMEOUT = 10.0


def redis_answers() -> bool:
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError:
        return False
    return True


def redis_layer(url: str, **config: str) -> dict:
    """The Redis channel layer exactly as settings.py configures it for REDIS_URL=`url`,
    with `config` added."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", url)
        layer = runpy.run_path(str(django_settings.BASE_DIR / "agentdash" / "settings.py"))[
            "CHANNEL_LAYERS"
        ]["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    layer["CONFIG"] |= config
    return layer


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def layer(request, settings) -> Iterator[str]:
    """Each test on a fresh channel layer of each kind (a Redis one under its own prefix)."""
    if request.param == "memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        yield request.param
        return
    if not redis_answers():
        pytest.skip(f"needs Redis at {REDIS_HOST}:{REDIS_PORT}")
    prefix = f"agentdash-test-{uuid.uuid4().hex[:12]}"
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    settings.CHANNEL_LAYERS = {"default": redis_layer(url, prefix=prefix)}
    yield request.param
    # Not the layer's flush(): it would close connections that belong to other loops.
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    if keys := list(client.scan_iter(match=f"{prefix}*")):
        client.delete(*keys)
    client.close()


@pytest.fixture
def application(settings):
    """The project's ASGI application, without starting a step worker in the test process."""
    settings.AGENTDASH_INPROCESS_WORKER = False
    from agentdash.asgi import application

    return application


def cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return session_cookie(client)


def session_cookie(client: Client) -> bytes:
    """The Cookie header of `client`'s session, as its browser would send it."""
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.fixture
def open_socket(application) -> Callable[..., Awaitable[WebsocketCommunicator]]:
    """A socket for `path`, as `user` (None: anonymous, unless `cookie` is a session's),
    from `origin`; not yet connected."""

    async def open_(
        path: str, user=None, *, origin: bytes | None = ORIGIN, cookie: bytes | None = None
    ):
        headers = [(b"host", b"127.0.0.1")]
        if origin is not None:
            headers.append((b"origin", origin))
        if user is not None:
            cookie = await database_sync_to_async(cookie_for)(user)
        if cookie is not None:
            headers.append((b"cookie", cookie))
        return WebsocketCommunicator(application, path, headers=headers)

    return open_


async def receive_until(
    communicator: WebsocketCommunicator, found: Callable[[str], bool]
) -> list[str]:
    """Every message up to and including the first one that `found` accepts."""
    received: list[str] = []
    async with asyncio.timeout(PUSH_TIMEOUT):
        while True:
            message = await communicator.receive_from(PUSH_TIMEOUT)
            received.append(message)
            if found(message):
                return received
