"""The ``convbert`` command: one sub-command per module of ``convbert_tools.commands``.

Frameworks are imported only by the sub-commands that need them, so ``convbert info`` and
``convbert convert`` between framework-free formats work with neither installed.

Errors: a problem with what the user gave (a file, key, value or flag) ends in one line naming it,
exit code 1; an exception that no check of ours anticipated is a bug of convbert and says so, in
one line, or with its traceback under ``-v``. SIGTERM (and SIGHUP) stop a run as Ctrl-C does, so
that its temporaries are removed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
import zipfile

from convbert_tools import __version__
from convbert_tools.commands import EXIT_ERROR, EXIT_INTERRUPTED
from convbert_tools.demo import checkpoint_dir as demo_checkpoint_dir  # noqa: F401 (the shipped checkpoint)

logger = logging.getLogger("convbert")

# The sub-commands, in the order --help lists them.
COMMANDS = ("convert", "verify", "export", "info", "predict", "demo", "clean", "pretrain_data", "pretrain", "fill_mask",
            "detect_replaced")

# What a user's input can raise once every check of ours has had its say: the message names the
# file, key or value. Anything else is a bug of ours.
USER_ERRORS = (ValueError, OSError, ImportError, zipfile.BadZipFile)


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised in the main thread like Ctrl-C so that ``finally`` blocks clean up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_as_interrupts():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    saved = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            saved[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convbert", description="ConvBERT for PyTorch and Keras")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is skipped and why")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    name = f"convbert {args.command}"
    try:
        with _signals_as_interrupts():
            return args.func(args)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        sys.stderr.write(f"{name}: interrupted ({signal.Signals(signum).name}); nothing was left half-written\n")
        return EXIT_INTERRUPTED + signum
    except MemoryError as exc:
        detail = f" ({exc})" if str(exc) else ""
        sys.stderr.write(f"{name}: error: out of memory{detail}: the input is larger than this machine can hold "
                         "(is the config what the checkpoint is?)\n")
        return EXIT_ERROR
    except RecursionError:
        sys.stderr.write(f"{name}: error: an input is nested too deeply to be read (crafted JSON?)\n")
        return EXIT_ERROR
    except USER_ERRORS as exc:
        sys.stderr.write(f"{name}: error: {_one_line(exc)}\n")
        return EXIT_ERROR
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write(f"{name}: internal error: {type(exc).__name__}: {_one_line(exc)}; this is a bug of "
                         "convbert" + ("" if args.verbose else " (run again with -v for the traceback)") + "\n")
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"  # not Python's "[Errno 27] ...: 'path'"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
