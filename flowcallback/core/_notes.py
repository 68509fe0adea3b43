"""Notes: the one-sentence remarks shown with a graph (see :mod:`flowcallback.core.stages`).

A note is a :class:`Note`: its text, and its kind, said where it is made: ``"problem"`` (something
failed or is missing: LRP skipped, a layer left out; drawn in red) or ``"info"`` (how LRP is
computed, how the columns were chosen; drawn in grey). A plain string is information.

A graph's notes are saved with it (``notes`` of schema ``flowgraph-1``), which bounds them:
at most :data:`MAX_NOTES` notes of at most :data:`MAX_NOTE_LENGTH` characters each. The note
builders keep well within: a list of names is summarised (:func:`name_list`), an exception's
message is cut at a word (:func:`first_line`); :func:`check_notes` refuses what would not fit, so
that no graph that cannot be read back can be made.
"""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["MAX_NOTE_LENGTH", "MAX_NOTES", "NOTE_KINDS", "Note", "problem", "info", "as_note", "check_notes",
           "first_line", "name_list", "shorten"]

#: The kinds of note: something failed or is missing, or information.
NOTE_KINDS = ("problem", "info")

#: The most characters a graph note may have (``maxLength`` of ``notes`` in schema flowgraph-1).
MAX_NOTE_LENGTH = 2000
#: The most notes a graph may have (``maxItems`` of ``notes`` in schema flowgraph-1).
MAX_NOTES = 100


class Note(str):
    """A note's text (it is a ``str``), with its kind: ``"problem"`` or ``"info"``.

    Two notes are equal when their texts are; :attr:`kind` is compared where it matters
    (:meth:`flowcallback.FlowGraph.equals`).

    Examples
    --------
    >>> n = problem("LRP failed for this epoch: worker died")
    >>> n.kind, n.startswith("LRP failed")
    ('problem', True)
    >>> Note("Columns: every layer.").kind
    'info'
    >>> Note("x", kind="warning")
    Traceback (most recent call last):
    ...
    ValueError: kind: expected 'problem' or 'info', got 'warning'
    """

    __slots__ = ("kind",)

    def __new__(cls, text: str, kind: str = "info"):
        if kind not in NOTE_KINDS:
            raise ValueError(f"kind: expected 'problem' or 'info', got {kind!r}")
        note = super().__new__(cls, text)
        note.kind = kind
        return note

    def __repr__(self) -> str:
        return f"{self.kind}({str.__repr__(self)})"

    def __reduce__(self):
        return (Note, (str(self), self.kind))


def problem(text: str) -> Note:
    """A note that something failed or is missing (drawn in red)."""
    return Note(text, "problem")


def info(text: str) -> Note:
    """A note of information (drawn in grey)."""
    return Note(text, "info")


def as_note(note) -> Note:
    """``note`` as a :class:`Note`: a plain string is information."""
    return note if isinstance(note, Note) else Note(str(note))


def shorten(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else cut at the last word that fits, with "…".

    A text without a space in its first ``limit`` characters is cut where it reaches the limit.

    Parameters
    ----------
    text : str
    limit : int
        The most characters of the result (the "…" included), at least 2.

    Returns
    -------
    str

    Examples
    --------
    >>> shorten("the quick brown fox", 14)
    'the quick…'
    >>> shorten("the quick brown fox", 19)
    'the quick brown fox'
    >>> shorten("abcdefghij", 5)
    'abcd…'
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
        raise ValueError(f"limit: expected an integer >= 2, got {limit!r}")
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    cut = head.rfind(" ") if not text[limit - 1].isspace() else len(head)
    if cut > 0:
        head = head[:cut]
    return head.rstrip(" ,;:") + "…"


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message, cut at a word to ``limit`` characters, for a note.

    Examples
    --------
    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    >>> first_line(MemoryError())
    'MemoryError'
    >>> first_line(ValueError("layer(s) add_1, add_2, add_3 have no rule"), limit=26)
    'layer(s) add_1, add_2…'
    """
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return shorten(line, limit)


def name_list(names: Iterable[str], first: int = 5) -> str:
    """Names joined by commas; beyond ``first`` of them, the first ones and how many more.

    Parameters
    ----------
    names : iterable of str
    first : int, default=5
        How many names are written out when there are more.

    Returns
    -------
    str
        ``""`` for no name.

    Examples
    --------
    >>> name_list(["add", "add_1"])
    'add, add_1'
    >>> name_list([f"add_{i}" for i in range(120)])
    'add_0, add_1, add_2, add_3, add_4 and 115 more'
    """
    if isinstance(first, bool) or not isinstance(first, int) or first < 1:
        raise ValueError(f"first: expected an integer >= 1, got {first!r}")
    names = [str(n) for n in names]
    if len(names) <= first:
        return ", ".join(names)
    return f"{', '.join(names[:first])} and {len(names) - first} more"


def check_notes(notes: Sequence[str], what: str = "notes") -> None:
    """Refuse notes that a graph's file cannot hold: more than :data:`MAX_NOTES`, or one longer than
    :data:`MAX_NOTE_LENGTH` characters.

    Raises
    ------
    ValueError
        Naming ``what``, the note and the bound.

    Examples
    --------
    >>> check_notes(["LRP failed for this epoch: worker died"])
    >>> check_notes(["x" * 2001])
    Traceback (most recent call last):
    ...
    ValueError: notes[0]: expected at most 2000 characters (schema flowgraph-1), got 2001: 'xxxxxxxx...'
    """
    if len(notes) > MAX_NOTES:
        raise ValueError(f"{what}: expected at most {MAX_NOTES} notes (schema flowgraph-1), got {len(notes)}")
    for i, note in enumerate(notes):
        if len(note) > MAX_NOTE_LENGTH:
            raise ValueError(f"{what}[{i}]: expected at most {MAX_NOTE_LENGTH} characters (schema flowgraph-1), "
                             f"got {len(note)}: {note[:8] + '...'!r}")
