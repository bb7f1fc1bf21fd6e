"""The task table: one record per model class, and the refusals that keep a head from being dropped."""

import pytest

from convbert_common import heads
from convbert_common import weight_map as wm
from tests.configs import tiny_config


def test_every_task_is_found_by_name_class_and_tf_class():
    for name, task in heads.TASKS.items():
        assert heads.get(name) is task and heads.get(task) is task
        assert heads.of_class(task.class_name) is task and heads.of_class(task.tf_class_name) is task
        assert heads.of_architectures([task.tf_class_name]) is task


def test_architectures_that_would_lose_a_head_are_refused():
    with pytest.raises(ValueError, match="architectures must be a list of class names, got 'ConvBertModel'"):
        heads.of_architectures("ConvBertModel", source="x/config.json")
    with pytest.raises(ValueError, match="config.json: architectures names .BertForMaskedLM., which is not a ConvBERT"):
        heads.of_architectures(["BertForMaskedLM"], source="x/config.json")
    with pytest.raises(ValueError, match="names several tasks"):
        heads.of_architectures(["ConvBertForMaskedLM", "ConvBertForTokenClassification"])
    assert heads.of_architectures(None) is None and heads.of_architectures([]) is None
    with pytest.raises(ValueError, match="unknown head 'pooler'; choose one of model, masked_lm"):
        heads.get("pooler")


def test_head_specs_come_from_the_records_with_every_format_name():
    config = tiny_config()
    E, H, V = config.embedding_size, config.hidden_size, config.vocab_size
    mlm = {s.name: s for s in wm.head_specs(config, heads.MASKED_LM)}
    assert mlm["generator_predictions.dense.weight"].shape == (E, H)
    assert mlm["generator_predictions.dense.weight"].tf1 == "generator_predictions/dense/kernel"
    assert mlm["generator_predictions.LayerNorm.weight"].hf_tf == "generator_predictions/LayerNorm/gamma"
    assert mlm["generator_lm_head.bias"].tf1 == "generator_predictions/output_bias"
    assert mlm["generator_lm_head.bias"].shape == (V,)
    seq = {s.name: s for s in wm.head_specs(config, "sequence_classification")}
    assert seq["classifier.out_proj.weight"].shape == (config.num_labels, H)
    assert seq["classifier.out_proj.weight"].keras_layer == "classifier/out_proj"
    assert all(s.is_head and s.tf1 is None for s in seq.values())
    assert wm.head_specs(config, heads.MODEL) == []
    # The masked LM's backbone imports from the authors' generator scope.
    last_layer = f"generator/encoder/layer_{config.num_hidden_layers - 1}/"
    assert wm.model_specs(config, heads.MASKED_LM)[-7].tf1.startswith(last_layer)
