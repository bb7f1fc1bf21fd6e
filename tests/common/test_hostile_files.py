"""Crafted and damaged checkpoint files (issue 15, items 1, 2, 6 and 14): each is refused with a
message naming the file and what is wrong, nothing is written, and nothing outside the checkpoint
is read. The ``.keras`` cases are in ``tests/tf/test_keras_file.py``."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common.config import ConvBertConfig
from convbert_tools import convert as conv

# A secret that no checkpoint holds: wherever a test plants it, it must never reach an output.
SECRET = b"-----BEGIN PRIVATE KEY----- TOPSECRET 0123456789abcdef -----END-----\n"


def _secret_file(tmp_path, size: int):
    """A file of at least ``size`` bytes made of the secret, outside every checkpoint."""
    path = tmp_path / "home" / "id_key"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(SECRET * (size // len(SECRET) + 1))
    return path


def _assert_secret_nowhere(tmp_path, *texts, allowed=()) -> None:
    for text in texts:
        assert b"TOPSECRET" not in (text.encode() if isinstance(text, str) else text)
    for folder, _dirs, files in os.walk(tmp_path):
        for name in files:
            path = os.path.join(folder, name)
            if path not in {os.fspath(p) for p in allowed}:
                with open(path, "rb") as fh:
                    assert b"TOPSECRET" not in fh.read(), path


def _tensors(seqcls):
    return ck.read_safetensors(seqcls / ck.SAFETENSORS_NAME)


def _header(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _with_header(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


# ------------------------------------------------------------------------------- safetensors
def test_a_truncated_safetensors_file_is_reported_as_truncated(seqcls):
    path = seqcls / ck.SAFETENSORS_NAME
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    config = ConvBertConfig.from_pretrained(seqcls)
    with pytest.raises(ck.CheckpointError, match=r"model.safetensors: not a readable safetensors file \(truncated: "
                                                 r"the header describes \d+ bytes of tensor data, the file holds "
                                                 r"\d+\)") as err:
        ck.load_for_model(config, "sequence_classification", seqcls)
    assert "do not hold" not in str(err.value)


def test_trailing_bytes_after_the_last_tensor_are_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    ck.write_safetensors(path, {"a": np.ones((2, 3), np.float32)})
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    with pytest.raises(ck.CheckpointError, match=r"x.safetensors: not a readable safetensors file \(16 trailing bytes "
                                                 r"after the last tensor\)"):
        ck.read_safetensors(path)


def test_overlapping_data_offsets_are_refused_naming_both_tensors(tmp_path):
    path = tmp_path / "x.safetensors"
    ck.write_safetensors(path, {"a": np.ones((2, 3), np.float32), "b": np.zeros((2, 3), np.float32)})
    header, data = _header(path)
    header["b"]["data_offsets"] = header["a"]["data_offsets"]  # b aliases a; the file's tail is unused
    _with_header(path, header, data[:24])
    with pytest.raises(ck.CheckpointError, match=r"x.safetensors: not a readable safetensors file \(b: data offsets "
                                                 r"0..24 overlap those of a\)"):
        ck.read_safetensors(path)


@pytest.mark.parametrize("content", [
    SECRET * 4,  # a text file: its first 8 bytes read as an enormous header length
    (24).to_bytes(8, "little") + SECRET * 4,  # a plausible length, then bytes that are not JSON
    (len(SECRET) * 4).to_bytes(8, "little") + b"[" + SECRET * 4,
    b"TOPSE",  # shorter than a header length
], ids=["text", "not-json", "json-but-not-an-object", "short"])
def test_an_unreadable_header_is_reported_without_echoing_the_file(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ck.CheckpointError, match="model.safetensors: not a readable safetensors file") as err:
        ck.read_safetensors(path)
    message = str(err.value)
    # No "header length" made of its bytes. The path is left out of the check: pytest's temporary
    # directories are numbered (pytest-24/...), and a number there is not one read from the file.
    assert str(int.from_bytes(content[:8], "little")) not in message.replace(str(path), "<path>")
    _assert_secret_nowhere(tmp_path, message, allowed=[path])


def test_a_symlink_loop_names_the_unreadable_file(tmp_path):
    (tmp_path / "model.safetensors").symlink_to(tmp_path / "loop")
    (tmp_path / "loop").symlink_to(tmp_path / "model.safetensors")
    with pytest.raises(ck.CheckpointError, match="model.safetensors: cannot be read .Too many levels of symbolic"):
        ck.read_safetensors(tmp_path / "model.safetensors")


def test_unsupported_dtypes_are_refused_by_name_on_both_sides(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32), "z": np.zeros(2, np.complex64)}, tmp_path / "c.safetensors")
    with pytest.raises(ck.CheckpointError, match=r"c.safetensors: not a readable safetensors file \(z: unsupported "
                                                 r"dtype C64\)"):
        ck.read_safetensors(tmp_path / "c.safetensors")
    with pytest.raises(ck.CheckpointError, match="u: safetensors cannot store dtype uint32"):
        ck.write_safetensors(tmp_path / "u.safetensors", {"u": np.zeros(2, np.uint32)})
    assert not (tmp_path / "u.safetensors").exists()


def test_bf16_is_written_as_bf16_and_read_back_widened_exactly(tmp_path):
    import ml_dtypes
    from safetensors import safe_open

    values = np.random.default_rng(0).standard_normal((3, 5)).astype(ml_dtypes.bfloat16)
    ck.write_safetensors(tmp_path / "b.safetensors", {"w": values, "f": np.arange(3, dtype=np.float32)})
    with safe_open(tmp_path / "b.safetensors", "np") as fh:
        assert fh.get_slice("w").get_dtype() == "BF16" and fh.metadata() == {"format": "pt"}
    back = ck.read_safetensors(tmp_path / "b.safetensors")
    assert back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["w"], values.astype(np.float32))


# ------------------------------------------------------------------------------- sharded
def _shard(folder, seqcls, *, names=None, move=None):
    """``folder`` as a two-shard checkpoint of ``seqcls``; ``names`` overrides the shard file names."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes((seqcls / "config.json").read_bytes())
    tensors = _tensors(seqcls)
    keys = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    names = names or {}
    weight_map = {}
    for shard, shard_keys in parts.items():
        target = (move or {}).get(shard, folder / shard)
        target.parent.mkdir(parents=True, exist_ok=True)
        ck.write_safetensors(target, {k: tensors[k] for k in shard_keys})
        weight_map.update({k: names.get(shard, shard) for k in shard_keys})
    index = folder / ck.SAFETENSORS_INDEX_NAME
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index, tensors, parts


def test_a_sharded_checkpoint_reads_every_tensor_of_its_shards(seqcls, tmp_path):
    index, tensors, _ = _shard(tmp_path / "sharded", seqcls)
    back = ck.read_safetensors_index(index)
    assert back.keys() == tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    conv.convert(str(tmp_path / "sharded"), str(tmp_path / "single"), progress=False)
    single = ck.read_safetensors(tmp_path / "single" / ck.SAFETENSORS_NAME)
    assert single.keys() == tensors.keys()


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink-out"])
def test_shards_outside_the_checkpoint_directory_are_refused(seqcls, tmp_path, where):
    outside = tmp_path / "elsewhere" / "model-00002-of-00002.safetensors"
    folder = tmp_path / "sharded"
    name = {"absolute": str(outside), "dotdot": "../elsewhere/model-00002-of-00002.safetensors",
            "symlink-out": "model-00002-of-00002.safetensors"}[where]
    moved = {"model-00002-of-00002.safetensors": outside}
    index, _, _ = _shard(folder, seqcls, names={"model-00002-of-00002.safetensors": name}, move=moved)
    if where == "symlink-out":
        (folder / name).symlink_to(outside)
    # The shard outside is a valid file of the right tensors: only the check stops it being read.
    assert ck.read_safetensors(outside)
    with pytest.raises(ck.CheckpointError, match=f"model.safetensors.index.json: shard '{name}' "
                                                 "(is not a file name inside|resolves to .* outside)"):
        ck.read_safetensors_index(index)
    with pytest.raises(ck.CheckpointError, match="outside|is not a file name inside"):
        conv.convert(str(folder), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_a_symlinked_shard_inside_the_checkpoint_is_read(seqcls, tmp_path):
    folder = tmp_path / "sharded"
    inside = folder / "blobs" / "second.safetensors"
    index, tensors, _ = _shard(folder, seqcls, move={"model-00002-of-00002.safetensors": inside})
    (folder / "model-00002-of-00002.safetensors").symlink_to(inside)
    assert ck.read_safetensors_index(index).keys() == tensors.keys()


def _assert_misplaced(index, name: str, found: str, assigned: str) -> None:
    with pytest.raises(ck.CheckpointError, match=f"{name} is in shard {found}, but the weight_map assigns it to "
                                                 f"shard {assigned}"):
        ck.read_safetensors_index(index)


def test_a_tensor_in_two_shards_is_an_error_naming_both(seqcls, tmp_path):
    index, tensors, parts = _shard(tmp_path / "sharded", seqcls)
    first, second = parts
    stray = parts[first][0]
    # The second shard also holds a tensor the weight_map gives to the first.
    ck.write_safetensors(tmp_path / "sharded" / second,
                         {**{k: tensors[k] for k in parts[second]}, stray: np.zeros_like(tensors[stray])})
    _assert_misplaced(index, stray, second, first)


def test_a_tensor_the_weight_map_puts_in_another_shard_is_an_error_naming_both(seqcls, tmp_path):
    index, _, parts = _shard(tmp_path / "sharded", seqcls)
    first, second = parts
    moved = parts[first][0]
    weight_map = json.loads(index.read_text())["weight_map"]
    weight_map[moved] = second
    index.write_text(json.dumps({"weight_map": weight_map}))
    _assert_misplaced(index, moved, first, second)


def test_a_tensor_listed_twice_in_the_weight_map_is_an_error_naming_both_shards(seqcls, tmp_path):
    index, _, parts = _shard(tmp_path / "sharded", seqcls)
    first, second = parts
    name = parts[first][0]
    text = index.read_text().replace('"weight_map": {', f'"weight_map": {{"{name}": "{second}", ', 1)
    index.write_text(text)
    with pytest.raises(ck.CheckpointError, match=f"{name} is listed twice in the weight_map, in shards {second} "
                                                 f"and {first}"):
        ck.read_safetensors_index(index)


def test_a_tensor_missing_from_its_shard_is_an_error(seqcls, tmp_path):
    index, _, parts = _shard(tmp_path / "sharded", seqcls)
    weight_map = json.loads(index.read_text())["weight_map"]
    weight_map["convbert.extra.weight"] = next(iter(parts))
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ck.CheckpointError, match=f"assigns convbert.extra.weight to shard {next(iter(parts))}, "
                                                 "which does not hold it"):
        ck.read_safetensors_index(index)


def test_a_shard_that_is_not_safetensors_is_refused_without_echoing_it(seqcls, tmp_path):
    index, _, parts = _shard(tmp_path / "sharded", seqcls)
    second = tmp_path / "sharded" / list(parts)[1]
    second.write_bytes(SECRET * 3)
    with pytest.raises(ck.CheckpointError, match=f"{second}: not a readable safetensors file") as err:
        ck.read_safetensors_index(index)
    _assert_secret_nowhere(tmp_path, str(err.value), allowed=[second])


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"weight_map": []}', "no weight_map object"),
    ('{"weight_map": {"a": 3}}', "weight_map entry 'a' names no shard"),
    ("{", "not JSON"),
])
def test_malformed_indexes_are_refused_naming_the_file(tmp_path, text, message):
    index = tmp_path / ck.SAFETENSORS_INDEX_NAME
    index.write_text(text)
    with pytest.raises(ck.CheckpointError, match=f"index.json: malformed safetensors index .*{message}"):
        ck.read_safetensors_index(index)


# ------------------------------------------------------------------------------- HDF5
def _tf_h5(seqcls, tmp_path):
    conv.convert(str(seqcls), str(tmp_path / "h5"), to="hf-tf-h5", progress=False)
    path = tmp_path / "h5" / ck.TF_H5_NAME
    with h5py.File(path, "r") as fh:
        names = []
        fh.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        name = max(names, key=lambda n: fh[n].size)  # the word embeddings
        shape, dtype = fh[name].shape, fh[name].dtype
    return path, name, shape, dtype


def _external(path, name, shape, dtype, secret):
    with h5py.File(path, "r+") as fh:
        del fh[name]
        fh.create_dataset(name, shape, dtype, external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])


def _virtual(path, name, shape, dtype, secret_h5):
    with h5py.File(path, "r+") as fh:
        del fh[name]
        layout = h5py.VirtualLayout(shape, dtype)
        layout[...] = h5py.VirtualSource(str(secret_h5), "data", shape=shape)
        fh.create_virtual_dataset(name, layout)


def _external_link(path, name, shape, dtype, secret_h5):
    with h5py.File(path, "r+") as fh:
        del fh[name]
        fh[name] = h5py.ExternalLink(str(secret_h5), "data")


@pytest.mark.parametrize(("craft", "what"), [
    (_external, "stores its data in external files"),
    (_virtual, "is a virtual dataset"),
    (_external_link, "is an external link to another file"),
], ids=["external-storage", "virtual-dataset", "external-link"])
def test_hdf5_data_outside_the_file_is_refused_and_never_read(seqcls, tmp_path, capsys, caplog, craft, what):
    path, name, shape, dtype = _tf_h5(seqcls, tmp_path)
    secret = _secret_file(tmp_path, int(np.prod(shape)) * dtype.itemsize)
    planted = [secret]
    if craft is not _external:
        planted.append(tmp_path / "home" / "secret.h5")
        with h5py.File(planted[-1], "w") as fh:
            nbytes = int(np.prod(shape)) * dtype.itemsize
            fh["data"] = np.frombuffer(secret.read_bytes()[:nbytes], dtype).reshape(shape)
    craft(path, name, shape, dtype, planted[-1])
    with h5py.File(path, "r") as fh:  # the attack is real: plain h5py reads the secret
        assert b"TOPSECRET" in fh[name][()].tobytes()

    with pytest.raises(ck.CheckpointError, match=f"tf_model.h5: refused, .*{name.split(':')[0]}.* {what}") as direct:
        ck.read_hf_tf_h5(path)
    with pytest.raises(ck.CheckpointError, match=f"tf_model.h5: refused, .*{what}") as converting:
        conv.convert(str(path.parent), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    out, err = capsys.readouterr()
    _assert_secret_nowhere(tmp_path, str(direct.value), str(converting.value), out, err, caplog.text,
                           allowed=planted)


def test_chunked_and_compressed_hdf5_datasets_are_read(seqcls, tmp_path):
    path, name, shape, dtype = _tf_h5(seqcls, tmp_path)
    before = ck.read_hf_tf_h5(path)
    with h5py.File(path, "r+") as fh:
        value = fh[name][()]
        del fh[name]
        fh.create_dataset(name, data=value, chunks=True, compression="gzip")
    after = ck.read_hf_tf_h5(path)
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
