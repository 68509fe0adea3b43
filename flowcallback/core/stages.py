"""One snapshot's analysis as one pure function: embeddings in, flow graphs and metrics out.

The capture (:mod:`~flowcallback.core.capture`, :mod:`~flowcallback.core.lrp`) runs the model
and reduces each layer's maps to an embedding. :func:`analyse` does the rest, stage by stage:

``knn`` and ``mcl``
    each layer's cosine kNN graph and its Markov clusters (:func:`~flowcallback.core.cluster.cluster_layer`);
``match``
    the clusters keep their id from the previous snapshot where they persist
    (:func:`~flowcallback.core.match.relabel`);
``flows``
    columns, ordering and flows (:func:`~flowcallback.core.flows.build_flow_graph`);
``metrics``
    the layer metrics (:func:`~flowcallback.core.metrics.layer_metrics`), computed once here and
    shared by the epoch's ``metrics.json``, the run page, TensorBoard and ``Run.layer_metrics()``;
``projection``
    each layer's activations projected to 2-D, aligned onto the previous snapshot's projection
    (:func:`~flowcallback.core.project.project_layers`).

The class means (:mod:`~flowcallback.core.aggregate`) are computed during the capture, from the
raw maps, and go from there to the store (:class:`~flowcallback.core.flows.EpochViews`): no stage
here reads them.

It starts no thread or process and touches no file; :class:`~flowcallback.pipeline.Snapshotter`
runs it during training and ``benchmarks/paper_scale.py`` times it.

**Notes.** A note is one sentence shown with a graph, a :class:`~flowcallback.core._notes.Note`
whose kind (problem or information) is said where it is made. A *graph note* concerns the whole graph (a
missing loss, an LRP failure), a *column note* one column (dead units, a parallel branch). Either
holds for every analysis of the snapshot or for one analysis only (``Captured.analysis_notes``).

**Stage hooks.** Each stage runs inside ``clock(stage, analysis=..., layer=...)``, a context
manager; :class:`StageClock` sums the seconds per stage. A subclass can observe or interrupt a
named stage (the fault-injection tests do).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from flowcallback.core import cluster, flows, match, metrics, project
from flowcallback.core._notes import Note, first_line, name_list, problem
from flowcallback.core.flows import ANALYSIS_LABELS

__all__ = ["Captured", "Continuity", "SnapshotAnalysis", "StageClock", "analyse", "left_out_notes"]


def left_out_notes(label: str, left_out: Sequence[Tuple[str, BaseException]], first: int = 5) -> List[Note]:
    """The graph notes for the layers whose kNN or MCL failed: one per layer, the first ``first``
    of them; one more names the others (however many layers failed, a graph has few notes).

    Parameters
    ----------
    label : str
        The analysis as pages name it (``"Activations"``).
    left_out : sequence of (layer name, exception)
    first : int, default=5

    Returns
    -------
    list of Note
        Problems.

    Examples
    --------
    >>> left_out_notes("Activations", [("dense", MemoryError())])
    [problem('Activations: layer dense left out of this epoch (MemoryError)')]
    >>> notes = left_out_notes("Activations", [(f"conv_{i}", ValueError("boom")) for i in range(40)])
    >>> len(notes)
    6
    >>> print(notes[-1])
    Activations: 35 more layers left out of this epoch (conv_5, conv_6, conv_7, conv_8, conv_9 and 30 more;
    the errors are in the epoch's error file)
    """
    notes = [problem(f"{label}: layer {name} left out of this epoch ({first_line(exc)})")
             for name, exc in left_out[:first]]
    rest = [name for name, _ in left_out[first:]]
    if rest:
        notes.append(problem(f"{label}: {len(rest)} more layer{'s' if len(rest) > 1 else ''} left out of this epoch "
                             f"({name_list(rest)}; the errors are in the epoch's error file)"))
    return notes


class StageClock:
    """Seconds spent in each named stage; thread-safe, since layers may be clustered in parallel.

    ``clock(stage, analysis=None, layer=None)`` is a context manager that adds the time spent in
    its block to ``clock.seconds[stage]``. Per-layer stages (``knn``, ``mcl``) run in parallel
    when :func:`analyse` is given a parallel ``map``: their sum is then CPU time, and the wall
    time of all of them is the ``cluster`` stage.

    Examples
    --------
    >>> clock = StageClock()
    >>> with clock("flows"):
    ...     pass
    >>> sorted(clock.seconds)
    ['flows']
    """

    def __init__(self, epoch: Optional[int] = None):
        self.epoch = epoch
        self.seconds: Dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def enter(self, stage: str, analysis: Optional[str], layer: Optional[str]) -> None:
        """Called as a stage starts; does nothing here (subclasses observe or interrupt)."""

    def add(self, seconds: Mapping[str, float]) -> None:
        """Add the seconds another clock measured (a job's, in another thread or process)."""
        with self._lock:
            for stage, t in seconds.items():
                self.seconds[stage] += t

    @contextlib.contextmanager
    def __call__(self, stage: str, *, analysis: Optional[str] = None, layer: Optional[str] = None):
        self.enter(stage, analysis, layer)
        t = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] += time.perf_counter() - t


@dataclass(frozen=True)
class Captured:
    """What the capture gives one snapshot: the inputs of :func:`analyse`.

    Attributes
    ----------
    epoch : int
    embeddings : mapping of analysis to (mapping of layer name to ndarray)
        Each layer's embedded maps (:mod:`flowcallback.core.embed`), of shape (n_samples, d).
        A layer missing from an analysis is left out of its graph.
    labels, predictions : ndarray of shape (n_samples,)
    metrics : mapping
        Graph metrics of every analysis (accuracy, loss, k, inflation).
    analysis_metrics : mapping of analysis to mapping
        Extra graph metrics of one analysis (the LRP engine).
    notes, analysis_notes, column_notes :
        Graph notes of every analysis, graph notes of one analysis, and column notes of every
        analysis (see the module's docstring).
    """

    epoch: int
    embeddings: Mapping[str, Mapping[str, np.ndarray]]
    labels: np.ndarray
    predictions: np.ndarray
    metrics: Mapping[str, object] = field(default_factory=dict)
    analysis_metrics: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    analysis_notes: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    column_notes: Mapping[str, str] = field(default_factory=dict)
    held_out: str = ""


@dataclass(frozen=True)
class Continuity:
    """What one snapshot hands to the next: each layer column's cluster ids and order, and each
    layer's 2-D projection.

    Clusters that persist keep their id (and their place) from one snapshot to the next, and
    projected points move from their previous place rather than jump.
    """

    clusters: Mapping[Tuple[str, str], np.ndarray] = field(default_factory=dict)
    orders: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict)
    projections: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_graphs(cls, graphs: Iterable[flows.FlowGraph],
                    projections: Optional[Mapping[str, np.ndarray]] = None) -> Continuity:
        """The continuity that a snapshot's graphs (one per analysis) and projections leave."""
        clusters, orders = {}, {}
        for g in graphs:
            orders[g.analysis] = {c.name: c.order for c in g.columns if c.kind == "layer"}
            for j, c in enumerate(g.columns):
                if c.kind == "layer":
                    clusters[(g.analysis, c.name)] = np.array(g.assignments[:, j])
        return cls(clusters, orders, dict(projections or {}))

    @classmethod
    def resumed(cls, graphs: Iterable[flows.FlowGraph], views: Optional[flows.EpochViews], labels: np.ndarray,
                projection_samples: Optional[np.ndarray]) -> Continuity:
        """The continuity of a stored epoch (its graphs and views), for a run appended to.

        Nothing continues across another held-out set (other labels), and projections continue only
        for the same projected samples.
        """
        graphs = list(graphs)
        if not all(g.n_samples == len(labels) and np.array_equal(g.labels, labels) for g in graphs):
            return cls()
        same = (views is not None and views.projection_samples is not None and projection_samples is not None
                and np.array_equal(views.projection_samples, projection_samples))
        projections = {n: p for (a, n), p in views.projections.items() if a == "activations"} if same else {}
        return cls.from_graphs(graphs, projections)


@dataclass(frozen=True)
class SnapshotAnalysis:
    """What :func:`analyse` returns.

    Attributes
    ----------
    graphs : dict of analysis to FlowGraph
    metrics : pandas.DataFrame
        :func:`flowcallback.core.metrics.layer_metrics` of every graph.
    left_out : dict of (analysis, layer) to Exception
        Layers whose kNN or MCL failed; each is left out of its graph, with a graph note.
    continuity : Continuity
        For the next snapshot.
    seconds : dict of stage to float
        From the clock (see :class:`StageClock`).
    projections : dict of (analysis, layer) to ndarray (n_projected, 2)
        The activations' 2-D projections (empty with ``projection=None``).
    projection_method : str or None
        ``"umap"`` or ``"pca"``: what made them.
    projection_error : Exception or None
        Why the projection failed (the rest of the analysis stands, with a graph note).
    """

    graphs: Dict[str, flows.FlowGraph]
    metrics: pd.DataFrame
    left_out: Dict[Tuple[str, str], BaseException]
    continuity: Continuity
    seconds: Dict[str, float]
    projections: Dict[Tuple[str, str], np.ndarray] = field(default_factory=dict)
    projection_method: Optional[str] = None
    projection_error: Optional[BaseException] = None


def cluster_layer_job(job):
    """kNN + MCL of one layer, timed by a clock of the caller's kind made here (a job may run in
    another process, where the caller's clock cannot go). The error is returned, not raised, so
    that one layer cannot stop the others."""
    (analysis, layer), vectors, k, settings, clock_type, epoch = job
    clock = clock_type(epoch)
    try:
        labels = cluster.cluster_layer(vectors, k, settings["inflation"], settings["index"], settings["mcl_backend"],
                                       settings["mcl_threads"], clock=clock, analysis=analysis, layer=layer,
                                       knn_backend=settings.get("knn_backend", "faiss"))
        return (analysis, layer), labels, None, dict(clock.seconds)
    except Exception as exc:
        return (analysis, layer), None, exc, dict(clock.seconds)


def analyse(
    captured: Captured,
    layers: Sequence[Tuple[str, str]],
    *,
    k: int,
    inflation: float = cluster.DEFAULT_INFLATION,
    index: str = "auto",
    mcl_backend: str = "fast",
    mcl_threads: Optional[int] = None,
    knn_backend: str = "faiss",
    class_names: Optional[Sequence[str]] = None,
    previous: Optional[Continuity] = None,
    map: Callable = map,  # noqa: A002 - the builtin's name, as concurrent.futures.Executor.map has it
    clock: Optional[StageClock] = None,
    projection: Optional[str] = None,
    projection_layers: Optional[Sequence[str]] = None,
    projection_samples: Optional[np.ndarray] = None,
) -> SnapshotAnalysis:
    """Cluster every layer of every analysis, keep the ids stable, link the columns into flows.

    Parameters
    ----------
    captured : Captured
    layers : sequence of (layer name, layer type)
        The analysed layers in model order.
    k : int
        Neighbours of the kNN graph (already resolved: :func:`flowcallback.core.knn.resolve_k`).
    inflation, index, mcl_backend, mcl_threads, knn_backend :
        As for :func:`flowcallback.core.cluster.cluster_layer` (the backends resolved:
        :func:`flowcallback.core.cluster.choose_engines`).
    class_names : sequence of str, optional
    previous : Continuity, optional
        The previous snapshot's, for stable cluster ids.
    map : callable, default=map
        Maps the per-layer clustering over the layers: the builtin (one after the other), or an
        executor's ``map`` to cluster layers in parallel.
    clock : StageClock, optional
        The stage hook; a new :class:`StageClock` by default.
    projection : {"auto", "umap", "pca"} or None, default=None
        Project the activations of ``projection_layers`` (default: every layer) to 2-D, for the
        samples ``projection_samples`` (default: all), aligned onto ``previous.projections``.

    Returns
    -------
    SnapshotAnalysis

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.embed import embed
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> maps = np.eye(4)[y * 2] + 0.01 * rng.random((40, 4))
    >>> c = Captured(epoch=0, embeddings={"activations": {"dense": embed(maps)}}, labels=y, predictions=y)
    >>> result = analyse(c, [("dense", "Dense")], k=10)
    >>> list(result.graphs["activations"].column_names)
    ['dense', 'Prediction', 'Ground truth']
    >>> result.metrics[["column", "n_clusters", "nmi_classes"]].values.tolist()
    [['dense', 2, 1.0]]
    """
    clock = clock if clock is not None else StageClock(captured.epoch)
    previous = previous if previous is not None else Continuity()
    settings = {"inflation": inflation, "index": index, "mcl_backend": mcl_backend, "mcl_threads": mcl_threads,
                "knn_backend": knn_backend}
    jobs = [((analysis, name), emb[name], k, settings, type(clock), clock.epoch)
            for analysis, emb in captured.embeddings.items() for name, _ in layers if name in emb]
    results, left_out = {}, {}
    if mcl_backend == "fast" and jobs:
        with clock("compile"):  # once per install (numba's cache), once per process (its load): not per snapshot
            cluster.warm_up()
    with clock("cluster"):
        for key, labels, exc, seconds in map(cluster_layer_job, jobs):
            clock.add(seconds)
            if exc is not None:
                left_out[key] = exc
            else:
                results[key] = labels
    projections, method, error = {}, None, None
    activations = captured.embeddings.get("activations", {})
    if projection is not None and activations:
        names = [n for n, _ in layers if n in activations and (projection_layers is None or n in projection_layers)]
        try:
            with clock("projection"):
                method = project.resolve_method(projection)
                projections = project.project_layers(activations, previous.projections or None, method=method,
                                                     samples=projection_samples, layers=names)
        except Exception as exc:  # the flows do not depend on it: they stand, and a note says why it is missing
            projections, method, error = {}, None, exc
    column_notes: Dict[str, Dict[str, str]] = defaultdict(dict)
    with clock("match"):
        for key, labels in results.items():
            before = previous.clusters.get(key)
            if before is not None and len(before) == len(labels):
                results[key], _ = match.relabel(before, labels)  # persistent clusters keep their id
            note = cluster.layer_note(captured.embeddings[key[0]][key[1]], results[key], k, analysis=key[0])
            if note:
                column_notes[key[0]][key[1]] = note
    graphs = {}
    with clock("flows"):
        for analysis in captured.embeddings:
            layer_clusters = [(name, kind, results[(analysis, name)]) for name, kind in layers
                              if (analysis, name) in results]
            notes = dict(captured.column_notes)
            for name, extra in column_notes[analysis].items():
                notes[name] = f"{notes[name]}; {extra}" if name in notes else extra
            label = ANALYSIS_LABELS.get(analysis, analysis)
            left = left_out_notes(label, [(name, exc) for (a, name), exc in left_out.items() if a == analysis])
            graph_metrics = {**captured.metrics, **captured.analysis_metrics.get(analysis, {})}
            graphs[analysis] = flows.build_flow_graph(
                layer_clusters, captured.labels, captured.predictions, class_names=class_names,
                epoch=captured.epoch, analysis=analysis,
                metrics={name: flows.clean_metric(v) for name, v in graph_metrics.items()},
                initial_orders=previous.orders.get(analysis), notes=notes, held_out=captured.held_out,
                graph_notes=(*captured.notes, *left, *captured.analysis_notes.get(analysis, ()),
                             *([problem(f"projection left out of this epoch ({first_line(error)})")] if error else [])),
            )
    with clock("metrics"):
        table = metrics.layer_metrics(graphs.values())
    return SnapshotAnalysis(graphs=graphs, metrics=table, left_out=left_out,
                            continuity=Continuity.from_graphs(graphs.values(), projections or previous.projections),
                            seconds=dict(clock.seconds),
                            projections={("activations", n): p for n, p in projections.items()},
                            projection_method=method, projection_error=error)
