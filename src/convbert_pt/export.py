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
    with _inference(model), warnings.catch_warnings():
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
    with atomic_path(path) as tmp:
        if external:
            onnx.save_model(proto, tmp, save_as_external_data=True, location=os.path.basename(path) + ".data")
        else:
            onnx.save_model(proto, tmp)
        if check:
            onnx.checker.check_model(tmp, full_check=True)
    logger.info("wrote %s (opset %d, %s)", path, opset, task.class_name)
    return path


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Dynamic int8 quantization of an exported model (``onnxruntime.quantization``): weights int8 per
    output channel, activations quantized at run time. Returns ``dst``."""
    quantization = require("onnxruntime.quantization", "--quantize int8")
    dst = os.fspath(dst)
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        with atomic_path(dst) as tmp:
            quantization.quantize_dynamic(os.fspath(src), tmp, weight_type=quantization.QuantType.QInt8,
                                          per_channel=True)
    finally:
        root.removeFilter(_no_preprocessing_advice)
    return dst


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    # quantize_dynamic warns on the root logger that a model should be pre-processed (shape inference
    # and graph optimisation): on these graphs that step costs seconds and changes no operator.
    return not record.getMessage().startswith("Please consider to run pre-processing")
