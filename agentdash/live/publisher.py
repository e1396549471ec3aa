"""Pushes every change to every open page, once the change has committed.

    changed(session_id, call_id=..., message_id=...)   # inside the changing transaction
    publish_text(session_id, text)                       # a reply's text as it streams

`changed()` waits for the commit (a page must never show a state that then rolls
back), then renders the fragments once per audience and sends the same HTML to each
group through the channel layer; the channel layer fans it out to the sockets.

Which event loop sends. The in-memory channel layer keeps asyncio queues that belong
to the loop of the server its consumers run on, and is not thread-safe: a worker thread
(the in-process step worker, a request's sync thread) must hand the send to that loop.
Consumers register it with `bind_loop()` when they connect. Where no consumer ever
connected (a separate worker process, publishing through Redis), a private loop in a
daemon thread sends instead, keeping its Redis connections open between messages.

Sends from one thread are made in order: the thread waits for each (briefly: a send
only queues the message). A failure to publish is logged and never breaks the change
that caused it: the page catches up when its socket reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from agentdash.live import fragments, groups

logger = logging.getLogger(__name__)

# A send only queues a message (in memory or in Redis): this is a stuck loop or Redis.
SEND_TIMEOUT_SECONDS = 5.0
MESSAGE_TYPE = "live.html"  # handled by LiveConsumer.live_html

_server_loop: asyncio.AbstractEventLoop | None = None
_own_loop: asyncio.AbstractEventLoop | None = None
_own_loop_lock = threading.Lock()
# Tasks started on the loop from its own thread, kept until done (asyncio holds weak refs).
_pending: set[asyncio.Task[None]] = set()


def changed(session_id: int, *, call_id: int | None = None, message_id: int | None = None) -> None:
    """Session `session_id` (and, when given, its call or new message) changed in the
    current transaction: re-render what shows it and push it once the transaction commits.

    Outside a transaction the push happens at once.
    """

    def publish() -> None:
        if not _anyone_listening():
            return
        for pushes in fragments.change(session_id, call_id=call_id, message_id=message_id):
            send(pushes)

    transaction.on_commit(publish, robust=True)


def publish_text(session_id: int, text: str) -> None:
    """Append a piece of the reply the model is writing to the session's pages.

    Passed to SessionRunner as its `on_text` callback; nothing is stored."""
    if not _anyone_listening():
        return
    html = fragments.text_delta(session_id, text)
    topic = groups.session(session_id)
    send([(groups.for_audience(topic, can_decide=flag), html) for flag in (True, False)])


def _anyone_listening() -> bool:
    """Whether a push could reach a page. Rendering costs more than the step that caused
    it, so a process whose in-memory layer has no socket in any group (a benchmark, a
    command, a server nobody has open) skips it. Through Redis, other processes' sockets
    cannot be seen from here: always push."""
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        return layer is not None
    try:
        return any(layer.groups.values())
    except RuntimeError:  # the server's loop changed the groups meanwhile: someone is there
        return True


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Send on `loop` from now on: the loop the websocket consumers of this process run on."""
    global _server_loop
    _server_loop = loop


def send(pushes: list[tuple[str, str]]) -> None:
    """Send each (group, html) in order, from any thread."""
    if not pushes:
        return
    loop = _sending_loop()
    coroutine = _group_send_all(pushes)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        # Called on the loop itself: it cannot wait for its own work.
        task = loop.create_task(coroutine)
        _pending.add(task)
        task.add_done_callback(_finished)
        return
    try:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(SEND_TIMEOUT_SECONDS)
    except Exception:
        logger.exception("could not push %d live update(s)", len(pushes))


async def _group_send_all(pushes: list[tuple[str, str]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group, html in pushes:
        await layer.group_send(group, {"type": MESSAGE_TYPE, "html": html})


def _finished(task: asyncio.Task[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("could not push a live update", exc_info=error)


def _sending_loop() -> asyncio.AbstractEventLoop:
    server = _server_loop
    if server is not None and server.is_running():
        return server
    return _private_loop()


def _private_loop() -> asyncio.AbstractEventLoop:
    global _own_loop
    with _own_loop_lock:
        if _own_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="agentdash-live-publisher", daemon=True
            ).start()
            _own_loop = loop
        return _own_loop
