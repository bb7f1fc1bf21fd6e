"""``convbert convert SRC DST --to FORMAT``: any supported checkpoint to any other format."""

from __future__ import annotations

import argparse
import sys

from convbert_common import heads
from convbert_common.formats import DTYPES
from convbert_tools import cli_options, quiet
from convbert_tools import convert as conv
from convbert_tools.commands import EXIT_OK

NAME = "convert"
HELP = "convert a checkpoint between formats and frameworks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint directory, .keras file, original TF1 checkpoint, or Hub id (org/name)")
    p.add_argument("dst", help="destination directory (or .keras / .weights.h5 file)")
    p.add_argument("--to", default="safetensors", choices=conv.registry().writable(), help="destination format")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="store floating tensors in this dtype")
    p.add_argument("--force", action="store_true",
                   help="replace an existing destination: a previous output (a checkpoint directory holding only "
                        "checkpoint files, or a single file), never anything else")
    p.add_argument("--allow-overflow", action="store_true",
                   help="with --dtype: write tensors whose values exceed its range (they become inf)")
    p.add_argument("--generator", action="store_true",
                   help="TF1 source: import the authors' generator as ConvBertForMaskedLM")
    p.add_argument("--pretraining", action="store_true",
                   help="TF1 source: import both models and the replaced-token-detection head as a pretraining "
                        "directory (discriminator/ + generator/), for convbert pretrain --init-from")
    p.add_argument("--generator-config", default=None,
                   help="with --pretraining: the generator's config.json (default: generator_config.json beside SRC)")
    p.add_argument("--head", default=None, choices=heads.NAMES, help="model class (default: from config)")
    p.add_argument("--config", default=None, help="config.json to use instead of the one beside SRC")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cli_options.add_json_argument(p)
    cli_options.add_hub_arguments(p)


def _needs_keras(args: argparse.Namespace, src: str) -> bool:
    from convbert_common import checkpoint as ck

    return args.to in ("keras", "keras-weights") or src.endswith(".keras") or ck.is_tf1_checkpoint(src)


def run(args: argparse.Namespace) -> int:
    src = cli_options.local_checkpoint(args.src, args)
    if _needs_keras(args, src):
        quiet.import_frameworks("keras", verbose=getattr(args, "verbose", False))
    progress = False if args.quiet else None
    if args.pretraining:
        pre = conv.convert_pretraining(src, args.dst, to=args.to, dtype=args.dtype, force=args.force,
                                       config_path=args.config, generator_config_path=args.generator_config,
                                       progress=progress, head=args.head, generator=args.generator)
        if args.json:
            cli_options.emit_json({"source": args.src, "destination": args.dst, "format": args.to, "dtype": args.dtype,
                                   "class": [pre.discriminator.head.class_name, pre.generator.head.class_name],
                                   "tensors": pre.count, "skipped": _groups(pre.skipped)})
            return EXIT_OK
        sys.stdout.write(f"converted {pre.source} ({pre.discriminator.count} + {pre.generator.count} tensors, "
                         f"{pre.discriminator.head.class_name} + {pre.generator.head.class_name}) -> {args.dst} "
                         f"[pretraining directory, {args.to}]\n")
        _report_skipped(pre.skipped)
        return EXIT_OK
    if args.generator_config is not None:
        raise ValueError("--generator-config applies with --pretraining only")
    loaded = conv.convert(src, args.dst, to=args.to, dtype=args.dtype, force=args.force,
                          generator=args.generator, head=args.head, config_path=args.config,
                          progress=progress, allow_overflow=args.allow_overflow)
    if args.json:
        cli_options.emit_json({"source": args.src, "destination": args.dst, "format": args.to, "dtype": args.dtype,
                               "class": loaded.head.class_name, "tensors": loaded.count,
                               "skipped": _groups(loaded.skipped)})
        return EXIT_OK
    sys.stdout.write(f"converted {loaded.source} ({loaded.count} tensors, "
                     f"{loaded.head.class_name}) -> {args.dst} [{args.to}]\n")
    _report_skipped(loaded.skipped)
    return EXIT_OK


def _groups(skipped: dict[str, str]) -> dict[str, int]:
    groups: dict[str, int] = {}
    for why in skipped.values():
        groups[why] = groups.get(why, 0) + 1
    return groups


def _report_skipped(skipped: dict[str, str]) -> None:
    for why, count in sorted(_groups(skipped).items()):
        sys.stdout.write(f"  skipped {count:4d}: {why}\n")
