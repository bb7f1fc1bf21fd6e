"""The span-based dynamic convolution on a CUDA GPU: fused Triton kernel vs the torch formulations.

B batch, L sequence, N' heads, D head size, K taps. Each implementation runs forward + backward
(``torch.autograd.grad`` of the output against a fixed upstream gradient, w.r.t. values and kernel
logits) on the same inputs, ConvBERT-base shapes by default (B 32, L 512, N' 6, D 64, K 9, bf16):

- ``triton``: ``convbert_pt.kernels.sdconv_triton.span_dynamic_conv_triton`` (softmax fused,
  forward and backward kernels, nothing of size (B, L, N' * D, K));
- ``unfold``: the reference implementation's formulation, ``F.unfold`` of (B, N' * D, L, 1) with a
  (K, 1) kernel into a (B, N' * D * K, L) im2col tensor, then a matmul with the softmax weights;
- ``shift_accumulate``: the K shifted slices of a zero-padded copy of the values, weighted and
  summed in torch (``convbert_pt.kernels.reference``), differentiated by autograd;
- ``native``: ``convbert_pt.sdconv.span_dynamic_conv(impl="native")`` (shift-and-accumulate with a
  hand-written backward), when that module provides it.

Times are medians over ``--runs`` runs, the implementations interleaved within each run
(``bench/_common``), each call bracketed by CUDA events after a synchronize. Memory
(``torch.cuda.memory_allocated`` / ``max_memory_allocated`` around one forward + backward, above
what was allocated before; inputs and upstream gradient excluded): ``saved``, what autograd holds
from forward to backward beyond the output; ``peak``; ``scratch``, the peak less the output and
both gradients, which every implementation returns alike. The achieved bandwidth
counts the bytes an ideal fused implementation must move (read values, logits and the upstream
gradient, write the output and both gradients) and is compared with a measured device-to-device
copy. Issue targets (H100, bf16): the Triton op at least 3x faster than ``unfold`` with at most
1/K of its extra memory (judged on scratch memory; the peak ratio is printed beside it).

    python bench/bench_kernels.py [--batch 32 --length 512 --heads 6 --head-size 64 --kernel-size 9]
        [--dtype bf16] [--runs 50] [--warmup 5] [--json bench/results/kernels.json]
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import bench_parser, cuda_seconds, interleaved, interleaved_samples, machine_info, machine_line

from convbert_common import shapes
from convbert_common.fileio import atomic_write_text
from convbert_pt.kernels.reference import span_dynamic_conv_reference

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TARGET_SPEEDUP = 3.0  # triton vs unfold, forward + backward


def unfold_conv(values: torch.Tensor, kernel_logits: torch.Tensor) -> torch.Tensor:
    """The reference implementation's im2col formulation: (B, L, N', D), (B, L, N', K) -> (B, L, N', D)."""
    B, L, N, D = values.shape
    K = kernel_logits.shape[-1]
    weights = torch.softmax(kernel_logits, dim=-1)  # (B, L, N', K)
    columns = values.reshape(B, L, N * D).transpose(1, 2).unsqueeze(-1)  # (B, N'*D, L, 1)
    columns = F.unfold(columns, kernel_size=(K, 1), padding=(shapes.conv_padding(K), 0))  # (B, N'*D*K, L)
    columns = columns.transpose(1, 2).reshape(B, L, N, D, K)  # (B, L, N', D, K)
    return torch.matmul(columns, weights.unsqueeze(-1)).squeeze(-1)  # (B, L, N', D)


def implementations() -> dict[str, Callable]:
    from convbert_pt.kernels.sdconv_triton import span_dynamic_conv_triton

    impls = {
        "triton": span_dynamic_conv_triton,
        "unfold": unfold_conv,
        "shift_accumulate": span_dynamic_conv_reference,
    }
    try:
        from convbert_pt.sdconv import span_dynamic_conv

        def native(values, kernel_logits):
            return span_dynamic_conv(values, kernel_logits, impl="native")

        impls["native"] = native
    except ImportError:
        pass
    return impls


def forward_backward(fn: Callable, values, kernel_logits, grad_out):
    out = fn(values, kernel_logits)
    return out, torch.autograd.grad(out, (values, kernel_logits), grad_out)


def memory_profile(fn: Callable, values, kernel_logits, grad_out) -> dict:
    """Bytes above what was allocated before one forward + backward (inputs and upstream grad excluded).

    ``saved``: held between forward and backward beyond the output (what autograd keeps for backward);
    ``peak``: the peak during forward + backward; ``scratch``: that peak less the output and the two
    gradients, which every implementation returns alike.
    """
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn(values, kernel_logits)
    torch.cuda.synchronize()
    saved = torch.cuda.memory_allocated() - before - _nbytes(out)
    grads = torch.autograd.grad(out, (values, kernel_logits), grad_out)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    scratch = peak - _nbytes(out) - sum(_nbytes(g) for g in grads)
    return {"saved": saved, "peak": peak, "scratch": scratch}


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def copy_bandwidth_gbps(nbytes: int = 1 << 30, runs: int = 20) -> float:
    """Measured device-to-device copy rate (read + write), the memory roofline of this op."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    seconds = interleaved({"copy": lambda: dst.copy_(src)}, runs, 3, timer=cuda_seconds)["copy"]
    return 2 * nbytes / seconds / 1e9


def ideal_bytes(B: int, L: int, N: int, D: int, K: int, itemsize: int) -> tuple[int, int]:
    """Bytes a fused implementation must move: (forward, forward + backward)."""
    activation, logits = B * L * N * D * itemsize, B * L * N * K * itemsize
    forward = 2 * activation + logits  # read values + logits, write out
    backward = 3 * activation + 2 * logits  # read values + upstream grad + logits, write both grads
    return forward, forward + backward


def measure(args) -> dict:
    dtype = DTYPES[args.dtype]
    B, L, N, D, K = args.batch, args.length, args.heads, args.head_size, args.kernel_size
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    values = torch.randn(B, L, N, D, device=DEVICE, generator=gen).to(dtype).requires_grad_(True)
    kernel_logits = (2 * torch.randn(B, L, N, K, device=DEVICE, generator=gen)).to(dtype).requires_grad_(True)
    grad_out = torch.randn(B, L, N, D, device=DEVICE, generator=gen).to(dtype)

    expected = forward_backward(unfold_conv, values.float(), kernel_logits.float(), grad_out.float())
    fwd_bytes, total_bytes = ideal_bytes(B, L, N, D, K, values.element_size())
    impls = implementations()
    diffs = {}
    for name, fn in impls.items():
        got = forward_backward(fn, values, kernel_logits, grad_out)
        errors = [(g.float() - e).abs().max().item() for g, e in zip(got[1], expected[1], strict=True)]
        diffs[name] = max(errors + [(got[0].float() - expected[0]).abs().max().item()])
        del got
    # Every implementation in turn within each run (interleaved), CUDA-event times.
    with torch.no_grad():
        forward = interleaved({name: lambda fn=fn: fn(values, kernel_logits) for name, fn in impls.items()},
                              args.runs, args.warmup, timer=cuda_seconds)
    steps = interleaved_samples(
        {name: lambda fn=fn: forward_backward(fn, values, kernel_logits, grad_out) for name, fn in impls.items()},
        args.runs, args.warmup, timer=cuda_seconds)
    rows = []
    for name, fn in impls.items():
        fwd_ms = forward[name] * 1e3
        step_runs = [t * 1e3 for t in steps[name]]
        step_ms = statistics.median(step_runs)
        memory = memory_profile(fn, values, kernel_logits, grad_out)
        rows.append(
            {
                "impl": name,
                "forward_ms": fwd_ms,
                "forward_backward_ms": step_ms,
                "forward_backward_ms_runs": [round(t, 4) for t in step_runs],
                "saved_mib": memory["saved"] / 2**20,
                "peak_mib": memory["peak"] / 2**20,
                "scratch_mib": memory["scratch"] / 2**20,
                "forward_gbps": fwd_bytes / (fwd_ms * 1e-3) / 1e9,
                "forward_backward_gbps": total_bytes / (step_ms * 1e-3) / 1e9,
                "max_abs_diff_vs_unfold_fp32": diffs[name],
            }
        )
    unfold = next(row for row in rows if row["impl"] == "unfold")
    for row in rows:
        row["speedup_vs_unfold"] = unfold["forward_backward_ms"] / row["forward_backward_ms"]
        row["peak_vs_unfold"] = row["peak_mib"] / unfold["peak_mib"]
        row["scratch_vs_unfold"] = max(row["scratch_mib"], 0.0) / unfold["scratch_mib"]
    return {"shape": {"B": B, "L": L, "N": N, "D": D, "K": K}, "dtype": args.dtype, "rows": rows}


def print_table(result: dict, copy_gbps: float) -> None:
    s = result["shape"]
    print(
        f"span-based dynamic conv, B {s['B']} L {s['L']} N' {s['N']} D {s['D']} K {s['K']}, "
        f"{result['dtype']}; device copy rate {copy_gbps:,.0f} GB/s"
    )
    header = (
        f"{'impl':<17} {'fwd ms':>8} {'fwd+bwd ms':>11} {'x unfold':>9} {'saved MiB':>10} {'peak MiB':>9} "
        f"{'scratch MiB':>12} {'GB/s':>7} {'% copy':>7} {'max diff':>9}"
    )
    print(header)
    for row in result["rows"]:
        print(
            f"{row['impl']:<17} {row['forward_ms']:>8.3f} {row['forward_backward_ms']:>11.3f} "
            f"{row['speedup_vs_unfold']:>9.2f} {row['saved_mib']:>10.1f} {row['peak_mib']:>9.1f} "
            f"{row['scratch_mib']:>12.1f} {row['forward_backward_gbps']:>7,.0f} "
            f"{100 * row['forward_backward_gbps'] / copy_gbps:>6.1f}% "
            f"{row['max_abs_diff_vs_unfold_fp32']:>9.2e}"
        )
    print(
        "saved: held from forward to backward beyond the output; peak: during forward + backward; "
        "scratch: peak less the output and both gradients (the same for every implementation)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "kernels.json", runs=50, warmup=5, threads=None, quick=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=9)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    args = parser.parse_args(argv)
    if args.runs < 20:
        parser.error("--runs must be at least 20 (the median of fewer runs is too noisy)")
    if not torch.cuda.is_available():
        print("bench_kernels: skipped, no CUDA device (the Triton kernels are benchmarked on a GPU only)")
        return 0

    machine = machine_info()
    print(machine_line(machine))
    copy_gbps = copy_bandwidth_gbps()
    result = measure(args)
    print_table(result, copy_gbps)
    triton_row = next(row for row in result["rows"] if row["impl"] == "triton")
    K = args.kernel_size
    speed_ok = triton_row["speedup_vs_unfold"] >= TARGET_SPEEDUP
    # The memory target is judged on scratch memory: the output and the gradients are the op's
    # results, the same bytes for every implementation; the peak ratio is printed beside it.
    memory_ok = triton_row["scratch_vs_unfold"] <= 1 / K
    print(
        f"triton vs unfold: {triton_row['speedup_vs_unfold']:.2f}x faster (target >= {TARGET_SPEEDUP}x: "
        f"{'met' if speed_ok else 'NOT met'}); scratch memory {triton_row['scratch_vs_unfold']:.3f} "
        f"of unfold's (target <= 1/K = {1 / K:.3f}: {'met' if memory_ok else 'NOT met'}); peak memory "
        f"{triton_row['peak_vs_unfold']:.3f} of unfold's"
    )

    import triton

    report = {
        "benchmark": "kernels",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": args.runs,
        "warmup": args.warmup,
        "statistic": "median",
        "copy_gbps": copy_gbps,
        "targets": {"speedup_vs_unfold": TARGET_SPEEDUP, "scratch_vs_unfold": 1 / K},
        "targets_met": {"speed": speed_ok, "memory": memory_ok},
        **result,
        "machine": machine,
        "environment": {
            "device": torch.cuda.get_device_name(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "triton": triton.__version__,
            "python": platform.python_version(),
        },
    }
    atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
