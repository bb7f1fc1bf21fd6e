"""Dropout whose masks come from a counter-based hash, on the TensorFlow and JAX backends.

Keras draws dropout masks with TensorFlow's stateless Philox generator, or JAX's threefry. Compiled by
XLA on a CPU, both are lowered to code the CPU does not vectorise, and the masks of one ConvBERT-base
training step became the largest cost after the matmuls (``bench/RESULTS.md``). Here each element's
keep bit is a 32-bit integer hash of its (row, column) position and the layer's seed, which XLA and
TensorFlow's own kernels compute in a few vector instructions. The hash is the same on both backends:
one seed gives one mask on TensorFlow and on JAX.

The seed is the Keras layer's own ``SeedGenerator`` state, advanced once per call as Keras does, so
``keras.utils.set_random_seed``, the layer's ``seed`` argument and a training loop that saves and
restores seed states (``convbert_tf.train``) behave as with ``keras.layers.Dropout``. The masks
themselves differ from Keras'. On the PyTorch backend (whose unsigned 32-bit arithmetic is partial)
the layer is ``keras.layers.Dropout`` unchanged.

Shapes: x (R..., C) is read as R rows of C columns; a row hash and a column hash, each keyed by the
seed, are mixed into one 32-bit value per element and compared with ``rate * 2**32``.
"""

from __future__ import annotations

import keras
from keras import ops

HASHED_BACKENDS = ("tensorflow", "jax")
_GOLDEN = 0x9E3779B9  # odd constants: tell the two key words and the row/column streams apart
_ROW_SALT = 0x85EBCA6B


def _u32(value: int):
    return ops.convert_to_tensor(value, dtype="uint32")


def mix32(h):
    """uint32 tensor -> uint32 tensor of the same shape: Wellons' ``lowbias32`` bijective mixer."""
    h = ops.bitwise_xor(h, ops.right_shift(h, _u32(16)))
    h = ops.multiply(h, _u32(0x7FEB352D))
    h = ops.bitwise_xor(h, ops.right_shift(h, _u32(15)))
    h = ops.multiply(h, _u32(0x846CA68B))
    return ops.bitwise_xor(h, ops.right_shift(h, _u32(16)))


def keep_threshold(rate: float) -> int:
    """The uint32 a hash must reach for its element to be kept: P(keep) = 1 - rate, to 2**-32."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be a number in [0, 1), got {rate!r}")
    return min(round(rate * 2**32), 2**32 - 1)


def keep_mask(shape, rate: float, seed):
    """shape (R..., C) (ints, or a backend's dynamic shape), seed (2,) integers -> bool (R..., C): True where kept.

    Rows and columns are hashed apart and then mixed, so the work per element is one ``mix32``
    whatever the rank, and no element index (which would pass 2**32 in a large attention tensor) is
    formed: rows and columns are each counted in int32. The seed's words count modulo 2**32.
    """
    shape = tuple(shape)
    columns = shape[-1]
    rows = 1
    for size in shape[:-1]:
        rows = rows * size
    seed = ops.cast(ops.reshape(seed, (-1,))[:2], "uint32")
    key = mix32(ops.bitwise_xor(ops.multiply(seed[0], _u32(_GOLDEN)), mix32(seed[1])))
    row_key = mix32(ops.bitwise_xor(key, _u32(_ROW_SALT)))
    row_index = ops.cast(ops.arange(rows, dtype="int32"), "uint32")
    column_index = ops.cast(ops.arange(columns, dtype="int32"), "uint32")
    row_hash = ops.expand_dims(mix32(ops.add(row_index, row_key)), 1)  # (R, 1)
    column_hash = ops.expand_dims(mix32(ops.bitwise_xor(column_index, key)), 0)  # (1, C)
    keep = ops.greater_equal(mix32(ops.bitwise_xor(row_hash, column_hash)), _u32(keep_threshold(rate)))
    return ops.reshape(keep, shape)  # (R..., C)


def dropout(x, rate: float, seed):
    """x (...), seed (2,) -> x with each element zeroed with probability ``rate``, the rest / (1 - rate)."""
    keep = keep_mask(ops.shape(x), rate, seed)
    return ops.where(keep, ops.multiply(x, ops.cast(1.0 / (1.0 - rate), x.dtype)), ops.zeros_like(x))


@keras.saving.register_keras_serializable(package="convbert")
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` with hashed masks on TensorFlow and JAX (see the module docstring)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if noise_shape is not None:
            raise ValueError("convbert_tf.dropout.Dropout draws one bit per element: noise_shape is not supported")
        keep_threshold(rate)  # the rate's check
        super().__init__(rate, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        if keras.backend.backend() not in HASHED_BACKENDS:
            return super().call(inputs, training=training)
        return dropout(inputs, self.rate, self.seed_generator.next())
