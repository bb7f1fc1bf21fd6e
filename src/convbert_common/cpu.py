"""What the CPU can do for low precision, read from the operating system (no framework imported).

``bf16_units()`` says whether the CPU has bfloat16 arithmetic (``avx512_bf16``, or AMX's
``amx_bf16``): without it, bf16 matmuls are emulated (converted to fp32 and back) and run slower
than fp32. Both frameworks' bf16 opt-ins warn once on such a CPU (``BF16_EMULATED_MESSAGE``).
"""

from __future__ import annotations

import functools
import platform

BF16_FLAGS = ("avx512_bf16", "amx_bf16")

BF16_EMULATED_MESSAGE = (
    "bfloat16 on a CPU without bfloat16 units (no {flags} in /proc/cpuinfo): the matmuls are emulated and "
    "run slower than float32; use float32 on this machine"
)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def bf16_units() -> bool | None:
    """True when the CPU has bfloat16 arithmetic, False when it has not, None when unknown (no cpuinfo).

    Apple silicon and other arm64 CPUs report bf16 as ``bf16``; an x86 CPU as ``avx512_bf16``/``amx_bf16``.
    """
    flags = cpu_flags()
    if not flags:
        return None
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "bf16" in flags
    return any(flag in flags for flag in BF16_FLAGS)


def bf16_emulated_message() -> str:
    return BF16_EMULATED_MESSAGE.format(flags=" or ".join(BF16_FLAGS))


@functools.cache
def warn_bf16_emulated() -> bool:
    """Warn (once per process: the cache is the once) when the CPU lacks bfloat16 units; True if it warned."""
    if bf16_units() is not False:
        return False
    import warnings

    warnings.warn(bf16_emulated_message(), RuntimeWarning, stacklevel=3)
    return True
