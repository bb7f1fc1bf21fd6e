"""Issue 15, errors users can read (items 13 and 14): one line naming the file and the problem, exit 1.

A failure the user can cause must never end in a traceback; one that blames the wrong cause or
names no file is as bad. A bug of ours says so, and shows its traceback under ``-v``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil

import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_tools import convert as conv
from convbert_tools.cli import main
from tests.conftest import fixture_file
from tests.hostile import one_line_error, snapshot, truncated_tf1_copy


def _fails_in_one_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    return one_line_error(capsys, argv[0])


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE for this process: writes past ``nbytes`` fail with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# ------------------------------------------------------------------ item 13: no tracebacks
def test_a_sparse_tensor_in_a_bin(seqcls, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in ck.read_safetensors(seqcls / "model.safetensors").items()}
    name = "convbert.embeddings.LayerNorm.weight"
    state[name] = state[name].to_sparse()
    os.remove(seqcls / "model.safetensors")
    torch.save(state, seqcls / "pytorch_model.bin")
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert line.endswith(f"{seqcls / 'pytorch_model.bin'}: entry '{name}' is a sparse_coo tensor; only dense "
                         "tensors are weights")


def test_a_truncated_tf1_data_file(tmp_path, capsys):
    src = truncated_tf1_copy(tmp_path, 1 / 2)
    line = _fails_in_one_line(capsys, ["convert", str(src), str(tmp_path / "out"), "-q"])
    assert f"{src / 'model.ckpt'}: variable " in line
    assert "cannot be read from the data shard, truncated or corrupt? (Read less bytes than requested)" in line
    assert not (tmp_path / "out").exists()


def test_deeply_nested_json_names_the_config(seqcls, tmp_path, capsys):
    (seqcls / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    line = _fails_in_one_line(capsys, ["info", str(seqcls)])
    assert line.endswith(f"{seqcls / 'config.json'}: the JSON is nested too deeply to be a model config")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_initializer_range(seqcls, tmp_path, capsys, value):
    cfg = json.loads((seqcls / "config.json").read_text())
    (seqcls / "config.json").write_text(json.dumps({**cfg, "initializer_range": float(value)}))
    assert value in (seqcls / "config.json").read_text()
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert line.endswith(f"initializer_range must be a positive finite number, got {float(value)}")


@pytest.mark.parametrize("to", ["safetensors", "pytorch-bin", "hf-tf-h5"])
def test_efbig_while_writing_names_the_file(seqcls, tmp_path, capsys, to):
    if to == "pytorch-bin":
        pytest.importorskip("torch")
    if to == "hf-tf-h5":
        pytest.importorskip("h5py")
    dst = tmp_path / "out"
    before = snapshot(tmp_path)
    with file_size_limit(64 << 10):
        code = main(["convert", str(seqcls), str(dst), "--to", to, "-q"])
    assert code == 1
    line = one_line_error(capsys, "convert")
    weights = {"safetensors": "model.safetensors", "pytorch-bin": "pytorch_model.bin", "hf-tf-h5": "tf_model.h5"}[to]
    assert f"{weights}: cannot write (File too large)" in line
    assert snapshot(tmp_path) == before  # no destination, no temporaries


def test_memory_error_is_one_line(seqcls, tmp_path, capsys, monkeypatch):
    def too_big(path):
        raise MemoryError("Unable to allocate 24.0 GiB for an array with shape (6000000000,) and data type float32")

    monkeypatch.setattr(ck, "read_safetensors", too_big)
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert line == ("convbert convert: error: out of memory (Unable to allocate 24.0 GiB for an array with shape "
                    "(6000000000,) and data type float32): the input is larger than this machine can hold (is the "
                    "config what the checkpoint is?)")


def test_a_bug_of_ours_says_so_and_shows_its_traceback_with_v(seqcls, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        return {}["no such key"]

    monkeypatch.setattr(conv, "read_source", broken)
    assert main(["convert", str(seqcls), str(tmp_path / "a"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err == ("convbert convert: internal error: KeyError: 'no such key'; this is a bug of convbert (run "
                   "again with -v for the traceback)\n")
    assert main(["-v", "convert", str(seqcls), str(tmp_path / "b"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'return {}["no such key"]' in err
    assert err.rstrip().endswith("internal error: KeyError: 'no such key'; this is a bug of convbert")


# ------------------------------------------------------------------ item 14: the right cause, the file
def test_an_empty_bin_is_called_empty_not_a_pickle_problem(seqcls, tmp_path, capsys):
    pytest.importorskip("torch")
    os.remove(seqcls / "model.safetensors")
    (seqcls / "pytorch_model.bin").write_bytes(b"")
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert line.endswith(f"{seqcls / 'pytorch_model.bin'}: the file is empty (0 bytes); was it truncated?")
    assert "pickle" not in line


def test_a_truncated_bin_is_called_truncated_and_a_pickle_bomb_refused(seqcls, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    os.remove(seqcls / "model.safetensors")
    torch.save({"a": torch.ones(1000)}, seqcls / "pytorch_model.bin")
    data = (seqcls / "pytorch_model.bin").read_bytes()
    (seqcls / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert "pytorch_model.bin: not a readable PyTorch file, truncated or corrupt?" in line and "pickle" not in line

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"a": Payload()}, seqcls / "pytorch_model.bin")
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert "pytorch_model.bin: refused by torch.load(weights_only=True)" in line
    assert line.endswith("files that need arbitrary pickle code are not loaded")


def test_a_tf1_shard_without_its_index_is_named(tmp_path, capsys):
    src = tmp_path / "tf1"
    shutil.copytree(fixture_file("tf1-original/model.ckpt.index").parent, src)
    os.remove(src / "model.ckpt.index")
    line = _fails_in_one_line(capsys, ["convert", str(src), str(tmp_path / "out"), "-q"])
    assert line.endswith(f"{src}: no weights file; model.ckpt.data-00000-of-00001 is a TF1 checkpoint shard, but its "
                         "index model.ckpt.index is not beside it (copy it too)")


def test_a_config_that_is_not_utf8_is_named(seqcls, tmp_path, capsys):
    (seqcls / "config.json").write_bytes(b'{"hidden_size": 32, "x": "\xff\xfe"}')
    line = _fails_in_one_line(capsys, ["info", str(seqcls)])
    assert line.endswith(f"{seqcls / 'config.json'} is not UTF-8 text (invalid start byte at byte 26)")


def test_read_errors_that_name_no_file_get_the_source_named(seqcls, tmp_path, capsys, monkeypatch):
    def short(path):
        raise OSError("short read at 1234")

    monkeypatch.setattr(ck, "read_safetensors", short)
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert line.endswith(f"error: {seqcls}: short read at 1234")

    def undecodable(path):
        return b"\xff".decode("utf-8")

    monkeypatch.setattr(ck, "read_safetensors", undecodable)
    line = _fails_in_one_line(capsys, ["convert", str(seqcls), str(tmp_path / "out"), "-q"])
    assert line.endswith(f"error: {seqcls}: a file in it is not UTF-8 text (invalid start byte at byte 0)")


def _poison(seqcls, name: str, value: float) -> None:
    tensors = ck.read_safetensors(seqcls / "model.safetensors")
    tensors[name] = tensors[name].copy()
    tensors[name].reshape(-1)[:3] = value
    ck.write_safetensors(seqcls / "model.safetensors", tensors)


def test_verify_names_non_finite_weights_instead_of_reporting_a_mismatch(seqcls, capsys):
    _poison(seqcls, "classifier.out_proj.weight", np.nan)
    line = _fails_in_one_line(capsys, ["verify", str(seqcls)])
    assert line.endswith(f"{seqcls / 'model.safetensors'}: 1 weight tensor(s) hold values that are not finite: "
                         "classifier.out_proj.weight (3 NaN); there is nothing to compare")


def test_info_reports_non_finite_weights_by_name(seqcls, capsys):
    _poison(seqcls, "classifier.out_proj.weight", np.nan)
    _poison(seqcls, "convbert.embeddings.LayerNorm.bias", -np.inf)
    assert main(["info", str(seqcls)]) == 0
    out = capsys.readouterr().out
    assert ("NOT FINITE        2 tensor(s): convbert.embeddings.LayerNorm.bias (3 inf), "
            "classifier.out_proj.weight (3 NaN)") in out
