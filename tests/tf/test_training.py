"""model.fit out of the box: task losses with HF's conventions, default metrics, mixed precision, replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tests.configs import head_config, tiny_config
from tests.parity import assert_close
from tests.tf.helpers import fit_config, model_class, to_numpy, toy_batch
from tests.tolerances import (
    COMPILED_FP32_ATOL,
    COMPILED_FP32_RTOL,
    EXACT,
    REPLICAS_FP32_ATOL,
    REPLICAS_FP32_RTOL,
    SAME_COMPUTATION_FP32_ATOL,
    SAME_COMPUTATION_FP32_RTOL,
    TASK_LOSS_FP32_ATOL,
    TASK_LOSS_FP32_RTOL,
)

TRAIN_HEADS = ["masked_lm", "sequence_classification", "multiple_choice", "token_classification",
               "question_answering"]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _ce(logits: np.ndarray, labels: np.ndarray, ignore: int = -100) -> float:
    """HF's CrossEntropyLoss: mean over the labels that are not ``ignore``."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != ignore
    return float(-_log_softmax(logits[keep])[np.arange(keep.sum()), labels[keep]].mean())


@pytest.mark.parametrize("head", TRAIN_HEADS)
def test_fit_drives_the_loss_down_for_every_head(head):
    keras.utils.set_random_seed(1)
    model = model_class(head)(fit_config(head))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = toy_batch(head, batch=16)
    if head == "token_classification":  # HF-style: labels inside the input dict
        history = model.fit({**x, "labels": y}, epochs=6, batch_size=8, verbose=0).history
    else:
        history = model.fit(x, y, epochs=6, batch_size=8, verbose=0).history
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and min(losses[-2:]) < 0.6 * losses[0], losses
    assert any(k.endswith("accuracy") for k in history), sorted(history)


def test_the_bare_model_has_no_task_loss():
    with pytest.raises(ValueError, match="ConvBertModel has no task loss"):
        model_class("model")(tiny_config()).compile(optimizer="sgd")


def test_labels_in_y_and_inside_x_give_the_same_loss_and_metrics():
    head = "sequence_classification"
    model = model_class(head)(fit_config(head))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = toy_batch(head)
    from_y = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    from_x = model.evaluate({**x, "labels": y}, batch_size=8, verbose=0, return_dict=True)
    assert from_y.keys() == from_x.keys() == {"loss", "accuracy"}
    for key in from_y:
        assert from_y[key] == pytest.approx(from_x[key], rel=SAME_COMPUTATION_FP32_RTOL)
    logits = to_numpy(model(x)["logits"])
    assert from_y["loss"] == pytest.approx(_ce(logits, y), rel=TASK_LOSS_FP32_RTOL)
    assert from_y["accuracy"] == pytest.approx(float((logits.argmax(-1) == y).mean()), rel=SAME_COMPUTATION_FP32_RTOL)


@pytest.mark.parametrize("head", ["masked_lm", "token_classification"])
def test_minus_100_labels_are_ignored(head):
    model = model_class(head)(head_config(head))
    x, y = toy_batch(head)
    out = model({**x, "labels": y})
    assert_close("loss", out["loss"], _ce(to_numpy(out["logits"]), y), TASK_LOSS_FP32_ATOL)
    flipped = np.where(y == -100, -100, (y + 1) % 3)
    assert float(model({**x, "labels": flipped})["loss"]) != pytest.approx(float(out["loss"]),
                                                                          rel=SAME_COMPUTATION_FP32_RTOL)


def test_sequence_classification_problem_types_follow_hf():
    x, _ = toy_batch("sequence_classification")
    rng = np.random.default_rng(0)
    # single label: cross-entropy (int labels, problem_type None)
    model = model_class("sequence_classification")(tiny_config())
    y = rng.integers(0, 3, 8).astype("int32")
    out = model({**x, "labels": y})
    assert_close("single_label", out["loss"], _ce(to_numpy(out["logits"]), y), TASK_LOSS_FP32_ATOL)
    # multi label: float labels, BCE with logits averaged over every entry
    y = (rng.random((8, 3)) < 0.5).astype("float32")
    out = model({**x, "labels": y})
    z = to_numpy(out["logits"]).astype(np.float64)
    bce = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    assert_close("multi_label", out["loss"], bce, TASK_LOSS_FP32_ATOL)
    # regression: one label, MSE
    model = model_class("sequence_classification")(tiny_config(num_labels=1))
    y = rng.standard_normal(8).astype("float32")
    out = model({**x, "labels": y})
    assert_close("regression", out["loss"], np.mean((to_numpy(out["logits"])[:, 0] - y) ** 2), TASK_LOSS_FP32_ATOL)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    assert model.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "mae"}


def test_question_answering_loss_clamps_and_ignores_positions_past_the_end():
    model = model_class("question_answering")(head_config("question_answering"))
    x, (start, end) = toy_batch("question_answering")
    start = start.copy()
    start[0] = 50  # clamped to L = 8, then ignored
    end = end.copy()
    end[1] = -3  # clamped to 0
    out = model({**x, "start_positions": start, "end_positions": end})
    s, e = to_numpy(out["start_logits"]), to_numpy(out["end_logits"])
    expected = 0.5 * (_ce(s, np.where(start >= 8, -100, start)) + _ce(e, np.clip(end, 0, 8)))
    assert_close("qa loss", out["loss"], expected, TASK_LOSS_FP32_ATOL)


def test_multiple_choice_pools_the_last_position():
    model = model_class("multiple_choice")(tiny_config())
    x, _ = toy_batch("multiple_choice")
    out = model(x)
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in x.items()}
    last = model.convbert(flat)["last_hidden_state"][:, -1]
    assert_close("logits", out["logits"], to_numpy(model.classifier(last)).reshape(4, 2), SAME_COMPUTATION_FP32_ATOL)


def test_user_loss_is_passed_to_keras_unchanged():
    head = "sequence_classification"
    model = model_class(head)(head_config(head))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"logits": loss}, metrics=None)
    x, y = toy_batch(head)
    result = model.evaluate(x, {"logits": y}, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(_ce(to_numpy(model(x)["logits"]), y), rel=TASK_LOSS_FP32_RTOL)


@pytest.mark.slow
@pytest.mark.tensorflow_backend
def test_xla_compiled_training_equals_graph_training():
    head = "sequence_classification"
    x, y = toy_batch(head)
    weights, results = None, {}
    for jit in (False, True):
        model = model_class(head)(fit_config(head))
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        results[jit] = (model.fit(x, y, epochs=2, batch_size=8, verbose=0).history["loss"], model.get_weights())
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=COMPILED_FP32_RTOL)
    for i, (a, b) in enumerate(zip(results[True][1], results[False][1], strict=True)):
        assert_close(f"weight {i} after XLA training", a, b, COMPILED_FP32_ATOL)


def dtype(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_variables_and_logits(policy):
    if policy == "mixed_float16" and keras.backend.backend() == "jax":
        pytest.skip("JAX's CPU backend has no float16 matmul with float32 accumulation (dot_general F16_F16_F32)")
    head = "sequence_classification"
    model = model_class(head)(fit_config(head), dtype=policy)
    assert {v.dtype for v in model.weights} == {"float32"}
    x, y = toy_batch(head)
    out = model(x, output_attentions=True, output_hidden_states=True)
    assert dtype(out["logits"]) == "float32"
    assert dtype(out["hidden_states"][-1]) == policy.split("_")[1]
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    losses = model.fit(x, y, epochs=3, batch_size=8, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    mlm = model_class("masked_lm")(tiny_config(), dtype=policy)
    assert dtype(mlm(x)["logits"]) == "float32"


_MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tests.tf.helpers import fit_config, model_class, toy_batch
    head = "sequence_classification"
    x, y = toy_batch(head, batch=16)
    def data():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    single = model_class(head)(fit_config(head))
    start = single.get_weights()
    single.compile(optimizer=keras.optimizers.SGD(0.1))
    one = single.fit(data(), epochs=2, verbose=0).history
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        replicated = model_class(head)(fit_config(head))
        replicated.set_weights(start)
        replicated.compile(optimizer=keras.optimizers.SGD(0.1))
    two = replicated.fit(data(), epochs=2, verbose=0).history
    diff = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), replicated.get_weights()))
    # Adam's compiled update against its plain ops, both replicated: each device updates its own copies.
    from convbert_tf import optimizers
    adam = []
    for fused in (True, False):
        with strategy.scope():
            model = model_class(head)(fit_config(head))
            model.set_weights(start)
            model.compile(optimizer=optimizers.Adam(1e-3, fused=fused))
        model.fit(data(), epochs=2, verbose=0)
        adam.append(model.get_weights())
    adam_diff = max(float(np.abs(a - b).max()) for a, b in zip(*adam))
    adam_moved = max(float(np.abs(a - b).max()) for a, b in zip(adam[0], start))
    print("RESULT", json.dumps({"replicas": strategy.num_replicas_in_sync, "one": one, "two": two, "diff": diff,
                                "adam_diff": adam_diff, "adam_moved": adam_moved}))
""")


@pytest.mark.slow
@pytest.mark.tensorflow_backend
def test_mirrored_strategy_over_two_devices_matches_one_device():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True, cwd=root, env=env,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    # Keras' Loss objects scale each replica's mean by 1/replicas: the summed loss is the global mean.
    np.testing.assert_allclose(result["two"]["loss"], result["one"]["loss"], rtol=REPLICAS_FP32_RTOL)
    # Accuracy is a count of correct predictions over a count of examples: equal, not close.
    assert result["two"]["accuracy"] == result["one"]["accuracy"]
    assert result["diff"] < REPLICAS_FP32_ATOL
    assert result["adam_moved"] > 0.0 and result["adam_diff"] == EXACT
