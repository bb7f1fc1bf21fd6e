"""ConvBertTokenizer(Fast) against the reference outputs, and the call API's contract.

The golden records (tests/fixtures/tokenizer/expected_uncased.jsonl.gz) were produced by Hugging Face
transformers 4.57.6 on the real BERT-uncased vocabulary; see the fixtures README for the corpus.
"""

from __future__ import annotations

import functools
import gzip
import json
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from convbert_common.tokenizer import (
    BatchEncoding,
    ConvBertTokenizer,
    ConvBertTokenizerFast,
    slow_truncation_lengths,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB = FIXTURES / "vocab.txt"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_CLASSES = [ConvBertTokenizerFast, ConvBertTokenizer]
FIELDS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask")


@functools.cache
def golden_records() -> tuple[dict, ...]:
    with gzip.open(FIXTURES / "expected_uncased.jsonl.gz", "rt", encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh)


@functools.cache
def disagreements() -> tuple[dict, ...]:
    with open(FIXTURES / "slow_fast_disagreements.json", encoding="utf-8") as fh:
        return tuple(json.load(fh)["uncased"])


@pytest.fixture(scope="module")
def fast() -> ConvBertTokenizerFast:
    return ConvBertTokenizerFast(VOCAB)


@pytest.fixture(scope="module")
def slow() -> ConvBertTokenizer:
    return ConvBertTokenizer(VOCAB)


@pytest.fixture(scope="module", params=TOKENIZER_CLASSES, ids=["fast", "slow"])
def tok(request):
    return request.param(VOCAB)


def write_vocab(directory: Path, tokens: list[str]) -> Path:
    path = directory / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def encode_record(tokenizer, record: dict) -> BatchEncoding:
    truncation = {"truncation": True, "max_length": record["max_length"]} if record["truncation"] else {}
    return tokenizer(
        record["text"],
        record["text_pair"],
        return_special_tokens_mask=True,
        return_offsets_mapping=True,
        **truncation,
    )


def mismatches(got: dict, expected: dict, record: dict) -> list[str]:
    """Name every field that differs, with the record and the first differing position."""
    found = []
    for name, want in expected.items():
        have = got[name]
        if have != want:
            pairs = enumerate(zip(have, want, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), min(len(have), len(want)))
            found.append(
                f"record {record['n']} ({record['kind']}, truncation={record['truncation']}): {name} differs "
                f"at position {at} (lengths {len(have)} vs {len(want)})"
            )
    return found


def report(problems: list[str]) -> str:
    return f"{len(problems)} mismatches, first ones:\n" + "\n".join(problems[:10])


# ------------------------------------------------------------------------------- golden records
def test_golden_fixture_has_all_900_records_and_12_disagreements():
    assert len(golden_records()) == 900
    assert len(disagreements()) == 12


def test_fast_tokenizer_reproduces_reference_fast_outputs_on_all_golden_records(fast):
    problems = []
    for record in golden_records():
        enc = encode_record(fast, record)
        got = {name: enc[name] for name in FIELDS}
        got["tokens"] = enc.tokens()
        got["offsets"] = [list(pair) for pair in enc["offset_mapping"]]
        got["word_ids"] = enc.word_ids()
        got["sequence_ids"] = enc.sequence_ids()
        expected = {key: record["fast"][key] for key in got}
        problems += mismatches(got, expected, record)
    assert not problems, report(problems)


def test_slow_tokenizer_reproduces_reference_slow_outputs_on_all_golden_records(slow):
    problems = []
    for record in golden_records():
        enc = encode_record(slow, record)
        got = {name: enc[name] for name in FIELDS}
        got["tokens"] = slow.convert_ids_to_tokens(enc["input_ids"])
        expected = {key: record["slow"][key] for key in got}
        problems += mismatches(got, expected, record)
    assert not problems, report(problems)


def test_slow_and_fast_differ_exactly_on_the_recorded_pair_truncation_records(fast, slow):
    differing = {
        record["n"]
        for record in golden_records()
        if encode_record(fast, record)["input_ids"] != encode_record(slow, record)["input_ids"]
    }
    assert differing == {d["n"] for d in disagreements()}
    for entry in disagreements():
        kwargs = {"truncation": True, "max_length": entry["max_length"]}
        fast_ids = fast(entry["text"], entry["text_pair"], **kwargs)["input_ids"]
        slow_ids = slow(entry["text"], entry["text_pair"], **kwargs)["input_ids"]
        assert fast.convert_ids_to_tokens(fast_ids) == entry["fast_tokens"], entry["n"]
        assert slow.convert_ids_to_tokens(slow_ids) == entry["slow_tokens"], entry["n"]


@pytest.mark.parametrize("truncated", [False, True], ids=["full", "truncated_to_32"])
def test_batched_call_equals_one_call_per_golden_record(tok, truncated):
    records = [r for r in golden_records() if r["truncation"] == truncated]
    singles = [r for r in records if r["kind"] == "single"]
    pairs = [r for r in records if r["kind"] == "pair"]
    kwargs = {"truncation": True, "max_length": 32} if truncated else {}
    side = "fast" if tok.is_fast else "slow"
    batch = tok([r["text"] for r in singles], **kwargs)
    assert batch["input_ids"] == [r[side]["input_ids"] for r in singles]
    batch = tok([r["text"] for r in pairs], [r["text_pair"] for r in pairs], **kwargs)
    assert batch["input_ids"] == [r[side]["input_ids"] for r in pairs]
    assert batch["token_type_ids"] == [r[side]["token_type_ids"] for r in pairs]
    as_tuples = tok([(r["text"], r["text_pair"]) for r in pairs], **kwargs)
    assert as_tuples["input_ids"] == batch["input_ids"]


def test_slow_truncation_lengths_equal_removing_one_token_at_a_time():
    def one_at_a_time(n1, n2, budget):
        while n1 + n2 > budget:
            if n1 > n2:
                n1 -= 1
            else:
                n2 -= 1
        return n1, n2

    for n1 in range(13):
        for n2 in range(13):
            for budget in range(27):
                expected = one_at_a_time(n1, n2, budget)
                assert slow_truncation_lengths(n1, n2, budget, "longest_first") == expected


# ------------------------------------------------------------------------------ construction
def test_special_token_ids_come_from_the_vocab_not_from_defaults(tmp_path):
    vocab = write_vocab(tmp_path, ["hello", "[MASK]", "[SEP]", "world", "[CLS]", "[UNK]", "[PAD]", "##s"])
    for cls in TOKENIZER_CLASSES:
        tokenizer = cls(vocab)
        ids = (
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.mask_token_id,
        )
        assert ids == (6, 5, 4, 2, 1)
        enc = tokenizer(["hello worlds", "hello"], padding=True)
        assert enc["input_ids"] == [[4, 0, 3, 7, 2], [4, 0, 2, 6, 6]]
        assert tokenizer.all_special_ids == [5, 2, 6, 4, 1]


@pytest.mark.parametrize("missing", SPECIALS)
@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_vocab_without_a_special_token_raises_naming_the_file_and_the_token(tmp_path, cls, missing):
    vocab = write_vocab(tmp_path, [t for t in SPECIALS if t != missing] + ["hello"])
    with pytest.raises(ValueError) as err:
        cls(vocab)
    assert str(vocab) in str(err.value)
    assert missing in str(err.value)


def test_mask_token_may_be_switched_off(tmp_path):
    vocab = write_vocab(tmp_path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    tokenizer = ConvBertTokenizerFast(vocab, mask_token=None)
    assert tokenizer.mask_token_id is None
    assert tokenizer.all_special_ids == [1, 3, 0, 2]


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_missing_vocab_file_raises_with_its_path(tmp_path, cls):
    path = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="nope"):
        cls(path)


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_empty_vocab_file_raises_with_its_path(tmp_path, cls):
    path = tmp_path / "vocab.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty") as err:
        cls(path)
    assert str(path) in str(err.value)


def test_non_utf8_vocab_raises_with_its_path(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(ValueError, match="UTF-8") as err:
        ConvBertTokenizerFast(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"model_max_length": 0}, "model_max_length"),
        ({"model_max_length": "512"}, "model_max_length"),
        ({"strip_accents": "yes"}, "strip_accents"),
        ({"unk_token": ""}, "unk_token"),
        ({"cls_token": None}, "cls_token"),
        ({"never_split": "[unused0]"}, "never_split"),
    ],
)
def test_bad_constructor_options_raise_naming_the_option(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ConvBertTokenizerFast(VOCAB, **kwargs)


def test_properties_describe_the_bert_uncased_vocab(tok):
    assert tok.vocab_size == len(tok) == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert tok.all_special_ids == [100, 102, 0, 101, 103]
    assert tok.all_special_tokens == ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]
    assert tok.model_max_length == 512
    assert tok.get_vocab()["hello"] == 7592
    assert "vocab_size=30522" in repr(tok)


def test_convbert_common_tokenizer_imports_no_deep_learning_framework():
    code = (
        "import sys, convbert_common.tokenizer\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ tokenization
def test_tokenize_splits_words_into_wordpieces_and_keeps_special_tokens_whole(tok):
    assert tok.tokenize("unaffable [MASK] a,b") == ["una", "##ffa", "##ble", "[MASK]", "a", ",", "b"]
    assert tok.tokenize("a", "b", add_special_tokens=True) == ["[CLS]", "a", "[SEP]", "b", "[SEP]"]


def test_words_longer_than_100_characters_become_unk(tok):
    assert tok.tokenize("a" * 100) != ["[UNK]"]
    assert tok.tokenize("a" * 101) == ["[UNK]"]


def test_do_lower_case_false_keeps_capitals(tok):
    cased = type(tok)(VOCAB, do_lower_case=False)
    assert cased.tokenize("Hello") != tok.tokenize("Hello") == ["hello"]


def test_slow_tokenizer_composes_accents_before_wordpiece_like_the_reference(tmp_path):
    # The reference BasicTokenizer applies NFC; HF's Rust normaliser does not.
    vocab = write_vocab(tmp_path, SPECIALS + ["caf\u00e9", "cafe", "##\u0301"])
    decomposed = "cafe\u0301"
    assert ConvBertTokenizer(vocab, do_lower_case=False).tokenize(decomposed) == ["caf\u00e9"]
    assert ConvBertTokenizerFast(vocab, do_lower_case=False).tokenize(decomposed) == ["cafe", "##\u0301"]


def test_slow_tokenizer_never_split_keeps_vocab_words_whole(slow):
    kept = ConvBertTokenizer(VOCAB, never_split=["[unused0]"])
    assert kept.tokenize("x [unused0] y") == ["x", "[unused0]", "y"]
    assert slow.tokenize("x [unused0] y") == ["x", "[", "unused", "##0", "]", "y"]


def test_slow_tokenizer_without_basic_tokenize_splits_on_whitespace_only(slow):
    plain = ConvBertTokenizer(VOCAB, do_basic_tokenize=False)
    assert plain.tokenize("a,b") == ["a", "##,", "##b"]
    assert slow.tokenize("a,b") == ["a", ",", "b"]


def test_pair_without_special_tokens_type_ids_follow_each_reference(fast, slow):
    # HF's Rust template still marks the second sequence; HF's Python path writes zeros.
    assert fast("a b", "c d", add_special_tokens=False)["token_type_ids"] == [0, 0, 1, 1]
    assert slow("a b", "c d", add_special_tokens=False)["token_type_ids"] == [0, 0, 0, 0]
    assert fast("a b", "c d", add_special_tokens=False)["input_ids"] == [1037, 1038, 1039, 1040]


def test_empty_text_encodes_to_cls_sep_and_empty_batch_to_nothing(tok):
    assert tok("")["input_ids"] == [101, 102]
    assert tok([])["input_ids"] == []
    assert tok([], return_tensors="np")["input_ids"].shape == (0, 0)


# ------------------------------------------------------------------------------ padding, tensors
def test_padding_longest_pads_with_the_pad_id_and_masks_the_padding(tok):
    enc = tok(["a", "a b c"], padding=True, return_special_tokens_mask=True)
    assert enc["input_ids"] == [[101, 1037, 102, 0, 0], [101, 1037, 1038, 1039, 102]]
    assert enc["attention_mask"] == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert enc["token_type_ids"] == [[0] * 5, [0] * 5]
    assert enc["special_tokens_mask"] == [[1, 0, 1, 1, 1], [1, 0, 0, 0, 1]]


def test_padding_to_max_length_and_to_a_multiple(tok):
    assert [len(r) for r in tok(["a", "a b c"], padding="max_length", max_length=8)["input_ids"]] == [8, 8]
    assert [len(r) for r in tok(["a", "a b c"], padding=True, pad_to_multiple_of=4)["input_ids"]] == [8, 8]
    assert len(tok("a b c", padding="longest", pad_to_multiple_of=4)["input_ids"]) == 8
    # no padding asked: pad_to_multiple_of alone changes nothing, as in HF
    assert len(tok("a b c", pad_to_multiple_of=4)["input_ids"]) == 5


def test_padding_max_length_without_max_length_uses_model_max_length(tok):
    assert len(tok("a", padding="max_length")["input_ids"]) == 512


def test_max_length_alone_truncates_as_in_hf_but_not_when_padding(tok):
    text = "a b c d e f g h"
    assert len(tok(text, max_length=5)["input_ids"]) == 5
    assert len(tok(text, max_length=5, padding="max_length")["input_ids"]) == 10
    assert len(tok(text, max_length=5, truncation=False)["input_ids"]) == 10


def test_truncation_true_without_max_length_uses_model_max_length(tok):
    assert len(tok("a " * 600, truncation=True)["input_ids"]) == 512


def test_truncation_only_first_and_only_second_cut_the_named_sequence(tok):
    first, second = "a b c d e f", "g h i j k l"
    only_first = tok(first, second, truncation="only_first", max_length=11)["input_ids"]
    only_second = tok(first, second, truncation="only_second", max_length=11)["input_ids"]
    assert tok.convert_ids_to_tokens(only_first) == "[CLS] a b [SEP] g h i j k l [SEP]".split()
    assert tok.convert_ids_to_tokens(only_second) == "[CLS] a b c d e f [SEP] g h [SEP]".split()


@pytest.mark.parametrize("tensor_type", ["np", "pt", "tf"])
def test_return_tensors_gives_int_tensors_with_a_batch_axis(tok, tensor_type):
    if tensor_type != "np":
        pytest.importorskip({"pt": "torch", "tf": "tensorflow"}[tensor_type])
    single = tok("hello world", return_tensors=tensor_type, return_offsets_mapping=True)
    assert tuple(single["input_ids"].shape) == (1, 4)
    assert tuple(single["offset_mapping"].shape) == (1, 4, 2)
    batch = tok(["a", "a b c"], ["x", "y"], padding=True, return_tensors=tensor_type)
    ids = np.asarray(batch["input_ids"])
    assert ids.shape == (2, 7)
    assert ids.dtype == (np.int32 if tensor_type == "tf" else np.int64)
    assert ids.tolist() == tok(["a", "a b c"], ["x", "y"], padding=True)["input_ids"]


def test_ragged_batch_cannot_become_a_tensor(tok):
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b c"], return_tensors="np")


def test_return_flags_drop_or_add_fields(tok):
    enc = tok("a", return_token_type_ids=False, return_attention_mask=False)
    assert list(enc) == ["input_ids"]
    enc = tok("a", return_special_tokens_mask=True, return_offsets_mapping=True)
    all_fields = ["input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "offset_mapping"]
    assert list(enc) == all_fields
    assert enc["offset_mapping"] == [(0, 0), (0, 1), (0, 0)]


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("value", ["jax", "numpy", "PT", 3])
def test_unknown_return_tensors_raises_naming_the_value(tok, value):
    with pytest.raises(ValueError, match="return_tensors") as err:
        tok("a", return_tensors=value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize(("pair", "max_length", "needed"), [(None, 1, 2), ("b", 2, 3), ("b", 1, 3)])
def test_max_length_below_the_special_tokens_raises_naming_both_numbers(tok, pair, max_length, needed):
    with pytest.raises(ValueError, match=f"max_length={max_length}.*need {needed}"):
        tok("a", pair, truncation=True, max_length=max_length)


def test_max_length_equal_to_the_special_tokens_leaves_no_content(tok):
    assert tok("a b", truncation=True, max_length=2)["input_ids"] == [101, 102]
    assert tok("a b", "c", truncation=True, max_length=3)["input_ids"] == [101, 102, 102]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"padding": "left"}, "padding='left'"),
        ({"padding": "max"}, "padding='max'"),
        ({"truncation": "longest"}, "truncation='longest'"),
        ({"truncation": "only_third", "max_length": 4}, "only_third"),
        ({"max_length": 0, "truncation": True}, "max_length"),
        ({"max_length": -3, "truncation": True}, "max_length"),
        ({"max_length": 2.5, "truncation": True}, "max_length"),
        ({"pad_to_multiple_of": 0, "padding": True}, "pad_to_multiple_of"),
        ({"padding": True, "truncation": True, "max_length": 10, "pad_to_multiple_of": 4}, "multiple_of=4"),
    ],
)
def test_bad_padding_or_truncation_settings_raise_naming_the_setting(tok, kwargs, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        tok("a b c", **kwargs)


@pytest.mark.parametrize(
    ("text", "pair", "named"),
    [
        (3, None, "int"),
        (None, None, "NoneType"),
        (["a", 3], None, r"text\[1\]"),
        (["a", ("b",)], None, r"text\[1\]"),
        ("a", ["b"], "text_pair"),
        (["a", "b"], "c", "text_pair"),
        (["a", "b"], ["c"], "2 entries.*1"),
        (["a"], [None], r"text\[0\]"),
    ],
)
def test_bad_text_inputs_raise_naming_the_input(tok, text, pair, named):
    with pytest.raises(ValueError, match=named):
        tok(text, pair)


def test_lone_surrogate_raises_naming_the_string(tok):
    with pytest.raises(ValueError, match="#1.*surrogate at position 2"):
        tok(["fine", "ab\ud800c"])


def test_impossible_only_first_or_only_second_truncation_raises_naming_the_strategy(tok):
    with pytest.raises(ValueError, match="only_first"):
        tok("a", "b c d e f g h", truncation="only_first", max_length=6)
    with pytest.raises(ValueError, match="only_second"):
        tok("a b c d e f g", truncation="only_second", max_length=4)


# ------------------------------------------------------------------------------ ids and decoding
def test_convert_between_tokens_and_ids(tok):
    assert tok.convert_tokens_to_ids("hello") == 7592
    assert tok.convert_tokens_to_ids(["hello", "not-a-token"]) == [7592, 100]
    assert tok.convert_ids_to_tokens(7592) == "hello"
    assert tok.convert_ids_to_tokens(np.array([101, 7592, 102]), skip_special_tokens=True) == ["hello"]
    with pytest.raises(ValueError, match="30522"):
        tok.convert_ids_to_tokens([30522])
    with pytest.raises(ValueError, match="-1"):
        tok.convert_ids_to_tokens(-1)


def test_decode_glues_wordpieces_and_cleans_up_spaces(tok):
    ids = tok.encode("Unaffable, isn't it?")
    assert tok.decode(ids) == "[CLS] unaffable, isn't it? [SEP]"
    assert tok.decode(ids, skip_special_tokens=True) == "unaffable, isn't it?"
    assert tok.decode(np.array(ids)) == tok.decode(ids)
    assert tok.decode(ids[1]) == "una"
    assert tok.decode([]) == ""


def test_decode_without_clean_up_follows_each_reference(fast, slow):
    ids = fast.encode("hello , world .", add_special_tokens=False)
    # HF fast's tokenizer.json decoder always drops the space before punctuation; HF slow does not.
    assert fast.decode(ids, clean_up_tokenization_spaces=False) == "hello, world."
    assert slow.decode(ids, clean_up_tokenization_spaces=False) == "hello , world ."


def test_batch_decode_takes_a_2d_array(tok):
    enc = tok(["hello world", "a"], padding=True, return_tensors="np")
    assert tok.batch_decode(enc["input_ids"], skip_special_tokens=True) == ["hello world", "a"]
    with pytest.raises(ValueError, match="batch_decode"):
        tok.decode(enc["input_ids"])


def test_special_token_helpers_agree_with_the_call(tok):
    a, b = tok.encode("a b", add_special_tokens=False), tok.encode("c", add_special_tokens=False)
    enc = tok("a b", "c", return_special_tokens_mask=True)
    assert tok.build_inputs_with_special_tokens(a, b) == enc["input_ids"]
    assert tok.create_token_type_ids_from_sequences(a, b) == enc["token_type_ids"]
    assert tok.get_special_tokens_mask(a, b) == enc["special_tokens_mask"]
    assert tok.build_inputs_with_special_tokens(a) == tok("a b")["input_ids"]
    assert tok.create_token_type_ids_from_sequences(a) == [0, 0, 0, 0]
    assert tok.get_special_tokens_mask(a) == [1, 0, 0, 1]
    formatted = enc["input_ids"]
    assert tok.get_special_tokens_mask(formatted, already_has_special_tokens=True) == [1, 0, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="already_has_special_tokens"):
        tok.get_special_tokens_mask(a, b, already_has_special_tokens=True)
    assert tok.num_special_tokens_to_add() == 2 and tok.num_special_tokens_to_add(pair=True) == 3


# ------------------------------------------------------------------------------ BatchEncoding
def test_batch_encoding_is_a_dict_with_attribute_access(tok):
    enc = tok("hello world")
    assert isinstance(enc, dict)
    assert enc.input_ids == enc["input_ids"] == [101, 7592, 2088, 102]
    with pytest.raises(AttributeError):
        enc.no_such_field  # noqa: B018


def test_fast_batch_encoding_maps_tokens_to_words_and_sequences(fast):
    enc = fast(["hello unaffable", "a"], ["b", "c d"])
    assert enc.tokens(0) == ["[CLS]", "hello", "una", "##ffa", "##ble", "[SEP]", "b", "[SEP]"]
    assert enc.word_ids(0) == [None, 0, 1, 1, 1, None, 0, None]
    assert enc.sequence_ids(1) == [None, 0, None, 1, 1, None]
    with pytest.raises(IndexError, match="batch_index 2"):
        enc.tokens(2)


def test_slow_batch_encoding_has_no_alignment_like_the_reference(slow):
    with pytest.raises(ValueError, match="ConvBertTokenizerFast"):
        slow("hello").word_ids()


def test_batch_encoding_and_tokenizers_survive_pickling(tok):
    enc = tok(["hello world"], padding=True)
    again = pickle.loads(pickle.dumps(enc))
    assert again == enc
    if tok.is_fast:
        assert again.tokens(0) == enc.tokens(0)
    clone = pickle.loads(pickle.dumps(tok))
    assert clone("a b", "c", truncation=True, max_length=4) == tok("a b", "c", truncation=True, max_length=4)


def test_batch_encoding_to_moves_torch_tensors():
    torch = pytest.importorskip("torch")
    enc = ConvBertTokenizerFast(VOCAB)("hello", return_tensors="pt").to("cpu")
    assert isinstance(enc["input_ids"], torch.Tensor)


def test_threads_sharing_a_fast_tokenizer_get_their_own_settings(fast):
    texts = ["a b c d e f g h i j"] * 8

    def call(i):
        max_length = 4 + i % 5
        enc = fast(texts, padding="max_length", truncation=True, max_length=max_length)
        return {len(row) for row in enc["input_ids"]} == {max_length}

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(call, range(200)))


def test_settings_changed_through_backend_tokenizer_do_not_leak_into_calls(fast):
    fast.backend_tokenizer.enable_truncation(3)
    fast.backend_tokenizer.enable_padding(length=20)
    try:
        assert len(fast("a b c d e")["input_ids"]) == 7
    finally:
        fast.backend_tokenizer.no_truncation()
        fast.backend_tokenizer.no_padding()
