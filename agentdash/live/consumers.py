"""The websocket consumers behind the live pages.

Each page opens one socket (htmx's websocket extension, `ws-connect`) and the consumer:
  - refuses anyone not logged in: it accepts, then closes with code 4401 at once, so
    the browser learns why and htmx does not retry (it retries 1006, 1011-1013 only);
    and closes with 4401 too when that login logs out (publisher.logged_out);
  - joins the page's group for the user's audience (see groups.py);
  - sends a snapshot of everything the page's live regions show, so a browser that
    reconnects (Daphne drops sockets without a close frame on restart) catches up
    without a reload and without missing an event: the group is joined before the
    snapshot is read, and the page ignores a fragment older than what it shows;
  - then forwards what the publisher sends to the group, as it is.
Messages from the browser are ignored: nothing a client sends is ever acted on, and
none is parsed. One larger than AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES closes the socket
with 4413: the pages send nothing, so only a hostile client sends that much. (Daphne
fails the connection itself, 1009, over its own limit of 1 MiB, before it gets here.)
The Origin header is checked by AllowedHostsOriginValidator (routing.py).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from agentdash.approvals import DECIDE_PERMISSION
from agentdash.live import fragments, groups, publisher
from agentdash.web.history_query import MAX_ID

CLOSE_LOGIN_REQUIRED = 4401
CLOSE_NOT_FOUND = 4404
# RFC 6455's 1009 (message too big) is the server's own: Daphne refuses an application
# any code but 1000 and 3000-4999. 4413, after HTTP's 413 Content Too Large.
CLOSE_MESSAGE_TOO_BIG = 4413


class LiveConsumer(AsyncWebsocketConsumer):
    """A page's socket: one topic, a snapshot on connect, then the group's fragments."""

    # Whether the page shows decision controls, and so has a read-only twin group.
    has_audiences = True

    def topic(self) -> str:
        raise NotImplementedError

    def snapshot(self, *, can_decide: bool) -> str | None:
        """The page's live regions as they are now (None: the page's subject is gone).
        Runs in a thread: it reads the database."""
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_LOGIN_REQUIRED)
            return
        if not self.subject_may_exist():
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        publisher.bind_loop(asyncio.get_running_loop())
        can_decide = await database_sync_to_async(user.has_perm)(DECIDE_PERMISSION)
        group = self.topic()
        if self.has_audiences:
            group = groups.for_audience(group, can_decide=can_decide)
        # A logged-in user has a session: the stack is AuthMiddlewareStack (asgi.py).
        login = groups.login(self.scope["session"])
        for name in (group, *([login] if login else [])):
            self.groups.append(name)  # the base class leaves them on disconnect
            join = partial(self.channel_layer.group_add, name, self.channel_name)
            await publisher.with_one_retry(join, f"joining {name}")
        await self.accept()
        html = await database_sync_to_async(self.snapshot)(can_decide=can_decide)
        if html is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send(text_data=html)

    def subject_may_exist(self) -> bool:
        """False when the URL cannot name anything (checked before its group is joined)."""
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The pages send nothing; whatever arrives is dropped, unread, unless it is too
        big to be anything but an attack."""
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode())
        if size > settings.AGENTDASH_WEBSOCKET_MAX_MESSAGE_BYTES:
            await self.close(code=CLOSE_MESSAGE_TOO_BIG)

    async def live_html(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])

    async def live_logout(self, event: dict[str, Any]) -> None:
        await self.close(code=CLOSE_LOGIN_REQUIRED)


class SessionConsumer(LiveConsumer):
    """/ws/sessions/<id>/: the session page (header, transcript, streaming reply)."""

    def topic(self) -> str:
        return groups.session(self.scope["url_route"]["kwargs"]["session_id"])

    def subject_may_exist(self) -> bool:
        # The route takes any digits; a group name has at most 100 characters.
        return 0 < self.scope["url_route"]["kwargs"]["session_id"] <= MAX_ID

    def snapshot(self, *, can_decide: bool) -> str | None:
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        return fragments.session_snapshot(session_id, can_decide=can_decide)


class ApprovalsConsumer(LiveConsumer):
    """/ws/approvals/: the approval queue."""

    def topic(self) -> str:
        return groups.APPROVALS

    def snapshot(self, *, can_decide: bool) -> str:
        return fragments.queue_snapshot(can_decide=can_decide)


class SessionsConsumer(LiveConsumer):
    """/ws/sessions/: the sessions list."""

    has_audiences = False

    def topic(self) -> str:
        return groups.SESSIONS

    def snapshot(self, *, can_decide: bool) -> str:
        return fragments.sessions_snapshot()
