"""initialize=False is for loaders: zero variables for that model only, random ones for the next."""

import numpy as np

from convbert_tf import ConvBertModel
from convbert_tf import io as tf_io
from tests.configs import tiny_config
from tests.tolerances import INIT_STD_MIN_FRACTION


def test_initialize_false_zeroes_the_variables_of_that_model_only():
    config = tiny_config()
    skipped = ConvBertModel(config, initialize=False)
    fresh = ConvBertModel(config)
    word = "embeddings.word_embeddings.weight"
    assert not np.any(tf_io.canonical_arrays(skipped)[word])
    assert np.std(tf_io.canonical_arrays(fresh)[word]) > INIT_STD_MIN_FRACTION * config.initializer_range


def test_consuming_assignment_empties_the_dict_and_loads_every_tensor():
    config = tiny_config()
    source = tf_io.canonical_arrays(ConvBertModel(config))
    expected = {k: v.copy() for k, v in source.items()}
    target = ConvBertModel(config, initialize=False)
    tf_io.assign_canonical(target, source, consume=True)
    assert source == {}
    got = tf_io.canonical_arrays(target)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_fresh_model_starts_with_a_zero_pad_row_as_in_pytorch():
    config = tiny_config(pad_token_id=3)
    table = tf_io.canonical_arrays(ConvBertModel(config))["embeddings.word_embeddings.weight"]
    assert not np.any(table[3]) and np.all(np.any(table[np.arange(config.vocab_size) != 3] != 0, axis=1))
