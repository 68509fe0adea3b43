"""A run directory, read back: :func:`load_run` and :class:`Run`.

:class:`Run` is thin: the files are read by :mod:`flowcallback.core.store` (which trusts nothing in
them), the tables come from :mod:`flowcallback.core.history`, :mod:`flowcallback.core.metrics` and
:mod:`flowcallback.core.compare`, and the figures from :mod:`flowcallback.core.render` and
:mod:`flowcallback.core.views_figures`. What ``Run`` adds is caching and choosing defaults (the last
epoch, the last layer that has class means).

Methods about one epoch take the epoch first (``run.analyses(10)``, ``run.class_means(10, "dense")``);
methods about the whole training take none (``run.layer_metrics()``, ``run.confusion()``,
``run.errors()``).
"""
from __future__ import annotations

import html
import inspect
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

import numpy as np

from flowcallback.core import store
from flowcallback.core.flows import ANALYSIS_LABELS, MAX_DRAWN_CLUSTERS, EpochViews, FlowGraph
from flowcallback.exceptions import RunFormatError

__all__ = ["Run", "RunSets", "load_run"]

PathLike = Union[str, os.PathLike]


def _only_activations(analysis: str) -> str:
    """What to say when ``analysis`` has no projection because only the activations are projected."""
    return "" if analysis == "activations" else (
        " (the snapshots project each layer's activations only; use analysis='activations')")


def _why_no_projection(analysis: str, keys, otherwise: str) -> str:
    """Why no epoch has an ``analysis`` projection, given the ``(analysis, layer)`` projections there are."""
    return _only_activations(analysis) if any(a == "activations" for a, _ in keys) else otherwise


class Run:
    """A run directory written by :class:`~flowcallback.FlowCallback`.

    Attributes
    ----------
    path : pathlib.Path
    info : dict
        The content of ``run.json``.
    strict : bool
        Whether an unreadable epoch raises (True) or is skipped (False, the default; see :attr:`skipped`).

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

    def __init__(self, path: PathLike, *, strict: bool = False):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise RunFormatError(f"{self.path}: not a directory")
        self.info = store.read_run_info(self.path)
        self.strict = bool(strict)
        self._graphs: Dict[tuple, FlowGraph] = {}
        self._views: Dict[int, Optional[EpochViews]] = {}
        self._metric_rows: Dict[int, Optional[list]] = {}
        self._checked: Dict[int, Optional[str]] = {}  # epoch: None (readable) or why it is skipped

    # -- what the run holds ---------------------------------------------------------------------------
    @property
    def class_names(self) -> List[str]:
        return list(self.info["class_names"])

    @property
    def epochs(self) -> List[int]:
        """Epochs with a complete graph directory whose files can be read, ascending.

        Each epoch is read and checked once, when first listed (its graphs, against each other and
        against ``run.json``; its views; its layer metrics), and kept; an epoch that cannot be is
        left out and listed in :attr:`skipped` (``strict=False``, the default), or raises
        :class:`~flowcallback.RunFormatError` (``strict=True``). Epochs written later (a run still
        being written) are read when they appear.
        """
        numbers = store.epoch_numbers(self.path)
        for e in numbers:
            if e not in self._checked:
                self._checked[e] = self._check_epoch(e)
        return [e for e in numbers if self._checked[e] is None]

    @property
    def skipped(self) -> Dict[int, str]:
        """The epochs left out of :attr:`epochs` because a file of theirs cannot be read or does not
        fit the others: ``{epoch: reason}``, the reason naming the file(s) and the problem.

        ``flowcallback report`` prints one line for each and the run page shows them as notes;
        ``run.epoch(e)`` of such an epoch raises the problem again. Empty for a healthy run.

        Examples
        --------
        >>> import shutil
        >>> from flowcallback.demo import tiny_run
        >>> run = load_run(tiny_run())
        >>> _ = (run.path / "graphs" / "epoch_000" / "activations.json").write_text("{")
        >>> run.epochs                                   # epoch 0 is unreadable, epoch 1 still loads
        [1]
        >>> print(run.skipped[0].split(": ", 1)[1])
        invalid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))
        >>> shutil.rmtree(run.path)
        """
        _ = self.epochs  # reads the epochs not read yet
        return {e: why for e, why in sorted(self._checked.items()) if why is not None}

    def _check_epoch(self, epoch: int) -> Optional[str]:
        """Read every file of ``epoch`` (kept for later); None if all can be read, else the reason
        (or the error, with ``strict``)."""
        try:
            graphs = {a: self._graph(epoch, a) for a in self.analyses(epoch)}
            store.check_epoch(self.path, epoch, graphs)
            self.views(epoch)
            self._metrics_rows(epoch)
        except RunFormatError as exc:
            if self.strict:
                raise
            for key in [k for k in self._graphs if k[0] == epoch]:
                del self._graphs[key]
            self._views.pop(epoch, None)
            self._metric_rows.pop(epoch, None)
            return " ".join(str(exc).split())  # one line
        return None

    def _metrics_rows(self, epoch: int) -> Optional[list]:
        if epoch not in self._metric_rows:
            self._metric_rows[epoch] = store.read_metrics_rows(self.path, epoch)
        return self._metric_rows[epoch]

    def analyses(self, epoch: int) -> List[str]:
        """Analyses saved for an epoch (``["activations", "lrp"]`` when LRP succeeded)."""
        return store.epoch_analyses(self.path, epoch)

    def epoch(self, epoch: int, analysis: str = "activations") -> FlowGraph:
        """The :class:`~flowcallback.FlowGraph` of one epoch and analysis (``"activations"`` or ``"lrp"``).

        An epoch listed in :attr:`skipped` raises :class:`~flowcallback.RunFormatError` with its
        reason there (a file of it cannot be read, even if this analysis's can: an epoch is shown
        whole or not at all); an epoch not in the run raises ``KeyError``.
        """
        e = int(epoch)
        if e not in self._checked and e in store.epoch_numbers(self.path):
            self._checked[e] = self._check_epoch(e)
        if self._checked.get(e) is not None:
            raise RunFormatError(self._checked[e])
        return self._graph(e, analysis)

    def _graph(self, epoch: int, analysis: str) -> FlowGraph:
        key = (int(epoch), analysis)
        if key not in self._graphs:
            self._graphs[key] = store.read_graph(self.path, epoch, analysis, self.info)
        return self._graphs[key]

    def graphs(self, analysis: str = "activations") -> Iterator[FlowGraph]:
        """Every epoch's graph of one analysis, in epoch order (epochs without it are skipped)."""
        for e in self.epochs:
            if analysis in self.analyses(e):
                yield self.epoch(e, analysis)

    def page(self, epoch: int) -> Path:
        """Path of an epoch's HTML page."""
        return self.path / store.epoch_page_name(epoch)

    def views(self, epoch: int) -> Optional[EpochViews]:
        """The epoch's stored class means and projections, or None where the epoch has none.

        Runs written before flowcallback stored them (and snapshots that computed none) have no
        ``views.json``; every other problem with the files raises :class:`~flowcallback.RunFormatError`.
        """
        epoch = int(epoch)
        if epoch not in self._views:
            names = self.analyses(epoch)
            first = "activations" if "activations" in names else names[0] if names else None
            n_samples = None if first is None else self._graph(epoch, first).n_samples
            self._views[epoch] = store.read_views(self.path, epoch, self.info, n_samples)
        return self._views[epoch]

    # -- across the training --------------------------------------------------------------------------
    def errors(self) -> Dict[int | str, str]:
        """The errors recorded by the run, with their tracebacks: ``{epoch: text}`` for the snapshots
        that failed (or a part of them: LRP, a layer, the projection), and ``{"setup": text}`` for
        what failed when the callback set up (the LRP engine refused the model, say: the graphs'
        notes give the first line of each reason, this the whole of it).

        Returns
        -------
        dict
            Epoch numbers (int), then the key ``"setup"`` if the set-up recorded an error; empty
            for a run without errors.

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
        return store.read_errors(self.path)

    def layer_metrics(self, analysis: Optional[str] = None):
        """Layer metrics of every epoch as a tidy DataFrame (see :func:`flowcallback.core.metrics.layer_metrics`).

        One row per (epoch, analysis, layer): number of clusters, NMI and ARI against the classes and
        against the predictions, purity, and the NMI gained over the previous layer. The rows are
        those the snapshot stored (``metrics.json``); they are computed from the graphs for an epoch
        without that file. (A graph's own :attr:`~flowcallback.FlowGraph.metrics` are the snapshot's
        scalars: accuracy, loss, k.)
        """
        import pandas as pd

        from flowcallback.core.metrics import METRIC_COLUMNS, layer_metrics

        parts = []
        for e in self.epochs:
            analyses = [a for a in self.analyses(e) if analysis in (None, a)]
            rows = self._metrics_rows(e)
            if rows is None:
                parts.append(layer_metrics([self.epoch(e, a) for a in analyses]))
            else:
                rows = [r for r in rows if r["analysis"] in analyses]
                parts.append(pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({"n_clusters": "int64"}))
        parts = [p for p in parts if not p.empty]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=METRIC_COLUMNS)
        return table.astype({c: "float64" for c in METRIC_COLUMNS[6:]})

    def confusion(self, *, zeros: bool = True):
        """The held-out confusion matrix at every snapshot: a tidy DataFrame (epoch, true, predicted,
        count), see :func:`flowcallback.core.history.confusion`. ``zeros=False`` keeps the nonzero
        cells only (at most one row per held-out sample and epoch: what to ask for with many classes)."""
        from flowcallback.core.history import confusion

        return confusion(list(self.graphs("activations")), zeros=zeros)

    def class_scores(self):
        """Each class's precision and recall at every snapshot (:func:`flowcallback.core.history.class_scores`)."""
        from flowcallback.core.history import class_scores

        return class_scores(list(self.graphs("activations")))

    def epoch_flows(self, column: str, analysis: str = "activations", *, max_samples: int = 5):
        """Samples moving between ``column``'s clusters from each snapshot to the next.

        ``column`` is a layer name or ``"Prediction"``. A tidy DataFrame, see
        :func:`flowcallback.core.history.epoch_flows`.
        """
        from flowcallback.core.history import epoch_flows

        return epoch_flows(list(self.graphs(analysis)), column, max_samples=max_samples)

    def sample_history(self, samples, analysis: str = "activations"):
        """Chosen samples' prediction and cluster in every layer column at every epoch, as a tidy
        DataFrame (:func:`flowcallback.core.history.sample_history`): when a sample was first
        predicted as its label, or as another class (a mislabeled sample being memorised).

        Parameters
        ----------
        samples : int or sequence of int
            Indices in the held-out set (as the pages' hovers and ``compare`` list them).
        analysis : {"activations", "lrp"}, default="activations"
        """
        from flowcallback.core.history import sample_history

        return sample_history(list(self.graphs(analysis)), samples)

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
            raise KeyError(f"no epoch has a {analysis!r} projection of layer {layer!r}{_only_activations(analysis)}; "
                           f"the run has {where}")
        return pd.concat(parts, ignore_index=True)

    # -- one epoch ------------------------------------------------------------------------------------
    def class_profiles(self, epoch: int, analysis: str = "activations", **kwargs):
        """When each class gets separated at this epoch (see :func:`flowcallback.core.metrics.class_profiles`)."""
        from flowcallback.core.metrics import class_profiles

        return class_profiles(self.epoch(epoch, analysis), **kwargs)

    def compare(self, epoch_a: int, epoch_b: int, analysis: str = "activations"):
        """Compare two epochs: per layer ARI between their clusterings, and the samples whose path changed.

        A sample's path changed at a layer when its cluster at ``epoch_b`` is not the match (Hungarian
        on Jaccard overlap) of its cluster at ``epoch_a`` (:func:`flowcallback.core.compare.compare_epochs`).
        """
        from flowcallback.core.compare import compare_epochs

        # ValueError when the epochs were taken on other held-out samples (a resume on another set)
        return compare_epochs(self.epoch(epoch_a, analysis), self.epoch(epoch_b, analysis))

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

    def neuron_clusters(self, epoch: int, layer: str, analysis: str = "activations"):
        """The units of ``layer`` grouped by how they respond to the classes, at ``epoch`` (CNNVis).

        Computed at snapshot time (:mod:`flowcallback.core.neurons`): each unit's class means
        (:meth:`class_means`) z-scored over the classes, grouped by Ward's linkage; the clusters ×
        classes matrix ordered by optimal leaf ordering (similar rows and columns adjacent); per
        cluster, the held-out samples with the highest mean response over its units.

        Parameters
        ----------
        epoch : int
        layer : str
        analysis : str, default="activations"
            The snapshots cluster the units of the activations.

        Returns
        -------
        pandas.DataFrame
            One row per cluster and class, clusters in their seriation order, then classes in
            theirs: ``cluster`` (0, 1, ...), ``class`` (name), ``response`` (the cluster's mean
            z-scored class mean: above 0, its units prefer the class), ``n_units``, ``units`` (the
            unit indices) and ``top_samples`` (held-out sample indices, best first; empty where the
            snapshot kept no per-sample responses for the layer). ``attrs`` holds ``epoch``,
            ``layer``, ``analysis``, ``classes`` (the class index of each column of
            ``df.pivot(index="cluster", columns="class", values="response")`` in order) and
            ``flat_units`` (units whose class means are all equal, in no cluster).

        Raises
        ------
        KeyError
            If the epoch has no neuron clusters for this layer (a run written before they were
            stored, ``neuron_clusters=False``); the message lists what it has.
        """
        import pandas as pd

        from flowcallback.core import neurons

        v = self.views(epoch)
        have = sorted(v.unit_clusters) if v is not None else []
        if v is None or (analysis, layer) not in v.unit_clusters:
            raise KeyError(f"epoch {epoch} has no {analysis!r} neuron clusters of layer {layer!r}; it has {have} "
                           "(runs written before flowcallback stored them, or with neuron_clusters=False, have none)")
        u = v.unit_clusters[(analysis, layer)]
        matrix = neurons.cluster_matrix(v.class_means[(analysis, layer)], u.labels)
        _, classes = neurons.seriate(matrix)
        names, sizes = self.class_names, u.sizes()
        rows = []
        for c in range(u.n_clusters):
            units = tuple(int(i) for i in np.flatnonzero(u.labels == c))
            top = tuple(int(s) for s in u.top_samples[c] if s >= 0)
            rows += [(c, names[k], float(matrix[c, k]), int(sizes[c]), units, top) for k in classes]
        df = pd.DataFrame(rows, columns=["cluster", "class", "response", "n_units", "units", "top_samples"])
        df["class"] = pd.Categorical(df["class"], categories=[names[k] for k in classes], ordered=True)
        df.attrs.update(epoch=int(epoch), layer=layer, analysis=analysis, classes=[int(k) for k in classes],
                        flat_units=[int(i) for i in np.flatnonzero(u.labels < 0)])
        return df

    # -- figures, for notebooks and scripts -----------------------------------------------------------
    def figure(self, epoch: Optional[int] = None, analysis: Optional[str] = None, *,
               max_clusters: Optional[int] = MAX_DRAWN_CLUSTERS):
        """The epoch's Sankey as a ``plotly.graph_objects.Figure`` (restyle it, then ``.show()``).

        ``epoch=None`` is the last one; ``analysis=None`` gives every analysis of the epoch, with
        buttons to switch, as its page does (each with its own notes). A layer of more
        than ``max_clusters`` clusters draws its smallest as one node, as the pages do; None draws
        every cluster.
        """
        from flowcallback.core import render

        epoch = self._last_epoch() if epoch is None else epoch
        names = self.analyses(epoch) if analysis is None else [analysis]
        return render.figure({a: self.epoch(epoch, a) for a in names}, title_prefix=self.info["model"]["name"],
                             max_clusters=max_clusters)

    def across_figure(self, column: str = "Prediction", analysis: str = "activations", *,
                      true_class: int | str | None = None, changed_only: bool = False):
        """One column's clusters across the epochs, as a Sankey.

        See :func:`flowcallback.core.render.epoch_flows_figure` and :meth:`epoch_flows`.
        """
        from flowcallback.core import render

        self._last_epoch()
        return render.epoch_flows_figure(self.epoch_flows(column, analysis), self.class_names, column,
                                         true_class=true_class, changed_only=changed_only)

    def confusion_figure(self, *, min_share: float = 0.02, max_cells: int = 12):
        """The confusions that matter over training (:func:`flowcallback.core.render.confusion_figure`)."""
        from flowcallback.core import render

        self._last_epoch()
        return render.confusion_figure(list(self.graphs("activations")), min_share=min_share, max_cells=max_cells)

    def scores_figure(self):
        """Each class's recall and precision over training (:func:`flowcallback.core.render.class_scores_figure`)."""
        from flowcallback.core import render

        self._last_epoch()
        return render.class_scores_figure(list(self.graphs("activations")))

    def class_means_figure(self, epoch: Optional[int] = None, layer: Optional[str] = None,
                           analysis: str = "activations", *, order: str = "similarity", difference=None,
                           top: int = 20, normalize: bool = False, scale: str = "raw", title: Optional[str] = None):
        """A heatmap of :meth:`class_means` (:func:`flowcallback.core.views_figures.class_means_figure`).

        ``epoch=None`` is the last epoch with class means, ``layer=None`` its last layer that has them.
        """
        from flowcallback.core import views_figures

        epoch, layer = self._view_defaults("class_means", "class means", epoch, layer, analysis,
                                           "the run was written by a flowcallback that did not store them")
        return views_figures.class_means_figure(self.class_means(epoch, layer, analysis, order=order),
                                                difference=difference, top=top, normalize=normalize, scale=scale,
                                                title=title)

    def neuron_clusters_figure(self, epoch: Optional[int] = None, layer: Optional[str] = None,
                               analysis: str = "activations", *, title: Optional[str] = None):
        """The seriated unit clusters × classes matrix of :meth:`neuron_clusters`
        (:func:`flowcallback.core.views_figures.neuron_clusters_figure`).

        ``epoch=None`` is the last epoch with neuron clusters, ``layer=None`` its last layer that has them.
        """
        from flowcallback.core import views_figures

        epoch, layer = self._view_defaults("unit_clusters", "neuron clusters", epoch, layer, analysis,
                                           "the run was written by a flowcallback that did not store them, "
                                           "or with neuron_clusters=False")
        return views_figures.neuron_clusters_figure(self.neuron_clusters(epoch, layer, analysis), title=title)

    def projection_figure(self, layer: Optional[str] = None, analysis: str = "activations", *,
                          title: Optional[str] = None, frame_ms: int = 800):
        """A layer's 2-D projection animated over the epochs.

        ``layer=None`` is the last layer projected. See :meth:`projection` and
        :func:`flowcallback.core.views_figures.projection_figure`.
        """
        from flowcallback.core import views_figures

        self._last_epoch()
        if layer is None:
            keys = {k for e in self.epochs if self.views(e) is not None for k in self.views(e).projections}
            layer = self._last_layer(keys, analysis)
            if layer is None:
                raise KeyError(f"{self.path}: no epoch has a {analysis!r} projection" + _why_no_projection(
                    analysis, keys, " (the run was written by a flowcallback that did not store them, or the "
                    "snapshots computed none)"))
        if title is None:
            title = (f"{ANALYSIS_LABELS.get(analysis, analysis)} of {layer}: 2-D projection over the epochs "
                     "(filled: right prediction, open: wrong)")
        return views_figures.projection_figure(self.projection(layer, analysis), self.class_names, title=title,
                                               frame_ms=frame_ms)

    #: The views of :meth:`show`, and the method drawing each.
    VIEWS = {"epoch": "figure", "across": "across_figure", "confusion": "confusion_figure",
             "scores": "scores_figure", "class_means": "class_means_figure", "neurons": "neuron_clusters_figure",
             "projection": "projection_figure"}

    def show(self, view: str = "epoch", **kwargs):
        """A view of the run as a Plotly figure (a notebook displays the returned figure).

        Parameters
        ----------
        view : {"epoch", "across", "confusion", "scores", "class_means", "neurons", "projection"}
            Which figure: :meth:`figure` (one epoch's Sankey), :meth:`across_figure` (one column
            across the epochs), :meth:`confusion_figure`, :meth:`scores_figure`,
            :meth:`class_means_figure`, :meth:`neuron_clusters_figure` or :meth:`projection_figure`.
        **kwargs
            That method's arguments; any other raises ``TypeError`` naming it and listing those
            the view takes.

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
        >>> run.show("scores", nonsense=True)
        Traceback (most recent call last):
        ...
        TypeError: show('scores'): unexpected argument 'nonsense'; this view takes no arguments
        >>> shutil.rmtree(log_dir)
        """
        if view not in self.VIEWS:
            raise ValueError(f"view: expected one of {tuple(self.VIEWS)}, got {view!r}")
        method = getattr(self, self.VIEWS[view])
        accepted = list(inspect.signature(method).parameters)
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            takes = f"this view takes {', '.join(accepted)}" if accepted else "this view takes no arguments"
            raise TypeError(f"show({view!r}): unexpected argument {unknown[0]!r}; {takes}")
        return method(**kwargs)

    #: The views :meth:`save_animation` writes as a video.
    ANIMATIONS = ("projection", "flows")

    def save_animation(self, path: PathLike, view: str = "projection", layer: Optional[str] = None,
                       analysis: str = "activations", *, fps: float = 2.0, width: int = 1280, height: int = 720,
                       browser: Optional[PathLike] = None) -> Path:
        """Write a view over the epochs as a video: an MP4 or an animated GIF, one frame per snapshot epoch.

        For a slide, a paper's supplement or a chat, where the animated figures of :meth:`show`
        cannot go. Each frame is rendered by Plotly's static export (kaleido) in the installed
        Chromium; needs the video extra: ``pip install "flowcallback[video]"``
        (:mod:`flowcallback.video`).

        Parameters
        ----------
        path : str or path
            Ends in ``.mp4`` (H.264: browsers, slides, chats) or ``.gif``. Written to a temporary
            directory beside it, then renamed over it: a failure leaves no partial file.
        view : {"projection", "flows"}, default="projection"
            ``"projection"``: :meth:`projection_figure` at each epoch that has a projection of
            ``layer``, on axes fixed over the epochs, so that points move without the picture being
            rescaled. ``"flows"``: each epoch's Sankey (:meth:`figure`), every column, as the run
            page's epoch slider plays it (clusters keep their ids and start from their previous
            place); one frame per epoch that has ``analysis``.
        layer : str, optional
            For ``"projection"``: the projected layer (default: the deepest one, as
            :meth:`projection_figure`). ``"flows"`` takes none.
        analysis : str, default="activations"
            ``"activations"`` or ``"lrp"``.
        fps : float, default=2
            Frames (epochs) per second.
        width, height : int, default=1280, 720
            Frame size in pixels (even numbers for an MP4).
        browser : str or path, optional
            Chromium or Chrome executable; default ``$BROWSER_PATH``, else ``chromium`` on ``PATH``.

        Returns
        -------
        pathlib.Path
            The video written.

        Raises
        ------
        ValueError
            For an unknown view, analysis or layer (listing those the run has), a run where no
            epoch has the layer's projection, a bad suffix, fps or size: each naming the argument.
        ImportError
            If the video extra is not installed, saying so.
        RuntimeError
            If no Chromium or Chrome is found, or a frame cannot be rendered.

        Examples
        --------
        >>> run = load_run("flows/run1")                                        # doctest: +SKIP
        >>> run.save_animation("projection.mp4", layer="dense84", fps=2)        # doctest: +SKIP
        PosixPath('projection.mp4')
        >>> run.save_animation("flows.gif", view="flows", width=1200, height=800)  # doctest: +SKIP
        PosixPath('flows.gif')
        """
        from flowcallback import video

        if view not in self.ANIMATIONS:
            raise ValueError(f"view: expected one of {self.ANIMATIONS}, got {view!r}")
        video.check_options(path, fps=fps, width=width, height=height)
        self._last_epoch()
        analyses = list(dict.fromkeys(a for e in self.epochs for a in self.analyses(e)))
        if analysis not in analyses:
            raise ValueError(f"analysis: expected one of {analyses} (the analyses of this run), got {analysis!r}")
        if view == "projection":
            layer = self._projected_layer(layer, analysis)
            figures = self._projection_stills(layer, analysis)
        else:
            if layer is not None:
                raise ValueError(f"layer: view='flows' draws every column of each epoch's Sankey and takes no layer "
                                 f"(layer is for view='projection'), got {layer!r}")
            figures = (self.figure(e, analysis) for e in self.epochs if analysis in self.analyses(e))
        return video.write_animation(figures, path, fps=fps, width=width, height=height, browser=browser)

    def _projected_layer(self, layer: Optional[str], analysis: str) -> str:
        """``layer`` if some epoch has its ``analysis`` projection (default: the deepest that has
        one); else ValueError naming the layers that have one."""
        keys = {k for e in self.epochs if self.views(e) is not None for k in self.views(e).projections}
        order = [entry["name"] for entry in self.info.get("layers", [])]
        available = sorted({name for a, name in keys if a == analysis},
                           key=lambda n: order.index(n) if n in order else -1)
        if not available:
            raise ValueError(f"view='projection': no epoch of {self.path} has a {analysis!r} projection" +
                             _why_no_projection(analysis, keys, " (the run was written with projection=None, or by a "
                                                "flowcallback that did not store projections)"))
        if layer is None:
            return available[-1]
        if layer in available:
            return layer
        if layer in order:
            raise ValueError(f"layer: no epoch of this run has a {analysis!r} projection of {layer!r}; the layers "
                             f"that have one: {available}")
        raise ValueError(f"layer: expected one of the layers with a {analysis!r} projection, {available}, "
                         f"got {layer!r}")

    def _projection_stills(self, layer: str, analysis: str):
        """The frames of the projection video: :meth:`projection_figure`'s frames as still figures,
        the epoch (and the accuracy) in each title, the axes those of the whole animation."""
        from flowcallback import video
        from flowcallback.core import views_figures

        fig = views_figures.projection_figure(self.projection(layer, analysis), self.class_names)
        label = ANALYSIS_LABELS.get(analysis, analysis)

        def title(name: str) -> str:
            e = int(name)
            g = self.epoch(e, "activations" if "activations" in self.analyses(e) else self.analyses(e)[0])
            acc = g.metrics.get("accuracy")
            return (video.epoch_title(f"{label} of {layer}", e, None if acc is None else float(acc))
                    + "<br><sup>2-D projection; filled: right prediction, open: wrong</sup>")

        yield from video.static_frames(fig, title=title)

    def _view_defaults(self, field: str, what: str, epoch: Optional[int], layer: Optional[str], analysis: str,
                       why: str):
        """``epoch=None``: the last epoch whose views have ``field`` (``"class_means"``...);
        ``layer=None``: that epoch's last layer in it. KeyError naming ``what`` where there is none."""
        self._last_epoch()
        if epoch is None:
            having = [e for e in self.epochs if self.views(e) is not None and getattr(self.views(e), field)]
            if not having:
                raise KeyError(f"{self.path}: no epoch has {what} ({why})")
            epoch = having[-1]
        if layer is None:
            v = self.views(epoch)
            layer = self._last_layer(getattr(v, field) if v is not None else {}, analysis)
            if layer is None:
                raise KeyError(f"epoch {epoch} has no {analysis!r} {what}")
        return epoch, layer

    def _last_epoch(self) -> int:
        if not self.epochs:
            raise ValueError(f"{self.path} holds no complete epoch yet")
        return self.epochs[-1]

    def _last_layer(self, keys, analysis: str) -> Optional[str]:
        """The deepest layer among ``(analysis, layer)`` keys, in the run's layer order."""
        order = [layer["name"] for layer in self.info.get("layers", [])]
        mine = sorted((layer for a, layer in keys if a == analysis), key=lambda n: order.index(n) if n in order else -1)
        return mine[-1] if mine else None

    # -- display ---------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        """A compact summary in notebooks: epochs, layers, accuracy, and the last epoch's Sankey."""
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


class RunSets:
    """A run of several held-out sets (``FlowCallback({"clean": (x, y), "tampered": (x2, y2)})``):
    one ordinary :class:`Run` per set, in the folder named after it, and ``sets.json`` listing them.

    ``run_sets["clean"]`` is that set's :class:`Run`, with everything a run has (flows, metrics, class
    means, projections, figures). What is about two sets is here: :meth:`compare_sets` and
    :meth:`class_means_difference`.

    Attributes
    ----------
    path : pathlib.Path
    info : dict
        The content of ``sets.json``.

    Examples
    --------
    >>> import shutil
    >>> from flowcallback.demo import tiny_sets_run
    >>> run = load_run(tiny_sets_run())
    >>> run.names, run.epochs
    (['clean', 'shuffled'], [0, 1])
    >>> run["clean"].epoch(1).column_names
    ('dense', 'Prediction', 'Ground truth')
    >>> run.compare_sets(1, "clean", "shuffled")[["column", "ari_classes_a", "ari_classes_b"]]
      column  ari_classes_a  ari_classes_b
    0  dense            1.0           -0.5
    >>> shutil.rmtree(run.path)
    """

    def __init__(self, path: PathLike, *, strict: bool = False):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise RunFormatError(f"{self.path}: not a directory")
        self.info = store.read_sets_info(self.path)
        self.strict = bool(strict)
        self._runs: Dict[str, Run] = {}

    @property
    def names(self) -> List[str]:
        """The sets' names, in order."""
        return [entry["name"] for entry in self.info["sets"]]

    def __getitem__(self, name: str) -> Run:
        if name not in self.names:
            raise KeyError(f"no held-out set {name!r} in {self.path}; its sets are {self.names}")
        if name not in self._runs:
            self._runs[name] = Run(store.set_dir(self.path, name), strict=self.strict)
        return self._runs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name) -> bool:
        return name in self.names

    @property
    def epochs(self) -> List[int]:
        """The epochs every set has (complete and readable in each)."""
        common = None
        for name in self.names:
            epochs = set(self[name].epochs)
            common = epochs if common is None else common & epochs
        return sorted(common or ())

    @property
    def skipped(self) -> Dict[str, Dict[int, str]]:
        """Each set's :attr:`Run.skipped`, for the sets with an epoch skipped: ``{set: {epoch: reason}}``;
        empty for a healthy run, as a single set's."""
        return {name: self[name].skipped for name in self.names if self[name].skipped}

    def errors(self) -> Dict[str, Dict[int | str, str]]:
        """Each set's :meth:`Run.errors`, for the sets that recorded any: ``{set: {epoch or "setup": text}}``."""
        return {name: errors for name in self.names if (errors := self[name].errors())}

    @property
    def page(self) -> Path:
        """The page comparing the sets (``index.html``)."""
        return self.path / "index.html"

    def _pair(self, a: Optional[str], b: Optional[str]):
        if a is None or b is None:
            if len(self.names) < 2:
                raise ValueError(f"the run has one held-out set ({self.names[0]!r}): nothing to compare it with")
            a = a or next(n for n in self.names if n != b)
            b = b or next(n for n in self.names if n != a)
        run_a, run_b = self[a], self[b]
        if run_a.info["model"]["fingerprint"] != run_b.info["model"]["fingerprint"]:
            raise ValueError(f"the sets {a!r} and {b!r} hold runs of different models: not comparable")
        return a, b, run_a, run_b

    def layer_metrics(self, analysis: Optional[str] = None):
        """Every set's :meth:`Run.layer_metrics`, with a ``set`` column first."""
        import pandas as pd

        parts = [self[n].layer_metrics(analysis).assign(set=n) for n in self.names]
        table = pd.concat(parts, ignore_index=True)
        return table[["set"] + [c for c in table.columns if c != "set"]]

    def compare_sets(self, epoch: int, a: Optional[str] = None, b: Optional[str] = None,
                     analysis: str = "activations"):
        """Two held-out sets at ``epoch``, compared layer by layer (:func:`flowcallback.core.sets.compare_sets`).

        Parameters
        ----------
        epoch : int
        a, b : str, optional
            The sets (default: the first two).
        analysis : {"activations", "lrp"}, default="activations"

        Returns
        -------
        pandas.DataFrame
            One row per layer: each set's clusters, ARI and NMI against its classes and purity, the
            gaps (b minus a: negative where ``b`` separates its classes less), and how the units'
            class means differ (mean absolute and relative difference, and the unit that differs most).
        """
        from flowcallback.core.sets import compare_sets

        a, b, run_a, run_b = self._pair(a, b)

        def means(run):
            views = run.views(epoch)
            return {} if views is None else {layer: m for (an, layer), m in views.class_means.items() if an == analysis}

        return compare_sets(run_a.epoch(epoch, analysis), run_b.epoch(epoch, analysis), names=(a, b),
                            class_means_a=means(run_a), class_means_b=means(run_b))

    def class_means_difference(self, epoch: int, layer: str, a: Optional[str] = None, b: Optional[str] = None,
                               analysis: str = "activations"):
        """Each unit's class mean on set ``b`` minus that on set ``a`` at ``epoch`` (DNNViz's
        difference mode across data sets): classes × units, the classes with samples in both sets.

        Returns
        -------
        pandas.DataFrame
            Index: class names; columns: unit index; ``attrs`` names the epoch, layer, analysis and sets.
        """
        import pandas as pd

        from flowcallback.core.sets import class_mean_difference

        a, b, run_a, run_b = self._pair(a, b)
        ma = run_a.class_means(epoch, layer, analysis, order="class")
        mb = run_b.class_means(epoch, layer, analysis, order="class")
        difference, rows = class_mean_difference(ma.to_numpy(), mb.to_numpy())
        df = pd.DataFrame(difference, index=pd.Index([ma.index[i] for i in rows], name="class"),
                          columns=pd.RangeIndex(difference.shape[1], name="unit"))
        df.attrs.update(epoch=int(epoch), layer=layer, analysis=analysis, sets=(a, b))
        return df

    def compare_sets_figure(self, epoch: Optional[int] = None, a: Optional[str] = None, b: Optional[str] = None,
                            analysis: str = "activations"):
        """How each layer's clusters follow the classes in both sets (ARI), and the gap: a Plotly figure."""
        import plotly.graph_objects as go

        if epoch is None:
            if not self.epochs:
                raise ValueError(f"{self.path}: no epoch that every set has")
            epoch = self.epochs[-1]
        table = self.compare_sets(epoch, a, b, analysis)
        a, b = (table["set_a"].iloc[0], table["set_b"].iloc[0]) if len(table) else (a, b)
        fig = go.Figure([go.Scatter(x=table["column"], y=table["ari_classes_a"], mode="lines+markers", name=str(a)),
                         go.Scatter(x=table["column"], y=table["ari_classes_b"], mode="lines+markers", name=str(b)),
                         go.Bar(x=table["column"], y=table["ari_gap"], name=f"gap ({b} − {a})", opacity=0.4)])
        fig.update_layout(title=f"How each layer's clusters follow the classes, epoch {epoch}",
                          xaxis_title="layer", yaxis_title="ARI against the classes", xaxis_type="category")
        return fig

    def __repr__(self) -> str:
        try:
            epochs = self.epochs
        except RunFormatError:  # a set that cannot be read (its Run says why)
            epochs = "?"
        return f"RunSets({str(self.path)!r}, sets={self.names}, epochs={epochs})"


def load_run(log_dir: PathLike, *, strict: bool = False) -> Run | RunSets:
    """Open a run directory written by :class:`~flowcallback.FlowCallback`.

    Parameters
    ----------
    log_dir : str or path
        The ``log_dir`` given to the callback.
    strict : bool, default=False
        What an epoch whose files cannot be read (damaged, truncated, not matching ``run.json``)
        does: it is left out of :attr:`Run.epochs` and listed in :attr:`Run.skipped` with the
        reason (False), or raises :class:`~flowcallback.RunFormatError` when the epochs are listed (True).

    Returns
    -------
    Run or RunSets
        Lists the complete, readable epochs (reading each once, when first listed). A run of
        several held-out sets (``sets.json``) gives a :class:`RunSets`, one :class:`Run` per set.

    Raises
    ------
    RunFormatError
        If ``run.json`` is missing or invalid: it describes the whole run, so nothing is read without it.

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
    path = Path(log_dir).expanduser()
    if not os.path.lexists(path / "run.json") and os.path.lexists(path / store.SETS_FILE):
        return RunSets(path, strict=strict)
    return Run(path, strict=strict)
