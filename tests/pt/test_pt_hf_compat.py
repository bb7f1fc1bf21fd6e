"""Opt-in (CONVBERT_TEST_HF=1): what save_pretrained writes loads in HF transformers' ConvBert* classes
with no missing or unexpected keys and the same outputs. The default suite never imports transformers."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from convbert_common import heads
from convbert_pt.modeling import MODEL_CLASSES
from tests.configs import head_config
from tests.parity import assert_close
from tests.pt.conftest import random_inputs
from tests.tolerances import REFERENCE_FP32_ATOL

pytestmark = pytest.mark.skipif(
    os.environ.get("CONVBERT_TEST_HF") != "1",
    reason="opt-in: set CONVBERT_TEST_HF=1 with transformers installed (pip install 'convbert[bench]')",
)

VARIANTS = [{}, {"head_ratio": 1}, {"num_groups": 2}, {"embedding_size": 32}, {"hidden_act": "gelu_new"}]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("head", heads.NAMES)
def test_hf_transformers_loads_what_we_save_with_identical_outputs(head, overrides, tmp_path):
    transformers = importlib.import_module("transformers")
    config = head_config(head, **overrides)
    ours = MODEL_CLASSES[head](config).eval()
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, heads.get(head).class_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    theirs.eval()
    inputs = random_inputs(config)
    if head == "multiple_choice":
        inputs = {k: v.unsqueeze(0) for k, v in inputs.items()}
    with torch.no_grad():
        a = ours(**inputs, output_hidden_states=True, output_attentions=True)
        b = theirs(**inputs, output_hidden_states=True, output_attentions=True)
    for key in a.keys():
        x, y = a[key], b[key]
        if isinstance(x, tuple):
            x, y = torch.stack(x), torch.stack(y)
        assert_close(f"{head}/{key}", x, y, REFERENCE_FP32_ATOL)
