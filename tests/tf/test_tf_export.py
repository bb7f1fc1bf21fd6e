"""SavedModel and LiteRT exports (``convbert_tf.export``): every head's serving_default gives our Keras
outputs at three shapes after a reload, with named int32 inputs of dynamic shape; LiteRT runs in the
plain interpreter; the export refuses what it cannot write."""

from __future__ import annotations

import pytest
import tensorflow as tf

import convbert_tf
from convbert_common import heads
from tests.conftest import HEADS
from tests.export_cases import SHAPES, export_batch, export_every_head
from tests.parity import assert_close
from tests.tf.helpers import head_config, model_class
from tests.tolerances import COMPILED_FP32_ATOL, LITERT_FP32_ATOL

# SavedModel and LiteRT are TensorFlow artefacts: the export refuses other Keras backends.
pytestmark = [pytest.mark.slow, pytest.mark.tensorflow_backend]



def model_of(head: str):
    keras_seed = 1234
    import keras

    keras.utils.set_random_seed(keras_seed)
    return model_class(head)(head_config(head, num_hidden_layers=1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every head exported once and reloaded: {head: (model, loaded SavedModel)}."""
    root = tmp_path_factory.mktemp("saved_model")

    def export(model, head):
        return (tf.saved_model.load(str(convbert_tf.export(model, root / head))),)

    return export_every_head(model_of, export)


@pytest.mark.parametrize("head", HEADS)
def test_reloaded_saved_model_serves_our_keras_outputs_at_three_shapes(saved, head):
    model, loaded = saved[head]
    serve = loaded.signatures["serving_default"]
    for b, length in SHAPES:
        feed = export_batch(model.config, head, b, length, "int32")
        want = model(feed, training=False)
        got = serve(**{k: tf.constant(v) for k, v in feed.items()})
        assert sorted(got) == sorted(heads.get(head).output_keys)
        for name in got:
            assert_close(f"{head} {name} at {b}x{length}", got[name], want[name], COMPILED_FP32_ATOL)


@pytest.mark.parametrize("head", HEADS)
def test_serving_signature_has_named_int32_inputs_of_dynamic_shape(saved, head):
    _, loaded = saved[head]
    _, inputs = loaded.signatures["serving_default"].structured_input_signature
    rank = heads.get(head).input_rank
    assert sorted(inputs) == ["attention_mask", "input_ids", "token_type_ids"]
    for spec in inputs.values():
        assert spec.dtype == tf.int32 and spec.shape.as_list() == [None] * rank


@pytest.fixture(scope="module")
def interpreter():
    litert = pytest.importorskip("ai_edge_litert.interpreter",
                                 reason="the LiteRT check needs the export extra (pip install 'convbert[export]')")
    return litert.Interpreter


# Sequence classification goes through LiteRT in tests/tools (the command); these two add the (B, C, L)
# inputs and the two outputs.
@pytest.mark.parametrize("head", ["multiple_choice", "question_answering"])
def test_litert_runs_in_the_plain_interpreter_with_our_numbers(head, tmp_path, interpreter):
    model = model_of(head)
    path = convbert_tf.export(model, tmp_path / "model.tflite", format="litert")
    runner = interpreter(model_path=str(path)).get_signature_runner("serving_default")
    for b, length in SHAPES:
        feed = export_batch(model.config, head, b, length, "int32")
        want = model(feed, training=False)
        got = runner(**feed)
        assert sorted(got) == sorted(heads.get(head).output_keys)
        for name in got:
            assert_close(f"litert {head} {name} at {b}x{length}", got[name], want[name], LITERT_FP32_ATOL)


def test_export_refuses_what_it_cannot_write(tmp_path):
    model = model_of("sequence_classification")
    with pytest.raises(ValueError, match="unknown format 'onnx'; choose one of saved-model, litert"):
        convbert_tf.export(model, tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match=r"a LiteRT model is a \.tflite file"):
        convbert_tf.export(model, tmp_path / "x", format="litert")
    with pytest.raises(ValueError, match="in-graph tokenizer is a SavedModel feature"):
        convbert_tf.export(model, tmp_path / "x.tflite", format="litert", tokenizer=object())
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        convbert_tf.export(model, tmp_path / "taken")
    with pytest.raises(TypeError, match="needs a ConvBERT model"):
        convbert_tf.export(object(), tmp_path / "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
