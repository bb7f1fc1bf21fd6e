"""The compiled Triton span-based dynamic convolution on a CUDA device, against its reference.

The same checks as tests/pt/test_kernels_triton.py (which runs them under the interpreter on CPU),
at sizes the interpreter cannot afford: ConvBERT-base (B 8, L 512, N' 6, D 64, K 9), long
sequences over many position blocks, D that is not a power of two, K up to 31. Plus what only a
GPU shows: torch.compile(fullgraph=True) through Inductor, opcheck of the triton_op registration,
and the memory bound (nothing of size (B, L, N * D, K) is ever allocated).
"""

from __future__ import annotations

import copy

import pytest
import torch

from convbert_pt.kernels.reference import span_dynamic_conv_reference
from tests.parity import assert_three_way
from tests.pt.test_kernels_triton import (
    DTYPES,
    atol_for,
    check_against_reference,
    check_empty_sizes,
    check_every_element_written,
    check_strided_inputs,
    check_unsupported_calls,
    make_inputs,
)
from tests.tolerances import LOWP_FACTOR

pytestmark = pytest.mark.gpu

BASE = (8, 512, 6, 64, 9)  # ConvBERT-base: hidden 768, 12 heads / head_ratio 2 -> 6 heads of 64
# (B, L, N, D, K) by what each one tries (BLOCK_T = 64 positions per program).
SHAPES_GPU = {
    "base": BASE,
    "L300-five-blocks-D5-K31": (2, 300, 3, 5, 31),
    "L1": (4, 1, 3, 64, 3),
    "L7-below-K15": (3, 7, 2, 8, 15),
    "L257-one-past-four-blocks-D1-K1": (2, 257, 1, 1, 1),
    "D128": (2, 130, 3, 128, 9),
    "D100-not-a-power-of-two": (1, 77, 2, 100, 5),
}


@pytest.fixture(autouse=True, scope="module")
def _compiled_kernels():
    pytest.importorskip("triton", reason="Triton is not installed")
    from convbert_pt.kernels import sdconv_triton

    if sdconv_triton._INTERPRETED:
        pytest.skip("TRITON_INTERPRET=1 is set: these tests check the compiled kernels, not the interpreter")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", SHAPES_GPU.values(), ids=list(SHAPES_GPU))
def test_forward_and_gradients_match_the_reference_on_cuda(shape, dtype):
    check_against_reference(shape, dtype, "cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", ((2, 5, 3, 5, 9), (2, 200, 3, 64, 9), (1, 1, 1, 1, 1)), ids=str)
def test_every_output_element_is_written_and_nothing_else_on_cuda(shape, dtype):
    check_every_element_written(shape, dtype, "cuda")


def test_strided_inputs_are_read_in_place_on_cuda():
    check_strided_inputs("cuda")


def test_unsupported_calls_raise_with_the_reason_on_cuda():
    check_unsupported_calls("cuda")


def test_empty_sizes_give_exact_results_on_cuda():
    check_empty_sizes("cuda")


def test_operator_registration_passes_opcheck_on_cuda():
    from convbert_pt.kernels import sdconv_triton  # noqa: F401  (registers the operators)

    values, kernel_logits, grad_out = make_inputs((2, 33, 3, 8, 5), torch.float32, "cuda")
    leaves = (values.clone().requires_grad_(True), kernel_logits.clone().requires_grad_(True))
    torch.library.opcheck(torch.ops.convbert.span_dynamic_conv.default, leaves)
    backward_op = torch.ops.convbert.span_dynamic_conv_backward.default
    torch.library.opcheck(backward_op, (grad_out, values, kernel_logits))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=("float32", "bfloat16"))
def test_torch_compile_fullgraph_inside_a_block_matches_the_reference(dtype):
    """Inductor compiles projection -> kernel -> projection in one graph, forward and backward."""
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

    B, L, N, D, K = 4, 128, 6, 64, 9
    torch.manual_seed(0)
    projections = torch.nn.ModuleDict(
        {"to_values": torch.nn.Linear(N * D, N * D), "to_logits": torch.nn.Linear(N * D, N * K)}
    ).to("cuda")

    def make_block(conv, block_dtype):
        proj = copy.deepcopy(projections).to(block_dtype)

        def block(x):
            values = proj["to_values"](x).view(B, L, N, D)  # (B, L, N', D)
            kernel_logits = proj["to_logits"](x).view(B, L, N, K)  # (B, L, N', K)
            return conv(values, kernel_logits).reshape(B, L, N * D)  # (B, L, A)

        return block

    x = torch.randn(B, L, N * D, device="cuda")
    grad = torch.randn(B, L, N * D, device="cuda")

    def run(block, block_dtype):
        xx = x.to(block_dtype).requires_grad_(True)
        out = block(xx)
        (grad_x,) = torch.autograd.grad(out, (xx,), grad.to(block_dtype))
        return out.detach(), grad_x

    got = run(torch.compile(make_block(span_dynamic_conv_triton, dtype), fullgraph=True), dtype)
    plain = run(make_block(span_dynamic_conv_reference, dtype), dtype)
    exact = run(make_block(span_dynamic_conv_reference, torch.float64), torch.float64)
    for name, x_compiled, x_plain, ref in zip(("out", "grad_x"), got, plain, exact, strict=True):
        assert x_compiled.dtype == dtype, name
        assert_three_way(f"compiled {name} {dtype}", x_compiled, x_plain, ref, LOWP_FACTOR, atol_for(dtype))


def test_forward_and_backward_never_allocate_the_im2col_tensor():
    """Peak extra memory of forward + backward at ConvBERT-base shapes, bf16: the output, the two
    gradients and the fp32 softmax, nothing near (B, L, N * D, K)."""
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

    B, L, N, D, K = BASE
    values, kernel_logits, grad_out = make_inputs(BASE, torch.bfloat16, "cuda")
    values.requires_grad_(True)
    kernel_logits.requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    out = span_dynamic_conv_triton(values, kernel_logits)
    out.backward(grad_out)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - start
    activation = B * L * N * D * 2  # bytes of one (B, L, N', D) bf16 tensor
    softmax = B * L * N * K * 4
    allowed = 2 * activation + 2 * B * L * N * K * 2 + softmax + (1 << 20)  # out, dv, dw, probs, slack
    im2col = activation * K
    assert extra <= allowed, f"peak extra {extra} B > {allowed} B (im2col would be {im2col} B)"
