"""gemm.py: every GEMM backend gives the reference numbers, the switch is honoured, torch.compile keeps one graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import convbert_pt
from convbert_pt import ConvBertForMaskedLM, gemm
from convbert_pt.activations import get_activation
from tests.configs import tiny_config
from tests.parity import assert_close
from tests.pt.conftest import random_inputs
from tests.tolerances import COMPILED_FP32_ATOL, GEMM_BACKEND_FP32_ATOL

ONEDNN = gemm.onednn_unavailable_reason() is None
BACKENDS = ["mkl", pytest.param("onednn", marks=pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch"))]
ONEDNN_OP = "mkldnn::_linear_pointwise"


@pytest.fixture(autouse=True)
def _unset_backend(monkeypatch):
    """Every test starts and ends with no backend set and no environment variable."""
    monkeypatch.delenv(gemm.ENV_VAR, raising=False)
    gemm.set_gemm_backend(None)
    yield
    gemm.set_gemm_backend(None)


def _model(dtype=torch.float32) -> ConvBertForMaskedLM:
    torch.manual_seed(0)
    return ConvBertForMaskedLM(tiny_config()).to(dtype)


def _loss_and_grads(model, inputs, train: bool = True):
    model.train(train)
    model.zero_grad(set_to_none=True)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _ops_run(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


# ------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_equals_f_linear(backend):
    gemm.set_gemm_backend(backend)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 20, generator=g)
    weight, bias = torch.randn(12, 20, generator=g), torch.randn(12, generator=g)
    strided = torch.randn(20, 21, generator=g).t()  # (21, 20), not contiguous
    for args in [(x, weight, bias), (x, weight, None), (strided, weight, bias), (x, torch.randn(20, 12).t(), bias)]:
        assert_close("linear", gemm.linear(*args), F.linear(*(a.double() if a is not None else None for a in args)),
                     GEMM_BACKEND_FP32_ATOL)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_model_outputs_and_gradients_equal_the_float64_reference(backend, train):
    """Forward logits and every parameter gradient (the FFN's recomputing path included in train mode)."""
    inputs = random_inputs(tiny_config())
    reference = _loss_and_grads(_model(torch.float64), inputs, train)
    gemm.set_gemm_backend(backend)
    logits, grads = _loss_and_grads(_model(), inputs, train)
    assert_close("logits", logits, reference[0], GEMM_BACKEND_FP32_ATOL)
    assert grads.keys() == reference[1].keys()
    for name, grad in grads.items():
        assert_close(name, grad, reference[1][name], GEMM_BACKEND_FP32_ATOL)


# ------------------------------------------------------------------------------ the switch


@pytest.mark.parametrize("backend", BACKENDS)
def test_switch_is_honoured_forward_and_backward(backend):
    gemm.set_gemm_backend(backend)
    model, inputs = _model(), random_inputs(tiny_config())
    ops = _ops_run(lambda: _loss_and_grads(model, inputs))
    if backend == "onednn":
        assert ONEDNN_OP in ops and "aten::addmm" not in ops and "aten::linear" not in ops
    else:
        assert ONEDNN_OP not in ops and "aten::linear" in ops


def test_auto_takes_what_the_timing_says(monkeypatch):
    if not ONEDNN:
        pytest.skip("no oneDNN in this torch")
    picked: list[tuple[int, int, int]] = []

    def probe(M, K, N):
        picked.append((M, K, N))
        return gemm.ShapeChoice("onednn" if N == 12 else "mkl", 1.0, 1.0)

    monkeypatch.setattr(gemm, "_probe", probe)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 20, generator=g)
    ops_12 = _ops_run(lambda: gemm.linear(x, torch.randn(12, 20), None))
    ops_13 = _ops_run(lambda: gemm.linear(x, torch.randn(13, 20), None))
    assert ONEDNN_OP in ops_12 and ONEDNN_OP not in ops_13
    gemm.linear(torch.randn(7, 20), torch.randn(12, 20), None)  # M 7 rounds up to the same class as M 5
    assert picked == [(8, 20, 12), (8, 20, 13)]
    assert set(gemm.gemm_backend().choices) == {(8, 20, 12), (8, 20, 13)}


def test_auto_never_takes_the_slower():
    assert gemm.faster(1.0, 0.5) == "onednn"
    assert gemm.faster(0.5, 1.0) == "mkl"
    assert gemm.faster(1.0, 1.0) == "mkl"  # a tie keeps PyTorch's own path


def test_auto_without_onednn_falls_back_with_a_reason(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    info = gemm.gemm_backend()
    assert info.requested == "auto" and not info.onednn_available
    assert "falls back to mkl" in info.reason and "oneDNN" in info.reason
    model, inputs = _model(), random_inputs(tiny_config())
    assert ONEDNN_OP not in _ops_run(lambda: _loss_and_grads(model, inputs))
    with pytest.raises(RuntimeError, match="no oneDNN"):
        gemm.set_gemm_backend("onednn")


def test_environment_variable_and_bad_names(monkeypatch):
    monkeypatch.setenv(gemm.ENV_VAR, "MKL")
    info = gemm.gemm_backend()
    assert (info.requested, info.source) == ("mkl", "env CONVBERT_GEMM")
    convbert_pt.set_gemm_backend("auto")  # the explicit call wins over the environment
    assert (convbert_pt.gemm_backend().requested, convbert_pt.gemm_backend().source) == ("auto", "set_gemm_backend")
    with pytest.raises(ValueError, match="set_gemm_backend"):
        gemm.set_gemm_backend("openblas")
    gemm.set_gemm_backend(None)
    monkeypatch.setenv(gemm.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="CONVBERT_GEMM"):
        gemm.gemm_backend()


def test_low_precision_and_autocast_keep_pytorchs_path():
    if not ONEDNN:
        pytest.skip("no oneDNN in this torch")
    gemm.set_gemm_backend("onednn")
    x, weight = torch.randn(4, 8), torch.randn(6, 8)
    with torch.autocast("cpu", torch.bfloat16):
        ops = _ops_run(lambda: gemm.linear(x, weight, None))
    assert "aten::linear" in ops and ONEDNN_OP not in ops
    assert gemm.linear(x.bfloat16(), weight.bfloat16()).dtype == torch.bfloat16


# ------------------------------------------------------------------------------ torch.compile


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_compile_has_no_graph_break(backend):
    gemm.set_gemm_backend(backend)
    model, inputs = _model().eval(), random_inputs(tiny_config())
    explained = torch._dynamo.explain(model)(**inputs)
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_compiled_training_step_equals_eager(backend):
    """fullgraph=True through AOT autograd: the custom op's fake impl and backward formula trace."""
    gemm.set_gemm_backend(backend)
    inputs = random_inputs(tiny_config())
    model = _model()
    eager = _loss_and_grads(model, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    logits, grads = _loss_and_grads(compiled, inputs)
    assert_close("logits", logits, eager[0], COMPILED_FP32_ATOL)
    for name, grad in eager[1].items():
        assert_close(name, grads[name.removeprefix("_orig_mod.")] if name in grads else grads["_orig_mod." + name],
                     grad, COMPILED_FP32_ATOL)


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch")
def test_packed_inference_weights_follow_every_update():
    """Inference keeps oneDNN-layout copies of the weights; an in-place update or a load repacks them."""
    gemm.set_gemm_backend("onednn")
    model, inputs = _model().eval(), random_inputs(tiny_config())

    def both():
        with torch.no_grad():
            fast = model(**inputs).logits
            gemm.set_gemm_backend("mkl")
            plain = model(**inputs).logits
            gemm.set_gemm_backend("onednn")
        return fast, plain

    fast, plain = both()
    assert_close("packed", fast, plain, GEMM_BACKEND_FP32_ATOL)
    assert len(gemm._SETTING.packed) > 0
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    fast, plain = both()
    assert_close("after an in-place update", fast, plain, GEMM_BACKEND_FP32_ATOL)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    model.load_state_dict(other.state_dict())
    fast, plain = both()
    assert_close("after load_state_dict", fast, plain, GEMM_BACKEND_FP32_ATOL)


def _saved_bytes(model, inputs) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one training forward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    return sum(seen.values())


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch")
def test_training_keeps_the_same_activation_memory():
    """oneDNN's autograd formula saves what F.linear's does, and the FFN recompute still keeps one tensor."""
    inputs = random_inputs(tiny_config(), batch=4, length=16)
    gemm.set_gemm_backend("mkl")
    plain = _saved_bytes(_model(), inputs)
    gemm.set_gemm_backend("onednn")
    assert _saved_bytes(_model(), inputs) == plain


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch")
def test_fused_epilogues_keep_every_gradient():
    """The fused activation / residual ops have no autograd: any tensor that wants a gradient turns them off."""
    gemm.set_gemm_backend("onednn")
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(6, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(5, generator=g)
    residual = torch.randn(6, 5, generator=g, requires_grad=True)
    gemm.linear_residual(x, weight, bias, residual).sum().backward()
    assert_close("residual grad", residual.grad, torch.ones(6, 5), GEMM_BACKEND_FP32_ATOL)
    bias.requires_grad_(True)
    act = get_activation("gelu")
    gemm.linear_activation(x, weight, bias, act).sum().backward()
    assert bias.grad is not None
    with torch.no_grad():
        fused = gemm.linear_activation(x, weight, bias, act)
        assert_close("fused gelu", fused, act(F.linear(x.double(), weight.double(), bias.double())),
                     GEMM_BACKEND_FP32_ATOL)
        assert_close("fused add", gemm.linear_residual(x, weight, bias, residual),
                     F.linear(x.double(), weight.double(), bias.double()) + residual.double(), GEMM_BACKEND_FP32_ATOL)


def test_hooks_and_replaced_dense_layers_are_called():
    """A forward hook on a dense layer, or a module put in its place, still runs in inference."""
    model, inputs = _model().eval(), random_inputs(tiny_config())
    layer = model.convbert.encoder.layer[0]
    seen = []
    for module in (layer.intermediate.dense, layer.output.dense, layer.attention.output.dense):
        module.register_forward_hook(lambda m, args, out: seen.append(m))
    with torch.no_grad():
        model(**inputs)
    assert len(seen) == 3
    wrapped = layer.output.dense

    class Doubled(torch.nn.Module):  # a stand-in for a LoRA / quantized replacement
        def __init__(self):
            super().__init__()
            self.inner = wrapped
            self.weight, self.bias = wrapped.weight, wrapped.bias

        def forward(self, x):
            return 2 * self.inner(x)

    with torch.no_grad():
        before = model(**inputs).logits
        layer.output.dense = Doubled()
        after = model(**inputs).logits
    assert (after - before).abs().max() > 1e-3


def test_eager_dense_layers_need_no_compiler_so_tensorflow_can_share_the_process():
    """Converting weights in one process loads TensorFlow, then runs our PyTorch model: the eager GEMM
    path must not import torch._dynamo (with Triton's LLVM, which aborts next to TensorFlow's)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    code = (
        "import sys, tensorflow, torch, convbert_pt\n"
        "from tests.configs import tiny_config\n"
        "convbert_pt.set_gemm_backend('onednn')\n"
        "model = convbert_pt.ConvBertForSequenceClassification(tiny_config())\n"
        "ids = torch.randint(5, 90, (2, 7))\n"
        "model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()\n"
        "with torch.no_grad():\n"
        "    model.eval()(input_ids=ids)\n"
        "print('dynamo', 'torch._dynamo' in sys.modules)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([os.path.join(root, "src"), root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("dynamo False"), proc.stdout
