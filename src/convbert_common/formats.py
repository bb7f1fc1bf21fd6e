"""Checkpoint formats as records: what each one is, how to read it into canonical tensors and write it.

A ``Format`` names a format (the ``--to`` of ``convbert convert``), says whether it is a directory
or a single file, which framework its reader or writer needs, and holds the two functions:
``read(path, head=..., config_path=..., generator=...) -> Loaded`` and
``write(loaded, path, dtype=..., progress=...)``. Writers write into the path they are given;
making the result appear atomically is the caller's job (``convbert_tools.convert``).

The framework-free formats are declared here: the Hugging Face checkpoint directory with
``model.safetensors``, ``pytorch_model.bin`` (torch, only to read / write the pickle-free zip) or
``tf_model.h5``, and the authors' original TF1 checkpoints (read only, through TensorFlow). The
Keras files (``.keras``, ``.weights.h5``) are declared by ``convbert_tf.formats``; the top floor
puts both into one ``FormatRegistry``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from convbert_common import checkpoint as ck
from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_common.config import CONFIG_NAME, ConvBertConfig
from convbert_common.pretraining import PretrainingConfig, PretrainingDir, check_shareable, read_pretraining_dir

logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


@dataclass
class Loaded:
    """What a reader found: the model's config and task, its canonical tensors, and what it left out."""

    config: ConvBertConfig
    head: heads.Task
    tensors: dict[str, np.ndarray]  # canonical names and layouts, validated against the specs
    source: str
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was not loaded
    tokenizer_dir: str | None = None
    count: int = 0  # tensors read (writing to Keras consumes ``tensors`` to save memory)

    def __post_init__(self) -> None:
        self.head = heads.get(self.head)
        self.count = len(self.tensors)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # "directory" | "file"
    description: str
    suffix: str | None = None  # files: the ending a destination must have
    framework: str | None = None  # what its reader / writer import: None | "torch" | "tensorflow" | "keras"
    extra: str | None = None  # the pip extra that brings the framework
    read: Callable[..., Loaded] | None = None
    write: Callable[..., None] | None = None
    detect: Callable[[str], bool] | None = None  # whether a source path is in this format
    dtypes: tuple[str, ...] = DTYPES  # what --dtype the writer can store


class FormatRegistry:
    """Formats by name, in the order they were registered."""

    def __init__(self) -> None:
        self._formats: dict[str, Format] = {}

    def register(self, fmt: Format) -> None:
        self._formats[fmt.name] = fmt

    def names(self) -> tuple[str, ...]:
        return tuple(self._formats)

    def writable(self) -> tuple[str, ...]:
        return tuple(n for n, f in self._formats.items() if f.write is not None)

    def __contains__(self, name: str) -> bool:
        return name in self._formats

    def get(self, name: str) -> Format:
        try:
            return self._formats[name]
        except KeyError:
            raise ValueError(f"unknown format {name!r}; choose one of {', '.join(self._formats)}") from None

    def source_format(self, path: str) -> Format | None:
        """The first registered readable format that recognises ``path``."""
        for fmt in self._formats.values():
            if fmt.read is not None and fmt.detect is not None and fmt.detect(path):
                return fmt
        return None


def head_from_config(config: ConvBertConfig, default: heads.Task = heads.MODEL, *, source: str = "config"
                     ) -> heads.Task:
    return heads.of_architectures(config.architectures, source=source) or default


def cast(tensors: dict[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    """Floating tensors in ``dtype`` (None: float32); integer tensors as they are.

    Values beyond the range of ``dtype`` become inf; ``overflowing`` finds them first (``convert``
    refuses them unless told otherwise).
    """
    if dtype not in (None, *DTYPES):
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    target = _numpy_dtype(dtype or "float32")
    with np.errstate(over="ignore"):
        return {k: v.astype(target, copy=False) if v.dtype.kind == "f" else v for k, v in tensors.items()}


def _numpy_dtype(dtype: str) -> np.dtype:
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def overflowing(tensors: dict[str, np.ndarray], dtype: str | None) -> dict[str, float]:
    """{name: largest finite |value|} of the floating tensors that ``dtype`` cannot hold: casting
    would turn those values into inf."""
    target = _numpy_dtype(dtype or "float32")
    out = {}
    for name, value in tensors.items():
        value = np.asarray(value)
        if value.dtype.kind != "f" or value.size == 0 or value.dtype == target:
            continue
        magnitude = np.abs(value)
        largest = magnitude.max(initial=0.0, where=np.isfinite(magnitude))
        with np.errstate(over="ignore"):
            if np.isinf(np.asarray(largest, dtype=value.dtype).astype(target)):
                out[name] = float(largest)
    return out


def copy_tokenizer(src_dir: str | None, folder: str) -> None:
    """Copy the tokenizer files that ``src_dir`` has into ``folder``."""
    if not src_dir or not os.path.isdir(src_dir):
        return
    for name in TOKENIZER_FILES:
        path = os.path.join(src_dir, name)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(folder, name))


# ------------------------------------------------------------------ Hugging Face checkpoint directories
def read_checkpoint_dir(src: str, *, head: str | heads.Task | None = None, config_path: str | None = None,
                        generator: bool = False) -> Loaded:
    """A Hugging Face checkpoint directory (any of its weight files) for ``head``'s model."""
    if generator:
        raise ValueError(f"{src}: --generator applies to original TF1 checkpoints only")
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: no such checkpoint directory, .keras file or TF1 checkpoint")
    config = ConvBertConfig.from_pretrained(config_path or src)
    task = heads.get(head) if head is not None else head_from_config(config, source=config_path or src)
    result = ck.load_for_model(config, task, src)
    if result.missing_keys:
        raise ck.CheckpointError(f"{src}: missing weights for {task.class_name}: {result.missing_keys}")
    return Loaded(config, task, result.tensors, src, {k: "not used by " + task.class_name
                                                      for k in result.unexpected_keys}, src)


def _is_checkpoint_dir(path: str) -> bool:
    return os.path.isdir(path) and not ck.is_tf1_checkpoint(path)


def _dir_writer(weights: Callable[[str, ConvBertConfig, heads.Task, dict], None]) -> Callable[..., None]:
    def write(loaded: Loaded, folder: str, *, dtype: str | None = None, progress: bool = False) -> None:
        config = loaded.config.replace(dtype=dtype) if dtype else loaded.config
        os.makedirs(folder, exist_ok=True)
        config.save_pretrained(folder)
        weights(folder, config, loaded.head, cast(loaded.tensors, dtype))
        copy_tokenizer(loaded.tokenizer_dir, folder)

    return write


def _safetensors(folder: str, config, task, tensors) -> None:
    ck.write_safetensors(os.path.join(folder, ck.SAFETENSORS_NAME), tensors)


def _pytorch_bin(folder: str, config, task, tensors) -> None:
    ck.write_pytorch_bin(os.path.join(folder, ck.PYTORCH_BIN_NAME), tensors)


def _hf_tf_h5(folder: str, config, task, tensors) -> None:
    ck.write_hf_tf_h5(os.path.join(folder, ck.TF_H5_NAME), config, task, tensors)


# ------------------------------------------------------------------ the authors' TF1 checkpoints
# What an original pre-training checkpoint holds besides the model: reported, never loaded. Inside
# the imported scope nothing is skipped: a name the weight table lacks there (a layer more than the
# config says) is an error.
_TF1_NOT_MODEL = (
    (re.compile(r".*/adam_[mv]$"), "optimizer slot"),
    (re.compile(r"^global_step$"), "training step counter"),
)
# The RTD head, when the import does not take it (ConvBertForPreTraining does).
_TF1_RTD_HEAD = (re.compile(r"^discriminator_predictions/"),
                 "replaced-token-detection head (import it with --pretraining)")
# The scope the other import reads, by the scope being imported. The embeddings under
# electra/embeddings/ are shared, so the generator import uses them (they are never skipped there).
_TF1_OTHER_SCOPE = {
    "electra": (re.compile(r"^generator(_predictions)?/"), "generator (import it with --generator or --pretraining)"),
    "generator": (re.compile(r"^electra/"), "discriminator (the generator import does not use it)"),
}
TF1_GENERATOR_CONFIG = "generator_config.json"


def _tf1_skip_reason(name: str, scope: str) -> str | None:
    """Why a TF1 variable that no spec uses is skipped, or None if it must not be."""
    for pattern, why in (*_TF1_NOT_MODEL, _TF1_RTD_HEAD, _TF1_OTHER_SCOPE[scope]):
        if pattern.match(name):
            return why
    return None


def _tf1_folder(src: str) -> str:
    return src if os.path.isdir(src) else os.path.dirname(src) or "."


def _tf1_config(src: str, config_path: str | None, generator: bool) -> ConvBertConfig:
    default_config = os.path.join(_tf1_folder(src), TF1_GENERATOR_CONFIG if generator else CONFIG_NAME)
    config_file = config_path or default_config
    if not os.path.exists(config_file):
        raise FileNotFoundError(
            f"{src}: a TF1 checkpoint carries no config; expected {default_config} (or pass --config)"
        )
    return ConvBertConfig.from_pretrained(config_file)


def read_tf1(src: str, *, head: str | heads.Task | None = None, config_path: str | None = None,
             generator: bool = False, raw: dict[str, np.ndarray] | None = None) -> Loaded:
    """An original TF1 checkpoint: the discriminator as ``ConvBertModel`` (or ``ConvBertForPreTraining``,
    its replaced-token-detection head included, with ``head="pretraining"``), or the generator as a
    masked LM. ``raw``: the checkpoint's variables, when already read."""
    allowed = (heads.MASKED_LM,) if generator else (heads.MODEL, heads.PRETRAINING)
    task = heads.get(head) if head is not None else allowed[0]
    if task not in allowed:
        raise ValueError(f"{src}: a TF1 checkpoint imports as {allowed[0].class_name}"
                         + ("" if generator else " (its generator with --generator, both with --pretraining)"))
    folder = _tf1_folder(src)
    config = _tf1_config(src, config_path, generator)
    raw = ck.read_tf1_checkpoint(src) if raw is None else raw
    ck.check_layer_count(config, raw, "tf1", tf1_scope=task.tf1_scope, source=f"{src} ({task.tf1_scope}/)")
    canonical, _rest = ck.from_format(config, task, raw, "tf1", source=src)
    specs = wm.model_specs(config, task)
    missing = [s.tf1 for s in specs if s.name not in canonical]
    if missing:
        raise ck.CheckpointError(
            f"{src}: TF1 checkpoint lacks {len(missing)} required variable(s): {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "") + " (does the config match the checkpoint?)"
        )
    used = {s.tf1 for s in specs}
    skipped: dict[str, str] = {}
    unknown = []
    for name in sorted(set(raw) - used):
        why = _tf1_skip_reason(name, task.tf1_scope)
        if why is None:
            unknown.append(name)
        else:
            skipped[name] = why
    if unknown:
        raise ck.CheckpointError(
            f"{src}: {len(unknown)} variable(s) match nothing in the weight table: {', '.join(unknown[:8])}"
            " (does the config match the checkpoint?)"
        )
    return Loaded(config.replace(architectures=[task.class_name]), task, canonical, src, skipped, folder)


# ------------------------------------------------------------------ pretraining directories
@dataclass
class PretrainingLoaded:
    """Both models of replaced-token detection, as read from a TF1 checkpoint or a pretraining directory."""

    discriminator: Loaded  # ConvBertForPreTraining (backbone + RTD head)
    generator: Loaded  # ConvBertForMaskedLM, its embeddings equal to the discriminator's
    knobs: PretrainingConfig
    source: str

    @property
    def skipped(self) -> dict[str, str]:
        """What neither model used."""
        both = set(self.discriminator.skipped) & set(self.generator.skipped)
        return {k: self.discriminator.skipped[k] for k in sorted(both)}

    @property
    def count(self) -> int:
        return self.discriminator.count + self.generator.count


def read_tf1_pretraining(src: str, *, config_path: str | None = None,
                         generator_config_path: str | None = None) -> PretrainingLoaded:
    """An original TF1 pre-training checkpoint as a pretraining directory's two models.

    The discriminator comes with its replaced-token-detection head (``discriminator_predictions``),
    the generator reads the shared ``electra/embeddings``. The knobs are the authors' defaults,
    with the generator size the two configs imply.
    """
    if generator_config_path is None:
        generator_config_path = os.path.join(_tf1_folder(src), TF1_GENERATOR_CONFIG)
        if not os.path.exists(generator_config_path):
            raise FileNotFoundError(f"{src}: a TF1 checkpoint carries no config; expected the generator's in "
                                    f"{generator_config_path} (or pass --generator-config)")
    raw = ck.read_tf1_checkpoint(src)
    disc = read_tf1(src, head=heads.PRETRAINING, config_path=config_path, raw=raw)
    gen = read_tf1(src, generator=True, config_path=generator_config_path, raw=raw)
    check_shareable(disc.config, gen.config, source=generator_config_path or src)
    knobs = PretrainingConfig(generator_size=gen.config.hidden_size / disc.config.hidden_size)
    return PretrainingLoaded(disc, gen, knobs, src)


def read_pretraining(src: str) -> PretrainingLoaded:
    """A pretraining directory (any weight file format in its two model folders)."""
    _config, _gen, knobs = read_pretraining_dir(src)
    layout = PretrainingDir(src)
    disc = read_checkpoint_dir(layout.discriminator, head=heads.PRETRAINING)
    gen = read_checkpoint_dir(layout.generator, head=heads.MASKED_LM)
    return PretrainingLoaded(disc, gen, knobs, src)


def write_pretraining(loaded: PretrainingLoaded, folder: str, fmt: Format, *, dtype: str | None = None,
                      progress: bool = False) -> None:
    """Write both models with ``fmt``'s directory writer, and the knobs, into ``folder``."""
    if fmt.kind != "directory" or fmt.write is None:
        raise ValueError(f"--pretraining writes two checkpoint directories: --to {fmt.name} is not a directory format")
    layout = PretrainingDir(folder)
    os.makedirs(folder, exist_ok=True)
    fmt.write(loaded.discriminator, layout.discriminator, dtype=dtype, progress=progress)
    fmt.write(loaded.generator, layout.generator, dtype=dtype, progress=progress)
    loaded.knobs.save_pretrained(folder)


def register(registry: FormatRegistry) -> None:
    """Add the framework-free formats to ``registry``."""
    registry.register(Format("safetensors", "directory", "Hugging Face directory with model.safetensors",
                             read=read_checkpoint_dir, write=_dir_writer(_safetensors), detect=_is_checkpoint_dir))
    registry.register(Format("pytorch-bin", "directory", "Hugging Face directory with pytorch_model.bin",
                             framework="torch", extra="torch", write=_dir_writer(_pytorch_bin)))
    # HDF5 has no bfloat16 type: h5py would store opaque 2-byte records ("|V2") that neither HF's
    # TensorFlow loader nor ours can read, so bfloat16 is refused for this format.
    registry.register(Format("hf-tf-h5", "directory", "Hugging Face TensorFlow directory with tf_model.h5",
                             write=_dir_writer(_hf_tf_h5), dtypes=("float32", "float16")))
    registry.register(Format("tf1", "directory", "the authors' original TF1 checkpoint (read only)",
                             framework="tensorflow", extra="tf", read=read_tf1, detect=ck.is_tf1_checkpoint))
