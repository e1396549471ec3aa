"""A rule's preview: what it would have decided for recorded calls, before it is saved."""

from __future__ import annotations

import pytest

from agentdash.models import AuditEvent, PolicyRule
from agentdash.policy import preview_rule
from agentdash.policy_forms import PolicyRuleForm
from tests.governance.helpers import make_rule, start, tool_use

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def recorded(run_queued_steps):
    """Two sessions' recorded calls: list_dir, read_file, write_file, then run_shell."""
    sessions = [
        start(
            [
                tool_use("list_dir", "c1", path="."),
                tool_use("read_file", "c2", path="missing.txt"),
                tool_use("write_file", "c3", path="a.txt", content="a"),
                tool_use("run_shell", "c4", command="ls"),
            ]
        )
        for _ in range(2)
    ]
    run_queued_steps()
    return sessions


def summary(rows) -> list[tuple[str, str, str, bool]]:
    return [(row.call.tool_name, row.old.action, row.new.action, row.changed) for row in rows]


def test_a_new_rule_is_previewed_on_the_latest_calls_without_being_saved(recorded):
    events = AuditEvent.objects.count()
    form = PolicyRuleForm(
        data={"name": "no files", "position": 0, "enabled": "on", "action": "deny", "tag": "fs"}
    )
    rows = form.preview(last=4)

    assert summary(rows) == [  # newest first: the second session's calls
        ("run_shell", "ask", "ask", False),
        ("write_file", "ask", "deny", True),
        ("read_file", "allow", "deny", True),
        ("list_dir", "allow", "deny", True),
    ]
    assert {row.call.session_id for row in rows} == {recorded[1].pk}
    assert rows[1].new.rule == "rule:new"
    assert rows[1].old.rule == "default:requires_confirmation"
    assert not PolicyRule.objects.exists()
    assert AuditEvent.objects.count() == events


def test_an_edited_rule_is_previewed_in_place_of_its_stored_version(recorded):
    rule = make_rule(tool="list_dir", action="deny")
    rule.action = "ask"

    rows = [row for row in preview_rule(rule, last=8) if row.changed]

    assert [(r.call.tool_name, r.old.action, r.new.action) for r in rows] == [
        ("list_dir", "deny", "ask"),
        ("list_dir", "deny", "ask"),
    ]
    assert PolicyRule.objects.get(pk=rule.pk).action == "deny"


def test_a_session_rule_is_previewed_on_that_sessions_calls_only(recorded):
    first = recorded[0]
    make_rule(tool="run_shell", action="deny", position=-5)  # global: tried after session rules
    candidate = PolicyRule(name="shell ok here", session=first, tool="run_shell", action="allow")

    rows = preview_rule(candidate, last=100)

    assert {row.call.session_id for row in rows} == {first.pk}
    assert [summary([r])[0] for r in rows if r.changed] == [("run_shell", "deny", "allow", True)]


def test_a_disabled_candidate_changes_nothing(recorded):
    candidate = PolicyRule(name="off", tool="list_dir", action="deny", enabled=False)
    assert not any(row.changed for row in preview_rule(candidate, last=100))
