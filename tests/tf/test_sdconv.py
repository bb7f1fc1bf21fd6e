"""span_dynamic_conv: shift-and-accumulate equals the unfold reference and the formula, compiles with XLA.

depthwise_conv1d (the static-kernel shift-and-accumulate of SeparableConv1D under XLA): equals the
grouped convolution and its formula.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from convbert_tf import backend
from convbert_tf.sdconv import depthwise_conv1d, span_dynamic_conv, span_dynamic_conv_reference
from tests.parity import assert_close, assert_three_way
from tests.tolerances import COMPILED_FP32_ATOL, LOWP_ATOL, LOWP_FACTOR, SDCONV_NATIVE_FP32_ATOL

pytestmark = pytest.mark.tensorflow_backend  # tf.function, XLA, tf.data, SavedModel


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



def _training_graph_op_types(fn, *specs) -> Counter:
    """Op types of the graph of fn's forward pass and its gradient, as a train step traces it."""

    def loss_and_grads(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(fn(*args))
        return tape.gradient(loss, args)

    graph = tf.function(loss_and_grads).get_concrete_function(*specs).graph
    return _op_types(graph)


def _op_types(graph) -> Counter:
    """Op types of ``graph`` and of the functions it calls (the compiled span conv's forward and gradient).

    A slice of a tensor's dynamic shape (the length L, once a compiled function has been traced for
    unknown shapes) counts as "ShapeSlice", apart from the slices of the data.
    """
    types = Counter("ShapeSlice" if op.type == "StridedSlice" and op.inputs[0].op.type == "Shape" else op.type
                    for op in graph.get_operations())
    for function in graph._functions.values():
        inner = getattr(function, "graph", None)
        if inner is not None:
            types += _op_types(inner)
    return types


def _compiled_calls(graph) -> int:
    return sum(op.type in ("StatefulPartitionedCall", "PartitionedCall") and op.get_attr("_XlaMustCompile")
               for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr)


def test_training_graph_slices_only_the_k_windows():
    # Every op and its gradient is traced and optimised once per layer in the first fit step. The
    # span conv's hand-written gradient slices K windows for the forward, K for the input gradient and K for the
    # weight gradient, and never pad the output gradient back per tap (no StridedSliceGrad); the K
    # weight columns come from one Split (forward) and one more for the padded weights (gradient).
    # Outside XLA the forward and the gradient are one compiled call each (XLA fuses each into one loop).
    b, l, n, d, k = 2, 16, 2, 8, 9
    types = _training_graph_op_types(span_dynamic_conv, tf.TensorSpec((b, l, n, d)), tf.TensorSpec((b, l, n, k)))
    assert (types["StridedSlice"], types["StridedSliceGrad"], types["Split"]) == (3 * k, 0, 2), types

    def loss_and_grads(values, logits):
        with tf.GradientTape() as tape:
            tape.watch([values, logits])
            loss = tf.reduce_sum(span_dynamic_conv(values, logits))
        return tape.gradient(loss, [values, logits])

    graph = tf.function(loss_and_grads).get_concrete_function(tf.TensorSpec((b, l, n, d)),
                                                              tf.TensorSpec((b, l, n, k))).graph
    assert _compiled_calls(graph) == 2
    # depthwise_conv1d (autodiff's gradient): the K taps come from one Unpack; the slices are the K
    # windows and kernel[:, :, 0].
    types = _training_graph_op_types(depthwise_conv1d, tf.TensorSpec((b, l, d)), tf.TensorSpec((k, d, 1)))
    assert (types["StridedSlice"], types["Unpack"]) == (k + 1, 1), types


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


def _depthwise_formula(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """out[b, t, c] = sum_j kernel[j, c, 0] * x[b, t + j - p, c], zeros outside."""
    x, w = x.astype(np.float64), kernel.astype(np.float64)[:, :, 0]
    length, k = x.shape[1], w.shape[0]
    p = (k - 1) // 2
    out = np.zeros_like(x)
    for t in range(length):
        for j in range(k):
            s = t + j - p
            if 0 <= s < length:
                out[:, t] += w[j] * x[:, s]
    return out


@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 3), l=st.integers(1, 13), c=st.integers(1, 6), k=st.sampled_from([1, 3, 5, 9, 15]),
       seed=st.integers(0, 2**16))
def test_depthwise_conv1d_equals_the_grouped_convolution_and_formula(b, l, c, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, l, c)).astype("float32")
    kernel = (rng.standard_normal((k, c, 1)) / np.sqrt(k)).astype("float32")  # outputs of order 1
    shifted = depthwise_conv1d(x, kernel)
    if backend.depthwise_kernel_is_safe():  # TensorFlow 2.16's kernel kills the process at some K
        grouped = keras.ops.depthwise_conv(x, kernel, strides=1, padding="same", data_format="channels_last")
        assert_close("shift-and-accumulate vs grouped conv", shifted, grouped, SDCONV_NATIVE_FP32_ATOL)
    assert_close("shift-and-accumulate vs formula", shifted, _depthwise_formula(x, kernel), SDCONV_NATIVE_FP32_ATOL)


def test_depthwise_conv1d_compiles_with_xla_and_keeps_half_precision():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 8)).astype("float32")
    kernel = (rng.standard_normal((9, 8, 1)) / 3).astype("float32")
    compiled = tf.function(depthwise_conv1d, jit_compile=True)
    assert_close("xla vs eager", compiled(x, kernel), depthwise_conv1d(x, kernel), COMPILED_FP32_ATOL)
    ref32 = _depthwise_formula(x, kernel)
    xb = tf.cast(x, "bfloat16")
    half = depthwise_conv1d(xb, tf.cast(kernel, "bfloat16"))
    assert half.dtype == "bfloat16"
    # The plain same-precision path: the formula on bf16-rounded inputs, rounded to bf16 once more.
    plain = tf.cast(tf.cast(_depthwise_formula(tf.cast(xb, "float32").numpy(),
                                               tf.cast(tf.cast(kernel, "bfloat16"), "float32").numpy()),
                            "bfloat16"), "float32")
    assert_three_way("depthwise bfloat16", tf.cast(half, "float32"), plain, ref32, LOWP_FACTOR, LOWP_ATOL["bfloat16"])


def test_depthwise_conv1d_needs_an_odd_static_kernel():
    with pytest.raises(ValueError, match="static and odd"):
        depthwise_conv1d(np.zeros((1, 4, 2), "float32"), np.zeros((4, 2, 1), "float32"))
