"""Store stage: versioned files of a run directory, written atomically, loaded without pickle.

Layout of a run directory (``log_dir``)::

    run.json                       run description (model, layers, classes, settings)
    plotly.min.js                  written once; the pages load it from here (offline)
    epoch_003.html                 one Sankey page per snapshot epoch
    graphs/epoch_003/activations.json   columns, clusters, flows, metrics (schema flowgraph-1)
    graphs/epoch_003/activations.npz    per-sample arrays: assignments, labels, predictions
    graphs/epoch_003/lrp.json, lrp.npz  the same for the LRP analysis
    errors/epoch_003.txt           what failed in a snapshot, with the traceback

Each epoch's graph directory is first written under a temporary name and then renamed, so it is
either complete or absent. Every file is written to a temporary file and renamed over its target.
Loading validates each JSON file against its schema (shipped in ``flowcallback/schemas``), opens
npz files with ``allow_pickle=False``, checks the arrays' shapes and values against the JSON, and
recomputes the flows to check them. Any problem raises :class:`~flowcallback.RunFormatError`
naming the file.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Union

import numpy as np
import pandas as pd

from flowcallback.core.flows import Column, FlowGraph
from flowcallback.exceptions import RunFormatError

__all__ = [
    "FORMAT_VERSION",
    "atomic_write",
    "ensure_plotlyjs",
    "graph_to_json",
    "save_epoch",
    "load_flow_graph",
    "write_run_info",
    "read_run_info",
    "Run",
    "load_run",
    "epoch_page_name",
]

FORMAT_VERSION = 1
_EPOCH_DIR = re.compile(r"^epoch_(\d{3,})$")
_ANALYSIS = re.compile(r"^[a-z][a-z0-9_]*$")
_ARRAYS = ("assignments", "labels", "predictions")

PathLike = Union[str, os.PathLike]


def epoch_page_name(epoch: int) -> str:
    """File name of an epoch's page: ``epoch_003.html``."""
    return f"epoch_{int(epoch):03d}.html"


def _epoch_dir_name(epoch: int) -> str:
    return f"epoch_{int(epoch):03d}"


# -- atomic writing ------------------------------------------------------------------------------
def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ensure_plotlyjs(directory: PathLike) -> Path:
    """Write plotly.js (from the installed plotly package) into ``directory`` if it is not there."""
    import plotly.offline

    path = Path(directory) / "plotly.min.js"
    if not path.exists():
        atomic_write(path, plotly.offline.get_plotlyjs().encode("utf-8"))
    return path


# -- schemas -------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _validator(name: str):
    import jsonschema  # the reference JSON Schema implementation for Python

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / f"{name}.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _validate(doc, schema: str, path: Path) -> None:
    errors = sorted(_validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise RunFormatError(f"{path}: does not match schema {schema} at {where}: {e.message}")


def _within(root: PathLike, path: PathLike) -> Path:
    """``path`` if it resolves inside ``root``; a symlink or ``..`` leading elsewhere is refused.

    Raises
    ------
    RunFormatError
        Naming the file and where it leads.
    """
    path = Path(path)
    try:
        base = Path(root).resolve()
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, say
        raise RunFormatError(f"{path}: cannot be resolved ({exc})") from None
    if real != base and base not in real.parents:
        raise RunFormatError(f"{path}: leads to {real}, outside the run directory {base} (a symlink or '..'); refused")
    return path


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise RunFormatError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: cannot be read as UTF-8 text ({exc})") from None

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    try:
        return json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise RunFormatError(f"{path}: invalid JSON ({exc})") from None


def _json_bytes(doc) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")


# -- one graph -----------------------------------------------------------------------------------
def _clean_metric(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return f if np.isfinite(f) else None


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
        "metrics": {str(k): _clean_metric(v) for k, v in graph.metrics.items()},
        "flows": [
            {k: int(v) for k, v in zip(("source_column", "target_column", "source_cluster", "target_cluster", "true_class", "count"), row)}
            for row in flows[["source_column", "target_column", "source_cluster", "target_cluster", "true_class", "count"]].itertuples(index=False)
        ],
        "arrays": arrays_name,
        "notes": list(graph.notes),
    }


def _npz_bytes(graph: FlowGraph) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, assignments=graph.assignments, labels=graph.labels, predictions=graph.predictions)
    return buf.getvalue()


def _load_arrays(path: Path) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if names != set(_ARRAYS):
                raise RunFormatError(f"{path}: expected arrays {sorted(_ARRAYS)}, found {sorted(names)}")
            out = {k: z[k] for k in _ARRAYS}
    except RunFormatError:
        raise
    except FileNotFoundError:
        raise RunFormatError(f"{path}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, zlib.error) as exc:
        raise RunFormatError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from None
    for k, a in out.items():
        if a.dtype.kind not in "iu":
            raise RunFormatError(f"{path}: array {k!r} must hold integers, has dtype {a.dtype}")
    return out


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
    path = Path(json_path)
    root = path.parent if root is None else Path(root)
    _within(root, path)
    doc = _read_json(path)
    _validate(doc, "flowgraph-1", path)
    npz = _within(root, path.parent / doc["arrays"])
    arrays = _load_arrays(npz)
    n, cols = doc["n_samples"], doc["columns"]
    a, y, p = arrays["assignments"], arrays["labels"], arrays["predictions"]
    if a.shape != (n, len(cols)) or y.shape != (n,) or p.shape != (n,):
        raise RunFormatError(
            f"{npz}: array shapes {a.shape}, {y.shape}, {p.shape} do not match n_samples={n} and {len(cols)} columns in {path.name}"
        )
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
            if cl["size"] != size.get(cl["id"], 0) or len(cl["class_counts"]) != n_classes or sum(cl["class_counts"]) != cl["size"]:
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
    expected = graph.flows[["source_column", "target_column", "source_cluster", "target_cluster", "true_class", "count"]]
    got = [tuple(f.values()) for f in doc["flows"]]
    want = [tuple(int(v) for v in r) for r in expected.itertuples(index=False)]
    if sorted(got) != sorted(want):
        raise RunFormatError(f"{path}: the flows listed do not match the per-sample arrays in {npz.name}")
    return graph


# -- epochs and runs -----------------------------------------------------------------------------
def save_epoch(log_dir: PathLike, graphs: Mapping[str, FlowGraph]) -> Path:
    """Write every analysis of one epoch into ``graphs/epoch_XXX/``, atomically as a whole.

    An existing directory for the same epoch is replaced.

    Returns
    -------
    pathlib.Path
        The epoch's graph directory.
    """
    if not graphs:
        raise ValueError("graphs: expected at least one FlowGraph")
    epochs = {g.epoch for g in graphs.values()}
    if len(epochs) != 1:
        raise ValueError(f"graphs: expected graphs of one epoch, got epochs {sorted(epochs)}")
    epoch = epochs.pop()
    root = Path(log_dir) / "graphs"
    root.mkdir(parents=True, exist_ok=True)
    final = root / _epoch_dir_name(epoch)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        for analysis, g in graphs.items():
            if not _ANALYSIS.match(analysis) or analysis != g.analysis:
                raise ValueError(f"graphs: key {analysis!r} must be the graph's analysis name (lowercase identifier)")
            atomic_write(tmp / f"{analysis}.npz", _npz_bytes(g))
            atomic_write(tmp / f"{analysis}.json", _json_bytes(graph_to_json(g, f"{analysis}.npz")))
        os.chmod(tmp, 0o755)
        if final.exists():
            old = root / f".{final.name}.old"
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


def write_run_info(log_dir: PathLike, info: Mapping) -> Path:
    """Write ``run.json`` (schema ``run-1``) atomically."""
    doc = dict(info)
    doc.setdefault("format", "flowcallback/run")
    doc.setdefault("version", FORMAT_VERSION)
    path = Path(log_dir) / "run.json"
    _validate(doc, "run-1", path)
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
    >>> run = load_run("flows/run1")                      # doctest: +SKIP
    >>> run.epochs                                        # doctest: +SKIP
    [0, 1, 2]
    >>> g = run.epoch(2)                                  # activations by default
    >>> g.flows.head()                                    # doctest: +SKIP
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunFormatError(f"{self.path}: not a directory")
        _within(self.path, self.path / "run.json")
        self.info = read_run_info(self.path)
        self._cache: Dict[tuple, FlowGraph] = {}

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
        return sorted(p.stem for p in d.glob("*.json") if _ANALYSIS.match(p.stem))

    def _epoch_dir(self, epoch: int) -> Path:
        if int(epoch) not in self.epochs:
            raise KeyError(f"epoch {epoch} is not in this run; its epochs are {self.epochs}")
        return self.path / "graphs" / _epoch_dir_name(epoch)

    def epoch(self, epoch: int, analysis: str = "activations") -> FlowGraph:
        """The :class:`FlowGraph` of one epoch and analysis (``"activations"`` or ``"lrp"``)."""
        key = (int(epoch), analysis)
        if key not in self._cache:
            d = self._epoch_dir(epoch)
            if not isinstance(analysis, str) or not _ANALYSIS.match(analysis):
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

    def errors(self) -> Dict[int, str]:
        """Errors recorded during snapshots, by epoch."""
        d = self.path / "errors"
        out = {}
        if d.is_dir():
            _within(self.path, d)
            for p in sorted(d.glob("epoch_*.txt")):
                m = re.match(r"^epoch_(\d+)\.txt$", p.name)
                if m:
                    out[int(m.group(1))] = _within(self.path, p).read_text("utf-8", "replace")
        return out

    def metrics(self, analysis: Optional[str] = None):
        """Layer metrics of every epoch as a tidy DataFrame (see :func:`flowcallback.core.metrics.layer_metrics`).

        One row per (epoch, analysis, layer): number of clusters, NMI and ARI against the classes and
        against the predictions, purity, and the NMI gained over the previous layer.
        """
        from flowcallback.core.metrics import layer_metrics

        graphs = [self.epoch(e, a) for e in self.epochs for a in self.analyses(e) if analysis in (None, a)]
        return layer_metrics(graphs)

    def class_profiles(self, epoch: int, analysis: str = "activations", **kwargs):
        """When each class gets separated at this epoch (see :func:`flowcallback.core.metrics.class_profiles`)."""
        from flowcallback.core.metrics import class_profiles

        return class_profiles(self.epoch(epoch, analysis), **kwargs)

    def compare(self, epoch_a: int, epoch_b: int, analysis: str = "activations") -> "Comparison":
        """Compare two epochs: per layer ARI between their clusterings, and the samples whose path changed.

        A sample's path changed at a layer when its cluster at ``epoch_b`` is not the match (Hungarian
        on Jaccard overlap) of its cluster at ``epoch_a``.
        """
        from sklearn.metrics import adjusted_rand_score

        from flowcallback.core.match import match_clusters

        ga, gb = self.epoch(epoch_a, analysis), self.epoch(epoch_b, analysis)
        if not np.array_equal(ga.labels, gb.labels):
            raise RunFormatError(f"{self.path}: epochs {epoch_a} and {epoch_b} do not describe the same samples")
        rows, changed = [], np.zeros(ga.n_samples, dtype=bool)
        per_layer = {}
        for col in ga.columns:
            if col.kind != "layer" or col.name not in gb.column_names:
                continue
            a = ga.assignments[:, ga.column_index(col.name)]
            b = gb.assignments[:, gb.column_index(col.name)]
            m = match_clusters(a, b)
            mapped = np.array([m.pairs.get(int(c), -1) for c in b])
            moved = mapped != a
            per_layer[col.name] = moved
            changed |= moved
            rows.append({"layer": col.name, "ari": float(adjusted_rand_score(a, b)), "changed_samples": int(moved.sum()),
                         "clusters_a": len(col.order), "clusters_b": len(gb.columns[gb.column_index(col.name)].order),
                         "splits": len(m.splits), "merges": len(m.merges)})
        idx = np.flatnonzero(changed)
        samples = pd.DataFrame({
            "sample": idx,
            "true_class": ga.labels[idx],
            "class_name": [ga.class_names[c] for c in ga.labels[idx]],
            "layers_changed": [[n for n, mv in per_layer.items() if mv[i]] for i in idx],
        })
        return Comparison(epoch_a, epoch_b, analysis, pd.DataFrame(rows), samples)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, epochs={self.epochs})"


class Comparison:
    """The result of :meth:`Run.compare`: ``layers`` (one row per layer) and ``samples`` (changed paths)."""

    def __init__(self, epoch_a, epoch_b, analysis, layers, samples):
        self.epoch_a, self.epoch_b, self.analysis = epoch_a, epoch_b, analysis
        self.layers = layers
        self.samples = samples

    def __repr__(self) -> str:
        return f"Comparison(epochs {self.epoch_a} -> {self.epoch_b}, {len(self.samples)} samples changed path)"


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
    >>> from flowcallback import load_run
    >>> run = load_run("flows/run1")                      # doctest: +SKIP
    >>> run.epoch(run.epochs[-1]).to_networkx()           # doctest: +SKIP
    """
    return Run(log_dir)
