"""The Keras side of a task: ``compile`` defaults, the built-in loss and metrics, export.

``TaskModel`` is mixed into ``ConvBertPreTrainedModel`` ahead of ``keras.Model``. Each model class
declares its task (``task = heads.SEQUENCE_CLASSIFICATION``); the loss and the default metrics
follow from the task record (``losses.TaskLoss``), so ``compile(optimizer=...)`` + ``fit`` work
with labels in ``y`` or, Hugging Face style, inside ``x``.
"""

from __future__ import annotations

import contextlib

import keras

from convbert_common import heads
from convbert_tf import backend, losses


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


class TaskModel:
    """Task defaults for a ``keras.Model`` with a ``config`` and a ``task``."""

    task: heads.Task = heads.MODEL

    def _init_task(self, config) -> None:
        self._task_loss = losses.TaskLoss(self.task, config)
        self._uses_task_loss = False
        self._uses_default_metrics = False

    # -------------------------------------------------------------- compile
    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics=None, **kwargs):
        """Keras ``compile`` with task defaults.

        ``optimizer="auto"``: Adam(5e-5). ``loss="auto"``: the task's loss (``losses.TaskLoss``), labels
        taken from ``y`` or, HF-style, from ``labels`` / ``start_positions`` / ``end_positions`` in ``x``.
        ``metrics="auto"``: accuracy (or MAE for regression), masked like the loss. Any other value is
        passed to Keras unchanged (a user loss then sees the output dict as ``y_pred``).
        ``jit_compile=True`` also selects the XLA-friendly depthwise convolution (``set_depthwise_impl``).
        """
        if _is_auto(optimizer):
            optimizer = keras.optimizers.Adam(learning_rate=5e-5)
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
        # The model is built, so the optimizer can create its slots now: created inside the first
        # traced train step instead, they would make tf.function trace that step twice.
        if self.optimizer is not None and not self.optimizer.built:
            strategy = getattr(self, "distribute_strategy", None)  # TensorFlow's trainer only
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self.optimizer.build(self.trainable_variables)

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
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        labels, from_x = self._task_labels(x, y)
        if from_x and sample_weight is None and "loss" in y_pred:
            loss = y_pred["loss"]  # call() computed it with the same Loss objects
        else:
            self._task_loss.check(labels, self._batch_shape(x if isinstance(x, dict) else {"input_ids": x}))
            loss = self._task_loss(labels, y_pred, sample_weight)
        if self.losses:  # add_loss / regularisers: Keras adds them when no compiled loss is set
            loss = loss + super().compute_loss(x, y, y_pred, sample_weight, training=training)
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

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras ``export``; a SavedModel's serving signature defaults to ``serving_input_signature()``."""
        if format == "tf_saved_model":
            backend.require_tensorflow("export(format='tf_saved_model')")
            if input_signature is None:
                input_signature = [self.serving_input_signature()]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)
