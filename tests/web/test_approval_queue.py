"""The approval queue and the decision endpoint, through HTTP as htmx and plain forms use it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from agentdash.models import AgentSession, AuditEvent, Message, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState
from tests.web.html import parse

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = reverse("approvals")
HTMX = {"HTTP_HX_REQUEST": "true"}


def tool_use(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def decide_url(call: ToolCall) -> str:
    return reverse("decide-call", args=[call.pk])


@pytest.fixture
def as_operator(client: Client, operator) -> Client:
    client.force_login(operator)
    return client


@pytest.fixture
def pending(operator, run_queued_steps):
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


def test_the_queue_shows_every_pending_call_oldest_first(as_operator, pending):
    first = pending(goal="First goal")
    second = pending(goal="Second goal", path="todo.md")

    page = parse(as_operator.get(QUEUE).content)

    cards = page.all(testid="queue-card")
    assert [card.attrs["id"] for card in cards] == [
        f"queue-card-{first.pk}",
        f"queue-card-{second.pk}",
    ]
    card = cards[0]
    assert card.one(testid="session-goal").text == "First goal"
    assert card.one(testid="tool-name").text == "write_file"
    assert card.one(testid="tool-description").text.startswith("Write a UTF-8 text file")
    assert "requires confirmation" in card.one(testid="approval-reason").text
    assert json.loads(card.one(testid="call-arguments").raw_text) == first.arguments
    assert card.one(testid="approve")
    assert card.one(testid="reject-reason")
    assert page.by_id("queue-count").text == "2"
    assert page.one(testid="shortcut-legend")


def test_the_write_preview_is_a_diff_against_the_file_as_it_is_now(as_operator, pending):
    call = pending(content="new line\n")
    (call.session.workspace / "notes.md").write_text("old line\n")  # changed after the proposal

    preview = parse(as_operator.get(QUEUE).content).one(testid="call-preview")

    lines = [span.text for span in preview.all(tag="span")]
    assert "-old line" in lines
    assert "+new line" in lines
    assert preview.one(**{"class": "line add"}).text == "+new line"


def test_the_shell_preview_shows_the_command_line_and_working_directory(
    as_operator, operator, run_queued_steps
):
    session = start_session(
        goal="List files",
        owner=operator,
        script=[[tool_use("run_shell", "s1", command="ls -la 'my dir'")]],
    )
    run_queued_steps()

    preview = parse(as_operator.get(QUEUE).content).one(testid="call-preview").text

    assert "$ /bin/sh -c 'ls -la '\"'\"'my dir'\"'\"''" in preview
    assert f"Working directory: {session.workspace}" in preview


def test_a_viewer_sees_the_queue_read_only_and_cannot_decide(client, viewer, pending):
    call = pending()
    client.force_login(viewer)

    page = parse(client.get(QUEUE).content)
    response = client.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)

    card = page.by_id(f"queue-card-{call.pk}")
    assert card.one(testid="readonly-note")
    assert not card.all(testid="approve")
    assert not card.all(tag="form")
    assert page.one(testid="readonly-banner")
    assert response.status_code == 403
    assert "victor may not approve or reject" in parse(response.content).one(testid="notice").text
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL


def test_approving_from_the_queue_removes_the_card(as_operator, pending):
    call = pending()

    response = as_operator.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)

    assert response.status_code == 200
    answer = parse(response.content)
    assert answer.one(testid="notice").text.startswith(f"Approved write_file (call {call.pk}).")
    assert answer.by_id(f"queue-card-{call.pk}").attrs["hx-swap-oob"] == "delete"
    assert ToolCall.objects.get(pk=call.pk).state == CallState.APPROVED
    assert not parse(as_operator.get(QUEUE).content).has_id(f"queue-card-{call.pk}")


def test_an_edit_is_checked_against_the_schema_and_both_versions_are_audited(as_operator, pending):
    call = pending()
    post = {"action": "edit", "card": "queue"}

    not_json = as_operator.post(decide_url(call), post | {"arguments": "{nope"}, **HTMX)
    not_valid = as_operator.post(
        decide_url(call), post | {"arguments": '{"path": "notes.md"}'}, **HTMX
    )

    assert not_json.status_code == 422
    assert not_json["HX-Retarget"] == f"#decision-errors-{call.pk}"
    assert "Not valid JSON" in parse(not_json.content).text
    assert not_valid.status_code == 422
    assert "content:" in parse(not_valid.content).one(testid="decision-error").text
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL

    edited = {"path": "notes.md", "content": "edited\n"}
    response = as_operator.post(decide_url(call), post | {"arguments": json.dumps(edited)}, **HTMX)

    assert response.status_code == 200
    assert "with edited arguments" in parse(response.content).one(testid="notice").text
    assert ToolCall.objects.get(pk=call.pk).arguments == edited
    event = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.approved")
    assert event.payload["original_arguments"]["content"] == "hello\n"
    assert event.payload["edited_arguments"] == edited


def test_a_rejection_reason_reaches_the_model(as_operator, pending, run_queued_steps):
    call = pending()

    response = as_operator.post(
        decide_url(call),
        {"action": "reject", "card": "queue", "reason": "Use docs/notes.md instead"},
        **HTMX,
    )
    run_queued_steps()

    assert response.status_code == 200
    assert ToolCall.objects.get(pk=call.pk).state == CallState.REJECTED
    results = Message.objects.get(session=call.session, index=2).content
    assert results[0]["is_error"] is True
    assert "Reason: Use docs/notes.md instead" in results[0]["content"]


def test_the_operator_who_was_too_late_is_told_who_decided(
    as_operator, operator, second_operator, pending
):
    call = pending()
    late = Client()
    late.force_login(second_operator)

    as_operator.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)
    response = late.post(
        decide_url(call), {"action": "reject", "card": "queue", "reason": "no"}, **HTMX
    )

    assert response.status_code == 409
    answer = parse(response.content)
    assert answer.by_id(f"queue-card-{call.pk}").attrs["hx-swap-oob"] == "delete"  # theirs too
    notice = answer.one(testid="notice")
    assert notice.attrs["data-level"] == "error"
    assert notice.text.startswith(f"Call {call.pk} was already approved by user:olivia at ")
    assert ToolCall.objects.get(pk=call.pk).state == CallState.APPROVED


def test_deciding_on_the_session_page_answers_with_the_updated_card(as_operator, pending):
    call = pending()

    response = as_operator.post(
        decide_url(call), {"action": "reject", "card": "session", "reason": "not now"}, **HTMX
    )

    card = parse(response.content).by_id(f"call-{call.pk}")
    assert card.attrs["hx-swap-oob"] == "true"
    assert card.attrs["data-state"] == "rejected"
    assert card.one(testid="decision-reason").text == "Reason: not now"
    assert not card.all(testid="approve")


def test_without_javascript_a_decision_redirects_back_with_a_notice(as_operator, pending):
    call = pending()

    response = as_operator.post(decide_url(call), {"action": "approve", "card": "queue"})
    page = parse(as_operator.get(response["Location"]).content)

    assert response.status_code == 302
    assert response["Location"] == QUEUE
    assert page.one(testid="notice").text.startswith(f"Approved write_file (call {call.pk})")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        pytest.param("9" * 5000, "too many digits", id="5000 digits"),
        pytest.param("[" * 100_000, "Nesting deeper than", id="deep"),
        pytest.param('{"path": "notes.md", "content": NaN}', "not JSON numbers", id="NaN"),
        pytest.param('{"path": "notes.md", "content": "\\u0000"}', "NUL character", id="NUL"),
    ],
)
def test_edited_arguments_the_database_cannot_store_are_refused(
    as_operator, pending, arguments, error
):
    call = pending()

    response = as_operator.post(
        decide_url(call), {"action": "edit", "card": "queue", "arguments": arguments}
    )

    assert response.status_code == 422
    assert error in parse(response.content).one(testid="decision-error").text
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL


def test_without_javascript_a_refused_edit_keeps_what_was_typed(as_operator, pending):
    call = pending()

    response = as_operator.post(
        decide_url(call), {"action": "edit", "card": "queue", "arguments": '{"path": 3}'}
    )

    assert response.status_code == 422
    page = parse(response.content)
    assert page.one(testid="edit-arguments").raw_text == '{"path": 3}'
    assert page.all(testid="decision-error")


@pytest.mark.parametrize(
    ("post", "status"),
    [
        ({"action": "launch", "card": "queue"}, 422),
        ({"action": "approve", "card": "elsewhere"}, 422),
    ],
)
def test_bad_decision_input_is_a_4xx(as_operator, pending, post, status):
    call = pending()

    response = as_operator.post(decide_url(call), post, **HTMX)

    assert response.status_code == status
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL


def test_an_unknown_call_is_a_404(as_operator):
    response = as_operator.post(reverse("decide-call", args=[999]), {"action": "approve"}, **HTMX)

    assert response.status_code == 404
    assert "There is no call 999" in parse(response.content).one(testid="notice").text
    assert not AgentSession.objects.exists()


def test_a_decision_on_arguments_that_changed_since_they_were_shown_is_refused(
    as_operator, pending
):
    call = pending()
    shown = parse(as_operator.get(QUEUE).content).by_id(f"queue-card-{call.pk}")
    hashes = {field.attrs["value"] for field in shown.all(tag="input", name="expected_hash")}
    assert hashes == {call.arguments_hash}  # in each of the card's forms
    [expected] = hashes
    ToolCall.objects.filter(pk=call.pk).update(arguments={"path": "other.md", "content": "x"})

    response = as_operator.post(
        decide_url(call),
        {"action": "approve", "card": "queue", "expected_hash": expected},
        **HTMX,
    )

    assert response.status_code == 409
    answer = parse(response.content)
    assert "changed after they were shown to you" in answer.one(testid="notice").text
    # The card stays, showing the arguments as they are now.
    card = answer.by_id(f"queue-card-{call.pk}")
    assert card.attrs["hx-swap-oob"] == "true"
    assert '"other.md"' in card.one(testid="call-arguments").text
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL


def test_a_call_that_needs_two_approvals_waits_for_the_second(
    as_operator, second_operator, pending
):
    call = pending()
    ToolCall.objects.filter(pk=call.pk).update(approvals_required=2)
    card = parse(as_operator.get(QUEUE).content).by_id(f"queue-card-{call.pk}")
    assert "Needs 2 approvals (0 given)" in card.one(testid="call-requirements").text
    assert not card.all(testid="approve-for-session")  # one person cannot waive two

    first = as_operator.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)

    assert first.status_code == 200
    answer = parse(first.content)
    assert "recorded: 1 of 2" in answer.one(testid="notice").text
    card = answer.by_id(f"queue-card-{call.pk}")  # still in the queue, updated
    assert "Needs 2 approvals (1 given)" in card.one(testid="call-requirements").text
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL

    again = as_operator.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)
    assert again.status_code == 403
    assert "next approval must come from someone else" in parse(again.content).text

    oscar = Client()
    oscar.force_login(second_operator)
    second = oscar.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)
    assert parse(second.content).one(testid="notice").text.startswith("Approved write_file")
    assert ToolCall.objects.get(pk=call.pk).state == CallState.APPROVED


def test_approving_can_allow_the_tool_for_the_rest_of_the_session(as_operator, pending):
    call = pending()

    response = as_operator.post(
        decide_url(call),
        {"action": "approve", "card": "session", "allow_for_session": "on"},
        **HTMX,
    )

    answer = parse(response.content)
    assert "write_file is allowed for the rest of the session" in answer.one(testid="notice").text
    card = answer.by_id(f"call-{call.pk}")
    assert (
        "allowing write_file for the rest of the session" in card.one(testid="call-decision").text
    )


def test_a_card_says_who_may_approve_and_until_when(as_operator, pending):
    call = pending()
    ToolCall.objects.filter(pk=call.pk).update(
        required_group="release managers",
        four_eyes=True,
        expires_at=dt.datetime(2031, 5, 4, 12, 30, tzinfo=dt.UTC),
    )

    asks = parse(as_operator.get(QUEUE).content).by_id(f"queue-card-{call.pk}")
    asks = [item.text for item in asks.one(testid="call-requirements").all(tag="li")]

    assert asks == [
        "Only members of “release managers” may approve",
        "Four eyes: the session's owner may not approve",
        "Expires at 2031-05-04 12:30:00 UTC unless decided",
    ]
    refused = as_operator.post(decide_url(call), {"action": "approve", "card": "queue"}, **HTMX)
    assert refused.status_code == 403
    assert "release managers" in parse(refused.content).one(testid="notice").text
