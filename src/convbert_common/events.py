"""TensorBoard event files written directly: scalars without importing TensorFlow.

TensorBoard's own writer imports TensorFlow when it is installed (for ``tf.io.gfile``), which
costs seconds and, in a process that later loads Triton, aborts inside LLVM (see the README). The
format is small: TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C of
the data) around ``Event`` protocol buffers, encoded here by hand:
``Event {double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5}``,
``Summary {repeated Value value = 1}``, ``Value {string tag = 1; float simple_value = 2}``.
"""

from __future__ import annotations

import os
import socket
import struct
import time


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord checksums use it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, wall_time: float, *, file_version: str | None = None,
           scalars: dict[str, float] | None = None) -> bytes:
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step & ((1 << 64) - 1))
    if file_version is not None:
        out += _field(3, file_version.encode())
    if scalars:
        values = b"".join(_field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
                          for tag, value in scalars.items())
        out += _field(5, values)
    return out


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked(crc32c(length))) + data + struct.pack("<I", _masked(crc32c(data)))


class ScalarWriter:
    """Appends scalar summaries to a new ``events.out.tfevents.*`` file in ``logdir``."""

    def __init__(self, logdir: str) -> None:
        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        self.path = os.path.join(logdir, f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}")
        self._fh = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        self._fh.write(_record(_event(0, now, file_version="brain.Event:2")))
        self._fh.flush()

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._fh.write(_record(_event(step, time.time(), scalars=scalars)))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
