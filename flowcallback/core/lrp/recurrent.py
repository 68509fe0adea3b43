"""LRP through Keras's recurrent layers: LSTM, GRU and SimpleRNN (and so Bidirectional).

The rules are those of Arras et al. (2017), "Explaining recurrent neural network predictions in
sentiment analysis" (WASSA; reference code: github.com/ArrasL/LRP_for_LSTM):

- a product of a gate and a signal (``o * tanh(c)``, ``i * g``, ``f * c``, ``z * h``) gives all its
  relevance to the signal, none to the gate (signal-take-all);
- a one-to-one activation (the ``tanh`` of the cell input and of the cell state) passes relevance
  through unchanged;
- a sum of signals (``c_t = f * c_{t-1} + i * g``; a GRU's ``h_t = z * h_{t-1} + (1 - z) * hh``) and
  the linear map of the cell input (``x_t W + h_{t-1} U + b``) share it with the epsilon rule,
  the bias and the stabiliser absorbing their share (their ``bias_factor=0``).

With the gates held constant, the step is a chain of such maps; relevance then runs back through
time, step by step, as the gradient does (``tf.scan``). Without biases and with a small epsilon, the
relevance of the input sequence sums to that of the output (tests/core/test_recurrent_lrp.py checks
it, and checks the LSTM against a NumPy transcription of the reference code).

Each function takes the layer's input ``x`` of shape ``(batch, time, features)`` and the relevance
``r`` of its output (``(batch, units)``, or ``(batch, time, units)`` with ``return_sequences``)
and returns the relevance of ``x``. The layer's own weights and activations are read from its cell.
"""
from __future__ import annotations

from typing import Tuple

import tensorflow as tf

__all__ = ["RECURRENT_KINDS", "recurrent_relevance", "recurrent_output", "bidirectional_relevance"]

#: The engine's kind of each recurrent layer class it has a rule for.
RECURRENT_KINDS = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}


def _signed(z, eps):
    """``z + eps * sign(z)``, with sign(0) = 1 (iNNvestigate's stabiliser)."""
    return z + (tf.cast(tf.greater_equal(z, 0), z.dtype) * 2 - 1) * eps


def _weights(cell, dtype) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(kernel, recurrent kernel, input bias, recurrent bias)`` as tensors of ``dtype`` (zeros
    for a bias the cell does not have)."""
    kernel = tf.cast(tf.convert_to_tensor(cell.kernel), dtype)
    recurrent = tf.cast(tf.convert_to_tensor(cell.recurrent_kernel), dtype)
    width = kernel.shape[-1]
    zeros = tf.zeros((width,), dtype)
    bias = getattr(cell, "bias", None) if getattr(cell, "use_bias", True) else None
    if bias is None:
        return kernel, recurrent, zeros, zeros
    bias = tf.cast(tf.convert_to_tensor(bias), dtype)
    if bias.shape.rank == 2:  # a GRU with reset_after: (input bias, recurrent bias)
        return kernel, recurrent, bias[0], bias[1]
    return kernel, recurrent, bias, zeros


def _time_major(x, go_backwards: bool):
    x = tf.transpose(x, [1, 0] + list(range(2, x.shape.rank)))
    return tf.reverse(x, [0]) if go_backwards else x


def _step_mask(mask, x, go_backwards: bool):
    """The mask as ``(time, batch, 1)`` booleans in processing order (all True without a mask)."""
    if mask is None:
        return tf.ones(tf.stack([tf.shape(x)[1], tf.shape(x)[0], 1]), tf.bool)
    return _time_major(tf.cast(mask, tf.bool)[..., None], go_backwards)


def _steps(kind: str, cell, x, go_backwards: bool, mask=None):
    """The forward pass, step by step, in processing order: the states and what the rules need, each
    of shape ``(time, batch, ...)``. At a masked step the states are kept, as Keras keeps them."""
    kernel, recurrent, b_in, b_rec = _weights(cell, x.dtype)
    units = recurrent.shape[0]
    xs = _time_major(x, go_backwards)
    ms = _step_mask(mask, x, go_backwards)
    act = cell.activation
    batch = tf.shape(x)[0]
    h0 = tf.zeros((batch, units), x.dtype)

    if kind == "lstm":
        ract = cell.recurrent_activation

        def step(carry, inputs):
            (xt, mt), h, c = inputs, carry[0], carry[1]
            z = tf.matmul(xt, kernel) + tf.matmul(h, recurrent) + b_in + b_rec
            i, f, g_pre, o = tf.split(z, 4, axis=-1)  # Keras's gate order
            i, f, o, g = ract(i), ract(f), ract(o), act(g_pre)
            c_new = f * c + i * g
            return (tf.where(mt, o * act(c_new), h), tf.where(mt, c_new, c), i, f, g, g_pre)

        init = (h0, h0, h0, h0, h0, h0)
    elif kind == "gru":
        ract = cell.recurrent_activation
        reset_after = bool(getattr(cell, "reset_after", False))

        def step(carry, inputs):
            (xt, mt), h = inputs, carry[0]
            x_z, x_r, x_h = tf.split(tf.matmul(xt, kernel) + b_in, 3, axis=-1)
            u_z, u_r, u_h = tf.split(recurrent, 3, axis=-1)
            if reset_after:
                r_z, r_r, r_h = tf.split(tf.matmul(h, recurrent) + b_rec, 3, axis=-1)
                zg, rg = ract(x_z + r_z), ract(x_r + r_r)
                hh_pre = x_h + rg * r_h
            else:
                zg, rg = ract(x_z + tf.matmul(h, u_z)), ract(x_r + tf.matmul(h, u_r))
                hh_pre = x_h + tf.matmul(rg * h, u_h)
            hh = act(hh_pre)
            return (tf.where(mt, zg * h + (1 - zg) * hh, h), zg, rg, hh, hh_pre)

        init = (h0, h0, h0, h0, h0)
    else:  # SimpleRNN
        def step(carry, inputs):
            (xt, mt), h = inputs, carry[0]
            pre = tf.matmul(xt, kernel) + tf.matmul(h, recurrent) + b_in
            return (tf.where(mt, act(pre), h), pre)

        init = (h0, h0)
    return tf.scan(step, (xs, ms), initializer=init), xs, ms, (kernel, recurrent, b_in, b_rec)


def _config(layer, key, default=None):
    return layer.get_config().get(key, default)


def _outputs(layer, h, ms):
    """The output sequence of the states ``h`` (time-major): at a masked step, the state kept, or
    zeros where the layer has ``zero_output_for_mask`` (Keras sets it in a Bidirectional that
    returns sequences)."""
    return tf.where(ms, h, tf.zeros_like(h)) if getattr(layer, "zero_output_for_mask", False) else h


def recurrent_output(kind: str, layer, x, mask=None):
    """The layer's output computed as the rules see it (gates and states from :func:`_steps`):
    ``(batch, units)``, or ``(batch, time, units)`` in processing order with ``return_sequences``
    (a masked step repeats the previous output, as Keras does)."""
    states, _, ms, _ = _steps(kind, layer.cell, x, bool(_config(layer, "go_backwards", False)), mask)
    h = states[0]
    if _config(layer, "return_sequences", False):
        return tf.transpose(_outputs(layer, h, ms), [1, 0, 2])
    return h[-1]


def _check_output(layer, mine, output) -> None:
    """Raise (also inside a traced graph) where the output the rules follow is not the layer's own:
    relevance would then be that of another computation."""
    if output is None:
        return
    output = tf.cast(output, mine.dtype)
    # under a mixed-precision policy the layer computes in float16 (or bfloat16), the rules in
    # float32: the tolerance is that of the layer's own precision
    low = tf.as_dtype(getattr(layer, "compute_dtype", None) or "float32").size < 4
    rtol, atol = (3e-2, 1e-2) if low else (1e-3, 1e-4)
    tf.debugging.assert_near(
        mine, output, rtol=rtol, atol=atol * tf.reduce_max(tf.abs(output)) + 1e-6,
        message=f"{layer.name}: the forward pass the recurrent LRP rules follow is not the layer's own "
                "(a configuration they do not know); its relevance would be another computation's")


def recurrent_relevance(kind: str, layer, x, r, eps: float, mask=None, output=None):
    """Relevance of the input sequence ``x`` of an LSTM, GRU or SimpleRNN layer, from ``r`` at its output.

    Parameters
    ----------
    kind : {"lstm", "gru", "rnn"}
    layer : keras layer
        The recurrent layer (its ``cell`` holds the weights; ``go_backwards`` and
        ``return_sequences`` come from its config).
    x : tf.Tensor of shape (batch, time, features)
    r : tf.Tensor of shape (batch, units) or (batch, time, units)
    eps : float
        The stabiliser of the epsilon rules.
    mask : tf.Tensor of shape (batch, time), optional
        Keras's mask (``Embedding(mask_zero=True)``, ``Masking``): a masked step keeps the states,
        so the relevance of its states passes to the previous step's whole, and its input gets none.
    output : tf.Tensor, optional
        The layer's own output: where given, the output of the states the rules follow must equal
        it (``tf.debugging.assert_near``), or this raises ``InvalidArgumentError``.

    Returns
    -------
    tf.Tensor of the shape of ``x``
    """
    go_backwards = bool(_config(layer, "go_backwards", False))
    states, xs, ms, (kernel, recurrent, _, _) = _steps(kind, layer.cell, x, go_backwards, mask)
    h = states[0]
    units = recurrent.shape[0]
    if _config(layer, "return_sequences", False):
        _check_output(layer, tf.transpose(_outputs(layer, h, ms), [1, 0, 2]), output)
        r_out = _outputs(layer, tf.transpose(r, [1, 0, 2]), ms)  # processing order; a zero output passes none
    else:  # only the last step's output is returned
        _check_output(layer, h[-1], output)
        r_out = tf.concat([tf.zeros_like(h[:-1]), r[None]], axis=0)
    h_prev = tf.concat([tf.zeros_like(h[:1]), h[:-1]], axis=0)

    if kind == "lstm":
        _, c, i, f, g, g_pre = states
        c_prev = tf.concat([tf.zeros_like(c[:1]), c[:-1]], axis=0)
        w_g, u_g = kernel[:, 2 * units:3 * units], recurrent[:, 2 * units:3 * units]

        def back(carry, inputs):
            r_h_next, r_c_next = carry[0], carry[1]
            r_o, c_t, c_p, i_t, f_t, g_t, gp_t, x_t, h_p, m_t = inputs
            r_c = r_c_next + r_h_next + r_o  # h = o * act(c): all of h's relevance to c
            share = r_c / _signed(c_t, eps)  # c = f * c_prev + i * g
            r_c_prev = f_t * c_p * share
            s = i_t * g_t * share / _signed(gp_t, eps)  # g = act(x W + h U + b), act passed through
            r_x = x_t * tf.matmul(s, w_g, transpose_b=True)
            return (tf.where(m_t, h_p * tf.matmul(s, u_g, transpose_b=True), r_h_next + r_o),
                    tf.where(m_t, r_c_prev, r_c_next), tf.where(m_t, r_x, tf.zeros_like(r_x)))

        elems = (r_out, c, c_prev, i, f, g, g_pre, xs, h_prev, ms)
        zeros = tf.zeros_like(h[0])
        init = (zeros, zeros, tf.zeros_like(xs[0]))
    elif kind == "gru":
        _, zg, rg, hh, hh_pre = states
        reset_after = bool(getattr(layer.cell, "reset_after", False))
        w_h, u_h = kernel[:, 2 * units:], recurrent[:, 2 * units:]

        def back(carry, inputs):
            r_h_next = carry[0]
            r_o, h_t, h_p, z_t, r_t, hh_t, hp_t, x_t, m_t = inputs
            r_h = r_h_next + r_o
            share = r_h / _signed(h_t, eps)  # h = z * h_prev + (1 - z) * hh
            s = (1 - z_t) * hh_t * share / _signed(hp_t, eps)  # hh = act(x W + r * (h U + b) [or (r * h) U])
            through_u = tf.matmul(s * r_t if reset_after else s, u_h, transpose_b=True)
            r_h_prev = z_t * h_p * share + h_p * (through_u if reset_after else r_t * through_u)
            r_x = x_t * tf.matmul(s, w_h, transpose_b=True)
            return (tf.where(m_t, r_h_prev, r_h), tf.where(m_t, r_x, tf.zeros_like(r_x)))

        elems = (r_out, h, h_prev, zg, rg, hh, hh_pre, xs, ms)
        init = (tf.zeros_like(h[0]), tf.zeros_like(xs[0]))
    else:
        _, pre = states

        def back(carry, inputs):
            r_h_next = carry[0]
            r_o, p_t, x_t, h_p, m_t = inputs
            s = (r_h_next + r_o) / _signed(p_t, eps)  # h = act(x W + h_prev U + b), act passed through
            r_x = x_t * tf.matmul(s, kernel, transpose_b=True)
            return (tf.where(m_t, h_p * tf.matmul(s, recurrent, transpose_b=True), r_h_next + r_o),
                    tf.where(m_t, r_x, tf.zeros_like(r_x)))

        elems = (r_out, pre, xs, h_prev, ms)
        init = (tf.zeros_like(h[0]), tf.zeros_like(xs[0]))
    carried = tf.scan(back, elems, initializer=init, reverse=True)
    r_x = carried[-1]  # (time, batch, features), processing order
    if go_backwards:
        r_x = tf.reverse(r_x, [0])
    return tf.transpose(r_x, [1, 0, 2])


def bidirectional_relevance(layer, x, r, eps: float, mask=None, output=None):
    """Relevance of the input of a ``Bidirectional`` LSTM, GRU or SimpleRNN, from ``r`` at its output.

    ``merge_mode="concat"`` gives each direction its half of ``r``; ``"sum"`` and ``"ave"`` share
    ``r`` between the directions in proportion to their outputs (the epsilon rule of a sum). The
    backward layer's outputs, which Keras reverses in time before merging them, are taken back to
    its processing order. ``mask`` and ``output`` as for :func:`recurrent_relevance`.
    """
    fwd, bwd = layer.forward_layer, layer.backward_layer
    kinds = [RECURRENT_KINDS[type(sub).__name__] for sub in (fwd, bwd)]
    sequences = bool(_config(fwd, "return_sequences", False))
    mode = layer.merge_mode
    out_f = out_b = None
    if mode == "concat":
        r_f, r_b = tf.split(r, 2, axis=-1)
        if output is not None:
            out_f, out_b = tf.split(output, 2, axis=-1)
            out_b = tf.reverse(out_b, [1]) if sequences else out_b
    else:  # "sum", "ave": y = y_f + y_b (halved); the halving does not change the shares
        y_f, y_b = (recurrent_output(k, sub, x, mask) for k, sub in zip(kinds, (fwd, bwd)))
        if sequences:
            y_b = tf.reverse(y_b, [1])
        _check_output(layer, (y_f + y_b) * (0.5 if mode == "ave" else 1.0), output)
        share = r / _signed(y_f + y_b, eps)
        r_f, r_b = y_f * share, y_b * share
    if sequences:
        r_b = tf.reverse(r_b, [1])  # to the backward layer's own (processing) order
    return (recurrent_relevance(kinds[0], fwd, x, r_f, eps, mask, out_f)
            + recurrent_relevance(kinds[1], bwd, x, r_b, eps, mask, out_b))
