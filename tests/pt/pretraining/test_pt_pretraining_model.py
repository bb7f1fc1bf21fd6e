"""ConvBertForPreTraining: the RTD loss against NumPy, the shared embeddings, the pretraining directory,
the authors' TF1 checkpoint with its RTD head, and the refusals."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from convbert_common import heads
from convbert_common import pretraining as ptc
from convbert_common import weight_map as wm
from convbert_pt import ConvBertForMaskedLM
from convbert_pt.modeling import MODEL_CLASSES
from convbert_pt.pretraining import ConvBertForPreTraining, gumbel, gumbel_noise_for_rows
from tests.configs import tiny_config
from tests.conftest import fixture_file
from tests.parity import assert_close
from tests.tolerances import REFERENCE_FP32_ATOL


def masked_batch(config, batch=3, length=12, seed=0):
    """Inputs with padding and a sentence pair, ~25% of the real positions masked (HF MLM labels)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1, -3:] = 0
    mask[2, -5:] = 0
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[1, 5:] = 1
    chosen = (rng.random((batch, length)) < 0.25) & (mask == 1)
    chosen[:, 1] = True
    labels = np.where(chosen, ids, heads.IGNORE_INDEX)
    masked = np.where(chosen & (rng.random((batch, length)) < 0.85), 4, ids)
    return {k: torch.from_numpy(v) for k, v in
            dict(input_ids=masked, attention_mask=mask, token_type_ids=types, labels=labels).items()}


_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def np_log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_dense(x, state, name):
    return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]


def test_rtd_loss_equals_a_numpy_computation_from_the_same_weights_noise_and_batch():
    config = tiny_config(hidden_act="gelu")
    model = ConvBertForPreTraining(config, pretraining_config=ptc.PretrainingConfig(temperature=0.7)).eval()
    batch = masked_batch(config)
    uniform = torch.rand((*batch["input_ids"].shape, config.vocab_size), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(**batch, gumbel_noise=gumbel(uniform))
        gen_hidden = model.generator.convbert(batch["input_ids"], batch["attention_mask"],
                                              batch["token_type_ids"]).last_hidden_state.double().numpy()
    state = {k: v.double().numpy() for k, v in model.state_dict().items()}
    ids, mask, labels = (batch[k].numpy() for k in ("input_ids", "attention_mask", "labels"))
    masked = labels != heads.IGNORE_INDEX
    eps = config.layer_norm_eps

    # The generator's head at the masked positions, tied to the word embeddings; its cross-entropy.
    g = "generator."
    x = np_gelu(np_dense(gen_hidden[masked], state, g + "generator_predictions.dense"))
    x = np_layer_norm(x, state[g + "generator_predictions.LayerNorm.weight"],
                      state[g + "generator_predictions.LayerNorm.bias"], eps)
    logits = x @ state["convbert.embeddings.word_embeddings.weight"].T + state[g + "generator_lm_head.bias"]
    targets = labels[masked]
    gen_loss = -np_log_softmax(logits)[np.arange(len(targets)), targets].mean()
    # Gumbel-max at temperature 0.7; a sample equal to the original is no replacement.
    sampled = np.argmax(logits / 0.7 + ptc.gumbel_from_uniform(uniform.numpy()[masked]), axis=-1)
    replaced_ids = ids.copy()
    replaced_ids[masked] = sampled
    replaced = np.zeros_like(ids)
    replaced[masked] = sampled != targets
    # The discriminator on the replaced ids, its head, the BCE over the real tokens.
    with torch.no_grad():
        disc_hidden = model.convbert(torch.from_numpy(replaced_ids), batch["attention_mask"],
                                     batch["token_type_ids"]).last_hidden_state.double().numpy()
    h = np_gelu(np_dense(disc_hidden, state, "discriminator_predictions.dense"))
    disc_logits = np_dense(h, state, "discriminator_predictions.dense_prediction")[..., 0]
    bce = np.maximum(disc_logits, 0) - disc_logits * replaced + np.log1p(np.exp(-np.abs(disc_logits)))
    disc_loss = (bce * mask).sum() / mask.sum()

    np.testing.assert_array_equal(out.replaced_input_ids.numpy(), replaced_ids)
    np.testing.assert_array_equal(out.replaced_labels.numpy(), replaced)
    assert 0 < replaced.sum() < masked.sum() + 1
    assert_close("generator_logits", out.generator_logits, logits, REFERENCE_FP32_ATOL)
    assert_close("discriminator_logits", out.discriminator_logits, disc_logits, REFERENCE_FP32_ATOL)
    assert_close("generator_loss", out.generator_loss, gen_loss, REFERENCE_FP32_ATOL)
    assert_close("discriminator_loss", out.discriminator_loss, disc_loss, REFERENCE_FP32_ATOL)
    assert_close("loss", out.loss, gen_loss + 50.0 * disc_loss, REFERENCE_FP32_ATOL * 50)
    # The same noise given at the masked positions only, as the training loop passes it.
    with torch.no_grad():
        again = model(**batch, gumbel_noise=gumbel(uniform)[batch["labels"] != heads.IGNORE_INDEX])
    assert torch.equal(again.replaced_input_ids, out.replaced_input_ids) and torch.equal(again.loss, out.loss)


def test_the_embeddings_are_one_module_and_both_losses_gradients_add_up_in_it():
    config = tiny_config()
    model = ConvBertForPreTraining(config)
    shared = model.convbert.embeddings
    assert model.generator.convbert.embeddings is shared
    gen_emb = model.generator.get_input_embeddings().weight
    assert gen_emb is shared.word_embeddings.weight
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("generator.convbert.embeddings.") for n in names)
    assert len(names) == len({id(p) for p in model.parameters()})

    batch = masked_batch(config)
    uniform = torch.rand((*batch["input_ids"].shape, config.vocab_size), generator=torch.Generator().manual_seed(1))
    out = model(**batch, gumbel_noise=gumbel(uniform))
    tables = [shared.word_embeddings.weight, shared.position_embeddings.weight, shared.LayerNorm.weight]
    from_gen = torch.autograd.grad(out.generator_loss, tables, retain_graph=True)
    from_disc = torch.autograd.grad(out.discriminator_loss, tables, retain_graph=True)
    out.loss.backward()
    for table, g, d in zip(tables, from_gen, from_disc, strict=True):
        assert g.abs().sum() > 0 and d.abs().sum() > 0
        assert_close("shared gradient", table.grad, g + 50.0 * d, 1e-6 * float((g + 50 * d).abs().max()))


def test_the_pretraining_directory_round_trips_and_restores_the_tying(tmp_path, assets):
    config = assets.tiny_config()
    model = ConvBertForPreTraining(config)
    model.save_pretrained(tmp_path / "pt", tokenizer=assets.tokenizer)
    for part in ("discriminator", "generator"):
        assert (tmp_path / "pt" / part / "vocab.txt").exists()
    assert json.loads((tmp_path / "pt" / "discriminator" / "config.json").read_text())["architectures"] == [
        "ConvBertForPreTraining"]
    loaded = ConvBertForPreTraining.from_pretrained(tmp_path / "pt")
    assert loaded.generator.convbert.embeddings is loaded.convbert.embeddings
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    # The generator is a standalone masked LM: nothing missing, nothing left over.
    gen, info = ConvBertForMaskedLM.from_pretrained(tmp_path / "pt" / "generator", output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    batch = masked_batch(config)
    with torch.no_grad():
        ours = loaded.generator(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        assert torch.equal(gen(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits, ours)


@pytest.mark.parametrize("head", heads.NAMES)
def test_the_discriminator_loads_into_every_head_class_with_only_the_new_head_missing(tmp_path, head):
    config = tiny_config(num_labels=2)  # question answering needs 2
    ConvBertForPreTraining(config).save_pretrained(tmp_path)
    _model, info = MODEL_CLASSES[head].from_pretrained(tmp_path / "discriminator", output_loading_info=True)
    assert sorted(info["unexpected_keys"]) == sorted(s.name for s in wm.head_specs(config, heads.PRETRAINING))
    assert sorted(info["missing_keys"]) == sorted(s.name for s in wm.head_specs(config, head))


def test_without_labels_the_discriminator_runs_alone_and_a_discriminator_dir_has_no_generator(tmp_path):
    config = tiny_config()
    model = ConvBertForPreTraining(config).eval()
    batch = masked_batch(config)
    with torch.no_grad():
        alone = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        hidden = model.convbert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert alone.keys() == ["discriminator_logits"]
    assert torch.equal(alone.discriminator_logits, model.discriminator_predictions(hidden.last_hidden_state))
    model.save_pretrained(tmp_path)
    disc = ConvBertForPreTraining.from_pretrained(tmp_path / "discriminator")
    assert disc.generator is None
    with torch.no_grad():
        assert torch.equal(disc(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                           .discriminator_logits, alone.discriminator_logits)
    with pytest.raises(ValueError, match="has no generator .* labels need one"):
        disc(**batch)


def test_the_trainer_noise_is_per_row_so_any_split_of_the_batch_samples_alike():
    whole = gumbel_noise_for_rows([2, 0, 3], 7, seed=5, step=4, row_offset=0)
    tail = gumbel_noise_for_rows([0, 3], 7, seed=5, step=4, row_offset=1)
    assert whole.shape == (5, 7) and torch.equal(whole[2:], tail)
    assert not torch.equal(whole, gumbel_noise_for_rows([2, 0, 3], 7, seed=5, step=5, row_offset=0))


def test_bad_pretraining_inputs_are_refused_with_their_shapes():
    config = tiny_config()
    model = ConvBertForPreTraining(config)
    batch = masked_batch(config)
    with pytest.raises(ValueError, match=r"labels must have shape \(3, 12\) \(that of input_ids\), got \(3, 11\)"):
        model(**{**batch, "labels": batch["labels"][:, :11]})
    with pytest.raises(ValueError, match=r"gumbel_noise must have shape \(3, 12, 99\) .* got \(3, 12, 98\)"):
        model(**batch, gumbel_noise=torch.zeros(3, 12, 98))
    with pytest.raises(ValueError, match="gumbel_noise .* needs labels"):
        model(batch["input_ids"], gumbel_noise=torch.zeros(3, 12, 99))
    with pytest.raises(ValueError, match="labels contains the id 99, which is >= vocab_size"):
        model(**{**batch, "labels": torch.where(batch["labels"] >= 0, 99, batch["labels"])})


def test_a_generator_that_cannot_share_the_embeddings_is_refused_naming_both_sizes(tmp_path):
    config = tiny_config()
    with pytest.raises(ValueError, match="generator's embedding_size is 8 but the discriminator's is 16"):
        ConvBertForPreTraining(config, ptc.generator_config(config).replace(embedding_size=8))
    model = ConvBertForPreTraining(config)
    model.save_pretrained(tmp_path)
    # A generator directory whose embedding values drifted from the discriminator's: no silent pick.
    other = ConvBertForPreTraining(config)
    other.generator.save_pretrained(tmp_path / "generator")
    with pytest.raises(ValueError, match="embeddings.word_embeddings.weight differs from the one in"):
        ConvBertForPreTraining.from_pretrained(tmp_path)


def test_resizing_the_vocabulary_resizes_the_generator_head_too():
    model = ConvBertForPreTraining(tiny_config())
    model.resize_token_embeddings(120)
    assert model.generator.generator_lm_head.bias.shape == (120,)
    assert model.generator.config.vocab_size == 120 == model.config.vocab_size
    assert model.generator.get_input_embeddings() is model.get_input_embeddings()


# ------------------------------------------------------------------------------ the authors' TF1 checkpoint
def test_tf1_import_with_pretraining_brings_the_rtd_head_and_the_generator(tmp_path):
    tf = pytest.importorskip("tensorflow", reason="reading TF1 checkpoints needs tensorflow")
    from convbert_tools import convert as conv

    src = fixture_file("tf1-original/model.ckpt.index").parent
    loaded = conv.convert_pretraining(str(src), str(tmp_path / "pt"), progress=False)
    assert loaded.skipped and set(loaded.skipped.values()) == {"optimizer slot", "training step counter"}
    model = ConvBertForPreTraining.from_pretrained(tmp_path / "pt")
    assert model.generator.convbert.embeddings is model.convbert.embeddings
    assert model.pretraining_config.generator_size == 0.5

    reader = tf.train.load_checkpoint(str(src / "model.ckpt"))
    w1, b1, w2, b2 = (reader.get_tensor(f"discriminator_predictions/{n}").astype(np.float64)
                      for n in ("dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"))
    with np.load(src / "expected.npz") as e:
        expected = {k: e[k] for k in e.files}
    with np.load(src / "expected_generator.npz") as e:
        expected_logits = e["logits"]
    inputs = {k: torch.from_numpy(expected[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        logits = model(**inputs).discriminator_logits
        gen_logits = model.generator(**inputs).logits
    h = expected["last_hidden_state"].astype(np.float64)
    assert_close("RTD logits", logits, (np_gelu(h @ w1 + b1) @ w2 + b2)[..., 0], REFERENCE_FP32_ATOL)
    assert_close("generator logits", gen_logits, expected_logits, REFERENCE_FP32_ATOL)


def test_a_pretraining_dir_is_not_converted_as_a_plain_checkpoint(tmp_path):
    from convbert_tools import convert as conv

    ConvBertForPreTraining(tiny_config()).save_pretrained(tmp_path / "pt")
    with pytest.raises(ValueError, match="is a pretraining directory .* --pretraining"):
        conv.convert(str(tmp_path / "pt"), str(tmp_path / "x"), progress=False)
    conv.convert_pretraining(str(tmp_path / "pt"), str(tmp_path / "bin"), to="pytorch-bin", progress=False)
    assert (tmp_path / "bin" / "generator" / "pytorch_model.bin").exists()
    again = ConvBertForPreTraining.from_pretrained(tmp_path / "bin")
    assert again.generator.convbert.embeddings is again.convbert.embeddings
    shutil.rmtree(tmp_path / "bin" / "generator")
    with pytest.raises(FileNotFoundError, match="not a pretraining directory: missing .*generator/config.json"):
        ConvBertForPreTraining.from_pretrained(tmp_path / "bin")
