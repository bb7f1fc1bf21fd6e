"""WordPiece tokenizers for ConvBERT with the Hugging Face ``ConvBertTokenizer(Fast)`` API.

Both classes run the same Rust pipeline from the ``tokenizers`` library (BERT normaliser,
BERT pre-tokenizer, WordPiece with ``##`` continuations, ``[CLS] A [SEP] B [SEP]`` template), so
that tokens, ids and offsets come out of one tested engine instead of two implementations that
could drift. They differ only where the two reference classes differ:

* ``ConvBertTokenizerFast`` is Hugging Face's Rust tokenizer exactly: it truncates a pair with
  ``longest_first`` by splitting the budget, the odd token going to the longer sequence;
  ``return_overflowing_tokens=True`` returns every window (with ``stride`` tokens of overlap) as a
  row of its own, with ``overflow_to_sample_mapping``; its ``BatchEncoding`` maps tokens to words,
  characters and sequences (``word_ids()``, ``word_to_tokens()``, ...).
* ``ConvBertTokenizer`` reproduces the pure-Python reference: ``longest_first`` drops one token at
  a time from the longer sequence, from the second one on ties, so an odd budget leaves the first
  sequence one token longer (12 of the 900 golden records differ only in this). Its normaliser
  adds the reference's NFC step before lower-casing, which matters only for cased vocabularies
  fed decomposed accents, and with ``do_basic_tokenize=False`` it splits on whitespace only.
  ``return_overflowing_tokens=True`` gives the reference's ``overflowing_tokens`` and
  ``num_truncated_tokens``; ``return_length`` counts a batch's rows before padding; added tokens
  follow the reference (lower-cased when ``do_lower_case``; ``decode(skip_special_tokens=True)``
  skips only the special-token roles). Like the reference, its ``BatchEncoding`` carries no
  per-token alignment.

Both take pre-split words (``is_split_into_words=True``), pad already-encoded inputs (``pad``, the
call HF's data collators make), and grow their vocabulary (``add_tokens``, ``add_special_tokens``;
the new ids follow the vocabulary, ``len(tokenizer)`` counts them, and ``save_pretrained`` /
``from_pretrained`` keep them in ``added_tokens.json``, ``tokenizer_config.json`` and
``tokenizer.json`` as HF does).

Known differences from the slow reference: Python's ``str.lower`` turns a word-final capital sigma
into ``ς`` where the Rust normaliser (and HF's fast tokenizer) gives ``σ``, in both classes here.
``never_split`` (honoured by the slow class only; HF's fast tokenizer ignores it too) keeps
vocabulary words whole, but matches them as words, not whitespace-delimited chunks: ``[unused0].``
keeps ``[unused0]`` here where the reference splits the chunk; words outside the vocab are ignored.
An added token with accents is also found in the accent-stripped text here (``nandu`` for an added
``ñandú``) where the slow reference, which lower-cases but does not strip accents before looking
for added tokens, finds only the accented spelling.

Nothing here imports torch or tensorflow until ``return_tensors="pt"`` / ``"tf"`` asks for it.
"""

from __future__ import annotations

import codecs
import collections
import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from convbert_common.batch_encoding import (
    PADDING_STRATEGIES,
    TENSOR_TYPES,
    UNLIMITED,
    BatchEncoding,
    CharSpan,
    TokenSpan,
    check_padding_side,
    check_tensor_type,
    int_arrays_to_tensors,
    pad_encoded,
    padding_strategy,
    positive_int_or_none,
    stack_token_fields,
    strategy_name,
    to_tensor,
)
from convbert_common.fileio import atomic_write_text, read_json

__all__ = [
    "BatchEncoding",
    "CharSpan",
    "ConvBertTokenizer",
    "ConvBertTokenizerFast",
    "TokenSpan",
    "load_tokenizer_json_vocab",
    "load_vocab",
    "slow_truncation_lengths",
]

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

MAX_INPUT_CHARS_PER_WORD = 100
CONTINUATION_PREFIX = "##"
# The class name both reference classes write into tokenizer_config.json.
SAVED_TOKENIZER_CLASS = "ConvBertTokenizer"

# Hugging Face's order of special-token roles: ``all_special_ids`` follows it.
SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_OPTIONAL_ROLES = ("bos_token", "eos_token", "mask_token")
ADDITIONAL_SPECIAL_TOKENS = "additional_special_tokens"

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
# The fields that hold one value per token (stacked into (B, L) tensors); the others are per row.
_TOKEN_FIELDS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "offset_mapping")

_OPTION_KEYS = (
    "do_lower_case",
    "do_basic_tokenize",
    "never_split",
    "tokenize_chinese_chars",
    "strip_accents",
    "model_max_length",
    "clean_up_tokenization_spaces",
    "padding_side",
)

__all__ += ["PADDING_STRATEGIES", "TENSOR_TYPES", "TRUNCATION_STRATEGIES"]


# --------------------------------------------------------------------------------------- vocab
def load_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """Read a WordPiece vocabulary: one token per line, the line number (from 0) is the id.

    Lines end at ``\\n`` (``\\r\\n`` and ``\\r`` count as ``\\n``, as text-mode reading and the
    reference give), so tokens holding other line separators survive; a final newline does not
    make an extra empty token; a UTF-8 byte-order mark at the start is not part of the first token.
    A token listed twice is refused: it would have two ids, and the reference silently keeps the
    last, leaving the earlier id unreachable and the vocabulary shorter than the model's.
    """
    path = os.fspath(vocab_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocab file not found: {path}")
    with open(path, "rb") as fh:
        data = fh.read()
    skipped = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skipped:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skipped + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise ValueError(
            f"vocab file {path} is not UTF-8 text: byte 0x{data[offset]:02x} at byte offset {offset} "
            f"(line {line}) is not valid UTF-8 ({err.reason})"
        ) from err
    tokens = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise ValueError(f"vocab file {path} is empty")
    _check_unique(tokens, path)
    return tokens


def _check_unique(tokens: list[str], path: str) -> None:
    first_line: dict[str, int] = {}
    repeats: dict[str, list[int]] = {}
    for index, token in enumerate(tokens):
        seen = first_line.setdefault(token, index)
        if seen != index:
            repeats.setdefault(token, [seen]).append(index)
    if not repeats:
        return
    shown = [
        f"{token!r} on lines {', '.join(str(i + 1) for i in lines)}" for token, lines in list(repeats.items())[:10]
    ]
    more = f" (and {len(repeats) - 10} more)" if len(repeats) > 10 else ""
    raise ValueError(
        f"vocab file {path} lists {len(repeats)} token(s) more than once: {'; '.join(shown)}{more}. "
        "Each token must appear on one line only (line n is id n-1)"
    )


class _JsonObject(dict):
    """A JSON object that remembers the keys it was given more than once (json keeps the last)."""

    repeated: list[str]


def _object_keeping_repeats(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    obj.repeated = []
    if len(obj) != len(pairs):
        counts = collections.Counter(key for key, _ in pairs)
        obj.repeated = [key for key, count in counts.items() if count > 1]
    return obj


def load_tokenizer_json_vocab(tokenizer_file: str | os.PathLike) -> tuple[list[str], dict[str, Any]]:
    """The WordPiece vocabulary of an HF tokenizer.json, in id order, and the constructor options
    its BertNormalizer implies. The same rules as for vocab.txt: each token once, and the ids
    0..n-1 each used once; a model or setting this pipeline does not build is refused by name."""
    path = os.fspath(tokenizer_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    data = read_json(path, object_pairs_hook=_object_keeping_repeats)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise ValueError(f"{path} holds a {kind!r} model, not the WordPiece model a ConvBERT tokenizer needs")
    fixed = {"continuing_subword_prefix": CONTINUATION_PREFIX, "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD}
    for key, want in fixed.items():
        if key in model and model[key] != want:
            raise ValueError(f"{path}: model.{key} is {model[key]!r}; this tokenizer only builds {want!r}")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{path}: model.vocab must be a non-empty object of token -> id")
    repeated = getattr(vocab, "repeated", [])
    if repeated:
        shown = ", ".join(repr(t) for t in repeated)
        raise ValueError(f"{path}: model.vocab lists these tokens more than once: {shown}")
    by_id: dict[int, str] = {}
    for token, index in vocab.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(vocab):
            raise ValueError(f"{path}: model.vocab gives {token!r} the id {index!r}, not one of 0..{len(vocab) - 1}")
        if index in by_id:
            raise ValueError(f"{path}: model.vocab gives the id {index} to both {by_id[index]!r} and {token!r}")
        by_id[index] = token
    options: dict[str, Any] = {}
    normalizer = data.get("normalizer")
    if isinstance(normalizer, dict) and normalizer.get("type") == "BertNormalizer":
        options = {
            "do_lower_case": bool(normalizer.get("lowercase", True)),
            "strip_accents": normalizer.get("strip_accents"),
            "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        }
    return [by_id[i] for i in range(len(vocab))], options


def _token_content(value: Any, role: str) -> str | None:
    """A special token given as str, ``tokenizers.AddedToken`` or HF's serialised dict form."""
    if isinstance(value, AddedToken):
        value = value.content
    elif isinstance(value, dict) and "content" in value:
        value = value["content"]
    if value is None and role in _OPTIONAL_ROLES:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{role} must be a non-empty string, got {value!r}")
    return value


def _special_tokens_from(values: dict[str, Any]) -> dict[str, str | None]:
    return {role: _token_content(values.get(role), role) for role in SPECIAL_ROLES}


def _additional_tokens_from(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, (str, AddedToken)) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{ADDITIONAL_SPECIAL_TOKENS} must be a list of tokens, got {values!r}")
    out: list[str] = []
    for value in values:
        content = _token_content(value, ADDITIONAL_SPECIAL_TOKENS)
        if content not in out:
            out.append(content)
    return out


def _added_token_from(value: Any, where: str) -> AddedToken:
    """An ``AddedToken`` from itself or from HF's dict form (``content``, ``special``, flags)."""
    if isinstance(value, AddedToken):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str) and value["content"]:
        special = bool(value.get("special", False))
        return AddedToken(
            value["content"],
            single_word=bool(value.get("single_word", False)),
            lstrip=bool(value.get("lstrip", False)),
            rstrip=bool(value.get("rstrip", False)),
            normalized=bool(value.get("normalized", not special)),
            special=special,
        )
    raise ValueError(f"{where}: an added token must be an AddedToken or a dict with a 'content' string, got {value!r}")


def _token_state(token: AddedToken, with_special: bool = True) -> dict[str, Any]:
    """HF's serialised form of an added token."""
    state = {
        "content": token.content,
        "lstrip": token.lstrip,
        "normalized": token.normalized,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
    }
    if with_special:
        state["special"] = token.special
    return state


def _copy_token(token: AddedToken, **changes: Any) -> AddedToken:
    state = _token_state(token)
    state.update(changes)
    return AddedToken(**state)


def _check_added_ids(
    decoder: dict[int, AddedToken], vocab_lines: list[str], origin: dict[int, str] | None = None
) -> None:
    """Added ids inside the vocabulary must name that entry; the rest must follow it without gaps,
    or the ids would not be the ones the embeddings were trained (or resized) with."""
    base = len(vocab_lines)
    vocab = None

    def where(index: int) -> str:
        return (origin or {}).get(index, "added_tokens_decoder")

    for index, token in decoder.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"{where(index)}: added token {token.content!r} has id {index!r}, not an id >= 0")
        if index < base and vocab_lines[index] != token.content:
            raise ValueError(
                f"{where(index)} adds token {token.content!r} with id {index}, which is not that entry of the "
                f"vocabulary ({vocab_lines[index]!r}): an added token must keep its vocabulary id"
            )
    beyond = sorted(index for index in decoder if index >= base)
    for offset, index in enumerate(beyond):
        token = decoder[index]
        if index != base + offset:
            raise ValueError(
                f"{where(index)} gives added token {token.content!r} the id {index}, but the ids after the "
                f"{base}-token vocabulary must run on without gaps: expected {base + offset}"
            )
        if vocab is None:
            vocab = {t: i for i, t in enumerate(vocab_lines)}
        if token.content in vocab:
            raise ValueError(
                f"{where(index)} gives added token {token.content!r} the id {index}, but it is already "
                f"in the vocabulary as id {vocab[token.content]}"
            )
    contents: dict[str, int] = {}
    for index, token in decoder.items():
        other = contents.setdefault(token.content, index)
        if other != index:
            raise ValueError(f"{where(index)}: added token {token.content!r} has two ids, {other} and {index}")


# ------------------------------------------------------------------------------ request parsing
@dataclass(frozen=True)
class _Request:
    """One call's padding/truncation settings, resolved and validated once."""

    padding: str
    truncation: str
    max_length: int | None
    pad_to_multiple_of: int | None
    add_special_tokens: bool
    stride: int = 0
    padding_side: str = "right"
    pretokenized: bool = False


def _truncation_strategy(truncation: Any, max_length: int | None, padding: str) -> str:
    if truncation is None:
        # HF's rule: an explicit max_length without padding means "truncate to it".
        return "longest_first" if max_length is not None and padding == "do_not_pad" else "do_not_truncate"
    return strategy_name(truncation, TRUNCATION_STRATEGIES, when_true="longest_first", when_false="do_not_truncate",
                         argument="truncation")


def _stride(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"stride must be an integer >= 0, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------- input parsing
def _as_pair(item: Any, index: int) -> tuple[str, str]:
    if (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], str)
    ):
        return (item[0], item[1])
    raise ValueError(
        f"text[{index}] must be a str or a (text, text_pair) pair of str, got {type(item).__name__}"
    )


def _collect_inputs(text: Any, text_pair: Any) -> tuple[list, bool]:
    """Turn the HF call forms into a list of str / (str, str) items and an "is batched" flag."""
    if isinstance(text, str):
        if text_pair is None:
            return [text], False
        if not isinstance(text_pair, str):
            raise ValueError(f"text is a str, so text_pair must be a str too, got {type(text_pair).__name__}")
        return [(text, text_pair)], False
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"text must be a str or a list of str, got {type(text).__name__}")
    if text_pair is None:
        if all(type(item) is str for item in text):
            return (text if isinstance(text, list) else list(text)), True
        return [item if isinstance(item, str) else _as_pair(item, i) for i, item in enumerate(text)], True
    if not isinstance(text_pair, (list, tuple)):
        raise ValueError(f"text is a list, so text_pair must be a list too, got {type(text_pair).__name__}")
    if len(text) != len(text_pair):
        raise ValueError(f"text has {len(text)} entries but text_pair has {len(text_pair)}")
    return [_as_pair(pair, i) for i, pair in enumerate(zip(text, text_pair, strict=True))], True


def _words(value: Any, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(word, str) for word in value):
        got = type(value).__name__
        if isinstance(value, (list, tuple)):
            got = f"a list holding {type(next(w for w in value if not isinstance(w, str))).__name__}"
        raise ValueError(
            f"is_split_into_words=True takes {name} as a list of words (str), or a batch of such lists; got {got}"
        )
    return list(value)


def _collect_words(text: Any, text_pair: Any) -> tuple[list, bool]:
    """The pre-split forms: a list of words (one input) or a list of lists (a batch), as HF decides."""
    if isinstance(text, str):
        raise ValueError(
            "is_split_into_words=True takes a list of words (or a batch of lists), not a str: "
            "split the text first, or leave is_split_into_words=False"
        )
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"text must be a list of words or a list of lists, got {type(text).__name__}")
    batched = bool(text) and isinstance(text[0], (list, tuple))
    if not batched:
        words = _words(text, "text")
        if text_pair is None:
            return [words], False
        return [(words, _words(text_pair, "text_pair"))], False
    rows = [_words(row, f"text[{i}]") for i, row in enumerate(text)]
    if text_pair is None:
        return rows, True
    if not isinstance(text_pair, (list, tuple)) or (text_pair and not isinstance(text_pair[0], (list, tuple))):
        raise ValueError("text is a batch of word lists, so text_pair must be a batch of word lists too")
    if len(text_pair) != len(rows):
        raise ValueError(f"text has {len(rows)} entries but text_pair has {len(text_pair)}")
    pairs = zip(rows, text_pair, strict=True)
    return [(row, _words(pair, f"text_pair[{i}]")) for i, (row, pair) in enumerate(pairs)], True


def _has_pair(items: list) -> bool:
    return any(type(item) is tuple for item in items)


def _first_unencodable(texts: Iterable[str]) -> tuple[int, UnicodeEncodeError] | None:
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return index, err
    return None


def _flatten(items: list) -> Iterable[str]:
    for item in items:
        parts = item if isinstance(item, tuple) else (item,)
        for part in parts:
            if isinstance(part, list):
                yield from part
            else:
                yield part


def _encoding_error(err: Exception, items: list, request: _Request) -> ValueError:
    """Rewrite the backend's terse errors as ones that name the input or the setting."""
    bad = _first_unencodable(_flatten(items))
    if bad is not None:
        index, cause = bad
        return ValueError(
            f"input string #{index} cannot be encoded as UTF-8 (lone surrogate at position {cause.start})"
        )
    return ValueError(
        f"cannot encode with truncation={request.truncation!r} and max_length={request.max_length}: {err}"
    )


# ----------------------------------------------------------------------------------- output
@dataclass(frozen=True)
class _Wanted:
    token_type_ids: bool
    attention_mask: bool
    special_tokens_mask: bool
    offset_mapping: bool
    length: bool = False
    overflowing: bool = False


def _fields(encodings: list[Encoding], wanted: _Wanted) -> dict[str, list]:
    """Read each requested field out of the encodings: one list per sequence, no per-token loop."""
    out = {"input_ids": [e.ids for e in encodings]}
    if wanted.token_type_ids:
        out["token_type_ids"] = [e.type_ids for e in encodings]
    if wanted.attention_mask:
        out["attention_mask"] = [e.attention_mask for e in encodings]
    if wanted.special_tokens_mask:
        out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
    if wanted.offset_mapping:
        out["offset_mapping"] = [e.offsets for e in encodings]
    return out


def _fields_to_tensors(fields: dict[str, list], tensor_type: str) -> dict[str, Any]:
    tokens = {name: value for name, value in fields.items() if name in _TOKEN_FIELDS}
    out = int_arrays_to_tensors(stack_token_fields(tokens), tensor_type)
    for name, value in fields.items():
        if name not in tokens:
            out[name] = to_tensor(name, value, tensor_type)
    return {name: out[name] for name in fields}


# ------------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True)
class _Options:
    do_lower_case: bool
    do_basic_tokenize: bool
    never_split: tuple[str, ...] | None
    tokenize_chinese_chars: bool
    strip_accents: bool | None

    @classmethod
    def checked(cls, do_lower_case, do_basic_tokenize, never_split, tokenize_chinese_chars, strip_accents):
        if strip_accents is not None and not isinstance(strip_accents, bool):
            raise ValueError(f"strip_accents must be True, False or None, got {strip_accents!r}")
        if isinstance(never_split, str):
            raise ValueError(f"never_split must be a list of tokens, not the string {never_split!r}")
        return cls(
            do_lower_case=bool(do_lower_case),
            do_basic_tokenize=bool(do_basic_tokenize),
            never_split=None if never_split is None else tuple(never_split),
            tokenize_chinese_chars=bool(tokenize_chinese_chars),
            strip_accents=strip_accents,
        )


def _fast_normalizer(options: _Options) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=options.tokenize_chinese_chars,
        strip_accents=options.strip_accents,
        lowercase=options.do_lower_case,
    )


def _slow_normalizer(options: _Options) -> normalizers.Normalizer | None:
    """The reference BasicTokenizer's order: clean, space CJK, NFC, then lower-case / strip accents."""
    if not options.do_basic_tokenize:
        return None
    return normalizers.Sequence(
        [
            normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=options.tokenize_chinese_chars,
                strip_accents=False,
                lowercase=False,
            ),
            normalizers.NFC(),
            normalizers.BertNormalizer(
                clean_text=False,
                handle_chinese_chars=False,
                strip_accents=options.strip_accents,
                lowercase=options.do_lower_case,
            ),
        ]
    )


def _slow_matching_form(token: AddedToken, options: _Options) -> AddedToken:
    """How the backend must look for an added token so that it matches where the slow reference does.

    The reference lower-cases the text (special tokens written exactly excepted) before it looks for
    added tokens, so with ``do_lower_case`` a lower-case special token such as ``<e1>`` is also found
    as ``<E1>``; matching it on the normalised text gives that.
    """
    if options.do_lower_case and token.special and not token.normalized and token.content == token.content.lower():
        return _copy_token(token, normalized=True)
    return token


def _build_pipeline(
    vocab: dict[str, int],
    tokens: dict[str, str | None],
    options: _Options,
    added: dict[int, AddedToken],
    *,
    emulate_slow: bool,
) -> Tokenizer:
    backend = Tokenizer(
        WordPiece(
            vocab,
            unk_token=tokens["unk_token"],
            max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
            continuing_subword_prefix=CONTINUATION_PREFIX,
        )
    )
    backend.normalizer = _slow_normalizer(options) if emulate_slow else _fast_normalizer(options)
    if emulate_slow and not options.do_basic_tokenize:
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ids = {token.content: index for index, token in added.items()}
    cls, sep = tokens["cls_token"], tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=[f"{cls}:0", "$A:0", f"{sep}:0"],
        pair=[f"{cls}:0", "$A:0", f"{sep}:0", "$B:1", f"{sep}:1"],
        special_tokens=[(cls, ids.get(cls, vocab.get(cls))), (sep, ids.get(sep, vocab.get(sep)))],
    )
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX, cleanup=True)
    _register_added(backend, added, options, emulate_slow)
    if emulate_slow and options.do_basic_tokenize and options.never_split:
        # The reference keeps these words whole; only those in the vocab can map to one id.
        kept = [t for t in options.never_split if t in vocab and t not in ids]
        backend.add_tokens([AddedToken(t, single_word=True, normalized=False) for t in kept])
    return backend


def _register_added(backend: Tokenizer, added: dict[int, AddedToken], options: _Options, emulate_slow: bool) -> None:
    """Give the backend the added tokens in id order (it numbers new ones as they come), in runs."""
    run: list[AddedToken] = []
    run_special = None
    for index in sorted(added):
        token = added[index]
        if run and token.special != run_special:
            _add_run(backend, run, run_special)
            run = []
        run.append(_slow_matching_form(token, options) if emulate_slow else token)
        run_special = token.special
    if run:
        _add_run(backend, run, run_special)
    for index, token in added.items():
        got = backend.token_to_id(token.content)
        if got != index:
            raise ValueError(f"added token {token.content!r} should have id {index}, but the backend gave it {got}")


def _add_run(backend: Tokenizer, run: list[AddedToken], special: bool) -> None:
    if special:
        backend.add_special_tokens(run)
    else:
        backend.add_tokens(run)


def _fast_truncation_lengths(
    n_first: int, n_second: int | None, budget: int, strategy: str
) -> tuple[int | None, int | None]:
    """How many tokens of each sequence the Rust truncation keeps per window (None: it errors out)."""
    if budget == 0:
        return 0, (None if n_second is None else 0)
    total = n_first + (n_second or 0)
    if total <= budget:
        return n_first, n_second
    excess = total - budget
    if strategy == "longest_first":
        if n_second is None:
            return budget, None
        short, long_ = sorted((n_first, n_second))
        long_ = short if short > budget else max(short, budget - short)
        if short + long_ > budget:
            short, long_ = budget // 2, budget // 2 + budget % 2
        return (long_, short) if n_first > n_second else (short, long_)
    if strategy == "only_first":
        return (n_first - excess, n_second) if n_first > excess else (None, None)
    if n_second is None or n_second <= excess:
        return None, None
    return n_first, n_second - excess


# ---------------------------------------------------------------------------- the tokenizers
class _WordPieceTokenizer:
    """What the slow and fast classes share: vocab, options, the call API, decoding and files."""

    is_fast = False
    _emulate_slow = True
    # HF's names: data collators read these.
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    pad_token_type_id = 0

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        do_lower_case: bool = True,
        do_basic_tokenize: bool = True,
        never_split: Iterable[str] | None = None,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str | None = "[MASK]",
        tokenize_chinese_chars: bool = True,
        strip_accents: bool | None = None,
        model_max_length: int = 512,
        clean_up_tokenization_spaces: bool = True,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        additional_special_tokens: Sequence[str | AddedToken] | None = None,
        added_tokens_decoder: dict[int | str, AddedToken | dict] | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        tokenizer_file: str | os.PathLike | None = None,
    ) -> None:
        if vocab_file is not None:
            self.vocab_file = os.fspath(vocab_file)
            self._vocab_lines = load_vocab(self.vocab_file)
        elif tokenizer_file is not None:
            # HF's fast tokenizers load from tokenizer.json alone; its WordPiece vocab is ours then.
            self.vocab_file = os.fspath(tokenizer_file)
            self._vocab_lines = load_tokenizer_json_vocab(self.vocab_file)[0]
        else:
            raise ValueError(
                "vocab_file is required (a WordPiece vocab.txt, one token per line), or tokenizer_file "
                "(an HF tokenizer.json with a WordPiece model)"
            )
        self._vocab = {token: index for index, token in enumerate(self._vocab_lines)}
        tokens = (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token)  # SPECIAL_ROLES' order
        roles = _special_tokens_from(dict(zip(SPECIAL_ROLES, tokens, strict=True)))
        self._options = _Options.checked(
            do_lower_case, do_basic_tokenize, never_split, tokenize_chinese_chars, strip_accents
        )
        limit = positive_int_or_none("model_max_length", model_max_length)
        if limit is None:
            raise ValueError("model_max_length must be a positive integer, got None")
        self.model_max_length = limit
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._padding_side = check_padding_side(padding_side)
        self.truncation_side = truncation_side
        self.model_input_names = list(type(self).model_input_names)

        added = self._decoder_from(added_tokens_decoder)
        known = {token.content: index for index, token in added.items()}
        for role, token in roles.items():
            if token is None:
                continue
            if token not in self._vocab and token not in known:
                raise ValueError(
                    f"vocab file {self.vocab_file} has no {role} {token!r}: every special token must be in the "
                    "vocabulary (or among the added tokens)"
                )
            if role == "unk_token" and token not in self._vocab:
                raise ValueError(
                    f"unk_token {token!r} must be in vocab file {self.vocab_file}: WordPiece maps unknown words to it"
                )
        role_ids = {t: known.get(t, self._vocab.get(t)) for t in roles.values() if t is not None}
        for token, index in sorted(role_ids.items(), key=lambda item: item[1]):
            if index not in added:
                added[index] = AddedToken(token, special=True, normalized=False)
        self._roles = roles
        # Roles set through add_special_tokens: HF writes those in special_tokens_map.json as objects.
        self._roles_with_flags: set[str] = set()
        self._additional: list[str] = []
        self._added = dict(sorted(added.items()))
        self._lock = threading.Lock()
        self._plain_decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX, cleanup=False)
        self._rebuild()
        extra = _additional_tokens_from(additional_special_tokens)
        self._additional = list(extra)
        new = [AddedToken(t, special=True, normalized=False) for t in extra if t not in self._added_ids]
        if new:
            self._add_tokens(new, special_tokens=True)
        self._refresh()

    def _decoder_from(self, added_tokens_decoder: Any) -> dict[int, AddedToken]:
        if added_tokens_decoder is None:
            return {}
        if not isinstance(added_tokens_decoder, dict):
            raise ValueError(f"added_tokens_decoder must map ids to tokens, got {type(added_tokens_decoder).__name__}")
        decoder: dict[int, AddedToken] = {}
        for key, value in added_tokens_decoder.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"added_tokens_decoder: {key!r} is not a token id") from None
            decoder[index] = _added_token_from(value, f"added_tokens_decoder[{key!r}]")
        _check_added_ids(decoder, self._vocab_lines)
        return decoder

    def _rebuild(self) -> None:
        """Rebuild the backend from vocab, options, special-token roles and added tokens."""
        self._backend = _build_pipeline(
            self._vocab, self._roles, self._options, self._added, emulate_slow=self._emulate_slow
        )
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what is derived from the added tokens and the special-token roles."""
        base = len(self._vocab_lines)
        self._added_ids = {token.content: index for index, token in self._added.items()}
        self._added_lines = [self._added[i].content for i in sorted(self._added) if i >= base]
        self._special_ids = frozenset(self.all_special_ids)
        self._special_added_ids = frozenset(index for index, token in self._added.items() if token.special)
        # What the slow reference's decode keeps apart from the runs around it.
        special = set(self.all_special_tokens)
        alone = {t for t in self._added_ids if t not in special}
        self._decoded_alone = frozenset(alone | {t for t in self._additional if self._token_id(t) >= base})

    # ------------------------------------------------------------------ options and ids
    do_lower_case = property(lambda self: self._options.do_lower_case)
    do_basic_tokenize = property(lambda self: self._options.do_basic_tokenize)
    tokenize_chinese_chars = property(lambda self: self._options.tokenize_chinese_chars)
    strip_accents = property(lambda self: self._options.strip_accents)

    @property
    def never_split(self) -> list[str] | None:
        return None if self._options.never_split is None else list(self._options.never_split)

    @property
    def padding_side(self) -> str:
        """'right' (BERT's side) or 'left'; where ``__call__``, ``pad`` and HF's collators pad."""
        return self._padding_side

    @padding_side.setter
    def padding_side(self, value: str) -> None:
        self._padding_side = check_padding_side(value)

    @property
    def truncation_side(self) -> str:
        return "right"

    @truncation_side.setter
    def truncation_side(self, value: str) -> None:
        if value != "right":
            raise ValueError(f"truncation_side={value!r} is not supported: these tokenizers truncate on the right")

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` doing the work (HF exposes it under the same name)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """The size of vocab.txt, without added tokens (``len(tokenizer)`` counts those too)."""
        return len(self._vocab_lines)

    def __len__(self) -> int:
        return len(self._vocab_lines) + len(self._added_lines)

    def get_vocab(self) -> dict[str, int]:
        vocab = dict(self._vocab)
        vocab.update(self._added_ids)
        return vocab

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    def get_added_vocab(self) -> dict[str, int]:
        """Every added token (the special-token roles included) and its id, by id."""
        return dict(self._added_ids)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(self._added)

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return dict(self._added_ids)

    def _token_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        index = self._added_ids.get(token)
        return self._vocab.get(token) if index is None else index

    # The special-token roles, as HF's attributes; setting one re-points it at a known token.
    def _get_role(self, role: str) -> str | None:
        return self._roles[role]

    def _set_role(self, role: str, value: Any) -> None:
        content = _token_content(value, role)
        if content is not None and self._token_id(content) is None:
            raise ValueError(
                f"{role} {content!r} is not in the vocabulary: add it with "
                f"add_special_tokens({{{role!r}: {content!r}}})"
            )
        if role == "unk_token" and content not in self._vocab:
            raise ValueError(f"unk_token {content!r} must be in the vocab file: WordPiece maps unknown words to it")
        self._roles[role] = content
        self._roles_with_flags.discard(role)
        self._rebuild()

    bos_token = property(lambda self: self._get_role("bos_token"), lambda self, v: self._set_role("bos_token", v))
    eos_token = property(lambda self: self._get_role("eos_token"), lambda self, v: self._set_role("eos_token", v))
    unk_token = property(lambda self: self._get_role("unk_token"), lambda self, v: self._set_role("unk_token", v))
    sep_token = property(lambda self: self._get_role("sep_token"), lambda self, v: self._set_role("sep_token", v))
    pad_token = property(lambda self: self._get_role("pad_token"), lambda self, v: self._set_role("pad_token", v))
    cls_token = property(lambda self: self._get_role("cls_token"), lambda self, v: self._set_role("cls_token", v))
    mask_token = property(lambda self: self._get_role("mask_token"), lambda self, v: self._set_role("mask_token", v))

    bos_token_id = property(lambda self: self._token_id(self.bos_token))
    eos_token_id = property(lambda self: self._token_id(self.eos_token))
    unk_token_id = property(lambda self: self._token_id(self.unk_token))
    sep_token_id = property(lambda self: self._token_id(self.sep_token))
    pad_token_id = property(lambda self: self._token_id(self.pad_token))
    cls_token_id = property(lambda self: self._token_id(self.cls_token))
    mask_token_id = property(lambda self: self._token_id(self.mask_token))

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional)

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self._token_id(t) for t in self._additional]

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in (self._roles[role] for role in SPECIAL_ROLES) if t is not None]
        return list(dict.fromkeys(tokens + self._additional))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_id(t) for t in self.all_special_tokens]

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {role: t for role, t in self._roles.items() if t is not None}
        if self._additional:
            out[ADDITIONAL_SPECIAL_TOKENS] = list(self._additional)
        return out

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3 if pair else 2

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_file={self.vocab_file!r}, vocab_size={self.vocab_size}, "
            f"added_tokens={len(self._added_lines)}, do_lower_case={self.do_lower_case}, "
            f"model_max_length={self.model_max_length})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ added tokens
    def add_tokens(
        self, new_tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False
    ) -> int:
        """Add tokens after the vocabulary (HF's ``add_tokens``); returns how many were new.

        Added tokens are found in the text before WordPiece runs, and get the ids ``len(tokenizer)``,
        ``len(tokenizer) + 1``, ... in order; resize the model's embeddings to ``len(tokenizer)``.
        """
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        for token in new_tokens:
            if not isinstance(token, (str, AddedToken)):
                raise TypeError(f"token {token!r} is not a str or a tokenizers.AddedToken but a {type(token).__name__}")
        return self._add_tokens(list(new_tokens), special_tokens=bool(special_tokens))

    def _add_tokens(self, new_tokens: list[str | AddedToken], special_tokens: bool) -> int:
        raise NotImplementedError

    def add_special_tokens(
        self, special_tokens_dict: dict[str, Any], replace_additional_special_tokens: bool = True
    ) -> int:
        """Set special-token roles (``pad_token``, ...) or ``additional_special_tokens`` and add those
        tokens that are new, as HF's ``add_special_tokens``; returns how many were new."""
        if not special_tokens_dict:
            return 0
        allowed = SPECIAL_ROLES + (ADDITIONAL_SPECIAL_TOKENS,)
        roles = dict(self._roles)
        additional = list(self._additional)
        flagged = set(self._roles_with_flags)
        to_add: list[AddedToken] = []
        for key, value in special_tokens_dict.items():
            if key not in allowed:
                raise ValueError(f"add_special_tokens: {key!r} is not a special-token role; use one of {list(allowed)}")
            if key == ADDITIONAL_SPECIAL_TOKENS:
                if not isinstance(value, (list, tuple)) or not all(isinstance(t, (str, AddedToken)) for t in value):
                    raise ValueError(f"{ADDITIONAL_SPECIAL_TOKENS} must be a list of str or AddedToken, got {value!r}")
                tokens = [
                    AddedToken(t, special=True, normalized=False) if isinstance(t, str) else t for t in value
                ]
                if not replace_additional_special_tokens:
                    tokens = [t for t in tokens if t.content not in additional]
                if replace_additional_special_tokens and tokens:
                    additional = list(dict.fromkeys(t.content for t in tokens))
                else:
                    additional.extend(t.content for t in tokens if t.content not in additional)
                to_add.extend(tokens)
                continue
            if not isinstance(value, (str, AddedToken)):
                raise ValueError(f"add_special_tokens: {key} must be a str or an AddedToken, got {value!r}")
            token = AddedToken(value, special=True, normalized=False) if isinstance(value, str) else value
            if not token.content:
                raise ValueError(f"add_special_tokens: {key} must be a non-empty string")
            if key == "unk_token" and token.content not in self._vocab:
                raise ValueError(
                    f"unk_token {token.content!r} must be in the vocab file: WordPiece maps unknown words to it"
                )
            roles[key] = token.content
            flagged.add(key)
            if all(token.content != t.content for t in to_add):
                to_add.append(token)
        self._roles = roles
        self._roles_with_flags = flagged
        self._additional = additional
        count = self._add_tokens(to_add, special_tokens=True)
        self._rebuild()
        return count

    # ------------------------------------------------------------------ encoding
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[tuple[str, str]] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch of either, the way HF's ``tokenizer(...)`` does.

        ``truncation=None`` (the default) truncates only when ``max_length`` is given without
        padding, as HF does; ``max_length=None`` with truncation or ``padding='max_length'`` means
        ``model_max_length``. ``return_tensors`` adds a batch axis to a single input.
        ``is_split_into_words=True`` takes words (a list of str per input) instead of texts;
        ``word_ids()`` on the fast tokenizer's result then names the word of every token.
        ``stride`` is how many tokens each overflowing window repeats from the one before.
        ``verbose`` is accepted for HF compatibility; nothing here prints.
        """
        tensor_type = check_tensor_type(return_tensors)
        if is_split_into_words:
            items, batched = _collect_words(text, text_pair)
            self._check_words(items)
        else:
            items, batched = _collect_inputs(text, text_pair)
        request = self._resolve_request(
            padding,
            truncation,
            max_length,
            pad_to_multiple_of,
            add_special_tokens,
            _has_pair(items),
            stride=stride,
            padding_side=padding_side,
            pretokenized=bool(is_split_into_words),
        )
        # None means "what the model takes", as in HF.
        names = self.model_input_names
        type_ids = ("token_type_ids" in names) if return_token_type_ids is None else bool(return_token_type_ids)
        mask = ("attention_mask" in names) if return_attention_mask is None else bool(return_attention_mask)
        wanted = _Wanted(
            token_type_ids=type_ids,
            attention_mask=mask,
            special_tokens_mask=bool(return_special_tokens_mask),
            offset_mapping=bool(return_offsets_mapping),
            length=bool(return_length),
            overflowing=bool(return_overflowing_tokens),
        )
        fields, alignment, keep_batch = self._call_fields(items, request, wanted, batched)
        if tensor_type is not None:
            fields = _fields_to_tensors(fields, tensor_type)
        elif not batched and not keep_batch:
            fields = self._unbatch(fields)
        return BatchEncoding(fields, alignment)

    def _check_words(self, items: list) -> None:
        """Where the reference refuses a pre-split input (the slow class refuses empty word lists)."""

    def _call_fields(
        self, items: list, request: _Request, wanted: _Wanted, batched: bool
    ) -> tuple[dict[str, list], list[Encoding] | None, bool]:
        raise NotImplementedError

    def _unbatch(self, fields: dict[str, list]) -> dict[str, Any]:
        raise NotImplementedError

    def _resolve_request(
        self,
        padding: Any,
        truncation: Any,
        max_length: Any,
        pad_to_multiple_of: Any,
        add_special_tokens: bool,
        has_pair: bool,
        *,
        stride: Any = 0,
        padding_side: Any = None,
        pretokenized: bool = False,
    ) -> _Request:
        pad = padding_strategy(padding)
        max_length = positive_int_or_none("max_length", max_length)
        multiple = positive_int_or_none("pad_to_multiple_of", pad_to_multiple_of)
        side = self._padding_side if padding_side is None else check_padding_side(padding_side)
        trunc = _truncation_strategy(truncation, max_length, pad)
        if max_length is None and (trunc != "do_not_truncate" or pad == "max_length"):
            max_length = self.model_max_length
        if max_length is not None and max_length >= UNLIMITED:
            # "No limit": nothing to truncate to or pad to, as HF treats its int(1e30) sentinel.
            max_length = None
            trunc = "do_not_truncate"
            pad = "longest" if pad == "max_length" else pad
        if trunc != "do_not_truncate" and add_special_tokens:
            needed = self.num_special_tokens_to_add(pair=has_pair)
            if max_length < needed:
                raise ValueError(
                    f"max_length={max_length} is too small: the special tokens alone need {needed} "
                    f"({'[CLS] A [SEP] B [SEP]' if has_pair else '[CLS] A [SEP]'})"
                )
        if (
            pad != "do_not_pad"
            and trunc != "do_not_truncate"
            and multiple is not None
            and max_length % multiple != 0
        ):
            raise ValueError(
                f"truncation to max_length={max_length} and padding to a multiple of "
                f"pad_to_multiple_of={multiple} contradict each other: make max_length a multiple of it"
            )
        return _Request(
            pad, trunc, max_length, multiple, bool(add_special_tokens), _stride(stride), side, pretokenized
        )

    def _encode_unchanged(self, inputs: list, add_special_tokens: bool, request: _Request) -> list[Encoding]:
        try:
            return self._backend.encode_batch(
                inputs, add_special_tokens=add_special_tokens, is_pretokenized=request.pretokenized
            )
        except Exception as err:
            raise _encoding_error(err, inputs, request) from err

    def encode(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        padding: bool | str = False,
        is_split_into_words: bool = False,
    ) -> list[int]:
        """Token ids of one text (or pair, or list of words), as HF's ``encode``."""
        if not is_split_into_words and not isinstance(text, str):
            raise ValueError(f"encode takes one str (use __call__ for batches), got {type(text).__name__}")
        if is_split_into_words and (not isinstance(text, (list, tuple)) or (text and not isinstance(text[0], str))):
            raise ValueError("encode with is_split_into_words=True takes one list of words (use __call__ for batches)")
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            padding=padding,
            is_split_into_words=is_split_into_words,
            return_token_type_ids=False,
            return_attention_mask=False,
        )["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """WordPiece tokens of a text; special and added tokens written in the text stay whole."""
        ids = self.encode(text, pair, add_special_tokens=add_special_tokens, truncation=False)
        return [self._token_of(i) for i in ids]

    # ------------------------------------------------------------------ padding encoded inputs
    def pad(
        self,
        encoded_inputs: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad already-encoded inputs, as HF's ``tokenizer.pad`` (what its data collators call).

        Takes one example (a dict of lists), a batch as a dict of lists of lists, or a list of
        examples (dicts or BatchEncodings), holding python lists or NumPy / PyTorch / TF tensors
        (which come back as the same kind unless ``return_tensors`` says otherwise).
        ``input_ids`` get ``pad_token_id``, ``token_type_ids`` 0, ``attention_mask`` 0 (it is
        created if missing, unless ``return_attention_mask=False``), ``special_tokens_mask`` 1;
        other fields (labels, ...) pass through. Nothing is truncated.
        """
        return pad_encoded(
            encoded_inputs,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=self._padding_side if padding_side is None else padding_side,
            return_attention_mask=return_attention_mask,
            return_tensors=return_tensors,
            pad_id=self.pad_token_id,
            pad_type_id=self.pad_token_type_id,
            model_max_length=self.model_max_length,
            model_input_names=self.model_input_names,
        )

    # ------------------------------------------------------------------ ids <-> tokens
    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Unknown tokens map to the ``[UNK]`` id, as in the reference."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            index = self._token_id(tokens)
            return unk if index is None else index
        return [unk if (index := self._token_id(token)) is None else index for token in tokens]

    def _token_of(self, index: int) -> str:
        base = len(self._vocab_lines)
        if 0 <= index < base:
            return self._vocab_lines[index]
        if base <= index < base + len(self._added_lines):
            return self._added_lines[index - base]
        last = base + len(self._added_lines) - 1
        raise ValueError(f"token id {index} is outside the vocabulary (ids 0..{last})")

    def convert_ids_to_tokens(
        self, ids: int | Iterable[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self._token_of(int(ids))
        return [
            self._token_of(i)
            for i in _as_id_list(ids)
            if not (skip_special_tokens and i in self._special_ids)
        ]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._join_tokens(list(tokens))

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Join WordPiece tokens back into text (``##`` pieces glued to the previous token).

        ``clean_up_tokenization_spaces=None`` uses the tokenizer's setting (True for BERT), which
        removes the space before punctuation and inside English contractions.
        """
        ids = _as_id_list(token_ids)
        for index in ids:
            self._token_of(index)  # refuses ids outside the vocabulary by number
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        text = self._decode_ids(ids, bool(skip_special_tokens))
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def _decode_ids(self, ids: list[int], skip_special_tokens: bool) -> str:
        raise NotImplementedError

    def _join_tokens(self, tokens: list[str]) -> str:
        """The slow reference joins tokens with spaces and glues ``##`` pieces, nothing more."""
        return self._plain_decoder.decode(tokens)

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        rows = sequences.tolist() if hasattr(sequences, "tolist") else np.asarray(sequences, dtype=object).tolist()
        return [self.decode(row, **kwargs) for row in rows]

    # ------------------------------------------------------------------ special-token helpers
    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if token_ids_1 is None:
            return cls + list(token_ids_0) + sep
        return cls + list(token_ids_0) + sep + list(token_ids_1) + sep

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where ``build_inputs_with_special_tokens`` puts (or has put) a special token."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError(
                    "token_ids_1 must be None when already_has_special_tokens=True: "
                    "the ids already hold both sequences"
                )
            return [1 if i in self._special_ids else 0 for i in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        first = [0] * (len(token_ids_0) + 2)
        return first if token_ids_1 is None else first + [1] * (len(token_ids_1) + 1)

    # ------------------------------------------------------------------ files
    def _config(self) -> dict[str, Any]:
        """tokenizer_config.json as transformers 4.57 writes it, so HF loads our folders."""
        config: dict[str, Any] = {
            "added_tokens_decoder": {str(index): _token_state(token) for index, token in self._added.items()},
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "do_basic_tokenize": self.do_basic_tokenize,
            "do_lower_case": self.do_lower_case,
            "extra_special_tokens": {},
            "model_max_length": self.model_max_length,
            "never_split": self.never_split,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "tokenizer_class": SAVED_TOKENIZER_CLASS,
        }
        if self._padding_side != "right":
            config["padding_side"] = self._padding_side
        config.update(self.special_tokens_map)
        return config

    def _special_tokens_file(self) -> dict[str, Any]:
        """special_tokens_map.json: roles as strings (with their flags when set by
        add_special_tokens) and additional tokens with their flags, as HF writes them."""
        out: dict[str, Any] = {}
        for role, token in self._roles.items():
            if token is not None:
                flagged = role in self._roles_with_flags and token in self._added_ids
                out[role] = _token_state(self._added[self._added_ids[token]], with_special=False) if flagged else token
        if self._additional:
            out[ADDITIONAL_SPECIAL_TOKENS] = [
                _token_state(self._added[self._added_ids[t]], with_special=False)
                if t in self._added_ids
                else t
                for t in self._additional
            ]
        return out

    def _tokenizer_json(self) -> str:
        """HF fast's tokenizer.json for these options, built fresh so no call's padding leaks in."""
        fast = _build_pipeline(self._vocab, self._roles, self._options, self._added, emulate_slow=False)
        return fast.to_str(pretty=True)

    def save_vocabulary(
        self, save_directory: str | os.PathLike, filename_prefix: str | None = None
    ) -> tuple[str]:
        directory = _writable_directory(save_directory)
        path = os.path.join(directory, (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILE)
        atomic_write_text(path, "".join(token + "\n" for token in self._vocab_lines))
        return (path,)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the files HF writes (``added_tokens.json`` only when tokens were added beyond the
        vocabulary); each appears whole or not at all."""
        directory = _writable_directory(save_directory)
        config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
        map_path = os.path.join(directory, SPECIAL_TOKENS_MAP_FILE)
        added_path = os.path.join(directory, ADDED_TOKENS_FILE)
        json_path = os.path.join(directory, TOKENIZER_FILE)
        atomic_write_text(config_path, _dump_json(self._config()))
        atomic_write_text(map_path, _dump_json(self._special_tokens_file()))
        (vocab_path,) = self.save_vocabulary(directory)
        written = [config_path, map_path, vocab_path]
        base = len(self._vocab_lines)
        beyond = {token.content: index for index, token in self._added.items() if index >= base}
        if beyond:
            atomic_write_text(added_path, _dump_json(beyond))
            written.append(added_path)
        elif os.path.isfile(added_path):
            # A stale file from an earlier save would add its tokens back on loading.
            os.remove(added_path)
        atomic_write_text(json_path, self._tokenizer_json())
        written.append(json_path)
        return tuple(written)

    @classmethod
    def from_pretrained(cls, pretrained_path: str | os.PathLike, **overrides: Any):
        """Load a folder written by ``save_pretrained`` here or by HF ``transformers``.

        The pipeline is rebuilt from vocab.txt and the saved options (keyword arguments override
        them); tokens added beyond the vocabulary come back with their ids from
        ``tokenizer_config.json``, ``tokenizer.json`` and ``added_tokens.json``, which must agree.
        A Hub id (``"org/name"``) downloads only the tokenizer files, with HF's ``revision``,
        ``cache_dir``, ``local_files_only``, ``token`` and ``subfolder`` (``convbert_common.hub``).
        """
        from convbert_common import hub

        options = hub.HubOptions.pop_from(overrides)
        directory = os.fspath(pretrained_path)
        local = hub.local_path(directory, options)
        if local is None and hub.is_repo_id(directory):
            optional = (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, ADDED_TOKENS_FILE)
            directory = hub.resolve_files(directory, (), optional, options, any_of=(VOCAB_FILE, TOKENIZER_FILE))
        elif local is not None:
            directory = local
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        kwargs = _saved_options(directory)
        vocab_path, json_path = os.path.join(directory, VOCAB_FILE), os.path.join(directory, TOKENIZER_FILE)
        if "vocab_file" not in overrides and "tokenizer_file" not in overrides:
            if os.path.isfile(vocab_path) or not os.path.isfile(json_path):
                kwargs["vocab_file"] = vocab_path
            else:
                # No vocab.txt: the vocabulary and the normaliser's options come from tokenizer.json.
                kwargs["tokenizer_file"] = json_path
                for key, value in load_tokenizer_json_vocab(json_path)[1].items():
                    kwargs.setdefault(key, value)
        kwargs.update(overrides)
        if "added_tokens_decoder" not in kwargs:
            decoder, origin = _saved_added_tokens(directory, kwargs.get(ADDITIONAL_SPECIAL_TOKENS) or [])
            if decoder:
                if kwargs.get("vocab_file") is not None:
                    lines = load_vocab(kwargs["vocab_file"])
                else:
                    lines = load_tokenizer_json_vocab(kwargs["tokenizer_file"])[0]
                _check_added_ids(decoder, lines, origin)
            kwargs["added_tokens_decoder"] = decoder
        return cls(**kwargs)


class ConvBertTokenizerFast(_WordPieceTokenizer):
    """HF's ``ConvBertTokenizerFast``: the Rust pipeline with its own truncation and padding.

    Padding and truncation are set on the backend per call (under a lock, so threads sharing a
    tokenizer cannot interleave settings) and the batch is encoded in one Rust call.
    """

    is_fast = True
    _emulate_slow = False

    def _backend_settings(self, request: _Request) -> tuple[dict | None, dict | None]:
        truncation = None
        if request.truncation != "do_not_truncate":
            truncation = {
                "max_length": request.max_length,
                "stride": request.stride,
                "strategy": request.truncation,
                "direction": "right",
            }
        padding = None
        if request.padding != "do_not_pad":
            padding = {
                "length": request.max_length if request.padding == "max_length" else None,
                "pad_to_multiple_of": request.pad_to_multiple_of,
                "pad_id": self.pad_token_id,
                "pad_token": self.pad_token,
                "pad_type_id": self.pad_token_type_id,
                "direction": request.padding_side,
            }
        return truncation, padding

    def _configure_backend(self, truncation: dict | None, padding: dict | None) -> None:
        # Compared with the backend's live state, so a change made through backend_tokenizer
        # cannot leave a stale setting in place.
        if self._backend.truncation != truncation:
            if truncation is None:
                self._backend.no_truncation()
            else:
                self._backend.enable_truncation(**truncation)
        if self._backend.padding != padding:
            if padding is None:
                self._backend.no_padding()
            else:
                self._backend.enable_padding(**padding)

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        # The backend's token strings, as HF fast returns: an added token found in normalised text
        # reads as that text ("newword" for an added "NewWord"), not as its id's entry.
        return self(text, pair, add_special_tokens=add_special_tokens, truncation=False).tokens()

    def _decode_ids(self, ids: list[int], skip_special_tokens: bool) -> str:
        # HF fast decodes through tokenizer.json's decoder, which always removes the space
        # before . , ! ? (even with clean_up_tokenization_spaces=False), and skips every added
        # token marked special; so do we. The tokens come from our table, not the backend's
        # id_to_token: tokenizers 0.23 spells a normalised added token in normalised form there,
        # where 0.22 (which transformers 4.x pins) gives its content.
        skip = self._special_added_ids if skip_special_tokens else frozenset()
        return self._backend.decoder.decode([self._token_of(i) for i in ids if i not in skip])

    def _join_tokens(self, tokens: list[str]) -> str:
        return self._backend.decoder.decode(tokens)

    def _add_tokens(self, new_tokens: list[str | AddedToken], special_tokens: bool) -> int:
        # HF fast hands the tokens to the backend as they are; its count (tokens new to the added
        # vocabulary, including ones already in vocab.txt) is HF's return value.
        count = self._backend.add_special_tokens(new_tokens) if special_tokens else self._backend.add_tokens(new_tokens)
        self._added = dict(sorted(self._backend.get_added_tokens_decoder().items()))
        self._refresh()
        return count

    def _encode(self, items: list, request: _Request) -> list[Encoding]:
        truncation, padding = self._backend_settings(request)
        with self._lock:
            if request.stride and request.truncation != "do_not_truncate":
                self._check_stride(items, request)
            self._configure_backend(truncation, padding)
            return self._encode_unchanged(items, request.add_special_tokens, request)

    def _check_stride(self, items: list, request: _Request) -> None:
        """The backend refuses a stride not smaller than max_length minus a single sequence's
        special tokens, and aborts the process (a Rust panic, not an exception) when a window is
        not longer than the stride; check both first, measuring each sequence, and say which input."""
        single = self.num_special_tokens_to_add(pair=False)
        if request.stride >= request.max_length - single:
            raise ValueError(
                f"stride={request.stride} must be smaller than max_length={request.max_length} minus the "
                f"{single} special tokens of a sequence: each window repeats that many tokens of the one before"
            )
        self._configure_backend(None, None)
        firsts = self._encode_unchanged([item[0] if type(item) is tuple else item for item in items], False, request)
        pairs = [item[1] for item in items if type(item) is tuple]
        seconds = iter([len(e) for e in self._encode_unchanged(pairs, False, request)])
        for index, (item, first) in enumerate(zip(items, firsts, strict=True)):
            pair = type(item) is tuple
            specials = self.num_special_tokens_to_add(pair=pair) if request.add_special_tokens else 0
            lengths = (len(first), next(seconds) if pair else None)
            kept = _fast_truncation_lengths(lengths[0], lengths[1], request.max_length - specials, request.truncation)
            for which, n, k in zip(("first", "second"), lengths, kept, strict=True):
                if n is not None and k is not None and 0 < k < n and request.stride >= k:
                    raise ValueError(
                        f"stride={request.stride} is too large for input #{index}: truncation="
                        f"{request.truncation!r} to max_length={request.max_length} keeps {k} tokens of its "
                        f"{which} sequence in each window, and the stride (tokens each window repeats "
                        "from the one before) must be smaller than that"
                    )

    def _call_fields(
        self, items: list, request: _Request, wanted: _Wanted, batched: bool
    ) -> tuple[dict[str, list], list[Encoding] | None, bool]:
        encodings = self._encode(items, request)
        rows, mapping = encodings, None
        if wanted.overflowing:
            # Every window is a row of its own, after the row it overflows from (HF fast).
            rows, mapping = [], []
            for sample, encoding in enumerate(encodings):
                group = [encoding, *encoding.overflowing]
                rows.extend(group)
                mapping.extend([sample] * len(group))
        fields = _fields(rows, wanted)
        if wanted.length:
            fields["length"] = [len(e.ids) for e in rows]
        if mapping is not None:
            fields["overflow_to_sample_mapping"] = mapping
        return fields, rows, wanted.overflowing

    def _unbatch(self, fields: dict[str, list]) -> dict[str, Any]:
        # HF fast's rule: only the per-token lists lose the batch axis; ``length`` stays a list.
        return {name: (v[0] if v and isinstance(v[0], list) else v) for name, v in fields.items()}


class ConvBertTokenizer(_WordPieceTokenizer):
    """HF's pure-Python ``ConvBertTokenizer``, reproduced on the Rust pipeline.

    Each sequence is encoded without special tokens, truncated by the reference's rules (see
    ``slow_truncation_lengths``), then joined by the ``[CLS] A [SEP] B [SEP]`` template and padded.
    """

    def _check_words(self, items: list) -> None:
        for index, item in enumerate(items):
            for words in item if type(item) is tuple else (item,):
                if not words:
                    raise ValueError(
                        f"input #{index} is an empty list of words: the slow tokenizer (like the reference) "
                        "needs at least one word per sequence with is_split_into_words=True"
                    )

    def _call_fields(
        self, items: list, request: _Request, wanted: _Wanted, batched: bool
    ) -> tuple[dict[str, list], list[Encoding] | None, bool]:
        has_pair = _has_pair(items)
        if wanted.overflowing:
            if request.truncation == "longest_first" and has_pair:
                raise ValueError(
                    "return_overflowing_tokens=True cannot be used with truncation='longest_first' on pairs "
                    "(the reference refuses it too): use 'only_second' or 'only_first', or ConvBertTokenizerFast"
                )
            if request.max_length is None:
                raise ValueError(
                    "return_overflowing_tokens=True needs a max_length (or truncation=True, which uses "
                    "model_max_length) to count the tokens that overflow"
                )
        encodings, overflow = self._encode_with_overflow(items, request)
        fields: dict[str, list] = {}
        if wanted.overflowing:
            fields["overflowing_tokens"] = [ids for ids, _ in overflow]
            fields["num_truncated_tokens"] = [count for _, count in overflow]
        fields.update(_fields(encodings, wanted))
        if wanted.length:
            # The reference counts a single input after padding but a batch's rows before it.
            fields["length"] = [len(e.ids) if not batched else sum(e.attention_mask) for e in encodings]
        return fields, None, False

    def _unbatch(self, fields: dict[str, list]) -> dict[str, Any]:
        return {name: values[0] for name, values in fields.items()}

    def _encode(self, items: list, request: _Request) -> list[Encoding]:
        return self._encode_with_overflow(items, request)[0]

    def _encode_with_overflow(
        self, items: list, request: _Request
    ) -> tuple[list[Encoding], list[tuple[list[int], int | None]]]:
        firsts = [item[0] if type(item) is tuple else item for item in items]
        seconds = [item[1] for item in items if type(item) is tuple]
        first_encodings = self._encode_unchanged(firsts, False, request)
        second_encodings = iter(self._encode_unchanged(seconds, False, request))
        encodings, overflow = [], []
        for item, first in zip(items, first_encodings, strict=True):
            second = next(second_encodings) if type(item) is tuple else None
            encoding, overflowing = self._join(first, second, request)
            encodings.append(encoding)
            overflow.append(overflowing)
        _pad_encodings(encodings, request, self.pad_token_id, self.pad_token)
        return encodings, overflow

    def _join(
        self, first: Encoding, second: Encoding | None, request: _Request
    ) -> tuple[Encoding, tuple[list[int], int | None]]:
        specials = self.num_special_tokens_to_add(pair=second is not None) if request.add_special_tokens else 0
        n_first, n_second = len(first), (None if second is None else len(second))
        overflowing: list[int] = []
        if request.truncation != "do_not_truncate":
            keep_first, keep_second = slow_truncation_lengths(
                n_first, n_second, request.max_length - specials, request.truncation
            )
            # The reference's overflowing tokens: what was cut, after ``stride`` tokens kept before it.
            if keep_first < n_first:
                window = min(n_first, request.stride + n_first - keep_first)
                overflowing = first.ids[n_first - window :]
            elif second is not None and keep_second < n_second:
                window = min(n_second, request.stride + n_second - keep_second)
                overflowing = second.ids[n_second - window :]
            if keep_first < n_first:
                first.truncate(keep_first)
            if second is not None and keep_second < n_second:
                second.truncate(keep_second)
        total = n_first + (n_second or 0) + specials
        truncated = None if request.max_length is None else total - request.max_length
        if request.add_special_tokens:
            return self._backend.post_process(first, second, add_special_tokens=True), (overflowing, truncated)
        if second is None:
            return first, (overflowing, truncated)
        # The reference gives the second sequence type id 0 when no special tokens are added.
        return Encoding.merge([first, second], growing_offsets=False), (overflowing, truncated)

    def _add_tokens(self, new_tokens: list[str | AddedToken], special_tokens: bool) -> int:
        """The reference's rules: non-special tokens are lower-cased when ``do_lower_case``; a token
        already in the vocabulary keeps its id and is not counted; special ones that hold no role
        join ``additional_special_tokens``."""
        added = dict(self._added)
        ids = dict(self._added_ids)
        vocab_size = len(self)
        count = 0
        for token in new_tokens:
            content = token if isinstance(token, str) else token.content
            if content == "":
                continue
            if isinstance(token, str):
                if token in ids:
                    continue
                special = token in self.all_special_tokens or special_tokens
                token = AddedToken(token, normalized=not special, special=special)
            elif special_tokens:
                token = _copy_token(token, special=True)
            if not token.special and token.normalized and self.do_lower_case:
                token = _copy_token(token, content=token.content.lower())
            index = ids.get(token.content, self._vocab.get(token.content))
            if index is None:
                index = vocab_size + count
                count += 1
            if token.special and token.content not in self.all_special_tokens:
                self._additional.append(token.content)
            added[index] = token
            ids[token.content] = index
        self._added = dict(sorted(added.items()))
        self._rebuild()
        return count

    def _decode_ids(self, ids: list[int], skip_special_tokens: bool) -> str:
        """The reference's decode: added tokens stand alone, the runs between them are joined by
        ``convert_tokens_to_string``, and the pieces are joined by spaces."""
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        alone = self._decoded_alone
        if not alone:
            return self._join_tokens(tokens)
        pieces: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token in alone:
                if run:
                    text = self._join_tokens(run)
                    if text:
                        pieces.append(text)
                    run = []
                pieces.append(token)
            else:
                run.append(token)
        if run:
            pieces.append(self._join_tokens(run))
        return " ".join(pieces)


def slow_truncation_lengths(
    n_first: int, n_second: int | None, budget: int, strategy: str
) -> tuple[int, int | None]:
    """How many tokens of each sequence the slow reference keeps within ``budget``.

    ``longest_first`` removes one token at a time from the longer sequence, from the second on
    ties; in closed form: shorten the longer one to the shorter's length, then split what is
    still to remove, the second sequence taking the larger half.
    """
    total = n_first + (n_second or 0)
    excess = total - budget
    if excess <= 0:
        return n_first, n_second
    if strategy == "only_second" and n_second is None:
        raise ValueError("truncation='only_second' needs a text_pair: a single text has no second sequence")
    if strategy in ("only_first", "only_second"):
        target = n_first if strategy == "only_first" else n_second
        if target <= excess:
            raise ValueError(
                f"truncation={strategy!r} cannot fit {total} tokens into {budget}: the "
                f"{strategy[5:]} sequence has only {target} tokens and {excess} must go"
            )
        if strategy == "only_first":
            return n_first - excess, n_second
        return n_first, n_second - excess
    if n_second is None:
        return budget, None
    gap = abs(n_first - n_second)
    if excess <= gap:
        return (n_first - excess, n_second) if n_first > n_second else (n_first, n_second - excess)
    rest = excess - gap
    shorter = min(n_first, n_second)
    return shorter - rest // 2, shorter - (rest + 1) // 2


def _pad_encodings(encodings: list[Encoding], request: _Request, pad_id: int, pad_token: str) -> None:
    if request.padding == "do_not_pad" or not encodings:
        return
    if request.padding == "max_length":
        target = request.max_length
    else:
        target = max(len(e) for e in encodings)
    multiple = request.pad_to_multiple_of
    if multiple is not None and target % multiple:
        target += multiple - target % multiple
    for encoding in encodings:
        # Encoding.pad pads its overflowing windows too.
        encoding.pad(target, direction=request.padding_side, pad_id=pad_id, pad_type_id=0, pad_token=pad_token)


# ------------------------------------------------------------------------------------ decoding
# The reference's clean-up after decoding: no space before punctuation or inside contractions.
_CLEAN_UPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def clean_up_tokenization(text: str) -> str:
    for before, after in _CLEAN_UPS:
        text = text.replace(before, after)
    return text


def _as_id_list(ids: Any) -> list[int]:
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if not isinstance(ids, (list, tuple)):
        ids = ids.tolist() if hasattr(ids, "tolist") else np.asarray(ids).tolist()
        if isinstance(ids, int):
            return [ids]
    try:
        return [int(i) for i in ids]
    except TypeError as err:
        raise ValueError("decode takes one sequence of token ids (use batch_decode for several)") from err


# --------------------------------------------------------------------------------- file helpers
def _dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _writable_directory(save_directory: str | os.PathLike) -> str:
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise ValueError(f"save directory {directory} is a file, not a directory")
    os.makedirs(directory, exist_ok=True)
    return directory


def _read_json_object(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _saved_options(directory: str) -> dict[str, Any]:
    """Constructor arguments from tokenizer_config.json and special_tokens_map.json, if present."""
    kwargs: dict[str, Any] = {}
    keys = _OPTION_KEYS + SPECIAL_ROLES + (ADDITIONAL_SPECIAL_TOKENS,)
    config = _read_json_object(os.path.join(directory, TOKENIZER_CONFIG_FILE))
    if config is not None:
        kwargs.update({key: config[key] for key in keys if key in config})
    special = _read_json_object(os.path.join(directory, SPECIAL_TOKENS_MAP_FILE))
    if special is not None:
        kwargs.update({key: special[key] for key in SPECIAL_ROLES + (ADDITIONAL_SPECIAL_TOKENS,) if key in special})
    if ADDITIONAL_SPECIAL_TOKENS in kwargs:
        kwargs[ADDITIONAL_SPECIAL_TOKENS] = _additional_tokens_from(kwargs[ADDITIONAL_SPECIAL_TOKENS])
    return kwargs


def _saved_added_tokens(directory: str, additional: list[str]) -> tuple[dict[int, AddedToken], dict[int, str]]:
    """Every token HF recorded as added, with its id and the file that says so.

    tokenizer_config.json's ``added_tokens_decoder`` and tokenizer.json's ``added_tokens`` carry
    the flags; the older added_tokens.json only names and ids. Where files overlap they must agree.
    """
    entries: list[tuple[int, AddedToken, str]] = []
    config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
    config = _read_json_object(config_path)
    if config is not None:
        decoder = config.get("added_tokens_decoder") or {}
        if not isinstance(decoder, dict):
            raise ValueError(f"{config_path}: added_tokens_decoder must be a JSON object")
        for key, value in decoder.items():
            entries.append((_saved_id(key, config_path), _added_token_from(value, config_path), config_path))
    json_path = os.path.join(directory, TOKENIZER_FILE)
    saved = _read_json_object(json_path)
    if saved is not None:
        added = saved.get("added_tokens") or []
        if not isinstance(added, list):
            raise ValueError(f"{json_path}: added_tokens must be a JSON list")
        for value in added:
            if not isinstance(value, dict):
                raise ValueError(f"{json_path}: added_tokens holds {value!r}, not a token object")
            entries.append((_saved_id(value.get("id"), json_path), _added_token_from(value, json_path), json_path))
    legacy_path = os.path.join(directory, ADDED_TOKENS_FILE)
    legacy = _read_json_object(legacy_path)
    if legacy is not None:
        for content, index in legacy.items():
            special = content in additional
            token = AddedToken(content, normalized=not special, special=special)
            entries.append((_saved_id(index, legacy_path), token, legacy_path))

    decoder_out: dict[int, AddedToken] = {}
    origin: dict[int, str] = {}
    by_content: dict[str, tuple[int, str]] = {}
    for index, token, path in entries:
        if index in decoder_out and decoder_out[index].content != token.content:
            raise ValueError(
                f"{path} gives id {index} to added token {token.content!r}, but {origin[index]} gives it to "
                f"{decoder_out[index].content!r}"
            )
        seen = by_content.setdefault(token.content, (index, path))
        if seen[0] != index:
            raise ValueError(
                f"{path} gives added token {token.content!r} the id {index}, but {seen[1]} gives it {seen[0]}"
            )
        if index not in decoder_out:
            decoder_out[index] = token
            origin[index] = path
    return decoder_out, origin


def _saved_id(value: Any, path: str) -> int:
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {value!r} is not a token id") from None
    if isinstance(value, bool) or index < 0:
        raise ValueError(f"{path}: {value!r} is not a token id")
    return index
