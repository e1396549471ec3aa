"""The approval queue and decisions through the API, with the browser's permissions."""

from __future__ import annotations

import pytest

from agentdash.models import ApprovalDecision, ToolCall
from agentdash.states import CallState

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_queue_lists_pending_calls_oldest_first_with_what_a_decision_needs(as_viewer, pending):
    first = pending(goal="First goal")
    second = pending(goal="Second goal", path="todo.md", content="new\n")
    (second.session.workspace / "todo.md").write_text("old\n")

    queue = as_viewer.get("/approvals").json()

    assert [item["id"] for item in queue] == [first.pk, second.pk]
    item = queue[1]
    assert item["session_id"] == second.session_id
    assert item["session_goal"] == "Second goal"
    assert item["tool"] == "write_file"
    assert item["tool_description"].startswith("Write a UTF-8 text file")
    assert item["arguments"] == {"path": "todo.md", "content": "new\n"}
    assert item["arguments_hash"] == second.arguments_hash
    assert (item["approvals_required"], item["approvals_given"]) == (1, 0)
    assert "requires confirmation" in item["approval_reason"]
    assert "-old" in item["preview"], "a diff against the file as it is now"
    assert "+new" in item["preview"]


def test_an_operator_approves_and_the_session_goes_on(as_operator, pending, run_queued_steps):
    call = pending()

    response = as_operator.post(f"/calls/{call.pk}/decision", {"decision": "approve"})

    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "approved"
    assert body["decisions"][0]["approved"] is True
    assert body["decisions"][0]["decided_by"] == "user:olivia"
    run_queued_steps()
    assert ToolCall.objects.get(pk=call.pk).state == CallState.SUCCEEDED
    assert (call.session.workspace / "notes.md").read_text() == "hello\n"
    assert as_operator.get("/approvals").json() == []


def test_an_operator_rejects_with_a_reason(as_operator, pending):
    call = pending()

    response = as_operator.post(
        f"/calls/{call.pk}/decision", {"decision": "reject", "reason": "wrong file"}
    )

    assert response.status_code == 200
    assert response.json()["state"] == "rejected"
    assert response.json()["decisions"][0]["reason"] == "wrong file"


def test_edited_arguments_are_validated_then_run_instead(as_operator, pending):
    call = pending()

    response = as_operator.post(
        f"/calls/{call.pk}/decision",
        {"decision": "approve", "arguments": {"path": "other.md", "content": "edited\n"}},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["arguments"] == {"path": "other.md", "content": "edited\n"}
    assert body["proposed_arguments"] == {"path": "notes.md", "content": "hello\n"}
    assert body["decisions"][0]["edited_arguments"] == {"path": "other.md", "content": "edited\n"}


def test_an_edit_the_tool_refuses_is_a_422_per_field_and_decides_nothing(as_operator, pending):
    call = pending()

    response = as_operator.post(
        f"/calls/{call.pk}/decision",
        {"decision": "approve", "arguments": {"path": "notes.md", "content": 12, "extra": 1}},
    )

    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert "arguments.content" in fields
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    assert not ApprovalDecision.objects.exists()


def test_edited_arguments_nested_too_deep_or_with_a_lone_surrogate_are_a_422(as_operator, pending):
    call = pending()
    deep = b"[" * 2000 + b"]" * 2000  # raw bytes: Python's own encoder refuses this
    for arguments in (b'{"content": ' + deep + b"}", b'{"path": "n.md", "content": "\\udc00"}'):
        response = as_operator.client.post(
            f"/api/v1/calls/{call.pk}/decision",
            b'{"decision": "approve", "arguments": ' + arguments + b"}",
            content_type="application/json",
        )

        assert response.status_code == 422, response.content
        assert response.json()["errors"][0]["field"] == "body.arguments"
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    assert not ApprovalDecision.objects.exists()


def test_arguments_go_with_approve_only(as_operator, pending):
    call = pending()

    response = as_operator.post(
        f"/calls/{call.pk}/decision", {"decision": "reject", "arguments": {"path": "x"}}
    )

    assert response.status_code == 422
    assert "go with approve" in response.json()["errors"][0]["message"]
    assert "body.decision" in {
        error["field"]
        for error in as_operator.post(f"/calls/{call.pk}/decision", {"decision": "maybe"}).json()[
            "errors"
        ]
    }


def test_approving_arguments_other_than_those_seen_is_a_409(as_operator, pending):
    call = pending()
    shown = as_operator.get("/approvals").json()[0]["arguments_hash"]
    assert shown == call.arguments_hash
    ToolCall.objects.filter(pk=call.pk).update(arguments={"path": "notes.md", "content": "evil"})

    response = as_operator.post(
        f"/calls/{call.pk}/decision", {"decision": "approve", "expected_hash": shown}
    )

    assert response.status_code == 409
    assert "changed after they were shown to you" in response.json()["detail"]
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL
    malformed = as_operator.post(
        f"/calls/{call.pk}/decision", {"decision": "approve", "expected_hash": "abc"}
    )
    assert malformed.status_code == 422


def test_without_the_permission_a_decision_is_a_403(as_viewer, pending):
    call = pending()

    response = as_viewer.post(f"/calls/{call.pk}/decision", {"decision": "approve"})

    assert response.status_code == 403
    assert response.json() == {"detail": "victor may not approve or reject tool calls."}
    assert ToolCall.objects.get(pk=call.pk).state == CallState.PENDING_APPROVAL


def test_the_second_decision_is_a_409_that_names_who_decided_first(
    as_operator, client_for, second_operator, pending
):
    call = pending()
    as_operator.post(f"/calls/{call.pk}/decision", {"decision": "reject", "reason": "no"})

    late = client_for(second_operator).post(f"/calls/{call.pk}/decision", {"decision": "approve"})

    assert late.status_code == 409
    body = late.json()
    assert body["decided_by"] == "user:olivia"
    assert body["approved"] is False
    assert body["state"] == "rejected"
    assert "already rejected by user:olivia" in body["detail"]


def test_deciding_a_missing_call_is_a_404(as_operator):
    response = as_operator.post("/calls/424242/decision", {"decision": "approve"})

    assert response.status_code == 404
    assert response.json() == {"detail": "There is no tool call 424242."}


def test_a_call_is_read_by_its_id(as_viewer, pending):
    call = pending()

    body = as_viewer.get(f"/calls/{call.pk}").json()

    assert (body["id"], body["call_id"], body["state"]) == (call.pk, "w1", "pending_approval")
    assert body["decisions"] == []
    assert body["result"] is None
    assert as_viewer.get("/calls/424242").status_code == 404
