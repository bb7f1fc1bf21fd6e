"""Hashed dropout (``convbert_tf.dropout``): its rate, scale, independence, seeding, XLA, and the model's use."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from convbert_tf import dropout as hd
from convbert_tf.modeling import ConvBertModel
from tests.configs import tiny_config
from tests.tf.helpers import to_numpy, toy_batch
from tests.tolerances import DROPOUT_MASK_SIGMAS

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the hash is the TensorFlow path")


def _mask(shape, rate, seed):
    return hd.keep_mask(tf.constant(shape), rate, tf.constant(seed, tf.int64)).numpy()


def _corr(a, b):
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(4, 6, 128, 128), (1024, 768), (300000, 1)])
def test_the_dropped_share_is_the_rate(rate, shape):
    keep = _mask(shape, rate, (0, 12345))
    n = keep.size
    dropped = 1.0 - keep.mean()
    assert abs(dropped - rate) < DROPOUT_MASK_SIGMAS * math.sqrt(rate * (1 - rate) / n), (dropped, rate)


def test_kept_values_are_rescaled_and_dropped_ones_are_zero():
    x = tf.random.stateless_normal((64, 384), seed=(1, 2))
    rate = 0.25
    y = hd.dropout(x, rate, tf.constant([0, 7], tf.int64)).numpy()
    keep = _mask((64, 384), rate, (0, 7))
    np.testing.assert_array_equal(y[~keep], 0.0)
    np.testing.assert_allclose(y[keep], x.numpy()[keep] / (1 - rate), rtol=1e-6)


def test_masks_are_uncorrelated_across_seeds_rows_and_columns():
    shape = (512, 768)
    n = shape[0] * shape[1]
    bound = DROPOUT_MASK_SIGMAS / math.sqrt(n)
    a = _mask(shape, 0.5, (0, 100))
    # Keras' SeedGenerator advances the second word by one per call: the next call's mask.
    assert abs(_corr(a, _mask(shape, 0.5, (0, 101)))) < bound
    # Seeds that differ in the first word only, or by a swap of the words.
    assert abs(_corr(a, _mask(shape, 0.5, (1, 100)))) < bound
    assert abs(_corr(a, _mask(shape, 0.5, (100, 0)))) < bound
    # Neighbouring rows and columns of one mask.
    assert abs(_corr(a[1:], a[:-1])) < DROPOUT_MASK_SIGMAS / math.sqrt(a[1:].size)
    assert abs(_corr(a[:, 1:], a[:, :-1])) < DROPOUT_MASK_SIGMAS / math.sqrt(a[:, 1:].size)


def test_a_seed_word_beyond_int32_uses_its_low_bits():
    np.testing.assert_array_equal(_mask((8, 16), 0.5, (2**32 + 3, 9)), _mask((8, 16), 0.5, (3, 9)))


def test_mix32_is_a_bijection_on_a_sample():
    x = tf.range(1 << 20, dtype=tf.int64)
    h = hd.mix32(tf.cast(x, tf.uint32)).numpy()
    assert np.unique(h).size == h.size


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_a_rate_outside_zero_to_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        hd.Dropout(rate)


def test_noise_shape_is_refused():
    with pytest.raises(ValueError, match="noise_shape"):
        hd.Dropout(0.1, noise_shape=(None, 1))


def test_the_layer_is_seeded_advances_and_is_identity_in_inference():
    x = tf.ones((32, 64))
    first, second = hd.Dropout(0.3, seed=11), hd.Dropout(0.3, seed=11)
    a1, a2 = first(x, training=True).numpy(), first(x, training=True).numpy()
    b1 = second(x, training=True).numpy()
    np.testing.assert_array_equal(a1, b1)  # one seed, one sequence of masks
    assert (a1 != a2).any()  # each call draws a new mask
    np.testing.assert_array_equal(first(x, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(hd.Dropout(0.0)(x, training=True).numpy(), x.numpy())


def test_xla_and_tf_function_draw_the_eager_mask():
    x = tf.random.stateless_normal((4, 9, 33), seed=(3, 4))
    seed = tf.constant([5, 6], tf.int64)
    eager = hd.dropout(x, 0.2, seed).numpy()
    for jit in (False, True):
        compiled = tf.function(lambda x, s: hd.dropout(x, 0.2, s), jit_compile=jit)(x, seed).numpy()
        np.testing.assert_array_equal(compiled, eager)


def test_low_precision_inputs_keep_their_dtype():
    x = tf.ones((16, 32), tf.bfloat16)
    y = hd.dropout(x, 0.5, tf.constant([0, 1], tf.int64))
    assert y.dtype == tf.bfloat16
    assert set(np.unique(y.numpy().astype(np.float32))) <= {0.0, 2.0}


def test_the_gradient_flows_through_kept_elements_only():
    x = tf.random.stateless_normal((8, 40), seed=(7, 8))
    seed = tf.constant([0, 3], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = hd.dropout(x, 0.4, seed)
    grad = tape.gradient(y, x).numpy()
    keep = _mask((8, 40), 0.4, (0, 3))
    np.testing.assert_allclose(grad, np.where(keep, 1 / 0.6, 0.0), rtol=1e-6)


def test_every_dropout_of_the_model_is_the_hashed_one_and_trains_reproducibly():
    config = tiny_config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    batch, _ = toy_batch("model")
    layers = []

    def outputs(seed):
        keras.utils.set_random_seed(seed)
        model = ConvBertModel(config)
        model(batch)
        layers.extend(layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout))
        return to_numpy(model(batch, training=True)["last_hidden_state"])

    a, b, c = outputs(0), outputs(0), outputs(1)
    assert layers and all(type(layer) is hd.Dropout for layer in layers)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
