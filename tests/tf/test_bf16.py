"""mixed_bfloat16: on the reference fixtures every head stays within the documented distance of fp32;
a "bfloat16" model (bf16 variables, float32 LayerNorms) computes the same numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convbert_common import cpu
from convbert_tf import backend
from tests.conftest import HEADS, fixture_file
from tests.parity import assert_close
from tests.tf.helpers import TINY, model_class, reference_inputs, tensorflow_runs_onednn, to_numpy
from tests.tolerances import BF16_CONTRACTION_RTOL, BF16_EMULATED_LOGITS_ATOL, BF16_LOGITS_ATOL

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
    emulated = cpu.bf16_units() is False or (backend.name() == "tensorflow" and not tensorflow_runs_onednn())
    atol = BF16_EMULATED_LOGITS_ATOL if emulated else BF16_LOGITS_ATOL
    for key in compared:
        assert_close(f"{head}/{key}", np.asarray(got[key], dtype=np.float32), ref[key], atol)


@pytest.mark.parametrize("head", HEADS)
def test_a_bfloat16_model_keeps_its_layer_norms_in_float32_and_computes_as_the_mixed_one(head):
    path = fixture_file(f"{TINY}/{head}/model.safetensors").parent
    inputs = reference_inputs(head)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bfloat16 on a CPU without bfloat16 units")
        half = model_class(head).from_pretrained(path, dtype="bfloat16")
        mixed = model_class(head).from_pretrained(path, dtype="mixed_bfloat16")
    float32 = {v.path for v in half.weights if v.dtype == "float32"}
    layer_norms = {v.path for v in half.weights if "LayerNorm" in v.path}
    assert layer_norms and float32 == layer_norms  # every other variable is bf16
    assert {v.dtype for v in half.weights} == {"bfloat16", "float32"}
    got, want = to_numpy(half(inputs, training=False)), to_numpy(mixed(inputs, training=False))
    compared = [key for key in KEYS if key in want]
    assert compared and all(key in got for key in compared)
    for key in compared:
        # The mixed model casts each float32 variable to bf16 where it is used, rounding as the
        # bf16 variables were rounded when loaded: the same operands, so the same bits.
        np.testing.assert_array_equal(np.asarray(got[key], np.float32), np.asarray(want[key], np.float32),
                                      err_msg=f"{head}/{key}")


def _bf16(rng, *shape):
    from keras import ops

    return ops.cast(ops.convert_to_tensor(rng.standard_normal(shape).astype(np.float32)), "bfloat16")


def _relative_error(got, want) -> float:
    got, want = to_numpy(got).astype(np.float64), to_numpy(want).astype(np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_bf16_attention_and_tied_lm_head_sum_their_products_in_float32():
    # Not bf16 sums: TensorFlow's CPU einsum without oneDNN (Keras' own TF attention is two of them)
    # accumulates bf16 products in bf16, ten times the error of one rounding.
    from keras import ops

    from convbert_tf.modeling import attention

    rng = np.random.default_rng(0)
    # A zero query makes every probability exactly 1/L in bf16 too: the context is the mean of the
    # values, one sum over L = 1024 tokens.
    key, value = _bf16(rng, 2, 1024, 4, 64), _bf16(rng, 2, 1024, 4, 64)
    query = ops.zeros_like(key)
    got, _ = attention(query, key, value, None)
    want = np.broadcast_to(to_numpy(ops.cast(value, "float32")).mean(axis=1, keepdims=True), got.shape)
    assert _relative_error(got, want) <= BF16_CONTRACTION_RTOL
    hidden, table = _bf16(rng, 2, 64, 1024), _bf16(rng, 3000, 1024)
    got = backend.matmul_transposed(hidden, table)
    want = backend.matmul_transposed(ops.cast(hidden, "float32"), ops.cast(table, "float32"))
    assert _relative_error(got, want) <= BF16_CONTRACTION_RTOL


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
