"""Task losses and default metrics for ``model.fit``, with Hugging Face's label conventions.

B batch, L sequence, V vocab, C number of labels / choices.

Every loss is a ``keras.losses.Loss`` object, so under ``tf.distribute`` Keras scales it by the
number of replicas (a functional loss would report a loss num_replicas times too large):

- masked LM and token classification: cross-entropy over positions; label ``-100`` is ignored by
  ``SparseCategoricalCrossentropy(ignore_class=-100)``, which masks it out of the mean;
- sequence classification: ``problem_type`` regression (MSE), single-label (cross-entropy) or
  multi-label (binary cross-entropy on logits); when it is None it is inferred as HF does: one
  label -> regression, integer labels -> single-label, otherwise multi-label;
- multiple choice: cross-entropy over the choices;
- question answering: start and end positions clamped to [0, L], positions equal to L ignored,
  the mean of the start and end cross-entropies.

Metrics are given ``sample_weight`` masks, so ignored labels do not count in the accuracy either.
Bad labels raise ``ValueError`` naming the expected shape or dtype, before the model runs.
"""

from __future__ import annotations

import keras
from keras import ops

IGNORE_INDEX = -100
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

LABEL_NAMES = {
    "model": (),
    "masked_lm": ("labels",),
    "sequence_classification": ("labels",),
    "multiple_choice": ("labels",),
    "token_classification": ("labels",),
    "question_answering": ("start_positions", "end_positions"),
}


# ------------------------------------------------------------------------------- label checks
def _dtype(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def _is_int(x) -> bool:
    return "int" in _dtype(x)


def _is_float(x) -> bool:
    return "float" in _dtype(x)


def _shape(x) -> tuple:
    return tuple(x.shape)


def _fits(shape: tuple, allowed: tuple[tuple, ...]) -> bool:
    """Whether ``shape`` matches one of ``allowed``; None (unknown) dimensions match anything."""
    for want in allowed:
        if len(shape) == len(want) and all(a is None or b is None or a == b for a, b in zip(shape, want, strict=True)):
            return True
    return False


def check_token_labels(labels, batch_shape: tuple, what: str = "labels") -> None:
    """Per-token class labels: integer, the shape of ``input_ids`` (B, L)."""
    if not _is_int(labels):
        raise ValueError(f"{what} must be an integer tensor (class indices), got dtype {_dtype(labels)}")
    if not _fits(_shape(labels), (tuple(batch_shape),)):
        raise ValueError(f"{what} must have shape {tuple(batch_shape)} (that of input_ids), got {_shape(labels)}")


def resolve_problem_type(problem_type: str | None, num_labels: int, labels) -> str:
    """HF's rule when ``problem_type`` is None (decided from the static dtype of the labels)."""
    if problem_type is not None:
        return problem_type
    if num_labels == 1:
        return "regression"
    if _is_int(labels):
        return "single_label_classification"
    return "multi_label_classification"


def check_sequence_labels(labels, batch, num_labels: int, problem_type: str | None) -> str:
    kind = resolve_problem_type(problem_type, num_labels, labels)
    shape = _shape(labels)
    if kind == "single_label_classification":
        if not _is_int(labels):
            raise ValueError(f"labels (single_label_classification) must be integer class ids, got {_dtype(labels)}")
        if not _fits(shape, ((batch,), (batch, 1))):
            raise ValueError(f"labels (single_label_classification) must have shape ({batch},), got {shape}")
    elif kind == "regression":
        if not _is_float(labels):
            raise ValueError(f"labels (regression) must be a floating-point tensor, got dtype {_dtype(labels)}")
        allowed = ((batch,), (batch, 1)) if num_labels == 1 else ((batch, num_labels),)
        if not _fits(shape, allowed):
            raise ValueError(f"labels (regression) must have shape {allowed[0]}, got {shape}")
    else:
        if not _is_float(labels):
            raise ValueError(
                f"labels (multi_label_classification) must be a floating-point tensor, got dtype {_dtype(labels)}"
            )
        if not _fits(shape, ((batch, num_labels),)):
            raise ValueError(
                f"labels (multi_label_classification) must have shape ({batch}, {num_labels}), got {shape}"
            )
    return kind


def check_choice_labels(labels, batch) -> None:
    if not _is_int(labels):
        raise ValueError(f"labels (multiple choice) must be integer choice ids, got dtype {_dtype(labels)}")
    if not _fits(_shape(labels), ((batch,), (batch, 1))):
        raise ValueError(f"labels (multiple choice) must have shape ({batch},), got {_shape(labels)}")


def check_span_positions(start_positions, end_positions, batch) -> None:
    if (start_positions is None) != (end_positions is None):
        raise ValueError("give both start_positions and end_positions, or neither")
    if start_positions is None:
        return
    for name, pos in (("start_positions", start_positions), ("end_positions", end_positions)):
        if not _is_int(pos):
            raise ValueError(f"{name} must be integer token positions, got dtype {_dtype(pos)}")
        if not _fits(_shape(pos), ((batch,), (batch, 1))):
            raise ValueError(f"{name} must have shape ({batch},), got {_shape(pos)}")


# ------------------------------------------------------------------------------- the task losses
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
    """The loss of one head as ``keras.losses.Loss`` objects, its label checks and default metrics.

    ``labels`` is a dict keyed by HF's argument names (``labels``, or ``start_positions`` and
    ``end_positions``); ``outputs`` is the model's output dict.
    """

    def __init__(self, head: str, config):
        if head not in LABEL_NAMES:
            raise ValueError(f"unknown head {head!r}")
        self.head = head
        self.label_names = LABEL_NAMES[head]
        self.num_labels = config.num_labels
        self.problem_type = config.problem_type
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=IGNORE_INDEX, name="cross_entropy"
        )
        self.mse = keras.losses.MeanSquaredError(name="mse")
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True, name="binary_cross_entropy")

    # -------------------------------------------------------------- checks
    def check(self, labels: dict, batch_shape: tuple) -> None:
        """Validate label dtypes and shapes against the input's (B, L) or (B, C, L) shape."""
        h = self.head
        if h == "question_answering":
            check_span_positions(labels.get("start_positions"), labels.get("end_positions"), batch_shape[0])
        elif h in ("masked_lm", "token_classification"):
            check_token_labels(labels["labels"], batch_shape)
        elif h == "sequence_classification":
            check_sequence_labels(labels["labels"], batch_shape[0], self.num_labels, self.problem_type)
        elif h == "multiple_choice":
            check_choice_labels(labels["labels"], batch_shape[0])

    # -------------------------------------------------------------- loss
    def __call__(self, labels: dict, outputs: dict, sample_weight=None):
        h = self.head
        if h in ("masked_lm", "token_classification", "multiple_choice"):
            y = labels["labels"]
            if h == "multiple_choice":
                y = _flat1(y)
            return self.cross_entropy(y, outputs["logits"], sample_weight)
        if h == "sequence_classification":
            y, logits = labels["labels"], outputs["logits"]
            kind = resolve_problem_type(self.problem_type, self.num_labels, y)
            if kind == "single_label_classification":
                return self.cross_entropy(_flat1(y), logits, sample_weight)
            if kind == "regression":
                if self.num_labels == 1:
                    return self.mse(ops.reshape(ops.cast(y, "float32"), (-1, 1)), logits, sample_weight)
                return self.mse(ops.cast(y, "float32"), logits, sample_weight)
            return self.bce(ops.cast(y, "float32"), logits, sample_weight)
        if h == "question_answering":
            start, end = self._span_targets(labels, outputs)
            return 0.5 * (
                self.cross_entropy(start, outputs["start_logits"], sample_weight)
                + self.cross_entropy(end, outputs["end_logits"], sample_weight)
            )
        raise ValueError(f"{type(self).__name__}: the head {h!r} has no loss")

    @staticmethod
    def _span_targets(labels: dict, outputs: dict):
        """Positions clamped to [0, L]; L (outside the sequence) becomes the ignored class."""
        length = ops.shape(outputs["start_logits"])[-1]
        out = []
        for name in ("start_positions", "end_positions"):
            pos = ops.cast(_flat1(labels[name]), "int32")
            pos = ops.clip(pos, 0, length)
            out.append(ops.where(ops.equal(pos, length), IGNORE_INDEX, pos))
        return out

    def _assumed_problem_type(self) -> str:
        """The problem type before any labels are seen (HF's rule, integer labels assumed)."""
        return self.problem_type or ("regression" if self.num_labels == 1 else "single_label_classification")

    def expects_integer_labels(self) -> bool:
        if self.head == "sequence_classification":
            return self._assumed_problem_type() == "single_label_classification"
        return bool(self.label_names)

    # -------------------------------------------------------------- metrics
    def default_metrics(self):
        """Weighted metrics (they receive the ignore masks as sample weights)."""
        def accuracy(name="accuracy"):
            return keras.metrics.SparseCategoricalAccuracy(name=name)

        h = self.head
        if h == "question_answering":
            return {"start_logits": [accuracy()], "end_logits": [accuracy()]}
        if h == "sequence_classification":
            kind = self._assumed_problem_type()
            if kind == "regression":
                return [keras.metrics.MeanAbsoluteError(name="mae")]
            if kind == "multi_label_classification":
                return [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
        return [accuracy()]

    def metric_arguments(self, labels: dict, outputs: dict, sample_weight=None):
        """(y, y_pred, sample_weight) for the compiled metrics: ignored labels get weight 0."""
        h = self.head
        if h == "question_answering":
            start, end = self._span_targets(labels, outputs)
            ys, ws = {}, {}
            for key, y in (("start_logits", start), ("end_logits", end)):
                valid = ops.not_equal(y, IGNORE_INDEX)
                ys[key] = ops.where(valid, y, 0)
                ws[key] = _weights_like(y, valid, sample_weight)
            preds = {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}
            return ys, preds, ws
        y, logits = labels["labels"], outputs["logits"]
        if h == "sequence_classification":
            kind = resolve_problem_type(self.problem_type, self.num_labels, y)
            assumed = self._assumed_problem_type()
            if kind != assumed:
                raise ValueError(
                    f"the labels make this a {kind} problem but the default metrics were chosen for {assumed}; "
                    f"set config.problem_type={kind!r} before compile()"
                )
            if kind != "single_label_classification":
                y = ops.cast(y, "float32")
                if self.num_labels == 1:
                    y = ops.reshape(y, (-1, 1))
                return y, logits, sample_weight
            y = _flat1(y)
        elif h == "multiple_choice":
            y = _flat1(y)
        valid = ops.not_equal(y, IGNORE_INDEX)
        return ops.where(valid, y, 0), logits, _weights_like(y, valid, sample_weight)
