"""'Approve and allow for this session' is one operator's shortcut: it never loosens a
global rule that denies a call or asks more than one operator's yes."""

from __future__ import annotations

import pytest

from agentdash.approvals import decide
from agentdash.models import PolicyRule
from agentdash.states import CallState
from tests.governance.helpers import calls_of, make_rule, reload, start, text, tool_use

pytestmark = pytest.mark.django_db(transaction=True)


def test_allowing_a_tool_for_the_session_does_not_override_a_global_deny(
    operator, run_queued_steps
):
    make_rule(
        tool="write_file",
        action=PolicyRule.Action.DENY,
        conditions=[{"kind": "path", "argument": "path", "glob": "secrets/**"}],
        position=1,
    )
    session = start(
        [tool_use("write_file", "w1", path="notes.txt", content="fine")],
        [tool_use("write_file", "w2", path="secrets/key", content="leak")],
        [text("Done.")],
    )
    run_queued_steps()
    [first] = calls_of(session)
    assert first.state == CallState.PENDING_APPROVAL

    decide(first.pk, user=operator, approve=True, allow_for_session=True)
    run_queued_steps()

    second = calls_of(session)[1]
    assert second.state == CallState.REJECTED
    assert not (reload(session).workspace / "secrets" / "key").exists()
    assert (reload(session).workspace / "notes.txt").read_text() == "fine"


def test_the_allowance_still_lets_ordinary_calls_of_that_tool_through(operator, run_queued_steps):
    session = start(
        [tool_use("write_file", "w1", path="a.txt", content="a")],
        [tool_use("write_file", "w2", path="b.txt", content="b")],
        [text("Done.")],
    )
    run_queued_steps()
    [first] = calls_of(session)
    decide(first.pk, user=operator, approve=True, allow_for_session=True)
    run_queued_steps()

    second = calls_of(session)[1]
    assert second.state == CallState.SUCCEEDED
