"""Results: what the model reads, how long it may be, and how results persist."""

from __future__ import annotations

import datetime
import json

import pytest

from tools import (
    ExecutionResult,
    ExecutionStatus,
    ToolCall,
    ToolExecutor,
    ToolRegistry,
    format_results_for_llm,
)


def _result(status: ExecutionStatus = ExecutionStatus.SUCCESS, **fields) -> ExecutionResult:
    return ExecutionResult(status=status, tool_name="t", **fields)


def test_status_values_are_lower_case_strings():
    assert [s.value for s in ExecutionStatus] == [
        "success",
        "error",
        "timeout",
        "validation_error",
        "permission_denied",
        "rejected",
        "expired",
        "interrupted",
    ]
    assert ExecutionStatus.VALIDATION_ERROR == "validation_error"


@pytest.mark.parametrize(
    ("value", "observation"),
    [
        ("plain text", "plain text"),
        ({"b": [1, 2.5, None], "a": "é"}, '{"b":[1,2.5,null],"a":"é"}'),
        (42, "42"),
        (datetime.date(2026, 11, 1), '"2026-11-01"'),
        (None, "(no output)"),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),
        ({"raw": b"\xff"}, '{"raw":"_w=="}'),
        ("", "(no output)"),
    ],
)
def test_success_observations(value, observation):
    assert _result(result=value).to_observation() == observation


def test_failures_read_as_their_error_or_a_default():
    assert _result(ExecutionStatus.ERROR, error="ValueError: bad").to_observation() == (
        "ValueError: bad"
    )
    assert "not run" in _result(ExecutionStatus.EXPIRED).to_observation()
    assert "interrupted" in _result(ExecutionStatus.INTERRUPTED).to_observation()
    assert _result(ExecutionStatus.REJECTED).is_error


def test_long_output_is_cut_at_the_cap_with_a_marker():
    result = _result(result="x" * 100_001)

    observation = result.to_observation()

    assert result.truncated
    assert len(observation) == 100_000
    assert observation.endswith("\n[... truncated: the full output has 100,001 characters]")
    assert observation.startswith("x" * 99_000)


def test_output_at_the_cap_is_whole():
    result = _result(result="x" * 100_000)

    assert not result.truncated
    assert result.to_observation() == "x" * 100_000


def test_the_cap_is_per_tool_and_per_call():
    result = _result(result="y" * 600, max_observation_chars=500)

    assert result.truncated
    assert len(result.to_observation()) == 500
    assert len(result.to_observation(max_chars=100)) == 100
    assert result.to_observation(max_chars=1_000) == "y" * 600
    assert result.to_observation(max_chars=5) == "yyyyy"  # too small for the marker: still a cap


async def test_the_executor_applies_the_tools_cap():
    registry = ToolRegistry()
    registry.register(name="big", max_observation_chars=1_000)(lambda: "z" * 5_000)

    result = await ToolExecutor(registry).execute("big", {})

    assert result.truncated
    assert len(result.to_observation()) == 1_000
    assert result.result == "z" * 5_000  # the full value stays available


def test_to_dict_is_json_safe_and_round_trips():
    result = _result(
        result={"when": datetime.datetime(2026, 11, 1, 12, 0), "data": b"\xff", "x": float("nan")},
        parameters={"path": "a.txt"},
        call_id="toolu_1",
        duration_ms=1.5,
        metadata={"exit_code": 0, "limit_hit": None},
        max_observation_chars=10,
    )

    data = result.to_dict()
    again = ExecutionResult.from_dict(json.loads(json.dumps(data)))

    assert data["status"] == "success"
    assert data["result"] == {"when": "2026-11-01T12:00:00", "data": "_w==", "x": None}
    assert again.to_dict() == data
    assert again.truncated == result.truncated is True


def test_values_json_cannot_express_still_serialise():
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    result = _result(result={"thing": Opaque()})

    assert result.to_observation() == '{"thing":"opaque!"}'
    assert result.to_dict()["result"] == {"thing": "opaque!"}


CALLS = [
    ToolCall(id="toolu_1", name="read_file", arguments={"path": "a"}),
    ToolCall(id="toolu_2", name="read_file", arguments={"path": "b"}),
]
RESULTS = [
    _result(result="hello", call_id="toolu_1"),
    _result(ExecutionStatus.TIMEOUT, error="read_file did not finish", call_id="toolu_2"),
]


def test_anthropic_format_is_one_user_message_of_tool_result_blocks():
    assert format_results_for_llm(CALLS, RESULTS) == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": "hello",
                "is_error": False,
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": "read_file did not finish",
                "is_error": True,
            },
        ],
    }


def test_openai_format_is_one_tool_message_per_call():
    assert format_results_for_llm(CALLS, RESULTS, provider="openai") == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "hello"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "read_file did not finish"},
    ]


def test_formatting_refuses_mismatched_or_unknown_input():
    with pytest.raises(ValueError, match="2 calls but 1 results"):
        format_results_for_llm(CALLS, RESULTS[:1])
    with pytest.raises(ValueError, match="unknown provider"):
        format_results_for_llm(CALLS, RESULTS, provider="cohere")
