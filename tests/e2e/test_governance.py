"""Governance in the browser: a rule written on the Policies page decides the next call,
and a step's calls are approved together from the queue, each with its deadline shown."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from agentdash.models import ApprovalDecision, AuditEvent, PolicyRule
from agentdash.states import CallState
from tests.e2e import scripts
from tests.e2e.browser import wait_until_live

pytestmark = pytest.mark.e2e


def test_a_deny_rule_written_on_the_policies_page_stops_the_next_call(open_page, operator):
    page = open_page(operator, "/approvals/")
    page.get_by_role("link", name="Policies").click()
    page.get_by_test_id("new-rule").click()
    page.fill("#id_name", "No notes")
    page.fill("#id_description", "Notes are kept elsewhere.")
    page.fill("#id_tool", "write_file")
    page.select_option("#id_action", "deny")

    page.get_by_test_id("preview-rule").click()
    expect(page.get_by_test_id("preview-summary")).to_contain_text("No recorded calls")
    assert not PolicyRule.objects.exists()
    page.get_by_test_id("save-rule").click()

    expect(page.get_by_test_id("rule-row")).to_have_attribute("data-action", "deny")
    rule = PolicyRule.objects.get()
    session = scripts.write_then_finish(operator)
    session_page = open_page(operator, f"/sessions/{session.pk}/")
    wait_until_live(session_page)
    card = session_page.locator("#transcript [data-testid=call-card]")
    expect(card).to_have_attribute("data-state", CallState.REJECTED)
    expect(card).to_contain_text("No notes")
    assert session.tool_calls.get().policy_rule == f"rule:{rule.pk}"


def test_two_calls_of_one_step_are_approved_together(open_page, operator, second_operator):
    queue = open_page(second_operator, "/approvals/")
    wait_until_live(queue)
    session = scripts.start(
        operator,
        "Write two notes",
        [
            scripts.tool_use("write_file", path="a.md", content="a\n"),
            scripts.tool_use("write_file", path="b.md", content="b\n"),
        ],
        [scripts.text("Both written.")],
    )
    cards = queue.locator(f"#queue-list > [data-session-id='{session.pk}']")
    expect(cards).to_have_count(2)
    for countdown in cards.get_by_test_id("countdown").all():
        expect(countdown).to_have_text(re.compile(r"^expires in \d+:\d\d(:\d\d)?$"))

    batch = queue.get_by_test_id("queue-batch")
    expect(batch.get_by_test_id("batch-call")).to_have_count(2)
    batch.get_by_test_id("batch-approve").click()

    expect(queue.get_by_test_id("notice")).to_contain_text("Approved 2 calls")
    expect(cards).to_have_count(0)
    expect(queue.get_by_test_id("queue-batch")).to_have_count(0)
    calls = list(session.tool_calls.order_by("position"))
    assert ApprovalDecision.objects.filter(tool_call__in=calls, approved=True).count() == 2
    for call in calls:
        approvals = AuditEvent.objects.filter(tool_call_id=call.pk, kind="toolcall.approved")
        assert approvals.count() == 1


def test_approve_and_allow_for_the_session_lets_the_next_call_run(
    open_page, operator, second_operator
):
    queue = open_page(second_operator, "/approvals/")
    wait_until_live(queue)
    session = scripts.start(
        operator,
        "Write a note twice",
        [scripts.tool_use("write_file", path="a.md", content="one\n")],
        [scripts.tool_use("write_file", path="a.md", content="two\n")],
        [scripts.text("Written twice.")],
    )
    card = queue.locator(f"#queue-list > [data-session-id='{session.pk}']")

    card.get_by_test_id("approve-for-session").click()

    expect(queue.get_by_test_id("notice")).to_contain_text(
        "write_file is allowed for the rest of the session"
    )
    rules = open_page(second_operator, f"/sessions/{session.pk}/policies/")
    expect(rules.get_by_test_id("rule-row")).to_have_attribute("data-action", "allow")
    expect(rules.get_by_test_id("rule-name")).to_have_text("Allow write_file for this session")
    session_page = open_page(operator, f"/sessions/{session.pk}/")
    expect(session_page.get_by_test_id("session-header")).to_have_attribute(
        "data-status", "completed"
    )
    states = list(session.tool_calls.order_by("message__index").values_list("state", flat=True))
    assert states == [CallState.SUCCEEDED, CallState.SUCCEEDED]
    assert ApprovalDecision.objects.filter(tool_call__session=session).count() == 1


# Counts the notifications the page shows, through the browser's own Notification, and
# makes the page report itself hidden (a headless page is never in the background).
WATCH_NOTIFICATIONS = """() => {
    window.__shown = [];
    const Real = window.Notification;
    window.Notification = class extends Real {
        constructor(title, options) {
            super(title, options);
            window.__shown.push({ title, tag: options.tag, body: options.body });
        }
    };
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
}"""


def test_a_hidden_queue_notifies_of_a_new_call_once_the_operator_opted_in(
    open_page, server, operator, second_operator
):
    queue = open_page(second_operator, "/approvals/")
    wait_until_live(queue)
    toggle = queue.get_by_test_id("notify-toggle")
    expect(toggle).to_have_text("Notifications: off")
    queue.context.grant_permissions(["notifications"], origin=server.url)

    toggle.click()

    expect(toggle).to_have_text("Notifications: on")
    queue.evaluate(WATCH_NOTIFICATIONS)
    session = scripts.write_then_finish(operator)
    card = queue.locator(f"#queue-list > [data-session-id='{session.pk}']")
    expect(card).to_have_count(1)
    shown = queue.evaluate("window.__shown")
    assert shown == [
        {
            "title": "write_file waits for approval",
            "tag": f"queue-card-{card.get_attribute('data-call-id')}",
            "body": "Keep notes of the plan",
        }
    ]
