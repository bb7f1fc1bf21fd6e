"""Serialisation: get_config, .keras, .weights.h5, save_pretrained / from_pretrained, HF tf_model.h5."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from convbert_common import checkpoint, heads
from convbert_common import weight_map as wm
from convbert_tf import modeling
from convbert_tf.io import canonical_arrays
from tests.configs import head_config, tiny_config
from tests.conftest import HEADS
from tests.tf.helpers import fit_config, model_class, to_numpy, toy_batch
from tests.tolerances import SAME_COMPUTATION_FP32_RTOL

LAYER_CLASSES = [
    modeling.ConvBertEmbeddings, modeling.ConvBertSelfAttention, modeling.ConvBertSelfOutput,
    modeling.ConvBertAttention, modeling.ConvBertIntermediate, modeling.ConvBertOutput, modeling.ConvBertLayer,
    modeling.ConvBertEncoder, modeling.ConvBertGeneratorPredictions, modeling.ConvBertMaskedLMHead,
    modeling.ConvBertClassificationHead,
]


def _json(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def _inputs(head):
    return toy_batch(head)[0]


def _assert_same_weights(a, b):
    assert [v.path.split("/", 1)[1] for v in a.weights] == [v.path.split("/", 1)[1] for v in b.weights]
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(x), to_numpy(y), err_msg=x.path)


@pytest.mark.parametrize("head", HEADS)
def test_model_get_config_round_trips_to_identical_json(head):
    model = model_class(head)(head_config(head, hidden_act="gelu_new", num_groups=2), name=f"m_{head}")
    config = model.get_config()
    assert config["config"] == model.config.to_dict()
    again = type(model).from_config(json.loads(_json(config)))
    assert _json(again.get_config()) == _json(config)


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=lambda c: c.__name__)
def test_layer_get_config_round_trips_to_identical_json(cls):
    layer = cls(tiny_config(num_groups=2), name="x")
    config = layer.get_config()
    assert _json(cls.from_config(json.loads(_json(config))).get_config()) == _json(config)


@pytest.mark.parametrize("cls", [modeling.SeparableConv1D, modeling.GroupedLinearLayer], ids=lambda c: c.__name__)
def test_variable_owning_layers_round_trip_their_arguments(cls):
    args = (tiny_config(), 32, 16, 5) if cls is modeling.SeparableConv1D else (tiny_config(num_groups=4), 32, 36)
    layer = cls(*args, name="x")
    config = layer.get_config()
    assert _json(cls.from_config(json.loads(_json(config))).get_config()) == _json(config)


@pytest.mark.parametrize("head", HEADS)
def test_keras_file_round_trip_is_bit_identical(head, tmp_path):
    model = model_class(head)(head_config(head))
    if head != "model":
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    _assert_same_weights(model, loaded)
    a, b = to_numpy(model(_inputs(head))), to_numpy(loaded(_inputs(head)))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if head != "model":
        assert loaded.get_compile_config()["loss"] == "auto"


def test_reloaded_keras_file_keeps_training(tmp_path):
    head = "sequence_classification"
    model = model_class(head)(fit_config(head))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    x, y = toy_batch(head)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert to_numpy(loaded.optimizer.iterations) == 1
    a = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"]
    b = loaded.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"]
    np.testing.assert_allclose(a, b, rtol=SAME_COMPUTATION_FP32_RTOL)


def test_weights_h5_round_trip(tmp_path):
    model = model_class("masked_lm")(tiny_config())
    model.save_weights(tmp_path / "m.weights.h5")
    other = model_class("masked_lm")(tiny_config())
    other.load_weights(tmp_path / "m.weights.h5")
    _assert_same_weights(model, other)


@pytest.mark.parametrize("head", HEADS)
def test_save_pretrained_then_from_pretrained_is_bit_identical(head, tmp_path):
    model = model_class(head)(head_config(head))
    model.save_pretrained(tmp_path / "ckpt", tf_h5=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors",
                                                                      "tf_model.h5"]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["architectures"] == [heads.get(head).class_name] and config["model_type"] == "convbert"
    saved = checkpoint.read_safetensors(tmp_path / "ckpt" / "model.safetensors")
    assert sorted(saved) == sorted(s.name for s in wm.model_specs(model.config, head))
    assert wm.TIED_LM_WEIGHT not in saved
    for weights in ("model.safetensors", "tf_model.h5"):
        loaded = type(model).from_pretrained(tmp_path / "ckpt", weights_file=weights)
        _assert_same_weights(model, loaded)
    arrays = canonical_arrays(model)
    for name, value in saved.items():
        np.testing.assert_array_equal(value, arrays[name], err_msg=name)


def test_save_pretrained_refuses_a_file_path(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        model_class("model")(tiny_config()).save_pretrained(target)
