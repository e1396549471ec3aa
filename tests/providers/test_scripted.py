"""The scripted provider: replay, the built-in demo, script validation, durable turns."""

import json

import pytest

from agentdash.providers import (
    ModelRequest,
    ScriptedProvider,
    StopReason,
    cost_of,
    get_provider,
    load_script,
)
from tools.builtin import build_registry

GOAL = [{"role": "user", "content": [{"type": "text", "text": "Show me the product."}]}]


def play(provider, turns):
    """Drive `provider` through `turns` model calls, as the runner would: each reply is
    appended, with a tool_result for each of its calls."""
    messages = list(GOAL)
    replies = []
    for _ in range(turns):
        reply = provider.complete(ModelRequest(model="scripted", messages=messages))
        replies.append(reply)
        messages.append({"role": "assistant", "content": reply.content})
        results = [
            {"type": "tool_result", "tool_use_id": call["id"], "content": "ok"}
            for call in reply.tool_uses
        ]
        if results:
            messages.append({"role": "user", "content": results})
    return replies


def test_the_demo_lists_writes_reads_runs_python_then_sums_up():
    replies = play(get_provider("scripted"), 5)

    assert [[call["name"] for call in reply.tool_uses] for reply in replies] == [
        ["list_dir"],
        ["write_file"],
        ["read_file"],
        ["run_python"],
        [],
    ]
    assert [reply.stop_reason for reply in replies] == [StopReason.TOOL_USE] * 4 + [
        StopReason.END_TURN
    ]
    assert replies[0].text.startswith("I'll start by looking at")
    assert replies[1].tool_uses[0]["input"]["path"] == "notes.md"
    assert replies[2].tool_uses[0]["input"] == {"path": "notes.md"}
    assert "print(" in replies[3].tool_uses[0]["input"]["code"]
    ids = [call["id"] for reply in replies for call in reply.tool_uses]
    assert len(set(ids)) == len(ids)


def test_the_demo_code_prints_what_it_computes():
    (run_python,) = play(get_provider("scripted"), 4)[3].tool_uses
    printed = []

    exec(run_python["input"]["code"], {"print": printed.append})

    assert printed == [
        "Sum of the first ten squares: 385",
        "Primes below 50: [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]",
    ]


def test_it_replays_a_script_one_turn_per_call_then_ends():
    script = [
        [{"type": "tool_use", "name": "read_file", "input": {"path": "a.txt"}}],
        [
            {"type": "text", "text": "Two at once."},
            {"type": "tool_use", "id": "mine", "name": "read_file", "input": {"path": "b"}},
            {"type": "tool_use", "name": "list_dir"},
        ],
        [{"type": "text", "text": "Finished."}],
    ]

    replies = play(get_provider("scripted", script=script), 4)

    assert replies[0].content == [
        {
            "type": "tool_use",
            "id": "toolu_scripted_1_1",
            "name": "read_file",
            "input": {"path": "a.txt"},
        }
    ]
    assert [call["id"] for call in replies[1].tool_uses] == ["mine", "toolu_scripted_2_3"]
    assert replies[1].tool_uses[1]["input"] == {}
    assert replies[2].text == "Finished."
    assert replies[2].stop_reason is StopReason.END_TURN
    # Called past its end, a script says so and ends the turn.
    assert replies[3].stop_reason is StopReason.END_TURN
    assert "last step of the script" in replies[3].text


def test_the_turn_played_depends_only_on_the_conversation_so_a_restart_resumes():
    script = [
        [{"type": "text", "text": "one"}, {"type": "tool_use", "name": "list_dir"}],
        [{"type": "text", "text": "two"}],
    ]
    history = [
        *GOAL,
        {"role": "assistant", "content": [{"type": "text", "text": "one"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "."}]},
    ]
    request = ModelRequest(model="scripted", messages=history)

    before_restart = ScriptedProvider(script=script).complete(request)
    after_restart = ScriptedProvider(script=script).complete(request)

    assert before_restart.text == after_restart.text == "two"


def test_it_streams_its_text_in_small_chunks():
    text = "I'll start by looking at what's already in   the workspace.\nThen more."
    provider = get_provider("scripted", script=[[{"type": "text", "text": text}]])
    deltas = []

    provider.complete(ModelRequest(model="scripted", messages=GOAL), on_text=deltas.append)

    assert "".join(deltas) == text
    assert len(deltas) == len(text.split())


def test_it_estimates_usage_and_costs_nothing():
    reply = get_provider("scripted").complete(
        ModelRequest(model="scripted", messages=GOAL, system="You are careful." * 10)
    )

    assert reply.model == "scripted"
    assert reply.usage.input_tokens == (len("You are careful." * 10) + len(json.dumps(GOAL))) // 4
    assert reply.usage.output_tokens == len(json.dumps(reply.content)) // 4
    assert cost_of(reply.model, reply.usage) == 0


def test_a_reply_is_the_callers_to_change():
    provider = get_provider("scripted")
    request = ModelRequest(model="scripted", messages=GOAL)

    provider.complete(request).content[0]["text"] = "changed"

    assert provider.complete(request).content[0]["text"] != "changed"


def test_load_script_reads_a_file(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(json.dumps([[{"type": "text", "text": "Hello"}]]))

    assert load_script(path) == [[{"type": "text", "text": "Hello"}]]


@pytest.mark.parametrize(
    ("script", "complaint"),
    [
        ({"turns": []}, "A script must be a non-empty JSON list of turns."),
        ([], "A script must be a non-empty JSON list of turns."),
        ([[{"type": "text", "text": "a"}], []], "Turn 2: must be a non-empty list"),
        ([["hello"]], "Turn 1, block 1: must be a JSON object, not str."),
        ([[{"type": "image"}]], "Turn 1, block 1: type must be one of text, tool_use, thinking"),
        ([[{"type": "text"}]], "Turn 1, block 1 (text): missing text."),
        ([[{"type": "text", "text": ""}]], "Turn 1, block 1 (text): text must be a non-empty"),
        (
            [[{"type": "text", "text": "a"}, {"type": "tool_use", "input": {}}]],
            "Turn 1, block 2 (tool_use): missing name.",
        ),
        (
            [[{"type": "tool_use", "name": "read_file", "arguments": {}}]],
            "Turn 1, block 1 (tool_use): unknown key(s) arguments.",
        ),
        (
            [[{"type": "tool_use", "name": "read_file", "input": "a.txt"}]],
            "Turn 1, block 1 (tool_use): input must be a JSON object.",
        ),
        (
            [[{"type": "tool_use", "name": "read_file", "id": 7}]],
            "Turn 1, block 1 (tool_use): id must be a non-empty string.",
        ),
    ],
)
def test_a_bad_script_is_refused_naming_the_turn_and_block(tmp_path, script, complaint):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(script))

    with pytest.raises(ValueError, match=r"Turn|turns") as caught:
        load_script(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert complaint in str(caught.value)


def test_a_script_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[[{'type': 'text'}]]")

    with pytest.raises(ValueError, match="not valid JSON"):
        load_script(path)


def test_the_demo_calls_real_tools_with_valid_arguments_and_two_need_approval(tmp_path):
    registry = build_registry(tmp_path)
    calls = [call for reply in play(get_provider("scripted"), 5) for call in reply.tool_uses]

    for call in calls:
        registry.get(call["name"]).validate(call["input"])  # raises if they do not fit
    assert [registry.get(call["name"]).requires_confirmation for call in calls] == [
        False,
        True,
        False,
        True,
    ]


def test_the_demo_says_it_read_why_a_call_did_not_run():
    provider = get_provider("scripted")
    messages = list(GOAL)
    for reply_number in range(2):
        reply = provider.complete(ModelRequest(model="scripted", messages=messages))
        messages.append({"role": "assistant", "content": reply.content})
        ok = reply_number == 0
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call["id"],
                        "content": "ok"
                        if ok
                        else "An operator rejected this call. Reason: "
                        "put the plan in PLAN.txt instead",
                        **({} if ok else {"is_error": True}),
                    }
                    for call in reply.tool_uses
                ],
            }
        )

    after_rejection = provider.complete(ModelRequest(model="scripted", messages=messages))

    assert after_rejection.text.startswith(
        "My last call did not go through: An operator rejected this call. "
        "Reason: put the plan in PLAN.txt instead"
    )
    assert [call["name"] for call in after_rejection.tool_uses] == ["read_file"]


def test_a_script_of_ones_own_plays_exactly_as_written():
    first = [{"type": "tool_use", "id": "x", "name": "list_dir", "input": {}}]
    provider = ScriptedProvider(script=[first, [{"type": "text", "text": "Exactly this."}]])
    refused = {"type": "tool_result", "tool_use_id": "x", "is_error": True, "content": "no"}
    messages = [
        *GOAL,
        {"role": "assistant", "content": first},
        {"role": "user", "content": [refused]},
    ]

    reply = provider.complete(ModelRequest(model="scripted", messages=messages))

    assert reply.text == "Exactly this."
