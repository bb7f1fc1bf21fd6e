"""Keep TensorFlow's native start-up log off the terminal of a command-line run.

TensorFlow 2.21 writes its C++ (absl) log lines (``I0000 ... port.cc:153] oneDNN custom operations
are on``, ``cudart_stub.cc ... Could not find cuda drivers``, and ``WARNING: All log messages before
absl::InitializeLog() ...``) straight to file descriptor 2 while it is imported, whatever
``TF_CPP_MIN_LOG_LEVEL`` says. ``native_stderr_filtered`` points fd 2 at a temporary file around a
block and, after it, writes back every line that is not one of those info or warning lines: errors
(``E``/``F`` lines) and anything else still reach the user. The commands import their framework
inside it (``import_frameworks``) unless ``-v`` asks for everything.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# absl's format: a severity letter, MMDD, a time, the thread, file:line]. Info and warning only.
# The second line of cpu_feature_guard's info message comes without a prefix of its own.
_CHATTER = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]]+\] |WARNING: All log messages before "
                      rb"absl::InitializeLog\(\) is called are written to STDERR|To enable the following instructions: "
                      rb".* rebuild TensorFlow with the appropriate compiler flags\.)")


def is_chatter(line: bytes) -> bool:
    """Whether a line written to fd 2 is TensorFlow's native info / warning log."""
    return bool(_CHATTER.match(line))


@contextlib.contextmanager
def native_stderr_filtered(enabled: bool = True) -> Iterator[None]:
    """Drop native info/warning log lines written to fd 2 inside the block; replay the rest after it."""
    if not enabled:
        yield
        return
    fd = 2  # native code writes to the descriptor, whatever sys.stderr is
    try:
        os.fstat(fd)
    except OSError:  # no descriptor 2 (a detached process): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True) if not is_chatter(line)]
            if kept:
                sys.stderr.flush()
                os.write(fd, b"".join(kept))


def import_frameworks(*names: str, verbose: bool = False) -> None:
    """Import ``names`` (e.g. "keras", "tensorflow") with TensorFlow's start-up log filtered unless ``verbose``.

    A framework that is not installed is left for the command to report where it needs it.
    """
    with native_stderr_filtered(not verbose):
        for name in names:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
