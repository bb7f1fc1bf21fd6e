"""A fake Hugging Face cache in a temporary folder: the Hub's on-disk layout, no network.

``<cache>/models--org--name/blobs/<sha>`` holds each file once, ``snapshots/<commit>/<name>`` links
to it (a copy where links are not allowed) and ``refs/<revision>`` names the commit, as
huggingface_hub lays the cache out. Tests run with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_repo(cache: pathlib.Path, repo_id: str, files: dict[str, pathlib.Path | bytes], *, revision: str = "main",
             commit: str = COMMIT) -> pathlib.Path:
    """Put ``files`` ({name in repo: source path or bytes}) into ``cache`` as revision ``revision``; the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        data = source if isinstance(source, bytes) else pathlib.Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(os.path.relpath(blob, target.parent), target)
        except OSError:
            shutil.copyfile(blob, target)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def add_checkpoint(cache: pathlib.Path, repo_id: str, folder: pathlib.Path, names=None, **kwargs) -> pathlib.Path:
    """Every file of a checkpoint ``folder`` (or only ``names``) as a Hub repo in ``cache``."""
    names = names or sorted(p.name for p in folder.iterdir() if p.is_file())
    return add_repo(cache, repo_id, {n: folder / n for n in names}, **kwargs)
