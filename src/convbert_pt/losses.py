"""Task losses with Hugging Face's conventions; the label checks are ``convbert_common.checks``.

B batch, L sequence, V vocab, C number of labels / choices.

- masked LM and token classification: cross-entropy over positions, label ``-100`` ignored;
- sequence classification: ``problem_type`` regression (MSE), single-label (cross-entropy) or
  multi-label (BCE with logits), inferred as HF does when it is None (``checks``);
- multiple choice: cross-entropy over the choices;
- question answering: start and end positions clamped to [0, L], positions equal to L ignored,
  the mean of the start and end cross-entropies.

Bad labels raise ``ValueError`` naming the expected shape or dtype, or the out-of-range class and
what bounds it (``num_labels``, ``vocab_size``, ``num_choices``), with the same words as Keras.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convbert_common import checks, heads


def tensor_info(t: torch.Tensor) -> checks.TensorInfo:
    """The shape and dtype name ``checks`` sees."""
    return checks.TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."))


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are scored in fp32 (log-sum-exp over a vocabulary needs the range)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def check_labels(task: heads.Task, labels: dict, batch_shape: tuple, config) -> str | None:
    """``checks.check_labels`` on torch tensors; returns the resolved problem type (sequence classification)."""
    infos = {name: tensor_info(t) if t is not None else None for name, t in labels.items()}
    return checks.check_labels(task, infos, batch_shape, config.num_labels, config.problem_type)


def resolve_problem_type(problem_type: str | None, num_labels: int, labels: torch.Tensor) -> str:
    return checks.resolve_problem_type(problem_type, num_labels, tensor_info(labels))


def check_class_range(name: str, labels: torch.Tensor, upper: int, upper_name: str) -> None:
    """Class ids in [0, upper) or -100, before the loss reads them (``checks.check_label_range``).

    Eager: ValueError naming the label and ``upper_name``. Under ``torch.compile`` the values are
    not known while tracing: an asynchronous assert in the graph raises with the bounds instead of
    torch's bare "Target 5 is out of bounds" (or a silent wrong row).
    """
    if labels.numel() == 0:
        return
    scored = labels != heads.IGNORE_INDEX
    if torch.compiler.is_compiling():
        valid = ~scored | ((labels >= 0) & (labels < upper))
        torch._assert_async(valid.all(), checks.label_range_message(name, upper, upper_name))
        return
    values = labels[scored]
    if values.numel():
        checks.check_label_range(name, int(values.min()), int(values.max()), upper, upper_name)


# ------------------------------------------------------------------------------- losses
def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, classes_name: str = "vocab_size") -> torch.Tensor:
    """logits (B, L, V), labels (B, L) with -100 where no prediction is scored."""
    checks.check_labels(heads.MASKED_LM, {"labels": tensor_info(labels)}, tuple(logits.shape)[:-1], 1)
    check_class_range("labels", labels, logits.shape[-1], classes_name)
    return F.cross_entropy(_upcast(logits.reshape(-1, logits.shape[-1])), labels.reshape(-1).long(),
                           ignore_index=heads.IGNORE_INDEX)


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, L, C), labels (B, L) with -100 on ignored tokens."""
    return masked_lm_loss(logits, labels, "num_labels")


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                                 problem_type: str | None = None) -> torch.Tensor:
    """logits (B, C); labels (B,) class ids, (B,) / (B, C) targets, or (B, C) multi-hot."""
    batch, num_labels = tuple(logits.shape)
    kind = checks.check_labels(heads.SEQUENCE_CLASSIFICATION, {"labels": tensor_info(labels)}, (batch,),
                               num_labels, problem_type)
    logits = _upcast(logits)
    if kind == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.to(logits.dtype).squeeze())
        return F.mse_loss(logits, labels.to(logits.dtype))
    if kind == "single_label_classification":
        check_class_range("labels", labels, num_labels, "num_labels")
        return F.cross_entropy(logits, labels.reshape(-1).long())
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def multiple_choice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, C) over the choices, labels (B,) the index of the right one."""
    checks.check_labels(heads.MULTIPLE_CHOICE, {"labels": tensor_info(labels)}, tuple(logits.shape), 1)
    check_class_range("labels", labels, logits.shape[-1], "num_choices")
    return F.cross_entropy(_upcast(logits), labels.reshape(-1).long())


def question_answering_loss(start_logits: torch.Tensor, end_logits: torch.Tensor,
                            start_positions: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
    """start/end logits (B, L); positions (B,) clamped to [0, L], where L is ignored.

    Hugging Face's rule, exactly: each of the two losses is the mean over its positions that are
    not ignored, so a batch whose start (or end) positions are all ignored has a NaN loss there,
    as in Hugging Face (a training step refuses to apply it: ``convbert_pt.guards``).
    """
    checks.check_labels(heads.QUESTION_ANSWERING, {"start_positions": tensor_info(start_positions),
                                                   "end_positions": tensor_info(end_positions)},
                        tuple(start_logits.shape), 2)
    ignored = start_logits.shape[1]
    start = start_positions.reshape(-1).long().clamp(0, ignored)
    end = end_positions.reshape(-1).long().clamp(0, ignored)
    start_loss = F.cross_entropy(_upcast(start_logits), start, ignore_index=ignored)
    end_loss = F.cross_entropy(_upcast(end_logits), end, ignore_index=ignored)
    return (start_loss + end_loss) / 2
