"""LRP relevance maps: a native eager engine, and iNNvestigate in a child process.

:class:`NativeLRP` runs iNNvestigate's LRP analyzers (same names, rules and parameters) eagerly in
the calling process; :func:`innvestigate_maps` runs iNNvestigate itself in a child process (it needs
eager execution disabled); :func:`relevance` is the entry point for scripts
(``flowcallback.relevance``). The conventions are in ``docs/method.md``, "Native LRP engine".

Importing this package does not import TensorFlow: :mod:`.native` (and the names it provides here)
is loaded at first use. The iNNvestigate worker process (``python -m
flowcallback.core.lrp._worker_main``) runs this file first, and must set its niceness before
TensorFlow starts any thread (:mod:`flowcallback.core._priority`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from flowcallback.core import _params

__all__ = ["BACKENDS", "BACKEND", "ANALYZER", "innvestigate_installed", "NativeLRP", "UnsupportedLayerError",
           "ANALYZERS", "INNVESTIGATE_ANALYZERS", "relevance",
           "innvestigate_maps", "layer_kind"]

#: iNNvestigate 2.1.2's LRP analyzer names (``innvestigate.analyzer.analyzers``), known here without
#: importing it. ``"lrp"`` itself needs a ``rule`` argument.
INNVESTIGATE_ANALYZERS = (
    "lrp", "lrp.z", "lrp.epsilon", "lrp.w_square", "lrp.flat", "lrp.alpha_beta", "lrp.alpha_2_beta_1",
    "lrp.alpha_2_beta_1_IB", "lrp.alpha_1_beta_0", "lrp.alpha_1_beta_0_IB", "lrp.z_plus", "lrp.z_plus_fast",
    "lrp.sequential_preset_a", "lrp.sequential_preset_b", "lrp.sequential_preset_a_flat",
    "lrp.sequential_preset_b_flat", "lrp.sequential_preset_b_flat_until_idx",
)

BACKENDS = ("auto", "native", "innvestigate")
#: Which engine computes relevance.
BACKEND = _params.options(*BACKENDS)
#: Any LRP analyzer, by iNNvestigate's name (the native engine knows most of them).
ANALYZER = _params.Constraint(lambda v: isinstance(v, str) and v in INNVESTIGATE_ANALYZERS,
                              f"one of the LRP analyzers {sorted(INNVESTIGATE_ANALYZERS)}")

_NATIVE_NAMES = ("ANALYZERS", "NativeLRP", "UnsupportedLayerError", "layer_kind")


def __getattr__(name):
    # the native engine's names, loaded (with TensorFlow) at first use; see the module docstring
    if name in _NATIVE_NAMES:
        from flowcallback.core.lrp import native

        return getattr(native, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def innvestigate_installed() -> bool:
    """Whether iNNvestigate can be imported (it is never imported in the user's process)."""
    import importlib.util

    return importlib.util.find_spec("innvestigate") is not None


def innvestigate_maps(model, x, analyzers: Sequence[Tuple[str, dict]], layers: Optional[Sequence[str]] = None,
                      timeout: Optional[float] = None,
                      disable_model_checks: bool = False) -> List[Dict[str, np.ndarray]]:
    """iNNvestigate's relevance at each layer's output, for several analyzers, in one child process.

    The model is rebuilt there from its JSON config (output activation set to linear, as the LRP
    worker does) and its current weights. One dict per analyzer, in order.

    ``disable_model_checks=True`` is passed on to iNNvestigate: its model checks of the "warning"
    kind raise ``NotImplementedError`` in 2.1.2 (``AnalyzerBase._do_model_checks``), which refuses
    any model with a ``ReLU`` or ``LeakyReLU`` layer ("LRP is only tested for convolutional neural
    networks") and, for the presets, any non-ReLU activation.

    Raises
    ------
    RuntimeError
        If iNNvestigate failed (its message and traceback included).
    """
    from flowcallback.core.lrp.worker import model_config_without_softmax

    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    spec = {
        "model_json": model_config_without_softmax(model),
        "layers": None if layers is None else list(layers),
        "analyzers": [[a, dict(kw or {})] for a, kw in analyzers],
        "n_weights": len(model.get_weights()),
        "n_inputs": len(xs),
        "disable_model_checks": bool(disable_model_checks),
    }
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays.update({f"x{i}": np.asarray(a) for i, a in enumerate(xs)})
    # the child imports this very copy of flowcallback (a source checkout may shadow an install)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="flowcallback-inn-") as tmp:
        job, out = os.path.join(tmp, "job.npz"), os.path.join(tmp, "out.npz")
        np.savez(job, spec=np.asarray(json.dumps(spec)), **arrays)
        proc = subprocess.run([sys.executable, "-m", "flowcallback.core.lrp._innvestigate_run", job, out], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(out):
            stderr = proc.stderr.decode(errors="replace")[-3000:]
            raise RuntimeError(f"iNNvestigate's process failed (exit code {proc.returncode}):\n{stderr}")
        with np.load(out, allow_pickle=False) as data:
            if "error" in data.files:
                errors = json.loads(str(data["error"]))
                raise RuntimeError("iNNvestigate failed: "
                                   + "\n".join(f"{analyzers[int(i)][0]}: {e}" for i, e in errors.items()))
            result = [dict() for _ in analyzers]
            for key in data.files:
                i, name = key.split("/", 1)
                result[int(i)][name] = data[key]
    return result


def _is_text(x) -> bool:
    """Whether ``x`` is text: a list of strings (one input, not one array per input) or a NumPy array of them."""
    if isinstance(x, (list, tuple)):
        return bool(x) and all(isinstance(v, str) for v in x)
    return getattr(x, "dtype", None) is not None and np.asarray(x).dtype.kind == "U"


def _text_relevance(engine, model, x: np.ndarray, batch_size: Optional[int]) -> Dict[str, np.ndarray]:
    """The engine's relevance over held-out text, each batch padded as the whole set
    (:func:`flowcallback.core.capture.anchored_batches`)."""
    from flowcallback.core.capture import anchored_batches, text_anchor

    parts: Dict[str, list] = {}
    for _, batch, size in anchored_batches(x, int(batch_size or len(x)), text_anchor(model, x)):
        for name, value in engine.relevance(batch).items():
            parts.setdefault(name, []).append(value[:size])
    return {name: np.concatenate(values, axis=0) for name, values in parts.items()}


def relevance(model, x, layers: Optional[Sequence[str]] = None, analyzer: str = "lrp.epsilon", backend: str = "auto",
              analyzer_kwargs: Optional[dict] = None, batch_size: Optional[int] = 256) -> Dict[str, np.ndarray]:
    """LRP relevance of the predicted class at the output of each layer.

    Parameters
    ----------
    model : keras.Model
        A classifier with one output; its output softmax is left out for the analysis.
    x : array-like, list of array-like or dict
        Samples (a batch axis first), or a list of strings for a model that reads text. For a
        model with several inputs, one array per input: a list in the order of ``model.inputs``,
        or a dict keyed by the inputs' names.
    layers : list of str, optional
        Layer names. Default: every layer of the model but the input layers (a custom layer by
        its own name; of the Keras 3 operations between layers, those that join tensors, such as
        ``x + residual``, as the callback's columns have them).
    analyzer : str, default="lrp.epsilon"
        An iNNvestigate LRP analyzer name (``"lrp.z"``, ``"lrp.alpha_1_beta_0"``,
        ``"lrp.sequential_preset_a"``...).
    backend : {"auto", "native", "innvestigate"}, default="auto"
        ``"native"``: the eager engine in this process (:class:`NativeLRP`). ``"innvestigate"``:
        iNNvestigate in a child process (it needs eager execution disabled; the model must be
        rebuildable from its config). ``"auto"``: native when it can analyse the model and knows
        the analyzer, otherwise iNNvestigate when it is installed.
    analyzer_kwargs : dict, optional
        The analyzer's keyword arguments (``epsilon``, ``input_layer_rule=(low, high)``...).
    batch_size : int, default=256
        Samples per pass of the native engine.

    Returns
    -------
    dict
        ``{layer name: array (n_samples,) + the layer's output shape}``. A layer that relevance
        cannot reach (it lies before a layer without an LRP rule) is left out, with a
        ``RuntimeWarning`` that names it and the layer that stops the relevance.

    Raises
    ------
    ValueError
        For an analyzer name neither engine knows (the message lists the names), or an unknown
        backend.
    UnsupportedLayerError
        With ``backend="native"`` (or ``"auto"`` without iNNvestigate) when the model holds a layer
        the native engine cannot analyse; the message names it and its class.

    Examples
    --------
    An untrained model on scikit-learn's digits (8 x 8 images):

    >>> import keras
    >>> from sklearn.datasets import load_digits
    >>> import flowcallback
    >>> x = load_digits().images[:100, :, :, None] / 16.0
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(6, 3, activation="relu", name="conv1"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, activation="softmax", name="dense10")])
    >>> maps = flowcallback.relevance(model, x, ["conv1", "dense10"], backend="native")
    >>> maps["conv1"].shape, maps["dense10"].shape
    ((100, 6, 6, 6), (100, 10))
    """
    from flowcallback.core.lrp.native import ANALYZERS, NativeLRP

    _params.check("backend", backend, BACKEND)
    _params.check("analyzer", analyzer, ANALYZER)
    if isinstance(x, dict):  # keyed by input names: the arrays in the model's input order
        from flowcallback.core._inputs import Inputs

        try:
            x = (np.asarray(next(iter(x.values()))) if len(x) == 1
                 else list(Inputs(list(x.values()), [str(k) for k in x]).for_model(model).arrays))
        except ValueError as exc:  # the message names the callback's argument; here it is x
            raise ValueError(str(exc).replace("validation_data: x is ", "x: ", 1).replace("validation_data: ", "x: ", 1)
                             ) from None
    if backend == "native" or (backend == "auto" and analyzer in ANALYZERS):
        if backend == "native" and analyzer not in ANALYZERS:
            raise ValueError(f"analyzer: the native engine knows {sorted(ANALYZERS)}, got {analyzer!r} "
                             "(try backend='innvestigate')")
        engine = NativeLRP(model, layers, analyzer, analyzer_kwargs)
        if not engine.unsupported or backend == "native" or not innvestigate_installed():
            if engine.blocked and not engine.unsupported:  # they are left out of the result: say why
                warnings.warn(f"flowcallback.relevance: {engine.note}", RuntimeWarning, stacklevel=2)
            if _is_text(x):
                return _text_relevance(engine, model, np.asarray(x, dtype=str), batch_size)
            return engine.relevance(x, batch_size=batch_size)
    if not innvestigate_installed():
        raise ValueError(f"analyzer {analyzer!r} needs iNNvestigate, which is not installed")
    if layers is None:
        layers = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    return innvestigate_maps(model, x, [(analyzer, dict(analyzer_kwargs or {}))], layers)[0]
