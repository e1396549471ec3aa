"""Stored rules in the running system: deciding calls, checked when saved, cached, audited."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agentdash import audit, policy, toolbox
from agentdash.approvals import InvalidEdit, decide
from agentdash.models import AuditEvent, ExecutionResult, Message, PolicyRule
from agentdash.policy_forms import PolicyRuleForm
from agentdash.states import CallState, SessionStatus
from tests.governance.helpers import (
    audit_kinds,
    calls_of,
    make_rule,
    paused_on,
    reload,
    start,
    text,
    tool_use,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_denied_call_never_runs_and_the_model_reads_which_rule_denied_it(run_queued_steps):
    rule = make_rule(
        name="no recursive deletes",
        description="Deleting trees needs a ticket.",
        tool="run_shell",
        action="deny",
        conditions=[{"kind": "command", "pattern": r"\brm\s+-rf\b"}],
    )
    session = start(
        [tool_use("run_shell", "s1", command="rm -rf notes")],
        [text("Understood.")],
    )
    (session.workspace / "notes").mkdir(parents=True)
    run_queued_steps()

    [call] = calls_of(session)
    assert call.state == CallState.REJECTED
    assert call.policy_rule == f"rule:{rule.pk}"
    assert (session.workspace / "notes").is_dir()  # it never ran
    [result] = ExecutionResult.objects.filter(tool_call=call)
    assert result.status == "permission_denied"
    [block] = Message.objects.get(session=session, index=2).content
    assert block["is_error"] is True
    assert f"rule {rule.pk} “no recursive deletes”" in block["content"]
    assert "Deleting trees needs a ticket. It was not run." in block["content"]
    assert reload(session).status == SessionStatus.COMPLETED
    event = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.rejected")
    assert event.actor == "policy"
    assert (event.payload["rule_id"], event.payload["rule_name"]) == (
        rule.pk,
        "no recursive deletes",
    )
    assert audit.verify().ok


def test_an_allow_rule_lets_a_confirmation_tool_run_without_asking(run_queued_steps):
    rule = make_rule(
        tool="write_file", action="allow", conditions=[{"kind": "path", "glob": "notes/**"}]
    )
    session = start(
        [
            tool_use("write_file", "w1", path="notes/a.md", content="a"),
            tool_use("write_file", "w2", path="b.md", content="b"),
        ]
    )
    run_queued_steps()

    inside, outside = calls_of(session)
    assert inside.state == CallState.SUCCEEDED
    assert (session.workspace / "notes/a.md").read_text() == "a"
    assert outside.state == CallState.PENDING_APPROVAL
    assert outside.policy_rule == "default:requires_confirmation"
    allowed = AuditEvent.objects.get(tool_call_id=inside.pk, kind="toolcall.auto_approved")
    assert allowed.payload["rule"] == f"rule:{rule.pk}"


def test_an_ask_rule_holds_a_call_the_hints_would_allow(run_queued_steps):
    make_rule(tool="list_dir", action="ask")
    session = start([tool_use("list_dir", "l1", path=".")])
    run_queued_steps()

    [call] = calls_of(session)
    assert call.state == CallState.PENDING_APPROVAL
    assert reload(session).status == SessionStatus.WAITING_APPROVAL


def test_session_rules_come_before_global_ones(run_queued_steps):
    make_rule(tool="list_dir", action="deny", position=-100)
    trusted = start([tool_use("list_dir", "l1", path=".")])
    other = start([tool_use("list_dir", "l1", path=".")])
    make_rule(tool="list_dir", action="allow", session=trusted, position=100)
    run_queued_steps()

    assert calls_of(trusted)[0].state == CallState.SUCCEEDED
    assert calls_of(other)[0].state == CallState.REJECTED


def test_a_disabled_rule_decides_nothing(run_queued_steps):
    make_rule(tool="list_dir", action="deny", enabled=False)
    session = start([tool_use("list_dir", "l1", path=".")])
    run_queued_steps()
    assert calls_of(session)[0].state == CallState.SUCCEEDED


def test_the_rules_are_read_once_per_change_not_once_per_call(django_assert_num_queries):
    tool = toolbox.catalogue().get("list_dir")
    assert policy.decide_call(tool, {"path": "."}).action == "allow"
    with django_assert_num_queries(1):  # the version token, and nothing else
        assert policy.decide_call(tool, {"path": "."}).action == "allow"

    rule = make_rule(tool="list_dir", action="deny")
    assert policy.decide_call(tool, {"path": "."}).action == "deny"
    # Bulk changes count too: the admin's actions and queryset updates.
    PolicyRule.objects.filter(pk=rule.pk).update(enabled=False)
    assert policy.decide_call(tool, {"path": "."}).action == "allow"
    PolicyRule.objects.filter(pk=rule.pk).update(enabled=True)
    assert policy.decide_call(tool, {"path": "."}).action == "deny"
    PolicyRule.objects.all().delete()
    assert policy.decide_call(tool, {"path": "."}).action == "allow"


def rule_errors(**data: object) -> dict[str, list[str]]:
    form = PolicyRuleForm(data={"name": "test", "position": 0, "action": "deny", **data})
    assert not form.is_valid()
    return form.errors


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"tool": "run_shell", "conditions": '[{"kind": "command", "pattern": "(rm"}]'},
            "conditions",
            "Condition 1: pattern: not a valid regular expression",
        ),
        (
            {"tool": "http_fetch", "conditions": '[{"kind": "path", "glob": "a/*"}]'},
            "conditions",
            "Condition 1: http_fetch has no argument 'path'",
        ),
        (
            {
                "tool": "run_shell",
                "conditions": '[{"kind": "number", "argument": "command", "min": 1}]',
            },
            "conditions",
            "'command' is not a integer or number argument",
        ),
        (
            {
                "tool": "run_shell",
                "conditions": '[{"kind": "number", "argument": "timeout_seconds"}]',
            },
            "conditions",
            "give a minimum, a maximum or both",
        ),
        ({"conditions": '[{"kind": "regex"}]'}, "conditions", "Condition 1:"),
        ({"conditions": '{"kind": "path"}'}, "conditions", "Conditions must be a list"),
        (
            {"tool": "http_fetch", "conditions": '[{"kind": "host", "host": "https://x.org/"}]'},
            "conditions",
            "is not a host name",
        ),
        ({"tool": "rm_everything"}, "tool", "No tool is called 'rm_everything'"),
        ({"tag": "databases"}, "tag", "No tool has the tag 'databases'"),
        ({"tool": "list_dir", "hint": "destructive"}, "__all__", "name, tag and hint together"),
        ({"tool": "list_dir", "approvals_required": 2}, "approvals_required", "Only a rule"),
    ],
)
def test_a_rule_that_could_not_be_applied_is_a_form_error(data, field, words):
    errors = rule_errors(**data)
    assert any(words in message for message in errors[field]), errors


def test_empty_approval_options_and_conditions_mean_the_defaults():
    form = PolicyRuleForm(
        data={"name": "x", "position": 0, "action": "deny", "tool": "run_shell", "conditions": ""}
    )
    assert form.is_valid(), form.errors
    assert (form.instance.conditions, form.instance.approvals_required) == ([], 1)


def test_a_session_rule_is_checked_against_that_sessions_tools():
    session = start([text("hi")], enabled_tools=["read_file"])
    form = PolicyRuleForm(
        data={"name": "x", "position": 0, "action": "allow", "tool": "run_shell"}, session=session
    )
    assert not form.is_valid()
    assert "The tools: read_file." in form.errors["tool"][0]


def test_a_valid_rule_is_saved_and_audited_with_its_author(operator):
    form = PolicyRuleForm(
        data={
            "name": "no secrets",
            "enabled": "on",
            "position": 0,
            "action": "deny",
            "tag": "fs",
            "conditions": '[{"kind": "path", "glob": "secrets/**"}]',
        }
    )
    assert form.is_valid(), form.errors
    rule = form.save_by(operator)

    assert rule.created_by == operator
    event = AuditEvent.objects.get(kind="policy.rule_created")
    assert event.actor == "user:olivia"
    assert event.payload["conditions"] == [{"kind": "path", "glob": "secrets/**"}]
    assert event.payload["enabled"] is True

    rule_id = rule.pk
    policy.delete_rule(rule, user=operator)
    assert not PolicyRule.objects.exists()
    assert AuditEvent.objects.get(kind="policy.rule_deleted").payload["rule_id"] == rule_id
    assert audit.verify().ok


def test_saving_a_bad_rule_through_the_service_saves_nothing(operator):
    rule = PolicyRule(name="x", action="allow", tool="nope")
    with pytest.raises(ValidationError):
        policy.save_rule(rule, user=operator)
    assert not PolicyRule.objects.exists()
    assert not AuditEvent.objects.filter(kind__startswith="policy.").exists()


def test_the_audit_names_the_default_that_decided(run_queued_steps):
    session = start([tool_use("list_dir", "l1", path=".")])
    run_queued_steps()
    [call] = calls_of(session)
    assert audit_kinds(call)[0] == "toolcall.auto_approved"
    event = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.auto_approved")
    assert event.payload["rule"] == "default:read_only"


def test_an_edit_cannot_carry_a_call_past_a_deny_rule(run_queued_steps, operator):
    make_rule(tool="write_file", action="deny", conditions=[{"kind": "path", "glob": "secrets/**"}])
    (call,) = paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.md", content="x"))

    with pytest.raises(InvalidEdit, match="The policy denies these arguments"):
        decide(
            call.pk,
            user=operator,
            approve=True,
            edited_arguments={"path": "secrets/key.txt", "content": "x"},
        )

    call.refresh_from_db()
    assert call.state == CallState.PENDING_APPROVAL
    assert not call.decisions.exists()
    decide(call.pk, user=operator, approve=True, edited_arguments={"path": "b.md", "content": "y"})
    run_queued_steps()
    assert (call.session.workspace / "b.md").read_text() == "y"
    assert not (call.session.workspace / "secrets").exists()
