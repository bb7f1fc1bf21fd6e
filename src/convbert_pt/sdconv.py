"""Span-based dynamic convolution, the convolution half of ConvBERT's mixed attention block.

B batch, L sequence, N' convolution heads, D head size, K kernel size (odd), p = (K - 1) // 2.

    out[b, t, n, :] = sum_j softmax_K(kernel_logits[b, t, n, :])[j] * values[b, t + j - p, n, :]

with zero padding outside [0, L). One entry, five implementations:

- ``"reference"``: the unfold formulation of the reference implementation. It materialises the
  (B, L, A, K) im2col tensor; it is the oracle of the tests, not a path to run models on.
- ``"native"``: shift-and-accumulate over the K taps with a hand-written backward. Forward keeps
  one (B, L, N', D) accumulator; backward saves only ``values`` (already alive: it is the output
  of ``conv_out_layer``) and the (B, L, N', K) softmax weights. Nothing of size (B, L, A, K) exists.
- ``"padded"``: the same sum over K windows of the zero-padded values, ``(B, L + K - 1, N', D)``,
  each a slice of static offset and length L. It has no branch on L (the shift-and-accumulate skips
  taps that fall outside the sequence, which ``torch.export`` can only trace as guards on L), so it
  is what ``"auto"`` picks while ``torch.export`` traces the model.
- ``"banded"``: the sum as matrix products over blocks of C = ``BAND_BLOCK`` positions: each block's
  weights laid out as a (C, C + K - 1) band, times the block's window of the padded values; one
  MatMul per layer where ``"padded"`` has 3K elementwise operators. It multiplies by (C + K - 1) / K
  times the taps' work, most of it zeros, in a GEMM. L rounded up to whole blocks is a floor division
  that ``torch.export`` with a named sequence ``Dim`` cannot prove divisible (it reports a constraint
  violation); the ONNX exporter, which turns the axes into automatic dynamic dimensions, traces it for
  every L, so ``export_onnx`` asks for it (``onnx_sdconv``).
- ``"triton"``: the fused kernel of ``kernels/sdconv_triton.py`` (softmax fused, forward and
  backward); it raises, naming the reason, wherever it cannot run (no CUDA tensor, Triton missing,
  K > 31, an unsupported dtype).

``"auto"`` picks ``"padded"`` under ``torch.export``, ``"triton"`` for CUDA tensors when every condition
holds, else ``"native"``;
Triton is imported only for CUDA tensors, so CPU runs never load it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convbert_common import shapes

IMPLS = ("auto", "reference", "native", "padded", "banded", "triton")
# Positions per block of the banded formulation: small enough that the band's zeros cost little,
# large enough that a block's matrix product amortises its window's K - 1 extra rows.
BAND_BLOCK = 32


def span_dynamic_conv(values: torch.Tensor, kernel_logits: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """values (B, L, N', D), kernel_logits (B, L, N', K) before the softmax -> (B, L, N', D)."""
    _check(values, kernel_logits, impl)
    if impl == "reference":
        return span_dynamic_conv_reference(values, kernel_logits)
    if impl == "padded" or (impl == "auto" and torch.compiler.is_exporting()):
        return span_dynamic_conv_padded(values, kernel_logits)
    if impl == "banded":
        return span_dynamic_conv_banded(values, kernel_logits)
    if impl == "triton":
        from convbert_pt.kernels import sdconv_triton

        reason = sdconv_triton.unsupported_reason(values, kernel_logits)
        if reason is not None:
            raise RuntimeError(f"span_dynamic_conv(impl='triton') cannot run: {reason}")
        return sdconv_triton.span_dynamic_conv_triton(values, kernel_logits)
    if impl == "auto" and values.is_cuda and _triton_usable(values, kernel_logits):
        from convbert_pt.kernels import sdconv_triton

        return sdconv_triton.span_dynamic_conv_triton(values, kernel_logits)
    return _ShiftAccumulate.apply(values, kernel_logits)


def _triton_usable(values: torch.Tensor, kernel_logits: torch.Tensor) -> bool:
    try:
        from convbert_pt.kernels import sdconv_triton
    except ImportError:
        return False
    return sdconv_triton.unsupported_reason(values, kernel_logits) is None


def _check(values: torch.Tensor, kernel_logits: torch.Tensor, impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"span_dynamic_conv: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if values.dim() != 4 or kernel_logits.dim() != 4:
        raise ValueError(
            "span_dynamic_conv: expected values (B, L, N', D) and kernel_logits (B, L, N', K), got shapes "
            f"{tuple(values.shape)} and {tuple(kernel_logits.shape)}"
        )
    if values.shape[:3] != kernel_logits.shape[:3]:
        raise ValueError(
            f"span_dynamic_conv: values {tuple(values.shape)} and kernel_logits {tuple(kernel_logits.shape)} "
            "disagree on (B, L, N')"
        )
    if kernel_logits.shape[-1] % 2 == 0:
        raise ValueError(f"span_dynamic_conv: the kernel size must be odd, got K={kernel_logits.shape[-1]}")


def span_dynamic_conv_reference(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    """The unfold (im2col) formulation, as the reference implementation computes it."""
    B, L, N, D = values.shape
    K = kernel_logits.shape[-1]
    weights = torch.softmax(kernel_logits, dim=-1)  # (B, L, N', K)
    columns = values.reshape(B, L, N * D).transpose(1, 2).unsqueeze(-1)  # (B, A, L, 1)
    columns = F.unfold(columns, kernel_size=(K, 1), padding=(shapes.conv_padding(K), 0))  # (B, A*K, L)
    columns = columns.transpose(1, 2).reshape(B, L, N, D, K)  # (B, L, N', D, K)
    out = torch.matmul(columns, weights.unsqueeze(-1))  # (B, L, N', D, 1)
    return out.squeeze(-1)  # (B, L, N', D)


def span_dynamic_conv_padded(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    """The sum over the K windows of the zero-padded values: shape-generic, for graph export."""
    L, K = values.shape[1], kernel_logits.shape[-1]
    p = shapes.conv_padding(K)
    acc = _accumulate_dtype(values.dtype)
    weights = torch.softmax(kernel_logits.to(acc), dim=-1)  # (B, L, N', K)
    # Concatenated zeros rather than F.pad: ONNX's Pad changed at opset 18 and has no converter down.
    zeros = values.new_zeros((values.shape[0], p, *values.shape[2:]), dtype=acc)  # (B, p, N', D)
    padded = torch.cat([zeros, values.to(acc), zeros], dim=1)  # (B, L + K - 1, N', D)
    out = weights[..., 0:1] * padded[:, 0:L]  # (B, L, N', D)
    for j in range(1, K):
        out = out + weights[..., j : j + 1] * padded[:, j : j + L]
    return out.to(values.dtype)


def span_dynamic_conv_banded(values: torch.Tensor, kernel_logits: torch.Tensor,
                             block: int = BAND_BLOCK) -> torch.Tensor:
    """The sum as one batched matrix product per block of ``block`` (C) positions: shape-generic, for
    graph export. Block i's outputs read the padded values' rows [iC, iC + C + K - 1) (its window);
    its band holds, in row t, the softmax weights of position iC + t at columns t .. t + K - 1."""
    B, L, N, D = values.shape
    K = kernel_logits.shape[-1]
    p = shapes.conv_padding(K)
    C = max(block, K - 1)  # a window's K - 1 extra rows come from the next block alone
    nb = (L + C - 1) // C
    Lp = nb * C  # L rounded up to whole blocks
    acc = _accumulate_dtype(values.dtype)
    weights = torch.softmax(kernel_logits.to(acc), dim=-1)  # (B, L, N', K)
    weights = torch.cat([weights, weights.new_zeros((B, Lp - L, N, K))], dim=1)  # (B, Lp, N', K)
    weights = weights.reshape(B, nb, C, N, K).permute(0, 1, 3, 2, 4)  # (B, nb, N', C, K)
    # Row t of a (C, C + K) matrix read with a row length of C + K - 1 starts t places later: the
    # row-major skew that turns each row's K weights into its diagonal band.
    weights = torch.cat([weights, weights.new_zeros((B, nb, N, C, C))], dim=-1)  # (B, nb, N', C, C + K)
    band = weights.reshape(B, nb, N, C * (C + K))[..., : C * (C + K - 1)]  # (B, nb, N', C * (C + K - 1))
    band = band.reshape(B, nb, N, C, C + K - 1)  # (B, nb, N', C, C + K - 1)
    # Concatenated zeros rather than F.pad, as in span_dynamic_conv_padded; C rows at the end so that
    # the last block has its next block's K - 1 rows.
    padded = torch.cat([values.new_zeros((B, p, N, D), dtype=acc), values.to(acc),
                        values.new_zeros((B, Lp - L + C - p, N, D), dtype=acc)], dim=1)  # (B, Lp + C, N', D)
    blocks = padded[:, :Lp].reshape(B, nb, C, N, D)  # (B, nb, C, N', D)
    following = padded[:, C : Lp + C].reshape(B, nb, C, N, D)[:, :, : K - 1]  # (B, nb, K - 1, N', D)
    windows = torch.cat([blocks, following], dim=2).permute(0, 1, 3, 2, 4)  # (B, nb, N', C + K - 1, D)
    out = torch.matmul(band, windows)  # (B, nb, N', C, D)
    out = out.permute(0, 1, 3, 2, 4).reshape(B, Lp, N, D)  # (B, Lp, N', D)
    return out[:, :L].to(values.dtype)  # (B, L, N', D)


def _taps(L: int, K: int):
    """For every tap j whose shift s = j - p reaches inside [0, L): (j, output slice, input slice)."""
    p = shapes.conv_padding(K)
    for j in range(K):
        s = j - p
        if abs(s) >= L:
            continue  # the tap only ever sees zero padding
        # out[t] uses values[t + s]: t runs over [max(0, -s), min(L, L - s))
        yield j, slice(max(0, -s), min(L, L - s)), slice(max(0, s), min(L, L + s))


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    # Sum the K taps in fp32 when the inputs are half precision, as a matmul would.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _ShiftAccumulate(torch.autograd.Function):
    """Shift-and-accumulate with an explicit backward.

    Left to autograd, each tap would allocate a full-size zero gradient for its slice of ``values``
    and of the weights; here backward accumulates in place into one buffer per input.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
        L, K = values.shape[1], kernel_logits.shape[-1]
        acc = _accumulate_dtype(values.dtype)
        weights = torch.softmax(kernel_logits.to(acc), dim=-1)  # (B, L, N', K)
        out = torch.zeros(values.shape, dtype=acc, device=values.device)  # (B, L, N', D)
        for j, dst, src in _taps(L, K):
            out[:, dst].addcmul_(weights[:, dst, :, j : j + 1], values[:, src])
        ctx.save_for_backward(values, weights)
        ctx.logits_dtype = kernel_logits.dtype
        return out.to(values.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        values, weights = ctx.saved_tensors
        L, K = values.shape[1], weights.shape[-1]
        acc = weights.dtype
        grad_out = grad_out.to(acc)
        grad_values = torch.zeros(values.shape, dtype=acc, device=values.device)  # (B, L, N', D)
        grad_weights = torch.zeros(weights.shape, dtype=acc, device=values.device)  # (B, L, N', K)
        for j, dst, src in _taps(L, K):
            g = grad_out[:, dst]
            grad_values[:, src].addcmul_(weights[:, dst, :, j : j + 1], g)
            grad_weights[:, dst, :, j] = (g * values[:, src]).sum(-1)
        # softmax backward: dz = w * (dw - <dw, w>)
        grad_logits = weights * (grad_weights - (grad_weights * weights).sum(-1, keepdim=True))
        return grad_values.to(values.dtype), grad_logits.to(ctx.logits_dtype)
