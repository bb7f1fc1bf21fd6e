"""Helpers of the hostile-input tests (issue 15): what changed on disk, and the CLI's one-line errors."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil


def snapshot(root: str | os.PathLike, *, skip: tuple[str | os.PathLike, ...] = ()) -> dict[str, str]:
    """{relative path: kind and content hash} of everything under ``root``, except the ``skip`` paths."""
    root = pathlib.Path(root)
    skipped = {os.path.abspath(p) for p in skip}
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = pathlib.Path(dirpath)
        dirnames[:] = [d for d in dirnames if os.path.abspath(here / d) not in skipped]
        for name in dirnames:
            out[str((here / name).relative_to(root))] = "dir"
        for name in filenames:
            path = here / name
            if os.path.abspath(path) in skipped:
                continue
            if path.is_symlink():
                out[str(path.relative_to(root))] = "link -> " + os.readlink(path)
            else:
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line_error(capsys, command: str) -> str:
    """The CLI's stderr, which must be exactly one ``convbert COMMAND: error: ...`` line; returns it."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"convbert {command}: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


def truncated_tf1_copy(tmp: pathlib.Path, keep: float) -> pathlib.Path:
    """A copy of the original TF1 fixture in ``tmp/tf1`` whose data shard keeps only ``keep`` of its bytes."""
    import pytest

    from tests.conftest import fixture_file

    pytest.importorskip("tensorflow")
    src = tmp / "tf1"
    shutil.copytree(fixture_file("tf1-original/model.ckpt.index").parent, src)
    data = src / "model.ckpt.data-00000-of-00001"
    os.truncate(data, int(data.stat().st_size * keep))
    return src
