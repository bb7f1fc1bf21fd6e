"""Options shared by the ``convbert`` sub-commands: Hub ids, ``--json``, ``-q``, and their helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from convbert_common import hub
from convbert_common.formats import TOKENIZER_FILES
from convbert_common.loading import weight_files


def add_hub_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("Hugging Face Hub", "when the checkpoint is given as a Hub id (org/name)")
    group.add_argument("--revision", default=None, help="branch, tag or commit of the Hub repo (default: main)")
    group.add_argument("--cache-dir", default=None,
                       help="Hub cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else "
                       "~/.cache/huggingface/hub)")
    group.add_argument("--local-files-only", action="store_true",
                       help="use the Hub cache only, never the network (as HF_HUB_OFFLINE=1 does)")
    group.add_argument("--token", default=None, help="Hub access token for private or gated repos")


def add_json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (they are off anyway when not a TTY)")


def hub_options(args: argparse.Namespace) -> hub.HubOptions:
    return hub.HubOptions(revision=getattr(args, "revision", None), cache_dir=getattr(args, "cache_dir", None),
                          local_files_only=bool(getattr(args, "local_files_only", False)),
                          token=getattr(args, "token", None))


def local_checkpoint(path: str, args: argparse.Namespace, *, framework: str = "torch") -> str:
    """``path`` if it exists here; a Hub id as its cache folder (config, one weights file, tokenizer files)."""
    options = hub_options(args)
    if hub.local_path(path, options) is not None or not hub.is_repo_id(path):
        return path
    resolved = hub.resolve_checkpoint(path, weight_files(framework), options)
    try:
        hub.resolve_files(path, (), TOKENIZER_FILES, options)
    except hub.HubError:
        pass  # a repo without tokenizer files: the commands that need one say so
    return resolved.folder


def progress_enabled(args: argparse.Namespace) -> bool | None:
    """False with -q; else None: a bar when stderr is a TTY (tqdm's own rule)."""
    return False if getattr(args, "quiet", False) else None


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` of True (always), False (never) or None (on a TTY)."""
    return None if progress is None else not progress


def emit_json(obj: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def _default(value: Any):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
