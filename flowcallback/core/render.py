"""Render stage: one interactive Plotly Sankey page per snapshot.

Plotly is used because its Sankey trace gives hover, drag and zoom in a self-contained page with
no server. Layout follows the paper: one column per layer at a fixed x (model order), then the
Prediction and Ground-truth columns; clusters stacked in the barycentric order computed by
:mod:`flowcallback.core.flows`, sized by their sample count; flows coloured by true class,
semi-transparent. One page holds every analysis of the epoch (activations, LRP) and a button
switches between them.

Every user-supplied string (class names, layer names) is HTML-escaped before it reaches Plotly,
so a name like ``<img src=x onerror=...>`` is shown as text.
"""
from __future__ import annotations

import colorsys
import html
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from flowcallback.core._notes import Note, info
from flowcallback.core.flows import ANALYSIS_LABELS, MAX_DRAWN_CLUSTERS, ClusterGroup, FlowGraph, group_small_clusters
from flowcallback.core.history import confusion_over_training

__all__ = ["class_colors", "sankey_trace", "figure", "write_epoch_page", "ANALYSIS_LABELS", "note_is_problem",
           "epoch_notes", "wrap_note"]

# Tableau 10 / 20: distinguishable, colour-blind-aware first choices.
_TAB10 = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
_TAB20 = [
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
]


def class_colors(n_classes: int) -> List[str]:
    """One hex colour per class.

    Up to 10 classes: Tableau 10; up to 20: Tableau 20; beyond, hues spaced by the golden angle
    with alternating lightness, so that neighbouring class indices stay far apart.

    Examples
    --------
    >>> len(set(class_colors(100)))
    100
    """
    if n_classes <= 10:
        return _TAB10[:n_classes]
    if n_classes <= 20:
        return _TAB20[:n_classes]
    out = []
    for i in range(n_classes):
        h = (i * 0.618033988749895) % 1.0
        lum = (0.42, 0.58, 0.5)[i % 3]
        sat = (0.75, 0.6, 0.9)[(i // 3) % 3]
        r, g, b = colorsys.hls_to_rgb(h, lum, sat)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def _rgb(hex_color: str):
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = _rgb(hex_color)
    return f"rgba({r},{g},{b},{alpha})"


def _blend_grey(hex_color: str, weight: float) -> str:
    r, g, b = _rgb(hex_color)
    grey = 190
    mix = lambda c: round(weight * c + (1 - weight) * grey)  # noqa: E731
    return f"rgb({mix(r)},{mix(g)},{mix(b)})"


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _flow_samples(graph: FlowGraph, j: int, max_samples: int) -> Dict[tuple, List[int]]:
    """First sample indices of each flow between column j and j+1."""
    a = graph.assignments
    keys = np.stack([a[:, j], a[:, j + 1], graph.labels], axis=1)
    order = np.lexsort((np.arange(len(keys)), keys[:, 2], keys[:, 1], keys[:, 0]))
    sk = keys[order]
    starts = np.flatnonzero(np.r_[True, np.any(sk[1:] != sk[:-1], axis=1)])
    out = {}
    for s, e in zip(starts, np.r_[starts[1:], len(sk)]):
        out[tuple(int(v) for v in sk[s])] = order[s : min(e, s + max_samples)].tolist()
    return out


def _node_indices(graph: FlowGraph) -> Dict[tuple, int]:
    """``{(column index, cluster id): node index}`` of :func:`sankey_trace`: columns in order, each in drawn order."""
    out: Dict[tuple, int] = {}
    for j, col in enumerate(graph.columns):
        for cid in col.order:
            out[(j, int(cid))] = len(out)
    return out


#: The outline of every node, and its width. One for all: plotly.js draws the Sankey's node outlines
#: from ``node.line`` as a whole (a colour per node is read as one invalid colour, black, with a
#: console warning per node; a width per node places the labels at NaN).
NODE_LINE = "rgba(40,40,40,0.6)"
NODE_LINE_WIDTH = 0.8
#: The fill of a node that draws a column's small clusters as one: dark, unlike any class colour
#: (its flows keep their classes' colours).
GROUP_COLOR = "rgb(45,45,45)"

#: Above this many classes, the views colour the largest classes and gather the rest as "other".
AUTO_TOP_CLASSES = 20
OTHER_COLOR = "#9a9a9a"


def top_classes(graph: FlowGraph, top: int | str | None = "auto") -> Optional[List[int]]:
    """The classes a view colours one by one, or None for all of them.

    Parameters
    ----------
    top : int, "auto" or None
        An int keeps that many classes, the largest in the held-out set (ties: lower class id
        first); ``"auto"`` keeps :data:`AUTO_TOP_CLASSES` when there are more classes than that;
        None keeps all. The others are drawn together as "other", in grey.

    Returns
    -------
    list of int, sorted, or None
    """
    n = len(graph.class_names)
    if top == "auto":
        top = AUTO_TOP_CLASSES if n > AUTO_TOP_CLASSES else None
    if top is None:
        return None
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top_classes: expected a positive int, 'auto' or None, got {top!r}")
    if top >= n:
        return None
    support = np.bincount(np.asarray(graph.labels, dtype=np.int64), minlength=n)
    return sorted(np.argsort(-support, kind="stable")[: int(top)].tolist())


_top_classes = top_classes  # figure() has a parameter of that name


#: Plotly's padding between the nodes of a column, in pixels. Plotly draws every node
#: ``size * ky`` pixels tall, one scale ``ky`` for all columns, set by the column of most nodes
#: (d3-sankey's ``(height - (nodes - 1) * pad) / samples``); :func:`stack` places the nodes for it.
NODE_PAD = 2.0
#: The plot area's height in pixels that a figure without its own height is drawn at (an epoch page
#: of few clusters: at least :data:`MIN_HEIGHT` tall, less the margins).
DEFAULT_PLOT_HEIGHT = 450.0


def node_scale(max_nodes: int, plot_height: float, pad: float = NODE_PAD) -> float:
    """The share of a column's height that Plotly gives its nodes (the rest is padding), the same
    for every column: that of the column of ``max_nodes`` nodes, whose pads of ``pad`` pixels
    take ``(max_nodes - 1) * pad`` (at most the whole height, as d3-sankey caps the padding).

    >>> node_scale(1, 500.0), node_scale(26, 500.0), node_scale(1000, 500.0)
    (1.0, 0.9, 0.0)
    """
    if max_nodes <= 1 or plot_height <= 0:
        return 1.0
    pad = min(float(pad), plot_height / (max_nodes - 1))
    return max(0.0, 1.0 - (max_nodes - 1) * pad / plot_height)


def stack(sizes: Sequence[int], n: int, scale: float) -> np.ndarray:
    """The centres of a column's nodes, top to bottom, as shares of the plot height (0 at the top):
    each ``scale * size / n`` tall, as Plotly draws it, the free height spread evenly between them
    (a single node in the middle), so that the column fills the plot and no two nodes overlap.

    Examples
    --------
    >>> stack([2, 2], 4, 0.9).round(3).tolist()    # two nodes of 0.45, a gap of 0.1 between
    [0.225, 0.775]
    >>> stack([4], 4, 0.9).round(3).tolist()
    [0.5]
    """
    heights = scale * np.asarray(sizes, dtype=np.float64) / max(n, 1)
    c = len(heights)
    free = max(0.0, 1.0 - float(heights.sum()))
    if c == 1:
        return np.array([0.5])
    gap = free / (c - 1)
    starts = np.r_[0.0, np.cumsum(heights[:-1] + gap)]
    return np.maximum(starts + heights / 2, 1e-6)  # Plotly ignores a node placed at y = 0


def sankey_trace(graph: FlowGraph, *, colors: Optional[Sequence[str]] = None, name: Optional[str] = None,
                 max_samples: int = 5, shown: Optional[Sequence[int]] = None,
                 max_clusters: Optional[int] = MAX_DRAWN_CLUSTERS, plot_height: float = DEFAULT_PLOT_HEIGHT,
                 group_labels: bool = True):
    """A ``plotly.graph_objects.Sankey`` trace of one :class:`FlowGraph`.

    Node ``customdata`` holds (column, cluster id, size, composition, the class its colour comes
    from, purity, 1 for a Prediction or Ground truth node else 0, what the node is: "cluster 3" or
    "48 clusters of ≤ 3 samples each, drawn as one"); link ``customdata`` holds (class name, count, first
    sample indices, class id or -1 for a merged "other" flow). The run page's class filter
    recolours the trace from them. Nodes are placed at fixed x (column) and y (order). ``shown``
    (see :func:`top_classes`) colours only those classes; the flows of the others are merged into
    one grey "other" flow per pair of clusters. A layer column of more than ``max_clusters``
    clusters draws its smallest as one node (:func:`~flowcallback.core.flows.group_small_clusters`;
    None draws every cluster), filled with :data:`GROUP_COLOR` and, with ``group_labels``,
    labelled ("268 clusters"). ``plot_height`` (pixels) is the height the trace is drawn at, for which
    :func:`stack` places the nodes.
    """
    drawn, groups = group_small_clusters(graph, max_clusters)
    return _sankey(drawn, groups, colors=colors, name=name, max_samples=max_samples, shown=shown,
                   plot_height=plot_height, group_labels=group_labels)


def _sankey(graph: FlowGraph, groups: Sequence[ClusterGroup], *, colors, name, max_samples, shown, plot_height,
            group_labels):
    """:func:`sankey_trace` of a graph as drawn, its small clusters already grouped (``groups``)."""
    import plotly.graph_objects as go

    grouped = {(g.column, g.cluster): g for g in groups}
    names = [_esc(c) for c in graph.class_names]
    colors = list(colors or class_colors(len(names)))
    m = len(graph.columns)
    n = graph.n_samples
    node_index = _node_indices(graph)
    scale = node_scale(max(len(col.order) for col in graph.columns), plot_height)
    node_x, node_y, node_colors, node_labels, node_hover = [], [], [], [], []
    xs = column_x(graph)
    for j, col in enumerate(graph.columns):
        counts = graph.class_counts(j)
        sizes = counts.sum(axis=1)
        x = xs[j]
        for pos, (cid, y) in enumerate(zip(col.order, stack(sizes, n, scale))):
            size = int(sizes[pos])
            node_x.append(x)
            node_y.append(float(y))
            group = grouped.get((j, int(cid)))
            top = np.argsort(-counts[pos], kind="stable")
            dom = int(top[0])
            purity = counts[pos, dom] / max(size, 1)
            if col.kind == "layer":
                # a grouped node says what it is on hover and in its column's label; a short label
                # too where the columns are far enough apart
                node_labels.append(f"{group.count} clusters" if group is not None and group_labels else "")
                node_colors.append(GROUP_COLOR if group is not None else
                                   _blend_grey(colors[dom] if shown is None or dom in shown else OTHER_COLOR, purity))
            else:
                listed = shown is None or cid in shown
                label = _short_label(graph.class_names[cid], CLASS_LABEL_CHARS) if cid < len(names) else str(cid)
                node_labels.append(_esc(label) if listed else "")
                node_colors.append(colors[cid] if cid < len(colors) and listed else OTHER_COLOR)
            comp = "<br>".join(
                f"{names[k]}: {int(counts[pos, k])} ({counts[pos, k] / max(size, 1):.0%})"
                for k in top[:8]
                if counts[pos, k] > 0
            )
            more = int(np.count_nonzero(counts[pos])) - 8
            if more > 0:
                comp += f"<br>… {more} more classes"
            is_class = col.kind != "layer"
            node_hover.append([_esc(col.name), int(cid), size, comp, int(cid) if is_class else dom,
                               1.0 if is_class else round(float(purity), 4), int(is_class),
                               group.text if group is not None else names[cid] if is_class and cid < len(names)
                               else f"cluster {int(cid)}", int(group is not None)])
    link_sources, link_targets, link_values, link_colors, link_hover = [], [], [], [], []
    flows = graph.flows
    keep = None if shown is None else set(int(c) for c in shown)
    n_other = len(names) - len(keep) if keep is not None else 0
    flow_fields = ["source_cluster", "target_cluster", "true_class", "count"]
    for j in range(m - 1):
        samples = _flow_samples(graph, j, max_samples)
        part = flows[flows["source_column"] == j]
        other: Dict[tuple, list] = {}  # (source, target) -> [count, first samples]
        for sc, tc, cls, cnt in part[flow_fields].itertuples(index=False):
            idx = samples.get((int(sc), int(tc), int(cls)), [])
            if keep is not None and int(cls) not in keep:
                entry = other.setdefault((int(sc), int(tc)), [0, []])
                entry[0] += int(cnt)
                entry[1] = sorted(entry[1] + idx)[:max_samples]
                continue
            link_sources.append(node_index[(j, int(sc))])
            link_targets.append(node_index[(j + 1, int(tc))])
            link_values.append(int(cnt))
            link_colors.append(_rgba(colors[int(cls)] if int(cls) < len(colors) else "#999999", 0.45))
            listed = ", ".join(str(i) for i in idx) + (", …" if cnt > len(idx) else "")
            link_hover.append([names[int(cls)], int(cnt), listed, int(cls)])
        for (sc, tc), (cnt, idx) in other.items():
            link_sources.append(node_index[(j, sc)])
            link_targets.append(node_index[(j + 1, tc)])
            link_values.append(cnt)
            link_colors.append(_rgba(OTHER_COLOR, 0.35))
            listed = ", ".join(str(i) for i in idx) + (", …" if cnt > len(idx) else "")
            link_hover.append([f"other ({n_other} classes)", cnt, listed, -1])
    return go.Sankey(
        name=name or ANALYSIS_LABELS.get(graph.analysis, graph.analysis),
        arrangement="fixed",
        valueformat="d",
        node=dict(
            x=node_x,
            y=node_y,
            pad=NODE_PAD,
            thickness=14,
            label=node_labels,
            color=node_colors,
            line=dict(color=NODE_LINE, width=NODE_LINE_WIDTH),
            customdata=node_hover,
            hovertemplate="<b>%{customdata[0]}</b> · %{customdata[7]}<br>%{customdata[2]} samples"
            "<br>%{customdata[3]}<extra></extra>",
        ),
        link=dict(
            source=link_sources,
            target=link_targets,
            value=link_values,
            color=link_colors,
            customdata=link_hover,
            hovertemplate="class <b>%{customdata[0]}</b>: %{customdata[1]} samples<br>"
            "samples %{customdata[2]}<extra></extra>",
        ),
    )


#: Above this many columns (a deep model's 24 block outputs, say) each column's label is one
#: slanted line of at most :data:`LABEL_CHARS` characters, and the rest shows on hover.
COMPACT_LABELS_ABOVE = 12
LABEL_CHARS = 20
#: Height in pixels of a diagram with compact labels: tall enough for the slanted labels to sit
#: between the diagram and the analysis buttons.
COMPACT_HEIGHT = 1000


#: Characters of a class name on a Prediction or Ground-truth node (the whole name on hover).
CLASS_LABEL_CHARS = 16
#: About the width of one character of a node's label (12-pixel font), in pixels, in Chromium.
NODE_LABEL_CHAR_PIXELS = 6.6
#: The plot's width (pixels) at which the class names of the Prediction and Ground-truth columns
#: must fit side by side: that of a 1,000-pixel browser window or a notebook's output cell.
CLASS_GAP_FIT_WIDTH = 800


def column_x(graph) -> List[float]:
    """Each column's horizontal place in the plot (0 to 1), the same for nodes and labels.

    The columns are evenly spaced, except that the gap between the Prediction and Ground-truth
    columns is made wide enough for both columns' class names, which face each other there (Plotly
    writes a node's label on its right, and the last column's on its left), at a plot
    :data:`CLASS_GAP_FIT_WIDTH` pixels wide.

    >>> from types import SimpleNamespace as C
    >>> def graph(n_layers, names):
    ...     cols = [C(kind="layer")] * n_layers + [C(kind="prediction"), C(kind="ground_truth")]
    ...     return C(columns=cols, class_names=names)
    >>> [round(x, 3) for x in column_x(graph(2, ["0", "1"]))]
    [0.005, 0.335, 0.665, 0.995]
    >>> xs = column_x(graph(10, ["T-shirt/top", "Ankle boot"]))
    >>> round((xs[-1] - xs[-2]) * CLASS_GAP_FIT_WIDTH), round((xs[1] - xs[0]) * CLASS_GAP_FIT_WIDTH)
    (183, 61)
    """
    m = len(graph.columns)
    if m < 2:
        return [0.5] * m
    even = [0.005 + 0.99 * j / (m - 1) for j in range(m)]
    kinds = [getattr(c, "kind", "layer") for c in graph.columns]
    if m < 3 or kinds[-1] == "layer" or kinds[-2] == "layer":
        return even
    longest = max((min(len(n), CLASS_LABEL_CHARS) for n in getattr(graph, "class_names", ())), default=1)
    # both labels, the node (14 pixels) and 6 pixels on each side of each label
    need = min(0.4, (2 * longest * NODE_LABEL_CHAR_PIXELS + 14 + 24) / CLASS_GAP_FIT_WIDTH)
    if need <= 0.99 / (m - 1):
        return even
    step = (0.99 - need) / (m - 2)
    return [0.005 + step * j for j in range(m - 1)] + [0.995]


def _short_label(name: str, limit: int = LABEL_CHARS) -> str:
    """``name`` cut to ``limit`` characters in the middle, where layer names differ least.

    >>> _short_label("conv4_block22_concat_and_more", 20)
    'conv4_bloc…_and_more'
    """
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2 + (limit - 1) % 2
    return name[:head] + "…" + name[len(name) - (limit - 1 - head):]


def _shared_prefix(names: Sequence[str], types: Sequence[str], least: int = 3) -> str:
    """The prefix ending in ``_``, ``/`` or ``.`` that most of ``names`` start with (at least
    ``least`` of them, and more than half), the longest of those; "" if none.

    Only a prefix that layers of different ``types`` share is a model's own name: Keras's
    automatic names share their class's (``batch_normalization_1``, ``batch_normalization_2``),
    which is the label itself; and what follows the prefix must hold a letter.

    >>> _shared_prefix(["resnet_a_conv", "resnet_a_bn", "resnet_a_relu", "resnet_b_conv", "dense"],
    ...                ["Conv2D", "BatchNormalization", "ReLU", "Conv2D", "Dense"])
    'resnet_'
    >>> _shared_prefix(["batch_normalization_1", "batch_normalization_2", "layer_normalization_1"],
    ...                ["BatchNormalization"] * 2 + ["LayerNormalization"])
    ''
    >>> _shared_prefix(["global_average_pooling1d", "global_max_pooling1d", "global_max_pooling1d_1"],
    ...                ["GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalMaxPooling1D"])
    ''
    """
    if len(names) < least:
        return ""
    best, most = "", 0
    for name in names:
        for i, ch in enumerate(name[:-1]):
            if ch not in "_/.":
                continue
            p = name[:i + 1]
            sharing = [(n, t) for n, t in zip(names, types) if n.startswith(p)]
            if len(sharing) < least or 2 * len(sharing) <= len(names) or (len(sharing), len(p)) <= (most, len(best)):
                continue
            if len({t for _, t in sharing}) < 2 or not all(any(c.isalpha() for c in n[len(p):]) for n, _ in sharing):
                continue
            if any(_snake(t).startswith(p) or p.startswith(_snake(t)) for _, t in sharing if t):
                continue  # Keras's automatic names (global_average_pooling1d, global_max_pooling1d)
            best, most = p, len(sharing)
    return best


def _snake(class_name: str) -> str:
    """A layer class's name as Keras writes it in automatic layer names.

    >>> _snake("GlobalAveragePooling1D"), _snake("Conv2D"), _snake("ReLU")
    ('global_average_pooling1d', 'conv2d', 're_lu')
    """
    import re

    # keras.src.utils.naming.to_snake_case's two substitutions
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)).lower()


def _short_labels(names: Sequence[str], limit: int = LABEL_CHARS,
                  types: Optional[Sequence[str]] = None) -> List[str]:
    """Each name cut to ``limit`` characters (:func:`_short_label`), where two cut names would read
    the same, the differing part kept: MobileNetV3's block names differ in their middle.

    >>> _short_labels(["expanded_conv_3_project_bn", "expanded_conv_4_project_bn", "dense"])
    ['expanded_conv_3_pro…', 'expanded_conv_4_pro…', 'dense']
    >>> _short_labels(["conv_stage_three_block_10_depthwise_bn", "conv_stage_three_block_11_depthwise_bn"])
    ['…e_block_10_depthwi…', '…e_block_11_depthwi…']

    A prefix that most long names share (a keras.applications model's own name, as ConvNeXt's
    layers have it) is left out of them: it tells no column from another (the full name is on hover).

    >>> _short_labels(["convnext_tiny_stem_layernorm", "add", "convnext_tiny_downsampling_conv_0",
    ...                "convnext_tiny_head_dense", "Prediction"],
    ...               types=["LayerNormalization", "Add", "Conv2D", "Dense", ""])
    ['stem_layernorm', 'add', 'downsampling_conv_0', 'head_dense', 'Prediction']
    """
    types = list(types) if types is not None else [""] * len(names)
    long = [(n, t) for n, t in zip(names, types) if len(n) > limit]
    prefix = _shared_prefix([n for n, _ in long], [t for _, t in long])
    stripped = [n[len(prefix):] if prefix and n.startswith(prefix) else n for n in names]
    if len(set(stripped)) == len(set(names)):  # never two columns under one name (head_dense, ..._head_dense)
        names = stripped
    shorts = [_short_label(n, limit) for n in names]
    if len(set(shorts)) == len(shorts):
        return shorts
    out = []
    for name, short in zip(names, shorts):
        if shorts.count(short) == 1:
            out.append(short)
            continue
        others = [n for n, s in zip(names, shorts) if s == short and n != name]
        if not others:  # the same name twice: nothing tells them apart
            out.append(short)
            continue
        # where the names first differ: the name's start where that is near it, else around it
        differ = min(next((i for i, (a, b) in enumerate(zip(name, o)) if a != b), len(name)) for o in others)
        start = 0 if differ < limit - 4 else max(0, min(differ - (limit - 1) // 2, len(name) - (limit - 1)))
        cut = name[start:start + limit - 1 - (start > 0)]
        out.append(("…" if start > 0 else "") + cut + ("…" if start + len(cut) < len(name) else ""))
    return out


#: The note under a diagram with compact labels where a column has a note: what its " *" means.
COMPACT_NOTE = "A column name marked * has a note: hover the name to read it."


#: The plot's width (pixels) at which level labels must fit side by side: that of a 1,200-pixel
#: browser window (the margins take about 160).
LABEL_FIT_WIDTH = 1040
#: About the width of one character of a column label (11-pixel font), in pixels, as measured in
#: Chromium: the name, in bold, and the lines under it.
LABEL_CHAR_PIXELS, LABEL_BOLD_CHAR_PIXELS = 6.8, 7.1


def _labels_fit(graph: FlowGraph) -> bool:
    """Whether the level labels of ``graph``'s columns fit side by side at :data:`LABEL_FIT_WIDTH`
    (the first label extends to the right of its column, the last to the left, the others both ways).

    >>> from types import SimpleNamespace as C
    >>> def graph(*names):
    ...     return C(columns=[C(name=n, layer_type="Dense", order=range(10)) for n in names])
    >>> _labels_fit(graph("conv1", "pool1", "conv2", "pool2", "dense120", "dense84", "dense10", "Prediction",
    ...                   "Ground truth"))
    True
    >>> _labels_fit(graph("token_and_position_embedding", "transformer_block", "global_average_pooling1d",
    ...                   "dropout_2", "dense", "dropout_3", "dense_1", "Prediction", "Ground truth"))
    False
    """
    m = len(graph.columns)
    if m < 2:
        return True
    xs = column_x(graph)
    widths = [max((len(c.name) + 2 * bool(getattr(c, "note", ""))) * LABEL_BOLD_CHAR_PIXELS,
                  max(len(c.layer_type or ""), len(f"{len(c.order)} clusters")) * LABEL_CHAR_PIXELS)
              for c in graph.columns]
    for j in range(m - 1):
        right = widths[j] if j == 0 else widths[j] / 2
        left = widths[j + 1] if j + 1 == m - 1 else widths[j + 1] / 2
        if right + left + 4 > (xs[j + 1] - xs[j]) * LABEL_FIT_WIDTH:  # 4 pixels between two labels at least
            return False
    return True


#: The least distance (pixels) between two slanted column labels (11-pixel font at 45 degrees).
SLANTED_LABEL_SPACING = 16
#: Room (pixels) the class legend takes on the diagram's right.
LEGEND_WIDTH = 170


def _wide_width(columns: int, margin: Mapping[str, int]) -> Optional[int]:
    """The figure's width where its slanted column labels would be closer than
    :data:`SLANTED_LABEL_SPACING` at a 1,200-pixel window (``layers="all"`` on MobileNetV2: 151
    columns), so that the page scrolls sideways instead; None (the window's width) otherwise.

    >>> _wide_width(26, dict(l=30, r=110)), _wide_width(151, dict(l=30, r=110))
    (None, 2734)
    """
    plot = (columns - 1) * SLANTED_LABEL_SPACING / 0.99
    if plot <= LABEL_FIT_WIDTH:
        return None
    return int(round(plot + margin["l"] + margin["r"] + LEGEND_WIDTH))


def _compact(graphs) -> bool:
    """Slanted one-line labels: above :data:`COMPACT_LABELS_ABOVE` columns, or where level labels
    would run into each other (long layer names over few columns)."""
    graphs = list(graphs)
    return max(len(g.columns) for g in graphs) > COMPACT_LABELS_ABOVE or not all(_labels_fit(g) for g in graphs)


def _column_annotations(graph: FlowGraph, compact: bool = False, groups: Sequence[ClusterGroup] = ()) -> List[dict]:
    """The labels over the columns of ``graph`` (as stored): name, layer type, clusters (and how
    many ``groups`` draws as one node) and note; with ``compact``, the (shortened) name on one
    slanted line and everything on hover, so that 24 columns do not overlap."""
    m = len(graph.columns)
    groups = {g.column: g for g in groups}
    shorts = _short_labels([col.name for col in graph.columns], types=[col.layer_type or "" for col in graph.columns])
    anns = []
    xs = column_x(graph)
    for j, col in enumerate(graph.columns):
        x = xs[j]
        shown = f"<b>{_esc(col.name)}</b>" + (f"<br>{_esc(col.layer_type)}" if col.layer_type else "")
        shown += f"<br>{len(col.order)} cluster{'' if len(col.order) == 1 else 's'}"
        if j in groups:
            each = "1 sample" if groups[j].largest == 1 else f"{groups[j].largest} samples"
            shown += f"<br>({len(groups[j].members)} of ≤ {each} drawn as one)"
        text = shown + (f"<br><i>{_esc(col.note)}</i>" if col.note else "")
        if compact:
            short = _esc(shorts[j]) + (" *" if col.note else "")
            anns.append(dict(x=x, y=1.0, xref="paper", yref="paper", yanchor="bottom", xanchor="left",
                             textangle=-45, text=short, hovertext=text, showarrow=False, font=dict(size=11),
                             name=f"column {j}"))
            continue
        # the first and last labels extend inwards: centred, a long one would be cut at the page's edge
        anchor = "left" if j == 0 and m > 1 else "right" if j == m - 1 and m > 1 else "center"
        # a note (a sentence) would run into the next labels: the name is marked, the note on hover
        label = shown.replace("</b>", " *</b>", 1) if col.note else shown
        anns.append(
            dict(x=x, y=1.0, xref="paper", yref="paper", yanchor="bottom", xanchor=anchor, align=anchor,
                 text=label, showarrow=False, font=dict(size=11), **({"hovertext": text} if col.note else {}))
        )
    return anns


def _title(graph: FlowGraph, label: str) -> str:
    met = graph.metrics
    parts = [f"Epoch {graph.epoch}"]
    if met.get("accuracy") is not None:
        parts.append(f"accuracy {float(met['accuracy']):.3f}")
    if met.get("loss") is not None:
        parts.append(f"loss {float(met['loss']):.4f}")
    return " · ".join(parts) + f" · {label}"


#: Notes under a diagram: what failed or is missing in red, information (how LRP is computed, the
#: branch layout, a loss not shown) in a neutral grey.
PROBLEM_NOTE_COLOR = "#a33"
INFO_NOTE_COLOR = "#555"


def note_is_problem(note) -> bool:
    """Whether a note reports something that failed or is missing (drawn in red): its kind, said
    where it was made (:class:`flowcallback.core._notes.Note`; a plain string is information).

    Examples
    --------
    >>> from flowcallback.core._notes import info, problem
    >>> note_is_problem(problem("LRP failed for this epoch: worker died"))
    True
    >>> note_is_problem(info("LRP relevance (lrp.epsilon) is computed by native for each sample's predicted class"))
    False
    """
    return getattr(note, "kind", "info") == "problem"


def epoch_notes(graphs: Mapping[str, FlowGraph]) -> List[Note]:
    """The notes of an epoch's graphs, each once, in order: what its figure shows under the diagram.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> y = np.array([0, 1])
    >>> a = build_flow_graph([("d", "Dense", y)], y, y, graph_notes=["both"])
    >>> b = build_flow_graph([("d", "Dense", y)], y, y, analysis="lrp", graph_notes=["both", "LRP only"])
    >>> epoch_notes({"activations": a, "lrp": b})
    [info('both'), info('LRP only')]
    """
    return list(dict.fromkeys(n for g in graphs.values() for n in g.notes))


#: Height in pixels of a diagram of few clusters (a page makes it fill the window when taller).
MIN_HEIGHT = 650
#: The most characters of one line of the notes under a diagram (Plotly does not wrap text): about
#: 800 pixels at their 11-pixel font.
NOTE_LINE_CHARS = 140
#: The height of one line of notes, in pixels, for the bottom margin that holds them.
NOTE_LINE_HEIGHT = 14


def wrap_note(note: str, width: int = NOTE_LINE_CHARS) -> List[str]:
    """A note's lines of at most ``width`` characters, broken between words (inside a word only
    where one word is longer than a line).

    Examples
    --------
    >>> wrap_note("LRP failed for this epoch: the worker died", width=20)
    ['LRP failed for this', 'epoch: the worker', 'died']
    >>> wrap_note("short")
    ['short']
    """
    import textwrap

    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width: expected an integer >= 1, got {width!r}")
    return textwrap.wrap(str(note), width, break_long_words=True, break_on_hyphens=False) or [""]


def _notes_annotation_text(notes: Sequence[str]) -> tuple:
    """``(text, lines)``: the notes as Plotly's HTML, escaped and wrapped (each line in its own colour span)."""
    lines = []
    for note in notes:
        color = PROBLEM_NOTE_COLOR if note_is_problem(note) else None
        for line in wrap_note(note):
            lines.append(f'<span style="color:{color}">{_esc(line)}</span>' if color else _esc(line))
    return "<br>".join(lines), len(lines)


def figure(graphs: Mapping[str, FlowGraph] | FlowGraph, *, title_prefix: str = "",
           top_classes: int | str | None = "auto", max_clusters: Optional[int] = MAX_DRAWN_CLUSTERS):
    """A Plotly figure with one Sankey per analysis and buttons to switch between them.

    Parameters
    ----------
    graphs : mapping of analysis name to FlowGraph, or one FlowGraph
        All of one epoch, e.g. ``{"activations": g1, "lrp": g2}``. The notes of the graph shown
        are under the diagram, one below the other, problems in red, each broken into lines of at
        most :data:`NOTE_LINE_CHARS` characters (:func:`wrap_note`); the buttons switch them with
        the diagram.
    title_prefix : str
        Shown before the title (the run's name, say).
    top_classes : int, "auto" or None, default="auto"
        Colour only the largest classes and draw the others as one grey "other" (see
        :func:`top_classes`); "auto" does so above :data:`AUTO_TOP_CLASSES` classes.
    max_clusters : int >= 2 or None, default=MAX_DRAWN_CLUSTERS
        A layer column of more clusters draws its smallest as one node
        (:func:`~flowcallback.core.flows.group_small_clusters`); its label says how many. None
        draws every cluster.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    if isinstance(graphs, FlowGraph):
        graphs = {graphs.analysis: graphs}
    if not graphs:
        raise ValueError("graphs: expected at least one FlowGraph")
    analyses = list(graphs)
    first = graphs[analyses[0]]
    compact = _compact(graphs.values())
    # each analysis shows its own graph's notes (an LRP note says nothing of the activations); the
    # graphs own their notes, so a page rebuilt from the files shows the same
    notes = {a: epoch_notes({a: g}) + ([info(COMPACT_NOTE)] if any(c.note for c in g.columns) else [])
             for a, g in graphs.items()}
    colors = class_colors(len(first.class_names))
    shown = _top_classes(first, top_classes)
    note_texts = {a: _notes_annotation_text(n) for a, n in notes.items()}
    note_lines = max(lines for _, lines in note_texts.values())  # one margin: the diagram keeps its place
    drawn = {a: group_small_clusters(g, max_clusters) for a, g in graphs.items()}  # (graph as drawn, groups)
    drawn_clusters = max(len(c.order) for g, _ in drawn.values() for c in g.columns)
    height = int(min(2400, max(COMPACT_HEIGHT if compact else MIN_HEIGHT, 14 * drawn_clusters)))
    margin = dict(l=30, r=110 if compact else 30, t=200 if compact else 140, b=60 + NOTE_LINE_HEIGHT * note_lines)
    annotations = {a: _column_annotations(graphs[a], compact, drawn[a][1]) for a in analyses}
    width = _wide_width(max(len(g.columns) for g in graphs.values()), margin) if compact else None
    fig = go.Figure()
    for i, a in enumerate(analyses):
        tr = _sankey(*drawn[a], colors=colors, name=None, max_samples=5, shown=shown,
                     plot_height=height - margin["t"] - margin["b"], group_labels=not compact)
        tr.visible = i == 0
        fig.add_trace(tr)
    legend = [(k, colors[k]) for k in (range(len(first.class_names)) if shown is None else shown)]
    for k, color in legend:
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=12, color=color, symbol="square"),
                       name=_esc(first.class_names[k]), showlegend=True, hoverinfo="skip")
        )
    if shown is not None:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers",
                                 marker=dict(size=12, color=OTHER_COLOR, symbol="square"),
                                 name=f"other ({len(first.class_names) - len(shown)} classes)", showlegend=True,
                                 hoverinfo="skip"))
    n_legend = len(legend) + (shown is not None)
    # left-aligned lines under the diagram's left edge (Plotly centres the lines of an annotation by default)
    note_ann = {a: [dict(x=0, y=-0.04, xref="paper", yref="paper", xanchor="left", yanchor="top", showarrow=False,
                         align="left", text=note_texts[a][0], font=dict(size=11, color=INFO_NOTE_COLOR),
                         name="notes")] if notes[a] else [] for a in analyses}
    prefix = (_esc(title_prefix) + " · ") if title_prefix else ""
    buttons = []
    for i, a in enumerate(analyses):
        label = ANALYSIS_LABELS.get(a, a)
        visible = [k == i for k in range(len(analyses))] + [True] * n_legend
        buttons.append(
            dict(label=label, method="update",
                 args=[{"visible": visible},
                       {"annotations": annotations[a] + note_ann[a],
                        "title.text": prefix + _title(graphs[a], label)}])
        )
    fig.update_layout(
        title=dict(text=prefix + _title(first, ANALYSIS_LABELS.get(analyses[0], analyses[0])), x=0.01, y=0.99),
        annotations=annotations[analyses[0]] + note_ann[analyses[0]],
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        plot_bgcolor="white",
        paper_bgcolor="white",
        height=height,
        width=width,
        margin=margin,
        legend=dict(title=dict(text="True class"), itemclick=False, itemdoubleclick=False),
        font=dict(family="Helvetica, Arial, sans-serif"),
        updatemenus=[dict(type="buttons", direction="right", x=1.0, xanchor="right", y=1.17 if compact else 1.1,
                          yanchor="bottom",
                          showactive=True, active=0, buttons=buttons)] if len(analyses) > 1 else [],
    )
    return fig


# The epoch page's script for a diagram drawn taller than planned (it fills the window): Plotly's
# node padding in proportion to the plot's height (Plotly.restyle draws it again; the guard stops there).
_PAD_SCRIPT = """var gd = document.getElementById('{plot_id}');
function fitPadding() {
  var size = gd._fullLayout && gd._fullLayout._size;
  if (!size) { return; }
  var want = Math.round(%(pad)s * size.h / %(planned)s * 100) / 100;
  if (Math.abs(want - gd.data[%(traces)s[0]].node.pad) > 0.05) {
    Plotly.restyle(gd, {"node.pad": want}, %(traces)s);
  }
}
gd.on("plotly_afterplot", fitPadding);
fitPadding();"""


def page_html(graphs: Mapping[str, FlowGraph], *, title_prefix: str = "",
              top_classes: int | str | None = "auto") -> str:
    """The whole HTML page; it loads ``plotly.min.js`` from its own directory (no network)."""
    fig = figure(graphs, title_prefix=title_prefix, top_classes=top_classes)
    epoch = next(iter(graphs.values())).epoch
    default_height, script = "100%", None
    if fig.layout.height is not None and fig.layout.height <= MIN_HEIGHT:
        # a diagram of few clusters fills the window instead of leaving its lower part empty; its
        # nodes are placed for the figure's height (see stack), so the padding grows with the height
        # drawn, keeping the share of the height that the nodes take
        planned = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
        sankeys = [i for i, t in enumerate(fig.data) if t.type == "sankey"]
        fig.update_layout(height=None)
        default_height = f"max({MIN_HEIGHT}px, calc(100vh - 24px))"
        script = _PAD_SCRIPT % {"planned": planned, "pad": NODE_PAD, "traces": sankeys}
    body = fig.to_html(include_plotlyjs="directory", full_html=True, default_height=default_height,
                       config={"responsive": True, "displaylogo": False}, post_script=script)
    return body.replace("<head>", f"<head><meta charset=\"utf-8\"><title>flowcallback · epoch {epoch}</title>", 1)


def write_epoch_page(path, graphs: Mapping[str, FlowGraph], *, title_prefix: str = "",
                     top_classes: int | str | None = "auto") -> str:
    """Write the page, and the plotly package's own ``plotly.min.js`` beside it, both atomically.

    A ``plotly.min.js`` already there is kept only if it is identical to the package's copy
    (:func:`flowcallback.core.store.ensure_plotlyjs`): the page runs whatever it holds.

    Returns
    -------
    str
        The page's path.
    """
    from pathlib import Path

    from flowcallback.core._files import atomic_write, ensure_plotlyjs

    path = Path(path)
    ensure_plotlyjs(path.parent)
    html = page_html(graphs, title_prefix=title_prefix, top_classes=top_classes)
    atomic_write(path, html.encode("utf-8"))
    return str(path)


def _class_index(c, class_names: Sequence[str], argument: str) -> int:
    """Class ``c`` (a class name, or a class index) as an index of ``class_names``.

    >>> _class_index("cat", ["dog", "cat"], "true_class"), _class_index(0, ["dog", "cat"], "true_class")
    (1, 0)
    >>> _class_index("3", ["dog", "cat"], "true_class")
    Traceback (most recent call last):
    ...
    ValueError: true_class: '3' is not a class; the classes are ['dog', 'cat'] (a name, or an index 0 to 1)
    """
    names = [str(n) for n in class_names]
    if isinstance(c, str) and c in names:
        return names.index(c)
    if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= int(c) < len(names):
        return int(c)
    raise ValueError(f"{argument}: {c!r} is not a class; the classes are {names} (a name, or an index 0 to "
                     f"{len(names) - 1})")


def epoch_flows_figure(table, class_names: Sequence[str], column: str, *, true_class=None,
                       changed_only: bool = False, title: str = ""):
    """A Sankey of one column's clusters across epochs, from :func:`flowcallback.core.history.epoch_flows`.

    Parameters
    ----------
    table : pandas.DataFrame
        ``epoch_flows(graphs, column)``.
    class_names : sequence of str
    column : str
        The column the table follows (labels its nodes).
    true_class : int or str, optional
        Only the samples of this class (its index or its name).
    changed_only : bool, default=False
        Only the samples whose cluster changed between the two epochs.

    Returns
    -------
    plotly.graph_objects.Figure
        The Sankey; where no sample is left to show (none changed cluster), a figure without a trace
        that says so.
    """
    import plotly.graph_objects as go

    colors = class_colors(len(class_names))
    rows = table
    if true_class is not None:
        true_class = _class_index(true_class, class_names, "true_class")
        rows = rows[rows.true_class == true_class]
    if changed_only:
        rows = rows[rows.changed]
    epochs = sorted(set(table.source_epoch) | set(table.target_epoch))
    index, labels, xs, where, clusters = {}, [], [], [], []

    def node(e, c):
        if (e, c) not in index:
            index[(e, c)] = len(labels)
            labels.append(f"predicted {_esc(class_names[c])}" if column == "Prediction" else f"cluster {c}")
            where.append(f"epoch {e}")
            clusters.append(c)
            xs.append(0.01 + 0.98 * epochs.index(e) / (len(epochs) - 1) if len(epochs) > 1 else 0.5)
        return index[(e, c)]

    src, dst, val, col, hover = [], [], [], [], []
    for r in rows.itertuples():
        src.append(node(r.source_epoch, r.source_cluster))
        dst.append(node(r.target_epoch, r.target_cluster))
        val.append(int(r.count))
        col.append(_rgba(colors[r.true_class], 0.5))
        more = ", ..." if r.count > len(r.first_samples) else ""
        hover.append(f"{_esc(class_names[r.true_class])}: {r.count} sample(s), cluster {r.source_cluster} at epoch "
                     f"{r.source_epoch} to cluster {r.target_cluster} at epoch {r.target_epoch}<br>samples "
                     f"{', '.join(map(str, r.first_samples))}{more}")
    suffix = ((f" · class {_esc(class_names[true_class])}" if true_class is not None else "")
              + (" · changed only" if changed_only else ""))
    layout = dict(title=dict(text=(_esc(title) or f"{_esc(column)} across epochs") + suffix), height=460,
                  margin=dict(l=20, r=20, t=60, b=30))
    if not src:  # nothing left to draw (Plotly's Sankey throws on no links in the browser): say why instead
        text = "No sample changed cluster between these epochs" if changed_only else "No samples"
        return go.Figure(layout=dict(layout, xaxis=dict(visible=False), yaxis=dict(visible=False), annotations=[
            dict(x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15), text=text)]))
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        # a Prediction node in its class's colour, as on the epoch page; a layer's clusters grey
        node=dict(label=labels, x=xs, y=_stacked_y(xs, src, dst, val, clusters), pad=6, thickness=12,
                  color=[colors[c] if column == "Prediction" and 0 <= c < len(colors) else "#888" for c in clusters],
                  customdata=where, hovertemplate="%{customdata} · %{label}<br>%{value} sample(s)<extra></extra>"),
        link=dict(source=src, target=dst, value=val, color=col, customdata=hover,
                  hovertemplate="%{customdata}<extra></extra>"),
    ))
    fig.update_layout(**layout, annotations=[dict(x=k / (len(epochs) - 1) if len(epochs) > 1 else 0.5, y=1.04,
                                                  xref="paper", yref="paper", showarrow=False, text=f"epoch {e}")
                                             for k, e in enumerate(epochs)])
    return fig


def _stacked_y(xs, src, dst, val, rank) -> list:
    """Vertical centres of Sankey nodes, stacked by size within each column in ``rank`` order
    (Plotly ignores x without y, and moves a node without outgoing flows to the last column)."""
    inn, out = [0] * len(xs), [0] * len(xs)
    for s, d, v in zip(src, dst, val):
        out[s] += v
        inn[d] += v
    size = [max(a, b) for a, b in zip(inn, out)]
    ys = [0.5] * len(xs)
    for x in sorted(set(xs)):
        ids = sorted((i for i, xi in enumerate(xs) if xi == x), key=lambda i: rank[i])
        total, gap, at = sum(size[i] for i in ids), 0.02, 0.01
        scale = (0.98 - gap * (len(ids) - 1)) / total if total else 0.0
        for i in ids:
            h = size[i] * scale
            ys[i] = min(0.99, max(0.01, at + h / 2))
            at += h + gap
    return ys


def confusion_figure(graphs, *, min_share: float = 0.02, max_cells: int = 12):
    """The confusions that matter over training: one line per (true, predicted) cell.

    A cell is kept when it holds at least ``min_share`` of its class's samples at some epoch (the
    ``max_cells`` largest). Returns a ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    data = confusion_over_training(graphs, min_share=min_share, max_cells=max_cells)
    names = graphs[0].class_names
    colors = class_colors(len(names))
    fig = go.Figure([go.Scatter(x=data["epochs"], y=c["counts"], mode="lines+markers",
                                line=dict(color=colors[c["true"]]),
                                name=f"{_esc(names[c['true']])} → {_esc(names[c['predicted']])}")
                     for c in data["cells"]])
    fig.update_layout(title="Confusions over training (true → predicted, samples)", xaxis=dict(title="epoch", dtick=1),
                      yaxis=dict(title="samples", rangemode="tozero"), height=380)
    return fig


def class_scores_figure(graphs):
    """Each class's recall (solid) and precision (dotted) over the epochs, as a Plotly figure."""
    import plotly.graph_objects as go

    data = confusion_over_training(graphs)
    names = graphs[0].class_names
    colors = class_colors(len(names))
    fig = go.Figure()
    for c in sorted(data["recall"]):
        fig.add_trace(go.Scatter(x=data["epochs"], y=data["recall"][c], mode="lines", line=dict(color=colors[c]),
                                 name=f"{_esc(names[c])} recall", legendgroup=str(c)))
        fig.add_trace(go.Scatter(x=data["epochs"], y=data["precision"][c], mode="lines", showlegend=False,
                                 line=dict(color=colors[c], dash="dot"), name=f"{_esc(names[c])} precision",
                                 legendgroup=str(c)))
    fig.update_layout(title="Recall (solid) and precision (dotted) per class", xaxis=dict(title="epoch", dtick=1),
                      yaxis=dict(range=[0, 1.02]), height=380)
    return fig
