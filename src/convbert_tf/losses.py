"""Task losses and default metrics for ``model.fit``, with Hugging Face's label conventions.

B batch, L sequence, V vocab, C number of labels / choices.

Which loss a head has is its task record's (``convbert_common.heads``); label validation is the
shared ``convbert_common.checks``, so both frameworks refuse bad labels with the same words.
Every loss is a ``keras.losses.Loss`` object, so under ``tf.distribute`` Keras scales it by the
number of replicas (a functional loss would report a loss num_replicas times too large):

- ``token_cross_entropy`` (masked LM, token classification): cross-entropy over positions; label
  -100 is ignored by ``SparseCategoricalCrossentropy(ignore_class=-100)``, which masks it out of
  the mean;
- ``sequence``: ``problem_type`` regression (MSE), single-label (cross-entropy) or multi-label
  (binary cross-entropy on logits); None is resolved as Hugging Face does (``checks``);
- ``choice_cross_entropy``: cross-entropy over the choices;
- ``span_cross_entropy``: start and end positions clamped to [0, L], L ignored, the mean of the
  start and end cross-entropies (NaN where all positions of one are ignored, as in Hugging Face).

Class labels out of range raise the shared message (``checks.check_label_range``) when their
values are known, an assert in a TensorFlow graph, and make the loss NaN under XLA (where the
training step then refuses to apply the update: ``tasks.TaskModel``).

Metrics are given ``sample_weight`` masks, so ignored labels do not count in the accuracy either.
"""

from __future__ import annotations

import keras
from keras import ops

from convbert_common import checks, heads


def tensor_info(x) -> checks.TensorInfo:
    """The shape (None where unknown until run time) and dtype name ``checks`` sees."""
    return checks.TensorInfo(tuple(x.shape), keras.backend.standardize_dtype(x.dtype))


def checked_classes(y, upper, name: str, upper_name: str):
    """Class labels in [0, upper) or -100; returns (labels, valid), ``valid`` None when checked already.

    Eager: ValueError naming the label (``checks.check_label_range``, PyTorch's words). TensorFlow
    graph: an assert with the bounds, ordered before the loss. XLA drops asserts and reads a wrong
    logit, so ``valid`` (a scalar) lets the caller make the loss NaN: a training step then refuses
    the update (``tasks.TaskModel.train_step``) instead of learning from a wrong label.
    """
    from convbert_tf.modeling import _concrete  # the one rule for "values known now" (imports this module)

    values = _concrete(y)
    if values is not None:
        scored = values[values != heads.IGNORE_INDEX]
        if scored.size:
            checks.check_label_range(name, int(scored.min()), int(scored.max()), int(upper), upper_name)
        return y, None
    valid = ops.all(ops.logical_or(ops.equal(y, heads.IGNORE_INDEX),
                                   ops.logical_and(ops.greater_equal(y, 0), ops.less(y, upper))))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        check = tf.debugging.Assert(valid, [checks.label_range_message(name, upper, upper_name) + "; largest:",
                                            tf.reduce_max(y), "smallest:", tf.reduce_min(y)])
        with tf.control_dependencies([check]):
            y = tf.identity(y)
    return y, valid


def _nan_unless(valid, loss):
    """``loss`` where ``valid`` (a scalar bool, or None: nothing to mask), else NaN."""
    if valid is None:
        return loss
    return ops.where(valid, loss, ops.cast(float("nan"), loss.dtype))


def _flat1(x):
    """(B,) or (B, 1) -> (B,)."""
    return ops.reshape(x, (-1,))


def _weights_like(labels, valid, sample_weight):
    """The 0/1 ``valid`` mask (labels' shape) times a per-example or per-position sample weight."""
    weight = ops.cast(valid, "float32")
    if sample_weight is None:
        return weight
    sample_weight = ops.cast(sample_weight, "float32")
    while len(sample_weight.shape) < len(weight.shape):
        sample_weight = ops.expand_dims(sample_weight, -1)
    return weight * sample_weight


def _classes(logits):
    """The number of classes of ``logits`` (..., C): static where known, else at run time."""
    return logits.shape[-1] if logits.shape[-1] is not None else ops.shape(logits)[-1]


class TaskLoss:
    """The loss of one task as ``keras.losses.Loss`` objects, its label checks and default metrics.

    ``labels`` is a dict keyed by HF's argument names (``labels``, or ``start_positions`` and
    ``end_positions``); ``outputs`` is the model's output dict.
    """

    def __init__(self, task: str | heads.Task, config):
        self.task = heads.get(task)
        self.label_names = self.task.label_names
        self.num_labels = config.num_labels
        self.problem_type = config.problem_type
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=heads.IGNORE_INDEX, name="cross_entropy"
        )
        self.mse = keras.losses.MeanSquaredError(name="mse")
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True, name="binary_cross_entropy")

    # -------------------------------------------------------------- checks
    def check(self, labels: dict, batch_shape: tuple) -> None:
        """Validate label dtypes and shapes against the input's (B, L) or (B, C, L) shape."""
        infos = {name: tensor_info(t) if t is not None else None for name, t in labels.items()}
        checks.check_labels(self.task, infos, batch_shape, self.num_labels, self.problem_type)

    def _problem_type(self, labels) -> str:
        return checks.resolve_problem_type(self.problem_type, self.num_labels, tensor_info(labels))

    # -------------------------------------------------------------- loss
    def __call__(self, labels: dict, outputs: dict, sample_weight=None):
        loss = self.task.loss
        if loss in ("token_cross_entropy", "choice_cross_entropy"):
            y, logits = labels["labels"], outputs["logits"]
            if loss == "choice_cross_entropy":
                y = _flat1(y)
            y, valid = checked_classes(y, _classes(logits), "labels", checks.label_bounds(self.task))
            return _nan_unless(valid, self.cross_entropy(y, logits, sample_weight))
        if loss == "sequence":
            y, logits = labels["labels"], outputs["logits"]
            kind = self._problem_type(y)
            if kind == "single_label_classification":
                y, valid = checked_classes(_flat1(y), self.num_labels, "labels", "num_labels")
                return _nan_unless(valid, self.cross_entropy(y, logits, sample_weight))
            if kind == "regression":
                if self.num_labels == 1:
                    return self.mse(ops.reshape(ops.cast(y, "float32"), (-1, 1)), logits, sample_weight)
                return self.mse(ops.cast(y, "float32"), logits, sample_weight)
            return self.bce(ops.cast(y, "float32"), logits, sample_weight)
        if loss == "span_cross_entropy":
            # Hugging Face's rule, exactly: each mean is over the positions not ignored, so where all
            # of them are ignored it is 0/0 = NaN, as there (Keras' own masked mean would give 0).
            start, end = self._span_targets(labels, outputs)
            start_loss = self.cross_entropy(start, outputs["start_logits"], sample_weight)
            end_loss = self.cross_entropy(end, outputs["end_logits"], sample_weight)
            return 0.5 * (_nan_unless(ops.any(ops.not_equal(start, heads.IGNORE_INDEX)), start_loss)
                          + _nan_unless(ops.any(ops.not_equal(end, heads.IGNORE_INDEX)), end_loss))
        raise ValueError(f"{self.task.class_name} has no task loss: pass loss=... to compile(), or use a head class")

    @staticmethod
    def _span_targets(labels: dict, outputs: dict):
        """Positions clamped to [0, L]; L (outside the sequence) becomes the ignored class."""
        length = ops.shape(outputs["start_logits"])[-1]
        out = []
        for name in ("start_positions", "end_positions"):
            pos = ops.cast(_flat1(labels[name]), "int32")
            pos = ops.clip(pos, 0, length)
            out.append(ops.where(ops.equal(pos, length), heads.IGNORE_INDEX, pos))
        return out

    def _assumed_problem_type(self) -> str:
        return checks.assumed_problem_type(self.problem_type, self.num_labels)

    def expects_integer_labels(self) -> bool:
        if self.task.label_kind == "sequence":
            return self._assumed_problem_type() == "single_label_classification"
        return bool(self.label_names)

    # -------------------------------------------------------------- metrics
    def default_metrics(self):
        """Weighted metrics (they receive the ignore masks as sample weights)."""
        def accuracy(name="accuracy"):
            return keras.metrics.SparseCategoricalAccuracy(name=name)

        kind = self.task.label_kind
        if self.task.loss == "replaced_token_detection":
            return None  # the pretraining model keeps its own (convbert_tf.pretraining.METRIC_NAMES)
        if kind == "span":
            return {key: [accuracy()] for key in self.task.output_keys}
        if kind == "sequence":
            problem = self._assumed_problem_type()
            if problem == "regression":
                return [keras.metrics.MeanAbsoluteError(name="mae")]
            if problem == "multi_label_classification":
                return [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
        return [accuracy()]

    def metric_arguments(self, labels: dict, outputs: dict, sample_weight=None):
        """(y, y_pred, sample_weight) for the compiled metrics: ignored labels get weight 0."""
        kind = self.task.label_kind
        if kind == "span":
            start, end = self._span_targets(labels, outputs)
            ys, ws = {}, {}
            for key, y in zip(self.task.output_keys, (start, end), strict=True):
                valid = ops.not_equal(y, heads.IGNORE_INDEX)
                ys[key] = ops.where(valid, y, 0)
                ws[key] = _weights_like(y, valid, sample_weight)
            return ys, {key: outputs[key] for key in self.task.output_keys}, ws
        y, logits = labels["labels"], outputs["logits"]
        if kind == "sequence":
            problem = self._problem_type(y)
            assumed = self._assumed_problem_type()
            if problem != assumed:
                raise ValueError(
                    f"the labels make this a {problem} problem but the default metrics were chosen for {assumed}; "
                    f"set config.problem_type={problem!r} before compile()"
                )
            if problem != "single_label_classification":
                y = ops.cast(y, "float32")
                if self.num_labels == 1:
                    y = ops.reshape(y, (-1, 1))
                return y, logits, sample_weight
            y = _flat1(y)
        elif kind == "choice":
            y = _flat1(y)
        valid = ops.not_equal(y, heads.IGNORE_INDEX)
        return ops.where(valid, y, 0), logits, _weights_like(y, valid, sample_weight)
