"""A write that fails part-way (EFBIG under a file-size limit) surfaces as that OSError, naming the file,
in every writer (issue 15, item 13): not as a library's error of its own raised while it cleans up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from convbert_tools import convert as conv

# Run in a fresh process: RLIMIT_FSIZE applies to the whole process, and SIGXFSZ (which would kill
# it) is ignored so that the write returns EFBIG instead.
SCRIPT = r"""
import errno, json, os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from convbert_tools import convert as conv
src, out, formats = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
loaded = {to: conv.read_source(src) for to in formats}  # read before the limit applies
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
report = {}
for to in formats:
    dst = os.path.join(out, {"keras": "m.keras", "keras-weights": "m.weights.h5"}.get(to, to))
    try:
        conv.write_checkpoint(loaded[to], dst, to, progress=False)
        report[to] = "written"
    except Exception as exc:
        report[to] = [type(exc).__name__, getattr(exc, "errno", None), str(exc)]
print(json.dumps(report))
"""


def test_every_writer_reports_a_full_file_system_as_the_os_error(seqcls, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    formats = list(conv.registry().writable())
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(seqcls), str(out), ",".join(formats)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(formats)
    for to, (kind, code, message) in report.items():
        assert (kind, code) == ("OSError", 27), (to, kind, message)
        assert "File too large" in message and str(out) in message, (to, message)
    assert list(out.iterdir()) == []  # nothing half-written, no temporaries
