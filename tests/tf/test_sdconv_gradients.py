"""The span conv's hand-written gradient equals autodiff's, on every backend; so does the depthwise conv's.

``span_dynamic_conv`` carries a ``keras.ops.custom_gradient``; the oracle is autodiff of the unfold
reference (``span_dynamic_conv_reference``). ``depthwise_conv1d`` (autodiff of the shift-and-accumulate,
what JAX and XLA train with) is checked against autodiff of Keras' grouped convolution
(``ops.depthwise_conv``). Eager and compiled (``jax.jit``, ``tf.function(jit_compile=True)``); this
file is backend-neutral, so the backend runs of ``tests/backends`` repeat it on JAX and PyTorch.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from convbert_tf.sdconv import depthwise_conv1d, span_dynamic_conv
from tests.parity import assert_close, assert_three_way
from tests.tolerances import LOWP_ATOL, LOWP_FACTOR, SDCONV_NATIVE_FP32_ATOL

# (B, L, N', D, K): base-like kernel sizes, and a sequence shorter than the kernel's reach (L < p).
SHAPES = [(2, 11, 2, 4, 9), (1, 3, 3, 5, 9)]


def _gradients(loss, args, compiled: bool):
    """d loss / d each of ``args`` (NumPy arrays) on the current backend, eager or compiled."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.grad(loss, argnums=tuple(range(len(args))))
        return (jax.jit(grad) if compiled else grad)(*args)
    if backend == "tensorflow":
        import tensorflow as tf

        def grad(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value = loss(*tensors)
            return tape.gradient(value, tensors)

        return (tf.function(grad, jit_compile=True) if compiled else grad)(*(tf.constant(a) for a in args))
    if compiled:
        pytest.skip(f"compiled gradients are checked on JAX and TensorFlow, not on {backend}")
    import torch

    leaves = [torch.tensor(a, requires_grad=True) for a in args]
    return torch.autograd.grad(loss(*leaves), leaves)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_span_dynamic_conv_gradient_equals_autodiff_of_the_reference(shape, compiled):
    b, l, n, d, k = shape
    rng = np.random.default_rng(l * k)
    values = rng.standard_normal((b, l, n, d)).astype("float32")
    logits = (2 * rng.standard_normal((b, l, n, k))).astype("float32")
    upstream = rng.standard_normal((b, l, n, d)).astype("float32")

    def loss(impl):
        return lambda v, z: ops.sum(span_dynamic_conv(v, z, impl=impl) * ops.convert_to_tensor(upstream))

    ours = _gradients(loss("native"), (values, logits), compiled)
    autodiff = _gradients(loss("reference"), (values, logits), compiled)
    for name, a, e in zip(("d values", "d kernel_logits"), ours, autodiff, strict=True):
        assert_close(name, a, e, SDCONV_NATIVE_FP32_ATOL)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_depthwise_conv1d_gradient_equals_autodiff_of_the_grouped_convolution(shape, compiled):
    b, l, c, _, k = shape
    rng = np.random.default_rng(l * k + 1)
    x = rng.standard_normal((b, l, c)).astype("float32")
    kernel = (rng.standard_normal((k, c, 1)) / np.sqrt(k)).astype("float32")
    # The kernel gradient sums B * L products: scale the upstream gradient so that it stays of order 1.
    upstream = (rng.standard_normal((b, l, c)) / np.sqrt(b * l)).astype("float32")

    def shifted(u, w):
        return ops.sum(depthwise_conv1d(u, w) * ops.convert_to_tensor(upstream))

    def grouped(u, w):
        out = ops.depthwise_conv(u, w, strides=1, padding="same", data_format="channels_last")
        return ops.sum(out * ops.convert_to_tensor(upstream))

    ours = _gradients(shifted, (x, kernel), compiled)
    autodiff = _gradients(grouped, (x, kernel), compiled)
    for name, a, e in zip(("d x", "d kernel"), ours, autodiff, strict=True):
        assert_close(name, a, e, SDCONV_NATIVE_FP32_ATOL)


def test_bfloat16_gradients_stay_within_the_plain_path_bound():
    # The custom gradient runs in the float32 accumulation dtype between casts; the plain path is
    # autodiff of the reference formulation in the same dtype, and float32 sets ref32.
    b, l, n, d, k = 2, 12, 2, 8, 9
    rng = np.random.default_rng(7)
    values = rng.standard_normal((b, l, n, d)).astype("float32")
    logits = (2 * rng.standard_normal((b, l, n, k))).astype("float32")
    upstream = rng.standard_normal((b, l, n, d)).astype("float32")

    def loss(impl, dtype):
        def fn(v, z):
            out = span_dynamic_conv(ops.cast(v, dtype), ops.cast(z, dtype), impl=impl)
            return ops.sum(ops.cast(out, "float32") * ops.convert_to_tensor(upstream))
        return fn

    ref32 = [ops.convert_to_numpy(g).astype(np.float64)
             for g in _gradients(loss("reference", "float32"), (values, logits), False)]
    plain = _gradients(loss("reference", "bfloat16"), (values, logits), False)
    ours = _gradients(loss("native", "bfloat16"), (values, logits), False)
    for name, a, p, r in zip(("d values", "d kernel_logits"), ours, plain, ref32, strict=True):
        assert_three_way("bfloat16 " + name, a, p, r, LOWP_FACTOR, LOWP_ATOL["bfloat16"])
