"""Atomic file and directory writes (output appears whole or not at all), and a checked JSON read.

Every write goes to a temporary beside its target, named ``.TARGET.convbert-PID-RANDOM.tmp`` (a
directory being replaced is parked as ``...old`` for a moment), and is renamed onto the target
only when it is complete. A run killed with ``kill -9`` cannot clean up; the name says which
process made the temporary, so ``leftovers(directory)`` finds those of runs that are no longer
alive and ``remove_leftovers`` deletes them (``convbert clean DIR``).

Without ``overwrite`` the final rename never replaces anything: a target that appeared while the
output was being written (a second run racing to the same destination) is left alone and the
write fails with FileExistsError.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# What the temporaries of this module are called: ``.{target}.convbert-{pid}-{random}.tmp|.old``.
TEMP_MARK = "convbert"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.convbert-(?P<pid>\d+)-[A-Za-z0-9_]+\.(?:tmp|old)$")


def read_json(path: str | os.PathLike, *, missing: str | None = None, object_pairs_hook=None) -> Any:
    """The JSON value in ``path``; ValueError naming the file when it is not UTF-8 JSON.

    ``missing`` is the FileNotFoundError message for an absent file (default: the system's).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh, object_pairs_hook=object_pairs_hook)
    except FileNotFoundError:
        if missing is None:
            raise
        raise FileNotFoundError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{os.fspath(path)} is not valid JSON: {err}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(target: str) -> str:
    return f".{os.path.basename(target)}.{TEMP_MARK}-{os.getpid()}-"


def _renameat2_noreplace(src: str, dst: str) -> bool:
    """Linux ``renameat2(RENAME_NOREPLACE)``: True if it ran (and succeeded), False if unavailable."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_noreplace = -100, 1
    if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel, or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), dst)


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``, failing with FileExistsError if ``dst`` exists (never replacing it)."""
    try:
        if _renameat2_noreplace(src, dst):
            return
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "appeared while this run was writing it", dst) from None
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise FileExistsError(errno.EEXIST, "appeared while this run was writing it", dst) from None
        raise
    if os.path.isdir(src):
        # No atomic primitive: check, then rename (a plain rename would replace an empty directory).
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "appeared while this run was writing it", dst)
        os.rename(src, dst)
        return
    try:
        os.link(src, dst)  # fails atomically when dst exists
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "appeared while this run was writing it", dst) from None
    os.remove(src)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    ``overwrite=False``: the rename fails with FileExistsError rather than replace a ``target``
    that exists by then.
    """
    target = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600 (and some writers recreate the file): give the result the
        # permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, target)
        else:
            rename_noreplace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, *, overwrite: bool = False,
                     before_replace: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield a fresh temporary directory; it replaces ``target`` only when the block succeeds.

    ``overwrite=False``: ``target`` must not exist, neither now nor when the result is renamed into
    place (FileExistsError). ``overwrite=True``: an existing ``target`` is replaced; ``before_replace``
    (if given) is called with it first, at the start and again just before the swap, and may raise
    to refuse (what is there may have changed while the output was written).
    """
    target = os.path.abspath(os.fspath(target))
    if os.path.lexists(target):
        if not overwrite:
            raise FileExistsError(f"{target} already exists (pass force/overwrite to replace it)")
        if before_replace is not None:
            before_replace(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if not overwrite:
            try:
                rename_noreplace(tmp, target)
            except FileExistsError:
                raise FileExistsError(f"{target} appeared while this output was being written (another run?); "
                                      "it was left as it is (pass force/overwrite to replace it)") from None
        else:
            try:
                rename_noreplace(tmp, target)
            except FileExistsError:
                _swap(tmp, target, before_replace)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: str, target: str, before_replace: Callable[[str], None] | None) -> None:
    """Put directory ``tmp`` in place of the existing ``target`` (parked aside, then deleted)."""
    if before_replace is not None:
        before_replace(target)
    parent = os.path.dirname(target)
    backup = tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".old", dir=parent)
    os.rmdir(backup)
    os.replace(target, backup)
    try:
        rename_noreplace(tmp, target)
    except BaseException:
        os.replace(backup, target)  # something raced in between: put the old one back
        raise
    if os.path.isdir(backup) and not os.path.islink(backup):
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.remove(backup)


# ------------------------------------------------------------------ temporaries of dead runs
@dataclass(frozen=True)
class Leftover:
    path: str
    target: str  # the name it was going to become
    pid: int  # the process that made it (no longer running)
    size: int  # bytes


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return False
    return True


def _size(path: str) -> int:
    if os.path.islink(path) or not os.path.isdir(path):
        return os.lstat(path).st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def leftovers(directory: str | os.PathLike) -> list[Leftover]:
    """The temporaries in ``directory`` (not below it) made by runs that are no longer alive."""
    directory = os.fspath(directory)
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        match = _TEMP_NAME.match(name)
        if match is None or _alive(int(match["pid"])):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            out.append(Leftover(path, match["target"], int(match["pid"]), _size(path)))
    return out


def remove_leftovers(directory: str | os.PathLike) -> list[tuple[Leftover, str]]:
    """Clean up after dead runs in ``directory``; returns (leftover, "removed" | "restored") pairs.

    A parked ``.old`` whose target is gone (a run killed in the middle of replacing it) is the
    previous output: it is renamed back, not deleted.
    """
    directory = os.fspath(directory)
    done = []
    for item in leftovers(directory):
        target = os.path.join(directory, item.target)
        if item.path.endswith(".old") and not os.path.lexists(target):
            os.rename(item.path, target)
            done.append((item, "restored"))
            continue
        if os.path.isdir(item.path) and not os.path.islink(item.path):
            shutil.rmtree(item.path)
        else:
            os.remove(item.path)
        done.append((item, "removed"))
    return done
