"""Hugging Face Hub ids wherever a checkpoint path is taken: resolved to a local folder of the cache.

``from_pretrained("org/name", revision=..., cache_dir=..., local_files_only=..., token=...)`` in both
frameworks, the config and the tokenizers come through here. A path that exists locally is used as
it is; anything else that reads as a repo id (``name`` or ``org/name``) is fetched with
``huggingface_hub.hf_hub_download``, one file at a time and only the files the caller needs (the
config, ONE weights file and its shards, the tokenizer files), into the standard cache
(``<cache>/models--org--name/snapshots/<commit>/``). Every file of one revision lands in the same
snapshot folder, so the folder returned reads like any checkpoint directory.

The environment is read at call time, not at import: ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) means cache only, and the cache is ``cache_dir``, else
``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, as huggingface_hub
defines it. A failure names the id, the revision, the cache searched and how to work offline.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

logger = logging.getLogger(__name__)

# Keyword arguments of every from_pretrained that belong to the Hub, with their defaults.
_TRUE = {"1", "on", "yes", "true"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


class HubError(FileNotFoundError):
    """A checkpoint id that is neither a local folder nor reachable on the Hub or in its cache."""


@dataclass(frozen=True)
class HubOptions:
    """The Hub options of ``from_pretrained``, as Hugging Face spells them."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    force_download: bool = False
    subfolder: str | None = None

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> HubOptions:
        """Take the Hub options out of a ``**kwargs`` dict (what is left are config overrides)."""
        found = {f.name: kwargs.pop(f.name) for f in fields(cls) if f.name in kwargs}
        if "use_auth_token" in kwargs:  # HF's old name for ``token``
            token = kwargs.pop("use_auth_token")
            found.setdefault("token", token)
        # Accepted for HF compatibility; loading is already low-memory and local-code free.
        for ignored in ("low_cpu_mem_usage", "trust_remote_code", "resume_download", "proxies", "_from_pipeline",
                        "mirror"):
            kwargs.pop(ignored, None)
        return cls(**found)

    @property
    def cache_only(self) -> bool:
        return bool(self.local_files_only) or offline()


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for the cache only, read now."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cache_dir(explicit: str | os.PathLike | None = None) -> str:
    """The cache folder huggingface_hub uses, from the environment at call time."""
    if explicit is not None:
        return os.path.expanduser(os.fspath(explicit))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return os.path.expanduser(os.environ[name])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def repo_folder(repo_id: str, cache: str | os.PathLike | None = None) -> str:
    """``<cache>/models--org--name``: where the cache keeps one model repository."""
    return os.path.join(cache_dir(cache), "models--" + repo_id.replace("/", "--"))


def is_repo_id(value: str) -> bool:
    """Whether ``value`` reads as a Hub repo id (``name`` or ``org/name``), not as a path."""
    return bool(_REPO_ID.match(value)) and ".." not in value and "--" not in value and not value.endswith(".")


def local_path(path: str | os.PathLike, options: HubOptions | None = None) -> str | None:
    """``path`` (under ``options.subfolder``) when it exists on disk, else None."""
    path = os.path.expanduser(os.fspath(path))
    sub = options.subfolder if options else None
    full = os.path.join(path, sub) if sub else path
    return full if os.path.exists(full) else None


# ------------------------------------------------------------------------------- resolution
class _Fetcher:
    """hf_hub_download for one repo and revision; after a connection failure, the cache only."""

    def __init__(self, repo_id: str, options: HubOptions) -> None:
        self.repo_id = repo_id
        self.options = options
        self.cache_only = options.cache_only
        self.reason: str | None = "HF_HUB_OFFLINE is set" if offline() else (
            "local_files_only=True" if options.local_files_only else None)

    def get(self, filename: str) -> str | None:
        """The local path of ``filename``, or None when the repo (or the cache) does not have it."""
        try:
            import huggingface_hub
            from huggingface_hub import errors
        except ImportError:
            raise HubError(f"{self.repo_id}: not a local directory, and resolving Hub ids needs huggingface_hub "
                           "(pip install huggingface_hub)") from None
        from convbert_common.version import __version__

        try:
            return huggingface_hub.hf_hub_download(
                self.repo_id, filename, subfolder=self.options.subfolder or None, revision=self.options.revision,
                cache_dir=cache_dir(self.options.cache_dir), local_files_only=self.cache_only,
                token=self.options.token, force_download=self.options.force_download,
                library_name="convbert", library_version=__version__,
            )
        except errors.LocalEntryNotFoundError as exc:
            if not self.cache_only:
                # The Hub could not be reached: the rest of this resolution looks in the cache only.
                self.cache_only = True
                self.reason = f"the Hub could not be reached ({_first_line(exc)})"
            return None
        except errors.EntryNotFoundError:
            return None  # the repo has no such file
        except errors.RevisionNotFoundError:
            raise HubError(f"{self.repo_id}: revision {self.options.revision!r} not found on the Hub") from None
        except errors.GatedRepoError:
            raise HubError(f"{self.repo_id}: a gated repository; accept its terms on the Hub and pass token=... "
                           "(or log in with `hf auth login`)") from None
        except errors.RepositoryNotFoundError:
            raise HubError(
                f"{self.repo_id}: not a local directory, and no such repository on the Hub (or it is private: "
                "pass token=...)") from None
        except errors.HfHubHTTPError as exc:
            raise HubError(f"{self.repo_id}: the Hub refused {filename} ({_first_line(exc)})") from None
        except OSError as exc:  # a connection error that huggingface_hub did not wrap
            if self.cache_only:
                raise
            self.cache_only = True
            self.reason = f"the Hub could not be reached ({_first_line(exc)})"
            return self.get(filename)

    def error(self, wanted: str) -> HubError:
        revision = self.options.revision or "main"
        where = repo_folder(self.repo_id, self.options.cache_dir)
        if self.cache_only:
            why = f" ({self.reason})" if self.reason else ""
            return HubError(
                f"{self.repo_id}: not a local directory, and {wanted} for revision {revision!r} is not in the "
                f"Hugging Face cache{why}; searched {where}. To work offline, download it once while online "
                f"(huggingface_hub.snapshot_download({self.repo_id!r}) or `hf download {self.repo_id}`), set "
                "HF_HUB_CACHE / HF_HOME or cache_dir= if the cache lives elsewhere, then set HF_HUB_OFFLINE=1 (or "
                "pass local_files_only=True); or pass the path of a local checkpoint directory."
            )
        return HubError(f"{self.repo_id}: the repository (revision {revision!r}) has no {wanted}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _repo_id(path: str) -> str:
    if not is_repo_id(path):
        raise FileNotFoundError(f"{path}: not a checkpoint directory (expected config.json and a weights file), "
                                "and not a Hub id of the form org/name")
    return path


def resolve_file(path: str | os.PathLike, filename: str, options: HubOptions | None = None) -> str:
    """One file (``config.json``...) of a local directory or a Hub repo, as a local path."""
    options = options or HubOptions()
    local = local_path(path, options)
    if local is not None:
        return os.path.join(local, filename) if os.path.isdir(local) else local
    fetcher = _Fetcher(_repo_id(os.fspath(path)), options)
    found = fetcher.get(filename)
    if found is None:
        raise fetcher.error(filename)
    return found


def resolve_files(path: str | os.PathLike, required: Iterable[str], optional: Iterable[str] = (),
                  options: HubOptions | None = None, *, any_of: Iterable[str] = ()) -> str:
    """The folder holding ``required`` files, at least one of ``any_of``, and whichever ``optional`` exist."""
    options = options or HubOptions()
    local = local_path(path, options)
    if local is not None:
        return local
    fetcher = _Fetcher(_repo_id(os.fspath(path)), options)
    folder = None
    for name in required:
        found = fetcher.get(name)
        if found is None:
            raise fetcher.error(name)
        folder = _folder_of(found, name)
    any_of = tuple(any_of)
    if any_of:
        got = [f for f in (fetcher.get(n) for n in any_of) if f is not None]
        if not got:
            raise fetcher.error(" or ".join(any_of))
        folder = _folder_of(got[0], os.path.basename(got[0]))
    for name in optional:
        found = fetcher.get(name)
        if found is not None and folder is None:
            folder = _folder_of(found, name)
    if folder is None:
        raise fetcher.error(", ".join(optional))
    return folder


@dataclass(frozen=True)
class Resolved:
    """A checkpoint on disk: its folder, and the one weights file chosen (a name inside it)."""

    folder: str
    weights_file: str | None


def resolve_checkpoint(path: str | os.PathLike, weight_files: Iterable[str], options: HubOptions | None = None, *,
                       config: bool = True) -> Resolved:
    """The config and the first of ``weight_files`` the checkpoint has (with its shards), on disk.

    A local directory is searched for ``weight_files`` in order (None when it has none: the
    caller's reader reports it); a Hub repo downloads only the config (``config=True``) and the one
    weights file it picks; for an index file, the shards it lists.
    """
    options = options or HubOptions()
    weight_files = tuple(weight_files)
    local = local_path(path, options)
    if local is not None:
        if os.path.isdir(local):
            chosen = next((n for n in weight_files if os.path.exists(os.path.join(local, n))), None)
            return Resolved(local, chosen)
        return Resolved(os.path.dirname(local) or ".", os.path.basename(local))
    fetcher = _Fetcher(_repo_id(os.fspath(path)), options)
    folder = None
    if config:
        found = fetcher.get("config.json")
        if found is None:
            raise fetcher.error("config.json")
        folder = os.path.dirname(found)
    for name in weight_files:
        found = fetcher.get(name)
        if found is None:
            continue
        folder = os.path.dirname(found)
        if name.endswith(".index.json"):
            for shard in _shards_of(found):
                if fetcher.get(shard) is None:
                    raise fetcher.error(f"{shard} (a shard listed in {name})")
        return Resolved(folder, name)
    raise fetcher.error("a weights file (" + ", ".join(weight_files) + ")")


def _folder_of(found: str, name: str) -> str:
    # ``name`` may carry a folder of its own inside the repo.
    depth = len([p for p in name.split("/") if p])
    folder = found
    for _ in range(depth):
        folder = os.path.dirname(folder)
    return folder


def _shards_of(index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
        if not isinstance(weight_map, Mapping):
            raise TypeError("weight_map is not an object")
        return sorted(set(map(str, weight_map.values())))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HubError(f"{index_path}: malformed shard index ({exc})") from None


# ------------------------------------------------------------------------------- upload
def push_folder(folder: str | os.PathLike, repo_id: str, *, token: str | bool | None = None,
                private: bool | None = None, commit_message: str | None = None, revision: str | None = None,
                create_pr: bool = False, api: Any = None) -> Any:
    """Create ``repo_id`` if needed and upload ``folder`` to it in one commit; returns the commit info."""
    if api is None:
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise ImportError("push_to_hub needs huggingface_hub (pip install huggingface_hub)") from None
        api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    repo_id = getattr(repo, "repo_id", repo_id)
    return api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), token=token,
                             commit_message=commit_message or "Upload ConvBERT checkpoint with convbert",
                             revision=revision, create_pr=create_pr)
