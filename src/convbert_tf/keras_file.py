"""ConvBERT ``.keras`` and ``.weights.h5`` files written and read without building the full-size model.

``model.save`` needs the model built (about 200 layers for ConvBERT-base, seconds), every variable
assigned, and then serialises all weights into an in-memory HDF5 file before zipping it (one
extra full copy). Conversion only moves tensors, so here:

- The layout (every HDF5 group Keras creates, with its attributes, and the dataset of each
  variable) is learnt from Keras itself by saving a *skeleton*: the same class and config with
  every size shrunk and at most two encoder layers, each variable filled with its own index so
  that the dataset it lands in names it. A deeper encoder repeats the second layer's subtree
  under Keras' container names (``conv_bert_layer``, ``conv_bert_layer_1``, ...): that rule is
  checked on the skeleton's two layers, and where it does not hold the skeleton is built at full
  depth instead. ``config.json`` is the skeleton's serialisation with the real ConvBertConfig.
- Writing puts one canonical tensor at a time (transformed by ``keras_layout``, then freed) with
  h5py straight into its place in the zip, after ``metadata.json`` and ``config.json``, all
  stored uncompressed as Keras stores them: ``keras.saving.load_model`` reads the file.
- Reading goes through ``zipfile`` (the directory, the CRC-32 of every member, the metadata
  members, read up to ``METADATA_MAX_BYTES``); the stored HDF5 member is then opened in place,
  without copying it (a compressed one is inflated into a temporary file). Every HDF5 member is
  refused if a dataset keeps its data outside the file (``checkpoint.check_h5_storage``). Each
  dataset maps back to its canonical name through the same layout, every shape checked. A file
  whose datasets are not exactly the expected ones (another Keras' naming, extra state) raises
  ``LayoutMismatch``: the caller then loads it through Keras.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import logging
import math
import os
import posixpath
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

import h5py
import keras
import numpy as np

from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_common.checkpoint import CheckpointError, check_h5_storage, h5_file_for_writing
from convbert_common.config import ConvBertConfig
from convbert_common.layouts import get_layout

logger = logging.getLogger(__name__)

# The members of a .keras archive, in the order Keras writes them (keras/src/saving/saving_lib.py).
METADATA_NAME = "metadata.json"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.weights.h5"

# Datasets of a saved, compiled model that are not model weights: reported, never loaded.
_NOT_WEIGHTS = (("optimizer/", "optimizer state"),)

_COPY_CHUNK = 16 << 20


class LayoutMismatch(ValueError):
    """The file's datasets are not the ones this Keras writes for the model: load it through Keras."""


@dataclass(frozen=True)
class KerasLayout:
    groups: dict[str, dict[str, str]]  # every HDF5 group Keras creates -> its attributes, parents first
    datasets: dict[str, str]  # canonical name -> dataset path, in the skeleton's variable order
    dtypes: dict[str, np.dtype]  # canonical name -> stored dtype
    model_config: dict  # the serialised model, as config.json holds it


# ----------------------------------------------------------------------------------- the layout
def default_name(cls: type) -> str:
    """The name Keras gives the first instance of ``cls`` (its class name in snake case)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls.__name__)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def skeleton_config(config: ConvBertConfig, num_hidden_layers: int) -> ConvBertConfig:
    """``config`` with every size shrunk but the same structure (heads, groups, projection, labels)."""
    heads = config.heads.num_heads
    hidden = math.lcm(2 * heads, config.num_groups)  # what the head split and the groups need
    return config.replace(
        vocab_size=(config.pad_token_id or 0) + 1,
        hidden_size=hidden,
        # The embedding projection exists only when the sizes differ: keep that (hidden >= 2).
        embedding_size=hidden if config.embedding_size == config.hidden_size else 1,
        intermediate_size=config.num_groups,
        max_position_embeddings=1,
        type_vocab_size=1,
        num_hidden_layers=num_hidden_layers,
    )


_SKELETONS: dict[tuple[str, str], tuple[dict, dict, dict, dict]] = {}


def _learn(config: ConvBertConfig, head: str) -> tuple[dict, dict, dict, dict]:
    """Save a model of ``config`` with Keras and read back (groups, datasets, dtypes, serialised model)."""
    head = heads.get(head)
    key = (head.name, json.dumps(config.to_dict(), sort_keys=True))
    if key in _SKELETONS:
        return _SKELETONS[key]
    from convbert_tf import io as tf_io
    from convbert_tf.modeling import MODEL_CLASSES

    cls = MODEL_CLASSES[head.name]
    model = cls(config, name=default_name(cls), initialize=False)
    variables = tf_io.canonical_variables(model, head)
    names = list(variables)
    for i, var in enumerate(variables.values()):
        var.assign(np.full(var.shape, i + 1, keras.backend.standardize_dtype(var.dtype)))
    groups: dict[str, dict[str, str]] = {}
    datasets: dict[str, str] = {}
    dtypes: dict[str, np.dtype] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "skeleton.weights.h5")
        model.save_weights(path)
        with h5py.File(path, "r") as fh:
            def visit(name: str, obj) -> None:
                if isinstance(obj, h5py.Group):
                    groups[name] = dict(obj.attrs)
                    return
                values = np.unique(obj[()])
                index = int(values[0]) - 1 if values.size == 1 else -1
                if not 0 <= index < len(names) or names[index] in datasets:
                    raise RuntimeError(f"skeleton of {cls.__name__}: dataset {name} holds no single variable")
                datasets[names[index]] = name
                dtypes[names[index]] = obj.dtype

            fh.visititems(visit)
    missing = [n for n in names if n not in datasets]
    if missing:
        raise RuntimeError(f"skeleton of {cls.__name__}: Keras saved no dataset for {missing}")
    ordered = {n: datasets[n] for n in names}
    result = (groups, ordered, {n: dtypes[n] for n in names}, keras.saving.serialize_keras_object(model))
    _SKELETONS[key] = result
    return result


def _layer_prefix(datasets: dict[str, str], layer_key: str) -> str:
    paths = [p for n, p in datasets.items() if layer_key in n]
    return posixpath.commonpath(paths) if paths else ""


def _repeat_layers(groups: dict, datasets: dict, dtypes: dict, num_layers: int) -> tuple[dict, dict, dict] | None:
    """The layout of ``num_layers`` encoder layers from a two-layer skeleton's, or None where the rule fails.

    The rule (Keras names list elements by class, ``name``, ``name_1``, ``name_2`` ...; our layers
    are called ``layer_<i>``) is checked on the two layers the skeleton has, and so is that both
    subtrees are the same up to those names.
    """
    p0, p1 = _layer_prefix(datasets, "encoder.layer.0."), _layer_prefix(datasets, "encoder.layer.1.")
    if not p0 or p1 != p0 + "_1":
        return None
    name0, name1 = groups.get(p0 + "/vars", {}).get("name"), groups.get(p1 + "/vars", {}).get("name")
    if not (isinstance(name0, str) and name0.endswith("0") and name1 == name0[:-1] + "1"):
        return None

    def subtree(prefix: str, index: int) -> tuple[dict, dict]:
        sub_groups = {g[len(prefix):]: dict(a) for g, a in groups.items() if g == prefix or g.startswith(prefix + "/")}
        sub_groups["/vars"] = {**sub_groups.get("/vars", {}), "name": None}
        key = f"encoder.layer.{index}."
        sub_data = {n.replace(key, "encoder.layer.#."): p[len(prefix):] for n, p in datasets.items() if key in n}
        return sub_groups, sub_data

    if subtree(p0, 0) != subtree(p1, 1):
        return None
    groups, datasets, dtypes = dict(groups), dict(datasets), dict(dtypes)
    layer1 = [(n, p) for n, p in datasets.items() if "encoder.layer.1." in n]
    for i in range(2, num_layers):
        prefix = f"{p0}_{i}"
        for g, attrs in list(groups.items()):
            if g == p1 or g.startswith(p1 + "/"):
                groups[prefix + g[len(p1):]] = dict(attrs)
        groups[prefix + "/vars"]["name"] = f"{name0[:-1]}{i}"
        for n, p in layer1:
            new = n.replace("encoder.layer.1.", f"encoder.layer.{i}.")
            datasets[new] = prefix + p[len(p1):]
            dtypes[new] = dtypes[n]
    return groups, datasets, dtypes


def keras_layout(config: ConvBertConfig, head: str) -> KerasLayout:
    """Where Keras' ``model.save`` puts every variable of ``head``'s model for ``config``."""
    depth = config.num_hidden_layers
    skeleton = skeleton_config(config, min(depth, 2))
    groups, datasets, dtypes, serialised = _learn(skeleton, head)
    if depth > 2:
        repeated = _repeat_layers(groups, datasets, dtypes, depth)
        if repeated is None:
            logger.info("the Keras layout of %d layers is not two layers repeated: building the full depth", depth)
            skeleton = skeleton_config(config, depth)
            groups, datasets, dtypes, serialised = _learn(skeleton, head)
        else:
            groups, datasets, dtypes = repeated
    model_config = copy.deepcopy(serialised)
    inner = model_config.get("config", {})
    if inner.get("config") != skeleton.to_dict():
        raise RuntimeError(f"{model_config.get('class_name')}: get_config() does not hold the ConvBertConfig "
                           "under 'config'; cannot write its config.json")
    inner["config"] = config.to_dict()
    expected = [s.name for s in wm.model_specs(config, head)]
    if sorted(datasets) != sorted(expected):
        raise RuntimeError(f"the Keras layout of {heads.get(head).class_name} does not match the weight table: "
                           f"{sorted(set(datasets) ^ set(expected))}")
    return KerasLayout({g: dict(a) for g, a in sorted(groups.items())},  # parents before children
                       {n: datasets[n] for n in expected}, {n: dtypes[n] for n in expected}, model_config)


# ----------------------------------------------------------------------------------- writing
def _check_tensors(layout: KerasLayout, specs: dict, tensors: MutableMapping[str, np.ndarray], source: str) -> None:
    missing = [n for n in layout.datasets if n not in tensors]
    unexpected = [n for n in tensors if n not in layout.datasets]
    if missing or unexpected:
        raise CheckpointError(f"{source}: the tensors do not match the model (missing {missing}, "
                              f"unexpected {unexpected}); nothing was written")
    for name, array in tensors.items():
        if tuple(np.shape(array)) != specs[name].shape:
            raise CheckpointError(f"{source}: {name}: shape {tuple(np.shape(array))}, the model expects "
                                  f"{specs[name].shape}; nothing was written")
        if not np.issubdtype(np.asarray(array).dtype, np.floating):
            raise CheckpointError(f"{source}: {name} has dtype {np.asarray(array).dtype}, expected a float tensor")


def write_weights(target, config: ConvBertConfig, head: str, tensors: MutableMapping[str, np.ndarray], *,
                  consume: bool = False, source: str = "checkpoint", layout: KerasLayout | None = None,
                  on_tensor: Callable[[str], None] | None = None) -> None:
    """Write canonical ``tensors`` as the HDF5 weights file ``model.save_weights`` would write.

    ``target`` is a path or an open, empty ``h5py.File``. Every name and shape is checked before
    anything is written. With ``consume=True`` each entry is
    removed from ``tensors`` once written, so that the checkpoint is not held twice.
    """
    layout = layout or keras_layout(config, head)
    specs = {s.name: s for s in wm.model_specs(config, head)}
    _check_tensors(layout, specs, tensors, source)
    if not isinstance(target, h5py.File):
        with h5_file_for_writing(target) as fh:
            write_weights(fh, config, head, tensors, consume=consume, source=source, layout=layout,
                          on_tensor=on_tensor)
        return
    for group, attrs in layout.groups.items():
        g = target.require_group(group)
        for key, value in attrs.items():
            g.attrs[key] = value
    for name, dataset in layout.datasets.items():
        spec = specs[name]
        array = tensors.pop(name) if consume else tensors[name]
        value = get_layout(spec.keras_layout).to_target(np.asarray(array), spec.shape, f"{source}: {name}")
        target.create_dataset(dataset, data=value.astype(layout.dtypes[name], copy=False))
        del array, value
        if on_tensor is not None:
            on_tensor(name)


def metadata_json() -> str:
    return json.dumps({"keras_version": keras.__version__,
                       "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})


def write_keras_file(path: str, config: ConvBertConfig, head: str, tensors: MutableMapping[str, np.ndarray], *,
                     consume: bool = False, source: str = "checkpoint",
                     on_tensor: Callable[[str], None] | None = None) -> None:
    """Write canonical ``tensors`` as the ``.keras`` file ``model.save(path)`` would write for ``head``'s model.

    The archive is the one Keras writes: ``metadata.json``, ``config.json`` (both with the fixed
    1980 date ZipFile.open gives) and ``model.weights.h5`` (the current time), all stored
    uncompressed. h5py writes the weights straight into their place in the archive (the member's
    size and CRC are filled in afterwards): no copy in memory, no second copy on disk. Archives
    that may pass the 4 GiB limit of plain zip go through a temporary file and ``zipfile`` (ZIP64).
    The caller makes ``path`` appear atomically.
    """
    layout = keras_layout(config, head)
    members = [(METADATA_NAME, metadata_json().encode()), (CONFIG_NAME, json.dumps(layout.model_config).encode())]
    weights_bytes = sum(np.asarray(t).dtype.itemsize * int(np.prod(np.shape(t))) for t in tensors.values())
    write = _write_zip_copying if weights_bytes > ZIP32_WEIGHTS_LIMIT else _write_zip_in_place
    write(path, members, lambda target: write_weights(target, config, head, tensors, consume=consume,
                                                       source=source, layout=layout, on_tensor=on_tensor))


# Above this many bytes of tensors the archive may need ZIP64, which only ``zipfile`` writes here.
ZIP32_WEIGHTS_LIMIT = 3 << 30
_ZIP32_MAX = 0xFFFFFFFF
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _zip_info(name: str, date_time: tuple[int, ...]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16  # what ZipFile gives members written from memory
    return info


# Why the weights member is written in place by hand, not with ``zipfile``: h5py seeks back over
# what it wrote, and ``zipfile`` takes a member only as a forward stream, so going through zipfile
# means a temporary HDF5 file copied into the archive, which bench/bench_convert.py measures as a
# large part of the PT -> Keras step at the same peak memory (bench/RESULTS.md, "Conversion").
# Hand-written is only that: the window h5py writes through, the member's CRC-32 and the central
# directory (the local headers are zipfile's ``ZipInfo.FileHeader``). Archives past the plain-zip
# limit take the zipfile path (``_write_zip_copying``).
def _write_zip_in_place(path: str, members: list[tuple[str, bytes]], write_weights_to: Callable) -> None:
    infos = []
    with open(path, "w+b", buffering=0) as fh:
        for name, data in members:
            info = _zip_info(name, _FIXED_DATE)
            info.header_offset = fh.tell()
            info.CRC, info.file_size, info.compress_size = zlib.crc32(data), len(data), len(data)
            fh.write(info.FileHeader(zip64=False) + data)
            infos.append(info)
        info = _zip_info(WEIGHTS_NAME, datetime.datetime.now().timetuple()[:6])
        info.header_offset = fh.tell()
        info.CRC = info.file_size = info.compress_size = 0
        fh.write(info.FileHeader(zip64=False))  # a placeholder of the same length, rewritten below
        start = fh.tell()
        window = _Window(fh.fileno(), start, writable=True)
        try:
            with h5py.File(window, "w") as h5:
                write_weights_to(h5)
        except Exception:
            if window.error is None:
                raise
        if window.error is not None:  # h5py may have reported the failed write as an error of its own
            raise OSError(window.error.errno, window.error.strerror, path) from None
        size = window.size
        if start + size + (1 << 20) > _ZIP32_MAX:
            raise RuntimeError(f"{path}: the weights ({size} bytes) need ZIP64; lower ZIP32_WEIGHTS_LIMIT")
        info.CRC, info.file_size, info.compress_size = _crc32(fh.fileno(), start, size), size, size
        fh.seek(info.header_offset)
        fh.write(info.FileHeader(zip64=False))
        infos.append(info)
        fh.seek(start + size)
        fh.truncate()
        directory = b"".join(_central_entry(i) for i in infos)
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(infos), len(infos), len(directory), start + size, 0)
        fh.write(directory + end)


def _central_entry(info: zipfile.ZipInfo) -> bytes:
    dt = info.date_time
    dos_date = (dt[0] - 1980) << 9 | dt[1] << 5 | dt[2]
    dos_time = dt[3] << 11 | dt[4] << 5 | (dt[5] // 2)
    name = info.filename.encode("ascii")
    return struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", info.create_version, info.create_system,
                       info.extract_version, info.reserved, info.flag_bits, info.compress_type, dos_time, dos_date,
                       info.CRC, info.compress_size, info.file_size, len(name), 0, 0, 0, 0, info.external_attr,
                       info.header_offset) + name


def _crc32(fd: int, start: int, size: int) -> int:
    crc, done = 0, 0
    buffer = bytearray(_COPY_CHUNK)
    view = memoryview(buffer)
    while done < size:
        count = os.preadv(fd, [view[:min(_COPY_CHUNK, size - done)]], start + done)
        if count <= 0:
            raise OSError(f"short read at {start + done}")
        crc = zlib.crc32(view[:count], crc)
        done += count
    return crc


def _write_zip_copying(path: str, members: list[tuple[str, bytes]], write_weights_to: Callable) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, weights = tempfile.mkstemp(prefix=".weights.", suffix=".h5.tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(weights, "w") as h5:
            write_weights_to(h5)
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                with zf.open(_zip_info(name, _FIXED_DATE), "w") as fh:
                    fh.write(data)
            info = _zip_info(WEIGHTS_NAME, datetime.datetime.now().timetuple()[:6])
            info.file_size = os.path.getsize(weights)  # lets zipfile choose ZIP64 as writestr would
            with open(weights, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
    finally:
        os.remove(weights)


# ----------------------------------------------------------------------------------- reading
# The most bytes read from ``config.json`` or ``metadata.json`` (a ConvBERT config is a few kB):
# a crafted archive must not make the reader inflate a member of any size into memory.
METADATA_MAX_BYTES = 4 << 20

# What ``zipfile`` raises for a damaged or unsupported archive (a bad CRC, an unknown compression
# method, an encrypted member, a member cut short).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error,
               OSError)


class _Window(io.RawIOBase):
    """The bytes of a file descriptor from ``start`` on, as a file of their own: a stored zip member.

    h5py reads (and writes) an HDF5 file through it in place, at the member's offset in the archive.
    Read-only windows have a fixed ``size``; writable ones grow as they are written. After a failed
    write or truncate the window keeps the error (``error``) and drops what follows: h5py goes on
    flushing while it closes, and its own error for those calls would hide the real one.
    """

    def __init__(self, fd: int, start: int, size: int = 0, *, writable: bool = False):
        super().__init__()
        self._fd, self._start, self.size, self._pos, self._writable = fd, start, size, 0, writable
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.size - self._pos))
        done = 0
        while done < count:
            got = os.preadv(self._fd, [view[done:count]], self._start + self._pos + done)
            if got == 0:
                break
            done += got
        self._pos += done
        return done

    def write(self, buffer) -> int:
        if not self._writable:
            raise io.UnsupportedOperation("read-only window")
        view = memoryview(buffer).cast("B")
        if self.error is not None:
            return len(view)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], self._start + self._pos + done)
        except OSError as exc:
            self.error = exc
            raise
        self._pos += done
        self.size = max(self.size, self._pos)
        return done

    def truncate(self, size: int | None = None) -> int:
        if not self._writable:
            raise io.UnsupportedOperation("read-only window")
        if self.error is not None:
            return self.size
        self.size = self._pos if size is None else size
        try:
            os.ftruncate(self._fd, self._start + self.size)  # nothing follows the member while it is written
        except OSError as exc:
            self.error = exc
            raise
        return self.size


def _stored_member_offset(fh, info: zipfile.ZipInfo) -> int | None:
    """Where the bytes of an uncompressed, unencrypted member start in the archive (None otherwise)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    fh.seek(info.header_offset)
    header = fh.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        return None
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _read_metadata_member(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: not a loadable .keras file (no {name})") from None
    if info.file_size > METADATA_MAX_BYTES:
        raise CheckpointError(f"{path}: {name} is {info.file_size} bytes, over the {METADATA_MAX_BYTES >> 20} MiB "
                              "read for a metadata member")
    try:
        with archive.open(info) as fh:
            return fh.read(METADATA_MAX_BYTES)
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{path}: {name} is corrupt or unreadable ({exc})") from None


def read_model_config(archive: zipfile.ZipFile, path: str) -> tuple[ConvBertConfig, str]:
    """The ConvBertConfig and head of the model a ``.keras`` archive holds."""
    data = _read_metadata_member(archive, CONFIG_NAME, path)
    try:
        serialised = json.loads(data)
        class_name = serialised["class_name"]
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not a loadable .keras file (config.json: {exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a loadable .keras file (config.json is nested too deeply)") from None
    registered = serialised.get("registered_name") or ""
    head = heads.of_class(class_name)
    if head is None or not (registered.startswith("convbert>") or serialised.get("module") == "convbert_tf.modeling"):
        raise CheckpointError(f"{path}: holds a {class_name}, not a ConvBERT model")
    try:
        return ConvBertConfig.from_dict(serialised["config"]["config"]), head
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: config.json: {exc}") from None


def read_keras_file(path: str) -> tuple[ConvBertConfig, str, dict[str, np.ndarray], dict[str, str]]:
    """(config, head, canonical tensors, skipped datasets) of a ConvBERT ``.keras`` file.

    Every HDF5 member has its CRC checked and its datasets checked for data outside the file
    (``check_h5_storage``) first, so that nothing reads such a member afterwards, Keras included.
    Raises LayoutMismatch where the datasets are not exactly this Keras' layout for the model
    (missing, or extra outside the optimizer state), for the caller to load it through Keras;
    CheckpointError (a ValueError) for a damaged archive or a shape that does not fit.
    """
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{path}: not a loadable .keras file ({exc})") from None
    with archive, open(path, "rb") as raw, contextlib.ExitStack() as stack:
        if METADATA_NAME in archive.namelist():  # not needed here; but Keras reads it if the caller falls back
            _read_metadata_member(archive, METADATA_NAME, path)
        config, head = read_model_config(archive, path)
        names = archive.namelist()
        h5_files = {}
        for info in archive.infolist():
            if info.filename.endswith(".h5"):
                source = f"{path}/{info.filename}"
                h5_files[info.filename] = fh = stack.enter_context(_open_h5_member(archive, raw, info, path))
                check_h5_storage(fh, source)
        if WEIGHTS_NAME not in h5_files or len(names) != 3:
            raise LayoutMismatch(f"{path}: members {names}")
        tensors, skipped = _read_weights(h5_files[WEIGHTS_NAME], config, head, f"{path}/{WEIGHTS_NAME}")
    return config, head, tensors, skipped


# Why a stored member is read in place through ``_Window`` instead of through ``ZipFile.open``:
# h5py seeks back and forth, and before Python 3.12 zipfile's member file seeks back by reading
# again from the member's start; inflating the member into a temporary file writes the whole
# checkpoint to disk once more. bench/bench_convert.py measures both against reading in place
# (bench/RESULTS.md, "Conversion"). The CRC-32 is zipfile's, checked by reading the member once;
# a compressed member has no bytes to read in place and is inflated into a temporary file.
@contextlib.contextmanager
def _open_h5_member(archive: zipfile.ZipFile, raw, info: zipfile.ZipInfo, path: str):
    start = _stored_member_offset(raw, info)
    with contextlib.ExitStack() as stack:
        try:
            copy = None
            if start is None:
                copy = stack.enter_context(tempfile.TemporaryFile(prefix="convbert-keras-", suffix=".h5"))
            with archive.open(info) as member:  # read to the end: zipfile checks the CRC-32 there
                while chunk := member.read(_COPY_CHUNK):
                    if copy is not None:
                        copy.write(chunk)
            if copy is not None:
                copy.seek(0)
            fh = stack.enter_context(h5py.File(copy or _Window(raw.fileno(), start, info.file_size), "r"))
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{path}: {info.filename} is corrupt ({exc})") from None
        except _ZIP_ERRORS as exc:
            raise CheckpointError(f"{path}: {info.filename} is not a readable HDF5 member "
                                  f"({type(exc).__name__}: {exc})") from None
        yield fh


def _read_weights(fh: h5py.File, config: ConvBertConfig, head: str,
                  source: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    found: list[str] = []
    fh.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    # Every encoder layer holds datasets of its own: a config with more layers than the file has
    # datasets (a crafted num_hidden_layers) is refused before its layout and specs are built, work
    # that grows with the layer count.
    if config.num_hidden_layers > len(found):
        raise CheckpointError(f"{source}: config.json says num_hidden_layers={config.num_hidden_layers}, but the "
                              f"weights file holds only {len(found)} datasets")
    layout = keras_layout(config, head)
    specs = {s.name: s for s in wm.model_specs(config, head)}
    wanted = {p: n for n, p in layout.datasets.items()}
    skipped = {}
    extra = []
    for name in found:
        if name in wanted:
            continue
        why = next((w for prefix, w in _NOT_WEIGHTS if name.startswith(prefix)), None)
        if why is None:
            extra.append(name)
        else:
            skipped[name] = why
    present = set(found)
    missing = [p for p in wanted if p not in present]
    if missing or extra:
        raise LayoutMismatch(f"{source}: missing datasets {missing[:4]}, unexpected {extra[:4]}")
    tensors: dict[str, np.ndarray] = {}
    for name, dataset_path in layout.datasets.items():
        spec = specs[name]
        dataset = fh[dataset_path]
        transform = get_layout(spec.keras_layout)
        target = transform.target_shape(spec.shape)
        if tuple(dataset.shape) != target:
            raise CheckpointError(f"{source}: dataset {dataset_path} ({name}) has shape {tuple(dataset.shape)}, "
                                  f"the config gives {target}")
        if dataset.dtype.kind != "f" or "dtype" in dataset.attrs:
            raise LayoutMismatch(f"{source}: dataset {dataset_path} is stored as {dataset.dtype}")
        value = np.empty(dataset.shape, dataset.dtype)
        dataset.read_direct(value)
        tensors[name] = transform.to_canonical(value, spec.shape, f"{source}: {dataset_path} ({name})")
        del value
    return tensors, skipped
