"""ConvBERT in Keras on each backend: TensorFlow, JAX and PyTorch, one invocation, one process per backend.

For every backend (KERAS_BACKEND is read once per process, so each runs in a subprocess of this
script), with the same weights (saved once as a ``.keras`` file and loaded on each backend) and
the same inputs:

- the ConvBERT-base forward at 8x128 in eager mode (``model(x)``) and compiled
  (``predict_on_batch`` after ``compile(jit_compile=True)``: XLA on TensorFlow, ``jax.jit`` on JAX,
  ``torch.compile`` on PyTorch);
- one ``fit`` step (``train_on_batch``, Adam, the sequence-classification head's built-in loss) with
  the backend's default compilation, and the first step's time (tracing / compiling included).

Medians of ``--runs`` runs after ``--warmup``; ratios against TensorFlow's compiled forward and fit
step. The issue's goals: the JAX-jit forward within 1.1x of the TF-XLA forward; a fit step below
HF's TF fit step. ``--backends ...,hf`` adds that reference in its own process: HF transformers'
``TFConvBertForSequenceClassification`` (tf-keras) with the same weights, Adam and inputs (its
"forward compiled" is a ``tf.function``; HF's TF classes do not compile with XLA). ``--rounds R``
runs the whole sequence of processes R times, backend after backend, and reports the medians of
the per-round medians: on a shared machine the load then falls on every backend alike.

    python bench/bench_backends.py [--backends tensorflow,jax,torch,hf] [--runs 5] [--warmup 2] [--rounds 1]
                                   [--quick] [--pieces | --dropout] [--json bench/results/bench_backends.json]

``--dropout`` times only the dropout masks of one step, Keras' against ``convbert_tf.dropout``'s
(``dropout_worker``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import interleaved, machine_info, machine_line, median_seconds, wall_seconds

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
HF = "hf"  # not a Keras backend: HF's tf-keras model, run on TensorFlow


def _config(quick: bool):
    from convbert_common import presets

    return presets.preset("small" if quick else "base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          num_labels=2)


def _inputs(vocab: int, batch: int = 8, length: int = 128):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab, (batch, length)).astype("int32")
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return x, rng.integers(0, 2, batch).astype("int32")


def save_weights(path: str, quick: bool) -> None:
    """The model every backend loads: built and saved once, so that all run the same weights."""
    import keras

    from convbert_tf import ConvBertForSequenceClassification

    keras.utils.set_random_seed(0)
    ConvBertForSequenceClassification(_config(quick)).save(path)


def worker(path: str, runs: int, warmup: int) -> dict:
    """In a process of one backend: load ``path``, time the forward (eager, compiled) and the fit step."""
    import keras

    import convbert_tf  # noqa: F401 (registers the classes)

    def median(fn) -> float:
        return median_seconds(fn, runs, warmup)

    model = keras.saving.load_model(path, compile=False)
    x, y = _inputs(model.config.vocab_size)
    out: dict = {"backend": keras.backend.backend()}
    out["forward_eager"] = median(lambda: keras.ops.convert_to_numpy(model(x, training=False)["logits"]))
    try:
        model.compile(optimizer="sgd", jit_compile=True)
        out["forward_compiled_first"] = wall_seconds(lambda: model.predict_on_batch(x))
        out["forward_compiled"] = median(lambda: model.predict_on_batch(x))
    except Exception as exc:  # torch.compile of a Keras model may not be supported: say why
        out["forward_compiled_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    trainer = keras.saving.load_model(path, compile=False)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-5))  # the backend's default compilation
    out["fit_first_step"] = wall_seconds(lambda: trainer.train_on_batch(x, y))
    out["fit_step"] = median(lambda: trainer.train_on_batch(x, y))
    return out


def hf_worker(path: str, runs: int, warmup: int) -> dict:
    """On TensorFlow: HF's TF model with the weights of ``path``, timed as ``worker`` times ours."""
    import keras
    import tensorflow as tf
    import tf_keras
    import transformers

    import convbert_tf  # noqa: F401 (registers the classes)

    def median(fn) -> float:
        return median_seconds(fn, runs, warmup)

    ours = keras.saving.load_model(path, compile=False)
    x, y = _inputs(ours.config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp, tf_h5=True)
        # use_safetensors=False: HF's TF loader would try the PyTorch-layout model.safetensors first.
        model = transformers.TFConvBertForSequenceClassification.from_pretrained(tmp, use_safetensors=False)
    x = {k: tf.constant(v) for k, v in x.items()}
    out: dict = {"backend": HF}
    out["forward_eager"] = median(lambda: model(x, training=False).logits.numpy())
    graph = tf.function(lambda inputs: model(inputs, training=False).logits)
    out["forward_compiled_first"] = wall_seconds(lambda: graph(x).numpy())
    out["forward_compiled"] = median(lambda: graph(x).numpy())
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-5))
    y = tf.constant(y)
    out["fit_first_step"] = wall_seconds(lambda: model.train_on_batch(x, y))
    out["fit_step"] = median(lambda: model.train_on_batch(x, y))
    return out


def pieces_worker(runs: int, warmup: int) -> dict:
    """In a process of TensorFlow or JAX: the pieces of the compiled forward and fit step, alone, in ms.

    A plain fp32 (1024x768) @ (768x3072) matmul (the base feed-forward at 8x128), and the two
    shift-and-accumulate convolutions at base shapes (B=8, L=128, N'=6, D=64, K=9; H=768), forward
    and gradient (of the sum of squares, both inputs; for the span conv also autodiff of the same
    shift-and-accumulate without its hand-written gradient, as ``span_dynamic_conv_autodiff``),
    each compiled: ``jax.jit`` on JAX, ``tf.function(jit_compile=True)`` on TensorFlow, which also
    times its matmul eagerly and in a plain ``tf.function`` (oneDNN). ``XLA_FLAGS`` from the environment apply.
    """
    import keras
    import numpy as np
    from keras import ops

    from convbert_tf import sdconv

    def median_ms(fn) -> float:
        return median_seconds(fn, runs, warmup) * 1e3

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1024, 768), "float32"), rng.standard_normal((768, 3072), "float32")
    values, logits = rng.standard_normal((8, 128, 6, 64), "float32"), rng.standard_normal((8, 128, 6, 9), "float32")
    x, kernel = rng.standard_normal((8, 128, 768), "float32"), rng.standard_normal((9, 768, 1), "float32")
    def span_autodiff(v, z):  # the same shift-and-accumulate without its hand-written gradient
        weights = ops.softmax(z, axis=-1)
        return sdconv._shifted_sum(sdconv._pad_length(v, 9), ops.split(weights, 9, axis=-1), ops.shape(v)[1])

    convs = {"span_dynamic_conv": (lambda v, k: sdconv.span_dynamic_conv(v, k, "native"), values, logits),
             "depthwise_conv1d": (sdconv.depthwise_conv1d, x, kernel),
             "span_dynamic_conv_autodiff": (span_autodiff, values, logits)}
    backend = keras.backend.backend()
    out: dict = {"backend": backend, "matmul_gflop": 2 * 1024 * 768 * 3072 / 1e9}
    if backend == "jax":
        import jax

        def compiled(fn, *args):
            jitted, args = jax.jit(fn), [jax.numpy.asarray(t) for t in args]
            return lambda: jax.block_until_ready(jitted(*args))

        def gradient(fn):
            return jax.grad(lambda u, w: ops.sum(ops.square(fn(u, w))), argnums=(0, 1))
    elif backend == "tensorflow":
        import tensorflow as tf

        def compiled(fn, *args, jit=True):
            traced, args = tf.function(fn, jit_compile=jit), [tf.constant(t) for t in args]
            return lambda: tf.nest.map_structure(lambda t: t.numpy(), traced(*args))

        def gradient(fn):
            def grads(u, w):
                with tf.GradientTape() as tape:
                    tape.watch([u, w])
                    loss = ops.sum(ops.square(fn(u, w)))
                return tape.gradient(loss, [u, w])
            return grads

        ta, tb = tf.constant(a), tf.constant(b)
        out["matmul_eager_ms"] = median_ms(lambda: tf.matmul(ta, tb).numpy())
        out["matmul_graph_ms"] = median_ms(compiled(ops.matmul, a, b, jit=False))
    else:
        return {"backend": backend, "error": "pieces: TensorFlow and JAX only"}
    out["matmul_compiled_ms"] = median_ms(compiled(ops.matmul, a, b))
    for name, (fn, u, w) in convs.items():
        out[f"{name}_forward_ms"] = median_ms(compiled(fn, u, w))
        out[f"{name}_gradient_ms"] = median_ms(compiled(gradient(fn), u, w))
    return out


DROPOUT_LAYERS = 12  # ConvBERT-base: per layer 3 masks of hidden states and 1 of attention probabilities


def dropout_worker(runs: int, warmup: int) -> dict:
    """In a process of any backend: ConvBERT-base's dropout masks of one 8x128 step, in ms.

    ``keras.layers.Dropout`` against ``convbert_tf.dropout.Dropout`` (hashed masks), both at rate
    0.1, interleaved: per layer three masks of (8, 128, 768) and one of (8, 6, 128, 128), for
    ``DROPOUT_LAYERS`` layers, each call drawing a new mask. Eagerly, in a plain ``tf.function`` on
    TensorFlow (Keras' default ``fit`` on a CPU), and compiled:
    ``tf.function(jit_compile=True)`` on TensorFlow, ``jax.jit`` of the layers' ``stateless_call``
    on JAX, ``torch.compile`` on PyTorch.
    """
    import keras
    import numpy as np

    from convbert_tf import dropout as hd

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    hidden = keras.ops.convert_to_tensor(rng.standard_normal((8, 128, 768), "float32"))
    probs = keras.ops.convert_to_tensor(rng.random((8, 6, 128, 128), "float32"))
    inputs = [hidden, hidden, hidden, probs] * DROPOUT_LAYERS

    def layers(kind):
        made = [(keras.layers.Dropout if kind == "keras" else hd.Dropout)(0.1, seed=i) for i in range(len(inputs))]
        for layer, x in zip(made, inputs, strict=True):
            layer.build(x.shape)
        return made

    def eager(made):
        return lambda: [layer(x, training=True) for layer, x in zip(made, inputs, strict=True)]

    def graph(made):  # TensorFlow's graph without XLA: what Keras' fit runs by default on a CPU
        import tensorflow as tf

        return tf.function(eager(made))

    def compiled(made):
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(eager(made), jit_compile=True)
        if backend == "torch":
            import torch

            return torch.compile(eager(made))
        import jax

        def stateless(states):
            outs, new = [], []
            for layer, x, state in zip(made, inputs, states, strict=True):
                out, state = layer.stateless_call([], state, x, training=True)
                outs.append(out)
                new.append(state)
            return outs, new

        run = jax.jit(stateless)
        states = [[v.value for v in layer.non_trainable_variables] for layer in made]

        def step():
            nonlocal states
            outs, states = run(states)
            return outs

        return step

    def synced(fn):
        def call():
            out = fn()
            if backend == "jax":
                import jax

                jax.block_until_ready(out)
            return out
        return call

    modes = (("eager", eager), ("graph", graph), ("compiled", compiled))
    cases = {f"{kind}_{mode}_ms": synced(wrap(layers(kind)))
             for mode, wrap in modes if mode != "graph" or backend == "tensorflow" for kind in ("keras", "hashed")}
    medians = interleaved(cases, runs, warmup)
    return {"backend": backend, "masks": len(inputs), **{k: v * 1e3 for k, v in medians.items()}}


def _print_dropout(results: list[dict]) -> None:
    print(f"\ndropout masks of one ConvBERT-base 8x128 step ({4 * DROPOUT_LAYERS} masks, ms, medians)")
    print(f"{'backend':12s} {'mode':9s} {'Keras':>8s} {'hashed':>8s} {'hashed / Keras':>15s}")
    for r in results:
        if "error" in r:
            print(f"{r['backend']:12s} failed: {r['error']}")
            continue
        for mode in ("eager", "graph", "compiled"):
            if f"keras_{mode}_ms" not in r:
                continue
            keras_ms, hashed_ms = r[f"keras_{mode}_ms"], r[f"hashed_{mode}_ms"]
            print(f"{r['backend']:12s} {mode:9s} {keras_ms:8.1f} {hashed_ms:8.1f} {hashed_ms / keras_ms:14.2f}x")


def _run_child(backend: str, call: str, **env: str) -> dict:
    """``bench_backends.<call>`` in a fresh process on Keras backend ``backend`` (KERAS_BACKEND is read
    once per process), with ``env`` added: its result, or the last line of its error."""
    keras_backend = "tensorflow" if backend == HF else backend
    env = {**os.environ, "KERAS_BACKEND": keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]),
           **env}
    code = f"import json, bench_backends; print('RESULT', json.dumps(bench_backends.{call}))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"backend": backend, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                f"exit {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT "):])


def _run_pieces(backend: str, runs: int, warmup: int) -> dict:
    return _run_child(backend, f"pieces_worker({runs}, {warmup})")


def _print_pieces(pieces: list[dict]) -> None:
    print(f"\npieces alone (ms, medians; compiled unless named){'':4s}" + os.environ.get("XLA_FLAGS", ""))
    keys = ["matmul_compiled_ms", "matmul_eager_ms", "matmul_graph_ms", "span_dynamic_conv_forward_ms",
            "span_dynamic_conv_gradient_ms", "span_dynamic_conv_autodiff_gradient_ms", "depthwise_conv1d_forward_ms",
            "depthwise_conv1d_gradient_ms"]
    for r in pieces:
        if "error" in r:
            print(f"{r['backend']:12s} failed: {r['error']}")
            continue
        cells = []
        for key in keys:
            if key in r:
                rate = f" ({r['matmul_gflop'] / r[key] * 1e3:.0f} GFLOP/s)" if key.startswith("matmul") else ""
                cells.append(f"{key[:-3]} {r[key]:.2f}{rate}")
        print(f"{r['backend']:12s} " + "; ".join(cells))


def _run_backend(backend: str, path: str, runs: int, warmup: int) -> dict:
    if backend != HF:
        return _run_child(backend, f"worker({path!r}, {runs}, {warmup})")
    # HF's TF classes run on tf-keras, and transformers must import neither torch nor jax here: their
    # LLVM and TensorFlow's XLA register the same LLVM options, and loading both aborts the process.
    return _run_child(backend, f"hf_worker({path!r}, {runs}, {warmup})", TF_USE_LEGACY_KERAS="1", USE_TORCH="0",
                      USE_FLAX="0", USE_TF="1")


def _over_rounds(samples: list[dict]) -> dict:
    """One backend's per-round results -> the median of each timing, with every round's value kept."""
    ok = [r for r in samples if "error" not in r]
    if not ok:
        return samples[-1]
    out = dict(ok[-1])
    timed = ("forward_eager", "forward_compiled_first", "forward_compiled", "fit_first_step", "fit_step")
    for key in [k for k in ok[-1] if k in timed or k.endswith("_ms")]:
        values = [r[key] for r in ok if key in r]
        if values:
            out[key] = statistics.median(values)
            out[f"{key}_rounds"] = values
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated Keras backends to run")
    p.add_argument("--runs", type=int, default=5, help="timed runs per case (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before them")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every backend's process this many times, in turn; report medians over rounds")
    p.add_argument("--quick", action="store_true", help="ConvBERT-small instead of base (a smoke run)")
    p.add_argument("--pieces", action="store_true",
                   help="only the pieces alone (matmul, the two convolutions' forward and gradient) on "
                        "TensorFlow and JAX, --rounds times")
    p.add_argument("--dropout", action="store_true",
                   help="only the dropout masks of one step, Keras' against the hashed ones, on every backend, "
                        "--rounds times")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "bench_backends.json")
    args = p.parse_args(argv)
    info = machine_info()
    print(machine_line(info))
    if args.dropout:
        backends = args.backends.split(",")
        rounds = [[_run_child(b, f"dropout_worker({args.runs}, {args.warmup})") for b in backends]
                  for _ in range(args.rounds)]
        results = [_over_rounds([r[i] for r in rounds]) for i in range(len(backends))]
        _print_dropout(results)
        report = {"machine": info, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
                  "dropout": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        return report
    if args.pieces:
        rounds = [[_run_pieces(b, args.runs, args.warmup) for b in ("tensorflow", "jax")] for _ in range(args.rounds)]
        pieces = [_over_rounds([r[i] for r in rounds]) for i in range(2)]
        _print_pieces(pieces)
        report = {"machine": info, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
                  "xla_flags": os.environ.get("XLA_FLAGS", ""), "pieces": pieces}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        return report
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        env_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        if env_backend != "tensorflow":
            raise SystemExit("run this script with the TensorFlow backend (it saves the shared .keras file)")
        save_weights(path, args.quick)
        backends = args.backends.split(",")
        rounds = [[_run_backend(b, path, args.runs, args.warmup) for b in backends] for _ in range(args.rounds)]
        results = [_over_rounds([r[i] for r in rounds]) for i in range(len(backends))]
    base = next((r for r in results if r.get("backend") == "tensorflow" and "error" not in r), None)
    hf = next((r for r in results if r.get("backend") == HF and "error" not in r), None)
    print(f"\n{'backend':12s} {'forward eager':>14s} {'forward compiled':>17s} {'fit step':>10s} "
          f"{'first fit step':>15s} {'compiled / TF':>14s} {'fit / TF':>9s} {'fit / HF':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['backend']:12s} failed: {r['error']}")
            continue
        compiled = r.get("forward_compiled")
        ratio = compiled / base["forward_compiled"] if base and compiled and base.get("forward_compiled") else None
        fit_ratio = r["fit_step"] / base["fit_step"] if base else None
        hf_ratio = r["fit_step"] / hf["fit_step"] if hf else None
        cells = [
            f"{r['forward_eager'] * 1e3:.0f} ms",
            f"{compiled * 1e3:.0f} ms" if compiled else r.get("forward_compiled_error", "n/a")[:17],
            f"{r['fit_step'] * 1e3:.0f} ms",
            f"{r['fit_first_step']:.1f} s",
            f"{ratio:.2f}" if ratio else "",
            f"{fit_ratio:.2f}" if fit_ratio else "",
            f"{hf_ratio:.2f}" if hf_ratio else "",
        ]
        print(f"{r['backend']:12s} {cells[0]:>14s} {cells[1]:>17s} {cells[2]:>10s} {cells[3]:>15s} {cells[4]:>14s} "
              f"{cells[5]:>9s} {cells[6]:>9s}")
    if args.rounds > 1:
        print(f"medians over {args.rounds} rounds of processes, each the median of {args.runs} runs")
    report = {"machine": info, "preset": "small" if args.quick else "base", "shape": [8, 128], "runs": args.runs,
              "warmup": args.warmup, "rounds": args.rounds, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
