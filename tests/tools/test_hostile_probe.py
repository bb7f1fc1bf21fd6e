"""Issue 15's probe, re-run: every CLI-reachable case of the issue, against the CLI's contract.

Each case builds its bad input in a temporary directory and runs ``convbert`` in-process. The
contract, for every case the user causes: exit code 1, exactly one line on stderr that starts with
``convbert COMMAND: error:`` and names the offending file, no traceback, and nothing outside the
destination changed (nor the destination created). The exact wording of each refusal is asserted
by the test module of its group (``tests/common/test_hostile_*.py``, ``tests/tools/test_hostile_errors.py``);
here every case meets the same bar.

Cases whose fix belongs to another part of the issue (HDF5 external storage, safetensors shards
and offsets, the ``.keras`` reader, the vocabulary) are marked with that item; until it lands they
are expected to fail (non-strict, so that the fix turns them green without an edit).

Not CLI-reachable, tested elsewhere: races and SIGTERM (``tests/common/test_hostile_destinations.py``),
XLA / torch.compile training and model inputs (``tests/cross/test_hostile_inputs.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_tools.cli import main
from tests.conftest import fixture_file
from tests.hostile import snapshot, truncated_tf1_copy
from tests.tools.test_hostile_errors import file_size_limit

QUERY = "convbert.encoder.layer.0.attention.self.query.weight"


def _tensors(folder):
    return ck.read_safetensors(folder / "model.safetensors")


def _config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def _safetensors_bytes(entries: list[tuple[str, str, list[int], int, int]], data: bytes) -> bytes:
    header = {name: {"dtype": dtype, "shape": shape, "data_offsets": [a, b]} for name, dtype, shape, a, b in entries}
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


# ------------------------------------------------------------------ the cases: (argv, what the line must name)
def c_hdf5_external(seqcls, tmp):
    import h5py

    secret = tmp / "secret.key"
    secret.write_bytes(np.arange(8, dtype=np.float32).tobytes() * 4)
    from convbert_common.config import ConvBertConfig

    cfg = ConvBertConfig.from_pretrained(seqcls)
    tensors = ck.load_for_model(cfg, "sequence_classification", seqcls).tensors
    h5 = seqcls / "tf_model.h5"
    ck.write_hf_tf_h5(h5, cfg, "sequence_classification", tensors)
    with h5py.File(h5, "r+") as fh:
        names = []
        fh.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and "LayerNorm/gamma" in n else None)
        name = names[0]
        shape = fh[name].shape
        del fh[name]
        fh.create_dataset(name, shape=shape, dtype="<f4", external=[(str(secret), 0, 4 * int(np.prod(shape)))])
    os.remove(seqcls / "model.safetensors")
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "tf_model.h5"


def c_index_absolute_shard(seqcls, tmp):
    secret = tmp / "secret.safetensors"
    shutil.copy(seqcls / "model.safetensors", secret)
    os.remove(seqcls / "model.safetensors")
    weight_map = {name: str(secret) for name in ck.read_safetensors(secret)}
    (seqcls / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "secret.safetensors"


def c_index_parent_shard(seqcls, tmp):
    shutil.copy(seqcls / "model.safetensors", tmp / "outside.safetensors")
    os.remove(seqcls / "model.safetensors")
    weight_map = {name: "../outside.safetensors" for name in ck.read_safetensors(tmp / "outside.safetensors")}
    (seqcls / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "outside.safetensors"


def c_overlapping_offsets(seqcls, tmp):
    tensors = _tensors(seqcls)
    entries, data, offset, aliased = [], b"", 0, False
    for name, value in tensors.items():
        raw = value.astype("<f4").tobytes()
        if not aliased and data and value.nbytes <= len(data):  # a tensor reading the bytes of those before it
            entries.append((name, "F32", list(value.shape), 0, value.nbytes))
            aliased = True
            continue
        entries.append((name, "F32", list(value.shape), offset, offset + len(raw)))
        data += raw
        offset += len(raw)
    assert aliased
    (seqcls / "model.safetensors").write_bytes(_safetensors_bytes(entries, data))
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "model.safetensors"


def c_trailing_bytes(seqcls, tmp):
    with open(seqcls / "model.safetensors", "ab") as fh:
        fh.write(b"\0" * 64)
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "model.safetensors"


def c_source_onto_itself(seqcls, tmp):
    return ["convert", str(seqcls), str(seqcls), "--force", "-q"], str(seqcls)


def c_destination_holding_the_source(seqcls, tmp):
    return ["convert", str(seqcls), str(tmp), "--force", "-q"], str(seqcls)


def c_destination_inside_the_source(seqcls, tmp):
    return ["convert", str(seqcls), str(seqcls / "inner"), "-q"], str(seqcls)


def c_force_over_unrelated_files(seqcls, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "thesis.tex").write_text("years of work")
    return ["convert", str(seqcls), str(tmp / "out"), "--force", "-q"], "thesis.tex"


def c_tf1_more_layers_than_config(seqcls, tmp):
    pytest.importorskip("tensorflow")
    src = tmp / "tf1"
    shutil.copytree(fixture_file("tf1-original/model.ckpt.index").parent, src)
    (src / "config.json").write_text(json.dumps({**_config(src), "num_hidden_layers": 1}))
    return ["convert", str(src), str(tmp / "out"), "-q"], str(src)


def c_int8_weights(seqcls, tmp):
    tensors = _tensors(seqcls)
    tensors[QUERY] = np.full(tensors[QUERY].shape, -2, np.int8)
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], QUERY


def c_complex_weights(seqcls, tmp):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in _tensors(seqcls).items()}
    state[QUERY] = state[QUERY].to(torch.complex64)
    torch.save(state, seqcls / "pytorch_model.bin")
    os.remove(seqcls / "model.safetensors")
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], QUERY


def _nan_field(field: str):
    def case(seqcls, tmp):
        (seqcls / "config.json").write_text(json.dumps({**_config(seqcls), field: float("nan")}))
        return ["convert", str(seqcls), str(tmp / "out"), "-q"], "config.json"
    return case


def c_architectures_string(seqcls, tmp):
    (seqcls / "config.json").write_text(json.dumps({**_config(seqcls), "architectures": "ConvBertForMaskedLM"}))
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "config.json"


def c_architectures_unknown(seqcls, tmp):
    (seqcls / "config.json").write_text(json.dumps({**_config(seqcls), "architectures": ["BertForMaskedLM"]}))
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "BertForMaskedLM"


def c_symlink_loop(seqcls, tmp):
    torch = pytest.importorskip("torch")
    torch.save({k: torch.from_numpy(v) for k, v in _tensors(seqcls).items()}, seqcls / "pytorch_model.bin")
    os.remove(seqcls / "model.safetensors")
    os.symlink("model.safetensors", seqcls / "model.safetensors")
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "model.safetensors"


def c_vocab_duplicates(seqcls, tmp):
    lines = (seqcls / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (seqcls / "vocab.txt").write_text("\n".join([*lines, lines[5], lines[7]]) + "\n", encoding="utf-8")
    for name in ("tokenizer.json",):
        os.remove(seqcls / name)
    return ["verify", str(seqcls), "--text", "hello world"], "vocab.txt"


def c_float16_overflow(seqcls, tmp):
    tensors = _tensors(seqcls)
    tensors[QUERY] = tensors[QUERY] * 0 + 1e5
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    return ["convert", str(seqcls), str(tmp / "out"), "--dtype", "float16", "-q"], QUERY


def c_million_layers_info(seqcls, tmp):
    (seqcls / "config.json").write_text(json.dumps({**_config(seqcls), "num_hidden_layers": 1_000_000}))
    return ["info", str(seqcls)], "model.safetensors"


def c_million_layers_convert(seqcls, tmp):
    (seqcls / "config.json").write_text(json.dumps({**_config(seqcls), "num_hidden_layers": 1_000_000}))
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "model.safetensors"


def _keras_file(seqcls, tmp):
    pytest.importorskip("keras")
    path = tmp / "model.keras"
    assert main(["convert", str(seqcls), str(path), "--to", "keras", "-q"]) == 0
    return path


def _rewrite_member(path, name: str, data: bytes, *, compress: bool = False) -> None:
    with zipfile.ZipFile(path) as zf:
        members = [(i, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, content in members:
            if info.filename == name:
                zf.writestr(name, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
            else:
                zf.writestr(info, content)


def c_keras_config_bomb(seqcls, tmp):
    path = _keras_file(seqcls, tmp)
    _rewrite_member(path, "config.json", b'{"a": "' + b" " * (96 << 20) + b'"}', compress=True)
    return ["convert", str(path), str(tmp / "out"), "-q"], "model.keras"


def c_keras_config_crc(seqcls, tmp):
    path = _keras_file(seqcls, tmp)
    data = bytearray(path.read_bytes())
    at = data.find(b'"class_name"')
    data[at + 1] ^= 0x20
    path.write_bytes(bytes(data))
    return ["convert", str(path), str(tmp / "out"), "-q"], "model.keras"


def c_keras_million_layers(seqcls, tmp):
    path = _keras_file(seqcls, tmp)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    text = json.dumps(config).replace('"num_hidden_layers": 2', '"num_hidden_layers": 1000000')
    _rewrite_member(path, "config.json", text.encode())
    return ["convert", str(path), str(tmp / "out"), "-q"], "model.keras"


def c_sparse_bin(seqcls, tmp):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in _tensors(seqcls).items()}
    state[QUERY] = state[QUERY].to_sparse()
    torch.save(state, seqcls / "pytorch_model.bin")
    os.remove(seqcls / "model.safetensors")
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "pytorch_model.bin"


def c_truncated_tf1_data(seqcls, tmp):
    src = truncated_tf1_copy(tmp, 1 / 3)
    return ["convert", str(src), str(tmp / "out"), "-q"], "model.ckpt"


def c_deep_json(seqcls, tmp):
    (seqcls / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    return ["info", str(seqcls)], "config.json"


def c_truncated_safetensors(seqcls, tmp):
    data = (seqcls / "model.safetensors").read_bytes()
    (seqcls / "model.safetensors").write_bytes(data[: len(data) * 2 // 3])
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "model.safetensors"


def c_empty_bin(seqcls, tmp):
    pytest.importorskip("torch")
    os.remove(seqcls / "model.safetensors")
    (seqcls / "pytorch_model.bin").write_bytes(b"")
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "pytorch_model.bin"


def c_tf1_without_index(seqcls, tmp):
    src = tmp / "tf1"
    shutil.copytree(fixture_file("tf1-original/model.ckpt.index").parent, src)
    os.remove(src / "model.ckpt.index")
    return ["convert", str(src), str(tmp / "out"), "-q"], "model.ckpt.data-00000-of-00001"


def c_config_not_utf8(seqcls, tmp):
    (seqcls / "config.json").write_bytes(b'{"vocab_size": 99, "name": "\xe9t\xe9"}')
    return ["convert", str(seqcls), str(tmp / "out"), "-q"], "config.json"


def c_nan_weights_verify(seqcls, tmp):
    tensors = _tensors(seqcls)
    tensors[QUERY] = tensors[QUERY].copy()
    tensors[QUERY][0, 0] = np.nan
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    return ["verify", str(seqcls)], QUERY


def _efbig(to: str, suffix: str = "", limit: int = 64 << 10):
    """Writing ``to`` with a file-size limit below the checkpoint's size (the Keras writer first
    saves a small skeleton model, which must fit)."""
    def case(seqcls, tmp):
        if to == "keras":
            pytest.importorskip("keras")
        return ["convert", str(seqcls), str(tmp / f"out{suffix}"), "--to", to, "-q"], f"out{suffix}"
    case.efbig = limit
    return case


CASES = {
    "1 hdf5 external storage": c_hdf5_external,
    "2 index shard absolute": c_index_absolute_shard,
    "2 index shard ../": c_index_parent_shard,
    "3 convert SRC SRC --force": c_source_onto_itself,
    "3 destination holding the source": c_destination_holding_the_source,
    "3 destination inside the source": c_destination_inside_the_source,
    "3 --force over unrelated files": c_force_over_unrelated_files,
    "5 TF1 with more layers than config": c_tf1_more_layers_than_config,
    "6 overlapping offsets": c_overlapping_offsets,
    "6 trailing bytes": c_trailing_bytes,
    "7 int8 weights": c_int8_weights,
    "7 complex weights": c_complex_weights,
    "8 NaN layer_norm_eps": _nan_field("layer_norm_eps"),
    "8 NaN initializer_range": _nan_field("initializer_range"),
    "10 architectures a string": c_architectures_string,
    "10 architectures unknown": c_architectures_unknown,
    "10 symlink-loop model.safetensors": c_symlink_loop,
    "10 vocab duplicates": c_vocab_duplicates,
    "10 float16 overflow": c_float16_overflow,
    "11 million layers: info": c_million_layers_info,
    "11 million layers: convert": c_million_layers_convert,
    "11 million layers in a .keras": c_keras_million_layers,
    "12 .keras config bomb": c_keras_config_bomb,
    "13 sparse tensor in a .bin": c_sparse_bin,
    "13 .keras config CRC": c_keras_config_crc,
    "13 truncated TF1 data": c_truncated_tf1_data,
    "13 deeply nested JSON": c_deep_json,
    "13 EFBIG safetensors": _efbig("safetensors"),
    "13 EFBIG pytorch-bin": _efbig("pytorch-bin"),
    "13 EFBIG hf-tf-h5": _efbig("hf-tf-h5"),
    "13 EFBIG keras": _efbig("keras", ".keras", 512 << 10),
    "14 truncated safetensors": c_truncated_safetensors,
    "14 empty .bin": c_empty_bin,
    "14 TF1 shard without its index": c_tf1_without_index,
    "14 config.json not UTF-8": c_config_not_utf8,
    "14 NaN weights in verify": c_nan_weights_verify,
}


@pytest.fixture(autouse=True)
def _bounded_specs(monkeypatch):
    """A reader that would build the specs of a million layers fails at once instead of using GBs."""
    from convbert_common import weight_map as wm

    original = wm.backbone_specs

    def guarded(config, **kwargs):
        if config.num_hidden_layers > 64:
            raise AssertionError(f"spec list built for {config.num_hidden_layers} layers")
        return original(config, **kwargs)

    monkeypatch.setattr(wm, "backbone_specs", guarded)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_every_cli_reachable_case_ends_in_one_line_exit_1_and_changes_nothing(case, seqcls, tmp_path, capsys):
    argv, names = case(seqcls, tmp_path)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    if getattr(case, "efbig", None):
        with file_size_limit(case.efbig):
            code = main(argv)
    else:
        code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"convbert {argv[0]}: error: "), lines[0]
    assert "internal error" not in lines[0]
    assert names in lines[0], f"the message does not name {names}: {lines[0]}"
    assert snapshot(tmp_path) == before, "files outside the destination changed"
    assert not os.path.exists(out) or out.is_dir() and "thesis.tex" in os.listdir(out)
