"""The capture of one snapshot: the part that needs the live model, in the training thread.

:func:`capture_epoch` runs the held-out set through the model once
(:func:`flowcallback.core.capture.capture_activations`: every analysed layer's embedded maps, and
each class's mean map on the way), reads the predictions, accuracy and loss from the outputs
(:mod:`flowcallback.core.outputs`), and copies the weights for the relevance engine, which runs
later, in the background, on the weights of this moment.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from flowcallback._plan import RunPlan
from flowcallback.core import aggregate, capture, stages
from flowcallback.core._notes import Note, info
from flowcallback.core.outputs import held_out_loss, predictions_from_outputs
from flowcallback.settings import SnapshotSettings

__all__ = ["Capture", "capture_epoch"]


@dataclass
class Capture:
    """What the capture of one snapshot hands to the rest of it.

    Attributes
    ----------
    epoch : int
    clock : StageClock
        The snapshot's stage clock, started here.
    started : float
        ``time.perf_counter()`` when the snapshot started.
    activations : dict of layer name to ndarray (n_samples, d)
    predictions : ndarray (n_samples,)
    metrics : dict
        Accuracy, loss, ``k`` and inflation: the graph metrics of every analysis.
    notes : list of Note
        Graph notes (a loss that cannot be shown).
    prediction_note : str
        The Prediction column's note, or ``""``.
    class_means : dict of (analysis, layer) to ndarray
        Each class's mean activation per unit: they go to the store as they are.
    responses : dict of layer name to ndarray (n_samples, units)
        Each sample's activation per unit, for the neuron clusters' top samples (the layers that
        fit in :data:`MAX_RESPONSE_VALUES`).
    weights : list of ndarray, optional
        A copy of the weights, for the relevance engine (None without one).
    """

    epoch: int
    clock: stages.StageClock
    started: float
    activations: Dict[str, np.ndarray]
    predictions: np.ndarray
    metrics: Dict[str, object]
    notes: List[Note]
    prediction_note: str
    class_means: Dict[tuple, np.ndarray] = field(default_factory=dict)
    weights: Optional[list] = None
    responses: Dict[str, np.ndarray] = field(default_factory=dict)


#: The per-sample responses kept for the neuron clusters' top samples, over all layers (float32
#: values: 64 MiB). The layers beyond it get their clusters without top samples.
MAX_RESPONSE_VALUES = 1 << 24


def capture_epoch(model, x: np.ndarray, y_raw: np.ndarray, labels: np.ndarray, epoch: int, plan: RunPlan,
                  settings: SnapshotSettings, *, copy_weights: bool) -> Capture:
    """Capture the snapshot of ``epoch`` (see the module's docstring)."""
    clock, started = stages.StageClock(epoch), time.perf_counter()
    keep = MAX_RESPONSE_VALUES if settings.neuron_clusters is not False else 0
    means = aggregate.LayerClassMeans(labels, plan.n_classes, keep_responses=keep) if settings.class_means else None
    with clock("capture"):
        acts, outputs, logits = capture.capture_activations(
            model, x, plan.layer_names, batch_size=settings.batch_size, embed_options=settings.embed_options,
            class_means=means, return_logits=True)
        predictions, accuracy, prediction_note = predictions_from_outputs(outputs, labels, plan.binary_threshold)
        loss, loss_note = held_out_loss(model, y_raw, outputs, logits)
        weights = [np.array(w, copy=True) for w in model.get_weights()] if copy_weights else None
    return Capture(epoch, clock, started, acts, predictions,
                   {"accuracy": accuracy, "loss": loss, "k": plan.k, "inflation": settings.inflation},
                   [info(loss_note)] if loss_note else [], prediction_note,
                   {} if means is None else {("activations", n): m for n, m in means.result().items()}, weights,
                   {} if means is None else means.responses())
