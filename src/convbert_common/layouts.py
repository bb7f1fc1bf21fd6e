"""Named tensor-layout transforms between the canonical (HF PyTorch) layout and the others.

Each layout is a pair of NumPy functions, ``to_target`` and ``to_canonical``, that are exact
inverses (they only permute or insert/drop a unit axis, so round trips are bit-identical). Both
directions check the rank and the expected shape first: nothing is reshaped by guessing.

| layout         | canonical (PT)   | target (Keras / HF-TF / TF1)  |
|----------------|------------------|-------------------------------|
| identity       | any              | same                          |
| transpose      | Linear [out, in] | Dense kernel [in, out]        |
| depthwise      | [d, 1, K]        | [K, d, 1]                     |
| pointwise      | [A, d, 1]        | [1, d, A]                     |
| column_bias    | [A, 1]           | [A]                           |
| grouped_hf_tf  | [G, in/G, out/G] | [out/G, in/G, G]              |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    name: str
    canonical_rank: int | None  # None: any rank
    _to_target: Callable[[np.ndarray], np.ndarray]
    _to_canonical: Callable[[np.ndarray], np.ndarray]
    _target_shape: Callable[[tuple[int, ...]], tuple[int, ...]]

    def target_shape(self, canonical_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self._target_shape(tuple(canonical_shape)))

    def to_target(self, array: np.ndarray, canonical_shape: tuple[int, ...], what: str) -> np.ndarray:
        _check_shape(array, tuple(canonical_shape), what, f"canonical ({self.name})")
        return np.ascontiguousarray(self._to_target(array))

    def to_canonical(self, array: np.ndarray, canonical_shape: tuple[int, ...], what: str) -> np.ndarray:
        _check_shape(array, self.target_shape(canonical_shape), what, f"{self.name} target")
        return np.ascontiguousarray(self._to_canonical(array))


class LayoutError(ValueError):
    """A tensor's shape does not match what the weight table expects for it."""


def _check_shape(array: np.ndarray, expected: tuple[int, ...], what: str, side: str) -> None:
    if tuple(array.shape) != tuple(expected):
        raise LayoutError(f"{what}: expected {side} shape {tuple(expected)}, got {tuple(array.shape)}")


def _perm(axes: tuple[int, ...]) -> tuple[Callable, Callable]:
    def fwd(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape[a] for a in axes)

    return (lambda x: np.transpose(x, axes)), fwd


_t_fwd, _t_shape = _perm((1, 0))
_dw_fwd, _dw_shape = _perm((2, 0, 1))
_pw_fwd, _pw_shape = _perm((2, 1, 0))

LAYOUTS: dict[str, Layout] = {
    "identity": Layout("identity", None, lambda x: x, lambda x: x, lambda s: s),
    "transpose": Layout("transpose", 2, _t_fwd, lambda x: np.transpose(x, (1, 0)), _t_shape),
    # (d, 1, K) -> (K, d, 1) and back with the inverse permutation (1, 2, 0)
    "depthwise": Layout("depthwise", 3, _dw_fwd, lambda x: np.transpose(x, (1, 2, 0)), _dw_shape),
    # (A, d, 1) <-> (1, d, A): the permutation (2, 1, 0) is its own inverse
    "pointwise": Layout("pointwise", 3, _pw_fwd, _pw_fwd, _pw_shape),
    "column_bias": Layout("column_bias", 2, lambda x: x[:, 0], lambda x: x[:, None], lambda s: (s[0],)),
    "grouped_hf_tf": Layout("grouped_hf_tf", 3, _pw_fwd, _pw_fwd, _pw_shape),
}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}") from None
