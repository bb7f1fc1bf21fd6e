"""Keras attention on TensorFlow: our batched matmuls against Keras' own dot_product_attention.

On the TensorFlow backend ``convbert_tf.modeling.attention`` computes the scores and the context
with two batched matmuls (float32 accumulation on every kernel library); before, its fused path was
``keras.ops.dot_product_attention``, which TensorFlow's Keras writes as two ``tf.einsum`` calls.
This times ConvBERT-base's forward (``tf.function``) with each, in fp32 and ``mixed_bfloat16``,
interleaved in one process, medians of ``--runs``, and reports the largest output difference.

    python bench/bench_tf_attention.py [--runs 7] [--warmup 1] [--threads 2] [--quick]
        [--json bench/results/tf_attention.json]
"""

from __future__ import annotations

import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import bench_parser, interleaved, machine_info, machine_line, write_json  # noqa: E402
from keras import ops  # noqa: E402

from convbert_common.config import ConvBertConfig  # noqa: E402
from convbert_tf import modeling  # noqa: E402


def keras_fused_attention(query, key, value, mask, head_mask=None, dropout=None, training=False,
                          need_weights=False):
    """The former fused path (inference only: no maps, head mask or dropout)."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    return ops.dot_product_attention(query, key, value, mask=mask, scale=scale), None


def main(argv=None) -> dict:
    p = bench_parser(__doc__, "tf_attention.json", runs=7, warmup=1)
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.quick:
        args.runs, args.warmup = 3, 1
    config = (ConvBertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                             embedding_size=128) if args.quick else ConvBertConfig())
    batch, length = (2, 16) if args.quick else (8, 128)
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(5, config.vocab_size, (batch, length)).astype("int32"),
              "attention_mask": np.ones((batch, length), "int32")}
    machine = machine_info(args.threads)
    print(machine_line(machine))
    print(f"ConvBERT {'small test config' if args.quick else 'base'} forward {batch}x{length}, tf.function; "
          f"medians of {args.runs} interleaved runs (ms)")
    print(f"{'policy':15s} {'matmuls (ours)':>15s} {'keras einsums':>14s} {'ours/keras':>11s} {'max |diff|':>11s}")
    ours = modeling.attention
    rows = []
    try:
        for policy in ("float32", "mixed_bfloat16"):
            model = modeling.ConvBertModel(config, dtype=policy)
            fns, outputs = {}, {}
            for name, attention in (("ours", ours), ("keras", keras_fused_attention)):
                modeling.attention = attention  # read when the graph is traced, just below
                graph = tf.function(lambda x, model=model: model(x, training=False)["last_hidden_state"])
                outputs[name] = np.asarray(tf.cast(graph(inputs), tf.float32))
                fns[name] = lambda graph=graph: graph(inputs).numpy()
            modeling.attention = ours
            t = interleaved(fns, args.runs, args.warmup)
            row = {"policy": policy, "batch": batch, "length": length, "ours_s": t["ours"], "keras_s": t["keras"],
                   "ours_over_keras": t["ours"] / t["keras"],
                   "max_abs_diff": float(np.abs(outputs["ours"] - outputs["keras"]).max())}
            rows.append(row)
            print(f"{policy:15s} {t['ours'] * 1e3:15.1f} {t['keras'] * 1e3:14.1f} {row['ours_over_keras']:10.3f}x "
                  f"{row['max_abs_diff']:11.2e}")
    finally:
        modeling.attention = ours
    result = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
