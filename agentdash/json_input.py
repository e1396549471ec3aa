"""What JSON from outside (the API, the forms) may hold: only what every database stores
and every later walk over it can take. Checked where it comes in, so that bad input is
an error naming its field, never a 500 from the database or a RecursionError.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django import forms

# Far deeper than any script, edited arguments or policy condition needs, and well inside
# what the JSON columns and recursive walks take (SQLite's JSON_VALID refuses 2,000).
MAX_JSON_DEPTH = 64
TOO_DEEP = f"Nesting deeper than {MAX_JSON_DEPTH} levels is not accepted."


def check_storable(value: Any) -> None:
    """Raise ValueError, saying why, when `value` (parsed JSON) nests deeper than
    MAX_JSON_DEPTH or holds what no database stores: a NUL character (PostgreSQL), a lone
    surrogate (not text at all), NaN or Infinity (not JSON). A loop, not recursion: JSON
    parsers take nesting far deeper than Python's recursion limit."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("A NUL character (\\u0000) cannot be stored.")
            if not item.isascii() and not _encodes(item):
                raise ValueError("A lone surrogate (\\ud800-\\udfff) is not text.")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and Infinity are not JSON numbers (1e999 is Infinity).")
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(TOO_DEEP)
            parts = [*item, *item.values()] if isinstance(item, dict) else item
            pending += [(part, depth + 1) for part in parts]


def load_storable_json(text: str) -> Any:
    """`text` parsed as JSON that the database can store (json_input.check_storable), or
    ValidationError saying why not. json.loads raises ValueError and RecursionError too,
    not just JSONDecodeError, for numbers too long to convert and for deep nesting."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise forms.ValidationError(f"Not valid JSON: {error}") from None
    except ValueError:  # json.loads's own, for an integer too long to convert
        raise forms.ValidationError("Not valid JSON: a number has too many digits.") from None
    except RecursionError:
        raise forms.ValidationError(TOO_DEEP) from None
    try:
        check_storable(value)
    except ValueError as error:
        raise forms.ValidationError(str(error)) from None
    return value


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
