"""The conversion walk-through example runs end to end and reports a bit-identical round trip."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_convert_walkthrough_round_trip_is_bit_identical_and_verify_passes(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "convert_walkthrough.py"), "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bit-identical: True" in proc.stdout
    assert "OK:" in proc.stdout and "MISMATCH" not in proc.stdout
    # The round-tripped directory is what verify checked, not the source.
    assert f"verified {tmp_path / 'back'}" in proc.stdout.splitlines()
    assert {"hf-tf", "model.keras", "back"} <= {p.name for p in tmp_path.iterdir()}
