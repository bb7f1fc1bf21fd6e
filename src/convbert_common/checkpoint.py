"""Checkpoint readers and writers over ``{canonical name: np.ndarray}``, driven by the weight table.

Formats: canonical ``model.safetensors`` (HF PyTorch names), HF ``pytorch_model.bin`` (read with
``torch.load(weights_only=True)``; torch imported only then), HF ``tf_model.h5`` (read by name with
h5py) and the authors' original TF1 checkpoints (read through TensorFlow, imported only then).

``load_for_model`` is the one entry the frameworks use: it finds the weights in a directory,
translates them to canonical names and layouts through ``weight_map``, and checks the result
against the model's specs (every shape, every missing and unexpected name) before anything is
assigned, so a failing load leaves the model untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import pickle
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_common.fileio import atomic_path
from convbert_common.layouts import LayoutError, get_layout

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_BIN_NAME = "pytorch_model.bin"
TF_H5_NAME = "tf_model.h5"

# Search order when a directory holds several weight files.
WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_BIN_NAME, TF_H5_NAME)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names file and key."""


# ---------------------------------------------------------------------------------- raw readers
# The safetensors dtype codes read and written here (the ``safetensors`` package knows more: the
# other codes are refused by name). BF16 is widened to float32 on reading: canonical tensors are
# NumPy arrays, and the frameworks cast on assignment.
_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                         "U8": 1, "BOOL": 1}
_SAFETENSORS_WRITABLE = frozenset({"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                                   "uint8", "bool"})


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, each read into its own array (BF16 widened to float32).

    Read through the ``safetensors`` package, which validates the header, the data offsets (no
    overlap, no gap) and that the data covers the file exactly, before any tensor is read. Its
    ``pread`` backend reads each tensor straight into a fresh array: the peak is the tensors
    themselves (its ``mmap`` backend would hold the mapped file beside them).
    """
    path = os.fspath(path)
    with _open_safetensors(path) as fh:
        return {name: _widen_bf16(fh.get_tensor(name)) for name in fh.keys()}


def _widen_bf16(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


@contextlib.contextmanager
def _open_safetensors(path: str):
    """``safe_open`` (NumPy, pread) with its errors turned into a CheckpointError naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        mode = os.stat(path).st_mode  # the real reason (a symlink loop, a directory), which safe_open hides
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: not a regular file")
    try:
        handle = safe_open(path, framework="np", backend="pread")
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_safetensors_problem(path, exc)})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from None
    problem = _header_problem(path)  # the library accepts a tensor aliasing another's bytes: check the spans
    if problem is not None:
        raise CheckpointError(f"{path}: not a readable safetensors file ({problem})")
    with handle as fh:
        for name in fh.keys():
            code = fh.get_slice(name).get_dtype()
            if code not in _SAFETENSORS_ITEMSIZE:
                raise CheckpointError(f"{path}: not a readable safetensors file ({name}: unsupported dtype {code})")
        try:
            yield fh
        except SafetensorError as exc:  # an I/O error while reading a tensor
            raise CheckpointError(f"{path}: {exc}") from None


def _safetensors_problem(path: str, error: Exception) -> str:
    """What is wrong with a file the ``safetensors`` library refused, in words, for the error message.

    The library says "file not fully covered" both for a truncated file and for trailing bytes,
    and names no tensor for a size mismatch: the header is read again here to say which.
    """
    return _header_problem(path) or str(error)


def _header_problem(path: str) -> str | None:
    """What is wrong with a safetensors header and its data spans, or None when they are consistent:
    every tensor's bytes its own (no overlap), no gap, the data covering the file exactly. Nothing of
    an unreadable header is echoed (it may be any file, a key file included)."""
    size = os.path.getsize(path)
    if size < 8:
        return f"{size} bytes, too short for the 8-byte header length"
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if length > size - 8:
            return "its header length does not fit the file: not a safetensors file, or truncated inside the header"
        try:
            header = json.loads(fh.read(length))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            header = None
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file"
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            code, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
            begin, end = int(begin), int(end)
        except (TypeError, KeyError, ValueError):
            return f"{name}: the header entry is not {{dtype, shape, data_offsets}}"
        if code not in _SAFETENSORS_ITEMSIZE:
            return f"{name}: unsupported dtype {code}"
        if end - begin != _SAFETENSORS_ITEMSIZE[code] * math.prod(shape) or begin < 0:
            return f"{name}: data offsets {begin}..{end} do not hold a {code} tensor of shape {shape}"
        spans.append((begin, end, name))
    spans.sort()
    covered, previous = 0, None
    for begin, end, name in spans:
        if begin < covered:
            return f"{name}: data offsets {begin}..{end} overlap those of {previous}"
        if begin > covered:
            return f"{name}: data offsets {begin}..{end} leave bytes {covered}..{begin} unused"
        covered, previous = end, name
    data = size - 8 - length
    if covered > data:
        return f"truncated: the header describes {covered} bytes of tensor data, the file holds {data}"
    if covered < data:
        return f"{data - covered} trailing bytes after the last tensor"
    return None


def read_safetensors_index(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a sharded checkpoint (``model.safetensors.index.json`` and its shards).

    Every shard must be a file inside the index's directory (no absolute path, no ``..``, no
    symlink out of it), and the shards must hold exactly the tensors the ``weight_map`` assigns
    them: a tensor in two shards, or in a shard other than its own, is an error naming both.
    Every header is checked before the first tensor is read (``safetensors_index_files``).
    """
    files = safetensors_index_files(path)
    stack = contextlib.ExitStack()
    with stack:
        handles = {file: stack.enter_context(_open_safetensors(file)) for file in sorted(set(files.values()))}
        return {name: _widen_bf16(handles[file].get_tensor(name)) for name, file in files.items()}


def safetensors_index_files(path: str | os.PathLike) -> dict[str, str]:
    """{tensor name: shard file} of a sharded checkpoint, every shard and header checked (see above)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    weight_map = _read_weight_map(path)
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    files = {shard: _shard_path(path, directory, shard) for shard in shards}
    for shard in sorted(shards):
        with _open_safetensors(files[shard]) as fh:
            keys = set(fh.keys())
        for name in sorted(keys):
            owner = weight_map.get(name)
            if owner is None:
                raise CheckpointError(f"{path}: {name} is in shard {shard}, but the weight_map does not list it")
            if owner != shard:
                raise CheckpointError(f"{path}: {name} is in shard {shard}, but the weight_map assigns it "
                                      f"to shard {owner}")
        missing = sorted(set(shards[shard]) - keys)
        if missing:
            raise CheckpointError(f"{path}: the weight_map assigns {', '.join(missing[:8])} to shard {shard}, "
                                  "which does not hold " + ("them" if len(missing) > 1 else "it"))
    return {name: files[shard] for name, shard in weight_map.items()}


def safetensors_entries(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype code, shape)} of a safetensors file, its header and data spans checked."""
    with _open_safetensors(os.fspath(path)) as fh:
        return {name: (fh.get_slice(name).get_dtype(), tuple(int(d) for d in fh.get_slice(name).get_shape()))
                for name in fh.keys()}


def _read_weight_map(path: str) -> dict[str, str]:
    def no_duplicates(pairs: list[tuple]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                if isinstance(value, str) and isinstance(seen[key], str):
                    raise CheckpointError(f"{path}: {key} is listed twice in the weight_map, in shards "
                                          f"{seen[key]} and {value}")
                raise CheckpointError(f"{path}: malformed safetensors index (the key {key!r} appears twice)")
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8") as fh:
            index = json.load(fh, object_pairs_hook=no_duplicates)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: malformed safetensors index (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:  # its message gives the position only, no text of the file
        raise CheckpointError(f"{path}: malformed safetensors index (not JSON: {exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: malformed safetensors index (not JSON: nested too deeply)") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path}: malformed safetensors index (no weight_map object)")
    bad = [k for k, v in weight_map.items() if not isinstance(v, str) or not v]
    if bad:
        raise CheckpointError(f"{path}: malformed safetensors index (weight_map entry {bad[0]!r} names no shard)")
    return weight_map


def _shard_path(index: str, directory: str, shard: str) -> str:
    """The shard's path, refused unless it is a file inside ``directory`` (symlinks resolved)."""
    parts = shard.replace("\\", "/").split("/")
    if os.path.isabs(shard) or shard.startswith(("/", "\\")) or ".." in parts or "\0" in shard:
        raise CheckpointError(f"{index}: shard {shard!r} is not a file name inside {directory}")
    target = os.path.join(directory, shard)
    real, root = os.path.realpath(target), os.path.realpath(directory)
    snapshots = os.path.dirname(os.path.abspath(directory))
    if os.path.basename(snapshots) == "snapshots" and os.path.basename(os.path.dirname(snapshots)).startswith(
            ("models--", "datasets--")):
        # A Hugging Face cache snapshot: its files are links into the repository's blobs/.
        root = os.path.realpath(os.path.dirname(snapshots))
    if os.path.commonpath([real, root]) != root:
        raise CheckpointError(f"{index}: shard {shard!r} resolves to {real}, outside {directory}")
    return target


def check_h5_storage(fh, source: str) -> None:
    """Refuse an HDF5 file whose datasets are not plain data inside the file itself.

    External storage, virtual datasets and external links make h5py read other local files (a
    crafted weights file could copy any readable file into a converted checkpoint). Contiguous,
    chunked and compact datasets are read from the file alone. Checked before any data is read.
    """
    import h5py

    problems: list[str] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group):
            for child in obj:
                if isinstance(obj.get(child, getlink=True), h5py.ExternalLink):
                    problems.append(f"{posixpath.join(name, child)} is an external link to another file")
            return
        plist = obj.id.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            problems.append(f"dataset {name} is a virtual dataset (its data lives in other files)")
        elif plist.get_external_count():
            problems.append(f"dataset {name} stores its data in external files")
        elif plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
            problems.append(f"dataset {name} has a storage layout this reader does not know")

    visit("/", fh)
    fh.visititems(visit)
    if problems:
        raise CheckpointError(f"{source}: refused, {problems[0]}"
                              + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                              + "; only data stored inside the file is read")


def read_pytorch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs torch (pip install 'convbert[torch]')"
        ) from None
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); was it truncated?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only raises for code it will not run
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True) ({_first_line(exc)}); files that need arbitrary "
            "pickle code are not loaded"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for truncated or corrupt files
        raise CheckpointError(
            f"{path}: not a readable PyTorch file, truncated or corrupt? ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.layout != torch.strided or tensor.is_quantized:
            kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
            raise CheckpointError(f"{path}: entry {name!r} is a {kind} tensor; only dense tensors are weights")
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        try:
            out[name] = tensor.contiguous().numpy().copy()
        except TypeError as exc:  # a dtype NumPy has no counterpart for (float8, uint16 before 2.3, ...)
            raise CheckpointError(f"{path}: entry {name!r} has dtype {tensor.dtype} ({exc})") from None
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_hf_tf_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Datasets of an HF ``tf_model.h5`` by their name inside the model scope.

    HF stores ``<top layer>/<model scope>/<path>:0``; the masked-LM file repeats the embedding
    tables under a second top layer, so repeated paths must hold equal values. Datasets whose data
    is not inside the file are refused before anything is read (``check_h5_storage``).
    """
    import h5py

    path = os.fspath(path)
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as fh:
            check_h5_storage(fh, path)
            names: list[str] = []
            fh.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            datasets = [(n, fh[n][()]) for n in names]
    except OSError as exc:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({exc})") from None
    for full, value in datasets:
        parts = full.split("/")
        if len(parts) < 3:
            raise CheckpointError(f"{path}: dataset {full!r} is not in HF's <layer>/<model>/<name> layout")
        name = "/".join(parts[2:])
        name = name[:-2] if name.endswith(":0") else name
        value = np.asarray(value)
        if name in out:
            if out[name].shape != value.shape or not np.array_equal(out[name], value):
                raise CheckpointError(f"{path}: {name!r} is stored twice with different values")
            continue
        out[name] = value
    return out


def read_tf1_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """All variables of a TF1 name-based checkpoint (``model.ckpt`` prefix or its directory)."""
    prefix = os.fspath(prefix)
    if os.path.isdir(prefix):
        prefix = _tf1_prefix_in(prefix)
    if not os.path.exists(prefix + ".index"):
        raise CheckpointError(f"{prefix}: no TF1 checkpoint index {os.path.basename(prefix)}.index")
    try:
        import tensorflow as tf
    except ImportError:
        raise CheckpointError(
            f"{prefix}: reading a TF1 checkpoint needs tensorflow (pip install 'convbert[tf]')"
        ) from None
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointError(f"{prefix}: not a readable TF1 checkpoint ({_first_line(exc)})") from None
    out = {}
    for name in names:
        try:
            out[name] = np.asarray(reader.get_tensor(name))
        except (tf.errors.OpError, ValueError, RuntimeError, IndexError) as exc:
            # A data shard shorter than its index says (a truncated copy) fails here, per variable
            # (TensorFlow raises IndexError "Read less bytes than requested").
            raise CheckpointError(f"{prefix}: variable {name} cannot be read from the data shard, truncated or "
                                  f"corrupt? ({_first_line(exc)})") from None
    return out


def _tf1_prefix_in(directory: str) -> str:
    state = os.path.join(directory, "checkpoint")
    if os.path.exists(state):
        try:
            with open(state, encoding="utf-8") as fh:
                lines = fh.read(1 << 20).splitlines()
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{state}: not a TF checkpoint state file (not UTF-8 text: {exc.reason})") from None
        for line in lines:
            if line.startswith("model_checkpoint_path:"):
                name = line.split(":", 1)[1].strip().strip('"')
                return name if os.path.isabs(name) else os.path.join(directory, name)
    candidates = sorted(f[: -len(".index")] for f in os.listdir(directory) if f.endswith(".index"))
    if not candidates:
        raise CheckpointError(f"{directory}: no TF1 checkpoint (no 'checkpoint' file and no *.index)")
    return os.path.join(directory, candidates[-1])


def is_tf1_checkpoint(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if os.path.isdir(path):
        return any(f.endswith(".index") for f in os.listdir(path)) and not any(
            os.path.exists(os.path.join(path, w)) for w in WEIGHT_FILES
        )
    return os.path.exists(path + ".index")


# ---------------------------------------------------------------------------------- raw writers
def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write tensors with ``safetensors.numpy.save_file``; ``format: pt`` metadata, as HF transformers expects.

    The package writes each array from its own memory (no image of the file is built): only a
    non-contiguous array is copied first. ml_dtypes' bfloat16 arrays are stored as BF16.
    """
    from safetensors.numpy import save_file

    arrays = {}
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype.name not in _SAFETENSORS_WRITABLE:
            raise CheckpointError(f"{path}: {name}: safetensors cannot store dtype {array.dtype} here "
                                  f"(one of {', '.join(sorted(_SAFETENSORS_WRITABLE))})")
        arrays[name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    from safetensors import SafetensorError

    with atomic_path(path) as tmp:
        try:
            save_file(arrays, tmp, metadata={"format": "pt"})
        except SafetensorError as exc:  # the package reports a failed write (EFBIG, ENOSPC) as its own error
            raise _os_error(exc, path) from None


def _os_error(exc: Exception, path: str | os.PathLike) -> OSError:
    """The OSError that a library's write error reports in words, naming the file being written."""
    found = re.search(r"os error (\d+)", str(exc))
    if found is None:
        return OSError(f"{path}: {exc}")
    code = int(found.group(1))
    return OSError(code, os.strerror(code), os.fspath(path))


@contextlib.contextmanager
def h5_file_for_writing(path: str | os.PathLike, target: str | os.PathLike | None = None):
    """``h5py.File(path, "w")`` that, after a failed write, raises that write's OSError.

    h5py reports a failed write (EFBIG, ENOSPC) as an OSError, and then again as a RuntimeError of
    its own while it closes, which would hide the first. ``target`` is the name given in errors
    (the final name of a temporary ``path``).
    """
    import h5py

    fh = h5py.File(path, "w")
    try:
        yield fh
    except OSError as exc:
        with contextlib.suppress(Exception):
            fh.close()
        if exc.errno:
            raise OSError(exc.errno, os.strerror(exc.errno), os.fspath(target or path)) from None
        raise
    fh.close()


def write_pytorch_bin(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    import torch

    def as_torch(array: np.ndarray):
        array = np.ascontiguousarray(array)
        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch.from_numpy does not know
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save({k: as_torch(v) for k, v in tensors.items()}, fh)
        except RuntimeError as exc:  # torch's writer reports a failed write as a RuntimeError about positions
            cause = exc.__context__
            if isinstance(cause, OSError):
                raise (OSError(cause.errno, cause.strerror, os.fspath(path)) if cause.errno else cause) from None
            raise


def write_hf_tf_h5(
    path: str | os.PathLike, config, head: str, tensors: Mapping[str, np.ndarray]
) -> None:
    """Write canonical tensors as HF's ``tf_model.h5`` for the class of ``head``.

    Layout of the file as ``TFPreTrainedModel.save_pretrained`` writes it: one group per top-level
    layer, ``weight_names`` attributes, names prefixed with the model scope.
    """

    hf = to_format(config, head, tensors, "hf_tf")
    scope = heads.get(head).hf_tf_scope
    groups: dict[str, list[str]] = {}
    for name in hf:
        groups.setdefault(name.split("/", 1)[0], []).append(name)
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with h5_file_for_writing(tmp, path) as fh:
            fh.attrs["backend"] = "tensorflow"
            fh.attrs["keras_version"] = "2.15.0"
            fh.attrs["layer_names"] = np.array([g.encode() for g in groups], dtype=object)
            for group, names in groups.items():
                g = fh.create_group(group)
                full = [f"{scope}/{n}:0" for n in names]
                g.attrs["weight_names"] = np.array([f.encode() for f in full], dtype=object)
                for f, n in zip(full, names, strict=True):
                    g.create_dataset(f, data=hf[n])


# ---------------------------------------------------------------------------------- translation
def from_format(config, head, raw: Mapping[str, np.ndarray], fmt: str, *, tf1_scope: str | None = None,
                source: str = "checkpoint", mismatched: list | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Translate ``raw`` tensors named in ``fmt`` ('hf_tf' or 'tf1') to canonical names and layouts.

    Returns the canonical tensors found and the raw names that matched no spec. With a
    ``mismatched`` list, head tensors of another shape are appended to it (canonical name, raw
    shape, expected shape) and left out instead of raising.
    """
    specs = wm.model_specs(config, head, tf1_scope=tf1_scope)
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for spec in specs:
        name = getattr(spec, fmt)
        if name is None or name not in raw:
            continue
        layout = get_layout(getattr(spec, f"{fmt}_layout"))
        try:
            out[spec.name] = layout.to_canonical(np.asarray(raw[name]), spec.shape, f"{source}: {name}")
        except LayoutError as exc:
            if mismatched is not None and spec.is_head:
                # Reported in the canonical layout, like the other formats' mismatches (head tensors
                # are stored as they are or transposed).
                found = tuple(np.shape(raw[name]))
                layout_name = getattr(spec, f"{fmt}_layout")
                mismatched.append((spec.name, found[::-1] if layout_name == "transpose" else found, spec.shape))
                used.add(name)
                continue
            hint = (" (or pass ignore_mismatched_sizes=True to initialise this head tensor afresh)"
                    if spec.is_head else "")
            raise CheckpointError(f"{exc} (canonical {spec.name}); does config.json match the weights?{hint}") from None
        used.add(name)
    return out, sorted(_report_name(n) for n in set(raw) - used)


def _report_name(hf_tf_name: str) -> str:
    """The PT-style name of an HF-TF tensor the model does not use, for missing/unexpected reports."""
    leaf = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}
    parts = hf_tf_name.split("/")
    parts[-1] = leaf.get(parts[-1], parts[-1])
    return ".".join(p.replace("layer_._", "layer.") for p in parts)


def to_format(config, head: str, tensors: Mapping[str, np.ndarray], fmt: str) -> dict[str, np.ndarray]:
    """Canonical tensors to the names and layouts of ``fmt`` ('hf_tf', 'tf1' or 'keras' layouts)."""
    out = {}
    for spec in wm.model_specs(config, head):
        if spec.name not in tensors:
            continue
        name = spec.name if fmt == "keras" else getattr(spec, fmt)
        if name is None:
            continue
        layout = get_layout(getattr(spec, f"{fmt}_layout"))
        out[name] = layout.to_target(np.asarray(tensors[spec.name]), spec.shape, spec.name)
    return out


# ---------------------------------------------------------------------------------- matching
def check_weight_dtype(value: np.ndarray, name: str, source: str) -> None:
    """Weights are floating point: an integer, bool or complex tensor would be cast to a different
    number (int8 codes to -2.0, -1.0, ...; complex without its imaginary part), so it is refused.
    The one message for both frameworks."""
    if not np.issubdtype(value.dtype, np.floating):
        raise CheckpointError(f"{source}: {name} has dtype {value.dtype}, expected a float tensor")


def non_finite(tensors: Mapping[str, np.ndarray]) -> dict[str, str]:
    """{name: "N NaN, M inf"} for every floating tensor holding a value that is not finite."""
    out = {}
    for name, value in tensors.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating) or np.isfinite(value).all():
            continue
        nan = int(np.isnan(value).sum())
        inf = int(value.size - nan - np.isfinite(value).sum())
        out[name] = ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
    return out


def describe_non_finite(bad: Mapping[str, str], limit: int = 8) -> str:
    """``name (3 NaN), ...`` for a message; the first ``limit`` tensors."""
    shown = ", ".join(f"{k} ({v})" for k, v in list(bad.items())[:limit])
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


# Where each format numbers its encoder layers; group 1 is the index.
_LAYER_NAMES = {
    "canonical": re.compile(r"^(?:convbert\.)?encoder\.layer\.(\d+)\."),
    "hf_tf": re.compile(r"^convbert/encoder/layer_\._(\d+)/"),
    "tf1": {scope: re.compile(rf"^{scope}/encoder/layer_(\d+)/") for scope in ("electra", "generator")},
}


def checkpoint_layers(names: Iterable[str], fmt: str, *, tf1_scope: str = "electra") -> set[int]:
    """The encoder layer indices that tensor names of format ``fmt`` mention."""
    pattern = _LAYER_NAMES[fmt]
    if fmt == "tf1":
        pattern = pattern[tf1_scope]
    return {int(m.group(1)) for m in map(pattern.match, names) if m is not None}


def check_layer_count(config, names: Iterable[str], fmt: str, *, tf1_scope: str = "electra",
                      source: str = "checkpoint") -> None:
    """Refuse a config whose ``num_hidden_layers`` is not the checkpoint's, before any spec is built.

    A crafted 600-byte config with a million layers would otherwise build millions of specs (and a
    model of that size) only to find most of them missing.
    """
    found = checkpoint_layers(names, fmt, tf1_scope=tf1_scope)
    want = config.num_hidden_layers
    if found == set(range(want)):
        return
    if not found:
        held = "no encoder layers"
    elif found == set(range(len(found))):
        held = f"{len(found)} encoder layer{'s' if len(found) > 1 else ''} (0..{len(found) - 1})"
    else:
        gaps = sorted(set(range(max(found) + 1)) - found)
        held = f"encoder layers up to {max(found)} with {len(gaps)} missing ({', '.join(map(str, gaps[:8]))})"
    raise CheckpointError(f"{source}: the checkpoint holds {held} but the config says num_hidden_layers={want}; "
                          "does the config belong to these weights? (nothing was loaded)")


@dataclass
class LoadResult:
    tensors: dict[str, np.ndarray]  # canonical name -> canonical-layout array, for every present spec
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    source: str = ""
    fmt: str = ""
    # (name, checkpoint shape, model shape) of head tensors left out by ignore_mismatched_sizes=True;
    # their names are in missing_keys too (the model initialises them afresh).
    mismatched_keys: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


def _all_head_names(config) -> set[str]:
    names: set[str] = set()
    for head in heads.ALL_TASKS:
        try:
            names.update(s.name for s in wm.head_specs(config, head))
        except ValueError:
            continue
    return names


def match_to_model(config, head: str, canonical: Mapping[str, np.ndarray], *, source: str,
                   extra_unexpected: list[str] | None = None, ignore_mismatched_sizes: bool = False) -> LoadResult:
    """Check canonical tensors against the specs of ``head``'s model before any assignment.

    Handles the ``convbert.`` prefix both ways (base checkpoint into a head model and back), the
    tied MLM weight and old buffers. Raises CheckpointError for a shape mismatch, a missing
    backbone tensor, or unexpected backbone-like tensors (a config that disagrees with the file).
    """
    check_layer_count(config, canonical, "canonical", source=source)
    specs = wm.model_specs(config, head)
    want_prefix = bool(heads.get(head).prefix)
    src: dict[str, np.ndarray] = {}
    for name, value in canonical.items():
        if wm.is_ignored(name):
            continue
        src[_model_key(name, want_prefix)] = value

    word_key = (wm.BASE_PREFIX + "." if want_prefix else "") + wm.WORD_EMBEDDINGS
    if wm.TIED_LM_WEIGHT in src:
        lm = src.pop(wm.TIED_LM_WEIGHT)
        if word_key in src and not np.array_equal(lm, src[word_key]):
            raise CheckpointError(
                f"{source}: {wm.TIED_LM_WEIGHT} differs from {word_key}; untied LM heads are not supported"
            )

    result = LoadResult(tensors={}, source=source)
    problems = []
    for spec in specs:
        if spec.name not in src:
            result.missing_keys.append(spec.name)
            continue
        value = src.pop(spec.name)  # an array, or a streaming.LazyTensor read only when used
        if tuple(np.shape(value)) != spec.shape:
            if ignore_mismatched_sizes and spec.is_head:
                result.mismatched_keys.append((spec.name, tuple(np.shape(value)), spec.shape))
                result.missing_keys.append(spec.name)
                continue
            problems.append(f"{spec.name}: checkpoint shape {tuple(np.shape(value))}, model expects {spec.shape}")
            continue
        check_weight_dtype(value, spec.name, source)
        result.tensors[spec.name] = value
    if problems:
        heads_only = all(s.is_head for s in specs if any(p.startswith(s.name + ":") for p in problems))
        hint = (" (nothing was loaded; pass ignore_mismatched_sizes=True to initialise these head tensors afresh, "
                "e.g. for another num_labels)") if heads_only else " (nothing was loaded)"
        raise CheckpointError(f"{source}: {len(problems)} tensor(s) do not fit the config: " + "; ".join(problems)
                              + hint)
    head_names = _all_head_names(config)
    unexpected = sorted(src) + list(extra_unexpected or [])
    foreign = [n for n in unexpected if n not in head_names and wm.strip_base_prefix(n) not in head_names]
    head_specs = {s.name for s in specs if s.is_head}
    missing_backbone = [n for n in result.missing_keys if n not in head_specs]
    if missing_backbone or foreign:
        parts = []
        if missing_backbone:
            parts.append(f"missing {len(missing_backbone)}: {', '.join(missing_backbone[:8])}"
                         + (" ..." if len(missing_backbone) > 8 else ""))
        if foreign:
            parts.append(f"unexpected {len(foreign)}: {', '.join(foreign[:8])}" + (" ..." if len(foreign) > 8 else ""))
        raise CheckpointError(
            f"{source}: the weights do not match the config ({'; '.join(parts)}); nothing was loaded"
        )
    missing = set(result.missing_keys)
    fresh = sum(int(np.prod(s.shape, dtype=np.int64)) for s in specs if s.name in missing)
    held = sum(int(v.size) for v in result.tensors.values())
    if fresh > held:
        raise CheckpointError(
            f"{source}: the config asks for {fresh:,} newly initialised head parameters "
            f"({', '.join(result.missing_keys[:4])}), more than the {held:,} the checkpoint holds; "
            "is num_labels (or vocab_size) what you meant? (nothing was loaded)"
        )
    result.unexpected_keys = unexpected
    for name, found, wanted in result.mismatched_keys:
        logger.warning("%s: %s has shape %s in the checkpoint and %s in the model: newly initialised", source, name,
                       found, wanted)
    if result.missing_keys:
        logger.warning("%s: head weights not in the checkpoint, newly initialised: %s", source, result.missing_keys)
    if result.unexpected_keys:
        logger.info("%s: weights not used by %s: %s", source, heads.get(head).class_name, result.unexpected_keys)
    return result


def _is_backbone_name(bare: str) -> bool:
    return bare.startswith(("embeddings.", "embeddings_project.", "encoder."))


def _model_key(name: str, want_prefix: bool) -> str:
    """A checkpoint key as the model names it: head models prefix the backbone with ``convbert.``,
    the bare model does not (HF checkpoints of either kind load into either)."""
    bare = wm.strip_base_prefix(name)
    if not want_prefix:
        return bare
    return f"{wm.BASE_PREFIX}.{bare}" if _is_backbone_name(bare) else name


def find_weights_file(directory: str | os.PathLike) -> tuple[str, str]:
    """(path, format) of the first weight file in ``directory`` in the order of WEIGHT_FILES.

    A weight file that is there but cannot be opened (a dangling or looping symlink, no read
    permission) is an error naming it, not a reason to fall back silently to the next one.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory")
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            continue
        _check_openable(path)
        fmt = {SAFETENSORS_NAME: "safetensors", SAFETENSORS_INDEX_NAME: "safetensors",
               PYTORCH_BIN_NAME: "pytorch_bin", TF_H5_NAME: "hf_tf"}[name]
        return path, fmt
    shards = sorted(f for f in os.listdir(directory) if re.search(r"\.data-\d+-of-\d+$", f))
    if shards:
        prefix = shards[0].rsplit(".data-", 1)[0]
        raise CheckpointError(f"{directory}: no weights file; {shards[0]} is a TF1 checkpoint shard, but its index "
                              f"{prefix}.index is not beside it (copy it too)")
    raise CheckpointError(f"{directory}: no weights file (looked for {', '.join(WEIGHT_FILES)})")


def _check_openable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            why = "a symlink loop"
        elif exc.errno == errno.ENOENT:
            why = f"a symlink to {os.readlink(path)!r}, which does not exist" if os.path.islink(path) else "gone"
        else:
            why = exc.strerror or str(exc)
        raise CheckpointError(f"{path}: the weights file cannot be opened ({why}); "
                              "the other weight files beside it were not tried") from None
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a weights file")


def read_any(path: str, fmt: str) -> dict[str, np.ndarray]:
    if fmt == "safetensors":
        return read_safetensors_index(path) if path.endswith(".json") else read_safetensors(path)
    if fmt == "pytorch_bin":
        return read_pytorch_bin(path)
    if fmt == "hf_tf":
        return read_hf_tf_h5(path)
    if fmt == "tf1":
        return read_tf1_checkpoint(path)
    raise ValueError(f"unknown checkpoint format {fmt!r}")


def load_for_model(config, head: str, path: str | os.PathLike, *, weights_file: str | None = None,
                   ignore_mismatched_sizes: bool = False, lazy: bool = False) -> LoadResult:
    """Read the weights at ``path`` (a checkpoint directory or a weight file) for ``head``'s model.

    ``lazy=True``: safetensors entries come back as ``streaming.LazyTensor`` (checked by their
    header's shapes, read on ``np.asarray``), so that a loader holds one tensor at a time.
    """
    path = os.fspath(path)
    if weights_file is not None:
        path = os.path.join(path, weights_file)
    if os.path.isdir(path):
        file, fmt = find_weights_file(path)
    else:
        file = path
        base = os.path.basename(path)
        fmt = ("hf_tf" if base.endswith(".h5") else "pytorch_bin" if base.endswith((".bin", ".pt", ".pth"))
               else "safetensors")
    if lazy and fmt == "safetensors":
        from convbert_common import streaming

        raw = streaming.read_index_lazy(file) if file.endswith(".json") else streaming.read_lazy(file)
    else:
        raw = read_any(file, fmt)
    if fmt == "hf_tf":
        # HF-TF names are "<layer>/<model scope>/<path>" stripped to "<path>" by the reader.
        check_layer_count(config, raw, "hf_tf", source=file)
        mismatched: list | None = [] if ignore_mismatched_sizes else None
        canonical, rest = from_format(config, head, raw, "hf_tf", source=file, mismatched=mismatched)
        result = match_to_model(config, head, canonical, source=file, extra_unexpected=rest,
                                ignore_mismatched_sizes=ignore_mismatched_sizes)
        for entry in mismatched or ():
            result.mismatched_keys.append(entry)
    else:
        result = match_to_model(config, head, raw, source=file, ignore_mismatched_sizes=ignore_mismatched_sizes)
    result.fmt = fmt
    return result
