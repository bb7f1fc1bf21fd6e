"""Activation functions by their Hugging Face config names, each with its derivative.

The names and which formula each one is come from ``convbert_common.config.ACTIVATIONS``; this
file implements the formulas, as ``convbert_tf/activations.py`` does for Keras.

The derivative lets ``recompute.activation_dense`` rebuild the feed-forward gradient from the
pre-activation alone, so the activated (B, L, I) tensor is not kept for backward. Each derivative
is the ATen kernel autograd itself runs for that activation, so gradients are the same bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from convbert_common.config import ACTIVATIONS


class Activation(NamedTuple):
    """Called like the function itself; ``backward`` is its vector-Jacobian product."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    # (x, grad of the output) -> grad of x
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _gelu_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_backward(grad, x, approximate="none")


def _gelu_tanh_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


def _relu_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.threshold_backward(grad, x, 0)


def _silu_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.silu_backward(grad, x)


def _tanh_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.tanh_backward(grad, torch.tanh(x))


FORMULAS: dict[str, Activation] = {
    "gelu": Activation(F.gelu, _gelu_grad),  # exact (erf)
    "gelu_tanh": Activation(_gelu_tanh, _gelu_tanh_grad),
    "relu": Activation(F.relu, _relu_grad),
    "silu": Activation(F.silu, _silu_grad),
    "tanh": Activation(torch.tanh, _tanh_grad),
}


def get_activation(name: str) -> Activation:
    try:
        return FORMULAS[ACTIVATIONS[name]]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None
