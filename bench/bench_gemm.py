"""The fp32 GEMM rate of every library present, at ConvBERT-base's dense-layer shapes: the roofline.

MKL (``torch.mm``), oneDNN on strided tensors (``torch.ops.mkldnn._linear_pointwise``, what
``convbert_pt.gemm`` runs), oneDNN on oneDNN-layout tensors (``torch.utils.mkldnn``), NumPy's BLAS
(OpenBLAS in the wheels), with ``--tf`` TensorFlow's ``tf.linalg.matmul`` (oneDNN or Eigen,
in a child process: torch and TensorFlow do not share a process well; ``--tf-bf16`` adds its bf16
rate beside, never part of the fp32 limit), and onnxruntime's MatMul (MLAS, the kernel of the
exported ONNX model) wherever onnxruntime is installed (``--no-ort`` leaves it out). Interleaved
by turns that let the previous library's thread pool go to sleep first (``_common.handover_free``),
medians.

The shapes are a ConvBERT-base batch of ``--tokens`` tokens (8 x 128 = 1024): the projections
(M x 768 x 768), the feed-forward in (M x 768 x 3072) and out (M x 3072 x 768); plus a square
2048 matmul; ``--ort`` adds the exported model's merged projections (M x 768 x 1536). "overall"
weights the three model shapes by their FLOPs; its best library is the limit that bench_pt and
bench_tf divide by. The last column says what ``convbert_pt.gemm``'s "auto" chose for each shape.

    python bench/bench_gemm.py [--threads 2] [--tokens 1024] [--runs 15] [--tf] [--tf-bf16] [--ort | --no-ort]
        [--json bench/results/bench_gemm.json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from _common import (
    bench_parser,
    best_gemm_rate,
    gemm_line,
    gemm_rates,
    machine_info,
    machine_line,
    model_gemm_shapes,
    tf_gemm_rates,
    write_json,
)

_TF_CHILD = "--tf-child"


def tf_rates_in_child(shapes: dict[str, tuple[int, int, int]], threads: int, runs: int,
                      dtype: str = "float32") -> dict[str, float] | None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        out = subprocess.run([sys.executable, __file__, _TF_CHILD, json.dumps(shapes), str(threads), str(runs), dtype],
                             capture_output=True, text=True, timeout=600, env=env, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        print(f"TensorFlow column unavailable: {err}")
        return None
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = bench_parser(__doc__, "bench_gemm.json", runs=15, warmup=None, quick=None)
    p.add_argument("--tokens", type=int, default=1024, help="M of the model's shapes (default 8 x 128)")
    p.add_argument("--tf", action="store_true", help="add TensorFlow's matmul (a child process)")
    p.add_argument("--tf-bf16", action="store_true",
                   help="add TensorFlow's bf16 matmul rate (a child process), reported beside the fp32 limit")
    ort = p.add_mutually_exclusive_group()
    ort.add_argument("--ort", action="store_true",
                     help="add the exported model's merged projections (onnxruntime's MatMul, MLAS, is counted "
                          "at every shape wherever onnxruntime is installed)")
    ort.add_argument("--no-ort", action="store_true", help="leave onnxruntime's MatMul out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    print(machine_line(machine))

    shapes = model_gemm_shapes(768, 3072, args.tokens)
    result = best_gemm_rate(shapes, runs=args.runs, onnxruntime=not args.no_ort)
    extra = {"square 2048": (2048, 2048, 2048)}
    if args.ort:
        # The exported model's query, key, value and convolution-value projections, merged into one
        # MatMul (convbert_pt.export.merge_parallel_matmuls): 4 x 384 = 1536 columns.
        extra["merged projections"] = (args.tokens, 768, 1536)
    per_shape = {**result["per_shape"], **{name: gemm_rates(*dims, runs=args.runs, onnxruntime=not args.no_ort)
                                           for name, dims in extra.items()}}
    all_shapes = {**shapes, **extra}
    if args.tf:
        tf = tf_rates_in_child(all_shapes, args.threads, args.runs)
        if tf:
            for name in per_shape:
                per_shape[name]["tensorflow (tf.matmul)"] = tf[name]
            result["overall"]["tensorflow (tf.matmul)"] = sum(2.0 * m * k * n for m, k, n in shapes.values()) / sum(
                2.0 * m * k * n / tf[name] for name, (m, k, n) in shapes.items())

    from convbert_pt import gemm

    gemm.set_gemm_backend("auto")
    auto = {}
    for name, (m, k, n) in all_shapes.items():
        gemm.linear(torch.randn(m, k), torch.randn(n, k))
        auto[name] = gemm.gemm_backend().choices[gemm._shape_class(m, k, n)].backend

    libraries = [lib for lib in result["overall"]]
    print(f"{'shape (M x K x N)':28s}" + "".join(f"{lib:>24s}" for lib in libraries) + f"{'gemm auto':>12s}")
    for name, rates in per_shape.items():
        dims = "x".join(map(str, all_shapes[name]))
        cells = "".join(f"{rates[lib] / 1e9:>24,.0f}" if rates.get(lib) else f"{'-':>24s}" for lib in libraries)
        print(f"{name + ' ' + dims:28s}{cells}{auto[name]:>12s}")
    cells = "".join(f"{result['overall'][lib] / 1e9:>24,.0f}" if result["overall"].get(lib) else f"{'-':>24s}"
                    for lib in libraries)
    print(f"{'overall (model shapes)':28s}{cells}")
    best_library = max((lib for lib, r in result["overall"].items() if r), key=lambda lib: result["overall"][lib])
    print(gemm_line({**result, "best_library": best_library, "best": result["overall"][best_library]}))
    results = {
        "machine": machine,
        "tokens": args.tokens,
        "shapes": all_shapes,
        "gflops": {name: {lib: (r / 1e9 if r else None) for lib, r in rates.items()}
                   for name, rates in per_shape.items()},
        "overall_gflops": {lib: (r / 1e9 if r else None) for lib, r in result["overall"].items()},
        "best_library": best_library,
        "best_gflops": result["overall"][best_library] / 1e9,
        "torch_best_library": result["best_library"],
        "torch_best_gflops": result["best"] / 1e9,
        "convbert_gemm_auto": auto,
    }
    if args.tf_bf16:
        bf16 = tf_rates_in_child(all_shapes, args.threads, args.runs, "bfloat16")
        if bf16:
            overall = sum(2.0 * m * k * n for m, k, n in shapes.values()) / sum(
                2.0 * m * k * n / bf16[name] for name, (m, k, n) in shapes.items())
            fp32 = result["overall"].get("tensorflow (tf.matmul)")
            versus = f", {overall / fp32:.2f}x its fp32" if fp32 else ""
            cells = ", ".join(f"{name} {rate / 1e9:,.0f}" for name, rate in bf16.items())
            print(f"tensorflow bf16 (tf.matmul): {cells}; overall {overall / 1e9:,.0f} GFLOP/s{versus}")
            results["tensorflow_bf16_gflops"] = {name: rate / 1e9 for name, rate in bf16.items()}
            results["tensorflow_bf16_overall_gflops"] = overall / 1e9
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == _TF_CHILD:
        print(json.dumps(tf_gemm_rates({k: tuple(v) for k, v in json.loads(sys.argv[2]).items()},
                                       int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
    else:
        main()
