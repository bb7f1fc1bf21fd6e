"""ONNX export (``convbert_pt.export_onnx``): every head runs in onnxruntime with PyTorch's numbers at
shapes never traced, under HF's input and output names with dynamic axes; the dynamic convolution
exports without the im2col gather; torch.export traces every length; opsets below 18. The graph
optimized for onnxruntime (``optimize_onnx``) keeps those numbers and names, and its int8 model runs
on onnxruntime's quantized MatMul kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the ONNX export needs the export extra (pip install 'convbert[export]')")
ort = pytest.importorskip("onnxruntime", reason="the ONNX checks need the export extra")
pytest.importorskip("onnxscript", reason="the ONNX export needs the export extra")

import convbert_pt  # noqa: E402
from convbert_common import heads  # noqa: E402
from convbert_pt.export import (  # noqa: E402
    _Serving,
    check_opset,
    drop_initializer_value_info,
    example_inputs,
    export_onnx,
    layer_norms_over_rows,
    optimize_onnx,
    quantize_int8,
    required_opsets,
)
from convbert_pt.sdconv import span_dynamic_conv, span_dynamic_conv_banded  # noqa: E402
from tests.configs import head_config  # noqa: E402
from tests.conftest import HEADS  # noqa: E402
from tests.export_cases import SHAPES, export_batch, export_every_head  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.tolerances import ONNX_FP32_ATOL, SDCONV_NATIVE_FP32_ATOL  # noqa: E402

pytestmark = pytest.mark.slow

# The IR version torch's exporter writes; onnx's newest is newer than older onnxruntimes can read.
IR_VERSION = 10


def model_of(head: str) -> torch.nn.Module:
    torch.manual_seed(1234)
    # One layer: the graph is the same per layer, and the export's time grows with the layer count.
    return getattr(convbert_pt, heads.get(head).class_name)(head_config(head, num_hidden_layers=1)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every head exported once: {head: (model, onnxruntime session, model proto)}."""
    root = tmp_path_factory.mktemp("onnx")

    def export(model, head):
        path = export_onnx(model, root / f"{head}.onnx")
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), onnx.load(str(path))

    return export_every_head(model_of, export)


@pytest.mark.parametrize("head", HEADS)
def test_onnxruntime_matches_pytorch_at_shapes_never_traced(exported, head):
    model, session, _ = exported[head]
    assert_matches_pytorch(head, model, session, head)


def assert_matches_pytorch(label: str, model, session, head: str) -> None:
    """The session's outputs against the eager model's at SHAPES, within ONNX_FP32_ATOL."""
    for b, length in SHAPES:
        feed = export_batch(model.config, head, b, length, "int64")
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
        for name in heads.get(head).output_keys:
            assert_close(f"{label} {name} at {b}x{length}", got[name], want[name], ONNX_FP32_ATOL)


@pytest.mark.parametrize("head", HEADS)
def test_graph_has_hf_names_int64_inputs_and_dynamic_axes(exported, head):
    _, session, proto = exported[head]
    task = heads.get(head)
    axes = ["batch", "num_choices", "sequence"] if task.input_rank == 3 else ["batch", "sequence"]
    inputs = {i.name: i for i in session.get_inputs()}
    assert sorted(inputs) == ["attention_mask", "input_ids", "token_type_ids"]
    for i in inputs.values():
        assert i.type == "tensor(int64)" and i.shape == axes, (i.name, i.type, i.shape)
    assert [o.name for o in session.get_outputs()] == list(task.output_keys)
    assert session.get_outputs()[0].shape[0] == "batch"
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 18


def _im2col_gathers(proto) -> list[str]:
    """Gather nodes that index an activation (not a weight) with indices computed at run time: the
    unfold (im2col) of the reference dynamic convolution; an embedding lookup gathers from a weight,
    the [CLS] pooling with a constant index."""
    graph = proto.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] not in constants
            and n.input[1] not in constants]


def test_dynamic_convolution_exports_without_the_im2col_gather(exported, tmp_path):
    for head in HEADS:
        assert not _im2col_gathers(exported[head][2]), head
    # The check sees the unfold where it is: the reference formulation exports one per layer at least.
    model = model_of("model")
    model.set_sdconv_impl("reference")
    reference = onnx.load(export_onnx(model, tmp_path / "reference.onnx"))
    assert len(_im2col_gathers(reference)) >= model.config.num_hidden_layers


@pytest.mark.parametrize("formulation", ["padded", "banded"])
@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 17, 32, 33, 70])
@pytest.mark.parametrize("kernel", [3, 5, 9])
def test_export_formulations_of_the_dynamic_convolution_equal_the_default_path(formulation, length, kernel):
    """The export's formulations against the CPU default and the unfold reference, forward and grads;
    the lengths cross the banded formulation's blocks of 32."""
    g = torch.Generator().manual_seed(length * 31 + kernel)
    values = torch.randn(2, length, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(2, length, 3, kernel, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, length, 3, 4, generator=g, dtype=torch.float64)
    results = {}
    for impl in (formulation, "native", "reference"):
        out = span_dynamic_conv(values, logits, impl=impl)
        results[impl] = (out, *torch.autograd.grad(out, (values, logits), grad))
    for impl in ("native", "reference"):
        for name, a, b in zip(("out", "d values", "d logits"), results[formulation], results[impl], strict=True):
            assert_close(f"{formulation} vs {impl} {name} L={length} K={kernel}", a, b, SDCONV_NATIVE_FP32_ATOL)


def test_banded_convolution_takes_kernels_wider_than_its_block():
    g = torch.Generator().manual_seed(0)
    values, logits = torch.randn(1, 20, 2, 3, generator=g), torch.randn(1, 20, 2, 11, generator=g)
    assert_close("banded (block 4, K 11) vs reference", span_dynamic_conv_banded(values, logits, block=4),
                 span_dynamic_conv(values, logits, impl="reference"), SDCONV_NATIVE_FP32_ATOL)


def test_onnx_export_traces_the_banded_convolution_for_every_length(tmp_path):
    """export_onnx traces the "auto" layers' convolution as the banded products (one MatMul per layer
    more than the padded form, K products fewer), gives PyTorch's numbers at lengths over several
    blocks of 32 and below K, and leaves the layers on "auto"; an explicit choice is kept."""
    torch.manual_seed(1234)
    model = convbert_pt.ConvBertModel(head_config("model", num_hidden_layers=1, max_position_embeddings=96)).eval()
    banded = onnx.load(export_onnx(model, tmp_path / "banded.onnx"))
    assert {m.sdconv_impl for m in model.modules() if hasattr(m, "sdconv_impl")} == {"auto"}
    model.set_sdconv_impl("padded")
    padded = onnx.load(export_onnx(model, tmp_path / "padded.onnx"))
    model.set_sdconv_impl("auto")
    K = model.config.conv_kernel_size
    assert _op_types(banded).count("MatMul") == _op_types(padded).count("MatMul") + 1
    assert _op_types(padded).count("Mul") - _op_types(banded).count("Mul") >= K - 1
    session = ort.InferenceSession(str(tmp_path / "banded.onnx"), providers=["CPUExecutionProvider"])
    for b, length in ((1, 1), (1, K - 2), (2, 33), (1, 70), (2, 96)):
        feed = export_batch(model.config, "model", b, length, "int64")
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feed.items()})["last_hidden_state"]
        assert_close(f"banded export at {b}x{length}", session.run(["last_hidden_state"], feed)[0], want,
                     ONNX_FP32_ATOL)


@pytest.mark.parametrize("head", ["token_classification", "sequence_classification", "multiple_choice"])
def test_torch_export_traces_every_length_without_guards(head):
    """Under torch.export, impl="auto" takes the padded path: no guard on L, so L = 1 stays in range,
    and the last layer of a pooling head, which computes one position from a fixed window, adds none;
    the shift-and-accumulate path, asked for explicitly, guards on L (why the export needs the other)."""
    model = model_of(head)
    config = model.config
    ids, _, _ = example_inputs(config, heads.get(head))
    axis = ids.dim() - 1
    sequence = torch.export.Dim("sequence", min=1, max=config.max_position_embeddings)
    shapes = {name: {axis: sequence} for name in ("input_ids", "attention_mask", "token_type_ids")}
    serving = _Serving(model).eval()
    with torch.no_grad():
        program = torch.export.export(serving, (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                                      dynamic_shapes=shapes, strict=False)
        ranges = [r for r in program.range_constraints.values() if r.upper == config.max_position_embeddings]
        assert ranges and ranges[0].lower <= 1
        if heads.get(head).pooled_position is not None:
            return  # its one layer computes a fixed window: nothing there depends on L
        model.set_sdconv_impl("native")
        with pytest.raises(Exception, match="sequence"):
            torch.export.export(serving, (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                                dynamic_shapes=shapes, strict=False)


def test_opset_17_is_converted_and_gives_the_same_numbers(exported, tmp_path):
    model, session18, _ = exported["token_classification"]
    path = export_onnx(model, tmp_path / "opset17.onnx", opset=17)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = export_batch(model.config, "token_classification", 2, 9, "int64")
    assert_close("opset 17 vs 18 logits", session.run(None, feed)[0], session18.run(None, feed)[0], ONNX_FP32_ATOL)


def test_opset_below_what_the_model_needs_names_the_operator(exported):
    proto = exported["model"][2]
    assert required_opsets(proto)["LayerNormalization"] == 17
    with pytest.raises(ValueError, match=r"--opset 16 is below what the model needs: LayerNormalization \(opset 17\)"):
        check_opset(proto, 16)
    check_opset(proto, 17)


# ------------------------------------------------------------------------------ optimized for onnxruntime
def _op_types(proto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


@pytest.fixture(scope="module")
def optimized(exported, tmp_path_factory):
    """Every head's export through optimize_onnx: {head: (path, onnxruntime session, model proto)}."""
    root = tmp_path_factory.mktemp("onnx_optimized")
    out = {}
    for head in HEADS:
        model, _, proto = exported[head]
        onnx.save(proto, root / f"{head}.onnx")
        path = optimize_onnx(root / f"{head}.onnx", root / f"{head}_optimized.onnx", model.config)
        out[head] = (path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), onnx.load(str(path)))
    return out


@pytest.mark.parametrize("head", HEADS)
def test_optimized_graph_keeps_pytorchs_numbers_and_the_names(exported, optimized, head):
    model, standard, _ = exported[head]
    _, session, proto = optimized[head]
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        (i.name, i.type, i.shape) for i in standard.get_inputs()]
    assert [o.name for o in session.get_outputs()] == list(heads.get(head).output_keys)
    onnx.checker.check_model(proto, full_check=True)
    assert_matches_pytorch(f"optimized {head}", model, session, head)


def test_optimized_graph_fuses_the_exact_gelu_and_merges_the_projections(exported, optimized):
    model, _, standard = exported["token_classification"]
    fused = optimized["token_classification"][2]
    layers = model.config.num_hidden_layers
    ops = _op_types(fused)
    # Query, key, value and the convolution's value read the same hidden state: one MatMul per layer.
    assert _op_types(standard).count("MatMul") - ops.count("MatMul") == 3 * layers
    # A pooling head's last layer reads its query and convolution value from the edge window, its key
    # and value from the whole sequence: two MatMuls of two.
    pooled_standard, pooled = exported["sequence_classification"][2], optimized["sequence_classification"][2]
    assert _op_types(pooled_standard).count("MatMul") - _op_types(pooled).count("MatMul") == 3 * (layers - 1) + 2
    assert ops.count("Split") - _op_types(standard).count("Split") == layers
    assert ops.count("BiasGelu") == layers and "Erf" not in ops
    assert "FastGelu" not in ops and "Tanh" not in ops  # the exact GELU, not the approximation
    assert {n.domain for n in fused.graph.node if n.op_type == "BiasGelu"} == {"com.microsoft"}
    assert sorted(o.domain for o in fused.opset_import) == ["", "com.microsoft"]


def test_optimized_graph_keeps_add_and_layer_norm_apart_in_the_session(optimized, tmp_path):
    """The embeddings', attention's and feed-forward's LayerNormalizations stay the standard kernel at
    onnxruntime's default level, which would fuse a 3-D Add before one into SkipLayerNormalization."""
    path, _, fused = optimized["sequence_classification"]
    layers = sum(1 for n in fused.graph.node if n.op_type == "BiasGelu")
    assert "SkipLayerNormalization" not in _op_types(fused)
    assert _op_types(fused).count("LayerNormalization") == 2 * layers + 1
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ran = _op_types(onnx.load(str(tmp_path / "as_run.onnx")))
    assert "SkipLayerNormalization" not in ran and ran.count("LayerNormalization") == 2 * layers + 1


def test_layer_norms_over_rows_keeps_the_numbers_at_every_rank():
    rng = np.random.default_rng(0)
    scale, bias = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    for shape in ((5,), (3, 5), (2, 3, 5), (2, 1, 3, 5)):
        x = rng.standard_normal(shape).astype(np.float32)
        axes = [f"d{i}" for i in range(len(shape))]  # every axis symbolic, each its own
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1, epsilon=1e-12)],
            "ln", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, axes)],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, axes)],
            [onnx.numpy_helper.from_array(scale, "scale"), onnx.numpy_helper.from_array(bias, "bias")])
        proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)],
                                       ir_version=IR_VERSION)
        before = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert layer_norms_over_rows(proto) == 1
        onnx.checker.check_model(proto, full_check=True)
        after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert after[0].shape == shape
        np.testing.assert_array_equal(after[0], before[0])


@pytest.mark.parametrize("graph", ["standard", "optimized"])
def test_each_weight_is_declared_once(exported, optimized, graph):
    # A value_info beside an initializer goes stale when a tool rewrites the weight (onnxruntime
    # 1.24's quantizer transposes the classifier's Gemm weight, then its shape inference fails).
    for head in HEADS:
        proto = exported[head][2] if graph == "standard" else optimized[head][2]
        weights = {t.name for t in proto.graph.initializer}
        assert weights, head
        assert not [v.name for v in proto.graph.value_info if v.name in weights], head


def test_a_weight_rewritten_in_place_keeps_the_graph_inferable():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
        [onnx.numpy_helper.from_array(w, "w")],
        value_info=[onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [2, 3])])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)],
                                   ir_version=IR_VERSION)

    def transpose_weight_as_a_quantizer_would(p):
        # (3, 2) weight, multiplied transposed: a Gemm's layout
        p.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
        node = onnx.helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
        del p.graph.node[:]
        p.graph.node.append(node)

    stale = onnx.ModelProto()
    stale.CopyFrom(proto)
    transpose_weight_as_a_quantizer_would(stale)
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.shape_inference.infer_shapes(stale, strict_mode=True)
    assert drop_initializer_value_info(proto) == 1
    assert drop_initializer_value_info(proto) == 0
    transpose_weight_as_a_quantizer_would(proto)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim][1] == 3


def test_int8_of_the_optimized_graph_runs_on_quantized_matmul_kernels(optimized, tmp_path):
    path, _, fused = optimized["sequence_classification"]
    weights = {t.name for t in fused.graph.initializer}
    constant_weight = sum(1 for n in fused.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights)
    quantized = quantize_int8(path, tmp_path / "int8.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "int8_as_run.onnx")
    ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
    ran = onnx.load(str(tmp_path / "int8_as_run.onnx"))
    kernels = _op_types(ran)
    # Every product by a weight (the key convolution's pointwise one too, folded to a constant; the
    # classifier's Gemms) runs in int8; the fp32 MatMuls left multiply two activations.
    assert kernels.count("DynamicQuantizeMatMul") + kernels.count("MatMulIntegerToFloat") == constant_weight
    ran_weights = {t.name for t in ran.graph.initializer}
    assert not [n.name for n in ran.graph.node if n.op_type in ("MatMul", "FusedMatMul", "Gemm")
                and n.input[1] in ran_weights]
