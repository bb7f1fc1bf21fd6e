"""``convbert predict DIR --task TASK TEXT|FILE ...``: a pipeline on texts, as a table or JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any

from convbert_common.batch_encoding import to_python
from convbert_tools import cli_options, quiet
from convbert_tools.commands import EXIT_OK

NAME = "predict"
HELP = "run a task pipeline (classification, NER, QA, fill-mask, features) on texts or a file"
TASKS = ("text-classification", "token-classification", "question-answering", "fill-mask", "feature-extraction")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint directory or Hub id (org/name), with its tokenizer files")
    p.add_argument("inputs", nargs="+",
                   help="texts, or files with one text per line (.jsonl: one JSON object per line, such as "
                        '{"question": ..., "context": ...} or {"text": ..., "text_pair": ...})')
    p.add_argument("--task", required=True, choices=TASKS, help="the pipeline to run")
    p.add_argument("--framework", choices=("pt", "tf"), default=None,
                   help="PyTorch or Keras (default: PyTorch when installed)")
    p.add_argument("--question", default=None, help="question-answering: the question; each input is a context")
    p.add_argument("--top-k", type=int, default=None, help="how many labels / answers / tokens to show")
    p.add_argument("--aggregation-strategy", default="simple", choices=("none", "simple", "first", "average", "max"),
                   help="token-classification: how tokens group into entities (default: simple)")
    p.add_argument("--batch-size", type=int, default=1, help="inputs per forward pass (padding changes ConvBERT's "
                                                             "numbers slightly, as in HF)")
    p.add_argument("--device", default=None, help="where to run the model (cuda:0, cpu, gpu:0...)")
    cli_options.add_json_argument(p)
    cli_options.add_hub_arguments(p)


def read_inputs(values: list[str], task: str, question: str | None) -> list[Any]:
    """Texts from the command line and files; question-answering inputs as {"question", "context"}."""
    items: list[Any] = []
    for value in values:
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as fh:
                lines = [line.rstrip("\n") for line in fh if line.strip()]
            if value.endswith(".jsonl"):
                for number, line in enumerate(lines, start=1):
                    try:
                        items.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{value}:{number}: not a JSON object ({exc})") from None
            else:
                items.extend(lines)
        else:
            items.append(value)
    if task == "question-answering":
        out = []
        for item in items:
            if isinstance(item, dict):
                out.append(item)
            elif question is None:
                raise ValueError("question-answering: pass --question (each input is then a context), or a .jsonl "
                                 'file of {"question": ..., "context": ...}')
            else:
                out.append({"question": question, "context": item})
        return out
    return items


def _options(args: argparse.Namespace) -> dict:
    options: dict[str, Any] = {}
    if args.task == "token-classification":
        options["aggregation_strategy"] = args.aggregation_strategy
    if args.top_k is not None:
        options["top_k"] = args.top_k
    return options


def predict(args: argparse.Namespace, items: list[Any]) -> list[dict]:
    framework = args.framework or ("pt" if importlib.util.find_spec("torch") else "tf")
    module = "convbert_pt" if framework == "pt" else "convbert_tf"
    quiet.import_frameworks("torch" if framework == "pt" else "keras", verbose=getattr(args, "verbose", False))
    pipeline = importlib.import_module(module).pipeline
    path = cli_options.local_checkpoint(args.path, args, framework="torch" if framework == "pt" else "keras")
    pipe = pipeline(args.task, path, device=args.device, batch_size=args.batch_size)
    outputs = pipe(items, **_options(args))  # one call: the pipeline batches across inputs
    if len(items) == 1 and args.task in ("fill-mask", "question-answering"):
        outputs = [outputs]  # HF's pipelines unwrap a single input for these two tasks
    return [{"input": item, "output": output} for item, output in zip(items, outputs, strict=True)]


def _text(item: Any) -> str:
    if isinstance(item, dict):
        return " | ".join(str(v) for v in item.values())
    return str(item)


def format_table(task: str, results: list[dict]) -> str:
    lines = []
    for result in results:
        lines.append(f"> {_text(result['input'])}")
        output = result["output"]
        rows = output if isinstance(output, list) else [output]
        if task == "text-classification":
            lines += [f"  {r['label']:24s} {r['score']:.4f}" for r in rows]
        elif task == "token-classification":
            for r in rows:
                entity = r.get("entity_group", r.get("entity"))
                lines.append(f"  {entity:12s} {float(r['score']):.4f}  {r['start']:>4}-{r['end']:<4} {r['word']}")
        elif task == "question-answering":
            lines += [f"  {r['score']:.4f}  {r['start']:>4}-{r['end']:<4} {r['answer']!r}" for r in rows]
        elif task == "fill-mask":
            groups = rows if rows and isinstance(rows[0], list) else [rows]
            for i, group in enumerate(groups):
                if len(groups) > 1:
                    lines.append(f"  mask {i + 1}")
                lines += [f"  {r['score']:.4f}  {r['token_str']:16s} {r['sequence']}" for r in group]
        else:  # feature-extraction: (1, L, H) nested lists
            features = output[0]
            lines.append(f"  {len(features)} tokens x {len(features[0]) if features else 0} features")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    items = read_inputs(args.inputs, args.task, args.question)
    results = predict(args, items)
    if args.json:
        cli_options.emit_json(to_python(results))
    else:
        sys.stdout.write(format_table(args.task, results) + "\n")
    return EXIT_OK
