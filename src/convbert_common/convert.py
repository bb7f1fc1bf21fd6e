"""Checkpoint conversion between formats, driven only by the weight table.

``convert(src, dst, to=...)`` reads any supported source into canonical tensors, checks them against
the model's specs (every tensor mapped exactly once, shapes checked), and writes the destination
into a temporary directory that is renamed into place only when everything succeeded. The
tokenizer files travel along.

Sources: a checkpoint directory (model.safetensors, pytorch_model.bin or tf_model.h5), a ``.keras``
file, or an original TF1 checkpoint of the ConvBERT authors (``electra/...``; ``generator=True``
imports the generator as a masked LM). Destinations: see ``FORMATS``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from convbert_common import checkpoint as ck
from convbert_common import weight_map as wm
from convbert_common.config import CONFIG_NAME, ConvBertConfig
from convbert_common.fileio import atomic_directory, atomic_path

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "pytorch-bin", "keras", "keras-weights", "hf-tf-h5")
DTYPES = ("float32", "float16", "bfloat16")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# What an original pre-training checkpoint holds besides the model: reported, never loaded.
_TF1_SKIPPED = (
    (re.compile(r".*/adam_[mv]$"), "optimizer slot"),
    (re.compile(r"^global_step$"), "training step counter"),
    (re.compile(r"^discriminator_predictions/"), "replaced-token-detection head (no model class has it)"),
    (re.compile(r"^generator(_predictions)?/"), "generator (import it with --generator)"),
    (re.compile(r"^electra/"), "discriminator (the generator import does not use it)"),
)


@dataclass
class Loaded:
    config: ConvBertConfig
    head: str
    tensors: dict[str, np.ndarray]  # canonical names and layouts, validated against the specs
    source: str
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was not loaded
    tokenizer_dir: str | None = None
    count: int = 0  # tensors read (writing to Keras consumes ``tensors`` to save memory)

    def __post_init__(self) -> None:
        self.count = len(self.tensors)


def head_from_config(config: ConvBertConfig, default: str = "model") -> str:
    return wm.head_of_architectures(config.architectures) or default


def _cast(tensors: dict[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    if dtype in (None, "float32"):
        return {k: v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    if dtype == "float16":
        return {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    if dtype == "bfloat16":
        import ml_dtypes  # shipped with tensorflow / jax; safetensors stores BF16 from it

        return {k: v.astype(ml_dtypes.bfloat16) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    raise ValueError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


# ------------------------------------------------------------------------------------ reading
def read_source(src: str, *, head: str | None = None, generator: bool = False,
                config_path: str | None = None) -> Loaded:
    src = os.fspath(src)
    if src.endswith(".keras"):
        return _read_keras_file(src, head)
    if ck.is_tf1_checkpoint(src):
        return _read_tf1(src, generator=generator, config_path=config_path)
    if generator:
        raise ValueError(f"{src}: --generator applies to original TF1 checkpoints only")
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: no such checkpoint directory, .keras file or TF1 checkpoint")
    config = ConvBertConfig.from_pretrained(config_path or src)
    head = head or head_from_config(config)
    result = ck.load_for_model(config, head, src)
    if result.missing_keys:
        raise ck.CheckpointError(f"{src}: missing weights for {wm.HEAD_CLASSES[head]}: {result.missing_keys}")
    return Loaded(config, head, result.tensors, src, {k: "not used by " + wm.HEAD_CLASSES[head]
                                                       for k in result.unexpected_keys}, src)


def _read_tf1(src: str, *, generator: bool, config_path: str | None) -> Loaded:
    folder = src if os.path.isdir(src) else os.path.dirname(src) or "."
    default_config = os.path.join(folder, "generator_config.json" if generator else CONFIG_NAME)
    config_file = config_path or default_config
    if not os.path.exists(config_file):
        raise FileNotFoundError(
            f"{src}: a TF1 checkpoint carries no config; expected {default_config} (or pass --config)"
        )
    config = ConvBertConfig.from_pretrained(config_file)
    head = "masked_lm" if generator else "model"
    raw = ck.read_tf1_checkpoint(src)
    scope = "generator" if generator else "electra"
    canonical, rest = ck.from_format(config, head, raw, "tf1", tf1_scope=scope, source=src)
    specs = wm.model_specs(config, head, tf1_scope=scope)
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
        why = next((w for pat, w in _TF1_SKIPPED if pat.match(name)), None)
        if why is None:
            unknown.append(name)
        else:
            skipped[name] = why
    if unknown:
        raise ck.CheckpointError(
            f"{src}: {len(unknown)} variable(s) match nothing in the weight table: {', '.join(unknown[:8])}"
            " (does the config match the checkpoint?)"
        )
    if generator:
        config = config.replace(architectures=["ConvBertForMaskedLM"])
    else:
        config = config.replace(architectures=["ConvBertModel"])
    return Loaded(config, head, canonical, src, skipped, folder)


def _read_keras_file(src: str, head: str | None) -> Loaded:
    try:
        from convbert_tf import io as tf_io
        from convbert_tf import keras_file
    except ImportError as exc:
        raise ImportError(
            f"{src}: reading a .keras file needs the Keras side (pip install 'convbert[tf]'): {exc}"
        ) from exc
    import keras

    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such .keras file")
    try:
        # The weights straight from the archive, by the layout Keras gives the model: no model built.
        config, head_name, tensors, skipped = keras_file.read_keras_file(src)
    except keras_file.LayoutMismatch as exc:
        logger.info("%s: not in this Keras' layout (%s); loading it through keras.saving.load_model", src, exc)
    else:
        _check_head(src, head, head_name)
        return Loaded(config, head_name, tensors, src, skipped)
    try:
        with tf_io.skip_init():  # every variable is read from the file right after
            model = keras.saving.load_model(src, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise ValueError(f"{src}: not a loadable .keras file ({exc})") from None
    head_name = getattr(model, "head_name", None)
    if head_name not in wm.HEADS:
        raise ValueError(f"{src}: holds a {type(model).__name__}, not a ConvBERT model")
    _check_head(src, head, head_name)
    return Loaded(model.config, head_name, tf_io.canonical_arrays(model), src)


def _check_head(src: str, wanted: str | None, found: str) -> None:
    if wanted is not None and wanted != found:
        raise ValueError(f"{src}: holds a {wm.HEAD_CLASSES[found]}, not a {wm.HEAD_CLASSES[wanted]}")


# ------------------------------------------------------------------------------------ writing
def _write_keras(loaded: Loaded, target: str, weights_only: bool, progress: bool) -> None:
    try:
        from convbert_tf import keras_file
    except ImportError as exc:
        raise ImportError(f"writing Keras files needs the Keras side (pip install 'convbert[tf]'): {exc}") from exc

    # Written tensor by tensor in the layout Keras' own writer uses, without building the model; the
    # canonical arrays are freed as they are written (``consume``).
    with tqdm(total=len(loaded.tensors), desc="writing " + ("keras-weights" if weights_only else "keras"),
              disable=not progress, leave=False) as bar:
        kwargs = dict(consume=True, source=loaded.source, on_tensor=lambda _name: bar.update())
        if weights_only:
            keras_file.write_weights(target, loaded.config, loaded.head, loaded.tensors, **kwargs)
        else:
            keras_file.write_keras_file(target, loaded.config, loaded.head, loaded.tensors, **kwargs)


def write_checkpoint(loaded: Loaded, dst: str, to: str, *, dtype: str | None = None, force: bool = False,
                     progress: bool = True) -> str:
    """Write ``loaded`` as ``to`` at ``dst`` atomically; returns the path written."""
    if to not in FORMATS:
        raise ValueError(f"unknown --to {to!r}; choose one of {', '.join(FORMATS)}")
    dst = os.fspath(dst)
    config = loaded.config
    if dtype:
        config = config.replace(dtype=dtype)

    if to in ("keras", "keras-weights"):
        suffix = ".keras" if to == "keras" else ".weights.h5"
        target = dst if dst.endswith(suffix) else None
        if target is None:
            raise ValueError(f"--to {to} writes a single file: give a destination ending in {suffix}, got {dst}")
        if os.path.exists(target) and not force:
            raise FileExistsError(f"{target} already exists (pass --force to overwrite)")
        if dtype not in (None, "float32"):
            raise ValueError(f"--to {to} stores float32 variables; --dtype {dtype} applies to the other formats")
        with atomic_path(target) as tmp:
            _write_keras(loaded, tmp, weights_only=(to == "keras-weights"), progress=progress)
        return target

    tensors = _cast(loaded.tensors, dtype)
    steps: list[tuple[str, Callable[[str], None]]] = []

    def weights(folder: str) -> None:
        if to == "safetensors":
            ck.write_safetensors(os.path.join(folder, ck.SAFETENSORS_NAME), tensors)
        elif to == "pytorch-bin":
            ck.write_pytorch_bin(os.path.join(folder, ck.PYTORCH_BIN_NAME), tensors)
        else:
            ck.write_hf_tf_h5(os.path.join(folder, ck.TF_H5_NAME), config, loaded.head, tensors)

    steps.append(("config", lambda folder: config.save_pretrained(folder)))
    steps.append(("weights", weights))
    steps.append(("tokenizer", lambda folder: _copy_tokenizer(loaded.tokenizer_dir, folder)))
    with atomic_directory(dst, overwrite=force) as tmp:
        for _name, step in tqdm(steps, desc=f"writing {to}", disable=not progress, leave=False):
            step(tmp)
    return dst


def _copy_tokenizer(src_dir: str | None, folder: str) -> None:
    if not src_dir or not os.path.isdir(src_dir):
        return
    for name in TOKENIZER_FILES:
        path = os.path.join(src_dir, name)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(folder, name))


def convert(src: str, dst: str, *, to: str = "safetensors", dtype: str | None = None, force: bool = False,
            generator: bool = False, head: str | None = None, config_path: str | None = None,
            progress: bool = True) -> Loaded:
    """Convert ``src`` to ``dst``; returns what was read (with the names that were skipped)."""
    if to not in FORMATS:
        raise ValueError(f"unknown --to {to!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if os.path.exists(dst) and not force:
        raise FileExistsError(f"{dst} already exists (pass --force to overwrite)")
    loaded = read_source(src, head=head, generator=generator, config_path=config_path)
    for name, why in sorted(loaded.skipped.items()):
        logger.info("skipped %s: %s", name, why)
    write_checkpoint(loaded, dst, to, dtype=dtype, force=force, progress=progress)
    return loaded
