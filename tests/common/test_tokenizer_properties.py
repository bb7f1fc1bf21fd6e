"""Properties of ConvBertTokenizer(Fast) on arbitrary text, found by Hypothesis.

Any Unicode string (Hypothesis excludes lone surrogates, which Python cannot encode as UTF-8 and
which get their own error test) must encode; offsets must point into the text they came from;
truncation and padding must produce exactly the lengths they promise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast, slow_truncation_lengths

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB = FIXTURES / "vocab.txt"
CLS, SEP, PAD = 101, 102, 0
VOCAB_SIZE = 30522

FAST = ConvBertTokenizerFast(VOCAB)
SLOW = ConvBertTokenizer(VOCAB)
BOTH = pytest.mark.parametrize("tok", [FAST, SLOW], ids=["fast", "slow"])

# Mostly words and punctuation (so that sequences are long enough to truncate), plus anything.
VOCABULARY = ["the", "licence", "unaffable", "naïve", "東京", "Ωμέγα", ",", ".", "(", "🙂", "\t", "\u200b"]
words = st.lists(st.sampled_from(VOCABULARY), max_size=40).map(" ".join)
texts = st.one_of(st.text(max_size=80), words)
fast_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_offsets(enc, index: int, text: str, pair: str | None) -> None:
    for (start, end), seq in zip(enc.encodings[index].offsets, enc.sequence_ids(index), strict=True):
        source = text if seq == 0 else pair if seq == 1 else ""
        assert 0 <= start <= end <= len(source)


@fast_settings
@given(text=texts)
@BOTH
def test_any_text_encodes_to_cls_content_sep_with_ids_in_the_vocab(tok, text):
    enc = tok(text, return_special_tokens_mask=True, return_offsets_mapping=True)
    ids = enc["input_ids"]
    assert ids[0] == CLS and ids[-1] == SEP
    assert all(0 <= i < VOCAB_SIZE for i in ids)
    assert enc["attention_mask"] == [1] * len(ids)
    assert enc["token_type_ids"] == [0] * len(ids)
    assert enc["special_tokens_mask"][0] == enc["special_tokens_mask"][-1] == 1
    assert all(0 <= start <= end <= len(text) for start, end in enc["offset_mapping"])


@fast_settings
@given(text=texts, pair=texts)
def test_any_pair_encodes_with_offsets_inside_the_text_they_come_from(text, pair):
    enc = FAST([text], [pair], return_offsets_mapping=True)
    check_offsets(enc, 0, text, pair)
    type_ids, seqs = enc["token_type_ids"][0], enc.sequence_ids(0)
    assert type_ids == sorted(type_ids)  # zeros, then ones
    content = [(t, s) for t, s in zip(type_ids, seqs, strict=True) if s is not None]
    assert all(t == s for t, s in content)


@fast_settings
@given(text=texts, pair=st.none() | texts)
def test_slow_and_fast_agree_whenever_nothing_is_truncated(text, pair):
    kwargs = dict(return_special_tokens_mask=True, return_offsets_mapping=True)
    assert SLOW(text, pair, **kwargs) == FAST(text, pair, **kwargs)


@fast_settings
@given(
    text=texts,
    pair=st.none() | texts,
    max_length=st.integers(3, 40),
    strategy=st.sampled_from([True, "longest_first", "only_first", "only_second"]),
)
@BOTH
def test_truncation_respects_max_length_or_says_why_it_cannot(tok, text, pair, max_length, strategy):
    try:
        ids = tok(text, pair, truncation=strategy, max_length=max_length)["input_ids"]
    except ValueError as err:
        # only_first / only_second may have too little to remove from; the error names the strategy.
        assert strategy in ("only_first", "only_second") and strategy in str(err)
        return
    full = tok(text, pair)["input_ids"]
    assert len(ids) == min(len(full), max_length)
    assert ids[0] == CLS and ids[-1] == SEP


@fast_settings
@given(text=words, pair=words, max_length=st.integers(3, 40))
def test_slow_pair_truncation_keeps_the_reference_lengths_and_fast_the_same_total(text, pair, max_length):
    n_first = len(FAST.tokenize(text))
    n_second = len(FAST.tokenize(pair))
    expected = slow_truncation_lengths(n_first, n_second, max_length - 3, "longest_first")
    slow = SLOW(text, pair, truncation=True, max_length=max_length)["token_type_ids"]
    fast = FAST(text, pair, truncation=True, max_length=max_length)["token_type_ids"]
    assert (slow.count(0) - 2, slow.count(1) - 1) == expected
    assert len(fast) == len(slow)


@fast_settings
@given(
    batch=st.lists(texts, min_size=1, max_size=6),
    multiple=st.none() | st.integers(1, 16),
)
@BOTH
def test_padding_pads_every_row_to_the_longest_rounded_to_the_multiple(tok, batch, multiple):
    plain = tok(batch)["input_ids"]
    enc = tok(batch, padding=True, pad_to_multiple_of=multiple, return_tensors="np")
    longest = max(len(row) for row in plain)
    width = longest if multiple is None else -(-longest // multiple) * multiple
    assert enc["input_ids"].shape == (len(batch), width)
    for row, ids, mask in zip(plain, enc["input_ids"], enc["attention_mask"], strict=True):
        assert ids[: len(row)].tolist() == row
        assert (ids[len(row) :] == PAD).all()
        assert mask.tolist() == [1] * len(row) + [0] * (width - len(row))


@fast_settings
@given(
    batch=st.lists(texts, min_size=1, max_size=6),
    pairs=st.booleans(),
    max_length=st.integers(1, 8).map(lambda k: 8 * k),
)
@BOTH
def test_padding_and_truncation_to_max_length_give_exactly_max_length(tok, batch, pairs, max_length):
    pair = list(reversed(batch)) if pairs else None
    enc = tok(batch, pair, padding="max_length", truncation=True, max_length=max_length, pad_to_multiple_of=8)
    assert {len(row) for row in enc["input_ids"]} == {max_length}
    assert {len(row) for row in enc["attention_mask"]} == {max_length}


@fast_settings
@given(batch=st.lists(st.tuples(texts, texts), min_size=1, max_size=5))
def test_slow_and_fast_pad_identically(batch):
    kwargs = dict(padding=True, pad_to_multiple_of=4, return_special_tokens_mask=True)
    slow = SLOW(batch, **kwargs)
    fast = FAST(batch, **kwargs)
    assert slow == fast


@fast_settings
@given(text=texts)
@BOTH
def test_decoding_then_encoding_gives_back_the_same_ids(tok, text):
    ids = tok.encode(text)
    assert tok.encode(tok.decode(ids, clean_up_tokenization_spaces=False), add_special_tokens=False) == ids


@settings(max_examples=20, deadline=None)
@given(batch=st.lists(texts, min_size=1, max_size=4))
def test_tensor_outputs_equal_the_list_outputs(batch):
    lists = FAST(batch, padding=True, return_offsets_mapping=True)
    arrays = FAST(batch, padding=True, return_offsets_mapping=True, return_tensors="np")
    for name, value in lists.items():
        assert np.array_equal(arrays[name], np.asarray(value, dtype=np.int64).reshape(arrays[name].shape))
