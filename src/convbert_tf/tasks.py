"""The Keras side of a task: ``compile`` defaults, the built-in loss and metrics, export.

``TaskModel`` is mixed into ``ConvBertPreTrainedModel`` ahead of ``keras.Model``. Each model class
declares its task (``task = heads.SEQUENCE_CLASSIFICATION``); the loss and the default metrics
follow from the task record (``losses.TaskLoss``), so ``compile(optimizer=...)`` + ``fit`` work
with labels in ``y`` or, Hugging Face style, inside ``x``.

A bad batch never destroys the model: on the TensorFlow backend every training step checks its
loss and gradients and applies the update only when all are finite (``compile(...,
guard_non_finite=False)`` turns it off). Without XLA an out-of-range id or label raises before
that; under XLA (``jit_compile=True``) asserts are dropped and such a batch gives NaN, so the
step is refused, later steps are too, and ``fit`` stops with ``checks.NonFiniteStepError``
naming the step and what was not finite (the weights are those of the step before).
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import keras

from convbert_common import checks, heads
from convbert_tf import backend, losses, optimizers

# XLA:CPU (TensorFlow 2.21) lowers a bf16 dot as convert -> f32 dot -> convert (its optimised HLO).
XLA_BF16_CPU_MESSAGE = (
    "compile(jit_compile=True) with a mixed_bfloat16 policy on a CPU: XLA computes bfloat16 matmuls in "
    "float32 (it converts the operands), so it is no faster than float32; without XLA (jit_compile='auto' "
    "or False) TensorFlow's oneDNN kernels multiply in bfloat16"
)


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def integers_from_a_distributed_build(name: str, x):
    """``x`` itself, unless it is the float spec Keras builds a distributed model with: then int32.

    Under a ``tf.distribute`` strategy, Keras builds the compiled metrics from a batch averaged over
    the replicas (``strategy.reduce("MEAN")``), which turns integer ids and labels into floats. That
    happens only while tracing a graph inside a strategy, where no value is known; the cast carries
    an assert that the values are whole numbers, so real float ids still fail when the graph runs.
    """
    if keras.backend.backend() != "tensorflow" or "float" not in keras.backend.standardize_dtype(x.dtype):
        return x
    import tensorflow as tf

    if tf.executing_eagerly() or not tf.distribute.has_strategy():
        return x
    whole = tf.debugging.assert_equal(x, tf.math.floor(x), message=f"{name} must hold integer ids")
    with tf.control_dependencies([whole]):
        return tf.cast(x, tf.int32)


# The guard's record of the first refused step: (step, loss not finite, first bad gradient, bad gradients).
_CLEAR = (-1, 0, -1, 0)


class _StepGuard:
    """What the non-finite guard keeps between the traced step and the Python side of ``fit``.

    A plain object, so that Keras tracks neither it nor its variable (the model's weights stay
    exactly those of the weight table).
    """

    def __init__(self) -> None:
        self.active = False
        self.state = None  # tf.Variable (4,) int64: _CLEAR, or the record of the first refused step
        # The losses of the train steps being traced, by thread: tf.distribute traces one step per
        # replica, each in a thread of its own.
        self.losses: dict[int, object] = {}
        self.tracing = 0  # train steps being traced right now
        self.paths: list[str] = []  # the variables the gradients belong to, in order

    @property
    def loss(self):
        return self.losses.get(threading.get_ident())

    @loss.setter
    def loss(self, value) -> None:
        if value is None:
            self.losses.pop(threading.get_ident(), None)
        else:
            self.losses[threading.get_ident()] = value

    def create_state(self, strategy) -> None:
        if self.state is None:
            import tensorflow as tf

            with strategy.scope():
                self.state = tf.Variable(_CLEAR, dtype=tf.int64, trainable=False, name="non_finite_step",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def clear(self) -> None:
        if self.state is not None:
            self.state.assign(_CLEAR)

    def check(self, where: str = "") -> None:
        """Raise NonFiniteStepError if a step was refused since the last ``clear``."""
        if self.state is None:
            return
        step, loss_bad, first, count = (int(v) for v in self.state.numpy())
        if step < 0:
            return
        bad = [self.paths[first]] if 0 <= first < len(self.paths) else []
        raise checks.NonFiniteStepError(checks.non_finite_step_message(
            step, False if loss_bad else (None if count else True), bad, count, where))


def _apply_if_finite(guard: _StepGuard, optimizer, apply, grads, trainable_variables=None):
    """``apply(grads, variables)`` only if the loss and every gradient are finite and no step was refused."""
    import tensorflow as tf

    grads = list(grads)
    variables = list(trainable_variables) if trainable_variables is not None else optimizer._trainable_variables
    guard.paths = [v.path for v in variables]
    present = [i for i, g in enumerate(grads) if g is not None]
    # A loss-scale optimizer expects (and skips) overflowing scaled gradients: there only the loss counts.
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    grad_ok = tf.stack([tf.reduce_all(tf.math.is_finite(grads[i])) for i in present]) \
        if present and not scaled else tf.ones([0], tf.bool)
    loss_ok = tf.reduce_all(tf.math.is_finite(guard.loss)) if guard.loss is not None else tf.constant(True)
    ok = tf.logical_and(loss_ok, tf.reduce_all(grad_ok))
    replicated = backend.replicas_in_sync() > 1
    if replicated:
        # Every replica must take the same branch: refuse if any replica saw a non-finite value.
        refused = tf.distribute.get_replica_context().all_reduce("sum", tf.cast(tf.logical_not(ok), tf.int32))
        ok = tf.equal(refused, 0)
    state = guard.state
    first_of = tf.constant(present or [-1], tf.int64)

    def decide(ok, grad_ok, loss_ok, update) -> None:
        clear = tf.less(state[0], 0)

        def apply_it():
            update()
            return tf.constant(True)

        def refuse():
            bad = tf.logical_not(grad_ok)
            first = tf.where(tf.reduce_any(bad), tf.gather(first_of, tf.argmax(tf.cast(bad, tf.int32))),
                             tf.constant(-1, tf.int64)) if present and not scaled else tf.constant(-1, tf.int64)
            record = tf.stack([tf.cast(optimizer.iterations, tf.int64) + 1,
                               tf.cast(tf.logical_not(loss_ok), tf.int64), first,
                               tf.reduce_sum(tf.cast(bad, tf.int64))])
            state.assign(tf.where(clear, record, state))
            return tf.constant(False)

        tf.cond(tf.logical_and(ok, clear), apply_it, refuse)

    if not replicated or tf.__internal__.distribute.strategy_supports_no_merge_call():
        decide(ok, grad_ok, loss_ok, lambda: apply(grads, trainable_variables))
        return

    # The optimizer's update synchronises the replicas (a merge_call), which TensorFlow does not
    # allow inside a cond in a replica context: decide once, in the cross-replica context, as
    # Keras' LossScaleOptimizer does.
    def cross_replica(distribution, ok, grad_ok, loss_ok, grads):
        first = distribution.experimental_local_results
        decide(first(ok)[0], first(grad_ok)[0], first(loss_ok)[0],
               lambda: distribution.extended.call_for_each_replica(apply, args=(grads, trainable_variables)))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok, grad_ok, loss_ok, grads))


class _GuardedApply:
    """``optimizer.apply`` while our train step runs: the update only if it is finite (else as it was)."""

    def __init__(self, guard: _StepGuard, optimizer, apply):
        self._guard, self._optimizer, self._apply = guard, optimizer, apply

    def __call__(self, grads, trainable_variables=None):
        if not (self._guard.active and self._guard.tracing):
            return self._apply(grads, trainable_variables)
        return _apply_if_finite(self._guard, self._optimizer, self._apply, grads, trainable_variables)


class TaskModel:
    """Task defaults for a ``keras.Model`` with a ``config`` and a ``task``."""

    task: heads.Task = heads.MODEL

    def _init_task(self, config) -> None:
        self._task_loss = losses.TaskLoss(self.task, config)
        self._uses_task_loss = False
        self._uses_default_metrics = False
        self._step_guard = _StepGuard()

    # -------------------------------------------------------------- compile
    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics=None, *,
                guard_non_finite: bool = True, **kwargs):
        """Keras ``compile`` with task defaults.

        ``optimizer="auto"``: Adam(5e-5): on TensorFlow ``convbert_tf.optimizers.Adam`` (Keras' Adam, each
        weight's update one compiled kernel), elsewhere ``keras.optimizers.Adam`` (inside ``jax.jit`` on
        JAX; ``torch._foreach`` ops on PyTorch). ``loss="auto"``: the task's loss (``losses.TaskLoss``), labels
        taken from ``y`` or, HF-style, from ``labels`` / ``start_positions`` / ``end_positions`` in ``x``.
        ``metrics="auto"``: accuracy (or MAE for regression), masked like the loss. Any other value is
        passed to Keras unchanged (a user loss then sees the output dict as ``y_pred``).
        ``jit_compile="auto"`` (the default) is Keras' rule: XLA only where a GPU is visible. On a CPU
        the step then runs TensorFlow's own kernels, oneDNN's on x86 (matmuls, einsums, convolutions,
        softmaxes): XLA's step was not reliably faster there, and XLA compiles once per input shape and
        drops the id-range asserts (``bench/RESULTS.md``, "Keras fit step").
        ``jit_compile=True`` also selects the XLA-friendly depthwise convolution (``set_depthwise_impl``).
        ``guard_non_finite`` (TensorFlow backend): refuse the update of a step whose loss or gradients
        are not finite and stop ``fit`` with ``NonFiniteStepError`` (see the module docstring).
        """
        if _is_auto(optimizer):
            adam = optimizers.Adam if backend.name() == "tensorflow" else keras.optimizers.Adam
            optimizer = adam(learning_rate=5e-5)
        if _is_auto(loss) and not self.task.has_loss:
            raise ValueError(f"{self.task.class_name} has no task loss: pass loss=... to compile(), or use a head "
                             "class")
        self._uses_task_loss = _is_auto(loss)
        self._uses_default_metrics = _is_auto(metrics) and self._uses_task_loss
        if self._uses_task_loss:
            loss = None
        if _is_auto(metrics):
            metrics = None
            if self._uses_default_metrics and weighted_metrics is None:
                weighted_metrics = self._task_loss.default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs)
        # Keras resolves jit_compile="auto" (XLA where a GPU is visible and the backend supports it).
        self.set_depthwise_impl("shift" if self.jit_compile else "auto")
        if self.jit_compile and backend.name() == "tensorflow" and self.dtype_policy.compute_dtype == "bfloat16" \
                and backend.cpu_only():
            warnings.warn(XLA_BF16_CPU_MESSAGE, RuntimeWarning, stacklevel=2)
        # The model is built, so the optimizer can create its slots now: created inside the first
        # traced train step instead, they would make tf.function trace that step twice.
        if self.optimizer is not None and not self.optimizer.built:
            strategy = getattr(self, "distribute_strategy", None)  # TensorFlow's trainer only
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self.optimizer.build(self.trainable_variables)
        self._step_guard.active = bool(guard_non_finite) and keras.backend.backend() == "tensorflow" \
            and self.optimizer is not None
        if self._step_guard.active:
            self._step_guard.create_state(self.distribute_strategy)

    # -------------------------------------------------------------- the non-finite guard
    def train_step(self, *args):
        # TensorFlow's trainer calls train_step(data); JAX's train_step(state, data): pass both through.
        guard = self._step_guard
        if not guard.active:
            return self._train_step(*args)
        optimizer = self.optimizer
        if not isinstance(optimizer.__dict__.get("apply"), _GuardedApply):
            optimizer.apply = _GuardedApply(guard, optimizer, optimizer.apply)
        guard.tracing += 1
        try:
            return self._train_step(*args)
        finally:
            guard.tracing -= 1
            guard.loss = None

    def _train_step(self, *args):
        """The backend's training step, inside the guard; a model may take its own (micro-batches)."""
        return super().train_step(*args)

    def fit(self, *args, **kwargs):
        if not self._step_guard.active:
            return super().fit(*args, **kwargs)
        if len(args) > 5:  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
            args = list(args)
            args[5] = [*(args[5] or []), _StopOnNonFinite(self._step_guard)]
        else:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _StopOnNonFinite(self._step_guard)]
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        if not self._step_guard.active:
            return super().train_on_batch(*args, **kwargs)
        self._step_guard.clear()
        result = super().train_on_batch(*args, **kwargs)
        self._step_guard.check()
        return result

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self._uses_task_loss:
            config = dict(config)
            config["loss"] = "auto"
            if self._uses_default_metrics:
                config["metrics"] = "auto"
                config["weighted_metrics"] = None
        return config

    def compile_from_config(self, config) -> None:
        """Re-compile after ``keras.saving.load_model`` (the compile config holds "auto" for the defaults)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)  # also builds the optimizer, so that its saved state can be loaded

    # -------------------------------------------------------------- loss and metrics
    def _labels_for_loss(self, x, y) -> tuple[dict, bool]:
        """The labels by HF name, from ``y`` or from ``x``; and whether they came from ``x``."""
        names = self.task.label_names
        if y is not None:
            if isinstance(y, dict):
                missing = [n for n in names if n not in y]
                if missing:
                    raise ValueError(f"y is a dict without {missing}; expected the keys {list(names)}")
                return {n: y[n] for n in names}, False
            if len(names) == 2:
                if not isinstance(y, (list, tuple)) or len(y) != 2:
                    raise ValueError(f"{self.task.class_name} needs y = ({', '.join(names)}) or a dict")
                return dict(zip(names, y, strict=True)), False
            return {names[0]: y}, False
        if isinstance(x, dict) and all(n in x for n in names):
            return {n: x[n] for n in names}, True
        raise ValueError(
            f"{type(self).__name__}: no labels; pass y to fit/evaluate, or put {list(names)} in the input dict"
        )

    def _integer_arguments(self) -> tuple[str, ...]:
        """The arguments that hold integers: ids, and the labels unless the task's are real-valued."""
        labels = self.task.label_names if self._task_loss.expects_integer_labels() else ()
        return ("input_ids", "token_type_ids", "position_ids", *labels)

    def _task_labels(self, x, y) -> tuple[dict, bool]:
        labels, from_x = self._labels_for_loss(x, y)
        integers = self._integer_arguments()
        return {k: integers_from_a_distributed_build(k, v) if k in integers else v for k, v in labels.items()}, from_x

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not self._uses_task_loss:
            loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
            self._step_guard.loss = loss
            return loss
        labels, from_x = self._task_labels(x, y)
        if from_x and sample_weight is None and "loss" in y_pred:
            loss = y_pred["loss"]  # call() computed it with the same Loss objects
        else:
            self._task_loss.check(labels, self._batch_shape(x if isinstance(x, dict) else {"input_ids": x}))
            loss = self._task_loss(labels, y_pred, sample_weight)
        if self.losses:  # add_loss / regularisers: Keras adds them when no compiled loss is set
            loss = loss + super().compute_loss(x, y, y_pred, sample_weight, training=training)
        self._step_guard.loss = loss
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self._uses_task_loss:
            labels, _ = self._task_labels(x, y)
            y, y_pred, sample_weight = self._task_loss.metric_arguments(labels, y_pred, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # -------------------------------------------------------------- export
    def serving_input_signature(self) -> dict:
        """Named int32 specs of ``input_ids``, ``attention_mask`` and ``token_type_ids`` (B, L) / (B, C, L)."""
        backend.require_tensorflow("serving_input_signature (a SavedModel's signature)")
        import tensorflow as tf

        shape = (None,) * self.task.input_rank
        return {name: tf.TensorSpec(shape, tf.int32, name=name)
                for name in ("input_ids", "attention_mask", "token_type_ids")}

    @property
    def _default_save_signature(self):
        # Keras' hook for tf.saved_model.save, which traces it for every tracked model: Keras builds it
        # from the recorded build shapes in the compute dtype (float "ids"); a model of token ids
        # serves int32 ids, as serving_input_signature() says.
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        @tf.function(input_signature=[self.serving_input_signature()])
        def serving_default(inputs):
            return self(inputs, training=False)

        return serving_default

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras ``export``; a SavedModel's serving signature defaults to ``serving_input_signature()``."""
        if format == "tf_saved_model":
            backend.require_tensorflow("export(format='tf_saved_model')")
            if input_signature is None:
                input_signature = [self.serving_input_signature()]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stops ``fit`` with NonFiniteStepError after the first refused step (see ``_apply_if_finite``)."""

    def __init__(self, guard: _StepGuard):
        super().__init__()
        self._guard = guard
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._guard.clear()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._guard.check(f" (epoch {self._epoch + 1}, batch {batch + 1})")
