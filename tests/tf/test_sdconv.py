"""span_dynamic_conv: shift-and-accumulate equals the unfold reference and the formula, compiles with XLA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from convbert_tf.sdconv import span_dynamic_conv, span_dynamic_conv_reference
from tests.parity import assert_close, assert_three_way
from tests.tolerances import COMPILED_FP32_ATOL, LOWP_ATOL, LOWP_FACTOR, SDCONV_NATIVE_FP32_ATOL


def _inputs(b, l, n, d, k, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((b, l, n, d)).astype(dtype)
    logits = (2 * rng.standard_normal((b, l, n, k))).astype(dtype)
    return values, logits


def _formula(values: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """out[b, t, n] = sum_j softmax(logits[b, t, n])[j] * values[b, t + j - p, n], zeros outside."""
    v, z = values.astype(np.float64), logits.astype(np.float64)
    _, length, _, _ = v.shape
    k = z.shape[-1]
    p = (k - 1) // 2
    w = np.exp(z - z.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.zeros_like(v)
    for t in range(length):
        for j in range(k):
            s = t + j - p
            if 0 <= s < length:
                out[:, t] += w[:, t, :, j : j + 1] * v[:, s]
    return out


@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 3), l=st.integers(1, 13), n=st.integers(1, 3), d=st.integers(1, 5),
       k=st.sampled_from([1, 3, 5, 9, 15]), seed=st.integers(0, 2**16))
def test_shift_and_accumulate_equals_reference_and_formula(b, l, n, d, k, seed):
    values, logits = _inputs(b, l, n, d, k, seed)
    native = span_dynamic_conv(values, logits)
    reference = span_dynamic_conv_reference(values, logits)
    assert_close("native vs reference", native, reference, SDCONV_NATIVE_FP32_ATOL)
    assert_close("native vs formula", native, _formula(values, logits), SDCONV_NATIVE_FP32_ATOL)


def test_gradients_equal_the_reference_gradients():
    values, logits = (tf.constant(a) for a in _inputs(2, 11, 2, 4, 9, seed=3))
    weights = tf.constant(np.random.default_rng(1).standard_normal((2, 11, 2, 4)).astype("float32"))
    grads = {}
    for impl in ("native", "reference"):
        with tf.GradientTape() as tape:
            tape.watch([values, logits])
            loss = tf.reduce_sum(span_dynamic_conv(values, logits, impl=impl) * weights)
        grads[impl] = tape.gradient(loss, [values, logits])
    for name, a, b in zip(("d values", "d kernel_logits"), grads["native"], grads["reference"], strict=True):
        assert_close(name, a, b, SDCONV_NATIVE_FP32_ATOL)


def test_xla_compiled_conv_equals_eager():
    values, logits = _inputs(2, 16, 2, 8, 9, seed=5)
    compiled = tf.function(lambda v, z: span_dynamic_conv(v, z), jit_compile=True)
    assert_close("xla vs eager", compiled(values, logits), span_dynamic_conv(values, logits), COMPILED_FP32_ATOL)


def test_default_path_never_builds_the_im2col_tensor():
    b, l, n, d, k = 2, 16, 2, 8, 9
    values, logits = _inputs(b, l, n, d, k)
    graph = tf.function(lambda v, z: span_dynamic_conv(v, z)).get_concrete_function(
        tf.TensorSpec(values.shape), tf.TensorSpec(logits.shape)).graph
    big = [(op.name, t.shape) for op in graph.get_operations() for t in op.outputs
           if t.shape.rank is not None and t.shape.num_elements() is not None
           and t.shape.num_elements() >= b * l * n * d * k]
    assert big == [], f"tensors as large as (B, L, A, K): {big}"
    # The reference does build it: the check above can see one.
    graph = tf.function(lambda v, z: span_dynamic_conv(v, z, impl="reference")).get_concrete_function(
        tf.TensorSpec(values.shape), tf.TensorSpec(logits.shape)).graph
    assert any(t.shape.num_elements() == b * l * n * d * k for op in graph.get_operations() for t in op.outputs
               if t.shape.rank is not None and t.shape.num_elements() is not None)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_stays_within_the_plain_path_bound(dtype):
    values, logits = _inputs(2, 12, 2, 8, 9, seed=7)
    ref32 = _formula(values, logits)
    v, z = tf.cast(values, dtype), tf.cast(logits, dtype)
    # The plain same-precision path: the reference formulation in the same dtype.
    plain = tf.cast(span_dynamic_conv_reference(v, z), "float32")
    native = span_dynamic_conv(v, z)
    assert native.dtype == dtype
    assert_three_way("sdconv " + dtype, tf.cast(native, "float32"), plain, ref32, LOWP_FACTOR, LOWP_ATOL[dtype])


def test_bad_arguments_raise_clear_errors():
    values, logits = _inputs(1, 4, 2, 3, 5)
    with pytest.raises(ValueError, match="impl must be one of"):
        span_dynamic_conv(values, logits, impl="fast")
    with pytest.raises(ValueError, match="Triton kernel exists only in convbert_pt"):
        span_dynamic_conv(values, logits, impl="triton")
    with pytest.raises(ValueError, match="kernel size must be odd"):
        span_dynamic_conv(values, logits[..., :4])
    with pytest.raises(ValueError, match="disagree on L"):
        span_dynamic_conv(values, logits[:, :3])
    with pytest.raises(ValueError, match=r"expected values \(B, L, N', D\)"):
        span_dynamic_conv(values[0], logits)
