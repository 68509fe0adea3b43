"""Parameter constraints, in the manner of scikit-learn's ``_param_validation``.

Each rule is written once, as a :class:`Constraint`, by the module that owns the parameter
(``knn.NEIGHBOURS``, ``cluster.INFLATION``, ``_priority.NICE``...). The functions of that module
check their arguments with :func:`check`; :data:`flowcallback.settings.PARAMETER_CONSTRAINTS`
composes the same constraints into the table that :class:`~flowcallback.FlowCallback` checks at
the door. A value is valid when one of a parameter's constraints accepts it; otherwise the
``ValueError`` names the argument and lists what each constraint accepts.

We write this small module rather than import scikit-learn's: its ``_param_validation`` is
private (it changes between releases without notice), and its messages name scikit-learn's types
(``numbers.Integral``), not what a user should pass.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["Constraint", "NONE", "BOOLEAN", "integer", "real_above", "options", "names", "check"]


@dataclass(frozen=True)
class Constraint:
    """One kind of value a parameter accepts: a test, and the words for the error message."""

    accepts: Callable[[Any], bool]
    text: str


NONE = Constraint(lambda v: v is None, "None")
BOOLEAN = Constraint(lambda v: isinstance(v, bool), "True or False")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def integer(low: Optional[int] = None, high: Optional[int] = None, text: str = "") -> Constraint:
    """An integer (never a bool) in ``[low, high]``.

    Examples
    --------
    >>> integer(1).text, integer(1).accepts(3), integer(1).accepts(0), integer(1).accepts(True)
    ('a positive integer', True, False, False)
    """
    def accepts(v) -> bool:
        return _is_int(v) and (low is None or v >= low) and (high is None or v <= high)

    if not text:
        text = ("a positive integer" if (low, high) == (1, None) else f"an integer >= {low}" if high is None
                else f"an integer from {low} to {high}")
    return Constraint(accepts, text)


def real_above(low: float, text: str = "") -> Constraint:
    """A finite real number (never a bool) greater than ``low``."""
    return Constraint(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and low < v < float("inf"),
                      text or f"a number > {low:g}")


def options(*values: str, text: str = "") -> Constraint:
    """One of the strings ``values``.

    Examples
    --------
    >>> options("pca", "random").text
    "'pca' or 'random'"
    """
    shown = ", ".join(repr(v) for v in values[:-1]) + f" or {values[-1]!r}" if len(values) > 1 else repr(values[0])
    return Constraint(lambda v: isinstance(v, str) and v in values, text or shown)


def names(text: str = "a list of names") -> Constraint:
    """A list or tuple of strings (a single string is refused: it is not a list of names)."""
    return Constraint(lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v), text)


def check(name: str, value, *constraints: Constraint):
    """Return ``value`` if one of ``constraints`` accepts it; else raise a ``ValueError`` naming ``name``.

    Examples
    --------
    >>> check("k", 5, integer(1), options("auto", "paper"))
    5
    >>> check("k", 0, integer(1), options("auto", "paper"))
    Traceback (most recent call last):
    ...
    ValueError: k: expected a positive integer or 'auto' or 'paper', got 0
    """
    if not any(c.accepts(value) for c in constraints):
        raise ValueError(f"{name}: expected {' or '.join(c.text for c in constraints)}, got {value!r}")
    return value
