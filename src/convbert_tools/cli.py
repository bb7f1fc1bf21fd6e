"""The ``convbert`` command: one sub-command per module of ``convbert_tools.commands``.

Frameworks are imported only by the sub-commands that need them, so ``convbert info`` and
``convbert convert`` between framework-free formats work with neither installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from convbert_tools.commands import EXIT_ERROR
from convbert_tools.demo import checkpoint_dir as demo_checkpoint_dir  # noqa: F401 (the shipped checkpoint)

logger = logging.getLogger("convbert")

# The sub-commands, in the order --help lists them.
COMMANDS = ("convert", "verify", "export", "info", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convbert", description="ConvBERT for PyTorch and Keras")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is skipped and why")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = importlib.import_module(f"convbert_tools.commands.{name}")
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A command-line run, not a library import: keep TensorFlow's start-up chatter off the terminal
    # unless asked for (-v), before any sub-command imports it.
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError) as exc:
        sys.stderr.write(f"convbert {args.command}: error: {exc}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
