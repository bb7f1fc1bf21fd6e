"""Serving on the CPU: ConvBERT-base sequence classification in our PyTorch eager model, onnxruntime
fp32 (``convbert export``'s model.onnx: the graph optimized for onnxruntime), onnxruntime fp32 on the
exporter's standard-operator graph (``--no-optimize``), onnxruntime int8 (dynamic quantization of
the optimized graph) and the TF SavedModel, all from the same weights. Where they are installed,
also the standard graph through onnxruntime's OpenVINO execution provider (the
``onnxruntime-openvino`` distribution, which replaces ``onnxruntime``: run it in its own virtual
environment) and through the OpenVINO runtime itself (``openvino``), both in exact fp32.

One process; each format gets ``--threads`` intra-op threads and its runtime's default thread pool
settings (onnxruntime's workers spin); runs interleaved by turns (PyTorch, ORT fp32, ORT fp32
standard, ORT int8, SavedModel, PyTorch, ...), each turn a pause for the previous runtime's pool to
go to sleep, one untimed run and one timed (``_common.handover_free``); medians of ``--runs`` after
``--warmup``, at 1x128 and 8x128. Also the export times (ONNX, onnxruntime optimization, int8 quantization,
SavedModel) and the int8 model's agreement with the fp32 labels and its largest logit difference
on ``--agreement-rows`` random rows (random weights: the issue's accuracy figure is the fine-tuned
classifier of tests/tools/test_export_command.py).

Targets (issue 13): onnxruntime fp32 <= 0.9x our PyTorch eager; int8 <= 0.5x.

    python bench/bench_export.py [--runs 10] [--threads 2] [--quick] [--json bench/results/bench_export.json]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np
from _common import bench_parser, handover_free, machine_info, machine_line, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = ((1, 128), (8, 128))
TARGETS = {"onnx fp32": 0.9, "onnx int8": 0.5}


def batch(vocab: int, b: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1000, vocab, (b, length)), "attention_mask": np.ones((b, length), np.int64),
            "token_type_ids": np.zeros((b, length), np.int64)}


def main(argv: list[str] | None = None) -> dict:
    p = bench_parser(__doc__, "bench_export.json", quick="ConvBERT-small, 3 runs (a smoke test of the script)")
    p.add_argument("--agreement-rows", type=int, default=64)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.agreement_rows = 3, 1, 16

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch

    # The ONNX export loads torch._dynamo, which loads Triton: its LLVM must come before TensorFlow's
    # (the other order aborts the process; see the README's notes).
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import onnxruntime as ort

    import convbert_pt
    import convbert_tf
    from convbert_common import presets
    from convbert_pt.export import export_onnx, optimize_onnx, quantize_int8
    from convbert_tf.io import assign_canonical

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = presets.preset("small" if args.quick else "base", hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, num_labels=2)
    pt_model = convbert_pt.ConvBertForSequenceClassification(config).eval()
    keras_model = convbert_tf.ConvBertForSequenceClassification(config, initialize=False)
    assign_canonical(keras_model, {k: v.numpy() for k, v in pt_model.state_dict().items()})

    work = tempfile.mkdtemp(prefix="bench_export.")
    export_seconds = {}
    try:
        t = time.perf_counter()
        export_onnx(pt_model, os.path.join(work, "model_standard.onnx"))
        export_seconds["onnx"] = time.perf_counter() - t
        t = time.perf_counter()
        optimize_onnx(os.path.join(work, "model_standard.onnx"), os.path.join(work, "model.onnx"), config)
        export_seconds["optimize"] = time.perf_counter() - t
        t = time.perf_counter()
        quantize_int8(os.path.join(work, "model.onnx"), os.path.join(work, "model_quantized.onnx"))
        export_seconds["int8"] = time.perf_counter() - t
        t = time.perf_counter()
        convbert_tf.export(keras_model, os.path.join(work, "saved_model"))
        export_seconds["saved-model"] = time.perf_counter() - t

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        fp32 = ort.InferenceSession(os.path.join(work, "model.onnx"), options, providers=["CPUExecutionProvider"])
        standard = ort.InferenceSession(os.path.join(work, "model_standard.onnx"), options,
                                        providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(os.path.join(work, "model_quantized.onnx"), options,
                                    providers=["CPUExecutionProvider"])
        openvino_ep, openvino_request = _openvino_sides(ort, os.path.join(work, "model_standard.onnx"), args.threads)
        serve = tf.saved_model.load(os.path.join(work, "saved_model")).signatures["serving_default"]
        sizes = {name: os.path.getsize(os.path.join(work, name)) for name in ("model.onnx", "model_quantized.onnx")}

        cases = {}
        for b, length in SHAPES:
            feed = batch(config.vocab_size, b, length, seed=b)
            pt_feed = {k: torch.from_numpy(v) for k, v in feed.items()}
            tf_feed = {k: tf.constant(v.astype(np.int32)) for k, v in feed.items()}

            def run_pt(pt_feed=pt_feed):
                with torch.no_grad():
                    return pt_model(**pt_feed).logits

            fns = {
                "pytorch eager": run_pt,
                "onnx fp32": lambda feed=feed: fp32.run(None, feed),
                "onnx fp32 standard": lambda feed=feed: standard.run(None, feed),
                "onnx int8": lambda feed=feed: int8.run(None, feed),
                "tf saved-model": lambda tf_feed=tf_feed: serve(**tf_feed)["logits"].numpy(),
                "onnx fp32 openvino-ep": None if openvino_ep is None else lambda feed=feed: openvino_ep.run(None, feed),
                "openvino fp32": None if openvino_request is None else lambda feed=feed: openvino_request.infer(feed),
            }
            # Turns, not alternate single runs: each runtime's pool spins on the cores after its run
            # (onnxruntime's, TensorFlow's, OpenMP's), and the next runtime would pay for it. With
            # spinning off instead, onnxruntime pays a wake-up per operator (1.25x at 1x128).
            cases[f"{b}x{length}"] = handover_free(fns, args.runs, args.warmup, calls=1)

        rows = batch(config.vocab_size, args.agreement_rows, 128, seed=7)
        want = fp32.run(None, rows)[0]
        got = int8.run(None, rows)[0]
        agreement = {"rows": args.agreement_rows, "labels_agree": float(np.mean(got.argmax(-1) == want.argmax(-1))),
                     "max_abs_logit_diff": float(np.abs(got - want).max()),
                     "max_abs_logit": float(np.abs(want).max())}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    machine = machine_info(args.threads)
    result = {
        "machine": machine,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "tensorflow": tf.__version__,
                     "openvino": _version("openvino")},
        "model": "small" if args.quick else "base", "runs": args.runs, "warmup": args.warmup,
        "export_seconds": export_seconds, "file_bytes": sizes, "cases": cases, "int8_agreement": agreement,
    }
    print(machine_line(machine))
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, tensorflow {tf.__version__}; "
          f"ConvBERT-{result['model']} sequence classification, medians of {args.runs} runs interleaved by turns")
    print()
    sides = [name for name, seconds in cases[next(iter(cases))].items() if seconds is not None]
    ratios = [name for name in sides if name != "pytorch eager"]
    headings = [f"{name} / PT" + (f" (<= {TARGETS[name]})" if name in TARGETS else "") for name in ratios]
    print(f"| shape | {' | '.join(sides + headings)} |")
    print("|---|" + "---:|" * (len(sides) + len(ratios)))
    for shape, times in cases.items():
        base = times["pytorch eager"]
        cells = " | ".join(f"{1000 * times[name]:.1f} ms" for name in sides)
        print(f"| {shape} | {cells} | " + " | ".join(f"{times[name] / base:.2f}" for name in ratios) + " |")
    print()
    print("export: " + ", ".join(f"{k} {v:.1f} s" for k, v in export_seconds.items()))
    print(f"files: model.onnx {sizes['model.onnx'] / 2**20:.0f} MiB, model_quantized.onnx "
          f"{sizes['model_quantized.onnx'] / 2**20:.0f} MiB")
    print(f"int8 vs fp32 on {agreement['rows']} random rows (random weights): labels agree "
          f"{agreement['labels_agree']:.3f}, max |logit diff| {agreement['max_abs_logit_diff']:.3e} "
          f"(max |logit| {agreement['max_abs_logit']:.3f})")
    write_json(args.json, result)
    return result


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _openvino_sides(ort, path: str, threads: int):
    """The OpenVINO execution provider's session and the OpenVINO runtime's infer request for the
    standard graph (its ``com.microsoft`` operators would split the optimized one between providers),
    each None where it is not installed. Both pinned to exact fp32: on CPUs with bf16 units OpenVINO
    would otherwise choose bf16 for itself."""
    session = None
    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        options = ort.SessionOptions()
        # OpenVINO runs the graph on its own threads; onnxruntime's would only wait beside them.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider = {"device_type": "CPU", "precision": "FP32", "num_of_threads": str(threads)}
        session = ort.InferenceSession(path, options, providers=[("OpenVINOExecutionProvider", provider)])
    try:
        import openvino
    except ImportError:
        return session, None
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    return session, compiled.create_infer_request()


if __name__ == "__main__":
    main(sys.argv[1:])
