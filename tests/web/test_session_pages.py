"""The sessions list, the start form, a session's page and cancelling, through HTTP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse

from agentdash import approvals, sessions
from agentdash.models import AgentSession, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from agentdash.web.history_query import MAX_ID
from tests.web.html import parse

NEW = reverse("session-new")
HOSTILE = "<script>alert('pwned')</script>"


def tool_use(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def text(words: str) -> dict[str, Any]:
    return {"type": "text", "text": words}


def detail_url(session: AgentSession) -> str:
    return reverse("session-detail", args=[session.pk])


@pytest.fixture
def no_api_keys(monkeypatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def as_operator(client: Client, operator) -> Client:
    client.force_login(operator)
    return client


@pytest.fixture
def as_viewer(client: Client, viewer) -> Client:
    client.force_login(viewer)
    return client


def valid_start(**changes: Any) -> dict[str, Any]:
    return {
        "goal": "Write the release notes",
        "provider": "scripted",
        "model": "",
        "tools": ["list_dir", "write_file"],
        "max_steps": "10",
        "max_tokens": "",
        "max_cost": "0.50",
        "system_prompt": "",
        "script": "",
    } | changes


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/"),
        ("get", reverse("sessions")),
        ("get", NEW),
        ("get", reverse("session-detail", args=[1])),
        ("post", reverse("session-cancel", args=[1])),
        ("get", reverse("approvals")),
        ("post", reverse("decide-call", args=[1])),
    ],
)
def test_every_page_requires_login(client: Client, method: str, url: str):
    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_a_button_pressed_after_logout_takes_its_whole_page_to_the_login_form(client: Client):
    page = reverse("session-detail", args=[7])

    response = client.post(
        reverse("decide-call", args=[3]),
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://testserver{page}?tab=calls",
    )

    # Not a redirect that htmx would follow and swap into the card: the page goes.
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{reverse('login')}?next={quote(page + '?tab=calls')}"


@pytest.mark.django_db
def test_the_start_form_defaults_to_the_demo_and_says_why(as_operator, no_api_keys):
    page = parse(as_operator.get(NEW).content)

    scripted = page.one(testid="provider-scripted")
    assert scripted.one(tag="input").attrs.get("checked") is not None
    assert "the default because no API key is configured" in scripted.text
    # Unconfigured providers are shown, with what they need, but cannot be chosen.
    anthropic = page.one(testid="provider-anthropic")
    assert "disabled" in anthropic.one(tag="input").attrs
    assert "ANTHROPIC_API_KEY" in anthropic.text
    # Every built-in tool is offered, all enabled to begin with.
    boxes = page.by_id("field-tools").all(tag="input", type="checkbox")
    assert {box.attrs["value"] for box in boxes} >= {"read_file", "write_file", "run_python"}
    assert all("checked" in box.attrs for box in boxes)


@pytest.mark.django_db
def test_form_errors_are_shown_next_to_their_fields(as_operator, no_api_keys):
    response = as_operator.post(
        NEW,
        valid_start(
            goal="   ",
            provider="anthropic",
            tools=[],
            max_steps="0",
            max_cost="-1",
            script='[[{"type": "text"}]]',
        ),
    )

    assert response.status_code == 400
    page = parse(response.content)
    assert "This field is required" in page.by_id("field-goal").text
    assert "not configured here" in page.by_id("field-provider").text
    assert "Enable at least one tool" in page.by_id("field-tools").text
    assert "greater than or equal to 1" in page.by_id("field-max_steps").text
    assert "greater than or equal to 0" in page.by_id("field-max_cost").text
    assert "Turn 1, block 1 (text): missing text" in page.by_id("field-script").text
    # The fields without a mistake show none.
    assert not page.by_id("field-model").all(tag="p", **{"class": "error"})
    assert not AgentSession.objects.exists()


@pytest.mark.django_db
def test_max_tokens_is_bounded_by_what_the_column_holds(as_operator, no_api_keys):
    too_many = as_operator.post(NEW, valid_start(max_tokens=str(MAX_ID + 1)))

    assert too_many.status_code == 400
    error = parse(too_many.content).by_id("field-max_tokens").text
    assert f"less than or equal to {MAX_ID}" in error
    assert not AgentSession.objects.exists()

    assert as_operator.post(NEW, valid_start(max_tokens=str(MAX_ID))).status_code == 302
    assert AgentSession.objects.get().max_tokens == MAX_ID


def listing(path: str) -> str:
    """A script whose one call's argument is `path`, as JSON text."""
    return '[[{"type": "tool_use", "name": "list_dir", "input": {"path": ' + path + "}}]]"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("script", "error"),
    [
        pytest.param(listing("NaN"), "NaN and Infinity are not JSON numbers", id="NaN"),
        pytest.param(listing("1e999"), "NaN and Infinity are not JSON numbers", id="1e999"),
        pytest.param(listing('"a\\u0000"'), "NUL character", id="NUL"),
        pytest.param(listing('"a\\udfff"'), "lone surrogate", id="lone surrogate"),
        pytest.param(listing("[" * 150 + "]" * 150), "Nesting deeper than", id="deep"),
        pytest.param("[" * 100_000, "Nesting deeper than", id="deeper than json.loads goes"),
    ],
)
def test_a_script_the_database_cannot_store_is_a_field_error(as_operator, script, error):
    response = as_operator.post(NEW, valid_start(script=script))

    assert response.status_code == 400
    assert error in parse(response.content).by_id("field-script").text
    assert not AgentSession.objects.exists()


@pytest.mark.django_db
def test_a_script_needs_the_scripted_provider(as_operator, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    script = '[[{"type": "text", "text": "hi"}]]'

    response = as_operator.post(NEW, valid_start(provider="openai", script=script))

    assert response.status_code == 400
    assert (
        "Only the scripted provider plays a script"
        in parse(response.content).by_id("field-script").text
    )


@pytest.mark.django_db
def test_starting_a_session_opens_its_page(as_operator, operator, no_api_keys):
    script = f'[[{{"type": "text", "text": "Done: {HOSTILE!s}"}}]]'.replace("'", "\\u0027")

    response = as_operator.post(NEW, valid_start(script=script))

    session = AgentSession.objects.get()
    assert response.status_code == 302
    assert response["Location"] == detail_url(session)
    assert session.owner == operator
    assert session.enabled_tools == ["list_dir", "write_file"]
    assert session.max_steps == 10
    assert session.max_cost == Decimal("0.50")
    assert session.model == "scripted"
    page = parse(as_operator.get(detail_url(session)).content)
    assert page.by_id(f"session-header-{session.pk}").attrs["data-status"] == "queued"
    assert page.one(testid="session-goal").text == "Write the release notes"
    assert page.has_id(f"stream-{session.pk}")
    assert page.one(testid="transcript")


@pytest.mark.django_db(transaction=True)
def test_the_session_page_shows_each_call_its_decision_and_result(
    as_operator, operator, run_queued_steps
):
    from agentdash.approvals import decide

    session = start_session(
        goal="Keep notes",
        owner=operator,
        script=[
            [text("Looking first."), tool_use("list_dir", "c1", path=".")],
            [tool_use("write_file", "w1", path="notes.md", content="draft")],
            [text("All done.")],
        ],
    )
    run_queued_steps()
    write = ToolCall.objects.get(session=session, tool_name="write_file")
    decide(
        write.pk,
        user=operator,
        approve=True,
        reason="fine, but final",
        edited_arguments={"path": "notes.md", "content": "final"},
    )
    run_queued_steps()

    page = parse(as_operator.get(detail_url(session)).content)

    assert page.by_id(f"session-header-{session.pk}").attrs["data-status"] == "completed"
    listing = page.by_id(f"call-{ToolCall.objects.get(call_id='c1').pk}")
    assert listing.attrs["data-state"] == "succeeded"
    assert "does not require confirmation" in listing.one(testid="approval-reason").text
    assert listing.one(testid="call-duration").text.endswith("ms")
    card = page.by_id(f"call-{write.pk}")
    assert card.attrs["data-state"] == "succeeded"
    assert "requires confirmation" in card.one(testid="approval-reason").text
    decision = card.one(testid="call-decision")
    assert decision.one(testid="decided-by").text == "user:olivia"
    assert decision.one(testid="decision-reason").text == "Reason: fine, but final"
    edit = decision.one(testid="decision-edit").text
    assert '"content": "draft"' in edit
    assert '"content": "final"' in edit
    assert '"content": "final"' in card.one(testid="call-arguments").text
    assert "Wrote 5 characters to notes.md" in card.one(testid="call-output").text
    texts = [t.text for t in page.all(testid="message-text")]
    assert texts == ["Keep notes", "Looking first.", "All done."]


@pytest.mark.django_db(transaction=True)
def test_a_call_that_never_ran_shows_no_duration(as_operator, operator, run_queued_steps):
    session = start_session(
        goal="Keep notes",
        owner=operator,
        script=[[tool_use("write_file", "w1", path="notes.md", content="x")], [text("Fine.")]],
    )
    run_queued_steps()
    write = ToolCall.objects.get(session=session)
    waiting = parse(as_operator.get(detail_url(session)).content).by_id(f"call-{write.pk}")
    approvals.decide(write.pk, user=operator, approve=False, reason="not now")

    card = parse(as_operator.get(detail_url(session)).content).by_id(f"call-{write.pk}")

    assert card.one(testid="call-result").attrs["data-status"] == "rejected"
    assert card.all(testid="call-duration") == []
    assert "What it will do" in waiting.text
    assert "What it was to do" in card.text


@pytest.mark.django_db(transaction=True)
def test_model_and_tool_output_is_shown_as_text_never_run(as_operator, operator, run_queued_steps):
    session = start_session(
        goal=f"Goal {HOSTILE}",
        owner=operator,
        script=[
            [
                text(f"Reply {HOSTILE}"),
                tool_use("write_file", "w1", path="x.html", content=HOSTILE),
            ],
        ],
    )
    run_queued_steps()

    for url in (detail_url(session), reverse("approvals"), reverse("sessions")):
        body = as_operator.get(url).content.decode()
        assert HOSTILE not in body
        assert "&lt;script&gt;alert(" in body
        # The only scripts on the page are the project's own.
        scripts = parse(body).all(tag="script")
        assert all(script.attrs.get("src", "").startswith("/static/") for script in scripts)


@pytest.mark.django_db
def test_the_sessions_list_shows_status_owner_cost_and_waiting_calls(as_viewer, operator):
    session = start_session(goal="Count things", owner=operator)
    AgentSession.objects.filter(pk=session.pk).update(cost=Decimal("0.0123"))

    page = parse(as_viewer.get(reverse("sessions")).content)

    row = page.by_id(f"session-row-{session.pk}")
    assert row.attrs["data-status"] == "queued"
    assert "olivia" in row.text
    assert row.one(testid="session-cost").text == "$0.0123"
    assert row.one(testid="session-waiting").text == "0"
    assert page.one(testid="sessions-table")


@pytest.mark.django_db(transaction=True)
def test_the_owner_cancels_from_the_page(client, django_user_model, run_queued_steps):
    owner = django_user_model.objects.create_user("otto", password="pw-otto-123")
    client.force_login(owner)
    session = start_session(
        goal="Wait for me",
        owner=owner,
        script=[[tool_use("write_file", "w1", path="a", content="")]],
    )
    run_queued_steps()

    response = client.post(reverse("session-cancel", args=[session.pk]), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    session.refresh_from_db()
    assert session.status == SessionStatus.CANCELLED
    assert ToolCall.objects.get(session=session).state == CallState.REJECTED
    fragment = parse(response.content)
    assert fragment.one(testid="notice").attrs["data-level"] == "success"
    assert fragment.by_id(f"session-header-{session.pk}").attrs["data-status"] == "cancelled"

    again = client.post(reverse("session-cancel", args=[session.pk]), HTTP_HX_REQUEST="true")
    assert again.status_code == 409
    assert "has already ended (Cancelled)" in parse(again.content).one(testid="notice").text


@pytest.mark.django_db
def test_only_the_owner_or_a_decider_may_cancel(as_viewer, operator):
    session = start_session(goal="Not yours", owner=operator)

    page = parse(as_viewer.get(detail_url(session)).content)
    response = as_viewer.post(reverse("session-cancel", args=[session.pk]))

    assert not page.all(testid="cancel-session")
    assert response.status_code == 403
    session.refresh_from_db()
    assert session.status == SessionStatus.QUEUED
    assert "Only the session's owner" in parse(response.content).one(testid="notice").text


@pytest.mark.django_db
def test_an_unknown_session_is_a_404(as_operator):
    assert as_operator.get(reverse("session-detail", args=[999])).status_code == 404
    assert as_operator.post(reverse("session-cancel", args=[999])).status_code == 404


@pytest.mark.parametrize("path", ["/sessions/99999/", "/sessions/abc/", "/no/such/page/"])
def test_a_page_that_is_not_there_says_so_within_the_dashboard(as_operator, path):
    response = as_operator.get(path)

    assert response.status_code == 404
    page = parse(response.text)
    assert page.one(testid="error-page").one(tag="h1").text == "Not found"
    assert page.one(tag="nav")  # the way back: the dashboard's own navigation


def test_a_start_refused_after_the_form_checked_it_is_shown_on_the_form(
    as_operator, no_api_keys, monkeypatch
):
    # What the form checked can change before the session is made (a key removed).
    def provider_gone(name: str) -> None:
        raise ValueError("Anthropic (Claude) is not configured here.")

    monkeypatch.setattr(sessions, "check_provider", provider_gone)

    response = as_operator.post(NEW, valid_start())

    assert response.status_code == 400
    assert "is not configured here" in parse(response.content).one(role="alert").text
    assert not AgentSession.objects.exists()
