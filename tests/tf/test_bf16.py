"""mixed_bfloat16: on the reference fixtures every head stays within the documented distance of fp32."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.conftest import HEADS, fixture_file
from tests.parity import assert_close
from tests.tf.helpers import TINY, model_class, reference_inputs, to_numpy
from tests.tolerances import BF16_LOGITS_ATOL

KEYS = ("last_hidden_state", "logits", "start_logits", "end_logits")


@pytest.mark.parametrize("head", HEADS)
def test_mixed_bfloat16_on_the_reference_fixtures(head):
    path = fixture_file(f"{TINY}/{head}/model.safetensors").parent
    inputs = reference_inputs(head)
    ref = to_numpy(model_class(head).from_pretrained(path)(inputs, training=False))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bfloat16 on a CPU without bfloat16 units")
        mixed = model_class(head).from_pretrained(path, dtype="mixed_bfloat16")
    got = to_numpy(mixed(inputs, training=False))
    compared = [key for key in KEYS if key in ref and key in got]
    assert compared
    for key in compared:
        assert_close(f"{head}/{key}", np.asarray(got[key], dtype=np.float32), ref[key], BF16_LOGITS_ATOL)
