"""``convbert clean DIR``: remove the temporaries that killed runs left in DIR.

Every write of ``convbert`` goes through a temporary named ``.NAME.convbert-PID-RANDOM.tmp``
beside its destination. Ctrl-C and SIGTERM remove it; ``kill -9``, a power cut or an out-of-memory
kill cannot. ``convert`` warns when it finds such leftovers beside its destination; this command
removes those whose process is no longer running (a replaced output parked as ``....old`` is put
back when its destination is missing).
"""

from __future__ import annotations

import argparse
import os
import sys

from convbert_tools.commands import EXIT_OK

NAME = "clean"
HELP = "remove temporaries that interrupted runs left in a directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", default=".", help="where the destination was (default: .)")
    p.add_argument("-n", "--dry-run", action="store_true", help="only list what would be removed")


def run(args: argparse.Namespace) -> int:
    from convbert_common import fileio

    if not os.path.isdir(args.directory):
        raise NotADirectoryError(f"{args.directory}: not a directory")
    if args.dry_run:
        done = [(item, "would remove") for item in fileio.leftovers(args.directory)]
    else:
        done = fileio.remove_leftovers(args.directory)
    for item, what in done:
        sys.stdout.write(f"{what} {item.path} ({item.size / 1e6:.1f} MB, from process {item.pid})\n")
    if not done:
        sys.stdout.write(f"{args.directory}: no temporaries of interrupted runs\n")
    return EXIT_OK
