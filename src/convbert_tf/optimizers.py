"""Adam and AdamW whose update of each weight is one compiled kernel on TensorFlow.

Keras 3 writes Adam's update as about ten elementwise ops per weight, each a pass over the weight or
one of its two slots. Outside XLA (the default ``fit`` step on a CPU, ``TaskModel.compile``) TensorFlow
runs them one by one: for ConvBERT-base's 110M parameters that is 0.2 s of every step, memory traffic
alone. ``update_step`` here runs the same ops in the same order as one ``tf.function(jit_compile=True)``
call per weight, which XLA fuses into one pass that reads the weight, its slots and its gradient once
and writes them once. Inside a step that is already XLA (``jit_compile=True``) the call is inlined.
The scalars every weight's update shares (the step size from the step counter, PyTorch's bias
corrections) are formed once per ``apply`` (``SharedStepScalars``), where Keras forms them again for each
weight: a dozen scalar ops each, which TensorFlow's executor runs one at a time.

The numbers are Keras' (or, for ``convbert_tf.train.AdamW``, PyTorch's) up to float32 rounding: XLA
may contract a multiply and an add into one fused multiply-add (one rounding instead of two).
TensorFlow's own fused kernel, ``ResourceApplyAdam``, was not used. It forms ``1 - beta_2`` in float32
(``1 - 0.999`` is then 1.3e-5 off), and it gives wrong numbers for bfloat16 weights.

An embedding's gradient (a TensorFlow ``IndexedSlices``, one row per token occurrence) is made dense
before the update, as on JAX and PyTorch. Keras' own Adam on TensorFlow squares the rows one by one
instead, so a token that occurs twice in a batch adds ``g1^2 + g2^2`` to its second moment where
Adam (``torch.optim.Adam``, Keras on JAX) adds ``(g1 + g2)^2``.

On JAX the whole step is one ``jax.jit`` program, so there the update is the class's plain one. On
PyTorch, too; but there ``keras.optimizers.Adam()`` builds a ``torch._foreach`` version of itself,
which a subclass does not get, so prefer Keras' own class on that backend (``TaskModel.compile``'s
default does). ``fused=False`` selects the plain update on TensorFlow too.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

_register = keras.saving.register_keras_serializable(package="convbert")


# --------------------------------------------------------------------------------------- the update rules
def keras_adam_update(target, variable, m, v, v_hat, gradient, alpha, beta_1: float, beta_2: float,
                      epsilon: float) -> None:
    """Keras' Adam step on one weight (``keras.optimizers.Adam.update_step``), after its step size.

    ``alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`` (a scalar); ``m``, ``v`` (and ``v_hat`` with
    amsgrad, else None) the slots, all of the weight's shape. ``target`` owns ``assign`` /
    ``assign_add`` / ``assign_sub`` (an optimizer, or ``_Variables`` for tf.Variables).
    ``m += (g - m)(1 - b1)``; ``v += (g^2 - v)(1 - b2)``; ``w -= m * alpha / (sqrt(v) + eps)``.
    """
    target.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
    target.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
    if v_hat is not None:
        target.assign(v_hat, ops.maximum(v_hat, v))
        v = v_hat
    target.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), epsilon)))


def torch_adam_update(target, variable, m, v, gradient, lr, correction1, correction2, beta_1: float,
                      beta_2: float, epsilon: float) -> None:
    """PyTorch's Adam step on one weight (``torch.optim.AdamW`` after its weight decay).

    ``correction1 = 1 - beta_1^t``, ``correction2 = 1 - beta_2^t`` and ``lr`` are scalars.
    ``m += (g - m)(1 - b1)``; ``v = v b2 + g^2 (1 - b2)``; ``w -= m / (sqrt(v) / sqrt(c2) + eps) * lr / c1``
    (epsilon added after the bias correction, as torch does).
    """
    target.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - beta_1))
    target.assign(v, ops.add(ops.multiply(v, beta_2), ops.multiply(ops.square(gradient), 1.0 - beta_2)))
    denom = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(correction2)), epsilon)
    target.assign_sub(variable, ops.multiply(ops.divide(m, denom), lr / correction1))


class _Variables:
    """``assign`` / ``assign_add`` / ``assign_sub`` on tf.Variables, for an update traced by tf.function."""

    @staticmethod
    def assign(variable, value) -> None:
        variable.assign(ops.cast(value, variable.dtype))

    @staticmethod
    def assign_add(variable, value) -> None:
        variable.assign_add(ops.cast(value, variable.dtype))

    @staticmethod
    def assign_sub(variable, value) -> None:
        variable.assign_sub(ops.cast(value, variable.dtype))


@functools.cache
def _compiled(rule, rank: int):
    """``rule`` on tf.Variables of one rank as one XLA function, cached per rule and rank.

    Dimensions are generalised (``reduce_retracing``), so one trace serves every weight of the rank
    (Keras' ops need the rank) and XLA compiles one kernel per weight shape; the Python floats (betas,
    epsilon) are constants of the trace.
    """
    import tensorflow as tf

    return tf.function(functools.partial(rule, _Variables), jit_compile=True, reduce_retracing=True)


def dense_gradient(gradient):
    """A TensorFlow IndexedSlices gradient (an embedding lookup's) as the dense tensor it stands for.

    Its rows repeat where a token occurs more than once, and the parts of a row add up.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            return tf.convert_to_tensor(gradient)
    return gradient


def fuses(optimizer) -> bool:
    """Whether ``optimizer``'s updates run compiled: TensorFlow's backend and ``fused`` on."""
    return bool(getattr(optimizer, "fused", False)) and keras.backend.backend() == "tensorflow"


def compiled_update(optimizer, rule, variable, *slots_and_scalars) -> bool:
    """Run ``rule(variable, *slots_and_scalars)`` compiled, if ``optimizer`` fuses (``fuses``).

    Returns False (nothing done) where it does not. Slots may be Keras variables; the gradient is dense.
    """
    if not fuses(optimizer):
        return False
    _run_compiled(rule, variable, *slots_and_scalars)
    return True


def _run_compiled(rule, variable, *slots_and_scalars) -> None:
    def raw(x):
        x = x.value if isinstance(x, keras.Variable) else x
        # A tf.distribute variable (a slot under MirroredStrategy): its copy on the device being
        # updated, as its own assign methods pick it; passed whole, each device's call updated them all.
        local = getattr(x, "_get_on_device_or_primary", None)
        return local() if local is not None else x

    _compiled(rule, len(variable.shape))(raw(variable), *(raw(x) for x in slots_and_scalars))


class _StepScalars:
    """The scalars that one ``apply`` shares across its weights (step size, bias corrections), by key.

    Keras computes them again for every weight: a dozen scalar ops each, thousands per step for
    ConvBERT-base, which TensorFlow's executor (outside XLA) runs one at a time. ``values`` is a dict
    while ``_backend_update_step`` runs (one apply, one trace), None otherwise. A plain object, so
    that Keras tracks neither it nor the tensors it holds.
    """

    def __init__(self) -> None:
        self.values: dict | None = None


class SharedStepScalars:
    """A mixin, before the Keras optimizer in the MRO: ``step_scalar`` computes each shared scalar once."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        holder = self.__dict__.get("_shared_step_scalars")
        if holder is None:
            holder = _StepScalars()
            object.__setattr__(self, "_shared_step_scalars", holder)
        outer, holder.values = holder.values, {}
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            holder.values = outer

    def step_scalar(self, key, make):
        """``make()``, computed once per ``apply`` for each ``key`` (e.g. the weight's dtype)."""
        holder = self.__dict__.get("_shared_step_scalars")
        if holder is None or holder.values is None:
            return make()
        if key not in holder.values:
            holder.values[key] = make()
        return holder.values[key]


def _adam_step(optimizer, gradient, variable, learning_rate) -> bool:
    """Keras' Adam step size and the compiled Keras rule (see ``keras_adam_update``)."""
    if not fuses(optimizer):
        return False
    dtype = variable.dtype

    def step_size():
        lr = ops.cast(learning_rate, dtype)
        local_step = ops.cast(optimizer.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(optimizer.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(optimizer.beta_2, dtype), local_step)
        return lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)

    alpha = optimizer.step_scalar(("adam", dtype), step_size)
    gradient = ops.cast(gradient, dtype)
    index = optimizer._get_variable_index(variable)
    v_hat = optimizer._velocity_hats[index] if optimizer.amsgrad else None
    _run_compiled(keras_adam_update, variable, optimizer._momentums[index], optimizer._velocities[index], v_hat,
                  gradient, alpha, float(optimizer.beta_1), float(optimizer.beta_2), float(optimizer.epsilon))
    return True


# --------------------------------------------------------------------------------------- the optimizers
class _CompiledAdam(SharedStepScalars):
    """The ``fused`` switch and the compiled ``update_step``, before Keras' Adam in the MRO."""

    def __init__(self, *args, fused: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)

    def get_config(self) -> dict:
        return {**super().get_config(), "fused": self.fused}

    def update_step(self, gradient, variable, learning_rate):
        gradient = dense_gradient(gradient)
        if not _adam_step(self, gradient, variable, learning_rate):
            super().update_step(gradient, variable, learning_rate)


@_register
class Adam(_CompiledAdam, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with each weight's update compiled into one kernel on TensorFlow.

    Same arguments and numbers as Keras' (module docstring); ``fused=False`` runs Keras' own ops.
    """


# "convbert>AdamW" names the pretraining loop's optimizer (``convbert_tf.train.AdamW``, PyTorch's rule).
@keras.saving.register_keras_serializable(package="convbert", name="KerasAdamW")
class AdamW(_CompiledAdam, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with each weight's Adam update compiled into one kernel on TensorFlow.

    Keras' decoupled weight decay (``w -= lr * wd * w``, before the update) is its own, unchanged.
    ``fused=False`` runs Keras' own ops.
    """
