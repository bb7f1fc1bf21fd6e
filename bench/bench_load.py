"""Time and peak memory of ``from_pretrained`` for ConvBERT-base: ours against HF transformers, both frameworks.

Every load runs in a fresh subprocess (its peak RSS is its own), after the imports it needs; the
RSS reached after those imports is subtracted, so "extra" is what loading itself costs. The runs
interleave (ours PT, HF PT, ours Keras, HF TF, again), and each figure is the median of
``--repeats``. The checkpoint is a freshly initialised ConvBERT-base written once, with
``model.safetensors`` (what ours and HF PyTorch read) and ``tf_model.h5`` (what HF TF reads; our
Keras reads the safetensors). Targets (issue 17): at most 1.0x HF's time, at most 1.2x the
checkpoint's size in peak extra memory.

    PYTHONPATH=src python bench/bench_load.py [--repeats 3] [--json bench/results/load.json]

HF's columns need the ``bench`` extra (transformers 4.x, and tf-keras for its TF classes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

LOAD = r"""
import resource, sys, time
{imports}
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()
before = rss()
t = time.perf_counter()
{work}
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT", elapsed, peak - before)
"""

CASES = {
    "ours PyTorch": ("import torch, convbert_pt", "m = convbert_pt.ConvBertModel.from_pretrained({path!r})", {}),
    "HF PyTorch": ("import torch, transformers", "m = transformers.ConvBertModel.from_pretrained({path!r})",
                   {"USE_TF": "0"}),
    "ours Keras": ("import keras, convbert_tf", "m = convbert_tf.ConvBertModel.from_pretrained({path!r})", {}),
    "HF TF": ("import tensorflow, transformers",
              "m = transformers.TFConvBertModel.from_pretrained({path!r}, use_safetensors=False)",
              {"TF_USE_LEGACY_KERAS": "1", "USE_TORCH": "0"}),
}
PAIRS = (("PyTorch", "ours PyTorch", "HF PyTorch"), ("Keras / TF", "ours Keras", "HF TF"))


def run(case: str, path: str) -> tuple[float, int] | None:
    imports, work, env = CASES[case]
    code = LOAD.format(imports=imports, work=work.format(path=path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(f"{case}: failed ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else '?'})\n")
        return None
    _, seconds, extra = lines[-1].split()
    return float(seconds), int(extra)


def make_checkpoint(folder: str, preset: str) -> None:
    code = (
        "import os, convbert_pt\n"
        "from convbert_common import checkpoint as ck, heads\n"
        "from convbert_common.presets import preset\n"
        f"m = convbert_pt.ConvBertModel(preset({preset!r}))\n"
        f"m.save_pretrained({folder!r})\n"
        f"t = ck.read_safetensors(os.path.join({folder!r}, 'model.safetensors'))\n"
        f"ck.write_hf_tf_h5(os.path.join({folder!r}, 'tf_model.h5'), m.config, heads.MODEL, t)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Flags"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="bench/results/load.json")
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu.get('Model name', '?')} ({cpu['cpus']} logical CPUs)")
    print(f"flags: {cpu.get('Flags', '?')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "convbert-" + args.preset)
        make_checkpoint(folder, args.preset)
        size = os.path.getsize(os.path.join(folder, "model.safetensors"))
        samples: dict[str, list[tuple[float, int]]] = {c: [] for c in CASES}
        run("ours PyTorch", folder)  # warm the page cache: every timed run reads the file from memory
        for _ in range(args.repeats):
            for case in CASES:  # interleaved, so a busy moment of the machine hits every column
                result = run(case, folder)
                if result is not None:
                    samples[case].append(result)
    rows = {}
    print(f"\nConvBERT-{args.preset}: model.safetensors {size / 2**20:.0f} MiB; median of {args.repeats} runs each")
    print(f"{'from_pretrained':14s} {'seconds':>8s} {'peak extra MiB':>15s} {'x checkpoint':>13s}")
    for case, values in samples.items():
        if not values:
            print(f"{case:14s} {'n/a':>8s}")
            continue
        seconds = statistics.median(v[0] for v in values)
        extra = statistics.median(v[1] for v in values)
        rows[case] = {"seconds": seconds, "peak_extra_bytes": extra, "peak_over_checkpoint": extra / size,
                      "runs": [list(v) for v in values]}
        print(f"{case:14s} {seconds:8.2f} {extra / 2**20:15.0f} {extra / size:13.2f}")
    ratios = {}
    for name, ours, theirs in PAIRS:
        if ours in rows and theirs in rows:
            ratio = rows[ours]["seconds"] / rows[theirs]["seconds"]
            ratios[name] = {"time_vs_hf": ratio, "peak_over_checkpoint": rows[ours]["peak_over_checkpoint"]}
            print(f"{name}: ours/HF time {ratio:.2f}x (target <= 1.0), peak {rows[ours]['peak_over_checkpoint']:.2f}x "
                  f"checkpoint (target <= 1.2)")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump({"preset": args.preset, "checkpoint_bytes": size, "repeats": args.repeats, "rows": rows,
                   "ratios": ratios, "cpu": cpu, "date": time.strftime("%Y-%m-%d")}, fh, indent=2)


if __name__ == "__main__":
    main()
