"""examples/keras_fit.py runs end to end: tokenise, fit, evaluate, .keras round trip, SavedModel export."""

from __future__ import annotations

import importlib.util
import pathlib

import keras
import pytest

from tests.tolerances import COMPILED_FP32_ATOL

pytestmark = pytest.mark.tensorflow_backend  # tf.data and a SavedModel export

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "keras_fit.py"


@pytest.mark.slow
def test_keras_fit_example_trains_saves_reloads_and_serves(tmp_path):
    spec = importlib.util.spec_from_file_location("keras_fit_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        summary = example.main(["--epochs", "2", "--max-train", "96", "--max-eval", "32", "--batch-size", "16",
                                "--lr", "1e-3", "--output-dir", str(tmp_path / "run"), "--no-progress"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # At 5e-3 the second epoch's loss rose above the first's for some seeds (the data order's noise
    # at this size); at 1e-3 it falls by ~0.01 for every seed tried (0-4).
    assert summary["epochs_run"] == 2 and summary["train_loss"][-1] < summary["train_loss"][0]
    assert summary["saved_model_max_abs_diff"] <= COMPILED_FP32_ATOL
    for name in ("model.keras", "best.keras", "saved_model", "pretrained/model.safetensors",
                 "pretrained/config.json"):
        assert (tmp_path / "run" / name).exists(), name
