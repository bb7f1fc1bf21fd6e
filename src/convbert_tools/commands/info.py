"""``convbert info PATH``: sizes, heads and weights of a checkpoint directory, config.json or Hub id."""

from __future__ import annotations

import argparse
import os
import sys

from convbert_tools import cli_options
from convbert_tools.commands import EXIT_OK

NAME = "info"
HELP = "summarise a checkpoint directory, config.json or Hub id"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint directory, config.json, or Hub id (org/name)")
    cli_options.add_json_argument(p)
    cli_options.add_quiet_argument(p)
    cli_options.add_hub_arguments(p)


def summary(path: str, *, progress: bool | None = False) -> dict:
    """What ``info`` reports, as a dict (the --json output)."""
    from tqdm.auto import tqdm

    from convbert_common import checkpoint as ck
    from convbert_common import weight_map as wm
    from convbert_common.config import ConvBertConfig
    from convbert_common.formats import head_from_config

    config = ConvBertConfig.from_pretrained(path)
    h = config.heads
    head = head_from_config(config, source=path)
    out = {
        "checkpoint": path, "class": head.class_name, "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size, "embedding_size": config.embedding_size,
        "intermediate_size": config.intermediate_size, "num_groups": config.num_groups,
        "attention_heads": h.num_heads, "conv_heads": h.num_heads, "head_size": h.head_size,
        "conv_kernel_size": config.conv_kernel_size, "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings, "num_labels": config.num_labels,
        "dtype": config.dtype,
    }
    if os.path.isdir(path):
        weights, fmt = ck.find_weights_file(path)
        with tqdm(total=1, desc=f"reading {os.path.basename(weights)}", disable=cli_options.tqdm_disable(progress),
                  leave=False, bar_format="{desc} {elapsed}") as bar:
            result = ck.load_for_model(config, head, path)
            bar.update()
        bad = ck.non_finite(result.tensors)
        out.update(weights_file=os.path.basename(weights), format=fmt, tensors=len(result.tensors),
                   parameters=sum(int(v.size) for v in result.tensors.values()),
                   bytes=os.path.getsize(weights), non_finite=sorted(bad),
                   non_finite_summary=ck.describe_non_finite(bad) if bad else "")
    else:
        out["parameters"] = wm.parameter_count(config, head)
    return out


def format_summary(s: dict) -> str:
    lines = [
        f"checkpoint        {s['checkpoint']}",
        f"class             {s['class']}",
        f"layers x hidden   {s['layers']} x {s['hidden_size']} (embedding {s['embedding_size']}, "
        f"ffn {s['intermediate_size']}, groups {s['num_groups']})",
        f"heads             {s['attention_heads']} attention + {s['conv_heads']} convolution, size {s['head_size']}, "
        f"kernel {s['conv_kernel_size']}",
        f"vocab / positions {s['vocab_size']} / {s['max_position_embeddings']}",
    ]
    if "weights_file" in s:
        lines.append(f"weights           {s['weights_file']} ({s['format']}), {s['tensors']} tensors, "
                     f"{s['parameters']:,} parameters")
        if s["non_finite"]:
            lines.append(f"NOT FINITE        {len(s['non_finite'])} tensor(s): {s['non_finite_summary']}")
    else:
        lines.append(f"parameters        {s['parameters']:,} (computed from the config)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    path = cli_options.local_checkpoint(args.path, args)
    s = {**summary(path, progress=cli_options.progress_enabled(args)), "checkpoint": args.path}
    if args.json:
        cli_options.emit_json(s)
    else:
        sys.stdout.write(format_summary(s) + "\n")
    return EXIT_OK
