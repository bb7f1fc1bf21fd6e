"""Time and peak memory of converting ConvBERT-base (random weights) PyTorch -> Keras -> PyTorch.

Each step runs in a fresh subprocess so its peak RSS is its own; the baseline (interpreter plus
the framework imports) is measured the same way and subtracted. Targets (issue 5): the round trip
under 10 s, and each step's peak under 3x the checkpoint size.

    python bench/bench_convert.py [--preset base] [--json bench/results/convert.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

STEP = r"""
import resource, sys, time
{imports}
t = time.perf_counter()
{work}
elapsed = time.perf_counter() - t
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

IMPORTS = "import keras, numpy, safetensors, torch, convbert_tools.convert, convbert_tf, convbert_pt"


def run_step(work: str) -> tuple[float, int]:
    code = STEP.format(imports=IMPORTS, work=work)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    elapsed, rss = out.stdout.strip().splitlines()[-1].split()
    return float(elapsed), int(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--json", default="bench/results/convert.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "pt")
        # The source checkpoint: a fresh (randomly initialised) PyTorch model saved canonically.
        run_step(f"from convbert_common.presets import preset\n"
                 f"m = convbert_pt.ConvBertModel(preset({args.preset!r}))\nm.save_pretrained({src!r})")
        size = os.path.getsize(os.path.join(src, "model.safetensors"))
        _, baseline = run_step("pass")
        keras_file = os.path.join(tmp, "m.keras")
        back = os.path.join(tmp, "back")
        steps = {
            "PT -> Keras (.keras)": f"convbert_tools.convert.convert({src!r}, {keras_file!r}, to='keras', "
                                    f"progress=False)",
            "Keras -> PT (safetensors)": f"convbert_tools.convert.convert({keras_file!r}, {back!r}, "
                                         f"to='safetensors', progress=False)",
            "PT -> PT (load + save)": f"m = convbert_pt.ConvBertModel.from_pretrained({src!r})\n"
                                      f"m.save_pretrained({os.path.join(tmp, 'again')!r})",
        }
        rows = []
        for name, work in steps.items():
            seconds, rss = run_step(work)
            rows.append({"step": name, "seconds": seconds, "peak_extra_bytes": rss - baseline,
                         "peak_over_checkpoint": (rss - baseline) / size})

    total = rows[0]["seconds"] + rows[1]["seconds"]
    print(f"ConvBERT-{args.preset}: checkpoint {size / 2**20:.0f} MiB (float32)")
    print(f"{'step':28s} {'seconds':>8s} {'peak extra MiB':>15s} {'x checkpoint':>13s}")
    for r in rows:
        print(f"{r['step']:28s} {r['seconds']:8.2f} {r['peak_extra_bytes'] / 2**20:15.0f} "
              f"{r['peak_over_checkpoint']:13.2f}")
    worst = max(r["peak_over_checkpoint"] for r in rows[:2])
    print(f"round trip PT -> Keras -> PT: {total:.2f} s (target < 10 s: {'met' if total < 10 else 'NOT met'}); "
          f"worst peak {worst:.2f}x checkpoint (target < 3x: {'met' if worst < 3 else 'NOT met'})")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump({"preset": args.preset, "checkpoint_bytes": size, "steps": rows, "round_trip_seconds": total,
                   "date": time.strftime("%Y-%m-%d")}, fh, indent=2)


if __name__ == "__main__":
    main()
