"""SIGKILL of a `manage.py agent worker` while the model is being called.

A model call has no side effects, so the step that died is simply taken again by the
next worker: the reply that never arrived is asked for once more, and stored once.
(Kills while a tool runs and while approvals wait: tests/runner/test_crash_safety.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agentdash.models import AgentSession, Message, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.faults.checks import assert_nothing_lost_or_doubled
from tests.faults.providers import FakeProvider, serving_fake
from tests.runner.test_crash_safety import status_of, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(params=["anthropic", "openai"])
def provider(request, monkeypatch) -> Iterator[FakeProvider]:
    with serving_fake(request.param, monkeypatch) as fake:
        yield fake


def test_a_worker_killed_while_the_model_answers_leaves_the_call_to_the_next(
    spawn_worker, provider
):
    released = threading.Event()
    provider.server.enqueue(
        provider.tool_use("call_list_1", "list_dir", {"path": "."}),
        # The worker's second model call: asked, never answered, then the worker dies.
        provider.text("An answer nobody receives.", hold=released),
        provider.text("The workspace is empty. Done."),
    )
    session = start_session(goal="Look around, then report", provider=provider.name)
    worker = spawn_worker()
    wait_for(lambda: len(provider.server.requests) == 2, "the second model call", timeout=45)
    worker.kill()
    released.set()  # the answer goes to a dead socket

    spawn_worker()
    wait_for(lambda: status_of(session) == SessionStatus.COMPLETED, "completion", timeout=45)

    assert len(provider.server.requests) == 3  # the interrupted call asked again, once
    assert provider.server.pending == 0
    session = AgentSession.objects.get(pk=session.pk)
    roles = list(session.messages.order_by("index").values_list("role", flat=True))
    assert roles == ["user", "assistant", "user", "assistant"]
    assert session.messages.last().text == "The workspace is empty. Done."
    assert session.steps == 2  # tokens and cost counted for the stored replies only
    [call] = ToolCall.objects.filter(session=session)
    assert call.state == CallState.SUCCEEDED
    # The retried request carried the tool's one result, as the first one did.
    retried, killed = provider.server.requests[2].body, provider.server.requests[1].body
    assert retried["messages"] == killed["messages"]
    assert Message.objects.get(session=session, index=2).content[0]["is_error"] is False
    assert_nothing_lost_or_doubled(session, runs={"call_list_1": 1})
