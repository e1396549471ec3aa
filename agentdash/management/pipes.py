"""What the operator commands share about their output."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_quietly_when_the_reader_goes() -> Iterator[None]:
    """A reader that went away (`manage.py audit export ... | head`) ends the output
    quietly, as Unix tools do, instead of with a traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout points at /dev/null from here on, or Python complains again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
