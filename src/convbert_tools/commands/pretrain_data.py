"""``convbert pretrain-data``: a corpus tokenized and packed into the shards ``convbert pretrain --data`` reads."""

from __future__ import annotations

import argparse
import sys

from convbert_tools.commands import EXIT_OK

NAME = "pretrain-data"
HELP = "tokenize and pack a text corpus into pretraining shards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                   help=".txt / .txt.gz / .jsonl / .jsonl.gz files, or folders of them")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="the tokenizer folder (vocab.txt)")
    p.add_argument("--output", required=True, metavar="DIR", help="the data directory to write")
    p.add_argument("--max-seq-length", type=int, default=128, help="tokens per example, [CLS] and [SEP] included")
    p.add_argument("--max-position-embeddings", type=int, default=None,
                   help="refuse a --max-seq-length above the model's position table")
    p.add_argument("--seed", type=int, default=0, help="fixes the packing's random choices")
    p.add_argument("--one-doc-per-line", action="store_true", help="every text line is one document")
    p.add_argument("--text-field", default="text", help="the JSONL field holding the text")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip and count non-UTF-8 or malformed JSONL lines")
    p.add_argument("--overwrite", action="store_true", help="replace a data directory built differently")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from convbert_common.pretraining_data import build_dataset

    manifest = build_dataset(
        args.corpus, args.tokenizer, args.output, max_seq_length=args.max_seq_length, seed=args.seed,
        one_doc_per_line=args.one_doc_per_line, text_field=args.text_field, skip_bad_lines=args.skip_bad_lines,
        max_position_embeddings=args.max_position_embeddings, progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    c = manifest["counts"]
    sys.stdout.write(
        f"{args.output}: {c['examples']} examples of up to {manifest['max_seq_length']} tokens in "
        f"{len(manifest['shards'])} shard(s); {c['example_tokens']} of {c['corpus_tokens']} corpus tokens kept"
        + (f", {c['skipped_lines']} bad lines skipped" if c.get("skipped_lines") else "") + "\n"
    )
    return EXIT_OK
