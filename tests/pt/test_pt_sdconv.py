"""span_dynamic_conv: the shift-and-accumulate path equals the unfold reference and never builds im2col."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from convbert_pt.sdconv import span_dynamic_conv
from tests.parity import assert_close, assert_three_way
from tests.tolerances import EXACT, LOWP_ATOL, LOWP_FACTOR, SDCONV_FP64_ATOL, SDCONV_NATIVE_FP32_ATOL


def _pair(B, L, N, D, K, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, L, N, D, generator=g, dtype=dtype)
    logits = 2 * torch.randn(B, L, N, K, generator=g, dtype=dtype)
    return values, logits


def _forward_backward(impl, values, logits, grad):
    v = values.clone().requires_grad_(True)
    k = logits.clone().requires_grad_(True)
    out = span_dynamic_conv(v, k, impl=impl)
    gv, gk = torch.autograd.grad(out, (v, k), grad)
    return out, gv, gk


def _assert_native_matches_reference(B, L, N, D, K, seed=0):
    values, logits = _pair(B, L, N, D, K, seed)
    grad = torch.randn(B, L, N, D, generator=torch.Generator().manual_seed(seed + 1))
    ref = _forward_backward("reference", values, logits, grad)
    nat = _forward_backward("native", values, logits, grad)
    tag = f"B{B} L{L} N{N} D{D} K{K}"
    for name, a, e in zip(("out", "grad_values", "grad_logits"), nat, ref, strict=True):
        assert_close(f"{tag} {name}", a, e, SDCONV_NATIVE_FP32_ATOL)


@pytest.mark.parametrize("K", [1, 3, 5, 7, 9, 15])
@pytest.mark.parametrize("L", [1, 2, 4, 8, 23])
def test_native_equals_reference_forward_and_gradients_over_lengths_and_kernel_sizes(L, K):
    for N in range(1, 9):
        _assert_native_matches_reference(2, L, N, 3, K, seed=N)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3), L=st.integers(1, 20), N=st.integers(1, 8), D=st.integers(1, 9),
    K=st.sampled_from([1, 3, 5, 7, 9, 11, 15]), seed=st.integers(0, 2**16),
)
def test_native_equals_reference_on_random_shapes(B, L, N, D, K, seed):
    _assert_native_matches_reference(B, L, N, D, K, seed)


def test_native_matches_reference_in_float64_to_rounding():
    values, logits = _pair(2, 13, 3, 4, 9, dtype=torch.float64)
    ref = span_dynamic_conv(values, logits, impl="reference")
    assert_close("native vs reference, fp64", span_dynamic_conv(values, logits, impl="native"), ref, SDCONV_FP64_ATOL)
    v, k = values.clone().requires_grad_(), logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: span_dynamic_conv(a, b, impl="native"), (v, k))


def test_auto_is_native_on_cpu():
    values, logits = _pair(2, 7, 2, 3, 5)
    assert torch.equal(span_dynamic_conv(values, logits), span_dynamic_conv(values, logits, impl="native"))


class _Sizes(TorchDispatchMode):
    """Records the element count of every tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("impl, builds_im2col", [("native", False), ("reference", True)])
def test_native_never_materialises_the_BLAK_tensor_in_forward_or_backward(impl, builds_im2col):
    B, L, N, D, K = 2, 16, 2, 8, 9
    values, logits = _pair(B, L, N, D, K)
    v, k = values.requires_grad_(), logits.requires_grad_()
    saved = []
    with _Sizes() as sizes:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = span_dynamic_conv(v, k, impl=impl)
        out.backward(torch.ones_like(out))
    im2col = B * L * N * D * K
    if builds_im2col:
        assert sizes.largest >= im2col  # the probe sees the reference's unfold
    else:
        assert sizes.largest < im2col
        # Saved for backward: values (already alive) and the (B, L, N', K) softmax weights, nothing else.
        assert sorted(saved) == sorted([B * L * N * K, B * L * N * D])


def test_bfloat16_native_is_as_accurate_as_the_bfloat16_reference():
    values, logits = _pair(2, 32, 4, 16, 9)
    ref32 = span_dynamic_conv(values.double(), logits.double(), impl="reference")
    vb, kb = values.bfloat16(), logits.bfloat16()
    native = span_dynamic_conv(vb, kb, impl="native")
    assert native.dtype == torch.bfloat16
    plain = span_dynamic_conv(vb, kb, impl="reference")
    assert_three_way("sdconv bf16", native.float(), plain.float(), ref32, LOWP_FACTOR, LOWP_ATOL["bfloat16"])


def test_triton_impl_refuses_cpu_tensors_naming_the_reason_and_auto_stays_native():
    values, logits = _pair(1, 4, 1, 2, 3)
    with pytest.raises(RuntimeError, match=r"impl='triton'\) cannot run: .*(CUDA|Triton)"):
        span_dynamic_conv(values, logits, impl="triton")
    auto = span_dynamic_conv(values, logits, impl="auto")
    torch.testing.assert_close(auto, span_dynamic_conv(values, logits, impl="native"), rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize(
    "values_shape, logits_shape, impl, message",
    [
        ((1, 4, 2, 3), (1, 4, 2, 3), "fast", "impl must be one of"),
        ((1, 4, 2, 3), (1, 4, 2, 4), "native", "kernel size must be odd"),
        ((1, 4, 2, 3), (1, 5, 2, 3), "native", r"disagree on \(B, L, N'\)"),
        ((4, 2, 3), (4, 2, 3), "native", r"expected values \(B, L, N', D\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(values_shape, logits_shape, impl, message):
    with pytest.raises(ValueError, match=message):
        span_dynamic_conv(torch.zeros(values_shape), torch.zeros(logits_shape), impl=impl)


def test_taps_beyond_the_sequence_see_only_zero_padding():
    # L = 1: only the centre tap touches data, so the output is softmax weight of the centre * value.
    values, logits = _pair(3, 1, 2, 4, 7)
    centre = torch.softmax(logits, -1)[..., 3:4]
    for impl in ("native", "reference"):
        assert_close(impl, span_dynamic_conv(values, logits, impl=impl), centre * values, SDCONV_NATIVE_FP32_ATOL)
