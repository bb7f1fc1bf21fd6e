"""The PyTorch model on a CUDA device (skipped without one): fp32 parity, fp16 / bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from convbert_pt.modeling import ConvBertForSequenceClassification
from convbert_pt.sdconv import span_dynamic_conv
from tests.parity import assert_close, assert_three_way
from tests.pt.conftest import expected_outputs, head_dir, torch_inputs
from tests.tolerances import BF16_LOGITS_ATOL, LOWP_ATOL, LOWP_FACTOR, REFERENCE_FP32_ATOL, SDCONV_NATIVE_FP32_ATOL

pytestmark = pytest.mark.gpu


def _model_and_inputs():
    model = ConvBertForSequenceClassification.from_pretrained(head_dir("sequence_classification"), device="cuda")
    expected = expected_outputs("sequence_classification")
    return model, {k: v.cuda() for k, v in torch_inputs(expected).items()}, expected


def test_cuda_fp32_reproduces_the_reference():
    model, inputs, expected = _model_and_inputs()
    # TF32 would blur an fp32 comparison: off for matmuls by default, switched off here for cuDNN.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    for key in ("logits", "hidden_states", "attentions"):
        got = out[key] if key == "logits" else torch.stack(out[key])
        assert_close(f"cuda {key}", got.cpu(), expected[key], REFERENCE_FP32_ATOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_forward_and_backward(dtype):
    model, inputs, _ = _model_and_inputs()
    with torch.no_grad():
        ref = model(**inputs).logits
        with torch.autocast("cuda", dtype=dtype):
            low = model(**inputs).logits
    assert low.dtype == dtype
    assert_close(f"{dtype} logits", low.float(), ref, BF16_LOGITS_ATOL)
    model.train()
    with torch.autocast("cuda", dtype=dtype):
        loss = model(**inputs, labels=torch.tensor([0, 1, 2, 0], device="cuda")).loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_native_sdconv_matches_the_reference(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    values = torch.randn(2, 33, 4, 16, device="cuda", generator=g)
    logits = torch.randn(2, 33, 4, 9, device="cuda", generator=g)
    ref32 = span_dynamic_conv(values.double(), logits.double(), impl="reference")
    native = span_dynamic_conv(values.to(dtype), logits.to(dtype), impl="native")
    if dtype == torch.float32:
        assert_close("cuda native fp32", native, ref32, SDCONV_NATIVE_FP32_ATOL)
    else:
        plain = span_dynamic_conv(values.to(dtype), logits.to(dtype), impl="reference")
        name = str(dtype).removeprefix("torch.")
        assert_three_way(f"cuda native {name}", native.float(), plain.float(), ref32, LOWP_FACTOR, LOWP_ATOL[name])
