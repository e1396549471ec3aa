"""The channel-layer groups that pages listen on.

A page that shows approval controls and one that shows them read-only need different
HTML, so each topic has two groups: `<topic>` for operators who may decide and
`<topic>.readonly` for everyone else. A fragment is rendered once per audience, never
once per socket.
"""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest

SESSIONS = "sessions"  # the sessions list (no controls: one audience)
APPROVALS = "approvals"  # the approval queue


def session(session_id: int) -> str:
    return f"session-{session_id}"


def for_audience(topic: str, *, can_decide: bool) -> str:
    return topic if can_decide else f"{topic}.readonly"


# A random id kept in the session data from login to logout: unlike the session key,
# which Django changes while the user stays logged in (a password change, logging in
# again), it names the same login throughout.
LOGIN_ID = "agentdash_live_login"


def remember_login(sender: object, request: HttpRequest, **kwargs: object) -> None:
    """user_logged_in's receiver: give this login its id, unless it has one already (the
    same user logging in again keeps the session's data, and so its pages)."""
    request.session.setdefault(LOGIN_ID, secrets.token_hex(16))


def login(session: SessionBase) -> str | None:
    """The sockets one login opened, closed when it logs out; None without a session. A
    session from before logins had ids goes by its key, hashed: the key is a secret
    that a group's name would carry into Redis."""
    login_id = session.get(LOGIN_ID) or session.session_key
    if not login_id:
        return None
    return f"login-{hashlib.sha256(login_id.encode()).hexdigest()[:40]}"
