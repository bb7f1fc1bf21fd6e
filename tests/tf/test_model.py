"""Model structure: config variants, the weight-table bijection, variable paths, the public names."""

from __future__ import annotations

import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import convbert_tf
from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_common.layouts import get_layout
from convbert_tf import canonical_variables
from convbert_tf.modeling import MODEL_CLASSES, grouped_linear
from tests.configs import head_config, tiny_config
from tests.conftest import HEADS
from tests.parity import assert_close
from tests.tf.helpers import model_class, to_numpy, toy_batch
from tests.tolerances import (
    DISTINCT_ATOL,
    DISTINCT_RTOL,
    NUMPY_FORMULA_FP32_ATOL,
    SAME_COMPUTATION_FP32_ATOL,
    SAME_COMPUTATION_GRAD_RTOL,
)


def _expected_path(model, spec) -> str:
    # List items are named layer_<i> (a Keras name cannot hold "/").
    layer = re.sub(r"/(\d+)(?=/|$)", r"_\1", spec.keras_layer)
    return f"{model.name}/{layer}/{spec.keras_variable}"


@pytest.mark.parametrize("head", HEADS)
def test_every_variable_has_exactly_one_canonical_name_and_its_attribute_path(head):
    model = model_class(head)(head_config(head))
    variables = canonical_variables(model)
    specs = wm.model_specs(model.config, head)
    assert list(variables) == [s.name for s in specs]
    assert len({id(v) for v in variables.values()}) == len(model.weights) == len(specs)
    for spec in specs:
        var = variables[spec.name]
        assert var.path == _expected_path(model, spec)
        assert tuple(var.shape) == get_layout(spec.keras_layout).target_shape(spec.shape)
        assert var.dtype == "float32"


def test_canonical_variables_refuses_a_table_that_does_not_fit():
    model = model_class("sequence_classification")(tiny_config())
    with pytest.raises(RuntimeError, match="generator_predictions"):
        canonical_variables(model, "masked_lm")
    with pytest.raises(RuntimeError, match="no canonical name"):
        canonical_variables(model, "model")


def test_masked_lm_output_layer_is_the_word_embedding_matrix():
    model = model_class("masked_lm")(tiny_config())
    x, _ = toy_batch("masked_lm")
    hidden = model.generator_predictions(model.convbert(x)["last_hidden_state"])
    table = to_numpy(model.convbert.embeddings.word_embeddings.embeddings)
    expected = np.einsum("ble,ve->blv", to_numpy(hidden), table) + to_numpy(model.generator_lm_head.bias)
    assert_close("logits", model(x)["logits"], expected, NUMPY_FORMULA_FP32_ATOL)
    assert "generator_lm_head.weight" not in canonical_variables(model)


@pytest.mark.parametrize("head_ratio", [1, 2, 3, 4])
def test_head_ratio_follows_the_shared_head_arithmetic(head_ratio):
    config = tiny_config(hidden_size=48, num_attention_heads=6, head_ratio=head_ratio)
    heads = config.heads
    model = model_class("sequence_classification")(config)
    x, _ = toy_batch("sequence_classification")
    out = model(x, output_attentions=True, output_hidden_states=True)
    assert tuple(out["attentions"][0].shape) == (8, heads.num_heads, 8, 8)
    assert tuple(out["hidden_states"][-1].shape) == (8, 8, 48)
    attn = model.convbert.encoder.layer[0].attention
    assert tuple(attn.self.query.kernel.shape) == (48, heads.all_head_size)
    assert tuple(attn.self.conv_kernel_layer.kernel.shape) == (heads.all_head_size, heads.num_heads * 5)
    assert tuple(attn.attention_output.dense.kernel.shape) == (heads.mixed_size, 48)
    assert np.all(np.isfinite(to_numpy(out["logits"])))


def test_a_one_token_input_and_a_one_tap_kernel_run_without_a_softmax_warning():
    # Keras warns for a softmax over a size-1 axis; both are meant here, and their softmax is 1.
    import warnings

    from convbert_tf.activations import softmax_last

    x = {"input_ids": np.array([[5], [7]], "int32"), "attention_mask": np.array([[1], [0]], "int32")}
    for config in (tiny_config(), tiny_config(conv_kernel_size=1)):
        model = model_class("sequence_classification")(config)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            out = model(x, output_attentions=True)
            # One tap: the convolution's weights are all 1 for any logits.
            taps = softmax_last(keras.ops.convert_to_tensor(np.array([[-3.0], [40.0], [np.nan]], "float32")))
        for attention in out["attentions"]:
            np.testing.assert_array_equal(to_numpy(attention), 1.0)  # the one key gets all the weight
        assert np.all(np.isfinite(to_numpy(out["logits"])))
    np.testing.assert_array_equal(to_numpy(taps), [[1.0], [1.0], [np.nan]])  # NaN stays NaN, as in a softmax


def test_grouped_feed_forward_splits_channels_into_independent_groups():
    config = tiny_config(num_groups=4, intermediate_size=40)
    model = model_class("model")(config)
    dense = model.encoder.layer[0].intermediate.dense
    assert type(dense).__name__ == "GroupedLinearLayer" and tuple(dense.kernel.shape) == (4, 8, 10)
    x = np.random.default_rng(0).standard_normal((2, 3, 32)).astype("float32")
    kernel, bias = to_numpy(dense.kernel), to_numpy(dense.bias)
    expected = np.concatenate([x[..., 8 * g : 8 * (g + 1)] @ kernel[g] for g in range(4)], axis=-1) + bias
    assert_close("grouped", grouped_linear(x, kernel, bias), expected, NUMPY_FORMULA_FP32_ATOL)
    out = model(toy_batch("model")[0], output_hidden_states=True)
    assert np.all(np.isfinite(to_numpy(out)["hidden_states"]))


def test_embedding_size_equal_to_hidden_size_has_no_projection():
    model = model_class("model")(tiny_config(embedding_size=32))
    assert model.embeddings_project is None
    assert not any(n.startswith("embeddings_project") for n in canonical_variables(model))
    out = model(toy_batch("model")[0], output_hidden_states=True)
    assert len(out["hidden_states"]) == 3


def test_activations_of_the_config_are_applied():
    x, _ = toy_batch("model")
    outs = {}
    for act in ("gelu", "gelu_new", "relu", "silu", "tanh"):
        keras.utils.set_random_seed(0)
        outs[act] = to_numpy(model_class("model")(tiny_config(hidden_act=act))(x)["last_hidden_state"])
    assert not np.allclose(outs["gelu"], outs["relu"], rtol=DISTINCT_RTOL, atol=DISTINCT_ATOL)
    assert not np.allclose(outs["gelu"], outs["gelu_new"], rtol=DISTINCT_RTOL, atol=DISTINCT_ATOL)


def test_hf_tf_class_names_are_aliases():
    for head, cls in MODEL_CLASSES.items():
        assert getattr(convbert_tf, "TF" + cls.__name__) is cls
        assert cls.task.name == head
        assert heads.get(head).class_name == cls.__name__


def test_question_answering_needs_two_labels_and_mlm_a_tied_head():
    with pytest.raises(ValueError, match="needs num_labels=2"):
        model_class("question_answering")(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match="untied output embeddings"):
        model_class("masked_lm")(tiny_config(tie_word_embeddings=False))


def test_importing_convbert_tf_does_not_import_torch():
    if keras.backend.backend() == "torch":
        pytest.skip("Keras on the torch backend imports torch itself")
    code = "import sys, convbert_tf; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


@pytest.mark.tensorflow_backend
def test_pad_row_gets_no_gradient_from_the_lookup_as_in_pytorch():
    import tensorflow as tf

    model = model_class("model")(tiny_config())
    ids = tf.constant([[5, 7, 0, 0], [3, 0, 9, 2]])
    table = model.embeddings.word_embeddings.embeddings
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(ids)["last_hidden_state"] ** 2)
    grad = to_numpy(tf.convert_to_tensor(tape.gradient(loss, table.value)))
    assert np.all(grad[0] == 0.0)  # [PAD] is id 0 here
    assert np.all(grad[[2, 3, 5, 7, 9]].any(axis=-1))


# ------------------------------------------------------------------ the pooled position alone

POOLING_HEADS = sorted(h for h in HEADS if heads.get(h).pooled_position is not None)


def _pooling_inputs(head: str, length: int) -> dict:
    shape = (2, 3, length) if heads.get(head).input_rank == 3 else (3, length)
    rng = np.random.default_rng(length)
    mask = np.ones(shape, "int32")
    mask[1:, ..., length - 2:] = 0  # some padding
    return {"input_ids": rng.integers(1, 99, shape).astype("int32"), "attention_mask": mask}


@pytest.mark.parametrize("head", POOLING_HEADS)
@pytest.mark.parametrize("length", [1, 2, 3, 4, 11])  # K = 5: the edge window is 3 positions
def test_a_pooling_heads_last_layer_computes_its_position_alone_with_the_full_layers_numbers(head, length):
    """As in PyTorch: the backbone of sequence classification (position 0) and multiple choice (the
    last one) computes one position in its last layer, and the logits are the full layer's."""
    model = model_class(head)(head_config(head, num_labels=2))
    inputs = _pooling_inputs(head, length)
    last = model.convbert.encoder.layer[-1]
    positions, call = [], last.call

    def spy(*args, **kwargs):
        positions.append(kwargs.get("position"))
        return call(*args, **kwargs)

    last.call = spy
    pruned = model(inputs)["logits"]
    reference = model(inputs, output_hidden_states=True)["logits"]
    del last.call
    assert positions == [heads.get(head).pooled_position, None]
    assert_close(f"{head} logits at L={length}", to_numpy(pruned), to_numpy(reference), SAME_COMPUTATION_FP32_ATOL)
    flat = {k: v.reshape(-1, length) for k, v in inputs.items()}
    position = heads.get(head).pooled_position
    one = model.convbert(flat, output_position=position)["last_hidden_state"]
    full = model.convbert(flat)["last_hidden_state"]
    assert tuple(one.shape) == (flat["input_ids"].shape[0], 1, model.config.hidden_size)
    assert_close(f"{head} position {position}", to_numpy(one)[:, 0], to_numpy(full)[:, position],
                 SAME_COMPUTATION_FP32_ATOL)


@pytest.mark.tensorflow_backend
@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_pooling_heads_gradients_are_the_full_layers(jit_compile):
    import tensorflow as tf

    model = model_class("sequence_classification")(tiny_config(num_labels=2))
    inputs = _pooling_inputs("sequence_classification", 7)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def gradients(full):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(inputs, output_hidden_states=full, training=True)["logits"] ** 2)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    pruned, reference = gradients(False), gradients(True)
    bound = SAME_COMPUTATION_GRAD_RTOL * max(float(np.abs(to_numpy(g)).max()) for g in reference)
    for var, got, want in zip(model.trainable_variables, pruned, reference, strict=True):
        assert_close(f"gradient of {var.path}", to_numpy(got), to_numpy(want), bound)


def test_the_bare_model_refuses_another_position():
    model = model_class("model")(tiny_config())
    with pytest.raises(ValueError, match="position must be 0 .first., -1 .last. or None, got 3"):
        model(_pooling_inputs("model", 5), output_position=3)
