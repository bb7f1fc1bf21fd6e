"""Compiled paths: XLA (jit_compile=True) and tf.function equal eager; the SavedModel export serves the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.configs import head_config
from tests.conftest import HEADS
from tests.parity import assert_close
from tests.tf.helpers import model_class, to_numpy, toy_batch
from tests.tolerances import COMPILED_FP32_ATOL

pytestmark = pytest.mark.tensorflow_backend  # tf.function, XLA, tf.data, SavedModel


@pytest.mark.parametrize("head", HEADS)
def test_xla_compiled_model_equals_eager(head):
    model = model_class(head)(head_config(head))
    x, _ = toy_batch(head)
    x = {k: tf.constant(v) for k, v in x.items()}
    eager = to_numpy(model(x, output_hidden_states=True, training=False))
    xla = tf.function(lambda inputs: model(inputs, output_hidden_states=True, training=False), jit_compile=True)
    compiled = to_numpy(xla(x))
    assert sorted(compiled) == sorted(eager)
    for key in eager:
        assert_close(f"{head}/{key} xla", compiled[key], eager[key], COMPILED_FP32_ATOL)


def test_xla_depthwise_impl_traces_shifts_and_adds_instead_of_a_depthwise_convolution():
    """XLA's depthwise convolution is an order of magnitude slower on CPU: "shift" traces the shift-and-accumulate.

    test_xla_compiled_model_equals_eager checks the numbers of that path; this, which ops each choice traces.
    """
    model = model_class("model")(head_config("model"))
    x = {k: tf.constant(v) for k, v in toy_batch("model")[0].items()}
    traced = {}
    for impl in ("conv", "shift"):
        model.set_depthwise_impl(impl)
        fn = tf.function(lambda inputs: model(inputs, training=False))
        traced[impl] = {op.type for op in fn.get_concrete_function(x).graph.get_operations()}
    assert "DepthwiseConv2dNative" in traced["conv"]
    assert "DepthwiseConv2dNative" not in traced["shift"]
    with pytest.raises(ValueError, match="impl must be one of auto, conv, shift"):
        model.set_depthwise_impl("xla")


@pytest.mark.parametrize("jit", [True, False])
def test_compile_with_jit_compile_selects_the_xla_depthwise_impl(jit):
    model = model_class("sequence_classification")(head_config("sequence_classification"))
    model.compile(optimizer="sgd", jit_compile=jit)
    impls = {layer.attention.self.key_conv_attn_layer.depthwise_impl for layer in model.convbert.encoder.layer}
    assert impls == ({"shift"} if jit else {"auto"})


def test_graph_mode_with_attention_maps_equals_eager():
    model = model_class("model")(head_config("model"))
    x, _ = toy_batch("model")
    graph = tf.function(lambda inputs: model(inputs, output_attentions=True))
    for a, b in zip(graph(x)["attentions"], model(x, output_attentions=True)["attentions"], strict=True):
        assert_close("attentions", a, b, COMPILED_FP32_ATOL)


@pytest.mark.parametrize("head", ["sequence_classification", "multiple_choice"])
def test_exported_saved_model_serves_the_same_logits(head, tmp_path):
    model = model_class(head)(head_config(head))
    model.export(tmp_path / "served", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    x, _ = toy_batch(head)
    x["token_type_ids"] = np.zeros_like(x["input_ids"])
    signature = served.signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == ["attention_mask", "input_ids", "token_type_ids"]
    out = signature(**{k: tf.constant(v) for k, v in x.items()})
    assert_close("served logits", out["logits"], model(x)["logits"], COMPILED_FP32_ATOL)
