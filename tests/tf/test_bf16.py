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


@pytest.mark.tensorflow_backend
def test_xla_with_a_bf16_policy_on_a_cpu_warns_that_it_runs_fp32_matmuls():
    import tensorflow as tf

    from convbert_tf import backend
    from tests.configs import head_config

    if not backend.cpu_only():
        pytest.skip("an accelerator is visible")
    # The warning's claim, checked on XLA's own output: its CPU dot takes float32 operands.
    a, b = tf.ones((4, 8), tf.bfloat16), tf.ones((8, 4), tf.bfloat16)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y), jit_compile=True)
    hlo = matmul.experimental_get_compiler_ir(a, b)(stage="optimized_hlo")
    assert any(" dot(" in line and line.split("=")[1].strip().startswith("f32") for line in hlo.splitlines()), hlo
    cls = model_class("sequence_classification")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bfloat16 on a CPU without bfloat16 units")
        model = cls(head_config("sequence_classification"), dtype="mixed_bfloat16")
    for jit, warns in ((True, True), ("auto", False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.compile(optimizer="sgd", jit_compile=jit)
        assert any("XLA computes bfloat16 matmuls in float32" in str(w.message) for w in caught) is warns
