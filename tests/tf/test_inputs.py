"""Input forms (dict, list, tensor, keywords) and clear errors for bad inputs, labels and checkpoints."""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
import pytest

from convbert_common.checkpoint import CheckpointError
from convbert_tf.io import load_pretrained_weights
from tests.configs import head_config, tiny_config
from tests.conftest import fixture_file
from tests.parity import assert_close
from tests.tf.helpers import TINY, model_class, to_numpy, toy_batch
from tests.tolerances import EXACT, SAME_COMPUTATION_FP32_ATOL

IDS = np.array([[5, 7, 9, 11, 13, 2], [3, 4, 6, 8, 0, 0]], dtype="int32")
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype="int32")
TYPES = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], dtype="int32")


@pytest.fixture(scope="module")
def model():
    return model_class("model")(tiny_config())


def test_dict_list_tensor_and_keyword_inputs_agree(model):
    ref = model({"input_ids": IDS, "attention_mask": MASK, "token_type_ids": TYPES})["last_hidden_state"]
    for out in (
        model([IDS, MASK, TYPES]),
        model(IDS, attention_mask=MASK, token_type_ids=TYPES),
        model({"input_ids": IDS}, attention_mask=MASK, token_type_ids=TYPES),
        model(input_ids=keras.ops.convert_to_tensor(IDS), attention_mask=MASK, token_type_ids=TYPES),
    ):
        assert_close("last_hidden_state", out["last_hidden_state"], ref, EXACT)
    plain = model(IDS)["last_hidden_state"]
    assert_close("no mask / types", model([IDS, None, None])["last_hidden_state"], plain, EXACT)
    tup = model(IDS, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1


def test_inputs_embeds_and_position_ids_match_the_ids_path(model):
    embeds = keras.ops.take(model.embeddings.word_embeddings.embeddings, IDS, axis=0)
    a = model(inputs_embeds=embeds, attention_mask=MASK)["last_hidden_state"]
    b = model(IDS, attention_mask=MASK)["last_hidden_state"]
    assert_close("inputs_embeds", a, b, SAME_COMPUTATION_FP32_ATOL)
    positions = np.broadcast_to(np.arange(6, dtype="int32"), IDS.shape)
    c = model(IDS, attention_mask=MASK, position_ids=positions)["last_hidden_state"]
    assert_close("explicit positions", c, b, EXACT)


def test_head_mask_zeroes_the_attention_of_a_head(model):
    n = model.config.heads.num_heads
    head_mask = np.ones((n,), "float32")
    head_mask[0] = 0.0
    out = model(IDS, head_mask=head_mask, output_attentions=True)
    assert float(np.abs(to_numpy(out["attentions"][0])[:, 0]).max()) == 0.0
    assert float(np.abs(to_numpy(out["attentions"][0])[:, 1]).max()) > 0.0
    ones = model(IDS, head_mask=np.ones((2, n), "float32"))["last_hidden_state"]
    assert_close("all-ones head mask", ones, model(IDS)["last_hidden_state"], SAME_COMPUTATION_FP32_ATOL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_ids=np.array([[1, 2, 150, 3]])), r"input_ids contains the id 150, which is >= vocab_size \(99\)"),
        (dict(input_ids=np.array([[1, -4, 3]])), r"input_ids contains the negative id -4"),
        (dict(input_ids=IDS, token_type_ids=TYPES + 1),
         r"token_type_ids contains the id 2, which is >= type_vocab_size"),
        (dict(input_ids=IDS, position_ids=np.array([[0, 1, 2, 3, 4, 40]] * 2)),
         r"position_ids contains the id 40, which is >= max_position_embeddings \(32\)"),
        (dict(input_ids=np.ones((1, 33), "int32")),
         r"sequence length 33 is longer than max_position_embeddings \(32\)"),
        (dict(input_ids=IDS, attention_mask=MASK[:, :5]), r"attention_mask must have the shape of the input"),
        (dict(input_ids=IDS, token_type_ids=TYPES[:1]), r"token_type_ids must have the shape of the input"),
        (dict(input_ids=IDS.astype("float32")), r"input_ids must be an integer tensor"),
        (dict(input_ids=IDS[0]), r"input_ids must have shape \(batch, sequence\)"),
        (dict(input_ids=IDS, inputs_embeds=np.zeros((2, 6, 16), "float32")), r"exactly one of input_ids and "
                                                                             r"inputs_embeds \(got both\)"),
        (dict(attention_mask=MASK), r"exactly one of input_ids and inputs_embeds \(got neither\)"),
        (dict(inputs_embeds=np.zeros((2, 6, 5), "float32")), r"inputs_embeds must have shape"),
        (dict(input_ids=IDS, head_mask=np.ones((3,), "float32")), r"head_mask must have shape \(2,\) or \(2, 2\)"),
    ],
)
def test_bad_inputs_raise_clear_errors_before_the_lookup(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


def test_bad_input_structures_are_named(model):
    with pytest.raises(ValueError, match=r"unknown input names \['labels'\]"):
        model({"input_ids": IDS, "labels": IDS})
    with pytest.raises(ValueError, match=r"\['attention_mask'\] given both in the inputs and as keyword"):
        model({"input_ids": IDS, "attention_mask": MASK}, attention_mask=MASK)
    with pytest.raises(ValueError, match="a list input holds at most 6 tensors"):
        model([IDS] * 7)


@pytest.mark.tensorflow_backend
def test_out_of_range_id_raises_inside_tf_function_and_tf_data(model):
    import tensorflow as tf

    bad = tf.constant([[1, 2, 150, 3]])
    graph_call = tf.function(lambda x: model(x)["last_hidden_state"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input_ids must hold ids in \[0, vocab_size=99\)"
                                                             r"; largest id:\] \[150\]"):
        graph_call(bad)
    ds = tf.data.Dataset.from_tensor_slices(bad).batch(1).map(lambda x: model(x)["last_hidden_state"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"largest id:\] \[150\]"):
        list(ds)


@pytest.mark.tensorflow_backend
def test_out_of_range_id_under_xla_gives_nan_instead_of_a_silent_row(model):
    import tensorflow as tf

    # XLA drops asserts; the embeddings of a bad id become NaN so that the outputs show it.
    xla_call = tf.function(lambda x: model(x)["last_hidden_state"], jit_compile=True)
    out = to_numpy(xla_call(tf.constant([[1, 2, 150, 3]])))
    assert np.isnan(out).all()
    good = to_numpy(xla_call(tf.constant([[1, 2, 15, 3]])))
    assert np.isfinite(good).all()


@pytest.mark.parametrize(
    ("head", "labels", "message"),
    [
        ("masked_lm", np.zeros((8, 7), "int32"), r"labels must have shape \(8, 8\)"),
        ("masked_lm", np.zeros((8, 8), "float32"), r"labels must be an integer tensor"),
        ("sequence_classification", np.zeros((8, 2), "int32"), r"labels \(single_label_classification\) must have"),
        ("multiple_choice", np.zeros((4,), "float32"), r"labels \(multiple choice\) must be an integer tensor"),
        ("token_classification", np.zeros((8,), "int32"), r"labels must have shape \(8, 8\)"),
    ],
)
def test_bad_labels_raise_clear_errors(head, labels, message):
    model = model_class(head)(head_config(head))
    x, _ = toy_batch(head)
    with pytest.raises(ValueError, match=message):
        model({**x, "labels": labels})


def test_span_positions_come_in_pairs():
    model = model_class("question_answering")(head_config("question_answering"))
    x, _ = toy_batch("question_answering")
    with pytest.raises(ValueError, match="give both start_positions and end_positions"):
        model({**x, "start_positions": np.zeros((8,), "int32")})
    with pytest.raises(ValueError, match=r"end_positions must have shape \(8,\)"):
        model(x, start_positions=np.zeros((8,), "int32"), end_positions=np.zeros((8, 2), "int32"))


# --------------------------------------------------------------------------- checkpoints
def _copy_tiny(tmp_path, head="model"):
    src = fixture_file(f"{TINY}/{head}/model.safetensors").parent
    dst = tmp_path / head
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    return dst


def test_checkpoint_that_does_not_fit_names_key_and_shapes_and_loads_nothing(tmp_path):
    path = _copy_tiny(tmp_path)
    with pytest.raises(CheckpointError, match=r"embeddings.word_embeddings.weight: checkpoint shape \(30522, 8\), "
                                              r"model expects \(30522, 16\)"):
        model_class("model").from_pretrained(path, embedding_size=16)
    config = json.loads((path / "config.json").read_text())
    model = model_class("model")(tiny_config(**{k: config[k] for k in ("vocab_size", "embedding_size")},
                                             hidden_size=32, max_position_embeddings=64, intermediate_size=36))
    before = [to_numpy(v).copy() for v in model.weights]
    with pytest.raises(CheckpointError, match="nothing was loaded"):
        load_pretrained_weights(model, path)
    for a, v in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(a, to_numpy(v))


def test_truncated_weight_file_is_a_clear_error(tmp_path):
    path = _copy_tiny(tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        model_class("model").from_pretrained(path)


def test_config_of_another_model_type_is_refused(tmp_path):
    path = _copy_tiny(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "bert"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type is 'bert', expected 'convbert'"):
        model_class("model").from_pretrained(path)


def test_unknown_from_pretrained_argument_is_refused(tmp_path):
    path = _copy_tiny(tmp_path)
    with pytest.raises(TypeError, match="unexpected keyword argument.*use_flash"):
        model_class("model").from_pretrained(path, use_flash=True)
    # from_pt=True is HF's option (read pytorch_model.bin): a folder without one says so.
    with pytest.raises(FileNotFoundError, match=r"no pytorch_model.bin \(from_pt=True asks for it\)"):
        model_class("model").from_pretrained(path, from_pt=True)
    assert not os.path.exists(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        model_class("model").from_pretrained(tmp_path / "nope")
