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

from flowcallback.core.flows import FlowGraph

__all__ = ["class_colors", "sankey_trace", "figure", "write_epoch_page", "ANALYSIS_LABELS"]

ANALYSIS_LABELS = {"activations": "Activations", "lrp": "LRP relevance"}

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


def sankey_trace(graph: FlowGraph, *, colors: Optional[Sequence[str]] = None, name: Optional[str] = None, max_samples: int = 5,
                 shown: Optional[Sequence[int]] = None):
    """A ``plotly.graph_objects.Sankey`` trace of one :class:`FlowGraph`.

    Node ``customdata`` holds (column, cluster id, size, composition); link ``customdata`` holds
    (class, count, first sample indices). Nodes are placed at fixed x (column) and y (order).
    ``shown`` (see :func:`top_classes`) colours only those classes; the flows of the others are
    merged into one grey "other" flow per pair of clusters.
    """
    import plotly.graph_objects as go

    names = [_esc(c) for c in graph.class_names]
    colors = list(colors or class_colors(len(names)))
    m = len(graph.columns)
    n = graph.n_samples
    node_index = {}
    nx_, ny_, ncolor, nlabel, ncustom = [], [], [], [], []
    for j, col in enumerate(graph.columns):
        counts = graph.class_counts(j)
        sizes = counts.sum(axis=1)
        c = len(col.order)
        gap = min(0.25, 0.012 * (c - 1)) if c > 1 else 0.0
        cum = np.r_[0, np.cumsum(sizes)[:-1]]
        x = 0.005 + 0.99 * (j / max(m - 1, 1))
        for pos, cid in enumerate(col.order):
            node_index[(j, cid)] = len(nx_)
            size = int(sizes[pos])
            y = (cum[pos] + size / 2) / max(n, 1) * (1 - gap) + (pos * gap / (c - 1) if c > 1 else 0)
            nx_.append(x)
            ny_.append(0.01 + 0.98 * y)
            top = np.argsort(-counts[pos], kind="stable")
            dom = int(top[0])
            purity = counts[pos, dom] / max(size, 1)
            if col.kind == "layer":
                nlabel.append("")
                ncolor.append(_blend_grey(colors[dom] if shown is None or dom in shown else OTHER_COLOR, purity))
            else:
                listed = shown is None or cid in shown
                nlabel.append((names[cid] if cid < len(names) else str(cid)) if listed else "")
                ncolor.append(colors[cid] if cid < len(colors) and listed else OTHER_COLOR)
            comp = "<br>".join(
                f"{names[k]}: {int(counts[pos, k])} ({counts[pos, k] / max(size, 1):.0%})"
                for k in top[:8]
                if counts[pos, k] > 0
            )
            more = int(np.count_nonzero(counts[pos])) - 8
            if more > 0:
                comp += f"<br>… {more} more classes"
            ncustom.append([_esc(col.name), int(cid), size, comp])
    src, tgt, val, lcolor, lcustom = [], [], [], [], []
    flows = graph.flows
    keep = None if shown is None else set(int(c) for c in shown)
    n_other = len(names) - len(keep) if keep is not None else 0
    for j in range(m - 1):
        samples = _flow_samples(graph, j, max_samples)
        part = flows[flows["source_column"] == j]
        other: Dict[tuple, list] = {}  # (source, target) -> [count, first samples]
        for sc, tc, cls, cnt in part[["source_cluster", "target_cluster", "true_class", "count"]].itertuples(index=False):
            idx = samples.get((int(sc), int(tc), int(cls)), [])
            if keep is not None and int(cls) not in keep:
                entry = other.setdefault((int(sc), int(tc)), [0, []])
                entry[0] += int(cnt)
                entry[1] = sorted(entry[1] + idx)[:max_samples]
                continue
            src.append(node_index[(j, int(sc))])
            tgt.append(node_index[(j + 1, int(tc))])
            val.append(int(cnt))
            lcolor.append(_rgba(colors[int(cls)] if int(cls) < len(colors) else "#999999", 0.45))
            listed = ", ".join(str(i) for i in idx) + (", …" if cnt > len(idx) else "")
            lcustom.append([names[int(cls)], int(cnt), listed])
        for (sc, tc), (cnt, idx) in other.items():
            src.append(node_index[(j, sc)])
            tgt.append(node_index[(j + 1, tc)])
            val.append(cnt)
            lcolor.append(_rgba(OTHER_COLOR, 0.35))
            listed = ", ".join(str(i) for i in idx) + (", …" if cnt > len(idx) else "")
            lcustom.append([f"other ({n_other} classes)", cnt, listed])
    return go.Sankey(
        name=name or ANALYSIS_LABELS.get(graph.analysis, graph.analysis),
        arrangement="fixed",
        valueformat="d",
        node=dict(
            x=nx_,
            y=ny_,
            pad=2,
            thickness=14,
            label=nlabel,
            color=ncolor,
            line=dict(color="rgba(40,40,40,0.6)", width=0.5),
            customdata=ncustom,
            hovertemplate="<b>%{customdata[0]}</b> · cluster %{customdata[1]}<br>%{customdata[2]} samples"
            "<br>%{customdata[3]}<extra></extra>",
        ),
        link=dict(
            source=src,
            target=tgt,
            value=val,
            color=lcolor,
            customdata=lcustom,
            hovertemplate="class <b>%{customdata[0]}</b>: %{customdata[1]} samples<br>"
            "samples %{customdata[2]}<extra></extra>",
        ),
    )


def _column_annotations(graph: FlowGraph) -> List[dict]:
    m = len(graph.columns)
    anns = []
    for j, col in enumerate(graph.columns):
        x = 0.005 + 0.99 * (j / max(m - 1, 1))
        text = f"<b>{_esc(col.name)}</b>" + (f"<br>{_esc(col.layer_type)}" if col.layer_type else "")
        text += f"<br>{len(col.order)} clusters"
        if col.note:
            text += f"<br><i>{_esc(col.note)}</i>"
        anns.append(
            dict(x=x, y=1.0, xref="paper", yref="paper", yanchor="bottom", xanchor="center",
                 text=text, showarrow=False, font=dict(size=11))
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


#: Height in pixels of a diagram of few clusters (a page makes it fill the window when taller).
MIN_HEIGHT = 650


def figure(graphs: Mapping[str, FlowGraph], *, title_prefix: str = "", notes: Sequence[str] = (),
           top_classes: int | str | None = "auto"):
    """A Plotly figure with one Sankey per analysis and buttons to switch between them.

    Parameters
    ----------
    graphs : mapping of analysis name to FlowGraph
        All of one epoch, e.g. ``{"activations": g1, "lrp": g2}``.
    title_prefix : str
        Shown before the title (the run's name, say).
    notes : sequence of str
        Lines shown under the diagram (skipped analyses, errors).
    top_classes : int, "auto" or None, default="auto"
        Colour only the largest classes and draw the others as one grey "other" (see
        :func:`top_classes`); "auto" does so above :data:`AUTO_TOP_CLASSES` classes.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    if not graphs:
        raise ValueError("graphs: expected at least one FlowGraph")
    analyses = list(graphs)
    first = graphs[analyses[0]]
    colors = class_colors(len(first.class_names))
    shown = _top_classes(first, top_classes)
    fig = go.Figure()
    for i, a in enumerate(analyses):
        tr = sankey_trace(graphs[a], colors=colors, shown=shown)
        tr.visible = i == 0
        fig.add_trace(tr)
    legend = [(k, colors[k]) for k in (range(len(first.class_names)) if shown is None else shown)]
    for k, color in legend:
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=12, color=color, symbol="square"),
                       name=_esc(first.class_names[k]), showlegend=True, hoverinfo="skip")
        )
    if shown is not None:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=12, color=OTHER_COLOR, symbol="square"),
                                 name=f"other ({len(first.class_names) - len(shown)} classes)", showlegend=True,
                                 hoverinfo="skip"))
    n_legend = len(legend) + (shown is not None)
    note_text = "<br>".join(_esc(s) for s in notes)
    note_ann = [dict(x=0, y=-0.04, xref="paper", yref="paper", xanchor="left", yanchor="top", showarrow=False,
                     text=note_text, font=dict(size=11, color="#a33"))] if notes else []
    prefix = (_esc(title_prefix) + " · ") if title_prefix else ""
    buttons = []
    for i, a in enumerate(analyses):
        label = ANALYSIS_LABELS.get(a, a)
        visible = [k == i for k in range(len(analyses))] + [True] * n_legend
        buttons.append(
            dict(label=label, method="update",
                 args=[{"visible": visible},
                       {"annotations": _column_annotations(graphs[a]) + note_ann,
                        "title.text": prefix + _title(graphs[a], label)}])
        )
    max_clusters = max(len(c.order) for g in graphs.values() for c in g.columns)
    fig.update_layout(
        title=dict(text=prefix + _title(first, ANALYSIS_LABELS.get(analyses[0], analyses[0])), x=0.01, y=0.99),
        annotations=_column_annotations(first) + note_ann,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        plot_bgcolor="white",
        paper_bgcolor="white",
        height=int(min(2400, max(MIN_HEIGHT, 14 * max_clusters))),
        margin=dict(l=30, r=30, t=140, b=60 + 14 * len(notes)),
        legend=dict(title=dict(text="True class"), itemclick=False, itemdoubleclick=False),
        font=dict(family="Helvetica, Arial, sans-serif"),
        updatemenus=[dict(type="buttons", direction="right", x=1.0, xanchor="right", y=1.1, yanchor="bottom",
                          showactive=True, active=0, buttons=buttons)] if len(analyses) > 1 else [],
    )
    return fig


def page_html(graphs: Mapping[str, FlowGraph], *, title_prefix: str = "", notes: Sequence[str] = (),
              top_classes: int | str | None = "auto") -> str:
    """The whole HTML page; it loads ``plotly.min.js`` from its own directory (no network)."""
    fig = figure(graphs, title_prefix=title_prefix, notes=notes, top_classes=top_classes)
    epoch = next(iter(graphs.values())).epoch
    default_height = "100%"
    if fig.layout.height is not None and fig.layout.height <= MIN_HEIGHT:
        # a diagram of few clusters fills the window instead of leaving its lower part empty
        fig.update_layout(height=None)
        default_height = f"max({MIN_HEIGHT}px, calc(100vh - 24px))"
    body = fig.to_html(include_plotlyjs="directory", full_html=True, default_height=default_height,
                       config={"responsive": True, "displaylogo": False})
    return body.replace("<head>", f"<head><meta charset=\"utf-8\"><title>flowcallback · epoch {epoch}</title>", 1)


def write_epoch_page(path, graphs: Mapping[str, FlowGraph], *, title_prefix: str = "", notes: Sequence[str] = (),
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

    from flowcallback.core.store import atomic_write, ensure_plotlyjs

    path = Path(path)
    ensure_plotlyjs(path.parent)
    atomic_write(path, page_html(graphs, title_prefix=title_prefix, notes=notes, top_classes=top_classes).encode("utf-8"))
    return str(path)


# -- the run page ----------------------------------------------------------------------------------
_RUN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>flowcallback · __TITLE__</title>
<script src="plotly.min.js"></script>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 16px; color: #222; }
#controls { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
#controls input[type=range] { width: 360px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.failed { color: #a33; }
.row { display: flex; gap: 16px; flex-wrap: wrap; }
</style></head>
<body>
<h2 id="title"></h2>
<div id="controls">
  <button id="play" type="button">&#9654; Play</button>
  <label>Epoch <input id="epoch" type="range" min="0" max="0" step="1" value="0"> <b id="epoch-label"></b></label>
  <span id="analysis-buttons"></span>
  <span id="status" class="failed"></span>
</div>
<div id="sankey"></div>
<div class="row"><div id="heatmap" style="flex: 2 1 600px"></div><div id="curves" style="flex: 1 1 380px"></div></div>
<h3>Flows across epochs</h3>
<p><small>How the samples move between one column's clusters from snapshot to snapshot (clusters keep their id
while they persist). Flows are coloured by true class.</small></p>
<div id="across-controls" class="row">
  <label>Column <select id="across-column"></select></label>
  <label>Class <select id="across-class"><option value="">all</option></select></label>
  <label><input id="across-changed" type="checkbox"> changed only</label>
</div>
<div id="across"></div>
<h3>Confusion over training</h3>
<div class="row"><div id="confusion" style="flex: 1 1 480px"></div><div id="scores" style="flex: 1 1 480px"></div></div>
<h3>Class recognition profile <small id="profile-epoch"></small></h3>
<p><small>First layer from which a class's samples sit, at least 80 % of them, in clusters where the class is a strict majority,
and stay so to the last layer; "unstable" when that is lost again downstream.</small></p>
<table id="profiles"><thead><tr><th>class</th><th>status</th></tr></thead><tbody></tbody></table>
<script id="run-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("run-data").textContent);
  var epochs = data.epochs, analyses = data.analyses;
  var state = { i: epochs.length - 1, analysis: analyses[0], timer: null };
  var acrossShown = null;  // the analysis the flows across epochs are drawn for
  var slider = document.getElementById("epoch");
  slider.max = String(epochs.length - 1);
  slider.value = String(state.i);
  document.getElementById("title").textContent = data.title;
  var buttons = document.getElementById("analysis-buttons");
  analyses.forEach(function (a) {
    var b = document.createElement("button");
    b.type = "button"; b.textContent = data.labels[a] || a; b.dataset.analysis = a;
    b.addEventListener("click", function () { state.analysis = a; draw(); });
    buttons.appendChild(b);
  });
  function draw() {
    var e = epochs[state.i];
    document.getElementById("epoch-label").textContent = String(e);
    var fig = (data.figures[String(e)] || {})[state.analysis];
    var status = document.getElementById("status");
    status.textContent = data.failed[String(e)] ? "snapshot failed: " + data.failed[String(e)]
      : data.partial[String(e)] ? "part of this snapshot failed (see the notes under the diagram): " + data.partial[String(e)]
      : (fig ? "" : "no " + state.analysis + " graph for this epoch");
    Array.prototype.forEach.call(buttons.children, function (b) { b.style.fontWeight = b.dataset.analysis === state.analysis ? "bold" : "normal"; });
    if (fig) { Plotly.react("sankey", fig.data, fig.layout, {responsive: true, displaylogo: false}); }
    else { Plotly.purge("sankey"); }
    var tbody = document.querySelector("#profiles tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    ((data.profiles[String(e)] || {})[state.analysis] || []).forEach(function (row) {
      var tr = document.createElement("tr");
      [row[0], row[1]].forEach(function (v) { var td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
      tbody.appendChild(tr);
    });
    document.getElementById("profile-epoch").textContent = "(epoch " + e + ", " + (data.labels[state.analysis] || state.analysis) + ")";
    var hm = data.heatmaps[state.analysis];
    if (acrossShown !== state.analysis) { acrossShown = state.analysis; fillColumns(); drawAcross(); }
    if (hm) {
      // a frame around the shown epoch's column
      var k = hm.data[0].x.indexOf(String(e));
      var layout = Object.assign({}, hm.layout, {shapes: k < 0 ? [] : [{type: "rect", xref: "x", yref: "paper",
        x0: k - 0.5, x1: k + 0.5, y0: 0, y1: 1, line: {color: "#d62728", width: 3}, name: "current-epoch"}]});
      Plotly.react("heatmap", hm.data, layout, {responsive: true, displaylogo: false});
    }
  }
  slider.addEventListener("input", function () { state.i = parseInt(slider.value, 10); draw(); });
  document.getElementById("play").addEventListener("click", function () {
    if (state.timer) { clearInterval(state.timer); state.timer = null; this.textContent = "\u25B6 Play"; return; }
    this.textContent = "\u25A0 Stop";
    state.timer = setInterval(function () {
      state.i = (state.i + 1) % epochs.length; slider.value = String(state.i); draw();
    }, 1500);
  });
  Plotly.newPlot("curves", data.curves.data, data.curves.layout, {responsive: true, displaylogo: false});

  // -- flows across epochs ------------------------------------------------------------------------
  var colSelect = document.getElementById("across-column");
  var classSelect = document.getElementById("across-class");
  var changedBox = document.getElementById("across-changed");
  data.class_names.forEach(function (name, c) {
    var o = document.createElement("option"); o.value = String(c); o.textContent = name; classSelect.appendChild(o);
  });
  function fillColumns() {
    var current = colSelect.value;
    while (colSelect.firstChild) { colSelect.removeChild(colSelect.firstChild); }
    Object.keys(data.across[state.analysis] || {}).forEach(function (name) {
      var o = document.createElement("option"); o.value = name; o.textContent = name; colSelect.appendChild(o);
    });
    var names = Array.prototype.map.call(colSelect.options, function (o) { return o.value; });
    colSelect.value = names.indexOf(current) >= 0 ? current : (names.indexOf("Prediction") >= 0 ? "Prediction" : names[0] || "");
  }
  function rgba(hex, alpha) {
    var v = parseInt(hex.slice(1), 16);
    return "rgba(" + ((v >> 16) & 255) + "," + ((v >> 8) & 255) + "," + (v & 255) + "," + alpha + ")";
  }
  // Vertical centres for the nodes of each epoch column, stacked by size: Plotly ignores x without
  // y, and would move a node without outgoing flows to the last column.
  function acrossY(xs, src, dst, val, rank) {
    var size = xs.map(function () { return 0; }), inn = size.slice(), out = size.slice();
    src.forEach(function (s, k) { out[s] += val[k]; inn[dst[k]] += val[k]; });
    size = size.map(function (_, i) { return Math.max(inn[i], out[i]); });
    var ys = size.slice(), columns = {};
    xs.forEach(function (x, i) { (columns[x] = columns[x] || []).push(i); });
    Object.keys(columns).forEach(function (x) {
      var ids = columns[x].sort(function (a, b) { return rank[a] - rank[b]; }), total = 0, gap = 0.02, at = 0.01;
      ids.forEach(function (i) { total += size[i]; });
      var scale = total ? (0.98 - gap * (ids.length - 1)) / total : 0;
      ids.forEach(function (i) { var h = size[i] * scale; ys[i] = Math.min(0.99, Math.max(0.01, at + h / 2)); at += h + gap; });
    });
    return ys;
  }
  function drawAcross() {
    var rows = (data.across[state.analysis] || {})[colSelect.value];
    if (!rows) { Plotly.purge("across"); return; }
    var cls = classSelect.value === "" ? null : parseInt(classSelect.value, 10);
    var changedOnly = changedBox.checked;
    var ep = [], index = {}, labels = [], customNodes = [], clusterOf = [], xs = [], src = [], dst = [], val = [], col = [], hover = [];
    rows.forEach(function (r) { if (ep.indexOf(r[0]) < 0) { ep.push(r[0]); } if (ep.indexOf(r[1]) < 0) { ep.push(r[1]); } });
    ep.sort(function (a, b) { return a - b; });
    function node(e, c) {
      var key = e + ":" + c;
      if (!(key in index)) {
        index[key] = labels.length;
        labels.push(colSelect.value === "Prediction" ? "predicted " + data.class_names[c] : "cluster " + c);
        customNodes.push("epoch " + e);
        clusterOf.push(c);  // each column in cluster order (class order for Prediction)
        xs.push(ep.length > 1 ? 0.01 + 0.98 * ep.indexOf(e) / (ep.length - 1) : 0.5);
      }
      return index[key];
    }
    rows.forEach(function (r) {
      if ((cls !== null && r[4] !== cls) || (changedOnly && !r[6])) { return; }
      src.push(node(r[0], r[2])); dst.push(node(r[1], r[3])); val.push(r[5]);
      col.push(data.shown_classes && data.shown_classes.indexOf(r[4]) < 0 ? rgba(data.other_color, 0.35) : rgba(data.colors[r[4]], 0.5));
      hover.push(data.class_names[r[4]] + ": " + r[5] + " sample(s), cluster " + r[2] + " at epoch " + r[0] +
                 " to cluster " + r[3] + " at epoch " + r[1] + "<br>samples " + r[7].join(", ") + (r[5] > r[7].length ? ", ..." : ""));
    });
    var ys = acrossY(xs, src, dst, val, clusterOf);
    var trace = {type: "sankey", arrangement: "snap", node: {label: labels, x: xs, y: ys, pad: 6, thickness: 12,
                 color: "#888", customdata: customNodes,
                 hovertemplate: "%{customdata} · %{label}<br>%{value} sample(s)<extra></extra>"},
                 link: {source: src, target: dst, value: val, color: col, customdata: hover,
                        hovertemplate: "%{customdata}<extra></extra>"}};
    var layout = {title: {text: colSelect.value + " across epochs (" + (data.labels[state.analysis] || state.analysis) + ")" +
                  (cls !== null ? " · class " + data.class_names[cls] : "") + (changedOnly ? " · changed only" : "")},
                  height: 460, margin: {l: 20, r: 20, t: 50, b: 30},
                  annotations: ep.map(function (e, k) { return {x: ep.length > 1 ? k / (ep.length - 1) : 0.5, y: 1.04,
                    xref: "paper", yref: "paper", showarrow: false, text: "epoch " + e}; })};
    Plotly.react("across", [trace], layout, {responsive: true, displaylogo: false});
  }
  [colSelect, classSelect, changedBox].forEach(function (el) { el.addEventListener("change", drawAcross); });

  // -- confusion over training ----------------------------------------------------------------------
  var tr = data.training;
  if (tr && tr.epochs) {
    var cellTraces = tr.cells.map(function (c) {
      return {type: "scatter", mode: "lines+markers", x: tr.epochs, y: c.counts, line: {color: data.colors[c.true]},
              name: data.class_names[c.true] + " → " + data.class_names[c.predicted],
              hovertemplate: data.class_names[c.true] + " taken for " + data.class_names[c.predicted] + ": %{y} at epoch %{x}<extra></extra>"};
    });
    Plotly.newPlot("confusion", cellTraces, {title: {text: "Confusions over training (true → predicted, samples)"},
      xaxis: {title: {text: "epoch"}, dtick: 1}, yaxis: {title: {text: "samples"}, rangemode: "tozero"}, height: 380,
      margin: {l: 60, r: 20, t: 50, b: 50}}, {responsive: true, displaylogo: false});
    var scoreTraces = [];
    Object.keys(tr.recall).filter(function (c) {
      return !data.shown_classes || data.shown_classes.indexOf(parseInt(c, 10)) >= 0;
    }).forEach(function (c) {
      scoreTraces.push({type: "scatter", mode: "lines", x: tr.epochs, y: tr.recall[c], line: {color: data.colors[c]},
                        name: data.class_names[c] + " recall", legendgroup: c});
      scoreTraces.push({type: "scatter", mode: "lines", x: tr.epochs, y: tr.precision[c], line: {color: data.colors[c], dash: "dot"},
                        name: data.class_names[c] + " precision", legendgroup: c, showlegend: false});
    });
    Plotly.newPlot("scores", scoreTraces, {title: {text: "Recall (solid) and precision (dotted) per class"},
      xaxis: {title: {text: "epoch"}, dtick: 1}, yaxis: {range: [0, 1.02]}, height: 380,
      margin: {l: 50, r: 20, t: 50, b: 50}}, {responsive: true, displaylogo: false});
  }

  draw();
})();
</script>
</body></html>
"""


def _json_for_script(obj) -> str:
    """JSON safe to embed in a <script> element (no '</' or '<!--' can close or hide it)."""
    import json

    import plotly.utils

    text = json.dumps(obj, cls=plotly.utils.PlotlyJSONEncoder, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _run_page_parts(g, model_name: str) -> dict:
    """What the run page shows of one epoch's graph: its figure, class profile, metric rows, accuracy and loss."""
    from flowcallback.core.metrics import class_profiles, layer_metrics

    fig = figure({g.analysis: g}, title_prefix=model_name, notes=g.notes)
    fig.update_layout(updatemenus=[])
    return {
        # kept as the page's JSON text: a few times smaller than the nested dicts, and not
        # serialised again at every snapshot
        "figure": _json_for_script(fig.to_plotly_json()),
        "profile": [[r.class_name, r.status] for r in class_profiles(g).itertuples()],  # shown with textContent
        "metrics": layer_metrics([g]),
        "accuracy": g.metrics.get("accuracy"),
        "loss": g.metrics.get("loss"),
        "graph": g,  # for the views across epochs (immutable; its arrays are read-only)
    }


def epoch_flows_figure(table, class_names: Sequence[str], column: str, *, true_class: Optional[int] = None,
                       changed_only: bool = False, title: str = ""):
    """A Sankey of one column's clusters across epochs, from :func:`flowcallback.core.history.epoch_flows`.

    Parameters
    ----------
    table : pandas.DataFrame
        ``epoch_flows(graphs, column)``.
    class_names : sequence of str
    column : str
        The column the table follows (labels its nodes).
    true_class : int, optional
        Only the samples of this class.
    changed_only : bool, default=False
        Only the samples whose cluster changed between the two epochs.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    colors = class_colors(len(class_names))
    rows = table
    if true_class is not None:
        rows = rows[rows.true_class == int(true_class)]
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
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node=dict(label=labels, x=xs, y=_stacked_y(xs, src, dst, val, clusters), pad=6, thickness=12, color="#888", customdata=where,
                  hovertemplate="%{customdata} · %{label}<br>%{value} sample(s)<extra></extra>"),
        link=dict(source=src, target=dst, value=val, color=col, customdata=hover, hovertemplate="%{customdata}<extra></extra>"),
    ))
    suffix = (f" · class {_esc(class_names[true_class])}" if true_class is not None else "") + (" · changed only" if changed_only else "")
    fig.update_layout(title=dict(text=(_esc(title) or f"{_esc(column)} across epochs") + suffix), height=460,
                      margin=dict(l=20, r=20, t=60, b=30),
                      annotations=[dict(x=k / (len(epochs) - 1) if len(epochs) > 1 else 0.5, y=1.04, xref="paper",
                                        yref="paper", showarrow=False, text=f"epoch {e}") for k, e in enumerate(epochs)])
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

    data = _confusion_over_training(graphs, min_share=min_share, max_cells=max_cells)
    names = graphs[0].class_names
    colors = class_colors(len(names))
    fig = go.Figure([go.Scatter(x=data["epochs"], y=c["counts"], mode="lines+markers", line=dict(color=colors[c["true"]]),
                                name=f"{_esc(names[c['true']])} → {_esc(names[c['predicted']])}")
                     for c in data["cells"]])
    fig.update_layout(title="Confusions over training (true → predicted, samples)", xaxis=dict(title="epoch", dtick=1),
                      yaxis=dict(title="samples", rangemode="tozero"), height=380)
    return fig


def class_scores_figure(graphs):
    """Each class's recall (solid) and precision (dotted) over the epochs, as a Plotly figure."""
    import plotly.graph_objects as go

    data = _confusion_over_training(graphs)
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


def _epoch_flow_rows(graphs) -> dict:
    """``{column: rows}`` of :func:`flowcallback.core.history.epoch_flows` for the run page's JavaScript.

    Each row is ``[source epoch, target epoch, source cluster, target cluster, class, count,
    changed, first samples]``; a column is followed over the epochs that have it (a layer left
    out of a failed epoch is skipped there).
    """
    from flowcallback.core.history import epoch_flows

    out = {}
    # only the epochs taken on the last epoch's held-out set can be followed sample by sample
    graphs = [g for g in graphs if g.n_samples == graphs[-1].n_samples and np.array_equal(g.labels, graphs[-1].labels)]
    if len(graphs) < 2:
        return out
    names = [c.name for c in graphs[-1].columns if c.kind in ("layer", "prediction")]
    for name in names:
        having = [g for g in graphs if name in g.column_names]
        if len(having) < 2:
            continue
        df = epoch_flows(having, name, max_samples=5)
        out[name] = [[int(r.source_epoch), int(r.target_epoch), int(r.source_cluster), int(r.target_cluster),
                      int(r.true_class), int(r.count), bool(r.changed), list(r.first_samples)] for r in df.itertuples()]
    return out


def _confusion_over_training(graphs, *, min_share: float = 0.02, max_cells: int = 12) -> dict:
    """Per-class precision and recall over the epochs, and the confusion cells that matter.

    A cell (true, predicted), off the diagonal, is kept when it holds at least 2 % of its class's
    samples at some epoch (at most the 12 largest), so that the chart shows the confusions that
    rise and fall instead of every one-sample mistake.
    """
    from flowcallback.core.history import class_scores, confusion

    if not graphs:
        return {}
    table = confusion(graphs)
    scores = class_scores(graphs)
    epochs = sorted(set(table.epoch))
    # each cell's share of its class's samples at that epoch (held-out sets may differ across epochs)
    table = table.assign(share=table["count"] / table.groupby(["epoch", "true"])["count"].transform("sum").clip(lower=1))
    off = table[table.true != table.predicted]
    share = off.groupby(["true", "predicted"])["share"].max()
    keep = share[share >= min_share].sort_values(ascending=False, kind="stable").index[:max_cells]
    cells = []
    for t, p in keep:
        counts = off[(off.true == t) & (off.predicted == p)].sort_values("epoch")["count"].tolist()
        cells.append({"true": int(t), "predicted": int(p), "counts": [int(c) for c in counts]})

    def series(column):
        return {int(c): [None if v != v else round(float(v), 4) for v in part.sort_values("epoch")[column]]
                for c, part in scores.groupby("class")}

    return {"epochs": [int(e) for e in epochs], "cells": cells, "precision": series("precision"),
            "recall": series("recall")}


def run_page_html(run, cache: Optional[dict] = None) -> str:
    """The run page: epoch slider and play button, analysis switch, NMI heatmap, curves, profiles.

    Parameters
    ----------
    run : flowcallback.core.store.Run
    cache : dict, optional
        Keeps what the page shows of each ``(epoch, analysis)`` between calls, so that a caller
        rewriting the page after every snapshot (the callback) builds each epoch's part once
        instead of reloading and redrawing every earlier epoch each time. The caller owns it and
        must drop the entries of an epoch it rewrites. Without it every epoch is loaded and drawn.

    Returns
    -------
    str
        The page's HTML.
    """
    import pandas as pd
    import plotly.graph_objects as go

    from flowcallback.core.metrics import METRIC_COLUMNS

    cache = {} if cache is None else cache
    epochs = run.epochs
    analyses = list(run.info.get("analyses", ["activations"]))
    figures, profiles, metric_rows, acc, loss = {}, {}, [], [], []
    model_name = run.info["model"]["name"]
    for e in epochs:
        figures[str(e)] = {}
        profiles[str(e)] = {}
        for i, a in enumerate(run.analyses(e)):
            if (e, a) not in cache:
                cache[(e, a)] = _run_page_parts(run.epoch(e, a), model_name)
            part = cache[(e, a)]
            figures[str(e)][a] = part["figure"]
            profiles[str(e)][a] = part["profile"]
            metric_rows.append(part["metrics"])
            if i == 0:
                acc.append(part["accuracy"])
                loss.append(part["loss"])
    metric_rows = [m for m in metric_rows if not m.empty]
    metrics = pd.concat(metric_rows, ignore_index=True) if metric_rows else pd.DataFrame(columns=METRIC_COLUMNS)
    heatmaps = {}
    for a in analyses:
        m = metrics[metrics["analysis"] == a]
        if m.empty:
            continue
        layers = [layer["name"] for layer in run.info["layers"]]
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
    graphs_by_analysis = {a: [cache[(e, a)]["graph"] for e in epochs if (e, a) in cache] for a in analyses}
    across = {a: _epoch_flow_rows(gs) for a, gs in graphs_by_analysis.items() if gs}
    training = _confusion_over_training(graphs_by_analysis.get(analyses[0], []))
    errors = run.errors()
    written = set(epochs)
    epochs = sorted(written | set(errors))  # failed epochs stay on the slider, marked as failed

    def last_line(text):
        return text.strip().splitlines()[-1][:300] if text.strip() else "error"

    data = {
        "title": f"{run.info['model']['name']} · {len(epochs)} snapshot(s)",
        "epochs": epochs, "analyses": analyses, "labels": ANALYSIS_LABELS,
        "heatmaps": heatmaps, "curves": curves.to_plotly_json(), "profiles": profiles,
        "across": across, "training": training, "class_names": list(run.class_names),
        "colors": class_colors(len(run.class_names)), "other_color": OTHER_COLOR,
        # above AUTO_TOP_CLASSES classes, the largest are coloured and the rest drawn as "other"
        "shown_classes": top_classes(graphs_by_analysis[analyses[0]][-1]) if graphs_by_analysis.get(analyses[0]) else None,
        # no graph at all: the snapshot failed; a graph and an error: a part failed (LRP, a layer)
        "failed": {str(e): last_line(t) for e, t in errors.items() if e not in written},
        "partial": {str(e): last_line(t) for e, t in errors.items() if e in written},
    }
    title = html.escape(str(run.info["model"]["name"]))
    # the figures are already JSON text (see _run_page_parts): added as the object's last member
    figures_json = "{" + ", ".join(
        f"{_json_for_script(e)}: {{" + ", ".join(f"{_json_for_script(a)}: {fig}" for a, fig in by_analysis.items()) + "}"
        for e, by_analysis in figures.items()
    ) + "}"
    text = _json_for_script(data)[:-1] + ', "figures": ' + figures_json + "}"
    return _RUN_PAGE.replace("__TITLE__", title).replace("__DATA__", text)


def write_run_page(run, cache: Optional[dict] = None) -> str:
    """Write ``index.html`` into the run directory (atomically), with the plotly package's own
    ``plotly.min.js`` beside it (see :func:`write_epoch_page`).

    ``cache`` is passed to :func:`run_page_html`. Returns the page's path.
    """
    from flowcallback.core.store import atomic_write, ensure_plotlyjs

    ensure_plotlyjs(run.path)
    path = run.path / "index.html"
    atomic_write(path, run_page_html(run, cache).encode("utf-8"))
    return str(path)
