"""The snapshot runner: the stages of :mod:`flowcallback.core`, run for a live model.

:meth:`Snapshotter.prepare` plans the run once (:func:`flowcallback._plan.plan_run`) and starts
the relevance engine (:class:`flowcallback._relevance.RelevanceStage`). :meth:`Snapshotter.take`
captures the held-out set's activations in the training thread (the only part that holds training
up), then, in a background thread with ``background=True``
(:class:`flowcallback._threads.SnapshotThreads`): relevance, the pure analysis
(:func:`flowcallback.core.stages.analyse`), the store, the pages and the run page
(:class:`flowcallback.core.runpage.RunPageState`). A failure costs at most its epoch or its layer
(:class:`flowcallback._errors.ErrorPolicy`); nothing is written half-done.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from flowcallback import _validation as checks
from flowcallback._capture import Capture, capture_epoch
from flowcallback._errors import ErrorPolicy
from flowcallback._lock import RunLock
from flowcallback._plan import (
    RunPlan,
    former_fingerprint,
    held_out_digest,
    plan_run,
    refuse_foreign_files,
    resume,
    run_description,
)
from flowcallback._progress import SnapshotProgress
from flowcallback._relevance import RelevanceStage
from flowcallback._threads import SnapshotThreads
from flowcallback.core import neurons, project, render, runpage, stages, store
from flowcallback.core._inputs import Inputs
from flowcallback.core._notes import info
from flowcallback.core.flows import ANALYSIS_LABELS, EpochViews
from flowcallback.exceptions import SnapshotError
from flowcallback.run import load_run
from flowcallback.settings import SnapshotSettings

__all__ = ["Snapshotter"]


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
        self.reordered = checks.reshuffles(validation_data)  # put in an order of its own (canonical_order)
        self.labels = checks.labels_from_y(self.y_raw)
        self.signed = checks.signed_binary(self.y_raw)  # labels written -1 and 1
        self.held_out_digest = held_out_digest(self.x, self.labels)
        self.log_dir = Path(checks.check_log_dir(log_dir))
        self.settings = settings
        if isinstance(settings.k, int):
            checks.check_samples_for_k(settings.k, len(self.x))
        self.model = None
        self.plan: Optional[RunPlan] = None
        self.disabled = ""  # why snapshots are off (log_dir not writable), or ""
        self.progress = SnapshotProgress(0)  # the callback sets one per fit
        self.live = None  # the callback's LiveFigure with display="live": the last snapshot's Sankey in a notebook
        self.pages: Dict[int, Path] = {}
        self.timings: Dict[int, dict] = {}
        self.page = runpage.RunPageState(self.log_dir, {})
        self.errors = ErrorPolicy(self.log_dir, settings.on_error, on_record=self.page.add_error,
                                  aborted=lambda: self._aborted)
        self.relevance = RelevanceStage(settings, None, self.errors)
        self._pending: list = []
        self.threads = SnapshotThreads(background=settings.background, nice=settings.nice)
        self.lock = RunLock(self.log_dir)
        self._former_info: Optional[dict] = None  # run.json as this fit found it, when resuming
        self._held: Tuple[int, ...] = ()  # the run's epochs when this fit began
        self._written_in_fit = 0  # snapshots this fit wrote
        # appended to each snapshot's progress line (the budget spent): a text, or a function that
        # gives it when the line is printed
        self.progress_note = ""
        self._aborted = False
        self._continuity = stages.Continuity()  # the last snapshot's cluster ids, orders and projections
        self._projection_samples: Optional[np.ndarray] = None  # the projected samples, the same at every epoch
        self.finished: Dict[int, float] = {}  # perf_counter() when each epoch's snapshot was written
        self.on_written = None  # called with the epoch once its snapshot is written (several held-out sets)
        self.set_name: Optional[str] = None  # this set's name, in a run of several held-out sets

    @property
    def held_out(self):
        """``(x, labels)``: the held-out set as arrays and its integer class labels (x a dict or
        list of arrays for several inputs)."""
        x = self.x
        if isinstance(x, Inputs):
            x = dict(zip(x.names, x.arrays)) if x.names is not None else list(x.arrays)
        return x, self.labels

    @property
    def engine(self):
        """The relevance engine in use, or None."""
        return self.relevance.engine

    @property
    def aborted(self) -> bool:
        """Whether :meth:`abort` stopped the run (``fit`` ended without ``on_train_end``)."""
        return self._aborted

    @property
    def lrp_backend(self) -> Optional[str]:
        """The relevance engine chosen (``"native"`` or ``"innvestigate"``), or None without LRP."""
        return self.relevance.backend

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare(self, model) -> None:
        """Plan the run against the model, write run.json, start the relevance engine."""
        try:
            self._prepare(model)
        except BaseException:  # a refused model, or Ctrl-C while the worker starts: leave nothing behind
            self.abort()
            raise

    def _prepare(self, model) -> None:
        self._aborted, self.model, s = False, model, self.settings
        self._former_info, self._held, self._written_in_fit = None, (), 0
        self.disabled = ""  # a new fit tries again (the log_dir may have become writable)
        self.x = checks.inputs_for_model(model, self.x)  # several inputs: in the model's order
        self.held_out_digest = held_out_digest(self.x, self.labels)  # of the arrays in that order
        plan = plan_run(model, self.x, self.labels, s, signed=self.signed)
        if self.reordered:
            plan = replace(plan, notes=(*plan.notes, info(
                "The held-out tf.data.Dataset shuffles at each pass (image_dataset_from_directory does by default): "
                "its samples are taken in an order of their own, by their contents, so that every snapshot and a "
                "resumed run see the same set in the same order. shuffle=False keeps yours.")))
        checks.check_one_hot_width(self.y_raw, plan.n_classes)
        refuse_foreign_files(self.log_dir)  # before anything is written there
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()  # one writer per run: RunInUseError names a live holder
            plan, former = resume(self.log_dir, plan, self._describe(plan, plan.lrp_backend),
                                  former_fingerprint(model))
            same_samples = former is None or former["config"].get("held_out_digest") == self.held_out_digest
            if not same_samples:
                plan = replace(plan, notes=(*plan.notes, info(
                    "The held-out set is not the one of this run's earlier epochs (its digest differs): "
                    "cluster ids and orders start afresh, and comparisons with those epochs are refused.")))
            self.plan = plan
            self._former_info = former
            info_doc = self._describe(plan, plan.lrp_backend)
            store.write_run_info(self.log_dir, info_doc)
        except OSError as exc:  # read-only or full disk: the run cannot be recorded, training can go on
            self.lock.release()
            if s.on_error == "raise":
                raise SnapshotError(f"log_dir: cannot write to {self.log_dir}: {exc}") from exc
            self.disabled = f"cannot write to {self.log_dir}: {exc}"
            warnings.warn(f"FlowCallback: log_dir: {self.disabled}; no snapshot will be taken, training goes on",
                          RuntimeWarning, stacklevel=2)
            return
        self._projection_samples = project.choose_samples(len(self.x), s.projection_samples) if s.projection else None
        store.remove_stale_temporaries(self.log_dir)  # what writers killed mid-write (SIGKILL) left
        self._resume(info_doc, same_samples)
        self.relevance = RelevanceStage(s, plan.lrp_backend, self.errors, plan.lrp_unavailable)
        changed = self.relevance.start(model, plan.layer_names, self.x)  # auto: iNNvestigate refused, native runs
        if changed or (plan.lrp_backend is not None and self.relevance.engine is None):
            # run.json says which engine runs, and no LRP where none could start (the page offers no LRP view)
            self.page.info = self._describe(plan, self.relevance.backend if self.relevance.engine else None)
            store.write_run_info(self.log_dir, self.page.info)

    def _describe(self, plan: RunPlan, lrp_backend) -> dict:
        info_doc = run_description(self.model, plan, self.settings, len(self.x), lrp_backend, self.held_out_digest)
        # a resume with other layers= keeps the earlier epochs' columns listed (load_run checks them)
        listed = {layer["name"] for layer in info_doc["layers"]}
        former_layers = self._former_info["layers"] if self._former_info is not None else []
        info_doc["layers"] += [layer for layer in former_layers if layer["name"] not in listed]
        if self._former_info is not None:  # the model rebuilt in a notebook is "sequential_1": the run keeps its name
            info_doc["model"]["name"] = self._former_info["model"]["name"]
        if self.set_name is not None:
            info_doc["held_out_set"] = self.set_name
        if self._former_info is not None:  # the analyses of the earlier epochs stay listed (an LRP view of them)
            held = set(info_doc["analyses"]) | set(self._former_info.get("analyses", []))
            known = ("activations", "lrp")
            info_doc["analyses"] = [a for a in known if a in held] + sorted(held - set(known))
        return info_doc

    def _resume(self, info_doc: dict, same_samples: bool) -> None:
        """When appending to a run, read its epochs once: for the run page, and to continue the
        cluster ids and orders of its last epoch (when the held-out set is the same)."""
        self.page, self._continuity = runpage.RunPageState(self.log_dir, info_doc), stages.Continuity()
        self.errors.on_record = self.page.add_error
        try:
            self.page = runpage.RunPageState.from_run(load_run(self.log_dir), info_doc)
            self.errors.on_record = self.page.add_error
        except Exception:  # an unreadable earlier epoch is left off the page (load_run reports it)
            return
        self._held = tuple(sorted(self.page.graphs))
        if self.page.graphs and same_samples:
            last = max(self.page.graphs)
            self._continuity = stages.Continuity.resumed(self.page.graphs[last].values(), self.page.views.get(last),
                                                         self.labels, self._projection_samples)

    @property
    def model_name(self) -> str:
        """The run's model name, as run.json has it (an earlier fit's, when resuming): the pages' titles."""
        return str((self.page.info.get("model") or {}).get("name") or getattr(self.model, "name", "model"))

    def unprepare(self) -> None:
        """Undo :meth:`prepare` for a fit refused before its first snapshot: run.json as this fit
        found it, the relevance engine stopped, the run's lock released."""
        try:
            if self._former_info is not None and not self.disabled and not self._written_in_fit:
                store.write_run_info(self.log_dir, self._former_info)
        finally:
            self.close()

    def close(self) -> None:
        """Wait for background snapshots, then stop the relevance engine and the threads.

        Interrupted while it waits (Ctrl-C), it drops the snapshots not yet written (:meth:`abort`)."""
        try:
            self.flush()
        except Exception:  # a failed snapshot (on_error="raise"): the others are still written
            self._stop(cancel=False)
            raise
        except BaseException:  # KeyboardInterrupt: stop now
            self.abort()
            raise
        self._stop(cancel=False)

    def _stop(self, *, cancel: bool) -> None:
        try:
            self.threads.shutdown(cancel=cancel)
            self.relevance.close()
        finally:
            self.lock.release()

    def abort(self) -> None:
        """``fit`` ended without ``on_train_end``, or was interrupted while it waited for its
        snapshots: stop now, leaving only complete epochs.

        Snapshots not yet written are dropped (never half-written): those waiting are cancelled, the
        running one stops at its next layer job, the LRP worker is killed. When this returns, no
        process, thread or temporary file of the run is left. A second Ctrl-C meanwhile does not
        cut this short (it takes about the time of one layer's clustering); it is raised after.
        """
        self._aborted = True
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.cancel()
        self.relevance.kill()
        interrupt = None
        while True:
            try:
                self._stop(cancel=True)
                break
            except KeyboardInterrupt as exc:  # the threads are stopping anyway: wait for them, then raise
                interrupt = exc
        if interrupt is not None:
            raise interrupt

    @property
    def epochs_held(self) -> List[int]:
        """The epochs this run held when this fit began (written by earlier fits, this callback's
        included, and readable)."""
        return list(self._held)

    @property
    def busy(self) -> bool:
        """Whether a snapshot is still being computed in the background."""
        return any(not fut.done() for fut in self._pending)

    def record_schedule(self, summary: dict) -> None:
        """Record which epochs the budget took and skipped in run.json (and on the next run page)."""
        if self.disabled or self.plan is None:
            return
        former = (self._former_info or {}).get("schedule")
        if isinstance(former, dict) and former.get("first") != summary.get("first"):  # an earlier fit's schedule
            earlier = [e for e in former.get("earlier", []) if isinstance(e, dict)]
            summary = {**summary, "earlier": (earlier + [{k: v for k, v in former.items() if k != "earlier"}])[-100:]}
        self.page.info = {**self.page.info, "schedule": summary}  # a new dict: the page writer may be reading it
        try:
            store.write_run_info(self.log_dir, self.page.info)
        except (OSError, ValueError) as exc:  # the epochs' own files stand; the next snapshot's errors say more
            warnings.warn(f"FlowCallback: could not update {self.log_dir / 'run.json'}: {exc}", RuntimeWarning,
                          stacklevel=3)

    def rewrite_run_page(self) -> None:
        """Rewrite the run page (after :meth:`record_schedule` at the end of ``fit``)."""
        if not self.disabled and self.plan is not None and self.page.graphs:
            self._write_run_page()

    def flush(self) -> List[Path]:
        """Wait for every background snapshot; return the pages written (in epoch order)."""
        pending, self._pending = self._pending, []
        return [page for page in (fut.result() for fut in pending) if page is not None]

    def raise_failed(self) -> None:
        """Raise the error of a background snapshot that has failed (``on_error="raise"``), so that
        training stops now; the callback asks before every batch. Nothing to do with ``"warn"``, whose
        failed snapshots return None."""
        for fut in [f for f in self._pending if f.done() and f.exception() is not None]:
            self._pending.remove(fut)
            fut.result()

    # -- one snapshot --------------------------------------------------------------------------
    def take(self, epoch: int, *, title_prefix: str = ""):
        """Take the snapshot of ``epoch``: the capture now, the rest in the background with
        ``background=True``. Returns the page written, a Future of it (background), or None if the
        snapshot failed and ``on_error="warn"``."""
        if self.disabled:
            return None
        self.raise_failed()
        if self.relevance.dead:
            self.flush()  # the snapshots still using the dead engine finish first (their LRP part fails)
            self.relevance.restart_if_dead(self.model, self.plan.layer_names, self.x, epoch)
        try:
            captured = capture_epoch(self.model, self.x, self.y_raw, self.labels, epoch, self.plan, self.settings,
                                     copy_weights=self.engine is not None)
        except Exception as exc:
            return self._failed(epoch, exc)
        if not self.settings.background or self.relevance.in_place:  # an engine without a copy reads the model
            return self._analyse_and_write_safely(captured, title_prefix, False)
        fut = self.threads.coordinator().submit(self._analyse_and_write_safely, captured, title_prefix, True)
        self._pending.append(fut)
        return fut

    def _failed(self, epoch: int, exc: BaseException, *, background: bool = False):
        """A snapshot failed as a whole: raise (after the earlier epochs are written), or record and warn."""
        self.finished[epoch] = time.perf_counter()  # its cost counts for the budget all the same
        if self.settings.on_error != "raise":
            path = self.errors.tolerate(epoch, exc, "the snapshot", "the epoch is left out", stacklevel=5)
            self.progress.finished(epoch, f"FlowCallback: the snapshot of epoch {epoch} failed (see {path})")
            self._write_run_page()
            return None
        self.errors.record(epoch, exc)
        if not background:  # in the background, raise_failed() raises it before the next batch
            self._write_run_page()
            try:
                self.flush()  # earlier epochs still in the background are written before training stops
            except Exception:  # already failed: the first error is the one reported
                pass
        raise SnapshotError(f"snapshot of epoch {epoch} failed: {exc}") from exc

    def _analyse_and_write_safely(self, captured: Capture, title_prefix: str, background: bool):
        try:
            return self._analyse_and_write(captured, title_prefix=title_prefix)
        except Exception as exc:
            if self._aborted:  # fit was interrupted: this snapshot is dropped, not a failure
                return None
            return self._failed(captured.epoch, exc, background=background)

    def _analyse_and_write(self, captured: Capture, *, title_prefix: str) -> Path:
        s, epoch, plan = self.settings, captured.epoch, self.plan
        self.progress.update(epoch, "relevance (LRP)" if captured.weights is not None else "clustering", 1, 4)
        notes = list(captured.notes)
        lrp = self.relevance.analyze(captured.weights, epoch, captured.clock, self.labels, plan.n_classes, notes)
        self.progress.update(epoch, "kNN and MCL clustering", 2, 4)
        column_notes = {**plan.columns_keyed(plan.column_notes),
                        **({"Prediction": captured.prediction_note} if captured.prediction_note else {})}
        embeddings = {a: plan.columns_keyed(e) for a, e in {"activations": captured.activations,
                                                             **lrp.embeddings}.items()}
        projection_layers = None if s.projection_layers is None else [plan.column(n) for n in s.projection_layers]
        result = stages.analyse(
            stages.Captured(epoch=epoch, embeddings=embeddings, held_out=self.held_out_digest,
                            labels=self.labels, predictions=captured.predictions, metrics=captured.metrics,
                            analysis_metrics=lrp.metrics, notes=(*plan.notes, *notes), analysis_notes=lrp.notes,
                            column_notes=column_notes),
            plan.column_layers, k=plan.k, inflation=s.inflation, index=s.index,
            mcl_backend=plan.engines.mcl, knn_backend=plan.engines.knn, mcl_threads=s.mcl_threads,
            class_names=plan.class_names,
            previous=self._continuity, map=self._layer_map, clock=captured.clock,
            projection=s.projection, projection_layers=projection_layers, projection_samples=self._projection_samples)
        self.progress.update(epoch, "writing the pages and files", 3, 4)
        for (analysis, layer), exc in result.left_out.items():
            label = ANALYSIS_LABELS.get(analysis, analysis)
            self.errors.tolerate(epoch, exc, f"kNN/MCL of layer {layer} ({label})",
                                 "the layer is left out of this epoch's diagram", where=f"{label}, layer {layer}")
        if result.projection_error is not None:
            self.errors.tolerate(epoch, result.projection_error, "the 2-D projection", "the flows are written",
                                 where="projection")
        if self._aborted:
            raise _Aborted()
        self._continuity = result.continuity
        class_means = plan.columns_keyed({**captured.class_means, **lrp.class_means})
        class_means = {k: m for k, m in class_means.items() if k[0] in result.graphs}
        responses = plan.columns_keyed(captured.responses)
        unit_clusters = self._neuron_clusters(class_means, responses, epoch, captured.clock)
        pictured = np.unique([s for u in unit_clusters.values() for s in u.top_samples.ravel().tolist() if s >= 0])
        thumbnails = neurons.thumbnails(self.x, pictured) if pictured.size else None
        views = EpochViews(class_means=class_means,
                           projections=result.projections, projection_method=result.projection_method,
                           projection_samples=self._projection_samples if result.projections else None,
                           unit_clusters=unit_clusters, thumbnail_samples=None if thumbnails is None else pictured,
                           thumbnails=thumbnails)
        page = self._write(result, views, captured.clock, title_prefix=title_prefix)
        if self.live is not None:
            self.live.show(epoch, result.graphs, title_prefix=title_prefix)
        seconds = time.perf_counter() - captured.started
        self.timings[epoch] = {**{f"{stage}_seconds": t for stage, t in captured.clock.seconds.items()},
                               "snapshot_seconds": seconds}
        self.pages[epoch] = page
        self._written_in_fit += 1
        self.finished[epoch] = time.perf_counter()
        if self.on_written is not None:
            self.on_written(epoch)
        note = self.progress_note() if callable(self.progress_note) else self.progress_note
        note = f"; {note}" if note else ""
        self.progress.finished(epoch, f"FlowCallback: epoch {epoch} snapshot written to {page} ({seconds:.1f} s{note})")
        return page

    def _neuron_clusters(self, class_means, responses, epoch: int, clock) -> dict:
        """The neuron clusters stage (:mod:`flowcallback.core.neurons`) of every layer with class
        means of its activations; a layer whose clustering fails is left out, with an error file."""
        setting = self.settings.neuron_clusters
        if setting is False:
            return {}
        out = {}
        with clock("neurons"):
            for (analysis, column), means in class_means.items():
                if analysis != "activations":
                    continue
                try:
                    out[(analysis, column)] = neurons.neuron_clusters(
                        means, responses.get(column), n_clusters=None if setting is True else setting)
                except Exception as exc:
                    self.errors.tolerate(epoch, exc, f"the neuron clusters of layer {column}", "the flows are written",
                                         where=f"neuron clusters, layer {column}")
        return out

    def _layer_map(self, fn, *iterables):
        """The layer jobs on the executor (``executor=`` or the layer pool), stopping at the first
        result after :meth:`abort`: closing the executor's result iterator cancels the jobs not started."""
        results = (self.settings.executor or self.threads.layer_pool()).map(fn, *iterables)
        try:
            for result in results:
                if self._aborted:
                    raise _Aborted()
                yield result
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _write(self, result: stages.SnapshotAnalysis, views: EpochViews, clock, *, title_prefix: str) -> Path:
        """The store and render stages: the epoch's files, its page, the run page, TensorBoard."""
        epoch = next(iter(result.graphs.values())).epoch
        with clock("store"):
            store.save_epoch(self.log_dir, result.graphs, views, metrics=result.metrics)
        self.page.add_epoch(epoch, result.graphs, views, result.metrics)
        page = self.log_dir / store.epoch_page_name(epoch)
        with clock("render"):
            render.write_epoch_page(page, result.graphs, title_prefix=title_prefix)
            self._write_run_page()
        if self.settings.tensorboard:
            from flowcallback.core import tensorboard

            with clock("tensorboard"):
                tensorboard.write_scalars(self.log_dir, epoch, tensorboard.metric_scalars(result.metrics))
        return page

    def _write_run_page(self) -> None:
        try:
            self.page.write()
        except Exception as exc:  # pragma: no cover - reported, not raised: the epoch's own files stand
            warnings.warn(f"FlowCallback: could not rewrite the run page: {exc}", RuntimeWarning, stacklevel=2)

