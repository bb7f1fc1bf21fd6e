"""The Keras convolutions on the CPU, alone: shift-and-accumulate against the grouped / unfold forms.

Two ops of every ConvBERT layer, at ConvBERT-base shapes (B x L in 8x128 and 1x512), each forward
and forward + backward (``tf.GradientTape`` w.r.t. every input), each eager, ``tf.function`` and
XLA (``jit_compile=True``), interleaved (ours, reference, ours, ...), medians of ``--runs``:

- ``span_dynamic_conv``: values (B, L, 6, 64), kernel logits (B, L, 6, 9); ours is
  ``impl="auto"`` (shift-and-accumulate), the reference ``impl="reference"`` (unfold / im2col);
- depthwise convolution: (B, L, 768) with a (9, 768, 1) kernel; ours is
  ``sdconv.depthwise_conv1d`` (what ``SeparableConv1D`` runs under XLA), the reference
  ``keras.ops.depthwise_conv`` (TensorFlow's kernel; a grouped convolution under XLA).

    python bench/bench_sdconv_tf.py [--runs 10] [--warmup 2] [--threads 2] [--quick]
        [--json bench/results/sdconv_tf.json]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import bench_parser, interleaved, machine_info, machine_line, wall_seconds, write_json  # noqa: E402

from convbert_tf import sdconv  # noqa: E402

MODES = ("eager", "tf.function", "XLA")


def _dynamic_conv(impl: str) -> Callable:
    return lambda values, logits: sdconv.span_dynamic_conv(values, logits, impl=impl)


def _depthwise_ours(x, kernel):
    return sdconv.depthwise_conv1d(x, kernel)


def _depthwise_keras(x, kernel):
    return keras.ops.depthwise_conv(x, kernel, strides=1, padding="same", data_format="channels_last")


def _with_grads(fn: Callable) -> Callable:
    def step(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = fn(*args)
        return out, tape.gradient(out, args, output_gradients=tf.ones_like(out))

    return step


def _compiled(fn: Callable, mode: str) -> Callable:
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=mode == "XLA")


def _run(fn: Callable, args) -> Callable[[], None]:
    def call():
        for t in tf.nest.flatten(fn(*args)):
            t.numpy()

    return call


def main(argv=None) -> dict:
    p = bench_parser(__doc__, "sdconv_tf.json")
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.quick:
        args.runs, args.warmup = 3, 1
    shapes = [(2, 16)] if args.quick else [(8, 128), (1, 512)]
    heads, head_size, kernel_size, hidden = 6, 64, 9, 768

    g = tf.random.Generator.from_seed(0)
    ops = {
        "dynamic conv": (_dynamic_conv("auto"), _dynamic_conv("reference"),
                         lambda b, n: (g.normal((b, n, heads, head_size)), 2 * g.normal((b, n, heads, kernel_size)))),
        "depthwise conv": (_depthwise_ours, _depthwise_keras,
                           lambda b, n: (g.normal((b, n, hidden)), g.normal((kernel_size, hidden, 1)))),
    }
    rows = []
    machine = machine_info(args.threads)
    print(machine_line(machine))
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {args.threads} threads; "
          f"medians of {args.runs} interleaved runs (ms)")
    print(f"{'op':15s} {'shape':8s} {'pass':9s} {'mode':12s} {'ours':>9s} {'reference':>10s} {'ours/ref':>9s} "
          f"{'first call ours/ref (s)':>24s}")
    for op_name, (ours, ref, make) in ops.items():
        for b, n in shapes:
            inputs = make(b, n)
            for pass_name, wrap in (("forward", lambda f: f), ("fwd+bwd", _with_grads)):
                for mode in MODES:
                    fns = {"ours": _run(_compiled(wrap(ours), mode), inputs),
                           "reference": _run(_compiled(wrap(ref), mode), inputs)}
                    first = {k: wall_seconds(fn) for k, fn in fns.items()}
                    t = interleaved(fns, args.runs, args.warmup)
                    row = {"op": op_name, "batch": b, "length": n, "pass": pass_name, "mode": mode,
                           "ours_s": t["ours"], "reference_s": t["reference"],
                           "ours_over_reference": t["ours"] / t["reference"],
                           "first_call_ours_s": first["ours"], "first_call_reference_s": first["reference"]}
                    rows.append(row)
                    print(f"{op_name:15s} {f'{b}x{n}':8s} {pass_name:9s} {mode:12s} {t['ours'] * 1e3:9.2f} "
                          f"{t['reference'] * 1e3:10.2f} {row['ours_over_reference']:8.2f}x "
                          f"{first['ours']:12.2f} / {first['reference']:.2f}")
    result = {"machine": machine,
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
