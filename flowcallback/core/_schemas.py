"""The JSON schemas of a run directory's files (``flowcallback/schemas``), applied both ways.

Every document :mod:`flowcallback.core.store` writes is checked against the schema it will be read
with (:func:`check_before_writing`: a writer's bug raises ``ValueError`` before any file changes),
and every document it reads is validated (:func:`validate`, :func:`checked_json`: a hostile or
damaged file raises :class:`~flowcallback.RunFormatError` naming the file and where it breaks).

What the writer can produce is bounded (:data:`MAX_SAMPLES`, :data:`MAX_CLASSES`,
:data:`MAX_LAYERS`, :data:`MAX_NAME_LENGTH`: checked at the callback's door), the schemas carry the
same bounds (``maxItems``, ``maxLength``), and each file's size is bounded by them
(:data:`MAX_JSON_BYTES`). Reading checks the file's size before reading it, then the sizes of its
arrays and strings (:func:`bounds_problem`, which stops at the first one too long) before the
whole schema is applied, so that an oversized file is refused in time proportional to the bounds,
not to the file.
"""
from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

from flowcallback.core._files import _json_bytes, _read_json, _within, shown
from flowcallback.exceptions import RunFormatError

__all__ = ["check_before_writing", "checked_json", "schema_problem", "validate", "bounds_problem", "MAX_SAMPLES",
           "MAX_CLASSES", "MAX_LAYERS", "MAX_NAME_LENGTH", "MAX_JSON_BYTES", "MAX_SETS", "RESERVED_SET_NAMES",
           "SET_NAME", "set_name_problem"]

#: The most held-out samples a snapshot takes (``validation_data``).
MAX_SAMPLES = 100_000
#: The most classes a run may have (the model's outputs, ``class_names``).
MAX_CLASSES = 10_000
#: The most analysed layers (``layers``; a graph has two more columns: Prediction, Ground truth).
MAX_LAYERS = 4_096
#: The longest name (model, class, layer, layer type), in characters.
MAX_NAME_LENGTH = 256
#: The most held-out sets of one run (``FlowCallback({name: (x, y), ...})``; ``sets.json``).
MAX_SETS = 16
#: Names a held-out set cannot take: the files and folders of a run directory, so that a set's folder
#: is never mistaken for one of them (compared case-insensitively, as macOS and Windows compare names).
RESERVED_SET_NAMES = frozenset({"graphs", "errors", "tensorboard", "index.html", "run.json", "sets.json",
                                "plotly.min.js"})
#: A held-out set's name names its folder: a plain file name on every system (letters, digits, ``_``,
#: ``-``, ``.``; not starting or ending with a dot; ``\Z``: no trailing newline either).
SET_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_-])?\Z")
#: Windows's device names, which no folder can take there (``con``, ``nul.txt``...).
_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                           *(f"lpt{i}" for i in range(10))})


def set_name_problem(name) -> str:
    """Why ``name`` cannot name a held-out set's folder, or ``""``.

    Examples
    --------
    >>> set_name_problem("clean"), set_name_problem("nul.x") != "", set_name_problem("a.") != ""
    ('', True, True)
    """
    if not isinstance(name, str) or not SET_NAME.match(name):
        return ("not a plain name: it names the set's folder under log_dir, so use 1 to 64 letters, digits, '_', "
                "'-' or '.', starting with a letter or digit and not ending with '.'")
    if name.lower() in RESERVED_SET_NAMES:
        return "taken by a run directory's own files"
    if name.split(".")[0].lower() in _DEVICE_NAMES:
        return "a device name on Windows, where no folder can take it"
    return ""

# A name as the writer stores it: up to 4 bytes per character in UTF-8, quotes, indent, key.
_NAME_BYTES = 4 * MAX_NAME_LENGTH + 64

#: The largest file of each schema that the loader reads; each is refused by its size (``fstat``)
#: before it is read, and the writer refuses to write a larger one (:func:`check_before_writing`).
#: ``run-1``: the class names and the layers (name and type) at their bounds, plus 1 MiB for the
#: settings. ``views-1`` and ``metrics-1``: their entries (``maxItems``) at the longest names.
#: ``flowgraph-1``: the clusters and flows of every column; a graph of 10,000 samples, 24 columns
#: and 10 classes whose every sample starts a flow of its own (the most flows it can have) takes
#: about 40 MB; a writer that would exceed this bound records an error for that epoch instead.
MAX_JSON_BYTES = {
    "run-1": (MAX_CLASSES + 2 * MAX_LAYERS + 2) * _NAME_BYTES + 2**20,
    "views-1": 2 * 10_000 * (2 * _NAME_BYTES),
    "metrics-1": 10_000 * (2 * _NAME_BYTES + 1_024),
    "flowgraph-1": 128 * 2**20,
    "sets-1": 64 * 1_024,
}

PathLike = Union[str, os.PathLike]


@cache
def _validator(name: str):
    import jsonschema  # the reference JSON Schema implementation for Python

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / f"{name}.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _schema(name: str) -> dict:
    return _validator(name).schema


_BOUNDED: dict = {}


def _bounded(sub: dict) -> bool:
    """Whether a (sub)schema bounds a size anywhere inside it (else its values need no look)."""
    key = id(sub)
    if key not in _BOUNDED:
        _BOUNDED[key] = any(f'"{k}"' in json.dumps(sub) for k in ("maxItems", "maxLength", "maxProperties"))
    return _BOUNDED[key]


def bounds_problem(doc, schema: str) -> Optional[str]:
    """The first array, object or string of ``doc`` longer than ``schema`` allows (``maxItems``,
    ``maxProperties``, ``maxLength``), or None.

    Cheap whatever ``doc`` holds: an array is measured before its items are looked at, and only
    arrays within their bound are descended into, so a column listing two million cluster ids is
    refused after one ``len``. Types are not checked here (:func:`schema_problem` does that).
    """
    def join(where, part):
        part = str(part)
        part = part if len(part) <= 40 else f"{part[:40]}…"
        return f"{where}/{part}" if where else part

    def walk(value, sub, where):
        if not isinstance(sub, dict) or not _bounded(sub):
            return None
        if isinstance(value, str):
            limit = sub.get("maxLength")
            if limit is not None and len(value) > limit:
                return f"at {where or '(top level)'}: {shown(value)} is too long (at most {limit} characters)"
            return None
        if isinstance(value, list):
            limit = sub.get("maxItems")
            if limit is not None and len(value) > limit:
                return f"at {where or '(top level)'}: {len(value)} items is too many (at most {limit})"
            items = sub.get("items")
            if isinstance(items, dict) and _bounded(items):
                for i, v in enumerate(value):
                    problem = walk(v, items, join(where, i))
                    if problem:
                        return problem
            return None
        if isinstance(value, dict):
            limit = sub.get("maxProperties")
            if limit is not None and len(value) > limit:
                return f"at {where or '(top level)'}: {len(value)} properties is too many (at most {limit})"
            props, extra = sub.get("properties", {}), sub.get("additionalProperties")
            for k, v in value.items():
                problem = walk(v, props.get(k, extra), join(where, k))
                if problem:
                    return problem
        return None

    return walk(doc, _schema(schema), "")


def schema_problem(doc, schema: str, precheck: Optional[Callable[[object], Optional[str]]] = None) -> Optional[str]:
    """Where and how ``doc`` breaks ``schema`` (``"at notes/0: '...' is too long"``), or None.

    Sizes are checked first (:func:`bounds_problem`), then ``precheck(doc)`` if given (a cheap
    check of sizes that depend on each other, such as a graph's clusters against its samples),
    then the whole schema. A value quoted in the message is cut to about 80 characters, with its
    length.
    """
    problem = bounds_problem(doc, schema) or (precheck(doc) if precheck is not None else None)
    if problem:
        return problem
    errors = sorted(_validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    where = "/".join(str(p) if len(str(p)) <= 40 else f"{str(p)[:40]}…" for p in e.absolute_path) or "(top level)"
    message = e.message
    whole = repr(e.instance)
    if len(whole) > 80 and whole in message:  # "'xxx…' is too long": the value is not repeated whole
        message = message.replace(whole, shown(e.instance))
    if len(message) > 300:  # a long value quoted otherwise ("... is not one of [...]")
        message = f"{message[:150]} … {message[-100:]} ({len(message)} characters)"
    return f"at {where}: {message}"


def validate(doc, schema: str, path: Path, precheck=None) -> None:
    """Refuse a document read from a run directory that breaks its schema (see :func:`schema_problem`)."""
    problem = schema_problem(doc, schema, precheck)
    if problem:
        raise RunFormatError(f"{path}: does not match schema {schema} {problem}")


def check_before_writing(doc, schema: str, path: Path, precheck=None) -> bytes:
    """Refuse to write a document that the loader would refuse (a writer's bug, before any file changes).

    Returns
    -------
    bytes
        The document as the writer stores it (:func:`~flowcallback.core._files._json_bytes`),
        no larger than :data:`MAX_JSON_BYTES` of its schema.

    Raises
    ------
    ValueError
        Naming the file, the schema file and where in the document it breaks the schema.
    """
    problem = schema_problem(doc, schema, precheck)
    if problem:
        raise ValueError(f"{path}: the document to write does not match schema {schema} "
                         f"(flowcallback/schemas/{schema}.json) {problem}; nothing was written")
    data = _json_bytes(doc)
    if len(data) > MAX_JSON_BYTES[schema]:
        raise ValueError(f"{path}: the document to write takes {len(data)} bytes, more than the "
                         f"{MAX_JSON_BYTES[schema]} that the loader reads; nothing was written")
    return data


def checked_json(json_path: PathLike, root: Optional[PathLike], schema: str,
                 precheck=None) -> Tuple[Path, Path, dict]:
    """``(path, root, document)`` of a JSON file inside ``root`` (default: its directory), read as
    untrusted text (at most :data:`MAX_JSON_BYTES` of its schema) and validated against ``schema``."""
    path = Path(json_path)
    root = path.parent if root is None else Path(root)
    _within(root, path)
    doc = _read_json(path, MAX_JSON_BYTES[schema])
    validate(doc, schema, path, precheck)
    return path, root, doc
