"""Run every benchmark in one go and collect their JSON into one summary table.

    python bench/run.py [--quick] [--only tokenizer pt tf sdconv_tf convert kernels gpu_train export]

Each benchmark runs in its own process (PyTorch and TensorFlow thread pools and allocators do not
share a process well) and writes its own JSON under bench/results/; this script prints each one's
table as it goes, then writes bench/results/summary.json with the headline ratios. The GPU
benchmarks (kernels, gpu_train) run only where CUDA is available; the HF columns only where the
`bench` extra is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

BENCHES = {
    "tokenizer": ["tokenizer.py"],
    "pt": ["bench_pt.py"],
    "tf": ["bench_tf.py"],
    "sdconv_tf": ["bench_sdconv_tf.py"],
    "convert": ["bench_convert.py"],
    "load": ["bench_load.py"],
    "kernels": ["bench_kernels.py"],
    "gpu_train": ["bench_gpu_train.py"],
    "export": ["bench_export.py"],
}
QUICK_ARGS = {"pt": ["--quick"], "tf": ["--quick"], "sdconv_tf": ["--quick"],
              "tokenizer": ["--lines", "3000", "--runs", "3"],
              "convert": ["--preset", "small", "--repeat", "1"], "gpu_train": ["--quick"],
              "export": ["--quick"]}
JSON_NAMES = {"tokenizer": "tokenizer.json", "pt": "bench_pt.json", "tf": "bench_tf.json",
              "sdconv_tf": "sdconv_tf.json",
              "convert": "convert.json", "load": "load.json", "kernels": "kernels.json", "gpu_train": "gpu_train.json",
              "export": "bench_export.json"}

GPU_ONLY = ("kernels", "gpu_train")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and few runs: a smoke test")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=sorted(BENCHES))
    args = parser.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "python": platform.python_version(), "benches": {}}
    failed = []
    for name in args.only:
        if name in GPU_ONLY and not _cuda_available():
            sys.stdout.write(f"== {name}: skipped (no CUDA device)\n")
            continue
        cmd = [sys.executable, os.path.join(HERE, BENCHES[name][0]), *(QUICK_ARGS.get(name, []) if args.quick else [])]
        if name == "convert":
            cmd += ["--json", os.path.join(RESULTS, JSON_NAMES[name])]
        sys.stdout.write(f"== {name}: {' '.join(os.path.basename(c) for c in cmd[1:])}\n")
        sys.stdout.flush()
        start = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        elapsed = time.perf_counter() - start
        entry = {"returncode": proc.returncode, "seconds": elapsed}
        path = os.path.join(RESULTS, JSON_NAMES[name])
        if proc.returncode == 0 and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                entry["results"] = json.load(fh)
        else:
            failed.append(name)
        summary["benches"][name] = entry
    with open(os.path.join(RESULTS, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    sys.stdout.write(f"\nwrote {os.path.join(RESULTS, 'summary.json')}"
                     + (f"; FAILED: {', '.join(failed)}\n" if failed else "\n"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
