"""Store stage: versioned files of a run directory, written atomically, loaded without pickle.

Layout of a run directory (``log_dir``)::

    run.json                       run description (model, layers, classes, settings)
    plotly.min.js                  written once; the pages load it from here (offline)
    epoch_003.html                 one Sankey page per snapshot epoch
    graphs/epoch_003/activations.json   columns, clusters, flows, metrics (schema flowgraph-1)
    graphs/epoch_003/activations.npz    per-sample arrays: assignments, labels, predictions
    graphs/epoch_003/lrp.json, lrp.npz  the same for the LRP analysis
    errors/epoch_003.txt           what failed in a snapshot, with the traceback
    errors/setup.txt               what failed when the callback set up (the LRP engine refused the model)

Each epoch's graph directory is first written under a temporary name and then renamed, so it is
either complete or absent. Every file is written to a temporary file and renamed over its target.
Temporary names carry the writer's process id (``.epoch_003.<pid>.<random>.tmp``), so that the
leftovers of a writer that was killed can be told from those of a live one and removed
(:func:`remove_stale_temporaries`). Files and directories get the modes the umask allows, as any
other program's files would (0644 and 0755 under umask 022).

A run directory may come from someone else, so loading trusts nothing in it: only regular files are
opened (a FIFO would block forever), each JSON file is validated against its schema (shipped in
``flowcallback/schemas``), npz files are opened with :mod:`zipfile` and each member's npy header
(shape, dtype) is checked against the JSON before any data is unpacked, so that a compression bomb
or a header claiming a huge shape costs no memory; nothing is ever unpickled. The arrays' values are
checked against the JSON and the flows recomputed. Any problem raises
:class:`~flowcallback.RunFormatError` naming the file. The run directory's ``plotly.min.js`` is
never trusted either: every page write puts the installed plotly package's own copy in place unless
the file there is byte for byte that copy (:func:`ensure_plotlyjs`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

# The file helpers live in _files (the page writers use them too); every name stays importable from here.
from flowcallback.core._files import (  # noqa: F401
    _KINDS,
    _PLOTLYJS,
    _TEMPORARY,
    _UMASK_LOCK,
    _dir_mode,
    _file_mode,
    _is_package_plotlyjs,
    _json_bytes,
    _open_regular,
    _pid_alive,
    _plotlyjs_bytes,
    _plotlyjs_identity,
    _read_json,
    _read_text,
    _refuse_directory,
    _temp_prefix,
    _umask,
    _within,
    atomic_write,
    ensure_plotlyjs,
    remove_stale_temporaries,
)
from flowcallback.core.compare import Comparison, compare_epochs
from flowcallback.core.flows import Column, FlowGraph, clean_metric
from flowcallback.exceptions import RunFormatError

__all__ = [
    "FORMAT_VERSION",
    "atomic_write",
    "ensure_plotlyjs",
    "remove_stale_temporaries",
    "graph_to_json",
    "save_epoch",
    "load_flow_graph",
    "EpochViews",
    "views_to_json",
    "load_epoch_views",
    "write_run_info",
    "read_run_info",
    "Run",
    "load_run",
    "epoch_page_name",
    "SETUP_ERRORS",
]

FORMAT_VERSION = 1
#: The key of :meth:`Run.errors` for the errors of the set-up (``errors/setup.txt``); the others are epochs.
SETUP_ERRORS = "setup"
_EPOCH_DIR = re.compile(r"^epoch_(\d{3,})$")
_ANALYSIS = re.compile(r"^[a-z][a-z0-9_]*$")
#: Names of an epoch directory's files that are not an analysis's graph.
_NOT_ANALYSES = frozenset({"metrics", "views"})
#: The fields of one flow in a graph's JSON, in order (columns of ``FlowGraph.flows``).
_FLOW_FIELDS = ("source_column", "target_column", "source_cluster", "target_cluster", "true_class", "count")

PathLike = Union[str, os.PathLike]


def epoch_page_name(epoch: int) -> str:
    """File name of an epoch's page: ``epoch_003.html``."""
    return f"epoch_{int(epoch):03d}.html"


def _epoch_dir_name(epoch: int) -> str:
    return f"epoch_{int(epoch):03d}"


# -- schemas -------------------------------------------------------------------------------------
@cache
def _validator(name: str):
    import jsonschema  # the reference JSON Schema implementation for Python

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / f"{name}.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _schema_problem(doc, schema: str) -> Optional[str]:
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


def _validate(doc, schema: str, path: Path) -> None:
    """Refuse a document read from a run directory that breaks its schema."""
    problem = _schema_problem(doc, schema)
    if problem:
        raise RunFormatError(f"{path}: does not match schema {schema} {problem}")


def _check_before_writing(doc, schema: str, path: Path) -> None:
    """Refuse to write a document that the loader would refuse (a writer's bug, before any file changes).

    Raises
    ------
    ValueError
        Naming the file, the schema file and where in the document it breaks the schema.
    """
    problem = _schema_problem(doc, schema)
    if problem:
        raise ValueError(f"{path}: the document to write does not match schema {schema} "
                         f"(flowcallback/schemas/{schema}.json) {problem}; nothing was written")


def _checked_json(json_path: PathLike, root: Optional[PathLike], schema: str) -> Tuple[Path, Path, dict]:
    """``(path, root, document)`` of a JSON file inside ``root`` (default: its directory), read as
    untrusted text and validated against ``schema``."""
    path = Path(json_path)
    root = path.parent if root is None else Path(root)
    _within(root, path)
    doc = _read_json(path)
    _validate(doc, schema, path)
    return path, root, doc


# -- one graph -----------------------------------------------------------------------------------
def graph_to_json(graph: FlowGraph, arrays_name: str) -> dict:
    """The JSON document (schema ``flowgraph-1``) describing a graph."""
    columns = []
    for j, col in enumerate(graph.columns):
        counts = graph.class_counts(j)
        columns.append(
            {
                "name": col.name,
                "kind": col.kind,
                "layer_type": col.layer_type,
                "order": list(col.order),
                "note": col.note,
                "clusters": [
                    {"id": int(cid), "size": int(counts[p].sum()), "class_counts": counts[p].tolist()}
                    for p, cid in enumerate(col.order)
                ],
            }
        )
    flows = graph.flows
    return {
        "format": "flowcallback/flowgraph",
        "version": FORMAT_VERSION,
        "epoch": int(graph.epoch),
        "analysis": graph.analysis,
        "n_samples": graph.n_samples,
        "class_names": list(graph.class_names),
        "columns": columns,
        "metrics": {str(k): clean_metric(v) for k, v in graph.metrics.items()},
        "flows": [
            {k: int(v) for k, v in zip(_FLOW_FIELDS, row)}
            for row in flows[list(_FLOW_FIELDS)].itertuples(index=False)
        ],
        "arrays": arrays_name,
        "notes": list(graph.notes),
    }


def _npz_bytes(graph: FlowGraph) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, assignments=graph.assignments, labels=graph.labels, predictions=graph.predictions)
    return buf.getvalue()


# What a saved array may hold: integers of at most 8 bytes (flowcallback writes int32).
_MAX_ITEMSIZE = 8
# An npy header is at most numpy's default max_header_size (10,000 bytes) plus magic and length.
_NPY_HEADER_MAX = 10_000 + 16
_CHUNK = 1 << 20


def _npz_size_bound(shapes: Mapping[str, Tuple[int, ...]]) -> int:
    """Largest npz file that arrays of these shapes can make: deflate grows incompressible data by
    well under 1 %, and the zip headers of three members take a few hundred bytes."""
    raw = sum(math.prod(s) * _MAX_ITEMSIZE + _NPY_HEADER_MAX for s in shapes.values())
    return raw + raw // 100 + 64 * 1024


_KIND_NAMES = {"iu": "integers", "f": "floating-point numbers"}


def _read_npy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str, shape: Tuple[int, ...],
                     kinds: str = "iu") -> np.ndarray:
    """Read one npy member, checking its declared size and header before unpacking any data.

    Memory stays bounded by ``shape`` whatever the member claims: its unpacked size and npy
    header are checked first, and exactly the bytes that ``shape`` and the dtype need are read.
    ``kinds`` is ``"iu"`` for integer arrays (the graphs' arrays), ``"f"`` for floating-point ones.
    """
    if info.flag_bits & 0x1:
        raise RunFormatError(f"{path}: array {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise RunFormatError(f"{path}: array {name!r} uses zip compression method {info.compress_type}; "
                             "expected deflate or none (numpy.savez_compressed)")
    bound = math.prod(shape) * _MAX_ITEMSIZE + _NPY_HEADER_MAX
    if info.file_size > bound:
        raise RunFormatError(f"{path}: array {name!r} unpacks to {info.file_size} bytes, more than the {bound} "
                             f"that an array of {_KIND_NAMES[kinds]} of shape {shape} takes; refused")
    with z.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version == (1, 0):
            got, fortran, dtype = np.lib.format.read_array_header_1_0(m)
        elif version == (2, 0):
            got, fortran, dtype = np.lib.format.read_array_header_2_0(m)
        else:
            raise RunFormatError(f"{path}: array {name!r} has npy format version {version}; expected 1.0 or 2.0")
        if dtype.hasobject or dtype.kind not in kinds or dtype.itemsize > _MAX_ITEMSIZE:
            raise RunFormatError(f"{path}: array {name!r} must hold {_KIND_NAMES[kinds]}, has dtype {dtype}")
        if tuple(got) != tuple(shape):
            raise RunFormatError(f"{path}: array shapes do not match the JSON: {name!r} has shape {tuple(got)}, "
                                 f"expected {tuple(shape)} from n_samples and the columns")
        nbytes = math.prod(shape) * dtype.itemsize
        # Grown as data arrives rather than allocated up front: a JSON and a header that agree on
        # a huge shape cost memory only if the member really unpacks to that much.
        buf = bytearray()
        while len(buf) < nbytes:
            chunk = m.read(min(_CHUNK, nbytes - len(buf)))
            if not chunk:
                raise RunFormatError(f"{path}: array {name!r} is truncated ({len(buf)} of {nbytes} bytes)")
            buf += chunk
        if m.read(1):  # also makes zipfile check the CRC
            raise RunFormatError(f"{path}: array {name!r} has data after its {nbytes} bytes")
    a = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a if dtype.isnative else a.astype(dtype.newbyteorder("="))


def _load_arrays(path: Path, shapes: Mapping[str, Tuple[int, ...]],
                 kinds: Optional[Mapping[str, str]] = None) -> Dict[str, np.ndarray]:
    """Load the npz arrays ``shapes`` names, each of the shape given, without trusting the file.

    The file must be a regular file no larger than such arrays can make; each member's declared
    unpacked size and npy header (shape, integer dtype, never objects) are checked before any data
    is unpacked, so a compression bomb or a header claiming a huge shape is refused at no cost.

    Parameters
    ----------
    path : pathlib.Path
    shapes : mapping of str to tuple of int
        The expected arrays and their shapes, from the graph's JSON.
    kinds : mapping of str to str, optional
        ``"f"`` for the arrays that hold floating-point numbers; the others hold integers.

    Raises
    ------
    RunFormatError
        Naming the file and what was expected.
    """
    with _open_regular(path) as f:
        size, limit = os.fstat(f.fileno()).st_size, _npz_size_bound(shapes)
        if size > limit:
            raise RunFormatError(f"{path}: {size} bytes, more than the {limit} that arrays of shapes "
                                 f"{dict(shapes)} can take; refused")
        try:
            with zipfile.ZipFile(f) as z:
                infos = z.infolist()
                found = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
                if sorted(found) != sorted(shapes) or any(not i.filename.endswith(".npy") for i in infos):
                    raise RunFormatError(f"{path}: expected arrays {sorted(shapes)}, found {sorted(found)}")
                kinds = kinds or {}
                return {name: _read_npy_member(z, info, path, name, tuple(shapes[name]), kinds.get(name, "iu"))
                        for name, info in zip(found, infos)}
        except RunFormatError:
            raise
        except (OSError, ValueError, TypeError, SyntaxError, RecursionError, EOFError, NotImplementedError,
                RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
            raise RunFormatError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from None


def load_flow_graph(json_path: PathLike, *, root: Optional[PathLike] = None) -> FlowGraph:
    """Load one graph (JSON + its npz) and check that both agree.

    Parameters
    ----------
    json_path : str or path
    root : str or path, optional
        The directory both files must stay inside once symlinks are followed (default: the JSON
        file's directory).

    Raises
    ------
    RunFormatError
        Naming the file and the problem.
    """
    path, root, doc = _checked_json(json_path, root, "flowgraph-1")
    npz = _within(root, path.parent / doc["arrays"])
    n, cols = doc["n_samples"], doc["columns"]
    # The shapes the JSON implies bound what the npz may unpack to (see _load_arrays).
    arrays = _load_arrays(npz, {"assignments": (n, len(cols)), "labels": (n,), "predictions": (n,)})
    a, y, p = arrays["assignments"], arrays["labels"], arrays["predictions"]
    n_classes = len(doc["class_names"])
    if y.size and (y.min() < 0 or y.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise RunFormatError(f"{npz}: labels or predictions outside 0..{n_classes - 1}")
    kinds = [c["kind"] for c in cols]
    if kinds[-2:] != ["prediction", "ground_truth"] or any(k != "layer" for k in kinds[:-2]):
        raise RunFormatError(f"{path}: columns must be layers, then one prediction and one ground_truth column")
    for j, c in enumerate(cols):
        order = c["order"]
        if len(set(order)) != len(order) or [cl["id"] for cl in c["clusters"]] != order:
            raise RunFormatError(f"{path}: column {c['name']!r} lists its clusters inconsistently")
        present, counts = np.unique(a[:, j], return_counts=True)
        if not set(present.tolist()) <= set(order):
            raise RunFormatError(f"{npz}: column {c['name']!r} has samples in clusters not listed in {path.name}")
        size = dict(zip(present.tolist(), counts.tolist()))
        for cl in c["clusters"]:
            class_counts = cl["class_counts"]
            if cl["size"] != size.get(cl["id"], 0) or len(class_counts) != n_classes or sum(class_counts) != cl["size"]:
                raise RunFormatError(f"{path}: cluster {cl['id']} of column {c['name']!r} does not match the arrays")
    if not np.array_equal(a[:, -2], p) or not np.array_equal(a[:, -1], y):
        raise RunFormatError(f"{npz}: the Prediction / Ground truth columns differ from the predictions / labels")
    graph = FlowGraph(
        epoch=doc["epoch"],
        analysis=doc["analysis"],
        columns=tuple(Column(c["name"], c["kind"], c["layer_type"], tuple(c["order"]), c["note"]) for c in cols),
        assignments=a,
        labels=y,
        predictions=p,
        class_names=tuple(doc["class_names"]),
        metrics=doc["metrics"],
        notes=tuple(doc.get("notes", ())),
    )
    expected = graph.flows[list(_FLOW_FIELDS)]
    got = [tuple(f.values()) for f in doc["flows"]]
    want = [tuple(int(v) for v in r) for r in expected.itertuples(index=False)]
    if sorted(got) != sorted(want):
        raise RunFormatError(f"{path}: the flows listed do not match the per-sample arrays in {npz.name}")
    return graph


# -- views of an epoch: class means and 2-D projections ----------------------------------------------
#: Base name of an epoch's views files (``views.json``, ``views.npz``); never an analysis name.
VIEWS = "views"


def _frozen(a, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype)  # a copy: the caller's array may change later
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class EpochViews:
    """What an epoch stores for the class-means and projection views (``graphs/epoch_XXX/views.*``).

    Parameters
    ----------
    class_means : mapping of (analysis, layer) to ndarray (n_classes, units)
        Per-class mean of each unit or channel (:mod:`flowcallback.core.aggregate`): rows in class
        order, a row of NaN for a class without a sample.
    projections : mapping of (analysis, layer) to ndarray (n_projected, 2)
        Aligned 2-D projections (:func:`flowcallback.core.project.project_layers`); row ``i`` is
        sample ``projection_samples[i]`` of the held-out set.
    projection_samples : array-like of int, optional
        Indices (into the held-out set, ascending, distinct) of the projected samples; required
        with ``projections``.
    projection_method : str, optional
        ``"umap"`` or ``"pca"``: what made the projections.

    The arrays are stored as read-only float32 (int64 for the samples) copies.

    Examples
    --------
    >>> v = EpochViews(class_means={("activations", "dense"): np.zeros((3, 4))})
    >>> v.class_means[("activations", "dense")].shape
    (3, 4)
    """

    class_means: Mapping[Tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict)
    projections: Mapping[Tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict)
    projection_samples: Optional[np.ndarray] = None
    projection_method: Optional[str] = None

    def __post_init__(self):
        def keyed(mapping, what):
            out = {}
            for key, value in dict(mapping).items():
                if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) and k for k in key)):
                    raise ValueError(f"{what}: keys must be (analysis, layer) pairs of names, got {key!r}")
                if not _ANALYSIS.match(key[0]):
                    raise ValueError(f"{what}: analysis {key[0]!r} must be a lowercase identifier")
                out[key] = _frozen(value, np.float32)
            return MappingProxyType(out)

        means = keyed(self.class_means, "class_means")
        for key, m in means.items():
            if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
                raise ValueError(f"class_means: {key} must have shape (n_classes, units), got {m.shape}")
            if np.isinf(m).any() or (np.isnan(m).any(axis=1) != np.isnan(m).all(axis=1)).any():
                raise ValueError(
                    f"class_means: {key} may hold NaN only as whole rows (classes without samples), no infinity")
        projections = keyed(self.projections, "projections")
        samples = self.projection_samples
        if samples is not None:
            raw = np.asarray(samples)
            if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
                raise ValueError(
                    f"projection_samples: expected a 1-D array of sample indices, got {raw.dtype} {raw.shape}")
            samples = _frozen(raw, np.int64)
            if samples.size and (samples[0] < 0 or np.any(np.diff(samples) <= 0)):
                raise ValueError("projection_samples: expected distinct non-negative indices in ascending order")
        if projections and samples is None:
            raise ValueError("projection_samples: required with projections (which samples they show)")
        for key, p in projections.items():
            if p.shape != (len(samples), 2) or not np.isfinite(p).all():
                raise ValueError(f"projections: {key} must be finite of shape ({len(samples)}, 2), got {p.shape}")
        if self.projection_method is not None and not isinstance(self.projection_method, str):
            raise ValueError(f"projection_method: expected a string, got {self.projection_method!r}")
        object.__setattr__(self, "class_means", means)
        object.__setattr__(self, "projections", projections)
        object.__setattr__(self, "projection_samples", samples)

    def __bool__(self) -> bool:
        return bool(self.class_means or self.projections)


def views_to_json(views: EpochViews, epoch: int, arrays_name: str) -> dict:
    """The JSON document (schema ``views-1``) describing an epoch's views; the npz holds
    ``class_means_<i>``, ``projection_<i>`` in the order listed, and ``projection_samples``."""
    samples = views.projection_samples
    return {
        "format": "flowcallback/views",
        "version": FORMAT_VERSION,
        "epoch": int(epoch),
        "arrays": arrays_name,
        "class_means": [{"analysis": a, "layer": layer, "units": int(m.shape[1])}
                        for (a, layer), m in views.class_means.items()],
        "projections": [{"analysis": a, "layer": layer} for a, layer in views.projections],
        "projection_samples": 0 if samples is None else int(len(samples)),
        "projection_method": views.projection_method,
    }


def _views_npz_bytes(views: EpochViews) -> bytes:
    import io

    arrays = {f"class_means_{i}": m for i, m in enumerate(views.class_means.values())}
    arrays.update({f"projection_{i}": p for i, p in enumerate(views.projections.values())})
    samples = views.projection_samples
    arrays["projection_samples"] = np.zeros(0, np.int64) if samples is None else samples
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _check_views_against(views: EpochViews, graphs: Mapping[str, FlowGraph]) -> None:
    """Refuse views that do not fit the epoch's graphs (a mistake of the caller, before anything is written)."""
    g = next(iter(graphs.values()))
    n_classes, n_samples = len(g.class_names), g.n_samples
    from flowcallback.core.aggregate import MAX_VALUES

    for key, m in views.class_means.items():
        if m.shape[0] != n_classes:
            raise ValueError(f"views: class means {key} have {m.shape[0]} rows, the graphs {n_classes} classes")
        if m.size > MAX_VALUES:
            raise ValueError(f"views: class means {key} hold {m.size} values, more than {MAX_VALUES}")
    samples = views.projection_samples
    if samples is not None and samples.size and samples[-1] >= n_samples:
        raise ValueError(f"views: projection_samples go up to {int(samples[-1])}, the graphs have {n_samples} samples")


def load_epoch_views(json_path: PathLike, *, n_classes: int, n_samples: int, root: Optional[PathLike] = None,
                     layers: Optional[Sequence[str]] = None, analyses: Optional[Sequence[str]] = None) -> EpochViews:
    """Load an epoch's views (``views.json`` + its npz) without trusting them.

    Each array's shape comes from the JSON and from what the caller knows of the run (the number
    of classes from ``run.json``, the held-out set's size from the epoch's graphs), and is checked
    before the npz is read, as for the graphs (:func:`load_flow_graph`): a header or a JSON claiming
    a huge shape is refused before anything is unpacked.

    Parameters
    ----------
    json_path : str or path
    n_classes, n_samples : int
        The run's classes and the epoch's held-out samples.
    root : str or path, optional
        The directory both files must stay inside (default: the JSON file's directory).
    layers, analyses : sequence of str, optional
        The names the entries may use (the run's layers and analyses).

    Raises
    ------
    RunFormatError
        Naming the file and the problem.
    """
    from flowcallback.core.aggregate import MAX_VALUES

    path, root, doc = _checked_json(json_path, root, "views-1")
    for what, entries in (("class_means", doc["class_means"]), ("projections", doc["projections"])):
        keys = [(e["analysis"], e["layer"]) for e in entries]
        if len(set(keys)) != len(keys):
            raise RunFormatError(f"{path}: {what} lists an (analysis, layer) twice")
        for a, layer in keys:
            if analyses is not None and a not in analyses:
                raise RunFormatError(f"{path}: {what} names analysis {a!r}, which the run does not have")
            if layers is not None and layer not in layers:
                raise RunFormatError(f"{path}: {what} names layer {layer!r}, which is not among the run's layers")
    m = doc["projection_samples"]
    if m > n_samples or (doc["projections"] and m == 0):
        raise RunFormatError(f"{path}: projection_samples is {m}; the epoch has {n_samples} samples"
                             + (" and projections need at least one" if m == 0 else ""))
    shapes: Dict[str, Tuple[int, ...]] = {"projection_samples": (m,)}
    kinds = {}
    for i, e in enumerate(doc["class_means"]):
        if n_classes * e["units"] > MAX_VALUES:
            raise RunFormatError(f"{path}: class means of {e['layer']!r} claim {n_classes} × {e['units']} values, "
                                 f"more than the {MAX_VALUES} a layer may hold; refused")
        shapes[f"class_means_{i}"] = (n_classes, e["units"])
        kinds[f"class_means_{i}"] = "f"
    for i in range(len(doc["projections"])):
        shapes[f"projection_{i}"] = (m, 2)
        kinds[f"projection_{i}"] = "f"
    npz = _within(root, path.parent / doc["arrays"])
    arrays = _load_arrays(npz, shapes, kinds)
    samples = arrays["projection_samples"]
    if samples.size and (samples.min() < 0 or samples.max() >= n_samples or np.any(np.diff(samples) <= 0)):
        raise RunFormatError(f"{npz}: projection_samples must be distinct indices in 0..{n_samples - 1}, ascending")
    try:
        return EpochViews(
            class_means={(e["analysis"], e["layer"]): arrays[f"class_means_{i}"]
                         for i, e in enumerate(doc["class_means"])},
            projections={(e["analysis"], e["layer"]): arrays[f"projection_{i}"]
                         for i, e in enumerate(doc["projections"])},
            projection_samples=samples if doc["projections"] else None,
            projection_method=doc["projection_method"],
        )
    except ValueError as exc:  # values that no writer produces: infinities, partial NaN rows
        raise RunFormatError(f"{npz}: {exc}") from None


# -- epochs and runs -----------------------------------------------------------------------------
def save_epoch(log_dir: PathLike, graphs: Mapping[str, FlowGraph], views: Optional[EpochViews] = None, *,
               metrics=None) -> Path:
    """Write every analysis of one epoch into ``graphs/epoch_XXX/``, atomically as a whole.

    An existing directory for the same epoch is replaced.

    Parameters
    ----------
    log_dir : str or path
    graphs : mapping of analysis name to FlowGraph
        The epoch's graphs (``{"activations": g}``, ``{"activations": g, "lrp": h}``).
    views : EpochViews, optional
        The epoch's class means and projections, written beside the graphs as ``views.json`` and
        ``views.npz`` in the same atomic step. None (or empty views): no views files.
    metrics : pandas.DataFrame, optional
        Their layer metrics (:func:`flowcallback.core.metrics.layer_metrics`), written as
        ``metrics.json`` (schema ``metrics-1``) so that :meth:`Run.metrics` reads them instead of
        computing them again.

    Returns
    -------
    pathlib.Path
        The epoch's graph directory.

    Raises
    ------
    ValueError
        For graphs of several epochs, views that do not fit the graphs (class means without
        one row per class, projected samples beyond the held-out set), or a document that the
        loader would refuse (it breaks its schema: a writer's bug), naming the file, the schema and
        where. Nothing is written then: an earlier directory of the epoch stays as it was.
    """
    if not graphs:
        raise ValueError("graphs: expected at least one FlowGraph")
    epochs = {g.epoch for g in graphs.values()}
    if len(epochs) != 1:
        raise ValueError(f"graphs: expected graphs of one epoch, got epochs {sorted(epochs)}")
    for analysis, g in graphs.items():
        if not _ANALYSIS.match(analysis) or analysis != g.analysis or analysis in _NOT_ANALYSES:
            raise ValueError(f"graphs: key {analysis!r} must be the graph's analysis name (lowercase identifier, "
                             f"none of {sorted(_NOT_ANALYSES)})")
    if views is not None:
        if not isinstance(views, EpochViews):
            raise ValueError(f"views: expected an EpochViews, got {type(views).__name__}")
        _check_views_against(views, graphs)
    epoch = epochs.pop()
    root = Path(log_dir) / "graphs"
    final = root / _epoch_dir_name(epoch)
    # Each JSON document is checked against the schema that load_run reads it with before anything
    # is written: what is written can be read.
    documents = {f"{a}.json": (graph_to_json(g, f"{a}.npz"), "flowgraph-1") for a, g in graphs.items()}
    if views:
        documents[f"{VIEWS}.json"] = (views_to_json(views, epoch, f"{VIEWS}.npz"), "views-1")
    if metrics is not None:
        documents[METRICS_FILE] = (_metrics_doc(epoch, metrics), "metrics-1")
    for name, (doc, schema) in documents.items():
        _check_before_writing(doc, schema, final / name)
    root.mkdir(parents=True, exist_ok=True)
    # The temporary name carries this process's id: remove_stale_temporaries tells a dead writer's.
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final.name), suffix=".tmp", dir=root))
    try:
        for analysis, g in graphs.items():
            atomic_write(tmp / f"{analysis}.npz", _npz_bytes(g))
        if views:
            atomic_write(tmp / f"{VIEWS}.npz", _views_npz_bytes(views))
        for name, (doc, _) in documents.items():
            atomic_write(tmp / name, _json_bytes(doc))
        os.chmod(tmp, _dir_mode())  # mkdtemp creates 0700 whatever the umask
        if final.exists():
            old = root / f"{_temp_prefix(final.name)}old.tmp"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


METRICS_FILE = "metrics.json"


def _metrics_doc(epoch: int, metrics) -> dict:
    rows = [{name: clean_metric(v) for name, v in row.items()} for row in metrics.to_dict("records")]
    return {"format": "flowcallback/metrics", "version": 1, "epoch": int(epoch), "rows": rows}


def write_run_info(log_dir: PathLike, info: Mapping) -> Path:
    """Write ``run.json`` (schema ``run-1``) atomically.

    Raises
    ------
    ValueError
        If the document breaks the schema that :func:`read_run_info` checks (naming the file, the
        schema and where); nothing is written then.
    """
    doc = dict(info)
    doc.setdefault("format", "flowcallback/run")
    doc.setdefault("version", FORMAT_VERSION)
    path = Path(log_dir) / "run.json"
    _check_before_writing(doc, "run-1", path)
    atomic_write(path, _json_bytes(doc))
    return path


def read_run_info(log_dir: PathLike) -> dict:
    """Read and validate ``run.json``."""
    path = Path(log_dir) / "run.json"
    doc = _read_json(path)
    _validate(doc, "run-1", path)
    return doc


class Run:
    """A run directory written by :class:`~flowcallback.FlowCallback`.

    Attributes
    ----------
    path : pathlib.Path
    info : dict
        The content of ``run.json``.

    Examples
    --------
    A run of two epochs, written as the callback writes it (one Dense layer, four samples):

    >>> import shutil
    >>> from flowcallback.demo import tiny_run
    >>> log_dir = tiny_run()
    >>> run = load_run(log_dir)
    >>> run.epochs
    [0, 1]
    >>> g = run.epoch(1)                                  # activations by default
    >>> g.column_names
    ('dense', 'Prediction', 'Ground truth')
    >>> g.flows[["source_column", "true_class", "count"]].values.tolist()
    [[0, 0, 1], [0, 0, 1], [0, 1, 2], [1, 0, 1], [1, 0, 1], [1, 1, 2]]
    >>> shutil.rmtree(log_dir)
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunFormatError(f"{self.path}: not a directory")
        _within(self.path, self.path / "run.json")
        self.info = read_run_info(self.path)
        self._cache: Dict[tuple, FlowGraph] = {}
        self._views: Dict[tuple, Optional[EpochViews]] = {}

    @property
    def class_names(self) -> List[str]:
        return list(self.info["class_names"])

    @property
    def epochs(self) -> List[int]:
        """Epochs with a complete graph directory, ascending."""
        root = self.path / "graphs"
        if not root.is_dir():
            return []
        _within(self.path, root)
        out = []
        for d in root.iterdir():
            m = _EPOCH_DIR.match(d.name)
            if m and d.is_dir() and not d.is_symlink():
                out.append(int(m.group(1)))
        return sorted(out)

    def analyses(self, epoch: int) -> List[str]:
        """Analyses saved for an epoch (``["activations", "lrp"]`` when LRP succeeded)."""
        d = self._epoch_dir(epoch)
        return sorted(p.stem for p in d.glob("*.json") if _ANALYSIS.match(p.stem) and p.stem not in _NOT_ANALYSES)

    def _epoch_dir(self, epoch: int) -> Path:
        if int(epoch) not in self.epochs:
            raise KeyError(f"epoch {epoch} is not in this run; its epochs are {self.epochs}")
        return self.path / "graphs" / _epoch_dir_name(epoch)

    def epoch(self, epoch: int, analysis: str = "activations") -> FlowGraph:
        """The :class:`FlowGraph` of one epoch and analysis (``"activations"`` or ``"lrp"``)."""
        key = (int(epoch), analysis)
        if key not in self._cache:
            d = self._epoch_dir(epoch)
            if not isinstance(analysis, str) or not _ANALYSIS.match(analysis) or analysis in _NOT_ANALYSES:
                raise ValueError(f"analysis: expected a name such as 'activations' or 'lrp', got {analysis!r}")
            path = d / f"{analysis}.json"
            if not path.exists():
                raise KeyError(f"epoch {epoch} has no {analysis!r} graph; it has {self.analyses(epoch)}")
            g = load_flow_graph(path, root=self.path)
            if g.epoch != int(epoch) or g.analysis != analysis:
                raise RunFormatError(f"{path}: says epoch {g.epoch} / {g.analysis!r}, expected {epoch} / {analysis!r}")
            self._cache[key] = g
        return self._cache[key]

    def graphs(self, analysis: str = "activations") -> Iterator[FlowGraph]:
        """Every epoch's graph of one analysis, in epoch order (epochs without it are skipped)."""
        for e in self.epochs:
            if analysis in self.analyses(e):
                yield self.epoch(e, analysis)

    def page(self, epoch: int) -> Path:
        """Path of an epoch's HTML page."""
        return self.path / epoch_page_name(epoch)

    def errors(self) -> Dict[int | str, str]:
        """The errors recorded by the run, with their tracebacks: ``{epoch: text}`` for the snapshots
        that failed (or a part of them: LRP, a layer, the projection), and ``{"setup": text}`` for
        what failed when the callback set up (the LRP engine refused the model, say: the graphs'
        notes give the first line of each reason, this the whole of it).

        Returns
        -------
        dict
            Epoch numbers (int), then the key :data:`SETUP_ERRORS` (``"setup"``) if the set-up
            recorded an error; empty for a run without errors.

        Examples
        --------
        >>> import shutil
        >>> from flowcallback.demo import tiny_run
        >>> run = load_run(tiny_run())
        >>> run.errors()                                  # nothing failed
        {}
        >>> _ = (run.path / "errors").mkdir(), (run.path / "errors" / "setup.txt").write_text("Traceback ...")
        >>> run.errors()                                  # as when the LRP engine refused the model
        {'setup': 'Traceback ...'}
        >>> shutil.rmtree(run.path)
        """
        d = self.path / "errors"
        out: Dict[int | str, str] = {}
        if d.is_dir():
            _within(self.path, d)
            for p in sorted(d.glob("epoch_*.txt")):
                m = re.match(r"^epoch_(\d+)\.txt$", p.name)
                if m:
                    out[int(m.group(1))] = _read_text(_within(self.path, p), errors="replace")
            setup = d / f"{SETUP_ERRORS}.txt"
            if os.path.lexists(setup):
                out[SETUP_ERRORS] = _read_text(_within(self.path, setup), errors="replace")
        return out

    def metrics(self, analysis: Optional[str] = None):
        """Layer metrics of every epoch as a tidy DataFrame (see :func:`flowcallback.core.metrics.layer_metrics`).

        One row per (epoch, analysis, layer): number of clusters, NMI and ARI against the classes and
        against the predictions, purity, and the NMI gained over the previous layer.
        The rows are those the snapshot computed and stored (``metrics.json``); they are computed
        from the graphs for an epoch without that file.
        """
        import pandas as pd

        from flowcallback.core.metrics import METRIC_COLUMNS, layer_metrics

        parts = []
        for e in self.epochs:
            analyses = [a for a in self.analyses(e) if analysis in (None, a)]
            path = self._epoch_dir(e) / METRICS_FILE
            if path.exists():
                _, _, doc = _checked_json(path, self.path, "metrics-1")
                if doc["epoch"] != e:
                    raise RunFormatError(f"{path}: says epoch {doc['epoch']}, expected {e}")
                rows = [r for r in doc["rows"] if r["analysis"] in analyses]
                parts.append(pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({"n_clusters": "int64"}))
            else:
                parts.append(layer_metrics([self.epoch(e, a) for a in analyses]))
        parts = [p for p in parts if not p.empty]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=METRIC_COLUMNS)
        return table.astype({c: "float64" for c in METRIC_COLUMNS[6:]})

    def class_profiles(self, epoch: int, analysis: str = "activations", **kwargs):
        """When each class gets separated at this epoch (see :func:`flowcallback.core.metrics.class_profiles`)."""
        from flowcallback.core.metrics import class_profiles

        return class_profiles(self.epoch(epoch, analysis), **kwargs)

    def epoch_flows(self, column: str, analysis: str = "activations", *, max_samples: int = 5):
        """Samples moving between ``column``'s clusters from each snapshot to the next.

        ``column`` is a layer name or ``"Prediction"``. A tidy DataFrame, see
        :func:`flowcallback.core.history.epoch_flows`.
        """
        from flowcallback.core.history import epoch_flows

        return epoch_flows(list(self.graphs(analysis)), column, max_samples=max_samples)

    def confusion(self):
        """The held-out confusion matrix at every snapshot: a tidy DataFrame (epoch, true, predicted,
        count), see :func:`flowcallback.core.history.confusion`."""
        from flowcallback.core.history import confusion

        return confusion(list(self.graphs("activations")))

    def class_scores(self):
        """Each class's precision and recall at every snapshot (:func:`flowcallback.core.history.class_scores`)."""
        from flowcallback.core.history import class_scores

        return class_scores(list(self.graphs("activations")))

    def compare(self, epoch_a: int, epoch_b: int, analysis: str = "activations") -> Comparison:
        """Compare two epochs: per layer ARI between their clusterings, and the samples whose path changed.

        A sample's path changed at a layer when its cluster at ``epoch_b`` is not the match (Hungarian
        on Jaccard overlap) of its cluster at ``epoch_a`` (:func:`flowcallback.core.compare.compare_epochs`).
        """
        ga, gb = self.epoch(epoch_a, analysis), self.epoch(epoch_b, analysis)
        if not np.array_equal(ga.labels, gb.labels):
            raise RunFormatError(f"{self.path}: epochs {epoch_a} and {epoch_b} do not describe the same samples")
        return compare_epochs(ga, gb)

    # -- class means and projections ------------------------------------------------------------------
    def views(self, epoch: int) -> Optional[EpochViews]:
        """The epoch's stored class means and projections, or None where the epoch has none.

        Runs written before flowcallback stored them (and snapshots that computed none) have no
        ``views.json``; every other problem with the files raises :class:`~flowcallback.RunFormatError`.
        """
        key = (int(epoch), VIEWS)
        if key not in self._views:
            d = self._epoch_dir(epoch)
            path = d / f"{VIEWS}.json"
            if not os.path.lexists(path):
                self._views[key] = None
            else:
                names = self.analyses(epoch)
                if not names:
                    raise RunFormatError(f"{d}: holds views but no graph")
                n_samples = self.epoch(epoch, "activations" if "activations" in names else names[0]).n_samples
                v = load_epoch_views(path, root=self.path, n_classes=len(self.class_names), n_samples=n_samples,
                                     layers={layer["name"] for layer in self.info.get("layers", [])},
                                     analyses=set(self.info.get("analyses", [])) | set(names))
                doc_epoch = _read_json(path)["epoch"]
                if doc_epoch != int(epoch):
                    raise RunFormatError(f"{path}: says epoch {doc_epoch}, expected {int(epoch)}")
                self._views[key] = v
        return self._views[key]

    def class_means(self, epoch: int, layer: str, analysis: str = "activations", *, order: str = "similarity"):
        """Mean activation (or relevance) of each unit or channel of ``layer`` per class, at ``epoch``.

        Computed at snapshot time over the held-out set (:mod:`flowcallback.core.aggregate`): each
        sample's map is averaged over every axis but the last (a conv map's positions), then over
        the samples of each true class. A class without samples has a row of NaN.

        Parameters
        ----------
        epoch : int
        layer : str
        analysis : {"activations", "lrp"}, default="activations"
        order : {"similarity", "class"}, default="similarity"
            Rows in an order that puts classes with similar profiles next to each other
            (:func:`flowcallback.core.aggregate.class_order`; classes without samples last), or in
            class order.

        Returns
        -------
        pandas.DataFrame
            Index: class names (``"class"``); columns: unit or channel index (``"unit"``).
            ``attrs`` holds ``epoch``, ``layer``, ``analysis`` and ``classes`` (the class index of
            each row).

        Raises
        ------
        KeyError
            If the epoch has no class means (a run written before they were stored), or none for
            this layer and analysis; the message lists what it has.
        """
        import pandas as pd

        from flowcallback.core.aggregate import class_order

        if order not in ("similarity", "class"):
            raise ValueError(f"order: expected 'similarity' or 'class', got {order!r}")
        v = self.views(epoch)
        if v is None or not v.class_means:
            raise KeyError(f"epoch {epoch} has no class means (the run was written by a flowcallback that did not "
                           "store them, or the snapshot computed none)")
        if (analysis, layer) not in v.class_means:
            raise KeyError(f"epoch {epoch} has no {analysis!r} class means of layer {layer!r}; it has "
                           f"{sorted(v.class_means)}")
        m = v.class_means[(analysis, layer)]
        rows = class_order(m) if order == "similarity" else np.arange(len(m))
        names = self.class_names
        df = pd.DataFrame(np.array(m[rows]), index=pd.Index([names[i] for i in rows], name="class"),
                          columns=pd.RangeIndex(m.shape[1], name="unit"))
        df.attrs.update(epoch=int(epoch), layer=layer, analysis=analysis, classes=[int(i) for i in rows])
        return df

    def projection(self, layer: str, analysis: str = "activations"):
        """The stored 2-D projection of ``layer`` at every epoch that has one, as a tidy DataFrame.

        Columns: ``epoch``, ``sample`` (index in the held-out set), ``x``, ``y``, ``label``,
        ``prediction`` (class indices) and ``cluster`` (the sample's cluster at that layer in that
        epoch's ``analysis`` graph; -1 where the graph has no such column). Projections are aligned
        from epoch to epoch (:func:`flowcallback.core.project.project_layers`), so a sample's rows
        over the epochs trace how it moved.

        Raises
        ------
        KeyError
            If no epoch has a projection of this layer and analysis.
        """
        import pandas as pd

        parts, seen = [], set()
        for e in self.epochs:
            v = self.views(e)
            if v is None:
                continue
            seen.update(v.projections)
            p = v.projections.get((analysis, layer))
            if p is None:
                continue
            s = v.projection_samples
            names = self.analyses(e)
            fallback = "activations" if "activations" in names else names[0]
            g = self.epoch(e, analysis if analysis in names else fallback)
            if g.analysis == analysis and layer in g.column_names[:-2]:
                cluster = g.assignments[s, g.column_names.index(layer)].astype(np.int64)
            else:
                cluster = np.full(len(s), -1, dtype=np.int64)
            parts.append(pd.DataFrame({"epoch": np.full(len(s), e, dtype=np.int64), "sample": s, "x": p[:, 0],
                                       "y": p[:, 1], "label": g.labels[s].astype(np.int64),
                                       "prediction": g.predictions[s].astype(np.int64), "cluster": cluster}))
        if not parts:
            where = (f"projections of {sorted(seen)}" if seen else
                     "no projection at any epoch (the run was written by a flowcallback that did not store them, "
                     "or the snapshots computed none)")
            raise KeyError(f"no epoch has a {analysis!r} projection of layer {layer!r}; the run has {where}")
        return pd.concat(parts, ignore_index=True)

    # -- figures, for notebooks and scripts ----------------------------------------------------------
    def figure(self, epoch: int, analysis: Optional[str] = None):
        """The epoch's Sankey as a ``plotly.graph_objects.Figure`` (restyle it, then ``.show()``).

        ``analysis=None`` gives every analysis of the epoch, with buttons to switch, as its page.
        """
        from flowcallback.core import render

        names = self.analyses(epoch) if analysis is None else [analysis]
        return render.figure({a: self.epoch(epoch, a) for a in names}, title_prefix=self.info["model"]["name"],
                             notes=self.epoch(epoch, names[0]).notes)

    def show(self, view: str = "epoch", **kwargs):
        """A view of the run as a Plotly figure (a notebook displays the returned figure).

        Parameters
        ----------
        view : {"epoch", "across", "confusion", "scores", "class_means", "projection"}
            ``"epoch"``: one epoch's Sankey (``epoch=``, default the last; ``analysis=``).
            ``"across"``: one column across the epochs (``column=``, default ``"Prediction"``;
            ``analysis=``, ``true_class=``, ``changed_only=``). ``"confusion"``: the confusions that
            matter over training. ``"scores"``: each class's recall and precision over training.
            ``"class_means"``: mean activation or relevance per class and unit of one layer
            (``epoch=``, default the last with class means; ``layer=``, default the last layer that
            has them; ``analysis=``, ``order=``, ``difference=(class, class)``, ``top=``,
            ``normalize=``, ``scale=``; see :meth:`class_means` and
            :func:`flowcallback.core.views_figures.class_means_figure`). ``"projection"``: a layer's
            2-D projection animated over the epochs (``layer=``, default the last layer projected;
            ``analysis=``; see :meth:`projection`).

        Returns
        -------
        plotly.graph_objects.Figure

        Examples
        --------
        >>> import shutil
        >>> from flowcallback.demo import tiny_run
        >>> log_dir = tiny_run()
        >>> run = load_run(log_dir)
        >>> fig = run.show("across", column="dense", changed_only=True)
        >>> type(fig).__name__
        'Figure'
        >>> shutil.rmtree(log_dir)
        """
        from flowcallback.core import render

        views = ("epoch", "across", "confusion", "scores", "class_means", "projection")
        if view not in views:
            raise ValueError(f"view: expected one of {views}, got {view!r}")
        if not self.epochs:
            raise ValueError(f"{self.path} holds no complete epoch yet")
        if view in ("class_means", "projection"):
            return self._show_views(view, **kwargs)
        if view == "epoch":
            return self.figure(kwargs.pop("epoch", self.epochs[-1]), **kwargs)
        if view == "across":
            column = kwargs.pop("column", "Prediction")
            analysis = kwargs.pop("analysis", "activations")
            return render.epoch_flows_figure(self.epoch_flows(column, analysis), self.class_names, column, **kwargs)
        graphs = list(self.graphs("activations"))
        return render.confusion_figure(graphs, **kwargs) if view == "confusion" else render.class_scores_figure(graphs)

    def _show_views(self, view: str, **kwargs):
        from flowcallback.core import views_figures
        from flowcallback.core.render import ANALYSIS_LABELS

        analysis = kwargs.pop("analysis", "activations")
        layer_order = [layer["name"] for layer in self.info.get("layers", [])]

        def last_layer(keys):
            mine = [layer for a, layer in keys if a == analysis]
            ranked = sorted(mine, key=lambda n: layer_order.index(n) if n in layer_order else -1)
            return ranked[-1] if ranked else None

        if view == "class_means":
            epoch = kwargs.pop("epoch", None)
            if epoch is None:
                with_means = [e for e in self.epochs if self.views(e) is not None and self.views(e).class_means]
                if not with_means:
                    raise KeyError(f"{self.path}: no epoch has class means (the run was written by a flowcallback "
                                   "that did not store them)")
                epoch = with_means[-1]
            layer = kwargs.pop("layer", None)
            if layer is None:
                v = self.views(epoch)
                layer = last_layer(v.class_means if v is not None else {})
                if layer is None:
                    raise KeyError(f"epoch {epoch} has no {analysis!r} class means")
            means = self.class_means(epoch, layer, analysis, order=kwargs.pop("order", "similarity"))
            return views_figures.class_means_figure(means, **kwargs)
        layer = kwargs.pop("layer", None)
        if layer is None:
            keys = {k for e in self.epochs if self.views(e) is not None for k in self.views(e).projections}
            layer = last_layer(keys)
            if layer is None:
                raise KeyError(f"{self.path}: no epoch has a {analysis!r} projection (the run was written by a "
                               "flowcallback that did not store them, or the snapshots computed none)")
        table = self.projection(layer, analysis)
        kwargs.setdefault("title", f"{ANALYSIS_LABELS.get(analysis, analysis)} of {layer}: 2-D projection over the "
                                   "epochs (filled: right prediction, open: wrong)")
        return views_figures.projection_figure(table, self.class_names, **kwargs)

    def _repr_html_(self) -> str:
        """A compact summary in notebooks: epochs, layers, accuracy, and the last epoch's Sankey."""
        import html

        rows = "".join(
            f"<tr><td>{e}</td><td>{html.escape(', '.join(self.analyses(e)))}</td>"
            f"<td>{self._metric_text(e, 'accuracy')}</td><td>{self._metric_text(e, 'loss')}</td></tr>"
            for e in self.epochs)
        layers = html.escape(", ".join(layer["name"] for layer in self.info.get("layers", [])))
        head = (f"<b>flowcallback run</b> <code>{html.escape(str(self.path))}</code>: model "
                f"<b>{html.escape(str(self.info['model']['name']))}</b>, {len(self.epochs)} snapshot(s), "
                f"layers {layers}<table><tr><th>epoch</th><th>analyses</th><th>accuracy</th><th>loss</th></tr>"
                f"{rows}</table>")
        if not self.epochs:
            return head
        # plotly.js inline: a notebook opened offline still draws it (about 3.5 MB per shown run)
        return head + self.figure(self.epochs[-1]).to_html(full_html=False, include_plotlyjs=True)

    def _metric_text(self, epoch: int, name: str) -> str:
        value = self.epoch(epoch).metrics.get(name)
        return "" if value is None else f"{value:.4g}"

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, epochs={self.epochs})"


def load_run(log_dir: PathLike) -> Run:
    """Open a run directory written by :class:`~flowcallback.FlowCallback`.

    Parameters
    ----------
    log_dir : str or path
        The ``log_dir`` given to the callback.

    Returns
    -------
    Run
        Lists the complete epochs and loads their graphs on demand.

    Raises
    ------
    RunFormatError
        If ``run.json`` is missing or invalid.

    Examples
    --------
    >>> import shutil
    >>> from flowcallback.demo import tiny_run
    >>> run = load_run(tiny_run())
    >>> dag = run.epoch(1).to_networkx()
    >>> dag.number_of_nodes(), dag.number_of_edges()
    (6, 6)
    >>> shutil.rmtree(run.path)
    """
    return Run(log_dir)
