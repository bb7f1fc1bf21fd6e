"""ONNX export of the PyTorch models (``torch.onnx.export(..., dynamo=True)``), and its int8 variant.

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64) with dynamic
``batch`` and ``sequence`` axes (``batch``, ``num_choices``, ``sequence`` for multiple choice) and
returns the task's outputs under Hugging Face's names (``last_hidden_state``, ``logits``,
``start_logits`` / ``end_logits``), as Optimum exports ConvBERT.

``torch.export`` traces the model with symbolic lengths. The CPU path of the dynamic convolution
(shift-and-accumulate) skips taps that fall outside the sequence, a decision on L that the tracer
can only record as guards (L >= 3 and so on) that the exported graph would not keep; so under
``torch.export`` ``span_dynamic_conv(impl="auto")`` takes the padded formulation (``sdconv.py``),
the same sum without a branch on L. Nothing in the graph builds the (B, L, A, K) im2col tensor.

The exporter implements opset 18 and up; for a lower ``opset`` the opset-18 graph is converted
with ``onnx.version_converter``, after checking that every operator exists at that opset (the
LayerNormalization the model needs appeared in opset 17).

Needs the ``export`` extra (onnx, onnxscript; onnxruntime for ``quantize_int8``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import torch

from convbert_common import heads
from convbert_common.fileio import atomic_path

logger = logging.getLogger(__name__)

EXTRA = "export"
DEFAULT_OPSET = 18
EXPORTER_OPSET = 18  # the lowest opset torch's dynamo exporter writes; lower ones are converted
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# A protobuf file holds at most 2 GiB: larger models keep their weights in an external file.
_PROTOBUF_LIMIT = 2**31 - 2**26


def require(module: str, feature: str):
    """Import ``module`` or raise an ImportError naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs {module.split('.')[0]} (pip install 'convbert[{EXTRA}]'): {exc}") from exc


def output_names(task: heads.Task) -> tuple[str, ...]:
    return task.output_keys


def axis_names(task: heads.Task) -> tuple[str, ...]:
    """The dynamic axes of every input: (batch, sequence), or (batch, num_choices, sequence)."""
    return ("batch", "num_choices", "sequence") if task.input_rank == 3 else ("batch", "sequence")


class _Serving(torch.nn.Module):
    """The model with positional ids / mask / types in and the head's outputs, by HF name, out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.names = output_names(model.task)

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         return_dict=True)
        return tuple(out[name] for name in self.names)


@contextlib.contextmanager
def _inference(model: torch.nn.Module):
    """eval() and no_grad for the duration; the training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def onnx_sdconv(model: torch.nn.Module):
    """The layers whose span convolution is ``"auto"`` trace the ``"banded"`` formulation for the
    duration: in onnxruntime one MatMul per layer runs in about half the time of the K shifted
    products (bench/RESULTS.md). An explicit choice (``set_sdconv_impl``) is kept."""
    layers = [m for m in model.modules() if getattr(m, "sdconv_impl", None) == "auto"]
    for layer in layers:
        layer.sdconv_impl = "banded"
    try:
        yield
    finally:
        for layer in layers:
            layer.sdconv_impl = "auto"


def example_inputs(config, task: heads.Task) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: 2 x (3 choices x) 7 tokens, sizes no config dimension is likely to share."""
    length = min(7, config.max_position_embeddings)
    if length < 2:
        raise ValueError(f"max_position_embeddings={config.max_position_embeddings}: an exported graph needs "
                         "sequences of at least 2 positions to keep the sequence axis dynamic")
    shape = (2, 3, length) if task.input_rank == 3 else (2, length)
    ids = torch.full(shape, min(5, config.vocab_size - 1), dtype=torch.long)
    mask = torch.ones(shape, dtype=torch.long)
    mask[..., -1] = 0  # a padded position, so that the mask is not constant-folded away
    types = torch.zeros(shape, dtype=torch.long)
    return ids, mask, types


def _dynamic_shapes(config, task: heads.Task) -> dict:
    dims = {
        "batch": torch.export.Dim("batch"),
        "num_choices": torch.export.Dim("num_choices"),
        "sequence": torch.export.Dim("sequence", max=config.max_position_embeddings),
    }
    spec = {i: dims[name] for i, name in enumerate(axis_names(task))}
    return {name: spec for name in INPUT_NAMES}


# ------------------------------------------------------------------------------ opsets
def _first_opset(op_type: str, domain: str = "") -> int | None:
    """The opset an operator first appears in (None: not a standard operator)."""
    import onnx

    for version in range(1, onnx.defs.onnx_opset_version() + 1):
        try:
            return onnx.defs.get_schema(op_type, version, domain).since_version
        except onnx.defs.SchemaError:
            continue
    return None


def required_opsets(model_proto) -> dict[str, int]:
    """The first opset of every standard operator in the graph: {op type: opset}."""
    ops = {node.op_type for node in model_proto.graph.node if node.domain in ("", "ai.onnx")}
    for function in model_proto.functions:
        ops.update(node.op_type for node in function.node if node.domain in ("", "ai.onnx"))
    return {op: _first_opset(op) or 1 for op in sorted(ops)}


def check_opset(model_proto, opset: int) -> None:
    """ValueError naming the operators that ``opset`` does not have."""
    needs = {op: v for op, v in required_opsets(model_proto).items() if v > opset}
    if needs:
        listed = ", ".join(f"{op} (opset {v})" for op, v in sorted(needs.items(), key=lambda kv: (-kv[1], kv[0])))
        raise ValueError(f"--opset {opset} is below what the model needs: {listed}; the lowest opset that holds "
                         f"it is {max(needs.values())}")


def _opset_of(model_proto) -> int:
    return next(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx"))


# ------------------------------------------------------------------------------ export
def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                check: bool = True) -> str:
    """Write ``model`` (a ConvBERT of ``convbert_pt``) as an ONNX file at ``path``; returns the path.

    ``opset`` below 18 converts the exporter's opset-18 graph (ValueError naming the operators it
    lacks). ``check`` runs ``onnx.checker`` (with shape inference) on the result. The file appears
    atomically; an existing one is replaced.
    """
    task = getattr(model, "task", None)
    if not isinstance(task, heads.Task):
        raise TypeError(f"export_onnx needs a ConvBERT model of convbert_pt, got {type(model).__name__}")
    if int(opset) != opset or opset < 1:
        raise ValueError(f"--opset must be a positive integer, got {opset!r}")
    onnx = require("onnx", "the ONNX export")
    require("onnxscript", "the ONNX export")
    path = os.fspath(path)
    config = model.config
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = nbytes > _PROTOBUF_LIMIT
    with _inference(model), onnx_sdconv(model), warnings.catch_warnings():
        # The three inputs share their Dim objects, so each axis name is found three times; the
        # exporter warns that it keeps one.
        warnings.filterwarnings("ignore", message="# The axis name: ")
        program = torch.onnx.export(
            _Serving(model).eval(), example_inputs(config, task), dynamo=True, opset_version=max(opset, EXPORTER_OPSET),
            input_names=list(INPUT_NAMES), output_names=list(output_names(task)),
            dynamic_shapes=_dynamic_shapes(config, task), external_data=external, verbose=False,
        )
    proto = program.model_proto
    if opset < EXPORTER_OPSET:
        check_opset(proto, opset)
        from onnx import version_converter

        try:
            proto = version_converter.convert_version(proto, opset)
        except RuntimeError as exc:  # the converter asserts in C++ and names the operator
            raise ValueError(f"--opset {opset}: onnx cannot convert the opset-{EXPORTER_OPSET} graph: {exc}") from exc
    if _opset_of(proto) != opset:
        raise ValueError(f"--opset {opset}: the exporter wrote opset {_opset_of(proto)}")
    drop_initializer_value_info(proto)
    with atomic_path(path) as tmp:
        if external:
            onnx.save_model(proto, tmp, save_as_external_data=True, location=os.path.basename(path) + ".data")
        else:
            onnx.save_model(proto, tmp)
        if check:
            onnx.checker.check_model(tmp, full_check=True)
    logger.info("wrote %s (opset %d, %s)", path, opset, task.class_name)
    return path


def optimize_onnx(src: str | os.PathLike, dst: str | os.PathLike, config, *, check: bool = True) -> str:
    """The exported graph ``src`` rewritten for onnxruntime's CPU kernels, at ``dst``; returns ``dst``.

    onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer``, BERT fusions, after
    onnxruntime's provider-independent basic level: constant folding) fuses the exact, erf GELU with
    its bias Add (``BiasGelu``, ``Gelu``); the tanh approximation is off, so the numbers stay fp32
    PyTorch's. Then ``merge_parallel_matmuls`` and ``layer_norms_over_rows``: the residual Add and
    LayerNormalization stay two operators, as ``SkipLayerNormalization`` is the slower kernel. The
    fused operators are onnxruntime's (the ``com.microsoft`` domain): this graph is for onnxruntime;
    ``onnx.checker`` still passes (it checks no operator of that domain). Weights over 2 GiB go to
    ``dst``'s external data file, as in ``export_onnx``.
    """
    optimizer = require("onnxruntime.transformers.optimizer", "the onnxruntime-optimized model")
    from onnxruntime.transformers.fusion_options import FusionOptions

    onnx = require("onnx", "the onnxruntime-optimized model")
    from convbert_common.shapes import head_shapes

    src, dst = os.fspath(src), os.fspath(dst)
    shapes = head_shapes(config.hidden_size, config.num_attention_heads, config.head_ratio)
    options = FusionOptions("bert")
    options.enable_gelu_approximation = False
    # ConvBERT's self-attention (N' = N / head_ratio heads, its context concatenated with the span
    # convolution's) is not the BERT pattern the Attention fusion rewrites; nothing to match.
    options.enable_attention = False
    # onnxruntime's fp32 SkipLayerNormalization CPU kernel is a scalar loop (a division per element);
    # Add then LayerNormalization runs several times faster (bench/RESULTS.md, export section).
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    external = os.path.getsize(src) > _PROTOBUF_LIMIT or os.path.exists(src + ".data")
    with _quiet_onnxruntime_tools():
        fused = optimizer.optimize_model(src, model_type="bert", num_heads=shapes.num_heads,
                                         hidden_size=shapes.all_head_size, optimization_options=options,
                                         opt_level=1, use_gpu=False)
    merged = merge_parallel_matmuls(fused.model)
    rows = layer_norms_over_rows(fused.model)
    drop_initializer_value_info(fused.model)
    # onnxruntime's saved graph imports every domain it knows (ml, training, nchwc, aten ...): keep
    # the standard one and those the nodes use.
    used = {node.domain for node in fused.model.graph.node} | {""}
    kept = [o for o in fused.model.opset_import if o.domain in used]
    del fused.model.opset_import[:]
    fused.model.opset_import.extend(kept)
    logger.info("onnxruntime fusions %s; %d MatMuls merged into their neighbours; %d LayerNormalizations "
                "over rows", {k: v for k, v in fused.get_fused_operator_statistics().items() if v}, merged, rows)
    with atomic_path(dst) as tmp:
        if external:
            onnx.save_model(fused.model, tmp, save_as_external_data=True, location=os.path.basename(dst) + ".data")
        else:
            onnx.save_model(fused.model, tmp)
        if check:
            onnx.checker.check_model(tmp, full_check=True)
    return dst


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Dynamic int8 quantization of an exported model (``onnxruntime.quantization``): the MatMuls with
    constant weights get int8 weights per output channel and activations quantized at run time;
    onnxruntime runs them as ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat``. Returns ``dst``.

    Give it ``optimize_onnx``'s graph: constant folding there makes the key convolution's pointwise
    weight a constant (the exporter writes it as Squeeze + Transpose of the Conv weight), so that
    MatMul is quantized too, and the merged projections quantize their activation once.
    Full 8-bit weights (``reduce_range`` off): VNNI's int8 dot product cannot saturate; CPUs
    without it (AVX2's 16-bit pair sums) may, a documented accuracy caveat of the int8 model.
    """
    quantization = require("onnxruntime.quantization", "--quantize int8")
    dst = os.fspath(dst)
    with _quiet_onnxruntime_tools(), atomic_path(dst) as tmp:
        quantization.quantize_dynamic(os.fspath(src), tmp, weight_type=quantization.QuantType.QInt8,
                                      per_channel=True, reduce_range=False, op_types_to_quantize=["MatMul"],
                                      extra_options={"MatMulConstBOnly": True})
    return dst


@contextlib.contextmanager
def _quiet_onnxruntime_tools():
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        yield
    finally:
        root.removeFilter(_no_preprocessing_advice)


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    # quantize_dynamic and the transformer optimizer warn on the root logger that a model should be
    # pre-processed (shape inference and graph optimisation): optimize_onnx is that step.
    return not record.getMessage().startswith("Please consider to run pre-processing")


# ------------------------------------------------------------------------------ graph rewrites
def _consumers(graph) -> dict[str, list]:
    uses: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def _set_nodes(graph, nodes: list) -> None:
    """Replace the graph's nodes with ``nodes`` (in that order), some of which are the graph's own."""
    copies = []
    for node in nodes:  # detached copies: clearing the field below would invalidate the originals
        copies.append(type(node)())
        copies[-1].CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def drop_initializer_value_info(model_proto) -> int:
    """Remove, in place, the ``value_info`` entries that describe initializers; returns how many.

    torch's exporter declares each weight's type and shape twice, as its initializer and as a
    ``value_info``. The second copy is redundant, and it goes stale when a later tool rewrites the
    weight: onnxruntime's quantizer (1.22 and 1.24 seen; 1.32 no longer) transposes the classifier's
    Gemm weight in place for a MatMul, and its next shape inference fails on the old shape.
    """
    graph = model_proto.graph
    weights = {tensor.name for tensor in graph.initializer}
    kept = [info for info in graph.value_info if info.name not in weights]
    dropped = len(graph.value_info) - len(kept)
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return dropped


def merge_parallel_matmuls(model_proto) -> int:
    """Rewrite, in place, the MatMuls that multiply one activation by constant (K, N_i) weights into
    one MatMul with the weights side by side, a bias Add where each had one, and a Split back into the
    old output names; returns how many MatMuls were merged away.

    ConvBERT's query, key, value and convolution-value projections all read the same hidden state
    with N = A columns each (half of H with head_ratio 2); onnxruntime's CPU GEMM runs one (K, 4A)
    product faster than four (K, A) ones, and int8 then quantizes the activation once.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    weights = {t.name: t for t in graph.initializer}
    uses = _consumers(graph)
    outputs = {o.name for o in graph.output}

    def weight_of(node):
        tensor = weights.get(node.input[1]) if node.op_type == "MatMul" and node.domain in ("", "ai.onnx") else None
        return tensor if tensor is not None and len(tensor.dims) == 2 else None

    def bias_add_of(node):
        """The Add of a constant (N,) bias that alone reads this MatMul's output, or None."""
        readers = uses.get(node.output[0], [])
        if len(readers) != 1 or node.output[0] in outputs:
            return None
        add = readers[0]
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
            return None
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        bias = weights.get(other)
        return add if bias is not None and list(bias.dims) == [weights[node.input[1]].dims[1]] else None

    groups: dict[tuple, list] = {}
    for node in graph.node:
        tensor = weight_of(node)
        if tensor is not None:
            groups.setdefault((node.input[0], tensor.dims[0], tensor.data_type), []).append(node)
    merged = 0
    replaced: dict[str, list] = {}  # the first MatMul's output -> the nodes that take its place
    gone: set[str] = set()  # outputs of the MatMuls and Adds merged away
    for (activation, _, _), nodes in groups.items():
        nodes = [n for n in nodes if bias_add_of(n) is not None]  # all biased, so one Add serves the group
        if len(nodes) < 2:
            continue
        adds = [bias_add_of(n) for n in nodes]
        mats = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        biases = [numpy_helper.to_array(weights[a.input[1] if a.input[0] == n.output[0] else a.input[0]])
                  for n, a in zip(nodes, adds, strict=True)]
        stem = nodes[0].name or nodes[0].output[0]
        names = {k: f"{stem}_merged_{k}" for k in ("weight", "bias", "sizes", "product", "sum")}
        graph.initializer.extend([
            numpy_helper.from_array(np.concatenate(mats, axis=1), names["weight"]),
            numpy_helper.from_array(np.concatenate(biases), names["bias"]),
            numpy_helper.from_array(np.array([m.shape[1] for m in mats], np.int64), names["sizes"]),
        ])
        replaced[nodes[0].output[0]] = [
            helper.make_node("MatMul", [activation, names["weight"]], [names["product"]], name=f"{stem}_merged"),
            helper.make_node("Add", [names["product"], names["bias"]], [names["sum"]], name=f"{stem}_merged_bias"),
            helper.make_node("Split", [names["sum"], names["sizes"]], [a.output[0] for a in adds], axis=-1,
                             name=f"{stem}_merged_split"),
        ]
        gone.update(n.output[0] for n in nodes + adds)
        merged += len(nodes) - 1
    # The new nodes take the first MatMul's place in the (topological) order: their input is computed
    # before it, and every reader of the old outputs came after the Add that wrote each one.
    order = []
    for node in graph.node:
        order.extend(replaced.get(node.output[0], []))
        if node.output[0] not in gone:
            order.append(node)
    _set_nodes(graph, order)
    used = {name for node in graph.node for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return merged


def layer_norms_over_rows(model_proto) -> int:
    """Rewrite, in place, each LayerNormalization over the last axis as one over the rows of its input
    viewed as a (rows, E) matrix: a Reshape to (-1, E) before it, one back to the input's shape after;
    returns how many were rewritten. The numbers are the same (each row is normalised alone).

    At session creation onnxruntime fuses an Add of two 3-D tensors feeding LayerNormalization into
    its ``SkipLayerNormalization``, whose fp32 CPU kernel is a scalar loop with a division per
    element: several times slower than the Add and LayerNormalization kernels together. The fusion
    matches only a 3-D Add directly before the LayerNormalization, so the 2-D view keeps them apart.
    Reshape shares its input's buffer in onnxruntime: nothing is copied.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    weights = {t.name: t for t in graph.initializer}
    order, rewritten = [], 0
    for node in graph.node:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        scale = weights.get(node.input[1]) if len(node.input) > 1 else None
        if (node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or axis != -1
                or scale is None or len(scale.dims) != 1 or any(node.output[1:])):
            order.append(node)
            continue
        stem = node.name or node.output[0]
        names = {k: f"{stem}_rows_{k}" for k in ("width", "matrix", "normalized", "shape")}
        graph.initializer.append(numpy_helper.from_array(np.array([-1, scale.dims[0]], np.int64), names["width"]))
        rows = type(node)()
        rows.CopyFrom(node)
        rows.input[0] = names["matrix"]
        del rows.output[:]
        rows.output.append(names["normalized"])
        order += [
            helper.make_node("Reshape", [node.input[0], names["width"]], [names["matrix"]], name=f"{stem}_rows_in"),
            rows,
            helper.make_node("Shape", [node.input[0]], [names["shape"]], name=f"{stem}_rows_shape"),
            helper.make_node("Reshape", [names["normalized"], names["shape"]], [node.output[0]],
                             name=f"{stem}_rows_out"),
        ]
        rewritten += 1
    _set_nodes(graph, order)
    return rewritten
