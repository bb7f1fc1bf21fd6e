"""initialize=False is for loaders: zero variables for that model only, random ones for the next."""

import numpy as np

from convbert_common.config import ConvBertConfig
from convbert_tf import ConvBertModel
from convbert_tf import io as tf_io

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
            embedding_size=8, max_position_embeddings=16, pad_token_id=0)


def test_initialize_false_zeroes_the_variables_of_that_model_only():
    config = ConvBertConfig(**TINY)
    skipped = ConvBertModel(config, initialize=False)
    fresh = ConvBertModel(config)
    word = "embeddings.word_embeddings.weight"
    assert not np.any(tf_io.canonical_arrays(skipped)[word])
    assert np.std(tf_io.canonical_arrays(fresh)[word]) > 0.5 * config.initializer_range


def test_consuming_assignment_empties_the_dict_and_loads_every_tensor():
    config = ConvBertConfig(**TINY)
    source = tf_io.canonical_arrays(ConvBertModel(config))
    expected = {k: v.copy() for k, v in source.items()}
    target = ConvBertModel(config, initialize=False)
    tf_io.assign_canonical(target, source, consume=True)
    assert source == {}
    got = tf_io.canonical_arrays(target)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_fresh_model_starts_with_a_zero_pad_row_as_in_pytorch():
    config = ConvBertConfig(**{**TINY, "pad_token_id": 3})
    table = tf_io.canonical_arrays(ConvBertModel(config))["embeddings.word_embeddings.weight"]
    assert not np.any(table[3]) and np.all(np.any(table[np.arange(40) != 3] != 0, axis=1))
