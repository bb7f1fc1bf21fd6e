"""Same weights, same numbers: PyTorch vs Keras on every head over a grid of configs.

Forward outputs (every hidden state, attention map and logit) agree within CROSS_FP32_ATOL, losses
agree, the gradient of every parameter (mapped through the weight table) agrees within
CROSS_GRAD_RTOL of its magnitude, and one SGD step gives the same updated weights.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import convbert_pt  # noqa: E402
import convbert_tf  # noqa: E402
from convbert_common import heads  # noqa: E402
from convbert_common import weight_map as wm  # noqa: E402
from convbert_common.config import ConvBertConfig  # noqa: E402
from convbert_common.layouts import get_layout  # noqa: E402
from convbert_tf import io as tf_io  # noqa: E402
from convbert_tools.verify import fixed_batch, labels_for  # noqa: E402
from tests.configs import head_config  # noqa: E402
from tests.parity import assert_close, randomise_torch  # noqa: E402
from tests.tolerances import CROSS_FP32_ATOL, CROSS_GRAD_RTOL, ZERO_GRAD_ATOL  # noqa: E402

# A covering grid over the shared tiny config (E 16 != H 32, one group, head_ratio 2, gelu): every
# value of every axis of the issue appears at least once, with padded rows.
GRID = {
    "emb!=hidden,g1,r2,k9,gelu": dict(conv_kernel_size=9),
    "emb==hidden,g2,r2,k7,gelu_new": dict(embedding_size=32, num_groups=2, conv_kernel_size=7, hidden_act="gelu_new"),
    "emb!=hidden,g2,r1,k3,relu": dict(num_groups=2, head_ratio=1, conv_kernel_size=3, hidden_act="relu"),
    "emb==hidden,g1,r3,k9,relu": dict(embedding_size=32, head_ratio=3, conv_kernel_size=9, hidden_act="relu"),
    "emb!=hidden,g1,r3,k7,gelu": dict(head_ratio=3, conv_kernel_size=7),
    "emb==hidden,g2,r1,k9,gelu_new": dict(embedding_size=32, num_groups=2, head_ratio=1, conv_kernel_size=9,
                                          hidden_act="gelu_new"),
}


def config_for(grid: str, head: str) -> ConvBertConfig:
    return head_config(head, **GRID[grid])


def build_pair(config: ConvBertConfig, head: str, seed: int = 0):
    pt = getattr(convbert_pt, heads.get(head).class_name)(config)
    randomise_torch(pt, seed)
    pt.eval()
    names = {s.name for s in wm.model_specs(config, head)}
    tensors = {k: v.detach().numpy().copy() for k, v in pt.state_dict().items() if k in names}
    assert set(tensors) == names
    tfm = getattr(convbert_tf, heads.get(head).class_name)(config)
    tf_io.assign_canonical(tfm, tensors, source="test")
    return pt, tfm


def batch_for(config: ConvBertConfig, head: str):
    inputs = fixed_batch(config, batch=3, length=14, seed=3)
    if head == "multiple_choice":
        inputs = {k: np.stack([v, v[::-1]], axis=1) for k, v in inputs.items()}  # (3, 2, L)
    return inputs, labels_for(config, head, inputs)


def pt_forward(model, inputs, labels, train=False):
    model.train(train)
    feed = {k: torch.from_numpy(np.asarray(v)) for k, v in {**inputs, **labels}.items()}
    return model(**feed, output_hidden_states=True, output_attentions=True, return_dict=True)


def tf_forward(model, inputs, labels, training=False):
    return model({**inputs, **labels}, output_hidden_states=True, output_attentions=True, training=training)


def compare_outputs(pt_out, tf_out, prefix: str) -> None:
    keys = [k for k in ("last_hidden_state", "logits", "start_logits", "end_logits", "loss") if
            getattr(pt_out, k, None) is not None]
    for key in keys:
        assert key in tf_out, f"{prefix}{key} missing from the Keras outputs"
        assert_close(f"{prefix}{key}", np.asarray(tf_out[key]), getattr(pt_out, key).detach().numpy(),
                     CROSS_FP32_ATOL)
    for group in ("hidden_states", "attentions"):
        pt_t, tf_t = getattr(pt_out, group), tf_out[group]
        assert len(pt_t) == len(tf_t), f"{prefix}{group}: {len(pt_t)} vs {len(tf_t)} tensors"
        for i, (a, b) in enumerate(zip(pt_t, tf_t, strict=True)):
            assert_close(f"{prefix}{group}[{i}]", np.asarray(b), a.detach().numpy(), CROSS_FP32_ATOL)


@pytest.mark.parametrize("head", heads.NAMES)
@pytest.mark.parametrize("grid", sorted(GRID))
def test_same_weights_give_the_same_outputs_and_losses(grid, head):
    config = config_for(grid, head)
    pt, tfm = build_pair(config, head)
    inputs, labels = batch_for(config, head)
    with torch.no_grad():
        pt_out = pt_forward(pt, inputs, labels)
    tf_out = tf_forward(tfm, inputs, labels)
    compare_outputs(pt_out, tf_out, f"{grid}/{head}: ")


# Gradients that vanish identically are compared with zero, not relatively to their own noise.
# Each is a bias that a softmax cancels: every attention key bias (it adds q.b to a whole row of
# scores); for multiple choice (softmax over choices) and question answering (softmax over
# positions), the output bias and the last LayerNorm's bias, which shift every candidate's logit
# by the same amount.
def _identically_zero(config: ConvBertConfig, head: str, name: str) -> bool:
    if name.endswith("attention.self.key.bias"):
        return True
    last_norm = f"convbert.encoder.layer.{config.num_hidden_layers - 1}.output.LayerNorm.bias"
    return (head == "multiple_choice" and name in ("classifier.bias", last_norm)) or (
        head == "question_answering" and name in ("qa_outputs.bias", last_norm))


def _relative_close(name: str, a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    assert_close(name, a, b, rtol * float(np.max(np.abs(b))))


@pytest.mark.parametrize("head", heads.NAMES)
@pytest.mark.parametrize("grid", ["emb!=hidden,g1,r2,k9,gelu", "emb==hidden,g2,r2,k7,gelu_new"])
def test_gradients_of_every_parameter_agree_and_one_sgd_step_matches(grid, head):
    if head == "model":
        pytest.skip("the bare model has no loss; its gradients are covered by every head's backbone")
    config = config_for(grid, head)
    pt, tfm = build_pair(config, head, seed=1)
    inputs, labels = batch_for(config, head)
    specs = {s.name: s for s in wm.model_specs(config, head)}

    out = pt_forward(pt, inputs, labels, train=True)
    out.loss.backward()
    pt_grads = {n: p.grad.detach().numpy().copy() for n, p in pt.named_parameters() if n in specs}

    variables = tf_io.canonical_variables(tfm)
    names = sorted(variables)
    with tf.GradientTape() as tape:
        tf_out = tf_forward(tfm, inputs, labels, training=True)
        loss = tf_out["loss"]
    grads = tape.gradient(loss, [variables[n].value for n in names])
    assert_close("loss", np.asarray(loss), out.loss.detach().numpy(), CROSS_FP32_ATOL)
    for name, g in zip(names, grads, strict=True):
        assert g is not None, f"{name}: no gradient in Keras"
        spec = specs[name]
        g = get_layout(spec.keras_layout).to_canonical(np.asarray(tf.convert_to_tensor(g)), spec.shape, name)
        if _identically_zero(config, head, name):
            assert_close(f"grad {name} (PyTorch, exactly 0 in exact arithmetic)", pt_grads[name], 0 * g, ZERO_GRAD_ATOL)
            assert_close(f"grad {name} (Keras, exactly 0 in exact arithmetic)", g, 0 * g, ZERO_GRAD_ATOL)
            continue
        _relative_close(f"grad {name}", g, pt_grads[name], CROSS_GRAD_RTOL)

    lr = 0.1
    torch.optim.SGD(pt.parameters(), lr=lr).step()
    keras.optimizers.SGD(learning_rate=lr).apply_gradients(zip(grads, [variables[n] for n in names], strict=True))
    after_tf = tf_io.canonical_arrays(tfm)
    after_pt = {k: v.detach().numpy() for k, v in pt.state_dict().items() if k in specs}
    for name in names:
        _relative_close(f"after SGD {name}", after_tf[name], after_pt[name], CROSS_GRAD_RTOL)
