"""The two ways in: :class:`FlowCallback` decides when to take a snapshot during ``fit``, and
:func:`snapshot` takes one of a model already trained. The runner (:mod:`flowcallback.pipeline`)
and the stages (:mod:`flowcallback.core`) do the work."""
from __future__ import annotations

import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Optional

import tensorflow as tf

from flowcallback import _validation as checks
from flowcallback._fit_guard import FitGuard
from flowcallback._progress import LiveFigure, SnapshotProgress
from flowcallback._schedule import BudgetSchedule, epoch_ranges, ranges_text, skipped_text
from flowcallback._sets import SetsSnapshotter, make_snapshotter
from flowcallback.core import cluster, knn, project
from flowcallback.settings import SnapshotSettings, check_parameter

__all__ = ["FlowCallback", "snapshot"]


class FlowCallback(tf.keras.callbacks.Callback):
    """Snapshot how a classifier separates its classes, layer by layer, during ``model.fit``.

    At each chosen epoch the held-out set goes through the model; for every selected layer its
    activations and its LRP relevance (iNNvestigate) are clustered (cosine kNN graph + MCL), and
    the clusters of consecutive layers are linked into flows, ending in a Prediction and a Ground
    truth column. Each snapshot writes ``log_dir/epoch_XXX.html`` (an interactive Sankey page,
    offline) and ``log_dir/graphs/epoch_XXX/`` (data for :func:`flowcallback.load_run`).

    **Epoch numbers** count completed training epochs: snapshot 0 is the untrained model (taken
    before the first training step), snapshot ``e`` is the model after ``e`` epochs, i.e. at the end
    of the epoch Keras prints as ``Epoch e/N``. The same numbers are used in file names, in
    ``epochs`` and in the API.

    Parameters
    ----------
    validation_data : (x, y) tuple of arrays, tf.data.Dataset of (x, y) batches, or named sets
        The held-out set. ``y`` holds integer labels or one-hot rows. Several sets, named:
        ``{"clean": (x, y), "tampered": (x2, y2)}`` or a list of ``(name, data)`` pairs. Every
        snapshot then analyses each set with the same layers and settings, and writes each as an
        ordinary run in ``log_dir/<name>/``; ``log_dir/index.html`` compares them (one set, or two
        side by side) and :meth:`flowcallback.RunSets.compare_sets` gives the figures. A name is 1
        to 64 letters, digits, ``_``, ``-`` or ``.``; the sets share the input shape and classes.
    log_dir : str or path, default="flows"
        Run directory, as for the TensorBoard callback. Reusing it with the same model appends epochs.
    epochs : None, int or list of int, default=None
        When to take snapshots: None for the epochs ``budget`` affords (every epoch with
        ``budget=None``); an int ``N`` for every N-th epoch counting from 0 (0, N, 2N...); a list
        for exactly those epochs. Given, it turns the budget off.
    budget : "auto", float in (0, 1] or None, default="auto"
        The share of the training's wall time that snapshots may add. The callback measures the
        epochs and what its snapshots cost as training goes, and takes a snapshot whenever the
        budget allows: always the untrained model and the last epoch, and between them epochs
        spread geometrically (denser early, where most changes happen). ``"auto"``: 0.25, unless
        ``epochs`` is given. None: every epoch. ``run.json``, the run page and the progress lines
        say which epochs were taken, why the others were skipped, and how much was spent.
    layers : None, "all" or list of str, default=None
        The columns. None: every layer but inputs, dropout/noise/Random* layers, reshapes and padding
        (:data:`flowcallback.core.capture.SKIPPED_LAYER_TYPES`) when there are at most 24 of them;
        in a deeper model, at most 24 block outputs (layers that every path from the input to the
        output goes through, spread over the depth, keeping each resolution stage's end and the
        last hidden layers; :func:`flowcallback.core.capture.choose_columns`). ``"all"``: every such
        layer, however many (a warning gives the count and the estimated cost). A list: exactly
        those layers, by name; layers of nested Sequential or functional blocks by their own name
        (or ``"block/name"`` where a name is taken twice). The page and ``run.json`` say how the
        columns were chosen.
    class_names : list of str, optional
        One distinct name per class (default ``"0"``, ``"1"``...); integers are read as their text.
    lrp : bool, default=True
        Also compute LRP relevance flows, for the predicted class of each sample.
    analyzer : str, default="lrp.epsilon"
        An LRP analyzer, by iNNvestigate's name (``"lrp.z"``, ``"lrp.alpha_1_beta_0"``,
        ``"lrp.sequential_preset_a"``, ...; the error lists them all).
    analyzer_kwargs : dict, optional
        The analyzer's arguments, as for ``innvestigate.create_analyzer`` (``epsilon``,
        ``input_layer_rule=(low, high)``...).
    lrp_backend : {"auto", "native", "innvestigate"}, default="auto"
        Which engine computes relevance. ``"native"``: flowcallback's own eager engine, in this
        process (any Keras 2 or Keras 3 model on TensorFlow whose layers it supports; equal to
        iNNvestigate within 1e-5, docs/method.md). ``"innvestigate"``: iNNvestigate 2.1 in a worker
        process (the ``innvestigate`` extra: Python <= 3.11, TensorFlow < 2.15). ``"auto"``:
        iNNvestigate where it is installed and the model is a Keras 2 model, native elsewhere.
        Pages and ``run.json`` say which engine made the LRP flows.
    k : int, "auto" or "paper", default="auto"
        Neighbours in the kNN graph. ``"auto"``: ``n_samples // (2 * n_classes)`` clipped to
        [5, 500] (chosen by measurement, see docs/method.md); ``"paper"``: ``n_samples // n_classes``.
    inflation : float, default=2.0
        MCL inflation.
    index : {"auto", "flat", "hnsw"}, default="auto"
        FAISS index; "auto" is exact below 50,000 samples.
    batch_size : int, default=256
        Batch size for the capture.
    reduce : {"pca", "random", None}, default="pca"
        How layers wider than ``dim`` are reduced while streaming (cosine neighbourhoods kept;
        see :class:`flowcallback.core.embed.Embedder`); None keeps the raw maps.
    dim : int, default=128
        Dimension after reduction.
    fit_samples : int, optional
        ``reduce="pca"``: held-out rows the basis is fitted on (default: up to 4 * ``dim``, within
        64 MiB of raw rows per layer). Deep layers of wide networks keep their neighbourhoods
        better with ``dim=256, fit_samples=2048`` (docs/performance.md).
    mcl_backend : {"auto", "fast", "reference", "keras"}, default="auto"
        MCL implementation (see :mod:`flowcallback.core.cluster`): ``"fast"``, the numba kernel on
        the CPU; ``"keras"``, dense products with ``keras.ops`` on the Keras backend's device (a
        GPU); ``"auto"``: ``"keras"`` where the Keras backend (Keras 3) computes on a GPU in full
        float32, ``"fast"`` elsewhere. A graph too large for the device runs on the CPU. The page
        and ``run.json`` say which ran.
    knn_backend : {"auto", "faiss", "keras"}, default="auto"
        Who builds the kNN graphs: FAISS on the CPU, or exact search with ``keras.ops`` on the
        Keras backend's device (the same neighbours up to ties); ``"auto"`` as for ``mcl_backend``.
    mcl_threads : int, optional
        Threads of each layer's MCL (the ``"fast"`` backend; default: the number of CPUs, at most 8).
    executor : concurrent.futures.Executor, optional
        Where the per-layer kNN + MCL jobs run (they are independent). Default: a pool of two
        threads. ``dask.distributed.Client(...).get_executor()`` runs them on a Dask cluster.
    background : bool, default=True
        Run everything after the forward pass (LRP, kNN, MCL, flows, pages) in a background
        thread while training goes on. Everything is finished and written when ``fit`` returns.
    nice : int, default=0
        With ``background=True``, the niceness (0 to 19) added to the snapshot's threads and to
        the LRP worker process, so that training keeps the CPU and snapshots use what it leaves
        (Linux; elsewhere priorities are left as they are). 0 gives them the training's priority.
        Measured (docs/performance.md): ``nice=10`` makes the epochs faster but leaves more of the
        snapshots' work for the end of ``fit``; the total time is about the same.
    tensorboard : bool, default=False
        Also write each snapshot's layer metrics (NMI, ARI, purity, clusters, per layer and
        analysis) as TensorBoard scalars under ``log_dir/tensorboard``.
    on_error : {"warn", "raise"}, default="warn"
        What a failed snapshot does: warn (and record it in ``log_dir/errors``) and let training go
        on, or stop training with :class:`~flowcallback.SnapshotError` (a snapshot failing in the
        background, as the next epoch trains, stops it before the next batch).
    class_means : bool, default=True
        Store each layer's mean activation per class (and mean relevance, with the native LRP
        engine): classes × units per layer, for ``run.class_means`` and its heatmap.
    neuron_clusters : bool or int, default=True
        Group each layer's units (neurons, or a convolution's channels) by how they respond to the
        classes, order the clusters × classes matrix so that similar rows and columns are adjacent,
        and find the held-out samples that excite each cluster most, as CNNVis does
        (:mod:`flowcallback.core.neurons`), for ``run.neuron_clusters`` and the run page's panel.
        True: as many clusters as classes (2 to 64); a number: at most that many clusters
        (1..64); False: none. Needs ``class_means=True``.
    projection : {"pca", "umap", "auto"} or None, default="pca"
        Store a 2-D projection of each layer's activations per snapshot, aligned onto the
        previous one (Procrustes), for ``run.projection`` and the animated view. ``"umap"`` needs
        the ``umap`` extra (umap-learn) and costs about 10 s per layer per snapshot at 2,000
        samples (docs/performance.md): name the layers with ``projection_layers``. ``"auto"``:
        UMAP where installed, PCA elsewhere. None: no projection.
    projection_layers : list of str, optional
        The layers to project (default: every analysed layer).
    projection_samples : int, default=2000
        How many held-out samples are projected (the same ones at every snapshot).
    verbose : "auto", 0, 1 or 2, default="auto"
        Progress of the snapshots: in a notebook, one bar updated in place; in a terminal, one
        line per snapshot, printed between Keras's epoch lines (never inside them). 0: silent;
        "auto" follows ``fit``'s ``verbose``.
    display : {None, "live"}, default=None
        ``"live"``: in a notebook, the last snapshot's Sankey (with its Activations / LRP buttons)
        as one figure under the cell, updated in place as each snapshot lands, like the progress
        bar; with several held-out sets, one such figure per set. Outside a notebook (a script, a
        terminal) it shows nothing; ``flowcallback serve`` and TensorBoard's Flows dashboard
        follow a run from anywhere (docs/usage.md, "Live view").

    Examples
    --------
    >>> from flowcallback import FlowCallback                                      # doctest: +SKIP
    >>> model.fit(x, y, epochs=10,
    ...           callbacks=[FlowCallback((x_val, y_val), log_dir="flows/run1")])  # doctest: +SKIP
    """

    def __init__(
        self,
        validation_data,
        *,
        log_dir="flows",
        epochs=None,
        budget="auto",
        layers=None,
        class_names=None,
        lrp: bool = True,
        analyzer: str = "lrp.epsilon",
        analyzer_kwargs: Optional[dict] = None,
        lrp_backend: str = "auto",
        k=knn.DEFAULT_K,
        inflation: float = cluster.DEFAULT_INFLATION,
        index: str = "auto",
        batch_size: int = 256,
        reduce: Optional[str] = "pca",
        dim: int = 128,
        fit_samples: Optional[int] = None,
        mcl_backend: str = "auto",
        knn_backend: str = "auto",
        mcl_threads: Optional[int] = None,
        executor=None,
        background: bool = True,
        nice: int = 0,
        tensorboard: bool = False,
        on_error: str = "warn",
        class_means: bool = True,
        neuron_clusters: bool | int = True,
        projection: Optional[str] = "pca",
        projection_layers=None,
        projection_samples: int = project.DEFAULT_MAX_SAMPLES,
        verbose="auto",
        display=None,
    ):
        super().__init__()
        self.verbose = check_parameter("verbose", verbose)
        self.display = check_parameter("display", display)
        self.epochs = checks.check_epochs(epochs)
        self.budget = checks.check_budget(budget, epochs)
        # every setting is checked once, from one table (flowcallback/settings.py)
        self._snapshotter = make_snapshotter(validation_data, log_dir, SnapshotSettings.from_arguments(locals()))
        self.log_dir = str(self._snapshotter.log_dir)
        self._first_epoch_seen = False
        self._guard = FitGuard()
        self._schedule: Optional[BudgetSchedule] = None
        self._summary: Optional[dict] = None  # the schedule as last recorded (run.json's "schedule")
        self._clean = True  # no snapshot captured or running since the epoch began
        self._last_done: Optional[int] = None  # the last epoch trained in this fit (the run's number)
        # a fit of the same model after this callback's own earlier fit, without initial_epoch (keras.io's
        # fine-tuning recipe) continues the run: its epoch e is the run's epoch e + _offset
        self._offset = 0
        self._previous_fit: Optional[tuple] = None  # (weak reference to the model, the run's last epoch)
        self._raise_errors = self.settings.on_error == "raise"
        self._supports_tf_logs = True  # Keras 2: the batch hook needs no logs converted to NumPy (no sync)

    # -- scheduling ----------------------------------------------------------------------------
    def wants(self, epoch: int) -> bool:
        """Whether a snapshot is taken at ``epoch`` (0 = before training). With a budget, the
        decision is made during ``fit`` at the epoch's end: whether it was taken (see :attr:`schedule`)."""
        if self._schedule is not None:
            return epoch in self._schedule.taken_epochs
        if self.epochs is None:
            return True
        if isinstance(self.epochs, int):
            return epoch % self.epochs == 0
        return epoch in self.epochs

    def _verbose(self) -> int:
        if self.verbose != "auto":
            return int(self.verbose)
        v = (self.params or {}).get("verbose", 1)
        return 1 if v == "auto" else int(v)

    @property
    def schedule(self) -> Optional[dict]:
        """With a budget, once ``fit`` has ended an epoch: the budget, the share of the training time
        spent (at the last epoch's end, or at the end of ``fit`` with the wait for the last
        snapshot), the epochs taken and those skipped by reason, as in ``run.json``; else None."""
        return self._summary

    @property
    def settings(self) -> SnapshotSettings:
        """The validated settings (frozen): ``cb.settings.k``, ``cb.settings.analyzer``..."""
        return self._snapshotter.settings

    @property
    def held_out(self):
        """``(x, labels)``: the held-out set as arrays, as read from ``validation_data`` (a
        ``tf.data.Dataset`` is read once, at construction), and its integer class labels;
        ``{name: (x, labels)}`` with several named sets. For a model with several inputs, x is a
        dict of arrays by input name (a list where they were given as one)."""
        return self._snapshotter.held_out

    @property
    def lrp_backend(self) -> Optional[str]:
        """The LRP engine chosen for this model at the start of ``fit`` (``"native"`` or
        ``"innvestigate"``), or None: before ``fit``, with ``lrp=False``, or when LRP is off."""
        return self._snapshotter.lrp_backend

    @property
    def lrp_engine(self):
        """The running relevance engine (a :class:`~flowcallback.core.lrp.engines.NativeEngine`, or the
        iNNvestigate worker, :class:`~flowcallback.core.lrp.worker.LRPWorker`, whose ``pid`` is its
        process), or None: before and after ``fit``, and without LRP."""
        return self._snapshotter.engine

    @property
    def interrupted(self) -> bool:
        """Whether the last ``fit`` ended without ``on_train_end`` (an exception, Ctrl-C): its
        snapshots not yet written were dropped, the engine and threads stopped."""
        return self._snapshotter.aborted

    def flush(self):
        """Wait for the snapshots still being computed in the background; returns :attr:`pages`.

        ``fit`` does this before it returns. Call it during training (from another callback) to
        read the pages and files of the epochs handed to the background so far.
        """
        self._snapshotter.flush()
        return self.pages

    @property
    def pages(self):
        """``{epoch: page path}`` of the snapshots written so far (all of them once ``fit`` returns);
        ``{epoch: {set: page path}}`` with several named sets."""
        if isinstance(self._snapshotter, SetsSnapshotter):
            return {e: {n: str(p) for n, p in by_set.items()} for e, by_set in sorted(self._snapshotter.pages.items())}
        return {e: str(p) for e, p in sorted(self._snapshotter.pages.items())}

    @property
    def timings(self):
        """``{epoch: {stage: seconds}}`` of the snapshots written so far; with several named sets,
        ``{epoch: {"snapshot_seconds": all sets, "sets": {set: {stage: seconds}}}}``."""
        return dict(self._snapshotter.timings)

    def _take(self, epoch: int):
        self._snapshotter.take(epoch, title_prefix=self._snapshotter.model_name)
        if self._schedule is not None:
            self._schedule.taken(epoch)

    # -- the budget ----------------------------------------------------------------------------
    def _budget_costs(self) -> None:
        """Hand the wall times of the snapshots written so far to the schedule, less the one-off
        compilation of the MCL kernel (a fresh install's first snapshot: found by an outside probe,
        its 60 s were taken for what every later snapshot would cost, and the budget took none)."""
        for seconds in self._snapshotter.timings.values():
            wall = seconds.get("snapshot_seconds")
            once = seconds.get("compile_seconds", 0.0) + sum(s.get("compile_seconds", 0.0)
                                                              for s in seconds.get("sets", {}).values())
            self._schedule.cost(None if wall is None else max(0.0, wall - once))

    def _spent_so_far(self) -> str:
        """The share the snapshots added, as of now, for a snapshot's progress line (found by an
        outside probe: each line gave the share at the previous epoch's end, so the last line's
        share was twice it)."""
        schedule = self._schedule
        if schedule is None or schedule.measuring:
            return ""
        share = schedule.spent(time.perf_counter(), running=not self._training_ended)
        return f"snapshots added {share:.0%} to training so far (budget {schedule.budget:.0%})"

    def _record_schedule(self, final: bool = False) -> None:
        summary = self._summary = self._schedule.summary(time.perf_counter())
        self._snapshotter.record_schedule(summary)
        spent = f"snapshots added {summary['spent']:.0%} to training (budget {summary['budget']:.0%})"
        self._snapshotter.progress_note = self._spent_so_far
        if final:
            taken = ", ".join(str(e) for e in summary["taken"])
            skipped = skipped_text(summary["skipped"])
            hint = (f"; {skipped}: budget=None takes every epoch, budget=1 allows doubling the training time"
                    if skipped else "")
            if summary["spent"] > summary["budget"]:
                hint += " (the first and last snapshots are taken whatever they cost)"
            self._snapshotter.progress.note(f"FlowCallback: {spent}; snapshots of epochs {taken}{hint}")

    def _decide(self, epoch: int) -> None:
        """At the end of ``epoch``: tell the schedule what the epoch and the snapshots cost, and
        take the snapshot if it decides so."""
        now = time.perf_counter()
        self._schedule.epoch_done(epoch, now, clean=self._clean)
        self._budget_costs()
        if self._schedule.decide(epoch, now, busy=self._snapshotter.busy).take:
            self._take(epoch)
        self._record_schedule()
        self._epoch_starts()

    def _epoch_starts(self) -> None:
        """The next epoch's time starts now, after this callback's own work: it runs to this
        callback's next ``on_epoch_end``, so the other callbacks' work (a checkpoint, say) counts as
        training. Clean: no snapshot is being computed meanwhile (one starts only at an epoch's end)."""
        self._clean = not self._snapshotter.busy
        self._schedule.epoch_begin(time.perf_counter())

    # -- Keras hooks ---------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._guard.stop()  # a previous fit's guard, if that fit ended abnormally
        self._first_epoch_seen, self._schedule, self._last_done, self._clean = False, None, None, True
        self._summary = None
        self._training_ended = False
        self._snapshotter.progress = SnapshotProgress(self._verbose())
        self._snapshotter.live = LiveFigure() if self.display == "live" else None
        self._snapshotter.prepare(self.model)
        # If fit ends without on_train_end (an exception, Ctrl-C), the guard stops everything.
        self._guard.start(self._snapshotter.abort)

    def on_epoch_begin(self, epoch, logs=None):
        # the lines of the snapshots written meanwhile, before Keras starts this epoch's line
        self._snapshotter.progress.flush()
        # Keras's epoch index is 0-based; snapshot 0 is the state before the first epoch trains.
        if not self._first_epoch_seen:
            self._first_epoch_seen = True
            # a resumed fit (initial_epoch > 0) starts where the previous one took its last snapshot
            first = epoch if epoch == 0 else epoch + 1
            last = max(int((self.params or {}).get("epochs") or first), first)
            self._offset = self._continues(epoch)
            if self._offset:  # the untrained state of this fit is the previous fit's last epoch, taken already
                first, last = self._offset + 1, last + self._offset
            self._refuse_overwriting(epoch, first, last)
            self._warn_if_none_taken(first, last)
            if self.budget is not None and not self._snapshotter.disabled:
                self._schedule = BudgetSchedule(self.budget, first=first, last=last)
                self._schedule.start(time.perf_counter())
                if first == 0 and self._schedule.decide(0, time.perf_counter(), busy=False).take:
                    self._take(0)
                self._epoch_starts()
            elif first == 0 and self.wants(0):
                self._take(0)

    def _continues(self, initial_epoch: int) -> int:
        """The run's last epoch where this fit continues this callback's own previous fit of the same
        model (``fit`` called again without ``initial_epoch``, as keras.io's fine-tuning recipe does
        after unfreezing the base model); 0 otherwise. The fit's epoch e is then the run's e + that."""
        if initial_epoch != 0 or self._previous_fit is None or self._snapshotter.disabled:
            return 0
        model_ref, last = self._previous_fit
        held = self._snapshotter.epochs_held
        if model_ref() is not self.model or not held or max(held) != last:
            return 0
        self._snapshotter.progress.note(
            f"FlowCallback: this fit continues the run of this callback's previous fit of the model (epochs to "
            f"{last}): its epochs are the run's epochs {last + 1} on (initial_epoch={last} would say so to Keras too)")
        return last

    def _warn_if_none_taken(self, first: int, last: int) -> None:
        """Warn, before the first epoch trains, of a fit (snapshot epochs ``first`` to ``last``) in
        which ``epochs=`` (a list) takes no snapshot, or leaves some of its epochs untaken."""
        if not isinstance(self.epochs, frozenset) or self._snapshotter.disabled:
            return
        beyond = sorted(e for e in self.epochs if e > last)
        if beyond and any(first <= e <= last for e in self.epochs):
            shown = ", ".join(map(str, beyond[:10])) + (", ..." if len(beyond) > 10 else "")
            warnings.warn(f"FlowCallback: epochs {shown} of epochs= lie beyond this fit's last epoch ({last}): they "
                          "are taken only if a later fit of the model with this callback continues the run.",
                          UserWarning, stacklevel=3)
        if not any(first <= e <= last for e in self.epochs):
            listed = sorted(self.epochs)
            shown = ", ".join(map(str, listed[:10])) + (", ..." if len(listed) > 10 else "")
            untrained = " (0: the untrained model)" if first == 0 else ""
            warnings.warn(f"FlowCallback: epochs=[{shown}] takes no snapshot in this fit, which can take epochs "
                          f"{ranges_text([[first, last]])}{untrained}; no snapshot will be written. Choose epochs "
                          "among them, or leave epochs=None to let the time budget choose.", UserWarning,
                          stacklevel=3)

    def _refuse_overwriting(self, initial_epoch: int, first: int, last: int) -> None:
        """Refuse, before the first epoch trains, a fit that would write epochs the run already holds
        from an earlier training: a notebook cell run again with a fresh model, or ``fit`` called
        again on a trained model without ``initial_epoch``. Its snapshots would replace some of the
        earlier epochs and leave the others, so that one run would mix two trainings."""
        if self._snapshotter.disabled:
            return
        held = self._snapshotter.epochs_held
        clash = [e for e in held if first <= e <= last and (self.budget is not None or self.wants(e))]
        if not clash:
            return
        self._guard.stop()
        self._snapshotter.unprepare()  # run.json as it was; the LRP worker and the run's lock, as at a fit's end
        raise ValueError(
            f"log_dir: {self.log_dir} holds epochs {ranges_text(epoch_ranges(held))} "
            f"of an earlier training, and this fit (from initial_epoch={initial_epoch}) would overwrite epoch(s) "
            f"{', '.join(str(e) for e in clash[:5])}{', ...' if len(clash) > 5 else ''}, mixing two trainings in "
            f"one run. For a new training, use a new log_dir (or delete this one); to continue that training, "
            f"fit the same model with initial_epoch={max(held)} and epochs > {max(held)}.")

    def on_train_batch_begin(self, batch, logs=None):
        # on_error="raise": a snapshot failed in the background (while this epoch trains) stops
        # training before the next batch, not at the next snapshot, which the budget may place
        # many epochs later. A begin hook: Keras 3 keeps dispatching the batch ends asynchronously.
        if self._raise_errors:
            self._snapshotter.raise_failed()

    def on_epoch_end(self, epoch, logs=None):
        if self._raise_errors:
            self._snapshotter.raise_failed()
        epoch += self._offset  # the run's number of this epoch
        self._last_done = epoch + 1
        if self._schedule is not None:
            self._decide(epoch + 1)
        elif self.wants(epoch + 1):
            self._take(epoch + 1)

    def on_train_end(self, logs=None):
        self._training_ended = True  # the last snapshots' lines: no epoch trains meanwhile
        self._guard.stop()
        schedule, last = self._schedule, self._last_done
        if schedule is not None and last is not None and last < schedule.last:  # stopped early (EarlyStopping)
            if last not in schedule.taken_epochs:
                self._take(last)  # the fit's last epoch is always taken
            schedule.stopped(last)
        self._snapshotter.close()  # waits for background snapshots, stops the LRP worker
        if last is not None and self.model is not None:  # a next fit of this model may continue the run
            self._previous_fit = (weakref.ref(self.model), last)  # (_continues checks the run ends there)
        if schedule is not None and not self._snapshotter.disabled:  # the wait at the end counts
            self._budget_costs()
            self._record_schedule(final=True)
            self._snapshotter.rewrite_run_page()
        self._snapshotter.progress.flush()

    def __del__(self):
        # The garbage collector runs this in whichever thread allocates, this run's own threads
        # included, where waiting for the run's snapshots and threads would wait for itself forever.
        # There nothing is waited for: the threads go with their executors (flowcallback._threads).
        try:  # at interpreter exit the module's globals (threading) may already be None
            if threading.current_thread().name.startswith("flowcallback"):
                return
            self._guard.stop()
            self._snapshotter.close()
        except Exception:
            pass


def snapshot(model, validation_data, log_dir, *, epoch: int = 0, verbose: int = 1, **settings) -> Optional[Path]:
    """Take one snapshot of an already trained model, without a callback.

    Parameters
    ----------
    model : keras.Model
    validation_data : (x, y) tuple, tf.data.Dataset, or named sets
        As for :class:`~flowcallback.FlowCallback` (``{"clean": (x, y), "other": (x2, y2)}``).
    log_dir : str or path
    epoch : int, default=0
        The epoch number recorded for this snapshot.
    verbose : int, default=1
    **settings
        As for :class:`~flowcallback.FlowCallback` (``layers``, ``k``, ``inflation``, ``lrp``...).

    Returns
    -------
    pathlib.Path
        The page written (with several sets, the page comparing them, ``log_dir/index.html``);
        None if the snapshot failed.

    Examples
    --------
    >>> from flowcallback import snapshot
    >>> snapshot(model, (x_test, y_test), "flows/trained", epoch=6)   # doctest: +SKIP
    """
    check_parameter("epoch", epoch)
    unknown = sorted(set(settings) - set(SnapshotSettings.field_names()))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a setting of snapshot(); the settings are "
                         f"{', '.join(SnapshotSettings.field_names())}")
    verbose = 1 if check_parameter("verbose", verbose) == "auto" else verbose
    settings.setdefault("background", False)
    snap = make_snapshotter(validation_data, log_dir, SnapshotSettings(**settings))
    try:
        snap.prepare(model)
        held = snap.epochs_held
        if not snap.disabled and int(epoch) in held:  # as fit refuses to: one run holds one training
            snap.unprepare()  # run.json as it was
            raise ValueError(f"epoch: {snap.log_dir} already holds epoch {int(epoch)} (its epochs: "
                             f"{ranges_text(epoch_ranges(held))}); snapshot() does not overwrite it. Give "
                             "another epoch=, or a new log_dir.")
        snap.progress = SnapshotProgress(verbose, immediate=True)
        page = snap.take(int(epoch))
    finally:
        snap.close()
    if isinstance(snap, SetsSnapshotter):
        return snap.log_dir / "index.html" if all(p is not None for p in page.values()) else None
    return page
