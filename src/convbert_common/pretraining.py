"""Replaced-token-detection pretraining, the framework-free parts both training loops share.

- ``PretrainingConfig``: the method's knobs (generator size, masking rates, sampling temperature,
  loss weights), saved as ``pretraining_config.json``.
- ``generator_config``: the generator's ``ConvBertConfig`` from the discriminator's and a size
  fraction; ``check_shareable`` refuses a generator that cannot use the discriminator's embedding
  tables (one module, not a copy).
- The pretraining directory (``PretrainingDir``): ``discriminator/`` (a ``ConvBertForPreTraining``
  checkpoint: the backbone plus the replaced-token-detection head), ``generator/`` (a standalone
  ``ConvBertForMaskedLM``) and ``pretraining_config.json``. Each model directory is an ordinary
  Hugging Face checkpoint with the tokenizer files.
- A training run's ``output/``: the final pretraining directory, ``log.jsonl`` (``LogWriter``; also
  TensorBoard scalars when ``tensorboard`` is installed) and ``checkpoint-STEP/`` folders, each a
  pretraining directory plus ``optimizer.safetensors`` (AdamW moments by parameter name),
  ``rng-rank<R>.*`` (the framework's random state per rank) and ``trainer_state.json``, written
  last: a folder without it is not a checkpoint.
- The learning-rate schedule (``learning_rate_factor``), the batch stream with its masks
  (``masked_batches``) and the seeds of the Gumbel noise (``noise_seed``), so that PyTorch and
  Keras train on the same examples, masks and schedule.

Positions, steps and rows: optimizer step ``s`` with ``grad_accum`` micro-batches on ``world_size``
ranks of ``batch_size`` rows takes the micro-batches ``m = s * grad_accum + a``. Micro-batch ``m``
is the ``m``-th global batch of ``batch_size * world_size`` examples of the dataset's epoch order
(epochs follow each other). Global row ``a * batch_size * world_size + rank * batch_size + i`` of
step ``s`` is masked from the stream ``(seed, s, row)`` and sampled from the noise seed
``(seed, s, row)``: one process with the whole batch and several ranks with slices of it see the
same examples, masks and samples.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convbert_common import checkpoint, heads, presets
from convbert_common import weight_map as wm
from convbert_common.config import CONFIG_NAME, ConvBertConfig
from convbert_common.fileio import atomic_path, atomic_write_text, read_json

logger = logging.getLogger(__name__)

PRETRAINING_CONFIG_NAME = "pretraining_config.json"
DISCRIMINATOR_DIR = "discriminator"
GENERATOR_DIR = "generator"
TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
LOG_NAME = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
DATA_DIR = "data"
CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_FORMAT = "convbert-pretraining-checkpoint"
TRAINER_STATE_VERSION = 1

# Keys of every log.jsonl record (others may follow).
LOG_KEYS = (
    "step", "epoch", "loss", "generator_loss", "discriminator_loss", "generator_accuracy",
    "discriminator_accuracy", "replaced_fraction", "learning_rate", "grad_norm", "tokens_per_second",
)
# Sums a training loop accumulates per step (over its rows), from which the logged metrics follow
# (``metrics_from_sums``): summed over ranks, they give the metrics of the global batch.
SUM_KEYS = (
    "generator_loss_sum",  # cross-entropy summed over the masked positions
    "discriminator_loss_sum",  # binary cross-entropy summed over the real tokens
    "masked",  # positions with a label (!= -100)
    "real",  # attended positions (attention_mask 1)
    "generator_correct",  # masked positions where the generator's argmax is the original id
    "discriminator_correct",  # real tokens the discriminator classifies right (logit > 0 = replaced)
    "replaced",  # real tokens whose sampled id differs from the original
    "positions",  # every position of the batch, padding included (the tokens of tokens_per_second)
)

# ELECTRA's Gumbel noise: -log(-log(u + eps) + eps) for u uniform in [0, 1).
GUMBEL_EPS = 1e-9
_GUMBEL_STREAM = 0x67756D62


# ------------------------------------------------------------------------------ the knobs
def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{source}: {name} must be a number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{source}: {name} must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


@dataclass
class PretrainingConfig:
    """The knobs of replaced-token detection (the authors' defaults)."""

    generator_size: float = 0.25  # the generator's width as a fraction of the discriminator's
    mask_prob: float = 0.15  # masked fraction of the real tokens
    mask_token_prob: float = 0.85  # of the masked positions, the share shown as [MASK]
    random_token_prob: float = 0.0  # ... the share replaced by a random id (BERT: 0.1); the rest stay
    temperature: float = 1.0  # of the generator's softmax when sampling replacements
    generator_weight: float = 1.0  # weight of the generator's MLM loss
    disc_weight: float = 50.0  # weight of the discriminator's BCE
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "pretraining config") -> None:
        _number("generator_size", self.generator_size, 0.0, 1.0, low_open=True, source=source)
        for name in ("mask_prob", "mask_token_prob", "random_token_prob"):
            _number(name, getattr(self, name), 0.0, 1.0, source=source)
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-12:
            raise ValueError(f"{source}: mask_token_prob {self.mask_token_prob} + random_token_prob "
                             f"{self.random_token_prob} is above 1")
        _number("temperature", self.temperature, 0.0, math.inf, low_open=True, source=source)
        _number("generator_weight", self.generator_weight, 0.0, math.inf, source=source)
        _number("disc_weight", self.disc_weight, 0.0, math.inf, source=source)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "pretraining config") -> PretrainingConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name != "extra":
                setattr(obj, f.name, data.get(f.name, f.default))
        obj.extra = {k: v for k, v in data.items() if k not in known}
        obj.validate(source)
        return obj

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        target = os.path.join(os.fspath(directory), PRETRAINING_CONFIG_NAME)
        atomic_write_text(target, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return target

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> PretrainingConfig:
        """From ``pretraining_config.json`` in a pretraining directory, or the JSON file itself."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, PRETRAINING_CONFIG_NAME)
        return cls.from_dict(read_json(path, missing=f"no pretraining config at {path}"), source=path)


# ------------------------------------------------------------------------------ the generator
# The embedding module the generator shares with the discriminator: these fields size its tables.
SHARED_EMBEDDING_FIELDS = ("embedding_size", "vocab_size", "max_position_embeddings", "type_vocab_size",
                           "pad_token_id")


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def generator_config(config: ConvBertConfig, size: float = 0.25) -> ConvBertConfig:
    """The generator of ``config``'s discriminator: ``size`` times as wide, same depth.

    Hidden size, attention heads and feed-forward size are scaled by ``size`` (heads at least one);
    the hidden size is rounded to the nearest multiple of ``2 * N'`` and of ``num_groups``, the
    feed-forward size to one of ``num_groups``, so the result is a valid ConvBERT. Everything the
    shared embedding module depends on (``embedding_size``, the vocabulary, positions, token
    types, padding id) is the discriminator's.
    """
    size = _number("generator_size", size, 0.0, 1.0, low_open=True, source="--generator-size")
    heads_ = max(1, int(round(config.num_attention_heads * size)))
    reduced = max(1, heads_ // config.head_ratio)
    step = math.lcm(2 * reduced, config.num_groups)
    hidden = _round_to_multiple(config.hidden_size * size, step)
    intermediate = _round_to_multiple(config.intermediate_size * size, config.num_groups)
    gen = config.replace(hidden_size=hidden, num_attention_heads=heads_, intermediate_size=intermediate,
                         architectures=[heads.MASKED_LM.class_name])
    check_shareable(config, gen)
    return gen


def check_shareable(config: ConvBertConfig, gen: ConvBertConfig, *, source: str = "generator config") -> None:
    """Raise unless ``gen`` can use ``config``'s embedding module (the same tables, not copies)."""
    for name in SHARED_EMBEDDING_FIELDS:
        mine, theirs = getattr(config, name), getattr(gen, name)
        if mine != theirs:
            raise ValueError(
                f"{source}: the generator's {name} is {theirs} but the discriminator's is {mine}; the generator "
                "shares the discriminator's embedding tables (word, position, token type and their LayerNorm), "
                f"so its {name} must be {mine}"
            )


# ------------------------------------------------------------------------------ the directory
@dataclass(frozen=True)
class PretrainingDir:
    """The files of a pretraining directory (they need not exist yet)."""

    path: str

    @property
    def discriminator(self) -> str:
        return os.path.join(self.path, DISCRIMINATOR_DIR)

    @property
    def generator(self) -> str:
        return os.path.join(self.path, GENERATOR_DIR)

    @property
    def config_file(self) -> str:
        return os.path.join(self.path, PRETRAINING_CONFIG_NAME)


def is_pretraining_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a pretraining directory (its ``pretraining_config.json`` exists)."""
    return os.path.isfile(os.path.join(os.fspath(path), PRETRAINING_CONFIG_NAME))


def read_pretraining_dir(path: str | os.PathLike) -> tuple[ConvBertConfig, ConvBertConfig, PretrainingConfig]:
    """The discriminator's and the generator's configs and the knobs of a pretraining directory.

    Checks that every part is there and that the generator can share the discriminator's
    embeddings; raises naming the missing file or the differing size.
    """
    layout = PretrainingDir(os.fspath(path))
    if not os.path.isdir(layout.path):
        raise FileNotFoundError(f"{layout.path}: no such pretraining directory")
    missing = [p for p in (layout.config_file, os.path.join(layout.discriminator, CONFIG_NAME),
                           os.path.join(layout.generator, CONFIG_NAME)) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{layout.path} is not a pretraining directory: missing {', '.join(missing)} (it holds "
            f"{DISCRIMINATOR_DIR}/, {GENERATOR_DIR}/ and {PRETRAINING_CONFIG_NAME})"
        )
    knobs = PretrainingConfig.from_pretrained(layout.config_file)
    config = ConvBertConfig.from_pretrained(layout.discriminator)
    gen = ConvBertConfig.from_pretrained(layout.generator)
    for where, cfg, allowed in ((layout.discriminator, config, (heads.PRETRAINING, heads.MODEL)),
                                (layout.generator, gen, (heads.MASKED_LM,))):
        task = heads.of_architectures(cfg.architectures, source=os.path.join(where, CONFIG_NAME))
        if task is not None and task not in allowed:
            raise ValueError(f"{os.path.join(where, CONFIG_NAME)}: names {task.class_name}; a pretraining "
                             f"directory's {os.path.basename(where)}/ holds a "
                             + " or ".join(t.class_name for t in allowed))
    check_shareable(config, gen, source=os.path.join(layout.generator, CONFIG_NAME))
    return config, gen, knobs


def is_shared_embedding(name: str) -> bool:
    """Whether a canonical tensor name is one of the embedding module both models share."""
    return wm.strip_base_prefix(name).startswith("embeddings.")


def check_shared_embeddings(disc: dict[str, Any], gen: dict[str, Any], layout: PretrainingDir) -> None:
    """Refuse a pretraining directory whose generator/ holds other embedding values than discriminator/."""
    for name, value in gen.items():
        if is_shared_embedding(name) and not np.array_equal(np.asarray(value), np.asarray(disc[name])):
            raise checkpoint.CheckpointError(
                f"{layout.generator}: {name} differs from the one in {layout.discriminator}; the generator shares "
                "the discriminator's embeddings (one tensor), so both directories must hold the same values"
            )


# ------------------------------------------------------------------------------ schedule and noise
def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of the peak learning rate for the update after ``step`` updates.

    Linear warm-up over ``warmup_steps`` updates ((step + 1) / warmup, so the first update is not
    wasted), then linear decay that reaches 0 one update after the last: the last update of
    ``total_steps`` uses ``1 / (total_steps - warmup_steps)``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def noise_seed(seed: int, step: int, row: int) -> int:
    """The seed of the Gumbel noise of global row ``row`` at optimizer step ``step`` (63 bits)."""
    words = np.random.SeedSequence([int(seed), _GUMBEL_STREAM, int(step), int(row)]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def gumbel_from_uniform(uniform: np.ndarray) -> np.ndarray:
    """ELECTRA's Gumbel noise from uniform samples in [0, 1): the NumPy statement of the formula."""
    u = np.asarray(uniform, dtype=np.float64)
    return -np.log(-np.log(u + GUMBEL_EPS) + GUMBEL_EPS)


def metrics_from_sums(sums: dict[str, float], knobs: PretrainingConfig) -> dict[str, float]:
    """The logged losses and accuracies of a batch (or a window of steps) from its summed counts."""
    masked, real = max(sums["masked"], 1.0), max(sums["real"], 1.0)
    gen = sums["generator_loss_sum"] / masked
    disc = sums["discriminator_loss_sum"] / real
    return {
        "loss": knobs.generator_weight * gen + knobs.disc_weight * disc,
        "generator_loss": gen,
        "discriminator_loss": disc,
        "generator_accuracy": sums["generator_correct"] / masked,
        "discriminator_accuracy": sums["discriminator_correct"] / real,
        # The share of real tokens the discriminator should call replaced: its accuracy is to be read
        # against 1 - replaced_fraction, what always answering "original" scores.
        "replaced_fraction": sums["replaced"] / real,
    }


# ------------------------------------------------------------------------------ batches
@dataclass
class MicroBatch:
    step: int  # the optimizer step it belongs to
    accum_index: int  # its place among the step's grad_accum micro-batches
    row_offset: int  # the global row of its first row within the step
    input_ids: np.ndarray  # (B, L) masked ids, the generator's input
    attention_mask: np.ndarray  # (B, L)
    token_type_ids: np.ndarray  # (B, L)
    labels: np.ndarray  # (B, L) the original ids at masked positions, -100 elsewhere


def data_position(step: int, grad_accum: int, steps_per_epoch: int) -> tuple[int, int]:
    """``(epoch, micro-batch within the epoch)`` where optimizer step ``step`` starts."""
    return divmod(step * grad_accum, steps_per_epoch)


def masked_batches(dataset, knobs: PretrainingConfig, *, batch_size: int, grad_accum: int, world_size: int,
                   rank: int, seed: int, start_step: int = 0) -> Iterator[MicroBatch]:
    """This rank's micro-batches from optimizer step ``start_step`` on, masked, epoch after epoch.

    ``dataset`` is a ``PretrainingDataset``. See the module docstring for which examples, masks
    and rows each micro-batch holds.
    """
    from convbert_common.pretraining_data import mask_tokens

    per_epoch = dataset.steps_per_epoch(batch_size, world_size)
    if per_epoch == 0:
        raise ValueError(
            f"{dataset.data_dir} has {len(dataset)} examples, fewer than one global batch of {batch_size} x "
            f"{world_size} ranks: lower --batch-size or add text"
        )
    epoch, in_epoch = data_position(start_step, grad_accum, per_epoch)
    micro = start_step * grad_accum
    while True:
        for arrays in dataset.batches(batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                                      start_step=in_epoch):
            step, accum_index = divmod(micro, grad_accum)
            row_offset = (accum_index * world_size + rank) * batch_size
            ids, labels = mask_tokens(
                arrays["input_ids"], arrays["attention_mask"], special_ids=dataset.special_ids,
                vocab_size=dataset.vocab_size, mask_token_id=dataset.mask_token_id, seed=seed, step=step,
                row_offset=row_offset, mask_prob=knobs.mask_prob, mask_token_prob=knobs.mask_token_prob,
                random_token_prob=knobs.random_token_prob,
            )
            yield MicroBatch(step, accum_index, row_offset, ids, arrays["attention_mask"],
                             arrays["token_type_ids"], labels)
            micro += 1
        epoch, in_epoch = epoch + 1, 0


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, str]]:
    """Complete checkpoints (``trainer_state.json`` present) of a run, oldest first."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> tuple[int, str] | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints (0 keeps all); returns what went."""
    if keep <= 0:
        return []
    removed = []
    for _step, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def write_trainer_state(folder: str | os.PathLike, state: dict[str, Any]) -> str:
    """``trainer_state.json``; written last into a checkpoint, it marks the folder complete."""
    record = {"format": TRAINER_STATE_FORMAT, "format_version": TRAINER_STATE_VERSION, **state}
    target = os.path.join(os.fspath(folder), TRAINER_STATE_NAME)
    atomic_write_text(target, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return target


def read_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    path = os.path.join(os.fspath(folder), TRAINER_STATE_NAME)
    state = read_json(path, missing=f"{folder} is not a complete checkpoint: no {TRAINER_STATE_NAME}")
    if not isinstance(state, dict) or state.get("format") != TRAINER_STATE_FORMAT:
        raise ValueError(f"{path} is not a convbert pretraining checkpoint state")
    if state.get("format_version") != TRAINER_STATE_VERSION:
        raise ValueError(f"{path} has format_version {state.get('format_version')!r}; this version reads "
                         f"{TRAINER_STATE_VERSION}")
    for key in ("step", "run"):
        if key not in state:
            raise ValueError(f"{path} lacks {key!r}")
    return state


def _flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(record, dict):
        out: dict[str, Any] = {}
        for key, value in record.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: record}


# Settings a resumed run may change: how long it runs, and how it reports.
RESUMABLE_CHANGES = ("schedule.total_steps",)


def resume_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What differs between a checkpoint's run record and the resuming run's.

    Returns ``(refused, allowed)``: lines ``key: checkpoint value -> this run's value``; the
    allowed ones are ``RESUMABLE_CHANGES`` (and the world size, which changes only the dropout
    streams).
    """
    a, b = _flatten(saved), _flatten(current)
    refused, allowed = [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") == b.get(key, "<absent>"):
            continue
        line = f"{key}: {a.get(key, '<absent>')!r} in the checkpoint, {b.get(key, '<absent>')!r} now"
        (allowed if key in RESUMABLE_CHANGES or key == "world_size" else refused).append(line)
    return refused, allowed


# ------------------------------------------------------------------------------ the log
class LogWriter:
    """``output/log.jsonl``, one JSON object per logged step, and TensorBoard scalars if installed.

    ``resume_step``: records after that step (logged by the interrupted run past its last
    checkpoint) are dropped first, so the log of a resumed run reads like an uninterrupted one.
    """

    def __init__(self, output_dir: str | os.PathLike, *, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.path = os.path.join(os.fspath(output_dir), LOG_NAME)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if resume_step is not None and os.path.exists(self.path):
            self._truncate(resume_step)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._tb = _tensorboard_writer(os.path.join(os.fspath(output_dir), TENSORBOARD_DIR)) if tensorboard else None

    def _truncate(self, step: int) -> None:
        kept = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by the interruption, and nothing valid after it
                if record.get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(kept)

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, sort_keys=False) + "\n")
        self._fh.flush()
        if self._tb is not None:
            self._tb(record)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


class _TensorBoard:
    def __init__(self, logdir: str) -> None:
        from convbert_common.events import ScalarWriter

        self._writer = ScalarWriter(logdir)

    def __call__(self, record: dict[str, Any]) -> None:
        self._writer.add_scalars(int(record["step"]), {
            f"pretrain/{k}": float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        })

    def close(self) -> None:
        self._writer.close()


def _tensorboard_writer(logdir: str) -> _TensorBoard | None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        logger.info("TensorBoard scalars are off: the tensorboard package is not installed")
        return None
    return _TensorBoard(logdir)


# ------------------------------------------------------------------------------ a run's settings
@dataclass
class TrainingSettings:
    """Everything ``convbert pretrain`` is told; one field per flag (``--`` + the name with dashes)."""

    output: str
    tokenizer: str | None = None  # default: the tokenizer files of --init-from / the resumed checkpoint
    corpus: list[str] = field(default_factory=list)  # text to build the data from (under OUTPUT/data)
    data: str | None = None  # or a data directory of ``convbert pretrain-data``
    config: str | None = None  # a preset name or a config.json (default: the "small" preset)
    generator_config: str | None = None  # a config.json for the generator (default: --generator-size)
    init_from: str | None = None  # a pretraining directory, or a checkpoint directory as the discriminator
    resume: bool = False
    overwrite: bool = False  # start afresh in an OUTPUT that holds an earlier run
    max_seq_length: int | None = None  # default: the data's, else 128
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1
    steps: int | None = None
    epochs: int | None = None  # used when --steps is not given (default 1)
    max_minutes: float | None = None  # stop (checkpoint + final models) after this wall time; the schedule stays
    learning_rate: float = 5e-4
    warmup_steps: int | None = None  # default: 10% of the steps
    weight_decay: float = 0.01
    clip: float = 1.0  # global gradient norm; 0 turns clipping off
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    seed: int = 0
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 3  # 0 keeps every checkpoint
    bf16: bool = False
    compile: bool = False
    fsdp: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    progress: bool = True
    one_doc_per_line: bool = False
    text_field: str = "text"
    skip_bad_lines: bool = False
    knobs: PretrainingConfig = field(default_factory=PretrainingConfig)
    generator_size_given: bool = False  # whether --generator-size was passed (it then must fit --init-from)

    def validate(self) -> None:
        def positive(name: str, minimum: int = 1, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")

        for name in ("batch_size", "grad_accum", "log_every", "save_every"):
            positive(name)
        positive("steps", optional=True)
        positive("epochs", optional=True)
        positive("max_seq_length", optional=True)
        positive("warmup_steps", 0, optional=True)
        positive("keep_checkpoints", 0)
        positive("seed", 0)
        if self.max_minutes is not None and (isinstance(self.max_minutes, bool) or not isinstance(
                self.max_minutes, (int, float)) or not 0 < self.max_minutes < math.inf):
            raise ValueError(f"--max-minutes must be a positive number, got {self.max_minutes!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("pass --steps or --epochs, not both")
        for name, low, high in (("learning_rate", 0.0, math.inf), ("weight_decay", 0.0, math.inf),
                                ("clip", 0.0, math.inf), ("adam_beta1", 0.0, 1.0), ("adam_beta2", 0.0, 1.0),
                                ("adam_epsilon", 0.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
                    or not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} must be a number in [{low}, {high}], got {value!r}")
        if not self.corpus and not self.data:
            raise ValueError("pass --corpus PATH... (text to build the data from) or --data DIR (built with "
                             "convbert pretrain-data)")
        if self.corpus and self.data:
            raise ValueError("pass --corpus or --data, not both")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues OUTPUT's run and --overwrite discards it: pass one of them")
        if self.init_from and self.config:
            raise ValueError("--init-from brings its own config: drop --config")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        self.knobs.validate("pretraining flags")


def data_fingerprint(manifest: dict[str, Any]) -> str:
    """What identifies a data directory's examples (not where it or its sources lie): a sha256."""
    import hashlib

    sources = [s.get("sha256", s.get("size")) for s in manifest.get("sources", [])]
    record = {k: manifest.get(k) for k in ("tokenizer", "max_seq_length", "seed", "settings", "counts")}
    record["sources"] = sources
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------ a run's output folder (both loops)
def resume_point(output: str, resume: bool, overwrite: bool) -> tuple[tuple[int, str] | None, bool]:
    """(the checkpoint to resume from or None, whether an earlier run must be cleared first).

    Refuses to mix two runs in one ``output``: ``--resume`` needs a checkpoint, and an earlier run
    (a log or checkpoints) is only replaced with ``--overwrite``.
    """
    latest = latest_checkpoint(output)
    if resume:
        if latest is None:
            raise ValueError(f"--resume: {output} holds no checkpoint ({CHECKPOINT_PREFIX}STEP/ with "
                             f"{TRAINER_STATE_NAME}) to continue from")
        return latest, False
    earlier = latest is not None or os.path.exists(os.path.join(output, LOG_NAME))
    if earlier and not overwrite:
        raise ValueError(f"{output} holds an earlier run ({LOG_NAME} or checkpoints): pass --resume to "
                         "continue it, --overwrite to start over, or another --output")
    return None, earlier


def clear_run(output: str) -> None:
    """Remove an earlier run's checkpoints and log from ``output`` (``--overwrite``)."""
    for _step, path in list_checkpoints(output):
        shutil.rmtree(path)
    log = os.path.join(output, LOG_NAME)
    if os.path.exists(log):
        os.remove(log)


# The warm-up, as a fraction of the steps, when neither --warmup-steps nor a resumed run gives it.
DEFAULT_WARMUP_FRACTION = 0.1


def total_steps(settings: TrainingSettings, micro_batches_per_epoch: int, examples: int) -> int:
    """Optimizer steps of the run: ``--steps``, else ``--epochs`` (1 by default) of
    ``micro_batches_per_epoch`` micro-batches, ``--grad-accum`` of them a step."""
    s = settings
    total = s.steps if s.steps is not None else (s.epochs or 1) * micro_batches_per_epoch // s.grad_accum
    if total < 1:
        raise ValueError(f"one epoch of {examples} examples is {micro_batches_per_epoch} micro-batches, fewer than "
                         f"--grad-accum {s.grad_accum}: pass --steps, or lower --grad-accum / --batch-size")
    return total


def warmup_steps(settings: TrainingSettings, total_steps: int, resume_dir: str | None) -> int:
    """``--warmup-steps``; else the warm-up the resumed run started with (a resumed run that goes on
    for longer keeps it); else ``DEFAULT_WARMUP_FRACTION`` of ``total_steps``."""
    if settings.warmup_steps is not None:
        return settings.warmup_steps
    default = DEFAULT_WARMUP_FRACTION * total_steps
    if resume_dir:
        return int(read_trainer_state(resume_dir)["run"].get("schedule", {}).get("warmup_steps", default))
    return int(default)


def run_record(settings: TrainingSettings, *, model_config: ConvBertConfig, generator_config: ConvBertConfig,
               knobs: PretrainingConfig, manifest: dict[str, Any], max_seq_length: int, examples: int,
               total_steps: int, warmup_steps: int, global_batch: int, world_size: int) -> dict[str, Any]:
    """What a checkpoint records of its run: the same keys from both loops, so that a run resumes from
    either framework's checkpoint (``resume_state`` compares the records)."""
    s = settings
    return {
        "model": bare_config(model_config),
        "generator": bare_config(generator_config),
        "pretraining": knobs.to_dict(),
        "data": {"fingerprint": data_fingerprint(manifest), "max_seq_length": max_seq_length, "examples": examples},
        "global_batch": global_batch,
        "optimizer": {"learning_rate": s.learning_rate, "weight_decay": s.weight_decay, "clip": s.clip,
                      "betas": [s.adam_beta1, s.adam_beta2], "epsilon": s.adam_epsilon},
        "schedule": {"total_steps": total_steps, "warmup_steps": warmup_steps},
        "seed": s.seed,
        "bf16": s.bf16,
        "world_size": world_size,
    }


def recorded_knobs(settings: TrainingSettings, config: ConvBertConfig, gen_config: ConvBertConfig) -> PretrainingConfig:
    """The run's pretraining knobs, with the generator size the generator really has (from a file or
    --init-from) unless --generator-size was given (it is then checked to fit)."""
    if settings.generator_size_given:
        return settings.knobs
    return dataclasses.replace(settings.knobs, generator_size=gen_config.hidden_size / config.hidden_size)


def write_failure(step: int, target: str, previous: tuple[int, str] | None, exc: Exception) -> str:
    """What a loop says when writing checkpoint ``target`` failed: the error, and what is still intact."""
    kept = (f"the previous checkpoint {previous[1]} is intact (continue with --resume)" if previous
            else "no earlier checkpoint exists")
    return f"step {step}: writing {target} failed ({type(exc).__name__}: {exc}); {kept}"


def resume_state(folder: str, step: int, run: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """The trainer state of checkpoint ``folder`` (at ``step``) for a run whose record is ``run``.

    Refuses a checkpoint written by a run with other settings or data, and one at or past the run's
    end; logs the changes a resume allows (a longer schedule).
    """
    state = read_trainer_state(folder)
    refused, allowed = resume_mismatches(state["run"], run)
    if refused:
        raise ValueError(f"--resume: {folder} was written by a run with other settings or data: "
                         + "; ".join(refused[:6]) + (" ..." if len(refused) > 6 else ""))
    for line in allowed:
        logger.warning("--resume: %s", line)
    if step >= total_steps:
        raise ValueError(f"--resume: {folder} is at step {step}, the run's end ({total_steps} steps); pass a "
                         "larger --steps to go on")
    return state


# ------------------------------------------------------------------------------ a run's models (both loops)
DEFAULT_PRESET = "small"


def find_tokenizer(settings: TrainingSettings, resume_dir: str | None) -> str:
    if settings.tokenizer:
        return settings.tokenizer
    candidates = []
    for root in (resume_dir, settings.init_from):
        if root:
            candidates += [os.path.join(root, DISCRIMINATOR_DIR), root]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "vocab.txt")):
            return folder
    raise ValueError("pass --tokenizer DIR (the folder with vocab.txt)"
                     + (f"; none found in {', '.join(candidates)}" if candidates else ""))


def discriminator_config(settings: TrainingSettings, tokenizer: Any) -> ConvBertConfig:
    """--config (a preset, sized to the tokenizer, or a config.json) or --init-from's."""
    if settings.init_from:
        source = settings.init_from
        folder = os.path.join(source, DISCRIMINATOR_DIR) if is_pretraining_dir(source) else source
        config = ConvBertConfig.from_pretrained(folder)
        where = f"--init-from {source}"
    elif settings.config is None or settings.config in presets.PRESETS:
        name = settings.config or DEFAULT_PRESET
        return presets.preset(name, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    else:
        config = ConvBertConfig.from_pretrained(settings.config)
        where = f"--config {settings.config}"
    check_vocab(config, tokenizer, where)
    return config


def check_vocab(config: ConvBertConfig, tokenizer: Any, where: str) -> None:
    vocab, pad = len(tokenizer), tokenizer.pad_token_id
    if config.vocab_size != vocab:
        raise ValueError(f"--tokenizer {tokenizer.vocab_file} has {vocab} tokens but {where} has vocab_size "
                         f"{config.vocab_size}: the model's vocabulary must be the tokenizer's")
    if pad is not None and config.pad_token_id != pad:
        raise ValueError(f"--tokenizer's [PAD] is id {pad} but {where} has pad_token_id {config.pad_token_id}")


def generator_config_for(settings: TrainingSettings, config: ConvBertConfig) -> ConvBertConfig | None:
    """None: the --init-from pretraining directory brings its generator."""
    if settings.init_from and is_pretraining_dir(settings.init_from):
        if settings.generator_config or settings.generator_size_given:
            raise ValueError(f"--init-from {settings.init_from} brings its generator: drop --generator-config / "
                             "--generator-size")
        return None
    if settings.generator_config:
        if settings.generator_size_given:
            raise ValueError("pass --generator-config or --generator-size, not both")
        gen = ConvBertConfig.from_pretrained(settings.generator_config)
        check_shareable(config, gen, source=f"--generator-config {settings.generator_config}")
        return gen.replace(architectures=[heads.MASKED_LM.class_name])
    return generator_config(config, settings.knobs.generator_size)


@dataclass
class RunModels:
    """What a run trains, decided the same way by both loops before either builds a model."""

    tokenizer_dir: str
    tokenizer: Any
    config: ConvBertConfig  # the discriminator's (the checkpoint's when resuming)
    gen_config: ConvBertConfig | None  # None: --init-from's pretraining directory brings its generator
    flags_config: ConvBertConfig  # what the flags ask for: a resumed run's record compares them
    flags_gen: ConvBertConfig | None


def run_models(settings: TrainingSettings, resume_dir: str | None) -> RunModels:
    """The tokenizer and both configs of a run: from the checkpoint when resuming, else from the flags.

    A resumed run keeps the checkpoint's models; the flags that size them, where given, are kept
    beside them so that the run record can say where they disagree. ``--max-seq-length`` must fit
    the discriminator's positions.
    """
    from convbert_common.pretraining_data import check_max_seq_length
    from convbert_common.tokenizer import ConvBertTokenizerFast

    s = settings
    tokenizer_dir = find_tokenizer(s, resume_dir)
    tokenizer = ConvBertTokenizerFast.from_pretrained(tokenizer_dir)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"--tokenizer {tokenizer_dir} has no [MASK] token: the generator needs one")
    if resume_dir:
        config, gen_config, _knobs = read_pretraining_dir(resume_dir)
        check_vocab(config, tokenizer, f"the checkpoint {resume_dir}")
        flags_config = discriminator_config(s, tokenizer) if (s.config or s.init_from) else config
        flags_gen = (generator_config_for(s, flags_config) if (s.generator_config or s.generator_size_given)
                     else gen_config) or gen_config
    else:
        config = flags_config = discriminator_config(s, tokenizer)
        gen_config = flags_gen = generator_config_for(s, config)
    if s.max_seq_length is not None:
        try:
            check_max_seq_length(s.max_seq_length, config.max_position_embeddings)
        except ValueError as exc:
            raise ValueError(f"--max-seq-length: {exc}") from None
    return RunModels(tokenizer_dir, tokenizer, config, gen_config, flags_config, flags_gen)


def bare_config(config: ConvBertConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in ("architectures", "dtype")}
