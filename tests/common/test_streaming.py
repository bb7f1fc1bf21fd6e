"""Lazy safetensors entries: shapes from the header, data only when read, the same values as a full read."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common import streaming
from tests.configs import tiny_config


def _write(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.random((5, 3), dtype=np.float32), "b": rng.random((7,)).astype(ml_dtypes.bfloat16),
               "c": np.arange(12, dtype=np.int64).reshape(4, 3)}
    path = tmp_path / "t.safetensors"
    ck.write_safetensors(path, tensors)
    return path, tensors


def test_lazy_entries_read_what_the_full_reader_reads(tmp_path):
    path, _ = _write(tmp_path)
    full = ck.read_safetensors(path)
    lazy = streaming.read_lazy(path)
    assert {k: (v.shape, v.dtype) for k, v in lazy.items()} == {k: (v.shape, v.dtype) for k, v in full.items()}
    for name in full:
        assert np.array_equal(np.asarray(lazy[name]), full[name]), name
    assert np.array_equal(lazy["a"].read_rows(1, 4), full["a"][1:4])
    assert np.array_equal(lazy["c"].read_rows(3, 99), full["c"][3:])


def test_a_bad_header_or_a_truncated_file_is_named(tmp_path):
    path, _ = _write(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(ck.CheckpointError, match="cut.safetensors: not a readable safetensors file"):
        streaming.read_lazy(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ck.CheckpointError, match="junk.safetensors"):
        streaming.read_lazy(tmp_path / "junk.safetensors")


def test_lazy_load_checks_shapes_from_the_header_before_reading_data(tmp_path):
    import convbert_pt

    config = tiny_config()
    convbert_pt.ConvBertModel(config).save_pretrained(tmp_path)
    result = ck.load_for_model(config, "model", tmp_path, lazy=True)
    assert all(isinstance(v, streaming.LazyTensor) for v in result.tensors.values())
    with pytest.raises(ck.CheckpointError, match="do not fit the config"):
        ck.load_for_model(config.replace(intermediate_size=40), "model", tmp_path, lazy=True)


def test_keras_assigns_large_tables_in_row_slices_with_the_same_values(monkeypatch):
    keras = pytest.importorskip("keras")
    import convbert_tf
    import convbert_tf.io as tf_io
    from tests.conftest import fixture_file

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the row-slice path is TensorFlow's")
    monkeypatch.setattr(tf_io, "_ROWS_BYTES", 1000)  # every 2-D identity table of the tiny model
    folder = fixture_file("hf-convbert-tiny/model/model.safetensors").parent
    model = convbert_tf.ConvBertModel.from_pretrained(folder)
    file = ck.read_safetensors(folder / "model.safetensors")
    assert np.array_equal(keras.ops.convert_to_numpy(model.embeddings.word_embeddings.embeddings),
                          file["embeddings.word_embeddings.weight"])


def test_a_bfloat16_entry_reads_in_a_fresh_process(tmp_path):
    """safetensors' NumPy reader names the dtype "bfloat16": NumPy knows it only once ml_dtypes is
    imported, which nothing else may have done in a process that only loads a checkpoint."""
    import os
    import subprocess
    import sys

    path = tmp_path / "bf16.safetensors"
    ck.write_safetensors(path, {"w": np.array([[1.5, -2.0]], dtype=ml_dtypes.bfloat16)})
    code = (f"from convbert_common import streaming\n"
            f"w = streaming.read_lazy({str(path)!r})['w'].read()\n"
            f"print(w.dtype, w.tolist())\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(root, "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["float32", "[[1.5,", "-2.0]]"]
