"""Shared test set-up: fixture lookup, markers, thread limits."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

# Triton's LLVM must be loaded before TensorFlow's XLA: in the other order the process aborts with
# an LLVM error as soon as torch.compile or torch._dynamo (even torch.optim) loads Triton. A
# subprocess that imported TensorFlow first and only imports this module for its helpers must not
# load Triton at all.
if "tensorflow" not in sys.modules:
    try:
        import triton  # noqa: F401
    except ImportError:
        pass

TESTS = pathlib.Path(__file__).resolve().parent
REPO_FIXTURES = TESTS / "fixtures"
# The reference fixtures of the workspace, beside the repository (present in CI and on dev machines).
SHARED_FIXTURES = TESTS.parent.parent / "shared" / "fixtures"

# The tiny reference checkpoints (one folder per head) written by the reference implementation.
TINY = "hf-convbert-tiny"
HEADS = (
    "model",
    "masked_lm",
    "sequence_classification",
    "multiple_choice",
    "token_classification",
    "question_answering",
)


def _bin_from_safetensors(folder: pathlib.Path) -> None:
    """HF's ``pytorch_model.bin``: ``torch.save`` of the same state dict (plain contiguous tensors)."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")


def _vocab_copy(folder: pathlib.Path) -> None:
    shutil.copy(REPO_FIXTURES / "tokenizer" / "vocab.txt", folder / "vocab.txt")


def _gunzip_tokenizer_json(folder: pathlib.Path) -> None:
    (folder / "tokenizer.json").write_bytes(gzip.decompress((folder / "tokenizer.json.gz").read_bytes()))
    (folder / "tokenizer.json.gz").unlink()


# Reference files committed in a smaller form, to keep tests/fixtures within its size budget: the same
# tensors as a committed safetensors file, a copy of a committed vocabulary, a gzipped JSON. When
# neither tests/fixtures nor ../shared/fixtures holds the file itself, fixture_file rebuilds its folder
# once (the committed files plus these) in a temporary directory.
_DERIVED = {
    "hf-convbert-tiny/model/pytorch_model.bin": _bin_from_safetensors,
    "tokenizer/hf_tokenizer_uncased/vocab.txt": _vocab_copy,
    "tokenizer/hf_tokenizer_uncased/tokenizer.json": _gunzip_tokenizer_json,
}


def _derived_folder(relative_folder: str) -> pathlib.Path:
    source = REPO_FIXTURES / relative_folder
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = pathlib.Path(tempfile.gettempdir()) / f"convbert-fixtures-{digest.hexdigest()[:16]}" / relative_folder
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        for path in source.iterdir():
            shutil.copy(path, staging / path.name)
        for relative, build in _DERIVED.items():
            if relative.rpartition("/")[0] == relative_folder:
                build(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same folder first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fixture_file(relative: str) -> pathlib.Path:
    """A reference fixture: the repository copy if committed, else the shared one, else the one rebuilt
    from its committed smaller form (``_DERIVED``), else skip (named)."""
    for root in (REPO_FIXTURES, SHARED_FIXTURES):
        path = root / relative
        if path.exists():
            return path
    if relative in _DERIVED:
        return _derived_folder(relative.rpartition("/")[0]) / relative.rpartition("/")[2]
    pytest.skip(f"reference fixture {relative} is neither in tests/fixtures nor in ../shared/fixtures")


def hf_tokenizer_dir() -> pathlib.Path:
    """HF's ``save_pretrained`` folder of the uncased vocabulary (tokenizer.json, vocab.txt, configs)."""
    return fixture_file("tokenizer/hf_tokenizer_uncased/tokenizer.json").parent


def head_dir(head: str, weights_file: str = "model.safetensors") -> pathlib.Path:
    """The tiny reference checkpoint folder of ``head`` that holds ``weights_file`` (see fixture_file)."""
    return fixture_file(f"{TINY}/{head}/{weights_file}").parent


def config_less_checkpoint(tmp_path: pathlib.Path) -> pathlib.Path:
    """A Trainer-style ``checkpoint-10`` folder: the sequence-classification weights without a config.json."""
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    shutil.copy(head_dir("sequence_classification") / "model.safetensors", folder)
    return folder


# The Keras backend this run uses (KERAS_BACKEND, as Keras reads it); tests marked
# ``tensorflow_backend`` exercise TensorFlow's own features and are skipped on the others.
KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def pytest_collection_modifyitems(config, items):
    if KERAS_BACKEND != "tensorflow":
        skip_tf = pytest.mark.skip(reason=f"needs Keras on TensorFlow; this run is KERAS_BACKEND={KERAS_BACKEND}")
        once = pytest.mark.skip(reason=f"run once, on the TensorFlow backend (tensorflow_leg); this run is "
                                       f"KERAS_BACKEND={KERAS_BACKEND}")
        for item in items:
            if "tensorflow_backend" in item.keywords:
                item.add_marker(skip_tf)
            elif "tensorflow_leg" in item.keywords:
                item.add_marker(once)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No test reaches the network: Hub ids resolve from fake caches in tmp_path (tests/hub_cache.py).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite compiles hundreds of small XLA programs (JAX, jit_compile=True) and runs each a few times:
# LLVM's -O0 compiles them in about half the time, which outweighs the slower code. It changes no
# HLO pass and no floating-point rule (fast math stays off); the backend legs' subprocesses inherit it.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


@pytest.fixture
def seqcls(tmp_path):
    """A writable copy, ``tmp_path / "seqcls"``, of the sequence-classification fixture (config, weights)
    with the demo checkpoint's tokenizer files, as a user's checkpoint directory has them."""
    from convbert_common.formats import TOKENIZER_FILES
    from convbert_tools.cli import demo_checkpoint_dir

    src = fixture_file("hf-convbert-tiny/sequence_classification/model.safetensors").parent
    dst = tmp_path / "seqcls"
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(demo_checkpoint_dir(), name)):
            shutil.copy(os.path.join(demo_checkpoint_dir(), name), dst / name)
    return dst
