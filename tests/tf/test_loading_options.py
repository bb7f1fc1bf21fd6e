"""The loading options HF users type, in Keras: Hub ids (the .h5 without torch), dtype, mismatched heads, config=."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common.checkpoint import CheckpointError
from convbert_common.config import ConvBertConfig
from convbert_tf import ConvBertForMaskedLM, ConvBertForSequenceClassification, ConvBertModel
from tests.configs import tiny_config
from tests.conftest import config_less_checkpoint, head_dir
from tests.hub_cache import add_checkpoint, add_repo
from tests.tolerances import INIT_STD_MIN_FRACTION

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _std(var) -> float:
    return float(np.std(keras.ops.convert_to_numpy(var)))


@pytest.fixture
def both_hf_files(tmp_path, monkeypatch):
    """``org/hf`` in a fake cache holding pytorch_model.bin and tf_model.h5 but no safetensors."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = head_dir("model", "pytorch_model.bin")  # a folder that holds both files
    root = tmp_path / "cache"
    add_checkpoint(root, "org/hf", folder, names=["config.json", "pytorch_model.bin", "tf_model.h5"])
    return root


def test_keras_takes_the_h5_of_a_repo_with_both_hf_files_and_never_needs_torch(both_hf_files):
    code = (
        "import sys; sys.modules['torch'] = None\n"  # torch cannot be imported in this process
        "import huggingface_hub as h\n"
        "real = h.hf_hub_download; asked = []\n"
        "h.hf_hub_download = lambda r, n, **k: asked.append(n) or real(r, n, **k)\n"
        "import convbert_tf\n"
        f"m = convbert_tf.ConvBertModel.from_pretrained('org/hf', cache_dir={str(both_hf_files)!r})\n"
        "assert asked == ['config.json', 'model.safetensors', 'model.safetensors.index.json', 'tf_model.h5'], asked\n"
        "print('ok', len(m.weights))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]


def test_keras_from_a_hub_id_equals_the_local_load(both_hf_files):
    a = ConvBertModel.from_pretrained("org/hf", cache_dir=both_hf_files)
    b = ConvBertModel.from_pretrained(head_dir("model", "tf_model.h5"), from_tf=True)
    for x, y in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)), x.path


def test_top_level_from_pretrained_resolves_the_class_from_a_hub_config(tmp_path, monkeypatch):
    import convbert_tf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    add_checkpoint(tmp_path, "org/tok", head_dir("token_classification"), names=["config.json", "model.safetensors"])
    model = convbert_tf.from_pretrained("org/tok", cache_dir=tmp_path)
    assert type(model).__name__ == "ConvBertForTokenClassification"


@pytest.mark.parametrize("option", ["dtype", "torch_dtype"])
def test_dtype_sets_the_variables_and_never_lands_in_the_config(option, tmp_path):
    model = ConvBertModel.from_pretrained(head_dir("model"), **{option: "bfloat16"})
    # The LayerNorms keep float32 variables, as the PyTorch model's float32_parameter_names.
    assert {v.dtype for v in model.weights if "LayerNorm" not in v.path} == {"bfloat16"}
    assert {v.dtype for v in model.weights if "LayerNorm" in v.path} == {"float32"}
    assert model.config.dtype == "float32"
    model.save_pretrained(tmp_path)
    assert ConvBertConfig.from_pretrained(tmp_path).dtype == "bfloat16"
    mixed = ConvBertModel.from_pretrained(head_dir("model"), dtype="mixed_bfloat16")
    assert mixed.dtype_policy.name == "mixed_bfloat16" and {v.dtype for v in mixed.weights} == {"float32"}
    with pytest.raises(ValueError, match="not a Keras dtype"):
        ConvBertModel.from_pretrained(head_dir("model"), dtype="int4x")


def test_new_head_variables_are_drawn_not_left_zero():
    model, info = ConvBertForSequenceClassification.from_pretrained(head_dir("model"), num_labels=3,
                                                                    output_loading_info=True)
    assert len(info["missing_keys"]) == 4
    floor = INIT_STD_MIN_FRACTION * model.config.initializer_range
    assert _std(model.classifier.dense.kernel) > floor and _std(model.classifier.out_proj.kernel) > floor
    assert not np.any(keras.ops.convert_to_numpy(model.classifier.out_proj.bias))


@pytest.mark.parametrize("weights_file", ["model.safetensors", "tf_model.h5"])
def test_ignore_mismatched_sizes_reinitialises_the_head_tensors_that_differ(weights_file, tmp_path):
    source = tmp_path / "ckpt"
    shutil.copytree(head_dir("sequence_classification"), source)
    if weights_file == "tf_model.h5":
        ConvBertForSequenceClassification.from_pretrained(source).save_pretrained(source, tf_h5=True)
        (source / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="ignore_mismatched_sizes=True"):
        ConvBertForSequenceClassification.from_pretrained(source, num_labels=2)
    model, info = ConvBertForSequenceClassification.from_pretrained(source, num_labels=2,
                                                                    ignore_mismatched_sizes=True,
                                                                    output_loading_info=True)
    assert sorted(info["mismatched_keys"]) == [("classifier.out_proj.bias", (3,), (2,)),
                                               ("classifier.out_proj.weight", (3, 32), (2, 32))]
    assert tuple(model.classifier.out_proj.kernel.shape) == (32, 2)
    assert _std(model.classifier.out_proj.kernel) > INIT_STD_MIN_FRACTION * model.config.initializer_range
    reference = ConvBertForSequenceClassification.from_pretrained(source)
    assert np.array_equal(keras.ops.convert_to_numpy(model.classifier.dense.kernel),
                          keras.ops.convert_to_numpy(reference.classifier.dense.kernel))


def test_folder_without_config_json_loads_with_config_given(tmp_path):
    folder = config_less_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass config="):
        ConvBertForSequenceClassification.from_pretrained(folder)
    config = ConvBertConfig.from_pretrained(head_dir("sequence_classification"))
    model = ConvBertForSequenceClassification.from_pretrained(folder, config=config)
    expected = ck.read_safetensors(folder / "model.safetensors")["classifier.out_proj.weight"]
    assert np.array_equal(keras.ops.convert_to_numpy(model.classifier.out_proj.kernel), expected.T)


def test_sharded_keras_save_reloads_in_keras(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ConvBertForMaskedLM(tiny_config())
    model.save_pretrained(tmp_path / "out", max_shard_size="20KB")
    assert (tmp_path / "out" / ck.SAFETENSORS_INDEX_NAME).exists()
    add_repo(tmp_path / "cache", "org/mlm", {p.name: p for p in (tmp_path / "out").iterdir()})
    loaded = ConvBertForMaskedLM.from_pretrained("org/mlm", cache_dir=tmp_path / "cache")
    for x, y in zip(model.weights, loaded.weights, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)), x.path
