"""People with API tokens, a client that sends them, and calls that wait for a decision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from agentdash.models import ApiToken, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState

API = "/api/v1"


def tool_use(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


class ApiClient:
    """Django's test client, sending one token with every request, JSON in and out."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.client = Client(**bearer(token))

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(API + path, params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(API + path, body or {}, content_type="application/json")


@pytest.fixture
def client_for() -> Callable[[Any], ApiClient]:
    def make(user: Any) -> ApiClient:
        return ApiClient(ApiToken.issue(user, "tests")[1])

    return make


@pytest.fixture
def as_operator(client_for, operator) -> ApiClient:
    return client_for(operator)


@pytest.fixture
def as_viewer(client_for, viewer) -> ApiClient:
    return client_for(viewer)


@pytest.fixture
def pending(operator, run_queued_steps) -> Callable[..., ToolCall]:
    """A session stopped on one write_file call that waits for an operator."""

    def make(goal: str = "Keep notes", **arguments: Any) -> ToolCall:
        arguments = {"path": "notes.md", "content": "hello\n"} | arguments
        session = start_session(
            goal=goal,
            owner=operator,
            script=[[tool_use("write_file", "w1", **arguments)], [{"type": "text", "text": "ok"}]],
        )
        run_queued_steps()
        return ToolCall.objects.get(session=session, state=CallState.PENDING_APPROVAL)

    return make
