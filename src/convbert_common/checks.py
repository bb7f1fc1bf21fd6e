"""What both frameworks check about model inputs and labels, with one message for each problem.

The checks see tensors only as ``TensorInfo`` (a shape, where ``None`` is a dimension unknown
until run time, and a dtype name), so PyTorch and Keras, eager or traced, raise the same
``ValueError`` with the same words. Value checks (id ranges) take the smallest and largest value;
the frameworks compute them where the values are known.

B batch, C choices, L sequence, E embedding size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from convbert_common import heads

# Index tensors (ids, positions) are gathered with: PyTorch's embedding takes these two only.
INDEX_DTYPES = ("int32", "int64")


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int | None, ...]
    dtype: str  # "int64", "float32", "bfloat16", "bool", "uint8", "complex64", ...

    @property
    def kind(self) -> str:
        return dtype_kind(self.dtype)


def dtype_kind(dtype: str) -> str:
    """"int", "uint", "float", "bool" or "complex" for a dtype name (``torch.`` prefix allowed)."""
    name = str(dtype).removeprefix("torch.")
    for kind in ("complex", "bool", "uint", "int"):
        if name.startswith(kind):
            return kind
    if name.startswith(("float", "bfloat", "half", "double")):
        return "float"
    return name


def check_dropout_rate(what: str, value) -> None:
    """A dropout probability: a real number in [0, 1) (1 would drop everything and divide by zero)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")


def _fits(shape: tuple, want: tuple) -> bool:
    """Whether ``shape`` matches ``want``; None (unknown) dimensions match anything."""
    return len(shape) == len(want) and all(a is None or b is None or a == b for a, b in zip(shape, want, strict=True))


def _fits_any(shape: tuple, allowed: tuple[tuple, ...]) -> bool:
    return any(_fits(shape, want) for want in allowed)


def _index(info: TensorInfo, name: str) -> None:
    if info.dtype.removeprefix("torch.") not in INDEX_DTYPES:
        raise ValueError(f"{name} must be an integer tensor (int32 or int64), got dtype {info.dtype}")


# ----------------------------------------------------------------------------------- inputs
def check_inputs(config, input_ids: TensorInfo | None, attention_mask: TensorInfo | None,
                 token_type_ids: TensorInfo | None, position_ids: TensorInfo | None,
                 inputs_embeds: TensorInfo | None) -> tuple[int | None, int | None]:
    """Shapes and dtypes of the backbone's inputs; returns (B, L), None where unknown until run time."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds (got "
                         + ("both" if input_ids is not None else "neither") + ")")
    if input_ids is not None:
        if len(input_ids.shape) != 2:
            raise ValueError(f"input_ids must have shape (batch, sequence), got {input_ids.shape}")
        _index(input_ids, "input_ids")
        shape = input_ids.shape
        what = "input_ids"
    else:
        emb = inputs_embeds.shape
        if len(emb) != 3 or emb[-1] not in (None, config.embedding_size):
            raise ValueError(
                f"inputs_embeds must have shape (batch, sequence, embedding_size={config.embedding_size}), got {emb}"
            )
        if inputs_embeds.kind != "float":
            raise ValueError(f"inputs_embeds must be a floating-point tensor, got dtype {inputs_embeds.dtype}")
        shape = emb[:2]
        what = "inputs_embeds"
    batch, length = shape
    if batch == 0 or length == 0:
        raise ValueError(f"{what} is empty (shape {tuple(shape)}): a batch needs at least one sequence of at "
                         "least one token")
    if length is not None and length > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {length} is longer than max_position_embeddings ({config.max_position_embeddings})"
        )
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and not _fits(t.shape, shape):
            raise ValueError(f"{name} must have the shape of the input, {tuple(shape)}; got {t.shape}")
    if attention_mask is not None and attention_mask.kind == "complex":
        raise ValueError(f"attention_mask must be a 0/1 integer, bool or float tensor, got dtype "
                         f"{attention_mask.dtype}")
    if token_type_ids is not None:
        _index(token_type_ids, "token_type_ids")
    if position_ids is not None:
        if not _fits_any(position_ids.shape, (shape, (1, length), (length,))):
            raise ValueError(f"position_ids must have shape {tuple(shape)}, (1, {length}) or ({length},), "
                             f"got {position_ids.shape}")
        _index(position_ids, "position_ids")
    return batch, length


def id_range_message(name: str, upper: int, upper_name: str) -> str:
    """The message of an out-of-range id where only the bounds are known (inside a graph)."""
    return f"{name} must hold ids in [0, {upper_name}={upper})"


def check_id_range(name: str, low: int, high: int, upper: int, upper_name: str) -> None:
    """Ids must lie in [0, upper): a lookup out of range reads a wrong row, or zeros, silently."""
    if high >= upper:
        raise ValueError(f"{name} contains the id {high}, which is >= {upper_name} ({upper})")
    if low < 0:
        raise ValueError(f"{name} contains the negative id {low}; ids must be in [0, {upper_name}={upper})")


def check_head_mask(shape: tuple, layers: int, num_heads: int) -> bool:
    """Whether a valid head mask is per layer (True: (layers, N')) or shared (False: (N',))."""
    if tuple(shape) == (num_heads,):
        return False
    if tuple(shape) == (layers, num_heads):
        return True
    raise ValueError(
        f"head_mask must have shape ({num_heads},) or ({layers}, {num_heads}) (num_attention_heads // head_ratio "
        f"= {num_heads} heads per layer), got {tuple(shape)}"
    )


def check_choice_inputs(lead: tuple, from_embeddings: bool, attention_mask: TensorInfo | None,
                        token_type_ids: TensorInfo | None) -> None:
    """Multiple-choice inputs are (B, C, L) (embeddings (B, C, L, E)), masks and types alike."""
    if len(lead) != 3:
        raise ValueError("multiple choice inputs must have shape (batch, num_choices, sequence)"
                         + (", embedding" if from_embeddings else "") + f", got {tuple(lead)}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and not _fits(t.shape, lead):
            raise ValueError(f"{name} must have the shape of the input, {tuple(lead)}; got {t.shape}")


# ----------------------------------------------------------------------------------- labels
def _integer(info: TensorInfo, what: str) -> None:
    if info.kind not in ("int", "uint"):
        raise ValueError(f"{what} must be an integer tensor (class indices), got dtype {info.dtype}")


def _floating(info: TensorInfo, what: str) -> None:
    if info.kind != "float":
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {info.dtype}")


def resolve_problem_type(problem_type: str | None, num_labels: int, labels: TensorInfo) -> str:
    """Hugging Face's rule when ``problem_type`` is None: one label is regression, integer labels are
    single-label classification, anything else multi-label."""
    if problem_type is not None:
        if problem_type not in heads.PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {heads.PROBLEM_TYPES} or None, got {problem_type!r}")
        return problem_type
    if num_labels == 1:
        return "regression"
    if labels.kind in ("int", "uint"):
        return "single_label_classification"
    return "multi_label_classification"


def assumed_problem_type(problem_type: str | None, num_labels: int) -> str:
    """The problem type before any labels are seen (Hugging Face's rule, integer labels assumed)."""
    return problem_type or ("regression" if num_labels == 1 else "single_label_classification")


def _per_example(info: TensorInfo, what: str, batch) -> None:
    if not _fits_any(info.shape, ((batch,), (batch, 1))):
        raise ValueError(f"{what} must have shape ({batch},), got {info.shape}")


def check_labels(task: str | heads.Task, labels: Mapping[str, TensorInfo | None], batch_shape: tuple,
                 num_labels: int, problem_type: str | None = None) -> str | None:
    """Validate the label arguments of ``task`` against the input's (B, L) or (B, C, L) shape.

    ``labels`` maps the task's label names to their info (None: not given). Returns the resolved
    problem type of sequence classification, else None.
    """
    task = heads.get(task)
    given = {k: v for k, v in labels.items() if v is not None}
    unknown = sorted(set(given) - set(task.label_names))
    if unknown:
        raise ValueError(f"{task.class_name} takes no label argument {unknown}; its labels are "
                         f"{list(task.label_names)}")
    batch_shape = tuple(batch_shape)
    batch = batch_shape[0] if batch_shape else None
    kind = task.label_kind
    if kind == "span":
        start, end = given.get("start_positions"), given.get("end_positions")
        if (start is None) != (end is None):
            raise ValueError("give both start_positions and end_positions, or neither")
        for name, pos in (("start_positions", start), ("end_positions", end)):
            if pos is not None:
                _integer(pos, name)
                _per_example(pos, name, batch)
        return None
    y = given.get("labels")
    if y is None:
        return None
    if kind == "token":
        _integer(y, "labels")
        if not _fits(y.shape, batch_shape):
            raise ValueError(f"labels must have shape {batch_shape} (that of input_ids), got {y.shape}")
    elif kind == "choice":
        _integer(y, "labels (multiple choice)")
        _per_example(y, "labels (multiple choice)", batch)
    elif kind == "sequence":
        resolved = resolve_problem_type(problem_type, num_labels, y)
        what = f"labels ({resolved})"
        if resolved == "single_label_classification":
            _integer(y, what)
            _per_example(y, what, batch)
        elif resolved == "regression":
            _floating(y, what)
            allowed = ((batch,), (batch, 1)) if num_labels == 1 else ((batch, num_labels),)
            if not _fits_any(y.shape, allowed):
                raise ValueError(f"{what} must have shape {allowed[0]}, got {y.shape}")
        else:
            _floating(y, what)
            if not _fits(y.shape, (batch, num_labels)):
                raise ValueError(f"{what} must have shape ({batch}, {num_labels}), got {y.shape}")
        return resolved
    else:
        raise ValueError(f"{task.class_name} has no labels")
    return None


def check_label_range(name: str, low: int, high: int, upper: int, upper_name: str) -> None:
    """Class ids in [0, upper) or -100 (ignored): the loss would read a wrong logit otherwise.

    ``low`` and ``high`` are the smallest and largest labels other than -100.
    """
    if high >= upper:
        raise ValueError(f"{name} contains the class {high}, which is >= {upper_name} ({upper})")
    if low < 0:
        raise ValueError(f"{name} contains {low}; class ids must be in [0, {upper_name}={upper}) or "
                         f"{heads.IGNORE_INDEX} (ignored)")


def label_range_message(name: str, upper: int | str, upper_name: str) -> str:
    """The message of an out-of-range class label where only the bounds are known (inside a graph)."""
    return (f"{name} must hold class ids in [0, {upper_name}={upper}) or {heads.IGNORE_INDEX} (ignored); "
            "a label is out of range")


def label_bounds(upper_name_of: heads.Task | str) -> str:
    """The name of what bounds a task's class labels in messages: its config field, or the choices."""
    task = heads.get(upper_name_of)
    return task.label_classes or "num_choices"


# ----------------------------------------------------------------------------------- pretraining
GUMBEL_NEEDS_LABELS = ("gumbel_noise is the generator's sampling noise: it needs labels (the masked positions); "
                       "without labels the discriminator runs alone")
NO_GENERATOR = ("this ConvBertForPreTraining has no generator (it was built with with_generator=False or loaded "
                "from a discriminator directory): labels need one; load a pretraining directory, or call without "
                "labels to run the discriminator")


def check_gumbel_noise(noise: TensorInfo, batch_shape: tuple, masked: int | None, vocab_size: int) -> str:
    """``gumbel_noise`` is (B, L, V) ("positions") or (M, V) for the M masked positions ("masked").

    ``masked`` is M, or None where it is known only at run time (then a (None or any, V) noise passes).
    """
    if noise.kind != "float":
        raise ValueError(f"gumbel_noise must be a floating-point tensor, got dtype {noise.dtype}")
    full = (*tuple(batch_shape), vocab_size)
    if _fits(noise.shape, full):
        return "positions"
    if _fits(noise.shape, (masked, vocab_size)):
        return "masked"
    raise ValueError(f"gumbel_noise must have shape {full} (batch, sequence, vocab_size) or "
                     f"{(masked if masked is not None else 'masked positions', vocab_size)} (masked positions, "
                     f"vocab_size), got {tuple(noise.shape)}")


def check_masked_per_row(row: int, count: int, bound: int, length: int, mask_prob: float) -> None:
    """Keras gathers at most ``bound`` masked positions per row (a static shape): refuse more."""
    if count > bound:
        raise ValueError(
            f"labels row {row} masks {count} positions, more than the {bound} the model gathers per row of "
            f"{length} tokens (mask_prob {mask_prob}); pass max_predictions={count} (or more) to "
            "ConvBertForPreTraining"
        )


def masked_per_row_message(bound: int) -> str:
    """The message of too many masked positions where only the bound is known (inside a graph)."""
    return f"labels mask more positions in a row than the {bound} the model gathers; raise max_predictions"


# ----------------------------------------------------------------------------------- training steps
class NonFiniteStepError(FloatingPointError):
    """A training step gave a loss or gradients that are not finite; its update was not applied."""


def non_finite_step_message(step: int, loss_finite: bool | None, bad_gradients: list[str], total_bad: int,
                            where: str = "") -> str:
    """One message for both frameworks: the step, what was not finite, and what it usually means."""
    what = []
    if loss_finite is False:
        what.append("the loss")
    if total_bad:
        shown = ", ".join(bad_gradients[:4]) + (" ..." if total_bad > 4 else "")
        what.append(f"the gradients of {total_bad} tensor(s) ({shown})")
    subject = " and ".join(what) or "the update"
    verb = "is" if what == ["the loss"] or not what else "are"
    weights = f"those after step {step - 1}" if step > 1 else "as they were before it"
    return (f"training step {step}{where}: {subject} {verb} not finite; the update was not applied and training "
            f"stopped (the weights are {weights}). Under XLA or torch.compile an out-of-range id or label gives "
            "NaN instead of an error: run the batch eagerly to see which; otherwise lower the learning rate")
