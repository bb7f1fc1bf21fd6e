"""The tasks: one frozen record per model class, the only place a head is described.

A ``Task`` names the class (both frameworks, Hugging Face's PyTorch spelling), the checkpoint
prefix of its backbone, the tensors of its head (from which ``weight_map`` builds the specs), its
label arguments and their kind (what ``checks`` validates), its loss, its output keys and its
default metric. Every table of the library (weight names, Keras losses and metrics, the CLI's
choices, verify's batches) reads from here; adding a task is one record plus its model classes.

Head tensors are named by their PyTorch module path; the Keras layer path and the name inside
Hugging Face's ``tf_model.h5`` are the same path with ``/`` (the modeling files mirror each
other), so one name per tensor suffices. Sizes are config field names (``"hidden_size"``) or
literal integers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Hugging Face's label conventions, shared by both frameworks.
IGNORE_INDEX = -100
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# The backbone of a head model is the attribute (and checkpoint prefix) ``convbert``.
BASE_PREFIX = "convbert"


@dataclass(frozen=True)
class HeadTensor:
    """A parameter group of a head: a dense layer, a LayerNorm, or a lone bias vector."""

    kind: str  # "linear" (weight [out, in] + bias) | "layer_norm" (weight + bias) | "bias"
    module: str  # PyTorch module path, "."-separated
    out_dim: str | int  # a config field name, or a literal size
    in_dim: str | int | None = None  # "linear" only
    tf1: str | None = None  # the module's name in the authors' TF1 checkpoints; None: no counterpart


@dataclass(frozen=True)
class Task:
    name: str  # the short name used by the CLI (``--head``) and the API
    class_name: str  # ConvBert* in both frameworks (HF's PyTorch architecture name)
    prefix: str  # checkpoint prefix of the backbone: "" for the bare model, "convbert" for heads
    head_tensors: tuple[HeadTensor, ...]
    label_names: tuple[str, ...]  # the forward / call keyword arguments that carry labels
    label_kind: str | None  # "token" | "sequence" | "choice" | "span" | None (see checks.check_labels)
    loss: str | None  # "token_cross_entropy" | "sequence" | "choice_cross_entropy" | "span_cross_entropy"
    output_keys: tuple[str, ...]  # the head's outputs, besides loss / hidden_states / attentions
    metric: str | None  # default metric of Keras' compile(): "accuracy" (MAE for regression)
    label_classes: str | None = None  # the config field that bounds class-id labels ("vocab_size", "num_labels")
    input_rank: int = 2  # (B, L); 3 for (B, C, L) multiple-choice inputs
    tf1_scope: str = "electra"  # the TF1 scope its backbone is imported from
    # The one position of the last hidden state the head reads (0 first, -1 last), or None when it
    # reads them all: the models then compute the last layer at that position only (shapes.edge_window).
    pooled_position: int | None = None

    @property
    def tf_class_name(self) -> str:
        """The name of Hugging Face's TensorFlow class (``TFConvBert...``), an alias on the Keras side."""
        return "TF" + self.class_name

    @property
    def hf_tf_scope(self) -> str:
        """The model scope inside Hugging Face's ``tf_model.h5`` (Keras 2 snake case of the TF class)."""
        return "tf_conv_bert_" + ("model" if not self.prefix else "for_" + self.name)

    @property
    def has_loss(self) -> bool:
        return self.loss is not None


def _linear(module: str, out_dim: str | int, in_dim: str | int, tf1: str | None = None) -> HeadTensor:
    return HeadTensor("linear", module, out_dim, in_dim, tf1)


MODEL = Task("model", "ConvBertModel", "", (), (), None, None, ("last_hidden_state",), None)
MASKED_LM = Task(
    "masked_lm", "ConvBertForMaskedLM", BASE_PREFIX,
    (
        _linear("generator_predictions.dense", "embedding_size", "hidden_size", "generator_predictions/dense"),
        HeadTensor("layer_norm", "generator_predictions.LayerNorm", "embedding_size",
                   tf1="generator_predictions/LayerNorm"),
        # The output matrix is the word-embedding table (tied); only the bias is the head's own.
        HeadTensor("bias", "generator_lm_head", "vocab_size", tf1="generator_predictions/output_bias"),
    ),
    ("labels",), "token", "token_cross_entropy", ("logits",), "accuracy", "vocab_size", tf1_scope="generator",
)
SEQUENCE_CLASSIFICATION = Task(
    "sequence_classification", "ConvBertForSequenceClassification", BASE_PREFIX,
    (_linear("classifier.dense", "hidden_size", "hidden_size"),
     _linear("classifier.out_proj", "num_labels", "hidden_size")),
    ("labels",), "sequence", "sequence", ("logits",), "accuracy", "num_labels", pooled_position=0,
)
MULTIPLE_CHOICE = Task(
    "multiple_choice", "ConvBertForMultipleChoice", BASE_PREFIX,
    (_linear("classifier", 1, "hidden_size"),),
    # The reference pools the LAST position (its summary_type default), padding or not.
    ("labels",), "choice", "choice_cross_entropy", ("logits",), "accuracy", input_rank=3, pooled_position=-1,
)
TOKEN_CLASSIFICATION = Task(
    "token_classification", "ConvBertForTokenClassification", BASE_PREFIX,
    (_linear("classifier", "num_labels", "hidden_size"),),
    ("labels",), "token", "token_cross_entropy", ("logits",), "accuracy", "num_labels",
)
QUESTION_ANSWERING = Task(
    "question_answering", "ConvBertForQuestionAnswering", BASE_PREFIX,
    (_linear("qa_outputs", "num_labels", "hidden_size"),),
    ("start_positions", "end_positions"), "span", "span_cross_entropy", ("start_logits", "end_logits"), "accuracy",
)

# The discriminator of replaced-token detection (ELECTRA's ``ElectraForPreTraining`` head, the
# authors' ``discriminator_predictions``): the ``discriminator/`` directory of a pretraining
# directory is a checkpoint of this class. Its labels are the generator's (HF MLM labels); the
# loss is the generator's MLM loss plus the weighted replaced-token BCE (convbert_common.pretraining).
PRETRAINING = Task(
    "pretraining", "ConvBertForPreTraining", BASE_PREFIX,
    (
        _linear("discriminator_predictions.dense", "hidden_size", "hidden_size", "discriminator_predictions/dense"),
        _linear("discriminator_predictions.dense_prediction", 1, "hidden_size", "discriminator_predictions/dense_1"),
    ),
    ("labels",), "token", "replaced_token_detection",
    ("generator_loss", "discriminator_loss", "generator_logits", "discriminator_logits", "replaced_input_ids",
     "replaced_labels"),
    None, "vocab_size",
)

# The fine-tuning tasks: one checkpoint directory, one model class each (the CLI's --head choices).
TASKS: dict[str, Task] = {
    t.name: t
    for t in (MODEL, MASKED_LM, SEQUENCE_CLASSIFICATION, MULTIPLE_CHOICE, TOKEN_CLASSIFICATION, QUESTION_ANSWERING)
}
NAMES: tuple[str, ...] = tuple(TASKS)
# Every record, pretraining included: what a config's ``architectures`` may name, what a checkpoint
# may hold besides the backbone.
ALL_TASKS: dict[str, Task] = {**TASKS, PRETRAINING.name: PRETRAINING}
_BY_CLASS = {t.class_name: t for t in ALL_TASKS.values()}


def get(task: str | Task) -> Task:
    """The task record for a name (or the record itself); ValueError naming the choices otherwise."""
    if isinstance(task, Task):
        return task
    try:
        return ALL_TASKS[task]
    except (KeyError, TypeError):
        raise ValueError(f"unknown head {task!r}; choose one of {', '.join(ALL_TASKS)}") from None


def of_class(class_name: str) -> Task | None:
    """The task of a class name, ``ConvBert...`` or Hugging Face's TensorFlow ``TFConvBert...``."""
    if not isinstance(class_name, str):
        return None
    return _BY_CLASS.get(class_name[2:] if class_name.startswith("TF") else class_name)


def of_architectures(architectures: Iterable[str] | None, *, source: str = "config") -> Task | None:
    """The task a config's ``architectures`` names; None when it names none.

    Refuses what would silently lose a head: a bare string instead of a list, a class that is not
    one of ours, or two different tasks.
    """
    if architectures is None:
        return None
    if isinstance(architectures, str) or not isinstance(architectures, (list, tuple)):
        raise ValueError(f"{source}: architectures must be a list of class names, got {architectures!r}")
    found: list[Task] = []
    for arch in architectures:
        task = of_class(arch)
        if task is None:
            known = ", ".join(sorted(_BY_CLASS))
            raise ValueError(f"{source}: architectures names {arch!r}, which is not a ConvBERT class ({known})")
        if task not in found:
            found.append(task)
    if len(found) > 1:
        raise ValueError(f"{source}: architectures names several tasks: {[t.class_name for t in found]}")
    return found[0] if found else None
