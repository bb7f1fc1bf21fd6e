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
HF's TF fit step (``bench_tf.py`` measures HF).

    python bench/bench_backends.py [--backends tensorflow,jax,torch] [--runs 5] [--warmup 2] [--quick]
                                   [--json bench/results/bench_backends.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")


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

    def seconds(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def median(fn) -> float:
        for _ in range(warmup):
            fn()
        return statistics.median(seconds(fn) for _ in range(runs))

    model = keras.saving.load_model(path, compile=False)
    x, y = _inputs(model.config.vocab_size)
    out: dict = {"backend": keras.backend.backend()}
    out["forward_eager"] = median(lambda: keras.ops.convert_to_numpy(model(x, training=False)["logits"]))
    try:
        model.compile(optimizer="sgd", jit_compile=True)
        out["forward_compiled_first"] = seconds(lambda: model.predict_on_batch(x))
        out["forward_compiled"] = median(lambda: model.predict_on_batch(x))
    except Exception as exc:  # torch.compile of a Keras model may not be supported: say why
        out["forward_compiled_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    trainer = keras.saving.load_model(path, compile=False)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-5))  # the backend's default compilation
    out["fit_first_step"] = seconds(lambda: trainer.train_on_batch(x, y))
    out["fit_step"] = median(lambda: trainer.train_on_batch(x, y))
    return out


def _run_backend(backend: str, path: str, runs: int, warmup: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])}
    code = (f"import json, bench_backends; print('RESULT', json.dumps(bench_backends.worker({path!r}, {runs}, "
            f"{warmup})))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"backend": backend, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                f"exit {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated Keras backends to run")
    p.add_argument("--runs", type=int, default=5, help="timed runs per case (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before them")
    p.add_argument("--quick", action="store_true", help="ConvBERT-small instead of base (a smoke run)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "bench_backends.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import machine_info, machine_line

    info = machine_info()
    print(machine_line(info))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        env_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        if env_backend != "tensorflow":
            raise SystemExit("run this script with the TensorFlow backend (it saves the shared .keras file)")
        save_weights(path, args.quick)
        results = [_run_backend(b, path, args.runs, args.warmup) for b in args.backends.split(",")]
    base = next((r for r in results if r.get("backend") == "tensorflow" and "error" not in r), None)
    print(f"\n{'backend':12s} {'forward eager':>14s} {'forward compiled':>17s} {'fit step':>10s} "
          f"{'first fit step':>15s} {'compiled / TF':>14s} {'fit / TF':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['backend']:12s} failed: {r['error']}")
            continue
        compiled = r.get("forward_compiled")
        ratio = compiled / base["forward_compiled"] if base and compiled and base.get("forward_compiled") else None
        fit_ratio = r["fit_step"] / base["fit_step"] if base else None
        cells = [
            f"{r['forward_eager'] * 1e3:.0f} ms",
            f"{compiled * 1e3:.0f} ms" if compiled else r.get("forward_compiled_error", "n/a")[:17],
            f"{r['fit_step'] * 1e3:.0f} ms",
            f"{r['fit_first_step']:.1f} s",
            f"{ratio:.2f}" if ratio else "",
            f"{fit_ratio:.2f}" if fit_ratio else "",
        ]
        print(f"{r['backend']:12s} {cells[0]:>14s} {cells[1]:>17s} {cells[2]:>10s} {cells[3]:>15s} {cells[4]:>14s} "
              f"{cells[5]:>9s}")
    report = {"machine": info, "preset": "small" if args.quick else "base", "shape": [8, 128], "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
