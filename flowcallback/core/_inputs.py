"""The held-out inputs of a model with several inputs, as one indexable value.

A single-input model's held-out ``x`` is one array, and every stage indexes it as such
(``len(x)``, ``x[start:stop]``, ``x[order]``). A model with several inputs (an image and a
table of metadata; a Transformer's token ids and padding mask) takes one array per input. An
:class:`Inputs` holds those arrays, of the same length, and indexes them together, so that the
stages' batching code is the same for both; :func:`model_batch` turns a batch of either into what
the model and the relevance engine take (a list of arrays in the model's input order).

It refuses ``np.asarray`` on purpose: several arrays of different shapes are not one array, and a
stage that would flatten them must say what it means instead.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["Inputs", "model_batch", "call_batch", "leaves"]


class Inputs:
    """Several arrays of the same length, one per model input, indexed together.

    Parameters
    ----------
    arrays : sequence of ndarray
        One per input, each of shape ``(n_samples, ...)``.
    names : sequence of str, optional
        The inputs' names where the held-out set gave a dict (``{"image": ..., "meta": ...}``);
        None for a list. :meth:`for_model` orders them as the model's inputs.

    Examples
    --------
    >>> x = Inputs([np.zeros((4, 2, 2)), np.arange(4.0)], names=["image", "age"])
    >>> len(x), x.shapes
    (4, ((2, 2), ()))
    >>> x[1:3].arrays[1].tolist()
    [1.0, 2.0]
    """

    __slots__ = ("_arrays", "_names")

    def __init__(self, arrays: Sequence[np.ndarray], names: Optional[Sequence[str]] = None):
        arrays = tuple(np.asarray(a) for a in arrays)
        if len(arrays) < 2:
            raise ValueError(f"Inputs: expected at least 2 arrays, got {len(arrays)}")
        if any(a.ndim == 0 for a in arrays) or len({len(a) for a in arrays}) != 1:
            raise ValueError("validation_data: the inputs have different numbers of samples "
                             f"({', '.join(str(a.shape) for a in arrays)}); x needs one row per sample in each")
        if names is not None:
            names = tuple(str(n) for n in names)
            if len(names) != len(arrays) or len(set(names)) != len(names):
                raise ValueError(f"Inputs: expected {len(arrays)} distinct names, got {list(names)}")
        self._arrays, self._names = arrays, names

    @property
    def arrays(self) -> Tuple[np.ndarray, ...]:
        return self._arrays

    @property
    def names(self) -> Optional[Tuple[str, ...]]:
        return self._names

    @property
    def shapes(self) -> Tuple[tuple, ...]:
        """Per-sample shapes, one per input."""
        return tuple(a.shape[1:] for a in self._arrays)

    def __len__(self) -> int:
        return len(self._arrays[0])

    def __getitem__(self, index) -> Inputs:
        return Inputs([a[index] for a in self._arrays], self._names)

    def __array__(self, *args, **kwargs):
        raise TypeError("Inputs: several arrays (one per model input) are not one array; index them together "
                        "or take .arrays")

    def __repr__(self) -> str:
        parts = [f"{n}: {a.shape}" if self._names else str(a.shape)
                 for n, a in zip(self._names or [None] * len(self._arrays), self._arrays)]
        return f"Inputs({', '.join(parts)})"

    def map(self, fn) -> Inputs:
        """The same inputs with ``fn`` applied to each array."""
        return Inputs([fn(a) for a in self._arrays], self._names)

    def for_model(self, model) -> Inputs:
        """The arrays in the order of ``model.inputs`` (:func:`model_batch` gives them as the list the
        layer graph and the relevance engine take), dict keys matched to the inputs' names.

        Raises
        ------
        ValueError
            Naming ``validation_data``, where the number of arrays or their names do not match the
            model's inputs.
        """
        inputs = list(getattr(model, "inputs", None) or [])
        if len(inputs) != len(self._arrays):
            raise ValueError(f"validation_data: x holds {len(self._arrays)} arrays, the model has "
                             f"{len(inputs)} input(s); give one array per input")
        if self._names is None:
            return self
        choices = _input_names(model, inputs)
        wanted = next((names for names in choices if set(names) == set(self._names)), None)
        if wanted is None:
            raise ValueError(f"validation_data: x is a dict with keys {sorted(self._names)}, the model's inputs are "
                             f"keyed {choices[0]}; key each array by its input's name")
        by_name = dict(zip(self._names, self._arrays))
        return Inputs([by_name[n] for n in wanted], wanted)


def _input_names(model, inputs) -> list:
    """The names a dict of held-out arrays may be keyed by, each list in ``model.inputs`` order:
    the model's input dict's keys where it was built with one (Keras 3), then the names of its
    ``Input`` layers (Keras takes either)."""
    choices = []
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict) and len(struct) == len(inputs):
        # Keras flattens a dict of inputs in sorted key order: the order of model.inputs
        choices.append(sorted(str(k) for k in struct))
    names = getattr(model, "input_names", None)  # Keras 2
    if not (names and len(names) == len(inputs)):
        names = [str(getattr(t, "name", "")).split(":")[0] for t in inputs]
    choices.append(list(names))
    return choices


def leaves(x) -> Tuple[np.ndarray, ...]:
    """The arrays of ``x``: its own arrays for :class:`Inputs`, else ``(x,)``."""
    return x.arrays if isinstance(x, Inputs) else (np.asarray(x),)


def call_batch(x):
    """A batch as ``model(...)`` takes it: a dict of several inputs where they have names (a
    subclassed model's ``call()`` reads its keys), else :func:`model_batch`.

    >>> sorted(call_batch(Inputs([np.zeros(2), np.ones(2)], names=["a", "b"])))
    ['a', 'b']
    """
    if isinstance(x, Inputs) and x.names is not None:
        return dict(zip(x.names, x.arrays))
    return model_batch(x)


def model_batch(x):
    """What the model and the relevance engine take for a batch ``x``: a list of arrays for
    :class:`Inputs` (in the model's order once :meth:`Inputs.for_model` has ordered them), else the
    array itself.

    >>> model_batch(np.zeros(2)).shape, len(model_batch(Inputs([np.zeros(2), np.ones(2)])))
    ((2,), 2)
    """
    return list(x.arrays) if isinstance(x, Inputs) else np.asarray(x)
