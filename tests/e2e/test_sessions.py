"""Starting a session from the form and following it live."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e import scripts
from tests.e2e.browser import wait_until_live

pytestmark = pytest.mark.e2e


def test_a_session_started_from_the_form_plays_live(open_page, operator):
    sessions_list = open_page(operator, "/sessions/")
    wait_until_live(sessions_list)
    form = open_page(operator, "/sessions/new/")

    form.get_by_label("Goal").fill("Show me the demo")
    form.get_by_test_id("provider-scripted").get_by_role("radio").check()
    form.get_by_test_id("start-session").click()

    # The built-in demo: a listing that runs at once, then a write that waits.
    expect(form).to_have_url(re.compile(r"/sessions/\d+/$"))
    session_id = int(form.url.rstrip("/").rsplit("/", 1)[1])
    header = form.get_by_test_id("session-header")
    expect(header).to_have_attribute("data-status", "waiting_approval")
    expect(header.get_by_test_id("session-goal")).to_have_text("Show me the demo")
    calls = form.locator("#transcript [data-testid=call-card]")
    expect(calls).to_have_count(2)
    expect(calls.nth(0).get_by_test_id("tool-name")).to_have_text("list_dir")
    expect(calls.nth(0)).to_have_attribute("data-state", "succeeded")
    expect(calls.nth(1).get_by_test_id("tool-name")).to_have_text("write_file")
    expect(calls.nth(1)).to_have_attribute("data-state", "pending_approval")
    expect(calls.nth(1).get_by_test_id("approve")).to_be_visible()

    # The list opened before the session existed shows it, without a reload.
    row = sessions_list.locator(f"#session-row-{session_id}")
    expect(row).to_have_attribute("data-status", "waiting_approval")
    expect(row).to_contain_text("Show me the demo")


def test_a_bad_script_is_refused_beside_its_field(open_page, operator):
    form = open_page(operator, "/sessions/new/")

    form.get_by_label("Goal").fill("Play my script")
    form.get_by_text("Advanced: instructions and script").click()
    form.get_by_label("Script (JSON)").fill('[[{"type": "tool_use"}]]')
    form.get_by_test_id("start-session").click()

    expect(form.get_by_test_id("error-script")).to_have_text(
        "Turn 1, block 1 (tool_use): missing name."
    )
    expect(form.get_by_label("Goal")).to_have_value("Play my script")


@pytest.mark.parametrize("path", ["/sessions/{pk}/", "/approvals/", "/sessions/"])
def test_a_goal_of_one_endless_word_does_not_widen_the_pages(open_page, operator, path):
    session = scripts.start(
        operator,
        "y" * 5000,
        [scripts.tool_use("write_file", path="a.md", content="a\n")],
        [scripts.text("Done.")],
    )
    page = open_page(operator, path.format(pk=session.pk))
    wait_until_live(page)
    expect(page.locator("[data-testid=session-goal], .goal-cell").first).to_be_visible()

    page_width, view_width = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert page_width <= view_width
    # Nor spill over its neighbours (the list's other columns): the goal's box holds it.
    spilling = page.evaluate(
        "[...document.querySelectorAll('[data-testid=session-goal], .goal-cell')]"
        ".filter(goal => goal.scrollWidth > goal.clientWidth).length"
    )
    assert spilling == 0
