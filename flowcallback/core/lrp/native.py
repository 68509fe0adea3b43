"""The native LRP engine: iNNvestigate's LRP analyzers, eagerly, in the user's process.

:class:`NativeLRP` walks the model's layer graph (Sequential or functional, Keras 2 ``tf.keras`` or
Keras 3 on TensorFlow) once at construction, decides which rule each layer gets and notes every
layer it cannot handle. :meth:`NativeLRP.relevance` then runs one forward pass (the layers
themselves, inference mode, the output activation removed) and one backward pass of LRP rules over
a batch, and returns the relevance at the output of every selected layer.

Nothing global changes: no graph mode, no Keras session, no layer copied or modified; the weights are
read at each call, so a model that keeps training gets the relevance of its current weights.
"""
from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from flowcallback.core.lrp import rules as lrp_rules

__all__ = ["NativeLRP", "UnsupportedLayerError", "ANALYZERS", "layer_kind"]


class UnsupportedLayerError(ValueError):
    """The model holds a layer (or a structure) that the native LRP engine cannot analyse.

    ``unsupported`` lists ``(layer name, class name, reason)``.
    """

    def __init__(self, message: str, unsupported=()):
        super().__init__(message)
        self.unsupported = list(unsupported)


# -- layer kinds ---------------------------------------------------------------------------------
# By class name (the same in tf.keras 2 and Keras 3). A subclass with another name is not matched on
# purpose: its call() may do anything.
_KINDS = {
    "InputLayer": "input",
    "Dense": "dense",
    "Conv1D": "conv",
    "Conv2D": "conv",
    "Conv3D": "conv",
    "DepthwiseConv2D": "depthwise",
    "SeparableConv2D": "separable",
    "BatchNormalization": "bn",
    "AveragePooling1D": "avgpool",
    "AveragePooling2D": "avgpool",
    "AveragePooling3D": "avgpool",
    "GlobalAveragePooling1D": "avgpool",
    "GlobalAveragePooling2D": "avgpool",
    "GlobalAveragePooling3D": "avgpool",
    "Add": "add",
    "Embedding": "embedding",
    "Activation": "activation",
    "Softmax": "softmax",
    # relevance passes by the plain gradient (iNNvestigate's default mapping)
    "MaxPooling1D": "gradient",
    "MaxPooling2D": "gradient",
    "MaxPooling3D": "gradient",
    "GlobalMaxPooling1D": "gradient",
    "GlobalMaxPooling2D": "gradient",
    "GlobalMaxPooling3D": "gradient",
    "Flatten": "gradient",
    "Reshape": "gradient",
    "Permute": "gradient",
    "Dropout": "gradient",
    "SpatialDropout1D": "gradient",
    "SpatialDropout2D": "gradient",
    "SpatialDropout3D": "gradient",
    "GaussianNoise": "gradient",
    "GaussianDropout": "gradient",
    "AlphaDropout": "gradient",
    "ActivityRegularization": "gradient",
    "Concatenate": "gradient",
    "ReLU": "gradient",
    "LeakyReLU": "gradient",
    "ZeroPadding1D": "gradient",
    "ZeroPadding2D": "gradient",
    "ZeroPadding3D": "gradient",
    "Cropping1D": "gradient",
    "Cropping2D": "gradient",
    "Cropping3D": "gradient",
}
_KERNEL_KINDS = ("dense", "conv", "depthwise", "separable")
# iNNvestigate's is_input_layer looks through these to find the model's input
_SHAPE_ONLY = ("Flatten", "Permute", "Reshape")


def layer_kind(layer) -> Optional[str]:
    """The engine's kind for a layer (``"dense"``, ``"conv"``, ``"gradient"``...), None if unsupported."""
    cls = type(layer)
    if cls.__module__.split(".")[0] not in ("keras", "tf_keras", "tensorflow"):
        return None
    return _KINDS.get(cls.__name__)


def _config(layer) -> dict:
    try:
        return layer.get_config()
    except Exception:  # pragma: no cover - a layer without a config is reported by its kind anyway
        return {}


def _activation_name(layer) -> str:
    act = _config(layer).get("activation")
    if isinstance(act, dict):  # Keras 3 may serialise it as a dict
        act = act.get("config", {}).get("name", act.get("class_name"))
    return str(act) if act is not None else "linear"


def _variable_value(v):
    """A variable's current value as a tensor (tf.Variable or Keras 3 KerasVariable)."""
    if hasattr(v, "value") and not isinstance(v, tf.Tensor) and not callable(v.value):
        v = v.value  # Keras 3 KerasVariable.value is a property
    return tf.convert_to_tensor(v)


def _tf_data_format(data_format: str, rank: int) -> str:
    spatial = "DHW"[3 - rank:] if rank > 1 else "W"
    return ("NC" + spatial) if data_format == "channels_first" else ("N" + spatial + "C")


def _linear(layer, kind: str, dtype) -> lrp_rules.Linear:
    """The layer's pre-activation as a :class:`~flowcallback.core.lrp.rules.Linear`, current weights.

    The operations are those of the layer's own ``call`` in tf.keras 2.14 (``tf.nn.convolution``,
    ``tf.matmul``, ``tf.nn.bias_add``...), so that iNNvestigate's copy of the layer and this function
    compute the same numbers.
    """
    cfg = _config(layer)
    use_bias = bool(cfg.get("use_bias", False)) and getattr(layer, "bias", None) is not None
    bias = _variable_value(layer.bias) if use_bias else None
    if kind == "dense":
        kernels = {"kernel": _variable_value(layer.kernel)}

        def fn(x, w):
            rank = x.shape.rank
            out = tf.matmul(x, w["kernel"]) if rank == 2 else tf.tensordot(x, w["kernel"], [[rank - 1], [0]])
            if "bias" in w:
                out = tf.nn.bias_add(out, w["bias"])
            return out

    elif kind == "conv":
        kernels = {"kernel": _variable_value(layer.kernel)}
        rank = len(cfg["kernel_size"])
        data_format = cfg.get("data_format") or "channels_last"
        tf_df = _tf_data_format(data_format, rank)
        padding = cfg["padding"]
        strides = list(cfg["strides"])
        dilations = list(cfg["dilation_rate"])
        causal = padding == "causal"
        if causal:
            left = dilations[0] * (cfg["kernel_size"][0] - 1)
            pads = [[0, 0], [0, 0], [left, 0]] if data_format == "channels_first" else [[0, 0], [left, 0], [0, 0]]

        def fn(x, w):
            if causal:
                x = tf.pad(x, pads)
            out = tf.nn.convolution(x, w["kernel"], strides=strides, padding="VALID" if causal else padding.upper(),
                                    dilations=dilations, data_format=tf_df)
            if "bias" in w:
                if rank == 1 and data_format == "channels_first":
                    out += tf.reshape(w["bias"], (1, -1, 1))
                else:
                    out = tf.nn.bias_add(out, w["bias"], data_format=tf_df)
            return out

    elif kind == "depthwise":
        # Keras 2 calls it depthwise_kernel, Keras 3 kernel
        dk = getattr(layer, "depthwise_kernel", None)
        kernels = {"depthwise_kernel": _variable_value(dk if dk is not None else layer.kernel)}
        strides = (1,) + tuple(cfg["strides"]) + (1,)
        padding = cfg["padding"].upper()
        dilations = tuple(cfg["dilation_rate"])

        def fn(x, w):
            out = tf.nn.depthwise_conv2d(x, w["depthwise_kernel"], strides=strides, padding=padding,
                                         dilations=dilations, data_format="NHWC")
            if "bias" in w:
                out = tf.nn.bias_add(out, w["bias"], data_format="NHWC")
            return out

    elif kind == "separable":
        kernels = {"depthwise_kernel": _variable_value(layer.depthwise_kernel),
                   "pointwise_kernel": _variable_value(layer.pointwise_kernel)}
        strides = (1,) + tuple(cfg["strides"]) + (1,)
        padding = cfg["padding"].upper()
        dilations = tuple(cfg["dilation_rate"])

        def fn(x, w):
            out = tf.nn.separable_conv2d(x, w["depthwise_kernel"], w["pointwise_kernel"], strides=strides,
                                         padding=padding, dilations=dilations, data_format="NHWC")
            if "bias" in w:
                out = tf.nn.bias_add(out, w["bias"], data_format="NHWC")
            return out

    else:  # pragma: no cover - guarded by the caller
        raise ValueError(kind)
    kernels = {k: tf.cast(v, dtype) for k, v in kernels.items()}
    return lrp_rules.Linear(fn, kernels, None if bias is None else tf.cast(bias, dtype))


def _bn_linear(layer, dtype, mode: str):
    """iNNvestigate's linearisation of BatchNormalization (``apply_mapping_to_fused_bn_layer``).

    As iNNvestigate 2.1.2 computes it, kept on purpose to equal it: ``s = sqrt(var**2 + eps)`` (the
    variance squared), ``y = x * (gamma / s) + (beta - mean / s)`` (the mean not multiplied by gamma)
    for ``"one_linear"``; ``"two_linear"`` is ``x * (1 / s) - mean / s`` then ``* gamma + beta``.
    The scale broadcasts along the last axis.
    """
    cfg = _config(layer)
    mean = tf.cast(_variable_value(layer.moving_mean), dtype)
    var = tf.cast(_variable_value(layer.moving_variance), dtype)
    gamma = tf.cast(_variable_value(layer.gamma), dtype) if cfg.get("scale", True) else tf.ones_like(mean)
    beta = tf.cast(_variable_value(layer.beta), dtype) if cfg.get("center", True) else tf.zeros_like(mean)
    divisor = tf.sqrt(tf.maximum(tf.math.pow(var, 2) + cfg.get("epsilon", 1e-3), tf.constant(0, dtype)))

    def scale(x, w):
        out = x * w["kernel"]
        if "bias" in w:
            out += w["bias"]
        return out

    if mode == "one_linear":
        return [lrp_rules.Linear(scale, {"kernel": gamma / divisor}, -mean / divisor + beta)]
    return [lrp_rules.Linear(scale, {"kernel": 1 / divisor}, -mean / divisor),
            lrp_rules.Linear(scale, {"kernel": gamma}, beta)]


# -- analyzers -------------------------------------------------------------------------------------
_CONV_KINDS = ("conv", "depthwise", "separable")


class _Spec:
    """Which rule each kind of layer gets: iNNvestigate's analyzer classes, as data."""

    def __init__(self, kernel_rule=None, dense_rule=None, conv_rule=None, bn_rule=None, input_rule=None,
                 bn_fuse_mode="one_linear"):
        self.kernel_rule = kernel_rule
        self.dense_rule = dense_rule
        self.conv_rule = conv_rule
        self.bn_rule = bn_rule
        self.input_rule = input_rule
        self.bn_fuse_mode = bn_fuse_mode

    def rule_for(self, kind: str, is_input: bool) -> lrp_rules.Rule:
        if is_input and self.input_rule is not None:
            return self.input_rule
        if self.kernel_rule is not None:
            return self.kernel_rule
        return self.dense_rule if kind == "dense" else self.conv_rule


def _pop_epsilon(kw, default):
    eps = kw.pop("epsilon", default)
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"epsilon: expected a number > 0, got {eps!r}")
    return eps


def _one_rule(rule):
    return lambda kw: _Spec(kernel_rule=rule(), bn_rule=rule())


def _epsilon(kw):
    r = lrp_rules.EpsilonRule(_pop_epsilon(kw, 1e-7), bias=bool(kw.pop("bias", True)))
    return _Spec(kernel_rule=r, bn_rule=r)


def _alpha_beta(alpha, beta, bias):
    return lambda kw: _Spec(kernel_rule=lrp_rules.AlphaBetaRule(alpha, beta, bias),
                            bn_rule=lrp_rules.AlphaBetaRule(alpha, beta, bias))


def _alpha_beta_free(kw):
    alpha, beta = lrp_rules.check_alpha_beta(kw.pop("alpha", None), kw.pop("beta", None))
    return _alpha_beta(alpha, beta, bool(kw.pop("bias", True)))(kw)


def _preset(conv_rule, input_rule=None):
    def preset_spec(kw):
        eps = _pop_epsilon(kw, 1e-1)
        bn = lrp_rules.rule_from_name(kw.pop("bn_layer_rule", "AlphaBetaX2m100"), "bn_layer_rule")
        spec = _Spec(dense_rule=lrp_rules.EpsilonRule(eps, bias=True), conv_rule=conv_rule, bn_rule=bn)
        if input_rule is not None:
            if "input_layer_rule" in kw and kw["input_layer_rule"] != input_rule:
                raise ValueError(f"input_layer_rule: this preset sets it to {input_rule!r}")
            kw.setdefault("input_layer_rule", input_rule)
        return spec

    return preset_spec


#: The analyzers of the native engine, by iNNvestigate's names.
ANALYZERS = {
    "lrp.epsilon": _epsilon,
    "lrp.z": _one_rule(lrp_rules.ZRule),
    "lrp.w_square": _one_rule(lrp_rules.WSquareRule),
    "lrp.flat": _one_rule(lrp_rules.FlatRule),
    "lrp.alpha_beta": _alpha_beta_free,
    "lrp.alpha_2_beta_1": _alpha_beta(2, 1, True),
    "lrp.alpha_2_beta_1_IB": _alpha_beta(2, 1, False),
    "lrp.alpha_1_beta_0": _alpha_beta(1, 0, True),
    "lrp.alpha_1_beta_0_IB": _alpha_beta(1, 0, False),
    "lrp.z_plus": _alpha_beta(1, 0, False),
    "lrp.z_plus_fast": _one_rule(lrp_rules.ZPlusFastRule),
    "lrp.sequential_preset_a": _preset(lrp_rules.AlphaBetaRule(1, 0, True)),
    "lrp.sequential_preset_b": _preset(lrp_rules.AlphaBetaRule(2, 1, True)),
    "lrp.sequential_preset_a_flat": _preset(lrp_rules.AlphaBetaRule(1, 0, True), "Flat"),
    "lrp.sequential_preset_b_flat": _preset(lrp_rules.AlphaBetaRule(2, 1, True), "Flat"),
}


def make_spec(analyzer: str, analyzer_kwargs: Optional[dict] = None) -> _Spec:
    """The rules of an analyzer; ValueError for an unknown name or keyword."""
    if analyzer not in ANALYZERS:
        raise ValueError(f"analyzer: the native LRP engine knows {sorted(ANALYZERS)}, got {analyzer!r}")
    kw = dict(analyzer_kwargs or {})
    spec = ANALYZERS[analyzer](kw)
    if "input_layer_rule" in kw:
        v = kw.pop("input_layer_rule")
        spec.input_rule = None if v is None else lrp_rules.rule_from_name(v, "input_layer_rule")
    mode = kw.pop("bn_layer_fuse_mode", "one_linear")
    if mode not in ("one_linear", "two_linear"):
        raise ValueError(f"bn_layer_fuse_mode: expected 'one_linear' or 'two_linear', got {mode!r}")
    spec.bn_fuse_mode = mode
    nsm = kw.pop("neuron_selection_mode", "max_activation")
    if nsm != "max_activation":
        raise ValueError("neuron_selection_mode: the native engine analyses the predicted class "
                         f"('max_activation'), got {nsm!r}")
    if kw:
        raise ValueError(f"analyzer_kwargs: {sorted(kw)} not understood by {analyzer!r} in the native LRP engine")
    return spec


# -- the layer graph -------------------------------------------------------------------------------
class _Node:
    __slots__ = ("layer", "index", "inputs", "outputs", "kind", "is_output", "rule", "is_input_rule")

    def __init__(self, layer, index, inputs, outputs):
        self.layer = layer
        self.index = index
        self.inputs = inputs  # keys of the input tensors
        self.outputs = outputs  # keys of the output tensors
        self.kind = layer_kind(layer)
        self.is_output = False
        self.rule = None
        self.is_input_rule = False


def _keras_history(t):
    h = getattr(t, "_keras_history", None)
    if h is None:
        raise UnsupportedLayerError("the model is not a graph of Keras layers (a subclassed model?): "
                                    "its tensors have no Keras history")
    return h[0], int(h[1]), int(h[2])


def _tensor_key(t):
    layer, node_index, tensor_index = _keras_history(t)
    return (id(layer), node_index, tensor_index)


def _node_tensors(node, attr):
    v = getattr(node, attr)
    return list(tf.nest.flatten(v))


def _trace(model) -> Tuple[list, list, list]:
    """Nodes of the model's graph in execution order (those that lead to its outputs).

    Reads ``KerasTensor._keras_history`` and ``layer._inbound_nodes[i].input_tensors``, which both
    Keras 2 and Keras 3 have (their public ``layer.input`` does not cover shared layers).
    """
    outputs = list(getattr(model, "outputs", None) or [])
    inputs = list(getattr(model, "inputs", None) or [])
    if not outputs or not inputs:
        raise UnsupportedLayerError("the model has no inputs/outputs graph (a subclassed or unbuilt model)")
    nodes: Dict[tuple, _Node] = {}
    todo = list(outputs)
    while todo:
        t = todo.pop()
        layer, ni, _ = _keras_history(t)
        if (id(layer), ni) in nodes:
            continue
        knode = layer._inbound_nodes[ni]
        if layer_kind(layer) == "input" or getattr(knode, "is_input", False):
            nodes[(id(layer), ni)] = _Node(layer, ni, [], [(id(layer), ni, 0)])
            continue
        ins = _node_tensors(knode, "input_tensors")
        n_out = len(_node_tensors(knode, "output_tensors"))
        nodes[(id(layer), ni)] = _Node(layer, ni, [_tensor_key(x) for x in ins],
                                       [(id(layer), ni, i) for i in range(n_out)])
        todo.extend(ins)
    return _toposort(list(nodes.values())), inputs, outputs


def _toposort(nodes: List[_Node]) -> List[_Node]:
    produced_by = {k: n for n in nodes for k in n.outputs}
    seen = set()
    out = []
    for start in nodes:
        if id(start) in seen:
            continue
        stack = [(start, False)]
        while stack:
            n, done = stack.pop()
            if done:
                out.append(n)
                continue
            if id(n) in seen:
                continue
            seen.add(id(n))
            stack.append((n, True))
            for k in reversed(n.inputs):
                p = produced_by.get(k)
                if p is not None and id(p) not in seen:
                    stack.append((p, False))
    return out


def _accepts_training(layer) -> bool:
    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _call(layer, xs, single: bool):
    arg = xs[0] if single else list(xs)
    if _accepts_training(layer):
        return layer(arg, training=False)
    return layer(arg)


class NativeLRP:
    """LRP relevance of a Keras classifier, eagerly, with iNNvestigate's rules.

    Parameters
    ----------
    model : keras.Model
        A Sequential or functional classifier with one output (tf.keras 2 or Keras 3 on
        TensorFlow). Its output activation (a softmax) is left out for the analysis, as
        iNNvestigate's ``model_wo_softmax``; the model itself is not changed.
    layers : list of str, optional
        Names of the layers whose output relevance :meth:`relevance` returns. Default: every layer
        of the graph but the input layers (an input layer can be named explicitly).
    analyzer : str, default="lrp.epsilon"
        iNNvestigate's analyzer name; see :data:`ANALYZERS`.
    analyzer_kwargs : dict, optional
        iNNvestigate's keyword arguments for that analyzer: ``epsilon`` and ``bias``
        (``lrp.epsilon``), ``alpha``, ``beta``, ``bias`` (``lrp.alpha_beta``), ``epsilon`` and
        ``bn_layer_rule`` (presets), ``input_layer_rule`` (``(low, high)`` bounds for the z^B rule,
        or a rule name such as ``"Flat"``) and ``bn_layer_fuse_mode`` for all.

    Attributes
    ----------
    unsupported : list of (str, str, str)
        ``(layer name, class name, reason)`` for every layer the engine cannot analyse. The
        constructor does not raise for these, so that a caller can show :attr:`note` and go on
        without LRP; :meth:`check` and :meth:`relevance` raise :class:`UnsupportedLayerError`.
    note : str
        One line naming the unsupported layers and their classes, or "" when all are supported.
    layer_names : list of str
        The layers :meth:`relevance` reports.

    Raises
    ------
    ValueError
        For an analyzer name or keyword argument the engine does not know, or a layer name that is
        not in the model.

    Examples
    --------
    An untrained model shows the shapes; scikit-learn's digits are 8 x 8 images.

    >>> import keras
    >>> from sklearn.datasets import load_digits
    >>> x = load_digits().images[:32, :, :, None] / 16.0
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, activation="softmax", name="dense10")])
    >>> engine = NativeLRP(model, ["conv1", "dense10"], analyzer="lrp.z")
    >>> engine.note
    ''
    >>> maps = engine.relevance(x)
    >>> maps["conv1"].shape, maps["dense10"].shape
    ((32, 8, 8, 6), (32, 10))
    """

    def __init__(self, model, layers: Optional[Sequence[str]] = None, analyzer: str = "lrp.epsilon",
                 analyzer_kwargs: Optional[dict] = None):
        self.analyzer = analyzer
        self.analyzer_kwargs = dict(analyzer_kwargs or {})
        self.spec = make_spec(analyzer, self.analyzer_kwargs)
        self.model = model
        self.unsupported: List[Tuple[str, str, str]] = []
        self._nodes: List[_Node] = []
        self._inputs: list = []
        self._output_key = None
        try:
            self._nodes, inputs, outputs = _trace(model)
        except UnsupportedLayerError as exc:
            self.unsupported.append((getattr(model, "name", "model"), type(model).__name__, str(exc)))
            inputs, outputs = [], []
        if len(outputs) > 1:
            self.unsupported.append((model.name, type(model).__name__,
                                     f"the model has {len(outputs)} outputs; LRP needs one"))
        self._inputs = [_tensor_key(t) for t in inputs]
        if outputs:
            self._output_key = _tensor_key(outputs[0])
        self._check_layers()
        names = [n.layer.name for n in self._nodes]
        if layers is None:
            self.layer_names = [n.layer.name for n in self._nodes if n.kind != "input"]
        else:
            if isinstance(layers, str):
                layers = [layers]
            missing = [n for n in layers if n not in names]
            if missing and not self.unsupported:
                raise ValueError(f"layers: {missing} not in the model's graph; its layers are {names}")
            self.layer_names = list(layers)

    # -- set-up ------------------------------------------------------------------------------------
    def _check_layers(self) -> None:
        produced_by = {k: n for n in self._nodes for k in n.outputs}
        for node in self._nodes:
            layer = node.layer
            if self._output_key in node.outputs:
                node.is_output = True
            kind = node.kind
            if kind is None:
                self.unsupported.append((layer.name, type(layer).__name__, "no LRP rule for this layer class"))
                continue
            cfg = _config(layer)
            act = _activation_name(layer) if "activation" in cfg or kind == "activation" else "linear"
            if not node.is_output and (kind == "softmax" or act == "softmax"):
                self.unsupported.append((layer.name, type(layer).__name__,
                                         "a softmax inside the model (iNNvestigate refuses it too)"))
                continue
            if kind == "conv" and int(cfg.get("groups", 1) or 1) > 1:
                self.unsupported.append((layer.name, type(layer).__name__, "grouped convolution"))
            elif kind in ("depthwise", "separable") and (cfg.get("data_format") or "channels_last") != "channels_last":
                self.unsupported.append((layer.name, type(layer).__name__, "channels_first"))
            elif kind == "bn":
                axis = cfg.get("axis", -1)
                axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
                rank = len(node_shape(layer))
                if not isinstance(axis, int) or axis not in (-1, rank - 1):
                    self.unsupported.append((layer.name, type(layer).__name__,
                                             f"normalisation over axis {axis}; "
                                             "iNNvestigate's BatchNormalization rule scales the last axis"))
            if kind in _KERNEL_KINDS:
                is_input = self._is_input_node(node, produced_by)
                node.is_input_rule = is_input
                node.rule = self.spec.rule_for(kind, is_input)

    def _is_input_node(self, node, produced_by) -> bool:
        """iNNvestigate's ``is_input_layer``: every input comes from an input layer (through reshapes only)."""
        keys = list(node.inputs)
        seen = set()
        while keys:
            k = keys.pop()
            p = produced_by.get(k)
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if p.kind == "input":
                continue
            if type(p.layer).__name__ in _SHAPE_ONLY:
                keys.extend(p.inputs)
                continue
            return False
        return True

    @property
    def note(self) -> str:
        if not self.unsupported:
            return ""
        parts = [f"{n} ({c}: {why})" for n, c, why in self.unsupported]
        return "the native LRP engine cannot analyse layer(s) " + "; ".join(parts)

    def check(self) -> None:
        """Raise :class:`UnsupportedLayerError` (a ValueError) naming the unsupported layers, if any."""
        if self.unsupported:
            raise UnsupportedLayerError(self.note, self.unsupported)

    def rules(self) -> Dict[str, str]:
        """``{layer name: rule}`` for the layers with weights (for reports and tests)."""
        out = {}
        for n in self._nodes:
            if n.rule is not None:
                out[n.layer.name] = repr(n.rule)
            elif n.kind == "bn":
                out[n.layer.name] = (f"{self.spec.bn_rule!r} on the linearised BatchNormalization "
                                     f"({self.spec.bn_fuse_mode})")
        return out

    # -- analysis ----------------------------------------------------------------------------------
    def relevance(self, x, batch_size: Optional[int] = None) -> Dict[str, np.ndarray]:
        """Relevance at the output of each layer of :attr:`layer_names`, for the predicted class.

        Parameters
        ----------
        x : array-like or list of array-like
            The model's input(s), a batch of samples.
        batch_size : int, optional
            Samples per forward/backward pass. Default: all at once.

        Returns
        -------
        dict
            ``{layer name: float32 array of shape (n_samples,) + layer output shape}``. A layer that no
            relevance reaches (one after which the graph does not lead to the output, or the input
            of an Embedding) is absent. Non-finite weights give non-finite relevance, not an error.

        Raises
        ------
        UnsupportedLayerError
            If the model holds a layer the engine cannot analyse (see :attr:`note`).
        """
        self.check()
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self._inputs):
            raise ValueError(f"x: the model has {len(self._inputs)} input(s), got {len(xs)} array(s)")
        n = len(xs[0])
        if n == 0:
            raise ValueError("x: no samples")
        bs = n if not batch_size else int(batch_size)
        parts: Dict[str, list] = {}
        for start in range(0, n, bs):
            out = self._batch([np.asarray(a)[start:start + bs] for a in xs])
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        return {k: (v[0] if len(v) == 1 else np.concatenate(v, axis=0)) for k, v in parts.items()}

    def _batch(self, xs) -> Dict[str, np.ndarray]:
        nodes = self._nodes
        values: Dict[tuple, tf.Tensor] = {}
        dtypes = {_tensor_key(t): tf.as_dtype(t.dtype) for t in self.model.inputs}
        for k, a in zip(self._inputs, xs):
            values[k] = tf.convert_to_tensor(a, dtype=dtypes[k])  # int32 for token ids
        # forward
        for node in nodes:
            if node.kind == "input":
                continue
            ins = [values[k] for k in node.inputs]
            if node.is_output:
                ys = [self._forward_output(node, ins)]
            else:
                single = len(ins) == 1 and node.kind != "add" and type(node.layer).__name__ != "Concatenate"
                ys = tf.nest.flatten(_call(node.layer, ins, single=single))
            for k, y in zip(node.outputs, ys):
                # relevance in float32 at least: under a mixed-precision policy layers compute in
                # float16, while the rules read the float32 weights
                values[k] = tf.cast(y, tf.float32) if y.dtype.is_floating and y.dtype.size < 4 else y
        # start: iNNvestigate's MaxNeuronSelection (reduce_max over the flattened output), whose
        # relevance is its own value: the top logit at the argmax, ties shared as TF's Max gradient
        logits = values[self._output_key]
        with tf.GradientTape() as tape:
            tape.watch(logits)
            flat = tf.reshape(logits, (tf.shape(logits)[0], -1)) if logits.shape.rank > 2 else logits
            top = tf.reduce_max(flat, axis=-1)
        start = tape.gradient(top, logits, output_gradients=top)
        rel: Dict[tuple, list] = {self._output_key: [start]}
        final: Dict[tuple, tf.Tensor] = {}

        def get(k):
            if k not in final:
                ts = rel[k]
                acc = ts[0]
                for t in ts[1:]:  # Keras' Add layer: a running sum, in the order the relevances arrived
                    acc = acc + t
                final[k] = acc
            return final[k]

        for node in reversed(nodes):
            if node.kind == "input" or not all(k in rel for k in node.outputs):
                continue
            rs = [get(k) for k in node.outputs]
            xs_in = [values[k] for k in node.inputs]
            r_in = self._reverse(node, xs_in, [values[k] for k in node.outputs], rs)
            if r_in is None:
                continue
            for k, r in zip(node.inputs, r_in):
                rel.setdefault(k, []).append(r)
        # relevance at each layer's output: its first node's first output (as the worker's mapping)
        out = {}
        wanted = set(self.layer_names)
        for node in nodes:
            name = node.layer.name
            if name in wanted and name not in out and node.outputs[0] in rel:
                out[name] = get(node.outputs[0]).numpy()
        return out

    def _forward_output(self, node, ins):
        """The output layer without its activation (flowcallback's ``model_config_without_softmax``)."""
        kind = node.kind
        if kind in ("softmax", "activation"):
            return ins[0]
        if kind in _KERNEL_KINDS:
            lin = _linear(node.layer, kind, ins[0].dtype)
            return lin(ins[0], lin.weights())
        return tf.nest.flatten(_call(node.layer, ins, single=len(ins) == 1 and kind != "add"))[0]

    def _reverse(self, node, xs, ys, rs):
        kind = node.kind
        layer = node.layer
        if kind in _KERNEL_KINDS:
            lin = _linear(layer, kind, xs[0].dtype)
            return [node.rule.apply(lin, xs[0], rs[0])]
        if kind == "bn":
            lins = _bn_linear(layer, xs[0].dtype, self.spec.bn_fuse_mode)
            rule = self.spec.bn_rule
            if len(lins) == 1:
                return [rule.apply(lins[0], xs[0], rs[0])]
            first, second = lins
            x2 = first(xs[0], first.weights())
            r2 = rule.apply(second, x2, rs[0])
            return [rule.apply(first, xs[0], r2)]
        if kind == "embedding":
            return None  # relevance stops at the embedding's output (its input is token ids)
        if kind in ("activation", "softmax") and all(x.shape == y.shape for x, y in zip(xs, ys)):
            return rs  # iNNvestigate passes relevance through Activation layers unchanged
        if kind in ("avgpool", "add"):
            # Z rule with unit weights: R_in = x * grad(R / z)
            with tf.GradientTape(persistent=True) as tape:
                for x in xs:
                    tape.watch(x)
                z = tf.nest.flatten(_call(layer, xs, single=kind != "add"))[0]
            ratio = lrp_rules.safe_divide(rs[0], z)
            grads = [tape.gradient(z, x, output_gradients=ratio, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                     for x in xs]
            del tape
            return [x * g for x, g in zip(xs, grads)]
        # the plain gradient (max pooling, reshapes, dropout, concatenation, ReLU...)
        with tf.GradientTape(persistent=len(xs) > 1) as tape:
            for x in xs:
                tape.watch(x)
            y = tf.nest.flatten(_call(layer, xs, single=len(xs) == 1 and type(layer).__name__ != "Concatenate"))
        grads = [tape.gradient(y, x, output_gradients=rs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                 for x in xs]
        del tape
        return grads


def node_shape(layer):
    """A layer's output shape (with the batch axis), on Keras 2 and 3."""
    try:
        s = layer.output.shape
    except Exception:
        s = getattr(layer, "output_shape", None)
    return tuple(s) if s is not None else ()
