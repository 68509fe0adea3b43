"""What the model's outputs on the held-out set say: predictions, accuracy and loss.

Part of the capture: :func:`flowcallback.core.capture.capture_activations` returns the outputs
along with the embedded activations, and these functions turn them into the Prediction column and
the metrics of the epoch's graphs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from flowcallback.core._notes import first_line

__all__ = ["predictions_from_outputs", "held_out_loss"]


def predictions_from_outputs(outputs, labels, binary_threshold: float = 0.5) -> Tuple[np.ndarray, float, str]:
    """Predicted classes, accuracy, and a column note for outputs that are not finite.

    Parameters
    ----------
    outputs : ndarray of shape (n_samples, n_outputs)
        One unit: the positive class is predicted where the output exceeds ``binary_threshold``.
        More: the arg max.
    labels : ndarray of shape (n_samples,)
    binary_threshold : float, default=0.5
        0 for a one-unit output of logits (see :func:`flowcallback._validation.binary_threshold`).

    Returns
    -------
    predictions : ndarray of int64
        A sample with a NaN or infinite output has no prediction: it is shown as class 0.
    accuracy : float
        Such a sample counts as wrong.
    note : str
        For the Prediction column; empty when every output is finite.

    Examples
    --------
    >>> out = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, 0.0]])
    >>> p, acc, note = predictions_from_outputs(out, np.array([0, 1, 1]))
    >>> p.tolist(), round(acc, 3), note.split(':')[0]
    ([0, 1, 0], 0.667, '1 sample(s) have a NaN/infinite model output (diverging model?)')
    """
    outputs = np.asarray(outputs)
    finite = np.all(np.isfinite(outputs), axis=1)
    if outputs.shape[1] == 1:
        predictions = (outputs[:, 0] > binary_threshold).astype(np.int64)
    else:
        predictions = np.argmax(np.where(finite[:, None], outputs, 0), axis=1).astype(np.int64)
    note = ""
    if not finite.all():
        # argmax of NaN is undefined: shown as class 0, counted as wrong, and said so
        predictions = np.where(finite, predictions, 0)
        note = (f"{int((~finite).sum())} sample(s) have a NaN/infinite model output (diverging model?): "
                "no prediction exists; shown as class 0 and counted as wrong in the accuracy")
    accuracy = float(np.mean((predictions == np.asarray(labels)) & finite))
    return predictions, accuracy, note


def _loss_value(fn, y: np.ndarray, outputs: np.ndarray, logits: Optional[np.ndarray] = None) -> float:
    if outputs.ndim == 2 and outputs.shape[1] == 1 and y.ndim == 1:
        y = y[:, None]  # 0/1 labels against one unit: Keras 3's losses want equal ranks, as fit() makes them
    # arrays, not tensors: Keras 3 losses then run on whichever backend Keras uses (JAX, PyTorch)
    predicted = np.asarray(outputs) if logits is None else _carrying_logits(outputs, logits)
    return float(np.mean(np.asarray(fn(y, predicted))))


def _carrying_logits(outputs: np.ndarray, logits: np.ndarray):
    """The outputs as a TensorFlow tensor that carries its logits as Keras's softmax and sigmoid
    leave them (``_keras_logits``): Keras's cross-entropies then compute from the logits, as
    ``fit`` and ``evaluate`` do, instead of from probabilities clipped to [1e-7, 1 - 1e-7], which
    cap a confidently wrong sample's loss at about 16."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(outputs)
    tensor._keras_logits = tf.convert_to_tensor(logits)
    return tensor


def _other_label_form(y: np.ndarray, outputs: np.ndarray) -> Optional[np.ndarray]:
    """The labels one-hot if they are integers, integers if they are one-hot (over the outputs'
    classes), or None where neither applies."""
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return None
    n_classes = outputs.shape[1]
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and len(y) and 0 <= y.min() and y.max() < n_classes:
        return np.eye(n_classes, dtype=np.float32)[y]
    if y.ndim == 2 and y.shape[1] == n_classes:
        return np.argmax(y, axis=1).astype(np.int64)
    return None


def held_out_loss(model, y_raw, outputs, logits=None) -> Tuple[Optional[float], str]:
    """The model's own compiled loss on the held-out set, or why it cannot be shown.

    Held-out labels in the other form than the loss takes (one-hot for
    ``sparse_categorical_crossentropy``, integers for ``categorical_crossentropy``) are converted.

    Parameters
    ----------
    model : keras.Model
        Compiled; its ``loss`` is used.
    y_raw : array-like
        The held-out labels as given.
    outputs : ndarray of shape (n_samples, n_outputs)
    logits : ndarray of shape (n_samples, n_outputs), optional
        The logits behind a softmax or sigmoid output
        (:func:`flowcallback.core.capture.capture_activations` with ``return_logits=True``): the loss
        is then the one ``evaluate`` gives, confidently wrong samples included.

    Returns
    -------
    loss : float or None
    note : str
        ``""`` when the loss was computed, else one sentence for the epoch's graph notes.
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
        try:
            value = _loss_value(fn, np.asarray(y_raw), outputs, logits)
        except Exception:
            other = _other_label_form(np.asarray(y_raw), outputs)
            if other is None:
                raise
            # the held-out labels are one-hot where the model trained on integers, or the other way round
            value = _loss_value(fn, other, outputs, logits)
    except Exception as exc:  # labels in a form the loss does not take
        y_shape = tuple(np.shape(y_raw))
        hint = ("integer labels need sparse_categorical_crossentropy" if len(y_shape) == 1
                else "one-hot labels need categorical_crossentropy")
        return None, (f"loss not shown: the compiled loss {name} cannot take the held-out labels of shape {y_shape} "
                      f"({hint}; {type(exc).__name__}: {first_line(exc, 160)})")
    if not np.isfinite(value):
        return None, f"loss not shown: the compiled loss {name} is not finite on the held-out set"
    return value, ""
