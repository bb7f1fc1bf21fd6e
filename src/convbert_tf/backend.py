"""Which Keras backend runs, and a clear refusal for the features that only TensorFlow has.

``convbert_tf`` is written on ``keras.ops`` and runs on every Keras 3 backend (TensorFlow, JAX,
PyTorch). A few features are TensorFlow's own (SavedModel export, the in-graph tokenizer,
``tf.data`` helpers, ``tf.distribute`` strategies); on another backend they raise ``BackendError``
naming the backend they need, instead of failing somewhere inside TensorFlow.
"""

from __future__ import annotations

import keras
from keras import ops


class BackendError(ValueError):
    """A feature was asked for on a Keras backend that does not have it."""


def name() -> str:
    return keras.backend.backend()


def require_tensorflow(feature: str) -> None:
    if name() != "tensorflow":
        raise BackendError(f"{feature} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process "
                           f"runs Keras on {name()}")


def cpu_only() -> bool:
    """Whether Keras sees no accelerator: a bf16 policy then runs its matmuls on the CPU."""
    return all(d.split(":")[0].lower() == "cpu" for d in keras.distribution.list_devices())


def replicas_in_sync() -> int:
    """Replicas of the tf.distribute strategy this step runs under (1 outside one, or off TensorFlow)."""
    if name() != "tensorflow":
        return 1
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def depthwise_kernel_is_safe(tensorflow_version: str | None = None) -> bool:
    """Whether the backend's own depthwise-convolution kernel may run ("auto" in ``set_depthwise_impl``).

    TensorFlow 2.16's oneDNN depthwise kernel dies of a floating-point exception (SIGFPE, the whole
    process) at some kernel sizes, e.g. K = 15 at L = 7 or K = 13 at L = 13; 2.17 and later do not.
    ``tensorflow_version`` defaults to the installed TensorFlow's (where that backend runs).
    """
    if name() != "tensorflow":
        return True
    if tensorflow_version is None:
        import tensorflow as tf

        tensorflow_version = tf.__version__
    major, minor = (int(part) for part in tensorflow_version.split(".")[:2])
    return (major, minor) != (2, 16)


def matmul_transposed(x, table):
    """x (..., E), table (V, E) -> (..., V): ``x @ table.T`` with float32 accumulation on every backend.

    On TensorFlow a matmul with ``transpose_b``: the (V, E) table is read in place, where an explicit
    transpose would copy it every call, and TensorFlow's own CPU einsum would sum half-precision
    products in half precision.
    """
    if name() != "tensorflow":
        return ops.matmul(x, ops.transpose(table))
    import tensorflow as tf

    return tf.linalg.matmul(x, table, transpose_b=True)
