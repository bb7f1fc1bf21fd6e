"""Task losses with Hugging Face's conventions, and the label checks that run before the model.

B batch, L sequence, V vocab, C number of labels / choices.

- masked LM and token classification: cross-entropy over positions, label ``-100`` ignored;
- sequence classification: ``problem_type`` regression (MSE), single-label (cross-entropy) or
  multi-label (BCE with logits), inferred as HF does when it is None: one label -> regression,
  integer labels -> single-label, otherwise multi-label;
- multiple choice: cross-entropy over the choices;
- question answering: start and end positions clamped to [0, L], positions equal to L ignored,
  the mean of the start and end cross-entropies.

Bad labels raise ``ValueError`` naming the expected shape or dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are scored in fp32 (log-sum-exp over a vocabulary needs the range)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _require_integer(labels: torch.Tensor, what: str) -> None:
    if labels.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{what} must be an integer tensor (class indices), got dtype {labels.dtype}")


def _require_float(labels: torch.Tensor, what: str) -> None:
    if not labels.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {labels.dtype}")


# ------------------------------------------------------------------------------- checks
def check_token_labels(labels: torch.Tensor, batch_shape: tuple[int, ...], what: str = "labels") -> None:
    """Per-token class labels: integer, the shape of ``input_ids`` (B, L)."""
    _require_integer(labels, what)
    if _shape(labels) != tuple(batch_shape):
        raise ValueError(f"{what} must have shape {tuple(batch_shape)} (that of input_ids), got {_shape(labels)}")


def resolve_problem_type(problem_type: str | None, num_labels: int, labels: torch.Tensor) -> str:
    """HF's rule when ``problem_type`` is None."""
    if problem_type is not None:
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES} or None, got {problem_type!r}")
        return problem_type
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.int64, torch.int32):
        return "single_label_classification"
    return "multi_label_classification"


def check_sequence_labels(labels: torch.Tensor, batch: int, num_labels: int, problem_type: str | None) -> str:
    """Validate sequence-classification labels; return the resolved problem type."""
    kind = resolve_problem_type(problem_type, num_labels, labels)
    shape = _shape(labels)
    if kind == "single_label_classification":
        _require_integer(labels, "labels (single_label_classification)")
        if shape not in ((batch,), (batch, 1)):
            raise ValueError(f"labels (single_label_classification) must have shape ({batch},), got {shape}")
    elif kind == "regression":
        _require_float(labels, "labels (regression)")
        allowed = ((batch,), (batch, 1)) if num_labels == 1 else ((batch, num_labels),)
        if shape not in allowed:
            raise ValueError(f"labels (regression) must have shape {allowed[0]}, got {shape}")
    else:
        _require_float(labels, "labels (multi_label_classification)")
        if shape != (batch, num_labels):
            raise ValueError(
                f"labels (multi_label_classification) must have shape ({batch}, {num_labels}), got {shape}"
            )
    return kind


def check_choice_labels(labels: torch.Tensor, batch: int) -> None:
    _require_integer(labels, "labels (multiple choice)")
    if _shape(labels) not in ((batch,), (batch, 1)):
        raise ValueError(f"labels (multiple choice) must have shape ({batch},), got {_shape(labels)}")


def check_span_positions(start_positions, end_positions, batch: int) -> None:
    if (start_positions is None) != (end_positions is None):
        raise ValueError("give both start_positions and end_positions, or neither")
    if start_positions is None:
        return
    for name, pos in (("start_positions", start_positions), ("end_positions", end_positions)):
        _require_integer(pos, name)
        if _shape(pos) not in ((batch,), (batch, 1)):
            raise ValueError(f"{name} must have shape ({batch},), got {_shape(pos)}")


# ------------------------------------------------------------------------------- losses
def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, L, V), labels (B, L) with -100 where no prediction is scored."""
    check_token_labels(labels, _shape(logits)[:-1])
    return F.cross_entropy(_upcast(logits.reshape(-1, logits.shape[-1])), labels.reshape(-1).long(),
                           ignore_index=IGNORE_INDEX)


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, L, C), labels (B, L) with -100 on ignored tokens."""
    return masked_lm_loss(logits, labels)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                                 problem_type: str | None = None) -> torch.Tensor:
    """logits (B, C); labels (B,) class ids, (B,) / (B, C) targets, or (B, C) multi-hot."""
    batch, num_labels = _shape(logits)
    kind = check_sequence_labels(labels, batch, num_labels, problem_type)
    logits = _upcast(logits)
    if kind == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.to(logits.dtype).squeeze())
        return F.mse_loss(logits, labels.to(logits.dtype))
    if kind == "single_label_classification":
        return F.cross_entropy(logits, labels.reshape(-1).long())
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def multiple_choice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, C) over the choices, labels (B,) the index of the right one."""
    check_choice_labels(labels, logits.shape[0])
    return F.cross_entropy(_upcast(logits), labels.reshape(-1).long())


def question_answering_loss(start_logits: torch.Tensor, end_logits: torch.Tensor,
                            start_positions: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
    """start/end logits (B, L); positions (B,) clamped to [0, L], where L is ignored."""
    check_span_positions(start_positions, end_positions, start_logits.shape[0])
    ignored = start_logits.shape[1]
    start = start_positions.reshape(-1).long().clamp(0, ignored)
    end = end_positions.reshape(-1).long().clamp(0, ignored)
    start_loss = F.cross_entropy(_upcast(start_logits), start, ignore_index=ignored)
    end_loss = F.cross_entropy(_upcast(end_logits), end, ignore_index=ignored)
    return (start_loss + end_loss) / 2
