"""Parity helpers: compare nested outputs and name the tensor that differs and by how much."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class ParityError(AssertionError):
    pass


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if hasattr(x, "numpy"):  # tf / keras tensors
        return np.asarray(x.numpy())
    return np.asarray(x)


def max_abs_diff(actual, expected) -> float:
    a, e = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    if a.shape != e.shape:
        raise ParityError(f"shape {a.shape} != expected {e.shape}")
    return float(np.max(np.abs(a - e))) if a.size else 0.0


def assert_close(name: str, actual, expected, atol: float) -> float:
    """Raise ParityError naming ``name``, the max difference and where it is, unless within ``atol``."""
    a, e = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    if a.shape != e.shape:
        raise ParityError(f"{name}: shape {a.shape} != expected {e.shape}")
    if not np.all(np.isfinite(a)):
        raise ParityError(f"{name}: contains non-finite values")
    if a.size == 0:
        return 0.0
    diff = np.abs(a - e)
    worst = float(diff.max())
    if not worst <= atol:
        where = np.unravel_index(int(diff.argmax()), diff.shape)
        raise ParityError(f"{name}: max |diff| {worst:.3e} > {atol:.1e} at index {tuple(int(i) for i in where)}")
    return worst


def assert_all_close(actual: Mapping, expected: Mapping, atol: float, keys: Sequence[str] | None = None) -> dict:
    """Compare every key (or ``keys``); returns {key: max diff}; the first failure names its key."""
    report = {}
    for key in keys if keys is not None else expected.keys():
        if key not in actual:
            raise ParityError(f"{key}: missing from the actual outputs (have {sorted(actual)})")
        report[key] = assert_close(key, actual[key], expected[key], atol)
    return report


def assert_three_way(name: str, x, x_plain, ref32, factor: float, atol: float) -> None:
    """Low-precision rule: ``|x - ref32| <= factor * |x_plain - ref32| + atol`` (elementwise max)."""
    err = max_abs_diff(to_numpy(x).astype(np.float64), ref32)
    bar = factor * max_abs_diff(to_numpy(x_plain).astype(np.float64), ref32) + atol
    if not err <= bar:
        raise ParityError(f"{name}: max |x - ref32| {err:.3e} > bar {bar:.3e} (plain path error x {factor} + {atol})")


def randomise_torch(model, seed: int) -> None:
    """Large random weights everywhere (biases and LayerNorm included) so a wrong mapping shows."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
