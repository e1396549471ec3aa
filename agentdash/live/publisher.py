"""Pushes every change to every open page, once the change has committed.

    changed(session_id, call_id=..., message_id=...)   # inside the changing transaction
    publish_text(session_id, text)                       # a reply's text as it streams

`changed()` waits for the commit (a page must never show a state that then rolls
back), then hands the change to this process's publisher thread, which renders the
fragments once per audience and sends the same HTML to each group through the channel
layer; the channel layer fans it out to the sockets.

Why a thread of its own. Rendering a change costs more than the step that caused it
(several queries and templates), and with pages open the step worker spent most of its
time rendering. The step now only queues the change; the publisher renders, and changes
that pile up meanwhile are coalesced: a session changed five times in one step is
rendered once, each call and message as it is by then. Pages ignore a fragment older
than the one they show (`data-rev`), so late or merged pushes are harmless.

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
import atexit
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import close_old_connections, connection, transaction
from django.http import HttpRequest

from agentdash.live import fragments, groups

logger = logging.getLogger(__name__)

# A send only queues a message (in memory or in Redis): this is a stuck loop or Redis.
SEND_TIMEOUT_SECONDS = 5.0
MESSAGE_TYPE = "live.html"  # handled by LiveConsumer.live_html
LOGOUT_TYPE = "live.logout"  # handled by LiveConsumer.live_logout

_server_loop: asyncio.AbstractEventLoop | None = None
_own_loop: asyncio.AbstractEventLoop | None = None
_own_loop_lock = threading.Lock()
# Tasks started on the loop from its own thread, kept until done (asyncio holds weak refs).
_pending: set[asyncio.Task[None]] = set()


def changed(session_id: int, *, call_id: int | None = None, message_id: int | None = None) -> None:
    """Session `session_id` (and, when given, its call or new message) changed in the
    current transaction: re-render what shows it and push it once the transaction commits.

    Outside a transaction the change is queued at once.
    """

    def queue() -> None:
        if _anyone_listening():
            _publisher.add(session_id, call_id=call_id, message_id=message_id)

    transaction.on_commit(queue, robust=True)


@dataclass
class _SessionChanges:
    # dicts as ordered sets: a call or message is rendered once, in order of first change
    call_ids: dict[int, None] = field(default_factory=dict)
    message_ids: dict[int, None] = field(default_factory=dict)


class _Publisher:
    """Renders and sends queued changes on one daemon thread, coalesced per session."""

    def __init__(self) -> None:
        self._changed: dict[int, _SessionChanges] = {}
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._publishing = False

    def add(self, session_id: int, *, call_id: int | None, message_id: int | None) -> None:
        with self._condition:
            changes = self._changed.setdefault(session_id, _SessionChanges())
            if call_id is not None:
                changes.call_ids[call_id] = None
            if message_id is not None:
                changes.message_ids[message_id] = None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="agentdash-live-renderer", daemon=True
                )
                self._thread.start()
            self._condition.notify_all()

    def flush(self, timeout: float = SEND_TIMEOUT_SECONDS) -> bool:
        """Wait until every queued change is sent: whether that happened within `timeout`."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._changed and not self._publishing, timeout
            )

    def _run(self) -> None:
        # Nothing may end this loop: a dead publisher would silence every page for good.
        while True:
            batch = self._next_batch()
            try:
                close_old_connections()  # one that broke while publishing the last batch
                for session_id, changes in batch.items():
                    self._publish(session_id, changes)
            except Exception:
                logger.exception("could not publish %d session(s)' live updates", len(batch))
            finally:
                with self._condition:
                    self._publishing = False
                    self._condition.notify_all()

    def _publish(self, session_id: int, changes: _SessionChanges) -> None:
        try:
            for pushes in fragments.change(
                session_id,
                call_ids=list(changes.call_ids),
                message_ids=list(changes.message_ids),
            ):
                send(pushes)
        except Exception:
            logger.exception("could not render the live update of session %s", session_id)

    def _next_batch(self) -> dict[int, _SessionChanges]:
        """Every change queued so far, waiting for one if there is none."""
        with self._condition:
            if self._changed:
                batch, self._changed = self._changed, {}
                self._publishing = True
                return batch
        # Idle: give the connection back rather than hold it between bursts (a test
        # database cannot be dropped while another connection is open).
        try:
            connection.close()
        except Exception:
            logger.exception("could not close the live publisher's database connection")
        with self._condition:
            while not self._changed:
                self._condition.wait()
            batch, self._changed = self._changed, {}
            self._publishing = True
            return batch


_publisher = _Publisher()


def flush(timeout: float = SEND_TIMEOUT_SECONDS) -> bool:
    """Wait until every change queued so far is pushed: whether it was, within `timeout`."""
    return _publisher.flush(timeout)


# A command or worker that exits right after a change still pushes it (the thread is a
# daemon: atexit runs while it is still alive).
atexit.register(flush)


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


def logged_out(sender: object, request: HttpRequest | None, **kwargs: object) -> None:
    """Close the sockets of the pages this login opened (user_logged_out's receiver): a
    page must not go on showing what only someone logged in may see. The same user's
    other logins keep theirs."""
    session = getattr(request, "session", None)
    group = groups.login(session) if session is not None else None
    if group is not None and _anyone_listening():
        _deliver([(group, {"type": LOGOUT_TYPE})])


def send(pushes: list[tuple[str, str]]) -> None:
    """Send each (group, html) in order, from any thread."""
    _deliver([(group, {"type": MESSAGE_TYPE, "html": html}) for group, html in pushes])


def _deliver(messages: list[tuple[str, dict[str, str]]]) -> None:
    """Send each (group, message) in order, from any thread."""
    if not messages:
        return
    loop = _sending_loop()
    coroutine = _group_send_all(messages)
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
        logger.exception("could not push %d live update(s)", len(messages))


async def _group_send_all(messages: list[tuple[str, dict[str, str]]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group, message in messages:
        try:
            await with_one_retry(partial(layer.group_send, group, message), f"pushing to {group}")
        except Exception as error:
            # Redis is still away: the pages catch up when their sockets reconnect; the
            # other groups may still be reached.
            logger.warning("could not push to %s: %s", group, error)


async def with_one_retry(operation: Callable[[], Awaitable[None]], what: str) -> None:
    """Run a channel-layer operation and, if it fails, once more.

    After Redis restarts, each pooled connection fails once ("Connection closed by
    server") before the pool replaces it: the second try goes out on a new one rather
    than lose a push or refuse a page. A second failure is raised: Redis is still away."""
    try:
        await operation()
    except Exception as error:
        logger.info("%s failed (%s); trying once more", what, error)
        await operation()


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
