"""Store stage: the versioned files of a run directory, written atomically, read without trust.

Layout of a run directory (``log_dir``)::

    run.json                       run description (model, layers, classes, settings)
    plotly.min.js, epoch_003.html  the pages (offline), index.html the run page
    graphs/epoch_003/activations.json, .npz   columns, clusters, flows; per-sample arrays
    graphs/epoch_003/lrp.json, lrp.npz        the same for the LRP analysis
    graphs/epoch_003/views.json, views.npz    class means and 2-D projections
    graphs/epoch_003/metrics.json             layer metrics
    errors/epoch_003.txt, errors/setup.txt    what failed in a snapshot, or at set-up, with tracebacks

An epoch's directory is written under a temporary name carrying the writer's process id, then
renamed: it is complete or absent, and a killed writer's leftovers can be removed
(:func:`remove_stale_temporaries`). Files get the modes the umask allows.

Reading trusts nothing: only regular files inside the run directory are opened, each JSON file is
validated against its schema (:mod:`~flowcallback.core._schemas`), each npz member's header is
checked against the JSON before anything is unpacked (:mod:`~flowcallback.core._npz`), nothing is
unpickled, the arrays' values are checked and the flows recomputed. A problem raises
:class:`~flowcallback.RunFormatError` naming the file. :class:`flowcallback.run.Run` reads a whole
run through the readers at the end of this module.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from flowcallback.core._files import (
    ERROR_TAIL_BYTES,
    SETUP_ERRORS,
    _dir_mode,
    _read_json,
    _read_tail,
    _temp_prefix,
    _within,
    atomic_write,
    ensure_plotlyjs,
    remove_stale_temporaries,
    shown,
)

# The file helpers live in _files (the page writers use them too).
from flowcallback.core._notes import Note, as_note
from flowcallback.core._npz import load_arrays
from flowcallback.core._schemas import MAX_JSON_BYTES, check_before_writing, checked_json, set_name_problem, validate
from flowcallback.core.flows import ANALYSIS_NAME, MAX_CLASS_MEAN_VALUES, Column, EpochViews, FlowGraph, clean_metric
from flowcallback.core.neurons import UnitClusters
from flowcallback.exceptions import RunFormatError

__all__ = ["FORMAT_VERSION", "atomic_write", "ensure_plotlyjs", "remove_stale_temporaries", "graph_to_json",
           "save_epoch", "load_flow_graph", "views_to_json", "load_epoch_views", "write_run_info", "read_run_info",
           "run_info", "epoch_numbers", "epoch_analyses", "read_graph", "read_views", "read_metrics_rows",
           "read_errors", "epoch_page_name", "check_epoch", "SETUP_ERRORS", "SETS_FILE", "sets_info",
           "write_sets_info", "read_sets_info", "set_dir"]

FORMAT_VERSION = 1
_EPOCH_DIR = re.compile(r"^epoch_([0-9]{3,})$")
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


# -- one graph -----------------------------------------------------------------------------------
def _note_json(note: Note):
    # information as a plain string (the format before notes had kinds), a problem as an object
    return str(note) if note.kind == "info" else {"text": str(note), "kind": note.kind}


def graph_to_json(graph: FlowGraph, arrays_name: str) -> dict:
    """The JSON document (schema ``flowgraph-1``) describing a graph."""
    columns = []
    for j, col in enumerate(graph.columns):
        counts = graph.class_counts(j)
        columns.append({"name": col.name, "kind": col.kind, "layer_type": col.layer_type, "order": list(col.order),
                        "note": col.note,
                        "clusters": [{"id": int(cid), "size": int(counts[p].sum()), "class_counts": counts[p].tolist()}
                                     for p, cid in enumerate(col.order)]})
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
        **({"held_out": graph.held_out} if graph.held_out else {}),
        # information as plain strings (the format before notes had kinds), problems as objects
        "notes": [_note_json(as_note(n)) for n in graph.notes],
    }


def _npz_bytes(graph: FlowGraph) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, assignments=graph.assignments, labels=graph.labels, predictions=graph.predictions)
    return buf.getvalue()


def _graph_counts_problem(doc) -> Optional[str]:
    """Where a graph's document lists more than its samples allow, or None (types are left to the schema).

    A column has at most ``n_samples`` clusters, each counting one number per class, and a pair
    of columns at most ``n_samples`` flows (one per sample at most). Checked in one pass over the
    columns, before the schema is applied item by item, so that two million cluster ids or
    100,000 empty clusters are refused at once.
    """
    if not isinstance(doc, dict):  # not an object: the schema says so
        return None
    n, cols, names = doc.get("n_samples"), doc.get("columns"), doc.get("class_names")
    if type(n) is not int or not isinstance(cols, list) or not isinstance(names, list):
        return None
    for j, c in enumerate(cols):
        if not isinstance(c, dict):
            return None
        for key in ("order", "clusters"):
            items = c.get(key)
            if isinstance(items, list) and len(items) > n:
                return f"at columns/{j}/{key}: {len(items)} clusters, more than the {n} samples (n_samples)"
        for i, cl in enumerate(c.get("clusters") if isinstance(c.get("clusters"), list) else ()):
            counts = cl.get("class_counts") if isinstance(cl, dict) else None
            if isinstance(counts, list) and len(counts) != len(names):
                return (f"at columns/{j}/clusters/{i}/class_counts: {len(counts)} counts, "
                        f"for {len(names)} classes (class_names)")
    flows = doc.get("flows")
    if isinstance(flows, list) and len(flows) > max(len(cols) - 1, 0) * n:
        return (f"at flows: {len(flows)} flows, more than the {max(len(cols) - 1, 0) * n} that {len(cols)} columns "
                f"of {n} samples can have")
    return None


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
    path, root, doc = checked_json(json_path, root, "flowgraph-1", _graph_counts_problem)
    npz = _within(root, path.parent / doc["arrays"])
    n, cols = doc["n_samples"], doc["columns"]
    # The shapes the JSON implies bound what the npz may unpack to (see _load_arrays).
    arrays = load_arrays(npz, {"assignments": (n, len(cols)), "labels": (n,), "predictions": (n,)})
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
            raise RunFormatError(f"{path}: column {shown(c['name'])} lists its clusters inconsistently")
        present, counts = np.unique(a[:, j], return_counts=True)
        if not set(present.tolist()) <= set(order):
            raise RunFormatError(f"{npz}: column {shown(c['name'])} has samples in clusters not listed in {path.name}")
        size = dict(zip(present.tolist(), counts.tolist()))
        for cl in c["clusters"]:
            class_counts = cl["class_counts"]
            if cl["size"] != size.get(cl["id"], 0) or len(class_counts) != n_classes or sum(class_counts) != cl["size"]:
                raise RunFormatError(f"{path}: cluster {cl['id']} of column {shown(c['name'])} does not match "
                                     "the arrays")
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
        notes=tuple(Note(n) if isinstance(n, str) else Note(n["text"], n["kind"]) for n in doc.get("notes", ())),
        held_out=doc.get("held_out", ""),
    )
    expected = graph.flows[list(_FLOW_FIELDS)]
    got = [tuple(f[k] for k in _FLOW_FIELDS) for f in doc["flows"]]  # by name: any key order is valid JSON
    want = [tuple(int(v) for v in r) for r in expected.itertuples(index=False)]
    if sorted(got) != sorted(want):
        raise RunFormatError(f"{path}: the flows listed do not match the per-sample arrays in {npz.name}")
    return graph


# -- views of an epoch: class means and 2-D projections ----------------------------------------------
#: Base name of an epoch's views files (``views.json``, ``views.npz``); never an analysis name.
VIEWS = "views"


def views_to_json(views: EpochViews, epoch: int, arrays_name: str) -> dict:
    """The JSON document (schema ``views-1``) describing an epoch's views; the npz holds
    ``class_means_<i>``, ``unit_labels_<i>`` and ``unit_top_<i>``, ``projection_<i>`` in the
    order listed, and ``projection_samples``."""
    samples = views.projection_samples
    return {
        "format": "flowcallback/views",
        "version": FORMAT_VERSION,
        "epoch": int(epoch),
        "arrays": arrays_name,
        "class_means": [{"analysis": a, "layer": layer, "units": int(m.shape[1])}
                        for (a, layer), m in views.class_means.items()],
        "unit_clusters": [{"analysis": a, "layer": layer, "clusters": u.n_clusters, "top": int(u.top_samples.shape[1])}
                          for (a, layer), u in views.unit_clusters.items()],
        **({} if views.thumbnails is None else {"thumbnails": dict(zip(
            ("samples", "height", "width", "channels"), (int(v) for v in views.thumbnails.shape)))}),
        "projections": [{"analysis": a, "layer": layer} for a, layer in views.projections],
        "projection_samples": 0 if samples is None else int(len(samples)),
        "projection_method": views.projection_method,
    }


def _views_npz_bytes(views: EpochViews) -> bytes:
    import io

    arrays = {f"class_means_{i}": m for i, m in enumerate(views.class_means.values())}
    for i, u in enumerate(views.unit_clusters.values()):
        arrays[f"unit_labels_{i}"], arrays[f"unit_top_{i}"] = u.labels, u.top_samples
    if views.thumbnails is not None:
        arrays["thumbnail_samples"], arrays["thumbnails"] = views.thumbnail_samples, views.thumbnails
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
    for key, m in views.class_means.items():  # their size is bounded by EpochViews itself
        if m.shape[0] != n_classes:
            raise ValueError(f"views: class means {key} have {m.shape[0]} rows, the graphs {n_classes} classes")
    for key, u in views.unit_clusters.items():
        if u.top_samples.size and u.top_samples.max() >= n_samples:
            raise ValueError(f"views: the top samples of {key} go up to {int(u.top_samples.max())}, "
                             f"the graphs have {n_samples} samples")
    pictured = views.thumbnail_samples
    if pictured is not None and pictured.size and pictured[-1] >= n_samples:
        raise ValueError(f"views: thumbnail_samples go up to {int(pictured[-1])}, "
                         f"the graphs have {n_samples} samples")
    samples = views.projection_samples
    if samples is not None and samples.size and samples[-1] >= n_samples:
        raise ValueError(f"views: projection_samples go up to {int(samples[-1])}, the graphs have {n_samples} samples")


def load_epoch_views(json_path: PathLike, *, n_classes: int, n_samples: int, root: Optional[PathLike] = None,
                     layers: Optional[Sequence[str]] = None, analyses: Optional[Sequence[str]] = None) -> EpochViews:
    """Load an epoch's views (``views.json`` + its npz) without trusting them.

    Each array's shape comes from the JSON and from what the caller knows of the run
    (``n_classes`` from ``run.json``, ``n_samples`` from the epoch's graphs) and is checked before
    the npz is read, as for the graphs. ``root`` is the directory both files must stay inside
    (default: the JSON file's); ``layers`` and ``analyses`` the names the entries may use.
    Raises :class:`~flowcallback.RunFormatError` naming the file and the problem.
    """
    path, root, doc = checked_json(json_path, root, "views-1")
    unit_entries = doc.get("unit_clusters", [])
    for what, entries in (("class_means", doc["class_means"]), ("unit_clusters", unit_entries),
                          ("projections", doc["projections"])):
        keys = [(e["analysis"], e["layer"]) for e in entries]
        if len(set(keys)) != len(keys):
            raise RunFormatError(f"{path}: {what} lists an (analysis, layer) twice")
        for a, layer in keys:
            if analyses is not None and a not in analyses:
                raise RunFormatError(f"{path}: {what} names analysis {shown(a)}, which the run does not have")
            if layers is not None and layer not in layers:
                raise RunFormatError(f"{path}: {what} names layer {shown(layer)}, which is not among the run's layers")
    m = doc["projection_samples"]
    if m > n_samples or (doc["projections"] and m == 0):
        raise RunFormatError(f"{path}: projection_samples is {m}; the epoch has {n_samples} samples"
                             + (" and projections need at least one" if m == 0 else ""))
    shapes: Dict[str, Tuple[int, ...]] = {"projection_samples": (m,)}
    kinds = {}
    for i, e in enumerate(doc["class_means"]):
        if n_classes * e["units"] > MAX_CLASS_MEAN_VALUES:
            raise RunFormatError(f"{path}: class means of {shown(e['layer'])} claim {n_classes} × {e['units']} values, "
                                 f"more than the {MAX_CLASS_MEAN_VALUES} a layer may hold; refused")
        shapes[f"class_means_{i}"] = (n_classes, e["units"])
        kinds[f"class_means_{i}"] = "f"
    units = {(e["analysis"], e["layer"]): e["units"] for e in doc["class_means"]}
    for i, e in enumerate(unit_entries):
        key = (e["analysis"], e["layer"])
        if key not in units:
            raise RunFormatError(f"{path}: unit_clusters names {shown(key[1])} ({shown(key[0])}), "
                                 "which has no class means")
        shapes[f"unit_labels_{i}"] = (units[key],)
        shapes[f"unit_top_{i}"] = (e["clusters"], e["top"])
    thumbs = doc.get("thumbnails")
    if thumbs is not None:
        if thumbs["samples"] > n_samples:
            raise RunFormatError(f"{path}: thumbnails claim {thumbs['samples']} samples; the epoch has {n_samples}")
        shapes["thumbnail_samples"] = (thumbs["samples"],)
        shapes["thumbnails"] = (thumbs["samples"], thumbs["height"], thumbs["width"], thumbs["channels"])
    for i in range(len(doc["projections"])):
        shapes[f"projection_{i}"] = (m, 2)
        kinds[f"projection_{i}"] = "f"
    npz = _within(root, path.parent / doc["arrays"])
    arrays = load_arrays(npz, shapes, kinds)
    samples = arrays["projection_samples"]
    if samples.size and (samples.min() < 0 or samples.max() >= n_samples or np.any(np.diff(samples) <= 0)):
        raise RunFormatError(f"{npz}: projection_samples must be distinct indices in 0..{n_samples - 1}, ascending")
    if thumbs is not None and arrays["thumbnail_samples"].size and (
            arrays["thumbnail_samples"].min() < 0 or arrays["thumbnail_samples"].max() >= n_samples):
        raise RunFormatError(f"{npz}: thumbnail_samples must be indices in 0..{n_samples - 1}")
    for i, e in enumerate(unit_entries):
        top = arrays[f"unit_top_{i}"]
        if top.size and top.max() >= n_samples:
            raise RunFormatError(f"{npz}: the top samples of {shown(e['layer'])} go up to {int(top.max())}; "
                                 f"the epoch has {n_samples} samples")
    try:
        unit_clusters = {(e["analysis"], e["layer"]): UnitClusters(arrays[f"unit_labels_{i}"], arrays[f"unit_top_{i}"])
                         for i, e in enumerate(unit_entries)}
        return EpochViews(
            unit_clusters=unit_clusters,
            thumbnail_samples=arrays["thumbnail_samples"] if thumbs is not None else None,
            thumbnails=arrays["thumbnails"] if thumbs is not None else None,
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
        Their layer metrics (:func:`flowcallback.core.metrics.layer_metrics`), as ``metrics.json``.

    Returns
    -------
    pathlib.Path
        The epoch's graph directory.

    Raises
    ------
    ValueError
        For graphs of several epochs, views that do not fit the graphs, or a document the loader
        would refuse (a writer's bug). Nothing is written then.
    RunFormatError
        When ``graphs/`` leads outside ``log_dir`` (a symlink). Nothing is written then.
    """
    if not graphs:
        raise ValueError("graphs: expected at least one FlowGraph")
    epochs = {g.epoch for g in graphs.values()}
    if len(epochs) != 1:
        raise ValueError(f"graphs: expected graphs of one epoch, got epochs {sorted(epochs)}")
    for analysis, g in graphs.items():
        if not ANALYSIS_NAME.match(analysis) or analysis != g.analysis or analysis in _NOT_ANALYSES:
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
    documents = {f"{a}.json": (graph_to_json(g, f"{a}.npz"), "flowgraph-1", _graph_counts_problem)
                 for a, g in graphs.items()}
    if views:
        documents[f"{VIEWS}.json"] = (views_to_json(views, epoch, f"{VIEWS}.npz"), "views-1", None)
    if metrics is not None:
        documents[METRICS_FILE] = (_metrics_doc(epoch, metrics), "metrics-1", None)
    payloads = {name: check_before_writing(doc, schema, final / name, precheck)
                for name, (doc, schema, precheck) in documents.items()}
    root.mkdir(parents=True, exist_ok=True)
    # A planted symlink (graphs/ leading elsewhere) is refused as the reader refuses it: the epoch
    # would be written outside the run, and the run then refused by load_run.
    _within(log_dir, root)
    # The temporary name carries this process's id: remove_stale_temporaries tells a dead writer's.
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final.name), suffix=".tmp", dir=root))
    try:
        for analysis, g in graphs.items():
            atomic_write(tmp / f"{analysis}.npz", _npz_bytes(g))
        if views:
            atomic_write(tmp / f"{VIEWS}.npz", _views_npz_bytes(views))
        for name, data in payloads.items():
            atomic_write(tmp / name, data)
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
    """Write ``run.json`` (schema ``run-1``) atomically; ``ValueError`` (nothing written) if it breaks the schema."""
    doc = dict(info)
    doc.setdefault("format", "flowcallback/run")
    doc.setdefault("version", FORMAT_VERSION)
    path = Path(log_dir) / "run.json"
    atomic_write(path, check_before_writing(doc, "run-1", path))
    return path


def read_run_info(log_dir: PathLike) -> dict:
    """Read and validate ``run.json`` (at most ``MAX_JSON_BYTES["run-1"]``, checked before reading)."""
    path = _within(log_dir, Path(log_dir) / "run.json")
    doc = _read_json(path, MAX_JSON_BYTES["run-1"])
    validate(doc, "run-1", path)
    return doc


def run_info(*, model_name: str, fingerprint: str, class_names, analyses, layers, columns, config) -> dict:
    """The run's description (``run.json``, schema ``run-1``): the model's name and architecture hash
    (a run holds the epochs of one model), its classes, analyses, columns (``layers`` as
    ``(name, type)`` pairs, ``columns`` saying how they were chosen) and settings (``config``).

    Examples
    --------
    >>> run_info(model_name="m", fingerprint="f", class_names=["a", "b"], analyses=["activations"],
    ...          layers=[("dense", "Dense")], columns={}, config={})["layers"]
    [{'name': 'dense', 'type': 'Dense'}]
    """
    from flowcallback._version import __version__

    return {
        "format": "flowcallback/run",
        "version": FORMAT_VERSION,
        "flowcallback_version": __version__,
        "model": {"name": model_name, "fingerprint": fingerprint},
        "class_names": [str(c) for c in class_names],
        "analyses": list(analyses),
        "layers": [{"name": name, "type": kind} for name, kind in layers],
        "columns": dict(columns),
        "config": dict(config),
    }


SETS_FILE = "sets.json"


def sets_info(names, *, model_name: str, samples: Mapping[str, int], fingerprint: str = "") -> dict:
    """The description of a run of several held-out sets (``sets.json``, schema ``sets-1``): the
    sets in order, each an ordinary run directory in the folder named after it.

    Examples
    --------
    >>> sets_info(["clean", "noisy"], model_name="m", samples={"clean": 10, "noisy": 10}, fingerprint="f")["sets"]
    [{'name': 'clean', 'samples': 10}, {'name': 'noisy', 'samples': 10}]
    """
    from flowcallback._version import __version__

    return {"format": "flowcallback/sets", "version": FORMAT_VERSION, "flowcallback_version": __version__,
            "model": {"name": str(model_name), **({"fingerprint": fingerprint} if fingerprint else {})},
            "sets": [{"name": n, "samples": int(samples[n])} for n in names]}


def write_sets_info(log_dir: PathLike, info: Mapping) -> Path:
    """Write ``sets.json`` (schema ``sets-1``) atomically; ``ValueError`` (nothing written) if it breaks the schema."""
    path = Path(log_dir) / SETS_FILE
    atomic_write(path, check_before_writing(dict(info), "sets-1", path))
    return path


def read_sets_info(log_dir: PathLike) -> dict:
    """Read and validate ``sets.json``: its schema, then names that are plain folder names
    (:func:`flowcallback.core._schemas.set_name_problem`) and unique, also ignoring case (as folders on
    macOS and Windows are)."""
    path = _within(log_dir, Path(log_dir) / SETS_FILE)
    doc = _read_json(path, MAX_JSON_BYTES["sets-1"])
    validate(doc, "sets-1", path)
    seen = set()
    for entry in doc["sets"]:
        key = entry["name"].lower()
        problem = "listed twice" if key in seen else set_name_problem(entry["name"])
        if problem:
            raise RunFormatError(f"{path}: the set name {shown(entry['name'])} is {problem}")
        seen.add(key)
    return doc


def set_dir(log_dir: PathLike, name: str) -> Path:
    """The folder of held-out set ``name`` in a run of several sets; one leading outside ``log_dir``
    (a symlink) is refused with :class:`~flowcallback.RunFormatError`."""
    return _within(log_dir, Path(log_dir) / name)


# -- reading a run directory, file by file ---------------------------------------------------------
def epoch_numbers(log_dir: PathLike) -> List[int]:
    """Epochs with a complete graph directory, ascending.

    A directory counts when its name is the one the writer gives (``epoch_003``: not
    ``epoch_0003``, nor digits other than ASCII ones, so no epoch is listed twice) and it holds at
    least one graph; a directory being written (a temporary name) or an empty one is not an epoch.
    """
    log_dir = Path(log_dir)
    root = log_dir / "graphs"
    if not root.is_dir():
        return []
    _within(log_dir, root)
    out = []
    for name in _listed(root):
        m = _EPOCH_DIR.match(name)
        d = root / name
        if not (m and name == _epoch_dir_name(int(m.group(1))) and d.is_dir() and not d.is_symlink()):
            continue
        try:
            analyses = _analyses_in(d)
        except RunFormatError:  # there, but unreadable (permissions): listed, so that Run.skipped says why
            analyses = ["?"]
        if analyses:
            out.append(int(m.group(1)))
    return sorted(out)


def _listed(d: Path) -> List[str]:
    """The names in a directory of the run; :class:`~flowcallback.RunFormatError` where it cannot be
    listed (a directory the user may not read), which ``Path.glob`` would take for an empty one."""
    try:
        return os.listdir(d)
    except OSError as exc:
        raise RunFormatError(f"{d}: cannot be listed ({exc.strerror or exc})") from None


def _analyses_in(d: Path) -> List[str]:
    return sorted(n[:-5] for n in _listed(d)
                  if n.endswith(".json") and ANALYSIS_NAME.match(n[:-5]) and n[:-5] not in _NOT_ANALYSES)


def _epoch_dir(log_dir: PathLike, epoch: int) -> Path:
    if int(epoch) not in epoch_numbers(log_dir):
        raise KeyError(f"epoch {shown(epoch)} is not in this run; its epochs are {shown(epoch_numbers(log_dir))}")
    return Path(log_dir) / "graphs" / _epoch_dir_name(epoch)


def epoch_analyses(log_dir: PathLike, epoch: int) -> List[str]:
    """Analyses saved for an epoch (``["activations", "lrp"]`` when LRP succeeded).

    Raises :class:`~flowcallback.RunFormatError` where the epoch's directory cannot be listed."""
    return _analyses_in(_epoch_dir(log_dir, epoch))


def read_graph(log_dir: PathLike, epoch: int, analysis: str, info: Optional[Mapping] = None) -> FlowGraph:
    """The :class:`FlowGraph` of one epoch and analysis, checked (:func:`load_flow_graph`).

    With ``info`` (the run's ``run.json``), the graph must also fit it: as many classes, and only
    layers that it lists; a mismatch raises :class:`~flowcallback.RunFormatError` naming both files.
    """
    d = _epoch_dir(log_dir, epoch)
    if not isinstance(analysis, str) or not ANALYSIS_NAME.match(analysis) or analysis in _NOT_ANALYSES:
        raise ValueError(f"analysis: expected a name such as 'activations' or 'lrp', got {shown(analysis)}")
    path = d / f"{analysis}.json"
    if not path.exists():
        raise KeyError(f"epoch {epoch} has no {analysis!r} graph; it has {shown(epoch_analyses(log_dir, epoch))}")
    g = load_flow_graph(path, root=log_dir)
    if g.epoch != int(epoch) or g.analysis != analysis:
        raise RunFormatError(f"{path}: says epoch {g.epoch} / {g.analysis!r}, expected {epoch} / {analysis!r}")
    if info is not None:
        _check_against_run(path, g, info, Path(log_dir) / "run.json")
    return g


def _check_against_run(path: Path, g: FlowGraph, info: Mapping, run_json: Path) -> None:
    """Refuse a graph that does not fit ``run.json``: another number of classes, or a layer the
    run does not list.

    The run page colours, filters and counts the classes of ``run.json`` over every graph, and
    lists its layers: a graph with more classes would be drawn wrong, or not at all. Class names
    may differ (a run resumed with ``class_names`` given anew): the page shows ``run.json``'s.
    """
    n_classes = len(info["class_names"])
    if len(g.class_names) != n_classes:
        raise RunFormatError(f"{path}: does not match {run_json}: {len(g.class_names)} classes, "
                             f"{run_json.name} has {n_classes}")
    layers = {layer["name"] for layer in info.get("layers", [])}
    for c in g.columns:
        if c.kind == "layer" and c.name not in layers:
            raise RunFormatError(f"{path}: does not match {run_json}: column {shown(c.name)} is not among "
                                 f"its layers")


def check_epoch(log_dir: PathLike, epoch: int, graphs: Mapping[str, FlowGraph]) -> None:
    """Refuse an epoch whose graphs hold different numbers of samples: the run page and the
    projections index one analysis's samples with another's (the writer takes every analysis of
    an epoch on the same held-out set)."""
    items = sorted(graphs.items())
    if len(items) < 2:
        return
    (a0, g0), d = items[0], _epoch_dir(log_dir, epoch)
    for a, g in items[1:]:
        if g.n_samples != g0.n_samples:
            raise RunFormatError(f"{d / (a + '.json')}: does not match {d / (a0 + '.json')}: {g.n_samples} samples "
                                 f"against {g0.n_samples}")


def read_views(log_dir: PathLike, epoch: int, info: Mapping, n_samples: Optional[int]) -> Optional[EpochViews]:
    """An epoch's stored class means and projections, or None where the epoch has none.

    ``info`` is the run's ``run.json`` (its classes, layers and analyses bound what the views may
    name) and ``n_samples`` the epoch's held-out set size (from its graphs; None if it has none).
    """
    path = _epoch_dir(log_dir, epoch) / f"{VIEWS}.json"
    if not os.path.lexists(path):
        return None
    if n_samples is None:
        raise RunFormatError(f"{path.parent}: holds views but no graph")
    names = epoch_analyses(log_dir, epoch)
    v = load_epoch_views(path, root=log_dir, n_classes=len(info["class_names"]), n_samples=n_samples,
                         layers={layer["name"] for layer in info.get("layers", [])},
                         analyses=set(info.get("analyses", [])) | set(names))
    doc_epoch = _read_json(path, MAX_JSON_BYTES["views-1"])["epoch"]
    if doc_epoch != int(epoch):
        raise RunFormatError(f"{path}: says epoch {doc_epoch}, expected {int(epoch)}")
    return v


def read_metrics_rows(log_dir: PathLike, epoch: int) -> Optional[List[dict]]:
    """The layer metrics the snapshot of ``epoch`` stored (``metrics.json``), or None without that file."""
    path = _epoch_dir(log_dir, epoch) / METRICS_FILE
    if not path.exists():
        return None
    _, _, doc = checked_json(path, log_dir, "metrics-1")
    if doc["epoch"] != int(epoch):
        raise RunFormatError(f"{path}: says epoch {doc['epoch']}, expected {epoch}")
    return doc["rows"]


def read_errors(log_dir: PathLike) -> Dict[int | str, str]:
    """The errors a run recorded: ``{epoch: text}``, then ``{SETUP_ERRORS: text}`` if the set-up recorded one.

    Each file is read from its last ``ERROR_TAIL_BYTES`` (256 KiB) only, which hold its last
    errors: a longer file's text starts with a line saying how much was left out.
    """
    log_dir = Path(log_dir)
    d = log_dir / "errors"
    out: Dict[int | str, str] = {}
    if d.is_dir():
        _within(log_dir, d)
        for p in sorted(d.glob("epoch_*.txt")):
            m = re.match(r"^epoch_(\d+)\.txt$", p.name)
            if m:
                out[int(m.group(1))] = _read_tail(_within(log_dir, p), ERROR_TAIL_BYTES)
        setup = d / f"{SETUP_ERRORS}.txt"
        if os.path.lexists(setup):
            out[SETUP_ERRORS] = _read_tail(_within(log_dir, setup), ERROR_TAIL_BYTES)
    return out

