"""recompute.py: the lean autograd functions give the plain path's numbers and keep less for backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convbert_common.config import ACTIVATIONS
from convbert_pt import ConvBertForSequenceClassification
from convbert_pt.activations import get_activation
from convbert_pt.modeling import grouped_linear
from convbert_pt.recompute import activation_dense, dropout_attention
from tests.configs import tiny_config
from tests.parity import assert_close, assert_three_way
from tests.pt.conftest import random_inputs
from tests.tolerances import DROPOUT_MEAN_ATOL, LOWP_ATOL, LOWP_FACTOR, RECOMPUTE_FP32_ATOL


def _saved_bytes(fn, *inputs: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward while running fn(*inputs), inputs excluded."""
    given = {t.untyped_storage().data_ptr() for t in inputs}
    seen: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in given:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    out.sum().backward()
    return sum(seen.values())


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _assert_same_forward_and_grads(label: str, lean, plain, grad, names, lean_in, plain_in) -> None:
    """The recomputing path's output equals the plain one's exactly; its input gradients within tolerance."""
    assert torch.equal(lean, plain), f"{label}: forward differs by {(lean - plain).abs().max().item():.3g}"
    plain.backward(grad)
    lean.backward(grad)
    for what, a, e in zip(names, lean_in, plain_in, strict=True):
        assert_close(f"{label} grad {what}", a.grad, e.grad, RECOMPUTE_FP32_ATOL)


# ------------------------------------------------------------------------------ activation + dense


def _ffn_inputs(grouped: bool, seed: int = 0, M: int = 24, I: int = 16, O: int = 12, G: int = 2):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(2, M // 2, I, generator=g)
    weight = torch.randn(G, I // G, O // G, generator=g) if grouped else torch.randn(O, I, generator=g)
    bias = torch.randn(O, generator=g)
    grad = torch.randn(2, M // 2, O, generator=g)
    return h, weight, bias, grad


@pytest.mark.parametrize("grouped", [False, True], ids=["linear", "grouped"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_dense_equals_the_plain_path(name, grouped):
    act = get_activation(name)
    dense = grouped_linear if grouped else F.linear
    h, weight, bias, grad = _ffn_inputs(grouped)
    plain_in, lean_in = _leaves(h, weight, bias), _leaves(h, weight, bias)
    plain = dense(act(plain_in[0]), plain_in[1], plain_in[2])
    lean = activation_dense(*lean_in, act, dense)
    _assert_same_forward_and_grads(f"{name} {'grouped' if grouped else 'linear'}", lean, plain, grad,
                                   ("h", "weight", "bias"), lean_in, plain_in)


@pytest.mark.parametrize("grouped", [False, True], ids=["linear", "grouped"])
def test_activation_dense_keeps_only_the_pre_activation(grouped):
    act = get_activation("gelu")
    dense = grouped_linear if grouped else F.linear
    h, weight, bias, _ = _ffn_inputs(grouped, M=64, I=32)
    h, weight, bias = _leaves(h, weight, bias)
    plain = _saved_bytes(lambda x, w, b: dense(act(x), w, b), h, weight, bias)
    lean = _saved_bytes(lambda x, w, b: activation_dense(x, w, b, act, dense), h, weight, bias)
    one = h.numel() * h.element_size()
    # Both keep the pre-activation and the weight (the inputs); the plain path also keeps act(h).
    assert lean == 0, f"lean path keeps {lean} bytes beyond its inputs"
    assert plain >= one, f"plain path keeps {plain} bytes beyond its inputs, expected act(h)'s {one}"


def test_activation_dense_under_bf16_autocast_follows_the_three_way_rule():
    act = get_activation("gelu_new")
    h, weight, bias, grad = _ffn_inputs(False, M=64, I=32, O=16)
    exact_in = _leaves(h.double(), weight.double(), bias.double())
    exact = F.linear(act(exact_in[0]), exact_in[1], exact_in[2])
    exact.backward(grad.double())
    results = {}
    for path in ("plain", "lean"):
        leaves = _leaves(h, weight, bias)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pre = leaves[0] * 1.0  # a non-leaf input, like the model's
            if path == "plain":
                out = F.linear(act(pre), leaves[1], leaves[2])
            else:
                out = activation_dense(pre, leaves[1], leaves[2], act, F.linear)
        out.float().backward(grad)
        results[path] = (out, *[t.grad for t in leaves])
    for i, what in enumerate(("out", "grad h", "grad weight", "grad bias")):
        lean, plain = results["lean"][i], results["plain"][i]
        assert lean.dtype == plain.dtype, f"{what}: {lean.dtype} != {plain.dtype}"
        ref = exact if i == 0 else exact_in[i - 1].grad
        assert_three_way(f"bf16 {what}", lean.float(), plain.float(), ref.float(), LOWP_FACTOR, LOWP_ATOL["bfloat16"])


# ------------------------------------------------------------------------------ attention + dropout


def _attention_inputs(B=2, N=3, L=10, D=8, seed=0, masked=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, N, L, D, generator=g) for _ in range(3))
    additive = None
    if masked:
        mask = torch.ones(B, 1, 1, L)
        mask[0, ..., L - 3:] = 0
        additive = (1.0 - mask) * torch.finfo(torch.float32).min
    return q, k, v, additive, torch.randn(B, N, L, D, generator=g)


def _plain_dropout_attention(q, k, v, additive, p):
    """The explicit path of modeling.attention, with the keep mask drawn as dropout_attention draws it."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if additive is not None:
        scores = scores + additive
    probs = torch.softmax(scores, dim=-1)
    keep = torch.empty_like(probs, dtype=torch.bool).bernoulli_(1.0 - p)
    return torch.matmul(probs * keep * (1.0 / (1.0 - p)), v)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_attention_equals_the_plain_path_with_the_same_mask(p, masked):
    q, k, v, additive, grad = _attention_inputs(masked=masked)
    plain_in, lean_in = _leaves(q, k, v), _leaves(q, k, v)
    torch.manual_seed(7)
    plain = _plain_dropout_attention(*plain_in, additive, p)
    torch.manual_seed(7)
    lean = dropout_attention(*lean_in, additive, p)
    _assert_same_forward_and_grads(f"p={p} masked={masked}", lean, plain, grad, ("q", "k", "v"), lean_in, plain_in)


def test_dropout_attention_drops_at_the_requested_rate_and_rescales():
    q, k, v, _, _ = _attention_inputs(B=4, N=4, L=64, D=8, masked=False)
    v = torch.ones_like(v)  # context = the row sums of the dropped probabilities
    torch.manual_seed(0)
    context = dropout_attention(q, k, v, None, 0.25)
    # Each row of probabilities sums to 1; dropout keeps it 1 in expectation.
    assert abs(context.mean().item() - 1.0) < DROPOUT_MEAN_ATOL, context.mean().item()


def test_dropout_attention_keeps_a_byte_mask_instead_of_the_probabilities():
    q, k, v, additive, _ = _attention_inputs(B=1, N=2, L=64, D=8)
    q, k, v = _leaves(q, k, v)
    plain = _saved_bytes(lambda *x: _plain_dropout_attention(*x, additive, 0.1), q, k, v)
    lean = _saved_bytes(lambda *x: dropout_attention(*x, additive, 0.1), q, k, v)
    probs_bytes = 1 * 2 * 64 * 64 * 4
    # lean: the additive mask and a one-byte keep mask; plain: the probabilities and their dropped copy too.
    assert lean <= probs_bytes // 4 + additive.numel() * 4, f"lean path keeps {lean} bytes"
    assert plain >= 2 * probs_bytes, f"plain path keeps {plain} bytes"


# ------------------------------------------------------------------------------ in the model


def _config(dropout: float, **overrides):
    return tiny_config(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, num_labels=3, **overrides)


@pytest.mark.parametrize("num_groups", [1, 2])
def test_gradient_checkpointing_gives_the_same_gradients_with_dropout(num_groups):
    torch.manual_seed(0)
    model = ConvBertForSequenceClassification(_config(0.2, num_groups=num_groups)).train()
    inputs = random_inputs(model.config)  # padded rows: the attention mask is in play
    labels = torch.tensor([0, 2, 1])

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        model(**inputs, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(f"checkpointed grad {name}", checkpointed[name], plain[name], RECOMPUTE_FP32_ATOL)


def test_training_forward_equals_the_no_grad_forward_without_dropout():
    """The lean training path and the inference path compute the same outputs."""
    torch.manual_seed(0)
    model = ConvBertForSequenceClassification(_config(0.0)).train()
    inputs = random_inputs(model.config)
    with torch.no_grad():
        inference = model(**inputs).logits
    training = model(**inputs).logits
    assert torch.equal(training.detach(), inference)
