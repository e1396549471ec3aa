"""What the queue's pages are pushed about a step's batch of pending calls."""

from __future__ import annotations

import pytest

from agentdash.approvals import decide
from agentdash.live import fragments, groups
from agentdash.models import ToolCall
from tests.governance.helpers import calls_of, paused_on, start, text, tool_use
from tests.web.html import parse

pytestmark = pytest.mark.django_db(transaction=True)

DECIDERS = groups.for_audience(groups.APPROVALS, can_decide=True)
VIEWERS = groups.for_audience(groups.APPROVALS, can_decide=False)


@pytest.fixture
def step(run_queued_steps) -> list[ToolCall]:
    return paused_on(
        run_queued_steps,
        tool_use("write_file", "w1", path="a.txt", content="a"),
        tool_use("write_file", "w2", path="b.txt", content="b"),
    )


def queue_pushes(call: ToolCall) -> list[tuple[str, str]]:
    """Every push for the queue's groups after `call` changed, in order."""
    return [
        (group, html)
        for batch in fragments.change(call.session_id, call_ids=[call.pk])
        for group, html in batch
        if group in (DECIDERS, VIEWERS)
    ]


def test_a_second_pending_call_of_a_step_brings_its_batch(step):
    pushes = queue_pushes(step[1])

    batches = [(group, html) for group, html in pushes if "queue-batch-" in html]
    assert [group for group, _ in batches] == [DECIDERS, VIEWERS]
    for group, html in batches:
        (wrapper,) = parse(html).top_level()
        assert wrapper.attrs["hx-swap-oob"] == "beforeend:#queue-batches"
        batch = wrapper.one(testid="queue-batch")
        assert batch.attrs["id"] == f"queue-batch-{step[0].message_id}"
        assert [a.attrs["data-call-id"] for a in batch.all(testid="batch-call")] == [
            str(call.pk) for call in step
        ]
        assert bool(batch.all(testid="batch-approve")) is (group == DECIDERS)


def test_a_batch_left_with_one_call_is_deleted_after_the_card(step, operator):
    decide(step[0].pk, user=operator, approve=False, reason="no")

    pushes = [html.strip() for group, html in queue_pushes(step[0]) if group == DECIDERS]

    assert pushes == [
        f'<div id="queue-card-{step[0].pk}" hx-swap-oob="delete"></div>',
        f'<div id="queue-batch-{step[0].message_id}" hx-swap-oob="delete"></div>',
    ]


def test_a_batch_that_loses_a_call_is_newer_than_before(run_queued_steps, operator):
    calls = paused_on(
        run_queued_steps,
        *(tool_use("write_file", f"w{n}", path=f"{n}.txt", content="x") for n in range(3)),
    )
    before = next(html for _, html in queue_pushes(calls[2]) if "queue-batch-" in html)
    decide(calls[2].pk, user=operator, approve=False, reason="no")

    after = next(html for _, html in queue_pushes(calls[2]) if "queue-batch-" in html)

    old, new = (parse(html).one(testid="queue-batch") for html in (before, after))
    assert len(new.all(testid="batch-call")) == 2
    # The page keeps the newer of two versions (dashboard.js): the smaller batch wins.
    assert int(new.attrs["data-rev"]) > int(old.attrs["data-rev"])


def test_the_snapshot_carries_the_batches(step):
    snapshot = parse(fragments.queue_snapshot(can_decide=True))

    assert snapshot.by_id("queue-batches").attrs["hx-swap-oob"] == "true"
    assert snapshot.by_id(f"queue-batch-{step[0].message_id}").all(testid="batch-approve")
    assert len(snapshot.by_id("queue-list").all(testid="queue-card")) == 2


def test_a_step_of_one_call_pushes_no_batch(run_queued_steps, operator):
    (call,) = paused_on(run_queued_steps, tool_use("write_file", "w1", path="a.txt", content="a"))
    waiting = queue_pushes(call)
    decide(call.pk, user=operator, approve=False, reason="no")

    decided = queue_pushes(call)

    assert not [html for _, html in waiting + decided if "queue-batch-" in html]


def test_a_card_read_after_its_call_already_ran_is_still_deleted(step, operator, run_queued_steps):
    # Changes are coalesced and read late: the worker may have run the approved calls
    # before the publisher gets to them (a card then stayed on every queue page).
    for call in step:
        decide(call.pk, user=operator, approve=True)
    run_queued_steps()
    assert {call.state for call in ToolCall.objects.filter(session_id=step[0].session_id)} == {
        "succeeded"
    }

    for call in step:
        pushes = [html.strip() for group, html in queue_pushes(call) if group == DECIDERS]
        assert f'<div id="queue-card-{call.pk}" hx-swap-oob="delete"></div>' in pushes


def test_a_call_the_policy_allowed_never_touches_the_queue(run_queued_steps):
    session = start([tool_use("list_dir", "l1", path=".")], [text("Done.")])
    run_queued_steps()
    (call,) = calls_of(session)
    assert call.state == "succeeded"

    assert queue_pushes(call) == []
