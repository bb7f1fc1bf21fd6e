"""Hugging Face's sharded safetensors layout: ``model-00001-of-0000N.safetensors`` + ``model.safetensors.index.json``.

``save_pretrained(..., max_shard_size="2GB")`` in both frameworks writes through ``write_sharded``. The
split is HF's: tensors in order, a new shard when the next tensor would overflow the current one, a
tensor larger than the limit alone in its own shard; one shard is written as plain
``model.safetensors`` with no index. Sizes follow HF: ``"2GB"`` is 2 * 10**9 bytes, ``"2GiB"`` is
2 * 2**30, an int is bytes. The index is written last, so a reader never sees an index naming a
shard that is not complete; stale shards of an earlier save are removed after it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import numpy as np

from convbert_common import checkpoint as ck
from convbert_common.fileio import atomic_write_text

DEFAULT_MAX_SHARD_SIZE = "5GB"  # HF's default: ConvBERT-base (0.4 GB) stays one file
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string such as ``"2GB"``, ``"500MB"``, ``"1.5GiB"``."""
    if isinstance(size, bool):
        raise ValueError(f"max_shard_size must be a size such as '2GB' or a number of bytes, got {size!r}")
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE.match(str(size))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"max_shard_size {size!r}: expected a number of bytes or a size like '2GB', '500MB', "
                             "'1GiB'")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def shard_name(index: int, count: int) -> str:
    """HF's name of shard ``index`` (1-based) of ``count``."""
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def plan(tensors: Mapping[str, np.ndarray], max_bytes: int) -> list[list[str]]:
    """The tensor names of each shard, in order (HF's greedy split)."""
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, array in tensors.items():
        nbytes = int(np.asarray(array).nbytes)
        if nbytes > max_bytes:
            # Larger than a shard: alone, beside the current one.
            shards.append([name])
            continue
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def write_sharded(directory: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                  max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE) -> list[str]:
    """Write ``tensors`` into ``directory`` as one or several safetensors files; returns the files written.

    ``max_shard_size=None`` writes one file whatever its size.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    groups = [list(tensors)] if max_shard_size is None else plan(tensors, parse_size(max_shard_size))
    index_path = os.path.join(directory, ck.SAFETENSORS_INDEX_NAME)
    single = os.path.join(directory, ck.SAFETENSORS_NAME)
    if len(groups) <= 1:
        ck.write_safetensors(single, tensors)
        written = [single]
        stale = [index_path] + _shards_in(directory)
    else:
        written, weight_map = [], {}
        for i, names in enumerate(groups, start=1):
            name = shard_name(i, len(groups))
            path = os.path.join(directory, name)
            ck.write_safetensors(path, {n: tensors[n] for n in names})
            written.append(path)
            weight_map.update({n: name for n in names})
        total = sum(int(np.asarray(a).nbytes) for a in tensors.values())
        params = sum(int(np.asarray(a).size) for a in tensors.values())
        index = {"metadata": {"total_parameters": params, "total_size": total}, "weight_map": weight_map}
        atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(index_path)
        # A model.safetensors of an earlier save would be read before the index.
        stale = [single] + [p for p in _shards_in(directory) if p not in written]
    for path in stale:
        if os.path.isfile(path):
            os.remove(path)
    return written


def _shards_in(directory: str) -> list[str]:
    return [os.path.join(directory, f) for f in sorted(os.listdir(directory)) if _SHARD.match(f)]
