"""``convbert export SRC OUT --format onnx|saved-model|litert``: a checkpoint as a serving artifact."""

from __future__ import annotations

import argparse
import sys

from convbert_common import heads
from convbert_tools import export as ex
from convbert_tools.commands import EXIT_OK

NAME = "export"
HELP = "export a checkpoint for serving: ONNX (onnxruntime), TF SavedModel (TF Serving) or LiteRT"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint directory, .keras file, or original TF1 checkpoint")
    p.add_argument("out", help="destination directory (written atomically)")
    p.add_argument("--format", required=True, choices=ex.FORMATS,
                   help="onnx: model.onnx from PyTorch; saved-model: a TF SavedModel; litert: model.tflite")
    p.add_argument("--head", default="auto", choices=("auto", *heads.NAMES),
                   help="model class (default: from the config's architectures)")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {ex.DEFAULT_OPSET})")
    p.add_argument("--with-tokenizer", action="store_true",
                   help="saved-model: add tokenize / serve_text signatures that take raw strings (tensorflow-text)")
    p.add_argument("--quantize", default=None, choices=ex.QUANTIZATIONS,
                   help="onnx: also write model_quantized.onnx (onnxruntime dynamic int8)")
    p.add_argument("--no-optimize", dest="optimize", action="store_false",
                   help="onnx: write the exporter's standard-operator graph, not the one fused for onnxruntime "
                        "(for other ONNX runtimes)")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT")


def run(args: argparse.Namespace) -> int:
    result = ex.export(args.src, args.out, format=args.format, head=args.head, opset=args.opset,
                       with_tokenizer=args.with_tokenizer, quantize=args.quantize, optimize=args.optimize,
                       force=args.force)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    sys.stdout.write(f"exported {args.src} ({result.task.class_name}) -> {args.out} [{args.format}] ({steps})\n")
    for name in result.files:
        sys.stdout.write(f"  {name}\n")
    return EXIT_OK
