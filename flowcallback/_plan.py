"""What a run will analyse, decided once from the model and the held-out set: :func:`plan_run`.

The columns (:func:`flowcallback.core.capture.choose_columns`), what the page must say about the
model (how the columns were chosen, parallel branches, a one-unit output), the classes and their
names, ``k``, and the relevance engine. Nothing here starts a process or writes a file: the
snapshot runner (:mod:`flowcallback.pipeline`) does, from the :class:`RunPlan`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from flowcallback import _validation as checks
from flowcallback.core import capture, cluster, knn, store
from flowcallback.core._inputs import Inputs, leaves
from flowcallback.core._notes import Note, info
from flowcallback.core.flows import RESERVED_COLUMNS
from flowcallback.core.lrp import engines as lrp_engines
from flowcallback.settings import SnapshotSettings

_EPOCH_PAGE = re.compile(r"^epoch_[0-9]+\.html$")

__all__ = ["RunPlan", "plan_run", "fingerprint", "former_fingerprint", "architecture", "held_out_digest",
           "run_description", "resume", "refuse_foreign_files"]


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
    column_names : mapping of layer name to column name
        The columns' names where they are not the layers' own: a run resumed with the same model
        rebuilt (other automatic names) keeps the run's names (:func:`resume`).
    engines : Engines
        The kNN and MCL backends, resolved (:func:`flowcallback.core.cluster.choose_engines`).
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
    column_names: Mapping[str, str] = field(default_factory=dict)
    engines: cluster.Engines = cluster.Engines("faiss", "fast", "", "")

    @property
    def layer_names(self) -> Tuple[str, ...]:
        """The analysed layers, by their names in the model."""
        return tuple(self.columns.names)

    @property
    def column_layers(self) -> List[Tuple[str, str]]:
        """``(column name, layer type)`` of each analysed layer, in model order."""
        return [(self.column(n), self.layer_types[n]) for n in self.layer_names]

    def column(self, layer: str) -> str:
        """The name of the column of ``layer`` in the run's files and pages."""
        return self.column_names.get(layer, layer)

    def columns_keyed(self, by_layer: Mapping) -> Dict:
        """``by_layer`` (keyed by layer names, or by ``(analysis, layer)``) keyed by column names."""
        return {(k[0], self.column(k[1])) if isinstance(k, tuple) else self.column(k): v
                for k, v in by_layer.items()}


def _layer_names(model) -> list:
    """Every layer's name, nested models' layers included, in the model's order (a Keras 3
    functional model's operations too: ``x + residual`` may be a column)."""
    names, stack = [], [model]
    while stack:
        layer = stack.pop(0)
        names.append(layer.name)
        stack[:0] = list(getattr(layer, "operations", None) or getattr(layer, "layers", ()) or ())
    return names


def architecture(model):
    """The model's architecture as plain data: layer classes, their configuration, shapes and
    connections, with every layer named by its position instead of its name.

    Keras numbers automatic names per process (``dense`` / ``dense_1``, ``input_layer`` /
    ``input_layer_1``), so the same model rebuilt in a notebook has other names; and
    ``model.to_json()`` also holds the compile configuration (optimizer, learning rate). Neither is
    the architecture: ``trainable`` flags (fine-tuning unfreezes layers) are left out too.

    Examples
    --------
    >>> import keras
    >>> def build():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> architecture(build()) == architecture(build())
    True
    """
    try:
        config = model.get_config()
        json.dumps(config)
    except Exception:  # a subclassed model without get_config: its class, layers' classes and weight shapes
        return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                "layers": [type(layer).__name__ for layer in model.layers],
                "weights": [list(np.shape(w)) for w in model.get_weights()]}
    known = set(_layer_names(model))  # and the names of layers Keras keeps out of .layers (a Sequential's input)

    def collect(value):
        if isinstance(value, dict):
            if "Policy" in str(value.get("class_name", "")):  # a dtype policy's name is "float32"...: kept
                return
            if isinstance(value.get("name"), str):
                known.add(value["name"])
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    collect(config)
    tokens: Dict[str, str] = {}

    def canonical(value):
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items() if k != "trainable"}
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        if isinstance(value, str) and value in known:
            return tokens.setdefault(value, f"<layer {len(tokens)}>")
        return value

    return canonical(config)


def fingerprint(model) -> str:
    """A hash of the architecture (:func:`architecture`; not the weights, the compile state or the
    automatic layer names), to refuse another model in the same log_dir."""
    return hashlib.sha256(json.dumps(architecture(model), sort_keys=True).encode()).hexdigest()[:16]


def former_fingerprint(model) -> str:
    """The fingerprint of runs written before it covered the architecture only (``to_json()``
    without the model's name), so that those runs still resume with the model that wrote them."""
    try:
        cfg = json.loads(model.to_json())
        cfg.get("config", {}).pop("name", None)
    except Exception:
        cfg = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
               "layers": [[type(layer).__name__, layer.name] for layer in model.layers],
               "weights": [list(np.shape(w)) for w in model.get_weights()]}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def held_out_digest(x: np.ndarray, labels: np.ndarray) -> str:
    """A hash of the held-out inputs and labels (their bytes, dtypes and shapes), recorded in
    run.json so that a resume on other samples is noticed.

    >>> x = np.zeros((3, 2), np.float32)
    >>> held_out_digest(x, np.array([0, 1, 0])) == held_out_digest(x.copy(), np.array([0, 1, 0]))
    True
    >>> held_out_digest(x, np.array([0, 1, 0])) == held_out_digest(x + 1, np.array([0, 1, 0]))
    False
    """
    h = hashlib.sha256()
    # several inputs: each array, in the model's input order once the callback has ordered them
    # (:func:`flowcallback._validation.inputs_for_model`), so a dict in any key order and the list
    # of the same arrays are one held-out set
    for a in (*map(np.ascontiguousarray, leaves(x)), np.ascontiguousarray(labels, dtype=np.int64)):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def plan_run(model, x: np.ndarray, labels: np.ndarray, settings: SnapshotSettings, *, signed: bool = False
             ) -> RunPlan:
    """Check the model against the held-out set and the settings, and decide what each snapshot does.

    ``signed``: the labels were written -1 and 1 (:func:`flowcallback._validation.signed_binary`);
    the classes are then named "-1" and "1" unless ``class_names`` is given.

    Raises
    ------
    ValueError
        Naming the argument at fault: ``layers``, ``projection_layers``, ``class_names``, ``model``
        or ``validation_data``.
    """
    x = checks.inputs_for_model(model, x)
    columns = capture.choose_columns(model, settings.layers)
    names = list(columns.names)
    if not names:
        raise ValueError("layers: the model has no layer to analyse")
    checks.check_names("layers", names, "a layer's name")
    reserved = [n for n in names if n in RESERVED_COLUMNS]
    if reserved:
        raise ValueError(f"model: the layer {reserved[0]!r} takes the name of a column every flow graph ends "
                         f"with ({' and '.join(map(repr, RESERVED_COLUMNS))}); rename the layer (name=...) "
                         "or leave it out of layers=")
    unknown = sorted(set(settings.projection_layers or ()) - set(names))
    if unknown:
        raise ValueError(f"projection_layers: {unknown} are not among the analysed layers {names}")
    notes, column_notes = capture.branch_layout(model, names)
    for extra in (capture.shared_calls(model, names), capture.operation_notes(model, names)):
        for name, text in extra.items():
            column_notes[name] = f"{column_notes[name]}; {text}" if name in column_notes else text
    constant = capture.constant_layers(model)
    for name in names:
        if name in constant:
            column_notes[name] = f"{column_notes[name]}; {constant[name]}" if name in column_notes else constant[name]
    notes = [info(n) for n in notes]
    if constant:
        text = constant_note(constant)
        notes.append(info(text))
        warnings.warn(f"FlowCallback: {text}", RuntimeWarning, stacklevel=4)
    if columns.rule in ("block outputs", "all"):
        notes.insert(0, info(f"Columns: {columns.description}."))
    if columns.rule == "all" and len(names) > capture.MAX_COLUMNS:
        warnings.warn(f"FlowCallback: layers='all': {len(names)} columns (the default shows at most "
                      f"{capture.MAX_COLUMNS} block outputs). {capture.cost_note(len(names), len(x))}",
                      RuntimeWarning, stacklevel=4)
    n_classes = checks.output_classes(model, x)
    threshold, binary_note = checks.binary_threshold(model, x, signed=signed)
    if binary_note:
        notes.append(info(binary_note))
    sigmoids_note = checks.sigmoid_units_note(model, n_classes)
    if sigmoids_note:
        notes.append(info(sigmoids_note))
    k = knn.resolve_k(settings.k, len(x), n_classes)
    given = settings.class_names
    if given is None and signed and n_classes == 2:
        given = ("-1", "1")  # the labels as the user wrote them
    given = None if given is None else list(given)
    n_classes, class_names = checks.check_against_model(model, x, labels, given, k)
    engines = cluster.choose_engines(settings.mcl_backend, settings.knn_backend)  # the run page shows engines.note
    unavailable = lrp_engines.unavailable_reason(model) if settings.lrp else ""
    text = not isinstance(x, Inputs) and x.dtype.kind == "U"
    backend = (lrp_engines.choose_backend(settings.lrp_backend, model, text=text, several_inputs=isinstance(x, Inputs))
               if settings.lrp and not unavailable else None)
    return RunPlan(columns=columns, layer_types=capture.layer_types(model, names), notes=tuple(notes),
                   column_notes=dict(column_notes), n_classes=n_classes, class_names=tuple(class_names), k=k,
                   binary_threshold=threshold, lrp_backend=backend, lrp_unavailable=unavailable, engines=engines)


def constant_note(constant: Mapping[str, str]) -> str:
    """One sentence on the layers :func:`flowcallback.core.capture.constant_layers` found.

    >>> print(constant_note({"norm": "its output is its offset (beta) for every input: it normalises over one "
    ...                              "value (axis -1 has size 1)", "proj": "reaches the output only through norm"}))
    norm gives every input the same output (its output is its offset (beta) for every input: it normalises over \
one value (axis -1 has size 1)), so it tells no samples apart; proj reaches the output only through it: it changes \
no prediction, and no LRP relevance reaches it. To normalise a sequence of one feature, normalise over its steps \
(LayerNormalization(axis=[1, 2])), or give the layer before it more units
    """
    from flowcallback.core._notes import name_list

    fixed = [n for n, why in constant.items() if not why.startswith("reaches")]
    cut = [n for n in constant if n not in fixed]
    text = (f"{name_list(fixed)} give{'s' if len(fixed) == 1 else ''} every input the same output "
            f"({constant[fixed[0]]}), so {'it tells' if len(fixed) == 1 else 'they tell'} no samples apart")
    if cut:
        one = len(cut) == 1
        text += (f"; {name_list(cut)} reach{'es' if one else ''} the output only through "
                 f"{'it' if len(fixed) == 1 else 'them'}: {'it changes' if one else 'they change'} no prediction, "
                 f"and no LRP relevance reaches {'it' if one else 'them'}")
    return text + (". To normalise a sequence of one feature, normalise over its steps "
                   "(LayerNormalization(axis=[1, 2])), or give the layer before it more units")


def _positions(model, layer_names) -> list:
    """Each analysed layer's position among the model's layers (nested ones included)."""
    order = _layer_names(model)
    return [order.index(n.split("/")[-1]) if n.split("/")[-1] in order else -1 for n in layer_names]


def run_description(model, plan: RunPlan, settings: SnapshotSettings, n_samples: int,
                    lrp_backend: Optional[str], held_out: str = "") -> Dict:
    """``run.json`` of a run following ``plan`` (:func:`flowcallback.core.store.run_info`);
    ``held_out`` is the held-out set's :func:`held_out_digest`."""
    config = {
        "k": plan.k,
        "k_rule": settings.k if isinstance(settings.k, str) else "fixed",
        "inflation": settings.inflation,
        "index": settings.index,
        "reduce": settings.reduce,
        "dim": settings.dim,
        "mcl_backend": plan.engines.mcl,
        "knn_backend": plan.engines.knn,
        "keras_device": plan.engines.device,
        "accelerator_off": plan.engines.off,
        "engines_note": plan.engines.note,
        "analyzer": settings.analyzer,
        "analyzer_kwargs": dict(settings.analyzer_kwargs),
        "lrp_engine": lrp_engines.engine_label(lrp_backend) if lrp_backend else None,
        "n_samples": int(n_samples),
        "held_out_digest": held_out,
        "epoch_numbering": "0 is the untrained model; e is the model after e epochs of training",
    }
    c = plan.columns
    return store.run_info(model_name=model.name, fingerprint=fingerprint(model), class_names=plan.class_names,
                          analyses=["activations", "lrp"] if lrp_backend else ["activations"],
                          layers=plan.column_layers,
                          columns={"rule": c.rule, "eligible_layers": c.eligible, "description": c.description,
                                   "positions": _positions(model, plan.layer_names)},
                          config=config)


def resume(log_dir, plan: RunPlan, description: Mapping,
           legacy_fingerprint: str = "") -> Tuple[RunPlan, Optional[Mapping]]:
    """Check ``log_dir``'s run, if it holds one, against the run about to start, and continue it.

    Parameters
    ----------
    log_dir : path
    plan : RunPlan
    description : mapping
        The new run's description (:func:`run_description`).
    legacy_fingerprint : str, optional
        The model's fingerprint as runs written before 0.1.0's architecture-only one had it: such a
        run resumes with the model that wrote it (its run.json then gets the new fingerprint).

    Returns
    -------
    plan : RunPlan
        ``plan``, naming its columns as the run does where the model was rebuilt with other
        automatic layer names (the architecture is the same: the columns correspond in order).
    former : mapping or None
        The run's description as it was, or None for a new run.

    Raises
    ------
    ValueError
        ``log_dir`` holds a run of another architecture. (Pages and graphs of no run are refused
        by :func:`refuse_foreign_files`, which the caller runs before it writes anything there.)
    """
    from pathlib import Path

    log_dir = Path(log_dir)
    if not (log_dir / "run.json").exists():
        return plan, None
    old = store.read_run_info(log_dir)
    if old["model"]["fingerprint"] not in (description["model"]["fingerprint"], legacy_fingerprint):
        raise ValueError(f"log_dir: {log_dir} holds a run of a different model ({old['model']['name'][:80]!r}); "
                         "use a new log_dir for a new model")
    old_columns = [(layer["name"], layer["type"]) for layer in old["layers"]]
    new_columns = plan.column_layers
    positions = (old.get("columns") or {}).get("positions")
    if new_columns == old_columns or positions is None or positions != description["columns"].get("positions"):
        return plan, old  # the same names, or other layers chosen: as they are
    renamed = {layer: old_name for layer, (old_name, _) in zip(plan.layer_names, old_columns) if layer != old_name}
    if len(set(renamed.values()) | (set(plan.layer_names) - set(renamed))) < len(plan.layer_names):
        return plan, old  # the run's names would collide with the model's own: keep the model's
    shown = ", ".join(f"{k} as {v}" for k, v in list(renamed.items())[:6]) + (", ..." if len(renamed) > 6 else "")
    note = info(f"The model was rebuilt with other layer names; its columns keep this run's names ({shown}).")
    return replace(plan, column_names=renamed, notes=(*plan.notes, note)), old


def refuse_foreign_files(log_dir) -> None:
    """Refuse a log_dir without run.json that holds pages or graphs: flowcallback did not write
    them (or their run.json is gone), and a run would overwrite them."""
    from pathlib import Path

    log_dir = Path(log_dir)
    if os.path.lexists(log_dir / "sets.json"):
        raise ValueError(f"log_dir: {log_dir} holds a run of several held-out sets (sets.json, one folder per set); "
                         "pass the same named sets ({name: (x, y)}) to append to it, or use a new log_dir")
    if os.path.lexists(log_dir / "run.json"):
        return
    try:
        entries = sorted(os.scandir(log_dir), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name in ("index.html", "graphs") or _EPOCH_PAGE.match(entry.name):
            raise ValueError(f"log_dir: {log_dir} holds {entry.name}, which is not from a flowcallback run "
                             "(the directory has no run.json) and would be overwritten; use a new or empty "
                             "log_dir, or move the file away")
