"""The relevance engines behind one interface, as the snapshot pipeline runs them.

A snapshot asks an engine for the embedded relevance of every selected layer at given weights:

- :class:`NativeEngine` runs :class:`~flowcallback.core.lrp.native.NativeLRP` in this process,
  eagerly, on a private copy of the model (so that a background snapshot analyses the weights of
  its own epoch while training goes on);
- :class:`flowcallback.core.lrp.worker.LRPWorker` runs iNNvestigate in a worker process (it needs
  eager execution disabled, which is never done in the user's process).

Both have ``start(model, layer_names, x, batch_size=..., embed_options=...)``,
``analyze(weights) -> LRPResult``, ``alive``, ``kill()`` and ``close()``. :func:`choose_backend`
picks one for a model.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from flowcallback.core import _params
from flowcallback.core._inputs import model_batch
from flowcallback.core._keras import clone_model, is_keras3
from flowcallback.core.aggregate import LayerClassMeans
from flowcallback.core.capture import _bounded_batch, anchored_batches, text_anchor
from flowcallback.core.embed import Embedder
from flowcallback.core.lrp import BACKEND, BACKENDS, innvestigate_installed
from flowcallback.core.lrp.native import ANALYZERS, NativeLRP, all_finite
from flowcallback.core.lrp.result import LRPResult, engine_label

__all__ = ["BACKENDS", "check_backend", "choose_backend", "unavailable_reason", "engine_label", "NativeEngine",
           "LRPResult"]

#: Samples on which the traced relevance pass is compared with the eager one when an engine starts.
VERIFY_SAMPLES = 16


def check_backend(backend: str, analyzer: str) -> str:
    """Check ``lrp_backend`` (its rule, :data:`flowcallback.core.lrp.BACKEND`) and what its choice
    needs: iNNvestigate installed, or an analyzer the native engine knows.

    Raises
    ------
    ValueError
        Naming ``lrp_backend`` or ``analyzer`` and what was expected.

    Examples
    --------
    >>> check_backend("native", "lrp.z")
    'native'
    """
    _params.check("lrp_backend", backend, BACKEND)
    if backend == "innvestigate" and not innvestigate_installed():
        raise ValueError("lrp_backend: 'innvestigate' needs the iNNvestigate package, which is not installed "
                         "(pip install 'flowcallback[innvestigate]', Python <= 3.11 and TensorFlow < 2.15); "
                         "'native' or 'auto' use flowcallback's own engine")
    if backend == "native" and analyzer not in ANALYZERS:
        raise ValueError(f"analyzer: the native LRP engine knows {sorted(ANALYZERS)}, got {analyzer!r}")
    return backend


def choose_backend(backend: str, model, *, text: bool = False, several_inputs: bool = False) -> str:
    """``"native"`` or ``"innvestigate"`` for this model.

    ``"auto"`` is iNNvestigate where it is installed and the model is a Keras 2 model (the only
    Keras it analyses), as the design names it the LRP reference; the native engine elsewhere, for
    a model that reads ``text`` (strings: iNNvestigate's analyzers take numeric inputs) and for one
    with ``several_inputs`` (the worker that runs iNNvestigate takes one array).

    Raises
    ------
    ValueError
        For ``"innvestigate"`` asked for a model that reads text or has several inputs.
    """
    if backend == "innvestigate" and text:
        raise ValueError("lrp_backend: 'innvestigate' analyses numeric inputs, and this model reads text "
                         "(its held-out x is strings); use 'native' or 'auto'")
    if backend == "innvestigate" and several_inputs:
        raise ValueError("lrp_backend: 'innvestigate' runs here on single-input models, and this model has several "
                         "inputs; use 'native' or 'auto'")
    if backend != "auto":
        return backend
    if text or several_inputs:
        return "native"
    return "innvestigate" if innvestigate_installed() and not is_keras3(model) else "native"


def unavailable_reason(model) -> str:
    """Why neither engine can analyse this model on this set-up, or ``""``.

    Both engines run on TensorFlow: a Keras 3 model on the JAX or PyTorch backend has its
    activation flows, and the LRP flows are skipped with this reason as the note.
    """
    if is_keras3(model):
        import keras

        backend = keras.backend.backend()
        if backend != "tensorflow":
            return (f"Keras runs on the {backend!r} backend and both LRP engines run on TensorFlow "
                    "(KERAS_BACKEND=tensorflow gives the LRP flows)")
    return ""


class NativeEngine:
    """Runs the native engine for the snapshots of one model (the interface of ``LRPWorker``).

    Parameters
    ----------
    analyzer : str, default="lrp.epsilon"
        One of :data:`flowcallback.core.lrp.native.ANALYZERS` (iNNvestigate's names).
    analyzer_kwargs : dict, optional
        The analyzer's keyword arguments, as for iNNvestigate.

    Examples
    --------
    An untrained model on 50 of scikit-learn's digits:

    >>> import tensorflow as tf
    >>> from sklearn.datasets import load_digits
    >>> x_val = (load_digits().data[:50] / 16).astype("float32")
    >>> model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(16, activation="relu", name="hidden"),
    ...                              tf.keras.layers.Dense(10, name="logits")])
    >>> engine = NativeEngine("lrp.z")
    >>> engine.start(model, ["hidden", "logits"], x_val)
    >>> result = engine.analyze(model.get_weights())
    >>> sorted(result.embeddings), result.missing, len(result.embeddings["hidden"])
    (['hidden', 'logits'], [], 50)
    >>> engine.close()
    """

    def __init__(self, analyzer: str = "lrp.epsilon", analyzer_kwargs: Optional[dict] = None, compile: bool = True):
        check_backend("native", analyzer)
        self.compile = bool(compile)
        self._compiled = None
        self.analyzer = analyzer
        self.analyzer_kwargs = dict(analyzer_kwargs or {})
        self._engine: Optional[NativeLRP] = None
        self._copy = None
        self._layers: list = []
        self._x = None
        self._batch_size = 256
        self._anchor: Optional[int] = None
        self._embed_options: dict = {}
        self.note = ""
        self.blocked: list = []
        #: why the engine reads the model itself rather than a private copy ("" where it has a copy)
        self.in_place = ""

    @property
    def alive(self) -> bool:
        return self._engine is not None

    def start(self, model, layer_names: Sequence[str], x, *, batch_size: int = 256,
              embed_options: Optional[dict] = None) -> None:
        """Build the engine on a private copy of the model and analyse one sample.

        Raises
        ------
        ValueError
            For analyzer arguments the engine does not know.
        RuntimeError
            If the model cannot be copied or holds a layer the engine cannot analyse (the
            message names the layer and its class); the caller shows it and goes on without LRP.
        """
        check = NativeLRP(model, list(layer_names), self.analyzer, self.analyzer_kwargs)  # reads the graph only
        if check.unsupported:
            raise RuntimeError(check.note)
        self.note = check.note  # where relevance stops (a layer without a rule), or ""
        self.blocked = list(check.blocked)  # the selected layers that the stops leave without relevance
        try:
            copy = clone_model(model)
            copy.set_weights(model.get_weights())
            self.in_place = ""
        except Exception as exc:
            # a custom layer that Keras cannot rebuild from its config (keras.io's ViT PatchEncoder): the
            # engine reads the model itself; the caller then runs each analysis while training waits, and
            # analyze() refuses weights other than the model's own
            copy = model
            self.in_place = ("LRP reads the model itself, as it cannot be copied "
                             f"({' '.join(str(exc).split())})")
        if copy is model:
            engine = check  # the check read this very model: tracing it again would give the same engine
        else:
            try:
                engine = NativeLRP(copy, list(layer_names), self.analyzer, self.analyzer_kwargs)
            except ValueError as exc:  # the copy differs from the model (the arguments were checked above)
                raise RuntimeError(f"the model's private copy for LRP differs from it: {exc}") from exc
            if engine.unsupported:
                raise RuntimeError(engine.note)
        self._batch_size = _bounded_batch(model, layer_names, int(batch_size))
        # held-out text: each batch also holds the longest text, so that all batches are padded alike
        self._anchor = text_anchor(model, x)
        self._compiled = None
        if self.compile:
            # the traced pass is used only where it equals the eager one (CompiledRelevance.verify);
            # one that cannot be traced at all leaves the eager pass
            try:
                compiled = engine.compiled(min(self._batch_size, len(x)) + (self._anchor is not None))
                if compiled.verify(model_batch(x[:VERIFY_SAMPLES])):
                    self._compiled = compiled
            except Exception:
                self._compiled = None
        if self._compiled is None:
            try:  # any failure of the reverse pass shows now, not at every epoch
                engine.relevance(model_batch(x[:1]))
            except Exception as exc:  # the caller goes on without LRP (a ValueError would stop training)
                raise RuntimeError(f"the relevance pass fails on this model ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())})") from exc
        self._engine, self._copy = engine, copy
        self._layers = list(layer_names)
        self._x = x
        self._embed_options = dict({"nonfinite": "flag"}, **(embed_options or {}))

    def analyze(self, weights, *, class_means: Optional[LayerClassMeans] = None) -> LRPResult:
        """Embedded relevance of every selected layer for these weights (a list, or a model).

        ``class_means``, built with the held-out labels (:class:`~flowcallback.core.aggregate.LayerClassMeans`),
        also accumulates the per-class mean relevance of each unit of every layer from the same
        batches (``class_means.result()`` afterwards); the return value is the same.
        """
        if self._engine is None:
            raise RuntimeError("the native LRP engine is not started")
        src = weights.get_weights() if hasattr(weights, "get_weights") else weights
        if self.in_place:  # no copy to set: the weights must be the model's own at this moment
            if not _same_weights(self._copy.get_weights(), src):
                raise RuntimeError(f"{self.in_place}, and its weights have changed since these were taken: "
                                   "with such a model, analyse while training waits")
        else:
            self._copy.set_weights([np.asarray(w) for w in src])
        embedders = {n: Embedder(n, **self._embed_options) for n in self._layers}
        reached = set()
        finite = all_finite(src)
        for start, batch, size in anchored_batches(self._x, self._batch_size, self._anchor):
            if self._compiled is not None:
                maps = self._compiled.relevance(model_batch(batch), weights_finite=finite)
            else:
                maps = self._engine.relevance(model_batch(batch))
            for name, value in maps.items():
                value = value[:size]
                if name in embedders:
                    embedders[name].add(value)
                    reached.add(name)
                    if class_means is not None:
                        class_means.add(name, value, start)
        done = [n for n in self._layers if n in reached]
        return LRPResult({n: embedders[n].result() for n in done}, [n for n in self._layers if n not in reached],
                         f"NativeLRP({self.analyzer})", NativeLRP.__module__, engine=engine_label("native"),
                         note=self.note)  # the model's own layer names, as the warning at start had them

    def kill(self) -> None:
        """Nothing to kill: the engine runs in this process."""

    def close(self) -> None:
        self._engine = self._copy = self._x = None


def _same_weights(a, b) -> bool:
    """Whether two lists of weight arrays are equal (NaN equal to NaN)."""
    return len(a) == len(b) and all(np.shape(x) == np.shape(y) and np.array_equal(x, y, equal_nan=True)
                                    for x, y in zip(a, b))
