"""The Triton span-based dynamic convolution against its reference, on CPU under Triton's interpreter.

``@triton.jit`` builds a kernel for the interpreter only if TRITON_INTERPRET=1 is set when the
kernel module is imported. The default suite is one process that may already hold the compiled
kernels (on a GPU machine tests/pt/test_kernels_gpu.py needs exactly those), so this file runs
its checks in a fresh process:

- collected without TRITON_INTERPRET=1 (the default run): ``test_kernel_checks_pass_under_the_
  triton_interpreter`` runs pytest on this file in a subprocess with TRITON_INTERPRET=1 set, and
  a few checks that need no kernel run in-process;
- collected with TRITON_INTERPRET=1 (that subprocess, or ``TRITON_INTERPRET=1 pytest this_file``):
  the kernel checks of ``TestKernelsUnderInterpreter``.

The ``check_*`` helpers take a device and are shared with the GPU tests.

Accuracy rule (DESIGN.md, tests/tolerances.py): ``|x - ref| <= LOWP_FACTOR * |x_plain - ref| + atol``
with ``ref`` the reference in fp64 on the same inputs and ``x_plain`` the reference run in the
inputs' own precision on the same device.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from convbert_pt.kernels.reference import span_dynamic_conv_reference
from tests.parity import ParityError, assert_close, assert_three_way
from tests.tolerances import (
    LOWP_ATOL,
    LOWP_FACTOR,
    SDCONV_FP64_ATOL,
    SDCONV_NATIVE_FP32_ATOL,
    SOFTMAX_KERNEL_FP32_ATOL,
    SOFTMAX_KERNEL_FP32_RTOL,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
INTERPRETED_RUN = os.environ.get("TRITON_INTERPRET") == "1"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# (B, L, N, D, K): every K in {1, 3, 5, 9, 15, 31}, N in {1, 3}, D in {1, 5, 8, 64}; L = 1, L < K,
# L > K, and L = 70 > BLOCK_T = 64 (two position blocks, the halo crosses a block edge).
# Small, because the interpreter runs every program in Python.
SHAPES_CPU = (
    (2, 5, 3, 8, 9),
    (1, 1, 1, 64, 31),
    (2, 13, 1, 1, 1),
    (1, 1, 3, 5, 3),
    (1, 11, 3, 5, 15),
    (1, 70, 1, 64, 5),
    (1, 4, 1, 8, 31),
)


# ---------------------------------------------------------------------------------------------
# Checks shared with tests/pt/test_kernels_gpu.py


def atol_for(dtype: torch.dtype) -> float:
    return LOWP_ATOL[str(dtype).removeprefix("torch.")]


def make_inputs(shape, dtype, device, seed=0):
    """values (B, L, N, D), kernel_logits (B, L, N, K), grad_out (B, L, N, D) in ``dtype``."""
    B, L, N, D, K = shape
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(B, L, N, D, generator=gen)
    # logits spread like trained ones (a few units), so that the softmax is not uniform
    kernel_logits = 2.0 * torch.randn(B, L, N, K, generator=gen)
    grad_out = torch.randn(B, L, N, D, generator=gen)
    return tuple(x.to(device=device, dtype=dtype) for x in (values, kernel_logits, grad_out))


def forward_and_grads(fn, values, kernel_logits, grad_out):
    """(out, d values, d kernel_logits) of ``fn`` at these inputs (leaves re-created, inputs untouched)."""
    v = values.detach().clone().requires_grad_(True)
    w = kernel_logits.detach().clone().requires_grad_(True)
    out = fn(v, w)
    grad_v, grad_w = torch.autograd.grad(out, (v, w), grad_out)
    return out.detach(), grad_v, grad_w


def check_against_reference(shape, dtype, device):
    """Forward, d values and d kernel_logits of the kernel obey the three-way rule against fp64."""
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

    values, kernel_logits, grad_out = make_inputs(shape, dtype, device)
    got = forward_and_grads(span_dynamic_conv_triton, values, kernel_logits, grad_out)
    plain = forward_and_grads(span_dynamic_conv_reference, values, kernel_logits, grad_out)
    exact = forward_and_grads(
        span_dynamic_conv_reference, values.double(), kernel_logits.double(), grad_out.double()
    )
    for name, x, x_plain, ref, like in zip(
        ("out", "grad_values", "grad_logits"), got, plain, exact, (values, values, kernel_logits), strict=True
    ):
        assert x.dtype == dtype and x.shape == like.shape, f"{name}: {x.dtype} {tuple(x.shape)}"
        assert torch.isfinite(x).all(), f"{name} {shape} {dtype}: non-finite values"
        assert_three_way(f"{name} {shape} {dtype}", x, x_plain, ref, LOWP_FACTOR, atol_for(dtype))


def check_every_element_written(shape, dtype, device):
    """Forward and backward into NaN-filled strided views of larger NaN buffers: every element of
    each view is written (finite, and equal to the op's own result), nothing outside it is touched."""
    from convbert_pt.kernels import sdconv_triton

    values, kernel_logits, grad_out = make_inputs(shape, dtype, device, seed=1)
    B, L, N, D, K = shape

    def poisoned_view(size, view_dtype):
        # one extra row, head and channel around the view, so that a stray write lands in the margin
        big = torch.full((B, L + 2, N + 1, size + 3), float("nan"), dtype=view_dtype, device=device)
        return big, big[:, 1 : L + 1, 1:, 2 : size + 2]

    out_big, out = poisoned_view(D, dtype)
    sdconv_triton._forward_into(values, kernel_logits, out)
    probs_big, probs = poisoned_view(K, torch.float32)
    dv_big, grad_values = poisoned_view(D, dtype)
    dw_big, grad_logits = poisoned_view(K, dtype)
    sdconv_triton._backward_into(grad_out, values, kernel_logits, probs, grad_values, grad_logits)

    expected = forward_and_grads(sdconv_triton.span_dynamic_conv_triton, values, kernel_logits, grad_out)
    expected_probs = torch.softmax(kernel_logits.float(), dim=-1)
    for name, big, view, want in (
        ("out", out_big, out, expected[0]),
        ("probs", probs_big, probs, expected_probs),
        ("grad_values", dv_big, grad_values, expected[1]),
        ("grad_logits", dw_big, grad_logits, expected[2]),
    ):
        assert torch.isfinite(view).all(), f"{name} {shape} {dtype}: an element was never written"
        margin = torch.ones_like(big, dtype=torch.bool)
        margin[:, 1 : L + 1, 1:, 2 : view.shape[-1] + 2] = False
        assert torch.isnan(big[margin]).all(), f"{name} {shape} {dtype}: written outside the output"
        if name == "probs":
            torch.testing.assert_close(view, want, rtol=SOFTMAX_KERNEL_FP32_RTOL, atol=SOFTMAX_KERNEL_FP32_ATOL,
                                       msg=f"{name} {shape}")
        else:  # the same kernel on the same inputs, only the output strides differ: bit for bit
            assert torch.equal(view, want), f"{name} {shape} {dtype}: differs from the op's result"


def check_strided_inputs(device):
    """Inputs read in place through their strides: a head slice of a wider tensor, transposed
    logits, and the stride-0 gradient of ``out.sum()``."""
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

    B, L, N, D, K = 2, 9, 3, 5, 5
    gen = torch.Generator().manual_seed(2)
    wide = torch.randn(B, L, 2 * N, D, generator=gen).to(device)  # (B, L, 2N, D)
    values = wide[:, :, N:]  # (B, L, N, D), the conv heads of a concatenated block
    kernel_logits = torch.randn(B, L, K, N, generator=gen).to(device).transpose(2, 3)  # (B, L, N, K)
    assert not values.is_contiguous() and not kernel_logits.is_contiguous()

    def with_sum_grad(fn, v, w):
        v = v.detach().clone().requires_grad_(True)  # clone keeps the strides of the view
        w = w.detach().clone().requires_grad_(True)
        out = fn(v, w)
        out.sum().backward()  # grad_out arrives expanded, all strides 0
        return out.detach(), v.grad, w.grad

    got = with_sum_grad(span_dynamic_conv_triton, values, kernel_logits)
    plain = with_sum_grad(span_dynamic_conv_reference, values, kernel_logits)
    exact = with_sum_grad(span_dynamic_conv_reference, values.double(), kernel_logits.double())
    for name, x, x_plain, ref in zip(("out", "grad_values", "grad_logits"), got, plain, exact, strict=True):
        assert_three_way(f"{name} (strided inputs)", x, x_plain, ref, LOWP_FACTOR, atol_for(torch.float32))


def check_empty_sizes(device):
    """B, L, N or D of 0: exact results (empty, and d kernel_logits = 0 when only D is 0)."""
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

    for shape in ((0, 5, 2, 4, 3), (2, 0, 2, 4, 3), (2, 5, 0, 4, 3), (2, 5, 2, 0, 3)):
        values, kernel_logits, grad_out = make_inputs(shape, torch.float32, device)
        got = forward_and_grads(span_dynamic_conv_triton, values, kernel_logits, grad_out)
        want = forward_and_grads(span_dynamic_conv_reference, values, kernel_logits, grad_out)
        for name, x, y in zip(("out", "grad_values", "grad_logits"), got, want, strict=True):
            assert x.shape == y.shape and torch.equal(x, y), f"{name} {shape}"


BAD_CALLS = (
    # (description, values shape, logits shape, dtype, expected message)
    ("even K", (2, 6, 3, 8), (2, 6, 3, 4), torch.float32, "odd and at most 31, got K=4"),
    ("K = 33", (2, 6, 3, 8), (2, 6, 3, 33), torch.float32, "odd and at most 31, got K=33"),
    ("int dtype", (2, 6, 3, 8), (2, 6, 3, 3), torch.int32, "dtype torch.int32"),
    ("float64", (2, 6, 3, 8), (2, 6, 3, 3), torch.float64, "dtype torch.float64"),
    ("L mismatch", (2, 6, 3, 8), (2, 7, 3, 3), torch.float32, "disagree on"),
    ("N mismatch", (2, 6, 3, 8), (2, 6, 2, 3), torch.float32, "disagree on"),
    ("rank 3", (2, 6, 24), (2, 6, 3, 3), torch.float32, "expected values"),
)


def check_unsupported_calls(device):
    """Every bad call is named by unsupported_reason and raises ValueError with that reason."""
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton, unsupported_reason

    for description, v_shape, w_shape, dtype, message in BAD_CALLS:
        values = torch.zeros(v_shape, device=device).to(dtype)
        kernel_logits = torch.zeros(w_shape, device=device).to(dtype)
        reason = unsupported_reason(values, kernel_logits)
        assert reason is not None and message in reason, f"{description}: reason {reason!r}"
        with pytest.raises(ValueError, match="span_dynamic_conv_triton: ") as info:
            span_dynamic_conv_triton(values, kernel_logits)
        assert reason in str(info.value), description
    on_meta = torch.zeros(1, 2, 1, 4, device="meta")
    assert "are on" in unsupported_reason(on_meta, torch.zeros(1, 2, 1, 3, device=device))


# ---------------------------------------------------------------------------------------------
# The default run (no TRITON_INTERPRET): no kernel in this process.


def default_run_only(test):
    """Collect ``test`` in the default run only, not in the interpreter subprocess."""
    test.__test__ = not INTERPRETED_RUN
    return test


@default_run_only
def test_kernel_checks_pass_under_the_triton_interpreter():
    if importlib.util.find_spec("triton") is None:
        pytest.skip(
            "Triton is not installed (pip install 'convbert[triton]'): the kernel checks need its interpreter"
        )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", str(pathlib.Path(__file__)), "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"kernel checks under TRITON_INTERPRET=1 failed:\n{report}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, report
    print(proc.stdout.strip().splitlines()[-1])


@default_run_only
def test_importing_convbert_pt_and_the_kernel_package_never_imports_triton():
    code = (
        "import sys, convbert_pt, convbert_pt.sdconv, convbert_pt.kernels, convbert_pt.kernels.reference; "
        "assert 'triton' not in sys.modules, 'triton was imported'"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@default_run_only
def test_cpu_tensors_are_refused_without_the_interpreter():
    pytest.importorskip("triton", reason="Triton is not installed")
    from convbert_pt.kernels import sdconv_triton

    if sdconv_triton._INTERPRETED:
        pytest.skip("the kernels of this process were built for the interpreter")
    values, kernel_logits = torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 3)
    assert "TRITON_INTERPRET=1" in sdconv_triton.unsupported_reason(values, kernel_logits)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        sdconv_triton.span_dynamic_conv_triton(values, kernel_logits)


@default_run_only
def test_reference_matches_the_definition_elementwise():
    """The oracle itself, against the formula written out index by index (fp64, NumPy)."""
    rng = np.random.default_rng(3)
    for B, L, N, D, K in ((2, 6, 2, 3, 5), (1, 2, 1, 2, 7), (1, 5, 3, 1, 1)):
        values = rng.standard_normal((B, L, N, D))
        logits = rng.standard_normal((B, L, N, K))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        expected = np.zeros_like(values)
        for b, t, n, j in np.ndindex(B, L, N, K):
            s = t + j - (K - 1) // 2
            if 0 <= s < L:
                expected[b, t, n] += probs[b, t, n, j] * values[b, s, n]
        got = span_dynamic_conv_reference(torch.from_numpy(values), torch.from_numpy(logits)).numpy()
        assert_close(f"reference vs definition {(B, L, N, D, K)}", got, expected, SDCONV_FP64_ATOL)


@default_run_only
def test_three_way_check_fails_on_a_perturbed_kernel_output():
    """The rule used here does fail when the tested output is off by more than the bar."""
    ref = np.zeros(4)
    with pytest.raises(ParityError, match="out"):
        assert_three_way("out", ref + 1e-3, ref + 1e-4, ref, LOWP_FACTOR, LOWP_ATOL["float32"])




# ---------------------------------------------------------------------------------------------
# The kernel checks (TRITON_INTERPRET=1 at process start), on CPU tensors.


class TestKernelsUnderInterpreter:
    __test__ = INTERPRETED_RUN

    @pytest.fixture(autouse=True, scope="class")
    def _interpreted_kernels(self):
        pytest.importorskip("triton", reason="Triton is not installed")
        from convbert_pt.kernels import sdconv_triton

        assert sdconv_triton._INTERPRETED, "TRITON_INTERPRET=1 was set after the kernels were built"

    @pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
    @pytest.mark.parametrize("shape", SHAPES_CPU, ids=lambda s: "B{}L{}N{}D{}K{}".format(*s))
    def test_forward_and_gradients_match_the_reference(self, shape, dtype):
        check_against_reference(shape, dtype, "cpu")

    @pytest.mark.parametrize(
        "shape, dtype",
        (
            ((1, 5, 2, 5, 9), torch.float32),
            ((1, 70, 1, 8, 3), torch.bfloat16),
            ((1, 1, 1, 1, 1), torch.float16),
        ),
        ids=("L<K-fp32", "two-blocks-bf16", "L1-fp16"),
    )
    def test_every_output_element_is_written_and_nothing_else(self, shape, dtype):
        check_every_element_written(shape, dtype, "cpu")

    def test_strided_inputs_are_read_in_place(self):
        check_strided_inputs("cpu")

    def test_model_entry_point_dispatches_to_the_kernel_and_matches_native(self):
        from convbert_pt.sdconv import span_dynamic_conv

        values, kernel_logits, _ = make_inputs((2, 7, 2, 5, 5), torch.float32, "cpu")
        got = span_dynamic_conv(values, kernel_logits, impl="triton")
        want = span_dynamic_conv(values, kernel_logits, impl="native")
        assert got.dtype == want.dtype
        assert_close("triton vs native", got, want, SDCONV_NATIVE_FP32_ATOL)

    def test_unsupported_calls_raise_with_the_reason(self):
        check_unsupported_calls("cpu")

    def test_empty_sizes_give_exact_results(self):
        check_empty_sizes("cpu")

    def test_operator_registration_passes_opcheck(self):
        from convbert_pt.kernels import sdconv_triton  # noqa: F401  (registers the operators)

        values, kernel_logits, grad_out = make_inputs((1, 4, 2, 3, 3), torch.float32, "cpu")
        leaves = (values.clone().requires_grad_(True), kernel_logits.clone().requires_grad_(True))
        # schema, fake implementation and autograd registration; the AOT path is the compile test's
        checks = ("test_schema", "test_autograd_registration", "test_faketensor")
        torch.library.opcheck(torch.ops.convbert.span_dynamic_conv.default, leaves, test_utils=checks)
        # no double backward: the backward operator is checked on plain tensors
        backward_op = torch.ops.convbert.span_dynamic_conv_backward.default
        torch.library.opcheck(backward_op, (grad_out, values, kernel_logits), test_utils=checks)

    def test_torch_compile_fullgraph_matches_eager(self):
        from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

        values, kernel_logits, grad_out = make_inputs((2, 6, 3, 8, 5), torch.float32, "cpu")
        # aot_eager: the interpreted op is opaque to Inductor anyway; the GPU tests compile with Inductor
        compiled = torch.compile(span_dynamic_conv_triton, fullgraph=True, backend="aot_eager")
        got = forward_and_grads(compiled, values, kernel_logits, grad_out)
        eager = forward_and_grads(span_dynamic_conv_triton, values, kernel_logits, grad_out)
        for name, x, y in zip(("out", "grad_values", "grad_logits"), got, eager, strict=True):
            assert torch.equal(x, y), name
