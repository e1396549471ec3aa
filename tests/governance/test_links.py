"""Path rules and symbolic links: the file tools follow links that stay inside the
session's workspace, so a rule judges the path a call really writes, not only the path
it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentdash import policy, toolbox
from agentdash.approvals import decide as decide_call
from agentdash.models import AuditEvent, ExecutionResult, PolicyRule
from agentdash.policy import preview_rule
from agentdash.states import CallState, SessionStatus
from tests.governance.helpers import calls_of, make_rule, reload, start, text, tool_use


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """secrets/ with a key, docs -> secrets, key.txt -> secrets/key, notes/ a real
    directory, loop_a <-> loop_b, and out -> a directory outside."""
    root = tmp_path / "workspace"
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "key").write_text("k")
    (root / "notes").mkdir()
    (root / "docs").symlink_to("secrets", target_is_directory=True)
    (root / "key.txt").symlink_to("secrets/key")
    (root / "loop_a").symlink_to("loop_b")
    (root / "loop_b").symlink_to("loop_a")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    return root


def rule(action: str, glob: str) -> PolicyRule:
    return PolicyRule(
        name=f"{action} {glob}",
        tool="write_file",
        action=action,
        conditions=[{"kind": "path", "glob": glob}],
    )


def decide(path: str, workspace: Path | None, *rules: PolicyRule) -> policy.PolicyDecision:
    """Decide write_file(path) with these unsaved rules, in their order."""
    tool = toolbox.catalogue().get("write_file")
    assert tool is not None
    compiled = policy.RuleSet(tuple(policy.CompiledRule.of(r) for r in rules))
    arguments: dict[str, Any] = {"path": path, "content": "x"}
    return compiled.decide(tool, arguments, workspace=workspace)


@pytest.mark.parametrize(
    "path",
    [
        "docs/x",  # through a directory link
        "docs/new/deeper.txt",  # a file not there yet, under the link
        "key.txt",  # a link to a file
        "./docs",  # the link itself: secrets/** covers secrets
    ],
)
def test_a_deny_on_a_glob_catches_a_path_that_leads_into_it(workspace, path):
    assert decide(path, workspace, rule("deny", "secrets/**")).action == "deny"
    # The path as written alone does not match: the link is what the rule now sees.
    assert decide(path, None, rule("deny", "secrets/**")).action != "deny"


def test_an_ask_on_a_glob_catches_a_path_that_leads_into_it(workspace):
    decision = decide("docs/x", workspace, rule("ask", "secrets/**"))
    assert (decision.action, decision.rule_name) == ("ask", "ask secrets/**")


def test_the_path_as_written_still_matches(workspace):
    assert decide("secrets/x", workspace, rule("deny", "secrets/**")).action == "deny"
    assert decide("docs/x", workspace, rule("deny", "docs/**")).action == "deny"


def test_a_link_does_not_widen_an_allow(workspace):
    # docs/x really writes secrets/x: an allow on docs/** does not cover it, nor does an
    # allow on secrets/** cover the name docs/x; both fall to write_file's default (ask).
    for glob in ("docs/**", "secrets/**"):
        decision = decide("docs/x", workspace, rule("allow", glob))
        assert (decision.action, decision.rule) == ("ask", "default:requires_confirmation")
    # An allow placed before a deny does not let the link through either.
    both = (rule("allow", "docs/**"), rule("deny", "secrets/**"))
    assert decide("docs/x", workspace, *both).action == "deny"
    # Where no link is involved, an allow allows as before.
    assert decide("notes/a.md", workspace, rule("allow", "notes/**")).action == "allow"
    assert decide("secrets/x", workspace, rule("allow", "secrets/**")).action == "allow"


@pytest.mark.parametrize(
    "path", ["loop_a", "loop_a/x", "out/x", "out", "docs/../key.txt", "/etc/passwd", "a\0b"]
)
def test_a_path_the_workspace_refuses_is_judged_as_written(workspace, path):
    assert decide(path, workspace, rule("deny", "secrets/**")).action == "ask"  # the default
    assert decide(path, workspace, rule("deny", "**")).action == "deny"


def test_a_missing_workspace_judges_paths_as_written(tmp_path):
    missing = tmp_path / "never-created"
    assert decide("docs/x", missing, rule("deny", "secrets/**")).action == "ask"
    assert decide("secrets/x", missing, rule("deny", "secrets/**")).action == "deny"


@pytest.fixture
def denial() -> PolicyRule:
    return make_rule(
        name="no secrets",
        tool="write_file",
        action="deny",
        conditions=[{"kind": "path", "glob": "secrets/**"}],
    )


@pytest.mark.django_db(transaction=True)
def test_the_runner_denies_a_write_through_a_link_and_nothing_is_written(run_queued_steps, denial):
    session = start(
        [tool_use("write_file", "w1", path="docs/stolen.txt", content="x")],
        [text("Understood.")],
    )
    (session.workspace / "secrets").mkdir(parents=True)
    (session.workspace / "docs").symlink_to("secrets", target_is_directory=True)
    run_queued_steps()

    [call] = calls_of(session)
    assert call.state == CallState.REJECTED
    assert call.policy_rule == f"rule:{denial.pk}"
    assert ExecutionResult.objects.get(tool_call=call).status == "permission_denied"
    assert not (session.workspace / "secrets" / "stolen.txt").exists()


@pytest.mark.django_db(transaction=True)
def test_the_preview_sees_through_the_same_links(run_queued_steps):
    session = start(
        [
            tool_use("write_file", "w1", path="docs/x.txt", content="x"),
            tool_use("write_file", "w2", path="notes/y.txt", content="y"),
        ],
    )
    (session.workspace / "secrets").mkdir(parents=True)
    (session.workspace / "docs").symlink_to("secrets", target_is_directory=True)
    run_queued_steps()
    assert [call.state for call in calls_of(session)] == [CallState.PENDING_APPROVAL] * 2

    rows = preview_rule(rule("deny", "secrets/**"), last=10)

    assert [(row.call.arguments["path"], row.old.action, row.new.action) for row in rows] == [
        ("notes/y.txt", "ask", "ask"),
        ("docs/x.txt", "ask", "deny"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_link_made_after_the_call_was_decided_is_caught_before_it_runs(
    run_queued_steps, operator, denial
):
    # Proposed and approved while docs/ was a plain folder; by the time it runs, docs/
    # leads into secrets/ (as an earlier call of the same reply could have made it).
    session = start(
        [tool_use("write_file", "w1", path="docs/stolen.txt", content="x")],
        [text("Understood.")],
    )
    run_queued_steps()
    [call] = calls_of(session)
    assert call.state == CallState.PENDING_APPROVAL
    decide_call(call.pk, user=operator, approve=True)
    (session.workspace / "secrets").mkdir(parents=True)
    (session.workspace / "docs").symlink_to("secrets", target_is_directory=True)

    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.REJECTED
    assert call.policy_rule == f"rule:{denial.pk}"
    result = ExecutionResult.objects.get(tool_call=call)
    assert result.status == "permission_denied"
    assert "no secrets" in result.observation
    assert not (session.workspace / "secrets" / "stolen.txt").exists()
    rejected = AuditEvent.objects.get(tool_call_id=call.pk, kind="toolcall.rejected")
    assert (rejected.actor, rejected.payload["from"]) == ("policy", "approved")
    assert reload(session).status == SessionStatus.COMPLETED  # the model read why


@pytest.mark.django_db(transaction=True)
def test_a_rule_that_came_after_the_approval_decides_too(run_queued_steps, operator):
    session = start(
        [tool_use("write_file", "w1", path="notes.md", content="x")],
        [text("Understood.")],
    )
    run_queued_steps()
    [call] = calls_of(session)
    decide_call(call.pk, user=operator, approve=True)
    make_rule(name="frozen", tool="write_file", action="deny")

    run_queued_steps()

    call.refresh_from_db()
    assert call.state == CallState.REJECTED
    assert not (session.workspace / "notes.md").exists()
