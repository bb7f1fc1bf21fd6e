"""Loaded from the reference checkpoints, every head reproduces the reference implementation's outputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from convbert_common.checkpoint import CheckpointError
from tests.conftest import HEADS, fixture_file
from tests.parity import assert_close
from tests.tf.helpers import TINY, expected_outputs, model_class, reference_inputs, to_numpy
from tests.tolerances import EXACT, REFERENCE_FP32_ATOL

OUTPUT_KEYS = ("last_hidden_state", "logits", "start_logits", "end_logits", "hidden_states", "attentions")


def _load(head: str, weights: str):
    if weights == "pytorch_model.bin":
        pytest.importorskip("torch")
    path = fixture_file(f"{TINY}/{head}/{weights}")
    return model_class(head).from_pretrained(path.parent, weights_file=weights)


def _compare(head: str, outputs: dict, expected: dict, keys=OUTPUT_KEYS) -> None:
    got = to_numpy(outputs)
    if "last_hidden_state" not in got and "hidden_states" in got:
        got["last_hidden_state"] = got["hidden_states"][-1]
    compared = 0
    for key in keys:
        if key in expected and key in got:
            assert_close(f"{head}/{key}", got[key], expected[key], REFERENCE_FP32_ATOL)
            compared += 1
    assert compared >= 3 if "hidden_states" in got else compared >= 1, (head, sorted(got), sorted(expected))


# pytorch_model.bin only where it differs in kind: the bare model, and the MLM file that repeats the tied matrix.
CASES = [(h, w) for h in HEADS for w in ("tf_model.h5", "model.safetensors")] + [
    ("model", "pytorch_model.bin"), ("masked_lm", "pytorch_model.bin")]


@pytest.mark.parametrize(("head", "weights"), CASES)
def test_checkpoint_reproduces_reference_outputs(head, weights):
    model = _load(head, weights)
    expected = expected_outputs(head)
    inputs = reference_inputs(head)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(inputs[name], expected[name])
    outputs = model(inputs, output_attentions=True, output_hidden_states=True, training=False)
    _compare(head, outputs, expected)


@pytest.mark.parametrize("head", ["model", "sequence_classification", "question_answering"])
def test_fused_attention_path_reproduces_reference_outputs(head):
    # Without attention maps the model takes keras.ops.dot_product_attention: same numbers.
    model = _load(head, "model.safetensors")
    outputs = model(reference_inputs(head), training=False)
    assert "attentions" not in outputs and "hidden_states" not in outputs
    _compare(head, outputs, expected_outputs(head), keys=("last_hidden_state", "logits", "start_logits", "end_logits"))


def test_bare_checkpoint_loads_into_a_head_and_reports_the_new_weights():
    path = fixture_file(f"{TINY}/model/model.safetensors").parent
    cls = model_class("sequence_classification")
    model, info = cls.from_pretrained(path, output_loading_info=True, num_labels=3)
    assert info["missing_keys"] == [
        "classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"
    ]
    bare = model_class("model").from_pretrained(path)
    inputs = reference_inputs("model")
    assert_close("last_hidden_state", model.convbert(inputs)["last_hidden_state"],
                 bare(inputs)["last_hidden_state"], EXACT)


def test_head_checkpoint_loads_into_the_bare_model_with_its_head_weights_unexpected():
    path = fixture_file(f"{TINY}/question_answering/model.safetensors").parent
    model, info = model_class("model").from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == []
    assert info["unexpected_keys"] == ["qa_outputs.bias", "qa_outputs.weight"]


def test_class_defaults_to_the_config_architecture():
    import convbert_tf

    path = fixture_file(f"{TINY}/token_classification/model.safetensors").parent
    model = convbert_tf.from_pretrained(path)
    assert type(model).__name__ == "ConvBertForTokenClassification"


def test_pytorch_bin_without_torch_is_a_clear_error(monkeypatch):
    path = fixture_file(f"{TINY}/model/pytorch_model.bin").parent
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin needs torch"):
        model_class("model").from_pretrained(path, weights_file="pytorch_model.bin")
