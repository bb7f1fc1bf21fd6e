
import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common import weight_map as wm
from convbert_common.config import ConvBertConfig
from convbert_common.layouts import LAYOUTS, LayoutError, get_layout
from tests.configs import head_config
from tests.conftest import HEADS, fixture_file


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_round_trips_bit_identically(name):
    layout = get_layout(name)
    shape = {None: (3, 5), 2: (7, 1) if name == "column_bias" else (7, 5), 3: (6, 1, 9)}[layout.canonical_rank]
    if name in ("pointwise", "grouped_hf_tf"):
        shape = (4, 6, 2)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = layout.to_target(x, shape, "w")
    assert y.shape == layout.target_shape(shape)
    np.testing.assert_array_equal(layout.to_canonical(y, shape, "w"), x)


def test_layout_rejects_wrong_shape_naming_the_tensor():
    with pytest.raises(LayoutError, match=r"enc.w: expected canonical \(transpose\) shape \(4, 3\), got \(3, 4\)"):
        get_layout("transpose").to_target(np.zeros((3, 4)), (4, 3), "enc.w")
    with pytest.raises(ValueError, match="unknown layout 'rot90'"):
        get_layout("rot90")


def test_depthwise_and_pointwise_layouts_match_the_documented_permutations():
    dw = np.arange(2 * 1 * 3).reshape(2, 1, 3)  # (d, 1, K)
    assert get_layout("depthwise").to_target(dw, (2, 1, 3), "dw")[2, 1, 0] == dw[1, 0, 2]  # (K, d, 1)
    pw = np.arange(4 * 2).reshape(4, 2, 1)  # (A, d, 1)
    assert get_layout("pointwise").to_target(pw, (4, 2, 1), "pw")[0, 1, 3] == pw[3, 1, 0]  # (1, d, A)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("kw", [{}, {"num_groups": 2}, {"embedding_size": 32}, {"head_ratio": 1}])
def test_specs_are_a_bijection_in_every_format(head, kw):
    specs = wm.model_specs(head_config(head, **kw), head)
    for attr in ("name", "hf_tf", "keras_layer"):
        keys = [getattr(s, attr) + ("/" + s.keras_variable if attr == "keras_layer" else "") for s in specs]
        assert len(keys) == len(set(keys)), attr
    tf1 = [s.tf1 for s in specs if s.tf1]
    assert len(tf1) == len(set(tf1))
    has_project = any(s.name.endswith("embeddings_project.weight") for s in specs)
    assert has_project == ("embedding_size" not in kw)


@pytest.mark.parametrize("head", HEADS)
def test_specs_list_exactly_the_reference_safetensors_keys(head):
    config = ConvBertConfig.from_pretrained(fixture_file(f"hf-convbert-tiny/{head}/config.json").parent)
    from safetensors.numpy import load_file

    ref = load_file(fixture_file(f"hf-convbert-tiny/{head}/model.safetensors"))
    specs = {s.name: s.shape for s in wm.model_specs(config, head)}
    assert set(specs) == set(ref)
    assert all(tuple(ref[k].shape) == v for k, v in specs.items())


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "tf_model.h5"])
def test_every_weight_format_reads_bit_identical_to_safetensors(weights):
    folder = fixture_file(f"hf-convbert-tiny/model/{weights}").parent
    config = ConvBertConfig.from_pretrained(folder)
    a = ck.load_for_model(config, "model", folder, weights_file="model.safetensors").tensors
    b = ck.load_for_model(config, "model", folder, weights_file=weights).tensors
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_head_checkpoint_into_base_reports_unexpected_and_base_into_head_reports_missing():
    folder = fixture_file("hf-convbert-tiny/sequence_classification/model.safetensors").parent
    config = ConvBertConfig.from_pretrained(folder)
    r = ck.load_for_model(config, "model", folder)
    assert r.unexpected_keys == sorted(["classifier.dense.weight", "classifier.dense.bias",
                                        "classifier.out_proj.weight", "classifier.out_proj.bias"])
    assert not r.missing_keys and all(not k.startswith("convbert.") for k in r.tensors)
    base = fixture_file("hf-convbert-tiny/model/model.safetensors").parent
    r = ck.load_for_model(config, "sequence_classification", base)
    assert set(r.missing_keys) == {"classifier.dense.weight", "classifier.dense.bias",
                                   "classifier.out_proj.weight", "classifier.out_proj.bias"}
    assert all(k.startswith("convbert.") for k in r.tensors)


def test_config_that_disagrees_with_weights_names_key_and_both_shapes():
    folder = fixture_file("hf-convbert-tiny/model/model.safetensors").parent
    config = ConvBertConfig.from_pretrained(folder, intermediate_size=36)
    with pytest.raises(ck.CheckpointError, match=r"intermediate.dense.weight: checkpoint shape \(37, 32\), "
                                                 r"model expects \(36, 32\)"):
        ck.load_for_model(config, "model", folder)
    fewer = ConvBertConfig.from_pretrained(folder, num_hidden_layers=1)
    with pytest.raises(ck.CheckpointError, match=r"holds 2 encoder layers \(0..1\) but the config says "
                                                 r"num_hidden_layers=1"):
        ck.load_for_model(fewer, "model", folder)
    more = ConvBertConfig.from_pretrained(folder, num_hidden_layers=3)
    with pytest.raises(ck.CheckpointError, match=r"holds 2 encoder layers \(0..1\) but the config says "
                                                 r"num_hidden_layers=3"):
        ck.load_for_model(more, "model", folder)


def test_missing_or_corrupt_weight_files_raise_naming_the_file(tmp_path):
    with pytest.raises(ck.CheckpointError, match="no weights file"):
        ck.find_weights_file(tmp_path)
    bad = tmp_path / "model.safetensors"
    good = fixture_file("hf-convbert-tiny/model/model.safetensors").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    config = ConvBertConfig.from_pretrained(fixture_file("hf-convbert-tiny/model/config.json").parent)
    with pytest.raises(ck.CheckpointError, match="model.safetensors: not a readable safetensors file"):
        ck.load_for_model(config, "model", tmp_path)
    h5 = tmp_path / "tf_model.h5"
    h5.write_bytes(b"not hdf5 at all")
    with pytest.raises(ck.CheckpointError, match="tf_model.h5: not a readable HDF5 file"):
        ck.read_hf_tf_h5(h5)


def test_hf_tf_h5_written_from_canonical_reads_back_bit_identically(tmp_path):
    folder = fixture_file("hf-convbert-tiny/sequence_classification/model.safetensors").parent
    config = ConvBertConfig.from_pretrained(folder)
    tensors = ck.load_for_model(config, "sequence_classification", folder).tensors
    ck.write_hf_tf_h5(tmp_path / "tf_model.h5", config, "sequence_classification", tensors)
    back = ck.load_for_model(config, "sequence_classification", tmp_path / "tf_model.h5").tensors
    for k in tensors:
        np.testing.assert_array_equal(back[k], tensors[k], err_msg=k)
