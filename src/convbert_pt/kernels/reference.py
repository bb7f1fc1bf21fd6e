"""Plain-torch span-based dynamic convolution: the reference the Triton kernel is tested against.

B batch, L sequence, N heads, D head size, K kernel size (odd), p = (K - 1) // 2.

    out[b, t, n, :] = sum_j softmax_K(kernel_logits[b, t, n, :])[j] * values[b, t + j - p, n, :]

with zeros outside [0, L). Every operation runs in the inputs' dtype (no upcast), so that run in
fp16 / bf16 it is the "plain same-precision path" whose error sets the kernel's bar, and run in
fp64 it is the oracle. Autograd differentiates it; it allocates one padded copy of ``values`` and
K products of size (B, L, N, D), never a (B, L, N * D, K) im2col tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convbert_common import shapes


def span_dynamic_conv_reference(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    """values (B, L, N, D), kernel_logits (B, L, N, K) before the softmax -> (B, L, N, D)."""
    if values.dim() != 4 or kernel_logits.dim() != 4 or values.shape[:3] != kernel_logits.shape[:3]:
        raise ValueError(
            "span_dynamic_conv_reference: expected values (B, L, N, D) and kernel_logits (B, L, N, K), "
            f"got {tuple(values.shape)} and {tuple(kernel_logits.shape)}"
        )
    L = values.shape[1]
    K = kernel_logits.shape[-1]
    if K % 2 == 0:
        raise ValueError(f"span_dynamic_conv_reference: the kernel size must be odd, got K={K}")
    p = shapes.conv_padding(K)
    probs = torch.softmax(kernel_logits, dim=-1)  # (B, L, N, K)
    padded = F.pad(values, (0, 0, 0, 0, p, p))  # (B, L + 2p, N, D): zeros outside [0, L)
    out = probs[..., 0:1] * padded[:, 0:L]  # (B, L, N, D)
    for j in range(1, K):
        # tap j reads values[t + j - p], which is padded[t + j]
        out = out + probs[..., j : j + 1] * padded[:, j : j + L]
    return out
