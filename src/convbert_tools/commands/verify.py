"""``convbert verify DIR``: the checkpoint in PyTorch and in Keras, every output compared."""

from __future__ import annotations

import argparse
import math
import sys

from convbert_common import heads
from convbert_tools import cli_options, quiet
from convbert_tools.commands import EXIT_MISMATCH, EXIT_OK

NAME = "verify"
HELP = "run a checkpoint in PyTorch and Keras and compare every output"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint directory or Hub id (org/name)")
    p.add_argument("--heads", nargs="*", default=None, choices=heads.NAMES,
                   help="model classes to compare (default: the one config.json names)")
    p.add_argument("--text", default=None, help="also compare on this text, through the checkpoint's tokenizer")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed |PyTorch - Keras| (default 1e-5)")
    cli_options.add_json_argument(p)
    cli_options.add_quiet_argument(p)
    cli_options.add_hub_arguments(p)


def run(args: argparse.Namespace) -> int:
    from convbert_tools import verify

    path = cli_options.local_checkpoint(args.path, args)
    quiet.import_frameworks("torch", "keras", verbose=getattr(args, "verbose", False))
    report = verify.verify(path, tasks=args.heads, text=args.text, atol=args.atol,
                           progress=cli_options.progress_enabled(args))
    if args.json:
        data = verify.report_dict(report)
        data["path"] = args.path
        for row in data["rows"]:  # JSON has no infinity: a missing output reads as null
            if not math.isfinite(row["max_abs_diff"]):
                row["max_abs_diff"] = None
        cli_options.emit_json(data)
    else:
        sys.stdout.write(verify.format_report(report) + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH
