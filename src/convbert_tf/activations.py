"""Activation functions by their Hugging Face config names, in ``keras.ops``.

The names and which formula each one is come from ``convbert_common.config.ACTIVATIONS``; this
file implements the formulas, as ``convbert_pt/activations.py`` does for PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

from keras import ops

from convbert_common.config import ACTIVATIONS


def _gelu(x):
    return ops.gelu(x, approximate=False)


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
