"""vocab.txt as users and tools really write it: duplicates, a byte-order mark, other encodings, CRLF.

The reference reads a duplicated token into the id of its last line, so the vocabulary it reports
is shorter than the file and the earlier id can never be produced; a BOM becomes part of token 0
(``\\ufeff[PAD]``), so the padding token is not found. Both are refused or repaired here, naming
the file, and every refusal leaves the folder as it was.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast, load_vocab

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB = FIXTURES / "vocab.txt"
CLASSES = [ConvBertTokenizerFast, ConvBertTokenizer]


def real_vocab() -> list[str]:
    return VOCAB.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize("cls", CLASSES)
def test_a_duplicated_token_is_refused_naming_it_and_its_lines(tmp_path, cls):
    tokens = real_vocab()
    tokens[2000] = "[PAD]"  # a second [PAD]: the reference would give [PAD] the id 2000
    tokens[2001] = "hello"
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(ValueError) as err:
        cls(path)
    message = str(err.value)
    assert str(path) in message
    assert "2 token(s) more than once" in message
    assert "'[PAD]' on lines 1, 2001" in message and "'hello' on lines 2002, 7593" in message
    assert path.read_bytes() == before


def test_many_duplicates_are_listed_ten_at_a_time(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(f"t{i}\nt{i}\n" for i in range(25)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"25 token\(s\) more than once: 't0' on lines 1, 2;.*\(and 15 more\)"):
        load_vocab(path)


def test_duplicates_in_a_saved_folder_are_refused_by_from_pretrained(tmp_path):
    ConvBertTokenizerFast(VOCAB).save_pretrained(tmp_path)
    with open(tmp_path / "vocab.txt", "a", encoding="utf-8") as fh:
        fh.write("[MASK]\n")
    duplicate = r"vocab\.txt lists 1 token\(s\) more than once: '\[MASK\]' on lines 104, 30523"
    with pytest.raises(ValueError, match=duplicate):
        ConvBertTokenizerFast.from_pretrained(tmp_path)


@pytest.mark.parametrize("cls", CLASSES)
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_token(tmp_path, cls):
    path = tmp_path / "vocab.txt"
    path.write_bytes(codecs.BOM_UTF8 + VOCAB.read_bytes())
    with_bom, plain = cls(path), cls(VOCAB)
    assert with_bom.convert_ids_to_tokens(0) == "[PAD]" and with_bom.pad_token_id == 0
    assert with_bom.vocab_size == plain.vocab_size == 30522
    texts = ["Hello, world!", "[PAD] padded [SEP] text"]
    assert with_bom(texts, padding=True)["input_ids"] == plain(texts, padding=True)["input_ids"]


def test_a_bom_alone_is_an_empty_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(codecs.BOM_UTF8)
    with pytest.raises(ValueError, match="empty"):
        load_vocab(path)


@pytest.mark.parametrize(
    ("data", "offset", "line", "byte"),
    [
        (b"[PAD]\n\xff\xfe\n", 6, 2, "0xff"),
        (codecs.BOM_UTF8 + b"[PAD]\n[UNK]\ncaf\xe9\n", 18, 3, "0xe9"),  # Latin-1, after a BOM
        (b"a\nb\nc\xe2\x82", 5, 3, "0xe2"),  # a cut multi-byte character at the end
    ],
)
def test_non_utf8_bytes_are_named_by_offset_and_line(tmp_path, data, offset, line, byte):
    path = tmp_path / "vocab.txt"
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        load_vocab(path)
    message = str(err.value)
    assert str(path) in message and "not UTF-8" in message
    assert f"byte {byte} at byte offset {offset} (line {line})" in message


def test_crlf_and_lf_vocab_files_give_the_same_tokens(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(VOCAB.read_bytes().replace(b"\n", b"\r\n"))
    assert load_vocab(path) == real_vocab()


def test_tokens_holding_other_line_separators_survive(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\na\u2028b\nc\u0085d\ne\x0cf\n", encoding="utf-8")
    assert load_vocab(path) == ["[PAD]", "a\u2028b", "c\u0085d", "e\x0cf"]


def test_an_empty_line_is_a_token_but_two_are_a_duplicate(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n\nx\n", encoding="utf-8")
    assert load_vocab(path) == ["[PAD]", "", "x"]
    path.write_text("[PAD]\n\nx\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'' on lines 2, 4"):
        load_vocab(path)


# ------------------------------------------------------------------ tokenizer.json without vocab.txt
def json_only_folder(tmp_path: Path, edit=None) -> Path:
    ConvBertTokenizerFast(VOCAB).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    if edit is not None:
        text = (tmp_path / "tokenizer.json").read_text(encoding="utf-8")
        (tmp_path / "tokenizer.json").write_text(edit(text), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("cls", CLASSES)
def test_a_folder_with_tokenizer_json_but_no_vocab_txt_loads_its_vocabulary(tmp_path, cls):
    tok = cls.from_pretrained(json_only_folder(tmp_path))
    plain = cls(VOCAB)
    texts = ["Hello, world!", "Ünïcödé [MASK] 中文"]
    assert tok.vocab_size == 30522 and tok(texts)["input_ids"] == plain(texts)["input_ids"]
    tok.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "vocab.txt").read_bytes() == VOCAB.read_bytes()


def test_tokenizer_json_normaliser_options_are_taken_when_the_config_has_none(tmp_path):
    folder = json_only_folder(tmp_path, lambda t: t.replace('"lowercase": true', '"lowercase": false'))
    (folder / "tokenizer_config.json").unlink()
    assert ConvBertTokenizerFast.from_pretrained(folder).do_lower_case is False


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('"[UNK]": 100,', '"[UNK]": 100,\n      "[UNK]": 100,'), r"more than once: '\[UNK\]'"),
        (lambda t: t.replace('"[UNK]": 100,', '"[UNK]": 101,'), "id 101 to both"),
        (lambda t: t.replace('"[UNK]": 100,', '"[UNK]": 40000,'), "the id 40000, not one of 0..30521"),
        (lambda t: t.replace('"type": "WordPiece"', '"type": "BPE"'), "'BPE' model, not the WordPiece"),
        (lambda t: t.replace('"max_input_chars_per_word": 100', '"max_input_chars_per_word": 50'), "max_input_chars"),
    ],
)
def test_a_bad_tokenizer_json_vocabulary_is_refused_naming_the_file(tmp_path, edit, message):
    folder = json_only_folder(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as err:
        ConvBertTokenizerFast.from_pretrained(folder)
    assert "tokenizer.json" in str(err.value)
