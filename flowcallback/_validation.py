"""Checks at the door: every bad argument gets a message naming it and saying what was expected."""
from __future__ import annotations

import collections.abc
import inspect
import numbers
import os
import warnings
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from flowcallback.core._inputs import Inputs, leaves
from flowcallback.core._keras import model_output_shape, static_shape
from flowcallback.core._schemas import (
    MAX_CLASSES,
    MAX_LAYERS,
    MAX_NAME_LENGTH,
    MAX_SAMPLES,
    MAX_SETS,
    set_name_problem,
)
from flowcallback.settings import check_parameter

__all__ = ["check_validation_data", "check_epochs", "labels_from_y", "signed_binary", "check_against_model",
           "output_classes", "binary_threshold", "check_names", "named_sets", "check_held_out_sets",
           "check_one_hot_width"]


def _is_dataset(obj) -> bool:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, tf.data.Dataset)


#: A ``tf.data.Dataset`` whose length TensorFlow cannot tell (``from_generator``, ``filter``) is read
#: up to this many samples. A held-out set for flows holds thousands of samples (a snapshot of
#: 10,000 takes minutes), so more than this is taken for an endless dataset, not read on.
MAX_UNKNOWN_CARDINALITY_SAMPLES = 100_000


def _dataset_hint(what: str) -> str:
    return (f"validation_data: {what}; pass a finite, batched tf.data.Dataset of (x, y) batches, "
            "e.g. dataset.take(n).batch(32)")


def _input_batch(x, where: str):
    """One batch's inputs: an array, or :class:`~flowcallback.core._inputs.Inputs` for a dict of
    several inputs or a list/tuple of arrays (a multi-input model); a one-entry dict (a named Input)
    is unwrapped."""
    if isinstance(x, dict):
        if len(x) == 1:
            return np.asarray(next(iter(x.values())))
        return _several(list(x.values()), [str(k) for k in x], where)
    if isinstance(x, (tuple, list)):
        return _several(list(x), None, where)
    return np.asarray(x)


def _several(arrays, names, where: str) -> Inputs:
    arrays = [np.asarray(a) for a in arrays]
    if len({len(a) if a.ndim else -1 for a in arrays}) != 1 or any(a.ndim == 0 for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"validation_data: {where}x holds {len(arrays)} inputs of shapes {shapes}; each input "
                         "needs one row per sample")
    return Inputs(arrays, names)


def _concatenate(parts):
    """Batches of inputs (arrays, or Inputs of the same structure) joined into one."""
    first = parts[0]
    if not any(isinstance(p, Inputs) for p in parts):
        return np.concatenate(parts)
    if not all(isinstance(p, Inputs) and p.names == first.names and len(p.arrays) == len(first.arrays) for p in parts):
        raise ValueError(_dataset_hint("the batches hold different inputs"))
    return Inputs([np.concatenate(column) for column in zip(*(p.arrays for p in parts))], first.names)


def _per_sample_shapes(x) -> tuple:
    return x.shapes if isinstance(x, Inputs) else x.shape[1:]


def _signature(x):
    """Per-sample shapes, by input name where there are names (a dict, in any key order)."""
    if isinstance(x, Inputs) and x.names is not None:
        return tuple(sorted(zip(x.names, x.shapes)))
    return _per_sample_shapes(x)


def _described(x) -> str:
    return repr(x) if isinstance(x, Inputs) else str(x.shape[1:])


def _x_shape(x) -> str:
    return repr(x) if isinstance(x, Inputs) else str(x.shape)


def _dataset_arrays(dataset, max_unknown: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read a ``tf.data.Dataset`` of ``(x, y)`` (or ``(x, y, sample_weight)``) batches into arrays.

    An infinite dataset is refused before reading; one of unknown length is read up to
    ``max_unknown`` samples. Unbatched elements are recognised from the element spec (scalar labels)
    or from x and y of different lengths, before anything is concatenated.
    """
    import tensorflow as tf

    card = int(dataset.cardinality())
    if card == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(_dataset_hint("the tf.data.Dataset is infinite (a .repeat() without a count?)"))
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(_dataset_hint(f"expected elements (x, y), got elements {spec!r}"))
    if len(spec) == 3:
        _warn_weights_unused("the tf.data.Dataset yields (x, y, sample_weight)", stacklevel=5)
    y_spec = spec[1]
    if isinstance(y_spec, tf.TensorSpec) and y_spec.shape.rank == 0:
        raise ValueError(_dataset_hint(
            "the dataset yields single samples (scalar labels): it is not batched; call .batch(n)"))
    xs, ys, n = [], [], 0
    for item in dataset.as_numpy_iterator():
        x = _input_batch(item[0], "each element's ")
        y = np.asarray(item[1])
        if (not isinstance(x, Inputs) and x.ndim == 0) or y.ndim == 0 or len(x) != len(y):
            raise ValueError(_dataset_hint(
                f"an element has x of shape {_x_shape(x)} and y of shape {y.shape}, not two batches of the same "
                "length; is the dataset batched? call .batch(n)"))
        xs.append(x)
        ys.append(y)
        n += len(x)
        if card < 0 and n > max_unknown:
            raise ValueError(_dataset_hint(
                f"the tf.data.Dataset has unknown length and yielded more than {max_unknown:,} samples; "
                "it is taken as endless. Bound it, e.g. dataset.take(n_batches)"))
    if not xs:
        raise ValueError("validation_data: the tf.data.Dataset is empty")
    if len({_per_sample_shapes(x) for x in xs}) > 1 or len({y.shape[1:] for y in ys}) > 1:
        raise ValueError(_dataset_hint("the batches have different per-sample shapes"))
    return _concatenate(xs), np.concatenate(ys)


def _is_batch_sequence(obj) -> bool:
    """A ``keras.utils.PyDataset`` (Keras 3) or ``keras.utils.Sequence`` (Keras 2): batches by index,
    which Keras's ``fit`` takes as ``validation_data``."""
    return any(cls.__name__ in ("PyDataset", "Sequence") and (cls.__module__ or "").startswith(("keras", "tf_keras"))
               for cls in type(obj).__mro__)


def _sequence_arrays(sequence, max_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read a ``PyDataset`` of ``(x, y)`` (or ``(x, y, sample_weight)``) batches into arrays, each
    batch once, in index order; one without a length (an endless one) is refused before reading."""
    name = type(sequence).__name__
    try:
        n_batches = getattr(sequence, "num_batches", None) if not hasattr(type(sequence), "__len__") else len(sequence)
    except (TypeError, NotImplementedError):
        n_batches = None
    if n_batches is None:
        raise ValueError(f"validation_data: the {name} has no length (an endless PyDataset?); give it __len__, or "
                         "pass (x, y) arrays")
    xs, ys, n = [], [], 0
    for i in range(int(n_batches)):
        item = sequence[i]
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"validation_data: batch {i} of the {name} is a {type(item).__name__}, expected "
                             "(x, y) or (x, y, sample_weight)")
        if len(item) == 3 and i == 0:
            _warn_weights_unused(f"the {name} yields (x, y, sample_weight)", stacklevel=5)
        x, y = _input_batch(item[0], f"batch {i}'s "), np.asarray(item[1])
        if (not isinstance(x, Inputs) and x.ndim == 0) or y.ndim == 0 or len(x) != len(y):
            raise ValueError(f"validation_data: batch {i} of the {name} has x of shape {_x_shape(x)} and y of shape "
                             f"{y.shape}, not two batches of the same length")
        xs.append(x)
        ys.append(y)
        n += len(x)
        if n > max_samples:
            raise ValueError(f"validation_data: the {name} holds more than {max_samples:,} samples; a held-out set "
                             "for flows needs a few thousand: pass a part of it")
    if not xs:
        raise ValueError(f"validation_data: the {name} is empty")
    if len({_per_sample_shapes(x) for x in xs}) > 1 or len({y.shape[1:] for y in ys}) > 1:
        raise ValueError(f"validation_data: the batches of the {name} have different per-sample shapes")
    return _concatenate(xs), np.concatenate(ys)


def reshuffles(dataset) -> bool:
    """Whether a ``tf.data`` pipeline shuffles its elements anew at each pass through it
    (``image_dataset_from_directory`` and ``text_dataset_from_directory`` do by default).

    Reads the pipeline's ``_inputs()``, TensorFlow's own link from a dataset to those it was made
    from (no public API tells it); anything it cannot read counts as not shuffling.

    >>> import tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices(([1.0, 2.0], [0, 1]))
    >>> reshuffles(ds.shuffle(2).batch(2)), reshuffles(ds.shuffle(2, reshuffle_each_iteration=False).batch(2))
    (True, False)
    >>> reshuffles(ds.batch(2)), reshuffles((None, None))
    (False, False)
    """
    if not _is_dataset(dataset):
        return False
    seen, todo = set(), [dataset]
    while todo:
        ds = todo.pop()
        if id(ds) in seen or len(seen) > 1000:
            continue
        seen.add(id(ds))
        if "Shuffle" in type(ds).__name__ and getattr(ds, "_reshuffle_each_iteration", True) is not False:
            return True
        try:
            todo.extend(ds._inputs())
        except Exception:  # a dataset class without the link: not followed
            continue
    return False


def canonical_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """An order of the samples that depends on their contents only (each sample's bytes, x and y,
    hashed), so that the same samples read in any order come out alike.

    >>> x = np.array([[1.0], [2.0], [3.0]]); y = np.array([0, 1, 0])
    >>> order = canonical_order(x, y)
    >>> shuffled = np.array([2, 0, 1])
    >>> bool((x[order] == x[shuffled][canonical_order(x[shuffled], y[shuffled])]).all())
    True
    """
    import hashlib

    arrays = leaves(x)
    keys = np.array([int.from_bytes(hashlib.blake2b(b"".join(np.ascontiguousarray(a[i]).tobytes() for a in arrays)
                                                    + np.ascontiguousarray(y[i]).tobytes(), digest_size=8).digest(),
                                    "little") for i in range(len(y))], dtype=np.uint64)
    return np.argsort(keys, kind="stable")


def _warn_weights_unused(what: str, stacklevel: int) -> None:
    warnings.warn(f"FlowCallback: validation_data: {what}; the weights are not used: each sample is one sample in "
                  "the flows, and the page's accuracy and loss are unweighted (evaluate and val_loss weigh them)",
                  UserWarning, stacklevel=stacklevel)


def check_validation_data(validation_data, *, max_unknown_cardinality: int = MAX_UNKNOWN_CARDINALITY_SAMPLES
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)`` as arrays from an ``(x, y)`` tuple or a finite ``tf.data.Dataset`` of batches.

    Parameters
    ----------
    validation_data : tuple (x, y) or tf.data.Dataset
        A dataset must be batched and finite; one of unknown length (``from_generator``) is read
        up to ``max_unknown_cardinality`` samples, and refused past that. One that shuffles anew
        at each pass (:func:`reshuffles`) gives its samples in :func:`canonical_order`, so that
        each reading of it (a resumed run's) gives the same held-out set.
    max_unknown_cardinality : int
        The bound for datasets of unknown length.

    Returns
    -------
    x, y : ndarray

    Raises
    ------
    ValueError
        Naming ``validation_data`` and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> x, y = check_validation_data((np.zeros((4, 3)), [0, 1, 0, 1]))
    >>> x.shape, y.shape
    ((4, 3), (4,))
    """
    if _is_dataset(validation_data):
        x, y = _dataset_arrays(validation_data, max_unknown_cardinality)
        x = _text_as_str(x)  # tf.data yields text as bytes objects
        _check_finite(x)
        if reshuffles(validation_data):  # another order at each pass: one of the samples' own, every time
            order = canonical_order(x, y)
            x, y = x[order], y[order]
        return x, y
    if _is_batch_sequence(validation_data):  # a keras.utils.PyDataset, as fit takes it
        x, y = _sequence_arrays(validation_data, max_unknown_cardinality)
        validation_data = (_text_as_str(x), y)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 3:  # Keras's (x, y, sample_weight)
        x, y, weights = validation_data
        if weights is not None and x is not None and len(weights) != len(x):
            raise ValueError(f"validation_data: the sample weights (its third item) number {len(weights)}, the "
                             f"samples {len(x)}; give (x, y) or (x, y, sample_weight) of the same length")
        _warn_weights_unused("it is an (x, y, sample_weight) tuple", stacklevel=4)
        validation_data = (x, y)
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        is_sequence = isinstance(validation_data, (tuple, list))
        once = (inspect.isgenerator(validation_data) or inspect.isgeneratorfunction(validation_data)
                or isinstance(validation_data, collections.abc.Iterator))
        raise ValueError(
            "validation_data: expected an (x, y) tuple of arrays, a tf.data.Dataset of (x, y) batches or a "
            f"keras.utils.PyDataset, got {type(validation_data).__name__}"
            + (f" of length {len(validation_data)}" if is_sequence else "")
            + ("; a generator can be read only once, and each snapshot reads the held-out set: collect its "
               "batches into arrays (np.concatenate), or make a tf.data.Dataset.from_generator(...).take(n)"
               if once else "")
        )
    x, y = validation_data
    if x is None or y is None:
        raise ValueError("validation_data: both x and y are needed (the labels colour the flows)")
    if isinstance(x, dict) or _several_inputs(x, y):  # one array per input of a multi-input model
        x = _input_batch(x, "")
    elif isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except Exception:
            raise ValueError("validation_data: x must be one array, or one array per input of a multi-input model "
                             "(a list with one row per sample in each, or a dict keyed by the inputs' names)") from None
        if x.dtype == object:
            raise ValueError("validation_data: x must be one array, or one array per input of a multi-input model "
                             "(a list with one row per sample in each, or a dict keyed by the inputs' names)")
    x = x if isinstance(x, Inputs) else np.asarray(x)
    y = np.asarray(y)
    if (not isinstance(x, Inputs) and x.ndim < 1) or y.ndim < 1 or len(x) != len(y):
        raise ValueError(f"validation_data: x and y must have the same number of samples, got {_x_shape(x)} and "
                         f"{y.shape}")
    if len(x) == 0:
        raise ValueError("validation_data: the held-out set is empty")
    if len(x) > MAX_SAMPLES:
        raise ValueError(f"validation_data: {len(x):,} samples, more than the {MAX_SAMPLES:,} a snapshot takes "
                         "(and a run directory holds); pass a subset, e.g. (x[:10000], y[:10000])")
    x = _text_as_str(x)
    for a in leaves(x):
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool and a.dtype.kind != "U":
            raise ValueError(f"validation_data: x must be numeric, or text for a model that reads strings "
                             f"(a TextVectorization layer), got dtype {a.dtype}")
    _check_finite(x)
    return x, y


def _text_as_str(x):
    """Text as NumPy strings: ``bytes`` decoded as UTF-8 (what ``tf.data`` yields), an object array of
    ``str`` (what pandas gives) as fixed-width ``str``; anything else unchanged; each of several inputs
    alike (a categorical feature read by a ``StringLookup``)."""
    if isinstance(x, Inputs):
        return x.map(_text_as_str)
    if x.dtype.kind == "S":
        return np.char.decode(x, "utf-8", errors="replace")
    if x.dtype == object and x.size and all(isinstance(v, (str, bytes)) for v in x.reshape(-1)):
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in x.reshape(-1)],
                        dtype=str).reshape(x.shape)
    return x


def _check_finite(x: np.ndarray, block_bytes: int = 64 << 20) -> None:
    """Warn of inputs holding NaN or infinite values, naming how many samples and the first ones:
    their maps are non-finite at every layer, where they form a cluster apart (docs/usage.md,
    "Degenerate maps") whose note would otherwise suggest a diverging model. Checked
    ``block_bytes`` of samples at a time, so that a large set costs no copy of itself."""
    if isinstance(x, Inputs):
        for a in x.arrays:
            _check_finite(a, block_bytes)
        return
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.complexfloating):
        return
    per = max(1, block_bytes // max(1, x[:1].nbytes))
    bad = []
    for i in range(0, len(x), per):
        block = x[i:i + per]
        bad.append(np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1)) + i)
    bad = np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)
    if len(bad):
        first = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(f"FlowCallback: validation_data: x holds NaN or infinite values in {len(bad):,} of "
                      f"{len(x):,} samples (samples {first}); their maps are non-finite at every layer, where they "
                      "form a cluster apart", RuntimeWarning, stacklevel=4)


def _several_inputs(x, y) -> bool:
    """Whether ``x`` is a list or tuple of arrays (two or more), each with ``y``'s samples: the
    inputs of a multi-input model, which ``np.asarray`` would stack into one array."""
    if not isinstance(x, (list, tuple)) or len(x) < 2 or not all(hasattr(a, "shape") for a in x):
        return False
    try:
        n = len(y)
        return len(x) != n and all(len(a.shape) >= 1 and a.shape[0] == n for a in x)
    except TypeError:  # y without a length: the check below names it
        return False


def signed_binary(y) -> bool:
    """Whether ``y`` holds binary labels written -1 and 1 (as a hinge loss expects), -1 among them.

    >>> signed_binary([-1, 1, 1]), signed_binary([[-1.0], [1.0]]), signed_binary([0, 1]), signed_binary([-1, 0, 1])
    (True, True, False, False)
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.size == 0 or y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        return False
    values = set(np.unique(y).tolist())
    return -1 in values and values <= {-1, 1}


def labels_from_y(y) -> np.ndarray:
    """Integer class labels from integer labels (n,) / (n, 1) or one-hot (n, C); binary labels
    written -1 and 1 (:func:`signed_binary`) are classes 0 and 1."""
    if signed_binary(y):
        return (np.asarray(y).reshape(-1) > 0).astype(np.int64)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"validation_data: one-hot y must be numeric, got dtype {y.dtype}")
        if not np.all(np.isfinite(y)) or not np.allclose(y.sum(axis=1), 1.0) or np.any(y < 0):
            raise ValueError("validation_data: a 2-d y must be one-hot (or probability) rows that sum to 1")
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise ValueError(
            f"validation_data: y must be integer labels (n,) or one-hot (n, n_classes), got shape {y.shape}")
    if y.dtype == bool:  # binary labels as a mask (y > 0): False is class 0, True class 1
        return y.astype(np.int64)
    if (not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y))
            or np.any(np.asarray(y, dtype=np.float64) % 1 != 0)):
        if not np.issubdtype(y.dtype, np.number):  # text labels ("cat", "dog"): the model was trained on indices
            raise ValueError(f"validation_data: y must hold integer class labels, got dtype {y.dtype}; give the "
                             "class indices the model was trained on (sklearn.preprocessing.LabelEncoder maps "
                             "names to indices) and the names as class_names= (LabelEncoder's classes_)")
        raise ValueError("validation_data: y must hold integer class labels (whole numbers), got non-integer or "
                         "non-finite values")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"validation_data: labels must be class indices >= 0 (or binary labels -1 and 1), "
                         f"found {int(y.min())}")
    return y


def check_epochs(epochs):
    """Normalise the ``epochs`` argument, checked by its rule in
    :data:`flowcallback.settings.RUN_CONSTRAINTS`: None (all), an int N (every N-th, from 0) or a
    frozenset of epoch numbers."""
    check_parameter("epochs", epochs)
    if epochs is None or isinstance(epochs, numbers.Integral):
        return None if epochs is None else int(epochs)
    return frozenset(int(e) for e in epochs)


#: The share of the training time that snapshots may add by default (``budget="auto"``).
DEFAULT_BUDGET = 0.25


def check_budget(budget, epochs) -> Optional[float]:
    """The snapshot budget in effect: ``budget`` checked by its rule in
    :data:`flowcallback.settings.RUN_CONSTRAINTS`, :data:`DEFAULT_BUDGET` for ``"auto"`` unless
    ``epochs`` chooses the epochs, None for every epoch (or ``epochs``'s)."""
    check_parameter("budget", budget)
    if epochs is not None:
        if budget not in ("auto", None):
            raise ValueError(f"budget: {budget!r} cannot be combined with epochs={epochs!r}: epochs= chooses the "
                             "snapshot epochs itself; give one of budget= and epochs=")
        return None
    return DEFAULT_BUDGET if budget == "auto" else (None if budget is None else float(budget))


def output_classes(model, x=None) -> int:
    """Number of classes of a single-output classifier (2 for a one-unit sigmoid output).

    ``x`` (the held-out inputs) is used only for a subclassed model, whose output shape Keras
    knows only by calling it on a sample.
    """
    outputs = getattr(model, "outputs", None)
    if outputs is not None and len(outputs) > 1:
        raise ValueError(
            f"model: FlowCallback supports single-output classifiers; this model has {len(outputs)} outputs")
    try:
        shape = model_output_shape(model, x)
    except Exception as exc:  # a subclassed model that cannot take x
        shape = _described(x) if isinstance(x, Inputs) else (tuple(np.shape(x))[1:] if x is not None else ())
        raise ValueError(f"validation_data: the model cannot be called on x of per-sample shape {shape} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(shape, list):
        if len(shape) > 1:
            raise ValueError(
                f"model: FlowCallback supports single-output classifiers; this model has {len(shape)} outputs")
        shape = shape[0] if shape else None
    if shape is None:
        raise ValueError("model: FlowCallback supports single-output classifiers; this model's output shape is unknown")
    shape = tuple(shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"model: expected a classifier whose output has shape (batch, n_classes), got {shape}")
    return 2 if shape[-1] == 1 else int(shape[-1])


def _output_activation(model) -> str:
    """Name of the activation applied last in the model (``"linear"`` when none is known)."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    fn = getattr(layer, "activation", None)
    if fn is None:
        return type(layer).__name__.lower() if type(layer).__name__ in ("Softmax", "ReLU") else "linear"
    return getattr(fn, "__name__", str(fn))


def sigmoid_units_note(model, n_classes: int) -> str:
    """The note for an output of several sigmoid units (multi-label, most likely), read as a
    classifier by its highest unit; ``""`` for any other output."""
    if n_classes <= 2 or _output_activation(model) != "sigmoid":
        return ""
    return (f"The output is {n_classes} sigmoid units, each its own yes/no (multi-label): taken as a "
            f"{n_classes}-class classifier whose prediction is the unit with the highest output; the flows "
            "follow that one label per sample")


#: Losses of a one-unit output whose decision is its sign (labels -1 and 1, or 0 and 1 that Keras
#: turns into -1 and 1).
SIGN_LOSSES = ("hinge", "squared_hinge")


def _loss_name(loss) -> str:
    """The compiled loss's name in snake case (``"hinge"`` for "hinge", keras.losses.hinge and
    keras.losses.Hinge()), or ""."""
    if isinstance(loss, str):
        return loss.lower()
    fn = getattr(loss, "fn", None)  # a Keras LossFunctionWrapper (Hinge() on Keras 2 and 3)
    name = getattr(fn, "__name__", None) or getattr(loss, "__name__", None) or type(loss).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_") if name else ""


def binary_threshold(model, x=None, *, signed: bool = False) -> Tuple[float, str]:
    """For a one-unit output: the threshold above which the prediction is class 1, and a note.

    A one-unit sigmoid output is a binary classifier (threshold 0.5, no note). Any other one-unit
    output is taken as a binary classifier too, which is said in a note: its sign decides (threshold
    0) for a logit (a loss compiled with ``from_logits=True``), a hinge loss or labels written -1
    and 1 (``signed``), else the output itself (threshold 0.5).

    Returns
    -------
    threshold : float
    note : str
        ``""`` when nothing needs saying (several outputs, or a sigmoid output).

    Examples
    --------
    >>> import tensorflow as tf
    >>> m = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1, activation="sigmoid")])
    >>> binary_threshold(m)
    (0.5, '')
    >>> logits = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
    >>> logits.compile(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    >>> threshold, note = binary_threshold(logits)
    >>> threshold, note.startswith("The output is one unit with a linear activation and the loss takes logits")
    (0.0, True)
    """
    shape = model_output_shape(model, x)
    if shape is None or isinstance(shape, list) or tuple(shape)[-1] != 1:
        return 0.5, ""
    activation = _output_activation(model)
    if activation == "sigmoid":
        return 0.5, ""
    loss = getattr(model, "loss", None)
    from_logits = bool(getattr(loss, "from_logits", False) or getattr(loss, "_fn_kwargs", {}).get("from_logits", False))
    if from_logits:
        return 0.0, (f"The output is one unit with a {activation} activation and the loss takes logits: "
                     "taken as a binary classifier, prediction = 1 where the output is > 0")
    loss_name = _loss_name(loss) if loss is not None else ""
    if loss_name in SIGN_LOSSES or signed:
        why = f"a {loss_name.replace('_', ' ')} loss" if loss_name in SIGN_LOSSES else "labels -1 and 1"
        return 0.0, (f"The output is one unit with a {activation} activation and {why}: taken as a binary "
                     "classifier, prediction = 1 where the output is > 0")
    return 0.5, (f"The output is one unit with a {activation} activation (not sigmoid): taken as a binary "
                 "classifier of 0/1 labels, prediction = 1 where the output is > 0.5. If this model is a "
                 "regression, its flows and accuracy mean nothing")


def inputs_for_model(model, x):
    """The held-out inputs as the model takes them: one array for a single-input model; for a model
    with several inputs, one array per input in the order of ``model.inputs`` (a dict's keys matched
    to the inputs' names). Raises ValueError naming ``validation_data`` where they do not match."""
    inputs = getattr(model, "inputs", None) or []
    if isinstance(x, Inputs):
        if len(inputs) == 1:
            raise ValueError(f"validation_data: x holds {len(x.arrays)} arrays ({x!r}), but the model has one input; "
                             "pass one array")
        if not inputs:
            return x
        x = x.for_model(model)
        return Inputs([_fit_rank(a, t) for a, t in zip(x.arrays, inputs)], x.names)
    if len(inputs) > 1:
        raise ValueError(f"validation_data: x is one array of shape {x.shape}, but the model has {len(inputs)} inputs; "
                         "pass one array per input: a list in the order of model.inputs, or a dict keyed by the "
                         "inputs' names")
    return _fit_rank(x, inputs[0]) if inputs else x


def _fit_rank(a: np.ndarray, tensor) -> np.ndarray:
    """``a`` as Keras would feed it to the input ``tensor``: a column of one value per sample
    ``(n,)`` for an ``Input((1,))`` gets its axis (pandas columns, ``dict(df)``), ``(n, 1)`` for an
    ``Input(())`` loses it; anything else unchanged (the shape check names it)."""
    try:
        rank = len(tensor.shape)
    except (AttributeError, TypeError, ValueError):
        return a
    if a.ndim == 1 and rank == 2 and tensor.shape[-1] == 1:
        return a[:, None]
    if a.ndim == 2 and a.shape[1] == 1 and rank == 1:
        return a[:, 0]
    return a


def check_against_model(model, x, y_labels, class_names: Optional[Sequence[str]], k_needed: int):
    """Check the held-out data (as :func:`inputs_for_model` gives it) and names against the model;
    return (n_classes, class_names)."""
    inputs = getattr(model, "inputs", None) or []
    input_shape = static_shape(model, "input_shape")  # None for a subclassed model: output_classes calls it
    if input_shape is not None:
        expected = [tuple(t.shape) for t in inputs] if len(inputs) > 1 else [input_shape]
        for i, (shape, a) in enumerate(zip(expected, leaves(x))):
            want, got = tuple(shape)[1:], tuple(a.shape[1:])
            if len(got) != len(want) or any(e is not None and e != g for e, g in zip(want, got)):
                which = ((f"x[{x.names[i]!r}] has" if x.names is not None else f"x's array {i} (for input {i}) has")
                         if isinstance(x, Inputs) else "x has")
                raise ValueError(f"validation_data: {which} per-sample shape {got}, but the model expects {want}")
    n_classes = output_classes(model, x)
    if n_classes > MAX_CLASSES:
        raise ValueError(f"model: {n_classes:,} classes (outputs), more than the {MAX_CLASSES:,} a run directory holds")
    check_names("model", [getattr(model, "name", "")], "its name")
    if y_labels.max() >= n_classes:
        raise ValueError(
            f"validation_data: labels must be in 0..{n_classes - 1} for this {n_classes}-class model, "
            f"found {int(y_labels.max())}"
        )
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    elif len(class_names) != n_classes:
        raise ValueError(f"class_names: expected {n_classes} names (one per model output), got {len(class_names)}")
    check_names("class_names", [str(c) for c in class_names], "a class name")
    check_samples_for_k(k_needed, len(x))
    return n_classes, [str(c) for c in class_names]


def check_names(argument: str, names: Sequence[str], what: str) -> None:
    """Refuse names longer than a run directory holds (:data:`~flowcallback.core._schemas.MAX_NAME_LENGTH`),
    or more layers than it holds (``argument="layers"``), naming ``argument``.

    Examples
    --------
    >>> check_names("class_names", ["cat", "x" * 300], "a class name")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: class_names: a class name has 300 characters ('xxxxxxxxxxxxxxxxxxxx'…), more than the 256 ...
    """
    if argument == "layers" and len(names) > MAX_LAYERS:
        raise ValueError(f"layers: {len(names):,} layers, more than the {MAX_LAYERS:,} a run directory holds")
    for name in names:
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"{argument}: {what} has {len(name):,} characters ({name[:20]!r}…), more than the "
                             f"{MAX_NAME_LENGTH} a run directory holds")


def check_samples_for_k(k: int, n_samples: int) -> None:
    """Refuse a held-out set too small for a kNN graph of ``k`` neighbours (checked at construction
    for an integer ``k``, and at ``on_train_begin`` for ``"auto"`` once the classes are known)."""
    if n_samples <= k:
        raise ValueError(f"validation_data: the kNN graph needs more than k={k} samples, got {n_samples}; "
                         "pass more samples or a smaller k")


def check_log_dir(log_dir) -> str:
    """``log_dir`` as a string (``~`` expanded), checked by its rule in
    :data:`flowcallback.settings.RUN_CONSTRAINTS`: not an existing file, nor under one (static
    mistakes, refused now; a directory that cannot be written is found at the start of ``fit``,
    where training goes on without snapshots)."""
    path = os.path.expanduser(os.fspath(check_parameter("log_dir", log_dir)))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"log_dir: {path} is a file, not a directory; expected a new directory or a run's")
    above = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise ValueError(f"log_dir: {path} cannot be created: {above} is a file, not a directory")
    return path


def named_sets(validation_data) -> Optional[List[Tuple[object, object]]]:
    """The ``(name, data)`` pairs of several held-out sets, or None for the single-set form.

    Several sets are a mapping ``{name: data}`` or a list of ``(name, data)`` pairs whose names are
    strings; anything else (an ``(x, y)`` tuple, a ``tf.data.Dataset``) is one set.

    Examples
    --------
    >>> import numpy as np
    >>> data = (np.zeros((4, 3)), [0, 1, 0, 1])
    >>> [name for name, _ in named_sets({"clean": data, "noisy": data})]
    ['clean', 'noisy']
    >>> named_sets(data) is None
    True
    """
    if isinstance(validation_data, Mapping):
        return list(validation_data.items())
    if not isinstance(validation_data, (list, tuple)) or not validation_data:
        return None
    if len(validation_data) == 2 and isinstance(validation_data[0], str) and _looks_like_data(validation_data[1]):
        raise ValueError(f"validation_data: one ({shown_name(validation_data[0])}, data) pair; several held-out sets "
                         f"are a dict {{{validation_data[0]!r}: data, ...}} or a list of (name, data) pairs")
    pairs = all(isinstance(item, (tuple, list)) and len(item) == 2 for item in validation_data)
    if pairs and (all(isinstance(item[0], str) for item in validation_data)
                  or all(_looks_like_data(item[1]) for item in validation_data)):
        return [tuple(item) for item in validation_data]
    return None


def _looks_like_data(value) -> bool:
    """An (x, y) pair, a tf.data.Dataset or a PyDataset: the data of a named held-out set."""
    return _is_dataset(value) or _is_batch_sequence(value) or (isinstance(value, (tuple, list)) and len(value) == 2
                                  and all(hasattr(v, "__len__") for v in value))


def _check_set_name(name, seen: dict) -> str:
    if not isinstance(name, str):
        raise ValueError(f"validation_data: a held-out set's name must be a string, got {type(name).__name__} "
                         f"{shown_name(name)}")
    problem = set_name_problem(name)
    if problem:
        raise ValueError(f"validation_data: the held-out set name {shown_name(name)} is {problem}; choose another")
    if name.lower() in seen:
        raise ValueError(f"validation_data: the held-out set name {name!r} is given twice"
                         + ("" if seen[name.lower()] == name else f" (as {seen[name.lower()]!r}: names differing "
                            "only in case would share one folder on macOS and Windows)"))
    seen[name.lower()] = name
    return name


def shown_name(name) -> str:
    text = repr(name)
    return text if len(text) <= 40 else text[:39] + "…"


def check_held_out_sets(pairs) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Check several named held-out sets: their names, each set (as :func:`check_validation_data`),
    and that they fit one model (the same per-sample input shape, the same label layout).

    Parameters
    ----------
    pairs : list of (name, data)
        As :func:`named_sets` returns them.

    Returns
    -------
    list of (name, x, y)

    Raises
    ------
    ValueError
        Naming ``validation_data`` (and the set, as ``validation_data['name']``) and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> check_held_out_sets([("a", (np.zeros((4, 3)), [0, 1, 0, 1])), ("b", (np.zeros((4, 5)), [0, 1, 0, 1]))])
    Traceback (most recent call last):
    ...
    ValueError: validation_data: the held-out sets must have one per-sample input shape (they go through one \
model), got (3,) for 'a' and (5,) for 'b'
    """
    if not pairs:
        raise ValueError("validation_data: no held-out set given (an empty mapping or list); pass {name: (x, y)}")
    if len(pairs) > MAX_SETS:
        raise ValueError(f"validation_data: {len(pairs)} held-out sets, more than the {MAX_SETS} a run takes")
    seen: dict = {}
    out = []
    for name, data in pairs:
        name = _check_set_name(name, seen)
        try:
            x, y = check_validation_data(data)
            labels_from_y(y)
        except ValueError as exc:
            raise ValueError(set_message(exc, name)) from None
        out.append((name, x, y))
    first, x0, y0 = out[0]
    for name, x, y in out[1:]:
        if _signature(x) != _signature(x0):
            raise ValueError(f"validation_data: the held-out sets must have one per-sample input shape (they go "
                             f"through one model), got {_described(x0)} for {first!r} and {_described(x)} for "
                             f"{name!r}")
        if _one_hot_width(y) not in (None, _one_hot_width(y0)) and _one_hot_width(y0) is not None:
            raise ValueError(f"validation_data: the held-out sets have different numbers of classes: one-hot labels "
                             f"of {_one_hot_width(y0)} for {first!r} and {_one_hot_width(y)} for {name!r}")
    return out


def set_message(exc: BaseException, name: str) -> str:
    """An error about one held-out set's data, naming the set (``validation_data['clean']: ...``);
    one about another argument (``layers``, ``model``) is left as it is."""
    text = str(exc)
    prefix = "validation_data:"
    return f"validation_data[{name!r}]:{text[len(prefix):]}" if text.startswith(prefix) else text


def _one_hot_width(y) -> Optional[int]:
    y = np.asarray(y)
    return int(y.shape[1]) if y.ndim == 2 and y.shape[1] > 1 else None


def check_one_hot_width(y, n_classes: int) -> None:
    """Refuse one-hot labels whose width is not the model's number of classes."""
    width = _one_hot_width(y)
    if width is not None and width != n_classes:
        raise ValueError(f"validation_data: one-hot labels of {width} classes, but the model has {n_classes} "
                         "outputs (classes)")
