"""The LRP stage of a run: one relevance engine, started once, restarted if it dies, asked each snapshot.

:class:`RelevanceStage` owns the engine (:mod:`flowcallback.core.lrp.engines`) and what becomes
of its failures: with ``lrp_backend="auto"``, iNNvestigate refusing the model gives the native
engine (the reason recorded in ``errors/setup.txt``); an engine that cannot start at all leaves
activation flows only, with a note; an engine that dies is started again before the next snapshot.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from flowcallback._errors import ErrorPolicy
from flowcallback.core import aggregate
from flowcallback.core._notes import Note, first_line, info, name_list, problem
from flowcallback.core.lrp import engines as lrp_engines
from flowcallback.core.lrp import worker as lrp_worker
from flowcallback.core.lrp.result import LRPResult
from flowcallback.exceptions import SnapshotError
from flowcallback.settings import SnapshotSettings

__all__ = ["RelevanceStage", "LRPOutcome"]


@dataclass(frozen=True)
class LRPOutcome:
    """What the LRP stage adds to one snapshot, keyed by analysis (``"lrp"``) as
    :class:`flowcallback.core.stages.Captured` takes it; empty when there is no relevance."""

    embeddings: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    notes: Mapping[str, Tuple[Note, ...]] = field(default_factory=dict)
    class_means: Mapping[Tuple[str, str], np.ndarray] = field(default_factory=dict)  # ("lrp", layer)


class RelevanceStage:
    """The relevance engine of one run.

    Parameters
    ----------
    settings : SnapshotSettings
    backend : {"native", "innvestigate"} or None
        As planned (:class:`flowcallback._plan.RunPlan`); None: no LRP.
    errors : ErrorPolicy
    unavailable : str
        Why LRP is off for the whole model, where it is (a note at every snapshot).
    """

    def __init__(self, settings: SnapshotSettings, backend: Optional[str], errors: ErrorPolicy, unavailable: str = ""):
        self.settings = settings
        self.backend = backend
        self.errors = errors
        self.engine = None  # lrp_worker.LRPWorker or lrp_engines.NativeEngine
        self.note: Optional[Note] = None  # why there is no relevance at all (a problem), shown every snapshot
        if unavailable:
            self.note = problem(f"LRP skipped for the whole model, activation flows only: {unavailable}")
            warnings.warn(f"FlowCallback: {self.note}", RuntimeWarning, stacklevel=4)

    def _new_engine(self):
        s = self.settings
        if self.backend == "native":
            return lrp_engines.NativeEngine(s.analyzer, dict(s.analyzer_kwargs))
        return lrp_worker.LRPWorker(s.analyzer, dict(s.analyzer_kwargs), nice=s.nice if s.background else 0)

    def _started(self, model, layer_names: Sequence[str], x: np.ndarray):
        engine = self._new_engine()
        engine.start(model, list(layer_names), x, batch_size=self.settings.batch_size,
                     embed_options=self.settings.embed_options)
        return engine

    def start(self, model, layer_names: Sequence[str], x: np.ndarray) -> bool:
        """Start the engine; True if the backend changed (``auto``: iNNvestigate refused the model)."""
        if self.backend is None:
            return False
        changed = False
        try:
            try:
                self.engine = self._started(model, layer_names, x)
            except ValueError:
                raise
            except Exception as exc:
                if self.settings.lrp_backend != "auto" or self.backend != "innvestigate":
                    raise
                self.errors.record(None, exc, "iNNvestigate refused the model; the native LRP engine is used")
                self.backend, changed = "native", True
                self.engine = self._started(model, layer_names, x)
        except ValueError:
            raise
        except Exception as exc:  # LRP unavailable (a model without a layer graph, say)
            self.engine = None
            if self.settings.on_error == "raise":
                raise SnapshotError(str(exc)) from exc
            path = self.errors.record(None, exc)
            reason = first_line(exc)
            whole = f" (the whole message: errors/{path.name})" if reason != str(exc).strip() else ""
            self.note = problem(f"LRP skipped for the whole model, activation flows only: {reason}{whole}")
            warnings.warn(f"FlowCallback: {self.note}", RuntimeWarning, stacklevel=4)
            return changed
        if getattr(self.engine, "note", "") and self._stops_lose_columns:  # relevance stops before a selected layer
            warnings.warn(f"FlowCallback: {self.engine.note}", RuntimeWarning, stacklevel=4)
        if self.in_place:
            warnings.warn(f"FlowCallback: {self.in_place_note}", RuntimeWarning, stacklevel=4)
        return changed

    @property
    def in_place(self) -> bool:
        """Whether the engine reads the model itself (no private copy could be made): each snapshot
        must then be analysed while training waits (:meth:`flowcallback.pipeline.Snapshotter.take`)."""
        return bool(getattr(self.engine, "in_place", ""))

    @property
    def in_place_note(self) -> Note:
        return info(f"{self.engine.in_place}; each snapshot runs while training waits, instead of in the "
                    "background")

    @property
    def _stops_lose_columns(self) -> bool:
        """Whether a layer without an LRP rule leaves a selected layer without relevance (a problem,
        warned of); a stop with no selected layer before it (at the input's side) is only said."""
        return bool(getattr(self.engine, "blocked", True))

    @property
    def dead(self) -> bool:
        """Whether the engine was started and has died since (a crashed or killed worker process)."""
        return self.engine is not None and not self.engine.alive

    def restart_if_dead(self, model, layer_names: Sequence[str], x: np.ndarray, epoch: int) -> None:
        """A crashed or killed engine is started again (once per snapshot that finds it dead)."""
        if self.engine is None or self.engine.alive:
            return
        self.engine.close()
        try:
            self.engine = self._started(model, layer_names, x)
        except Exception as exc:
            self.engine = None
            self.note = problem(f"LRP stopped: the LRP worker died and could not be restarted ({first_line(exc)})")
            self.errors.tolerate(epoch, exc, "restarting the LRP worker", "LRP stops for the rest of the run",
                                 stacklevel=5)

    def analyze(self, weights, epoch: int, clock, labels: np.ndarray, n_classes: int,
                notes: List[Note]) -> LRPOutcome:
        """The relevance of one snapshot at ``weights`` (None: no engine).

        Why there is none, or what it misses, goes to ``notes`` (the graph notes of every analysis).
        """
        if weights is None:
            if self.note is not None:
                notes.append(self.note)
            return LRPOutcome()
        means = aggregate.LayerClassMeans(labels, n_classes) if self.settings.class_means else None
        try:
            with clock("lrp", analysis="lrp"):
                result: LRPResult = self.engine.analyze(weights, class_means=means)
        except Exception as exc:
            self.errors.tolerate(epoch, exc, "LRP", "the activation flows are still written", stacklevel=5)
            notes.append(problem(f"LRP failed for this epoch: {first_line(exc)}"))
            return LRPOutcome()
        # notes about the relevance go with the LRP graph only (the activations graph is complete)
        missed = ((problem(f"LRP: no relevance reached layer(s) {name_list(result.missing)}"),)
                  if result.missing and not result.note else ())
        if self.in_place:
            missed += (self.in_place_note,)
        how = info(f"LRP relevance ({self.settings.analyzer}) is computed by {result.engine} for each sample's "
                   "predicted class, so the LRP flows sort by prediction from the first layer on: not a sign that "
                   "early layers separate the classes (the activation flows show that)")
        return LRPOutcome(
            embeddings={"lrp": result.embeddings},
            metrics={"lrp": {"lrp_analyzer": f"{result.analyzer_module}.{result.analyzer_class}",
                             "lrp_engine": result.engine}},
            notes={"lrp": missed + ((how, (problem if self._stops_lose_columns else info)(result.note)) if result.note
                                    else (how,))},
            # the native engine fills the class means; iNNvestigate's maps stay in its process
            class_means={} if means is None else {("lrp", n): m for n, m in means.result().items()})

    def kill(self) -> None:
        if self.engine is not None:
            self.engine.kill()  # unblocks a background snapshot waiting on it

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()
