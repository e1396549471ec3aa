"""SIGKILL of the web server (`manage.py serve`, which hosts the step worker) while two
operators' browsers are connected and a session waits for approval.

The server is started again on the same port. The pages are not reloaded: htmx's
websocket extension reconnects by itself, and the snapshot each socket sends on
connect brings the page up to date with what changed while the server was down.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from agentdash.approvals import decide
from agentdash.models import AgentSession, ToolCall
from agentdash.states import CallState, SessionStatus
from tests.e2e import scripts
from tests.e2e.test_approvals import assert_not_reloaded, call_card, queue_card, watch
from tests.faults.checks import assert_nothing_lost_or_doubled
from tests.runner.test_crash_safety import call_in, status_of, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.slow]

# htmx retries a dropped socket with a growing, jittered delay (up to 2^n seconds), and
# the server takes a few seconds to start again on a loaded machine.
RECONNECT_MS = 40_000


def live_status(page: Page):
    return page.get_by_test_id("live-status")


def test_pages_reconnect_to_a_restarted_server_and_catch_up(
    server_process, open_page, operator, second_operator
):
    kept = scripts.write_then_finish(operator, content="kept\n")
    dropped = scripts.write_then_finish(operator, content="dropped\n")
    kept_call = wait_for(lambda: call_in(kept, CallState.PENDING_APPROVAL), "the first call")
    dropped_call = wait_for(lambda: call_in(dropped, CallState.PENDING_APPROVAL), "the second")
    queue = watch(open_page(second_operator, "/approvals/"))
    session_page = watch(open_page(operator, f"/sessions/{kept.pk}/"))
    expect(queue_card(queue, dropped.pk)).to_be_visible()
    expect(queue_card(queue, kept.pk)).to_be_visible()

    server_process.kill()
    for page in (queue, session_page):
        expect(live_status(page)).to_have_attribute("data-state", "offline")
    # Meanwhile the owner rejects one call from another process (the command line would).
    decide(dropped_call.pk, user=operator, approve=False, reason="Not this one.")
    server_process.start()

    for page in (queue, session_page):
        expect(live_status(page)).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
    # Caught up: the rejected call left the queue though no push ever told the page.
    expect(queue_card(queue, dropped.pk)).to_have_count(0)
    card = queue_card(queue, kept.pk)
    card.get_by_test_id("approve").click()

    expect(card).to_have_count(0)
    owners_view = call_card(session_page, kept_call.pk)
    expect(owners_view).to_have_attribute("data-state", "succeeded")
    expect(session_page.get_by_test_id("session-header")).to_have_attribute(
        "data-status", "completed"
    )
    assert_not_reloaded(queue)
    assert_not_reloaded(session_page)

    ended = [SessionStatus.COMPLETED] * 2
    wait_for(lambda: [status_of(kept), status_of(dropped)] == ended, "both sessions to end")
    workspaces = server_process.server.workspaces
    assert (workspaces / str(kept.pk) / "notes.md").read_text() == "kept\n"
    assert not (workspaces / str(dropped.pk) / "notes.md").exists()
    assert ToolCall.objects.get(pk=dropped_call.pk).state == CallState.REJECTED
    assert_nothing_lost_or_doubled(
        AgentSession.objects.get(pk=kept.pk), runs={kept_call.call_id: 1}
    )
    assert_nothing_lost_or_doubled(AgentSession.objects.get(pk=dropped.pk), runs={})
