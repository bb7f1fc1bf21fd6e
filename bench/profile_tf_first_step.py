"""Where the first Keras replaced-token-detection ``fit`` step spends its time (trace, graph optimisation, XLA).

ConvBERT-small with a 0.25 generator at 16 x 128 (``bench_tf.py --cases pretrain``'s step), our
``train_step`` wrapped in ``tf.function`` as Keras' trainer does. Phases, each timed on its own:

- ``trace forward``: Python tracing of the training forward and loss alone (a concrete function);
- ``trace forward+gradient``: the same plus ``tape.gradient`` (the backward graph is built in Python);
- ``trace step``: the whole ``train_step`` (forward, gradient, the non-finite guard, AdamW);
- ``first call``: the traced step's first run (TensorFlow's graph optimisation, Grappler, or the
  XLA compile, plus one step), and ``second call``: a steady step;

with the op count of each traced graph. Each variant runs in a child process of its own (Grappler's
switches are process-wide): ``default``, ``no-guard`` (``compile(guard_non_finite=False)``),
``no-grappler`` (TensorFlow's meta optimizer off) and ``xla`` (``jit_compile=True``).

    python bench/profile_tf_first_step.py [--variants default,no-guard,no-grappler,xla] [--batch 16x128]
        [--json bench/results/profile_tf_first_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("default", "no-guard", "no-grappler", "xla")
PHASES = ("build", "trace forward", "trace forward+gradient", "trace step", "first call", "second call")


def _child(variant: str, batch: int, length: int, layers: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if variant == "no-grappler":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from bench_tf import pretrain_batch

    from convbert_common import presets
    from convbert_common import pretraining as ptc
    from convbert_tf import train as tf_train
    from convbert_tf.pretraining import ConvBertForPreTraining

    out: dict = {"seconds": {}, "ops": {}}
    seconds = out["seconds"]
    cfg = presets.preset("small", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_hidden_layers=layers)
    knobs = ptc.PretrainingConfig()
    x = pretrain_batch(cfg.vocab_size, batch, length)
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = ConvBertForPreTraining(cfg, ptc.generator_config(cfg, knobs.generator_size), knobs, seed=0)
    model.compile(optimizer=tf_train.adamw(model, learning_rate=1e-5), jit_compile=variant == "xla",
                  guard_non_finite=variant != "no-guard")
    seconds["build"] = time.perf_counter() - start
    variables = model.trainable_variables

    def forward(inputs):
        return model(inputs, training=True)["loss"]

    def forward_gradient(inputs):
        with tf.GradientTape() as tape:
            loss = model(inputs, training=True)["loss"]
        return tape.gradient(loss, variables)

    for name, fn in (("trace forward", forward), ("trace forward+gradient", forward_gradient)):
        start = time.perf_counter()
        concrete = tf.function(fn).get_concrete_function(x)
        seconds[name] = time.perf_counter() - start
        out["ops"][name] = len(concrete.graph.get_operations())
    step = tf.function(model.train_step, jit_compile=variant == "xla")
    start = time.perf_counter()
    concrete = step.get_concrete_function(x)
    seconds["trace step"] = time.perf_counter() - start
    out["ops"]["trace step"] = len(concrete.graph.get_operations())
    for name in ("first call", "second call"):
        start = time.perf_counter()
        logs = step(x)
        float(logs["loss"])
        seconds[name] = time.perf_counter() - start
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--batch", default="16x128", help="batch x length")
    p.add_argument("--layers", type=int, default=12, help="encoder layers of both models (12: ConvBERT-small)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "profile_tf_first_step.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batch, length = (int(v) for v in args.batch.split("x"))
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, batch, length, args.layers)))
        return {}
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    from _common import machine_info, machine_line, write_json

    from convbert_common.fileio import atomic_write_text

    results: dict = {"machine": machine_info(), "batch": args.batch, "layers": args.layers, "variants": {}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench"),
                                                        os.environ.get("PYTHONPATH", "")])}
    for variant in variants:
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--batch", args.batch, "--layers",
                               str(args.layers)],
                              capture_output=True, text=True, env=env, timeout=3600)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            results["variants"][variant] = {"failed": proc.stderr[-1500:]}
            continue
        results["variants"][variant] = {**json.loads(lines[-1][len("RESULT "):]),
                                        "load_before": load, "load_after": os.getloadavg()[0]}
        # Each variant's figures as soon as it ends: a long run stopped early keeps what it measured.
        print(f"{variant}: " + json.dumps(results["variants"][variant]), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(machine_line(results["machine"]))
    print(f"ConvBERT-small ({args.layers} layers) + a 0.25 generator, {args.batch}: our train_step under "
          "tf.function (seconds; ops)")
    print("| phase | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for phase in PHASES:
        cells = []
        for variant in variants:
            v = results["variants"][variant]
            if "failed" in v:
                cells.append("failed")
                continue
            ops = f" ({v['ops'][phase]:,} ops)" if phase in v["ops"] else ""
            cells.append(f"{v['seconds'][phase]:.1f}{ops}")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("| load (1 min) before / after | " + " | ".join(
        f"{v['load_before']:.1f} / {v['load_after']:.1f}" if "failed" not in v else "" for v in
        results["variants"].values()) + " |")
    for variant, v in results["variants"].items():
        if "failed" in v:
            print(f"{variant} failed: {v['failed']}")
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
