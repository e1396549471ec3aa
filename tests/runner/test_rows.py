"""agentdash.rows builds from plain SQL exactly the instances the ORM loads (these tests
run on SQLite and again on PostgreSQL, whose drivers return different Python types)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agentdash import rows
from agentdash.models import AgentSession, Message, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, enter

pytestmark = pytest.mark.django_db


def _values(instance: object, columns: rows.Columns) -> dict[str, object]:
    return {name: getattr(instance, name) for name in columns.attnames}


def _select(columns: rows.Columns, model: type) -> str:
    return f'SELECT {columns.sql} FROM "{model._meta.db_table}" WHERE "id" = %s'


def test_an_instance_equals_what_the_orm_loads_value_for_value() -> None:
    session = start_session(goal="compare", script=[[]], max_cost=Decimal("1.25"))
    goal = Message.objects.get(session=session)
    call = ToolCall(
        session=session,
        message=goal,
        position=0,
        call_id="c1",
        tool_name="write_file",
        proposed_arguments={"path": "a.txt", "content": "ü"},
    )
    enter(call, CallState.AUTO_APPROVED, actor="test", arguments={"path": "a.txt"})

    for model, pk in ((AgentSession, session.pk), (Message, goal.pk), (ToolCall, call.pk)):
        columns = rows.Columns(model)
        [fetched] = rows.fetch(columns, _select(columns, model), [pk])
        loaded = model.objects.get(pk=pk)
        assert type(fetched) is model
        assert _values(fetched, columns) == _values(loaded, columns)
        # Loaded, not new: saving it updates its row rather than inserting another.
        assert not fetched._state.adding
        assert fetched._state.db == "default"


def test_left_out_columns_are_deferred_and_load_when_asked() -> None:
    session = start_session(goal="defer", script=[[{"type": "text", "text": "hi"}]])
    columns = rows.Columns(AgentSession, exclude=["script"])
    [fetched] = rows.fetch(columns, _select(columns, AgentSession), [session.pk])

    assert "script" in fetched.get_deferred_fields()
    with CaptureQueriesContext(connection) as queries:
        assert fetched.script == [[{"type": "text", "text": "hi"}]]
    assert len(queries) == 1


def test_nothing_found_is_an_empty_list() -> None:
    columns = rows.Columns(Message)
    assert rows.fetch(columns, _select(columns, Message), [987654]) == []
