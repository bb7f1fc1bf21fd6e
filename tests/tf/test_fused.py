"""``convbert_tf.fused``: the exact GELU and the layer norm, one compiled call each way on TensorFlow.

Outputs and gradients must be the formulas' (float64 NumPy) eagerly, in a ``tf.function`` and under
XLA; a bf16 policy keeps Keras' low-precision behaviour; the layer configurations it does not fuse are
Keras' layer exactly; and a model's training graph runs neither formula op by op.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest

from convbert_tf import ConvBertModel, fused
from tests.configs import tiny_config
from tests.parity import assert_close, assert_three_way
from tests.tf.helpers import layer_value_and_grads
from tests.tolerances import EXACT, FP64_FORMULA_ATOL, LOWP_ATOL, LOWP_FACTOR, NUMPY_FORMULA_FP32_ATOL

pytestmark = pytest.mark.tensorflow_backend  # the compiled calls are TensorFlow's; elsewhere Keras' ops
MODES = ["eager", "tf.function", "xla"]
EPSILON = 1e-12


def _gelu_reference(z):
    """float64 z -> (GELU(z), its derivative)."""
    erf = np.vectorize(math.erf)
    cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
    return z * cdf, cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _layer_norm_reference(x, gamma, beta, upstream):
    """float64 x, upstream (T, C), gamma, beta (C,) -> y, dx, dgamma, dbeta of sum(y * upstream)."""
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + EPSILON)
    xhat = (x - mean) * rstd
    gx = upstream * gamma
    dx = rstd * (gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True))
    return xhat * gamma + beta, dx, (upstream * xhat).sum(0), upstream.sum(0)


def _run(fn, mode: str):
    import tensorflow as tf

    return fn if mode == "eager" else tf.function(fn, jit_compile=mode == "xla")


@pytest.mark.parametrize("mode", MODES)
def test_gelu_and_its_gradient_are_the_formula(mode):
    import tensorflow as tf

    z = np.linspace(-6, 6, 2 * 3 * 41).reshape(2, 3, 41)

    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fused.gelu(x)
        return y, tape.gradient(y, x)

    y, dy = _run(value_and_grad, mode)(tf.constant(z, tf.float32))
    want_y, want_dy = _gelu_reference(z)
    assert y.dtype == tf.float32 and y.shape == z.shape
    assert_close("gelu", y, want_y, NUMPY_FORMULA_FP32_ATOL)
    assert_close("gelu gradient", dy, want_dy, NUMPY_FORMULA_FP32_ATOL)


def _layers(width: int, dtype=None, **kwargs):
    """Our layer norm and Keras' on the same random gamma and beta, built for (..., width)."""
    ours = fused.LayerNormalization(epsilon=EPSILON, dtype=dtype, **kwargs)
    theirs = keras.layers.LayerNormalization(epsilon=EPSILON, dtype=dtype, **kwargs)
    for layer in (ours, theirs):
        layer.build((None, None, width))
    rng = np.random.default_rng(0)
    theirs.set_weights([rng.normal(size=w.shape).astype("float32") for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_and_its_gradients_are_the_formula(mode):
    import tensorflow as tf

    ours, theirs = _layers(24)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 24)) * 3 + 1
    upstream = rng.normal(size=(3, 5, 24))
    gamma, beta = (np.asarray(w, np.float64) for w in ours.get_weights())
    want = _layer_norm_reference(x.reshape(15, 24), gamma, beta, upstream.reshape(15, 24))
    want = [want[0].reshape(x.shape), want[1].reshape(x.shape), *want[2:]]
    tensors = (tf.constant(x, tf.float32), tf.constant(upstream, tf.float32))
    for layer in (ours, theirs):  # Keras' own layer meets the same bound: the formula is the same
        got = layer_value_and_grads(layer, *tensors, mode)
        for name, a, b in zip(("output", "input grad", "gamma grad", "beta grad"), got, want, strict=True):
            assert_close(f"{type(layer).__module__} {name}", a, b, NUMPY_FORMULA_FP32_ATOL)


def test_layer_norm_of_one_wide_row_and_of_many_rows():
    """C = 1 (a constant row normalises to beta) and thousands of rows (the gamma, beta sums)."""
    import tensorflow as tf

    ours, _ = _layers(1)
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 1)), tf.float32)
    # x - mean is exactly zero, so the output is exactly beta.
    assert_close("C = 1", ours(x), np.broadcast_to(ours.get_weights()[1], (2, 3, 1)), EXACT)
    ours, _ = _layers(8)
    rng = np.random.default_rng(3)
    x, upstream = rng.normal(size=(4, 1024, 8)), rng.normal(size=(4, 1024, 8))
    gamma, beta = (np.asarray(w, np.float64) for w in ours.get_weights())
    want = _layer_norm_reference(x.reshape(-1, 8), gamma, beta, upstream.reshape(-1, 8))
    got = layer_value_and_grads(ours, tf.constant(x, tf.float32), tf.constant(upstream, tf.float32), "tf.function")
    # The sums over 4096 rows of O(1) terms: scaled by their magnitude, as float32 rounding grows.
    for name, a, b in (("gamma grad", got[2], want[2]), ("beta grad", got[3], want[3])):
        assert_close(name, a / np.abs(b).max(), b / np.abs(b).max(), NUMPY_FORMULA_FP32_ATOL)


def test_a_float64_policy_normalises_in_float64():
    """Keras' layer norm computes a float64 input in float64: so must ours, gradients included."""
    import tensorflow as tf

    ours, _ = _layers(16, dtype="float64")
    rng = np.random.default_rng(6)
    x, upstream = rng.normal(size=(3, 16)) * 5, rng.normal(size=(3, 16))
    gamma, beta = (np.asarray(w, np.float64) for w in ours.get_weights())

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ours(x)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, *ours.trainable_weights])]

    got = run(tf.constant(x, tf.float64))
    assert got[0].dtype == tf.float64
    want = _layer_norm_reference(x, gamma, beta, upstream)
    for name, a, b in zip(("output", "input grad", "gamma grad", "beta grad"), got, want, strict=True):
        assert_close(name, a, b, FP64_FORMULA_ATOL)


def test_a_bf16_policy_normalises_in_float32_and_returns_bf16():
    """Against the fp32 formula, no further off than Keras' own bf16 layer norm (tests/tolerances.py)."""
    import tensorflow as tf

    ours, plain = _layers(16, dtype="mixed_bfloat16")
    reference, _ = _layers(16)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 4, 16)), tf.bfloat16)
    upstream = tf.constant(rng.normal(size=(2, 4, 16)), tf.float32)
    assert ours(x).dtype == plain(x).dtype == tf.bfloat16
    assert ours.gamma.dtype == "float32"
    results = [layer_value_and_grads(layer, x, upstream, "tf.function") for layer in (ours, plain, reference)]
    for name, got, got_plain, want in zip(("output", "input grad", "gamma grad", "beta grad"), *results,
                                          strict=True):
        assert_three_way(name, got, got_plain, want, LOWP_FACTOR, LOWP_ATOL["bfloat16"])


@pytest.mark.parametrize("kwargs", [{"rms_scaling": True}, {"center": False}, {"scale": False}, {"axis": 1}],
                         ids=["rms_scaling", "no_center", "no_scale", "axis_1"])
def test_what_it_does_not_fuse_is_keras_layer_norm_exactly(kwargs):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(5).normal(size=(2, 6, 6)), tf.float32)
    with warnings.catch_warnings():  # Keras deprecates rms_scaling with a warning (each call); its numbers stand
        warnings.simplefilter("ignore", UserWarning)
        ours = fused.LayerNormalization(epsilon=1e-3, **kwargs)
        theirs = keras.layers.LayerNormalization(epsilon=1e-3, **kwargs)
        for layer in (ours, theirs):
            layer.build(x.shape)
        assert not ours._fused(x)
        assert_close("output", ours(x), theirs(x), EXACT)


def _outer_op_types(graph) -> set[str]:
    """Op types of ``graph`` itself, not of the compiled functions it calls."""
    return {op.type for op in graph.get_operations()}


def test_a_model_s_training_graph_runs_neither_formula_op_by_op():
    """No Erf (the GELU and its gradient) and no Rsqrt (the layer norm) outside the compiled calls."""
    import tensorflow as tf

    model = ConvBertModel(tiny_config())
    ids = np.ones((2, 5), "int32")
    model(ids)

    @tf.function
    def grads(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(ids)["last_hidden_state"])
        return tape.gradient(loss, model.trainable_weights)

    graph = grads.get_concrete_function(tf.TensorSpec((None, None), tf.int32)).graph
    types = _outer_op_types(graph)
    op_by_op = {"Erf", "Erfc", "Rsqrt", "SquaredDifference"}
    assert not types & op_by_op, types & op_by_op
    blocks = model.encoder.layer
    assert all(isinstance(layer.LayerNorm, fused.LayerNormalization)
               for layer in [model.embeddings, *(b.attention.attention_output for b in blocks),
                             *(b.layer_output for b in blocks)])
