"""The native LRP engine: iNNvestigate's LRP analyzers, eagerly, in the user's process, and the
published rules for the layers iNNvestigate has none for.

:class:`NativeLRP` reads the model's layer graph (Sequential or functional, Keras 2 ``tf.keras`` or
Keras 3 on TensorFlow, nested models inlined: :mod:`flowcallback.core.layergraph`) once at
construction, decides which rule each layer gets and where relevance stops. :meth:`NativeLRP.relevance`
then runs one forward pass (the layers themselves, inference mode, the output activation removed)
and one backward pass of LRP rules over a batch, and returns the relevance at the output of every
selected layer.

Which rule each kind of layer gets is documented in ``docs/method.md`` ("Native LRP engine" and
"Layers without an iNNvestigate rule"). In short:

- layers with weights (Dense, convolutions, EinsumDense) and BatchNormalization: the analyzer's
  rules, as iNNvestigate applies them (equal to it within 1e-5);
- weightless linear maps (Add, Subtract, Average, average pooling): the z rule, as iNNvestigate's
  Add and AveragePooling rules;
- one-to-one element-wise maps (activations, Rescaling, Normalization, LayerScale) and layers that
  are the identity at inference (Dropout, GaussianNoise, the Random* augmentation layers): relevance
  passes through unchanged;
- reshapes, max pooling, padding, cropping, resizing, concatenation: the gradient;
- Multiply: signal-take-all where one input is a gate (a sigmoid or hard sigmoid), else an even split
  (Arras et al. 2017; Achtibat et al. 2024);
- LayerNormalization and MultiHeadAttention: epsilon-LRP with the normalising scale and the
  attention probabilities held constant (Ali et al. 2022; Achtibat et al. 2024).

A layer with no rule (an LSTM, a Lambda, an unknown custom layer) does not refuse the model:
relevance stops there, the layers above it keep their relevance, and :attr:`NativeLRP.note` says
which layers lost theirs and why.

Nothing global changes: no graph mode, no Keras session, no layer copied or modified; the weights are
read at each call, so a model that keeps training gets the relevance of its current weights.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from flowcallback.core import layergraph
from flowcallback.core.lrp import recurrent
from flowcallback.core.lrp import rules as lrp_rules

__all__ = ["NativeLRP", "CompiledRelevance", "UnsupportedLayerError", "ANALYZERS", "layer_kind", "RULE_TABLE"]


class UnsupportedLayerError(ValueError):
    """The model as a whole cannot be analysed (no layer graph, several outputs).

    ``unsupported`` lists ``(name, class name, reason)``.
    """

    def __init__(self, message: str, unsupported=()):
        super().__init__(message)
        self.unsupported = list(unsupported)


# -- layer kinds ---------------------------------------------------------------------------------
# By class name (the same in tf.keras 2 and Keras 3), for classes defined by Keras or TensorFlow. A
# subclass with another name is not matched on purpose: its call() may do anything.
_KINDS = {
    "InputLayer": "input",
    "Dense": "dense",
    "Conv1D": "conv",
    "Conv2D": "conv",
    "Conv3D": "conv",
    "DepthwiseConv2D": "depthwise",
    "SeparableConv2D": "separable",
    "EinsumDense": "einsum",
    "BatchNormalization": "bn",
    "LayerNormalization": "layernorm",
    "MultiHeadAttention": "attention",
    "Embedding": "embedding",
    # recurrent layers: Arras et al. (2017)'s rules (flowcallback.core.lrp.recurrent)
    **recurrent.RECURRENT_KINDS,
    "Bidirectional": "bidirectional",
    "Activation": "activation",
    "Softmax": "softmax",
    "Multiply": "multiply",
    # weightless linear maps: the z rule (iNNvestigate's Add and AveragePooling rules)
    "AveragePooling1D": "linear",
    "AveragePooling2D": "linear",
    "AveragePooling3D": "linear",
    "GlobalAveragePooling1D": "linear",
    "GlobalAveragePooling2D": "linear",
    "GlobalAveragePooling3D": "linear",
    "Add": "linear",
    "Subtract": "linear",
    "Average": "linear",
    "CustomScaleLayer": "linear",  # InceptionResNetV2's residual sum x + scale * branch
    # one-to-one element-wise maps, and identities at inference: relevance passes through unchanged
    "Dropout": "identity",
    "SpatialDropout1D": "identity",
    "SpatialDropout2D": "identity",
    "SpatialDropout3D": "identity",
    "GaussianNoise": "identity",
    "GaussianDropout": "identity",
    "AlphaDropout": "identity",
    "ActivityRegularization": "identity",
    "StochasticDepth": "identity",  # ConvNeXt's drop path
    "LayerScale": "identity",  # ConvNeXt's per-channel scale
    "Rescaling": "identity",
    "Identity": "identity",
    "Masking": "identity",
    "Normalization": "identity",
    "ELU": "identity",
    "PReLU": "identity",
    "ThresholdedReLU": "identity",
    "RandomFlip": "identity",
    "RandomRotation": "identity",
    "RandomZoom": "identity",
    "RandomTranslation": "identity",
    "RandomContrast": "identity",
    "RandomBrightness": "identity",
    "RandomHeight": "identity",
    "RandomWidth": "identity",
    "RandomGrayscale": "identity",
    "RandomHue": "identity",
    "RandomSaturation": "identity",
    "RandomSharpness": "identity",
    "RandomColorJitter": "identity",
    "RandomColorDegeneration": "identity",
    "RandomInvert": "identity",
    "RandomPosterization": "identity",
    "RandomShear": "identity",
    "RandomPerspective": "identity",
    "RandomElasticTransform": "identity",
    "RandomErasing": "identity",
    "RandomGaussianBlur": "identity",
    "AutoContrast": "identity",
    "Solarization": "identity",
    "AugMix": "identity",
    "RandAugment": "identity",
    "CutMix": "identity",
    "MixUp": "identity",
    # relevance follows the plain gradient (iNNvestigate's default mapping)
    "MaxPooling1D": "gradient",
    "MaxPooling2D": "gradient",
    "MaxPooling3D": "gradient",
    "GlobalMaxPooling1D": "gradient",
    "GlobalMaxPooling2D": "gradient",
    "GlobalMaxPooling3D": "gradient",
    "Flatten": "gradient",
    "Reshape": "gradient",
    "Permute": "gradient",
    "RepeatVector": "gradient",
    "Concatenate": "gradient",
    "Maximum": "gradient",
    "Minimum": "gradient",
    "ReLU": "gradient",
    "LeakyReLU": "gradient",
    "ZeroPadding1D": "gradient",
    "ZeroPadding2D": "gradient",
    "ZeroPadding3D": "gradient",
    "Cropping1D": "gradient",
    "Cropping2D": "gradient",
    "Cropping3D": "gradient",
    "UpSampling1D": "gradient",
    "UpSampling2D": "gradient",
    "UpSampling3D": "gradient",
    "Resizing": "gradient",
    "CenterCrop": "gradient",
    "RandomCrop": "gradient",  # at inference a centre crop or resize: a spatial map
}
_KERNEL_KINDS = ("dense", "conv", "depthwise", "separable", "einsum", "matmul")
# iNNvestigate's is_input_layer looks through these to find the model's input
_SHAPE_ONLY = ("Flatten", "Permute", "Reshape")
_RECURRENT = ("RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "LSTMV1", "GRUV1", "CuDNNLSTM", "CuDNNGRU")
_RECURRENT_KINDS = (*recurrent.RECURRENT_KINDS.values(), "bidirectional")

# Keras 3 operations on symbolic tensors (``x + 3.0``, ``ops.reshape(x, ...)``), which are not
# layers: by class name, and by how many tensors they take.
_OP_ELEMENTWISE = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative", "Relu", "Relu6", "Sigmoid",
                   "HardSigmoid", "Silu", "Swish", "HardSilu", "HardSwish", "Gelu", "Tanh", "Elu", "Selu",
                   "LeakyRelu", "Softplus", "Softsign", "Mish", "Cast", "Clip", "Maximum", "Minimum", "Abs",
                   "Absolute"}
_OP_SHAPE = {"ExtractPatches", "Reshape", "Transpose", "ExpandDims", "Squeeze", "GetItem", "Flatten", "Concatenate",
             "Pad", "Tile", "Repeat", "Stack", "Slice", "Take", "MoveAxis", "SwapAxes", "Maximum", "Minimum", "Max",
             "Min"}
_OP_LINEAR = {"Add", "Subtract", "Mean", "Sum", "Average"}
# reductions of one tensor: the z rule too (mean pooling written with ops.mean)
_OP_REDUCE = {"Mean", "Sum"}
# operations whose value does not follow their input's (a comparison, a mask, ops.zeros_like): their
# input gets no relevance, and their output is a constant to the rules (a gate where it multiplies)
_OP_CONSTANT = {"NotEqual", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalOr",
                "LogicalNot", "LogicalXor", "ZerosLike", "OnesLike", "FullLike", "Sign", "IsNan", "IsInf",
                "IsFinite"}
# element-wise selections (ops.where(mask, scores, -1e9), a causal mask): the gradient routes each
# element's relevance to the input it was taken from, the condition gets none
_OP_SELECT = {"Where"}
# products of two tensors (attention written with keras.ops: ops.matmul(q, k^T), ops.matmul(weights, v))
_OP_BILINEAR = {"Matmul", "Einsum"}
_TF_BILINEAR = {"linalg.matmul", "__operators__.matmul", "einsum", "linalg.einsum"}
# Keras 2 wraps operations on symbolic tensors in TFOpLambda layers, named by the TensorFlow symbol
_TF_ELEMENTWISE = {"__operators__.add", "math.add", "math.multiply", "math.subtract", "math.truediv",
                   "math.divide", "nn.relu", "nn.relu6", "math.sigmoid", "nn.silu", "math.tanh", "cast"}
_TF_SHAPE = {"reshape", "transpose", "expand_dims", "squeeze", "__operators__.getitem", "concat", "compat.v1.pad",
             "pad"}

#: What each kind of layer gets, for docs/method.md and the tests.
RULE_TABLE = {
    "dense, conv, depthwise, separable, einsum": "the analyzer's rule (iNNvestigate's)",
    "matmul": "the analyzer's Dense rule: ops.matmul(x, W) with a weight W is a Dense layer, with the bias b "
              "of ops.matmul(x, W) + b (the Add after it passes relevance through)",
    "bn": "the analyzer's BatchNormalization rule on its linearisation (iNNvestigate's)",
    "linear": "z rule over the layer's own linear map (iNNvestigate's Add and AveragePooling rules)",
    "identity": "relevance passes through unchanged (one-to-one element-wise map, or the identity at inference)",
    "activation": "relevance passes through unchanged (iNNvestigate's Activation rule)",
    "gradient": "the gradient of the layer (iNNvestigate's default: max pooling, reshapes, padding, resizing)",
    "multiply": "signal-take-all: a gate input (sigmoid, hard sigmoid, a mask) gets none, the signal all; else an "
                "even split",
    "layernorm": "epsilon rule with the normalising scale held constant (Ali et al. 2022)",
    "attention": "epsilon rule through the values, attention probabilities held constant (Ali et al. 2022)",
    "embedding": "relevance stops at the embedding's output (its input is token ids)",
    "constant": "none passes to the input: the output does not follow it (comparisons, masks, ops.zeros_like; a "
                "softmax whose output only weights an attention's values)",
    "bilinear": "a product of two tensors (ops.matmul, ops.einsum): where one is attention weights (a softmax), "
                "the epsilon rule through the other, the weights held constant (Ali et al. 2022); else each "
                "gets half (Achtibat et al. 2024, AttnLRP's uniform rule)",
    "lstm, gru, rnn, bidirectional": "Arras et al. (2017): gates get none (signal-take-all), the epsilon rule "
                                     "through the cell input and the cell state, back through time",
}


_is_operation = layergraph.is_operation


def layer_kind(layer, n_tensor_inputs: Optional[int] = None) -> Optional[str]:
    """The engine's kind for a layer (``"dense"``, ``"conv"``, ``"gradient"``...), None if it has no rule.

    ``n_tensor_inputs`` (how many tensors the call takes) tells a Keras 3 operation such as
    ``x + 3.0`` (one tensor: element-wise, passed through) from ``x + y`` (two: the z rule).

    Examples
    --------
    >>> import keras
    >>> layer_kind(keras.layers.Dense(3)), layer_kind(keras.layers.LSTM(2)), layer_kind(keras.layers.Lambda(abs))
    ('dense', 'lstm', None)
    """
    name = type(layer).__name__
    if not _from_keras(layer):
        return None
    if _is_operation(layer):
        if n_tensor_inputs == 1 and name in _OP_ELEMENTWISE:
            return "identity"
        if name in _OP_CONSTANT:
            return "constant"
        if name in _OP_SHAPE or name in _OP_SELECT:
            return "gradient"
        if (n_tensor_inputs or 0) > 1 and name in _OP_LINEAR or n_tensor_inputs == 1 and name in _OP_REDUCE:
            return "linear"
        if n_tensor_inputs == 2 and name == "Multiply":
            return "multiply"
        if n_tensor_inputs == 2 and name in _OP_BILINEAR:
            return "bilinear"
        return None
    if name == "TFOpLambda":
        symbol = _tf_symbol(layer)
        if n_tensor_inputs == 1 and symbol in _TF_ELEMENTWISE:
            return "identity"
        if symbol in _TF_SHAPE:
            return "gradient"
        if n_tensor_inputs and n_tensor_inputs > 1 and symbol in ("__operators__.add", "math.add", "math.subtract"):
            return "linear"
        if n_tensor_inputs == 2 and symbol == "math.multiply":
            return "multiply"
        if n_tensor_inputs == 2 and symbol in _TF_BILINEAR:
            return "bilinear"
        return None
    return _KINDS.get(name)


def _tf_symbol(layer) -> str:
    """The TensorFlow function a Keras 2 ``TFOpLambda`` layer calls, without ``tf.`` (``nn.softmax``)."""
    symbol = str(getattr(layer, "symbol", ""))
    return symbol[3:] if symbol.startswith("tf.") else symbol


def _is_softmax_call(call, kind) -> bool:
    """A softmax inside the model: a Softmax layer or activation, ``ops.softmax`` (Keras 3) or
    ``tf.nn.softmax`` (a Keras 2 ``TFOpLambda``)."""
    layer = call.layer
    if call.class_name == "Softmax" and (_is_operation(layer) or kind == "softmax"):
        return True
    if call.class_name == "TFOpLambda":
        return _tf_symbol(layer) in ("nn.softmax", "math.softmax")
    return kind == "activation" and _activation_name(layer) == "softmax"


def _from_keras(layer) -> bool:
    """Whether the layer's class is Keras's own (a user's subclass is not: its call() is its own)."""
    return (type(layer).__module__ or "").split(".")[0] in ("keras", "tf_keras", "tensorflow")


def _stop_reason(layer, closed: str = "") -> str:
    """Why a layer without a kind has no rule (``closed``: why a custom layer's call() was not followed)."""
    name = type(layer).__name__
    if name in _RECURRENT:
        return (f"a recurrent layer ({name}) without an LRP rule here (LSTM, GRU, SimpleRNN and Bidirectional "
                "have one), so relevance stops at its output")
    if name == "Lambda":
        return "a Lambda layer runs arbitrary code, so no LRP rule can be known for it"
    if layergraph.is_model(layer):
        return "a nested model that could not be inlined"
    if not _from_keras(layer) and closed:
        return (f"a custom layer class whose call() LRP cannot follow: {closed}")
    if not _from_keras(layer):
        return ("a custom layer class, whose call() LRP cannot see into; built from Keras layers with the "
                "functional API instead (a function that adds them, or a functional keras.Model used as a layer), "
                "its inside gets relevance")
    return "no LRP rule for this operation" if _is_operation(layer) else "no LRP rule for this layer class"


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


def _grouped_convolution(x, kernel, strides, padding, dilations, data_format):
    """``tf.nn.convolution`` of a grouped kernel (``Conv2D(groups=g)``: kernel ``(..., in / g, out)``),
    made of operations whose gradients TensorFlow has on every device.

    TensorFlow's own grouped convolution has no gradient on a CPU without oneDNN (AMD and other
    CPUs without AVX-512: "Gradients for grouped convolutions are not supported on CPU"); Keras
    trains it through XLA instead. The rules need that gradient, so: a depthwise convolution where
    each group is one channel (ConvNeXt's 7 x 7 convolutions), else one convolution per group over
    its slice of the channels, concatenated. Both compute the same sums as the grouped kernel.
    """
    axis = 1 if data_format.startswith("NC") else -1
    channels, per_group, filters = x.shape[axis], kernel.shape[-2], kernel.shape[-1]
    groups = channels // per_group
    if per_group == 1 and kernel.shape.rank == 4 and axis == -1:
        # output o of a grouped kernel reads channel o // m (m = filters / groups), as output c*m + j
        # of a depthwise kernel (kh, kw, channels, m) reads channel c: the same order
        depthwise = tf.reshape(kernel, tuple(kernel.shape[:2]) + (channels, filters // channels))
        return tf.nn.depthwise_conv2d(x, depthwise, strides=[1, *strides, 1],
                                      padding=padding, dilations=dilations, data_format=data_format)
    xs = tf.split(x, groups, axis=axis)
    ks = tf.split(kernel, groups, axis=-1)
    return tf.concat([tf.nn.convolution(a, k, strides=strides, padding=padding, dilations=dilations,
                                        data_format=data_format) for a, k in zip(xs, ks)], axis=axis)


def _matmul_kernel(call):
    """The weight ``W`` of a Keras 3 ``ops.matmul(x, W)`` call on one tensor (a dense layer written
    by hand in a custom layer's call()), or None."""
    if not (_is_operation(call.layer) and call.class_name == "Matmul" and len(call.inputs) == 1):
        return None
    args, kwargs = call.template
    if len(args) != 2 or kwargs or type(args[0]).__name__ != "_Slot" or not layergraph._is_variable(args[1]):
        return None
    return args[1] if len(args[1].shape) == 2 else None


def _matmul_linear(call, bias=None) -> lrp_rules.Linear:
    """``ops.matmul(x, W)`` as a :class:`~flowcallback.core.lrp.rules.Linear`: a Dense, with the
    ``bias`` variable that is added to its output right after it (:func:`_matmul_bias`) or none."""
    def fn(x, w):
        rank = x.shape.rank
        out = tf.matmul(x, w["kernel"]) if rank == 2 else tf.tensordot(x, w["kernel"], [[rank - 1], [0]])
        return out + w["bias"] if "bias" in w else out

    return lrp_rules.Linear(fn, {"kernel": _variable_value(_matmul_kernel(call))},
                            None if bias is None else _variable_value(bias))


def _matmul_bias(graph, call):
    """The bias of a dense layer written ``ops.matmul(x, self.w) + self.b``: the weight of shape
    ``(units,)`` that the one operation reading the product adds to it, or None."""
    readers = graph.consumers.get(call.outputs[0], [])
    if len(readers) != 1 or readers[0].class_name != "Add" or len(readers[0].inputs) != 1:
        return None
    args, kwargs = readers[0].template
    if len(args) != 2 or kwargs:
        return None
    other = args[1] if type(args[0]).__name__ == "_Slot" else args[0]
    units = _matmul_kernel(call).shape[-1]
    if layergraph._is_variable(other) and tuple(other.shape) == (units,):
        return other
    return None


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

        groups = int(cfg.get("groups", 1) or 1)
        conv = _grouped_convolution if groups > 1 else tf.nn.convolution

        def fn(x, w):
            if causal:
                x = tf.pad(x, pads)
            out = conv(x, w["kernel"], strides=strides, padding="VALID" if causal else padding.upper(),
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

    elif kind == "einsum":
        kernels = {"kernel": _variable_value(layer.kernel)}
        equation = layer.equation
        # EinsumDense has a bias where its config names bias axes (no use_bias flag)
        if getattr(layer, "bias", None) is not None:
            bias = _variable_value(layer.bias)

        def fn(x, w):
            out = tf.einsum(equation, x, w["kernel"])
            if "bias" in w:
                out += w["bias"]
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
    # iNNvestigate writes ``variance**2``, a Pow op; in its graph, TensorFlow's arithmetic optimizer
    # rewrites Pow(x, 2) as Square(x), which rounds differently from an eager Pow: with trained
    # statistics the difference reached 7e-5 of the relevance. Square is what the reference computes.
    divisor = tf.sqrt(tf.maximum(tf.square(var) + cfg.get("epsilon", 1e-3), tf.constant(0, dtype)))

    def scale(x, w):
        out = x * w["kernel"]
        if "bias" in w:
            out += w["bias"]
        return out

    if mode == "one_linear":
        return [lrp_rules.Linear(scale, {"kernel": gamma / divisor}, -mean / divisor + beta)]
    # ``1 / s``: the graph optimizer turns iNNvestigate's division of one into Reciprocal, which rounds apart
    return [lrp_rules.Linear(scale, {"kernel": tf.math.reciprocal(divisor)}, -mean / divisor),
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


# -- the engine ------------------------------------------------------------------------------------
class _Step:
    """One call of the flat graph, with the rule the engine chose for it."""

    __slots__ = ("call", "kind", "is_output", "rule", "is_input_rule", "stop", "masks", "bias")

    def __init__(self, call: layergraph.Call):
        self.call = call
        self.kind = "input" if call.is_input else layer_kind(call.layer, len(call.inputs))
        if self.kind is None and _matmul_kernel(call) is not None:
            self.kind = "matmul"  # ops.matmul(x, self.w): a dense layer written by hand
        self.is_output = False
        self.rule = None
        self.is_input_rule = False
        self.stop = ""  # why relevance stops at this layer's output ("" where it goes on)
        self.masks = ()  # inputs that are Keras masks: no relevance goes to them (nor past them)
        self.bias = None  # the bias added right after ops.matmul(x, W) (a Dense written by hand)


def _float32(t):
    """``t`` cast to float32, keeping the Keras mask tf.keras 2 sets on a tensor (a masked
    Embedding's output): the recurrent layers after it read it there."""
    out = tf.cast(t, tf.float32)
    mask = getattr(t, "_keras_mask", None)
    if mask is not None:
        try:
            out._keras_mask = mask
        except AttributeError:  # pragma: no cover - a tensor type without attributes
            pass
    return out


def _wide(t):
    """A layer's output recomputed inside a rule, in float32 where a mixed-precision policy made it
    float16 or a NumPy float64 constant made it float64 (the relevance is float32); the cast is on
    the tape, so gradients pass through it."""
    return tf.cast(t, tf.float32) if t.dtype.is_floating and t.dtype != tf.float32 else t


def _once(rs: list, xs: Sequence) -> list:
    """Relevance computed from gradients with respect to each input tensor, where one tensor is
    read at several places (``a + a``, ``ops.concatenate([a, a])``): the gradient already sums over
    its places, so it is given once, the other places nothing (each place's share would count it
    again)."""
    out = []
    for i, (r, x) in enumerate(zip(rs, xs)):
        out.append(tf.zeros_like(r) if any(x is other for other in xs[:i]) else r)
    return out


def _unbroadcast(r, shape):
    """Sum ``r`` over the axes along which a tensor of ``shape`` was broadcast to ``r``'s shape."""
    shape = tuple(shape)
    lead = r.shape.rank - len(shape)
    if lead > 0:
        r = tf.reduce_sum(r, axis=list(range(lead)))
    axes = [i for i, (a, b) in enumerate(zip(shape, r.shape)) if a == 1 and b != 1]
    return tf.reduce_sum(r, axis=axes, keepdims=True) if axes else r


def _summary(names: Sequence[str], first: int = 3) -> str:
    names = list(names)
    shown = ", ".join(names[:first])
    return shown if len(names) <= first else f"{shown} and {len(names) - first} more"


class NativeLRP:
    """LRP relevance of a Keras classifier, eagerly, with iNNvestigate's rules.

    Parameters
    ----------
    model : keras.Model
        A Sequential or functional classifier with one output (tf.keras 2 or Keras 3 on
        TensorFlow); nested Sequential or functional blocks are descended into. Its output
        activation (a softmax) is left out for the analysis, as iNNvestigate's ``model_wo_softmax``;
        the model itself is not changed.
    layers : list of str, optional
        Names of the layers whose output relevance :meth:`relevance` returns (a nested layer by its
        own name, or ``"block/name"`` where its name is not unique). Default: every layer of the
        model but the input layers (an input layer can be named explicitly), a custom layer by its
        own name, the Keras operations between layers (``x + y`` on symbolic tensors) left out.
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
        ``(name, class name, reason)`` when the model as a whole cannot be analysed (no layer graph,
        several outputs). The constructor does not raise, so that a caller can show :attr:`note` and
        go on without LRP; :meth:`check` and :meth:`relevance` raise :class:`UnsupportedLayerError`.
    stops : list of (str, str, str)
        ``(layer name, class name, reason)`` for each layer on the way to the output that has no
        LRP rule: relevance reaches its output and stops there.
    blocked : list of str
        The selected layers that relevance cannot reach because of :attr:`stops`.
    note : str
        One line naming the stops (each class once, with its count and first layers) and the
        layers that lose their relevance, or "" when relevance reaches every layer.
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

    A layer without a rule stops relevance without refusing the model:

    >>> inputs = keras.Input((8, 8))
    >>> h = keras.layers.Dense(4, name="embed")(inputs)
    >>> h = keras.layers.Lambda(lambda t: t * 2.0, name="double")(h)
    >>> h = keras.layers.LSTM(4, name="lstm")(h)
    >>> model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    >>> engine = NativeLRP(model)
    >>> engine.stops[0][:2], engine.blocked
    (('double', 'Lambda'), ['embed'])
    >>> sorted(engine.relevance(x[..., 0]))
    ['double', 'logits', 'lstm']
    """

    def __init__(self, model, layers: Optional[Sequence[str]] = None, analyzer: str = "lrp.epsilon",
                 analyzer_kwargs: Optional[dict] = None):
        self.analyzer = analyzer
        self.analyzer_kwargs = dict(analyzer_kwargs or {})
        self.spec = make_spec(analyzer, self.analyzer_kwargs)
        self.model = model
        self.unsupported: List[Tuple[str, str, str]] = []
        self.stops: List[Tuple[str, str, str]] = []
        self.blocked: List[str] = []
        self.graph: Optional[layergraph.LayerGraph] = None
        self._steps: List[_Step] = []
        self._output_key = None
        self._gates: Dict[tuple, bool] = {}
        try:
            # custom layer classes are opened: relevance follows the Keras layers inside their call()
            self.graph = layergraph.trace(model, open_custom=True)
        except layergraph.GraphError as exc:
            self.unsupported.append((getattr(model, "name", "model"), type(model).__name__, str(exc)))
        if self.graph is not None:
            if len(self.graph.outputs) > 1:
                self.unsupported.append((model.name, type(model).__name__,
                                         f"the model has {len(self.graph.outputs)} outputs; LRP needs one"))
            self._output_key = self.graph.outputs[0]
            self._steps = [_Step(c) for c in self.graph.calls]
            self._check_layers()
        names = [s.call.name for s in self._steps if s.call.first] + list(getattr(self.graph, "aliases", {}))
        if layers is None:
            self.layer_names = self._default_layers()
        else:
            if isinstance(layers, str):
                layers = [layers]
            missing = [n for n in layers if n not in names]
            if missing and not self.unsupported:
                raise ValueError(f"layers: {missing} not in the model's graph; its layers are {names}")
            self.layer_names = list(layers)
        if not self.unsupported:
            self._find_stops()

    # -- set-up ------------------------------------------------------------------------------------
    def _check_layers(self) -> None:
        produced_by = {k: s for s in self._steps for k in s.call.outputs}
        for step in self._steps:
            layer = step.call.layer
            if self._output_key in step.call.outputs:
                step.is_output = True
            kind = step.kind
            if kind == "input":
                continue
            cfg = _config(layer) if kind is not None else {}
            act = _activation_name(layer) if "activation" in cfg or kind == "activation" else "linear"
            softmax = kind == "softmax" or act == "softmax" or (kind is None and _is_softmax_call(step.call, kind))
            if softmax and not step.is_output and kind in (None, "softmax", "activation") and self._weights_only(
                    step.call.outputs[0]):
                step.kind = kind = "constant"  # attention weights: the rule for their product gives them nothing
                continue
            if step.is_output and _is_operation(layer) and step.call.class_name in ("Softmax", "Sigmoid"):
                step.kind = kind = "activation"  # ops.softmax(logits) as the output: relevance starts at the logits
                continue
            if kind is None:
                step.stop = _stop_reason(layer, self.graph.closed.get(step.call.name, ""))
                continue
            if not step.is_output and softmax:
                step.stop = "a softmax inside the model has no LRP rule (iNNvestigate refuses it too)"
            elif kind in ("depthwise", "separable") and (cfg.get("data_format") or "channels_last") != "channels_last":
                step.stop = "channels_first"
            elif kind == "bn":
                axis = cfg.get("axis", -1)
                axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
                rank = len(node_shape(layer))
                if not isinstance(axis, int) or axis not in (-1, rank - 1):
                    step.stop = (f"normalisation over axis {axis}; iNNvestigate's BatchNormalization rule "
                                 "scales the last axis")
            elif kind == "attention" and getattr(layer, "_use_gate", False):
                step.stop = "gated attention has no LRP rule here"
            elif kind in _RECURRENT_KINDS:
                step.stop = self._recurrent_stop(step)
            if kind == "matmul":  # ops.matmul(x, self.w) + self.b: the bias is the Dense rule's
                step.bias = _matmul_bias(self.graph, step.call)
            if kind in _KERNEL_KINDS and not step.stop:
                is_input = self._is_input_step(step, produced_by)
                step.is_input_rule = is_input
                step.rule = self.spec.rule_for("dense" if kind in ("einsum", "matmul") else kind, is_input)

    def _recurrent_stop(self, step) -> str:
        """Why the recurrent rules cannot apply to a recurrent layer ("" where they can)."""
        layer = step.call.layer
        subs = [layer]
        if step.kind == "bidirectional":
            subs = [layer.forward_layer, layer.backward_layer]
            if any(type(sub).__name__ not in recurrent.RECURRENT_KINDS or not _from_keras(sub) for sub in subs):
                return "a Bidirectional wrapper of a layer other than LSTM, GRU or SimpleRNN"
            mode = _config(layer).get("merge_mode")
            if mode not in ("concat", "sum", "ave"):
                return (f"a Bidirectional layer with merge_mode={mode!r}; the rule shares relevance between the "
                        "directions for 'concat', 'sum' and 'ave'")
        for sub in subs:
            cfg = _config(sub)
            if cfg.get("return_state"):
                return "a recurrent layer that returns its states (return_state=True)"
            if cfg.get("stateful"):  # not a stop: the forward pass itself cannot run on other batch sizes
                self.unsupported.append((step.call.name, step.call.class_name,
                                         "a stateful recurrent layer: its state carries over from batch to batch "
                                         "(and its batch size is fixed), so no sample can be analysed on its own"))
                return ""
            if cfg.get("time_major"):
                return "a time-major recurrent layer"
        mask = step.call.template[1].get("mask")
        if isinstance(mask, layergraph._Slot):  # Keras 3 passes the mask as a tensor
            step.masks = (step.call.inputs[mask.index],)
        if len(step.call.inputs) - len(step.masks) != 1:
            return "a recurrent layer given an initial state"
        return ""

    def _weights_only(self, key, depth: int = 0) -> bool:
        """Whether a tensor is used only as attention weights: each of its consumers is a product of
        two tensors (``ops.matmul(weights, v)``) that reads it as weights, or a one-input step that
        passes it on (dropout, a cast, a reshape) to such uses only."""
        consumers = self.graph.consumers.get(key, [])
        if not consumers or depth > 8 or key in self.graph.outputs:
            return False
        for c in consumers:
            kind = layer_kind(c.layer, len(c.inputs))
            if kind == "bilinear":
                if not self._is_weights(key) or all(self._is_weights(k) for k in c.inputs):
                    return False
            elif len(c.inputs) == 1 and len(c.outputs) == 1 and kind in ("identity", "gradient"):
                if not self._weights_only(c.outputs[0], depth + 1):
                    return False
            else:
                return False
        return True

    def _is_weights(self, key, depth: int = 0) -> bool:
        """Whether a tensor is attention weights: a softmax inside the model, through one-input steps
        that pass it on (dropout, a cast, a reshape or transpose)."""
        producer = self.graph.producer.get(key)
        if producer is None or producer.is_input or depth > 8:
            return False
        kind = layer_kind(producer.layer, len(producer.inputs))
        if _is_softmax_call(producer, kind):
            return True
        if len(producer.inputs) == 1 and kind in ("identity", "gradient"):
            return self._is_weights(producer.inputs[0], depth + 1)
        return False

    def _bilinear(self, call, xs, r):
        """A product of two tensors (AttnLRP, Achtibat et al. 2024): where one is attention weights
        (:meth:`_is_weights`), the epsilon rule through the other with the weights held constant, as
        for MultiHeadAttention (Ali et al. 2022); else the epsilon rule with each input's share
        halved (the uniform rule): ``R_a = a * J_a^T (r / (2 (z + eps sign z)))``."""
        weights = [self._is_weights(k) for k in call.inputs]
        if sum(weights) != 1:
            weights = [False, False]
        eps = self._linearised_epsilon
        signals = [i for i, w in enumerate(weights) if not w]
        if len(signals) == 2 and call.inputs[0] == call.inputs[1]:  # x times itself: one input, all of it
            signals = [0]
        with tf.GradientTape(persistent=True) as tape:
            ins = [x if i in signals else tf.stop_gradient(x) for i, x in enumerate(xs)]
            for i in signals:
                tape.watch(ins[i])
            z = _wide(call(ins)[0])
        s = r / ((z + (tf.cast(tf.greater_equal(z, 0), z.dtype) * 2 - 1) * eps) * (len(signals) if len(
            signals) > 1 else 1))
        out = [xs[i] * tape.gradient(z, ins[i], output_gradients=s) if i in signals else tf.zeros_like(xs[i])
               for i in range(len(xs))]
        del tape
        return out

    def _is_input_step(self, step, produced_by) -> bool:
        """iNNvestigate's ``is_input_layer``: every input comes from an input layer (through reshapes only)."""
        keys = list(step.call.inputs)
        seen = set()
        while keys:
            k = keys.pop()
            p = produced_by.get(k)
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if p.kind == "input":
                continue
            if type(p.call.layer).__name__ in _SHAPE_ONLY:
                keys.extend(p.call.inputs)
                continue
            return False
        return True

    def _walk_back(self, reached, blocked: set):
        """The steps the backward pass runs, from the output down: ``(step, stopped)``.

        A step runs when relevance reached all its outputs (``reached(key)``); a step without a
        rule (``stopped``) passes nothing on, and neither does any step whose output it reads:
        their inputs go into ``blocked``, so that a layer gets relevance from all its consumers or
        from none. Steps whose outputs lead to no relevance are left out.
        """
        for step in reversed(self._steps):
            c = step.call
            if step.kind == "input":
                continue
            if any(k in blocked for k in c.outputs):
                blocked.update(c.inputs)
                continue
            if step.stop and any(reached(k) for k in c.outputs):  # a stop is one wherever relevance reaches it
                blocked.update(c.inputs)
                yield step, True
                continue
            if not all(reached(k) for k in c.outputs):
                continue
            if step.stop:
                blocked.update(c.inputs)
            yield step, bool(step.stop)

    def _find_stops(self) -> None:
        """Which layers on the way to the output stop relevance, and which selected layers it misses."""
        reached, blocked = {self._output_key}, set()
        for step, stopped in self._walk_back(reached.__contains__, blocked):
            c = step.call
            if stopped:
                outer = self._opened_layer(c)
                inside = f"{c.class_name} inside its call(): {step.stop}"
                self.stops.append((c.name, c.class_name, step.stop) if outer is None else
                                  (outer, self.graph.alias_classes[outer], inside))
            elif step.kind != "embedding":
                reached.update(k for k in c.inputs if k not in step.masks)
        self.stops = list(dict.fromkeys(reversed(self.stops)))  # in model order, a custom layer's stops once
        self.blocked = [n for n in self.layer_names if self._key_of(n) in blocked]

    def _opened_layer(self, call) -> Optional[str]:
        """The name of the (outermost) custom layer whose call() made ``call``, or None: a stop or a
        default layer is named by the user's layer, not by a layer or operation inside it."""
        aliases = self.graph.aliases if self.graph is not None else {}
        return next((s for s in call.scope if s in aliases), None)

    def _default_layers(self) -> List[str]:
        """Every layer but the input layers, as the user's model has them: a custom layer by its own
        name (not the layers inside it), the Keras operations between layers left out but those that
        join tensors (``x + residual``), which are columns of the callback too."""
        aliases = {k: n for n, k in (self.graph.aliases if self.graph is not None else {}).items()}
        joins = self.graph.joins() if self.graph is not None else {}
        out = []
        for s in self._steps:
            c = s.call
            named = [aliases[k] for k in c.outputs if k in aliases]
            if named:
                out.extend(named)
            elif c.first and s.kind != "input" and self._opened_layer(c) is None and (
                    not _is_operation(c.layer) or c.name in joins):
                out.append(c.name)
        return list(dict.fromkeys(out))

    def _key_of(self, name: str):
        if not hasattr(self, "_keys"):
            self._keys = {s.call.name: s.call.outputs[0] for s in self._steps if s.call.first}
            self._keys.update(self.graph.aliases if self.graph is not None else {})
        return self._keys.get(name)

    @property
    def note(self) -> str:
        if self.unsupported:
            parts = [f"{n} ({c}: {why})" for n, c, why in self.unsupported]
            return "the native LRP engine cannot analyse the model: " + "; ".join(parts)
        if not self.stops:
            return ""
        by_class: Dict[Tuple[str, str], List[str]] = {}
        for name, cls, why in self.stops:
            by_class.setdefault((cls, why), []).append(name)
        parts = [f"{cls} ×{len(names)} ({_summary(names)}: {why})" for (cls, why), names in by_class.items()]
        text = "LRP relevance stops at layers without an LRP rule: " + "; ".join(parts)
        if self.blocked:
            text += (f". The {len(self.blocked)} layer(s) before them have no LRP flows: {_summary(self.blocked, 5)}"
                     "; the layers after them have theirs")
        else:  # a stop at the input's side (an embedding of tokens, a Discretization): nothing shown lacks relevance
            text += ". No layer shown lies before them: every column has its LRP flows"
        return text

    def check(self) -> None:
        """Raise :class:`UnsupportedLayerError` (a ValueError) if the model as a whole cannot be analysed."""
        if self.unsupported:
            raise UnsupportedLayerError(self.note, self.unsupported)

    def rules(self) -> Dict[str, str]:
        """``{layer name: rule}`` for every layer that is not an input (for reports and tests)."""
        out = {}
        for s in self._steps:
            name = s.call.name
            if s.kind == "input" or not s.call.first:
                continue
            if s.stop:
                out[name] = f"none: {s.stop}"
            elif s.rule is not None:
                out[name] = repr(s.rule)
            elif s.kind == "bn":
                out[name] = (f"{self.spec.bn_rule!r} on the linearised BatchNormalization "
                             f"({self.spec.bn_fuse_mode})")
            else:
                out[name] = RULE_TABLE.get(s.kind, s.kind)
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
            relevance reaches (one below a layer without a rule, see :attr:`stops`; one after which
            the graph does not lead to the output; the input of an Embedding) is absent.
            Non-finite weights give non-finite relevance, not an error.

        Raises
        ------
        UnsupportedLayerError
            If the model as a whole cannot be analysed (see :attr:`note`).
        """
        self.check()
        self.graph.refresh()  # constants computed inside custom layers, for the weights of now
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.graph.inputs):
            raise ValueError(f"x: the model has {len(self.graph.inputs)} input(s), got {len(xs)} array(s)")
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

    def _forward(self, xs) -> Dict[tuple, tf.Tensor]:
        # a float64 Input feeds float32 layers (Keras casts inside them): the rules read it in float32
        values: Dict[tuple, tf.Tensor] = {k: _float32(v) if v.dtype.is_floating and v.dtype != tf.float32 else v
                                          for k, v in zip(self.graph.inputs, self.graph.input_values(xs))}
        for step in self._steps:
            c = step.call
            if step.kind == "input":
                continue
            ins = [values[k] for k in c.inputs]
            ys = [self._forward_output(step, ins)] if step.is_output else c(ins)
            for k, y in zip(c.outputs, ys):
                # relevance in float32: under a mixed-precision policy layers compute in float16,
                # while the rules read the float32 weights; a NumPy float64 constant in an
                # operation (x / np.sqrt(8.0)) makes float64, which the next layer casts back
                values[k] = _float32(y) if y.dtype.is_floating and y.dtype != tf.float32 else y
        return values

    def _batch(self, xs) -> Dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._relevance_tensors(xs).items()}

    def _relevance_tensors(self, xs) -> Dict[str, tf.Tensor]:
        """One batch's forward and LRP passes: the relevance tensors, by layer name (eager or traced)."""
        values = self._forward(xs)
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
        blocked = set()

        def get(k):
            if k not in final:
                ts = rel[k]
                acc = ts[0]
                for t in ts[1:]:  # Keras' Add layer: a running sum, in the order the relevances arrived
                    acc = acc + t
                final[k] = acc
            return final[k]

        for step, stopped in self._walk_back(rel.__contains__, blocked):
            if stopped:
                continue
            c = step.call
            rs = [get(k) for k in c.outputs]
            r_in = self._reverse(step, [values[k] for k in c.inputs], [values[k] for k in c.outputs], rs)
            if r_in is None:
                continue
            for k, r in zip(c.inputs, r_in):
                if k not in step.masks:
                    rel.setdefault(k, []).append(r)
        # relevance at each layer's output: its first call's first output (as the worker's mapping)
        out = {}
        for name in self.layer_names:
            key = self._key_of(name)
            if key is not None and key in rel and key not in blocked:
                out[name] = get(key)
        return out

    def compiled(self, batch_size: int) -> CompiledRelevance:
        """The same relevance as :meth:`relevance`, from one traced TensorFlow graph per batch size.

        See :class:`CompiledRelevance`: it checks itself against this engine's eager result before
        it is used, and falls back to it where the weights or the inputs are not finite.
        """
        self.check()
        return CompiledRelevance(self, batch_size)

    def _forward_output(self, step, ins):
        """The output layer without its activation (flowcallback's ``model_config_without_softmax``)."""
        kind = step.kind
        if kind in ("softmax", "activation"):
            return ins[0]
        if kind in _KERNEL_KINDS:
            lin = _matmul_linear(step.call) if kind == "matmul" else _linear(step.call.layer, kind, ins[0].dtype)
            return lin(ins[0], lin.weights())
        return step.call(ins)[0]

    @property
    def _linearised_epsilon(self) -> float:
        """The epsilon of the rules for LayerNormalization and attention: the analyzer's, else 1e-7."""
        for rule in (self.spec.kernel_rule, self.spec.dense_rule):
            if isinstance(rule, lrp_rules.EpsilonRule):
                return rule.epsilon
        return lrp_rules.FUZZ

    def _epsilon_through(self, f, x, r):
        """Epsilon-LRP through ``z = f(x)``, a map that is affine in ``x``: ``x * J^T (r / (z + eps sign z))``."""
        eps = self._linearised_epsilon
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = _wide(f(x))
        s = r / (z + (tf.cast(tf.greater_equal(z, 0), z.dtype) * 2 - 1) * eps)
        return x * tape.gradient(z, x, output_gradients=s)

    def _reverse(self, step, xs, ys, rs):
        kind = step.kind
        call = step.call
        layer = call.layer
        if kind != "embedding":  # counts and ids (a multi-hot TextVectorization) read as numbers by the rules
            xs = [tf.cast(x, tf.float32) if x.dtype.is_integer or x.dtype.is_bool else x for x in xs]
        if kind in _KERNEL_KINDS:
            lin = _matmul_linear(call, step.bias) if kind == "matmul" else _linear(layer, kind, xs[0].dtype)
            return [step.rule.apply(lin, xs[0], rs[0])]
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
        if kind == "constant":  # its value does not follow its input's: none reaches the input
            return [tf.zeros_like(x) for x in xs]
        same_shape = len(xs) == len(ys) and all(x.shape == y.shape for x, y in zip(xs, ys))
        if kind in ("activation", "softmax", "identity") and same_shape:
            return rs  # one-to-one maps (iNNvestigate passes relevance through Activation layers unchanged)
        if kind == "multiply":
            return self._multiply(call, xs, rs[0])
        if kind == "bilinear":
            return self._bilinear(call, xs, rs[0])
        if kind == "layernorm":
            return [self._layer_normalization(layer, xs[0], rs[0])]
        if kind == "attention":
            return self._attention(call, xs, rs[0])
        if kind in _RECURRENT_KINDS:
            return self._recurrent(step, xs, ys, rs)
        if kind == "linear":
            # Z rule with the layer's own (unit or constant) weights: R_in = x * grad(R / z)
            with tf.GradientTape(persistent=True) as tape:
                for x in xs:
                    tape.watch(x)
                z = _wide(call(xs)[0])
            ratio = lrp_rules.safe_divide(rs[0], z)
            grads = [tape.gradient(z, x, output_gradients=ratio, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                     for x in xs]
            del tape
            return _once([x * g for x, g in zip(xs, grads)], xs)
        # the plain gradient (max pooling, reshapes, concatenation, ReLU...)
        with tf.GradientTape(persistent=len(xs) > 1) as tape:
            for x in xs:
                tape.watch(x)
            y = [_wide(t) for t in call(xs)]
        grads = [tape.gradient(y, x, output_gradients=rs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                 for x in xs]
        del tape
        return _once(grads, xs)

    # -- rules for layers iNNvestigate has none for ------------------------------------------------
    def _recurrent(self, step, xs, ys, rs):
        """LSTM, GRU, SimpleRNN and Bidirectional (Arras et al. 2017; :mod:`.recurrent`), with
        Keras's mask: the call's ``mask`` tensor (Keras 3), or the one tf.keras 2 keeps on its input."""
        mask = step.call.template[1].get("mask")
        if isinstance(mask, layergraph._Slot):
            mask = xs[mask.index]
        else:
            mask = getattr(xs[0], "_keras_mask", None)
        fn = recurrent.bidirectional_relevance if step.kind == "bidirectional" else functools.partial(
            recurrent.recurrent_relevance, step.kind)
        r = fn(step.call.layer, xs[0], rs[0], self._linearised_epsilon, mask=mask, output=ys[0])
        return [r] + [None] * (len(xs) - 1)  # the mask's key is in step.masks: it gets nothing

    def _multiply(self, call, xs, r):
        """Signal-take-all (Arras et al. 2017): gates get no relevance, the other inputs share it evenly."""
        gates = [self._is_gate(k) for k in call.inputs]
        n_signals = len(xs) - sum(gates)
        if n_signals == 0 or n_signals == len(xs):  # no gate to tell apart: an even split (Achtibat et al. 2024)
            gates, n_signals = [False] * len(xs), len(xs)
        out = []
        for x, gate in zip(xs, gates):
            out.append(tf.zeros_like(x) if gate else _unbroadcast(r / n_signals, x.shape))
        return out

    def _is_gate(self, key, depth: int = 0, scaled: bool = False) -> bool:
        """Whether a tensor is a gate: a sigmoid or hard sigmoid of something (through reshapes and
        constant element-wise steps, as MobileNetV3's ``ReLU(6)(x + 3) * (1 / 6)``)."""
        if depth == 0 and key in self._gates:
            return self._gates[key]
        found = False
        producer = self.graph.producer.get(key)
        if producer is not None and depth < 8 and not producer.is_input:
            layer = producer.layer
            cls = producer.class_name
            cfg = _config(layer) if hasattr(layer, "get_config") else {}
            act = _activation_name(layer) if ("activation" in cfg) else ""
            if act in ("sigmoid", "hard_sigmoid") or (cls in ("Sigmoid", "HardSigmoid") and _is_operation(layer)):
                found = True
            elif layer_kind(layer, len(producer.inputs)) == "constant":
                found = True  # a mask (a comparison, cast to the signal's dtype) or ops.ones_like: a constant factor
            elif cls == "ReLU" and scaled and cfg.get("max_value") not in (None, 0):
                found = True  # relu6(x + 3) / 6 is the hard sigmoid
            elif len(producer.inputs) == 1:
                kind = layer_kind(layer, 1)
                constant_step = kind == "identity" and (_is_operation(layer) or cls == "TFOpLambda")
                if constant_step or cls in ("Reshape", "ExpandDims", "Squeeze"):
                    found = self._is_gate(producer.inputs[0], depth + 1, scaled or constant_step)
        if depth == 0:
            self._gates[key] = found
        return found

    def _layer_normalization(self, layer, x, r):
        """LayerNormalization with its scale ``1 / sqrt(var + eps)`` held constant (Ali et al. 2022)."""
        cfg = _config(layer)
        rank = x.shape.rank
        axes = cfg.get("axis", -1)
        axes = sorted(a % rank for a in (axes if isinstance(axes, (list, tuple)) else [axes]))
        eps = float(cfg.get("epsilon", 1e-3))
        rms = bool(cfg.get("rms_scaling", False))
        if rms:
            scale = tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=axes, keepdims=True) + eps)
        else:
            mean = tf.reduce_mean(x, axis=axes, keepdims=True)
            scale = tf.math.rsqrt(tf.reduce_mean(tf.square(x - mean), axis=axes, keepdims=True) + eps)
        scale = tf.stop_gradient(scale)
        shape = [1] * rank
        for a in axes:
            shape[a] = x.shape[a]
        gamma = (tf.reshape(tf.cast(_variable_value(layer.gamma), x.dtype), shape)
                 if cfg.get("scale", True) and getattr(layer, "gamma", None) is not None else 1.0)
        beta = (tf.reshape(tf.cast(_variable_value(layer.beta), x.dtype), shape)
                if cfg.get("center", True) and not rms and getattr(layer, "beta", None) is not None else 0.0)

        def f(t):
            centred = t if rms else t - tf.reduce_mean(t, axis=axes, keepdims=True)
            return centred * scale * gamma + beta

        return self._epsilon_through(f, x, r)

    def _attention(self, call, xs, r):
        """MultiHeadAttention with its attention probabilities held constant: relevance flows
        through the values only (Ali et al. 2022; AttnLRP, Achtibat et al. 2024)."""
        import inspect

        layer = call.layer
        targs, tkwargs = call.template
        bound = inspect.signature(layer.call).bind_partial(*targs, **tkwargs).arguments
        value_slot = bound.get("value")
        if not isinstance(value_slot, layergraph._Slot):
            raise ValueError(f"{call.name}: the attention's value is not a tensor of the model")
        _, scores = call(xs, return_attention_scores=True)
        scores = tf.stop_gradient(scores)

        def f(v):
            projected = layer._value_dense(v)
            return layer._output_dense(tf.einsum(layer._combine_equation, scores, projected))

        out = [tf.zeros_like(x) for x in xs]
        out[value_slot.index] = self._epsilon_through(f, xs[value_slot.index], r)
        return out


class CompiledRelevance:
    """A :class:`NativeLRP`'s forward and LRP passes traced into one ``tf.function``.

    Eagerly, every layer and every rule is one Python call per batch, and TensorFlow runs each of
    their operations alone; traced, the whole pass is one graph that TensorFlow schedules and runs
    without Python in between (about twice as fast on ResNet50, docs/performance.md). The last batch
    is padded to ``batch_size`` with copies of its first sample, so that the graph is traced once.

    The traced graph is optimised by TensorFlow (grappler), which may round differently or treat
    NaN differently from the eager operations. So it is used only where it gives the eager result:

    - :meth:`verify` compares it with the eager engine on a batch (relative difference at most
      ``rtol`` per layer, NaN at the same places); :attr:`usable` is False when it does not;
    - :meth:`relevance` runs the eager engine instead whenever the weights or the inputs hold a
      non-finite value (a diverged model), where only the eager operations are the reference.

    Parameters
    ----------
    engine : NativeLRP
    batch_size : int

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="hidden"),
    ...                           keras.layers.Dense(2, activation="softmax", name="out")])
    >>> compiled = NativeLRP(model, analyzer="lrp.z").compiled(batch_size=8)
    >>> x = np.random.default_rng(0).random((5, 4)).astype("float32")
    >>> compiled.verify(x)
    True
    >>> sorted(k for k, v in compiled.relevance(x).items() if v.shape[0] == 5)
    ['hidden', 'out']
    """

    def __init__(self, engine: NativeLRP, batch_size: int, rtol: float = 1e-5):
        self.engine = engine
        self.batch_size = int(batch_size)
        self.rtol = rtol
        self.usable = True
        self.difference = 0.0  # the largest relative difference found by verify()
        # no autograph: the pass is Python over the layer graph, with no control flow on tensors to
        # convert (and converting it printed hundreds of DeprecationWarnings on Python 3.13)
        self._fn = tf.function(engine._relevance_tensors, autograph=False)
        # Each fit's engine traces its own model copy once. TensorFlow counts the traces of every
        # engine in the process as one function's (by its code) and, after a notebook cell's fourth
        # fit, warns of "excessive retracing"; this function's own attribute (TensorFlow 2.14 to
        # 2.21) turns that warning off for it alone, leaving TensorFlow's state as it was.
        if hasattr(self._fn, "_omit_frequent_tracing_warning"):
            self._fn._omit_frequent_tracing_warning = True

    def _run(self, xs) -> Dict[str, np.ndarray]:
        n = len(xs[0])
        padded = []
        for a in xs:
            a = np.asarray(a)
            if n < self.batch_size:
                a = np.concatenate([a, np.repeat(a[:1], self.batch_size - n, axis=0)], axis=0)
            padded.append(tf.convert_to_tensor(a))
        out = self._fn(padded)
        return {k: v.numpy()[:n] for k, v in out.items()}

    def verify(self, x) -> bool:
        """Compare with the eager engine on ``x`` (at most one batch); sets and returns :attr:`usable`."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        xs = [np.asarray(a)[:self.batch_size] for a in xs]
        self.engine.graph.refresh()
        eager = self.engine._batch(xs)
        traced = self._run(xs)
        worst = 0.0
        ok = set(eager) == set(traced)
        for k in eager if ok else ():
            a, b = traced[k], eager[k]
            if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
                ok = False
                break
            finite = np.isfinite(b)
            if not np.array_equal(finite, np.isfinite(a)) or not np.array_equal(a[~finite], b[~finite]):
                ok = False
                break
            scale = float(np.abs(b[finite]).max()) if finite.any() else 0.0
            if scale > 0:
                worst = max(worst, float(np.abs(a[finite] - b[finite]).max()) / scale)
        self.difference = worst
        self.usable = ok and worst <= self.rtol
        return self.usable

    def relevance(self, x, weights_finite: Optional[bool] = None) -> Dict[str, np.ndarray]:
        """As :meth:`NativeLRP.relevance` with ``batch_size``; eager where :attr:`usable` is False or
        where the inputs or (``weights_finite=False``) the weights are not finite."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if weights_finite is None:
            weights_finite = all_finite(self.engine.model.get_weights())
        finite = weights_finite and all(np.isfinite(np.asarray(a, dtype="float64")).all()
                                        if np.issubdtype(np.asarray(a).dtype, np.floating) else True for a in xs)
        if not (self.usable and finite):
            return self.engine.relevance(x, batch_size=self.batch_size)
        self.engine.graph.refresh()  # held in variables, which the traced pass reads
        n = len(xs[0])
        parts: Dict[str, list] = {}
        for start in range(0, n, self.batch_size):
            for k, v in self._run([np.asarray(a)[start:start + self.batch_size] for a in xs]).items():
                parts.setdefault(k, []).append(v)
        return {k: (v[0] if len(v) == 1 else np.concatenate(v, axis=0)) for k, v in parts.items()}


def all_finite(weights) -> bool:
    """Whether every numeric array of ``weights`` is finite (a lookup layer's vocabulary, strings
    in tf.keras 2's weights, has no NaN to look for).

    >>> all_finite([np.ones(2), np.array(["a", "b"])]), all_finite([np.array([1.0, np.nan])])
    (True, False)
    """
    return all(np.isfinite(a).all() for a in map(np.asarray, weights)
               if np.issubdtype(a.dtype, np.number) or a.dtype == bool)


def node_shape(layer):
    """A layer's output shape (with the batch axis), on Keras 2 and 3."""
    try:
        s = layer.output.shape
    except Exception:
        s = getattr(layer, "output_shape", None)
    return tuple(s) if s is not None else ()
