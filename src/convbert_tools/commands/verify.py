"""``convbert verify DIR``: the checkpoint in PyTorch and in Keras, every output compared."""

from __future__ import annotations

import argparse
import sys

from convbert_common import heads
from convbert_tools.commands import EXIT_MISMATCH, EXIT_OK

NAME = "verify"
HELP = "run a checkpoint in PyTorch and Keras and compare every output"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint directory")
    p.add_argument("--heads", nargs="*", default=None, choices=heads.NAMES,
                   help="model classes to compare (default: the one config.json names)")
    p.add_argument("--text", default=None, help="also compare on this text, through the checkpoint's tokenizer")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed |PyTorch - Keras| (default 1e-5)")


def run(args: argparse.Namespace) -> int:
    from convbert_tools import verify

    report = verify.verify(args.path, tasks=args.heads, text=args.text, atol=args.atol)
    sys.stdout.write(verify.format_report(report) + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH
