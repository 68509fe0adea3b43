"""The JSON schemas of a run directory's files (``flowcallback/schemas``), applied both ways.

Every document :mod:`flowcallback.core.store` writes is checked against the schema it will be read
with (:func:`check_before_writing`: a writer's bug raises ``ValueError`` before any file changes),
and every document it reads is validated (:func:`validate`, :func:`checked_json`: a hostile or
damaged file raises :class:`~flowcallback.RunFormatError` naming the file and where it breaks).
"""
from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Optional, Tuple, Union

from flowcallback.core._files import _read_json, _within
from flowcallback.exceptions import RunFormatError

__all__ = ["check_before_writing", "checked_json", "schema_problem", "validate"]

PathLike = Union[str, os.PathLike]


@cache
def _validator(name: str):
    import jsonschema  # the reference JSON Schema implementation for Python

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / f"{name}.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


def schema_problem(doc, schema: str) -> Optional[str]:
    """Where and how ``doc`` breaks ``schema`` (``"at notes/0: '...' is too long"``), or None."""
    errors = sorted(_validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
    message = e.message
    if len(message) > 400:  # a long value is not repeated whole; the end says what is wrong with it
        message = f"{message[:200]} [...] {message[-150:]}"
    return f"at {where}: {message}"


def validate(doc, schema: str, path: Path) -> None:
    """Refuse a document read from a run directory that breaks its schema."""
    problem = schema_problem(doc, schema)
    if problem:
        raise RunFormatError(f"{path}: does not match schema {schema} {problem}")


def check_before_writing(doc, schema: str, path: Path) -> None:
    """Refuse to write a document that the loader would refuse (a writer's bug, before any file changes).

    Raises
    ------
    ValueError
        Naming the file, the schema file and where in the document it breaks the schema.
    """
    problem = schema_problem(doc, schema)
    if problem:
        raise ValueError(f"{path}: the document to write does not match schema {schema} "
                         f"(flowcallback/schemas/{schema}.json) {problem}; nothing was written")


def checked_json(json_path: PathLike, root: Optional[PathLike], schema: str) -> Tuple[Path, Path, dict]:
    """``(path, root, document)`` of a JSON file inside ``root`` (default: its directory), read as
    untrusted text and validated against ``schema``."""
    path = Path(json_path)
    root = path.parent if root is None else Path(root)
    _within(root, path)
    doc = _read_json(path)
    validate(doc, schema, path)
    return path, root, doc
