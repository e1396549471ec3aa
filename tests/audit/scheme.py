"""The hash scheme re-implemented from the module docstring alone, as an outsider would."""

import hashlib
import json
from typing import Any

HASHED = ("seq", "created_at", "actor", "session_id", "tool_call_id", "kind", "payload")


def outsider_hash(event: dict[str, Any]) -> str:
    """The hash of an exported event (a JSONL line's object), per agentdash/audit.py."""
    fields = {name: event[name] for name in (*HASHED, "prev_hash")}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
