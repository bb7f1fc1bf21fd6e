"""``convbert detect-replaced DIR "text"``: per token, the discriminator's probability that it was replaced."""

from __future__ import annotations

import argparse
import json
import sys

from convbert_tools.commands import EXIT_OK

NAME = "detect-replaced"
HELP = "score each token of a text as original or replaced, with a pretrained discriminator"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR", help="a pretraining directory, or its discriminator/")
    p.add_argument("text", help="the text to score")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from convbert_tools.predict import detect_replaced

    result = detect_replaced(args.path, args.text)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return EXIT_OK
    lines = [f"{'position':>8}  {'p(replaced)':>11}  token"]
    for t in result["tokens"]:
        lines.append(f"{t['position']:>8}  {t['replaced_probability']:11.4f}  {t['token']}"
                     + ("  <- replaced?" if t["replaced"] else ""))
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
