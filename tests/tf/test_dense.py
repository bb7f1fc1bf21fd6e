"""``convbert_tf.dense.Dense``: Keras' Dense, a widening layer's input gradient an einsum on TensorFlow.

The product, its bias and activation, and both gradients must be Keras' (fp32 rounding of another
summation order apart), eagerly, in a ``tf.function``, under XLA and under a bf16 policy; narrowing,
square and quantized layers must be Keras' Dense untouched.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from convbert_tf import ConvBertModel
from convbert_tf.dense import Dense, uses_einsum_gradient
from tests.configs import tiny_config
from tests.parity import assert_three_way
from tests.tf.helpers import layer_value_and_grads
from tests.tolerances import EXACT, GEMM_BACKEND_FP32_ATOL, LOWP_ATOL, LOWP_FACTOR

pytestmark = pytest.mark.tensorflow_backend  # the einsum gradient is TensorFlow's; elsewhere it is Dense
NAMES = ("output", "input grad", "kernel grad", "bias grad")


def _pair(width: int, units: int, activation=None, dtype=None):
    """Our layer and Keras' on the same weights, built for (..., width) inputs."""
    ours = Dense(units, activation=activation, dtype=dtype)
    theirs = keras.layers.Dense(units, activation=activation, dtype=dtype)
    for layer in (ours, theirs):
        layer.build((None, None, width))
    rng = np.random.default_rng(0)
    theirs.set_weights([rng.normal(size=(width, units)).astype("float32"),
                        rng.normal(size=(units,)).astype("float32")])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


@pytest.mark.parametrize("mode", ["eager", "tf.function", "xla"])
def test_a_widening_layer_gives_keras_outputs_and_gradients(mode):
    import tensorflow as tf

    ours, theirs = _pair(8, 32, activation="gelu")
    assert uses_einsum_gradient(ours)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 5, 8)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(3, 5, 32)).astype("float32"))
    got, want = layer_value_and_grads(ours, x, upstream, mode), layer_value_and_grads(theirs, x, upstream, mode)
    for name, a, b in zip(NAMES, got, want, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=EXACT, atol=GEMM_BACKEND_FP32_ATOL, err_msg=name)


def test_the_input_gradient_is_the_einsum_and_the_kernel_gradient_a_matmul():
    """The traced gradient of a widening layer has an Einsum; Keras' Dense has none."""
    import tensorflow as tf

    def gradient_ops(layer):
        @tf.function
        def grads(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            return tape.gradient(y, [x, layer.kernel])

        graph = grads.get_concrete_function(tf.TensorSpec((None, None, 8), tf.float32)).graph
        return {op.type for op in graph.get_operations()}

    ours, theirs = _pair(8, 32)
    assert "Einsum" in gradient_ops(ours)
    assert "Einsum" not in gradient_ops(theirs)


def test_narrowing_square_and_quantized_layers_are_keras_dense():
    narrowing, _ = _pair(32, 8)
    square, _ = _pair(16, 16)
    assert not uses_einsum_gradient(narrowing)
    assert not uses_einsum_gradient(square)
    quantized, plain = _pair(8, 32)
    quantized.quantize("int8")
    plain.quantize("int8")
    assert not uses_einsum_gradient(quantized)
    x = np.random.default_rng(2).normal(size=(2, 4, 8)).astype("float32")
    np.testing.assert_array_equal(np.asarray(quantized(x)), np.asarray(plain(x)))


def test_a_bf16_policy_computes_in_bf16_within_the_low_precision_rule():
    """bf16 against Keras' fp32 Dense: no further off than Keras' own bf16 Dense (tests/tolerances.py)."""
    import tensorflow as tf

    ours, plain = _pair(8, 32, dtype="mixed_bfloat16")
    _, reference = _pair(8, 32)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 4, 8)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 4, 32)).astype("float32"))
    assert ours(x).dtype == plain(x).dtype == tf.bfloat16
    assert ours.kernel.dtype == "float32"
    results = [layer_value_and_grads(layer, x, upstream, "tf.function") for layer in (ours, plain, reference)]
    for name, got, got_plain, want in zip(NAMES, *results, strict=True):
        assert_three_way(name, got, got_plain, want, LOWP_FACTOR, LOWP_ATOL["bfloat16"])


def test_the_feed_forward_s_first_layer_takes_the_einsum_gradient():
    config = tiny_config()
    assert config.intermediate_size > config.hidden_size
    model = ConvBertModel(config)
    model(np.ones((1, 4), "int32"))
    for layer in model.encoder.layer:
        assert isinstance(layer.intermediate.dense, Dense)
        assert uses_einsum_gradient(layer.intermediate.dense)
        assert not uses_einsum_gradient(layer.layer_output.dense)


def test_quantizing_a_model_quantizes_its_widening_layers():
    """``Model.quantize`` skips (with a warning) the subclasses Keras does not know; ours must not be skipped."""
    inputs = keras.Input((4, 8))
    model = keras.Model(inputs, Dense(32)(inputs))
    with warnings.catch_warnings(record=True) as caught:  # Keras warns of the input layer it cannot quantize
        warnings.simplefilter("always")
        model.quantize("int8")
    assert model.layers[-1].quantization_mode == "int8"
    skipped = [str(w.message) for w in caught if "quantiz" in str(w.message) and "InputLayer" not in str(w.message)]
    assert not skipped, skipped
