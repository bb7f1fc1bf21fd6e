"""Checkpoints of the reference implementation reproduce its outputs (fixtures: hf-convbert-tiny)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from convbert_common.heads import NAMES as HEADS
from convbert_pt.modeling import MODEL_CLASSES
from tests.conftest import fixture_file
from tests.parity import assert_close
from tests.pt.conftest import TINY, WEIGHT_FILES, expected_outputs, head_dir, torch_inputs
from tests.tolerances import MODEL_PATHS_FP32_ATOL, REFERENCE_FP32_ATOL


def _collect(out) -> dict[str, torch.Tensor]:
    got = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    if out.hidden_states is not None:
        got["hidden_states"] = torch.stack(out.hidden_states)  # (layers + 1, B, L, H)
        got["last_hidden_state"] = out.hidden_states[-1]
    if out.attentions is not None:
        got["attentions"] = torch.stack(out.attentions)  # (layers, B, N', L, L)
    return got


@pytest.mark.parametrize("weights_file", WEIGHT_FILES)
@pytest.mark.parametrize("head", HEADS)
def test_reference_checkpoint_reproduces_every_hidden_state_attention_map_and_logit(head, weights_file):
    expected = expected_outputs(head)
    model, info = MODEL_CLASSES[head].from_pretrained(
        head_dir(head, weights_file), weights_file=weights_file, output_loading_info=True
    )
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert not model.training
    with torch.no_grad():
        out = model(**torch_inputs(expected), output_hidden_states=True, output_attentions=True)
    got = _collect(out)
    outputs = [k for k in expected if k not in ("input_ids", "attention_mask", "token_type_ids")]
    assert {"hidden_states", "attentions"} <= set(outputs)
    for key in outputs:
        assert_close(f"{head}/{weights_file}/{key}", got[key], expected[key], REFERENCE_FP32_ATOL)


@pytest.mark.parametrize("head", HEADS)
def test_fused_default_path_reproduces_reference_outputs(head):
    """Without attention maps the model runs SDPA + shift-and-accumulate: same numbers."""
    expected = expected_outputs(head)
    model = MODEL_CLASSES[head].from_pretrained(head_dir(head))
    with torch.no_grad():
        out = model(**torch_inputs(expected))
    assert out.hidden_states is None and out.attentions is None
    got = {k: v for k, v in out.items()}
    if head == "model":
        got["logits"] = None
    for key in ("logits", "start_logits", "end_logits", "last_hidden_state"):
        if key in expected and got.get(key) is not None:
            assert_close(f"{head}/{key}", got[key], expected[key], REFERENCE_FP32_ATOL)


@pytest.mark.parametrize("head", HEADS)
def test_num_parameters_and_state_dict_keys_match_the_reference(head):
    manifest = json.loads(fixture_file(f"{TINY}/manifest.json").read_text())["heads"][head]
    model = MODEL_CLASSES[head].from_pretrained(head_dir(head))
    assert model.num_parameters() == manifest["num_parameters_pt"]
    assert sorted(model.state_dict()) == sorted(manifest["state_dict_keys_safetensors"])


def test_reference_explicit_and_fused_attention_agree_on_padded_rows():
    expected = expected_outputs("model")
    model = MODEL_CLASSES["model"].from_pretrained(head_dir("model"))
    inputs = torch_inputs(expected)
    with torch.no_grad():
        fused = model(**inputs).last_hidden_state
        explicit = model(**inputs, output_attentions=True).last_hidden_state
    assert_close("fused vs explicit", fused, explicit, MODEL_PATHS_FP32_ATOL)
    assert np.abs(expected["attention_mask"]).sum() < expected["attention_mask"].size  # the batch is padded
