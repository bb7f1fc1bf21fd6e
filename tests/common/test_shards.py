"""HF's sharded safetensors layout: the split, the names, the index, stale files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common import shards


def _tensors():
    rng = np.random.default_rng(0)
    # 400, 400, 1200 (larger than the 850-byte limit below), 80 bytes.
    return {"a": rng.random(100, dtype=np.float32), "b": rng.random(100, dtype=np.float32),
            "big": rng.random(300, dtype=np.float32), "c": rng.random(20, dtype=np.float32)}


@pytest.mark.parametrize("size, expected", [(1000, 1000), ("2GB", 2 * 10**9), ("500MB", 5 * 10**8),
                                            ("1GiB", 2**30), ("1.5KB", 1500), ("10 mib", 10 * 2**20)])
def test_sizes_read_as_hf_reads_them(size, expected):
    assert shards.parse_size(size) == expected


@pytest.mark.parametrize("size", ["2XB", "", "-1GB", 0, True, "GB"])
def test_bad_sizes_are_refused_by_name(size):
    with pytest.raises(ValueError, match="max_shard_size"):
        shards.parse_size(size)


def test_split_is_greedy_in_order_and_an_oversized_tensor_sits_alone():
    assert shards.plan(_tensors(), 850) == [["big"], ["a", "b"], ["c"]]
    assert shards.plan(_tensors(), 10**6) == [["a", "b", "big", "c"]]


def test_sharded_write_is_hf_layout_and_reads_back(tmp_path):
    tensors = _tensors()
    (tmp_path / ck.SAFETENSORS_NAME).write_bytes(b"stale")
    written = shards.write_sharded(tmp_path, tensors, 850)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    assert written[-1].endswith("model.safetensors.index.json")  # the index comes last
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    assert index["weight_map"] == {"big": "model-00001-of-00003.safetensors", "a": "model-00002-of-00003.safetensors",
                                   "b": "model-00002-of-00003.safetensors", "c": "model-00003-of-00003.safetensors"}
    back = ck.read_safetensors_index(tmp_path / "model.safetensors.index.json")
    assert back.keys() == tensors.keys() and all(np.array_equal(back[k], tensors[k]) for k in tensors)


def test_one_shard_is_model_safetensors_and_stale_shards_go(tmp_path):
    shards.write_sharded(tmp_path, _tensors(), 850)
    shards.write_sharded(tmp_path, _tensors(), "1GB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    shards.write_sharded(tmp_path, _tensors(), 850)
    shards.write_sharded(tmp_path, _tensors(), 2000)  # 2 shards now: the 3-shard files must not linger
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-00001-of-00002.safetensors",
                                                          "model-00002-of-00002.safetensors",
                                                          "model.safetensors.index.json"]
