"""The snapshot runner: it runs the stages of :mod:`flowcallback.core` for a live model.

:class:`Snapshotter` holds what lives across snapshots (the validated held-out set, the chosen
layers, the relevance engine, the threads) and :meth:`Snapshotter.take` takes one snapshot:

1. **capture**, in the training thread (the only part that holds training up): the held-out set
   goes through the model (:func:`flowcallback.core.capture.capture_activations`), and the
   weights are copied for the relevance engine;
2. **lrp**: the relevance engine (:mod:`flowcallback.core.lrp`) on those weights;
3. **analysis**: :func:`flowcallback.core.stages.analyse`, pure (kNN, MCL, stable ids, flows,
   metrics);
4. **store** and **render**: the epoch's files, its page, the run page (drawn from memory) and
   TensorBoard's scalars.

Steps 2 to 4 run in a background thread when ``background=True``. The runner owns the error
policy (a failure costs at most its epoch, or its layer) and writes nothing half-done.
:class:`~flowcallback.FlowCallback` only decides *when* to take a snapshot, and :func:`snapshot`
takes one for a model you already trained.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from flowcallback import _validation as checks
from flowcallback._progress import SnapshotProgress
from flowcallback._version import __version__
from flowcallback.core import _priority, aggregate, capture, knn, project, render, runpage, stages, store
from flowcallback.core._notes import first_line, name_list
from flowcallback.core.lrp import engines as lrp_engines
from flowcallback.core.lrp import worker as lrp_worker
from flowcallback.core.outputs import held_out_loss, predictions_from_outputs
from flowcallback.exceptions import SnapshotError
from flowcallback.settings import SnapshotSettings

__all__ = ["SnapshotSettings", "Snapshotter", "snapshot"]


def _fingerprint(model) -> str:
    """A hash of the architecture (not the weights), to refuse another model in the same log_dir."""
    try:
        cfg = json.loads(model.to_json())
        cfg.get("config", {}).pop("name", None)
    except Exception:  # a subclassed model without get_config: its class, layers and weight shapes
        cfg = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
               "layers": [[type(layer).__name__, layer.name] for layer in model.layers],
               "weights": [list(np.shape(w)) for w in model.get_weights()]}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _views_or_none(run, epoch: int):
    """An epoch's stored views; None where it has none or they cannot be read (the page leaves them out)."""
    try:
        return run.views(epoch)
    except Exception:
        return None


class _Aborted(Exception):
    """Internal: the snapshot was dropped because ``fit`` ended without ``on_train_end``."""


class Snapshotter:
    """Runs snapshots of one model on one held-out set into one run directory.

    Parameters
    ----------
    validation_data : (x, y) tuple or tf.data.Dataset
    log_dir : str or path
    settings : SnapshotSettings
    """

    def __init__(self, validation_data, log_dir, settings: SnapshotSettings):
        self.x, self.y_raw = checks.check_validation_data(validation_data)
        self.labels = checks.labels_from_y(self.y_raw)
        self.log_dir = Path(checks.check_log_dir(log_dir))
        self.settings = settings
        if isinstance(settings.k, int) and len(self.x) <= settings.k:
            raise ValueError(
                f"validation_data: the kNN graph needs more than k={settings.k} samples, got {len(self.x)}; "
                "pass more samples or a smaller k"
            )
        self.model = None
        self.disabled = ""  # why snapshots are off (log_dir not writable), or ""
        self.layer_names: List[str] = []
        self.layer_types: Dict[str, str] = {}
        self.worker = None  # the relevance engine: lrp_worker.LRPWorker or lrp_engines.NativeEngine
        self.lrp_backend: Optional[str] = None
        self.lrp_note = ""
        self.model_notes: List[str] = []  # graph notes about the model (branch layout, binary output), every snapshot
        self.binary_threshold = 0.5  # for a one-unit output: prediction = output > threshold
        self.model_column_notes: Dict[str, str] = {}  # column notes about the model (parallel branches)
        self.progress = SnapshotProgress(0)  # the callback sets one per fit
        self.pages: Dict[int, Path] = {}
        self.timings: Dict[int, dict] = {}
        self._pending: list = []
        self._coordinator: Optional[ThreadPoolExecutor] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._aborted = False
        self._errors_lock = threading.Lock()
        self._continuity = stages.Continuity()  # the last snapshot's cluster ids, orders and projections
        self._projection_samples: Optional[np.ndarray] = None  # the projected samples, the same at every epoch
        self._info: dict = {}  # run.json
        self._graphs: Dict[int, Dict[str, object]] = {}  # every epoch's graphs, for the run page
        self._views: Dict[int, Optional[store.EpochViews]] = {}  # every epoch's class means and projections
        self._metrics: Dict[int, object] = {}  # every epoch's layer metrics (a DataFrame)
        self._errors: Dict[int | str, str] = {}  # as Run.errors(): epochs and "setup", for the run page
        self._page_cache: Dict[tuple, dict] = {}  # run page parts by (epoch, analysis)
        self._page_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare(self, model) -> None:
        """Validate against the model, choose layers, start the LRP worker, write run.json."""
        try:
            self._prepare(model)
        except BaseException:  # a refused model, or Ctrl-C while the worker starts: leave nothing behind
            self.abort()
            raise

    def _prepare(self, model) -> None:
        self._aborted = False
        self.model = model
        columns = capture.choose_columns(model, self.settings.layers)
        self.layer_names = list(columns.names)
        if not self.layer_names:
            raise ValueError("layers: the model has no layer to analyse")
        self.layer_types = capture.layer_types(model, self.layer_names)
        unknown = sorted(set(self.settings.projection_layers or ()) - set(self.layer_names))
        if unknown:
            raise ValueError(f"projection_layers: {unknown} are not among the analysed layers {self.layer_names}")
        self.model_notes, self.model_column_notes = capture.branch_layout(model, self.layer_names)
        if columns.rule in ("block outputs", "all"):
            self.model_notes.insert(0, f"Columns: {columns.description}.")
        if columns.rule == "all" and len(self.layer_names) > capture.MAX_COLUMNS:
            cost = capture.cost_note(len(self.layer_names), len(self.x))
            warnings.warn(f"FlowCallback: layers='all': {len(self.layer_names)} columns (the default shows at most "
                          f"{capture.MAX_COLUMNS} block outputs). {cost}", RuntimeWarning, stacklevel=3)
        n_classes = checks.output_classes(model, self.x)
        self.binary_threshold, binary_note = checks.binary_threshold(model, self.x)
        if binary_note:
            self.model_notes.append(binary_note)
        self.k = knn.resolve_k(self.settings.k, len(self.x), n_classes)
        names = None if self.settings.class_names is None else list(self.settings.class_names)
        self.n_classes, self.class_names = checks.check_against_model(model, self.x, self.labels, names, self.k)
        lrp_unavailable = lrp_engines.unavailable_reason(model) if self.settings.lrp else ""
        self.lrp_backend = (lrp_engines.choose_backend(self.settings.lrp_backend, model)
                            if self.settings.lrp and not lrp_unavailable else None)
        info = {
            "format": "flowcallback/run",
            "version": store.FORMAT_VERSION,
            "flowcallback_version": __version__,
            "model": {"name": model.name, "fingerprint": _fingerprint(model)},
            "class_names": self.class_names,
            "analyses": ["activations", "lrp"] if self.lrp_backend else ["activations"],
            "layers": [{"name": n, "type": self.layer_types[n]} for n in self.layer_names],
            "columns": {"rule": columns.rule, "eligible_layers": columns.eligible, "description": columns.description},
            "config": {
                "k": self.k,
                "k_rule": self.settings.k if isinstance(self.settings.k, str) else "fixed",
                "inflation": self.settings.inflation,
                "index": self.settings.index,
                "reduce": self.settings.reduce,
                "dim": self.settings.dim,
                "mcl_backend": self.settings.mcl_backend,
                "analyzer": self.settings.analyzer,
                "analyzer_kwargs": dict(self.settings.analyzer_kwargs),
                "lrp_engine": lrp_engines.engine_label(self.lrp_backend) if self.lrp_backend else None,
                "n_samples": int(len(self.x)),
                "epoch_numbering": "0 is the untrained model; e is the model after e epochs of training",
            },
        }
        existing = self.log_dir / "run.json"
        if existing.exists():
            old = store.read_run_info(self.log_dir)
            if old["model"]["fingerprint"] != info["model"]["fingerprint"]:
                raise ValueError(
                    f"log_dir: {self.log_dir} holds a run of a different model ({old['model']['name']!r}); "
                    "use a new log_dir for a new model"
                )
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            store.write_run_info(self.log_dir, info)
        except OSError as exc:  # read-only or full disk: the run cannot be recorded, training can go on
            if self.settings.on_error == "raise":
                raise SnapshotError(f"log_dir: cannot write to {self.log_dir}: {exc}") from exc
            self.disabled = f"cannot write to {self.log_dir}: {exc}"
            warnings.warn(f"FlowCallback: log_dir: {self.disabled}; no snapshot will be taken, training goes on",
                          RuntimeWarning, stacklevel=2)
            return
        self._info = info
        self._projection_samples = (project.choose_samples(len(self.x), self.settings.projection_samples)
                                    if self.settings.projection else None)
        store.remove_stale_temporaries(self.log_dir)  # what writers killed mid-write (SIGKILL) left
        self._resume()
        if lrp_unavailable:
            self.lrp_note = f"LRP skipped for the whole model, activation flows only: {lrp_unavailable}"
            warnings.warn(f"FlowCallback: {self.lrp_note}", RuntimeWarning, stacklevel=2)
        elif self.settings.lrp:
            try:
                self.worker = self._start_lrp_engine(model)
            except ValueError:
                self.worker = None
                raise
            except Exception as exc:  # LRP unavailable (a model without a layer graph, say)
                self.worker = None
                reason = first_line(exc)
                path = self._record_error(None, exc)
                self.lrp_note = f"LRP skipped for the whole model, activation flows only: {reason}"
                if reason != str(exc).strip():  # cut, or more lines: the note says where the whole reason is
                    self.lrp_note += f" (the whole message: errors/{path.name})"
                if self.settings.on_error == "raise":
                    raise SnapshotError(str(exc)) from exc
                warnings.warn(f"FlowCallback: {self.lrp_note}", RuntimeWarning, stacklevel=2)
            else:
                if getattr(self.worker, "note", ""):  # relevance stops at a layer without a rule
                    warnings.warn(f"FlowCallback: {self.worker.note}", RuntimeWarning, stacklevel=2)

    def _start_lrp_engine(self, model):
        """Start the chosen relevance engine; with ``lrp_backend="auto"``, the native engine where
        iNNvestigate refuses the model (a layer it has no rule for), with the reason recorded."""
        engine = self._new_lrp_engine()
        try:
            engine.start(model, self.layer_names, self.x, batch_size=self.settings.batch_size,
                         embed_options=self.settings.embed_options)
            return engine
        except ValueError:
            raise
        except Exception as exc:
            if self.settings.lrp_backend != "auto" or self.lrp_backend != "innvestigate":
                raise
            engine.close()
            self._record_error(None, exc, "iNNvestigate refused the model; the native LRP engine is used")
            self.lrp_backend = "native"
            self._info["config"]["lrp_engine"] = lrp_engines.engine_label("native")
            store.write_run_info(self.log_dir, self._info)
            engine = self._new_lrp_engine()
            engine.start(model, self.layer_names, self.x, batch_size=self.settings.batch_size,
                         embed_options=self.settings.embed_options)
            return engine

    def _new_lrp_engine(self):
        """The relevance engine chosen at set-up: the native one here, or iNNvestigate's worker process."""
        if self.lrp_backend == "native":
            return lrp_engines.NativeEngine(self.settings.analyzer, dict(self.settings.analyzer_kwargs))
        return lrp_worker.LRPWorker(self.settings.analyzer, dict(self.settings.analyzer_kwargs),
                                 nice=self.settings.nice if self.settings.background else 0)

    def _resume(self) -> None:
        """When appending to a run, read its epochs once: for the run page, and to continue the
        cluster ids and orders of its last epoch (when the held-out set is the same)."""
        self._graphs, self._views, self._metrics, self._errors, self._page_cache = {}, {}, {}, {}, {}
        self._continuity = stages.Continuity()
        try:
            run = store.load_run(self.log_dir)
            self._errors = run.errors()
            for e in run.epochs:
                self._graphs[e] = {a: run.epoch(e, a) for a in run.analyses(e)}
                self._views[e] = _views_or_none(run, e)
            table = run.metrics()
            self._metrics = {e: table[table["epoch"] == e] for e in self._graphs}
        except Exception:  # an unreadable earlier epoch is left off the page (load_run reports it)
            return
        if self._graphs:
            last = self._graphs[max(self._graphs)]
            if all(g.n_samples == len(self.labels) and np.array_equal(g.labels, self.labels) for g in last.values()):
                projections = self._stored_projections(max(self._graphs))
                self._continuity = stages.Continuity.from_graphs(last.values(), projections)

    def _stored_projections(self, epoch: int) -> Dict[str, np.ndarray]:
        """The projections stored for ``epoch`` when they are of the samples projected now."""
        views = self._views.get(epoch)  # unreadable views only cost the alignment with that epoch
        if (views is None or views.projection_samples is None or self._projection_samples is None
                or not np.array_equal(views.projection_samples, self._projection_samples)):
            return {}
        return {layer: p for (analysis, layer), p in views.projections.items() if analysis == "activations"}

    def close(self) -> None:
        """Wait for background snapshots, then stop the worker process and the threads."""
        try:
            self.flush()
        finally:
            self._shutdown_pools(cancel=False)
            if self.worker is not None:
                self.worker.close()
                self.worker = None

    def abort(self) -> None:
        """``fit`` ended without ``on_train_end``: stop now, leaving only complete epochs.

        Snapshots not yet written are dropped (never half-written), the LRP worker is killed, the
        threads are stopped; when this returns no process, thread or temporary file is left.
        """
        self._aborted = True
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.cancel()
        worker = self.worker
        if worker is not None:
            worker.kill()  # unblocks a background snapshot waiting on it
        self._shutdown_pools(cancel=True)
        if worker is not None:
            worker.close()
            self.worker = None

    def _shutdown_pools(self, cancel: bool) -> None:
        """Stop the coordinator thread, then the layer pool.

        The layer pool is read only after the coordinator has stopped: a snapshot that was still
        running may have created it meanwhile (its first ``_analyse_and_write``), and it must be shut down
        too rather than left to the garbage collector, which a lingering reference would defeat.
        """
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is not None:
            coordinator.shutdown(wait=True, cancel_futures=cancel)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)

    # -- one snapshot --------------------------------------------------------------------------
    def take(self, epoch: int, *, title_prefix: str = ""):
        """Take the snapshot of ``epoch``.

        The held-out set goes through the model now (the weights of this moment); the rest (LRP,
        kNN, MCL, flows, page, files) runs in the background when ``background=True``, while
        training goes on; :meth:`flush` waits for it.

        Returns
        -------
        pathlib.Path, concurrent.futures.Future or None
            The page written (synchronous), a Future of it (background), or None if the snapshot
            failed and ``on_error="warn"``.
        """
        if self.disabled:
            return None
        self._raise_finished_errors()
        self._restart_dead_worker(epoch)
        try:
            state = self._capture(epoch)
        except Exception as exc:
            return self._failed(epoch, exc)
        if self.settings.background:
            if self._coordinator is None:
                self._coordinator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowcallback",
                                                       initializer=self._background_thread_init)
            # no progress bar from a background thread (it would cut through Keras's): one line at the end
            fut = self._coordinator.submit(self._analyse_and_write_safely, state, title_prefix, True)
            self._pending.append(fut)
            return fut
        return self._analyse_and_write_safely(state, title_prefix, False)

    def _restart_dead_worker(self, epoch: int) -> None:
        """A crashed or killed LRP worker is started again (once per snapshot that finds it dead)."""
        w = self.worker
        if w is None or w.alive:
            return
        self.flush()  # snapshots still using the dead worker finish first (their LRP part fails)
        w.close()
        self.worker = self._new_lrp_engine()
        try:
            self.worker.start(self.model, self.layer_names, self.x, batch_size=self.settings.batch_size,
                              embed_options=self.settings.embed_options)
        except Exception as exc:
            self.worker = None
            self.lrp_note = f"LRP stopped: the LRP worker died and could not be restarted ({first_line(exc)})"
            path = self._record_error(epoch, exc, "restarting the LRP worker")
            warnings.warn(f"FlowCallback: epoch {epoch}: {self.lrp_note}; training goes on. Details: {path}",
                          RuntimeWarning, stacklevel=3)

    def _raise_finished_errors(self) -> None:
        """With on_error="raise", a background snapshot's error stops training at the next snapshot."""
        for fut in [f for f in self._pending if f.done()]:
            if fut.exception() is not None:
                self._pending.remove(fut)
                fut.result()

    def flush(self) -> List[Path]:
        """Wait for every background snapshot; return the pages written (in epoch order)."""
        pages = []
        pending, self._pending = self._pending, []
        for fut in pending:
            page = fut.result()
            if page is not None:
                pages.append(page)
        return pages

    def _write_run_page(self, rewritten: Optional[int] = None) -> None:
        """Rewrite index.html from the graphs in memory; a failure here never fails the snapshot.

        What the page shows of each epoch is kept between snapshots (``self._page_cache``), so
        that each snapshot draws only its own epoch; ``rewritten`` is the epoch just (re)written.
        """
        try:
            with self._page_lock:
                for key in [key for key in self._page_cache if key[0] == rewritten]:
                    del self._page_cache[key]
                metrics = pd.concat(list(self._metrics.values()), ignore_index=True) if self._metrics else None
                runpage.write_run_page(self.log_dir, self._info, self._graphs, self._errors, cache=self._page_cache,
                                       views=self._views, metrics=metrics)
        except Exception as exc:  # pragma: no cover - reported, not raised
            warnings.warn(f"FlowCallback: could not rewrite the run page: {exc}", RuntimeWarning, stacklevel=2)

    def _failed(self, epoch: int, exc: BaseException):
        path = self._record_error(epoch, exc)
        self.progress.finished(epoch, f"FlowCallback: the snapshot of epoch {epoch} failed (see {path})")
        self._write_run_page()
        if self.settings.on_error == "raise":
            try:
                self.flush()  # earlier epochs still in the background are written before training stops
            except Exception:  # already failed: the first error is the one reported
                pass
            raise SnapshotError(f"snapshot of epoch {epoch} failed: {exc}") from exc
        warnings.warn(
            f"FlowCallback: the snapshot of epoch {epoch} failed ({type(exc).__name__}: {exc}); "
            f"training goes on. Details: {path}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None

    def _capture(self, epoch: int) -> dict:
        """The part that needs the live model: activations, outputs, and a copy of the weights."""
        clock = stages.StageClock(epoch)
        t0 = time.perf_counter()
        means = aggregate.LayerClassMeans(self.labels, self.n_classes) if self.settings.class_means else None
        with clock("capture"):
            acts, outputs = capture.capture_activations(self.model, self.x, self.layer_names,
                                                        batch_size=self.settings.batch_size,
                                                        embed_options=self.settings.embed_options, class_means=means)
            predictions, accuracy, prediction_note = predictions_from_outputs(outputs, self.labels,
                                                                              self.binary_threshold)
            loss, loss_note = held_out_loss(self.model, self.y_raw, outputs)
            weights = [np.array(w, copy=True) for w in self.model.get_weights()] if self.worker is not None else None
        return {"epoch": epoch, "clock": clock, "t0": t0, "activations": acts, "predictions": predictions,
                "class_means": {} if means is None else {("activations", n): m for n, m in means.result().items()},
                "metrics": {"accuracy": accuracy, "loss": loss, "k": self.k, "inflation": self.settings.inflation},
                "prediction_note": prediction_note, "loss_note": loss_note, "weights": weights}

    def _analyse_and_write_safely(self, state: dict, title_prefix: str, background: bool):
        try:
            return self._analyse_and_write(state, title_prefix=title_prefix)
        except Exception as exc:
            if self._aborted:  # fit was interrupted: this snapshot is dropped, not a failure
                return None
            if background and self.settings.on_error == "raise":
                self._record_error(state["epoch"], exc)
                raise SnapshotError(f"snapshot of epoch {state['epoch']} failed: {exc}") from exc
            return self._failed(state["epoch"], exc)

    def _relevance(self, state: dict, notes: List[str]):
        """The LRP stage: relevance embeddings, or None (the reason goes to ``notes``)."""
        s, epoch = self.settings, state["epoch"]
        if state["weights"] is None:
            if self.lrp_note:
                notes.append(self.lrp_note)
            return None
        means = aggregate.LayerClassMeans(self.labels, self.n_classes) if s.class_means else None
        try:
            with state["clock"]("lrp", analysis="lrp"):
                result = self.worker.analyze(state["weights"], class_means=means)
        except Exception as exc:
            if s.on_error == "raise" or self._aborted:
                raise
            notes.append(f"LRP failed for this epoch: {first_line(exc)}")
            path = self._record_error(epoch, exc)
            warnings.warn(f"FlowCallback: epoch {epoch}: LRP failed ({first_line(exc)}); the activation flows are "
                          f"still written and training goes on. Details: {path}", RuntimeWarning, stacklevel=3)
            return None
        if result.missing and not result.note:
            notes.append(f"LRP: no relevance reached layer(s) {name_list(result.missing)}")
        if means is not None:  # the native engine fills them; iNNvestigate's maps stay in its process
            state["class_means"].update({("lrp", n): m for n, m in means.result().items()})
        return result

    def _analyse_and_write(self, state: dict, *, title_prefix: str) -> Path:
        s, epoch, clock = self.settings, state["epoch"], state["clock"]
        self.progress.update(epoch, "relevance (LRP)" if state["weights"] is not None else "clustering", 1, 4)
        notes: List[str] = [state["loss_note"]] if state["loss_note"] else []
        embeddings = {"activations": state["activations"]}
        analysis_notes, analysis_metrics = {}, {}
        relevance = self._relevance(state, notes)
        if relevance is not None:
            embeddings["lrp"] = relevance.embeddings
            analysis_metrics["lrp"] = {"lrp_analyzer": f"{relevance.analyzer_module}.{relevance.analyzer_class}",
                                       "lrp_engine": relevance.engine}
            analysis_notes["lrp"] = (
                f"LRP relevance ({s.analyzer}) is computed by {relevance.engine} for each sample's predicted class, "
                "so the LRP flows sort by prediction from the first layer on: not a sign that early layers "
                "separate the classes (the activation flows show that)",)
            if relevance.note:
                analysis_notes["lrp"] += (relevance.note,)
        self.progress.update(epoch, "kNN and MCL clustering", 2, 4)
        column_notes = dict(self.model_column_notes)
        if state["prediction_note"]:
            column_notes["Prediction"] = state["prediction_note"]
        captured = stages.Captured(
            epoch=epoch, embeddings=embeddings, labels=self.labels, predictions=state["predictions"],
            metrics=state["metrics"], analysis_metrics=analysis_metrics, notes=(*self.model_notes, *notes),
            analysis_notes=analysis_notes, column_notes=column_notes, class_means=state["class_means"])
        result = stages.analyse(
            captured, [(n, self.layer_types[n]) for n in self.layer_names], k=self.k, inflation=s.inflation,
            index=s.index, mcl_backend=s.mcl_backend, mcl_threads=s.mcl_threads, class_names=self.class_names,
            previous=self._continuity, map=(s.executor or self._layer_pool()).map, clock=clock,
            projection=s.projection, projection_layers=s.projection_layers, projection_samples=self._projection_samples)
        self.progress.update(epoch, "writing the pages and files", 3, 4)
        for (analysis, layer), exc in result.left_out.items():
            if s.on_error == "raise" or self._aborted:
                raise exc
            label = stages.ANALYSIS_LABELS.get(analysis, analysis)
            path = self._record_error(epoch, exc, f"{label}, layer {layer}")
            warnings.warn(f"FlowCallback: epoch {epoch}, layer {layer} ({label}): kNN/MCL failed "
                          f"({type(exc).__name__}: {first_line(exc)}); the layer is left out of this epoch's "
                          f"diagram and training goes on. Details: {path}", RuntimeWarning, stacklevel=2)
        if result.projection_error is not None:
            exc = result.projection_error
            if s.on_error == "raise" or self._aborted:
                raise exc
            path = self._record_error(epoch, exc, "projection")
            warnings.warn(f"FlowCallback: epoch {epoch}: the 2-D projection failed ({type(exc).__name__}: "
                          f"{first_line(exc)}); the flows are written and training goes on. Details: {path}",
                          RuntimeWarning, stacklevel=2)
        if self._aborted:
            raise _Aborted()
        self._continuity = result.continuity
        page = self._write(result, clock, title_prefix=title_prefix)
        self.timings[epoch] = {f"{stage}_seconds": t for stage, t in clock.seconds.items()}
        self.timings[epoch]["snapshot_seconds"] = time.perf_counter() - state["t0"]
        self.pages[epoch] = page
        self.progress.finished(epoch, f"FlowCallback: epoch {epoch} snapshot written to {page} "
                                      f"({time.perf_counter() - state['t0']:.1f} s)")
        return page

    def _write(self, result: stages.SnapshotAnalysis, clock: stages.StageClock, *, title_prefix: str) -> Path:
        """The store and render stages: the epoch's files, its page, the run page, TensorBoard."""
        graphs = result.graphs
        epoch = next(iter(graphs.values())).epoch
        views = store.EpochViews(
            class_means={key: m for key, m in result.class_means.items() if key[0] in graphs},
            projections=result.projections,
            projection_samples=self._projection_samples if result.projections else None,
            projection_method=result.projection_method)
        with clock("store"):
            store.save_epoch(self.log_dir, graphs, views, metrics=result.metrics)
        self._graphs[epoch] = dict(graphs)
        self._views[epoch] = views
        self._metrics[epoch] = result.metrics
        page = self.log_dir / store.epoch_page_name(epoch)
        with clock("render"):
            notes = list(dict.fromkeys(n for g in graphs.values() for n in g.notes))  # each once, in order
            render.write_epoch_page(page, graphs, title_prefix=title_prefix, notes=notes)
            self._write_run_page(rewritten=epoch)
        if self.settings.tensorboard:
            from flowcallback.core import tensorboard

            with clock("tensorboard"):
                tensorboard.write_scalars(self.log_dir, epoch, tensorboard.metric_scalars(result.metrics))
        return page

    def _background_thread_init(self):
        # Background snapshots yield the CPU to training (flowcallback/core/_priority.py). The layer
        # pool is shared with synchronous snapshots, which wait for it anyway.
        if self.settings.background:
            _priority.lower_current_thread(_priority.background_niceness(self.settings.nice))

    def _layer_pool(self):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flowcallback-layer",
                                            initializer=self._background_thread_init)
        return self._pool

    def _record_error(self, epoch: Optional[int], exc: BaseException, where: str = "") -> Path:
        """Append the error and its traceback to ``errors/epoch_XXX.txt`` (``setup.txt`` before any epoch),
        and to what the run page shows (``self._errors``, keyed as :meth:`flowcallback.core.store.Run.errors`)."""
        name = f"epoch_{epoch:03d}.txt" if epoch is not None else "setup.txt"
        path = self.log_dir / "errors" / name
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        text = (f"[{where}]\n" if where else "") + trace
        with self._errors_lock:
            try:
                old = path.read_text("utf-8", "replace") + "\n" if path.is_file() and not path.is_symlink() else ""
                store.atomic_write(path, (old + text).encode("utf-8"))
            except OSError:
                pass
            key = store.SETUP_ERRORS if epoch is None else epoch
            self._errors[key] = self._errors[key] + "\n" + text if key in self._errors else text
        return path


def snapshot(model, validation_data, log_dir, *, epoch: int = 0, verbose: int = 1, **settings) -> Optional[Path]:
    """Take one snapshot of an already trained model, without a callback.

    Parameters
    ----------
    model : keras.Model
    validation_data : (x, y) tuple or tf.data.Dataset
    log_dir : str or path
    epoch : int, default=0
        The epoch number recorded for this snapshot.
    verbose : int, default=1
    **settings
        As for :class:`~flowcallback.FlowCallback` (``layers``, ``k``, ``inflation``, ``lrp``...).

    Returns
    -------
    pathlib.Path
        The page written.

    Examples
    --------
    >>> from flowcallback import snapshot
    >>> snapshot(model, (x_test, y_test), "flows/trained", epoch=6)   # doctest: +SKIP
    """
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"epoch: expected an integer >= 0, got {epoch!r}")
    unknown = sorted(set(settings) - set(SnapshotSettings.field_names()))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a setting of snapshot(); the settings are "
                         f"{', '.join(SnapshotSettings.field_names())}")
    settings.setdefault("background", False)
    snap = Snapshotter(validation_data, log_dir, SnapshotSettings(**settings))
    try:
        snap.prepare(model)
        snap.progress = SnapshotProgress(verbose, immediate=True)
        return snap.take(int(epoch))
    finally:
        snap.close()
