"""``convbert fill-mask DIR "text with [MASK]"``: the generator's most likely tokens at each [MASK]."""

from __future__ import annotations

import argparse
import json
import sys

from convbert_tools.commands import EXIT_OK

NAME = "fill-mask"
HELP = "predict the [MASK] tokens of a text with a masked LM (or a pretraining directory's generator)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR", help="a masked-LM checkpoint directory, or a pretraining directory")
    p.add_argument("text", help='the text, with [MASK] where a token should be predicted')
    p.add_argument("--top-k", type=int, default=5, help="predictions per [MASK] (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from convbert_tools.predict import fill_mask

    result = fill_mask(args.path, args.text, top_k=args.top_k)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return EXIT_OK
    lines = []
    for mask in result["masks"]:
        lines.append(f"[MASK] at position {mask['position']}")
        lines.append(f"  {'rank':>4}  {'score':>7}  {'token':<16} sequence")
        for rank, pred in enumerate(mask["predictions"], 1):
            lines.append(f"  {rank:>4}  {pred['score']:7.4f}  {pred['token_str']:<16} {pred['sequence']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
