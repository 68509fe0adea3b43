"""Notes: the one-sentence remarks shown with a graph (see :mod:`flowcallback.core.stages`)."""
from __future__ import annotations

__all__ = ["first_line"]


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message, cut to ``limit`` characters, for a note.

    Examples
    --------
    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    >>> first_line(MemoryError())
    'MemoryError'
    """
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
