"""Serving artifacts from a checkpoint: ONNX (from PyTorch), TF SavedModel and LiteRT (from Keras).

``export(src, out, format=...)`` reads any checkpoint ``convert`` reads (every tensor checked
against the weight table), builds the model in the framework the format comes from, and writes
into a temporary directory that replaces ``out`` only when everything succeeded. Every refusal
that does not need the model (the flags, the optional packages, the tokenizer files, an existing
``out``) comes before the checkpoint is read. Layouts, as Optimum lays out a model:

- ``onnx``: ``model.onnx`` (+ ``model_quantized.onnx`` with ``--quantize int8``), ``config.json``
  and the tokenizer files. ``model.onnx`` is the graph optimized for onnxruntime
  (``convbert_pt.export.optimize_onnx``: fused ``com.microsoft`` operators, merged projections);
  ``optimize=False`` (``--no-optimize``) writes the exporter's standard-operator graph instead, for
  other ONNX runtimes. The int8 model is always quantized from the optimized graph;
- ``saved-model``: ``out`` is the SavedModel (``saved_model.pb``, ``variables/``), with
  ``config.json`` and the tokenizer files beside them;
- ``litert``: ``model.tflite``, ``config.json`` and the tokenizer files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from convbert_common import heads
from convbert_common.fileio import atomic_directory
from convbert_common.formats import TOKENIZER_FILES, Loaded, cast, copy_tokenizer
from convbert_tools import convert as conv

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "saved-model", "litert")
QUANTIZATIONS = ("int8",)
DEFAULT_OPSET = 18
ONNX_FILE = "model.onnx"
ONNX_QUANTIZED_FILE = "model_quantized.onnx"
# Intermediate graphs of the ONNX export, removed before the output directory appears.
_STANDARD_FILE = "model_standard.onnx"
_OPTIMIZED_FILE = "model_optimized.onnx"
LITERT_FILE = "model.tflite"

# What each feature imports: (module, pip extra). Checked before anything is read or written.
_NEEDS = {
    "onnx": (("torch", "torch"), ("onnx", "export"), ("onnxscript", "export")),
    "saved-model": (("tensorflow", "tf"),),
    "litert": (("tensorflow", "tf"), ("ai_edge_litert", "export")),
    "tokenizer": (("tensorflow_text", "export"),),
    "int8": (("onnxruntime", "export"),),
    "optimize": (("onnxruntime", "export"),),
}
_FEATURE = {"onnx": "--format onnx", "saved-model": "--format saved-model", "litert": "--format litert",
            "tokenizer": "--with-tokenizer", "int8": "--quantize int8",
            "optimize": "--format onnx without --no-optimize"}


@dataclass
class Exported:
    out: str
    format: str
    task: heads.Task
    files: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # export step -> wall time


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module set to None
        return False


def check_packages(features: list[str]) -> None:
    """ImportError naming the pip extra of the first optional package a feature lacks."""
    for feature in features:
        for module, extra in _NEEDS[feature]:
            if not _importable(module):
                raise ImportError(f"{_FEATURE[feature]} needs {module.replace('_', '-')} "
                                  f"(pip install 'convbert[{extra}]')")


def check_request(format: str, *, opset: int | None, with_tokenizer: bool, quantize: str | None,
                  optimize: bool = True) -> None:
    """ValueError for a flag the format cannot honour (before anything is read)."""
    if format not in FORMATS:
        raise ValueError(f"unknown --format {format!r}; choose one of {', '.join(FORMATS)}")
    if not optimize and format != "onnx":
        raise ValueError(f"--no-optimize applies to --format onnx (onnxruntime's fused graph), not --format {format}")
    if with_tokenizer and format != "saved-model":
        raise ValueError(f"--with-tokenizer adds string signatures to a TF SavedModel (tensorflow-text ops); "
                         f"--format {format} cannot hold them: use --format saved-model, or tokenize on the client")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
        if format != "onnx":
            raise ValueError(f"--quantize {quantize} is onnxruntime's dynamic quantization of an ONNX model; "
                             f"--format {format} cannot hold it: use --format onnx")
    if opset is not None:
        if format != "onnx":
            raise ValueError(f"--opset applies to --format onnx, not --format {format}")
        if isinstance(opset, bool) or not isinstance(opset, int) or opset < 1:
            raise ValueError(f"--opset must be a positive integer, got {opset!r}")


def _tokenizer_dir(loaded: Loaded, src: str) -> str | None:
    folder = loaded.tokenizer_dir or (src if os.path.isdir(src) else os.path.dirname(src))
    return folder if folder and os.path.exists(os.path.join(folder, "vocab.txt")) else None


def export(src: str, out: str, *, format: str, head: str | None = None, opset: int | None = None,
           with_tokenizer: bool = False, quantize: str | None = None, optimize: bool = True,
           force: bool = False) -> Exported:
    """Export checkpoint ``src`` as ``format`` into the directory ``out``; see the module docstring."""
    src, out = os.fspath(src), os.fspath(out)
    check_request(format, opset=opset, with_tokenizer=with_tokenizer, quantize=quantize, optimize=optimize)
    if head is not None and head != "auto":
        heads.get(head)  # ValueError naming the choices
    check_packages([format] + (["optimize"] if format == "onnx" and optimize else [])
                   + (["tokenizer"] if with_tokenizer else []) + ([quantize] if quantize else []))
    if os.path.exists(out) and not force:
        raise FileExistsError(f"{out} already exists (pass --force to overwrite)")
    if with_tokenizer and os.path.isdir(src):
        missing = [name for name in ("vocab.txt",) if not os.path.exists(os.path.join(src, name))]
        if missing:
            raise FileNotFoundError(f"{src}: --with-tokenizer needs the checkpoint's tokenizer files; "
                                    f"{', '.join(missing)} is missing")

    started = time.perf_counter()
    loaded = conv.read_source(src, head=None if head in (None, "auto") else head)
    tokenizer_dir = _tokenizer_dir(loaded, src)
    if with_tokenizer and tokenizer_dir is None:
        raise FileNotFoundError(f"{src}: --with-tokenizer needs the checkpoint's tokenizer files (vocab.txt, "
                                f"{', '.join(TOKENIZER_FILES[1:])}); none found beside it")
    if tokenizer_dir is None:
        logger.warning("%s has no tokenizer files: %s gets the model and config.json only", src, out)
    result = Exported(out, format, loaded.head)
    result.seconds["read"] = time.perf_counter() - started

    with atomic_directory(out, overwrite=force) as tmp:
        if format == "onnx":
            _write_onnx(loaded, tmp, opset or DEFAULT_OPSET, quantize, optimize, result)
        else:
            _write_keras(loaded, tmp, format, tokenizer_dir if with_tokenizer else None, result)
        loaded.config.replace(architectures=[loaded.head.class_name], dtype="float32").save_pretrained(tmp)
        copy_tokenizer(tokenizer_dir, tmp)
        result.files = sorted(os.listdir(tmp))
    result.seconds["total"] = time.perf_counter() - started
    return result


def _float32(loaded: Loaded) -> dict[str, np.ndarray]:
    return cast(loaded.tensors, None)


def _write_onnx(loaded: Loaded, folder: str, opset: int, quantize: str | None, optimize: bool,
                result: Exported) -> None:
    import torch

    import convbert_pt
    from convbert_pt.export import export_onnx, optimize_onnx, quantize_int8

    model = getattr(convbert_pt, loaded.head.class_name)(loaded.config)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _float32(loaded).items()},
                          strict=True)
    model.eval()
    standard = os.path.join(folder, _STANDARD_FILE if optimize else ONNX_FILE)
    optimized = os.path.join(folder, ONNX_FILE if optimize else _OPTIMIZED_FILE)
    started = time.perf_counter()
    export_onnx(model, standard, opset=opset)
    result.seconds["onnx"] = time.perf_counter() - started
    if optimize or quantize:
        started = time.perf_counter()
        optimize_onnx(standard, optimized, loaded.config)
        result.seconds["optimize"] = time.perf_counter() - started
    if quantize == "int8":
        started = time.perf_counter()
        quantize_int8(optimized, os.path.join(folder, ONNX_QUANTIZED_FILE))
        result.seconds["int8"] = time.perf_counter() - started
    intermediate = standard if optimize else optimized
    for path in (intermediate, intermediate + ".data"):  # the graph, and its weights if it has them apart
        if os.path.exists(path):
            os.remove(path)


def _write_keras(loaded: Loaded, folder: str, format: str, tokenizer_dir: str | None, result: Exported) -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import convbert_tf
    from convbert_tf.export import export as export_keras
    from convbert_tf.io import assign_canonical

    model = getattr(convbert_tf, loaded.head.class_name)(loaded.config, initialize=False)
    assign_canonical(model, _float32(loaded), source=loaded.source, consume=True)
    tokenizer = None
    if tokenizer_dir is not None:
        from convbert_common.tokenizer import ConvBertTokenizerFast

        tokenizer = ConvBertTokenizerFast.from_pretrained(tokenizer_dir)
    started = time.perf_counter()
    if format == "saved-model":
        export_keras(model, folder, format="saved-model", tokenizer=tokenizer, overwrite=True)
    else:
        export_keras(model, os.path.join(folder, LITERT_FILE), format="litert")
    result.seconds[format] = time.perf_counter() - started
