"""Dropout whose masks come from a counter-based hash on the TensorFlow backend.

Keras draws dropout masks with TensorFlow's stateless Philox generator. Compiled by XLA on a CPU,
that generator is lowered to 64-bit multiplies the CPU does not vectorise, and the masks of one
ConvBERT-base training step became the largest cost after the matmuls (``bench/RESULTS.md``). Here
each element's keep bit is a 32-bit integer hash of its (row, column) position and the layer's seed,
which XLA and TensorFlow's own kernels compute in a few vector instructions.

The seed is the Keras layer's own ``SeedGenerator`` state, advanced once per call as Keras does, so
``keras.utils.set_random_seed``, the layer's ``seed`` argument and a training loop that saves and
restores seed states (``convbert_tf.train``) behave as with ``keras.layers.Dropout``. The masks
themselves differ from Keras' (no framework's dropout masks match another's). On the JAX and PyTorch
backends the layer is ``keras.layers.Dropout`` unchanged.

Shapes: x (R..., C) is read as R rows of C columns; a row hash and a column hash, each keyed by the
seed, are mixed into one 32-bit value per element and compared with ``rate * 2**32``.
"""

from __future__ import annotations

import keras

_GOLDEN = 0x9E3779B9  # odd constants: tell the two key words and the row/column streams apart
_ROW_SALT = 0x85EBCA6B


def mix32(h):
    """uint32 tensor -> uint32 tensor of the same shape: Wellons' ``lowbias32`` bijective mixer."""
    import tensorflow as tf

    shift = tf.bitwise.right_shift
    h = tf.bitwise.bitwise_xor(h, shift(h, tf.constant(16, tf.uint32)))
    h = h * tf.constant(0x7FEB352D, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, shift(h, tf.constant(15, tf.uint32)))
    h = h * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(h, shift(h, tf.constant(16, tf.uint32)))


def _uint32(x):
    """integer tensor -> its low 32 bits as uint32 (int64 seed states can exceed int32)."""
    import tensorflow as tf

    return tf.cast(tf.bitwise.bitwise_and(tf.cast(x, tf.int64), 0xFFFFFFFF), tf.uint32)


def keep_threshold(rate: float) -> int:
    """The uint32 a hash must reach for its element to be kept: P(keep) = 1 - rate, to 2**-32."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    return min(round(rate * 2**32), 2**32 - 1)


def keep_mask(shape, rate: float, seed):
    """shape (R..., C) (a 1-D int tensor), seed (2,) integers -> bool (R..., C): True where kept.

    Rows and columns are hashed apart and then mixed, so the work per element is one ``mix32``
    whatever the rank, and no index is formed as a product that could overflow 32 bits.
    """
    import tensorflow as tf

    shape = tf.cast(shape, tf.int64)
    columns = shape[-1]
    rows = tf.reduce_prod(shape[:-1])
    seed = _uint32(tf.reshape(seed, [-1])[:2])
    key = mix32(tf.bitwise.bitwise_xor(seed[0] * tf.constant(_GOLDEN, tf.uint32), mix32(seed[1])))
    row_key = mix32(tf.bitwise.bitwise_xor(key, tf.constant(_ROW_SALT, tf.uint32)))
    row_hash = mix32(_uint32(tf.range(rows)) + row_key)[:, None]  # (R, 1)
    column_hash = mix32(tf.bitwise.bitwise_xor(_uint32(tf.range(columns)), key))[None, :]  # (1, C)
    keep = mix32(tf.bitwise.bitwise_xor(row_hash, column_hash)) >= tf.constant(keep_threshold(rate), tf.uint32)
    return tf.reshape(keep, shape)  # (R..., C)


def dropout(x, rate: float, seed):
    """x (...), seed (2,) -> x with each element zeroed with probability ``rate``, the rest / (1 - rate)."""
    import tensorflow as tf

    keep = keep_mask(tf.shape(x), rate, seed)
    return tf.where(keep, x * tf.cast(1.0 / (1.0 - rate), x.dtype), tf.zeros_like(x))


@keras.saving.register_keras_serializable(package="convbert")
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` with hashed masks on TensorFlow (see the module docstring)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if noise_shape is not None:
            raise ValueError("convbert_tf.dropout.Dropout draws one bit per element: noise_shape is not supported")
        keep_threshold(rate)  # the rate's check
        super().__init__(rate, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        if keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        return dropout(inputs, self.rate, self.seed_generator.next())
