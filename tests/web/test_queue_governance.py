"""The queue's batch decisions for one model step, and the deadline on every waiting card."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse

from agentdash.models import ApprovalDecision, ToolCall
from agentdash.states import CallState
from tests.governance.helpers import audit_kinds, paused_on, tool_use
from tests.web.html import parse

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = reverse("approvals")
DECIDE_CALLS = reverse("decide-calls")
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def as_operator(client: Client, operator) -> Client:
    client.force_login(operator)
    return client


@pytest.fixture
def step(run_queued_steps) -> list[ToolCall]:
    """Two write_file calls of one model step, both waiting for an operator."""
    return paused_on(
        run_queued_steps,
        tool_use("write_file", "w1", path="a.txt", content="a"),
        tool_use("write_file", "w2", path="b.txt", content="b"),
    )


def posted(*calls: ToolCall) -> list[str]:
    """The batch form's "calls" values: each call with the hash of the arguments shown."""
    return [f"{call.pk}:{call.arguments_hash}" for call in calls]


def states(*calls: ToolCall) -> list[str]:
    return [ToolCall.objects.get(pk=call.pk).state for call in calls]


def test_the_queue_offers_a_step_s_calls_as_one_batch(as_operator, step):
    page = parse(as_operator.get(QUEUE).content)

    (batch,) = page.by_id("queue-batches").all(testid="queue-batch")
    assert batch.attrs["id"] == f"queue-batch-{step[0].message_id}"
    assert [a.attrs["data-call-id"] for a in batch.all(testid="batch-call")] == [
        str(call.pk) for call in step
    ]
    sent = [field.attrs["value"] for field in batch.all(tag="input", name="calls")]
    assert sent == posted(*step) * 2  # the approve form and the reject form
    assert batch.all(testid="batch-approve")
    assert batch.all(testid="batch-reject")
    # The cards stay where the queue's contract puts them.
    assert len(page.by_id("queue-list").all(testid="queue-card")) == 2


def test_a_single_pending_call_has_no_batch(as_operator, run_queued_steps):
    paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a"))

    page = parse(as_operator.get(QUEUE).content)

    assert not page.by_id("queue-batches").all(testid="queue-batch")


def test_a_viewer_sees_the_batch_without_its_buttons(client, viewer, step):
    client.force_login(viewer)

    (batch,) = parse(client.get(QUEUE).content).all(testid="queue-batch")

    assert not batch.all(testid="batch-approve")
    refused = client.post(DECIDE_CALLS, {"action": "approve", "calls": posted(*step)}, **HTMX)
    assert refused.status_code == 403
    assert states(*step) == [CallState.PENDING_APPROVAL] * 2


def test_approve_all_approves_and_audits_each_call_on_its_own(as_operator, operator, step):
    response = as_operator.post(DECIDE_CALLS, {"action": "approve", "calls": posted(*step)}, **HTMX)

    assert response.status_code == 200
    answer = parse(response.content)
    notice = answer.one(testid="notice").text
    assert f"Approved 2 calls: write_file (call {step[0].pk}), write_file (call {step[1].pk})" in (
        notice
    )
    for call in step:
        assert answer.by_id(f"queue-card-{call.pk}").attrs["hx-swap-oob"] == "delete"
        decision = ApprovalDecision.objects.get(tool_call=call)
        assert (decision.approved, decision.decided_by) == (True, operator)
        assert decision.arguments_hash == call.arguments_hash
        assert "toolcall.approved" in audit_kinds(call)
    assert states(*step) != [CallState.PENDING_APPROVAL] * 2


def test_reject_all_gives_each_call_the_reason(as_operator, step):
    response = as_operator.post(
        DECIDE_CALLS,
        {"action": "reject", "reason": "Not these files", "calls": posted(*step)},
        **HTMX,
    )

    assert response.status_code == 200
    assert states(*step) == [CallState.REJECTED] * 2
    for call in step:
        assert ApprovalDecision.objects.get(tool_call=call).reason == "Not these files"
        assert "Not these files" in call.results.get().observation
        assert "toolcall.rejected" in audit_kinds(call)


def test_a_call_decided_meanwhile_stops_the_whole_batch(as_operator, second_operator, step):
    other = Client()
    other.force_login(second_operator)
    other.post(
        reverse("decide-call", args=[step[1].pk]), {"action": "reject", "card": "queue"}, **HTMX
    )

    response = as_operator.post(DECIDE_CALLS, {"action": "approve", "calls": posted(*step)}, **HTMX)

    assert response.status_code == 409
    notice = parse(response.content).one(testid="notice").text
    assert f"Call {step[1].pk} was already rejected by user:oscar" in notice
    assert states(*step) == [CallState.PENDING_APPROVAL, CallState.REJECTED]
    assert not ApprovalDecision.objects.filter(tool_call=step[0]).exists()


def test_arguments_changed_since_shown_stop_the_whole_batch(as_operator, step):
    stale = [posted(step[0])[0], f"{step[1].pk}:{'0' * 64}"]

    response = as_operator.post(DECIDE_CALLS, {"action": "approve", "calls": stale}, **HTMX)

    assert response.status_code == 409
    assert f"arguments of call {step[1].pk} changed" in parse(response.content).text
    assert states(*step) == [CallState.PENDING_APPROVAL] * 2


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"action": "approve"}, 400),
        ({"action": "approve", "calls": ["abc"]}, 400),
        ({"action": "approve", "calls": ["1:not-a-hash"]}, 400),
        ({"action": "approve", "calls": ["99999999999999999999999:" + "0" * 64]}, 400),
        ({"action": "maybe", "calls": ["1:" + "0" * 64]}, 400),
        ({"action": "approve", "calls": ["424242:" + "0" * 64]}, 404),
        ({"action": "approve", "calls": [f"{n}:{'0' * 64}" for n in range(101)]}, 400),
    ],
)
def test_bad_batches_are_4xx_and_decide_nothing(as_operator, step, form, status):
    response = as_operator.post(DECIDE_CALLS, form, **HTMX)

    assert response.status_code == status
    assert parse(response.content).one(testid="notice").attrs["data-level"] == "error"
    assert states(*step) == [CallState.PENDING_APPROVAL] * 2


def test_calls_of_two_steps_are_not_one_batch(as_operator, step, run_queued_steps):
    (elsewhere,) = paused_on(
        run_queued_steps, tool_use("write_file", "w9", path="c.txt", content="c")
    )

    response = as_operator.post(
        DECIDE_CALLS, {"action": "approve", "calls": posted(step[0], elsewhere)}, **HTMX
    )

    assert response.status_code == 400
    assert states(step[0], elsewhere) == [CallState.PENDING_APPROVAL] * 2


def test_a_plain_form_batch_redirects_to_the_queue_with_its_notice(as_operator, step):
    response = as_operator.post(DECIDE_CALLS, {"action": "approve", "calls": posted(*step)})

    assert response.status_code == 302
    assert response["Location"] == QUEUE
    page = parse(as_operator.get(QUEUE).content)
    assert "Approved 2 calls" in page.one(testid="notice").text
    assert not page.all(testid="queue-batch")


def test_every_waiting_card_shows_its_deadline_with_a_countdown(as_operator, step):
    deadline = dt.datetime(2031, 5, 4, 12, 30, tzinfo=dt.UTC)
    ToolCall.objects.filter(pk=step[0].pk).update(expires_at=deadline)

    queue = parse(as_operator.get(QUEUE).content).by_id(f"queue-card-{step[0].pk}")
    session_page = reverse("session-detail", args=[step[0].session_id])
    card = parse(as_operator.get(session_page).content).by_id(f"call-{step[0].pk}")

    for shown in (queue, card):
        item = shown.one(testid="call-deadline")
        assert item.text == "Expires at 2031-05-04 12:30:00 UTC unless decided"
        assert item.one(tag="time").attrs["datetime"] == "2031-05-04T12:30:00+00:00"
        assert item.one(testid="countdown").attrs["data-countdown"] == "2031-05-04T12:30:00+00:00"


def test_a_decided_call_shows_no_countdown(as_operator, step):
    ToolCall.objects.filter(pk=step[0].pk).update(
        expires_at=dt.datetime(2031, 5, 4, 12, 30, tzinfo=dt.UTC)
    )
    as_operator.post(DECIDE_CALLS, {"action": "reject", "calls": posted(*step)})

    session_page = reverse("session-detail", args=[step[0].session_id])
    card = parse(as_operator.get(session_page).content).by_id(f"call-{step[0].pk}")

    assert not card.all(testid="countdown")
