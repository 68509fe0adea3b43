"""LRP decomposition rules, written as eager TensorFlow to equal iNNvestigate 2.1.2 operation by operation.

Each rule maps the relevance ``r`` at the output of a linear map ``z = f(x; W, b)`` to the relevance
at its input ``x``. The linear map is a :class:`Linear`: a function of the input and of a dict of
weights (``"kernel"``, ``"depthwise_kernel"``, ``"pointwise_kernel"``... and optionally
``"bias"``), so that a rule can run the layer with modified weights (positive parts, squares, ones)
without copying the layer or touching its variables.

The arithmetic follows iNNvestigate's ``relevance_rule.py`` line by line (same operations in the
same order), because LRP divides by pre-activations that can be close to zero, where a different
order of rounding could show. The gradient of the linear map (a transposed convolution, a
transposed matrix product) comes from :class:`tf.GradientTape`, which emits the same gradient
kernels as iNNvestigate's ``tf.gradients``. The conventions are documented in ``docs/method.md``,
section "Native LRP engine".
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import tensorflow as tf

__all__ = [
    "Linear",
    "Rule",
    "ZRule",
    "EpsilonRule",
    "WSquareRule",
    "FlatRule",
    "AlphaBetaRule",
    "AlphaBetaXRule",
    "ZPlusFastRule",
    "BoundedRule",
    "RULES",
    "rule_from_name",
    "safe_divide",
]

#: iNNvestigate's ``safe_divide`` factor: Keras' fuzz factor ``backend.epsilon()``.
FUZZ = 1e-7


def safe_divide(a, b, factor: float = FUZZ):
    """``a / b`` with the zeros of ``b`` replaced by ``factor`` (iNNvestigate's ``safe_divide``)."""
    is_zero = tf.cast(tf.equal(b, tf.constant(0, dtype=b.dtype)), b.dtype)
    return a / (b + factor * is_zero)


def positive(w):
    """``w * (w > 0)``: as iNNvestigate writes it, so that a NaN weight stays NaN."""
    return w * tf.cast(w > 0, w.dtype)


def negative(w):
    """``w * (w < 0)``."""
    return w * tf.cast(w < 0, w.dtype)


def keep_positives(x):
    return x * tf.cast(tf.greater(x, 0), x.dtype)


def keep_negatives(x):
    return x * tf.cast(tf.less(x, 0), x.dtype)


class Linear:
    """A layer's linear part ``x -> f(x; weights)`` with its activation removed.

    Parameters
    ----------
    fn : callable
        ``fn(x, weights)`` computes the layer's pre-activation for input ``x`` with the weights in
        the dict ``weights``; the bias is added when ``"bias"`` is in the dict.
    kernels : dict
        The weights that are not the bias, by name (current values, as tensors).
    bias : tensor or None
        The bias, or None when the layer has none.
    """

    def __init__(self, fn: Callable, kernels: Dict[str, tf.Tensor], bias: Optional[tf.Tensor]):
        self.fn = fn
        self.kernels = kernels
        self.bias = bias

    def weights(self, transform: Optional[Callable] = None, bias: bool = True,
                bias_transform: Optional[Callable] = None):
        """The weights dict, kernels passed through ``transform``, with the bias if asked and present."""
        t = transform or (lambda w: w)
        w = {k: t(v) for k, v in self.kernels.items()}
        if bias and self.bias is not None:
            w["bias"] = (bias_transform or t)(self.bias)
        return w

    def __call__(self, x, weights):
        return self.fn(x, weights)


def _grad(fns_and_inputs: Sequence[Tuple[Callable, tf.Tensor]], tmp_fn: Callable):
    """Run each ``f(x)`` under one tape, compute ``tmp = tmp_fn([z...])``, return (zs, gradients).

    The gradient of ``z_i = f_i(x_i)`` with respect to ``x_i`` is taken with output gradient
    ``tmp`` (the same for every pair), as iNNvestigate's ``tf.gradients(Zs, Xs, grad_ys=tmp)``.
    """
    xs = [x for _, x in fns_and_inputs]
    with tf.GradientTape(persistent=len(xs) > 1) as tape:
        for x in xs:
            tape.watch(x)
        zs = [f(x) for f, x in fns_and_inputs]
    tmp = tmp_fn(zs)
    grads = []
    for z, x in zip(zs, xs):
        g = tape.gradient(z, x, output_gradients=tmp, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads.append(g)
    del tape
    return zs, grads


class Rule:
    """A rule: ``apply(linear, x, r) -> relevance at x``."""

    #: iNNvestigate's class name, for messages and docs
    name = "Rule"

    def apply(self, lin: Linear, x, r):  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({params})"


class ZRule(Rule):
    """``R_in = x * W^T (R / z)`` with ``z = Wx + b`` and zeros of ``z`` replaced by 1e-7 (``ZRule``)."""

    name = "Z"

    def __init__(self, bias: bool = True):
        self.bias = bool(bias)

    def apply(self, lin, x, r):
        w = lin.weights(bias=self.bias)
        _, (g,) = _grad([(lambda t: lin(t, w), x)], lambda zs: safe_divide(r, zs[0]))
        return x * g


class EpsilonRule(Rule):
    """``R_in = x * W^T (R / (z + eps * sign(z)))`` with ``sign(0) = +1`` (``EpsilonRule``)."""

    name = "Epsilon"

    def __init__(self, epsilon: float = 1e-7, bias: bool = True):
        if not epsilon > 0:
            raise ValueError(f"epsilon: expected a number > 0 (as iNNvestigate), got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.bias = bool(bias)

    def apply(self, lin, x, r):
        w = lin.weights(bias=self.bias)
        eps = self.epsilon

        def tmp(zs):
            z = zs[0]
            # iNNvestigate: z + (cast(z >= 0) * 2 - 1) * eps, so sign(0) = +1
            return r / (z + (tf.cast(tf.greater_equal(z, 0), z.dtype) * 2 - 1) * eps)

        _, (g,) = _grad([(lambda t: lin(t, w), x)], tmp)
        return x * g


class WSquareRule(Rule):
    """``R_in = W² (R / (W² 1))``: squared weights, no bias, not weighted by x (``WSquareRule``)."""

    name = "WSquare"

    @staticmethod
    def transform(w):
        # iNNvestigate writes ``x ** 2``, a Pow op that TensorFlow's graph optimizer rewrites as Square
        return tf.square(w)

    def apply(self, lin, x, r):
        w = lin.weights(self.transform, bias=False)
        zs_ones = lin(tf.ones_like(x), w)
        _, (g,) = _grad([(lambda t: lin(t, w), x)], lambda _: safe_divide(r, zs_ones))
        return g


class FlatRule(WSquareRule):
    """As :class:`WSquareRule` with all weights set to one (``FlatRule``)."""

    name = "Flat"

    @staticmethod
    def transform(w):
        return tf.ones_like(w)


def _signed_parts(lin, x, bias: bool):
    """Positive and negative weights (with the bias split alike, or left out) and inputs, for alpha-beta rules."""
    return (lin.weights(positive, bias=bias), lin.weights(negative, bias=bias), keep_positives(x), keep_negatives(x))


class AlphaBetaRule(Rule):
    """``alpha * R+ - beta * R-`` (``AlphaBetaRule``).

    Inputs, weights and the bias are each split into positive and negative parts: the activator
    relevance uses ``z = (W+ x+ + b+) + (W- x- + b-)``, the inhibitor ``z = (W- x+ + b-) + (W+ x- + b+)``;
    with ``bias=False`` the bias is left out of both.
    """

    name = "AlphaBeta"

    def __init__(self, alpha=None, beta=None, bias: bool = True):
        self.alpha, self.beta = check_alpha_beta(alpha, beta)
        self.bias = bool(bias)

    def apply(self, lin, x, r):
        wp, wn, xp, xn = _signed_parts(lin, x, self.bias)

        def part(w1, w2):
            (z1, z2), (g1, g2) = _grad([(lambda t: lin(t, w1), xp), (lambda t: lin(t, w2), xn)],
                                       lambda zs: safe_divide(r, zs[0] + zs[1]))
            return xp * g1 + xn * g2

        activator = part(wp, wn)
        if self.beta:  # iNNvestigate computes the inhibitor only when beta is not zero
            inhibitor = part(wn, wp)
            return activator * self.alpha - inhibitor * self.beta
        return activator


class AlphaBetaXRule(Rule):
    """Alexander Binder's alpha-beta variant (``AlphaBetaXRule``), iNNvestigate's BN rule in the presets.

    ``(a0 * r_pp + b1 * r_nn) - (b0 * r_pn + b1 * r_np)`` where ``r_pn`` is the relevance through the
    positive inputs and negative weights, and so on; the weighting ``b1 * r_nn`` (not ``a1``) is
    iNNvestigate's, kept as is.
    """

    name = "AlphaBetaX"

    def __init__(self, alpha=(0.5, 0.5), beta=(0.5, 0.5), bias: bool = True):
        self.alpha = tuple(alpha)
        self.beta = tuple(beta)
        self.bias = bool(bias)

    def apply(self, lin, x, r):
        wp, wn, xp, xn = _signed_parts(lin, x, self.bias)

        def fn(w, xs):
            _, (g,) = _grad([(lambda t: lin(t, w), xs)], lambda zs: safe_divide(r, zs[0]))
            return xs * g

        r_pp = fn(wp, xp)
        r_nn = fn(wn, xn)
        r_pos = r_pp * self.alpha[0] + r_nn * self.beta[1]
        r_pn = fn(wn, xp)
        r_np = fn(wp, xn)
        r_neg = r_pn * self.beta[0] + r_np * self.beta[1]
        return r_pos - r_neg


class ZPlusFastRule(Rule):
    """``x * W+^T (R / (W+ x))``, no bias, inputs assumed non-negative (``ZPlusFastRule``)."""

    name = "ZPlusFast"

    def apply(self, lin, x, r):
        w = lin.weights(positive, bias=False)
        _, (g,) = _grad([(lambda t: lin(t, w), x)], lambda zs: safe_divide(r, zs[0]))
        return x * g


class BoundedRule(Rule):
    """The z^B rule of Deep Taylor Decomposition for inputs within ``[low, high]`` (``BoundedRule``).

    ``z = Wx - (W+ low + W- high)``; ``R_in = x * W^T s - (low * W+^T s + high * W-^T s)`` with
    ``s = R / z``; biases are left out.
    """

    name = "Bounded"

    def __init__(self, low=-1, high=1):
        self.low = low
        self.high = high

    def apply(self, lin, x, r):
        w = lin.weights(bias=False)
        wp = lin.weights(positive, bias=False)
        wn = lin.weights(negative, bias=False)
        low = x * 0 + self.low  # iNNvestigate: Lambda(x * 0 + low), so a NaN input stays NaN
        high = x * 0 + self.high
        (a, b, c), (ga, gb, gc) = _grad(
            [(lambda t: lin(t, w), x), (lambda t: lin(t, wp), low), (lambda t: lin(t, wn), high)],
            lambda zs: safe_divide(r, zs[0] - (zs[1] + zs[2])),
        )
        return x * ga - (low * gb + high * gc)


def check_alpha_beta(alpha, beta):
    """iNNvestigate's ``assert_infer_lrp_alpha_beta_param``: alpha >= 1, beta >= 0, alpha - beta = 1."""
    if alpha is None and beta is None:
        raise ValueError("alpha, beta: give at least one of them")
    if alpha is not None and alpha < 1:
        raise ValueError(f"alpha: expected >= 1, got {alpha!r}")
    if beta is not None and beta < 0:
        raise ValueError(f"beta: expected >= 0, got {beta!r}")
    if alpha is None:
        alpha = beta + 1
    if beta is None:
        beta = alpha - 1
    if alpha - beta != 1:
        raise ValueError(f"alpha, beta: expected alpha - beta = 1, got alpha={alpha!r}, beta={beta!r}")
    return alpha, beta


#: Rules by iNNvestigate's names (``LRP_RULES`` plus its AlphaBetaX presets), with their defaults.
RULES: Dict[str, Callable[[], Rule]] = {
    "Z": ZRule,
    "Epsilon": EpsilonRule,
    "WSquare": WSquareRule,
    "Flat": FlatRule,
    "Alpha2Beta1": lambda: AlphaBetaRule(2, 1, bias=True),
    "Alpha2Beta1IgnoreBias": lambda: AlphaBetaRule(2, 1, bias=False),
    "Alpha1Beta0": lambda: AlphaBetaRule(1, 0, bias=True),
    "Alpha1Beta0IgnoreBias": lambda: AlphaBetaRule(1, 0, bias=False),
    "ZPlus": lambda: AlphaBetaRule(1, 0, bias=False),
    "ZPlusFast": ZPlusFastRule,
    "Bounded": BoundedRule,
    "AlphaBetaX1000": lambda: AlphaBetaXRule((1, 0), (0, 0)),
    "AlphaBetaX1010": lambda: AlphaBetaXRule((1, 0), (0, -1)),
    "AlphaBetaX1001": lambda: AlphaBetaXRule((1, 1), (0, 0)),
    "AlphaBetaX2m100": lambda: AlphaBetaXRule((2, 0), (1, 0)),
}


def rule_from_name(value, what: str) -> Rule:
    """A :class:`Rule` from a rule object, an iNNvestigate rule name (``"Flat"``) or ``(low, high)`` bounds."""
    if isinstance(value, Rule):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return BoundedRule(*value)
    if isinstance(value, str) and value in RULES:
        return RULES[value]()
    # iNNvestigate's rule classes are accepted by name (``rrule.AlphaBetaX2m100Rule``)
    cls_name = getattr(value, "__name__", None)
    if cls_name and cls_name.endswith("Rule") and cls_name[:-4] in RULES:
        return RULES[cls_name[:-4]]()
    raise ValueError(f"{what}: expected (low, high) bounds or one of the rule names {sorted(RULES)}, got {value!r}")
