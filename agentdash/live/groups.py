"""The channel-layer groups that pages listen on.

A page that shows approval controls and one that shows them read-only need different
HTML, so each topic has two groups: `<topic>` for operators who may decide and
`<topic>.readonly` for everyone else. A fragment is rendered once per audience, never
once per socket.
"""

from __future__ import annotations

SESSIONS = "sessions"  # the sessions list (no controls: one audience)
APPROVALS = "approvals"  # the approval queue


def session(session_id: int) -> str:
    return f"session-{session_id}"


def for_audience(topic: str, *, can_decide: bool) -> str:
    return topic if can_decide else f"{topic}.readonly"
