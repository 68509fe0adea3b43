"""Compare two epochs of one analysis: which samples changed cluster, layer by layer.

Pure over two :class:`~flowcallback.core.flows.FlowGraph`; :meth:`flowcallback.Run.compare` loads
them from a run directory and calls :func:`compare_epochs`. Cluster ids are not comparable between
epochs, so each layer's clusters of the second epoch are matched to those of the first (Hungarian
on Jaccard overlap, :func:`flowcallback.core.match.match_clusters`); a sample's path changed at a
layer when its new cluster is not the match of its old one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from flowcallback.core.flows import FlowGraph

__all__ = ["Comparison", "compare_epochs"]


class Comparison:
    """The result of :meth:`Run.compare`: ``layers`` (one row per layer) and ``samples`` (changed paths)."""

    def __init__(self, epoch_a, epoch_b, analysis, layers, samples):
        self.epoch_a, self.epoch_b, self.analysis = epoch_a, epoch_b, analysis
        self.layers = layers
        self.samples = samples

    def __repr__(self) -> str:
        return f"Comparison(epochs {self.epoch_a} -> {self.epoch_b}, {len(self.samples)} samples changed path)"


def compare_epochs(graph_a: FlowGraph, graph_b: FlowGraph) -> Comparison:
    """Per layer ARI between two epochs' clusterings, and the samples whose path changed.

    Parameters
    ----------
    graph_a, graph_b : FlowGraph
        Two epochs of the same analysis, over the same samples. Layers that only one of them has
        are left out.

    Returns
    -------
    Comparison
        ``layers``: one row per layer (``layer``, ``ari``, ``changed_samples``, ``clusters_a``,
        ``clusters_b``, ``splits``, ``merges``); ``samples``: one row per sample whose path or
        prediction changed (``sample``, ``true_class``, ``class_name``, ``prediction_a``,
        ``prediction_b``, ``layers_changed``: the layers, and ``"Prediction"`` where it changed).

    Raises
    ------
    ValueError
        If the two graphs do not describe the same samples (other held-out digests, or different
        ground-truth labels).
    """
    from sklearn.metrics import adjusted_rand_score

    from flowcallback.core.match import match_clusters

    ga, gb = graph_a, graph_b
    if ga.held_out and gb.held_out and ga.held_out != gb.held_out:
        raise ValueError(f"epochs {ga.epoch} and {gb.epoch} were taken on different held-out sets (digests "
                         f"{ga.held_out} and {gb.held_out}): their samples differ, so their paths cannot be compared")
    if not np.array_equal(ga.labels, gb.labels):
        raise ValueError(f"epochs {ga.epoch} and {gb.epoch} do not describe the same samples")
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
    # a changed prediction is a changed path too (the Prediction column): label noise shows there
    per_layer["Prediction"] = np.asarray(ga.predictions) != np.asarray(gb.predictions)
    changed |= per_layer["Prediction"]
    idx = np.flatnonzero(changed)
    samples = pd.DataFrame({
        "sample": idx,
        "true_class": ga.labels[idx],
        "class_name": [ga.class_names[c] for c in ga.labels[idx]],
        "prediction_a": np.asarray(ga.predictions)[idx],
        "prediction_b": np.asarray(gb.predictions)[idx],
        "layers_changed": [[n for n, mv in per_layer.items() if mv[i]] for i in idx],
    })
    return Comparison(ga.epoch, gb.epoch, ga.analysis, pd.DataFrame(rows), samples)
