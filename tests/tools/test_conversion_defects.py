"""The conversion defects of issue 17: bfloat16 .bin, bfloat16 tf_model.h5, and the examples' checks."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_dtypes
import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_tools import convert as conv
from convbert_tools.demo import checkpoint_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bfloat16_pytorch_bin_is_written_and_holds_the_rounded_values(tmp_path):
    torch = pytest.importorskip("torch")
    conv.convert(checkpoint_dir(), str(tmp_path / "bin"), to="pytorch-bin", dtype="bfloat16", progress=False)
    state = torch.load(tmp_path / "bin" / "pytorch_model.bin", weights_only=True)
    source = ck.read_safetensors(pathlib.Path(checkpoint_dir()) / "model.safetensors")
    assert state.keys() == source.keys() and {t.dtype for t in state.values()} == {torch.bfloat16}
    for name, value in source.items():
        expected = value.astype(ml_dtypes.bfloat16).astype(np.float32)
        assert np.array_equal(state[name].float().numpy(), expected), name


def test_bfloat16_tf_model_h5_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"--to hf-tf-h5 stores float32, float16; --dtype bfloat16"):
        conv.convert(checkpoint_dir(), str(tmp_path / "h5"), to="hf-tf-h5", dtype="bfloat16", progress=False)
    assert not (tmp_path / "h5").exists()
    conv.convert(checkpoint_dir(), str(tmp_path / "h5"), to="hf-tf-h5", dtype="float16", progress=False)
    raw = ck.read_hf_tf_h5(tmp_path / "h5" / "tf_model.h5")
    assert {v.dtype for v in raw.values()} == {np.dtype("float16")}


def test_keras_example_restates_the_tolerance_tables_low_precision_rule():
    from tests import tolerances

    example = _load_example("keras_fit")
    assert example.LOWP_FACTOR == tolerances.LOWP_FACTOR and example.LOWP_ATOL == tolerances.LOWP_ATOL


@pytest.mark.slow
@pytest.mark.tensorflow_backend
def test_keras_example_mixed_bfloat16_from_the_three_label_demo_checkpoint(tmp_path):
    import keras

    example = _load_example("keras_fit")
    try:
        summary = example.main(["--epochs", "1", "--max-train", "32", "--max-eval", "16", "--batch-size", "16",
                                "--mixed-precision", "mixed_bfloat16", "--init-from", checkpoint_dir(),
                                "--output-dir", str(tmp_path / "run"), "--no-progress"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert summary["saved_model_max_abs_diff"] <= summary["saved_model_bound"]
    assert summary["saved_model_bound"] > example.SERVE_FP32_ATOL  # the bf16 rule, not the fp32 bound


@pytest.mark.slow
def test_pytorch_example_fine_tunes_the_three_label_demo_checkpoint_with_two_labels(tmp_path):
    pytest.importorskip("torch")
    example = _load_example("pt_train")
    example.main(["--threads", "1", "--no-progress", "--max-length", "32", "--max-steps", "2",
                  "--init-from", checkpoint_dir(), "--output-dir", str(tmp_path / "run")])
    from convbert_pt import ConvBertForSequenceClassification

    saved = ConvBertForSequenceClassification.from_pretrained(tmp_path / "run" / "checkpoint")
    assert saved.config.num_labels == 2 and saved.config.id2label == {0: "negative", 1: "positive"}
