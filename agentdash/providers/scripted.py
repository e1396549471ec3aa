"""The offline provider: replays a script of assistant turns, or the built-in demo.

It makes the product run, demo and test with no API key. It is stateless: the turn it
plays is the number of assistant messages already in the conversation, so a session
resumed after a restart picks up exactly where it was.
"""

import copy
import json
import re
from pathlib import Path
from typing import Any

from .base import ModelReply, ModelRequest, StopReason, TextCallback, Usage, guarded
from .demo import DEMO_SCRIPT

MODEL = "scripted"
# What a script may hold in each block type: (required keys, optional keys).
_BLOCK_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "text": ({"text"}, set()),
    "tool_use": ({"name"}, {"id", "input"}),
    "thinking": ({"thinking"}, {"signature"}),
}
_FINAL_TURN = [{"type": "text", "text": "That was the last step of the script, so I'll stop here."}]
_CHUNK = re.compile(r"\s*\S+\s*")  # a word and the spaces around it


def validate_script(script: object) -> list[list[dict[str, Any]]]:
    """The script's turns, checked, with an id given to every tool_use that has none.

    Raises ValueError naming the turn and block (counted from 1) that is wrong. Ids a
    script does give are kept as they are, duplicates included, so a script can replay
    a misbehaving model.
    """
    if not isinstance(script, list) or not script:
        raise ValueError("A script must be a non-empty JSON list of turns.")
    turns = []
    for turn_number, turn in enumerate(script, start=1):
        if not isinstance(turn, list) or not turn:
            raise ValueError(f"Turn {turn_number}: must be a non-empty list of content blocks.")
        turns.append(
            [
                _checked_block(block, turn_number, block_number)
                for block_number, block in enumerate(turn, start=1)
            ]
        )
    return turns


def _checked_block(block: object, turn_number: int, block_number: int) -> dict[str, Any]:
    where = f"Turn {turn_number}, block {block_number}"
    if not isinstance(block, dict):
        raise ValueError(f"{where}: must be a JSON object, not {type(block).__name__}.")
    kind = block.get("type")
    if kind not in _BLOCK_KEYS:
        raise ValueError(f"{where}: type must be one of {', '.join(_BLOCK_KEYS)}, not {kind!r}.")
    required, optional = _BLOCK_KEYS[kind]
    if missing := required - block.keys():
        raise ValueError(f"{where} ({kind}): missing {', '.join(sorted(missing))}.")
    if unknown := block.keys() - required - optional - {"type"}:
        raise ValueError(f"{where} ({kind}): unknown key(s) {', '.join(sorted(unknown))}.")
    for key in block.keys() - {"input"}:
        if not isinstance(block[key], str) or not block[key]:
            raise ValueError(f"{where} ({kind}): {key} must be a non-empty string.")
    if kind != "tool_use":
        return dict(block)
    if not isinstance(block.get("input", {}), dict):
        raise ValueError(f"{where} (tool_use): input must be a JSON object.")
    return {
        "type": "tool_use",
        "id": block.get("id") or f"toolu_scripted_{turn_number}_{block_number}",
        "name": block["name"],
        "input": block.get("input", {}),
    }


def load_script(path: str | Path) -> list[list[dict[str, Any]]]:
    """Read and check a `--script FILE`; ValueError says what is wrong and where."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        script = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    try:
        return validate_script(script)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


class ScriptedProvider:
    name = "scripted"
    label = "Scripted demo"

    def __init__(self, *, script: list[Any] | None = None) -> None:
        self.plays_demo = script is None
        self.turns = validate_script(DEMO_SCRIPT if script is None else script)

    def __repr__(self) -> str:
        return f"ScriptedProvider(turns={len(self.turns)})"

    def complete(self, request: ModelRequest, on_text: TextCallback | None = None) -> ModelReply:
        played = sum(1 for message in request.messages if message["role"] == "assistant")
        turn = self.turns[played] if played < len(self.turns) else _FINAL_TURN
        content = copy.deepcopy(turn)  # the caller owns the reply and may change it
        if self.plays_demo:
            content = _acknowledging(request.messages, content)
        emit = guarded(on_text)
        for block in content:
            if block["type"] == "text":
                for chunk in _CHUNK.findall(block["text"]):
                    emit(chunk)
        has_calls = any(block["type"] == "tool_use" for block in content)
        return ModelReply(
            content=content,
            stop_reason=StopReason.TOOL_USE if has_calls else StopReason.END_TURN,
            usage=Usage(
                input_tokens=_estimate_tokens(request.system, request.messages, request.tools),
                output_tokens=_estimate_tokens(content),
            ),
            model=MODEL,
        )


def _acknowledging(messages: list[dict[str, Any]], content: list[dict[str, Any]]) -> list[Any]:
    """The demo cannot plan around what its calls returned, but it says it read them: a
    call that was rejected (with the operator's reason), denied or failed is named before
    the next turn, so a newcomer sees the model told. A user's own script plays as is."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "user" or not isinstance(last["content"], list):
        return content
    errors = [
        _result_text(block)
        for block in last["content"]
        if block.get("type") == "tool_result" and block.get("is_error")
    ]
    if not errors:
        return content
    which = "My last call" if len(errors) == 1 else f"{len(errors)} of my last calls"
    note = (
        f"{which} did not go through: {' '.join(errors)} I'll go on with the rest of the demo.\n\n"
    )
    return [{"type": "text", "text": note}, *content]


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    text = " ".join(str(content or "").split())
    return text if len(text) <= 300 else f"{text[:299]}…"


def _estimate_tokens(*parts: object) -> int:
    """Roughly what a real model would count: about four characters per token."""
    return sum(len(part if isinstance(part, str) else json.dumps(part)) for part in parts) // 4
