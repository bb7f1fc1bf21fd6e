"""convbert_tf on every Keras backend: the Keras tests again on JAX and on PyTorch, imports, cross-backend files.

KERAS_BACKEND is read once per process, so each backend runs in a subprocess of its own: the whole
backend-neutral Keras suite (tests/tf, TensorFlow-only tests skipped by their marker) on JAX, with
two virtual CPU devices for the distribution tests, and on PyTorch its reference-output,
serialization, fit, gradient-accumulation and same-process parity tests. A ``.keras`` file saved
on each backend is loaded on every other and gives the same logits.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.parity import assert_close
from tests.tolerances import CROSS_FP32_ATOL

ROOT = pathlib.Path(__file__).resolve().parents[2]
BACKENDS = ("tensorflow", "jax", "torch")
# The PyTorch backend runs the tests the issue names for every backend (reference outputs,
# serialization, fit), gradient accumulation, the hashed dropout and the same-process parity with
# convbert_pt: its eager steps are slow on CPU.
# `convbert verify` and `convbert demo` run the Keras model on whatever backend the process has.
COMMAND_TESTS = ("tests/tools/test_cli.py::test_verify_json_lists_every_output_with_its_difference",
                 "tests/cross/test_conversion.py::test_demo_runs_both_frameworks_and_reports_their_difference")
TORCH_TESTS = ("tests/tf/test_reference_outputs.py", "tests/tf/test_serialization.py",
               "tests/tf/test_training.py::test_fit_drives_the_loss_down_for_every_head",
               "tests/tf/test_inputs.py", "tests/tf/test_other_backends.py", "tests/tf/test_sdconv_gradients.py",
               "tests/tf/test_pretraining.py::test_micro_batches_give_the_whole_batch_s_step_on_every_backend",
               "tests/tf/test_pretraining.py::test_the_keras_loop_runs_grad_accum_on_every_backend",
               "tests/tf/test_dropout.py", "tests/tf/test_optimizers.py", *COMMAND_TESTS)


def _available(backend: str) -> bool:
    import importlib.util

    return importlib.util.find_spec({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]) is not None


def _env(backend: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    return env


def _pytest(backend: str, targets: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *targets],
                          cwd=ROOT, env=_env(backend), capture_output=True, text=True, timeout=1800)
    return proc.returncode, proc.stdout[-6000:] + proc.stderr[-3000:]


def _passed(summary: str) -> int:
    found = re.search(r"(\d+) passed", summary)
    return int(found.group(1)) if found else 0


@pytest.mark.slow
def test_the_keras_tests_pass_on_jax():
    if not _available("jax"):
        pytest.skip("jax is not installed (pip install 'convbert[jax]')")
    rc, out = _pytest("jax", ("tests/tf", *COMMAND_TESTS))
    assert rc == 0, out
    assert _passed(out) >= 100, out  # the backend-neutral suite, not a collection of skips


@pytest.mark.slow
def test_the_keras_reference_serialization_and_fit_tests_pass_on_pytorch():
    rc, out = _pytest("torch", TORCH_TESTS)
    assert rc == 0, out
    assert _passed(out) >= 50, out


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_importing_convbert_tf_on_another_backend_leaves_tensorflow_out(backend):
    if not _available(backend):
        pytest.skip(f"{backend} is not installed")
    code = "import sys, convbert_tf; print(convbert_tf.backend.name(), 'tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(backend), capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.stdout.split() == [backend, "False"], proc.stderr[-2000:]


_SAVE_AND_LOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import convbert_tf  # registers the classes with Keras
    from tests.configs import tiny_config


    def save_and_load(out_dir, save, sources):
        # Saves this backend's .keras file and its logits (when ``save``), then loads each of
        # ``sources`` and returns their logits here.
        backend = keras.backend.backend()
        x = {"input_ids": np.array([[5, 7, 9, 11, 13, 2], [3, 4, 6, 8, 0, 0]], "int32"),
             "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "int32")}
        if save:
            keras.utils.set_random_seed({"tensorflow": 0, "jax": 1, "torch": 2}[backend])
            model = convbert_tf.ConvBertForSequenceClassification(tiny_config())
            model.save(f"{out_dir}/{backend}.keras")
            np.save(f"{out_dir}/{backend}.npy", keras.ops.convert_to_numpy(model(x, training=False)["logits"]))
        logits = {}
        for source in sources:
            model = keras.saving.load_model(f"{out_dir}/{source}.keras")
            logits[source] = keras.ops.convert_to_numpy(model(x, training=False)["logits"]).tolist()
        return logits


    if __name__ == "__main__":
        print("RESULT", json.dumps(save_and_load(sys.argv[1], sys.argv[2] == "save", sys.argv[3:])))
""")


def _script(backend: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _SAVE_AND_LOAD, *args], env=_env(backend), capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_a_keras_file_saved_on_any_backend_loads_on_the_others_with_the_same_logits(tmp_path):
    import keras

    here = keras.backend.backend()  # this process's backend saves and loads in-process
    others = [b for b in BACKENDS if b != here and _available(b)]
    scope: dict = {"__name__": "in_process"}
    exec(_SAVE_AND_LOAD, scope)
    results = {here: scope["save_and_load"](str(tmp_path), True, [])}
    # Each other backend saves, then loads what was saved before it; this one loads the rest last.
    for i, backend in enumerate(others):
        saved = [here, *others[:i]]
        results[backend] = _result(_script(backend, str(tmp_path), "save", *saved))
    pending = {backend: others[i + 1:] for i, backend in enumerate(others)}
    for backend, sources in pending.items():
        if sources:
            results[backend].update(_result(_script(backend, str(tmp_path), "load", *sources)))
    results[here].update(scope["save_and_load"](str(tmp_path), False, others))
    backends = [here, *others]
    for backend in backends:
        assert sorted(results[backend]) == sorted(b for b in backends if b != backend), results[backend].keys()
        for source, logits in results[backend].items():
            assert_close(f"{source}.keras on {backend}", np.array(logits, np.float32),
                         np.load(tmp_path / f"{source}.npy"), CROSS_FP32_ATOL)
