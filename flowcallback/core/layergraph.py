"""The model as a flat graph of calls: every layer call of a Sequential or functional model, with
nested models inlined, in an order that runs.

Keras keeps a model's structure as *nodes*: each call of a layer (or, in Keras 3, of an operation
such as ``x + 3.0`` on a symbolic tensor) with the symbolic tensors it was called on. A block
built as its own ``Sequential`` or functional model and used as a layer (a data-augmentation
``Sequential``, ConvNeXt's stem) is one node of the outer model and a graph of its own.
:func:`trace` follows the nodes from the model's outputs back to its inputs and replaces each
nested model's node by the calls inside it, so that the capture and the relevance engine see every
layer, wherever it was defined, and run the whole model in one pass.

Tensors are named by *keys* (where the tensor was made: the enclosing calls, the layer, the node
and the output index), which stay valid however the graph is walked; a call keeps its Keras
arguments as a template, so that a layer called with keyword arguments or constants
(``MultiHeadAttention(query, value)``, ``x * (1 / 6)``) is called again exactly as Keras calls it.

Keras 2 (``tf.keras`` up to TensorFlow 2.15, ``tf_keras``) and Keras 3 name these parts
differently; this module reads both, as :mod:`flowcallback.core._keras` does for the rest.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from flowcallback.core._keras import is_keras3

__all__ = ["Call", "LayerGraph", "GraphError", "trace", "is_model", "is_operation", "is_custom"]

Key = Tuple  # (enclosing calls, id(layer), node index, output index)


class GraphError(ValueError):
    """The model has no layer graph to follow (a subclassed or unbuilt model)."""


class _Slot:
    """Where the i-th input tensor goes in a call's argument template."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __repr__(self):  # pragma: no cover - debugging aid
        return f"<input {self.index}>"


def _is_symbolic(t) -> bool:
    return getattr(t, "_keras_history", None) is not None


def _history(t) -> Tuple[Any, int, int]:
    h = getattr(t, "_keras_history", None)
    if h is None:
        raise GraphError("the model is not a graph of Keras layers (a subclassed model?): its tensors have no "
                         "Keras history")
    return h[0], int(h[1]), int(h[2])


def _nest():
    import tensorflow as tf  # tf.nest: the structure utility both Keras versions' arguments follow

    return tf.nest


def _arguments(knode) -> Tuple[tuple, dict]:
    """A node's call arguments, symbolic tensors included: Keras 3 ``node.arguments``, Keras 2 ``call_args``."""
    arguments = getattr(knode, "arguments", None)
    if arguments is not None and hasattr(arguments, "args"):
        return tuple(arguments.args), dict(arguments.kwargs)
    return tuple(getattr(knode, "call_args", ()) or ()), dict(getattr(knode, "call_kwargs", {}) or {})


def _output_tensors(knode) -> list:
    out = getattr(knode, "output_tensors", None)
    if out is None:
        out = getattr(knode, "outputs", [])
    return list(_nest().flatten(out))


def is_model(layer) -> bool:
    """Whether ``layer`` is a Keras model with a graph of its own (a nested Sequential or functional block)."""
    if not hasattr(layer, "layers") or not callable(getattr(layer, "get_layer", None)):
        return False
    try:
        inputs, outputs = layer.inputs, layer.outputs
    except (AttributeError, ValueError, RuntimeError):  # a subclassed or unbuilt model
        return False
    return bool(inputs) and bool(outputs) and all(_is_symbolic(t) for t in list(inputs) + list(outputs))


def is_operation(layer) -> bool:
    """A Keras 3 operation that is not a layer (``x + 3.0``, ``keras.ops.reshape`` on symbolic tensors)."""
    module = type(layer).__module__ or ""
    return module.startswith(("keras.src.ops", "keras.ops")) and not hasattr(layer, "trainable_weights")


def _accepts_training(layer) -> bool:
    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError, AttributeError):
        return False


@dataclass(eq=False)
class Call:
    """One call of a layer (or a Keras 3 operation) in the flat graph.

    Attributes
    ----------
    layer : keras layer or operation
    name : str
        The layer's name in the flat graph: its own name, or ``"block/name"`` (the names of the
        enclosing models first) when another layer of the flat graph has the same name.
    scope : tuple of str
        The names of the nested models this call is inside, outermost first (empty at the top).
    inputs, outputs : tuple of keys
        The tensors it reads, in the order they appear in its arguments, and those it makes.
    first : bool
        Whether this is the layer's first call (its output is "the layer's output").
    """

    layer: Any
    node_index: int
    inputs: Tuple[Key, ...]
    outputs: Tuple[Key, ...]
    template: Tuple[tuple, dict] = ((), {})
    scope: Tuple[str, ...] = ()
    name: str = ""
    first: bool = True
    shapes: Tuple[tuple, ...] = ()
    ctx: tuple = ()  # the calls it is inside (its keys' context before any renaming): keeps two calls' insides apart

    @property
    def is_input(self) -> bool:
        return type(self.layer).__name__ == "InputLayer" or not self.inputs

    @property
    def class_name(self) -> str:
        return type(self.layer).__name__

    def arguments(self, values: Sequence) -> Tuple[tuple, dict]:
        """The call's arguments with ``values[i]`` in place of its i-th input tensor."""
        def fill(a):
            return values[a.index] if isinstance(a, _Slot) else a

        args, kwargs = self.template
        return (tuple(_nest().map_structure(fill, list(args))),
                {k: _nest().map_structure(fill, v) for k, v in kwargs.items()})

    def __call__(self, values: Sequence, **extra) -> list:
        """Run the call on tensors (in inference mode); its outputs, flattened."""
        args, kwargs = self.arguments(values)
        kwargs.update(extra)
        if _accepts_training(self.layer):  # Keras 3 records training=True in augmentation layers' nodes
            kwargs["training"] = False
        else:
            kwargs.pop("training", None)
        return list(_nest().flatten(self.layer(*args, **kwargs)))


def _template(knode) -> Tuple[Tuple[tuple, dict], List]:
    """The node's arguments with its symbolic tensors replaced by slots, and those tensors in order."""
    tensors: list = []

    def slot(a):
        if _is_symbolic(a):
            tensors.append(a)
            return _Slot(len(tensors) - 1)
        return a

    args, kwargs = _arguments(knode)
    nest = _nest()
    # map_structure visits leaves in flatten order, so slot i is the i-th tensor of the arguments
    new_args = tuple(nest.map_structure(slot, list(args)))
    new_kwargs = {k: nest.map_structure(slot, kwargs[k]) for k in sorted(kwargs)}
    return (new_args, new_kwargs), tensors


def _shape(t) -> tuple:
    try:
        return tuple(None if d is None else int(d) for d in t.shape)
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - an unknown rank
        return ()


def _key(t, ctx) -> Key:
    layer, node_index, tensor_index = _history(t)
    return (ctx, id(layer), node_index, tensor_index)


def _trace_graph(inputs: Sequence, outputs: Sequence, ctx: tuple, scope: Tuple[str, ...]) -> List[Call]:
    """The calls between ``inputs`` and ``outputs`` (symbolic tensors), in an execution order.

    Follows the tensors' Keras history from the outputs (so that layers that do not lead to an
    output are left out, as Keras leaves them out of a call), then orders the calls by a
    depth-first post-order from the first call found: the order iNNvestigate's reverse pass
    follows too, which fixes the order in which the relevance of a shared tensor is summed.
    """
    input_keys = {_key(t, ctx) for t in inputs}
    calls: Dict[tuple, Call] = {}
    todo = list(outputs)
    while todo:
        t = todo.pop()
        layer, ni, _ = _history(t)
        if (id(layer), ni) in calls:
            continue
        knode = layer._inbound_nodes[ni]
        made = _output_tensors(knode)
        outs = tuple((ctx, id(layer), ni, i) for i in range(max(len(made), 1)))
        shapes = tuple(_shape(o) for o in made)
        if type(layer).__name__ == "InputLayer" or getattr(knode, "is_input", False) or input_keys & set(outs):
            calls[(id(layer), ni)] = Call(layer, ni, (), outs, scope=scope, shapes=shapes, ctx=ctx)
            continue
        template, ins = _template(knode)
        calls[(id(layer), ni)] = Call(layer, ni, tuple(_key(x, ctx) for x in ins), outs, template, scope,
                                      shapes=shapes, ctx=ctx)
        todo.extend(ins)
    return _toposort(list(calls.values()))


def _toposort(calls: List[Call]) -> List[Call]:
    produced_by = {k: c for c in calls for k in c.outputs}
    seen = set()
    out = []
    for start in calls:
        if id(start) in seen:
            continue
        stack = [(start, False)]
        while stack:
            c, done = stack.pop()
            if done:
                out.append(c)
                continue
            if id(c) in seen:
                continue
            seen.add(id(c))
            stack.append((c, True))
            for k in reversed(c.inputs):
                p = produced_by.get(k)
                if p is not None and id(p) not in seen:
                    stack.append((p, False))
    return out


def _inline(calls: List[Call], depth: int = 0, opened: Optional[Dict] = None) -> List[Call]:
    """Replace each call of a nested model by the calls inside it (recursively).

    With ``opened`` (a dict), each call of a custom layer class is replaced by the calls its
    ``call()`` makes, where that can be followed (:func:`_open_custom`); ``opened[id(call)]``
    records ``(call, reason)``, the reason empty where it was opened.
    """
    if depth > 32:
        raise GraphError("models nested more than 32 deep")
    out: List[Call] = []
    for c in calls:
        if opened is not None and not c.is_input and is_custom(c.layer):
            before = set(opened)
            inner, reason = _open_custom(c, depth, opened)
            if inner is None:  # what was opened inside it is not in the graph
                for k in set(opened) - before:
                    del opened[k]
            if reason is not None:  # None: not tried (Keras 2)
                opened[id(c)] = (c, reason)
            out.extend(inner if inner is not None else [c])
            continue
        if c.is_input or not is_model(c.layer):
            out.append(c)
            continue
        model = c.layer
        ctx = c.ctx + ((id(model), c.node_index),)
        inner = _trace_graph(list(model.inputs), list(model.outputs), ctx, c.scope + (model.name,))
        inner_inputs = [_key(t, ctx) for t in model.inputs]
        inner_outputs = [_key(t, ctx) for t in model.outputs]
        if len(inner_inputs) != len(c.inputs) or len(inner_outputs) != len(c.outputs):
            out.append(c)  # called in a way that does not map onto its graph: one opaque layer
            continue
        rename = dict(zip(inner_inputs, c.inputs))
        rename.update(zip(inner_outputs, c.outputs))
        for ic in inner:
            if ic.is_input:
                continue
            ic.inputs = tuple(rename.get(k, k) for k in ic.inputs)
            ic.outputs = tuple(rename.get(k, k) for k in ic.outputs)
            out.extend(_inline([ic], depth + 1, opened))
    return out


def is_custom(layer) -> bool:
    """A layer of a user's own class (not Keras's, not a model, not an operation): its ``call()`` is its own."""
    module = (type(layer).__module__ or "").split(".")[0]
    return (module not in ("keras", "tf_keras", "tensorflow") and hasattr(layer, "call")
            and not is_model(layer) and not hasattr(layer, "layers"))


#: Agreement asked of a custom layer's calls, run one by one, with the layer itself (float32).
_OPEN_RTOL, _OPEN_ATOL = 1e-4, 1e-5


def _open_custom(c: Call, depth: int, opened: Dict) -> Tuple[Optional[List[Call]], Optional[str]]:
    """The calls that a custom layer's ``call()`` makes, followed as Keras 3 builds a functional
    model: the method is called on symbolic inputs, so that each Keras layer and operation inside
    it leaves a node. Returns ``(calls, "")``, ``(None, why)`` where it cannot be followed, and
    ``(None, None)`` on Keras 2, where it is not tried.

    It is kept whole (None) where ``call()`` does not run on symbolic tensors (Python control flow
    on values, TensorFlow functions), or where its calls, run one by one on a random batch, do not
    give the layer's own output. A tensor it computes outside its inputs (a position embedding of
    ``ops.arange``) is held in a variable that :meth:`LayerGraph.refresh` makes again when the
    layer's weights change (:class:`_Held`). A reshape to the symbolic shape's unknown batch size
    (``ops.reshape(x, (batch_size, n, d))`` with ``batch_size = ops.shape(x)[0]``) is made to
    infer it (``-1``), as the layer's own call does with a known size. The nodes this adds to the
    layer's sublayers are taken away again: the model is left as it was.
    """
    if not any(cls.__name__ == "Layer" and cls.__module__ == "keras.src.layers.layer" for cls in type(c.layer).__mro__):
        return None, None  # Keras 2 records no nodes inside a layer's call(): kept whole, as before
    layer = c.layer
    template, outer = _template(layer._inbound_nodes[c.node_index])
    specs = [(tuple(t.shape), t.dtype) for t in outer]
    ctx = c.ctx + ((id(layer), c.node_index),)
    held = None
    with _symbolic_call(layer, template, specs) as (inputs, made, failure):
        if failure is not None:
            if "cannot be used as input to a TensorFlow function" in str(failure):
                return None, ("its call() gives a symbolic tensor to a TensorFlow function (a tf.* function, or an "
                              "operator with a weight on its left, such as self.gamma * h), which Keras does not "
                              "follow; written with keras.ops (or h * self.gamma) it is followed")
            why = f"its call() does not run on symbolic tensors ({type(failure).__name__}: {_short(failure)})"
            if "value (None)" in str(failure) or "NoneType" in str(failure):
                why += (": a size it reads with ops.shape is unknown (None) on symbolic tensors, as the batch size "
                        "is; a tensor made from the input instead (a class token as ops.zeros_like(x[:, :1, :]) "
                        "+ self.cls, not ops.broadcast_to(self.cls, (batch, 1, d))) is followed")
            return None, why
        if len(made) != len(c.outputs) or not all(_is_symbolic(t) for t in made):
            return None, "its call() returns other than the layer's outputs as Keras tensors"
        inner_in = [_key(t, ctx) for t in inputs]
        inner_out = [_key(t, ctx) for t in made]
        if set(inner_out) & set(inner_in) or len(set(inner_out)) != len(inner_out):
            return None, "its call() returns one of its inputs unchanged"
        inner = _trace_graph(inputs, made, ctx, c.scope + (layer.name,))
        if {k for ic in inner if ic.is_input for k in ic.outputs} - set(inner_in):
            return None, "its call() reads a Keras tensor that is not one of its inputs"
        _infer_batch_in_reshapes(inner)
        variables = _hold_constants(inner)
        if variables:
            held = _Held(layer, template, specs, variables)
        inner = _inline(inner, depth + 1, opened)
        why = _differs(c, inner, inner_in, inner_out, [s for s, _ in specs], [d for _, d in specs])
        if why and any(None in s[1:] for s, _ in specs):
            why += ("; its input has sizes other than the batch's that are unknown (None) when its call() is "
                    "followed (a text of any length): a size read with ops.shape is None there")
        if why:
            return None, why
    if held is not None:
        opened[("held", id(c))] = (c, "", held)
    rename = dict(zip(inner_in, c.inputs))
    rename.update(zip(inner_out, c.outputs))
    out = []
    for ic in inner:
        if ic.is_input:
            continue
        ic.inputs = tuple(rename.get(k, k) for k in ic.inputs)
        ic.outputs = tuple(rename.get(k, k) for k in ic.outputs)
        out.append(ic)
    return out, ""


@contextmanager
def _symbolic_call(layer, template: Tuple[tuple, dict], specs: Sequence[tuple]):
    """``layer.call`` on fresh ``keras.Input`` tensors of the given (shape, dtype) specs, in place of
    the template's slots; yields ``(inputs, outputs, None)``, or ``(inputs, [], exception)`` where
    the call fails. On leaving, the nodes the call added to the layer's sublayers are taken away."""
    import keras

    subs = list(layer._flatten_layers(include_self=False, recursive=True))
    sizes = [(sub, len(sub._inbound_nodes), len(sub._outbound_nodes)) for sub in subs]
    try:
        inputs = [keras.Input(batch_shape=shape, dtype=dtype) for shape, dtype in specs]
        args, kwargs = Call(layer, 0, tuple(range(len(inputs))), (), template).arguments(inputs)
        if _accepts_training(layer):
            kwargs["training"] = False
        try:
            made = list(_nest().flatten(layer.call(*args, **kwargs)))
        except Exception as exc:
            yield inputs, [], exc
            return
        yield inputs, made, None
    finally:
        for sub, n_in, n_out in sizes:  # the sublayers' nodes as they were before
            del sub._inbound_nodes[n_in:]
            del sub._outbound_nodes[n_out:]


def _infer_batch_in_reshapes(calls: List[Call]) -> None:
    """Reshapes (made by the trace, not the user's) to a shape whose only unknown size is the
    symbolic batch's: made to infer it, as ``ops.reshape(x, (-1, n, d))`` does."""
    for ic in calls:
        shape = getattr(ic.layer, "newshape", None)
        if (is_operation(ic.layer) and ic.class_name == "Reshape" and isinstance(shape, tuple)
                and shape.count(None) == 1 and -1 not in shape):
            ic.layer.newshape = tuple(-1 if d is None else d for d in shape)


def _is_constant(leaf) -> bool:
    """A tensor in a call's arguments that is neither an input (a slot) nor a variable."""
    if isinstance(leaf, _Slot) or leaf is None or isinstance(leaf, (bool, int, float, str)):
        return False
    if _is_variable(leaf) or type(leaf).__module__.startswith("numpy"):
        return False
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _constant_leaves(calls: List[Call]) -> list:
    """The constant tensors the calls are given, in call and argument order."""
    return [leaf for ic in calls for leaf in _nest().flatten(list(ic.template[0]) + list(ic.template[1].values()))
            if _is_constant(leaf)]


def _hold_constants(calls: List[Call]) -> list:
    """Put each constant tensor of the calls' arguments in a variable (returned in the order of
    :func:`_constant_leaves`), so that a pass traced once reads its current value."""
    import keras

    variables = []

    def hold(a):
        if not _is_constant(a):
            return a
        variables.append(keras.Variable(keras.ops.convert_to_numpy(a), trainable=False, autocast=False,
                                        name="held_constant"))
        return variables[-1]

    nest = _nest()
    for ic in calls:
        args, kwargs = ic.template
        if any(_is_constant(leaf) for leaf in nest.flatten(list(args) + list(kwargs.values()))):
            # the same visiting order as _constant_leaves: the positional arguments, then the keywords
            ic.template = (tuple(nest.map_structure(hold, list(args))),
                           {k: nest.map_structure(hold, kwargs[k]) for k in kwargs})
    return variables


class _Held:
    """The constant tensors an opened custom layer's ``call()`` computes outside its inputs (a
    position embedding of ``ops.arange``), held in variables; :meth:`refresh` computes them again,
    by the same symbolic call, when the layer's weights have changed."""

    def __init__(self, layer, template, specs, variables):
        self.layer, self.template, self.specs, self.variables = layer, template, list(specs), list(variables)
        self._seen = self._weights()

    def _weights(self) -> list:
        import keras

        return [keras.ops.convert_to_numpy(w) for w in self.layer.weights]

    def refresh(self) -> bool:
        """Recompute the constants if the layer's weights changed since they were; whether they were."""
        import numpy as np

        now = self._weights()
        if len(now) == len(self._seen) and all(np.array_equal(a, b) for a, b in zip(now, self._seen)):
            return False
        with _symbolic_call(self.layer, self.template, self.specs) as (inputs, made, failure):
            if failure is not None:
                raise RuntimeError(f"the constants of {self.layer.name!r} cannot be made again: {failure}")
            values = _constant_leaves(_trace_graph(inputs, made, ("held",), ()))
        import keras

        values = [keras.ops.convert_to_numpy(v) for v in values]
        if [tuple(v.shape) for v in values] != [tuple(v.shape) for v in self.variables]:
            raise RuntimeError(f"the constants of {self.layer.name!r} changed shape")
        for variable, value in zip(self.variables, values):
            variable.assign(value)
        self._seen = now
        return True


def _short(exc, limit: int = 200) -> str:
    """The exception's message on one line, without terminal colour codes, cut at ``limit``."""
    import re

    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _is_variable(value) -> bool:
    import tensorflow as tf

    return isinstance(value, tf.Variable) or type(value).__name__ in ("Variable", "KerasVariable")


def _probe(shape: tuple, dtype, rng):
    import numpy as np

    shape = tuple(2 if i == 0 and d is None else (3 if d is None else d) for i, d in enumerate(shape))
    dtype = np.dtype(str(dtype))
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return np.ones(shape, dtype)
    return np.zeros(shape, dtype)


def _differs(c: Call, inner: List[Call], inner_in, inner_out, shapes, dtypes) -> str:
    """Why the calls, run one by one on a random batch, do not give the layer's output ("" if they do)."""
    import numpy as np

    rng = np.random.default_rng(0)
    batch = [_probe(shape, dtype, rng) for shape, dtype in zip(shapes, dtypes)]
    try:
        expected = [np.asarray(y) for y in c(batch)]
        values = dict(zip(inner_in, batch))
        for ic in inner:
            if not ic.is_input:
                for k, y in zip(ic.outputs, ic([values[k] for k in ic.inputs])):
                    values[k] = y
        got = [np.asarray(values[k]) for k in inner_out]
    except Exception as exc:
        return f"its calls, run one by one, fail ({type(exc).__name__}: {_short(exc)})"
    for a, b in zip(expected, got):
        if a.shape != b.shape:
            return f"its calls, run one by one, give shape {b.shape}, the layer {a.shape}"
        a64, b64 = a.astype("float64"), b.astype("float64")
        scale = max(float(np.max(np.abs(a64))) if a64.size else 0.0, 1.0)
        rtol, atol = (_OPEN_RTOL, _OPEN_ATOL * scale) if a.dtype.itemsize >= 4 else (1e-2, 1e-2 * scale)  # float16
        if not np.allclose(b64, a64, rtol=rtol, atol=atol):
            return "its calls, run one by one, do not give the layer's own output"
    return ""


#: Keras 3 operations that join tensors (``x + residual`` in a functional model makes an ``Add``
#: operation, not a layer): where one has two or more inputs made by the model, it is a column and
#: a default layer of the relevance engine, as a merging layer is: the output of a residual block
#: written with ``+``.
JOIN_OPERATIONS = frozenset({"Add", "Subtract", "Multiply", "Concatenate", "Maximum", "Minimum", "Average"})


class LayerGraph:
    """A model's calls in execution order, nested models inlined.

    Attributes
    ----------
    calls : list of Call
        Every call, input layers included, in an order that runs.
    inputs, outputs : list of keys
        The model's input and output tensors.
    names : list of str
        The layers' names in the flat graph (each once, input layers left out), in call order.

    Examples
    --------
    A data-augmentation block defined as its own ``Sequential`` is descended into:

    >>> import keras
    >>> augment = keras.Sequential([keras.layers.RandomFlip(name="flip"), keras.layers.Rescaling(0.5, name="scale")],
    ...                            name="augment")
    >>> inputs = keras.Input((4, 4, 1))
    >>> h = keras.layers.Conv2D(2, 3, name="conv")(augment(inputs))
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="flat")(h)))
    >>> graph = trace(model)
    >>> graph.names
    ['flip', 'scale', 'conv', 'flat', 'out']
    >>> graph.call("scale").scope
    ('augment',)
    >>> import numpy as np
    >>> values = graph.run(np.ones((2, 4, 4, 1), "float32"), keep=["conv"])
    >>> tuple(values["conv"].shape), tuple(values[graph.outputs[0]].shape)
    ((2, 2, 2, 2), (2, 3))
    """

    def __init__(self, calls: List[Call], inputs: List[Key], outputs: List[Key], input_dtypes: Sequence,
                 positions: Optional[Dict[str, tuple]] = None):
        self.calls = calls
        self.keras3 = False
        self._position = dict(positions or {})
        self.inputs = inputs
        self.outputs = outputs
        self.input_dtypes = list(input_dtypes)
        self._first: Dict[str, Call] = {}
        for c in calls:
            if not c.is_input and c.name not in self._first:
                self._first[c.name] = c
        self.names = list(self._first)
        #: name of an opened custom layer -> the tensor that stands for its output (trace(open_custom=True))
        self.aliases: Dict[str, Key] = {}
        #: name of a custom layer kept whole -> why its call() could not be followed
        self.closed: Dict[str, str] = {}
        #: name of an opened custom layer -> its class name
        self.alias_classes: Dict[str, str] = {}
        #: the constants that opened custom layers compute outside their inputs (see :meth:`refresh`)
        self.held: List[_Held] = []
        self.producer = {k: c for c in calls for k in c.outputs}
        self.consumers: Dict[Key, List[Call]] = {}
        for c in calls:
            for k in c.inputs:
                self.consumers.setdefault(k, []).append(c)

    def digraph(self, operations: bool = False):
        """The calls as a networkx DiGraph of names: an edge where one call's output feeds another.

        With ``operations=False`` (the default) the Keras 3 operations between layers (``x + 3.0``)
        are contracted away: their producers link to their consumers. Each layer is one node (its
        calls together); input layers are nodes too.
        """
        import networkx as nx  # maintained graph library, already a dependency (FlowGraph.to_networkx)

        g = nx.DiGraph()
        for c in self.calls:
            g.add_node(c.name)
        for c in self.calls:
            for k in c.inputs:
                p = self.producer.get(k)
                if p is not None and p.name != c.name:
                    g.add_edge(p.name, c.name)
        if not operations:
            for c in self.calls:
                if is_operation(c.layer) and c.name in g:
                    for a in list(g.predecessors(c.name)):
                        for b in list(g.successors(c.name)):
                            if a != b:
                                g.add_edge(a, b)
                    g.remove_node(c.name)
        return g

    def layer_order(self, operations: bool = False) -> List[str]:
        """The layers' names (input layers left out) in a topological order of :meth:`digraph`
        that follows Keras's own order among ties (``model.operations``, or ``model.layers``,
        nested models' layers at their model's place). With ``operations=True`` the Keras 3
        operations between layers (``x + residual``) are in it too."""
        import networkx as nx

        g = self.digraph(operations=operations)
        position = {n: self._position.get(n, (len(self._position),)) for n in g.nodes}
        keep = {c.name for c in self.calls if not c.is_input and (operations or not is_operation(c.layer))}
        try:
            order = list(nx.lexicographical_topological_sort(g, key=lambda n: position[n]))
        except nx.NetworkXUnfeasible:  # a layer called at two places (shared weights) closes a cycle
            order = self._first_call_order(position)
        return [n for n in order if n in keep]

    def _first_call_order(self, position: Dict[str, tuple]) -> List[str]:
        """The layers in the order of their first calls, in a topological order of the calls (which,
        unlike the layers of a model that calls one layer twice, have no cycle)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(range(len(self.calls)))
        made_by = {k: i for i, c in enumerate(self.calls) for k in c.outputs}
        for i, c in enumerate(self.calls):
            g.add_edges_from((made_by[k], i) for k in c.inputs if k in made_by)
        last = (len(self._position),)
        calls = nx.lexicographical_topological_sort(g, key=lambda i: (position.get(self.calls[i].name, last), i))
        return list(dict.fromkeys(self.calls[i].name for i in calls))

    def refresh(self) -> bool:
        """Make again the constants that opened custom layers compute outside their inputs (a
        position embedding of ``ops.arange``), where their weights have changed since they were
        made: the calls hold them in variables, so that a pass traced once reads them too. Returns
        whether any changed."""
        return any([held.refresh() for held in self.held])

    def joins(self) -> Dict[str, str]:
        """``{name: class name}`` of the Keras 3 operations that join two or more tensors made by the
        model (:data:`JOIN_OPERATIONS`), where a layer would be an ``Add`` or a ``Concatenate``."""
        out = {}
        for c in self.calls:
            if c.first and is_operation(c.layer) and c.class_name in JOIN_OPERATIONS:
                made = {k for k in c.inputs if k in self.inputs
                        or (k in self.producer and not self.producer[k].is_input)}
                if len(made) >= 2:
                    out[c.name] = c.class_name
        return out

    def call(self, name: str) -> Call:
        """The first call of the layer ``name`` (KeyError naming the layers if there is none)."""
        try:
            return self._first[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a layer of the model; its layers are {self.names}") from None

    def output_key(self, name: str) -> Key:
        """The tensor that stands for the layer's output: its first call's first output."""
        if name in self.aliases:
            return self.aliases[name]
        return self.call(name).outputs[0]

    def input_values(self, xs) -> list:
        """The model's inputs as tensors of the dtypes its ``Input`` layers declare."""
        xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
        if len(xs) != len(self.inputs):
            raise ValueError(f"x: the model has {len(self.inputs)} input(s), got {len(xs)} array(s)")
        if self.keras3:  # the tensors of Keras's backend (TensorFlow, JAX or PyTorch)
            from keras import ops

            return [ops.convert_to_tensor(a, dtype=dtype) for a, dtype in zip(xs, self.input_dtypes)]
        import tensorflow as tf

        out = []
        for a, dtype in zip(xs, self.input_dtypes):
            t = tf.convert_to_tensor(a)
            out.append(t if dtype is None or t.dtype == dtype else tf.cast(t, dtype))
        return out

    def run(self, xs, keep: Optional[Iterable] = None, on_output=None) -> Dict:
        """Run the model on a batch, call by call (inference mode).

        Parameters
        ----------
        xs : array or list of arrays
            The model's input(s).
        keep : iterable of layer names or keys, optional
            The values to return besides the model's outputs. None keeps every tensor (the
            relevance engine needs them all); otherwise a tensor is dropped as soon as the last
            call that reads it has run, so that a capture holds only what it asked for.
        on_output : callable, optional
            ``on_output(call, outputs) -> outputs``, to change a call's outputs as they are made
            (the relevance engine casts float16 maps to float32).

        Returns
        -------
        dict
            Key (and, for the names in ``keep``, layer name) to tensor.
        """
        self.refresh()
        values: Dict = {}
        for k, v in zip(self.inputs, self.input_values(xs)):
            values[k] = v
        wanted = None
        names = {}
        if keep is not None:
            wanted = set(self.outputs)
            for item in keep:
                key = self.output_key(item) if isinstance(item, str) else item
                wanted.add(key)
                if isinstance(item, str):
                    names[item] = key
            remaining = {k: len(cs) for k, cs in self.consumers.items()}
        for c in self.calls:
            if c.is_input:
                continue
            outs = c([values[k] for k in c.inputs])
            if on_output is not None:
                outs = on_output(c, outs)
            for k, y in zip(c.outputs, outs):
                values[k] = y
            if wanted is not None:
                for k in c.inputs:
                    remaining[k] -= 1
                    if remaining[k] == 0 and k not in wanted:
                        values.pop(k, None)
        for name, key in names.items():
            values[name] = values[key]
        return values


def trace(model, open_custom: bool = False) -> LayerGraph:
    """The flat graph of a built Sequential or functional model (Keras 2 or 3).

    With ``open_custom=True`` a layer of a custom class is replaced by the Keras layers and
    operations its ``call()`` makes, where they can be followed (Keras 3; :func:`_open_custom`):
    the relevance engine then sees inside a Transformer block written as a layer class. The layer's
    name still stands for its output (:attr:`LayerGraph.aliases`), and :attr:`LayerGraph.closed`
    says why each one kept whole was.

    Raises
    ------
    GraphError
        For a model without a layer graph (a subclassed model, or one not yet built).
    """
    try:
        outputs = list(getattr(model, "outputs", None) or [])
        inputs = list(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError, RuntimeError):
        outputs, inputs = [], []
    if not outputs or not inputs or not all(_is_symbolic(t) for t in inputs + outputs):
        raise GraphError("the model has no inputs/outputs graph (a subclassed or unbuilt model)")
    opened: Optional[Dict] = {} if open_custom else None
    calls = _inline(_trace_graph(inputs, outputs, (), ()), opened=opened)
    _name(calls)
    keras3 = is_keras3(model)
    dtypes = []
    for t in inputs:
        if keras3:
            dtypes.append(str(t.dtype))
            continue
        try:
            import tensorflow as tf

            dtypes.append(tf.as_dtype(t.dtype))
        except (TypeError, ValueError):  # pragma: no cover - an exotic input dtype: left as given
            dtypes.append(None)
    by_layer = {id(c.layer): c.name for c in calls}
    positions = {by_layer[i]: p for i, p in _positions(model).items() if i in by_layer}
    graph = LayerGraph(calls, [_key(t, ()) for t in inputs], [_key(t, ()) for t in outputs], dtypes, positions)
    graph.keras3 = keras3
    for c, reason, *held in (opened or {}).values():
        if held:  # the constants of an opened layer's call(), made again when its weights change
            graph.held.extend(held)
        elif reason:
            graph.closed[c.name or c.layer.name] = reason
        else:
            name = c.layer.name
            if name in graph._first or name in graph.aliases:  # pragma: no cover - a name taken twice
                name = "/".join(c.scope + (c.layer.name,))
            graph.aliases.setdefault(name, c.outputs[0])
            graph.alias_classes.setdefault(name, c.class_name)
    return graph


def _positions(model, prefix: tuple = (), depth: int = 0) -> Dict[int, tuple]:
    """Each layer's place in ``model.operations`` (a Keras 3 functional model's layers and
    operations, in the order they were called) or else ``model.layers``, a nested model's layers
    after their model's index."""
    out: Dict[int, tuple] = {}
    try:
        items = list(getattr(model, "operations", None) or getattr(model, "layers", []))
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - an exotic model's property
        items = list(getattr(model, "layers", []))
    for i, layer in enumerate(items):
        out.setdefault(id(layer), prefix + (i,))
        if depth < 32 and is_model(layer):
            for k, v in _positions(layer, prefix + (i,), depth + 1).items():
                out.setdefault(k, v)
    return out


def _name(calls: List[Call]) -> None:
    """Each call's ``name`` and ``first``: a layer's own name where no other layer has it."""
    layers: Dict[int, List[Call]] = {}
    for c in calls:
        layers.setdefault(id(c.layer), []).append(c)
    by_name: Dict[str, set] = {}
    for cs in layers.values():
        by_name.setdefault(cs[0].layer.name, set()).add(id(cs[0].layer))
    for cs in layers.values():
        layer = cs[0].layer
        qualified = "/".join(cs[0].scope + (layer.name,))
        name = layer.name if len(by_name[layer.name]) == 1 else qualified
        for i, c in enumerate(cs):
            c.name = name
            c.first = i == 0
