"""The one exception type users see: its message names the bad value and the fix.

Values in messages go through `shown`: they come from files and flags, so one can be megabytes of text
or a deeply shared structure (YAML aliases) whose full repr would not fit in memory, let alone a line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

SHOWN = 80  # characters of a value a message shows
_DEPTH = 6  # nesting levels shown before "..."


class NasError(Exception):
    """A problem with the user's input or environment; the CLI prints it on one line, no traceback."""


def note(text: str) -> None:
    """One line on stderr, at once: what a long step is doing must reach logs (nohup, SLURM, CI),
    and stdout stays clean for --json."""
    print(text, file=sys.stderr, flush=True)


def shown(value: Any, limit: int = SHOWN) -> str:
    """repr(value), cut to `limit` characters with "...": built piece by piece, so a huge or
    billion-laughs value costs no more than its first `limit` characters."""
    text = ""
    for piece in _pieces(value, _DEPTH, limit):
        text += piece
        if len(text) > limit:
            return text[:limit - 3] + "..."
    return text


def label(text: Any, limit: int = SHOWN) -> str:
    """A name from the user (a key, a design's name) as written when short and printable, else `shown`."""
    return text if isinstance(text, str) and len(text) <= limit and text.isprintable() else shown(text, limit)


def _pieces(value: Any, depth: int, limit: int) -> Iterator[str]:
    if isinstance(value, (str, bytes)):
        yield repr(value[:limit + 1])  # never the repr of a megabyte string
    elif not isinstance(value, (list, tuple, dict)):
        try:
            yield repr(value)
        except ValueError:  # an int of more than 4300 digits has no repr
            yield f"<{type(value).__name__}>"
    elif depth == 0:
        yield "..."
    else:
        opening, closing = "{}" if isinstance(value, dict) else "()" if isinstance(value, tuple) else "[]"
        yield opening
        for i, item in enumerate(value.items() if isinstance(value, dict) else value):
            yield ", " if i else ""
            if isinstance(value, dict):
                yield from _pieces(item[0], depth - 1, limit)
                yield ": "
                item = item[1]
            yield from _pieces(item, depth - 1, limit)
        yield ",)" if isinstance(value, tuple) and len(value) == 1 else closing
