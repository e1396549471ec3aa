"""The websocket routes, and the stack every socket passes through.

    /ws/sessions/               the sessions list
    /ws/sessions/<session>/     a session page
    /ws/approvals/              the approval queue

The stack: AllowedHostsOriginValidator refuses a handshake whose Origin is not one of
ALLOWED_HOSTS (a page on another site cannot open a socket with the operator's
cookie); AuthMiddlewareStack puts the logged-in user in the scope from the session
cookie; the consumer refuses anonymous users.
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from agentdash.live.consumers import ApprovalsConsumer, SessionConsumer, SessionsConsumer

SESSIONS_PATH = "/ws/sessions/"
APPROVALS_PATH = "/ws/approvals/"


def session_path(session_id: int) -> str:
    return f"{SESSIONS_PATH}{session_id}/"


websocket_urlpatterns = [
    path("ws/sessions/", SessionsConsumer.as_asgi()),
    path("ws/sessions/<int:session_id>/", SessionConsumer.as_asgi()),
    path("ws/approvals/", ApprovalsConsumer.as_asgi()),
]


def websocket_application() -> AllowedHostsOriginValidator:
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
