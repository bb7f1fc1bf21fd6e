"""``convbert info PATH``: sizes, heads and weights of a checkpoint directory or config.json."""

from __future__ import annotations

import argparse
import os
import sys

from convbert_tools.commands import EXIT_OK

NAME = "info"
HELP = "summarise a checkpoint directory or config.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint directory or config.json")


def run(args: argparse.Namespace) -> int:
    from convbert_common import checkpoint as ck
    from convbert_common import weight_map as wm
    from convbert_common.config import ConvBertConfig
    from convbert_common.formats import head_from_config

    config = ConvBertConfig.from_pretrained(args.path)
    h = config.heads
    head = head_from_config(config, source=args.path)
    lines = [
        f"checkpoint        {args.path}",
        f"class             {head.class_name}",
        f"layers x hidden   {config.num_hidden_layers} x {config.hidden_size} (embedding {config.embedding_size}, "
        f"ffn {config.intermediate_size}, groups {config.num_groups})",
        f"heads             {h.num_heads} attention + {h.num_heads} convolution, size {h.head_size}, "
        f"kernel {config.conv_kernel_size}",
        f"vocab / positions {config.vocab_size} / {config.max_position_embeddings}",
    ]
    if os.path.isdir(args.path):
        path, fmt = ck.find_weights_file(args.path)
        result = ck.load_for_model(config, head, args.path)
        n = sum(int(v.size) for v in result.tensors.values())
        lines.append(
            f"weights           {os.path.basename(path)} ({fmt}), {len(result.tensors)} tensors, {n:,} parameters"
        )
        bad = ck.non_finite(result.tensors)
        if bad:
            lines.append(f"NOT FINITE        {len(bad)} tensor(s): {ck.describe_non_finite(bad)}")
    else:
        lines.append(f"parameters        {wm.parameter_count(config, head):,} (computed from the config)")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
