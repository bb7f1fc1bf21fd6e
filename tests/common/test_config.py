import json

import pytest

from convbert_common import shapes
from convbert_common.config import ConvBertConfig
from convbert_common.presets import PRESETS, preset
from tests.conftest import HEADS, fixture_file


def test_defaults_match_hf_convbert_config():
    c = ConvBertConfig()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (30522, 768, 12, 12)
    assert (c.intermediate_size, c.hidden_act, c.max_position_embeddings, c.type_vocab_size) == (3072, "gelu", 512, 2)
    assert (c.embedding_size, c.head_ratio, c.conv_kernel_size, c.num_groups) == (768, 2, 9, 1)
    assert c.pad_token_id == 1 and c.classifier_dropout is None and c.layer_norm_eps == 1e-12
    assert c.num_labels == 2 and c.id2label == {0: "LABEL_0", 1: "LABEL_1"}


@pytest.mark.parametrize("head", HEADS)
def test_every_fixture_config_loads_and_round_trips(head, tmp_path):
    path = fixture_file(f"hf-convbert-tiny/{head}/config.json")
    raw = json.loads(path.read_text())
    c = ConvBertConfig.from_pretrained(path.parent)
    assert c.hidden_size == 32 and c.embedding_size == 8 and c.pad_token_id == 0
    assert c.dtype == "float32"  # transformers 4.57 writes "dtype"
    c.save_pretrained(tmp_path)
    again = json.loads((tmp_path / "config.json").read_text())
    assert again["model_type"] == "convbert"
    for key, value in raw.items():
        assert again[key] == value, key
    assert ConvBertConfig.from_pretrained(tmp_path) == c


def test_unknown_keys_are_kept_and_torch_dtype_is_accepted(tmp_path):
    c = ConvBertConfig.from_dict({"torch_dtype": "float16", "my_field": [1, 2], "hidden_size": 64,
                                  "num_attention_heads": 4, "intermediate_size": 64, "embedding_size": 16})
    assert c.dtype == "float16" and c.extra == {"my_field": [1, 2]}
    assert c.to_dict()["my_field"] == [1, 2]


def test_num_labels_override_regenerates_label_maps():
    c = ConvBertConfig.from_dict({"id2label": {"0": "neg", "1": "pos"}}, num_labels=3)
    assert c.num_labels == 3 and c.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    d = ConvBertConfig.from_dict({"id2label": {"0": "neg", "1": "pos"}})
    assert d.num_labels == 2 and d.label2id == {"neg": 0, "pos": 1}


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("conv_kernel_size", 8, "conv_kernel_size must be odd"),
        ("conv_kernel_size", 0, "conv_kernel_size must be >= 1"),
        ("conv_kernel_size", -3, "conv_kernel_size must be >= 1"),
        ("num_groups", 5, "num_groups .5. must divide hidden_size"),
        ("head_ratio", 0, "head_ratio must be >= 1"),
        ("hidden_size", 0, "hidden_size must be >= 1"),
        ("num_hidden_layers", -1, "num_hidden_layers must be >= 1"),
        ("vocab_size", 0, "vocab_size must be >= 1"),
        ("intermediate_size", 0, "intermediate_size must be >= 1"),
        ("embedding_size", 0, "embedding_size must be >= 1"),
        ("hidden_dropout_prob", 1.0, "hidden_dropout_prob must be a number in \\[0, 1\\)"),
        ("attention_probs_dropout_prob", -0.1, "attention_probs_dropout_prob"),
        ("classifier_dropout", 1.5, "classifier_dropout"),
        ("hidden_act", "gelu_magic", "hidden_act 'gelu_magic' is not supported"),
        ("hidden_size", "768", "hidden_size must be an int"),
        ("pad_token_id", 40000, "pad_token_id .40000. must be < vocab_size"),
        ("problem_type", "ranking", "problem_type"),
        ("layer_norm_eps", 0, "layer_norm_eps must be a positive finite number"),
        ("layer_norm_eps", float("nan"), "layer_norm_eps must be a positive finite number"),
        ("initializer_range", float("inf"), "initializer_range must be a positive finite number"),
        ("architectures", "ConvBertModel", "architectures must be a list of class names"),
    ],
)
def test_invalid_field_raises_value_error_naming_it(field, value, message):
    with pytest.raises(ValueError, match=message):
        ConvBertConfig(**{field: value})


def test_num_groups_must_divide_intermediate_size():
    with pytest.raises(ValueError, match="must divide intermediate_size"):
        ConvBertConfig(num_groups=2, intermediate_size=37, hidden_size=32, num_attention_heads=4, embedding_size=8)


def test_head_arithmetic_that_cannot_map_hidden_back_is_rejected():
    with pytest.raises(ValueError, match="hidden_size .30. must be divisible by 2 \\* 4"):
        ConvBertConfig(hidden_size=30, num_attention_heads=8, head_ratio=2, intermediate_size=30, embedding_size=30)


def test_malformed_config_json_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        ConvBertConfig.from_pretrained(tmp_path)
    bad.write_text(json.dumps({"hidden_size": "big"}))
    with pytest.raises(ValueError, match=r"config.json: ConvBertConfig.hidden_size must be an int"):
        ConvBertConfig.from_pretrained(tmp_path)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a JSON object"):
        ConvBertConfig.from_pretrained(tmp_path)
    bad.write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type is 'bert', expected 'convbert'"):
        ConvBertConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config file"):
        ConvBertConfig.from_pretrained(tmp_path / "missing")


def test_save_pretrained_leaves_no_temporary_files(tmp_path):
    ConvBertConfig().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.parametrize(
    "name,hidden,heads,ffn,emb,groups",
    [("small", 256, 4, 1024, 128, 1), ("medium-small", 384, 8, 1536, 128, 2), ("base", 768, 12, 3072, 768, 1)],
)
def test_presets_have_the_released_sizes(name, hidden, heads, ffn, emb, groups):
    c = preset(name)
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.embedding_size, c.num_groups) == (
        hidden, heads, ffn, emb, groups)
    assert (c.num_hidden_layers, c.conv_kernel_size, c.head_ratio, c.pad_token_id) == (12, 9, 2, 0)
    assert set(PRESETS[name]) >= {"vocab_size", "hidden_act", "max_position_embeddings", "layer_norm_eps"}
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize(
    "hidden,heads,ratio,expected",
    [(768, 12, 2, (6, 64, 384, 768)), (32, 4, 2, (2, 8, 16, 32)), (32, 4, 1, (4, 4, 16, 32)),
     (32, 4, 3, (1, 16, 16, 32)), (32, 4, 8, (1, 16, 16, 32)), (384, 8, 2, (4, 48, 192, 384))],
)
def test_head_shapes(hidden, heads, ratio, expected):
    h = shapes.head_shapes(hidden, heads, ratio)
    assert (h.num_heads, h.head_size, h.all_head_size, h.mixed_size) == expected


def test_check_overrides_rejects_misspelt_fields_naming_them():
    ConvBertConfig.check_overrides({"hidden_dropout_prob": 0.0, "num_labels": 3}, "X.from_pretrained")
    with pytest.raises(TypeError, match=r"X.from_pretrained got unexpected keyword argument\(s\) hiden_size"):
        ConvBertConfig.check_overrides({"hiden_size": 3}, "X.from_pretrained")
