"""Fused Triton span-based dynamic convolution, forward and backward, as one PyTorch operator.

B batch, L sequence, N heads, D head size, K taps (odd, at most 31), p = (K - 1) // 2.

    out[b, t, n, :] = sum_j softmax_K(kernel_logits[b, t, n, :])[j] * values[b, t + j - p, n, :]

with zeros outside [0, L). The softmax over K is fused into both kernels and all arithmetic is
fp32; values / kernel_logits may each be fp32, fp16 or bf16, the output has the dtype of
``values``, the gradients the dtype of their input.

Public API:

- ``span_dynamic_conv_triton(values, kernel_logits)``: the operator, differentiable, visible to
  torch.compile as ``torch.ops.convbert.span_dynamic_conv``. Raises ValueError (bad shapes,
  dtypes, K) or RuntimeError (no Triton, wrong device) with the reason; never returns zeros.
- ``unsupported_reason(values, kernel_logits)``: None when the kernel can run on these tensors,
  else why not. ``span_dynamic_conv(impl="auto")`` asks it before choosing the kernel.

Strides: inputs of any strides are read in place (every stride is a kernel argument, no
``.contiguous()`` copy), e.g. a head slice of a wider projection or an expanded gradient; the
output and the gradients are allocated contiguous.

Memory: the forward saves only ``values`` and ``kernel_logits`` for backward. The backward
allocates its two gradients and one (B, L, N, K) fp32 softmax (K/D of the elements of the
activations); nothing of size (B, L, N * D, K) exists anywhere.

Devices: CUDA tensors. CPU tensors only under Triton's interpreter, i.e. when ``TRITON_INTERPRET=1``
was set before this module was imported (``@triton.jit`` reads it when it decorates); that is how
the kernels are tested on machines without a GPU.

Importing this module imports Triton and registers the operators. ``import convbert_pt`` never
imports it; ``convbert_pt.sdconv`` imports it when the Triton path is asked for.

Operator registration. Compiled kernels (a GPU): ``torch.library.triton_op``, so that autograd
(``register_autograd``) and torch.compile see forward and backward as two operators while
Inductor still sees the Triton kernels inside them (it decomposes a triton_op into its
``wrap_triton`` kernel calls). Interpreted kernels (``TRITON_INTERPRET=1``, CPU tensors): triton_op
accepts CPU tensors in eager mode, but its body doubles as the fake implementation, and
``wrap_triton`` hands an interpreted kernel back unwrapped, so tracing would run the interpreter on
fake tensors (torch.compile and ``opcheck`` fail). There the same bodies are registered with
``torch.library.custom_op`` (opaque to the compiler) plus an explicit ``register_fake``, and the
same autograd formula: eager, autograd, opcheck and torch.compile all work under the interpreter.
"""

# No `from __future__ import annotations`: torch.library infers the operators' schemas from the
# annotations of their Python bodies.

import torch

from convbert_common import shapes

MAX_KERNEL_SIZE = 31
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

try:
    import triton
    from torch.library import custom_op, triton_op, wrap_triton
    from triton.runtime.interpreter import InterpretedFunction

    from convbert_pt.kernels._sdconv_kernels import (
        sdconv_backward_kernel,
        sdconv_forward_kernel,
        sdconv_softmax_kernel,
    )
except ImportError as exc:  # Triton missing, or a torch older than 2.6 (no triton_op / wrap_triton)
    _TRITON_ERROR: str | None = (
        f"the Triton kernels cannot be loaded ({exc}); they need the 'triton' extra and torch >= 2.6"
    )
    _INTERPRETED = False
else:
    _TRITON_ERROR = None
    # @triton.jit built the kernels for the interpreter iff TRITON_INTERPRET=1 was set at import.
    _INTERPRETED = isinstance(sdconv_forward_kernel, InterpretedFunction)

_NUM_WARPS = 4
# Elements of one (BLOCK_T, BLOCK_D) fp32 tile: the backward keeps about four of them live, meant
# to fit the registers of 4 warps at D = 64 (BLOCK_T = 64). Chosen by arithmetic, not yet tuned on a GPU.
_TILE_ELEMENTS = 4096
_MAX_BLOCK_T = 64
_SOFTMAX_BLOCK_T = 128
# Offsets inside one (b, n) slice are int32 in the kernels (the (b, n) base is int64).
_INT32_LIMIT = 2**31


def unsupported_reason(values: torch.Tensor, kernel_logits: torch.Tensor) -> str | None:
    """None when ``span_dynamic_conv_triton(values, kernel_logits)`` can run, else the reason."""
    problem = _problem(values, kernel_logits)
    return None if problem is None else problem[1]


def span_dynamic_conv_triton(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    """values (B, L, N, D), kernel_logits (B, L, N, K) before the softmax -> (B, L, N, D)."""
    problem = _problem(values, kernel_logits)
    if problem is not None:
        error, reason = problem
        raise error(f"span_dynamic_conv_triton: {reason}")
    return torch.ops.convbert.span_dynamic_conv(values, kernel_logits)


def _problem(values, kernel_logits) -> tuple[type[Exception], str] | None:
    """(exception type, reason) for the first condition that fails, None if the kernel can run."""
    if not isinstance(values, torch.Tensor) or not isinstance(kernel_logits, torch.Tensor):
        return TypeError, "values and kernel_logits must be torch tensors"
    if values.dim() != 4 or kernel_logits.dim() != 4:
        return ValueError, (
            "expected values (B, L, N, D) and kernel_logits (B, L, N, K), got shapes "
            f"{tuple(values.shape)} and {tuple(kernel_logits.shape)}"
        )
    if values.shape[:3] != kernel_logits.shape[:3]:
        return ValueError, (
            f"values {tuple(values.shape)} and kernel_logits {tuple(kernel_logits.shape)} "
            "disagree on (B, L, N)"
        )
    K = kernel_logits.shape[-1]
    if K % 2 == 0 or not 1 <= K <= MAX_KERNEL_SIZE:
        return ValueError, f"the kernel size must be odd and at most {MAX_KERNEL_SIZE}, got K={K}"
    for name, tensor in (("values", values), ("kernel_logits", kernel_logits)):
        if tensor.dtype not in SUPPORTED_DTYPES:
            return ValueError, (
                f"{name} has dtype {tensor.dtype}; the kernel takes float32, float16 or bfloat16"
            )
    if values.device != kernel_logits.device:
        return ValueError, f"values are on {values.device} but kernel_logits on {kernel_logits.device}"
    B, L, N, D = values.shape
    for name, tensor in (("values", values), ("kernel_logits", kernel_logits)):
        if _slice_extent(tensor) >= _INT32_LIMIT:
            return ValueError, f"{name}: one (batch, head) slice spans 2**31 elements or more (int32 offsets)"
    if L * N * D >= _INT32_LIMIT:
        return ValueError, f"L * N * D = {L * N * D} >= 2**31: one batch of the output overflows int32"
    if _TRITON_ERROR is not None:
        return RuntimeError, _TRITON_ERROR
    if values.device.type == "cpu" and not _INTERPRETED:
        return RuntimeError, (
            "CPU tensors run only under Triton's interpreter: set TRITON_INTERPRET=1 before "
            "convbert_pt.kernels.sdconv_triton is imported (use a CUDA tensor for the compiled kernel)"
        )
    if values.device.type not in ("cuda", "cpu"):
        return RuntimeError, f"tensors on {values.device}: the kernel runs on CUDA devices only"
    return None


def _slice_extent(tensor: torch.Tensor) -> int:
    """Largest element offset inside one (b, n) slice: the kernels index it in int32."""
    return sum((tensor.shape[dim] - 1) * abs(tensor.stride(dim)) for dim in (1, 3))


def _blocks(D: int, K: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_D, BLOCK_K). Independent of L, so that a new sequence length recompiles nothing.

    Every block is at least 2 wide (masks cover the excess), so no tile has a size-1 dimension.
    """
    block_d = max(2, triton.next_power_of_2(D))
    block_k = max(2, triton.next_power_of_2(K))
    block_t = max(2, min(_MAX_BLOCK_T, _TILE_ELEMENTS // block_d))
    return block_t, block_d, block_k


def _forward_into(values: torch.Tensor, kernel_logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write the convolution into ``out`` (B, L, N, D), any strides. Every element is written."""
    B, L, N, D = values.shape
    # D and K set compile-time block sizes: int() makes a traced (symbolic) size concrete here
    D, K = int(D), int(kernel_logits.shape[-1])
    if B * N * L > 0:
        _launch_row_kernel(sdconv_forward_kernel, (values, kernel_logits, out), D, K)
    return out


def _launch_row_kernel(kernel, tensors: tuple[torch.Tensor, ...], D: int, K: int) -> None:
    """Run a kernel over (B, L, N, .) tensors, one program per (batch, head, t-block).

    The kernel takes the tensors' pointers, then L, N, D, then every tensor's four strides in order.
    """
    B, L, N, _ = tensors[0].shape
    block_t, block_d, block_k = _blocks(D, K)
    strides = [s for t in tensors for s in t.stride()]
    wrap_triton(kernel)[(B * N * triton.cdiv(L, block_t),)](
        *tensors, L, N, D, *strides,
        K=K, PAD=shapes.conv_padding(K), BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_K=block_k, num_warps=_NUM_WARPS,
    )


def _backward_into(
    grad_out: torch.Tensor,
    values: torch.Tensor,
    kernel_logits: torch.Tensor,
    probs: torch.Tensor,
    grad_values: torch.Tensor,
    grad_logits: torch.Tensor,
) -> None:
    """Write softmax(kernel_logits) into ``probs`` (fp32), then both gradients. Every element is written."""
    B, L, N, D = values.shape
    D, K = int(D), int(kernel_logits.shape[-1])  # compile-time block sizes, as in _forward_into
    if _slice_extent(grad_out) >= _INT32_LIMIT:
        raise RuntimeError("span_dynamic_conv backward: grad_out's strides overflow the int32 offsets")
    block_k = _blocks(D, K)[2]
    softmax_grid = (B * N * triton.cdiv(L, _SOFTMAX_BLOCK_T),)
    if softmax_grid[0] == 0:
        return
    wrap_triton(sdconv_softmax_kernel)[softmax_grid](
        kernel_logits,
        probs,
        L,
        N,
        *kernel_logits.stride(),
        *probs.stride(),
        K=K,
        BLOCK_T=_SOFTMAX_BLOCK_T,
        BLOCK_K=block_k,
        num_warps=_NUM_WARPS,
    )
    _launch_row_kernel(sdconv_backward_kernel, (values, probs, grad_out, grad_values, grad_logits), D, K)


# The operators. Their bodies must stay traceable by make_fx (torch.empty + wrap_triton calls):
# triton_op registers the body itself as the fake (meta) implementation.


def _span_dynamic_conv(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    out = torch.empty(values.shape, dtype=values.dtype, device=values.device)  # (B, L, N, D)
    return _forward_into(values, kernel_logits, out)


def _span_dynamic_conv_backward(
    grad_out: torch.Tensor, values: torch.Tensor, kernel_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    device = values.device
    probs = torch.empty(kernel_logits.shape, dtype=torch.float32, device=device)  # (B, L, N, K)
    grad_values = torch.empty(values.shape, dtype=values.dtype, device=device)  # (B, L, N, D)
    grad_logits = torch.empty(kernel_logits.shape, dtype=kernel_logits.dtype, device=device)  # (B, L, N, K)
    _backward_into(grad_out, values, kernel_logits, probs, grad_values, grad_logits)
    return grad_values, grad_logits


def _setup_context(ctx, inputs, output) -> None:
    values, kernel_logits = inputs
    ctx.save_for_backward(values, kernel_logits)


def _autograd_backward(ctx, grad_out: torch.Tensor):
    values, kernel_logits = ctx.saved_tensors
    grad_values, grad_logits = torch.ops.convbert.span_dynamic_conv_backward(grad_out, values, kernel_logits)
    return grad_values, grad_logits


def _span_dynamic_conv_fake(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    return values.new_empty(values.shape)


def _span_dynamic_conv_backward_fake(
    grad_out: torch.Tensor, values: torch.Tensor, kernel_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return values.new_empty(values.shape), kernel_logits.new_empty(kernel_logits.shape)


def _register_ops() -> None:
    forward_name, backward_name = "convbert::span_dynamic_conv", "convbert::span_dynamic_conv_backward"
    if _INTERPRETED:
        # Opaque ops with explicit fake implementations: see the module docstring.
        forward_op = custom_op(forward_name, _span_dynamic_conv, mutates_args=())
        backward_op = custom_op(backward_name, _span_dynamic_conv_backward, mutates_args=())
        forward_op.register_fake(_span_dynamic_conv_fake)
        backward_op.register_fake(_span_dynamic_conv_backward_fake)
    else:
        forward_op = triton_op(forward_name, _span_dynamic_conv, mutates_args=())
        triton_op(backward_name, _span_dynamic_conv_backward, mutates_args=())
    forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


if _TRITON_ERROR is None:
    _register_ops()
