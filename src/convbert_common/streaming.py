"""Safetensors tensors read one at a time, when they are used: what loading a model needs.

``from_pretrained`` checks every name and shape against the model before it builds anything; the
header of a safetensors file has both, so the check needs no tensor data. ``read_lazy`` returns a
``LazyTensor`` per entry (shape and dtype from the header, data read from the file on
``np.asarray``), so each framework reads a tensor just before it becomes a parameter and the
process never holds the checkpoint twice (its arrays beside the model's variables). A BF16 entry
reads as float32, as ``checkpoint.read_safetensors`` reads it.
"""

from __future__ import annotations

import os

import numpy as np

from convbert_common import checkpoint
from convbert_common.checkpoint import CheckpointError

# The NumPy dtype a stored code is read as (BF16 widened to float32, as checkpoint.read_safetensors does).
_READ_AS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<f4", "I64": "<i8", "I32": "<i4", "I16": "<i2",
            "I8": "i1", "U8": "u1", "BOOL": "?"}


class LazyTensor:
    """One tensor of a safetensors file: ``shape`` and ``dtype`` now, the data on ``np.asarray``.

    The file was validated by ``checkpoint`` (header, data spans, shard paths) when the entry was
    made; the data is read through the ``safetensors`` package.
    """

    __slots__ = ("path", "name", "shape", "dtype")

    def __init__(self, path: str, name: str, code: str, shape: tuple[int, ...]) -> None:
        self.path, self.name, self.shape = path, name, shape
        self.dtype = np.dtype(_READ_AS[code])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _slice(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy: safetensors' NumPy reader asks for it by name)
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(self.path, framework="np", backend="pread") as fh:
                array = fh.get_tensor(self.name) if start is None else fh.get_slice(self.name)[start:stop]
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{self.path}: cannot read {self.name} ({exc})") from None
        return array.astype(np.float32) if array.dtype.name == "bfloat16" else array

    def read(self) -> np.ndarray:
        return self._slice()

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the first axis."""
        return self._slice(start, min(stop, self.shape[0]))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None):
        array = self.read()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def read_lazy(path: str | os.PathLike) -> dict[str, LazyTensor]:
    """Every entry of a safetensors file as a ``LazyTensor``; the file is checked as ``read_safetensors`` checks it."""
    path = os.fspath(path)
    return {name: LazyTensor(path, name, code, shape)
            for name, (code, shape) in checkpoint.safetensors_entries(path).items()}


def read_index_lazy(path: str | os.PathLike) -> dict[str, LazyTensor]:
    """Every tensor of a sharded checkpoint as a ``LazyTensor``; shards checked as ``read_safetensors_index`` does."""
    files = checkpoint.safetensors_index_files(path)
    entries = {file: checkpoint.safetensors_entries(file) for file in sorted(set(files.values()))}
    return {name: LazyTensor(file, name, *entries[file][name]) for name, file in files.items()}
