"""Properties of pad, pre-split words, overflowing windows and added tokens, found by Hypothesis.

The HF comparisons (test_tokenizer_surface.py) pin the behaviour on the corpus; these check the
promises on any input: padding gives exactly the target length and keeps the content, a word's
tokens are the tokens of that word alone, windows tile the truncated sequence with ``stride``
tokens of overlap, and added tokens take the next ids and survive a save.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB = FIXTURES / "vocab.txt"
PAD = 0

FAST = ConvBertTokenizerFast(VOCAB)
SLOW = ConvBertTokenizer(VOCAB)
BOTH = pytest.mark.parametrize("tok", [FAST, SLOW], ids=["fast", "slow"])
quick = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = ["the", "licence", "unaffable", "naïve", "東京", "Ωμέγα", ",", "(c)", "🙂", "New York", "", "a.b", "[MASK]"]
word_lists = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12)
texts = st.lists(st.sampled_from([w for w in WORDS if w]), max_size=30).map(" ".join)
id_rows = st.lists(st.integers(min_value=1, max_value=30521), max_size=20)


@quick
@given(
    rows=st.lists(id_rows, min_size=1, max_size=6),
    padding=st.sampled_from([True, "longest", "max_length"]),
    max_length=st.integers(min_value=1, max_value=25),
    multiple=st.one_of(st.none(), st.integers(min_value=1, max_value=8)),
    side=st.sampled_from(["right", "left"]),
)
def test_pad_gives_every_row_the_target_length_and_keeps_its_content(rows, padding, max_length, multiple, side):
    examples = [{"input_ids": row, "token_type_ids": [1] * len(row), "special_tokens_mask": [0] * len(row)}
                for row in rows]
    out = FAST.pad(examples, padding=padding, max_length=max_length, pad_to_multiple_of=multiple, padding_side=side)
    target = max_length if padding == "max_length" else max(len(r) for r in rows)
    if multiple and target % multiple:
        target += multiple - target % multiple
    for row, ids, mask, types, special in zip(
        rows, out["input_ids"], out["attention_mask"], out["token_type_ids"], out["special_tokens_mask"], strict=True
    ):
        width = max(target, len(row))  # longer rows are never cut
        missing = width - len(row)
        assert len(ids) == len(mask) == len(types) == len(special) == width
        content = ids[:len(row)] if side == "right" else ids[missing:]
        padding_ids = ids[len(row):] if side == "right" else ids[:missing]
        assert content == row and padding_ids == [PAD] * missing
        assert sum(mask) == len(row) and sum(special) == missing and sum(types) == len(row)


@quick
@given(words=word_lists, pair=st.one_of(st.none(), word_lists))
def test_each_word_gets_the_tokens_it_has_alone_and_word_ids_say_which(words, pair):
    enc = FAST(words, pair, is_split_into_words=True)
    for sequence, sequence_words in enumerate([words] if pair is None else [words, pair]):
        for index, word in enumerate(sequence_words):
            span = enc.word_to_tokens(index, sequence_index=sequence)
            alone = FAST.tokenize(word)
            got = [] if span is None else enc.tokens()[span.start : span.end]
            assert got == alone, (word, got, alone)
            assert all(enc.token_to_word(t) == index for t in range(*span)) if span else not alone
    seen = [w for w, s in zip(enc.word_ids(), enc.sequence_ids(), strict=True) if s == 0]
    assert seen == sorted(seen)
    # The slow class gives the same ids where nothing is truncated (it has no word_ids).
    assert SLOW(words, pair, is_split_into_words=True)["input_ids"] == enc["input_ids"]


@quick
@given(
    question=texts,
    context=texts,
    max_length=st.integers(min_value=12, max_value=40),
    stride=st.integers(min_value=0, max_value=12),
)
def test_windows_tile_the_context_with_stride_tokens_of_overlap_or_say_why_not(question, context, max_length, stride):
    kwargs = dict(truncation="only_second", max_length=max_length, stride=stride, return_overflowing_tokens=True)
    q = FAST(question, add_special_tokens=False)["input_ids"]
    c = FAST(context, add_special_tokens=False)["input_ids"]
    window = max_length - 3 - len(q)
    try:
        enc = FAST(question, context, **kwargs)
    except ValueError as err:
        # Refused exactly when the stride is not less than max_length minus [CLS] [SEP] (the backend's
        # own rule), or the context must be cut and the question leaves no room or a window <= stride.
        assert stride >= max_length - 2 or (len(c) > window and (window <= 0 or stride >= window)), str(err)
        assert "stride" in str(err) or "only_second" in str(err)
        return
    rows = enc["input_ids"]
    assert enc["overflow_to_sample_mapping"] == [0] * len(rows)
    pieces = []
    for i, row in enumerate(rows):
        sequence_ids = enc.sequence_ids(i)
        assert [t for t, s in zip(row, sequence_ids, strict=True) if s == 0] == q
        pieces.append([t for t, s in zip(row, sequence_ids, strict=True) if s == 1])
        assert len(row) <= max_length
    joined = pieces[0]
    for before, piece in zip(pieces, pieces[1:], strict=False):
        assert before[len(before) - stride :] == piece[:stride]
        joined = joined + piece[stride:]
    assert joined == c


@quick
@given(text=texts, max_length=st.integers(min_value=3, max_value=20), stride=st.integers(min_value=0, max_value=6))
def test_slow_overflowing_tokens_are_the_cut_tail_after_stride_tokens_of_context(text, max_length, stride):
    ids = SLOW(text, add_special_tokens=False)["input_ids"]
    enc = SLOW(text, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True)
    kept = enc["input_ids"][1:-1]
    assert enc["num_truncated_tokens"] == len(ids) + 2 - max_length
    assert kept == ids[: len(kept)]
    cut = len(ids) - len(kept)
    assert enc["overflowing_tokens"] == (ids[max(0, len(ids) - cut - stride) :] if cut else [])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(new=st.lists(st.text(alphabet="abcxyz<>_", min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
@BOTH
def test_added_tokens_take_the_next_ids_and_survive_a_save(tok, new):
    grown = type(tok)(VOCAB)
    known = grown.get_vocab()
    grown.add_tokens([f"<{t}>" for t in new], special_tokens=True)
    fresh = [f"<{t}>" for t in new if f"<{t}>" not in known]
    assert len(grown) == 30522 + len(fresh)
    assert grown.convert_tokens_to_ids(fresh) == list(range(30522, 30522 + len(fresh)))
    text = " ".join(f"x<{t}>y" for t in new)
    with tempfile.TemporaryDirectory() as folder:
        grown.save_pretrained(folder)
        again = type(tok).from_pretrained(folder)
    assert len(again) == len(grown) and again(text)["input_ids"] == grown(text)["input_ids"]
    assert again.decode(again(text)["input_ids"], skip_special_tokens=True) == grown.decode(
        grown(text)["input_ids"], skip_special_tokens=True
    )
