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
  start and end cross-entropies.

Metrics are given ``sample_weight`` masks, so ignored labels do not count in the accuracy either.
"""

from __future__ import annotations

import keras
from keras import ops

from convbert_common import checks, heads


def tensor_info(x) -> checks.TensorInfo:
    """The shape (None where unknown until run time) and dtype name ``checks`` sees."""
    return checks.TensorInfo(tuple(x.shape), keras.backend.standardize_dtype(x.dtype))


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
            y = labels["labels"]
            if loss == "choice_cross_entropy":
                y = _flat1(y)
            return self.cross_entropy(y, outputs["logits"], sample_weight)
        if loss == "sequence":
            y, logits = labels["labels"], outputs["logits"]
            kind = self._problem_type(y)
            if kind == "single_label_classification":
                return self.cross_entropy(_flat1(y), logits, sample_weight)
            if kind == "regression":
                if self.num_labels == 1:
                    return self.mse(ops.reshape(ops.cast(y, "float32"), (-1, 1)), logits, sample_weight)
                return self.mse(ops.cast(y, "float32"), logits, sample_weight)
            return self.bce(ops.cast(y, "float32"), logits, sample_weight)
        if loss == "span_cross_entropy":
            start, end = self._span_targets(labels, outputs)
            return 0.5 * (
                self.cross_entropy(start, outputs["start_logits"], sample_weight)
                + self.cross_entropy(end, outputs["end_logits"], sample_weight)
            )
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
