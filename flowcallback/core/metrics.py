"""Layer metrics and class recognition profiles, computed from saved graphs (no TensorFlow).

The paper reads from its Figure 2 which classes a network separates early, which late and which
stay unstable, and which layers contribute most (its R3-R5); these functions compute it.
scikit-learn provides the clustering scores (NMI, ARI), as the reference implementations.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import numpy as np
import pandas as pd

from flowcallback.core.flows import FlowGraph

__all__ = ["layer_metrics", "class_profiles", "class_separation", "METRIC_COLUMNS"]

METRIC_COLUMNS = [
    "epoch", "analysis", "column_index", "column", "layer_type", "n_clusters",
    "nmi_classes", "ari_classes", "nmi_predictions", "ari_predictions", "purity", "nmi_gain",
]


def _purity(labels: np.ndarray, classes: np.ndarray) -> float:
    """Share of samples whose cluster's most common class is their own class."""
    if len(labels) == 0:
        return float("nan")
    _, inv = np.unique(labels, return_inverse=True)
    table = np.zeros((inv.max() + 1, int(classes.max()) + 1), dtype=np.int64)
    np.add.at(table, (inv.ravel(), classes), 1)
    return float(table.max(axis=1).sum() / len(labels))


def layer_metrics(graphs: Iterable[FlowGraph]) -> pd.DataFrame:
    """One row per layer column of every graph: how its clusters separate classes and predictions.

    Columns: :data:`METRIC_COLUMNS`. ``nmi_gain`` is the NMI with the classes minus that of the
    previous layer column (0 for the first), i.e. what this layer adds to the separation.
    ``ari_predictions`` of the last layer is the decision-layer fidelity: 1 when the last layer's
    clusters are exactly the predicted classes.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> g = build_flow_graph([("d", "Dense", [0, 0, 1, 1])], [0, 0, 1, 1], [0, 0, 1, 0])
    >>> layer_metrics([g])[["column", "nmi_classes", "purity"]].values.tolist()
    [['d', 1.0, 1.0]]
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rows = []
    for g in graphs:
        prev = None
        for j, col in enumerate(g.columns):
            if col.kind != "layer":
                continue
            a = g.assignments[:, j]
            nmi = float(normalized_mutual_info_score(g.labels, a))
            rows.append({
                "epoch": g.epoch, "analysis": g.analysis, "column_index": j, "column": col.name,
                "layer_type": col.layer_type, "n_clusters": int(len(col.order)),
                "nmi_classes": nmi, "ari_classes": float(adjusted_rand_score(g.labels, a)),
                "nmi_predictions": float(normalized_mutual_info_score(g.predictions, a)),
                "ari_predictions": float(adjusted_rand_score(g.predictions, a)),
                "purity": _purity(a, g.labels), "nmi_gain": 0.0 if prev is None else nmi - prev,
            })
            prev = nmi
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def _separation_shares(graph: FlowGraph, purity: float) -> Tuple[List[int], np.ndarray]:
    """The layer columns, and per class and layer column the share of the class's samples that sit
    in clusters dominated by it (NaN for a class without samples)."""
    layer_cols = [j for j, c in enumerate(graph.columns) if c.kind == "layer"]
    n_classes = len(graph.class_names)
    shares = np.full((n_classes, len(layer_cols)), np.nan)
    for p, j in enumerate(layer_cols):
        a = graph.assignments[:, j]
        _, inv = np.unique(a, return_inverse=True)
        inv = inv.ravel()
        table = np.zeros((inv.max() + 1, n_classes), dtype=np.int64)
        np.add.at(table, (inv, graph.labels), 1)
        share = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
        totals = table.sum(axis=0)
        for c in np.flatnonzero(totals):
            shares[c, p] = table[share[:, c] > purity, c].sum() / totals[c]
    return layer_cols, shares


def class_separation(graph: FlowGraph, *, purity: float = 0.5) -> pd.DataFrame:
    """How well each class is separated at each layer: the share of its samples that sit in
    clusters it dominates (more than ``purity`` of the cluster's samples are of the class).

    1 when the class has clusters of its own; near 0 when its samples are spread over clusters of
    other classes. :func:`class_profiles` calls a class separated where this reaches ``coverage``.

    Returns
    -------
    DataFrame
        One row per (layer column, class): ``column_index``, ``column``, ``class``, ``class_name``,
        ``separation`` (NaN for a class without samples).

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> g = build_flow_graph([("d", "Dense", [0, 0, 1, 1, 1, 1])], [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2])
    >>> class_separation(g)["separation"].tolist()
    [1.0, 0.0, 0.0]
    """
    if not 0 <= purity < 1:
        raise ValueError(f"purity must be in [0, 1), got {purity}")
    layer_cols, shares = _separation_shares(graph, purity)
    rows = [{"column_index": j, "column": graph.columns[j].name, "class": c, "class_name": graph.class_names[c],
             "separation": float(shares[c, p])}
            for p, j in enumerate(layer_cols) for c in range(len(graph.class_names))]
    return pd.DataFrame(rows, columns=["column_index", "column", "class", "class_name", "separation"])


def class_profiles(graph: FlowGraph, *, purity: float = 0.5, coverage: float = 0.8) -> pd.DataFrame:
    """When each class becomes separated, layer by layer.

    A cluster is *dominated* by class c when more than ``purity`` of its samples are of class c
    (a strict majority by default).
    Class c is *separated* at a layer when at least ``coverage`` of its samples sit in clusters
    dominated by c. Its status is:

    ``"from <layer>"``
        separated at that layer and at every later layer (``first_layer`` names it);
    ``"unstable"``
        separated at some layer but lost again downstream;
    ``"not separated"``
        never separated;
    ``"no samples"``
        the held-out set has no sample of the class (nothing can be said of it).

    Returns
    -------
    DataFrame
        One row per class: ``class``, ``class_name``, ``status``, ``first_layer``,
        ``first_layer_index`` (column index, -1 if none), ``separated`` (one bool per layer, in order).
    """
    if not 0 <= purity < 1 or not 0 < coverage <= 1:
        raise ValueError(f"purity must be in [0, 1) and coverage in (0, 1], got {purity} and {coverage}")
    layer_cols, shares = _separation_shares(graph, purity)
    n_classes = len(graph.class_names)
    with np.errstate(invalid="ignore"):
        sep = np.nan_to_num(shares, nan=-1.0) >= coverage
    present = np.bincount(np.asarray(graph.labels, dtype=np.int64), minlength=n_classes)[:n_classes] > 0
    rows = []
    for c in range(n_classes):
        s = sep[c]
        status, first = ("not separated" if present[c] else "no samples"), -1
        if s.any():
            # first layer from which it stays separated to the end
            tail = np.flatnonzero(~s)
            start = 0 if len(tail) == 0 else tail[-1] + 1
            if start < len(s):
                status, first = f"from {graph.columns[layer_cols[start]].name}", layer_cols[start]
            else:
                status = "unstable"
        rows.append({
            "class": c, "class_name": graph.class_names[c], "status": status,
            "first_layer": graph.columns[first].name if first >= 0 else None, "first_layer_index": first,
            "separated": s.tolist(),
        })
    return pd.DataFrame(rows)
