"""The channel-layer groups that pages listen on.

A page that shows approval controls and one that shows them read-only need different
HTML, so each topic has two groups: `<topic>` for operators who may decide and
`<topic>.readonly` for everyone else. A fragment is rendered once per audience, never
once per socket.
"""

from __future__ import annotations

import hashlib

SESSIONS = "sessions"  # the sessions list (no controls: one audience)
APPROVALS = "approvals"  # the approval queue


def session(session_id: int) -> str:
    return f"session-{session_id}"


def for_audience(topic: str, *, can_decide: bool) -> str:
    return topic if can_decide else f"{topic}.readonly"


def login(session_key: str) -> str:
    """The sockets one login opened, closed when it logs out. The key is a secret that
    a group's name would carry into Redis: its hash instead."""
    return f"login-{hashlib.sha256(session_key.encode()).hexdigest()[:40]}"
