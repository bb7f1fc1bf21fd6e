"""What every benchmark in bench/ shares: the interleaved timer, the matmul rate, the machine header.

- ``interleaved`` / ``interleaved_samples``: every round calls each function once, in turn (ours,
  theirs, ours, ...), after warm-up rounds, so that drift in machine load hits every side alike;
  medians in seconds. ``timer`` times one call (the wall clock, or CUDA events on a GPU);
  ``median_seconds`` times one function alone.
- ``handover_free``: the same for sides on different thread pools, by turns that first let the
  previous side's pool go to sleep.
- ``gemm_rates`` / ``matmul_rates``: the FLOP/s of one matmul by each library that can do it here
  (on a CPU: ``torch.mm`` (MKL), oneDNN on strided and on oneDNN-layout tensors, NumPy's BLAS,
  onnxruntime's MLAS where it is installed; on a GPU: ``torch.mm``) and the best of them.
  ``best_gemm_rate``: the same over a model's dense-layer shapes (``model_gemm_shapes``), the
  roofline that every "% of limit" figure divides by.
- ``machine_info`` / ``machine_line``: the CPU model and its vector / matrix ISA flags (``lscpu``),
  the thread count and the library versions (read from the installed metadata, so that nothing
  is imported for them: torch and TensorFlow do not share a process well).
- ``saved_tensor_bytes``: the activation memory of one PyTorch training forward.
- ``write_json``: a benchmark's result file, written whole or not at all.
- ``bench_parser``: the flags every benchmark takes (``--runs --warmup --threads --quick --json``).

Nothing here imports torch or TensorFlow at module level.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

# The flags that decide matmul and convolution speed: what a reader needs to compare two machines.
_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4")
_LIBRARIES = ("numpy", "torch", "tensorflow", "keras", "transformers", "tokenizers", "safetensors", "h5py", "triton")


# ------------------------------------------------------------------------------------------ timing
def wall_seconds(fn: Callable[[], object]) -> float:
    """Seconds of one call, by the wall clock."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall-clock seconds of ``runs`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(wall_seconds(fn) for _ in range(runs))


def cuda_seconds(fn: Callable[[], object]) -> float:
    """Seconds of one call between two CUDA events, after a synchronize (the GPU's own clock)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e-3


def interleaved_samples(fns: dict[str, Callable[[], object] | None], runs: int, warmup: int, *,
                        timer: Callable[[Callable[[], object]], float] = wall_seconds,
                        alternate: bool = False) -> dict[str, list[float]]:
    """Seconds of every call: each of ``warmup`` + ``runs`` rounds calls every function once, in turn.

    ``None`` entries (a side that is not installed) are left out. With ``alternate`` every other
    round calls them in the reverse order, so that no side always finds the caches warm.
    """
    live = _warmed_up(fns, warmup)
    samples: dict[str, list[float]] = {name: [] for name, _ in live}
    for index in range(runs):
        for name, fn in reversed(live) if alternate and index % 2 else live:
            samples[name].append(timer(fn))
    return samples


def interleaved(fns: dict[str, Callable[[], object] | None], runs: int, warmup: int, *,
                timer: Callable[[Callable[[], object]], float] = wall_seconds,
                alternate: bool = False) -> dict[str, float | None]:
    """Median seconds per function of ``interleaved_samples`` (None for a missing side)."""
    return _medians(fns, interleaved_samples(fns, runs, warmup, timer=timer, alternate=alternate))


def _warmed_up(fns: dict[str, Callable[[], object] | None], warmup: int) -> list[tuple[str, Callable[[], object]]]:
    """The functions that are there (``None`` entries left out), after ``warmup`` untimed rounds of them."""
    live = [(name, fn) for name, fn in fns.items() if fn is not None]
    for _ in range(warmup):
        for _name, fn in live:
            fn()
    return live


def _medians(fns: dict[str, object], samples: dict[str, list[float]]) -> dict[str, float | None]:
    """Median of each function's samples; None for one that was not there."""
    return {name: statistics.median(samples[name]) if name in samples else None for name in fns}


# ------------------------------------------------------------------------------------------ matmul
def _numpy_blas() -> str:
    """The BLAS NumPy was built with ("openblas", "mkl", ...), from its build configuration."""
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        name = config["Build Dependencies"]["blas"]["name"]
    except (TypeError, KeyError, AttributeError):
        return "numpy"
    return "openblas" if "openblas" in name.lower() else name.lower()


def gemm_rates(m: int, k: int, n: int, *, dtype: str = "float32", device: str = "cpu", runs: int = 15,
               warmup: int = 2, onnxruntime: bool = True) -> dict[str, float | None]:
    """FLOP/s of an (m, k) @ (k, n) matmul in ``dtype`` by each library, interleaved, medians; and the best.

    CPU: ``torch.mm`` ("mkl": PyTorch's BLAS for float32; oneDNN for bfloat16), oneDNN on ordinary
    strided tensors (``torch.ops.mkldnn._linear_pointwise``, what ``convbert_pt.gemm`` runs), oneDNN
    on oneDNN-layout tensors (``torch.utils.mkldnn``, input already converted, weight packed), and
    NumPy's BLAS (float32 only; named after the library it was built with); unless ``onnxruntime``
    is false, onnxruntime's MatMul (MLAS) in a one-node graph whose weight is a constant, as in an
    exported model (float32 only; it can be the fastest: on an AVX-512 EPYC it matched oneDNN).
    GPU: ``torch.mm``. A library that is not installed is None. ``best`` is the highest of them:
    the roofline. By turns (``handover_free``), as each library runs on its own thread pool.
    """
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    a = torch.randn(m, k, device=device).to(torch_dtype)
    b = torch.randn(k, n, device=device).to(torch_dtype)
    fns: dict[str, Callable[[], object] | None] = {"mkl (torch.mm)": lambda: torch.mm(a, b)}
    timer = wall_seconds
    if device.startswith("cuda"):
        timer = cuda_seconds
        fns = {"torch.mm": fns["mkl (torch.mm)"]}
    else:
        onednn_ok = torch.backends.mkldnn.is_available() and dtype != "float16"
        fns["onednn (strided)"] = fns["onednn (mkldnn layout)"] = None
        if onednn_ok and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            weight = b.t().contiguous()  # (n, k): nn.Linear's layout
            fns["onednn (strided)"] = lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], "")
        if onednn_ok:
            from torch.utils import mkldnn

            linear = torch.nn.Linear(k, n, bias=False)
            with torch.no_grad():
                linear.weight.copy_(b.float().t())  # x @ weight.T: the same product as a @ b
            packed = mkldnn.to_mkldnn(linear, torch_dtype)
            a_onednn = a.to_mkldnn()
            fns["onednn (mkldnn layout)"] = lambda: packed(a_onednn)
        if dtype == "float32":
            a_np, b_np = a.numpy(), b.numpy()
            fns[f"{_numpy_blas()} (numpy)"] = lambda: a_np @ b_np
            if onnxruntime:
                fns["mlas (onnxruntime)"] = _onnxruntime_matmul(a_np, b_np, torch.get_num_threads())
    with torch.no_grad():
        if timer is wall_seconds:
            seconds = handover_free(fns, runs, warmup)
        else:
            seconds = interleaved(fns, runs, warmup, timer=timer)
    rates = {name: (2.0 * m * k * n / t if t else None) for name, t in seconds.items()}
    rates["best"] = max(r for r in rates.values() if r is not None)
    return rates


def _onnxruntime_matmul(a, b, threads: int) -> Callable[[], object] | None:
    """``a @ b`` by onnxruntime's CPU MatMul, ``b`` a graph constant (MLAS prepacks it); None without
    onnxruntime."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, a.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, b.shape[1]])],
        [numpy_helper.from_array(b, "b")])
    # IR 10, as torch's exporter writes: onnx's newest IR is newer than older onnxruntimes read.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"a": a}
    return lambda: session.run(None, feed)


_CALLS_PER_TURN = 3
# Long enough for every pool to go to sleep: OpenBLAS's workers busy-wait for about 0.1 s after a call.
SETTLE_SECONDS = 0.25


def handover_free(fns: dict[str, Callable[[], object] | None], runs: int, warmup: int, *,
                  calls: int = _CALLS_PER_TURN, settle: float = SETTLE_SECONDS) -> dict[str, float | None]:
    """Median seconds per call, interleaved by turns: a turn waits ``settle`` seconds, calls the
    function once untimed, then times ``calls`` calls back to back (one sample: their mean).

    For sides that run on different thread pools (MKL's and oneDNN's OpenMP, OpenBLAS's pthreads,
    onnxruntime's and TensorFlow's own pools). A pool's workers spin for a while after its call, on
    the cores the next side needs, and one untimed call of a few milliseconds does not outlast
    them: timed right after the other libraries, onnxruntime's MatMul ran at 0.45x the rate it has
    alone, and ``torch.mm`` at 0.4x at the projection shape. The wait lets them go to sleep first;
    the untimed call wakes the side's own pool.
    """
    live = _warmed_up(fns, warmup)
    samples: dict[str, list[float]] = {name: [] for name, _ in live}
    for _ in range(runs):
        for name, fn in live:
            time.sleep(settle)
            fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return _medians(fns, samples)


def matmul_rates(n: int = 2048, **kwargs) -> dict[str, float | None]:
    """``gemm_rates`` of a square (n, n) @ (n, n) matmul."""
    return gemm_rates(n, n, n, **kwargs)


def model_gemm_shapes(hidden: int, intermediate: int, tokens: int) -> dict[str, tuple[int, int, int]]:
    """The (M, K, N) of a BERT-sized encoder's dense layers: the shapes its roofline is measured at."""
    return {"projection": (tokens, hidden, hidden), "ffn in": (tokens, hidden, intermediate),
            "ffn out": (tokens, intermediate, hidden)}


def best_gemm_rate(shapes: dict[str, tuple[int, int, int]], **kwargs) -> dict:
    """Each library's rate over ``shapes`` (total FLOPs / total seconds, the shapes weighted by their
    FLOPs), the per-shape rates, and ``best``/``best_library``: the roofline and who reaches it."""
    per_shape = {name: gemm_rates(*shape, **kwargs) for name, shape in shapes.items()}
    libraries = [lib for lib in next(iter(per_shape.values())) if lib != "best"]
    overall: dict[str, float | None] = {}
    for lib in libraries:
        if any(per_shape[name][lib] is None for name in shapes):
            overall[lib] = None
            continue
        flops = [2.0 * m * k * n for m, k, n in shapes.values()]
        seconds = [f / per_shape[name][lib] for f, name in zip(flops, shapes, strict=True)]
        overall[lib] = sum(flops) / sum(seconds)
    best_library = max((lib for lib in overall if overall[lib]), key=lambda lib: overall[lib])
    return {"shapes": shapes, "per_shape": per_shape, "overall": overall, "best_library": best_library,
            "best": overall[best_library]}


def gemm_line(result: dict) -> str:
    parts = ", ".join(f"{lib} {rate / 1e9:,.0f}" for lib, rate in result["overall"].items() if rate)
    shapes = ", ".join("x".join(map(str, s)) for s in result["shapes"].values())
    return (f"fp32 GEMM rate at the model's shapes ({shapes}; GFLOP/s): {parts}; "
            f"best {result['best_library']} {result['best'] / 1e9:,.0f}")


def matmul_line(rates: dict[str, float | None], dtype: str = "float32", n: int | None = None) -> str:
    parts = ", ".join(f"{name} {rate / 1e9:,.1f}" for name, rate in rates.items() if name != "best" and rate)
    shape = f" at {n}x{n}" if n else ""
    return f"measured {dtype} matmul rate{shape} (GFLOP/s): {parts}; best {rates['best'] / 1e9:,.1f}"


def convbert_matmul_flops(c, batch: int, length: int, pooled: bool = False) -> float:
    """Matmul FLOPs (2 per multiply-add) of a ConvBERT forward of ``config`` c at batch x length.

    ``pooled``: the forward of a head that reads one position (sequence classification, multiple
    choice), whose last layer computes that position alone: key and value over every token, the
    query and the convolution branch over the edge window, the rest over one row per sequence.
    """
    from convbert_common import shapes

    hs = c.heads
    tokens = batch * length
    H, A, K, I = c.hidden_size, hs.all_head_size, c.conv_kernel_size, c.intermediate_size
    E, G = c.embedding_size, c.num_groups

    def layer(window_rows: int, query_rows: int, queries: int) -> float:
        return (
            2 * H * A * tokens  # key, value
            + (2 * H * A + H * A + A * hs.num_heads * K) * window_rows  # query, conv_out, pointwise, kernel
            + (hs.mixed_size * H + 2 * H * I / G) * query_rows  # attention output dense, feed-forward
            + 2 * batch * hs.num_heads * queries * length * hs.head_size  # scores and context
        )

    full = layer(tokens, tokens, length)
    last = layer(batch * shapes.edge_window(K), batch, 1) if pooled else full
    project = tokens * E * H if E != H else 0
    return 2.0 * ((c.num_hidden_layers - 1) * full + last + project) if c.num_hidden_layers else 2.0 * project


def tf_gemm_rates(shapes: dict[str, tuple[int, int, int]], threads: int, runs: int,
                  dtype: str = "float32") -> dict[str, float]:
    """``tf.linalg.matmul`` FLOP/s per (M, K, N) shape under ``tf.function``, medians; TensorFlow imported here.

    ``dtype`` "bfloat16" times bf16 operands (what a ``mixed_bfloat16`` Keras model multiplies).
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran in this process: its thread pools are fixed
        pass
    rates = {}
    for name, (m, k, n) in shapes.items():
        a, b = tf.cast(tf.random.normal((m, k)), dtype), tf.cast(tf.random.normal((k, n)), dtype)
        matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y), jit_compile=False)
        for _ in range(2):
            matmul(a, b).numpy()
        seconds = []
        for _ in range(runs):
            # No .numpy(): TensorFlow's CPU executor returns when the product is done, and copying
            # the result out took 5% of the time at the feed-forward shape.
            start = time.perf_counter()
            matmul(a, b)
            seconds.append(time.perf_counter() - start)
        rates[name] = 2.0 * m * k * n / statistics.median(seconds)
    return rates


# ------------------------------------------------------------------------------------------ machine
def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads: int | None = None) -> dict:
    """The machine and software a benchmark ran on, for its JSON and its header line."""
    cpu = _lscpu()
    flags = cpu.get("Flags", "").split()
    return {
        "cpu_model": cpu.get("Model name") or platform.processor() or platform.machine(),
        "cpu_isa_flags": [f for f in flags if f.startswith(_ISA_PREFIXES)],
        "cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in _LIBRARIES if _version(name)},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def machine_line(info: dict) -> str:
    """One line for the top of a benchmark's table: CPU model and flags, threads, versions."""
    threads = f", {info['threads']} threads" if info.get("threads") else ""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items()
                         if k in ("numpy", "torch", "tensorflow", "keras", "transformers", "tokenizers"))
    return (f"{info['cpu_model']} ({info['cpus']} CPUs{threads}; flags: {' '.join(info['cpu_isa_flags']) or 'n/a'}); "
            f"python {info['python']}, {versions}")


# ------------------------------------------------------------------------------------------ memory
def saved_tensor_bytes(model, loss: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``loss()`` runs on ``model``.

    The model's own parameters are not counted; the backward runs after, and the gradients are dropped.
    """
    import torch

    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = loss()
    value.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


# ------------------------------------------------------------------------------------------ output
def write_json(path: str | os.PathLike, result: dict) -> None:
    """Write ``result`` to ``path`` atomically (its folder created) and say where."""
    from convbert_common.fileio import atomic_write_text

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------------ flags
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def bench_parser(doc: str, json_name: str, *, runs: int = 10, warmup: int | None = 2, threads: int | None = 2,
                 quick: str | None = "small shapes and 3 runs: a smoke test of the script") -> argparse.ArgumentParser:
    """A parser with the flags every benchmark shares; the benchmark adds its own.

    ``warmup``, ``threads`` or ``quick`` set to None leaves that flag out; ``--json`` defaults to
    ``bench/results/<json_name>``.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=runs, help=f"timed runs per case, median reported (default {runs})")
    if warmup is not None:
        parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed runs before them (default {warmup})")
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads, help=f"intra-op threads (default {threads})")
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", default=os.path.join(RESULTS, json_name), help="where the results go")
    return parser
