"""Tokenizer folders: what save_pretrained writes, what from_pretrained reads, and their errors.

Compatibility with Hugging Face is checked against a folder HF itself wrote
(tests/fixtures/tokenizer/hf_tokenizer_uncased, from ConvBertTokenizerFast.save_pretrained).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from convbert_common import fileio
from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from tests.conftest import hf_tokenizer_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB = FIXTURES / "vocab.txt"
HF_FOLDER = hf_tokenizer_dir()
SAVED_FILES = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
TOKENIZER_CLASSES = [ConvBertTokenizerFast, ConvBertTokenizer]


def corpus_texts(limit: int = 120) -> list[str]:
    with open(FIXTURES / "corpus.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:limit]


def encode_everything(tokenizer) -> list:
    """A spread of calls whose outputs must survive a save/load round trip."""
    texts = corpus_texts()
    calls = [
        tokenizer(texts, return_special_tokens_mask=True, return_offsets_mapping=True),
        tokenizer(texts[:-1], texts[1:], truncation=True, max_length=32, padding=True),
        tokenizer(texts, padding="max_length", truncation="only_first", max_length=64, pad_to_multiple_of=16),
    ]
    return [dict(call) for call in calls]


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_save_pretrained_writes_the_four_files_hf_writes_byte_for_byte(tmp_path, cls):
    written = cls(VOCAB).save_pretrained(tmp_path)
    assert sorted(os.path.basename(p) for p in written) == SAVED_FILES
    assert sorted(os.listdir(tmp_path)) == SAVED_FILES  # no temporary files left behind
    for name in SAVED_FILES:
        assert (tmp_path / name).read_bytes() == (HF_FOLDER / name).read_bytes(), name


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_save_then_from_pretrained_gives_identical_encodings(tmp_path, cls):
    original = cls(VOCAB, model_max_length=256)
    original.save_pretrained(tmp_path)
    reloaded = cls.from_pretrained(tmp_path)
    assert reloaded.model_max_length == 256
    assert encode_everything(reloaded) == encode_everything(original)


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_from_pretrained_loads_the_hf_written_folder(cls):
    loaded = cls.from_pretrained(HF_FOLDER)
    assert (loaded.do_lower_case, loaded.model_max_length, loaded.vocab_size) == (True, 512, 30522)
    assert encode_everything(loaded) == encode_everything(cls(VOCAB))


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_options_survive_a_save_load_round_trip(tmp_path, cls):
    options = dict(
        do_lower_case=False,
        strip_accents=True,
        tokenize_chinese_chars=False,
        never_split=["[unused0]"],
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )
    cls(VOCAB, **options).save_pretrained(tmp_path)
    reloaded = cls.from_pretrained(tmp_path)
    assert {name: getattr(reloaded, name) for name in options} == options
    normalizer = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["normalizer"]
    assert normalizer == {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": False,
        "strip_accents": True,
        "lowercase": False,
    }


def test_saved_tokenizer_json_alone_reproduces_the_fast_tokenizer(tmp_path):
    """HF's fast tokenizer loads tokenizer.json as is; the raw library must then agree with us."""
    ours = ConvBertTokenizerFast(VOCAB)
    ours.save_pretrained(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = corpus_texts()
    assert [e.ids for e in raw.encode_batch(texts)] == ours(texts)["input_ids"]
    assert raw.truncation is None and raw.padding is None


def test_save_after_a_padded_call_does_not_record_that_call_s_settings(tmp_path):
    tokenizer = ConvBertTokenizerFast(VOCAB)
    tokenizer(["a", "b c"], padding="max_length", truncation=True, max_length=16)
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["truncation"] is None and saved["padding"] is None


def test_from_pretrained_keyword_arguments_override_the_saved_options():
    loaded = ConvBertTokenizerFast.from_pretrained(HF_FOLDER, model_max_length=64, do_lower_case=False)
    assert loaded.model_max_length == 64
    assert loaded.tokenize("Hello") != ["hello"]


def test_from_pretrained_accepts_hf_dict_form_special_tokens(tmp_path):
    shutil.copy(VOCAB, tmp_path / "vocab.txt")
    entry = {"content": "[CLS]", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"cls_token": entry}), encoding="utf-8")
    assert ConvBertTokenizer.from_pretrained(tmp_path).cls_token == "[CLS]"


def test_vocab_without_config_files_loads_with_defaults(tmp_path):
    shutil.copy(VOCAB, tmp_path / "vocab.txt")
    loaded = ConvBertTokenizerFast.from_pretrained(tmp_path)
    assert loaded.do_lower_case and loaded.model_max_length == 512


def test_hf_unlimited_model_max_length_means_no_truncation(tmp_path):
    shutil.copy(VOCAB, tmp_path / "vocab.txt")
    config = {"model_max_length": 1000000000000000019884624838656}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = ConvBertTokenizerFast.from_pretrained(tmp_path)
    assert len(loaded("a " * 600, truncation=True)["input_ids"]) == 602


def test_save_vocabulary_writes_vocab_txt_with_an_optional_prefix(tmp_path):
    tokenizer = ConvBertTokenizer(VOCAB)
    (path,) = tokenizer.save_vocabulary(tmp_path, filename_prefix="mine")
    assert os.path.basename(path) == "mine-vocab.txt"
    assert Path(path).read_bytes() == VOCAB.read_bytes()


def test_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    (tmp_path / "vocab.txt").write_text("old\n", encoding="utf-8")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        ConvBertTokenizer(VOCAB).save_vocabulary(tmp_path)
    assert os.listdir(tmp_path) == ["vocab.txt"]
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == "old\n"


# ------------------------------------------------------------------------------------- errors
def test_save_pretrained_into_a_file_raises_naming_it(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="a_file"):
        ConvBertTokenizerFast(VOCAB).save_pretrained(target)


def test_from_pretrained_on_a_missing_folder_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        ConvBertTokenizerFast.from_pretrained(tmp_path / "missing_folder")


def test_from_pretrained_without_vocab_txt_raises_naming_the_file(tmp_path):
    shutil.copy(HF_FOLDER / "tokenizer_config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        ConvBertTokenizerFast.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json"])
def test_broken_json_raises_naming_the_file(tmp_path, name):
    shutil.copy(VOCAB, tmp_path / "vocab.txt")
    (tmp_path / name).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=name):
        ConvBertTokenizer.from_pretrained(tmp_path)


def _hf_folder_adding(tmp_path, index: int, content: str = "<new>") -> Path:
    for name in SAVED_FILES:
        shutil.copy(HF_FOLDER / name, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"][str(index)] = {"content": content, "special": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("cls", TOKENIZER_CLASSES)
def test_tokens_added_beyond_the_vocab_load_with_their_ids(tmp_path, cls):
    tok = cls.from_pretrained(_hf_folder_adding(tmp_path, 30522))
    assert len(tok) == 30523 and tok.vocab_size == 30522
    assert tok("a <new> b")["input_ids"] == [101, 1037, 30522, 1038, 102]


@pytest.mark.parametrize(("index", "content"), [(30524, "<new>"), (30522, "hello"), (5, "<new>")])
def test_added_token_ids_that_leave_a_gap_or_clash_raise_naming_the_file_and_token(tmp_path, index, content):
    with pytest.raises(ValueError, match=f"tokenizer_config.json.*'{content}'"):
        ConvBertTokenizerFast.from_pretrained(_hf_folder_adding(tmp_path, index, content))


def test_special_token_missing_from_a_loaded_vocab_raises_naming_file_and_token(tmp_path):
    lines = VOCAB.read_text(encoding="utf-8").split("\n")
    (tmp_path / "vocab.txt").write_text("\n".join(t for t in lines if t != "[MASK]"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt.*\[MASK\]"):
        ConvBertTokenizerFast.from_pretrained(tmp_path)
