"""What a rule matches and what decides when none does: no database, the real built-in tools."""

from __future__ import annotations

from typing import Any

import pytest

from agentdash import policy, toolbox
from agentdash.models import PolicyRule
from tools import Tool


def decide(tool_name: str, arguments: dict[str, Any], *rules: PolicyRule) -> policy.PolicyDecision:
    """Decide a call of a built-in tool with these (unsaved) rules, in their order."""
    tool = toolbox.catalogue().get(tool_name)
    assert tool is not None
    ordered = [policy.CompiledRule.of(rule) for rule in rules]
    return policy.RuleSet(tuple(ordered)).decide(tool, arguments)


def deny(**fields: Any) -> PolicyRule:
    return PolicyRule(name="test", action="deny", **fields)


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("secrets/**", "secrets/a/b.key", True),
        ("secrets/**", "secrets", True),  # ** also stands for no segment at all
        ("secrets/**", "src/secrets/a.key", False),
        ("**/*.pem", "a.pem", True),
        ("**/*.pem", "x/y/a.pem", True),
        ("**/*.pem", "x/y/a.pem.txt", False),
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),  # * stays within one segment
        ("src/*/test_?.py", "src/app/test_a.py", True),
        ("secrets/**", "src/../secrets/k", True),  # judged after normalising
        ("./notes/*", "notes/a.md", True),
        ("[abc].txt", "b.txt", True),
    ],
)
def test_a_path_condition_matches_globs_by_segment(glob, path, matches):
    rule = deny(tool="read_file", conditions=[{"kind": "path", "glob": glob}])
    assert (decide("read_file", {"path": path}, rule).action == "deny") is matches


@pytest.mark.parametrize(
    ("host", "url", "matches"),
    [
        ("example.com", "https://example.com/x", True),
        ("example.com", "https://EXAMPLE.com./x", True),
        ("example.com", "https://api.example.com/", False),
        ("example.com", "https://example.com.evil.net/", False),
        ("example.com", "https://example.com@evil.net/", False),  # user info is not the host
        ("example.com", "example.com/no-scheme", True),
        ("*.example.com", "https://api.example.com:8443/x", True),
        ("*.example.com", "https://example.com/", False),
        ("*.example.com", "https://badexample.com/", False),
        ("127.0.0.1", "http://127.0.0.1:8000/", True),
    ],
)
def test_a_host_condition_matches_the_url_host_exactly_or_by_suffix(host, url, matches):
    rule = deny(tool="http_fetch", conditions=[{"kind": "host", "host": host}])
    assert (decide("http_fetch", {"url": url}, rule).action == "deny") is matches


@pytest.mark.parametrize(
    ("command", "matches"),
    [("cd x && rm -rf /", True), ("rm  -rf build", True), ("rmdir x", False), ("ls -la", False)],
)
def test_a_command_condition_searches_a_regular_expression(command, matches):
    rule = deny(tool="run_shell", conditions=[{"kind": "command", "pattern": r"\brm\s+-rf\b"}])
    arguments = {"command": command, "timeout_seconds": 30}
    assert (decide("run_shell", arguments, rule).action == "deny") is matches


@pytest.mark.parametrize(("seconds", "matches"), [(5, False), (10, True), (60, True), (61, False)])
def test_a_number_condition_holds_within_its_bounds(seconds, matches):
    rule = deny(
        tool="run_python",
        conditions=[{"kind": "number", "argument": "timeout_seconds", "min": 10, "max": 60}],
    )
    arguments = {"code": "print(1)", "timeout_seconds": seconds}
    assert (decide("run_python", arguments, rule).action == "deny") is matches


def test_every_condition_of_a_rule_must_hold():
    rule = deny(
        tool="run_shell",
        conditions=[
            {"kind": "command", "pattern": "^curl"},
            {"kind": "number", "argument": "timeout_seconds", "max": 10},
        ],
    )
    assert decide("run_shell", {"command": "curl x", "timeout_seconds": 5}, rule).action == "deny"
    assert decide("run_shell", {"command": "curl x", "timeout_seconds": 50}, rule).action == "ask"


def test_a_condition_on_an_argument_the_call_does_not_carry_does_not_hold():
    rule = deny(tool="read_file", conditions=[{"kind": "path", "glob": "**"}])
    assert decide("read_file", {"encoding": "utf-8"}, rule).rule == "default:read_only"


def test_a_rule_matches_by_tool_glob_tag_and_hint():
    by_glob = deny(tool="run_*")
    by_tag = deny(tag="fs")
    by_hint = deny(hint="open_world")
    assert decide("run_python", {"code": ""}, by_glob).action == "deny"
    assert decide("list_dir", {"path": "."}, by_glob).action == "allow"
    assert decide("list_dir", {"path": "."}, by_tag).action == "deny"
    assert decide("run_shell", {"command": "ls"}, by_tag).action == "ask"
    assert decide("http_fetch", {"url": "https://a.example"}, by_hint).action == "deny"
    assert decide("write_file", {"path": "a", "content": ""}, by_hint).action == "ask"


def test_the_first_matching_rule_decides():
    no_rm = deny(tool="run_shell", conditions=[{"kind": "command", "pattern": r"\brm\b"}])
    shell_ok = PolicyRule(name="shell is fine", tool="run_shell", action="allow")
    rm = {"command": "rm x", "timeout_seconds": 30}
    ls = {"command": "ls", "timeout_seconds": 30}

    assert decide("run_shell", rm, no_rm, shell_ok).action == "deny"
    assert decide("run_shell", ls, no_rm, shell_ok).action == "allow"
    assert decide("run_shell", rm, shell_ok, no_rm).action == "allow"


@pytest.mark.parametrize(
    ("tool_name", "action", "rule"),
    [
        ("list_dir", "allow", "default:read_only"),
        ("read_file", "allow", "default:read_only"),
        ("write_file", "ask", "default:requires_confirmation"),
        ("run_python", "ask", "default:requires_confirmation"),
        # Read-only, but it reaches outside the sandbox: asking wins.
        ("http_fetch", "ask", "default:requires_confirmation"),
    ],
)
def test_without_a_matching_rule_the_hints_of_the_built_in_tools_decide(tool_name, action, rule):
    tool = toolbox.catalogue().get(tool_name)
    decision = policy.default_decision(tool)
    assert (decision.action, decision.rule) == (action, rule)


def a_tool(**hints: bool) -> Tool:
    def noop() -> None:
        """Does nothing."""

    return Tool.from_function(noop, **hints)


@pytest.mark.parametrize(
    ("hints", "action", "rule"),
    [
        ({}, "allow", "default:no_hint"),
        ({"read_only": True}, "allow", "default:read_only"),
        ({"destructive": True}, "ask", "default:destructive"),
        ({"read_only": True, "open_world": True}, "ask", "default:open_world"),
        ({"requires_confirmation": True}, "ask", "default:requires_confirmation"),
    ],
)
def test_hints_decide_for_any_tool(hints, action, rule):
    decision = policy.default_decision(a_tool(**hints))
    assert (decision.action, decision.rule) == (action, rule)
    assert decision.reason.startswith("noop ")


def test_a_rule_that_cannot_be_read_asks_rather_than_being_ignored():
    broken = PolicyRule(
        pk=7, name="no rm", tool="run_shell", action="deny", conditions=[{"kind": "command"}]
    )
    decision = decide("run_shell", {"command": "rm -rf /"}, broken)
    assert decision.action == "ask"
    assert "could not be read" in decision.reason
    assert decision.rule == "rule:7"


def test_an_ask_rule_carries_its_approval_options():
    rule = PolicyRule(
        pk=3,
        name="two people for the shell",
        tool="run_shell",
        action="ask",
        approvals_required=2,
        four_eyes=True,
    )
    decision = decide("run_shell", {"command": "ls"}, rule)
    assert (decision.approvals_required, decision.four_eyes) == (2, True)
    assert decision.audit_payload() == {
        "rule": "rule:3",
        "rule_id": 3,
        "rule_name": "two people for the shell",
        "action": "ask",
        "reason": "Held for an operator by rule 3 “two people for the shell”",
        "required_group": "",
        "approvals_required": 2,
        "four_eyes": True,
    }
