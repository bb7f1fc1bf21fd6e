"""Time and peak memory of converting ConvBERT-base (random weights) PyTorch -> Keras -> PyTorch.

Each step runs in a fresh subprocess so its peak RSS is its own; the baseline (interpreter plus
the framework imports) is measured the same way and subtracted; the time is taken after the
imports. Every step is repeated ``--repeat`` times, interleaved with the alternatives to the
hand-written parts of ``convbert_tf.keras_file`` (each round runs every step once, in turn);
the table gives medians, and each alternative's ratio to ours:

- PT -> Keras through ``zipfile`` alone: h5py writes a temporary HDF5 file, copied into the
  archive (what ``write_keras_file`` does past the plain-zip size limit);
- Keras -> PT inflating the weights member into a temporary file (what a compressed member gets);
- ``--slow``: Keras -> PT through ``ZipFile.open`` (h5py reading zipfile's member file directly).

Targets (issue 5): the round trip under 10 s, and each step's peak under 3x the checkpoint size.

    python bench/bench_convert.py [--preset base] [--repeat 3] [--slow] [--no-alternatives]
        [--json bench/results/convert.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import interleaved_samples, machine_info, machine_line

STEP = r"""
import resource, sys, time
{imports}
{patch}
t = time.perf_counter()
{work}
elapsed = time.perf_counter() - t
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

IMPORTS = "import keras, numpy, safetensors, torch, convbert_tools.convert, convbert_tf, convbert_pt"

# The alternatives, as patches of convbert_tf.keras_file applied in the step's process.
ZIPFILE_WRITE = "from convbert_tf import keras_file\nkeras_file.ZIP32_WEIGHTS_LIMIT = 0"
TEMPORARY_READ = "from convbert_tf import keras_file\nkeras_file._stored_member_offset = lambda fh, info: None"
ZIPFILE_READ = """
import contextlib, h5py
from convbert_tf import keras_file

@contextlib.contextmanager
def through_zipfile(archive, raw, info, path):
    with archive.open(info) as member, h5py.File(member, "r") as fh:
        yield fh

keras_file._open_h5_member = through_zipfile
"""


def run_step(work: str, patch: str = "") -> tuple[float, int]:
    code = STEP.format(imports=IMPORTS, patch=patch, work=work)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    elapsed, rss = out.stdout.strip().splitlines()[-1].split()
    return float(elapsed), int(rss)


def own_clock(step) -> float:
    """The seconds a step reports for itself."""
    return step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every step (medians are reported)")
    parser.add_argument("--no-alternatives", action="store_true", help="our steps only")
    parser.add_argument("--slow", action="store_true", help="add Keras -> PT through ZipFile.open (slow)")
    parser.add_argument("--json", default="bench/results/convert.json")
    args = parser.parse_args()
    machine = machine_info()

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "pt")
        # The source checkpoint: a fresh (randomly initialised) PyTorch model saved canonically.
        run_step(f"from convbert_common.presets import preset\n"
                 f"m = convbert_pt.ConvBertModel(preset({args.preset!r}))\nm.save_pretrained({src!r})")
        size = os.path.getsize(os.path.join(src, "model.safetensors"))
        _, baseline = run_step("pass")
        keras_file = os.path.join(tmp, "m.keras")

        def convert(source: str, target: str, to: str) -> str:
            return (f"convbert_tools.convert.convert({source!r}, {target!r}, to={to!r}, force=True, "
                    f"progress=False)")

        # name -> (work, patch, the step it is an alternative to)
        steps: dict[str, tuple[str, str, str | None]] = {
            "PT -> Keras (.keras)": (convert(src, keras_file, "keras"), "", None),
            "Keras -> PT (safetensors)": (convert(keras_file, os.path.join(tmp, "back"), "safetensors"), "", None),
            "PT -> PT (load + save)": (f"m = convbert_pt.ConvBertModel.from_pretrained({src!r})\n"
                                       f"m.save_pretrained({os.path.join(tmp, 'again')!r})", "", None),
        }
        if not args.no_alternatives:
            steps["  PT -> Keras through zipfile, temporary HDF5"] = (
                convert(src, os.path.join(tmp, "alt.keras"), "keras"), ZIPFILE_WRITE, "PT -> Keras (.keras)")
            steps["  Keras -> PT inflating to a temporary file"] = (
                convert(keras_file, os.path.join(tmp, "alt1"), "safetensors"), TEMPORARY_READ,
                "Keras -> PT (safetensors)")
        if args.slow:
            steps["  Keras -> PT through ZipFile.open"] = (
                convert(keras_file, os.path.join(tmp, "alt2"), "safetensors"), ZIPFILE_READ,
                "Keras -> PT (safetensors)")
        peaks: dict[str, list[int]] = {name: [] for name in steps}

        def step_call(name: str):
            work, patch, _ = steps[name]

            def call() -> float:
                seconds, rss = run_step(work, patch)
                peaks[name].append(rss)
                return seconds

            return call

        # Timed by the step's own clock, after its imports: not the subprocess's start-up.
        samples = interleaved_samples({name: step_call(name) for name in steps}, args.repeat, 0,
                                      timer=own_clock)

    rows = []
    for name, (_work, _patch, alternative_to) in steps.items():
        seconds = statistics.median(samples[name])
        extra = statistics.median(peaks[name]) - baseline
        rows.append({"step": name.strip(), "alternative_to": alternative_to, "seconds": seconds,
                     "seconds_runs": samples[name], "peak_extra_bytes": extra, "peak_over_checkpoint": extra / size})
    by_name = {r["step"]: r for r in rows}
    for r in rows:
        if r["alternative_to"]:
            r["seconds_over_ours"] = r["seconds"] / by_name[r["alternative_to"]]["seconds"]

    total = rows[0]["seconds"] + rows[1]["seconds"]
    print(machine_line(machine))
    print(f"ConvBERT-{args.preset}: checkpoint {size / 2**20:.0f} MiB (float32); medians of {args.repeat} "
          "interleaved rounds, each step in a fresh process")
    print(f"{'step':46s} {'seconds':>8s} {'peak extra MiB':>15s} {'x checkpoint':>13s} {'time / ours':>12s}")
    for r in rows:
        ratio = f"{r['seconds_over_ours']:11.2f}x" if "seconds_over_ours" in r else ""
        label = ("  " if r["alternative_to"] else "") + r["step"]
        print(f"{label:46s} {r['seconds']:8.2f} {r['peak_extra_bytes'] / 2**20:15.0f} "
              f"{r['peak_over_checkpoint']:13.2f} {ratio:>12s}")
    worst = max(r["peak_over_checkpoint"] for r in rows[:2])
    print(f"round trip PT -> Keras -> PT: {total:.2f} s (target < 10 s: {'met' if total < 10 else 'NOT met'}); "
          f"worst peak {worst:.2f}x checkpoint (target < 3x: {'met' if worst < 3 else 'NOT met'})")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump({"preset": args.preset, "checkpoint_bytes": size, "repeat": args.repeat, "steps": rows,
                   "round_trip_seconds": total, "machine": machine, "date": machine["date"]}, fh, indent=2)


if __name__ == "__main__":
    main()
