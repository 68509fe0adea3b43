"""One snapshot: capture, embed, kNN, cluster, flows, render, store, in that order.

:class:`Snapshotter` holds what lives across snapshots (the validated held-out set, the chosen
layers, the LRP worker) and :meth:`Snapshotter.take` runs the stages for the model's current
weights. :class:`~flowcallback.FlowCallback` only decides *when* to call it, and
:func:`snapshot` calls it once for a model you already trained.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import threading
import time
import traceback
import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from flowcallback import _validation as V
from flowcallback._version import __version__
from flowcallback.core import _priority, capture, cluster, embed, flows, knn, render, store
from flowcallback.core.cluster import cluster_layer, layer_note
from flowcallback.core.lrp import INNVESTIGATE_ANALYZERS
from flowcallback.core.lrp import engines as lrp_engines
from flowcallback.core.lrp import worker as lrp_worker
from flowcallback.core.match import relabel
from flowcallback.exceptions import SnapshotError

__all__ = ["SnapshotSettings", "Snapshotter", "snapshot"]

ANALYSES = ("activations", "lrp")


class SnapshotSettings:
    """Validated settings shared by :class:`~flowcallback.FlowCallback` and :func:`snapshot`."""

    def __init__(
        self,
        *,
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
        on_error: str = "warn",
        reduce: Optional[str] = "pca",
        dim: int = 128,
        fit_samples: Optional[int] = None,
        mcl_backend: str = "fast",
        executor: Optional[Executor] = None,
        background: bool = True,
        mcl_threads: Optional[int] = None,
        tensorboard: bool = False,
        nice: int = 0,
    ):
        if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
            raise ValueError(f"layers: expected None or a list of layer names, got {layers!r}")
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, (str, numbers.Integral)) for c in class_names):
                raise ValueError(f"class_names: expected a list of strings, got {class_names!r}")
            class_names = [str(c) for c in class_names]
        if not isinstance(lrp, bool):
            raise ValueError(f"lrp: expected True or False, got {lrp!r}")
        if not isinstance(analyzer, str) or analyzer not in set(lrp_engines.ANALYZERS) | set(INNVESTIGATE_ANALYZERS):
            raise ValueError(f"analyzer: expected one of the LRP analyzers {sorted(set(lrp_engines.ANALYZERS) | set(INNVESTIGATE_ANALYZERS))}, "
                             f"got {analyzer!r}")
        lrp_engines.check_backend(lrp_backend, analyzer)
        if analyzer_kwargs is not None:
            if not isinstance(analyzer_kwargs, dict):
                raise ValueError(f"analyzer_kwargs: expected a dict, got {analyzer_kwargs!r}")
            try:
                json.dumps(analyzer_kwargs)
            except (TypeError, ValueError):
                raise ValueError("analyzer_kwargs: values must be JSON-serialisable (numbers, strings, lists)") from None
        knn.check_k(k)
        cluster.check_inflation(inflation)
        if index not in ("auto", "flat", "hnsw"):
            raise ValueError(f"index: expected 'auto', 'flat' or 'hnsw', got {index!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error: expected 'warn' or 'raise', got {on_error!r}")
        if reduce not in ("pca", "random", None):
            raise ValueError(f"reduce: expected 'pca', 'random' or None, got {reduce!r}")
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2:
            raise ValueError(f"dim: expected an integer >= 2, got {dim!r}")
        if mcl_backend not in cluster.BACKENDS:
            raise ValueError(f"mcl_backend: expected one of {cluster.BACKENDS}, got {mcl_backend!r}")
        self.layers = list(layers) if layers is not None else None
        self.class_names = class_names
        self.lrp = lrp
        self.analyzer = analyzer
        self.analyzer_kwargs = dict(analyzer_kwargs or {})
        self.lrp_backend = lrp_backend
        self.k = k
        self.inflation = float(inflation)
        self.index = index
        self.batch_size = int(batch_size)
        self.on_error = on_error
        self.reduce = reduce
        self.dim = int(dim)
        self.fit_samples = embed.check_fit_samples(fit_samples)
        self.mcl_backend = mcl_backend
        if executor is not None and not isinstance(executor, Executor) and not callable(getattr(executor, "submit", None)):
            raise ValueError(f"executor: expected a concurrent.futures.Executor (or an object with submit()), got {executor!r}")
        if not isinstance(background, bool):
            raise ValueError(f"background: expected True or False, got {background!r}")
        if mcl_threads is not None and (isinstance(mcl_threads, bool) or not isinstance(mcl_threads, numbers.Integral) or mcl_threads < 1):
            raise ValueError(f"mcl_threads: expected None or a positive integer, got {mcl_threads!r}")
        if not isinstance(tensorboard, bool):
            raise ValueError(f"tensorboard: expected True or False, got {tensorboard!r}")
        self.nice = _priority.check_nice(nice)
        self.tensorboard = tensorboard
        self.executor = executor
        self.background = background
        self.mcl_threads = mcl_threads

    @property
    def embed_options(self) -> dict:
        return {"reduce": self.reduce, "dim": self.dim, "fit_samples": self.fit_samples}


def _first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


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


def _loss(model, y_raw, outputs) -> Tuple[Optional[float], str]:
    """The model's own compiled loss on the held-out set, and why it is missing where it is.

    Returns
    -------
    loss : float or None
    why : str
        ``""`` when the loss was computed, else one sentence for the epoch's notes.
    """
    loss = getattr(model, "loss", None)
    if loss is None:
        return None, "loss not shown: the model was compiled without a loss"
    if isinstance(loss, (dict, list, tuple)):
        return None, "loss not shown: the model has one loss per output"
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or str(loss)
    try:
        import tensorflow as tf

        fn = tf.keras.losses.get(loss)
        y = np.asarray(y_raw)
        if outputs.ndim == 2 and outputs.shape[1] == 1 and y.ndim == 1:
            y = y[:, None]  # 0/1 labels against one unit: Keras 3's losses want equal ranks, as fit() makes them
        # arrays, not tensors: Keras 3 losses then run on whichever backend Keras uses (JAX, PyTorch)
        value = float(np.mean(np.asarray(fn(y, np.asarray(outputs)))))
    except Exception as exc:  # labels in a form the loss does not take
        y_shape = tuple(np.shape(y_raw))
        hint = ("integer labels need sparse_categorical_crossentropy" if len(y_shape) == 1
                else "one-hot labels need categorical_crossentropy")
        return None, (f"loss not shown: the compiled loss {name} cannot take the held-out labels of shape {y_shape} "
                      f"({hint}; {type(exc).__name__}: {_first_line(exc, 160)})")
    if not np.isfinite(value):
        return None, f"loss not shown: the compiled loss {name} is not finite on the held-out set"
    return value, ""


class _Progress:
    """Keras-style progress for a snapshot (a Progbar at verbose=1, one line at verbose=2)."""

    def __init__(self, verbose: int, target: int, epoch: int):
        self.verbose = verbose
        self.done = 0
        self.bar = None
        if verbose == 1:
            import tensorflow as tf

            print(f"\nFlowCallback: snapshot of epoch {epoch}")
            self.bar = tf.keras.utils.Progbar(target, unit_name="step")

    def step(self, n: int = 1):
        self.done += n
        if self.bar is not None and self.done < self.bar.target:
            self.bar.update(self.done)

    def finish(self, message: str):
        if self.bar is not None:
            self.bar.update(self.bar.target, finalize=True)
        if self.verbose >= 1:
            print(message)


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
        self.x, self.y_raw = V.check_validation_data(validation_data)
        self.labels = V.labels_from_y(self.y_raw)
        self.log_dir = Path(V.check_log_dir(log_dir))
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
        self.model_notes: List[str] = []  # about the whole model (branch layout, binary output), on every graph and page
        self.binary_threshold = 0.5  # for a one-unit output: prediction = output > threshold
        self.layout_notes: Dict[str, str] = {}  # per column (parallel branches)
        self.pages: Dict[int, Path] = {}
        self.timings: Dict[int, dict] = {}
        self._pending: list = []
        self._coordinator: Optional[ThreadPoolExecutor] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._aborted = False
        self._errors_lock = threading.Lock()
        self._previous: Dict[tuple, np.ndarray] = {}  # last clusters per (analysis, layer), for stable ids
        self._orders: Dict[str, Dict[str, tuple]] = {}
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
        self.layer_names = capture.select_layers(model, self.settings.layers)
        if not self.layer_names:
            raise ValueError("layers: the model has no layer to analyse")
        self.layer_types = {n: type(model.get_layer(n)).__name__ for n in self.layer_names}
        self.model_notes, self.layout_notes = capture.branch_layout(model, self.layer_names)
        n_classes = V.output_classes(model, self.x)
        self.binary_threshold, binary_note = V.binary_threshold(model, self.x)
        if binary_note:
            self.model_notes.append(binary_note)
        self.k = knn.resolve_k(self.settings.k, len(self.x), n_classes)
        self.n_classes, self.class_names = V.check_against_model(model, self.x, self.labels, self.settings.class_names, self.k)
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
            "config": {
                "k": self.k,
                "k_rule": self.settings.k if isinstance(self.settings.k, str) else "fixed",
                "inflation": self.settings.inflation,
                "index": self.settings.index,
                "reduce": self.settings.reduce,
                "dim": self.settings.dim,
                "mcl_backend": self.settings.mcl_backend,
                "analyzer": self.settings.analyzer,
                "analyzer_kwargs": self.settings.analyzer_kwargs,
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
        store.remove_stale_temporaries(self.log_dir)  # what writers killed mid-write (SIGKILL) left
        self._resume_identities()
        if lrp_unavailable:
            self.lrp_note = f"LRP skipped for the whole model, activation flows only: {lrp_unavailable}"
            warnings.warn(f"FlowCallback: {self.lrp_note}", RuntimeWarning, stacklevel=2)
        elif self.settings.lrp:
            self.worker = self._new_lrp_engine()
            try:
                self.worker.start(model, self.layer_names, self.x, batch_size=self.settings.batch_size,
                                  embed_options=self.settings.embed_options)
            except ValueError:
                self.worker = None
                raise
            except Exception as exc:  # LRP unavailable (a layer the engine cannot analyse, say)
                self.worker = None
                self.lrp_note = f"LRP skipped for the whole model, activation flows only: {_first_line(exc)}"
                self._record_error(None, exc)
                if self.settings.on_error == "raise":
                    raise SnapshotError(str(exc)) from exc
                warnings.warn(f"FlowCallback: {self.lrp_note}", RuntimeWarning, stacklevel=2)

    def _new_lrp_engine(self):
        """The relevance engine chosen at set-up: the native one here, or iNNvestigate's worker process."""
        if self.lrp_backend == "native":
            return lrp_engines.NativeEngine(self.settings.analyzer, self.settings.analyzer_kwargs)
        return lrp_worker.LRPWorker(self.settings.analyzer, self.settings.analyzer_kwargs,
                                 nice=self.settings.nice if self.settings.background else 0)

    def _resume_identities(self) -> None:
        """When appending to a run, continue cluster ids and orders from its last complete epoch."""
        try:
            run = store.load_run(self.log_dir)
            if not run.epochs:
                return
            last = run.epochs[-1]
            for analysis in run.analyses(last):
                g = run.epoch(last, analysis)
                if g.n_samples != len(self.labels) or not np.array_equal(g.labels, self.labels):
                    return
                self._orders[analysis] = {c.name: c.order for c in g.columns if c.kind == "layer"}
                for j, c in enumerate(g.columns):
                    if c.kind == "layer":
                        self._previous[(analysis, c.name)] = np.array(g.assignments[:, j])
        except Exception:  # an unreadable earlier epoch only costs the continuity of ids
            self._previous, self._orders = {}, {}

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
        running may have created it meanwhile (its first ``_finish``), and it must be shut down
        too rather than left to the garbage collector, which a lingering reference would defeat.
        """
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is not None:
            coordinator.shutdown(wait=True, cancel_futures=cancel)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)

    # -- one snapshot --------------------------------------------------------------------------
    def take(self, epoch: int, *, verbose: int = 1, title_prefix: str = ""):
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
            fut = self._coordinator.submit(self._finish_safely, state, min(verbose, 2) and 2, title_prefix, True)
            self._pending.append(fut)
            return fut
        return self._finish_safely(state, verbose, title_prefix, False)

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
            self.lrp_note = f"LRP stopped: the LRP worker died and could not be restarted ({_first_line(exc)})"
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
        """Rewrite index.html from what is on disk; a failure here never fails the snapshot.

        What the page shows of each epoch is kept between snapshots (``self._page_cache``), so
        that each snapshot draws only its own epoch; ``rewritten`` is the epoch just (re)written.
        """
        try:
            with self._page_lock:
                for key in [key for key in self._page_cache if key[0] == rewritten]:
                    del self._page_cache[key]
                render.write_run_page(store.load_run(self.log_dir), self._page_cache)
        except Exception as exc:  # pragma: no cover - reported, not raised
            warnings.warn(f"FlowCallback: could not rewrite the run page: {exc}", RuntimeWarning, stacklevel=2)

    def _failed(self, epoch: int, exc: BaseException):
        path = self._record_error(epoch, exc)
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
        t0 = time.perf_counter()
        s = self.settings
        acts, outputs = capture.capture_activations(
            self.model, self.x, self.layer_names, batch_size=s.batch_size, embed_options=s.embed_options
        )
        finite = np.all(np.isfinite(outputs), axis=1)
        if outputs.shape[1] == 1:
            predictions = (outputs[:, 0] > self.binary_threshold).astype(np.int64)
        else:
            predictions = np.argmax(np.where(finite[:, None], outputs, 0), axis=1)
        prediction_note = ""
        if not finite.all():
            # argmax of NaN is undefined: shown as class 0, counted as wrong, and said so
            predictions = np.where(finite, predictions, 0)
            prediction_note = (f"{int((~finite).sum())} sample(s) have a NaN/infinite model output (diverging model?): "
                               "no prediction exists; shown as class 0 and counted as wrong in the accuracy")
        loss, loss_note = _loss(self.model, self.y_raw, outputs)
        metrics = {
            "accuracy": float(np.mean((predictions == self.labels) & finite)),
            "loss": loss,
            "k": self.k,
            "inflation": s.inflation,
        }
        weights = [np.array(w, copy=True) for w in self.model.get_weights()] if self.worker is not None else None
        return {"epoch": epoch, "activations": acts, "predictions": predictions, "metrics": metrics,
                "prediction_note": prediction_note, "loss_note": loss_note,
                "weights": weights, "t0": t0, "capture_seconds": time.perf_counter() - t0}

    def _finish_safely(self, state: dict, verbose: int, title_prefix: str, background: bool):
        try:
            return self._finish(state, verbose=verbose, title_prefix=title_prefix)
        except Exception as exc:
            if self._aborted:  # fit was interrupted: this snapshot is dropped, not a failure
                return None
            if background and self.settings.on_error == "raise":
                self._record_error(state["epoch"], exc)
                raise SnapshotError(f"snapshot of epoch {state['epoch']} failed: {exc}") from exc
            return self._failed(state["epoch"], exc)

    def _finish(self, state: dict, *, verbose: int, title_prefix: str) -> Path:
        s = self.settings
        epoch = state["epoch"]
        use_lrp = state["weights"] is not None
        n_jobs = len(self.layer_names) * (1 + int(use_lrp))
        prog = _Progress(verbose, int(use_lrp) + n_jobs + 1, epoch)
        notes: List[str] = [state["loss_note"]] if state.get("loss_note") else []
        lrp_notes: List[str] = []  # on the LRP graph only (and the page)
        timings = {"capture_seconds": state["capture_seconds"]}
        embeddings = {"activations": state["activations"]}
        metrics_lrp = {}
        # kNN + MCL: one independent job per (analysis, layer), on the executor. The activation
        # jobs start before the LRP analysis, so that they overlap with the LRP worker process.
        t_cluster = time.perf_counter()
        executor = s.executor or self._layer_pool()
        jobs = {}

        def submit(analysis, emb):
            for name in self.layer_names:
                if name in emb:
                    jobs[(analysis, name)] = executor.submit(
                        cluster_layer, emb[name], self.k, s.inflation, s.index, s.mcl_backend, s.mcl_threads
                    )

        submit("activations", embeddings["activations"])
        if use_lrp:
            t = time.perf_counter()
            try:
                res = self.worker.analyze(state["weights"])
                embeddings["lrp"] = res.embeddings
                metrics_lrp = {"lrp_analyzer": f"{res.analyzer_module}.{res.analyzer_class}", "lrp_engine": res.engine}
                lrp_notes.append(f"LRP relevance ({s.analyzer}) is computed by {res.engine} for each sample's predicted "
                                 "class, so the LRP flows sort by prediction from the first layer on: not a sign that "
                                 "early layers separate the classes (the activation flows show that)")
                if res.missing:
                    notes.append(f"LRP: no relevance reached layer(s) {', '.join(res.missing)}")
            except Exception as exc:
                if s.on_error == "raise" or self._aborted:
                    raise
                notes.append(f"LRP failed for this epoch: {_first_line(exc)}")
                path = self._record_error(epoch, exc)
                warnings.warn(f"FlowCallback: epoch {epoch}: LRP failed ({_first_line(exc)}); the activation flows are "
                              f"still written and training goes on. Details: {path}", RuntimeWarning, stacklevel=2)
            timings["lrp_seconds"] = time.perf_counter() - t
            prog.step()
        elif self.lrp_note:
            notes.append(self.lrp_note)

        if "lrp" in embeddings:
            submit("lrp", embeddings["lrp"])
        t = time.perf_counter()
        results, column_notes = {}, {}
        for key, fut in jobs.items():
            try:
                labels = fut.result()
                prev = self._previous.get(key)
                if prev is not None and len(prev) == len(labels):
                    labels, _ = relabel(prev, labels)  # persistent clusters keep their id
                results[key] = labels
                note = layer_note(embeddings[key[0]][key[1]], labels, self.k)
                if note:
                    column_notes.setdefault(key[0], {})[key[1]] = note
            except Exception as exc:
                if s.on_error == "raise" or self._aborted:
                    raise
                label = render.ANALYSIS_LABELS.get(key[0], key[0])
                notes.append(f"{label}: layer {key[1]} left out of this epoch ({_first_line(exc)})")
                path = self._record_error(epoch, exc, f"{label}, layer {key[1]}")
                warnings.warn(f"FlowCallback: epoch {epoch}, layer {key[1]} ({label}): kNN/MCL failed "
                              f"({type(exc).__name__}: {_first_line(exc)}); the layer is left out of this epoch's "
                              f"diagram and training goes on. Details: {path}", RuntimeWarning, stacklevel=2)
            prog.step()
        timings["cluster_seconds"] = time.perf_counter() - t  # waiting for the jobs after LRP
        timings["cluster_wall_seconds"] = time.perf_counter() - t_cluster  # overlapping LRP
        if self._aborted:
            raise _Aborted()

        t = time.perf_counter()
        graphs = {}
        for analysis in embeddings:
            layer_clusters = [(n, self.layer_types[n], results[(analysis, n)]) for n in self.layer_names if (analysis, n) in results]
            m = dict(state["metrics"])
            if analysis == "lrp":
                m.update(metrics_lrp)
            col_notes = dict(self.layout_notes)
            for name, extra in column_notes.get(analysis, {}).items():
                col_notes[name] = f"{col_notes[name]}; {extra}" if name in col_notes else extra
            if state["prediction_note"]:
                col_notes["Prediction"] = state["prediction_note"]
            graphs[analysis] = flows.build_flow_graph(
                layer_clusters, self.labels, state["predictions"], class_names=self.class_names, epoch=epoch,
                analysis=analysis, metrics={k: store._clean_metric(v) for k, v in m.items()},
                initial_orders=self._orders.get(analysis), notes=col_notes,
                graph_notes=self.model_notes + notes + (lrp_notes if analysis == "lrp" else []),
            )
        for analysis, g in graphs.items():
            self._orders[analysis] = {c.name: c.order for c in g.columns if c.kind == "layer"}
            for j, c in enumerate(g.columns):
                if c.kind == "layer":
                    self._previous[(analysis, c.name)] = np.array(g.assignments[:, j])
        timings["flows_seconds"] = time.perf_counter() - t
        if self._aborted:
            raise _Aborted()
        t = time.perf_counter()
        store.save_epoch(self.log_dir, graphs)
        page = self.log_dir / store.epoch_page_name(epoch)
        render.write_epoch_page(page, graphs, title_prefix=title_prefix, notes=self.model_notes + notes + lrp_notes)
        self._write_run_page(rewritten=epoch)
        if s.tensorboard:
            from flowcallback.core import metrics as metrics_mod
            from flowcallback.core import tensorboard as tb

            tb.write_scalars(self.log_dir, epoch, tb.metric_scalars(metrics_mod.layer_metrics(graphs.values())))
        timings["render_store_seconds"] = time.perf_counter() - t
        self.timings[epoch] = timings
        self.pages[epoch] = page
        prog.step()
        prog.finish(f"FlowCallback: epoch {epoch} snapshot written to {page} ({time.perf_counter() - state['t0']:.1f} s)")
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
        """Append the error and its traceback to ``errors/epoch_XXX.txt`` (``setup.txt`` before any epoch)."""
        name = f"epoch_{epoch:03d}.txt" if epoch is not None else "setup.txt"
        path = self.log_dir / "errors" / name
        text = (f"[{where}]\n" if where else "") + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with self._errors_lock:
            try:
                old = path.read_text("utf-8", "replace") + "\n" if path.is_file() and not path.is_symlink() else ""
                store.atomic_write(path, (old + text).encode("utf-8"))
            except OSError:
                pass
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
    settings.setdefault("background", False)
    snap = Snapshotter(validation_data, log_dir, SnapshotSettings(**settings))
    try:
        snap.prepare(model)
        return snap.take(int(epoch), verbose=verbose)
    finally:
        snap.close()
