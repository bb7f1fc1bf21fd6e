"""Compiled paths: XLA (jit_compile=True) and tf.function equal eager; the SavedModel export serves the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from convbert_tf import backend
from tests.configs import head_config
from tests.conftest import HEADS
from tests.parity import assert_close
from tests.tf.helpers import model_class, tensorflow_runs_onednn, to_numpy, toy_batch
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


def test_auto_keeps_tensorflow_2_16_off_its_depthwise_kernel(monkeypatch):
    """TensorFlow 2.16's oneDNN depthwise kernel dies of SIGFPE at some kernel sizes (K = 15 at L = 7):
    there "auto" traces the shift-and-accumulate; on later releases TensorFlow's own kernel."""
    assert not backend.depthwise_kernel_is_safe("2.16.2")
    assert not backend.depthwise_kernel_is_safe("2.16.0rc0")
    assert backend.depthwise_kernel_is_safe("2.17.0")
    assert backend.depthwise_kernel_is_safe("2.21.0")
    model = model_class("model")(head_config("model"))
    x = {k: tf.constant(v) for k, v in toy_batch("model")[0].items()}

    def traced_ops():
        fn = tf.function(lambda inputs: model(inputs, training=False))
        return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}

    monkeypatch.setattr(tf, "__version__", "2.17.1")
    assert "DepthwiseConv2dNative" in traced_ops()
    monkeypatch.setattr(tf, "__version__", "2.16.2")
    assert "DepthwiseConv2dNative" not in traced_ops()


@pytest.mark.parametrize("jit", [True, False])
def test_compile_with_jit_compile_selects_the_xla_depthwise_impl(jit):
    model = model_class("sequence_classification")(head_config("sequence_classification"))
    model.compile(optimizer="sgd", jit_compile=jit)
    impls = {layer.attention.self.key_conv_attn_layer.depthwise_impl for layer in model.convbert.encoder.layer}
    assert impls == ({"shift"} if jit else {"auto"})


def test_compile_by_default_runs_a_cpu_without_xla():
    # The documented rule (README "Performance", TaskModel.compile): jit_compile="auto" takes XLA only
    # where a GPU is visible; on a CPU the step runs TensorFlow's oneDNN kernels and its depthwise kernel.
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: Keras' auto rule takes XLA there")
    model = model_class("sequence_classification")(head_config("sequence_classification"))
    model.compile(optimizer="sgd")
    impls = {layer.attention.self.key_conv_attn_layer.depthwise_impl for layer in model.convbert.encoder.layer}
    assert (model.jit_compile, impls) == (False, {"auto"})


# The TensorFlow kernels that oneDNN replaces on x86 (its _Mkl* twins): none of them may run plain.
_PLAIN_KERNELS = {"MatMul", "BatchMatMulV2", "Einsum", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
                  "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
                  "DepthwiseConv2dNativeBackpropFilter", "Softmax", "Transpose"}


def test_fit_step_runs_its_dense_and_conv_work_on_onednn(tmp_path):
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64") or not tensorflow_runs_onednn():
        pytest.skip("TensorFlow runs its Eigen kernels on this CPU: it turns oneDNN on by default only on x86 "
                    "CPUs with AVX512-VNNI, AVX512-BF16 or AMX (TF_ENABLE_ONEDNN_OPTS=1 forces it)")
    xplane_pb2 = pytest.importorskip("tensorflow.tsl.profiler.protobuf.xplane_pb2")
    model = model_class("sequence_classification")(head_config("sequence_classification"))
    x, y = toy_batch("sequence_classification")
    model.compile(optimizer="adam")
    model.train_on_batch(x, y)  # trace outside the profile
    tf.profiler.experimental.start(str(tmp_path))
    model.train_on_batch(x, y)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(tmp_path.rglob("*.xplane.pb")).read_bytes())
    ran = {plane.event_metadata[event.metadata_id].name.rsplit(":", 1)[-1].strip()
           for plane in space.planes if plane.name == "/host:CPU" for line in plane.lines for event in line.events}
    expected = {"_MklMatMul", "_MklBatchMatMulV2"}
    if backend.depthwise_kernel_is_safe():  # TensorFlow 2.16: shifts, and the pointwise part as a matmul
        expected |= {"_MklNativeDepthwiseConv2dNative", "_MklNativeConv2D"}
    assert expected <= ran, sorted(ran)
    assert ran.isdisjoint(_PLAIN_KERNELS), sorted(ran & _PLAIN_KERNELS)


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
