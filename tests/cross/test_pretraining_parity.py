"""Pretraining, PyTorch vs Keras: same weights, batch and noise give the same losses, samples, gradients
and AdamW step, and a checkpoint written by either framework's loop goes on in the other.

The batches come from the framework-free masker (one seed, the same masks in both frameworks);
the Gumbel noise is NumPy's, given to both models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from convbert_common import heads  # noqa: E402
from convbert_common import pretraining as ptc  # noqa: E402
from convbert_common.layouts import get_layout  # noqa: E402
from convbert_common.pretraining_data import mask_tokens  # noqa: E402
from convbert_pt.pretraining import ConvBertForPreTraining as PtPreTraining  # noqa: E402
from convbert_pt.train import _param_groups  # noqa: E402
from convbert_tf import train as tf_train  # noqa: E402
from convbert_tf.pretraining import ConvBertForPreTraining as TfPreTraining  # noqa: E402
from convbert_tf.pretraining import masked_slots  # noqa: E402
from tests.configs import tiny_config  # noqa: E402
from tests.parity import assert_close, randomise_torch  # noqa: E402
from tests.tolerances import (  # noqa: E402
    ADAMW_STEP_FP32_ATOL,
    CROSS_FP32_ATOL,
    CROSS_GRAD_RTOL,
    CROSS_LOSS_FP32_RTOL,
    EXACT,
    REFERENCE_FP32_ATOL,
    ZERO_GRAD_ATOL,
)

pytestmark = pytest.mark.tensorflow_backend  # the Keras gradients come from tf.GradientTape

SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK] of the tiny vocabulary
MASK_ID = 4


def build_pair(config, seed: int = 0, **knobs):
    pretraining = ptc.PretrainingConfig(**knobs)
    pt = PtPreTraining(config, pretraining_config=pretraining)
    randomise_torch(pt, seed)
    tfm = TfPreTraining(config, pt.generator_config, pretraining)
    tfm.assign_state({k: v.detach().numpy().copy() for k, v in pt.state_dict().items()}, "test")
    return pt, tfm


def rtd_batch(config, batch=4, length=20, seed=0, step=0):
    """Sentence pairs with padding, masked by the framework-free masker (HF MLM labels)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (batch, length))
    ids[:, 0], ids[:, 9] = 2, 3
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1, -4:] = 0
    mask[3, -7:] = 0
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[:, 10:] = 1
    masked, labels = mask_tokens(ids, mask, special_ids=SPECIALS, vocab_size=config.vocab_size, mask_token_id=MASK_ID,
                                 seed=seed, step=step, mask_prob=0.3)
    return dict(input_ids=masked, attention_mask=mask, token_type_ids=types * mask, labels=labels)


def noise_for(batch, vocab: int, seed: int = 7) -> np.ndarray:
    """Gumbel noise (B, L, V); at every other masked position it makes the original id win, so that
    both outcomes (replaced, sampled back as the original) occur whatever the generator predicts."""
    uniform = np.random.default_rng(seed).random((*batch["input_ids"].shape, vocab))
    noise = ptc.gumbel_from_uniform(uniform).astype(np.float32)
    rows, cols = np.nonzero(batch["labels"] != heads.IGNORE_INDEX)
    for b, t in list(zip(rows, cols, strict=True))[::2]:
        noise[b, t, batch["labels"][b, t]] += 1e3
    return noise


def pt_call(model, batch, noise, train=False):
    model.train(train)
    feed = {k: torch.from_numpy(v) for k, v in batch.items()}
    return model(**feed, gumbel_noise=torch.from_numpy(noise))


def tf_inputs(batch, noise):
    return {**{k: v.astype(np.int32) for k, v in batch.items()}, "gumbel_noise": noise}


def gathered(tf_logits, labels):
    """Keras' (B, P, V) generator logits at the valid slots, row-major: PyTorch's (M, V)."""
    _, valid = masked_slots(keras.ops.convert_to_tensor(labels), tf_logits.shape[1])
    return np.asarray(tf_logits)[np.asarray(valid)]


CONFIGS = {
    "emb!=hidden,gelu": dict(hidden_act="gelu"),
    "emb==hidden,groups2,gelu_new": dict(embedding_size=32, num_groups=2, hidden_act="gelu_new"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_weights_batch_and_noise_give_the_same_losses_and_samples(name):
    config = tiny_config(**CONFIGS[name])
    pt, tfm = build_pair(config, temperature=0.8, mask_prob=0.3)
    batch = rtd_batch(config)
    noise = noise_for(batch, config.vocab_size)
    with torch.no_grad():
        a = pt_call(pt, batch, noise)
    b = tfm(tf_inputs(batch, noise), training=False)
    assert 0 < a.replaced_labels.sum() < (batch["labels"] != heads.IGNORE_INDEX).sum()  # both outcomes occur
    assert_close("replaced_input_ids", b["replaced_input_ids"], a.replaced_input_ids, EXACT)
    assert_close("replaced_labels", b["replaced_labels"], a.replaced_labels, EXACT)
    assert_close("generator_logits", gathered(b["generator_logits"], batch["labels"]), a.generator_logits,
                 CROSS_FP32_ATOL)
    assert_close("discriminator_logits", b["discriminator_logits"], a.discriminator_logits, CROSS_FP32_ATOL)
    for key in ("generator_loss", "discriminator_loss", "loss"):
        expected = float(getattr(a, key))
        assert_close(key, b[key], expected, max(CROSS_FP32_ATOL, CROSS_LOSS_FP32_RTOL * abs(expected)))
    # The (M, V) form of the noise is the same sample as the (B, L, V) one.
    masked_noise = noise[batch["labels"] != heads.IGNORE_INDEX]
    c = tfm(tf_inputs(batch, masked_noise), training=False)
    assert_close("replaced_input_ids ((M, V) noise)", c["replaced_input_ids"], a.replaced_input_ids, EXACT)
    # Without labels, the discriminator alone on the ids.
    with torch.no_grad():
        alone = pt(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])).discriminator_logits
    d = tfm({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    assert set(d) == {"discriminator_logits"}
    assert_close("discriminator alone", d["discriminator_logits"], alone, CROSS_FP32_ATOL)


def _keras_gradients(tfm, batch, noise):
    names = tfm.parameter_names()
    with tf.GradientTape() as tape:
        out = tfm(tf_inputs(batch, noise), training=True)
    grads = tape.gradient(out["loss"], [v.value for v in names.values()])
    return out, dict(zip(names, grads, strict=True))


def _relative_close(name: str, a, b, rtol: float) -> None:
    assert_close(name, a, b, rtol * float(np.max(np.abs(np.asarray(b)))))


def test_every_gradient_mapped_through_the_weight_table_agrees_and_one_adamw_step_matches():
    config = tiny_config(hidden_act="gelu")
    pt, tfm = build_pair(config, seed=1, mask_prob=0.3)
    batch = rtd_batch(config, seed=2)
    noise = noise_for(batch, config.vocab_size, seed=3)
    a = pt_call(pt, batch, noise, train=True)
    a.loss.backward()
    pt_params = dict(pt.named_parameters())
    out, grads = _keras_gradients(tfm, batch, noise)
    loss = float(a.loss.detach())
    assert_close("loss", out["loss"], loss, max(CROSS_FP32_ATOL, CROSS_LOSS_FP32_RTOL * loss))
    table = tfm.canonical_variables()
    assert sorted(grads) == sorted(pt_params)  # one name per variable, PyTorch's
    for name, g in grads.items():
        assert g is not None, f"{name}: no gradient in Keras"
        spec = table[name][1]
        g = get_layout(spec.keras_layout).to_canonical(np.asarray(tf.convert_to_tensor(g)), spec.shape, name)
        expected = pt_params[name].grad.numpy()
        if name.endswith("attention.self.key.bias"):  # a softmax cancels it: float32 noise on both sides
            assert_close(f"grad {name} (Keras, 0 in exact arithmetic)", g, 0 * g, ZERO_GRAD_ATOL)
            assert_close(f"grad {name} (PyTorch, 0 in exact arithmetic)", expected, 0 * g, ZERO_GRAD_ATOL)
            continue
        _relative_close(f"grad {name}", g, expected, CROSS_GRAD_RTOL)
    # The shared embeddings got both losses' gradients: the generator's part is not zero.
    assert np.abs(np.asarray(grads["convbert.embeddings.word_embeddings.weight"])).max() > 0

    # One AdamW step, the same hyperparameters, clipping active (the norm is far above 0.5), from
    # the same gradients: PyTorch's, mapped into Keras' layout. From each framework's own gradients
    # the weights would differ by more than the step's rounding: at the first step the update is
    # lr * g / (|g| + eps), whose slope lr * eps / (|g| + eps)^2 turns the gradients' float32
    # difference (CROSS_GRAD_RTOL of the largest) into up to ~1e-4 where |g| is near eps.
    pt_grads = {n: p.grad.numpy().copy() for n, p in pt.named_parameters()}
    hyper = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6)
    torch.nn.utils.clip_grad_norm_(pt.parameters(), 0.5)
    torch.optim.AdamW(_param_groups(pt, 0.01), fused=True, **hyper).step()
    optimizer = tf_train.adamw(tfm, learning_rate=hyper["lr"], weight_decay=0.01, clip=0.5, epsilon=hyper["eps"])
    names = tfm.parameter_names()
    same = [(get_layout(table[n][1].keras_layout).to_target(pt_grads[n], table[n][1].shape, n), v)
            for n, v in names.items()]
    optimizer.apply_gradients(same)
    after_tf = tfm.canonical_state()
    for name, p in pt.named_parameters():
        assert_close(f"after AdamW {name}", after_tf[name], p.detach().numpy(), ADAMW_STEP_FP32_ATOL)
    # Biases and LayerNorm were not decayed: with a zero gradient they would not move at all.
    assert not optimizer._use_weight_decay(names["discriminator_predictions.dense.bias"])
    assert optimizer._use_weight_decay(names["discriminator_predictions.dense.weight"])


def test_keras_adamw_with_its_own_epsilon_rule_would_differ_which_is_why_ours_follows_torch():
    # The contract above needs the torch rule: Keras' stock AdamW moves a weight by lr * g / (|g| + eps')
    # with eps' = eps / sqrt(1 - beta2), measurably different for small gradients.
    var = keras.Variable(np.zeros(3, np.float32))
    grad = np.array([1e-5, 1e-4, 1e-3], np.float32)
    ours = tf_train.AdamW(learning_rate=1.0, weight_decay=0.0, epsilon=1e-6)
    ours.apply_gradients([(grad, var)])
    torch_rule = -grad / (np.abs(grad) + 1e-6)
    assert_close("torch rule", var, torch_rule, ADAMW_STEP_FP32_ATOL)
    stock = keras.Variable(np.zeros(3, np.float32))
    keras.optimizers.AdamW(learning_rate=1.0, weight_decay=0.0, epsilon=1e-6).apply_gradients([(grad, stock)])
    assert np.abs(np.asarray(stock) - torch_rule).max() > 100 * ADAMW_STEP_FP32_ATOL


def test_the_authors_tf1_checkpoint_imported_with_pretraining_gives_pytorch_s_discriminator_logits_in_keras(tmp_path):
    from convbert_tools import convert as conv
    from tests.conftest import fixture_file

    src = fixture_file("tf1-original/model.ckpt.index").parent
    conv.convert_pretraining(str(src), str(tmp_path / "pt"), progress=False)
    pt = PtPreTraining.from_pretrained(tmp_path / "pt")
    tfm = TfPreTraining.from_pretrained(tmp_path / "pt")
    assert tfm.generator.convbert.embeddings is tfm.convbert.embeddings
    assert tfm.pretraining_config.generator_size == 0.5
    with np.load(src / "expected.npz") as e:
        inputs = {k: e[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = pt(**{k: torch.from_numpy(v) for k, v in inputs.items()}).discriminator_logits
        gen_expected = pt.generator(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits
    ours = tfm({k: v.astype(np.int32) for k, v in inputs.items()})
    assert_close("RTD logits (Keras vs PyTorch)", ours["discriminator_logits"], expected, CROSS_FP32_ATOL)
    # ... and the original code's head, gelu(h W1 + b1) W2 + b2, on its own last hidden state.
    reader = tf.train.load_checkpoint(str(src / "model.ckpt"))
    w1, b1, w2, b2 = (reader.get_tensor(f"discriminator_predictions/{n}").astype(np.float64)
                      for n in ("dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"))
    with np.load(src / "expected.npz") as e:
        x = e["last_hidden_state"].astype(np.float64) @ w1 + b1
    erf = np.vectorize(math.erf, otypes=[np.float64])
    original = ((0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))) @ w2 + b2)[..., 0]
    assert_close("RTD logits (Keras vs the original code)", ours["discriminator_logits"], original,
                 REFERENCE_FP32_ATOL)
    with np.load(src / "expected_generator.npz") as e:
        assert_close("generator logits (Keras vs the original code)", tfm.generator(inputs)["logits"], e["logits"],
                     CROSS_FP32_ATOL)
    assert_close("generator logits (Keras vs PyTorch)", tfm.generator(inputs)["logits"], gen_expected, CROSS_FP32_ATOL)
