"""A full ConvBERT-base training step on a GPU: our PyTorch model against Hugging Face transformers' ConvBERT.

Both sides are ``ConvBertForSequenceClassification`` with the same random weights (``bench_pt.hf_twin``)
and the same inputs and labels; one step is forward + loss + backward + AdamW (``fused=True`` on
CUDA, on both sides), under ``torch.autocast(bfloat16)`` by default (``--dtype fp32`` without
autocast), dropout 0.1 as in training (``--dropout``). Our model runs ``span_dynamic_conv`` with
``impl="auto"`` (the fused Triton kernel on CUDA where it can run; the table says which ran).
Steps are interleaved (ours, HF, ours, HF, ...), each bracketed by CUDA events after a
synchronize, medians of ``--runs`` after ``--warmup``.

FLOPs count the matmuls of a step, 3x the forward's (``bench_pt.convbert_matmul_flops``: 2 per
multiply-add, the classifier head left out); the yardstick is the device's measured bf16 matmul
rate (a large ``torch.mm``, median), whatever ``--dtype`` the step runs in. Peak memory is
``torch.cuda.max_memory_allocated`` during one step above what was allocated before it (weights,
optimizer state and the other side's model excluded; gradients and activations included).
Issue targets (H100 / H200, bf16, 32x512): a step at least 2x faster than HF's and at least 45%
of the bf16 matmul rate.

Without CUDA the script prints a skip message and exits 0, unless ``--device cpu`` is asked for:
a smoke test of the script itself (``--device cpu --quick``: a tiny config, fp32, 3 runs,
``time.perf_counter`` timing).

    python bench/bench_gpu_train.py [--device cuda] [--dtype bf16] [--batch 32 --length 512]
        [--dropout 0.1] [--runs 20] [--warmup 3] [--quick] [--json bench/results/gpu_train.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

# transformers would otherwise import TensorFlow too (seconds, and a second framework beside torch
# on the GPU); only its PyTorch ConvBERT is compared here.
os.environ.setdefault("USE_TF", "0")

import torch  # noqa: E402
from _common import cuda_seconds, interleaved, machine_info, machine_line, matmul_rates, wall_seconds  # noqa: E402
from bench_pt import convbert_matmul_flops, hf_twin, transformers  # noqa: E402

from convbert_common import presets  # noqa: E402
from convbert_common.config import ConvBertConfig  # noqa: E402
from convbert_common.fileio import atomic_write_text  # noqa: E402
from convbert_pt import ConvBertForSequenceClassification  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_SPEEDUP_VS_HF = 2.0
TARGET_PCT_MATMUL_RATE = 45.0


def model_config(quick: bool, dropout: float) -> ConvBertConfig:
    if quick:
        # Small enough for a CPU smoke test, with every branch kept (grouped FFN, K=9, 2 conv heads).
        return presets.preset(
            "base",
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=128,
            embedding_size=64,
            num_hidden_layers=2,
            num_groups=2,
            vocab_size=1000,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            num_labels=2,
        )
    return presets.preset("base", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, num_labels=2)


# ------------------------------------------------------------------------------------------ timing
def timer_for(device: torch.device):
    """Seconds of one call: CUDA events after a synchronize on a GPU, the wall clock elsewhere."""
    return cuda_seconds if device.type == "cuda" else wall_seconds


# ------------------------------------------------------------------------------------------ steps
def batch_inputs(vocab: int, batch: int, length: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, length), generator=g)
    labels = torch.randint(0, 2, (batch,), generator=g)
    tensors = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
    }
    return {k: v.to(device) for k, v in tensors.items()}


def train_step_fn(model: torch.nn.Module | None, x: dict, device: torch.device, dtype: torch.dtype):
    """One optimizer step; the optimizer state is created by the first call (a warm-up)."""
    if model is None:
        return None
    model.train()
    # The fused AdamW (one kernel for all parameters) is what a GPU run would use; the same on both sides.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    autocast = dtype != torch.float32

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss = model(**x).loss
        loss.backward()
        optimizer.step()

    step.optimizer = optimizer
    return step


def step_peak_bytes(step, device: torch.device) -> int | None:
    """max_memory_allocated during one step above what was allocated before it (grads freed first)."""
    if step is None or device.type != "cuda":
        return None
    step.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def sdconv_impl_that_ran(model: torch.nn.Module, x: dict, device: torch.device, dtype: torch.dtype) -> str:
    """Run one forward and report whether the Triton kernel was called (impl="auto" decides per call)."""
    if device.type != "cuda":
        return "native (impl='auto' on CPU tensors)"
    try:
        from convbert_pt.kernels import sdconv_triton
    except ImportError as exc:
        return f"native (Triton not importable: {exc})"
    calls = []
    kernel = sdconv_triton.span_dynamic_conv_triton

    def counting(values, kernel_logits):
        calls.append(values.dtype)
        return kernel(values, kernel_logits)

    # sdconv.py looks the kernel up on the module at each call, so swapping the attribute for one
    # forward observes the choice of impl="auto" without touching the library.
    sdconv_triton.span_dynamic_conv_triton = counting
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            model(**x)
    finally:
        sdconv_triton.span_dynamic_conv_triton = kernel
    if calls:
        return f"triton ({len(calls)} calls per forward, {calls[0]})"
    return "native (the Triton kernel refused these tensors; see sdconv_triton.unsupported_reason)"


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test of the script)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="bf16: autocast; fp32: none")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout of both models")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads on CPU")
    parser.add_argument("--quick", action="store_true", help="tiny config, 2x32, fp32, 3 runs: a smoke test")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "gpu_train.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_train: skipped, no CUDA device (run with --device cpu --quick for a smoke test)")
        return 0
    if args.quick:
        args.batch, args.length, args.dtype, args.runs, args.warmup = 2, 32, "fp32", 3, 1
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)

    # The yardstick is the bf16 rate on a GPU; a CPU here has no native bf16, so there the
    # smoke test compares with the fp32 rate instead.
    rate_name = "bfloat16" if device.type == "cuda" else "float32"
    rates = matmul_rates(8192 if device.type == "cuda" and not args.quick else 512, dtype=rate_name,
                         device=device.type, runs=20, warmup=3)
    rate = rates["best"]

    config = model_config(args.quick, args.dropout)
    ours = ConvBertForSequenceClassification(config)
    hf = hf_twin(ours, config, head=True)
    ours.to(device)
    hf = hf.to(device) if hf is not None else None
    x = batch_inputs(config.vocab_size, args.batch, args.length, device)
    impl = sdconv_impl_that_ran(ours, x, device, dtype)

    steps = {"ours": train_step_fn(ours, x, device, dtype), "hf": train_step_fn(hf, x, device, dtype)}
    medians = interleaved(steps, args.runs, args.warmup, timer=timer_for(device))
    peaks = {k: step_peak_bytes(s, device) for k, s in steps.items()}
    flops = 3 * convbert_matmul_flops(config, args.batch, args.length)

    machine = machine_info(args.threads if device.type == "cpu" else None)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine["cpu_model"]
    print(machine_line(machine))
    print(
        f"{dev_name}, torch {torch.__version__}, transformers {getattr(transformers, '__version__', 'absent')}; "
        f"{'ConvBERT-base' if not args.quick else 'tiny ConvBERT'} sequence classification, "
        f"{args.batch}x{args.length}, {args.dtype}{' autocast' if dtype != torch.float32 else ''}, "
        f"dropout {args.dropout}, AdamW{' (fused)' if device.type == 'cuda' else ''}; "
        f"medians of {args.runs} interleaved steps"
    )
    print(f"our span_dynamic_conv impl='auto' ran: {impl}")
    print(
        f"matmul FLOPs per step (3x forward): {flops / 1e12:.2f} TFLOP; "
        f"measured {rate_name} matmul rate {rate / 1e12:.1f} TFLOP/s"
    )
    print(f"{'side':6s} {'step ms':>10s} {'TFLOP/s':>9s} {f'% {rate_name} mm':>11s} {'step peak MiB':>14s}")
    rows = {}
    for side, t in medians.items():
        if t is None:  # HF transformers not installed
            continue
        peak = peaks.get(side)
        rows[side] = {
            "step_s": t,
            "tflops": flops / t / 1e12,
            "pct_matmul_rate": 100 * flops / t / rate,
            "step_peak_mib": peak / 2**20 if peak is not None else None,
        }
        print(
            f"{side:6s} {t * 1e3:10.2f} {flops / t / 1e12:9.2f} {rows[side]['pct_matmul_rate']:10.1f}% "
            + (f"{peak / 2**20:14.0f}" if peak is not None else f"{'n/a':>14s}")
        )
    result = {
        "benchmark": "gpu_train",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "device": str(device),
            "dtype": args.dtype,
            "batch": args.batch,
            "length": args.length,
            "dropout": args.dropout,
            "runs": args.runs,
            "warmup": args.warmup,
            "quick": args.quick,
        },
        "sdconv_impl": impl,
        "matmul_tflop_per_step": flops / 1e12,
        "matmul_rate_tflops": rate / 1e12,
        "matmul_rate_dtype": rate_name,
        "matmul_rates_tflops": {k: v / 1e12 for k, v in rates.items() if v},
        "machine": machine,
        "sides": rows,
        "targets": {"speedup_vs_hf": TARGET_SPEEDUP_VS_HF, "pct_bf16_matmul_rate": TARGET_PCT_MATMUL_RATE},
        "environment": {
            "device": dev_name,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.version.cuda,
            "transformers": getattr(transformers, "__version__", None),
        },
    }
    # The targets are set for ConvBERT-base in bf16 on a GPU; a smoke test prints the numbers only.
    judged = device.type == "cuda" and dtype == torch.bfloat16 and not args.quick

    def verdict(ok: bool) -> str:
        return ("met" if ok else "NOT met") if judged else "not judged here"

    if medians["hf"] is not None:
        speedup = medians["hf"] / medians["ours"]
        result["speedup_vs_hf"] = speedup
        print(
            f"ours vs HF: {speedup:.2f}x faster (ours/HF {1 / speedup:.2f}; target >= {TARGET_SPEEDUP_VS_HF}x "
            f"on an H100/H200, bf16 autocast: {verdict(speedup >= TARGET_SPEEDUP_VS_HF)})"
        )
    else:
        print("HF side: unavailable (transformers not installed; pip install 'convbert[bench]')")
    pct = rows["ours"]["pct_matmul_rate"]
    result["pct_matmul_rate"] = pct
    print(
        f"ours: {pct:.1f}% of the measured {rate_name} matmul rate (target >= {TARGET_PCT_MATMUL_RATE:.0f}% "
        f"of bf16: {verdict(pct >= TARGET_PCT_MATMUL_RATE)})"
    )
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
