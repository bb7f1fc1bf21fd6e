"""The exact GELU and the layer norm as one compiled loop each way on TensorFlow, gradients by hand.

Outside XLA, TensorFlow's graph runs a formula op by op, one pass over memory each: the exact GELU
``0.5 z (1 + erf(z / sqrt 2))`` is five ops forward and about ten in its autodiff gradient, Keras'
layer norm some ten forward and twenty back, each op reading and writing the whole (B, L, C) tensor.
Here the forward and the gradient are each one ``tf.function(jit_compile=True)`` call, which XLA
fuses into one loop (reductions apart); the gradient is the formula's, written out, so autodiff never
expands the forward. ``bench/RESULTS.md`` ("The GELU and the layer norm, each one compiled loop") has
the measurements. Inside an XLA step (``jit_compile=True``) the calls are inlined.

On JAX and PyTorch, XLA and the native kernels already fuse these: there the functions are
``keras.ops.gelu`` and ``keras.layers.LayerNormalization`` unchanged. The numbers are the same formulas,
fp32 rounding of another evaluation order apart (``tests/tf/test_fused.py`` checks them against the
formulas in float64).

The compiled functions are written in TensorFlow's ops, as they only run there.

Shapes: x (..., C); the layer norm normalises over C, its gamma and beta are (C,); T = prod(...) rows.
"""

from __future__ import annotations

import functools
import math

import keras
from keras import ops

_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


# ------------------------------------------------------------------------------------------ GELU


def _gelu_forward(z):
    """z (...) -> z * Phi(z), Phi the standard normal CDF; same shape and dtype."""
    import tensorflow as tf

    return z * 0.5 * (tf.math.erf(z * _SQRT_HALF) + 1.0)


def _gelu_backward(z, g):
    """z, upstream g (...) -> g * (Phi(z) + z * phi(z)), phi the standard normal density."""
    import tensorflow as tf

    cdf = (tf.math.erf(z * _SQRT_HALF) + 1.0) * 0.5
    pdf = tf.math.exp(tf.math.square(z) * -0.5) * _INV_SQRT_2PI
    return g * (cdf + z * pdf)


@functools.cache  # tf.function needs TensorFlow: built on first use, one pair for every layer
def _compiled_gelu():
    import tensorflow as tf

    forward = tf.function(_gelu_forward, jit_compile=True, reduce_retracing=True)
    backward = tf.function(_gelu_backward, jit_compile=True, reduce_retracing=True)

    @tf.custom_gradient
    def gelu(z):
        return forward(z), lambda g: backward(z, g)

    return gelu


def gelu(x):
    """The exact (erf) GELU of x (...), same shape and dtype: compiled each way on TensorFlow."""
    if _on_tensorflow():
        return _compiled_gelu()(x)
    return ops.gelu(x, approximate=False)


# ------------------------------------------------------------------------------------ layer norm


def _layer_norm_forward(x, gamma, beta, epsilon):
    """x (T, C), gamma, beta (C,) -> y (T, C), and the rows' mean and 1/std (T, 1) for the gradient."""
    import tensorflow as tf

    mean = tf.math.reduce_mean(x, axis=-1, keepdims=True)  # (T, 1)
    centered = x - mean
    rstd = tf.math.rsqrt(tf.math.reduce_mean(tf.math.square(centered), axis=-1, keepdims=True) + epsilon)  # (T, 1)
    return centered * rstd * gamma + beta, mean, rstd


def _layer_norm_backward(x, mean, rstd, gamma, g):
    """x, upstream g (T, C), mean, rstd (T, 1), gamma (C,) -> dx (T, C), dgamma, dbeta (C,).

    With xhat = (x - mean) * rstd and gx = g * gamma: dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat)),
    the means over C; dgamma = sum over T of g * xhat, dbeta = sum over T of g.
    """
    import tensorflow as tf

    xhat = (x - mean) * rstd
    gx = g * gamma
    shift = tf.math.reduce_mean(gx, axis=-1, keepdims=True)  # (T, 1)
    slope = tf.math.reduce_mean(gx * xhat, axis=-1, keepdims=True)  # (T, 1)
    dx = rstd * (gx - shift - xhat * slope)
    return dx, tf.math.reduce_sum(g * xhat, axis=0), tf.math.reduce_sum(g, axis=0)


@functools.cache
def _compiled_layer_norm(epsilon: float):
    """The (T, C) layer norm of ``epsilon`` with its gradient, each way one compiled call (TensorFlow)."""
    import tensorflow as tf

    forward = tf.function(functools.partial(_layer_norm_forward, epsilon=epsilon), jit_compile=True,
                          reduce_retracing=True)
    backward = tf.function(_layer_norm_backward, jit_compile=True, reduce_retracing=True)

    @tf.custom_gradient
    def layer_norm(x, gamma, beta):
        y, mean, rstd = forward(x, gamma, beta)
        return y, lambda g: backward(x, mean, rstd, gamma, g)

    return layer_norm


def layer_norm(x, gamma, beta, epsilon: float):
    """x (..., C), gamma, beta (C,) -> (..., C) normalised over C (TensorFlow only).

    The result has x's dtype. As in Keras' layer norm, a half-precision x is normalised in float32 and
    a float64 x in float64.
    """
    import tensorflow as tf

    width = gamma.shape[0]
    compute = keras.backend.result_type(x.dtype, "float32")
    rows = ops.cast(ops.reshape(x, (-1, width)), compute)  # (T, C)
    # Tensors, not the variables: custom_gradient would otherwise want the variables themselves.
    gamma, beta = (ops.cast(tf.convert_to_tensor(v), compute) for v in (gamma, beta))
    y = _compiled_layer_norm(float(epsilon))(rows, gamma, beta)  # (T, C)
    return ops.cast(ops.reshape(y, ops.shape(x)), x.dtype)


@keras.saving.register_keras_serializable(package="convbert")
class LayerNormalization(keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization``; on TensorFlow, over the last axis with gamma and beta, one
    compiled call each way (``layer_norm``). Other axes, ``rms_scaling``, no center or scale, and the
    other backends: Keras' own."""

    def _fused(self, inputs) -> bool:
        last = len(inputs.shape) - 1
        return (_on_tensorflow() and self.gamma is not None and self.beta is not None and not self.rms_scaling
                and self.axis in ([-1], [last]))

    def call(self, inputs):
        if not self._fused(inputs):
            return super().call(inputs)
        return ops.cast(layer_norm(inputs, self.gamma, self.beta, self.epsilon), self.compute_dtype)
