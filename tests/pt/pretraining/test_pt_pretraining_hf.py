"""Opt-in (CONVBERT_TEST_HF=1): Hugging Face transformers loads a pretraining directory's two models: the
discriminator into any ConvBertFor* (only the new head missing), the generator into ConvBertForMaskedLM
(nothing missing), with our outputs."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_pt.pretraining import ConvBertForPreTraining
from tests.configs import tiny_config
from tests.parity import assert_close
from tests.pt.conftest import random_inputs
from tests.tolerances import REFERENCE_FP32_ATOL

pytestmark = pytest.mark.skipif(
    os.environ.get("CONVBERT_TEST_HF") != "1",
    reason="opt-in: set CONVBERT_TEST_HF=1 with transformers installed (pip install 'convbert[bench]')",
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = tiny_config(embedding_size=32)
    model = ConvBertForPreTraining(config).eval()
    folder = tmp_path_factory.mktemp("hf") / "pt"
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("head", heads.NAMES)
def test_hf_loads_the_discriminator_into_every_head_class_with_only_the_new_head_missing(saved, head):
    transformers = importlib.import_module("transformers")
    model, folder = saved
    theirs, info = getattr(transformers, heads.get(head).class_name).from_pretrained(
        folder / "discriminator", output_loading_info=True)
    config = model.config
    assert sorted(info["missing_keys"]) == sorted(s.name for s in wm.head_specs(config, head))
    assert sorted(info["unexpected_keys"]) == sorted(s.name for s in wm.head_specs(config, heads.PRETRAINING))
    backbone = theirs.convbert if head != "model" else theirs
    inputs = random_inputs(config)
    with torch.no_grad():
        assert_close(f"{head} backbone", backbone(**inputs.copy()).last_hidden_state,
                     model.convbert(**inputs).last_hidden_state, REFERENCE_FP32_ATOL)


def test_hf_loads_the_generator_as_a_masked_lm_with_nothing_missing(saved):
    transformers = importlib.import_module("transformers")
    model, folder = saved
    theirs, info = transformers.ConvBertForMaskedLM.from_pretrained(folder / "generator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = random_inputs(model.config)
    with torch.no_grad():
        assert_close("generator logits", theirs.eval()(**inputs).logits, model.generator(**inputs).logits,
                     REFERENCE_FP32_ATOL)
    auto = transformers.AutoModel.from_pretrained(folder / "discriminator")
    assert type(auto).__name__ == "ConvBertModel"
