"""Two autograd functions that keep less for backward and recompute the rest there.

B batch, N' attention heads, L sequence, D head size, M = B*L tokens, I intermediate size,
O output size, G groups.

- ``dropout_attention``: attention with dropout on the probabilities. PyTorch's CPU SDPA kernels
  have no dropout, so with dropout it takes the math path, which keeps the probabilities and
  their dropped copy for backward, 3 (B, N', L, L) float tensors per layer. This keeps q, k, v
  and a one-byte keep mask, and recomputes the probabilities (one QK^T matmul) in backward.
- ``activation_dense``: ``dense(act(h))``, the second half of the feed-forward block. Autograd
  keeps both h (for the activation's gradient) and act(h) (for the dense layer's weight
  gradient), two (B, L, I) tensors; this keeps h only and recomputes act(h), an elementwise op.

Forward outputs are the same bits as the plain path; gradients are the same formulas (the ATen
backward kernels), recomputed from the same saved inputs. Both functions restore the autocast
state of the forward in backward, so bf16/fp16 autocast runs its matmuls in the same dtype.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from convbert_pt.activations import Activation
from convbert_pt.gemm import mm_nt


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _autocast_like_forward(ctx) -> contextlib.AbstractContextManager:
    if ctx.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype)


# ------------------------------------------------------------------------------ attention + dropout


def attention_probs(query: torch.Tensor, key: torch.Tensor, additive: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + additive): (B, N', L, L). ``modeling.attention``'s explicit path uses it
    too, so the probabilities recomputed in backward are the same bits as every forward's."""
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])  # (B, N', L, L)
    if additive is not None:
        scores = scores + additive
    return torch.softmax(scores, dim=-1)


class _DropoutAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, additive, dropout_p):
        probs = attention_probs(query, key, additive)  # (B, N', L, L)
        keep = torch.empty_like(probs, dtype=torch.bool).bernoulli_(1.0 - dropout_p)  # (B, N', L, L)
        context = torch.matmul(probs * keep * (1.0 / (1.0 - dropout_p)), value)  # (B, N', L, D)
        ctx.save_for_backward(query, key, value, additive, keep)
        ctx.dropout_p = dropout_p
        ctx.device_type = query.device.type
        ctx.autocast_dtype = _autocast_dtype(ctx.device_type)
        return context

    @staticmethod
    def backward(ctx, grad_context):
        query, key, value, additive, keep = ctx.saved_tensors
        rescale = 1.0 / (1.0 - ctx.dropout_p)
        with _autocast_like_forward(ctx):
            probs = attention_probs(query, key, additive)  # (B, N', L, L)
            grad_value = torch.matmul((probs * keep * rescale).transpose(-1, -2), grad_context)  # (B, N', L, D)
            grad_probs = torch.matmul(grad_context, value.transpose(-1, -2)) * keep * rescale  # (B, N', L, L)
            grad_scores = torch.ops.aten._softmax_backward_data(
                grad_probs.to(probs.dtype), probs, -1, probs.dtype
            ) / math.sqrt(query.shape[-1])
            grad_query = torch.matmul(grad_scores, key)  # (B, N', L, D)
            grad_key = torch.matmul(grad_scores.transpose(-1, -2), query)  # (B, N', L, D)
        return grad_query.to(query.dtype), grad_key.to(key.dtype), grad_value.to(value.dtype), None, None


def dropout_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, additive: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + additive), dropped out with probability ``dropout_p`` (> 0), times v.

    query, key, value (B, N', L, D); additive (B, 1, 1, L) or None. Returns the context (B, N', L, D).
    """
    return _DropoutAttention.apply(query, key, value, additive, dropout_p)


# ------------------------------------------------------------------------------ activation + dense


def _dense_backward(
    a: torch.Tensor, weight: torch.Tensor, grad_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of y = dense(a) for a (M, I), grad_y (M, O): (grad_a, grad_weight, grad_bias).

    weight is nn.Linear's (O, I) or the grouped layout (G, I/G, O/G) of ``modeling.grouped_linear``.
    """
    if weight.dim() == 2:
        # The products of gemm.linear's backward, by the same GEMM choice as the forward's.
        grad_a = mm_nt(grad_y, weight.t())  # (M, I)
        grad_weight = mm_nt(grad_y.t(), a.t())  # (O, I)
    else:
        G, group_in, group_out = weight.shape
        a_groups = a.view(-1, G, group_in).transpose(0, 1)  # (G, M, I/G)
        grad_groups = grad_y.view(-1, G, group_out).transpose(0, 1)  # (G, M, O/G)
        grad_a = torch.bmm(grad_groups, weight.transpose(1, 2)).transpose(0, 1).reshape(a.shape)  # (M, I)
        grad_weight = torch.bmm(a_groups.transpose(1, 2), grad_groups)  # (G, I/G, O/G)
    return grad_a, grad_weight, grad_y.sum(0)


class _ActivationDense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_activation, weight, bias, activation, dense):
        ctx.save_for_backward(pre_activation, weight)
        ctx.activation = activation
        ctx.device_type = pre_activation.device.type
        ctx.autocast_dtype = _autocast_dtype(ctx.device_type)
        ctx.bias_dtype = bias.dtype
        return dense(activation.forward(pre_activation), weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        pre_activation, weight = ctx.saved_tensors
        with _autocast_like_forward(ctx):
            a = ctx.activation.forward(pre_activation)
            grad_a, grad_weight, grad_bias = _dense_backward(
                a.reshape(-1, a.shape[-1]), weight, grad_y.reshape(-1, grad_y.shape[-1])
            )
            grad_pre = ctx.activation.backward(pre_activation, grad_a.reshape(a.shape).to(pre_activation.dtype))
        return grad_pre, grad_weight.to(weight.dtype), grad_bias.to(ctx.bias_dtype), None, None


def activation_dense(
    pre_activation: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    activation: Activation,
    dense: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """dense(activation(pre_activation), weight, bias), keeping only pre_activation for backward.

    pre_activation (..., I); weight (O, I) with ``dense=gemm.linear`` (or ``F.linear``) or (G, I/G, O/G) with
    ``dense=grouped_linear``; bias (O,). Returns (..., O).
    """
    return _ActivationDense.apply(pre_activation, weight, bias, activation, dense)
