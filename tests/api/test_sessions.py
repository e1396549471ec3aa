"""Sessions through the API: start, list, read, cancel; as the browser and CLI do."""

from __future__ import annotations

import pytest

from agentdash import sessions
from agentdash.models import AgentSession, AuditEvent, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.api.conftest import tool_use

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = [[tool_use("read_file", "r1", path="missing.txt")], [{"type": "text", "text": "Done."}]]


def field_errors(response) -> dict[str, str]:
    assert response.status_code == 422, response.content
    return {error["field"]: error["message"] for error in response.json()["errors"]}


def test_starting_a_session_answers_201_and_queues_its_first_step(as_operator, operator):
    response = as_operator.post(
        "/sessions",
        {
            "goal": "  Read a file  ",
            "script": SCRIPT,
            "tools": ["read_file"],
            "max_steps": 3,
            "max_cost": "0.25",
        },
    )

    assert response.status_code == 201
    body = response.json()
    session = AgentSession.objects.get(pk=body["id"])
    assert session.goal == "Read a file"
    assert session.owner == operator
    assert session.enabled_tools == ["read_file"]
    assert (session.max_steps, str(session.max_cost)) == (3, "0.250000")
    assert body["status"] == "queued"
    assert body["owner"] == "olivia"
    assert body["cost"] == "0.000000"
    created = AuditEvent.objects.get(kind="session.created", session_id=session.pk)
    assert created.actor == "user:olivia"


def test_starting_refuses_bad_input_field_by_field(as_operator):
    assert "body.goal" in field_errors(as_operator.post("/sessions", {"goal": "   "}))
    assert "body.goal" in field_errors(as_operator.post("/sessions", {}))
    errors = field_errors(as_operator.post("/sessions", {"goal": "x", "tools": ["rm_rf"]}))
    assert "No tool is called 'rm_rf'" in errors["body.tools"]
    errors = field_errors(as_operator.post("/sessions", {"goal": "x", "provider": "skynet"}))
    assert "No provider is called 'skynet'" in errors["body.provider"]
    bad_script = [[{"type": "nope"}]]
    errors = field_errors(as_operator.post("/sessions", {"goal": "x", "script": bad_script}))
    assert "Turn 1, block 1" in errors["body.script"]
    errors = field_errors(as_operator.post("/sessions", {"goal": "x", "max_steps": 0}))
    assert "body.max_steps" in errors
    errors = field_errors(as_operator.post("/sessions", {"goal": "a\x00b"}))
    assert "NUL" in errors["body.goal"]
    assert not AgentSession.objects.exists()


def test_an_unconfigured_provider_is_refused_with_the_reason(as_operator):
    errors = field_errors(as_operator.post("/sessions", {"goal": "x", "provider": "anthropic"}))

    assert "Set ANTHROPIC_API_KEY" in errors["body.provider"]


def test_a_script_goes_only_with_the_scripted_provider(as_operator, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")

    response = as_operator.post("/sessions", {"goal": "x", "provider": "openai", "script": SCRIPT})

    assert "Only the scripted provider plays a script" in field_errors(response)["body"]


def test_a_body_that_is_not_json_is_a_400(as_operator):
    response = as_operator.client.post(
        "/api/v1/sessions", "{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "Cannot parse request body"}


def test_sessions_are_listed_newest_first_a_page_at_a_time(as_operator, operator):
    made = [start_session(goal=f"goal {n}", owner=operator) for n in range(5)]
    AgentSession.objects.filter(pk=made[1].pk).update(status=SessionStatus.FAILED)

    first = as_operator.get("/sessions", limit=2).json()
    second = as_operator.get("/sessions", limit=2, before=first["next_before"]).json()
    third = as_operator.get("/sessions", limit=2, before=second["next_before"]).json()

    ids = [item["id"] for page in (first, second, third) for item in page["items"]]
    assert ids == [session.pk for session in reversed(made)]
    assert third["next_before"] is None
    failed = as_operator.get("/sessions", status="failed").json()["items"]
    assert [item["id"] for item in failed] == [made[1].pk]
    assert "query.status" in field_errors(as_operator.get("/sessions", status="asleep"))
    assert "query.limit" in field_errors(as_operator.get("/sessions", limit=10_000))


def test_a_session_is_read_with_its_calls_decisions_and_results(as_operator, pending):
    call = pending()
    as_operator.post(f"/calls/{call.pk}/decision", {"decision": "reject", "reason": "not now"})

    body = as_operator.get(f"/sessions/{call.session_id}").json()

    assert body["goal"] == "Keep notes"
    [listed] = body["tool_calls"]
    assert listed["id"] == call.pk
    assert listed["tool"] == "write_file"
    assert listed["state"] == "rejected"
    assert listed["arguments"] == {"path": "notes.md", "content": "hello\n"}
    assert listed["decisions"][0]["decided_by"] == "user:olivia"
    assert listed["decisions"][0]["reason"] == "not now"
    assert listed["result"]["status"] == "rejected"
    assert "not now" in listed["result"]["observation"]


def test_reading_a_missing_session_is_a_404_and_a_bad_id_a_422(as_operator):
    response = as_operator.get("/sessions/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "There is no session 999999."}
    assert "path.session_id" in field_errors(as_operator.get("/sessions/abc"))
    assert "path.session_id" in field_errors(as_operator.get(f"/sessions/{2**63}"))


def test_the_owner_cancels_a_session_and_its_pending_calls_are_rejected(as_operator, pending):
    call = pending()

    response = as_operator.post(f"/sessions/{call.session_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert ToolCall.objects.get(pk=call.pk).state == CallState.REJECTED
    again = as_operator.post(f"/sessions/{call.session_id}/cancel")
    assert again.status_code == 409
    assert again.json()["state"] == "cancelled"
    assert "already ended" in again.json()["detail"]


def test_someone_else_without_the_permission_may_not_cancel(as_viewer, pending):
    call = pending()

    response = as_viewer.post(f"/sessions/{call.session_id}/cancel")

    assert response.status_code == 403
    assert "Only the session's owner" in response.json()["detail"]
    assert AgentSession.objects.get(pk=call.session_id).status == SessionStatus.WAITING_APPROVAL


def test_a_start_refused_after_the_schema_checked_it_is_a_422(as_operator, monkeypatch):
    # What the schema checked can change before the session is made (a key removed).
    def provider_gone(name: str) -> None:
        raise ValueError("Anthropic (Claude) is not configured here.")

    monkeypatch.setattr(sessions, "check_provider", provider_gone)  # the schema's is not

    response = as_operator.post("/sessions", {"goal": "x"})

    assert response.status_code == 422
    assert "is not configured here" in response.json()["detail"]
    assert not AgentSession.objects.exists()


def test_json_nested_past_the_limit_or_holding_a_lone_surrogate_is_a_422(as_operator):
    # Raw bytes: Python's own encoder refuses such nesting, a client's need not.
    deep = b"[" * 2000 + b"]" * 2000
    for body in (
        b'{"goal": "x", "script": [[{"type": "text", "text": "a", "extra": ' + deep + b"}]]}",
        b'{"goal": "x", "script": [[{"type": "text", "text": "\\ud800"}]]}',
    ):
        response = as_operator.client.post(
            "/api/v1/sessions", body, content_type="application/json"
        )

        assert list(field_errors(response)) == ["body.script.0.0"]
    assert not AgentSession.objects.exists()
