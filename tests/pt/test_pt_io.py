"""from_pretrained / save_pretrained: canonical names, round trips, base <-> head, tying, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_common.checkpoint import CheckpointError
from convbert_pt.modeling import (
    MODEL_CLASSES,
    ConvBertForMaskedLM,
    ConvBertForSequenceClassification,
    ConvBertModel,
)
from tests.configs import head_config, tiny_config
from tests.parity import assert_close
from tests.pt.conftest import expected_outputs, head_dir, random_inputs, torch_inputs
from tests.tolerances import REFERENCE_FP32_ATOL, TIED_HEAD_ATOL, TIED_HEAD_RTOL

CONFIG_VARIANTS = {
    "projected": {},
    "no_projection": {"embedding_size": 32},
    "grouped": {"num_groups": 4},
    "head_ratio_1": {"head_ratio": 1},
    "head_ratio_3": {"head_ratio": 3, "num_attention_heads": 6, "hidden_size": 24, "intermediate_size": 24},
}


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("variant", sorted(CONFIG_VARIANTS))
@pytest.mark.parametrize("head", heads.NAMES)
def test_state_dict_keys_and_shapes_are_the_canonical_names_of_the_weight_table(head, variant):
    config = head_config(head, **CONFIG_VARIANTS[variant])
    model = MODEL_CLASSES[head](config)
    specs = wm.model_specs(config, head)
    state = model.state_dict()
    # Same set of names (the order differs only where PyTorch lists a module's own parameters, such
    # as SeparableConv1D.bias, before its children's).
    assert sorted(state) == sorted(s.name for s in specs)
    for s in specs:
        assert tuple(state[s.name].shape) == s.shape, s.name


@pytest.mark.parametrize("head", heads.NAMES)
def test_save_then_load_is_bit_identical(head, tmp_path):
    config = head_config(head)
    model = MODEL_CLASSES[head](config).eval()
    inputs = random_inputs(config)
    if head == "multiple_choice":
        inputs = {k: v.unsqueeze(1) for k, v in inputs.items()}
    model.save_pretrained(tmp_path)
    loaded, info = MODEL_CLASSES[head].from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    _assert_same_params(_params(model), _params(loaded))
    with torch.no_grad():
        a, b = model(**inputs, output_hidden_states=True), loaded(**inputs, output_hidden_states=True)
    for x, y in zip(a.to_tuple(), b.to_tuple(), strict=True):
        for xi, yi in zip(x if isinstance(x, tuple) else (x,), y if isinstance(y, tuple) else (y,), strict=True):
            assert torch.equal(xi, yi)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == [heads.get(head).class_name] and saved["model_type"] == "convbert"
    assert loaded.config == model.config.replace(architectures=[heads.get(head).class_name], dtype="float32")


@pytest.mark.parametrize("head", heads.NAMES)
def test_saved_safetensors_equal_the_reference_file_key_for_key(head, tmp_path):
    """What we write is what HF writes: same names, shapes, values, ``format: pt``, no tied LM matrix."""
    source = head_dir(head) / "model.safetensors"
    model = MODEL_CLASSES[head].from_pretrained(head_dir(head))
    model.save_pretrained(tmp_path)
    with safe_open(str(source), "np") as ref, safe_open(str(tmp_path / "model.safetensors"), "np") as ours:
        assert sorted(ours.keys()) == sorted(ref.keys())
        assert ours.metadata() == {"format": "pt"}
        assert wm.TIED_LM_WEIGHT not in ours.keys()
        for key in ref.keys():
            assert np.array_equal(ours.get_tensor(key), ref.get_tensor(key)), key
    config = json.loads((tmp_path / "config.json").read_text())
    reference = json.loads((head_dir(head) / "config.json").read_text())
    for key in ("architectures", "hidden_size", "embedding_size", "pad_token_id", "num_labels"):
        assert config.get(key) == reference.get(key, config.get(key)), key


def test_pytorch_bin_save_option_round_trips(tmp_path):
    model = ConvBertForMaskedLM(tiny_config())
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert not (tmp_path / "model.safetensors").exists()
    loaded = ConvBertForMaskedLM.from_pretrained(tmp_path)
    _assert_same_params(_params(model), _params(loaded))


def test_bfloat16_model_saves_and_loads_with_torch_dtype(tmp_path):
    model = ConvBertModel(tiny_config()).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = ConvBertModel.from_pretrained(tmp_path, torch_dtype="auto")
    assert loaded.dtype == torch.bfloat16
    _assert_same_params(_params(model), _params(loaded))
    assert ConvBertModel.from_pretrained(tmp_path, torch_dtype=torch.float32, device="cpu").dtype == torch.float32


def test_base_checkpoint_into_head_model_reports_new_head_weights_by_name():
    model, info = ConvBertForSequenceClassification.from_pretrained(
        head_dir("model"), num_labels=3, output_loading_info=True
    )
    assert info["unexpected_keys"] == []
    assert sorted(info["missing_keys"]) == sorted(
        ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"]
    )
    base = ConvBertModel.from_pretrained(head_dir("model"))
    for name, value in base.state_dict().items():
        assert torch.equal(model.state_dict()["convbert." + name], value)
    # New head weights are freshly initialised: zero biases, N(0, initializer_range) weights.
    assert torch.count_nonzero(model.classifier.out_proj.bias) == 0


def test_head_checkpoint_into_base_model_reports_unused_weights_by_name():
    model, info = ConvBertModel.from_pretrained(head_dir("masked_lm"), output_loading_info=True)
    assert info["missing_keys"] == []
    assert sorted(info["unexpected_keys"]) == sorted([
        "generator_predictions.dense.weight", "generator_predictions.dense.bias",
        "generator_predictions.LayerNorm.weight", "generator_predictions.LayerNorm.bias", "generator_lm_head.bias",
    ])
    # The backbone of the MLM checkpoint reproduces that checkpoint's hidden states.
    expected = expected_outputs("masked_lm")
    with torch.no_grad():
        out = model(**torch_inputs(expected), output_hidden_states=True)
    assert_close("masked_lm backbone", torch.stack(out.hidden_states), expected["hidden_states"], REFERENCE_FP32_ATOL)


def test_head_to_head_loading_keeps_the_backbone_and_reports_both_sides():
    model, info = ConvBertForSequenceClassification.from_pretrained(
        head_dir("token_classification"), num_labels=2, output_loading_info=True
    )
    assert sorted(info["unexpected_keys"]) == ["classifier.bias", "classifier.weight"]
    assert sorted(info["missing_keys"]) == sorted(
        ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"]
    )


def test_lm_head_is_tied_to_the_word_embeddings_and_stays_tied_after_resizing(tmp_path):
    model = ConvBertForMaskedLM.from_pretrained(head_dir("masked_lm"))
    expected = expected_outputs("masked_lm")
    inputs = torch_inputs(expected)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        features = model.generator_predictions(model.convbert(**inputs).last_hidden_state)
        logits = model(**inputs).logits
        assert torch.allclose(logits, features @ emb.T + model.generator_lm_head.bias, rtol=TIED_HEAD_RTOL,
                              atol=TIED_HEAD_ATOL)
    # A gradient through the LM head lands on the embedding matrix (one parameter, not a copy).
    model.train()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert emb.grad is not None and torch.count_nonzero(emb.grad[2000:]) > 0  # rows never looked up
    assert "generator_lm_head.weight" not in model.state_dict()
    old_bias = model.generator_lm_head.bias.detach().clone()

    new = model.resize_token_embeddings(30530)
    assert new is model.get_input_embeddings() and new.num_embeddings == 30530
    assert model.config.vocab_size == 30530 and model.generator_lm_head.bias.shape == (30530,)
    assert torch.equal(model.generator_lm_head.bias[:30522], old_bias)
    assert torch.equal(new.weight[:30522], emb.detach())
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits
        assert out.shape[-1] == 30530
        features = model.generator_predictions(model.convbert(**inputs).last_hidden_state)
        assert torch.allclose(out, features @ new.weight.T + model.generator_lm_head.bias, rtol=TIED_HEAD_RTOL,
                              atol=TIED_HEAD_ATOL)
        assert torch.allclose(out[..., :30522], logits, rtol=TIED_HEAD_RTOL, atol=TIED_HEAD_ATOL)
    model.save_pretrained(tmp_path)
    again = ConvBertForMaskedLM.from_pretrained(tmp_path)
    assert again.config.vocab_size == 30530
    _assert_same_params(_params(model), _params(again))

    shrunk = model.resize_token_embeddings(100, pad_to_multiple_of=64)
    assert shrunk.num_embeddings == 128 and model.generator_lm_head.bias.shape == (128,)


def test_set_input_embeddings_keeps_the_lm_head_tied():
    model = ConvBertForMaskedLM(tiny_config()).eval()
    inputs = random_inputs(model.config)
    config = model.config
    replacement = torch.nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
    model.set_input_embeddings(replacement)
    with torch.no_grad():
        features = model.generator_predictions(model.convbert(**inputs).last_hidden_state)
        expected = features @ replacement.weight.T + model.generator_lm_head.bias
        assert torch.allclose(model(**inputs).logits, expected, rtol=TIED_HEAD_RTOL, atol=TIED_HEAD_ATOL)


def test_hf_state_dict_with_the_tied_matrix_loads_with_load_state_dict():
    model = ConvBertForMaskedLM(tiny_config())
    state = dict(model.state_dict())
    state["generator_lm_head.weight"] = state["convbert.embeddings.word_embeddings.weight"]
    model.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------- bad checkpoints


def test_shape_mismatch_names_key_and_both_shapes_and_leaves_the_model_untouched():
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.weight: checkpoint shape \(37, 32\), "
                                              r"model expects \(36, 32\)"):
        ConvBertModel.from_pretrained(head_dir("model"), intermediate_size=36)
    model = ConvBertModel(tiny_config(vocab_size=30522, embedding_size=8, intermediate_size=36,
                                       max_position_embeddings=64, conv_kernel_size=9))
    before = _params(model)
    with pytest.raises(CheckpointError, match=r"checkpoint shape \(37, 32\), model expects \(36, 32\)"):
        model.load_weights(head_dir("model"))
    _assert_same_params(before, _params(model))


def _copy(head, tmp_path, weights_file):
    target = tmp_path / head
    target.mkdir()
    shutil.copy(head_dir(head, weights_file) / "config.json", target)
    shutil.copy(head_dir(head, weights_file) / weights_file, target)
    return target


@pytest.mark.parametrize(
    "weights_file, message",
    [
        ("model.safetensors", "not a readable safetensors file"),
        ("pytorch_model.bin", r"not a readable PyTorch file, truncated or corrupt\?"),
        ("tf_model.h5", "not a readable HDF5 file"),
    ],
)
def test_truncated_weight_files_raise_and_leave_the_model_untouched(tmp_path, weights_file, message):
    folder = _copy("model", tmp_path, weights_file)
    data = (folder / weights_file).read_bytes()
    (folder / weights_file).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=message):
        ConvBertModel.from_pretrained(folder)
    model = ConvBertModel.from_pretrained(head_dir("model"))
    before = _params(model)
    with pytest.raises(CheckpointError, match=message):
        model.load_weights(folder)
    _assert_same_params(before, _params(model))


class _NotATensor:
    pass


def test_pytorch_bin_needing_pickle_code_is_refused(tmp_path):
    folder = _copy("model", tmp_path, "pytorch_model.bin")
    torch.save({"embeddings.word_embeddings.weight": _NotATensor()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        ConvBertModel.from_pretrained(folder)


def test_config_of_another_model_type_is_refused(tmp_path):
    folder = _copy("model", tmp_path, "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type is 'bert', expected 'convbert'"):
        ConvBertModel.from_pretrained(folder)


def test_unknown_from_pretrained_arguments_and_missing_folders_are_refused(tmp_path):
    with pytest.raises(TypeError, match="use_flash"):
        ConvBertModel.from_pretrained(head_dir("model"), use_flash=True)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        ConvBertModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="torch_dtype"):
        ConvBertModel.from_pretrained(head_dir("model"), torch_dtype="int8")


def test_config_overrides_and_from_tf_select_fields_and_file():
    model = ConvBertModel.from_pretrained(head_dir("model", "tf_model.h5"), from_tf=True, hidden_dropout_prob=0.0)
    assert model.config.hidden_dropout_prob == 0.0
    assert model.embeddings.dropout.p == 0.0
