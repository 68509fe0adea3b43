"""Figures of the class-means and projection views, as Plotly figures (pure functions of DataFrames).

:func:`class_means_figure` draws :meth:`flowcallback.Run.class_means` as a heatmap of
classes × units, or, with ``difference=(a, b)``, the units that separate two classes most;
:func:`neuron_clusters_figure` draws :meth:`flowcallback.Run.neuron_clusters` as the seriated
matrix of unit clusters × classes; :func:`projection_figure` animates
:meth:`flowcallback.Run.projection` over the epochs.
Class colours are those of the Sankey pages (:func:`flowcallback.core.render.class_colors`), and
every class name is HTML-escaped before it reaches Plotly.
"""
from __future__ import annotations

import html
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from flowcallback.core.aggregate import class_difference
from flowcallback.core.render import ANALYSIS_LABELS, class_colors

__all__ = ["class_means_figure", "neuron_clusters_figure", "projection_figure"]

ClassKey = Union[int, str]


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _row_of(means, c: ClassKey, name: str) -> int:
    """Position in ``means`` of class ``c`` (a class name, or a class index)."""
    names = [str(i) for i in means.index]
    classes = list(means.attrs.get("classes", range(len(names))))
    if isinstance(c, str):
        if c not in names:
            raise ValueError(f"difference: {name} {c!r} is not a class; the classes are {names}")
        return names.index(c)
    if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and int(c) in classes:
        return classes.index(int(c))
    raise ValueError(f"difference: {name} must be a class name or index, got {c!r}")


def class_means_figure(means, *, difference: Optional[Tuple[ClassKey, ClassKey]] = None, top: int = 20,
                       normalize: bool = False, scale: str = "raw", title: Optional[str] = None):
    """A heatmap of per-class mean activation (or relevance) per unit, or the difference of two classes.

    Parameters
    ----------
    means : pandas.DataFrame
        As :meth:`~flowcallback.Run.class_means` returns it: one row per class (in the
        order to draw, top to bottom), one column per unit.
    difference : (class, class), optional
        Two class names (or class indices): the figure then shows the ``top`` units whose means
        differ most between them, ranked (:func:`flowcallback.core.aggregate.class_difference`):
        above, every class's mean on those units; below, mean of the first minus mean of the second.
    top : int, default=20
        Units shown in the difference mode.
    normalize : bool, default=False
        Difference mode: rank units by the difference divided by their spread over the classes.
    scale : {"raw", "unit"}, default="raw"
        Heatmap colours: the means as they are, or each unit z-scored over the classes (so that
        units of small range show their pattern too). Hover always shows the raw mean.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> m = pd.DataFrame([[0.0, 1.0, 5.0], [0.0, 1.0, 0.0]], index=["cat", "dog"])
    >>> fig = class_means_figure(m, difference=("cat", "dog"), top=1)
    >>> list(fig.data[0].x)
    ['unit 2']
    """
    import plotly.graph_objects as go

    if scale not in ("raw", "unit"):
        raise ValueError(f"scale: expected 'raw' or 'unit', got {scale!r}")
    values = np.asarray(means.to_numpy(), dtype=np.float64)
    names = [_esc(i) for i in means.index]
    units = np.asarray(means.columns)
    attrs = means.attrs
    what = ANALYSIS_LABELS.get(attrs.get("analysis"), "Activations").lower()
    where = f"{_esc(attrs['layer'])}, epoch {attrs['epoch']}" if {"layer", "epoch"} <= set(attrs) else ""
    if difference is not None:
        if not (isinstance(difference, (tuple, list)) and len(difference) == 2):
            raise ValueError(f"difference: expected a pair of classes, got {difference!r}")
        a, b = (_row_of(means, c, n) for c, n in zip(difference, ("first class", "second class")))
        d = class_difference(values, a, b, top=min(int(top), values.shape[1]), normalize=normalize)
        cols = [f"unit {units[u]}" for u in d.units]
        values, shown = values[:, d.units], d
    else:
        cols = [f"unit {u}" for u in units]
        shown = None
    z = values
    if scale == "unit":
        finite = np.isfinite(values).all(axis=1)
        mu = values[finite].mean(axis=0) if finite.any() else np.zeros(values.shape[1])
        sd = values[finite].std(axis=0) if finite.any() else np.ones(values.shape[1])
        z = (values - mu) / np.where(sd > 0, sd, 1.0)
    signed = np.nanmin(z, initial=0.0) < 0 < np.nanmax(z, initial=0.0)
    heat = go.Heatmap(z=z, x=cols, y=names, customdata=values, colorscale="RdBu_r" if signed else "Viridis",
                      zmid=0 if signed else None,
                      colorbar=dict(title="z-score" if scale == "unit" else "mean", len=0.6),
                      hovertemplate="class %{y}<br>%{x}<br>mean %{customdata:.4g}<extra></extra>")
    if shown is None:
        fig = go.Figure(heat)
        fig.update_layout(title=title or f"Mean {what} per class and unit ({where})".replace(" ()", ""),
                          xaxis=dict(title="unit / channel", showticklabels=len(cols) <= 64, automargin=True),
                          yaxis=dict(autorange="reversed", title="class"),
                          height=max(320, 26 * len(names) + 160))
        return fig
    from plotly.subplots import make_subplots

    classes = list(attrs.get("classes", range(len(names))))
    colors = class_colors(max(classes) + 1 if classes else 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.62, 0.38])
    fig.add_trace(heat, row=1, col=1)
    bar_colors = [colors[classes[a]] if v >= 0 else colors[classes[b]] for v in shown.values]
    fig.add_trace(go.Bar(x=cols, y=shown.values, marker_color=bar_colors, customdata=shown.scores,
                         name=f"{names[a]} − {names[b]}", showlegend=False,
                         hovertemplate="%{x}<br>difference %{y:.4g}<br>score %{customdata:.4g}<extra></extra>"),
                  row=2, col=1)
    fig.update_yaxes(autorange="reversed", title_text="class", row=1, col=1)
    fig.update_yaxes(title_text=f"{names[a]} − {names[b]}", row=2, col=1)
    default_title = f"Units that separate {names[a]} from {names[b]}: mean {what} ({where})".replace(" ()", "")
    fig.update_layout(title=title or default_title,
                      height=max(460, 26 * len(names) + 320))
    return fig


def projection_figure(table, class_names: Sequence[str], *, title: Optional[str] = None, frame_ms: int = 800):
    """The 2-D projection of a layer, animated over the epochs: one frame per epoch, a play button and a slider.

    Points are coloured by true class (one legend entry per class), drawn filled when the
    prediction is right and open when it is wrong; hover gives the sample index, label, prediction
    and cluster. Each point keeps its identity (the sample index) from frame to frame, so Plotly
    moves it rather than redrawing it; the axes are fixed over the epochs.

    Parameters
    ----------
    table : pandas.DataFrame
        As :meth:`~flowcallback.Run.projection` returns it (``epoch``, ``sample``,
        ``x``, ``y``, ``label``, ``prediction``, ``cluster``).
    class_names : sequence of str
    title : str, optional
    frame_ms : int, default=800
        Time per epoch when playing.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"epoch": [0, 0, 1, 1], "sample": [0, 1, 0, 1], "x": [0.0, 1, 0, 2], "y": [0.0, 1, 1, 1],
    ...                   "label": [0, 1, 0, 1], "prediction": [0, 0, 0, 1], "cluster": [0, 0, 1, 2]})
    >>> fig = projection_figure(t, ["a", "b"])
    >>> [f.name for f in fig.frames], fig.layout.updatemenus[0].buttons[0].label
    (['0', '1'], 'Play')
    """
    import plotly.graph_objects as go

    if len(table) == 0:
        raise ValueError("table: no projected sample")
    names = [_esc(n) for n in class_names]
    colors = class_colors(len(names))
    epochs = sorted(int(e) for e in table["epoch"].unique())
    pad = lambda lo, hi: [lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1)]  # noqa: E731
    x_range = pad(float(table["x"].min()), float(table["x"].max()))
    y_range = pad(float(table["y"].min()), float(table["y"].max()))
    classes = sorted(int(c) for c in table["label"].unique())

    def traces(e):
        t = table[table["epoch"] == e]
        out = []
        for c in classes:
            r = t[t["label"] == c]
            wrong = (r["prediction"] != r["label"]).to_numpy()
            pred = [names[p] if 0 <= p < len(names) else str(p) for p in r["prediction"]]
            out.append(go.Scatter(
                x=r["x"].to_numpy(), y=r["y"].to_numpy(), ids=[str(s) for s in r["sample"]], mode="markers",
                name=names[c], legendgroup=str(c),
                marker=dict(color=colors[c], size=6, symbol=np.where(wrong, "circle-open", "circle").tolist(),
                            line=dict(width=1, color=colors[c])),
                customdata=np.column_stack([r["sample"].to_numpy(), [names[c]] * len(r), pred,
                                            r["cluster"].to_numpy()]),
                hovertemplate="sample %{customdata[0]}<br>label %{customdata[1]}<br>prediction %{customdata[2]}"
                              "<br>cluster %{customdata[3]}<extra></extra>"))
        return out

    frames = [go.Frame(data=traces(e), name=str(e)) for e in epochs]
    fig = go.Figure(data=frames[0].data, frames=frames)
    play = dict(frame=dict(duration=int(frame_ms), redraw=False), fromcurrent=True,
                transition=dict(duration=int(frame_ms * 0.6), easing="cubic-in-out"))
    pause = dict(frame=dict(duration=0, redraw=False), mode="immediate", transition=dict(duration=0))
    fig.update_layout(
        title=title or "2-D projection over the epochs (filled: right prediction, open: wrong)",
        xaxis=dict(range=x_range, showticklabels=False, zeroline=False, title=""),
        yaxis=dict(range=y_range, showticklabels=False, zeroline=False, title="", scaleanchor="x"),
        height=620, legend=dict(title="true class", itemsizing="constant"),
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.06, xanchor="left", yanchor="top",
                          buttons=[dict(label="Play", method="animate", args=[None, play]),
                                   dict(label="Pause", method="animate", args=[[None], pause])])],
        sliders=[dict(active=0, x=0.16, len=0.84, y=-0.02, currentvalue=dict(prefix="epoch "),
                      steps=[dict(label=str(e), method="animate",
                                  args=[[str(e)], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                                       transition=dict(duration=300))])
                             for e in epochs])],
    )
    return fig


def neuron_clusters_figure(table, *, title: Optional[str] = None):
    """The seriated matrix of unit clusters × classes (CNNVis), from :meth:`flowcallback.Run.neuron_clusters`.

    Rows are the unit clusters (with their number of units), columns the classes, both in their
    seriation order; a cell is the cluster's mean z-scored class mean (red: its units respond more
    to that class than to the others). Hovering a row shows its top samples.

    Parameters
    ----------
    table : pandas.DataFrame
        As :meth:`~flowcallback.Run.neuron_clusters` returns it.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"cluster": [0, 0, 1, 1], "class": ["cat", "dog", "cat", "dog"],
    ...                   "response": [1.0, -1.0, -1.0, 1.0], "n_units": [3, 3, 2, 2],
    ...                   "units": [(0, 1, 4)] * 2 + [(2, 3)] * 2, "top_samples": [(7, 1)] * 2 + [(5,)] * 2})
    >>> fig = neuron_clusters_figure(t)
    >>> fig.data[0].z.tolist(), list(fig.data[0].x)
    ([[1.0, -1.0], [-1.0, 1.0]], ['cat', 'dog'])
    """
    import plotly.graph_objects as go

    matrix = table.pivot(index="cluster", columns="class", values="response")
    if hasattr(table["class"], "cat"):
        matrix = matrix[[c for c in table["class"].cat.categories if c in matrix.columns]]
    else:
        matrix = matrix[list(dict.fromkeys(table["class"]))]
    first = table.drop_duplicates("cluster").set_index("cluster").loc[matrix.index]
    rows = [f"cluster {c} ({n} unit{'s' if n != 1 else ''})" for c, n in zip(matrix.index, first["n_units"])]
    tops = [", ".join(str(s) for s in t) or "not kept" for t in first["top_samples"]]
    text = [[f"{_esc(r)}<br>class {_esc(col)}<br>top samples: {top}" for col in matrix.columns]
            for r, top in zip(rows, tops)]
    z = matrix.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    heat = go.Heatmap(z=z, x=[_esc(c) for c in matrix.columns], y=[_esc(r) for r in rows], text=text,
                      hoverinfo="text", colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound,
                      colorbar=dict(title=dict(text="mean z-score")))
    a = table.attrs
    if title is None:
        title = (f"Neuron clusters of {a.get('layer', 'the layer')} at epoch {a.get('epoch', '?')}: "
                 "each row a group of units, red where they prefer the class")
    fig = go.Figure(heat)
    fig.update_layout(title=_esc(title), xaxis=dict(title="class", type="category"),
                      yaxis=dict(autorange="reversed", type="category"),
                      height=max(320, 120 + 26 * len(rows)), margin=dict(l=160, r=40, t=70, b=60))
    return fig
