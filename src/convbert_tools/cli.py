"""The ``convbert`` command: convert, verify, info, demo.

Frameworks are imported only by the sub-commands that need them, so ``convbert info`` and
``convbert convert`` between framework-free formats work with neither installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources

from convbert_common import heads
from convbert_common.formats import DTYPES
from convbert_tools import convert as conv

logger = logging.getLogger("convbert")

EXIT_OK, EXIT_ERROR, EXIT_MISMATCH = 0, 1, 2


def demo_checkpoint_dir() -> str:
    """The small checkpoint shipped inside the package (random weights, real vocabulary)."""
    return str(resources.files("convbert_tools") / "data" / "demo")


def _cmd_convert(args: argparse.Namespace) -> int:
    loaded = conv.convert(args.src, args.dst, to=args.to, dtype=args.dtype, force=args.force,
                          generator=args.generator, head=args.head, config_path=args.config,
                          progress=not args.quiet)
    groups: dict[str, int] = {}
    for why in loaded.skipped.values():
        groups[why] = groups.get(why, 0) + 1
    sys.stdout.write(f"converted {loaded.source} ({loaded.count} tensors, "
                     f"{loaded.head.class_name}) -> {args.dst} [{args.to}]\n")
    for why, count in sorted(groups.items()):
        sys.stdout.write(f"  skipped {count:4d}: {why}\n")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from convbert_common import checkpoint as ck
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
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from convbert_tools import verify

    report = verify.verify(args.path, tasks=args.heads, text=args.text, atol=args.atol)
    sys.stdout.write(verify.format_report(report) + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _cmd_demo(args: argparse.Namespace) -> int:
    from convbert_tools import demo

    return demo.run(demo_checkpoint_dir(), text=args.text, text_pair=args.text_pair, out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convbert", description="ConvBERT for PyTorch and Keras")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is skipped and why")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a checkpoint between formats and frameworks")
    p.add_argument("src", help="checkpoint directory, .keras file, or original TF1 checkpoint")
    p.add_argument("dst", help="destination directory (or .keras / .weights.h5 file)")
    formats = conv.registry()
    p.add_argument("--to", default="safetensors", choices=formats.writable(), help="destination format")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="store floating tensors in this dtype")
    p.add_argument("--force", action="store_true", help="overwrite an existing destination")
    p.add_argument("--generator", action="store_true",
                   help="TF1 source: import the authors' generator as ConvBertForMaskedLM")
    p.add_argument("--head", default=None, choices=heads.NAMES, help="model class (default: from config)")
    p.add_argument("--config", default=None, help="config.json to use instead of the one beside SRC")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("verify", help="run a checkpoint in PyTorch and Keras and compare every output")
    p.add_argument("path")
    p.add_argument("--heads", nargs="*", default=None, choices=heads.NAMES)
    p.add_argument("--text", default=None, help="also compare on this text")
    p.add_argument("--atol", type=float, default=1e-5)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("info", help="summarise a checkpoint directory or config.json")
    p.add_argument("path")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="the whole pipeline on the small checkpoint shipped in the package")
    p.add_argument("--text", default="The movie was surprisingly good.")
    p.add_argument("--text-pair", default="I would watch it again.")
    p.set_defaults(func=_cmd_demo)
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
