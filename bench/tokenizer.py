"""Throughput of ConvBertTokenizerFast against the raw ``tokenizers`` pipeline it wraps.

Both sides encode the same lines (the fixture corpus repeated) in batches, padded and truncated to
the same length, and both produce what a model needs: ``input_ids``, ``token_type_ids`` and
``attention_mask`` per batch, as Python lists and as int64 numpy arrays. The raw side uses the
wrapper's own ``tokenizers.Tokenizer`` (``backend_tokenizer``) with ``enable_padding`` /
``enable_truncation`` + ``encode_batch``, so the difference is the wrapper's overhead alone.
Each batch is encoded by both sides back to back (alternating which goes first), so drift in
machine load hits both sides alike; the figure is the median of the per-run totals.

    python bench/tokenizer.py [--lines 30000] [--batch-size 64] [--max-length 128] [--runs 5]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tokenizers
from _common import bench_parser, interleaved_samples, machine_info, machine_line

from convbert_common.fileio import atomic_write_text
from convbert_common.tokenizer import ConvBertTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "tokenizer"
# The wrapper may cost at most this factor over raw `tokenizers` (the project's budget).
ALLOWED_RATIO = 1.2


def load_lines(count: int) -> list[str]:
    with open(FIXTURES / "corpus.jsonl", encoding="utf-8") as fh:
        corpus = [json.loads(line)["text"] for line in fh]
    return [corpus[i % len(corpus)] for i in range(count)]


def batches(lines: list[str], size: int) -> list[list[str]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def wrapper_runner(tokenizer: ConvBertTokenizerFast, max_length: int, tensors: str | None) -> Callable:
    def encode(batch: list[str]):
        return tokenizer(
            batch, padding="max_length", truncation=True, max_length=max_length, return_tensors=tensors
        )

    return encode


def raw_runner(tokenizer: ConvBertTokenizerFast, max_length: int, tensors: str | None) -> Callable:
    backend = tokenizer.backend_tokenizer
    pad_id, pad_token = tokenizer.pad_token_id, tokenizer.pad_token

    def encode(batch: list[str]):
        backend.enable_truncation(max_length)
        backend.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
        encodings = backend.encode_batch(batch)
        out = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if tensors == "np":
            out = {name: np.array(value, dtype=np.int64) for name, value in out.items()}
        return out

    return encode


def time_interleaved(ours: Callable, raw: Callable, work: list[list[str]], run: int) -> tuple[float, float]:
    """One run over all batches, each batch encoded by both sides back to back: (ours, raw) seconds.

    Interleaving per batch (not per run) lets load from other processes hit both sides alike; the
    side that goes first alternates from batch to batch and from run to run, so neither always
    finds the caches warm. One round of ``_common.interleaved_samples`` is one batch.
    """
    ours_batches, raw_batches = iter(work), iter(work)
    sides = {"ours": lambda: ours(next(ours_batches)), "raw": lambda: raw(next(raw_batches))}
    if not run % 2:
        sides = {"raw": sides["raw"], "ours": sides["ours"]}
    samples = interleaved_samples(sides, len(work), 0, alternate=True)
    return sum(samples["ours"]), sum(samples["raw"])


def measure(tokenizer, work, n_lines, max_length, tensors, runs) -> dict:
    ours, raw = wrapper_runner(tokenizer, max_length, tensors), raw_runner(tokenizer, max_length, tensors)
    check_same_outputs(ours, raw, work[0])
    time_interleaved(ours, raw, work[:20], 0)  # warm-up: first calls pay allocation and thread start-up
    timings = [time_interleaved(ours, raw, work, run) for run in range(runs)]
    ours_s = [t[0] for t in timings]
    raw_s = [t[1] for t in timings]
    ours_lps = n_lines / statistics.median(ours_s)
    raw_lps = n_lines / statistics.median(raw_s)
    return {
        "output": "numpy int64" if tensors == "np" else "python lists",
        "ours_lines_per_s": round(ours_lps, 1),
        "raw_lines_per_s": round(raw_lps, 1),
        "ratio_raw_over_ours": round(raw_lps / ours_lps, 4),
        "ours_seconds": [round(s, 4) for s in ours_s],
        "raw_seconds": [round(s, 4) for s in raw_s],
    }


def check_same_outputs(ours: Callable, raw: Callable, batch: list[str]) -> None:
    """A benchmark of two things that compute different answers would mean nothing."""
    a, b = ours(batch), raw(batch)
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        if not np.array_equal(np.asarray(a[name]), np.asarray(b[name])):
            raise SystemExit(f"wrapper and raw tokenizers disagree on {name}")


def print_table(results: list[dict]) -> None:
    print(f"{'output':<14} {'wrapper lines/s':>16} {'raw lines/s':>14} {'raw/wrapper':>12}")
    for row in results:
        print(
            f"{row['output']:<14} {row['ours_lines_per_s']:>16,.0f} {row['raw_lines_per_s']:>14,.0f} "
            f"{row['ratio_raw_over_ours']:>12.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "tokenizer.json", runs=5, warmup=None, threads=None, quick=None)
    parser.add_argument("--lines", type=int, default=30_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the median of fewer runs is too noisy)")

    tokenizer = ConvBertTokenizerFast(FIXTURES / "vocab.txt")
    work = batches(load_lines(args.lines), args.batch_size)
    results = [
        measure(tokenizer, work, args.lines, args.max_length, tensors, args.runs) for tensors in (None, "np")
    ]
    machine = machine_info()
    print(machine_line(machine))
    print(
        f"{args.lines} lines, batches of {args.batch_size}, padding/truncation to {args.max_length}, "
        f"median of {args.runs} interleaved runs"
    )
    print_table(results)
    worst = max(row["ratio_raw_over_ours"] for row in results)
    verdict = "within" if worst <= ALLOWED_RATIO else "OVER"
    print(f"worst raw/wrapper ratio {worst:.3f}: {verdict} the {ALLOWED_RATIO}x budget")

    report = {
        "benchmark": "tokenizer",
        "lines": args.lines,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "runs": args.runs,
        "statistic": "median",
        "allowed_ratio": ALLOWED_RATIO,
        "worst_ratio": worst,
        "within_budget": worst <= ALLOWED_RATIO,
        "results": results,
        "machine": machine,
        "environment": {
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        },
    }
    atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
