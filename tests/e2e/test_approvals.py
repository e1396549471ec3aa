"""Operators deciding tool calls in real browsers, each change reaching the others live.

Olivia owns the sessions and watches them; Oscar works the approval queue. Each has a
browser of their own. "Live" is checked, not assumed: a page is marked when it loads,
and the mark must survive until the change shows (a reload would wipe it).
"""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import Locator, Page, expect

from agentdash.models import ApprovalDecision, ToolCall
from agentdash.states import CallState
from tests.e2e import scripts
from tests.e2e.browser import wait_until_live

pytestmark = pytest.mark.e2e

MARK = "window.__agentdashNotReloaded = true"
MARKED = "window.__agentdashNotReloaded === true"


def watch(page: Page) -> Page:
    """Wait until `page` is live, then mark it so that a reload would show."""
    wait_until_live(page)
    page.evaluate(MARK)
    return page


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate(MARKED), f"{page.url} was reloaded"


def queue_card(page: Page, session_id: int) -> Locator:
    return page.locator(f"#queue-list > [data-testid=queue-card][data-session-id='{session_id}']")


def call_card(page: Page, call_id: int) -> Locator:
    return page.locator(f"#transcript #call-{call_id}")


def pending_call_id(card: Locator) -> int:
    expect(card).to_be_visible()
    return int(card.get_attribute("data-call-id") or "")


def test_a_call_reaches_another_operators_queue_and_its_approval_the_owners_page(
    open_page, operator, second_operator
):
    queue = watch(open_page(second_operator, "/approvals/"))
    session = scripts.write_then_finish(operator, content="first draft\n")
    session_page = watch(open_page(operator, f"/sessions/{session.pk}/"))

    card = queue_card(queue, session.pk)
    call_id = pending_call_id(card)
    expect(card.get_by_test_id("tool-name")).to_have_text("write_file")
    expect(card.get_by_test_id("session-goal")).to_have_text("Keep notes of the plan")
    expect(card.get_by_test_id("call-preview")).to_contain_text("+first draft")
    expect(call_card(session_page, call_id)).to_have_attribute("data-state", "pending_approval")
    assert_not_reloaded(queue)

    card.get_by_test_id("approve").click()

    expect(card).to_have_count(0)
    expect(queue.get_by_test_id("notice")).to_contain_text(f"Approved write_file (call {call_id})")
    owners_view = call_card(session_page, call_id)
    expect(owners_view).to_have_attribute("data-state", "succeeded")
    expect(owners_view.get_by_test_id("decided-by")).to_have_text("user:oscar")
    expect(owners_view.get_by_test_id("call-output")).to_contain_text("Wrote 12 characters")
    expect(session_page.get_by_test_id("session-header")).to_have_attribute(
        "data-status", "completed"
    )
    expect(session_page.locator("#transcript")).to_contain_text("The notes are written. Done.")
    assert_not_reloaded(session_page)


def test_a_rejection_and_its_reason_show_in_the_transcript(
    open_page, server, operator, second_operator
):
    session = scripts.write_then_finish(operator)
    session_page = watch(open_page(operator, f"/sessions/{session.pk}/"))
    queue = watch(open_page(second_operator, "/approvals/"))
    card = queue_card(queue, session.pk)
    call_id = pending_call_id(card)
    reason = "Keep notes in the wiki, not in the workspace"

    card.get_by_test_id("reject-open").click()
    card.get_by_test_id("reject-reason").fill(reason)
    card.get_by_test_id("reject").click()

    owners_view = call_card(session_page, call_id)
    expect(owners_view).to_have_attribute("data-state", "rejected")
    expect(owners_view.get_by_test_id("decision-reason")).to_have_text(f"Reason: {reason}")
    # What the model was told, reason included.
    expect(owners_view.get_by_test_id("call-output")).to_have_text(
        f"An operator rejected this call. Reason: {reason}"
    )
    assert not (server.workspaces / str(session.pk) / "notes.md").exists()
    assert_not_reloaded(session_page)


def test_edit_then_approve_runs_the_edited_arguments(open_page, server, operator, second_operator):
    session = scripts.write_then_finish(operator, content="first draft\n")
    session_page = watch(open_page(operator, f"/sessions/{session.pk}/"))
    queue = watch(open_page(second_operator, "/approvals/"))
    card = queue_card(queue, session.pk)
    call_id = pending_call_id(card)
    edited = {"path": "notes.md", "content": "edited by oscar\n"}

    card.get_by_test_id("edit").click()
    card.get_by_test_id("edit-arguments").fill(json.dumps(edited))
    card.get_by_test_id("approve-edited").click()

    owners_view = call_card(session_page, call_id)
    expect(owners_view).to_have_attribute("data-state", "succeeded")
    expect(owners_view.get_by_test_id("decision-edit")).to_contain_text("edited by oscar")
    expect(owners_view.get_by_test_id("call-arguments")).to_contain_text("edited by oscar")
    expect(owners_view.get_by_test_id("call-output")).to_contain_text("Wrote 16 characters")
    # What ran is the edit, on disk in the server's workspace for the session.
    assert (server.workspaces / str(session.pk) / "notes.md").read_text() == edited["content"]


def test_an_edit_the_tool_refuses_decides_nothing(open_page, operator, second_operator):
    session = scripts.write_then_finish(operator)
    queue = watch(open_page(second_operator, "/approvals/"))
    card = queue_card(queue, session.pk)
    call_id = pending_call_id(card)

    card.get_by_test_id("edit").click()
    card.get_by_test_id("edit-arguments").fill('{"path": "notes.md"}')
    card.get_by_test_id("approve-edited").click()

    expect(card.get_by_test_id("decision-error")).to_contain_text("content")
    expect(card.get_by_test_id("edit-arguments")).to_have_value('{"path": "notes.md"}')
    assert ToolCall.objects.get(pk=call_id).state == CallState.PENDING_APPROVAL


# Clicks a button at a given moment (ms since the epoch, on the clock every page shares),
# so that two browsers can click at the same instant.
CLICK_AT = """
([selector, at]) => {
  const button = document.querySelector(selector);
  setTimeout(() => button.click(), at - Date.now());
}
"""


def test_two_operators_deciding_at_once_make_exactly_one_decision(
    open_page, operator, second_operator
):
    session = scripts.write_then_finish(operator)
    olivia = watch(open_page(operator, "/approvals/"))
    oscar = watch(open_page(second_operator, "/approvals/"))
    call_id = pending_call_id(queue_card(olivia, session.pk))
    oscar_card = queue_card(oscar, session.pk)
    oscar_card.get_by_test_id("reject-open").click()
    oscar_card.get_by_test_id("reject-reason").fill("Not today")

    # A second ahead: time to arm both pages, even on a busy machine.
    at = int(time.time() * 1000) + 1000
    card = f"#queue-card-{call_id}"
    olivia.evaluate(CLICK_AT, [f"{card} [data-testid=approve]", at])
    oscar.evaluate(CLICK_AT, [f"{card} [data-testid=reject]", at])

    for page in (olivia, oscar):
        expect(page.get_by_test_id("notice")).to_have_count(1)
        expect(queue_card(page, session.pk)).to_have_count(0)
    [decision] = ApprovalDecision.objects.filter(tool_call_id=call_id)
    winner, loser = (olivia, oscar) if decision.approved else (oscar, olivia)
    verb = "approved" if decision.approved else "rejected"
    expect(winner.get_by_test_id("notice")).to_have_attribute("data-level", "success")
    expect(loser.get_by_test_id("notice")).to_have_attribute("data-level", "error")
    expect(loser.get_by_test_id("notice")).to_contain_text(
        f"Call {call_id} was already {verb} by {decision.actor} at"
    )


# Sets a flag if any of it runs as HTML rather than showing as text. No quotes: the
# arguments show as JSON, which would escape them.
PAYLOAD = (
    "</pre><script>document.body.dataset.pwned = 1</script>"
    "<img src=x onerror=document.body.dataset.pwned=2>"
)


def test_a_script_payload_is_shown_as_text(open_page, operator, second_operator):
    queue = watch(open_page(second_operator, "/approvals/"))
    session = scripts.start(
        operator,
        f"Goal {PAYLOAD}",
        [
            scripts.tool_use("run_python", code=f"print({PAYLOAD!r})"),
            scripts.tool_use("write_file", path="page.html", content=PAYLOAD),
        ],
    )
    session_page = watch(open_page(operator, f"/sessions/{session.pk}/"))

    # Pushed live to the queue, rendered with the page on the session's.
    for page in (queue, session_page):
        expect(page.get_by_test_id("call-arguments")).to_have_count(2)
        for arguments in page.get_by_test_id("call-arguments").all():
            expect(arguments).to_contain_text(PAYLOAD)
        for preview in page.get_by_test_id("call-preview").all():
            expect(preview).to_contain_text("<img src=x onerror=")
        expect(page.locator("main img, main script")).to_have_count(0)
        assert page.evaluate("document.body.dataset.pwned") is None
    expect(session_page.get_by_test_id("session-goal")).to_have_text(f"Goal {PAYLOAD}")
