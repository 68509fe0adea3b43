"""What differs between Keras 2 (``tf.keras`` up to TensorFlow 2.15, or ``tf_keras``) and Keras 3.

flowcallback reads a model's structure in a few places: its layer graph, the output shape of a
layer, a sub-model over intermediate outputs. Keras 3 renamed or removed the attributes that Keras 2
offers for these, so each helper here asks the model object what it has (duck typing) instead of
looking at a global version: a script may hold a ``keras`` (3) model while ``tf.keras`` is
``tf_keras`` (``TF_USE_LEGACY_KERAS=1``), and the model is what counts.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

__all__ = ["is_keras3", "model_class", "layer_output_shape", "inbound_layers", "clone_model", "static_shape",
           "model_output_shape"]


def is_keras3(model) -> bool:
    """Whether ``model`` is a Keras 3 model (the ``keras`` package, version 3 or later).

    Examples
    --------
    >>> import keras
    >>> is_keras3(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))  # Keras 3 installed
    True
    >>> is_keras3(object())
    False
    """
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "Model" and module.startswith("keras."):
            try:
                import keras
            except ImportError:  # pragma: no cover
                return False
            return int(keras.__version__.split(".")[0]) >= 3 and isinstance(model, keras.Model)
    return False


def model_class(model):
    """The ``Model`` class of the Keras that built ``model``, to build a sub-model of the same kind.

    Keras 2 and Keras 3 models cannot be mixed in one functional graph, so a sub-model over a
    model's intermediate outputs must come from the model's own Keras, not from ``tf.keras``.
    """
    for cls in type(model).__mro__:
        if cls.__name__ == "Model" and (cls.__module__ or "").split(".")[0] in ("keras", "tf_keras"):
            return cls
    import tensorflow as tf  # an unusual subclass: the Keras that TensorFlow exposes

    return tf.keras.Model


def layer_output_shape(layer) -> Tuple:
    """The output shape of a built layer (its first output for a layer with several)."""
    try:
        shape = layer.output_shape  # Keras 2
    except (AttributeError, RuntimeError):
        output = layer.output  # Keras 3 has no Layer.output_shape
        if isinstance(output, (list, tuple)):
            output = output[0]
        return tuple(output.shape)
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape)


def inbound_layers(layer) -> List:
    """The layers whose outputs ``layer`` is called on, over all of its calls in the model."""
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        if hasattr(node, "inbound_layers"):  # Keras 2
            inbound = node.inbound_layers
            found.extend(inbound if isinstance(inbound, (list, tuple)) else [inbound])
        else:  # Keras 3: a node links to the nodes of its inputs, each with its operation (layer)
            found.extend(parent.operation for parent in node.parent_nodes)
    return found


#: Preprocessing layers whose lookup table (the vocabulary ``adapt`` learnt) is neither in their
#: config nor in their weights: a copy rebuilt from the config has an empty table ("Table not
#: initialized"). Training does not change them, and reading a table from two threads is safe, so
#: the copy shares them with the model.
_LOOKUP_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup")


def clone_model(model):
    """A new model of the same architecture (fresh weights), from the model's own Keras.

    Each layer is rebuilt from its config, nested models included. A layer without weights that
    cannot be rebuilt (Keras 3 refuses to deserialise a ``Lambda``'s Python function, in safe mode)
    is shared with the original: it holds no state that training could change; so are the lookup
    layers (:data:`_LOOKUP_LAYERS`), whose vocabulary a rebuilt copy would lack.
    """
    import importlib

    root = (model_class(model).__module__ or "keras").split(".")[0]
    if root not in ("keras", "tf_keras"):  # pragma: no cover - model_class found no Keras Model
        import tensorflow as tf

        root_models = tf.keras.models
    else:
        root_models = importlib.import_module(f"{root}.models")

    def clone(layer):
        if type(layer).__name__ in _LOOKUP_LAYERS:  # shared: their vocabulary is not in their config
            return layer
        if type(layer).__name__ in ("Sequential", "Functional") and getattr(layer, "inputs", None):
            return _named(root_models.clone_model(layer, clone_function=clone), layer.name)
        try:
            return _named(_from_config(layer), layer.name)
        except Exception:
            if not getattr(layer, "weights", None):
                return layer
            raise

    return root_models.clone_model(model, clone_function=clone)


def _from_config(layer):
    """``layer`` rebuilt from its config, under its own name where the config leaves the name out
    (Keras 3's automatic config of a custom layer whose ``__init__`` takes ``**kw`` rather than
    ``**kwargs`` has none, so the copy got a new default name).

    Keras 3 writes the automatic config of a custom layer (one without ``get_config``) as its
    ``__init__`` arguments plus the base keys ``name``, ``trainable`` and ``dtype``; an ``__init__``
    that does not pass ``**kwargs`` on (the keras.io Transformer tutorial's ``TransformerBlock``)
    refuses those, so the copy is made from the arguments its ``__init__`` takes.
    """
    try:
        config = layer.get_config()
    except Exception as exc:  # Keras 3 raises NotImplementedError (without a message) for unserialisable arguments
        raise _not_rebuilt(layer, exc) from exc
    if "name" not in config:
        try:
            return layer.__class__.from_config({**config, "name": layer.name})
        except TypeError:  # an __init__ that takes no name
            pass
    try:
        return layer.__class__.from_config(config)
    except Exception as exc:
        taken = _init_arguments(layer.__class__)
        if taken is None or set(config) <= taken:
            raise _not_rebuilt(layer, exc) from exc
        try:
            return layer.__class__(**{k: v for k, v in config.items() if k in taken})
        except Exception:
            raise _not_rebuilt(layer, exc) from exc


def _init_arguments(cls) -> Optional[set]:
    """The keyword arguments ``cls.__init__`` takes by name, or None where it takes ``**kwargs``."""
    import inspect

    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a builtin __init__
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}


def _not_rebuilt(layer, exc) -> TypeError:
    cls = type(layer)
    what = f"layer {layer.name!r} ({cls.__name__}) cannot be rebuilt from its config"
    # a get_config() written by the user (the class's own, or a user-written base class's), not Keras's
    own = any("get_config" in vars(b) for b in cls.__mro__
              if b is cls or (b.__module__ or "").split(".")[0] not in ("keras", "tf_keras"))
    missing = []
    try:
        import inspect

        config = layer.get_config()
        missing = [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                   if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and p.name not in config]
    except Exception:  # no config at all: the reason below says why
        pass
    if own and missing:
        return TypeError(f"{what}: its get_config() leaves out the __init__ argument(s) {', '.join(missing)}; "
                         "add them to the dict it returns (keras.io, 'Serialization and saving')")
    reason = " ".join(str(exc).split()) or "no message"
    return TypeError(f"{what} ({type(exc).__name__}: {reason[:300]}); give the class a get_config() that returns "
                     "its __init__ arguments (keras.io, 'Serialization and saving'), so that a copy can be made")


def _named(copy, name: str):
    """``copy`` under ``name``: the copy's layers must answer to the original's names (the
    columns and the relevance engine refer to layers by name)."""
    if copy.name != name:
        try:
            copy.name = name  # Keras 3: a plain attribute
        except AttributeError:  # Keras 2: a read-only property over _name
            copy._name = name
    return copy


def static_shape(model, attribute: str):
    """``model.input_shape`` or ``model.output_shape`` where Keras knows it, else None.

    A subclassed model has no layer graph, so Keras cannot tell its shapes without calling it
    (Keras 2 raises AttributeError, Keras 3 has no such attribute).
    """
    try:
        shape = getattr(model, attribute)
    except (AttributeError, ValueError, RuntimeError):
        return None
    return shape


def model_output_shape(model, x=None):
    """The model's output shape (a tuple, or a list of them for several outputs).

    Read from the layer graph; for a subclassed model, from one call on ``x[:1]`` (inference mode),
    with the batch dimension as None.
    """
    shape = static_shape(model, "output_shape")
    if shape is not None or x is None:
        return shape
    import numpy as np

    from flowcallback.core._inputs import call_batch

    out = model(call_batch(x[:1]), training=False)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [(None,) + tuple(np.shape(o))[1:] for o in out]
    return (None,) + tuple(np.shape(out))[1:]
