"""Issue 15, resource exhaustion (item 11): a 600-byte config.json must not drive anything to GBs.

No timed assertions: the tests assert that the work done is bounded (no spec list for the
config's million layers is ever built) and that the refusal names both layer counts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from convbert_common import checkpoint as ck
from convbert_common import heads
from convbert_common import weight_map as wm
from convbert_common.config import ConvBertConfig
from convbert_tools import convert as conv
from convbert_tools.cli import main
from tests.conftest import fixture_file
from tests.hostile import one_line_error, snapshot

MILLION = 1_000_000
LAYERS = r"the checkpoint holds 2 encoder layers \(0..1\) but the config says num_hidden_layers=1000000"


@pytest.fixture
def bounded_specs(monkeypatch):
    """Fail the test if a spec list is built for more than a handful of layers."""
    original = wm.backbone_specs

    def guarded(config, **kwargs):
        assert config.num_hidden_layers <= 8, f"built specs for {config.num_hidden_layers} layers"
        return original(config, **kwargs)

    monkeypatch.setattr(wm, "backbone_specs", guarded)


@pytest.fixture
def million_layers(seqcls):
    """The sequence-classification checkpoint with a config that claims a million layers."""
    cfg = json.loads((seqcls / "config.json").read_text())
    text = json.dumps({**cfg, "num_hidden_layers": MILLION})
    assert len(text) < 1000  # the "600-byte config.json"
    (seqcls / "config.json").write_text(text)
    return seqcls


def test_a_million_layer_config_is_refused_before_any_spec_is_built(million_layers, bounded_specs):
    config = ConvBertConfig.from_pretrained(million_layers)
    with pytest.raises(ck.CheckpointError, match=LAYERS):
        ck.load_for_model(config, "sequence_classification", million_layers)


def test_info_and_convert_refuse_it_in_one_line(million_layers, bounded_specs, tmp_path, capsys):
    assert main(["info", str(million_layers)]) == 1
    err = capsys.readouterr()
    assert "num_hidden_layers=1000000" in err.err and len(err.err.strip().splitlines()) == 1
    before = snapshot(tmp_path)
    assert main(["convert", str(million_layers), str(tmp_path / "out"), "-q"]) == 1
    assert "but the config says num_hidden_layers=1000000" in one_line_error(capsys, "convert")
    assert snapshot(tmp_path) == before


def test_from_pretrained_refuses_it_before_building_the_model(million_layers, bounded_specs):
    pytest.importorskip("torch")
    import convbert_pt

    with pytest.raises(ck.CheckpointError, match=LAYERS):
        convbert_pt.ConvBertForSequenceClassification.from_pretrained(million_layers)


def test_the_hf_tf_h5_reader_refuses_it_before_translating_names(tmp_path, bounded_specs):
    folder = fixture_file("hf-convbert-tiny/model/tf_model.h5").parent
    config = ConvBertConfig.from_pretrained(folder, num_hidden_layers=MILLION)
    with pytest.raises(ck.CheckpointError, match=LAYERS.replace("2 encoder", "2 encoder")):
        ck.load_for_model(config, "model", folder / "tf_model.h5")


def test_a_tf1_import_refuses_it_before_translating_names(tmp_path, bounded_specs):
    pytest.importorskip("tensorflow")
    src = fixture_file("tf1-original/model.ckpt.index").parent
    cfg = json.loads((src / "config.json").read_text())
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**cfg, "num_hidden_layers": MILLION}))
    with pytest.raises(ck.CheckpointError, match=LAYERS):
        conv.convert(str(src), str(tmp_path / "out"), config_path=str(bad), progress=False)


def test_missing_layers_in_the_middle_are_named():
    names = [f"encoder.layer.{i}.output.dense.weight" for i in (0, 1, 3, 5)]
    config = ConvBertConfig(num_hidden_layers=6, hidden_size=32, num_attention_heads=4, intermediate_size=37,
                            embedding_size=16, vocab_size=99)
    with pytest.raises(ck.CheckpointError, match=r"holds encoder layers up to 5 with 2 missing \(2, 4\)"):
        ck.check_layer_count(config, names, "canonical")
    ck.check_layer_count(config.replace(num_hidden_layers=2), names[:2], "canonical")


def test_a_head_larger_than_the_checkpoint_is_refused(tmp_path):
    """num_labels can ask for a head far larger than the weights loaded into the model."""
    base = fixture_file("hf-convbert-tiny/model/model.safetensors").parent
    config = ConvBertConfig.from_pretrained(base, num_labels=10000)
    with pytest.raises(ck.CheckpointError, match=r"the config asks for 331,056 newly initialised head parameters "
                                                 r"\(classifier.dense.weight, .*\), more than the 258,718 the "
                                                 r"checkpoint holds; is num_labels"):
        ck.load_for_model(config, "sequence_classification", base)
    # An ordinary new head is fine.
    result = ck.load_for_model(config.replace(num_labels=3), "sequence_classification", base)
    assert len(result.missing_keys) == 4


@pytest.mark.parametrize("head", heads.NAMES)
def test_the_computed_parameter_count_is_the_models(head):
    torch = pytest.importorskip("torch")  # noqa: F841
    from convbert_pt.modeling import MODEL_CLASSES

    config = ConvBertConfig(vocab_size=101, hidden_size=32, embedding_size=16, num_hidden_layers=3,
                            num_attention_heads=4, intermediate_size=64, num_groups=2)
    assert wm.parameter_count(config, head) == MODEL_CLASSES[head](config).num_parameters()


def test_counting_a_million_layers_builds_one_layers_specs(bounded_specs):
    config = ConvBertConfig(num_hidden_layers=MILLION)
    per_layer = wm.parameter_count(config.replace(num_hidden_layers=2), "model") - wm.parameter_count(
        config.replace(num_hidden_layers=1), "model")
    assert wm.parameter_count(config, "model") == wm.parameter_count(config.replace(num_hidden_layers=1), "model") \
        + (MILLION - 1) * per_layer
    with pytest.raises(ValueError, match=r"^config.json: a ConvBertModel of this config has 6,820,301,837,184 "
                                         r"parameters \(num_hidden_layers=1000000, hidden_size=768, "
                                         r"vocab_size=30522\), more than max_params=1,000,000,000"):
        wm.check_parameter_count(config, "model", 10**9, source="config.json")
    assert wm.check_parameter_count(config.replace(num_hidden_layers=2), "model", 10**9) < 10**9


def test_info_of_a_config_alone_reports_the_computed_size(tmp_path, capsys, bounded_specs):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_hidden_layers": MILLION}))
    assert main(["info", str(path)]) == 0
    assert "parameters        6,820,301,837,184 (computed from the config)" in capsys.readouterr().out


def test_an_oversized_config_json_is_refused_without_parsing_it(tmp_path):
    path = tmp_path / "config.json"
    with open(path, "w") as fh:
        fh.write('{"x": "')
        fh.write("a" * (65 << 20))
        fh.write('"}')
    with pytest.raises(ValueError, match="config.json is larger than 64 MiB: not a model config"):
        ConvBertConfig.from_pretrained(tmp_path)


def test_model_specs_of_matching_layer_counts_are_checked_with_sets():
    """The missing-tensor report is linear: every backbone tensor missing from a 2-layer checkpoint."""
    config = ConvBertConfig.from_pretrained(fixture_file("hf-convbert-tiny/model/config.json").parent)
    only_layers = {f"encoder.layer.{i}.output.dense.weight": np.zeros((config.hidden_size, config.intermediate_size),
                                                                      np.float32) for i in range(2)}
    with pytest.raises(ck.CheckpointError, match=r"missing \d+: embeddings.word_embeddings.weight"):
        ck.match_to_model(config, "model", only_layers, source="x")
