"""Checkpoint conversion between any two formats, driven by the format registry and the weight table.

``convert(src, dst, to=...)`` finds the source's format, reads it into canonical tensors (every
tensor mapped exactly once, shapes checked against the model's specs), and has the destination
format write them into a temporary path that replaces ``dst`` only when everything succeeded. The
tokenizer files travel along.

The registry holds the framework-free formats of ``convbert_common.formats`` and the Keras ones of
``convbert_tf.formats``. The latter are registered on first use: importing Keras takes seconds,
and a conversion between framework-free formats, or ``--help``, must not pay for it.
"""

from __future__ import annotations

import importlib
import logging
import os

from convbert_common import formats, heads
from convbert_common import pretraining as ptc
from convbert_common.fileio import atomic_directory, atomic_path
from convbert_common.formats import DTYPES, Format, FormatRegistry, Loaded

logger = logging.getLogger(__name__)

# Formats provided by a framework package: (module, its format names, its pip extra). Registered
# from that module on first use.
_DEFERRED = (("convbert_tf.formats", ("keras", "keras-weights"), "tf"),)


class Registry(FormatRegistry):
    """The registry of the ``convbert`` command: framework formats load when first asked for."""

    def __init__(self) -> None:
        super().__init__()
        formats.register(self)
        self._deferred = {name: (module, extra) for module, names, extra in _DEFERRED for name in names}

    def names(self) -> tuple[str, ...]:
        return (*super().names(), *(n for n in self._deferred if n not in self._formats))

    def writable(self) -> tuple[str, ...]:
        return tuple(n for n in self.names() if n in self._deferred or self._formats[n].write is not None)

    def _load(self, name: str) -> None:
        module, extra = self._deferred[name]
        try:
            importlib.import_module(module).register(self)
        except ImportError as exc:
            raise ImportError(f"the {name} format needs {module.split('.')[0]} (pip install 'convbert[{extra}]'): "
                              f"{exc}") from exc

    def get(self, name: str) -> Format:
        if name not in self._formats and name in self._deferred:
            self._load(name)
        return super().get(name)

    def source_format(self, path: str) -> Format | None:
        # Only a .keras source needs its module (and raises, naming the extra, where Keras is missing).
        if path.endswith(".keras"):
            self.get("keras")
        return super().source_format(path)


def registry() -> Registry:
    return Registry()


def read_source(src: str, *, head=None, generator: bool = False, config_path: str | None = None,
                registry_: Registry | None = None) -> Loaded:
    """Read any supported checkpoint: a directory, a ``.keras`` file, or an original TF1 checkpoint."""
    src = os.fspath(src)
    reg = registry_ or registry()
    fmt = reg.source_format(src)
    if fmt is None:
        if not os.path.exists(src):
            raise FileNotFoundError(f"{src}: no such checkpoint directory, .keras file or TF1 checkpoint")
        raise ValueError(f"{src}: not a checkpoint directory, .keras file or TF1 checkpoint")
    return fmt.read(src, head=head, config_path=config_path, generator=generator)


def write_checkpoint(loaded: Loaded, dst: str, to: str, *, dtype: str | None = None, force: bool = False,
                     progress: bool = True, registry_: Registry | None = None) -> str:
    """Write ``loaded`` as format ``to`` at ``dst`` atomically; returns the path written."""
    reg = registry_ or registry()
    fmt = _writable(reg, to)
    dst = os.fspath(dst)
    if fmt.framework == "keras" and loaded.head is heads.PRETRAINING:
        raise ValueError(f"--to {to}: ConvBertForPreTraining has no Keras class yet; write a checkpoint directory "
                         "(--to safetensors), or convert the backbone alone with --head model")
    if dtype is not None and dtype not in fmt.dtypes:
        raise ValueError(f"--to {to} stores {', '.join(fmt.dtypes)}; --dtype {dtype} applies to the other formats")
    if fmt.kind == "file":
        if not dst.endswith(fmt.suffix):
            raise ValueError(f"--to {to} writes a single file: give a destination ending in {fmt.suffix}, got {dst}")
        if os.path.exists(dst) and not force:
            raise FileExistsError(f"{dst} already exists (pass --force to overwrite)")
        with atomic_path(dst) as tmp:
            fmt.write(loaded, tmp, dtype=dtype, progress=progress)
        return dst
    with atomic_directory(dst, overwrite=force) as tmp:
        fmt.write(loaded, tmp, dtype=dtype, progress=progress)
    return dst


def _writable(reg: Registry, to: str) -> Format:
    if to not in reg.names():
        raise ValueError(f"unknown --to {to!r}; choose one of {', '.join(reg.writable())}")
    fmt = reg.get(to)
    if fmt.write is None:
        raise ValueError(f"--to {to}: {fmt.description}; choose one of {', '.join(reg.writable())}")
    return fmt


def convert(src: str, dst: str, *, to: str = "safetensors", dtype: str | None = None, force: bool = False,
            generator: bool = False, head=None, config_path: str | None = None,
            progress: bool = True) -> Loaded:
    """Convert ``src`` to ``dst``; returns what was read (with the names that were skipped)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if ptc.is_pretraining_dir(src):
        raise ValueError(f"{src} is a pretraining directory (discriminator/ + generator/): convert it with "
                         f"--pretraining, or convert one of its model folders")
    reg = registry()
    fmt = _writable(reg, to)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype is not None and dtype not in fmt.dtypes:
        raise ValueError(f"--to {to} stores {', '.join(fmt.dtypes)}; --dtype {dtype} applies to the other formats")
    if os.path.exists(dst) and not force:
        raise FileExistsError(f"{dst} already exists (pass --force to overwrite)")
    loaded = read_source(src, head=head, generator=generator, config_path=config_path, registry_=reg)
    for name, why in sorted(loaded.skipped.items()):
        logger.info("skipped %s: %s", name, why)
    write_checkpoint(loaded, dst, to, dtype=dtype, force=force, progress=progress, registry_=reg)
    return loaded


def convert_pretraining(src: str, dst: str, *, to: str = "safetensors", dtype: str | None = None,
                        force: bool = False, config_path: str | None = None,
                        generator_config_path: str | None = None, progress: bool = True,
                        head=None, generator: bool = False) -> formats.PretrainingLoaded:
    """Write a pretraining directory at ``dst`` from an original TF1 checkpoint or a pretraining directory.

    Both models come along: the discriminator with its replaced-token-detection head, the
    generator sharing its embeddings; ``convbert pretrain --init-from DST`` continues from it.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if generator:
        raise ValueError("--pretraining imports the generator and the discriminator together: drop --generator")
    if head is not None and heads.get(head) is not heads.PRETRAINING:
        raise ValueError(f"--pretraining writes ConvBertForPreTraining + ConvBertForMaskedLM: drop --head {head}")
    reg = registry()
    fmt = _writable(reg, to)
    if dtype is not None and dtype not in fmt.dtypes:
        raise ValueError(f"--to {to} stores {', '.join(fmt.dtypes)}; --dtype {dtype} applies to the other formats")
    if os.path.exists(dst) and not force:
        raise FileExistsError(f"{dst} already exists (pass --force to overwrite)")
    if ptc.is_pretraining_dir(src):
        if config_path or generator_config_path:
            raise ValueError(f"{src} is a pretraining directory: its configs are used; drop --config / "
                             "--generator-config")
        loaded = formats.read_pretraining(src)
    elif reg.get("tf1").detect(src):
        loaded = formats.read_tf1_pretraining(src, config_path=config_path,
                                              generator_config_path=generator_config_path)
    elif not os.path.exists(src):
        raise FileNotFoundError(f"{src}: no such TF1 checkpoint or pretraining directory")
    else:
        raise ValueError(f"{src}: --pretraining reads an original TF1 checkpoint or a pretraining directory "
                         f"(with {ptc.PRETRAINING_CONFIG_NAME})")
    for name, why in sorted(loaded.skipped.items()):
        logger.info("skipped %s: %s", name, why)
    with atomic_directory(dst, overwrite=force) as tmp:
        formats.write_pretraining(loaded, tmp, fmt, dtype=dtype, progress=progress)
    return loaded
