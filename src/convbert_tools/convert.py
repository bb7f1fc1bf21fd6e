"""Checkpoint conversion between any two formats, driven by the format registry and the weight table.

``convert(src, dst, to=...)`` finds the source's format, reads it into canonical tensors (every
tensor mapped exactly once, shapes checked against the model's specs), and has the destination
format write them into a temporary path that replaces ``dst`` only when everything succeeded. The
tokenizer files travel along.

What ``dst`` may be: never the source, a folder that contains the source or the current
directory, nor a path inside a source directory. An existing ``dst`` is replaced only with
``force``, and only when it is a previous output: a single file for the file formats, or a
directory holding nothing but checkpoint files (``OUTPUT_FILES``, and sub-directories of the same)
for the directory formats. Anything else is refused with the list of what would be lost. Without
``force`` the final rename never replaces a ``dst`` that appeared while the output was written.
Temporaries left by killed runs are named so that ``convert`` warns about them and
``convbert clean DIR`` removes them (``convbert_common.fileio``).

The registry holds the framework-free formats of ``convbert_common.formats`` and the Keras ones of
``convbert_tf.formats``. The latter are registered on first use: importing Keras takes seconds,
and a conversion between framework-free formats, or ``--help``, must not pay for it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import re
import zipfile

from convbert_common import checkpoint as ck
from convbert_common import fileio, formats, heads
from convbert_common import pretraining as ptc
from convbert_common.config import CONFIG_NAME
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


# ------------------------------------------------------------------ what a destination may be
# The files a checkpoint directory of ours holds: ``--force`` replaces a directory of these only.
OUTPUT_FILES = frozenset((CONFIG_NAME, ck.SAFETENSORS_NAME, ck.SAFETENSORS_INDEX_NAME, ck.PYTORCH_BIN_NAME,
                          ck.TF_H5_NAME, "pretraining_config.json", *formats.TOKENIZER_FILES))
_SHARD = re.compile(r"^model-\d+-of-\d+\.safetensors$")
_LISTED = 10  # names shown when refusing to replace a directory


def _not_ours(directory: str, below: str = "") -> list[str]:
    """Entries of ``directory`` (recursively) that no conversion of ours writes."""
    out = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        shown = os.path.join(below, name)
        if os.path.isdir(path) and not os.path.islink(path):
            out += _not_ours(path, shown)
        elif not (name in OUTPUT_FILES or _SHARD.match(name)) or not os.path.isfile(path):
            out.append(shown)
    return out


def check_replaceable(dst: str, kind: str) -> None:
    """Raise FileExistsError unless ``dst`` is a previous output that ``--force`` may replace.

    ``kind`` is the destination format's: "file" (an existing regular file is replaced) or
    "directory" (an existing directory holding nothing but checkpoint files is).
    """
    if kind == "file":
        if not os.path.isfile(dst):
            raise FileExistsError(f"{dst} exists and is not a file; --force replaces a previous output file only")
        return
    if not os.path.isdir(dst):
        raise FileExistsError(f"{dst} exists and is not a directory; --force replaces a previous checkpoint "
                              "directory only")
    lost = _not_ours(dst)
    if lost:
        more = f" and {len(lost) - _LISTED} more" if len(lost) > _LISTED else ""
        raise FileExistsError(
            f"{dst} holds {len(lost)} "
            + ("entry that is not a checkpoint file" if len(lost) == 1 else "entries that are not checkpoint files")
            + ", "
            f"which --force would delete: {', '.join(lost[:_LISTED])}{more}; nothing was written "
            "(remove them yourself, or choose another destination)"
        )


def _source_paths(src: str, config_path: str | None) -> list[tuple[str, str]]:
    """What a conversion reads, as (the name to show, the real path): the source (a TF1 prefix: its
    files) and the --config file."""
    paths = [(src, src)] if os.path.lexists(src) else [(src, p) for p in sorted(glob.glob(glob.escape(src) + ".*"))]
    if config_path is not None:
        paths.append((config_path, config_path))
    return [(shown, os.path.realpath(p)) for shown, p in paths]


def check_destination(src: str, dst: str, config_path: str | None = None) -> None:
    """Refuse a destination whose replacement would delete the source or pull the working directory away."""
    target = os.path.realpath(dst)
    for shown, source in _source_paths(src, config_path):
        if target == source:
            raise ValueError(f"{dst} is the source {shown}: converting in place would destroy it; "
                             "choose another destination")
        if source.startswith(target + os.sep):
            raise ValueError(f"{dst} contains the source {shown}: replacing it would delete the source; "
                             "choose another destination")
        if os.path.isdir(source) and target.startswith(source + os.sep):
            raise ValueError(f"{dst} is inside the source directory {shown}: the conversion would change its "
                             "source; choose a destination outside it")
    cwd = os.path.realpath(os.getcwd())
    if cwd == target or cwd.startswith(target + os.sep):
        raise ValueError(f"{dst} is {'' if cwd == target else 'a parent of '}the current directory: "
                         "choose a new destination below or beside it")


def warn_leftovers(dst: str) -> list[fileio.Leftover]:
    """Log a warning naming the temporaries of killed runs beside ``dst``; returns them."""
    parent = os.path.dirname(os.path.abspath(dst))
    found = fileio.leftovers(parent)
    if found:
        size = sum(f.size for f in found) / 1e6
        logger.warning("%s holds %d temporar%s of interrupted runs (%s; %.1f MB): remove %s with "
                       "`convbert clean %s`", parent, len(found), "y" if len(found) == 1 else "ies",
                       ", ".join(os.path.basename(f.path) for f in found), size,
                       "it" if len(found) == 1 else "them", parent)
    return found


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
    with _naming(src):
        return fmt.read(src, head=head, config_path=config_path, generator=generator)


@contextlib.contextmanager
def _naming(path: str):
    """Make an OSError, UnicodeDecodeError or BadZipFile that names no file name ``path`` (what was
    being read or written): "short read at 1234", "'utf-8' codec can't decode byte" or "Bad CRC-32
    for file 'config.json'" alone do not say where."""
    try:
        yield
    except UnicodeDecodeError as exc:
        if path in str(exc):
            raise
        raise ValueError(f"{path}: a file in it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except zipfile.BadZipFile as exc:  # zipfile's messages name the member, never the archive
        if path in str(exc):
            raise
        raise ValueError(f"{path}: not a readable zip archive ({exc})") from None
    except OSError as exc:
        if exc.filename is not None or path in str(exc) or isinstance(exc, FileExistsError):
            raise
        if exc.errno is None:
            raise OSError(f"{path}: {exc}") from None
        raise OSError(exc.errno, f"{path}: {exc.strerror or exc}") from None


def check_overflow(loaded: Loaded, dtype: str | None) -> None:
    """Refuse a ``--dtype`` that would turn finite weights into inf, naming the tensors."""
    over = formats.overflowing(loaded.tensors, dtype)
    if over:
        shown = ", ".join(f"{k} (|x| up to {v:.4g})" for k, v in list(over.items())[:8])
        more = f" and {len(over) - 8} more" if len(over) > 8 else ""
        raise ValueError(f"{loaded.source}: {len(over)} tensor(s) hold values beyond the range of "
                         f"{dtype or 'float32'}, which would be stored as inf: {shown}{more}; nothing was written "
                         "(pass --allow-overflow to write them anyway)")


def write_checkpoint(loaded: Loaded, dst: str, to: str, *, dtype: str | None = None, force: bool = False,
                     progress: bool = True, registry_: Registry | None = None, allow_overflow: bool = False) -> str:
    """Write ``loaded`` as format ``to`` at ``dst`` atomically; returns the path written."""
    reg = registry_ or registry()
    fmt = _writable(reg, to)
    dst = os.fspath(dst)
    if fmt.framework == "keras" and loaded.head is heads.PRETRAINING:
        raise ValueError(f"--to {to}: ConvBertForPreTraining is written as a checkpoint directory (--to "
                         "safetensors), which convbert_tf.ConvBertForPreTraining.from_pretrained reads; or convert "
                         "the backbone alone with --head model")
    if dtype is not None and dtype not in fmt.dtypes:
        raise ValueError(f"--to {to} stores {', '.join(fmt.dtypes)}; --dtype {dtype} applies to the other formats")
    if not allow_overflow:
        check_overflow(loaded, dtype)
    if fmt.kind == "file" and not dst.endswith(fmt.suffix):
        raise ValueError(f"--to {to} writes a single file: give a destination ending in {fmt.suffix}, got {dst}")
    if os.path.lexists(dst):
        if not force:
            raise FileExistsError(f"{dst} already exists (pass --force to overwrite)")
        check_replaceable(dst, fmt.kind)
    try:
        with _naming(dst), _atomic_target(fmt, dst, force) as tmp:
            try:
                fmt.write(loaded, tmp, dtype=dtype, progress=progress)
            except OSError as exc:
                # Name the file the user asked for, not the temporary it was being written as.
                if exc.errno and exc.filename and os.fspath(exc.filename).startswith(tmp):
                    name = dst + os.fspath(exc.filename)[len(tmp):]
                    raise OSError(exc.errno, f"cannot write ({exc.strerror})", name) from None
                raise
    except FileExistsError:
        if force or not os.path.lexists(dst):
            raise
        raise FileExistsError(f"{dst} appeared while this conversion was writing it (another run?); it was left "
                              "as it is (pass --force to replace it)") from None
    return dst


def _atomic_target(fmt: Format, dst: str, force: bool):
    if fmt.kind == "file":
        return atomic_path(dst, overwrite=force)
    return atomic_directory(dst, overwrite=force, before_replace=lambda path: check_replaceable(path, "directory"))


def _writable(reg: Registry, to: str) -> Format:
    if to not in reg.names():
        raise ValueError(f"unknown --to {to!r}; choose one of {', '.join(reg.writable())}")
    fmt = reg.get(to)
    if fmt.write is None:
        raise ValueError(f"--to {to}: {fmt.description}; choose one of {', '.join(reg.writable())}")
    return fmt


def convert(src: str, dst: str, *, to: str = "safetensors", dtype: str | None = None, force: bool = False,
            generator: bool = False, head=None, config_path: str | None = None,
            progress: bool = True, allow_overflow: bool = False) -> Loaded:
    """Convert ``src`` to ``dst``; returns what was read (with the names that were skipped)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if ptc.is_pretraining_dir(src):
        raise ValueError(f"{src} is a pretraining directory (discriminator/ + generator/): convert it with "
                         f"--pretraining, or convert one of its model folders")
    reg = registry()
    fmt = _writable(reg, to)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    _prepare_destination(src, dst, config_path, fmt, to, dtype, force, fmt.kind)
    loaded = read_source(src, head=head, generator=generator, config_path=config_path, registry_=reg)
    for name, why in sorted(loaded.skipped.items()):
        logger.info("skipped %s: %s", name, why)
    write_checkpoint(loaded, dst, to, dtype=dtype, force=force, progress=progress, registry_=reg,
                     allow_overflow=allow_overflow)
    return loaded


def _prepare_destination(src: str, dst: str, config_path: str | None, fmt, to: str, dtype: str | None,
                         force: bool, kind: str) -> None:
    """Refuse a dtype the format does not store and a destination that may not be written or replaced."""
    if dtype is not None and dtype not in fmt.dtypes:
        raise ValueError(f"--to {to} stores {', '.join(fmt.dtypes)}; --dtype {dtype} applies to the other formats")
    check_destination(src, dst, config_path)
    if os.path.lexists(dst):
        if not force:
            raise FileExistsError(f"{dst} already exists (pass --force to overwrite)")
        check_replaceable(dst, kind)
    warn_leftovers(dst)


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
    _prepare_destination(src, dst, config_path, fmt, to, dtype, force, "directory")
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
    with atomic_directory(dst, overwrite=force,
                          before_replace=lambda path: check_replaceable(path, "directory")) as tmp:
        formats.write_pretraining(loaded, tmp, fmt, dtype=dtype, progress=progress)
    return loaded
