"""Capture stage: layer selection, branch layout and per-layer activations (eager Keras).

Activations are computed in the user's process, batch by batch, with the model in inference mode
(``training=False``), and embedded batch by batch (:mod:`flowcallback.core.embed`) so that a layer's
raw maps for the whole held-out set are never held at once.

LRP relevance is computed by the engines in :mod:`flowcallback.core.lrp` (the native engine, and
iNNvestigate in a worker process, :class:`flowcallback.core.lrp.worker.LRPWorker`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from flowcallback.core._keras import inbound_layers, layer_output_shape, model_class
from flowcallback.core._notes import name_list
from flowcallback.core.aggregate import LayerClassMeans
from flowcallback.core.embed import Embedder

__all__ = [
    "SKIPPED_LAYER_TYPES",
    "select_layers",
    "branch_layout",
    "capture_activations",
]

#: Layer types left out by default: inputs, layers that are the identity at inference time, and
#: reshapes (a permutation of the same values has exactly the same cosine neighbourhoods).
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
        "Flatten",
        "Reshape",
        "Permute",
    }
)


def _topological(model) -> list:
    """The model's layers in a topological order of its layer graph, Keras's order among ties."""
    layers = list(model.layers)
    try:
        import networkx as nx

        g = _layer_graph(model)
        index = {layer.name: i for i, layer in enumerate(layers)}
        order = list(nx.lexicographical_topological_sort(g, key=index.get))
        by_name = {layer.name: layer for layer in layers}
        return [by_name[n] for n in order]
    except Exception:  # no readable graph (a subclassed model): Keras's order
        return layers


def select_layers(model, layers: Optional[Sequence[str]] = None) -> List[str]:
    """Names of the layers to analyse, in a topological order of the model's layer graph.

    Parameters
    ----------
    model : keras.Model
        A built Sequential or Functional model.
    layers : sequence of str, optional
        Layer names chosen by the user. Default: every layer whose output means something, that
        is all but :data:`SKIPPED_LAYER_TYPES`.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For an unknown or repeated layer name, naming the argument ``layers``.
    """
    all_layers = _topological(model)
    names = [layer.name for layer in all_layers]
    if layers is None:
        return [layer.name for layer in all_layers if type(layer).__name__ not in SKIPPED_LAYER_TYPES]
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise ValueError(f"layers: expected a list of layer names, got {layers!r}")
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"layers: unknown layer name(s) {unknown}; the model's layers are {names}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers: each layer name may appear once, got {list(layers)}")
    chosen = set(layers)
    return [n for n in names if n in chosen]  # topological (model) order


def _layer_graph(model):
    """The model's layers as a networkx DiGraph (an edge where a layer's output feeds another)."""
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
        One note for the whole diagram (empty for a chain of layers such as a Sequential model).
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
    # a model with many branch points (DenseNet121: 58 joins) is summarised: a note stays one sentence
    join_text = name_list(f"{n} ({type(model.get_layer(n)).__name__})" for n in joins) or "none"
    note = (
        f"Branching model (branches split at {name_list(forks) or 'the input'}; join at {join_text}). "
        "Columns follow one topological order of the selected layers, left to right; where two consecutive "
        "columns are parallel branches (marked on the column), the flows between them link the clusters of the "
        "same samples, not a data path."
    )
    return [note], column_notes


def _forward_fn(model, layer_names):
    """A function batch -> (list of layer outputs, model output), in inference mode."""
    inputs = getattr(model, "inputs", None)
    if inputs:
        outputs = [model.get_layer(n).output for n in layer_names] + list(model.outputs[:1])
        # one input passed as a tensor, not a one-element list (Keras 3 warns about the mismatch)
        feature_model = model_class(model)(inputs[0] if len(inputs) == 1 else inputs, outputs)

        def run(xb):
            res = feature_model(xb, training=False)
            return [np.asarray(r) for r in res[:-1]], np.asarray(res[-1])

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
            out = model(xb, training=False)
        finally:
            for layer in layers.values():
                try:
                    del layer.call  # the class's method again
                except AttributeError:  # pragma: no cover - tracking wrappers that refuse deletion
                    pass
        missing = [n for n in layer_names if n not in got]
        if missing:
            raise ValueError(f"layers: {missing} are not called by the model's call(); choose layers it uses")
        return [np.asarray(got[n]) for n in layer_names], np.asarray(out)

    return run


def capture_activations(
    model, x, layer_names: Sequence[str], *, batch_size: int = 256, progress=None, embed_options: Optional[dict] = None,
    class_means: Optional[LayerClassMeans] = None,
) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """Run the held-out set through the model and embed every selected layer's activations.

    Parameters
    ----------
    model : keras.Model
    x : ndarray of shape (n_samples, ...)
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

    Returns
    -------
    embeddings : dict of layer name to ndarray (n_samples, n_features + 1)
        Unit vectors (see :func:`flowcallback.core.embed.embed`); maps with NaN or infinite values
        are flagged (``nonfinite="flag"``), not refused.
    outputs : ndarray of shape (n_samples, n_outputs)
        The model's output (class probabilities).
    """
    run = _forward_fn(model, list(layer_names))
    if len(x) and _per_sample_bytes(model, layer_names) is None:  # no layer graph: learn the sizes from one sample
        maps, _ = run(x[:1])
        batch_size = max(8, min(batch_size, BATCH_BYTES // max(sum(m.nbytes for m in maps), 1)))
    # A map with NaN/inf values (a diverging model) is flagged, not fatal: the clustering stage sets
    # those samples apart in one cluster of their own and notes it on the column.
    opts = dict({"nonfinite": "flag"}, **(embed_options or {}))
    emb = {n: Embedder(n, **opts) for n in layer_names}
    batch_size = _bounded_batch(model, layer_names, batch_size)
    outs = []
    for start in range(0, len(x), batch_size):
        maps, out = run(x[start : start + batch_size])
        for n, m in zip(layer_names, maps):
            emb[n].add(m)
            if class_means is not None:
                class_means.add(n, m, start)
        outs.append(out)
        if progress is not None:
            progress(min(start + batch_size, len(x)))
    return {n: e.result() for n, e in emb.items()}, np.concatenate(outs, axis=0)


#: A capture batch holds every selected layer's maps at once; this bounds their total size.
BATCH_BYTES = 64 << 20


def _per_sample_bytes(model, layer_names) -> Optional[int]:
    """Bytes of one sample's maps over the selected layers (float32), or None without a layer graph."""
    per_sample = 0
    for n in layer_names:
        try:
            shape = layer_output_shape(model.get_layer(n))
        except (AttributeError, ValueError, RuntimeError):  # a subclassed model's layers have no symbolic output
            return None
        per_sample += 4 * int(np.prod([d for d in shape[1:] if d is not None] or [1]))
    return per_sample


def _bounded_batch(model, layer_names, batch_size: int) -> int:
    """Shrink the batch so that one batch of all selected layers' maps stays under BATCH_BYTES."""
    per_sample = _per_sample_bytes(model, layer_names)
    if per_sample is None:  # capture_activations measures one sample instead
        return int(batch_size)
    return int(max(8, min(batch_size, BATCH_BYTES // max(per_sample, 1))))
