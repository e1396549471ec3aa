"""The Policies pages: the ordered rules, the editor with its preview, and who may change them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from agentdash.models import AuditEvent, PolicyRule
from agentdash.states import CallState
from tests.governance.helpers import make_rule, paused_on, reload, start, text, tool_use
from tests.web.html import parse

pytestmark = pytest.mark.django_db(transaction=True)

POLICIES = reverse("policies")
NEW = reverse("policy-new")


@pytest.fixture
def as_operator(client: Client, operator) -> Client:
    client.force_login(operator)
    return client


@pytest.fixture
def as_viewer(client: Client, viewer) -> Client:
    client.force_login(viewer)
    return client


def rule_fields(**fields: Any) -> dict[str, Any]:
    """What the editor posts for a rule: a deny of write_file unless told otherwise."""
    return {
        "name": "No writes",
        "description": "Writes go through review.",
        "position": "0",
        "enabled": "on",
        "tool": "write_file",
        "conditions": "[]",
        "action": "deny",
        "approvals_required": "1",
    } | fields


def kinds() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("kind", flat=True))


def test_the_list_shows_global_rules_in_the_order_they_are_tried(as_operator):
    later = make_rule(tool="run_python", action="ask", position=5)
    first = make_rule(tool="write_file", action="deny", position=1)

    page = parse(as_operator.get(POLICIES).content)

    rows = page.by_id("policy-rules").all(testid="rule-row")
    assert [row.attrs["id"] for row in rows] == [f"rule-{first.pk}", f"rule-{later.pk}"]
    assert [row.attrs["data-action"] for row in rows] == ["deny", "ask"]
    assert page.all(testid="new-rule")


def test_a_saved_rule_is_audited_and_denies_the_next_call(as_operator, run_queued_steps):
    response = as_operator.post(NEW, rule_fields())

    assert response.status_code == 302
    rule = PolicyRule.objects.get()
    assert (rule.session_id, rule.action, rule.tool) == (None, "deny", "write_file")
    assert "policy.rule_created" in kinds()

    session = start([tool_use("write_file", "w1", path="a.txt", content="x")], [text("ok")])
    run_queued_steps()
    call = reload(session).tool_calls.get()
    assert call.state == CallState.REJECTED
    assert call.policy_rule == f"rule:{rule.pk}"


def test_form_errors_are_shown_next_to_their_field_and_nothing_is_saved(as_operator):
    response = as_operator.post(
        NEW,
        rule_fields(
            tool="no_such_tool",
            conditions='[{"kind": "command", "pattern": "("}]',
            name="",
        ),
    )

    assert response.status_code == 422
    page = parse(response.content)
    assert page.all(testid="error-name")
    assert "No tool is called 'no_such_tool'" in page.one(testid="error-tool").text
    assert "not a valid regular expression" in page.one(testid="error-conditions").text
    assert not PolicyRule.objects.exists()
    assert "policy.rule_created" not in kinds()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conditions", "not json"),
        ("conditions", "{}"),
        ("conditions", '[{"kind": "nope"}]'),
        ("conditions", "[1]"),
        ("position", "99999999999999999999999"),
        ("expires_after", "soon"),
        ("approvals_required", "3"),
        ("action", "maybe"),
        ("hint", "sneaky"),
        ("required_group", "424242"),
    ],
)
def test_bad_input_is_a_form_error_never_a_500(as_operator, field, value):
    response = as_operator.post(NEW, rule_fields(**{field: value}))

    assert response.status_code == 422
    assert parse(response.content).all(testid=f"error-{field}")
    assert not PolicyRule.objects.exists()


def test_a_wait_longer_than_a_year_is_a_form_error(as_operator):
    too_long = as_operator.post(NEW, rule_fields(action="ask", expires_after="999999999 00:00:00"))

    assert too_long.status_code == 422
    assert "365 days at most" in parse(too_long.content).one(testid="error-expires_after").text
    assert not PolicyRule.objects.exists()

    a_year = as_operator.post(NEW, rule_fields(action="ask", expires_after="365 00:00:00"))

    assert a_year.status_code == 302
    assert PolicyRule.objects.get().expires_after == timedelta(days=365)


TIMEOUT = '[{"kind": "number", "argument": "timeout_seconds", "%s": %s}]'
PATTERN = '[{"kind": "command", "argument": "code", "pattern": "%s"}]'
NOT_A_NUMBER = "NaN and Infinity are not JSON numbers"


@pytest.mark.parametrize(
    ("conditions", "error"),
    [
        pytest.param(TIMEOUT % ("min", "1e999"), NOT_A_NUMBER, id="1e999"),
        pytest.param(TIMEOUT % ("max", "-Infinity"), NOT_A_NUMBER, id="-Infinity"),
        pytest.param(TIMEOUT % ("min", "NaN"), NOT_A_NUMBER, id="NaN"),
        pytest.param(TIMEOUT % ("min", "9" * 5000), "too many digits", id="5000 digits"),
        pytest.param(PATTERN % "rm\\u0000", "NUL character", id="NUL"),
        pytest.param(PATTERN % "rm\\ud800", "lone surrogate", id="lone surrogate"),
        pytest.param("[" * 100_000 + "]" * 100_000, "Nesting deeper than", id="deep"),
    ],
)
def test_conditions_the_database_cannot_store_are_a_form_error(as_operator, conditions, error):
    # run_python has both arguments: without the check, each rule would be valid.
    response = as_operator.post(NEW, rule_fields(tool="run_python", conditions=conditions))

    assert response.status_code == 422
    page = parse(response.content)
    assert error in page.one(testid="error-conditions").text
    assert page.by_id("id_conditions").text == conditions  # shown as typed
    assert not PolicyRule.objects.exists()


def test_a_preview_of_an_invalid_rule_shows_the_errors_not_a_table(as_operator):
    response = as_operator.post(NEW, rule_fields(preview="1", tool="no_such_tool"))

    assert response.status_code == 422
    page = parse(response.content)
    assert page.all(testid="error-tool")
    assert not page.all(testid="preview-row")


def test_preview_shows_what_the_rule_would_change_without_saving(as_operator, run_queued_steps):
    (written,) = paused_on(
        run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="x")
    )

    response = as_operator.post(NEW, rule_fields(preview="1"))

    assert response.status_code == 200
    assert not PolicyRule.objects.exists()
    page = parse(response.content)
    rows = page.by_id("rule-preview").all(testid="preview-row")
    assert [row.attrs["data-call-id"] for row in rows] == [str(written.pk)]
    assert "data-changed" in rows[0].attrs
    decision = rows[0].one(testid="preview-decision").text
    assert decision.startswith("ask")
    assert "→ deny (rule:new) changed" in decision
    assert "would change the decision of 1." in page.one(testid="preview-summary").text
    # The editor keeps what was typed, to be saved next.
    assert page.by_id("id_name").attrs["value"] == "No writes"


def test_a_rule_that_changes_nothing_shows_unchanged_rows(as_operator, run_queued_steps):
    paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="x"))

    page = parse(as_operator.post(NEW, rule_fields(preview="1", tool="run_python")).content)

    (row,) = page.by_id("rule-preview").all(testid="preview-row")
    assert "data-changed" not in row.attrs


def test_editing_and_deleting_are_audited(as_operator):
    rule = make_rule(tool="write_file", action="ask")

    edited = as_operator.post(
        reverse("policy-edit", args=[rule.pk]), rule_fields(action="allow", name="Writes ok")
    )
    assert edited.status_code == 302
    assert PolicyRule.objects.get().action == "allow"

    deleted = as_operator.post(reverse("policy-delete", args=[rule.pk]))
    assert deleted.status_code == 302
    assert not PolicyRule.objects.exists()
    assert kinds()[-2:] == ["policy.rule_changed", "policy.rule_deleted"]


def test_moving_a_rule_swaps_it_with_its_neighbour(as_operator):
    # Equal positions (the admin allows them) still move: the list is renumbered.
    first = make_rule(tool="write_file", action="ask", position=0)
    second = make_rule(tool="run_python", action="deny", position=0)

    response = as_operator.post(reverse("policy-move", args=[second.pk]), {"direction": "up"})

    assert response.status_code == 302
    rows = parse(as_operator.get(POLICIES).content).all(testid="rule-row")
    assert [row.attrs["id"] for row in rows] == [f"rule-{second.pk}", f"rule-{first.pk}"]
    assert kinds().count("policy.rule_changed") == 2


def test_moving_needs_a_direction(as_operator):
    rule = make_rule(tool="write_file", action="ask", position=3)

    response = as_operator.post(reverse("policy-move", args=[rule.pk]), {"direction": "sideways"})

    assert response.status_code == 302
    assert PolicyRule.objects.get().position == 3


def test_a_session_has_its_own_rules(as_operator, run_queued_steps):
    session = start([text("hello")])
    global_rule = make_rule(tool="run_python", action="deny")

    created = as_operator.post(
        reverse("session-policy-new", args=[session.pk]), rule_fields(action="allow")
    )

    assert created.status_code == 302
    assert created["Location"] == reverse("session-policies", args=[session.pk])
    rule = PolicyRule.objects.exclude(pk=global_rule.pk).get()
    assert rule.session_id == session.pk
    page = parse(as_operator.get(created["Location"]).content)
    assert [row.attrs["id"] for row in page.all(testid="rule-row")] == [f"rule-{rule.pk}"]
    on_session_page = parse(as_operator.get(reverse("session-detail", args=[session.pk])).content)
    assert on_session_page.one(testid="session-policies").attrs["href"] == created["Location"]


def test_others_see_the_rules_read_only_and_cannot_change_them(as_viewer):
    rule = make_rule(tool="write_file", action="ask")

    page = parse(as_viewer.get(POLICIES).content)
    assert page.all(testid="readonly-banner")
    assert not page.all(testid="new-rule")
    assert not page.all(testid="delete-rule")

    assert as_viewer.get(NEW).status_code == 403
    assert as_viewer.post(NEW, rule_fields()).status_code == 403
    assert as_viewer.post(reverse("policy-edit", args=[rule.pk]), rule_fields()).status_code == 403
    assert as_viewer.post(reverse("policy-delete", args=[rule.pk])).status_code == 403
    assert (
        as_viewer.post(reverse("policy-move", args=[rule.pk]), {"direction": "up"}).status_code
        == 403
    )
    assert PolicyRule.objects.get().action == "ask"


def test_missing_rules_and_sessions_are_404(as_operator):
    assert as_operator.get(reverse("policy-edit", args=[999])).status_code == 404
    assert as_operator.post(reverse("policy-delete", args=[999])).status_code == 404
    assert as_operator.get(reverse("session-policies", args=[999])).status_code == 404
    assert as_operator.get(reverse("session-policy-new", args=[999])).status_code == 404
