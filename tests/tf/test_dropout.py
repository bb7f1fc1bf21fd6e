"""Hashed dropout (``convbert_tf.dropout``): its rate, scale, independence, seeding, XLA, and the model's use.

Backend-neutral: the masks equal a NumPy transcription of the hash, so one seed gives one mask on
TensorFlow, JAX and PyTorch (the JAX and PyTorch legs of tests/backends run this file again).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from convbert_tf import dropout as hd
from convbert_tf.modeling import ConvBertModel
from tests.configs import tiny_config
from tests.tf.helpers import to_numpy, toy_batch
from tests.tolerances import DROPOUT_MASK_SIGMAS, DROPOUT_SCALE_RTOL

pytestmark = pytest.mark.skipif(keras.backend.backend() not in hd.HASHED_BACKENDS,
                                reason="this backend uses keras.layers.Dropout")


def _mix_np(h):
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h


def _reference_keep(shape, rate, seed):
    """The hash written out in NumPy, independently of the backend's ops."""
    with np.errstate(over="ignore"):
        s0, s1 = (np.uint32(int(word) % 2**32) for word in seed)
        key = _mix_np(np.array([s0 * np.uint32(0x9E3779B9)], np.uint32) ^ _mix_np(np.array([s1])))[0]
        row_key = _mix_np(np.array([key ^ np.uint32(0x85EBCA6B)]))[0]
        rows = int(np.prod(shape[:-1]))
        row_hash = _mix_np(np.arange(rows, dtype=np.uint32) + row_key)[:, None]
        column_hash = _mix_np(np.arange(shape[-1], dtype=np.uint32) ^ key)[None, :]
        h = _mix_np(row_hash ^ column_hash)
    return (h >= np.uint32(hd.keep_threshold(rate))).reshape(shape)


def _seed(seed):
    # The seed states' dtypes: int64 on TensorFlow, uint32 on JAX; int64 holds a word on PyTorch.
    dtype = "uint32" if keras.backend.backend() == "jax" else "int64"
    return keras.ops.convert_to_tensor(np.array([w % 2**32 if dtype == "uint32" else w for w in seed]), dtype=dtype)


def _mask(shape, rate, seed):
    return keras.ops.convert_to_numpy(hd.keep_mask(shape, rate, _seed(seed)))


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


@pytest.mark.parametrize("shape", [(4, 3, 9, 9), (64, 384), (1, 1)])
@pytest.mark.parametrize("seed", [(0, 7), (3, 2**32 - 1), (2**31 + 5, 11)])
def test_the_mask_is_the_reference_hash(shape, seed):
    np.testing.assert_array_equal(_mask(shape, 0.3, seed), _reference_keep(shape, 0.3, seed))


def test_kept_values_are_rescaled_and_dropped_ones_are_zero():
    x = np.random.default_rng(0).standard_normal((64, 384)).astype("float32")
    rate = 0.25
    y = keras.ops.convert_to_numpy(hd.dropout(keras.ops.convert_to_tensor(x), rate, _seed((0, 7))))
    keep = _mask((64, 384), rate, (0, 7))
    np.testing.assert_array_equal(y[~keep], 0.0)
    np.testing.assert_allclose(y[keep], x[keep] / (1 - rate), rtol=DROPOUT_SCALE_RTOL)


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


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="JAX's seed states are uint32")
def test_a_seed_word_beyond_32_bits_uses_its_low_bits():
    np.testing.assert_array_equal(_mask((8, 16), 0.5, (2**32 + 3, 9)), _mask((8, 16), 0.5, (3, 9)))


def test_mix32_is_a_bijection_on_a_sample():
    # PyTorch's words are int32 tensors with the same bits: compare them as uint32.
    h = keras.ops.convert_to_numpy(hd.mix32(hd.as_words(keras.ops.arange(1 << 20, dtype="int32")))).astype(np.uint32)
    assert np.unique(h).size == h.size
    np.testing.assert_array_equal(h, _mix_np(np.arange(1 << 20, dtype=np.uint32)))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.1"])
def test_a_rate_outside_zero_to_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"dropout rate must be a number in \[0, 1\)"):
        hd.Dropout(rate)


def test_noise_shape_is_refused():
    with pytest.raises(ValueError, match="noise_shape"):
        hd.Dropout(0.1, noise_shape=(None, 1))


def test_the_layer_is_seeded_advances_and_is_identity_in_inference():
    x = keras.ops.ones((32, 64))
    first, second = hd.Dropout(0.3, seed=11), hd.Dropout(0.3, seed=11)
    a1, a2 = (keras.ops.convert_to_numpy(first(x, training=True)) for _ in range(2))
    b1 = keras.ops.convert_to_numpy(second(x, training=True))
    np.testing.assert_array_equal(a1, b1)  # one seed, one sequence of masks
    assert (a1 != a2).any()  # each call draws a new mask
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first(x, training=False)), 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(hd.Dropout(0.0)(x, training=True)), 1.0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function and TensorFlow's XLA")
def test_xla_and_tf_function_draw_the_eager_mask():
    tf = pytest.importorskip("tensorflow")
    x = tf.random.stateless_normal((4, 9, 33), seed=(3, 4))
    seed = tf.constant([5, 6], tf.int64)
    eager = hd.dropout(x, 0.2, seed).numpy()
    for jit in (False, True):
        compiled = tf.function(lambda x, s: hd.dropout(x, 0.2, s), jit_compile=jit)(x, seed).numpy()
        np.testing.assert_array_equal(compiled, eager)
    # A graph that does not know the batch or the length: the mask is still the eager one.
    dynamic = tf.function(lambda x, s: hd.dropout(x, 0.2, s),
                          input_signature=[tf.TensorSpec([None, None, 33]), tf.TensorSpec([2], tf.int64)])
    np.testing.assert_array_equal(dynamic(x, seed).numpy(), eager)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.jit")
def test_jax_jit_draws_the_eager_mask():
    import jax

    x = keras.ops.ones((4, 9, 33))
    seed = _seed((5, 6))
    eager = keras.ops.convert_to_numpy(hd.dropout(x, 0.2, seed))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda x, s: hd.dropout(x, 0.2, s))(x, seed)), eager)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile")
def test_torch_compile_draws_the_eager_mask_in_one_graph():
    import torch

    x = torch.ones(4, 9, 33)
    seed = _seed((5, 6))
    eager = hd.dropout(x, 0.2, seed)
    # Inductor's generated code must wrap the int32 products as eager PyTorch does.
    compiled = torch.compile(lambda x, s: hd.dropout(x, 0.2, s), fullgraph=True)(x, seed)
    np.testing.assert_array_equal(compiled.cpu().numpy(), eager.cpu().numpy())


def test_low_precision_inputs_keep_their_dtype():
    x = keras.ops.ones((16, 32), dtype="bfloat16")
    y = hd.dropout(x, 0.5, _seed((0, 1)))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert set(np.unique(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")))) <= {0.0, 2.0}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a GradientTape")
def test_the_gradient_flows_through_kept_elements_only():
    tf = pytest.importorskip("tensorflow")
    x = tf.random.stateless_normal((8, 40), seed=(7, 8))
    seed = tf.constant([0, 3], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = hd.dropout(x, 0.4, seed)
    grad = tape.gradient(y, x).numpy()
    keep = _mask((8, 40), 0.4, (0, 3))
    np.testing.assert_allclose(grad, np.where(keep, 1 / 0.6, 0.0), rtol=DROPOUT_SCALE_RTOL)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.autograd")
def test_the_gradient_flows_through_kept_elements_only_on_pytorch():
    import torch

    x = torch.randn(8, 40, generator=torch.Generator().manual_seed(7), requires_grad=True)
    hd.dropout(x, 0.4, _seed((0, 3))).sum().backward()
    keep = _mask((8, 40), 0.4, (0, 3))
    np.testing.assert_allclose(x.grad.cpu().numpy(), np.where(keep, 1 / 0.6, 0.0), rtol=DROPOUT_SCALE_RTOL)


def test_negative_seed_words_count_modulo_two_to_the_32():
    if keras.backend.backend() == "jax":
        pytest.skip("JAX's seed states are uint32")
    np.testing.assert_array_equal(_mask((8, 16), 0.5, (-1, -5)), _reference_keep((8, 16), 0.5, (-1, -5)))


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
