"""Several held-out sets of one run, compared: DNNViz's two-data-set views, the flows paper's scenario 3.

A run of several held-out sets (``FlowCallback({"clean": (x, y), "tampered": (x2, y2)})``) analyses
every set at every snapshot with the same model, layers and settings, and keeps one ordinary run per
set. These functions compare two sets at one epoch, layer by layer:

- how the clusters follow the classes in each set (ARI and NMI of a layer's clusters against the
  true classes, purity) and the gap between the sets: a set the model was not trained for (Fashion-
  MNIST through an MNIST model) or a set tampered with shows a lower separation where the model
  stops recognising it;
- how each unit's mean response per class differs between the sets (DNNViz's difference mode
  across data sets): the units that react to what differs.

:func:`sets_overview` gathers what the run page of several sets shows: each set's accuracy and layer
separation at every epoch, and which sets separate their classes much less than the best one.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from flowcallback.core.flows import FlowGraph
from flowcallback.core.metrics import layer_metrics

__all__ = ["compare_sets", "class_mean_difference", "sets_overview", "COMPARE_COLUMNS", "FAILING_SHARE"]

COMPARE_COLUMNS = [
    "epoch", "analysis", "column_index", "column", "layer_type", "set_a", "set_b",
    "n_clusters_a", "n_clusters_b", "ari_classes_a", "ari_classes_b", "ari_gap",
    "nmi_classes_a", "nmi_classes_b", "nmi_gap", "purity_a", "purity_b", "purity_gap",
    "class_mean_difference", "class_mean_relative", "most_different_unit",
]

#: A set is flagged on the run page when its last layer's ARI against its classes is below this share
#: of the best set's (and the best set separates its classes at all: ARI above 0.2).
FAILING_SHARE = 0.5


def class_mean_difference(means_a: np.ndarray, means_b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The class means of set b minus those of set a (classes × units), over the classes that have
    samples in both sets; returns ``(difference, rows)``, ``rows`` the classes kept.

    Examples
    --------
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    >>> b = np.array([[1.0, 0.5], [0.0, 3.0], [2.0, 2.0]])
    >>> difference, rows = class_mean_difference(a, b)
    >>> difference.tolist(), rows.tolist()
    ([[0.0, 0.5], [0.0, 2.0]], [0, 1])
    """
    means_a, means_b = np.asarray(means_a, dtype=np.float64), np.asarray(means_b, dtype=np.float64)
    if means_a.shape != means_b.shape:
        raise ValueError(f"the class means have different shapes, {means_a.shape} and {means_b.shape}: not the "
                         "same layer of one model")
    rows = np.flatnonzero(np.isfinite(means_a).all(axis=1) & np.isfinite(means_b).all(axis=1))
    return means_b[rows] - means_a[rows], rows


def _unit_summary(means_a: Optional[np.ndarray], means_b: Optional[np.ndarray]) -> Tuple[float, float, int]:
    """Mean absolute difference, relative (Frobenius) difference and the unit that differs most."""
    if means_a is None or means_b is None:
        return float("nan"), float("nan"), -1
    difference, rows = class_mean_difference(means_a, means_b)
    if difference.size == 0:
        return float("nan"), float("nan"), -1
    base = float(np.linalg.norm(np.asarray(means_a, dtype=np.float64)[rows]))
    relative = float(np.linalg.norm(difference) / base) if base > 0 else float("nan")
    return float(np.abs(difference).mean()), relative, int(np.abs(difference).mean(axis=0).argmax())


def compare_sets(graph_a: FlowGraph, graph_b: FlowGraph, *, names: Sequence[str] = ("a", "b"),
                 class_means_a: Optional[Mapping[str, np.ndarray]] = None,
                 class_means_b: Optional[Mapping[str, np.ndarray]] = None) -> pd.DataFrame:
    """Two held-out sets at one epoch, compared layer by layer (the layers both graphs have).

    Parameters
    ----------
    graph_a, graph_b : FlowGraph
        The same epoch and analysis of two sets (the same model).
    names : pair of str
        The sets' names (the ``set_a`` and ``set_b`` columns).
    class_means_a, class_means_b : mapping of column name to (classes × units) array, optional
        Each set's class means of the layers (:meth:`flowcallback.Run.class_means`); without them the
        unit columns are NaN.

    Returns
    -------
    pandas.DataFrame
        One row per layer column, :data:`COMPARE_COLUMNS`: each set's clusters, ARI and NMI against
        its true classes and purity (``_a``, ``_b``), their gaps (b minus a: negative where set b
        separates its classes less), the mean absolute difference of the units' class means
        (``class_mean_difference``), that difference relative to set a's class means (Frobenius
        norms), and the unit (or channel) that differs most.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> y = np.array([0, 0, 1, 1])
    >>> a = build_flow_graph([("d", "Dense", [0, 0, 1, 1])], y, y)
    >>> b = build_flow_graph([("d", "Dense", [0, 1, 0, 1])], y, y)
    >>> compare_sets(a, b, names=("clean", "odd"))[["column", "ari_classes_a", "ari_classes_b", "ari_gap"]]
      column  ari_classes_a  ari_classes_b  ari_gap
    0      d            1.0           -0.5     -1.5
    """
    if graph_a.analysis != graph_b.analysis:
        raise ValueError(f"the graphs are of different analyses, {graph_a.analysis!r} and {graph_b.analysis!r}")
    if len(graph_a.class_names) != len(graph_b.class_names):
        raise ValueError("the graphs have different numbers of classes: not the same model")
    if len(names) != 2:
        raise ValueError(f"names: expected two set names, got {len(names)}")
    metrics_a, metrics_b = layer_metrics([graph_a]), layer_metrics([graph_b])
    rows_b = {row["column"]: row for row in metrics_b.to_dict("records")}
    means_a, means_b = class_means_a or {}, class_means_b or {}
    rows = []
    for a in metrics_a.to_dict("records"):
        b = rows_b.get(a["column"])
        if b is None:
            continue
        difference, relative, unit = _unit_summary(means_a.get(a["column"]), means_b.get(a["column"]))
        rows.append({
            "epoch": graph_a.epoch, "analysis": graph_a.analysis, "column_index": a["column_index"],
            "column": a["column"], "layer_type": a["layer_type"], "set_a": names[0], "set_b": names[1],
            "n_clusters_a": a["n_clusters"], "n_clusters_b": b["n_clusters"],
            "ari_classes_a": a["ari_classes"], "ari_classes_b": b["ari_classes"],
            "ari_gap": b["ari_classes"] - a["ari_classes"],
            "nmi_classes_a": a["nmi_classes"], "nmi_classes_b": b["nmi_classes"],
            "nmi_gap": b["nmi_classes"] - a["nmi_classes"],
            "purity_a": a["purity"], "purity_b": b["purity"], "purity_gap": b["purity"] - a["purity"],
            "class_mean_difference": difference, "class_mean_relative": relative, "most_different_unit": unit,
        })
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _finite(value) -> Optional[float]:
    value = None if value is None else float(value)
    return None if value is None or not np.isfinite(value) else round(value, 4)


def sets_overview(sets: Mapping[str, Mapping[int, Tuple[Mapping, pd.DataFrame]]],
                  samples: Mapping[str, int]) -> dict:
    """What the run page of several sets shows, as JSON-ready data.

    Parameters
    ----------
    sets : mapping of set name to {epoch: (scalar metrics, layer metrics)}
        Per set and epoch: the snapshot's scalars (``accuracy``, ``loss``: a graph's
        :attr:`~flowcallback.FlowGraph.metrics`) and its layer metrics table
        (:func:`flowcallback.core.metrics.layer_metrics`), in the sets' order.
    samples : mapping of set name to int
        Each set's number of held-out samples.

    Returns
    -------
    dict
        ``sets`` (name, samples, the folder's run page), ``epochs`` (those of any set), ``columns``
        (the layers, in order), ``accuracy`` and ``loss`` (``{set: {epoch: value}}``), ``ari`` and
        ``nmi`` (``{set: {epoch: [value per column]}}``, activations, None where a layer is
        missing) and ``flagged`` (``{epoch: {set: reason}}``: the sets whose last layer separates
        their classes much less than the best set's, :data:`FAILING_SHARE`).

    Examples
    --------
    >>> m = lambda ari: pd.DataFrame({"analysis": ["activations"], "column": ["d"], "ari_classes": [ari],
    ...                               "nmi_classes": [ari]})
    >>> view = sets_overview({"clean": {1: ({"accuracy": 0.98}, m(0.9))},
    ...                       "fashion": {1: ({"accuracy": 0.1}, m(0.05))}}, {"clean": 100, "fashion": 100})
    >>> view["ari"]["fashion"], sorted(view["flagged"][1])
    ({1: [0.05]}, ['fashion'])
    """
    columns: list = []
    for per_epoch in sets.values():
        for _, table in per_epoch.values():
            for name in table.loc[table["analysis"] == "activations", "column"]:
                if name not in columns:
                    columns.append(name)
    epochs = sorted({int(e) for per_epoch in sets.values() for e in per_epoch})
    out = {"sets": [{"name": n, "samples": int(samples.get(n, 0)), "page": f"{n}/index.html"} for n in sets],
           "epochs": epochs, "columns": columns, "accuracy": {}, "loss": {}, "ari": {}, "nmi": {}, "flagged": {}}
    for name, per_epoch in sets.items():
        for key in ("accuracy", "loss", "ari", "nmi"):
            out[key][name] = {}
        for epoch, (scalars, table) in sorted(per_epoch.items()):
            out["accuracy"][name][epoch] = _finite(scalars.get("accuracy"))
            out["loss"][name][epoch] = _finite(scalars.get("loss"))
            acts = table[table["analysis"] == "activations"].set_index("column")
            for key, metric in (("ari", "ari_classes"), ("nmi", "nmi_classes")):
                out[key][name][epoch] = [_finite(acts[metric].get(c)) if c in acts.index else None for c in columns]
    for epoch in epochs:
        last = {n: next((v for v in reversed(out["ari"][n].get(epoch) or []) if v is not None), None) for n in sets}
        known = {n: v for n, v in last.items() if v is not None}
        if len(known) < 2:
            continue
        best = max(known, key=known.get)
        if known[best] <= 0.2:
            continue
        flagged = {n: (f"its last layer's clusters follow its classes much less than those of {best!r} "
                       f"(ARI {v:.2f} against {known[best]:.2f})")
                   for n, v in known.items() if v < FAILING_SHARE * known[best]}
        if flagged:
            out["flagged"][epoch] = flagged
    return out
