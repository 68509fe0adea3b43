"""What a run will analyse, decided once from the model and the held-out set: :func:`plan_run`.

The columns (:func:`flowcallback.core.capture.choose_columns`), what the page must say about the
model (how the columns were chosen, parallel branches, a one-unit output), the classes and their
names, ``k``, and the relevance engine. Nothing here starts a process or writes a file: the
snapshot runner (:mod:`flowcallback.pipeline`) does, from the :class:`RunPlan`.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from flowcallback import _validation as checks
from flowcallback.core import capture, knn, store
from flowcallback.core._notes import Note, info
from flowcallback.core.lrp import engines as lrp_engines
from flowcallback.settings import SnapshotSettings

__all__ = ["RunPlan", "plan_run", "fingerprint", "run_description", "refuse_another_model"]


@dataclass(frozen=True)
class RunPlan:
    """The decisions that hold for every snapshot of a run.

    Attributes
    ----------
    columns : ColumnChoice
        The analysed layers, and the rule that chose them.
    layer_types : mapping of layer name to Keras class name
    notes : tuple of Note
        Graph notes about the model, shown at every snapshot.
    column_notes : mapping of layer name to str
        Column notes about the model (parallel branches).
    n_classes : int
    class_names : tuple of str
    k : int
        The kNN graph's neighbours, resolved (:func:`flowcallback.core.knn.resolve_k`).
    binary_threshold : float
        For a one-unit output: prediction = output > threshold.
    lrp_backend : {"native", "innvestigate"} or None
        None when LRP is off or unavailable for this model (:attr:`lrp_unavailable` says why).
    lrp_unavailable : str
    """

    columns: capture.ColumnChoice
    layer_types: Mapping[str, str]
    notes: Tuple[Note, ...]
    column_notes: Mapping[str, str]
    n_classes: int
    class_names: Tuple[str, ...]
    k: int
    binary_threshold: float
    lrp_backend: Optional[str]
    lrp_unavailable: str

    @property
    def layer_names(self) -> Tuple[str, ...]:
        return tuple(self.columns.names)


def fingerprint(model) -> str:
    """A hash of the architecture (not the weights), to refuse another model in the same log_dir."""
    try:
        cfg = json.loads(model.to_json())
        cfg.get("config", {}).pop("name", None)
    except Exception:  # a subclassed model without get_config: its class, layers and weight shapes
        cfg = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
               "layers": [[type(layer).__name__, layer.name] for layer in model.layers],
               "weights": [list(np.shape(w)) for w in model.get_weights()]}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def plan_run(model, x: np.ndarray, labels: np.ndarray, settings: SnapshotSettings) -> RunPlan:
    """Check the model against the held-out set and the settings, and decide what each snapshot does.

    Raises
    ------
    ValueError
        Naming the argument at fault: ``layers``, ``projection_layers``, ``class_names``, ``model``
        or ``validation_data``.
    """
    columns = capture.choose_columns(model, settings.layers)
    names = list(columns.names)
    if not names:
        raise ValueError("layers: the model has no layer to analyse")
    checks.check_names("layers", names, "a layer's name")
    unknown = sorted(set(settings.projection_layers or ()) - set(names))
    if unknown:
        raise ValueError(f"projection_layers: {unknown} are not among the analysed layers {names}")
    notes, column_notes = capture.branch_layout(model, names)
    notes = [info(n) for n in notes]
    if columns.rule in ("block outputs", "all"):
        notes.insert(0, info(f"Columns: {columns.description}."))
    if columns.rule == "all" and len(names) > capture.MAX_COLUMNS:
        warnings.warn(f"FlowCallback: layers='all': {len(names)} columns (the default shows at most "
                      f"{capture.MAX_COLUMNS} block outputs). {capture.cost_note(len(names), len(x))}",
                      RuntimeWarning, stacklevel=4)
    n_classes = checks.output_classes(model, x)
    threshold, binary_note = checks.binary_threshold(model, x)
    if binary_note:
        notes.append(info(binary_note))
    k = knn.resolve_k(settings.k, len(x), n_classes)
    given = None if settings.class_names is None else list(settings.class_names)
    n_classes, class_names = checks.check_against_model(model, x, labels, given, k)
    unavailable = lrp_engines.unavailable_reason(model) if settings.lrp else ""
    backend = (lrp_engines.choose_backend(settings.lrp_backend, model)
               if settings.lrp and not unavailable else None)
    return RunPlan(columns=columns, layer_types=capture.layer_types(model, names), notes=tuple(notes),
                   column_notes=dict(column_notes), n_classes=n_classes, class_names=tuple(class_names), k=k,
                   binary_threshold=threshold, lrp_backend=backend, lrp_unavailable=unavailable)


def run_description(model, plan: RunPlan, settings: SnapshotSettings, n_samples: int,
                    lrp_backend: Optional[str]) -> Dict:
    """``run.json`` of a run following ``plan`` (:func:`flowcallback.core.store.run_info`)."""
    config = {
        "k": plan.k,
        "k_rule": settings.k if isinstance(settings.k, str) else "fixed",
        "inflation": settings.inflation,
        "index": settings.index,
        "reduce": settings.reduce,
        "dim": settings.dim,
        "mcl_backend": settings.mcl_backend,
        "analyzer": settings.analyzer,
        "analyzer_kwargs": dict(settings.analyzer_kwargs),
        "lrp_engine": lrp_engines.engine_label(lrp_backend) if lrp_backend else None,
        "n_samples": int(n_samples),
        "epoch_numbering": "0 is the untrained model; e is the model after e epochs of training",
    }
    c = plan.columns
    return store.run_info(model_name=model.name, fingerprint=fingerprint(model), class_names=plan.class_names,
                          analyses=["activations", "lrp"] if lrp_backend else ["activations"],
                          layers=[(n, plan.layer_types[n]) for n in plan.layer_names],
                          columns={"rule": c.rule, "eligible_layers": c.eligible, "description": c.description},
                          config=config)


def refuse_another_model(log_dir, info: Mapping) -> None:
    """Refuse to append a model's epochs to a run directory that holds another model's."""
    from pathlib import Path

    if (Path(log_dir) / "run.json").exists():
        old = store.read_run_info(log_dir)
        if old["model"]["fingerprint"] != info["model"]["fingerprint"]:
            raise ValueError(f"log_dir: {log_dir} holds a run of a different model ({old['model']['name']!r}); "
                             "use a new log_dir for a new model")
