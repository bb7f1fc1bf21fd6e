"""A Keras ``Dense`` whose widening layers get their input gradient from TensorFlow's einsum kernel.

The feed-forward's first dense layer widens H to I (768 -> 3072 in ConvBERT-base). Its input gradient
``dy (T, I) @ kernel (H, I)^T`` contracts over the wide side with the kernel transposed. TensorFlow's
CPU ``MatMul`` with ``transpose_b`` runs that product markedly below its untransposed rate, while its
``Einsum`` kernel (oneDNN's matmul primitive, the layout given as strides) runs it at the full rate
(``bench/RESULTS.md``, "The widening layer's input gradient"). The numbers are the same product, summed
in another order (fp32 rounding apart).

So on TensorFlow a widening ``Dense`` (units > input width) computes its kernel product with a
custom gradient: the input gradient as an einsum, the kernel gradient ``x^T @ dy`` as autodiff's
``MatMul`` would. Forward, bias, activation, dtype policy, LoRA: Keras' own. On JAX and PyTorch,
for narrowing or square layers, and for quantized layers (which run Keras' ``quantized_call``), it is
``keras.layers.Dense`` unchanged. XLA compiles either form into the same dot.

Shapes: x (..., H) is read as T = prod(...) rows; kernel (H, I).
"""

from __future__ import annotations

import functools

import keras
from keras import ops


@functools.cache  # tf.custom_gradient needs TensorFlow at definition: built on first use, once
def _widening_product():
    """The (T, H) @ (H, I) product with the einsum input gradient, built on first use (TensorFlow only)."""
    import tensorflow as tf

    @tf.custom_gradient
    def product(x, kernel):
        """x (T, H), kernel (H, I) -> (T, I)."""

        def grad(dy):  # dy (T, I)
            return (tf.einsum("ti,hi->th", dy, kernel),  # (T, H)
                    tf.linalg.matmul(x, dy, transpose_a=True))  # (H, I)

        return tf.linalg.matmul(x, kernel), grad

    return product


def widening_matmul(x, kernel):
    """x (..., H) @ kernel (H, I) -> (..., I), on TensorFlow with the einsum input gradient."""
    import tensorflow as tf

    # A tensor, not the variable (custom_gradient would then want the variables themselves); a Keras
    # variable converts to its compute dtype under a mixed policy (autocast).
    kernel = tf.convert_to_tensor(kernel)
    width, units = kernel.shape
    rows = ops.reshape(x, (-1, width))  # (T, H)
    y = _widening_product()(rows, kernel)  # (T, I)
    return ops.reshape(y, (*ops.shape(x)[:-1], units))  # (..., I)


def uses_einsum_gradient(layer: keras.layers.Dense) -> bool:
    """Whether ``layer``'s kernel product takes the einsum input gradient (TensorFlow, widening, plain)."""
    return (keras.backend.backend() == "tensorflow" and layer.quantization_mode is None
            and layer.units > layer.kernel.shape[0])


@keras.saving.register_keras_serializable(package="convbert")
class Dense(keras.layers.Dense):
    """``keras.layers.Dense``; a widening layer on TensorFlow takes its input gradient from an einsum."""

    def call(self, inputs, training=None):
        if not uses_einsum_gradient(self):
            return super().call(inputs, training=training)
        x = widening_matmul(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def quantize(self, mode=None, type_check=True, config=None):
        """Keras' ``Dense.quantize``. Keras refuses subclasses by default, since they may change what a
        quantized layer computes; this one changes only ``call``, which a quantized layer does not run."""
        return super().quantize(mode, type_check=False, config=config)
