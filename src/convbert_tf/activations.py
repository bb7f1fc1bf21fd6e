"""Activation functions by their Hugging Face config names, in ``keras.ops``; and the softmax.

The names and which formula each one is come from ``convbert_common.config.ACTIVATIONS``; this
file implements the formulas, as ``convbert_pt/activations.py`` does for PyTorch. ``softmax_last``
is the models' softmax (attention probabilities, convolution taps), without Keras' warning for a
last axis of size 1.
"""

from __future__ import annotations

from collections.abc import Callable

from keras import ops

from convbert_common.config import ACTIVATIONS
from convbert_tf import fused


def _gelu(x):
    return fused.gelu(x)  # one compiled loop each way on TensorFlow (convbert_tf/fused.py)


def _gelu_tanh(x):
    return ops.gelu(x, approximate=True)


FORMULAS: dict[str, Callable] = {
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": ops.relu,
    "silu": ops.silu,
    "tanh": ops.tanh,
}


def get_activation(name: str) -> Callable:
    try:
        return FORMULAS[ACTIVATIONS[name]]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def softmax_last(x):
    """x (..., S) -> softmax over the last axis, same shape and dtype.

    Where S is statically 1 (a one-token input's attention, a one-tap convolution kernel) the result
    is ``exp(x - x)``: the softmax's own value there (1, or NaN where x is not finite) and its zero
    gradient, without the warning Keras gives for a softmax over a size-1 axis.
    """
    if x.shape[-1] == 1:
        return ops.exp(ops.subtract(x, x))
    return ops.softmax(x, axis=-1)
