"""Property tests: no input a model can send, and no failure of a tool or hook, escapes.

Every example runs the real executor on a fresh event loop; hypothesis is derandomised so
that the suite is deterministic.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tools import (
    Decision,
    ExecutionResult,
    ExecutionStatus,
    Tool,
    ToolCall,
    ToolExecutor,
    ToolRegistry,
)
from tools.builtin.files import register_file_tools
from tools.builtin.workspace import Workspace, WorkspaceError

DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=150)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
argument_names = st.sampled_from(["a", "b", "c", "label"]) | st.text(max_size=8)
# Arguments shaped like the probe's, often valid only after coercion ("3" for 3, 2 for
# 2.0), so that many examples reach the tool and would show values passed unvalidated.
near_valid = st.fixed_dictionaries(
    {
        "a": st.integers() | st.integers().map(str) | json_scalars,
        "b": st.integers() | st.floats() | st.integers().map(str) | json_scalars,
        "c": st.lists(st.text(max_size=5) | json_scalars, max_size=3),
    },
    optional={"label": st.text(max_size=5) | json_scalars, "extra": json_scalars},
)
arguments = json_values | st.dictionaries(argument_names, json_values, max_size=5) | near_valid
failures = st.sampled_from([ValueError, KeyError, RuntimeError, TypeError, OSError, Exception])


class ProbeArguments(BaseModel):
    a: int
    b: float
    c: list[str]
    label: str = "x"


PROBE_SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "integer"},
        "b": {"type": "number"},
        "c": {"type": "array", "items": {"type": "string"}},
        "label": {"type": "string", "default": "x"},
    },
    "required": ["a", "b", "c"],
    "additionalProperties": False,
}


def _probe_registry(source: str, received: list[dict[str, Any]]) -> ToolRegistry:
    async def probe(a: int, b: float, c: list[str], label: str = "x") -> str:
        received.append({"a": a, "b": b, "c": c, "label": label})
        return "ok"

    parameters = {"signature": None, "model": ProbeArguments, "json_schema": PROBE_SCHEMA}[source]
    registry = ToolRegistry()
    registry.register(parameters=parameters)(probe)
    return registry


def _run[T](coroutine: Any) -> T:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("source", ["signature", "model", "json_schema"])
@DETERMINISTIC
@given(raw=arguments)
def test_arbitrary_arguments_never_escape_and_only_valid_values_reach_the_tool(source, raw):
    received: list[dict[str, Any]] = []
    executor = ToolExecutor(_probe_registry(source, received))

    result = _run(executor.execute("probe", raw))

    assert isinstance(result, ExecutionResult)
    if result.status == ExecutionStatus.SUCCESS:
        [values] = received
        assert type(values["a"]) is int
        assert type(values["b"]) is float
        assert all(type(item) is str for item in values["c"])
        assert type(values["label"]) is str
    else:
        assert result.status == ExecutionStatus.VALIDATION_ERROR
        assert received == []
        assert result.metadata["errors"]
        assert result.to_observation().startswith("Invalid arguments: ")


@DETERMINISTIC
@given(name=st.text(max_size=80), raw=arguments)
def test_unknown_tools_are_errors_naming_the_tool(name, raw):
    result = _run(ToolExecutor(_probe_registry("signature", [])).execute(name, raw))

    if name != "probe":
        assert result.status == ExecutionStatus.ERROR
        assert repr(name) in result.error


@DETERMINISTIC
@given(size=st.integers(min_value=0, max_value=3_000_000), max_chars=st.integers(1, 200_000))
def test_huge_strings_are_validated_run_and_capped(size, max_chars):
    registry = ToolRegistry()
    registry.register(name="echo", max_observation_chars=max_chars)(lambda text: text)

    result = _run(ToolExecutor(registry).execute("echo", {"text": "é" * size}))

    assert result.status == ExecutionStatus.SUCCESS
    observation = result.to_observation()
    assert len(observation) <= max(max_chars, len("(no output)"))
    assert result.truncated == (size > max_chars)


@DETERMINISTIC
@given(
    where=st.sampled_from(["tool", "before hook", "after hook", "gate"]),
    failure=failures,
    message=st.text(max_size=50),
)
def test_whatever_raises_becomes_a_result(where, failure, message):
    def maybe_fail(here: str) -> None:
        if where == here:
            raise failure(message)

    registry = ToolRegistry()
    registry.register(name="act", requires_confirmation=True)(lambda: maybe_fail("tool"))

    def gate(call: ToolCall) -> Decision:
        maybe_fail("gate")
        return Decision(approve=True)

    executor = ToolExecutor(
        registry,
        approval_gate=gate,
        before_hooks=[lambda call, tool: maybe_fail("before hook")],
        after_hooks=[lambda call, result: maybe_fail("after hook")],
    )

    result = _run(executor.execute("act", {}))

    expected = {
        "tool": ExecutionStatus.ERROR,
        "gate": ExecutionStatus.ERROR,
        "before hook": ExecutionStatus.SUCCESS,  # logged and noted; the call goes on
        "after hook": ExecutionStatus.SUCCESS,
    }[where]
    assert result.status == expected
    if "hook" in where:
        assert result.metadata["hook_errors"]


@DETERMINISTIC
@given(batch=st.lists(st.tuples(st.sampled_from(["probe", "nope"]), arguments), max_size=12))
def test_a_batch_answers_every_call_in_order(batch):
    calls = [ToolCall(id=str(i), name=name, arguments=raw) for i, (name, raw) in enumerate(batch)]
    executor = ToolExecutor(_probe_registry("signature", []))

    results = _run(executor.execute_many(calls, max_concurrency=3))

    assert [r.call_id for r in results] == [c.id for c in calls]
    assert [r.tool_name for r in results] == [c.name for c in calls]


@DETERMINISTIC
@given(
    status=st.sampled_from(ExecutionStatus),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    error=st.none() | st.text(),
    cap=st.integers(1, 100),
)
def test_results_round_trip_through_json(status, value, error, cap):
    result = ExecutionResult(
        status=status,
        tool_name="t",
        result=value,
        error=error,
        parameters={"p": value},
        metadata={"m": value},
        max_observation_chars=cap,
    )

    stored = json.loads(json.dumps(result.to_dict()))

    assert ExecutionResult.from_dict(stored).to_dict() == result.to_dict()
    assert len(result.to_observation()) <= cap


path_parts = st.sampled_from(
    ["..", ".", "", "docs", "a.txt", "link_out", "dir_out", "hard_out", "secret.txt", "/", "~"]
)
paths = st.lists(path_parts, max_size=6).map("/".join) | st.text(max_size=40)


@pytest.fixture(scope="module")
def confinement(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("confinement")
    outside, root = base / "outside", base / "workspace"
    outside.mkdir()
    (outside / "secret.txt").write_text("the secret")
    (outside / "linked.txt").write_text("the secret")
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha")
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "hard_out").hardlink_to(outside / "linked.txt")
    return root, outside


@DETERMINISTIC
@given(path=paths)
def test_no_path_leads_a_file_tool_out_of_its_workspace(confinement, path):
    root, outside = confinement
    registry = ToolRegistry()
    register_file_tools(registry, Workspace(root))
    executor = ToolExecutor(registry)

    try:
        resolved = Workspace(root).resolve(path)
    except WorkspaceError:
        pass
    else:
        assert resolved.is_relative_to(root.resolve())
    for tool in ("read_file", "list_dir"):
        result = _run(executor.execute(tool, {"path": path}))
        assert "the secret" not in result.to_observation()
    written = _run(
        executor.execute("write_file", {"path": path, "content": "x"}, {"confirmed": True})
    )
    assert written.status in (ExecutionStatus.SUCCESS, ExecutionStatus.ERROR)
    assert (outside / "secret.txt").read_text() == "the secret"
    assert (outside / "linked.txt").read_text() == "the secret"
    assert sorted(p.name for p in outside.iterdir()) == ["linked.txt", "secret.txt"]


def test_the_probe_schemas_agree():
    # The three sources describe the same arguments, so the properties above compare alike.
    tools = [_probe_registry(s, []).get("probe") for s in ("signature", "model", "json_schema")]
    assert all(isinstance(tool, Tool) for tool in tools)
    assert {tuple(t.parameters["required"]) for t in tools} == {("a", "b", "c")}
