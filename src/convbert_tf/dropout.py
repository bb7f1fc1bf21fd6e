"""Dropout whose masks come from a counter-based hash, on every Keras backend.

Keras draws dropout masks with TensorFlow's stateless Philox generator, or JAX's threefry. Compiled by
XLA on a CPU, both are lowered to code the CPU does not vectorise, and the masks of one ConvBERT-base
training step became the largest cost after the matmuls (``bench/RESULTS.md``). Here each element's
keep bit is a 32-bit integer hash of its (row, column) position and the layer's seed, which XLA and
TensorFlow's own kernels compute in a few vector instructions. The hash is the same on every backend:
one seed gives one mask on TensorFlow, JAX and PyTorch.

The seed is the Keras layer's own ``SeedGenerator`` state, advanced once per call as Keras does, so
``keras.utils.set_random_seed``, the layer's ``seed`` argument and a training loop that saves and
restores seed states (``convbert_tf.train``) behave as with ``keras.layers.Dropout``. The masks
themselves differ from Keras'.

The hash works on 32-bit words: ``uint32`` tensors in ``keras.ops`` on TensorFlow and JAX. PyTorch's
``uint32`` has no multiplication or shifts, so there the words are ``int32`` tensors holding the
same bits (``_torch_keep_mask``): products wrap to the same low 32 bits, right shifts are masked to
be logical, and the unsigned comparison is a signed one with the sign bits flipped. Its ops run in
place on fresh tensors, since the PyTorch backend runs eagerly.

Shapes: x (R..., C) is read as R rows of C columns; a row hash and a column hash, each keyed by the
seed, are mixed into one 32-bit value per element and compared with ``rate * 2**32``.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from convbert_common import checks

HASHED_BACKENDS = ("tensorflow", "jax", "torch")
_GOLDEN = 0x9E3779B9  # odd constants: tell the two key words and the row/column streams apart
_ROW_SALT = 0x85EBCA6B
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)  # lowbias32's
_SHIFTS = (16, 15, 16)


def _u32(value: int):
    return ops.convert_to_tensor(value, dtype="uint32")


def _signed(word: int) -> int:
    """A uint32 constant as the int32 with the same bits (PyTorch's words)."""
    return word - 2**32 if word >= 2**31 else word


def as_words(x):
    """Integer tensor -> the backend's 32-bit words (each value modulo 2**32): uint32, or int32 on PyTorch."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.bitwise_and(torch.as_tensor(x).to(torch.int64), 2**32 - 1).to(torch.int32)
    return ops.cast(x, "uint32")


def mix32(h):
    """words (``as_words``) -> words of the same shape: Wellons' ``lowbias32`` bijective mixer."""
    if keras.backend.backend() == "torch":
        return _torch_mix32_(h.clone())
    (a, b, c), (m, n) = _SHIFTS, _MULTIPLIERS
    h = ops.bitwise_xor(h, ops.right_shift(h, _u32(a)))
    h = ops.multiply(h, _u32(m))
    h = ops.bitwise_xor(h, ops.right_shift(h, _u32(b)))
    h = ops.multiply(h, _u32(n))
    return ops.bitwise_xor(h, ops.right_shift(h, _u32(c)))


def _torch_mix32_(h):
    """``mix32`` in place on an int32 torch tensor of words; returns it."""
    (a, b, c), (m, n) = _SHIFTS, _MULTIPLIERS
    h ^= (h >> a) & ((1 << (32 - a)) - 1)  # the masks make the arithmetic shifts logical
    h *= _signed(m)
    h ^= (h >> b) & ((1 << (32 - b)) - 1)
    h *= _signed(n)
    h ^= (h >> c) & ((1 << (32 - c)) - 1)
    return h


def _torch_keep_mask(rows: int, columns: int, threshold: int, seed):
    """``keep_mask``'s hash on PyTorch (int32 words, see the module docstring) -> bool (R, C)."""
    import torch

    seed = as_words(seed)
    key = _torch_mix32_(seed[0] * _signed(_GOLDEN) ^ _torch_mix32_(seed[1].clone()))
    row_key = _torch_mix32_(key ^ _signed(_ROW_SALT))
    row_hash = _torch_mix32_(torch.arange(rows, dtype=torch.int32, device=seed.device) + row_key)  # (R,)
    column_hash = _torch_mix32_(torch.arange(columns, dtype=torch.int32, device=seed.device) ^ key)  # (C,)
    h = _torch_mix32_(row_hash[:, None] ^ column_hash[None, :])  # (R, C)
    h ^= -(2**31)  # unsigned order as signed order
    return h >= threshold - 2**31


def keep_threshold(rate: float) -> int:
    """The uint32 a hash must reach for its element to be kept: P(keep) = 1 - rate, to 2**-32."""
    checks.check_dropout_rate("dropout rate", rate)
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
    seed = ops.reshape(seed, (-1,))[:2]
    if keras.backend.backend() == "torch":
        return ops.reshape(_torch_keep_mask(rows, columns, keep_threshold(rate), seed), shape)  # (R..., C)
    seed = ops.cast(seed, "uint32")
    key = mix32(ops.bitwise_xor(ops.multiply(seed[0], _u32(_GOLDEN)), mix32(seed[1])))
    row_key = mix32(ops.bitwise_xor(key, _u32(_ROW_SALT)))
    row_index = ops.cast(ops.arange(rows, dtype="int32"), "uint32")
    column_index = ops.cast(ops.arange(columns, dtype="int32"), "uint32")
    row_hash = ops.expand_dims(mix32(ops.add(row_index, row_key)), 1)  # (R, 1)
    column_hash = ops.expand_dims(mix32(ops.bitwise_xor(column_index, key)), 0)  # (1, C)
    keep = ops.greater_equal(mix32(ops.bitwise_xor(row_hash, column_hash)), _u32(keep_threshold(rate)))
    return ops.reshape(keep, shape)  # (R..., C)


def dropout(x, rate: float, seed):
    """x (...), seed (2,) -> x with each element zeroed with probability ``rate``, the rest / (1 - rate).

    On TensorFlow and JAX it runs compiled (``_compiled_dropout``), also when called eagerly or from
    a graph that is not: the hash is a dozen elementwise passes, which only a compiler fuses into one.
    """
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, shape[-1]))  # (R, C): one rank for every caller, so one trace generalises
    return ops.reshape(_compiled_dropout(keras.backend.backend())(flat, rate, seed), shape)  # (R..., C)


def _dropout(x, rate: float, seed):
    keep = keep_mask(ops.shape(x), rate, seed)
    return ops.where(keep, ops.multiply(x, ops.cast(1.0 / (1.0 - rate), x.dtype)), ops.zeros_like(x))


@functools.cache
def _compiled_dropout(backend: str):
    """``_dropout`` under the backend's compiler: XLA on TensorFlow, ``jax.jit`` on JAX (PyTorch: as is).

    Cached per backend name, so one compiled function (and its per-shape cache) serves every layer;
    it takes the input as (R, C), whose dimensions ``reduce_retracing`` generalises to unknown.
    Inside an XLA or ``jax.jit`` computation the call is inlined; from eager code or a plain
    ``tf.function`` it is one compiled kernel, with the mask the same in every mode.
    """
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(_dropout, jit_compile=True, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(_dropout, static_argnums=1)
    return _dropout


@keras.saving.register_keras_serializable(package="convbert")
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` with hashed masks (see the module docstring)."""

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
