"""Issue 15, silent wrong results (items 5, 7 and 10): each used to convert or load, exit 0, wrong.

Each test builds the bad checkpoint in a temporary directory and asserts the exact refusal, and
that nothing was written beside it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common import formats
from convbert_common.config import ConvBertConfig
from convbert_tools import convert as conv
from convbert_tools.cli import main
from tests.conftest import fixture_file
from tests.hostile import one_line_error, snapshot

GENERATOR_SKIPPED = "generator (import it with --generator or --pretraining)"
RTD_SKIPPED = "replaced-token-detection head (import it with --pretraining)"

QUERY = "convbert.encoder.layer.0.attention.self.query.weight"


def _tensors(folder) -> dict[str, np.ndarray]:
    return ck.read_safetensors(folder / "model.safetensors")


# ------------------------------------------------------------------ item 5: TF1 skip rules
@pytest.mark.parametrize(("name", "scope", "why"), [
    ("electra/encoder/layer_7/attention/self/query/kernel", "electra", None),  # a layer the config lacks
    ("electra/embeddings_project/kernel", "electra", None),
    ("electra/encoder/layer_7/attention/self/query/kernel/adam_m", "electra", "optimizer slot"),
    ("generator/encoder/layer_0/attention/self/query/kernel", "electra", GENERATOR_SKIPPED),
    ("generator_predictions/output_bias", "electra", GENERATOR_SKIPPED),
    ("generator/encoder/layer_7/attention/self/query/kernel", "generator", None),
    ("generator_predictions/something_new", "generator", None),
    ("electra/encoder/layer_0/output/dense/kernel", "generator", "discriminator (the generator import does not "
                                                                 "use it)"),
    ("discriminator_predictions/dense/kernel", "electra", RTD_SKIPPED),
    ("global_step", "generator", "training step counter"),
    ("some/other/variable", "electra", None),
])
def test_tf1_imports_skip_only_the_other_scope_and_listed_non_model_variables(name, scope, why):
    assert formats._tf1_skip_reason(name, scope) == why


def _save_tf1(prefix, variables: dict[str, np.ndarray]) -> None:
    tf = pytest.importorskip("tensorflow")
    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n]) for n in names])


@pytest.fixture
def tf1_copy(tmp_path):
    """The TF1 fixture's variables, config and vocab in a writable folder (checkpoint written by the test)."""
    src = fixture_file("tf1-original/model.ckpt.index").parent
    folder = tmp_path / "tf1"
    folder.mkdir()
    for name in ("config.json", "generator_config.json", "vocab.txt"):
        (folder / name).write_bytes((src / name).read_bytes())
    pytest.importorskip("tensorflow")
    return folder, ck.read_tf1_checkpoint(src)


def test_tf1_with_more_layers_than_the_config_is_refused_not_truncated(tf1_copy, tmp_path):
    folder, variables = tf1_copy
    extra = {k.replace("layer_1/", "layer_2/"): v for k, v in variables.items() if "electra/encoder/layer_1/" in k}
    _save_tf1(folder / "model.ckpt", {**variables, **extra})
    before = snapshot(tmp_path)
    with pytest.raises(ck.CheckpointError, match=r"model.ckpt \(electra/\): the checkpoint holds 3 encoder layers "
                                                 r"\(0..2\) but the config says num_hidden_layers=2"):
        conv.convert(str(folder / "model.ckpt"), str(tmp_path / "out"), progress=False)
    assert snapshot(tmp_path) == before


def test_tf1_with_an_unknown_variable_in_the_imported_scope_is_refused(tf1_copy, tmp_path):
    folder, variables = tf1_copy
    odd = "electra/encoder/layer_0/attention/self/query/scale"
    _save_tf1(folder / "model.ckpt", {**variables, odd: np.ones(3, np.float32)})
    with pytest.raises(ck.CheckpointError, match=f"1 variable.s. match nothing in the weight table: {odd}"):
        conv.convert(str(folder / "model.ckpt"), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    # The same name in the other scope is the generator's business: the discriminator import skips it.
    _save_tf1(folder / "model.ckpt", {**variables, odd.replace("electra/", "generator/"): np.ones(3, np.float32)})
    loaded = conv.convert(str(folder / "model.ckpt"), str(tmp_path / "out"), progress=False)
    assert loaded.skipped[odd.replace("electra/", "generator/")] == GENERATOR_SKIPPED


# ------------------------------------------------------------------ item 7: non-float weights
@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.bool_])
def test_integer_and_bool_weights_are_refused_not_cast(seqcls, dtype):
    tensors = _tensors(seqcls)
    tensors[QUERY] = np.arange(tensors[QUERY].size).reshape(tensors[QUERY].shape).astype(dtype)
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    config = ConvBertConfig.from_pretrained(seqcls)
    with pytest.raises(ck.CheckpointError, match=f"model.safetensors: {QUERY} has dtype {np.dtype(dtype)}, "
                                                 "expected a float tensor"):
        ck.load_for_model(config, "sequence_classification", seqcls)


def test_complex_weights_in_a_bin_are_refused_not_stripped_of_their_imaginary_part(seqcls):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.from_numpy(v) for k, v in _tensors(seqcls).items()}
    tensors[QUERY] = tensors[QUERY].to(torch.complex64) * (1 + 1j)
    os.remove(seqcls / "model.safetensors")
    torch.save(tensors, seqcls / "pytorch_model.bin")
    config = ConvBertConfig.from_pretrained(seqcls)
    with pytest.raises(ck.CheckpointError, match=f"pytorch_model.bin: {QUERY} has dtype complex64, expected a "
                                                 "float tensor"):
        ck.load_for_model(config, "sequence_classification", seqcls)


def test_pytorch_and_keras_refuse_integer_weights_with_one_message(seqcls):
    torch = pytest.importorskip("torch")  # noqa: F841
    pytest.importorskip("keras")
    import convbert_pt
    import convbert_tf

    tensors = _tensors(seqcls)
    tensors[QUERY] = np.full(tensors[QUERY].shape, -2, np.int8)
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    messages = []
    for module in (convbert_pt, convbert_tf):
        with pytest.raises(ck.CheckpointError) as info:
            module.ConvBertForSequenceClassification.from_pretrained(seqcls)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].endswith(f"{QUERY} has dtype int8, expected a float tensor")


# ------------------------------------------------------------------ item 10: fallbacks and overflow
def test_a_looping_model_safetensors_is_named_not_skipped_for_the_bin_beside_it(seqcls, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save({k: torch.from_numpy(v) for k, v in _tensors(seqcls).items()}, seqcls / "pytorch_model.bin")
    os.remove(seqcls / "model.safetensors")
    os.symlink("model.safetensors", seqcls / "model.safetensors")
    before = snapshot(tmp_path)
    assert main(["convert", str(seqcls), str(tmp_path / "out"), "-q"]) == 1
    assert one_line_error(capsys, "convert").endswith(
        f"error: {seqcls / 'model.safetensors'}: the weights file cannot be opened (a symlink loop); "
        "the other weight files beside it were not tried")
    assert snapshot(tmp_path) == before
    os.remove(seqcls / "model.safetensors")
    os.symlink("/nonexistent/weights", seqcls / "model.safetensors")
    with pytest.raises(ck.CheckpointError, match="a symlink to '/nonexistent/weights', which does not exist"):
        ck.find_weights_file(seqcls)


def test_float16_overflow_names_the_tensors_and_needs_allow_overflow(seqcls, tmp_path, capsys):
    tensors = _tensors(seqcls)
    tensors[QUERY] = tensors[QUERY] * 0 + 7e4
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    before = snapshot(tmp_path)
    assert main(["convert", str(seqcls), str(tmp_path / "half"), "--dtype", "float16", "-q"]) == 1
    assert one_line_error(capsys, "convert").endswith(
        f"error: {seqcls}: 1 tensor(s) hold values beyond the range of float16, which would be stored as inf: "
        f"{QUERY} (|x| up to 7e+04); nothing was written (pass --allow-overflow to write them anyway)")
    assert snapshot(tmp_path) == before
    assert main(["convert", str(seqcls), str(tmp_path / "half"), "--dtype", "float16", "--allow-overflow",
                 "-q"]) == 0
    written = ck.read_safetensors(tmp_path / "half" / "model.safetensors")
    assert np.isinf(written[QUERY]).all()
    # bfloat16 has float32's range: the same weights are fine there.
    assert main(["convert", str(seqcls), str(tmp_path / "bf16"), "--dtype", "bfloat16", "-q"]) == 0


def test_values_just_below_the_float16_limit_are_not_called_overflow():
    ok = {"a": np.array([65504.0, 65519.0, -65519.0, np.nan, np.inf], np.float32)}
    assert formats.overflowing(ok, "float16") == {}
    assert formats.overflowing({"a": np.array([-65520.0], np.float32)}, "float16") == {"a": 65520.0}
    assert formats.overflowing({"a": np.array([1e300])}, None) == {"a": 1e300}


def test_config_json_written_by_an_overflowing_conversion_is_not_left_behind(seqcls, tmp_path):
    tensors = _tensors(seqcls)
    tensors[QUERY] = tensors[QUERY] * 0 - 1e5
    ck.write_safetensors(seqcls / "model.safetensors", tensors)
    with pytest.raises(ValueError, match="beyond the range of float16"):
        conv.convert(str(seqcls), str(tmp_path / "half"), dtype="float16", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["seqcls"]
    assert json.loads((seqcls / "config.json").read_text())["architectures"]
