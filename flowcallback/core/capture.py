"""Capture stage: layer selection, branch layout and per-layer activations (eager Keras).

Activations are computed in the user's process, batch by batch, with the model in inference mode
(``training=False``), and embedded batch by batch (:mod:`flowcallback.core.embed`) so that a layer's
raw maps for the whole held-out set are never held at once.

LRP relevance is computed by the engines in :mod:`flowcallback.core.lrp` (the native engine, and
iNNvestigate in a worker process, :class:`flowcallback.core.lrp.worker.LRPWorker`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from flowcallback.core import layergraph
from flowcallback.core._inputs import Inputs, call_batch, model_batch
from flowcallback.core._keras import inbound_layers
from flowcallback.core._notes import name_list
from flowcallback.core.aggregate import LayerClassMeans
from flowcallback.core.embed import Embedder

__all__ = [
    "SKIPPED_LAYER_TYPES",
    "MAX_COLUMNS",
    "ColumnChoice",
    "choose_columns",
    "block_outputs",
    "layer_types",
    "select_layers",
    "branch_layout",
    "capture_activations",
    "text_anchor",
    "anchored_batches",
]

#: Layer types that are never columns by default: inputs, layers that are the identity at inference
#: time (dropout and noise, the Random* augmentation layers), reshapes and padding (a permutation
#: of the same values, or zeros added around them, keeps the same cosine neighbourhoods), and the
#: lookups that turn text or categories into indices (token ids name words: the cosine between two
#: vectors of ids says nothing of the texts, and no relevance reaches them past the Embedding).
SKIPPED_LAYER_TYPES = frozenset(
    {
        "InputLayer",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
        "ActivityRegularization",
        "StochasticDepth",
        "Identity",
        "Flatten",
        "Reshape",
        "Permute",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "TextVectorization",
        "StringLookup",
        "IntegerLookup",
        "Hashing",
    }
)

#: By default a model with more eligible layers than this shows its block outputs, at most this many.
MAX_COLUMNS = 24

#: One-input, element-wise layers: a block output followed by one of these is shown by it instead.
_ELEMENTWISE_STEPS = frozenset({"BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "ELU",
                                "PReLU", "Softmax", "Rescaling", "Normalization", "LayerScale"})


#: Keras 3 operations that join tensors (``x + residual``): columns as merging layers are
#: (:meth:`flowcallback.core.layergraph.LayerGraph.joins`).
JOIN_OPERATIONS = layergraph.JOIN_OPERATIONS


def _skipped(class_name: str) -> bool:
    return class_name in SKIPPED_LAYER_TYPES or class_name.startswith("Random")


@dataclass(frozen=True)
class ColumnChoice:
    """Which layers are the diagram's columns, and why.

    Attributes
    ----------
    names : tuple of str
        The chosen layers, in a topological order of the model's layer graph.
    rule : {"every layer", "block outputs", "all", "list"}
        ``"every layer"``: the default for a model with at most :data:`MAX_COLUMNS` eligible layers;
        ``"block outputs"``: the default above it; ``"all"`` and ``"list"``: ``layers="all"`` and a list.
    eligible : int
        How many layers could be columns (all but :data:`SKIPPED_LAYER_TYPES`, and the Keras 3
        operations that join tensors).
    description : str
        One sentence for the page and ``run.json``.
    """

    names: Tuple[str, ...]
    rule: str
    eligible: int
    description: str


def _graph(model):
    """The model's flat layer graph, or None for a model without one (a subclassed model)."""
    try:
        return layergraph.trace(model)
    except layergraph.GraphError:
        return None


def _layer_classes(model, graph=None) -> Dict[str, str]:
    """Every layer's class name, by its name in the flat graph (``model.layers`` without a graph)."""
    if graph is not None:
        return {c.name: c.class_name for c in graph.calls if c.first}
    return {layer.name: type(layer).__name__ for layer in model.layers}


def layer_types(model, names: Sequence[str]) -> Dict[str, str]:
    """The class name of each named layer (nested layers included).

    Examples
    --------
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> layer_types(model, ["d"])
    {'d': 'Dense'}
    """
    classes = _layer_classes(model, _graph(model))
    return {n: classes[n] for n in names}


def _ordered_layers(model, graph) -> List[str]:
    """Every layer and Keras 3 operation (input layers included) in a topological order."""
    if graph is None:  # no readable graph (a subclassed model): Keras's order
        return [layer.name for layer in model.layers]
    order = graph.layer_order(operations=True)
    inputs = [c.name for c in graph.calls if c.is_input and c.first]
    return inputs + order


def _eligible(ordered: Sequence[str], classes: Mapping[str, str], joins: Mapping[str, str], graph) -> List[str]:
    """The layers that may be columns by default: all but :data:`SKIPPED_LAYER_TYPES`, Keras 3
    operations only where they join tensors (:meth:`~flowcallback.core.layergraph.LayerGraph.joins`)."""
    operations = set() if graph is None else {c.name for c in graph.calls if layergraph.is_operation(c.layer)}
    return [n for n in ordered if not _skipped(classes.get(n, "")) and (n not in operations or n in joins)]


def choose_columns(model, layers=None, max_columns: int = MAX_COLUMNS) -> ColumnChoice:
    """The layers to analyse: by default every layer of a small model, the block outputs of a deep one.

    Parameters
    ----------
    model : keras.Model
        A built Sequential, functional or subclassed model; nested Sequential or functional
        blocks are descended into (their layers by their own names, or ``"block/name"`` where a
        name is taken twice).
    layers : None, "all" or sequence of str
        None: every eligible layer (all but :data:`SKIPPED_LAYER_TYPES`; a Keras 3 operation
        that joins tensors, ``x + residual``, is one, :data:`JOIN_OPERATIONS`) when there are at
        most ``max_columns`` of them, as for LeNet5; above that, the block outputs
        (:func:`block_outputs`). ``"all"``: every eligible layer, however many. A list: exactly
        those layers, in model order; Keras 3 operations are named as ``model.summary()`` shows
        them (``"add_3"``).
    max_columns : int, default=24

    Returns
    -------
    ColumnChoice

    Raises
    ------
    ValueError
        For an unknown or repeated layer name, naming the argument ``layers``.

    Examples
    --------
    >>> import keras
    >>> inputs = keras.Input((8,))
    >>> h = inputs
    >>> for i in range(40):
    ...     h = keras.layers.Dense(4, name=f"d{i}")(h)
    >>> choice = choose_columns(keras.Model(inputs, h))
    >>> choice.rule, len(choice.names), choice.names[-1]
    ('block outputs', 24, 'd39')
    >>> choose_columns(keras.Model(inputs, h), "all").rule
    'all'
    """
    graph = _graph(model)
    ordered = _ordered_layers(model, graph)
    classes = _layer_classes(model, graph)
    eligible = _eligible(ordered, classes, {} if graph is None else graph.joins(), graph)
    if isinstance(layers, str) and layers == "all":
        return ColumnChoice(tuple(eligible), "all", len(eligible),
                            f"every layer ({len(eligible)}) but inputs, identities at inference (dropout, noise, "
                            "Random* augmentation), reshapes, padding and text lookups (and Keras operations other "
                            "than joins), as layers='all' asks")
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise ValueError(f"layers: expected None, 'all' or a list of layer names, got {layers!r}")
        unknown = [n for n in layers if n not in classes]
        if unknown:
            blocks = _nested_outputs(model)
            hint = "".join(f"; {n!r} is a nested model (a block such as a transfer-learning base), whose layers are "
                           f"columns by their own names: its output is its layer {blocks[n]!r}"
                           for n in unknown if n in blocks)
            raise ValueError(f"layers: unknown layer name(s) {unknown}{hint}; the model's layers are {ordered}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers: each layer name may appear once, got {list(layers)}")
        chosen = set(layers)
        return ColumnChoice(tuple(n for n in ordered if n in chosen), "list", len(eligible),
                            f"the {len(chosen)} layers given by layers=")
    if len(eligible) <= max_columns or graph is None:
        return ColumnChoice(tuple(eligible), "every layer", len(eligible), f"every layer ({len(eligible)})")
    names = block_outputs(graph, eligible, max_columns)
    if len(names) < max_columns // 2:  # few blocks (keras.io's small Xception): other layers fill the columns
        blocks = len(names)
        names = _spread(names, eligible, max_columns)
        return ColumnChoice(tuple(names), "block outputs", len(eligible),
                            f"{len(names)} of {len(eligible)} layers: the {blocks} block outputs (layers that every "
                            "path from the input to the output goes through) and other layers spread over the depth "
                            "(layers='all' gives every layer)")
    return ColumnChoice(tuple(names), "block outputs", len(eligible),
                        f"{len(names)} block outputs of {len(eligible)} layers: layers that every path from the "
                        "input to the output goes through, spread over the depth, keeping each resolution "
                        "stage's last block and the last hidden layers (layers='all' gives every layer)")


def _spread(kept: Sequence[str], eligible: Sequence[str], max_columns: int) -> List[str]:
    """``kept`` and, up to ``max_columns`` in all, other ``eligible`` layers taken evenly over the
    depth; in the order of ``eligible``.

    >>> _spread(["b3", "b7"], [f"b{i}" for i in range(10)], 5)
    ['b1', 'b3', 'b5', 'b7', 'b9']
    """
    keep = set(kept)
    rest = [n for n in eligible if n not in keep]
    free = min(max_columns - len(keep), len(rest))
    if free > 0:
        step = len(rest) / free
        keep.update(rest[min(len(rest) - 1, int((i + 1) * step) - 1)] for i in range(free))
    return [n for n in eligible if n in keep]


def _nested_outputs(model, depth: int = 0) -> Dict[str, str]:
    """``{name of a nested model: name of the layer that makes its (first) output}``, at any depth."""
    out: Dict[str, str] = {}
    for layer in getattr(model, "layers", ()) if depth < 32 else ():
        if not layergraph.is_model(layer):
            continue
        try:
            made = layer.outputs[0]._keras_history[0]
        except (AttributeError, IndexError, TypeError):
            continue
        while layergraph.is_model(made):  # its output is a nested model's own
            try:
                made = made.outputs[0]._keras_history[0]
            except (AttributeError, IndexError, TypeError):
                break
        out[layer.name] = made.name
        out.update(_nested_outputs(layer, depth + 1))
    return out


def block_outputs(graph: layergraph.LayerGraph, eligible: Sequence[str], max_columns: int = MAX_COLUMNS) -> List[str]:
    """The layers of a deep model that make legible columns: its block outputs.

    A block output is a layer that every path from the model's input to its output passes through
    (a dominator of the output in the layer graph): the output of a ResNet block after its ``Add``,
    a DenseNet transition, an Inception module's concatenation, every layer of a chain. Where there
    are more than ``max_columns`` of them, the last block of each resolution stage (the layer after
    which the spatial size changes) and the last three are kept, and the others are taken evenly
    over the depth.

    Parameters
    ----------
    graph : LayerGraph
    eligible : sequence of str
        The layers that may be columns, in topological order.
    max_columns : int

    Returns
    -------
    list of str
        In topological order.
    """
    import networkx as nx

    g = graph.digraph(operations=True)
    source = ("source",)
    for k in graph.inputs:
        g.add_edge(source, graph.producer[k].name)
    out_name = graph.producer[graph.outputs[0]].name
    idom = nx.immediate_dominators(g, source)
    chain = set()
    node = out_name
    while node != source and node in idom:
        chain.add(node)
        if idom[node] == node:
            break
        node = idom[node]
    shapes = {c.name: (c.shapes[0] if c.shapes else ()) for c in graph.calls if c.first}
    classes = {c.name: c.class_name for c in graph.calls if c.first}
    blocks = [n for n in eligible if n in chain]
    # a block output followed by an element-wise step (its normalisation, its activation) is the
    # same block: the step after it stands for it (conv1_conv, conv1_bn, conv1_relu -> conv1_relu)
    blocks = [a for a, b in zip(blocks, blocks[1:] + [None])
              if b is None or not (classes.get(b) in _ELEMENTWISE_STEPS and shapes.get(a) == shapes.get(b)
                                   and g.has_edge(a, b) and g.out_degree(a) == 1)]
    if len(blocks) <= max_columns:
        return blocks

    def resolution(n):
        s = shapes.get(n, ())
        return tuple(s[1:-1]) if len(s) > 2 else ()

    keep = set(blocks[-3:])
    for a, b in zip(blocks, blocks[1:]):
        if resolution(a) != resolution(b) and resolution(a):
            keep.add(a)  # the last block at this resolution
    if len(keep) > max_columns:  # more stages than columns: the deepest stages' ends and the last layers
        keep = set(sorted(keep, key=blocks.index)[-max_columns:])
    return _spread([n for n in blocks if n in keep], blocks, max_columns)


#: Seconds that one column costs a snapshot whatever the number of samples, and per 1,000 held-out
#: samples (kNN, MCL, match, flows, metrics, projection, page; activations and LRP together), on 2
#: cores, for the set-up warning of ``layers="all"``: the first from ``benchmarks/column_cost.py``
#: (an outside probe found 200 samples of 27 columns costing 5 times the estimate without it), the
#: two together 0.6 s at 1,000 samples, as ``benchmarks/real_models.py`` measured on ResNet50
#: (docs/performance.md).
SECONDS_PER_COLUMN = 0.15
SECONDS_PER_COLUMN_PER_1000 = 0.45


def cost_note(n_columns: int, n_samples: int) -> str:
    """One sentence estimating what ``n_columns`` columns cost per snapshot.

    Examples
    --------
    >>> cost_note(176, 1000)
    'Each snapshot clusters and draws every column: about 106 s on 2 cores for 1000 samples, besides ...'
    >>> cost_note(27, 200)[:80]
    'Each snapshot clusters and draws every column: about 6 s on 2 cores for 200 samp'
    """
    seconds = n_columns * (SECONDS_PER_COLUMN + SECONDS_PER_COLUMN_PER_1000 * max(n_samples, 1) / 1000)
    return (f"Each snapshot clusters and draws every column: about {seconds:.0f} s on 2 cores for {n_samples} "
            "samples, besides the forward and LRP passes (docs/performance.md)")


def select_layers(model, layers=None) -> List[str]:
    """Names of the layers to analyse, in a topological order of the model's layer graph.

    As :func:`choose_columns`, names only.

    Parameters
    ----------
    model : keras.Model
        A built Sequential or Functional model.
    layers : None, "all" or sequence of str, optional
        See :func:`choose_columns`.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For an unknown or repeated layer name, naming the argument ``layers``.
    """
    return list(choose_columns(model, layers).names)


def _layer_graph(model):
    """The model's layers (and Keras 3 operations) as a networkx DiGraph (an edge where one's
    output feeds another): ``x + residual`` is the join of a residual block, as an ``Add`` layer is."""
    graph = _graph(model)
    if graph is not None:
        return graph.digraph(operations=True)
    import networkx as nx  # maintained graph library, already a dependency (FlowGraph.to_networkx)

    g = nx.DiGraph()
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        g.add_node(layer.name)
        for src in inbound_layers(layer):
            if getattr(src, "name", None) in names and src.name != layer.name:
                g.add_edge(src.name, layer.name)
    return g


def branch_layout(model, layer_names: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """How a branching model's layers were laid out as columns.

    The columns follow one topological order of the selected layers (Keras's own layer order for
    Functional models). In a model with branches (a ResNet's ``Add``, an Inception block's
    ``Concatenate``), two consecutive columns may sit on parallel branches: the flows between them
    still link the clusters of the same samples, but no data goes from one layer to the other.

    Parameters
    ----------
    model : keras.Model
    layer_names : sequence of str
        The selected layers, in column order.

    Returns
    -------
    notes : list of str
        One note for the whole diagram; empty when every column feeds the next (a Sequential
        model, or a branching model's block outputs).
    column_notes : dict of layer name to str
        For each column not fed (directly or not) by the column before it: which one it is parallel to.

    Examples
    --------
    Two parallel Dense layers joined by an ``Add``, as in a residual block:

    >>> import tensorflow as tf
    >>> inputs = tf.keras.Input((4,))
    >>> left = tf.keras.layers.Dense(4, name="left")(inputs)
    >>> right = tf.keras.layers.Dense(4, name="right")(inputs)
    >>> joined = tf.keras.layers.Add(name="add")([left, right])
    >>> model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="out")(joined))
    >>> notes, column_notes = branch_layout(model, select_layers(model))
    >>> notes
    ['Branching model (branches split at ...; join at add (Add)). Columns follow one topological order ...']
    >>> column_notes
    {'right': 'parallel branch: not fed by left'}
    """
    try:
        import networkx as nx

        g = _layer_graph(model)
    except Exception:  # an exotic model whose graph cannot be read: no layout note, nothing else changes
        return [], {}
    forks = [n for n in g.nodes if g.out_degree(n) > 1]
    joins = [n for n in g.nodes if g.in_degree(n) > 1]
    if not forks and not joins:
        return [], {}
    column_notes = {}
    for a, b in zip(layer_names, layer_names[1:]):
        if a in g and b in g and not nx.has_path(g, a, b):
            column_notes[b] = f"parallel branch: not fed by {a}"
    if not column_notes:  # every column feeds the next (a deep model's block outputs): nothing to explain
        return [], {}
    classes = _layer_classes(model, _graph(model))
    # a model with many branch points (DenseNet121: 58 joins) is summarised: a note stays one sentence
    join_text = name_list(f"{n} ({classes.get(n, '?')})" for n in joins) or "none"
    n_inputs = len(getattr(model, "inputs", None) or [])
    split = f"branches split at {name_list(forks) or 'the input'}"
    if n_inputs > 1:
        split = f"branches start at its {n_inputs} inputs" + (f" and split at {name_list(forks)}" if forks else "")
    note = (
        f"Branching model ({split}; join at {join_text}). "
        "Columns follow one topological order of the selected layers, left to right; where two consecutive "
        "columns are parallel branches (marked on the column), the flows between them link the clusters of the "
        "same samples, not a data path."
    )
    return [note], column_notes


def shared_calls(model, layer_names: Sequence[str]) -> Dict[str, str]:
    """A note for each selected layer that the model calls at more than one place (shared weights,
    a siamese encoder called on two inputs): its column shows its first call's output.

    Examples
    --------
    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> shared = keras.layers.Dense(4, name="shared")
    >>> h = shared(keras.layers.Dense(4, name="mid")(shared(inputs)))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    >>> shared_calls(model, ["shared", "mid", "out"])
    {'shared': 'called at 2 places (shared weights): the column shows its first call'}
    """
    graph = _graph(model)
    if graph is None:
        return {}
    counts: Dict[str, int] = {}
    for c in graph.calls:
        if not c.is_input:
            counts[c.name] = counts.get(c.name, 0) + 1
    return {n: f"called at {counts[n]} places (shared weights): the column shows its first call"
            for n in layer_names if counts.get(n, 0) > 1}


def operation_notes(model, layer_names: Sequence[str]) -> Dict[str, str]:
    """A note for each selected Keras 3 operation (``x + residual`` in a functional model): what it
    joins, since its automatic name (``add_3``) says little of where it is in the model.

    Examples
    --------
    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> h = keras.layers.Dense(4, name="d1")(inputs)
    >>> h = h + keras.layers.Dense(4, name="d2")(h)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    >>> name = select_layers(model)[2]
    >>> operation_notes(model, select_layers(model))[name]
    'Keras operation Add (no layer) of d1, d2'
    """
    graph = _graph(model)
    if graph is None:
        return {}
    notes = {}
    for name in layer_names:
        try:
            c = graph.call(name)
        except KeyError:
            continue
        if not layergraph.is_operation(c.layer):
            continue
        sources = [graph.producer[k].name for k in dict.fromkeys(c.inputs) if k in graph.producer]
        notes[name] = f"Keras operation {c.class_name} (no layer)" + (f" of {name_list(sources)}" if sources else "")
    return notes


def constant_layers(model) -> Dict[str, str]:
    """The layers whose output is the same whatever the input, and the layers that reach the
    model's output only through them (their output changes no prediction, and no relevance reaches
    them): ``{name: why}``.

    A ``LayerNormalization`` over one value (the last axis of a sequence of one feature, as
    keras.io's timeseries Transformer normalises its attention's output) subtracts the value from
    itself: its output is its offset ``beta`` for every input.

    Examples
    --------
    >>> import keras
    >>> inputs = keras.Input((10, 1))
    >>> h = keras.layers.Dense(1, name="proj")(inputs)
    >>> h = keras.layers.LayerNormalization(name="norm")(h)
    >>> h = keras.layers.Add(name="res")([h, inputs])
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))
    >>> for name, why in constant_layers(model).items():
    ...     print(name, "->", why)
    norm -> its output is its offset (beta) for every input: it normalises over one value (axis -1 has size 1)
    proj -> reaches the output only through norm, whose output is the same for every input
    """
    graph = _graph(model)
    if graph is None:
        return {}
    constant: Dict[str, str] = {}
    for c in graph.calls:
        if not c.first or c.class_name != "LayerNormalization" or not c.shapes:
            continue
        axes = getattr(c.layer, "axis", -1)
        axes = [axes] if isinstance(axes, int) else list(axes)
        try:
            sizes = [c.shapes[0][a] for a in axes]
        except (IndexError, TypeError):
            continue
        if sizes and all(size == 1 for size in sizes):
            where = ", ".join(str(a) for a in axes)
            constant[c.name] = (f"its output is its offset (beta) for every input: it normalises over one value "
                                f"(axis {where} has size 1)")
    if not constant:
        return {}
    import networkx as nx  # maintained graph library, already a dependency

    whole = graph.digraph(operations=True)
    out = graph.producer[graph.outputs[0]].name
    g = whole.copy()
    g.remove_nodes_from(constant)
    reaching = nx.ancestors(g, out) | {out} if out in g else set()
    inputs = {c.name for c in graph.calls if c.is_input}
    cut = {}
    for n in graph.layer_order(operations=True):
        if n in g and n not in reaching and n not in inputs:
            via = [m for m in constant if m in nx.descendants(whole, n)][:1] or list(constant)[:1]
            cut[n] = f"reaches the output only through {via[0]}, whose output is the same for every input"
    return {**constant, **cut}


def _forward_fn(model, layer_names):
    """A function batch -> (list of layer outputs, model output, its logits or None), in inference mode.

    One pass through the model's flat graph (:mod:`flowcallback.core.layergraph`) gives every
    selected layer's output, nested layers included; each other tensor is dropped once the layers
    that read it have run.
    """
    graph = _graph(model)
    if graph is not None:
        out_key = graph.outputs[0]

        def run(xb):
            values = graph.run(model_batch(xb), keep=layer_names)
            return [np.asarray(values[n]) for n in layer_names], np.asarray(values[out_key]), _logits(values[out_key])

        return run
    # No layer graph (a subclassed model): record each selected layer's output while the model
    # runs its own call().
    return _hooked_forward(model, layer_names)


def _hooked_forward(model, layer_names):
    """Forward pass of a model without a layer graph, recording the selected layers' outputs.

    Each selected layer's ``call`` is wrapped for the duration of one eager call of the model
    (an instance attribute shadowing the method), then restored: the model's own ``call`` decides
    the data path, so skip connections and reused layers are followed as they are. A layer called
    more than once per pass reports its last call.
    """
    layers = {n: model.get_layer(n) for n in layer_names}

    def run(xb):
        got = {}
        for name, layer in layers.items():
            original = layer.call

            def recording(*args, _original=original, _name=name, **kwargs):
                out = _original(*args, **kwargs)
                got[_name] = out
                return out

            layer.call = recording
        try:
            out = model(call_batch(xb), training=False)
        finally:
            for layer in layers.values():
                try:
                    del layer.call  # the class's method again
                except AttributeError:  # pragma: no cover - tracking wrappers that refuse deletion
                    pass
        missing = [n for n in layer_names if n not in got]
        if missing:
            raise ValueError(f"layers: {missing} are not called by the model's call(); choose layers it uses")
        return [np.asarray(got[n]) for n in layer_names], np.asarray(out), _logits(out)

    return run


def _logits(output) -> Optional[np.ndarray]:
    """The logits behind a softmax or sigmoid output, where Keras keeps them on the tensor.

    Keras (3 on TensorFlow, and 2) attaches them as ``_keras_logits`` and its losses read them
    instead of the clipped probabilities; :func:`flowcallback.core.outputs.held_out_loss` needs
    them to give the loss ``evaluate`` gives when the model is confidently wrong.
    """
    logits = getattr(output, "_keras_logits", None)
    return None if logits is None else np.asarray(logits)


def text_anchor(model, x) -> Optional[int]:
    """The held-out text that the model turns into the longest token sequence, or None.

    A ``TextVectorization`` without ``output_sequence_length`` pads each batch to its own longest
    text, so that two batches' layer outputs differ in length and cannot be reduced together.
    :func:`anchored_batches` adds this sample to every batch: each batch is then padded to the
    length of the whole set, as if the set were one batch, and the model's outputs for the other
    samples are those it gives them in one batch. None where ``x`` is not text, or where the layer
    that reads it does not give a 2-D sequence of integer ids (a fixed-size ``multi_hot`` output).
    Of several inputs (:class:`~flowcallback.core._inputs.Inputs`, in the model's order), the first
    that holds text is read.

    Examples
    --------
    >>> import keras
    >>> tv = keras.layers.TextVectorization()
    >>> tv.adapt(["a b c d", "b c", "a"])
    >>> model = keras.Sequential([tv, keras.layers.Embedding(8, 2)])
    >>> model(np.array(["a"])).shape[0]
    1
    >>> text_anchor(model, np.array(["a b", "d c b a", "c"]))
    1
    """
    position = 0
    if isinstance(x, Inputs):  # several inputs (in the model's order): the first that holds text
        texts = [i for i, a in enumerate(x.arrays) if a.dtype.kind == "U"]
        if not texts:
            return None
        position, x = texts[0], x.arrays[texts[0]]
    x = np.asarray(x)
    if x.dtype.kind != "U" or not len(x):
        return None
    graph = _graph(model)
    if graph is None or len(graph.inputs) <= position:
        return None
    readers = [c for c in graph.calls if graph.inputs[position] in c.inputs and not c.is_input]
    if len(readers) != 1:
        return None
    lengths = []
    try:
        import tensorflow as tf

        for start in range(0, len(x), 1024):  # the ids of 1,024 texts at a time: only their lengths are kept
            ids = np.asarray(readers[0]([tf.constant(x[start:start + 1024])])[0])
            if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
                return None
            lengths.append(np.count_nonzero(ids, axis=1))
    except Exception:  # a reader that cannot take the texts this way: batches as they come
        return None
    return int(np.argmax(np.concatenate(lengths)))


def anchored_batches(x, batch_size: int, anchor: Optional[int] = None):
    """``(start, batch, n)`` over ``x`` by ``batch_size``: ``batch`` is ``x[start:start + n]``, and
    the sample ``anchor`` after them where one is given (:func:`text_anchor`); a batch's results
    are then its first ``n`` rows.

    >>> [(s, b.tolist(), n) for s, b, n in anchored_batches(np.arange(5), 2, anchor=4)]
    [(0, [0, 1, 4], 2), (2, [2, 3, 4], 2), (4, [4, 4], 1)]
    """
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        n = len(batch)
        if anchor is not None:
            if isinstance(x, Inputs):  # several inputs: the anchor sample of each
                batch = Inputs([np.concatenate([b, a[anchor:anchor + 1]], axis=0)
                                for b, a in zip(batch.arrays, x.arrays)], x.names)
            else:
                batch = np.concatenate([batch, x[anchor:anchor + 1]], axis=0)
        yield start, batch, n


def capture_activations(
    model, x, layer_names: Sequence[str], *, batch_size: int = 256, progress=None, embed_options: Optional[dict] = None,
    class_means: Optional[LayerClassMeans] = None, return_logits: bool = False,
):
    """Run the held-out set through the model and embed every selected layer's activations.

    Parameters
    ----------
    model : keras.Model
    x : ndarray of shape (n_samples, ...), or Inputs
        The held-out inputs; for a model with several inputs, an
        :class:`~flowcallback.core._inputs.Inputs` in the model's input order.
    layer_names : sequence of str
    batch_size : int, default=256
    progress : callable, optional
        Called with the number of samples done after each batch.
    embed_options : dict, optional
        Keyword arguments of :class:`~flowcallback.core.embed.Embedder` (``dim``, ``reduce``...).
    class_means : LayerClassMeans, optional
        Also accumulate the per-class mean of each unit of every selected layer's raw output
        (:mod:`flowcallback.core.aggregate`), from the same batches: built with the held-out
        labels, it holds ``{layer: (n_classes, units)}`` in ``class_means.result()`` afterwards.
        Nothing else changes (the return value is the same).
    return_logits : bool, default=False
        Also return the logits behind a softmax or sigmoid output (for the held-out loss).

    Returns
    -------
    embeddings : dict of layer name to ndarray (n_samples, n_features + 1)
        Unit vectors (see :func:`flowcallback.core.embed.embed`); maps with NaN or infinite values
        are flagged (``nonfinite="flag"``), not refused.
    outputs : ndarray of shape (n_samples, n_outputs)
        The model's output (class probabilities).
    logits : ndarray of shape (n_samples, n_outputs) or None
        Only with ``return_logits``: the output's logits where Keras keeps them on the output
        tensor (a softmax or sigmoid output on TensorFlow), else None.
    """
    run = _forward_fn(model, list(layer_names))
    if len(x) and _per_sample_bytes(model, layer_names) is None:  # no layer graph: learn the sizes from one sample
        maps, _, _ = run(x[:1])
        batch_size = max(8, min(batch_size, BATCH_BYTES // max(sum(m.nbytes for m in maps), 1)))
    # A map with NaN/inf values (a diverging model) is flagged, not fatal: the clustering stage sets
    # those samples apart in one cluster of their own and notes it on the column.
    opts = dict({"nonfinite": "flag"}, **(embed_options or {}))
    emb = {n: Embedder(n, **opts) for n in layer_names}
    batch_size = _bounded_batch(model, layer_names, batch_size)
    outs, logits = [], []
    for start, batch, size in anchored_batches(x, batch_size, text_anchor(model, x)):
        maps, out, batch_logits = run(batch)
        for n, m in zip(layer_names, maps):
            emb[n].add(m[:size])
            if class_means is not None:
                class_means.add(n, m[:size], start)
        outs.append(out[:size])
        logits.append(None if batch_logits is None else batch_logits[:size])
        if progress is not None:
            progress(min(start + batch_size, len(x)))
    embeddings, outputs = {n: e.result() for n, e in emb.items()}, np.concatenate(outs, axis=0)
    if not return_logits:
        return embeddings, outputs
    whole = np.concatenate(logits, axis=0) if logits and all(b is not None for b in logits) else None
    return embeddings, outputs, (whole if whole is not None and whole.shape == outputs.shape else None)


#: A capture batch holds every selected layer's maps at once; this bounds their total size.
BATCH_BYTES = 64 << 20


def _per_sample_bytes(model, layer_names) -> Optional[int]:
    """Bytes of one sample's maps over the selected layers (float32), or None without a layer graph."""
    graph = _graph(model)
    if graph is None:  # a subclassed model's layers have no symbolic output
        return None
    per_sample = 0
    for n in layer_names:
        shapes = graph.call(n).shapes
        shape = shapes[0] if shapes else (None,)
        per_sample += 4 * int(np.prod([d for d in shape[1:] if d is not None] or [1]))
    return per_sample


def _bounded_batch(model, layer_names, batch_size: int) -> int:
    """Shrink the batch so that one batch of all selected layers' maps stays under BATCH_BYTES."""
    per_sample = _per_sample_bytes(model, layer_names)
    if per_sample is None:  # capture_activations measures one sample instead
        return int(batch_size)
    return int(max(8, min(batch_size, BATCH_BYTES // max(per_sample, 1))))
