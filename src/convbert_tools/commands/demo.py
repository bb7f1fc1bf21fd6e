"""``convbert demo``: tokenise, PyTorch, convert, Keras, compare, on the checkpoint shipped in the package."""

from __future__ import annotations

import argparse
import sys

NAME = "demo"
HELP = "the whole pipeline on the small checkpoint shipped in the package"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", default="The movie was surprisingly good.", help="the text to classify")
    p.add_argument("--text-pair", default="I would watch it again.", help="its second segment")


def run(args: argparse.Namespace) -> int:
    from convbert_tools import demo, quiet

    quiet.import_frameworks("torch", "keras", verbose=getattr(args, "verbose", False))

    return demo.run(demo.checkpoint_dir(), text=args.text, text_pair=args.text_pair, out=sys.stdout)
