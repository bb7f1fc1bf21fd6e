"""Conversion between the framework-free formats, and every way it must refuse to write."""

import json
import os
import shutil

import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common.config import ConvBertConfig
from convbert_common.formats import head_from_config
from convbert_tools import convert as conv
from convbert_tools.cli import main
from tests.conftest import fixture_file


def read_all(folder):
    config = ConvBertConfig.from_pretrained(folder)
    return ck.load_for_model(config, head_from_config(config), folder).tensors


@pytest.mark.parametrize("chain", [["pytorch-bin", "safetensors"], ["hf-tf-h5", "safetensors"],
                                   ["hf-tf-h5", "pytorch-bin", "hf-tf-h5", "safetensors"]])
def test_round_trips_through_formats_are_bit_identical(seqcls, tmp_path, chain):
    ref = read_all(seqcls)
    src = seqcls
    for i, fmt in enumerate(chain):
        dst = tmp_path / f"step{i}"
        conv.convert(str(src), str(dst), to=fmt, progress=False)
        assert (dst / "vocab.txt").exists() and (dst / "config.json").exists()
        src = dst
    back = read_all(src)
    assert back.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k], err_msg=k)


def test_float16_conversion_records_dtype_and_rounds_every_tensor(seqcls, tmp_path):
    conv.convert(str(seqcls), str(tmp_path / "half"), to="safetensors", dtype="float16", progress=False)
    raw = ck.read_safetensors(tmp_path / "half" / "model.safetensors")
    assert {v.dtype for v in raw.values()} == {np.dtype(np.float16)}
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "float16"


def test_existing_destination_is_refused_without_force(seqcls, tmp_path):
    dst = tmp_path / "out"
    conv.convert(str(seqcls), str(dst), to="pytorch-bin", progress=False)
    with pytest.raises(FileExistsError, match="already exists .pass --force"):
        conv.convert(str(seqcls), str(dst), progress=False)
    assert (dst / "pytorch_model.bin").exists()
    # --force replaces a previous output (a directory of checkpoint files only)...
    conv.convert(str(seqcls), str(dst), force=True, progress=False)
    assert not (dst / "pytorch_model.bin").exists() and (dst / "model.safetensors").exists()
    # ...and nothing else (tests/common/test_hostile_destinations.py has the rest).
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="1 entry that is not a checkpoint file.*: keep.txt"):
        conv.convert(str(seqcls), str(dst), force=True, progress=False)
    assert (dst / "keep.txt").read_text() == "mine"


def test_failure_midway_leaves_no_destination_and_no_temporaries(seqcls, tmp_path, monkeypatch):
    def broken(path, tensors):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ck, "write_safetensors", broken)
    with pytest.raises(OSError, match="No space left"):
        conv.convert(str(seqcls), str(tmp_path / "out"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seqcls"]


def test_bad_sources_raise_naming_the_problem(seqcls, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(seqcls / "config.json", empty / "config.json")
    with pytest.raises(ck.CheckpointError, match="empty: no weights file"):
        conv.convert(str(empty), str(tmp_path / "o1"), progress=False)
    other = tmp_path / "bert"
    shutil.copytree(seqcls, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type is 'bert'"):
        conv.convert(str(other), str(tmp_path / "o2"), progress=False)
    (other / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(ck.CheckpointError, match=r"checkpoint shape \(32, 8\), model expects \(64, 8\)"):
        conv.convert(str(other), str(tmp_path / "o3"), progress=False)
    with pytest.raises(ValueError, match="unknown --to 'onnx'"):
        conv.convert(str(seqcls), str(tmp_path / "o4"), to="onnx", progress=False)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        conv.convert(str(tmp_path / "nope"), str(tmp_path / "o5"), progress=False)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_cli_convert_reports_and_returns_error_codes(seqcls, tmp_path, capsys):
    assert main(["convert", str(seqcls), str(tmp_path / "a"), "--to", "hf-tf-h5", "-q"]) == 0
    assert "ConvBertForSequenceClassification" in capsys.readouterr().out
    assert main(["convert", str(seqcls), str(tmp_path / "a"), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "a")]) == 0
    assert "tf_model.h5 (hf_tf), 57 tensors" in capsys.readouterr().out


tf = pytest.importorskip("tensorflow", reason="reading TF1 checkpoints needs tensorflow")


def tf1_dir():
    return fixture_file("tf1-original/model.ckpt.index").parent


def test_tf1_discriminator_import_maps_every_variable_and_reports_the_rest(tmp_path):
    loaded = conv.convert(str(tf1_dir()), str(tmp_path / "disc"), progress=False)
    assert loaded.head.name == "model" and len(loaded.tensors) == 53
    whys = {}
    for why in loaded.skipped.values():
        whys[why] = whys.get(why, 0) + 1
    assert whys == {"optimizer slot": 216, "training step counter": 1,
                    "replaced-token-detection head (import it with --pretraining)": 4,
                    "generator (import it with --generator or --pretraining)": 51}
    raw = ck.read_tf1_checkpoint(tf1_dir())
    written = read_all(tmp_path / "disc")
    np.testing.assert_array_equal(written["encoder.layer.1.attention.self.query.weight"],
                                  raw["electra/encoder/layer_1/attention/self/query/kernel"].T)
    np.testing.assert_array_equal(written["encoder.layer.0.attention.self.key_conv_attn_layer.depthwise.weight"],
                                  raw["electra/encoder/layer_0/attention/self/conv_attn_key/depthwise_kernel"]
                                  .transpose(1, 2, 0))
    assert (tmp_path / "disc" / "vocab.txt").exists()


def test_tf1_generator_import_shares_the_discriminator_embeddings(tmp_path):
    loaded = conv.convert(str(tf1_dir()), str(tmp_path / "gen"), generator=True, progress=False)
    assert loaded.head.name == "masked_lm" and len(loaded.tensors) == 56
    raw = ck.read_tf1_checkpoint(tf1_dir())
    written = read_all(tmp_path / "gen")
    np.testing.assert_array_equal(written["convbert.embeddings.word_embeddings.weight"],
                                  raw["electra/embeddings/word_embeddings"])
    np.testing.assert_array_equal(written["generator_lm_head.bias"], raw["generator_predictions/output_bias"])
    cfg = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert cfg["architectures"] == ["ConvBertForMaskedLM"] and cfg["hidden_size"] == 16


def test_tf1_with_a_config_that_does_not_match_names_the_missing_variable(tmp_path):
    cfg = json.loads((tf1_dir() / "config.json").read_text())
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(ck.CheckpointError, match=r"\(electra/\): the checkpoint holds 2 encoder layers \(0..1\) "
                                                 r"but the config says num_hidden_layers=3"):
        conv.convert(str(tf1_dir()), str(tmp_path / "x"), config_path=str(bad), progress=False)
    bad.write_text(json.dumps({**cfg, "intermediate_size": 32}))
    with pytest.raises(ck.CheckpointError, match=r"intermediate/dense/kernel: expected transpose target shape"):
        conv.convert(str(tf1_dir()), str(tmp_path / "y"), config_path=str(bad), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_written_files_get_ordinary_permissions(seqcls, tmp_path):
    mask = os.umask(0o022)
    try:
        conv.convert(str(seqcls), str(tmp_path / "perm"), progress=False)
    finally:
        os.umask(mask)
    assert oct((tmp_path / "perm").stat().st_mode & 0o777) == oct(0o755)
    assert oct((tmp_path / "perm" / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)


def test_bfloat16_conversion_stores_bf16_and_reads_back_as_the_rounded_float32(seqcls, tmp_path):
    import ml_dtypes

    conv.convert(str(seqcls), str(tmp_path / "bf16"), to="safetensors", dtype="bfloat16", progress=False)
    with open(tmp_path / "bf16" / "model.safetensors", "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    ref = read_all(seqcls)
    back = read_all(tmp_path / "bf16")
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k].astype(ml_dtypes.bfloat16).astype(np.float32), err_msg=k)


def test_safetensors_we_write_read_back_exactly_and_in_the_safetensors_library(tmp_path):
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    tensors = {"f32": rng.random((3, 4), dtype=np.float32), "f16": rng.random((2, 3)).astype(np.float16),
               "i64": np.arange(5, dtype=np.int64), "scalar": np.array(1.5, np.float32),
               "empty": np.zeros((0, 3), np.float32), "big_endian": rng.random((2, 2)).astype(">f4"),
               "transposed": rng.random((4, 3), dtype=np.float32).T, "mask": np.array([True, False])}
    path = tmp_path / "x.safetensors"
    ck.write_safetensors(path, {**tensors, "bf16": rng.random(4).astype(ml_dtypes.bfloat16)})
    theirs = load_file(path)  # the reference reader validates header, offsets and coverage
    mine = ck.read_safetensors(path)
    for name, value in tensors.items():
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)
        np.testing.assert_array_equal(mine[name], value, err_msg=name)
        assert mine[name].shape == value.shape and mine[name].dtype == value.dtype.newbyteorder("="), name
    assert mine["bf16"].dtype == np.float32
    np.testing.assert_array_equal(mine["bf16"], theirs["bf16"].astype(np.float32))
    # And files of the safetensors writer read the same.
    native = {k: v for k, v in tensors.items() if k not in ("big_endian", "transposed")}
    save_file(native, tmp_path / "theirs.safetensors")
    for name, value in ck.read_safetensors(tmp_path / "theirs.safetensors").items():
        np.testing.assert_array_equal(value, native[name], err_msg=name)


def test_inconsistent_safetensors_headers_raise_naming_file_and_tensor(tmp_path):
    path = tmp_path / "x.safetensors"
    ck.write_safetensors(path, {"a": np.zeros((2, 3), np.float32)})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["a"]["shape"] = [3, 3]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    with pytest.raises(ck.CheckpointError, match=r"x.safetensors: not a readable safetensors file "
                                                 r"\(a: data offsets 0..24 do not hold a F32 tensor of shape \[3, 3\]"):
        ck.read_safetensors(path)
    header["a"]["shape"], header["a"]["dtype"] = [2, 3], "C64"
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    with pytest.raises(ck.CheckpointError, match="a: unsupported dtype C64"):
        ck.read_safetensors(path)
