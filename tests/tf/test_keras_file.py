"""``.keras`` / ``.weights.h5`` files written and read without the full-size model (``convbert_tf.keras_file``):
the same archive, config and HDF5 layout as Keras' own writer, loadable by ``keras.saving.load_model``."""

from __future__ import annotations

import io
import json
import logging
import zipfile

import h5py
import keras
import numpy as np
import pytest

from convbert_common import checkpoint
from convbert_tf import keras_file as kf
from convbert_tf.io import canonical_arrays
from convbert_tools import convert as conv
from tests.configs import head_config
from tests.tf.helpers import model_class, to_numpy, toy_batch

# (head, config overrides): three and more layers exercise the repeated-layer rule, the others the
# embedding projection (E != H, the tiny default), no projection (E == H), grouped linear layers.
CASES = [
    ("model", dict(num_hidden_layers=3)),
    ("masked_lm", dict(num_groups=2, num_hidden_layers=4)),
    ("sequence_classification", dict(embedding_size=32)),
    ("multiple_choice", dict(num_hidden_layers=1)),
    ("token_classification", dict(head_ratio=1)),
    ("question_answering", dict(num_hidden_layers=5)),
]


def _h5_tree(data) -> dict:
    """Every group (with its attributes) and dataset (shape, dtype, bytes) of an HDF5 file, by path."""
    tree = {}
    with h5py.File(io.BytesIO(data) if isinstance(data, bytes) else data, "r") as fh:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                tree[name] = ("dataset", obj.shape, str(obj.dtype), obj[()].tobytes())
            else:
                tree[name] = ("group", dict(obj.attrs))

        fh.visititems(visit)
    return tree


def _assert_same_tree(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs), sorted(set(ours) ^ set(theirs))
    for path in theirs:
        assert ours[path] == theirs[path], path


def _model(head, overrides):
    cls = model_class(head)
    # Named as Keras names the first instance of the class, as in a fresh conversion process.
    return cls(head_config(head, **overrides), name=kf.default_name(cls))


@pytest.mark.parametrize(("head", "overrides"), CASES, ids=[c[0] for c in CASES])
def test_written_keras_file_is_the_archive_keras_writes(head, overrides, tmp_path):
    model = _model(head, overrides)
    model.save(tmp_path / "keras.keras")
    kf.write_keras_file(str(tmp_path / "ours.keras"), model.config, head, canonical_arrays(model))
    with zipfile.ZipFile(tmp_path / "keras.keras") as theirs, zipfile.ZipFile(tmp_path / "ours.keras") as ours:
        assert ours.testzip() is None
        def entries(z):
            return [(i.filename, i.compress_type, i.external_attr, i.create_system, i.flag_bits)
                    for i in z.infolist()]

        assert entries(ours) == entries(theirs)
        assert ours.read("config.json") == theirs.read("config.json")
        assert json.loads(ours.read("metadata.json")).keys() == json.loads(theirs.read("metadata.json")).keys()
        _assert_same_tree(_h5_tree(ours.read("model.weights.h5")), _h5_tree(theirs.read("model.weights.h5")))

    loaded = keras.saving.load_model(tmp_path / "ours.keras")
    assert type(loaded) is type(model)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)
    x = toy_batch(head)[0]
    for key, value in to_numpy(model(x)).items():
        np.testing.assert_array_equal(to_numpy(loaded(x))[key], value, err_msg=key)


def test_written_weights_file_is_what_save_weights_writes_and_loads_back(tmp_path):
    model = _model("masked_lm", dict(num_hidden_layers=3))
    model.save_weights(tmp_path / "keras.weights.h5")
    kf.write_weights(str(tmp_path / "ours.weights.h5"), model.config, "masked_lm", canonical_arrays(model))
    _assert_same_tree(_h5_tree(str(tmp_path / "ours.weights.h5")), _h5_tree(str(tmp_path / "keras.weights.h5")))
    fresh = _model("masked_lm", dict(num_hidden_layers=3))
    fresh.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)


def test_layout_of_repeated_layers_equals_the_layout_of_a_full_depth_skeleton(monkeypatch):
    config = head_config("sequence_classification", num_hidden_layers=4, num_groups=2)
    repeated = kf.keras_layout(config, "sequence_classification")
    monkeypatch.setattr(kf, "_repeat_layers", lambda *args: None)  # as if Keras broke the naming rule
    full = kf.keras_layout(config, "sequence_classification")
    assert repeated == full


def test_archives_past_the_zip32_limit_go_through_zipfile_with_the_same_content(tmp_path, monkeypatch):
    model = _model("question_answering", {})
    kf.write_keras_file(str(tmp_path / "in_place.keras"), model.config, "question_answering", canonical_arrays(model))
    monkeypatch.setattr(kf, "ZIP32_WEIGHTS_LIMIT", 0)
    kf.write_keras_file(str(tmp_path / "copied.keras"), model.config, "question_answering", canonical_arrays(model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied.keras", "in_place.keras"]  # no temporaries
    with zipfile.ZipFile(tmp_path / "in_place.keras") as a, zipfile.ZipFile(tmp_path / "copied.keras") as b:
        assert a.testzip() is None and b.testzip() is None
        def entries(z):
            return [(i.filename, i.compress_type, i.external_attr, i.create_system, i.flag_bits) for i in z.infolist()]

        assert entries(a) == entries(b) and a.read("config.json") == b.read("config.json")
        _assert_same_tree(_h5_tree(b.read("model.weights.h5")), _h5_tree(a.read("model.weights.h5")))


def test_reading_a_compiled_models_file_skips_the_optimizer_state(tmp_path):
    model = _model("token_classification", {})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.save(tmp_path / "m.keras")
    config, head, tensors, skipped = kf.read_keras_file(str(tmp_path / "m.keras"))
    assert head.name == "token_classification" and config.to_dict() == model.config.to_dict()
    expected = canonical_arrays(model)
    assert tensors.keys() == expected.keys()
    for name in expected:
        assert tensors[name].dtype == expected[name].dtype and np.array_equal(tensors[name], expected[name]), name
    assert skipped and set(skipped.values()) == {"optimizer state"}
    assert all(path.startswith("optimizer/") for path in skipped)


def test_a_compressed_archive_is_read_directly_with_the_same_tensors(tmp_path):
    model = _model("sequence_classification", {})
    model.save(tmp_path / "m.keras")
    # The same archive with every member deflated: the weights are inflated into a temporary file.
    with zipfile.ZipFile(tmp_path / "m.keras") as src, zipfile.ZipFile(tmp_path / "deflated.keras", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    config, head, tensors, _ = kf.read_keras_file(str(tmp_path / "deflated.keras"))
    expected = canonical_arrays(model)
    assert head.name == "sequence_classification" and tensors.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(tensors[name], expected[name], err_msg=name)


def test_a_file_in_another_layout_is_read_through_keras(tmp_path, caplog):
    model = _model("sequence_classification", {})
    model.save(tmp_path / "m.keras")
    # The same archive with one more member: not the layout this Keras writes for the model.
    with zipfile.ZipFile(tmp_path / "m.keras") as src, zipfile.ZipFile(tmp_path / "other.keras", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr("assets/notes.txt", b"not a weight")
    with pytest.raises(kf.LayoutMismatch, match="members"):
        kf.read_keras_file(str(tmp_path / "other.keras"))
    with caplog.at_level(logging.INFO, logger="convbert_tf.formats"):
        loaded = conv.read_source(str(tmp_path / "other.keras"))
    assert "keras.saving.load_model" in caplog.text
    expected = canonical_arrays(model)
    assert loaded.head.name == "sequence_classification" and loaded.tensors.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(loaded.tensors[name], expected[name], err_msg=name)


def _rewrite_member(src, dst, name, transform):
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            data = a.read(info.filename)
            b.writestr(info, transform(data) if info.filename == name else data)


def test_bad_keras_files_raise_naming_the_file_and_the_tensor(tmp_path):
    model = _model("masked_lm", {})
    model.save(tmp_path / "m.keras")

    def bigger_vocab(data):
        config = json.loads(data)
        config["config"]["config"]["vocab_size"] = 120
        return json.dumps(config).encode()

    _rewrite_member(tmp_path / "m.keras", tmp_path / "vocab.keras", "config.json", bigger_vocab)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"vocab.keras/model.weights.h5: dataset convbert/embeddings/word_embeddings/vars/0 "
                             r"\(convbert.embeddings.word_embeddings.weight\) has shape \(99, 16\)"):
        kf.read_keras_file(str(tmp_path / "vocab.keras"))

    # Flip one byte of the weights on disk (zipfile would give a rewritten member a fresh CRC).
    raw = bytearray((tmp_path / "m.keras").read_bytes())
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        info = z.getinfo("model.weights.h5")
    raw[info.header_offset + 30 + len(info.filename) + info.file_size - 100] ^= 0xFF
    (tmp_path / "corrupt.keras").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt.keras: model.weights.h5 is corrupt"):
        kf.read_keras_file(str(tmp_path / "corrupt.keras"))

    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(tmp_path / "dense.keras")
    with pytest.raises(ValueError, match="dense.keras: holds a Sequential, not a ConvBERT model"):
        conv.read_source(str(tmp_path / "dense.keras"))
    with pytest.raises(ValueError, match="holds a ConvBertForMaskedLM, not a ConvBertModel"):
        conv.read_source(str(tmp_path / "m.keras"), head="model")


def test_writing_checks_every_tensor_before_creating_the_file(tmp_path):
    model = _model("model", {})
    tensors = canonical_arrays(model)
    tensors["encoder.layer.0.attention.self.query.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(checkpoint.CheckpointError, match=r"query.weight: shape \(3, 3\)"):
        kf.write_weights(str(tmp_path / "w.weights.h5"), model.config, "model", tensors)
    del tensors["encoder.layer.0.attention.self.query.weight"]
    with pytest.raises(checkpoint.CheckpointError, match="missing .'encoder.layer.0.attention.self.query.weight'"):
        kf.write_weights(str(tmp_path / "w.weights.h5"), model.config, "model", tensors)
    assert not (tmp_path / "w.weights.h5").exists()


# ----------------------------------------------------------------------------------- crafted archives
SECRET = b"-----BEGIN PRIVATE KEY----- TOPSECRET 0123456789abcdef -----END-----\n"


def _archive_with_weights(src, dst, edit, extra_members=()):
    """``src`` rewritten to ``dst`` with its weights member passed through ``edit(h5py.File)``."""
    with zipfile.ZipFile(src) as a:
        infos = [(info, a.read(info.filename)) for info in a.infolist()]
    weights = dst.with_suffix(".h5.tmp")
    weights.write_bytes(next(data for info, data in infos if info.filename == kf.WEIGHTS_NAME))
    with h5py.File(weights, "r+") as fh:
        edit(fh)
    with zipfile.ZipFile(dst, "w") as b:
        for info, data in infos:
            b.writestr(info, weights.read_bytes() if info.filename == kf.WEIGHTS_NAME else data)
        for name, data in extra_members:
            b.writestr(name, data)
    weights.unlink()


def _plant_external(secret):
    def edit(fh):
        name = "convbert/embeddings/word_embeddings/vars/0"
        shape, dtype = fh[name].shape, fh[name].dtype
        del fh[name]
        fh.create_dataset(name, shape, dtype, external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])
    return edit


def _plant_virtual(secret_h5):
    def edit(fh):
        name = "convbert/embeddings/word_embeddings/vars/0"
        shape, dtype = fh[name].shape, fh[name].dtype
        del fh[name]
        layout = h5py.VirtualLayout(shape, dtype)
        layout[...] = h5py.VirtualSource(str(secret_h5), "data", shape=shape)
        fh.create_virtual_dataset(name, layout)
    return edit


@pytest.mark.parametrize("kind", ["external-storage", "virtual-dataset", "external-storage-other-layout"])
def test_keras_weights_stored_outside_the_archive_are_refused_and_never_read(tmp_path, capsys, caplog, kind):
    model = _model("masked_lm", {})
    kf.write_keras_file(str(tmp_path / "m.keras"), model.config, "masked_lm", canonical_arrays(model))
    home = tmp_path / "home"
    home.mkdir()
    secret = home / "id_key"
    secret.write_bytes(SECRET * 1000)
    planted = [secret]
    if kind == "virtual-dataset":
        planted.append(home / "secret.h5")
        with h5py.File(planted[-1], "w") as fh:
            fh["data"] = np.frombuffer(secret.read_bytes()[: 99 * 16 * 4], np.float32).reshape(99, 16)
        edit = _plant_virtual(planted[-1])
    else:
        edit = _plant_external(secret)
    # One more member makes the file another layout, which the converter would hand to Keras' loader:
    # the check must come first.
    extra = [("assets/notes.txt", b"x")] if kind.endswith("other-layout") else []
    crafted = tmp_path / "crafted.keras"
    _archive_with_weights(tmp_path / "m.keras", crafted, edit, extra)

    what = "is a virtual dataset" if kind == "virtual-dataset" else "stores its data in external files"
    expected = f"crafted.keras/model.weights.h5: refused, dataset convbert/embeddings/word_embeddings/vars/0 {what}"
    with pytest.raises(checkpoint.CheckpointError, match=expected) as direct:
        kf.read_keras_file(str(crafted))
    with pytest.raises(checkpoint.CheckpointError, match=expected) as converting:
        conv.convert(str(crafted), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    out, err = capsys.readouterr()
    for text in (str(direct.value), str(converting.value), out, err, caplog.text):
        assert "TOPSECRET" not in text
    for path in tmp_path.rglob("*"):
        if path.is_file() and path not in planted:
            assert b"TOPSECRET" not in path.read_bytes(), path


def test_a_weights_file_with_external_storage_is_refused_by_the_storage_check(tmp_path):
    model = _model("masked_lm", {})
    kf.write_weights(str(tmp_path / "w.weights.h5"), model.config, "masked_lm", canonical_arrays(model))
    (tmp_path / "id_key").write_bytes(SECRET * 1000)
    with h5py.File(tmp_path / "w.weights.h5", "r+") as fh:
        _plant_external(tmp_path / "id_key")(fh)
        with pytest.raises(checkpoint.CheckpointError, match="w.weights.h5: refused, dataset "
                                                             "convbert/embeddings/word_embeddings/vars/0 stores"):
            checkpoint.check_h5_storage(fh, str(tmp_path / "w.weights.h5"))


@pytest.mark.parametrize("member", [kf.CONFIG_NAME, kf.METADATA_NAME])
def test_metadata_members_are_read_up_to_a_stated_cap(tmp_path, member):
    model = _model("model", {})
    model.save(tmp_path / "m.keras")

    def inflate(data):
        return data + b" " * kf.METADATA_MAX_BYTES  # still valid JSON, but past the cap

    _rewrite_member(tmp_path / "m.keras", tmp_path / "big.keras", member, inflate)
    with pytest.raises(checkpoint.CheckpointError, match=rf"big.keras: {member} is \d+ bytes, over the 4 MiB read "
                                                         "for a metadata member"):
        kf.read_keras_file(str(tmp_path / "big.keras"))


def _flip_member_byte(src, dst, name, offset):
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(name)
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + offset] ^= 0x01
    dst.write_bytes(bytes(raw))


def test_damaged_archives_end_in_a_value_error_naming_the_file(tmp_path, capsys):
    from convbert_tools.cli import main

    model = _model("model", {})
    model.save(tmp_path / "m.keras")
    _flip_member_byte(tmp_path / "m.keras", tmp_path / "crc.keras", kf.CONFIG_NAME, 10)
    with pytest.raises(ValueError, match="crc.keras: config.json is corrupt or unreadable .Bad CRC-32"):
        kf.read_keras_file(str(tmp_path / "crc.keras"))
    assert main(["convert", str(tmp_path / "crc.keras"), str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "crc.keras: config.json is corrupt" in err and len(err.splitlines()) == 1

    (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(ValueError, match="junk.keras: not a loadable .keras file .File is not a zip file"):
        kf.read_keras_file(str(tmp_path / "junk.keras"))
    data = (tmp_path / "m.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.keras: not a loadable .keras file"):
        kf.read_keras_file(str(tmp_path / "cut.keras"))
    assert not (tmp_path / "out").exists()


def test_a_failed_write_inside_the_keras_writer_raises_the_real_os_error(tmp_path, monkeypatch):
    import errno
    import os

    model = _model("masked_lm", dict(num_hidden_layers=3))
    tensors = canonical_arrays(model)
    real_pwrite, real_ftruncate = os.pwrite, os.ftruncate
    limit = 50_000  # as RLIMIT_FSIZE does: writing or extending the file past it fails with EFBIG

    def pwrite(fd, data, offset):
        if offset + len(data) > limit:
            raise OSError(errno.EFBIG, "File too large")
        return real_pwrite(fd, data, offset)

    def ftruncate(fd, size):
        if size > limit:
            raise OSError(errno.EFBIG, "File too large")
        return real_ftruncate(fd, size)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with pytest.raises(OSError, match="File too large") as err:
        kf.write_keras_file(str(tmp_path / "m.keras"), model.config, "masked_lm", dict(tensors))
    assert err.value.errno == errno.EFBIG
    src = tmp_path / "src"
    model.save_pretrained(src)
    with pytest.raises(OSError, match="File too large"):
        conv.convert(str(src), str(tmp_path / "out.keras"), to="keras", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "src"]  # the one the direct call left
