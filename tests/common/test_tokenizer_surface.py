"""pad, pre-split words, overflowing windows, return_length and added tokens, against HF.

The expected values (tests/fixtures/tokenizer/hf_surface_expected.json.gz) were written by
``make_hf_surface_expected.py`` beside them, from transformers 4.57.6's ``ConvBertTokenizer`` and
``ConvBertTokenizerFast`` on inputs cut from the golden corpus; they hold the inputs too, so
nothing here needs transformers. Each class is checked against its own reference where the two
differ (overflow, length and added-token rules).
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from tests.conftest import hf_tokenizer_dir
from tests.fixtures.tokenizer.surface_state import added_state, plain, step_args

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB = FIXTURES / "vocab.txt"
HF_FOLDER = hf_tokenizer_dir()
CLASSES = {"fast": ConvBertTokenizerFast, "slow": ConvBertTokenizer}


@functools.cache
def expected() -> dict:
    with gzip.open(FIXTURES / "hf_surface_expected.json.gz", "rt", encoding="utf-8") as fh:
        return json.load(fh)


@functools.cache
def loaded(kind: str):
    return CLASSES[kind].from_pretrained(HF_FOLDER)


def differences(got: dict, want: dict) -> list[str]:
    out = []
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            out.append(f"{key}: got {str(got.get(key))[:160]} want {str(want.get(key))[:160]}")
    return out


def test_fixture_was_written_by_transformers_4_57_and_holds_every_section():
    data = expected()
    assert data["produced_by"]["transformers"].startswith("4.57.")
    assert len(data["pad"]) == 3 * (2 * 7 + 1 + 3)
    for kind in CLASSES:
        assert set(data[kind]) == {"words", "overflow", "length", "added"}


# -------------------------------------------------------------------------------------- pad
def pad_examples(case: dict) -> object:
    features = expected()["pad_features"][case["batch"]]
    if case["form"] == "list":
        return copy.deepcopy(features)
    if case["form"] == "list_ids_only":
        return [{"input_ids": list(f["input_ids"]), "label": f["label"]} for f in features]
    if case["form"] == "columns":
        return {key: [copy.deepcopy(f[key]) for f in features] for key in features[0]}
    return {key: copy.deepcopy(value) for key, value in features[1].items() if key != "label"}


@pytest.mark.parametrize("kind", CLASSES)
def test_pad_gives_hf_outputs_on_every_recorded_case(kind):
    tok = loaded(kind)
    failures = []
    for number, case in enumerate(expected()["pad"]):
        got = plain(dict(tok.pad(pad_examples(case), **case["kwargs"])))
        for line in differences(got, case["out"]):
            failures.append(f"case {number} ({case['form']}, {case['kwargs']}): {line}")
    assert not failures, "\n".join(failures[:10])


def test_pad_leaves_its_input_unchanged():
    features = expected()["pad_features"][0]
    before = copy.deepcopy(features)
    loaded("fast").pad(features, padding="max_length", max_length=80)
    single = features[1]
    loaded("fast").pad(single, pad_to_multiple_of=64)
    assert features == before


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_pad_of_tensors_gives_the_same_kind_of_tensor_with_the_list_values(framework):
    tok = loaded("fast")
    features = expected()["pad_features"][1]
    if framework == "pt":
        torch = pytest.importorskip("torch")
        examples = [{k: torch.tensor(v) for k, v in f.items()} for f in features]
        kind = torch.Tensor
    else:
        examples = [{k: np.array(v) for k, v in f.items()} for f in features]
        kind = np.ndarray
    got = tok.pad(examples, pad_to_multiple_of=8)
    want = tok.pad(copy.deepcopy(features), pad_to_multiple_of=8, return_tensors="np")
    for key, value in want.items():
        assert isinstance(got[key], kind), key
        assert np.asarray(got[key]).tolist() == value.tolist(), key
    assert got["input_ids"].shape[1] % 8 == 0


def test_pad_refuses_what_it_cannot_pad_naming_the_field():
    tok = loaded("fast")
    with pytest.raises(ValueError, match="input_ids"):
        tok.pad([{"attention_mask": [1]}])
    with pytest.raises(ValueError, match="example #1"):
        tok.pad([{"input_ids": [1, 2]}, {"input_ids": [1], "label": 0}])
    with pytest.raises(ValueError, match="empty list"):
        tok.pad([])
    with pytest.raises(ValueError, match="'labels'.*lengths 1..3"):
        tok.pad([{"input_ids": [1, 2], "labels": [0]}, {"input_ids": [1], "labels": [0, 1, 2]}], return_tensors="np")
    with pytest.raises(ValueError, match="padding_side"):
        tok.pad([{"input_ids": [1]}], padding_side="middle")
    with pytest.raises(ValueError, match="padding"):
        tok.pad([{"input_ids": [1]}], padding="shortest")


def test_pad_of_an_empty_batch_field_returns_it_with_an_empty_mask():
    assert loaded("slow").pad({"input_ids": []}) == {"input_ids": [], "attention_mask": []}


def test_the_attributes_hf_collators_read_have_hf_s_values():
    for kind in CLASSES:
        tok = loaded(kind)
        assert tok.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
        assert tok.padding_side == "right" and tok.truncation_side == "right"
        assert tok.pad_token_type_id == 0 and tok.pad_token == "[PAD]" and tok.pad_token_id == 0
        assert tok.mask_token == "[MASK]" and tok.convert_tokens_to_ids(tok.mask_token) == 103
        assert tok.bos_token is None and tok.eos_token_id is None
        assert len(tok) == 30522


# ----------------------------------------------------------------------------- pre-split words
@pytest.mark.parametrize("kind", CLASSES)
def test_pre_split_words_give_hf_ids(kind):
    tok, want, words = loaded(kind), expected()[kind]["words"], expected()["inputs"]["words"]
    singles = tok(words, is_split_into_words=True)
    assert singles["input_ids"] == want["single_input_ids"]
    pairs = tok(words[:-1:2], words[1::2], is_split_into_words=True, truncation=True, max_length=32)
    assert pairs["input_ids"] == want["pair_input_ids"]
    assert pairs["token_type_ids"] == want["pair_token_type_ids"]
    one = tok(words[3], is_split_into_words=True, padding="max_length", max_length=40, return_length=True)
    assert dict(one) == want["one"]


def test_fast_pre_split_words_map_tokens_to_words_as_hf():
    tok, want, words = loaded("fast"), expected()["fast"]["words"], expected()["inputs"]["words"]
    singles = tok(words, is_split_into_words=True)
    assert [singles.word_ids(i) for i in range(len(words))] == want["single_word_ids"]
    pairs = tok(words[:-1:2], words[1::2], is_split_into_words=True, truncation=True, max_length=32)
    rows = range(len(pairs["input_ids"]))
    assert [pairs.word_ids(i) for i in rows] == want["pair_word_ids"]
    assert [pairs.sequence_ids(i) for i in rows] == want["pair_sequence_ids"]
    sampled = range(0, len(words), 10)
    spans = [[None if (s := singles.word_to_tokens(i, w)) is None else list(s) for w in range(len(words[i]))]
             for i in sampled]
    assert spans == want["word_to_tokens"]
    chars = [[None if (s := singles.token_to_chars(i, t)) is None else list(s)
              for t in range(len(singles["input_ids"][i]))] for i in sampled]
    assert chars == want["token_to_chars"]
    one = tok(words[3], is_split_into_words=True, padding="max_length", max_length=40)
    assert one.word_ids() == want["one_word_ids"]


def test_word_ids_align_ner_labels_to_the_first_piece_of_each_word():
    tok = loaded("fast")
    words, labels = ["Unaffable", "Zürich", "!"], [1, 2, 3]
    enc = tok(words, is_split_into_words=True)
    aligned, previous = [], None
    for word in enc.word_ids():
        aligned.append(-100 if word is None or word == previous else labels[word])
        previous = word
    assert enc.tokens() == ["[CLS]", "una", "##ffa", "##ble", "zurich", "!", "[SEP]"]
    assert aligned == [-100, 1, -100, -100, 2, 3, -100]
    assert enc.word_to_tokens(0) == (1, 4) and enc.token_to_word(-2) == 2 and enc.token_to_word(0) is None
    assert enc.word_to_chars(1) == (0, 6) and enc.char_to_word(3, sequence_index=0) == 0
    assert enc.char_to_token(0) == 1 and enc.token_to_sequence(1) == 0 and enc.n_sequences == 1


def test_pre_split_input_errors_name_the_input():
    fast, slow = loaded("fast"), loaded("slow")
    with pytest.raises(ValueError, match="not a str"):
        fast("hello world", is_split_into_words=True)
    with pytest.raises(ValueError, match="list of words"):
        fast(["a", 3], is_split_into_words=True)
    with pytest.raises(ValueError, match="text_pair"):
        fast([["a"], ["b"]], "c", is_split_into_words=True)
    assert fast([], is_split_into_words=True)["input_ids"] == [101, 102]  # HF fast's answer
    with pytest.raises(ValueError, match="input #1 is an empty list of words"):
        slow([["a"], []], is_split_into_words=True)  # the slow reference refuses it
    with pytest.raises(ValueError, match="ConvBertTokenizerFast"):
        slow(["a"], is_split_into_words=True).word_ids()
    with pytest.raises(IndexError, match="token_index 9"):
        fast(["a"], is_split_into_words=True).token_to_word(9)


# ---------------------------------------------------------------------------- overflow windows
def overflow_call(tok, case: dict):
    inputs = expected()["inputs"]
    questions, contexts, singles = inputs["questions"], inputs["contexts"], inputs["long_singles"]
    args = {
        "squad": (questions, contexts),
        "squad_no_stride": (questions, contexts),
        "only_first": (contexts, questions),
        "single": (singles,),
        "single_one": (singles[0],),
        "single_np": (singles[:3],),
        "longest_first_pairs": (contexts[:6], contexts[6:12]),
    }[case["name"]]
    return tok(*args, **case["kwargs"])


@pytest.mark.parametrize("kind", CLASSES)
def test_overflowing_windows_give_hf_outputs(kind):
    tok = loaded(kind)
    for case in expected()[kind]["overflow"]:
        out = overflow_call(tok, case)
        wrong = differences(plain(dict(out)), case["out"])
        assert not wrong, (case["name"], wrong)
        if kind == "fast":
            assert [out.sequence_ids(i) for i in range(len(out["input_ids"]))] == case["sequence_ids"], case["name"]


def test_squad_windows_cover_the_context_with_the_stride_as_overlap():
    tok = loaded("fast")
    inputs = expected()["inputs"]
    enc = tok(inputs["questions"], inputs["contexts"], truncation="only_second", max_length=64, stride=12,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    mapping = enc["overflow_to_sample_mapping"]
    assert mapping == sorted(mapping) and set(mapping) == set(range(len(inputs["contexts"])))
    for sample, context in enumerate(inputs["contexts"]):
        full = tok(context, add_special_tokens=False)["input_ids"]
        rows = [i for i, s in enumerate(mapping) if s == sample]
        pieces = [[t for t, s in zip(enc["input_ids"][i], enc.sequence_ids(i), strict=True) if s == 1] for i in rows]
        joined = pieces[0]
        for before, piece in zip(pieces, pieces[1:], strict=False):
            assert before[-12:] == piece[:12]  # each window repeats the stride
            joined = joined + piece[12:]
        assert joined == full
        for i in rows:
            for (start, end), s in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True):
                if s == 1:
                    assert 0 <= start <= end <= len(context)


@pytest.mark.parametrize(
    ("args", "kwargs", "which"),
    [
        (("q r s t", "a b c d e f g h"), {"max_length": 9, "stride": 2, "truncation": "only_second"}, "second"),
        (("a b c d e f", "g h i j k l"), {"max_length": 7, "stride": 2}, "first"),
        (("a b", "g h i j k l"), {"max_length": 7, "stride": 2}, "second"),
    ],
)
def test_a_stride_not_smaller_than_a_window_is_refused_not_a_crash(args, kwargs, which):
    tok = loaded("fast")
    kwargs = {"truncation": True, "return_overflowing_tokens": True, **kwargs}
    with pytest.raises(ValueError, match=f"stride={kwargs['stride']} is too large for input #0.*{which} sequence"):
        tok(*args, **kwargs)
    assert tok(*args, **{**kwargs, "stride": kwargs["stride"] - 1})["input_ids"]  # one less is fine


def test_a_stride_not_smaller_than_max_length_minus_the_special_tokens_is_refused():
    tok = loaded("fast")
    with pytest.raises(ValueError, match="stride=3 must be smaller than max_length=5 minus the 2 special tokens"):
        tok("a b c d e f g h i j", max_length=5, stride=3, truncation=True, return_overflowing_tokens=True)
    assert len(tok("a b c d e f g h i j", max_length=5, stride=2, truncation=True)["input_ids"]) == 5
    assert tok("a", max_length=5, stride=50, truncation=False)["input_ids"] == [101, 1037, 102]  # no windows


def test_slow_overflow_refuses_longest_first_pairs_as_the_reference_does():
    with pytest.raises(ValueError, match="longest_first"):
        loaded("slow")("a b c", "d e f", truncation=True, max_length=5, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="max_length"):
        loaded("slow")("a b c", return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="stride"):
        loaded("slow")("a b c", stride=-1)


# ------------------------------------------------------------------------------ return_length
@pytest.mark.parametrize("kind", CLASSES)
def test_return_length_and_left_padding_give_hf_outputs(kind):
    tok, texts = loaded(kind), expected()["inputs"]["length_texts"]
    for case in expected()[kind]["length"]:
        out = tok(texts if case["batched"] else texts[0], **case["kwargs"])
        wrong = differences(plain(dict(out)), case["out"])
        assert not wrong, (case["kwargs"], wrong)


# ------------------------------------------------------------------------------- added tokens
def state_of(tok) -> dict:
    return added_state(tok, expected()["added_texts"])


# The one place the slow class differs from its reference (see the module docstring of
# convbert_common.tokenizer): an accented added token is also found in the accent-stripped text.
ACCENT_TEXT = 3


def assert_same_state(got: dict, want: dict, kind: str, where: str) -> None:
    got, want = copy.deepcopy(got), copy.deepcopy(want)
    if kind == "slow" and "ñandú" in want["added_vocab"]:
        ours, theirs = got["texts"].pop(ACCENT_TEXT), want["texts"].pop(ACCENT_TEXT)
        accented = want["added_vocab"]["ñandú"]
        assert theirs["input_ids"][-3:] == [16660, 8566, 102]  # the reference: "nandu" -> nan ##du
        assert ours["input_ids"] == [101, accented, accented, accented, 102], where
    assert not differences(got, want), (where, differences(got, want))


def grown_tokenizer(kind: str):
    model_max_length = expected()[kind]["added"]["saved_files"]["tokenizer_config.json"]["model_max_length"]
    tok = CLASSES[kind](VOCAB, model_max_length=model_max_length)
    counts = []
    for method, args, kwargs in expected()["added_steps"]:
        counts.append(getattr(tok, method)(*step_args(args), **kwargs))
    return tok, counts


@pytest.mark.parametrize("kind", CLASSES)
def test_added_tokens_follow_hf_step_by_step(kind):
    tok = CLASSES[kind](VOCAB)
    for number, ((method, args, kwargs), step) in enumerate(
        zip(expected()["added_steps"], expected()[kind]["added"]["steps"], strict=True)
    ):
        assert getattr(tok, method)(*step_args(args), **kwargs) == step["count"], (number, method, args)
        assert_same_state(state_of(tok), step["state"], kind, f"after step {number} ({method} {args})")


@pytest.mark.parametrize("kind", CLASSES)
def test_added_tokens_leave_the_corpus_encodings_as_hf(kind):
    tok, _ = grown_tokenizer(kind)
    with open(FIXTURES / "corpus.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    assert tok(texts[:60])["input_ids"] == expected()[kind]["added"]["corpus_input_ids"]


@pytest.mark.parametrize("kind", CLASSES)
def test_save_pretrained_writes_the_added_tokens_as_hf_and_reloads_them(tmp_path, kind):
    tok, _ = grown_tokenizer(kind)
    tok.save_pretrained(tmp_path)
    want = expected()[kind]["added"]["saved_files"]
    written = sorted(p.name for p in tmp_path.iterdir())
    # HF's slow class writes no tokenizer.json; ours does, so fast tokenizers can load the folder.
    assert [name for name in written if not (kind == "slow" and name == "tokenizer.json")] == sorted(want)
    for name, content in want.items():
        if name == "vocab.txt":
            assert len((tmp_path / name).read_text(encoding="utf-8").splitlines()) == content["lines"]
            continue
        data = json.loads((tmp_path / name).read_text(encoding="utf-8"))
        if name == "tokenizer.json":
            data = {"added_tokens": data["added_tokens"]}
        assert not differences(data, content), (name, differences(data, content))
    reloaded = CLASSES[kind].from_pretrained(tmp_path)
    assert_same_state(state_of(reloaded), expected()[kind]["added"]["reloaded"], kind, "reloaded")


@pytest.mark.parametrize("kind", CLASSES)
def test_from_pretrained_reads_the_added_tokens_of_a_folder_hf_wrote(tmp_path, kind):
    for name, content in expected()[kind]["added"]["saved_files"].items():
        if name == "vocab.txt":
            shutil.copy(VOCAB, tmp_path / name)
        else:
            (tmp_path / name).write_text(json.dumps(content), encoding="utf-8")
    tok = CLASSES[kind].from_pretrained(tmp_path)
    assert_same_state(state_of(tok), expected()[kind]["added"]["reloaded"], kind, "HF folder")


def test_saved_added_token_files_that_disagree_are_refused_naming_both(tmp_path):
    tok, _ = grown_tokenizer("fast")
    tok.save_pretrained(tmp_path)
    legacy = json.loads((tmp_path / "added_tokens.json").read_text(encoding="utf-8"))
    legacy["NewWord"] = 30600
    (tmp_path / "added_tokens.json").write_text(json.dumps(legacy), encoding="utf-8")
    with pytest.raises(ValueError, match=r"added_tokens\.json.*'NewWord'.*30600.*tokenizer_config\.json"):
        ConvBertTokenizerFast.from_pretrained(tmp_path)


def test_a_stale_added_tokens_file_is_removed_when_saving_without_added_tokens(tmp_path):
    grown_tokenizer("fast")[0].save_pretrained(tmp_path)
    ConvBertTokenizerFast(VOCAB).save_pretrained(tmp_path)
    assert not (tmp_path / "added_tokens.json").exists()
    assert len(ConvBertTokenizerFast.from_pretrained(tmp_path)) == 30522


def test_add_special_tokens_refuses_unknown_roles_and_bad_values():
    tok = ConvBertTokenizerFast(VOCAB)
    with pytest.raises(ValueError, match="'sos_token' is not a special-token role"):
        tok.add_special_tokens({"sos_token": "<s>"})
    with pytest.raises(ValueError, match="additional_special_tokens must be a list"):
        tok.add_special_tokens({"additional_special_tokens": "<x>"})
    with pytest.raises(ValueError, match="unk_token '<unk2>' must be in the vocab file"):
        tok.add_special_tokens({"unk_token": "<unk2>"})
    with pytest.raises(TypeError, match="not a str"):
        tok.add_tokens([3])
    with pytest.raises(ValueError, match="add it with add_special_tokens"):
        tok.pad_token = "<nope>"
    assert len(tok) == 30522 and tok.pad_token == "[PAD]"
    tok.pad_token = "[unused0]"
    assert tok.pad_token_id == 1 and tok(["a", "a b"], padding=True)["input_ids"][0] == [101, 1037, 102, 1]
