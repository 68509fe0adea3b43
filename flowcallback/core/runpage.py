"""The run page, ``index.html``: every snapshot of a run on one page.

An epoch slider and play button over the Sankey diagrams (the figures of
:mod:`flowcallback.core.render`), the Activations / LRP switch, a class filter, the layer × epoch
NMI heatmap, held-out accuracy and loss, the flows of one column across epochs, the confusions over
training and each class's recognition profile.

The page is drawn from plain data held in memory (:func:`run_page_html`, :func:`write_run_page`):
the run's description (``run.json``), each epoch's graphs and the errors recorded, so that a writer
that has just saved a snapshot never reads the run back. :func:`write_run_page_for` draws it for a
run directory loaded with :func:`flowcallback.load_run` (``flowcallback report``).

Its HTML, CSS and JavaScript are package data, ``flowcallback/templates/run_page.{html,css,js}``,
read with :mod:`importlib.resources` and inlined: the page written is one self-contained file that
loads only ``plotly.min.js`` from its own directory, with no network request. The run's data is
one JSON element that the script reads; names reach the page as JSON text and are shown with
``textContent`` or HTML-escaped for Plotly, never run as HTML.
"""
from __future__ import annotations

import html
import json
import os
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from flowcallback._schedule import describe as describe_schedule
from flowcallback.core._files import SETUP_ERRORS, atomic_write, ensure_plotlyjs
from flowcallback.core._notes import shorten
from flowcallback.core.flows import EpochViews, FlowGraph, group_small_clusters
from flowcallback.core.history import EpochConfusion, confusion_over_training, epoch_confusion
from flowcallback.core.render import (
    ANALYSIS_LABELS,
    AUTO_TOP_CLASSES,
    OTHER_COLOR,
    _esc,
    _flow_samples,
    _node_indices,
    class_colors,
    figure,
    top_classes,
)

__all__ = ["RunPageState", "sets_page_html", "sets_page_html_for", "write_sets_page", "write_sets_page_for",
           "run_epoch_metrics",
           "run_page_html", "write_run_page", "write_run_page_for",
           "run_page_html_for", "run_graphs",
           "run_views", "TEMPLATE_FILES", "MAX_PAGE_UNITS", "PAGE_CLASS_MEAN_VALUES", "PAGE_PROJECTION_POINTS",
           "CONFUSION_MATRIX_CLASSES"]

PathLike = Union[str, os.PathLike]

#: The run page's template files, package data under ``flowcallback/templates``.
TEMPLATE_FILES = ("run_page.html", "run_page.css", "run_page.js", "sets_page.html", "sets_page.js")
_PLACEHOLDER = re.compile(r"__(TITLE|DATA|STYLE|SCRIPT)__")


@cache
def _template(name: str) -> str:
    """The text of one template file, found with :mod:`importlib.resources` (works from a wheel or a zip)."""
    from importlib.resources import files

    if name not in TEMPLATE_FILES:
        raise ValueError(f"no run page template {name!r}; the templates are {TEMPLATE_FILES}")
    return files("flowcallback").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=2)
def _inlined(page: str = "run_page") -> str:
    """A page's HTML template (``run_page`` or ``sets_page``) with the shared style sheet and its
    script inlined (the data and title still to fill in)."""
    style, script = _template("run_page.css"), _template(f"{page}.js")
    # inlined as they are: neither may close its element early
    if "</style" in style.lower() or "</script" in script.lower() or "<!--" in script:
        raise ValueError(f"the {page}'s style sheet or script holds text that would close its element")
    parts = {"STYLE": style, "SCRIPT": script}
    return _PLACEHOLDER.sub(lambda m: parts.get(m.group(1), m.group(0)), _template(f"{page}.html"))


def _json_for_script(obj) -> str:
    """JSON safe to embed in a <script> element (no '</' or '<!--' can close or hide it)."""
    import plotly.utils

    text = json.dumps(obj, cls=plotly.utils.PlotlyJSONEncoder, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _other_flow_rows(graph: FlowGraph, shown: Optional[List[int]], max_samples: int = 5) -> list:
    """The flows of the classes that the Sankey merges into "other", one row per class.

    Each row is ``[source node, target node, class, count, first samples]`` with the node indices
    of :func:`flowcallback.core.render.sankey_trace`: the page's class filter gives a matching class
    among them its own flows back. Empty when every class is drawn on its own.
    """
    if shown is None:
        return []
    keep = set(shown)
    graph = group_small_clusters(graph)[0]  # the graph the Sankey draws, whose node indices these are
    index = _node_indices(graph)
    rows = []
    flows = graph.flows
    for j in range(len(graph.columns) - 1):
        part = flows[(flows["source_column"] == j) & ~flows["true_class"].isin(keep)]
        if part.empty:
            continue
        samples = _flow_samples(graph, j, max_samples)
        columns = part[["source_cluster", "target_cluster", "true_class", "count"]]
        for sc, tc, cls, cnt in columns.itertuples(index=False):
            rows.append([index[(j, int(sc))], index[(j + 1, int(tc))], int(cls), int(cnt),
                         samples.get((int(sc), int(tc), int(cls)), [])])
    return rows


def _run_page_parts(g: FlowGraph, model_name: str, metric_rows=None) -> dict:
    """What the run page shows of one epoch's graph: its figure, class profile, metric rows (those
    given, computed by the snapshot, or computed here), accuracy and loss."""
    from flowcallback.core.metrics import class_profiles, layer_metrics

    fig = figure(g, title_prefix=model_name)
    fig.update_layout(updatemenus=[])
    return {
        # kept as the page's JSON text: a few times smaller than the nested dicts, and not
        # serialised again at every snapshot
        "figure": _json_for_script(fig.to_plotly_json()),
        "other_flows": _json_for_script(_other_flow_rows(g, top_classes(g))),
        "profile": [[r.class_name, r.status] for r in class_profiles(g).itertuples()],  # shown with textContent
        "metrics": layer_metrics([g]) if metric_rows is None else metric_rows,
        "accuracy": g.metrics.get("accuracy"),
        "loss": g.metrics.get("loss"),
        "graph": g,  # for the views across epochs (immutable; its arrays are read-only)
        "model_name": model_name,
    }


def _epoch_flow_rows(graphs) -> Tuple[dict, dict]:
    """``({column: rows}, {column: {epoch: text}})``: the rows of
    :func:`flowcallback.core.history.epoch_flows` for the run page's JavaScript, and what the node of
    small clusters is at each epoch where a column has one (:attr:`~flowcallback.core.flows.ClusterGroup.text`).

    Each row is ``[source epoch, target epoch, source cluster, target cluster, class, count,
    changed, first samples]``; a column is followed over the epochs that have it (a layer left
    out of a failed epoch is skipped there).
    """
    from flowcallback.core.history import epoch_flows

    out, groups = {}, {}
    # only the epochs taken on the last epoch's held-out set can be followed sample by sample
    graphs = [g for g in graphs if g.n_samples == graphs[-1].n_samples and np.array_equal(g.labels, graphs[-1].labels)]
    if len(graphs) < 2:
        return out, groups
    names = [c.name for c in graphs[-1].columns if c.kind in ("layer", "prediction")]
    for name in names:
        having = [g for g in graphs if name in g.column_names]
        if len(having) < 2:
            continue
        small = _small_groups(having, name)
        df = _small_clusters_as_one(epoch_flows(having, name, max_samples=5), small)
        out[name] = [[int(r.source_epoch), int(r.target_epoch), int(r.source_cluster), int(r.target_cluster),
                      int(r.true_class), int(r.count), bool(r.changed), list(r.first_samples)] for r in df.itertuples()]
        if small:
            groups[name] = {str(e): group.text for e, group in small.items()}
    return out, groups


#: The cluster id of the node that holds a column's small clusters in the flows across epochs.
SMALL_CLUSTERS = -1


def _small_groups(graphs, column: str) -> dict:
    """``{epoch: ClusterGroup}``: the small clusters of ``column`` that each epoch's Sankey draws as
    one node (:func:`~flowcallback.core.flows.group_small_clusters`), at the epochs that have them."""
    out = {}
    for g in graphs:
        j = g.column_index(column)
        for group in group_small_clusters(g)[1]:
            if group.column == j:  # one group at most per column
                out[g.epoch] = group
    return out


def _small_clusters_as_one(df, small: dict, max_samples: int = 5):
    """The rows of :func:`~flowcallback.core.history.epoch_flows` with, at each epoch, the small
    clusters ``small`` (:func:`_small_groups`) as one cluster, :data:`SMALL_CLUSTERS`: its rows
    summed, changed where any of them is, their first samples merged."""
    if not small:
        return df
    members = {e: set(group.members) for e, group in small.items()}
    df = df.copy()
    for side in ("source", "target"):
        grouped = [c in members.get(e, ()) for e, c in zip(df[f"{side}_epoch"], df[f"{side}_cluster"])]
        df.loc[grouped, f"{side}_cluster"] = SMALL_CLUSTERS
    keys = ["source_epoch", "target_epoch", "source_cluster", "target_cluster", "true_class"]
    return (df.groupby(keys, sort=True, as_index=False)
              .agg(count=("count", "sum"), changed=("changed", "any"),
                   first_samples=("first_samples", lambda s: tuple(sorted(i for t in s for i in t)[:max_samples]))))


def _heatmaps(metrics, analyses, layers: List[str], epochs: List[int]) -> dict:
    """``{analysis: figure JSON}``: the NMI between clusters and true classes, layer × epoch."""
    import plotly.graph_objects as go

    heatmaps = {}
    for a in analyses:
        m = metrics[metrics["analysis"] == a]
        if m.empty:
            continue
        z, hover = [], []
        for name in layers:
            row, hrow = [], []
            for e in epochs:
                r = m[(m["epoch"] == e) & (m["column"] == name)]
                if r.empty:
                    row.append(None)
                    hrow.append("")
                else:
                    r = r.iloc[0]
                    row.append(round(float(r.nmi_classes), 4))
                    hrow.append(f"{_esc(name)} · epoch {e}<br>NMI {r.nmi_classes:.3f}<br>purity {r.purity:.3f}<br>"
                                f"{int(r.n_clusters)} clusters<br>ARI vs predictions {r.ari_predictions:.3f}")
            z.append(row)
            hover.append(hrow)
        hm = go.Figure(go.Heatmap(z=z, x=[str(e) for e in epochs], y=[_esc(name) for name in layers], text=hover,
                                  hovertemplate="%{text}<extra></extra>", colorscale="Viridis", zmin=0, zmax=1,
                                  colorbar=dict(title="NMI")))
        hm.update_layout(title="Separation of the classes (NMI of clusters vs true classes), layer × epoch",
                         xaxis=dict(title="epoch", type="category"), yaxis=dict(autorange="reversed"),
                         height=max(300, 40 * len(layers) + 120), margin=dict(l=120, r=20, t=60, b=50))
        heatmaps[a] = hm.to_plotly_json()
    return heatmaps


def _curves(epochs: List[int], acc: list, loss: list) -> dict:
    """Held-out accuracy and loss per epoch, as figure JSON."""
    import plotly.graph_objects as go

    curves = go.Figure([
        go.Scatter(x=epochs, y=acc, name="accuracy", mode="lines+markers"),
        go.Scatter(x=epochs, y=loss, name="loss", mode="lines+markers", yaxis="y2"),
    ])
    curves.update_layout(title="Held-out accuracy and loss", xaxis=dict(title="epoch", dtick=1),
                         yaxis=dict(title="accuracy", range=[0, 1]),
                         # own ticks for the loss (synchronised ones fall on values such as 2.464, 1.985)
                         yaxis2=dict(title="loss", overlaying="y", side="right", rangemode="tozero", tickmode="auto",
                                     nticks=6, tickformat=".2~f", showgrid=False),
                         height=340, margin=dict(l=60, r=60, t=60, b=50), legend=dict(orientation="h"))
    return curves.to_plotly_json()


#: At most this many units (or channels) of a layer reach the run page's class-means heatmap: those
#: whose class means vary most over the classes (``run.class_means`` has them all).
MAX_PAGE_UNITS = 256

#: The run page holds at most about this many class-mean values (classes x units, over every layer,
#: epoch and analysis) and projected points (samples, over every projected layer and epoch): each
#: layer then shows fewer units (at least :data:`MIN_PAGE_UNITS`) and the projection fewer samples
#: (at least :data:`MIN_PAGE_POINTS`, the same at every epoch), so that a deep model's page stays
#: small. ResNet50's 20 columns, 1,000 samples, 10 epochs: 5.5 and 2.5 MB of the page without the
#: bounds (docs/performance.md).
PAGE_CLASS_MEAN_VALUES = 250_000
PAGE_PROJECTION_POINTS = 100_000
MIN_PAGE_UNITS = 16
MIN_PAGE_POINTS = 200


#: The run page's confusion matrix shows every class up to this many; above, the classes most
#: confused over the epochs (or those the class filter matches, the most confused of them), with a
#: column for the predictions that fall outside the shown classes. ``run.confusion()`` has them all.
CONFUSION_MATRIX_CLASSES = 30


def _confusion_cells(confusions: Mapping[int, EpochConfusion]) -> dict:
    """The confusion matrix view's data: ``{epoch: [true, predicted, count]}``, each epoch's nonzero
    cells only (three lists of at most as many numbers as held-out samples, whatever the number of
    classes), for the page's script to draw the shown classes from.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> g = build_flow_graph([("d", "Dense", [0, 0, 1])], [0, 0, 1], [0, 1, 1], class_names=list("abcd"), epoch=2)
    >>> _confusion_cells({2: epoch_confusion(g)})
    {'2': [[0, 0, 1], [0, 1, 1], [1, 1, 1]]}
    """
    return {str(e): [c.true.tolist(), c.predicted.tolist(), c.count.tolist()] for e, c in sorted(confusions.items())}


def _rounded(a: np.ndarray, digits: int = 4) -> list:
    """``a`` as nested lists of floats, rounded to ``digits`` significant digits of its largest
    magnitude (the same decimals for the whole array), NaN as None: a compact page payload."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    top = float(np.abs(a[finite]).max()) if finite.any() else 0.0
    decimals = int(np.clip(digits - 1 - np.floor(np.log10(top)), 0, 12)) if top > 0 else 0
    r = np.round(a, decimals)
    r = np.where(r == 0, 0.0, r)  # no "-0.0"
    if finite.all():
        return r.tolist()
    return np.where(finite, r, None).tolist()


def _view_epochs(views: Optional[Mapping[int, object]], epochs: List[int]) -> Dict[int, object]:
    """``{epoch: EpochViews}`` of the written epochs that have views."""

    out = {}
    for e, v in (views or {}).items():
        if v is None or int(e) not in epochs:
            continue
        if not isinstance(v, EpochViews):
            raise ValueError(f"views: expected EpochViews (or None) per epoch, got {type(v).__name__} at epoch {e}")
        out[int(e)] = v
    return out


def _class_means_data(views: Dict[int, object], n_classes: int, max_units: int = MAX_PAGE_UNITS,
                      budget: int = PAGE_CLASS_MEAN_VALUES) -> dict:
    """The class-means view's data: ``{analysis: [{"layer", "units", "total", "epochs": {e: {"order", "means"}}}]}``.

    Each layer keeps the same units at every epoch (at most ``max_units``, and fewer where the
    page would hold more than ``budget`` values in all, but at least :data:`MIN_PAGE_UNITS`: those
    whose means vary most over the classes at some epoch, in unit order); ``order`` is the epoch's
    rows in the order of :func:`flowcallback.core.aggregate.class_order` (computed on every unit)
    and ``means`` the class-ordered (``n_classes`` × units) means, rounded, NaN as null.
    """
    from flowcallback.core.aggregate import class_order

    keys = list(dict.fromkeys(key for e in sorted(views) for key in views[e].class_means))
    tables = sum(len(views[e].class_means) for e in views)
    max_units = max(MIN_PAGE_UNITS, min(max_units, budget // max(tables * n_classes, 1)))
    out: Dict[str, dict] = {}
    for a, layer in keys:
        by_epoch = {e: views[e].class_means[(a, layer)] for e in sorted(views) if (a, layer) in views[e].class_means}
        by_epoch = {e: m for e, m in by_epoch.items() if m.shape[0] == n_classes}
        if not by_epoch:
            continue
        total = max(m.shape[1] for m in by_epoch.values())
        by_epoch = {e: m for e, m in by_epoch.items() if m.shape[1] == total}
        if total > max_units:
            spread = np.zeros(total)
            for m in by_epoch.values():
                rows = m[np.isfinite(m).all(axis=1)]
                if len(rows) > 1:
                    spread = np.maximum(spread, rows.astype(np.float64).var(axis=0))
            units = np.sort(np.lexsort((np.arange(total), -spread))[:max_units])
        else:
            units = np.arange(total)
        epochs = {str(e): {"order": class_order(m).tolist(), "means": _rounded(m[:, units])}
                  for e, m in by_epoch.items()}
        out.setdefault(a, []).append({"layer": layer, "units": units.tolist(), "total": int(total), "epochs": epochs})
    return out


#: The neuron-clusters panel shows at most this many classes per matrix: all of them up to it,
#: else those the clusters prefer or avoid most (largest |z| in some cluster), in seriation order;
#: fewer (at least :data:`MIN_PAGE_UNITS`) where the page would hold more than
#: :data:`PAGE_NEURON_VALUES` cells over every layer and epoch. ``run.neuron_clusters`` has them all.
MAX_PAGE_NEURON_CLASSES = 40
PAGE_NEURON_VALUES = 150_000


def _neurons_data(views: Dict[int, object], graphs: Mapping[int, Mapping[str, FlowGraph]], n_classes: int,
                  max_classes: int = MAX_PAGE_NEURON_CLASSES, budget: int = PAGE_NEURON_VALUES) -> list:
    """The neuron-clusters panel's data: ``[{"layer", "epochs": {e: {...}}}]`` in the run's layer order.

    Per epoch: ``sizes`` (units per cluster, in seriation order), ``flat`` (units in no cluster),
    ``classes`` (the shown classes, in seriation order), ``z`` (clusters × shown classes, rounded)
    and ``top`` (per cluster, ``[sample, label, prediction]`` of its top samples).

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> from flowcallback.core.neurons import UnitClusters
    >>> g = build_flow_graph([("d", "Dense", [0, 0, 1])], [0, 1, 1], [0, 1, 0], class_names=["a", "b"], epoch=1)
    >>> v = EpochViews(class_means={("activations", "d"): [[1.0, 0.0, 5.0], [0.0, 1.0, 5.0]]},
    ...                unit_clusters={("activations", "d"): UnitClusters([0, 1, -1], [[0, 1], [2, -1]])})
    >>> out = _neurons_data({1: v}, {1: {"activations": g}}, 2)
    >>> out[0]["layer"], out[0]["epochs"]["1"]["z"], out[0]["epochs"]["1"]["top"]
    ('d', [[1.0, -1.0], [-1.0, 1.0]], [[[0, 0, 0], [1, 1, 1]], [[2, 1, 0]]])
    """
    from flowcallback.core.neurons import cluster_matrix, seriate

    keys = list(dict.fromkeys(key for e in sorted(views) for key in views[e].unit_clusters))
    cells = sum(views[e].unit_clusters[k].n_clusters for e in views for k in views[e].unit_clusters)
    max_classes = max(min(MIN_PAGE_UNITS, n_classes), min(max_classes, budget // max(cells, 1)))
    out = []
    for a, layer in keys:
        epochs = {}
        for e in sorted(views):
            u = views[e].unit_clusters.get((a, layer))
            g = graphs.get(e, {}).get("activations")
            if u is None or g is None or views[e].class_means[(a, layer)].shape[0] != n_classes:
                continue
            matrix = cluster_matrix(views[e].class_means[(a, layer)], u.labels)
            _, order = seriate(matrix)
            order = order[np.isfinite(matrix[:, order]).all(axis=0)] if len(matrix) else order
            if len(order) > max_classes:  # the classes with the strongest preference, in seriation order
                strength = np.abs(matrix).max(axis=0) if len(matrix) else np.zeros(n_classes)
                keep = set(np.lexsort((order, -strength[order]))[:max_classes].tolist())
                order = np.array([c for i, c in enumerate(order) if i in keep], dtype=np.int64)
            top = [[[int(s), int(g.labels[s]), int(g.predictions[s])] for s in row if 0 <= s < g.n_samples]
                   for row in u.top_samples]
            epochs[str(e)] = {"sizes": u.sizes().tolist(), "flat": int((u.labels < 0).sum()),
                              "classes": order.tolist(), "z": _rounded(matrix[:, order], 3) if len(matrix) else [],
                              "top": top}
        if epochs:
            out.append({"layer": layer, "epochs": epochs})
    return out


#: The run page holds at most this many bytes of thumbnail pixels (before base64), the latest
#: epochs' pictures first; the top samples without a picture are listed by index alone.
PAGE_THUMBNAIL_BYTES = 1_500_000


def _thumbnail_data(views: Dict[int, object], budget: int = PAGE_THUMBNAIL_BYTES) -> Optional[dict]:
    """The pictures of the neuron clusters' top samples: ``{"height", "width", "channels", "pixels":
    {sample: base64 of its uint8 pixels, row-major}}``, or None where no epoch has any.

    Examples
    --------
    >>> v = EpochViews(thumbnail_samples=[4], thumbnails=np.full((1, 2, 2, 1), 255))
    >>> _thumbnail_data({3: v})
    {'height': 2, 'width': 2, 'channels': 1, 'pixels': {'4': '/////w=='}}
    """
    import base64

    shape, pixels, used = None, {}, 0
    for e in sorted(views, reverse=True):
        v = views[e]
        if v.thumbnails is None:
            continue
        shape = shape or v.thumbnails.shape[1:]
        if v.thumbnails.shape[1:] != shape:
            continue
        for s, pic in zip(v.thumbnail_samples.tolist(), v.thumbnails):
            if str(s) in pixels or used + pic.nbytes > budget:
                continue
            pixels[str(s)] = base64.b64encode(pic.tobytes()).decode("ascii")
            used += pic.nbytes
    if shape is None:
        return None
    return {"height": int(shape[0]), "width": int(shape[1]), "channels": int(shape[2]), "pixels": pixels}


def _projection_data(views: Dict[int, object], graphs: Mapping[int, Mapping[str, FlowGraph]],
                     budget: int = PAGE_PROJECTION_POINTS) -> dict:
    """The projection view's data, compact: per epoch the projected samples with their label and
    prediction; per (analysis, layer) and epoch the rounded coordinates and each sample's cluster
    (-1 where the epoch's graph of that analysis has no column for the layer).

    Where the page would hold more than ``budget`` points over every layer and epoch, it shows an
    evenly spaced part of the projected samples (at least :data:`MIN_PAGE_POINTS`), the same at
    every epoch, so that the animation still follows each sample."""
    points, layers, coords, methods = {}, [], {}, []
    pictures = sum(len(views[e].projections) for e in views if views[e].projection_samples is not None)
    for e in sorted(views):
        v = views[e]
        if not v.projections or v.projection_samples is None:
            continue
        s = np.asarray(v.projection_samples, dtype=np.int64)
        keep = max(MIN_PAGE_POINTS, budget // max(pictures, 1))
        picked = (np.unique(np.linspace(0, len(s) - 1, keep).round().astype(np.int64)) if len(s) > keep
                  else np.arange(len(s)))
        s = s[picked]
        by_analysis = graphs[e]
        first = by_analysis.get("activations") or next(iter(by_analysis.values()))
        if s.size and s[-1] >= first.n_samples:
            continue
        points[str(e)] = {"samples": s.tolist(), "labels": first.labels[s].astype(np.int64).tolist(),
                          "predictions": first.predictions[s].astype(np.int64).tolist()}
        if v.projection_method and v.projection_method not in methods:
            methods.append(v.projection_method)
        for (a, layer), p in v.projections.items():
            key = f"{a}/{layer}"
            if key not in coords:
                layers.append({"key": key, "analysis": a, "layer": layer})
                coords[key] = {}
            g = by_analysis.get(a)
            if g is not None and layer in g.column_names[:-2]:
                cluster = g.assignments[s, g.column_names.index(layer)].astype(np.int64).tolist()
            else:
                cluster = [-1] * len(s)
            xy = _rounded(np.asarray(p)[picked], 3)  # a thousandth of the picture's extent: below a pixel
            coords[key][str(e)] = {"x": [c[0] for c in xy], "y": [c[1] for c in xy], "cluster": cluster}
    return {"points": points, "layers": layers, "coords": coords, "methods": methods}


def run_page_html(info: Mapping, graphs: Mapping[int, Mapping[str, FlowGraph]],
                  errors: Optional[Mapping[int | str, str]] = None, *, cache: Optional[dict] = None,
                  views: Optional[Mapping[int, EpochViews]] = None, metrics=None,
                  skipped: Optional[Mapping[int, str]] = None) -> str:
    """The run page, drawn from data in memory: nothing is read from disk but the package's templates.

    Parameters
    ----------
    info : mapping
        The run's description, as in ``run.json`` (schema ``run-1``): ``model.name``,
        ``class_names``, ``analyses``, ``layers`` are used.
    graphs : mapping of epoch to (mapping of analysis name to FlowGraph)
        Every complete snapshot, e.g. ``{0: {"activations": g0, "lrp": l0}, 1: {...}}``.
    errors : mapping of epoch to str, optional
        The text recorded for a failed snapshot, or a failed part of one (``Run.errors()``). An
        epoch here without graphs stays on the slider, marked as failed; one with graphs is marked
        as partly failed. The key ``"setup"`` (:data:`flowcallback.core.store.SETUP_ERRORS`) holds
        what failed when the callback set up: its last line is shown above the diagram.
    cache : dict, optional
        Keeps what the page shows of each ``(epoch, analysis)`` between calls, so that a caller
        rewriting the page after every snapshot builds each epoch's part once. An entry is used
        only while it was built from the same graph (the same object, or equal contents), so a
        rewritten epoch is drawn anew; dropping its entries first saves the comparison. The
        caller owns the dict.
    views : mapping of epoch to EpochViews (or None), optional
        Each epoch's class means and projections (:class:`flowcallback.core.store.EpochViews`,
        what ``Run.views(e)`` loads): the page then draws the class-means heatmap (at most
        :data:`MAX_PAGE_UNITS` units per layer) and the projection animated over the epochs. An
        epoch without views, or without graphs, is left out of both; None: neither is drawn.
    metrics : pandas.DataFrame, optional
        The layer metrics of the epochs (:func:`flowcallback.core.metrics.layer_metrics` rows, as
        each snapshot computed and stored them); the page computes those of an epoch not in it.
    skipped : mapping of epoch to str, optional
        The epochs whose files could not be read, and why (:attr:`flowcallback.Run.skipped`): they
        stay on the slider, marked as not loaded, and a note above the diagram lists them.

    Returns
    -------
    str
        The page's HTML: one self-contained file that loads ``plotly.min.js`` from its directory.
    """
    import pandas as pd

    from flowcallback.core.metrics import METRIC_COLUMNS

    cache = {} if cache is None else cache
    errors = dict(errors or {})
    setup_errors = str(errors.pop(SETUP_ERRORS, ""))
    errors = {int(e): str(t) for e, t in errors.items()}
    epochs = sorted(int(e) for e, by_analysis in graphs.items() if by_analysis)
    skipped = {int(e): str(why) for e, why in (skipped or {}).items() if int(e) not in epochs}
    analyses = list(info.get("analyses", ["activations"]))
    class_names = list(info["class_names"])
    model_name = info["model"]["name"]
    held_out = f"held-out set {info['held_out_set']} · " if isinstance(info.get("held_out_set"), str) else ""
    figures, other_flows, profiles, metric_rows, acc, loss, confusions = {}, {}, {}, [], [], [], {}
    for e in epochs:
        by_analysis = graphs[e]
        figures[str(e)], other_flows[str(e)], profiles[str(e)] = {}, {}, {}
        for i, a in enumerate(sorted(by_analysis)):
            g = by_analysis[a]
            part = cache.get((e, a))
            if part is None or part["model_name"] != model_name or not part["graph"].equals(g):
                rows = None
                if metrics is not None:
                    rows = metrics[(metrics["epoch"] == e) & (metrics["analysis"] == a)].reset_index(drop=True)
                    rows = rows if len(rows) else None
                part = cache[(e, a)] = _run_page_parts(g, model_name, rows)
            figures[str(e)][a] = part["figure"]
            other_flows[str(e)][a] = part["other_flows"]
            profiles[str(e)][a] = part["profile"]
            metric_rows.append(part["metrics"])
            if a == analyses[0]:  # the predictions' confusion, counted once per epoch and kept with its parts
                if "confusion" not in part:
                    part["confusion"] = epoch_confusion(g)  # O(samples + classes), never classes²
                confusions[e] = part["confusion"]
            if i == 0:
                acc.append(part["accuracy"])
                loss.append(part["loss"])
    metric_rows = [m for m in metric_rows if not m.empty]
    metrics = pd.concat(metric_rows, ignore_index=True) if metric_rows else pd.DataFrame(columns=METRIC_COLUMNS)
    heatmaps = _heatmaps(metrics, analyses, [layer["name"] for layer in info["layers"]], epochs)
    graphs_by_analysis = {a: [graphs[e][a] for e in epochs if a in graphs[e]] for a in analyses}
    across_parts = {a: _epoch_flow_rows(gs) for a, gs in graphs_by_analysis.items() if gs}
    across = {a: rows for a, (rows, _) in across_parts.items()}
    across_groups = {a: groups for a, (_, groups) in across_parts.items()}
    training = confusion_over_training([confusions[e] for e in epochs if e in confusions])
    last = graphs_by_analysis[analyses[0]][-1] if graphs_by_analysis.get(analyses[0]) else None
    written = set(epochs)
    # failed and unreadable epochs stay on the slider, marked as such
    slider = sorted(written | set(errors) | set(skipped))

    def last_line(text):  # an error's message: a traceback's last line, cut at a word
        text = text.strip()[-4096:]  # the last line is all that is shown: the rest is never split
        return shorten(text.splitlines()[-1], 300) if text else "error"

    data = {
        "title": f"{model_name} · {held_out}{len(slider)} snapshot(s)",
        "epochs": slider, "analyses": analyses, "labels": ANALYSIS_LABELS,
        "heatmaps": heatmaps, "curves": _curves(epochs, acc, loss), "profiles": profiles,
        "across": across, "across_groups": across_groups, "training": training, "class_names": class_names,
        "confusion": {"cells": _confusion_cells(confusions), "max_classes": CONFUSION_MATRIX_CLASSES},
        "colors": class_colors(len(class_names)), "other_color": OTHER_COLOR,
        # above AUTO_TOP_CLASSES classes, the largest are coloured and the rest drawn as "other"
        "shown_classes": top_classes(last) if last is not None else None,
        # the class filter colours at most this many of the classes it matches, the largest
        "max_colored": AUTO_TOP_CLASSES,
        "support": (np.bincount(np.asarray(last.labels, dtype=np.int64), minlength=len(class_names)).tolist()
                    if last is not None else [0] * len(class_names)),
        # no graph at all: the snapshot failed; a graph and an error: a part failed (LRP, a layer)
        "failed": {str(e): last_line(t) for e, t in errors.items() if e not in written},
        "partial": {str(e): last_line(t) for e, t in errors.items() if e in written},
        "setup_error": last_line(setup_errors) if setup_errors.strip() else "",
        # epochs whose files could not be read (Run.skipped): on the slider, and in a note
        "skipped": {str(e): shorten(why, 300) for e, why in skipped.items()},
        # which epochs the snapshot budget took and why it skipped the others (run.json "schedule")
        "schedule": describe_schedule(info.get("schedule")),
        "engines": str((info.get("config") or {}).get("engines_note") or "")[:500],
    }
    shown_views = _view_epochs(views, epochs)
    data["class_means"] = _class_means_data(shown_views, len(class_names))
    data["max_units"] = MAX_PAGE_UNITS
    data["projection"] = _projection_data(shown_views, graphs)
    data["neurons"] = _neurons_data(shown_views, graphs, len(class_names))
    data["thumbnails"] = _thumbnail_data(shown_views)

    def nested(parts):  # {epoch: {analysis: JSON text}}, already serialised (see _run_page_parts)
        return "{" + ", ".join(
            f"{_json_for_script(e)}: {{" + ", ".join(f"{_json_for_script(a)}: {text}" for a, text in by_a.items()) + "}"
            for e, by_a in parts.items()
        ) + "}"

    text = (_json_for_script(data)[:-1] + ', "other_flows": ' + nested(other_flows)
            + ', "figures": ' + nested(figures) + "}")
    values = {"TITLE": html.escape(str(model_name)), "DATA": text}
    # one pass: a name or datum that looks like a placeholder is left as it is
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), _inlined("run_page"))


def write_run_page(log_dir: PathLike, info: Mapping, graphs: Mapping[int, Mapping[str, FlowGraph]],
                   errors: Optional[Mapping[int | str, str]] = None, *, cache: Optional[dict] = None,
                   views: Optional[Mapping[int, EpochViews]] = None, metrics=None,
                   skipped: Optional[Mapping[int, str]] = None) -> Path:
    """Write ``index.html`` into ``log_dir`` (atomically) from data in memory, with the plotly
    package's own ``plotly.min.js`` beside it (:func:`flowcallback.core.store.ensure_plotlyjs`).

    The arguments are those of :func:`run_page_html`. Returns the page's path.
    """
    log_dir = Path(log_dir)
    ensure_plotlyjs(log_dir)
    path = log_dir / "index.html"
    page = run_page_html(info, graphs, errors, cache=cache, views=views, metrics=metrics, skipped=skipped)
    atomic_write(path, page.encode("utf-8"))
    return path


def sets_page_html(overview: Mapping, model_name: str) -> str:
    """The page of a run of several held-out sets: each set's accuracy and layer separation
    (:func:`flowcallback.core.sets.sets_overview`), the sets flagged as failing, and each set's own
    run page (``<set>/index.html``) in a frame, one or two side by side, following one epoch slider.

    Examples
    --------
    >>> from flowcallback.core.sets import sets_overview
    >>> page = sets_page_html(sets_overview({"clean": {}, "noisy": {}}, {"clean": 5, "noisy": 5}), "lenet")
    >>> "held-out sets" in page and '"noisy/index.html"' in page
    True
    """
    values = {"TITLE": html.escape(str(model_name)),
              "DATA": _json_for_script({**overview, "model": str(model_name)})}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), _inlined("sets_page"))


def write_sets_page(log_dir: PathLike, overview: Mapping, model_name: str) -> Path:
    """Write the sets page ``index.html`` into ``log_dir`` (atomically), with ``plotly.min.js`` beside it."""
    log_dir = Path(log_dir)
    ensure_plotlyjs(log_dir)
    path = log_dir / "index.html"
    atomic_write(path, sets_page_html(overview, model_name).encode("utf-8"))
    return path


def run_epoch_metrics(run) -> Dict[int, Tuple[dict, object]]:
    """``{epoch: (scalars, layer metrics)}`` of a loaded run's epochs with activations: what
    :func:`flowcallback.core.sets.sets_overview` takes of each set."""
    table = run.layer_metrics()
    return {e: (dict(run.epoch(e).metrics), table[table["epoch"] == e])
            for e in run.epochs if "activations" in run.analyses(e)}


def sets_page_html_for(info: Mapping, open_run) -> str:
    """The sets page of a run of several held-out sets read from disk: ``info`` is its
    ``sets.json``, ``open_run(name)`` a set's loaded run (None, or an error, for a set that cannot be
    read: it is listed without epochs; its own page says why)."""
    from flowcallback.core.sets import sets_overview

    per_set, samples = {}, {}
    for entry in info["sets"]:
        name = entry["name"]
        samples[name] = int(entry.get("samples") or 0)
        try:
            run = open_run(name)
            per_set[name] = {} if run is None else run_epoch_metrics(run)
        except Exception:
            per_set[name] = {}
    return sets_page_html(sets_overview(per_set, samples), str((info.get("model") or {}).get("name", "")))


def write_sets_page_for(run_sets) -> Path:
    """Write the sets page of a :class:`flowcallback.RunSets` (:func:`sets_page_html_for`)."""
    path = Path(run_sets.path)
    ensure_plotlyjs(path)
    atomic_write(path / "index.html", sets_page_html_for(run_sets.info, run_sets.__getitem__).encode("utf-8"))
    return path / "index.html"


class RunPageState:
    """What the run page shows, kept in memory while a run is written, so that each snapshot draws
    only its own epoch and rewrites ``index.html`` without reading the run directory again.

    Thread-safe: background snapshots and the training thread's error records both reach it.

    Parameters
    ----------
    log_dir : str or path
    info : mapping
        ``run.json``.

    Examples
    --------
    >>> import tempfile
    >>> from flowcallback.core.flows import build_flow_graph
    >>> y = np.array([0, 0, 1, 1])
    >>> info = {"class_names": ["a", "b"], "model": {"name": "m"}, "layers": [{"name": "d"}]}
    >>> state = RunPageState(tempfile.mkdtemp(), info)
    >>> state.add_epoch(1, {"activations": build_flow_graph([("d", "Dense", y)], y, y, epoch=1)})
    >>> state.write().name
    'index.html'
    >>> sorted(state.graphs), state.drawn
    ([1], [(1, 'activations')])
    >>> state.confusions[1].matrix().tolist()
    [[2, 0], [0, 2]]
    """

    def __init__(self, log_dir: PathLike, info: Mapping):
        import threading

        self.log_dir = Path(log_dir)
        self.info = dict(info)
        self.graphs: Dict[int, Dict[str, FlowGraph]] = {}
        self.views: Dict[int, Optional[EpochViews]] = {}
        self.metrics: Dict[int, object] = {}  # each epoch's layer metrics (a DataFrame)
        self.errors: Dict[int | str, str] = {}  # as Run.errors(): epochs and "setup"
        self.skipped: Dict[int, str] = {}  # as Run.skipped: the epochs of the run that could not be read
        self._cache: Dict[tuple, dict] = {}  # the page's parts by (epoch, analysis)
        self._lock = threading.RLock()

    @classmethod
    def from_run(cls, run, info: Mapping) -> RunPageState:
        """The state of a run directory being appended to (``run``: a :class:`flowcallback.Run`)."""
        state = cls(run.path, info)
        state.errors = run.errors()
        state.graphs = run_graphs(run)  # the readable epochs; the others are noted (Run.skipped)
        state.skipped = dict(run.skipped)
        for e in state.graphs:
            try:
                state.views[e] = run.views(e)
            except Exception:  # unreadable views leave the epoch's views off the page
                state.views[e] = None
        table = run.layer_metrics()
        state.metrics = {e: table[table["epoch"] == e] for e in state.graphs}
        return state

    @property
    def drawn(self) -> List[Tuple[int, str]]:
        """The ``(epoch, analysis)`` parts of the page drawn and kept: each is drawn once, and again
        only when its epoch is written again."""
        with self._lock:
            return sorted(self._cache)

    @property
    def confusions(self) -> Dict[int, EpochConfusion]:
        """``{epoch: EpochConfusion}`` of the drawn epochs: each counted once, when the page first
        drew its epoch, and read by every later rewrite (again only when its epoch is written again)."""
        with self._lock:
            return {e: part["confusion"] for (e, _), part in sorted(self._cache.items()) if "confusion" in part}

    def add_epoch(self, epoch: int, graphs: Mapping[str, FlowGraph], views: Optional[EpochViews] = None,
                  metrics=None) -> None:
        """An epoch written (again): its graphs, views and layer metrics; what the page drew of it goes."""
        with self._lock:
            self.graphs[int(epoch)] = dict(graphs)
            self.skipped.pop(int(epoch), None)  # written anew
            self.views[int(epoch)] = views
            if metrics is not None:
                self.metrics[int(epoch)] = metrics
            for key in [key for key in self._cache if key[0] == int(epoch)]:
                del self._cache[key]

    def epoch_metrics(self) -> Dict[int, Tuple[dict, object]]:
        """``{epoch: (scalars, layer metrics)}`` of the epochs written: the activation graph's scalar
        metrics (accuracy, loss) and the layer metrics table (as
        :func:`flowcallback.core.sets.sets_overview` takes them)."""
        with self._lock:
            return {e: (dict(graphs["activations"].metrics), self.metrics[e]) for e, graphs in self.graphs.items()
                    if "activations" in graphs and e in self.metrics}

    def add_error(self, key, text: str) -> None:
        """An error recorded for an epoch (or the set-up): appended to what the page shows of it."""
        with self._lock:
            self.errors[key] = self.errors[key] + "\n" + text if key in self.errors else text

    def write(self) -> Path:
        """Rewrite ``index.html``; returns its path."""
        import pandas as pd

        with self._lock:
            metrics = pd.concat(list(self.metrics.values()), ignore_index=True) if self.metrics else None
            return write_run_page(self.log_dir, self.info, self.graphs, self.errors, cache=self._cache,
                                  views=self.views, metrics=metrics, skipped=self.skipped)


def run_graphs(run) -> Dict[int, Dict[str, FlowGraph]]:
    """``{epoch: {analysis: FlowGraph}}`` of every complete epoch of a loaded run."""
    return {e: {a: run.epoch(e, a) for a in run.analyses(e)} for e in run.epochs}


def run_views(run) -> Dict[int, EpochViews]:
    """``{epoch: EpochViews}`` of the complete epochs of a loaded run that stored views (none for
    a run written before they were stored)."""
    out = {}
    for e in run.epochs:
        v = run.views(e)
        if v is not None:
            out[e] = v
    return out


def write_run_page_for(run, cache: Optional[dict] = None) -> Path:
    """Write the run page of a run directory opened with :func:`flowcallback.load_run`.

    Reads its graphs, views and errors once, then :func:`write_run_page`; the epochs that could
    not be read (:attr:`flowcallback.Run.skipped`) are noted on it. Returns the page's path.
    """
    return write_run_page(run.path, run.info, run_graphs(run), run.errors(), cache=cache, views=run_views(run),
                          metrics=run.layer_metrics(), skipped=run.skipped)


def run_page_html_for(run, cache: Optional[dict] = None) -> str:
    """:func:`run_page_html` of a run directory opened with :func:`flowcallback.load_run`."""
    return run_page_html(run.info, run_graphs(run), run.errors(), cache=cache, views=run_views(run),
                         metrics=run.layer_metrics(), skipped=run.skipped)
