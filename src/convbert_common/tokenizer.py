"""WordPiece tokenizers for ConvBERT with the Hugging Face ``ConvBertTokenizer(Fast)`` API.

Both classes run the same Rust pipeline from the ``tokenizers`` library (BERT normaliser,
BERT pre-tokenizer, WordPiece with ``##`` continuations, ``[CLS] A [SEP] B [SEP]`` template), so
that tokens, ids and offsets come out of one tested engine instead of two implementations that
could drift. They differ only where the two reference classes differ:

* ``ConvBertTokenizerFast`` is Hugging Face's Rust tokenizer exactly: it truncates a pair with
  ``longest_first`` by splitting the budget, the odd token going to the longer sequence.
* ``ConvBertTokenizer`` reproduces the pure-Python reference: ``longest_first`` drops one token at
  a time from the longer sequence, from the second one on ties, so an odd budget leaves the first
  sequence one token longer (12 of the 900 golden records differ only in this). Its normaliser
  adds the reference's NFC step before lower-casing, which matters only for cased vocabularies
  fed decomposed accents, and with ``do_basic_tokenize=False`` it splits on whitespace only.
  Like the reference, its ``BatchEncoding`` carries no per-token alignment (``word_ids`` etc.).

Known differences from the slow reference: Python's ``str.lower`` turns a word-final capital sigma
into ``ς`` where the Rust normaliser (and HF's fast tokenizer) gives ``σ``, in both classes here.
``never_split`` (honoured by the slow class only; HF's fast tokenizer ignores it too) keeps
vocabulary words whole, but matches them as words, not whitespace-delimited chunks: ``[unused0].``
keeps ``[unused0]`` here where the reference splits the chunk; words outside the vocab are ignored.

Nothing here imports torch or tensorflow until ``return_tensors="pt"`` / ``"tf"`` asks for it.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from convbert_common.fileio import atomic_write_text

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

MAX_INPUT_CHARS_PER_WORD = 100
CONTINUATION_PREFIX = "##"
# The class name both reference classes write into tokenizer_config.json.
SAVED_TOKENIZER_CLASS = "ConvBertTokenizer"

# Hugging Face's order of special-token roles: ``all_special_ids`` follows it.
SPECIAL_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_OPTIONAL_ROLES = ("mask_token",)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
TENSOR_TYPES = ("np", "pt", "tf")

# A model_max_length at or above this means "no limit" (HF writes int(1e30) for that).
_UNLIMITED = 10**18

_OPTION_KEYS = (
    "do_lower_case",
    "do_basic_tokenize",
    "never_split",
    "tokenize_chinese_chars",
    "strip_accents",
    "model_max_length",
    "clean_up_tokenization_spaces",
)


# --------------------------------------------------------------------------------------- vocab
def load_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """Read a WordPiece vocabulary: one token per line, the line number is the id.

    Lines are split on ``\\n`` only (as the reference does), so tokens holding other line
    separators survive; a final newline does not make an extra empty token.
    """
    path = os.fspath(vocab_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocab file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            tokens = fh.read().split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"vocab file {path} is not UTF-8 text: {err}") from err
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise ValueError(f"vocab file {path} is empty")
    return tokens


def _special_tokens_from(values: dict[str, Any]) -> dict[str, str | None]:
    """Accept special tokens as str, ``tokenizers.AddedToken`` or HF's serialised dict form."""
    tokens: dict[str, str | None] = {}
    for role in SPECIAL_ROLES:
        value = values[role]
        if isinstance(value, AddedToken):
            value = value.content
        elif isinstance(value, dict) and "content" in value:
            value = value["content"]
        if value is None and role in _OPTIONAL_ROLES:
            tokens[role] = None
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{role} must be a non-empty string, got {value!r}")
        tokens[role] = value
    return tokens


def _check_special_tokens(vocab: dict[str, int], tokens: dict[str, str | None], source: str) -> None:
    """Special ids must come from the vocabulary: a default id would silently mis-tokenize."""
    for role, token in tokens.items():
        if token is not None and token not in vocab:
            raise ValueError(
                f"vocab file {source} has no {role} {token!r}: every special token must be in the vocabulary"
            )


# ------------------------------------------------------------------------------ request parsing
@dataclass(frozen=True)
class _Request:
    """One call's padding/truncation settings, resolved and validated once."""

    padding: str
    truncation: str
    max_length: int | None
    pad_to_multiple_of: int | None
    add_special_tokens: bool


def _padding_strategy(padding: Any) -> str:
    if padding is True:
        return "longest"
    if padding is False or padding is None:
        return "do_not_pad"
    if isinstance(padding, str) and padding in PADDING_STRATEGIES:
        return str(padding)
    raise ValueError(
        f"padding={padding!r} is not a padding strategy: "
        "use True/'longest', 'max_length' or False/'do_not_pad'"
    )


def _truncation_strategy(truncation: Any, max_length: int | None, padding: str) -> str:
    if truncation is None:
        # HF's rule: an explicit max_length without padding means "truncate to it".
        return "longest_first" if max_length is not None and padding == "do_not_pad" else "do_not_truncate"
    if truncation is True:
        return "longest_first"
    if truncation is False:
        return "do_not_truncate"
    if isinstance(truncation, str) and truncation in TRUNCATION_STRATEGIES:
        return str(truncation)
    raise ValueError(
        f"truncation={truncation!r} is not a truncation strategy: use True/'longest_first', "
        "'only_first', 'only_second' or False/'do_not_truncate'"
    )


def _positive_int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _check_tensor_type(return_tensors: Any) -> str | None:
    if return_tensors is None or (isinstance(return_tensors, str) and return_tensors in TENSOR_TYPES):
        return return_tensors
    raise ValueError(f"return_tensors={return_tensors!r} is not supported: use None, 'np', 'pt' or 'tf'")


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
        if isinstance(item, tuple):
            yield from item
        else:
            yield item


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
class BatchEncoding(dict):
    """The encoded fields (``input_ids``, ``token_type_ids``, ...) with attribute access.

    A dict so that ``model(**enc)`` works; the fast tokenizer also keeps the backend encodings so
    that ``tokens``, ``word_ids`` and ``sequence_ids`` map tokens back to words and sequences.
    """

    def __init__(self, data: dict[str, Any] | None = None, encodings: list[Encoding] | None = None) -> None:
        super().__init__(data or {})
        self._encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self) -> dict[str, Any]:
        return {"encodings": self._encodings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._encodings = state["encodings"]

    @property
    def encodings(self) -> list[Encoding] | None:
        return self._encodings

    def _encoding(self, batch_index: int) -> Encoding:
        if self._encodings is None:
            raise ValueError(
                "tokens(), word_ids() and sequence_ids() need the alignment only ConvBertTokenizerFast keeps"
            )
        if not -len(self._encodings) <= batch_index < len(self._encodings):
            size = len(self._encodings)
            raise IndexError(f"batch_index {batch_index} is out of range for a batch of {size}")
        return self._encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).sequence_ids

    def to(self, device: Any) -> BatchEncoding:
        """Move PyTorch tensors to ``device`` in place (other values are left as they are)."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


@dataclass(frozen=True)
class _Wanted:
    token_type_ids: bool
    attention_mask: bool
    special_tokens_mask: bool
    offset_mapping: bool


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


def _to_arrays(fields: dict[str, list]) -> dict[str, np.ndarray]:
    rows = fields["input_ids"]
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"cannot stack sequences of lengths {min(lengths)}..{max(lengths)} into one tensor: "
            "pass padding=True (or padding='max_length') to make them equal"
        )
    width = lengths.pop() if lengths else 0
    arrays = {}
    for name, values in fields.items():
        if name == "offset_mapping":
            arrays[name] = np.array(values, dtype=np.int64).reshape(len(rows), width, 2)
        else:
            # fromiter over the flattened rows skips np.array's shape discovery (~20% faster).
            flat = np.fromiter(itertools.chain.from_iterable(values), dtype=np.int64, count=len(rows) * width)
            arrays[name] = flat.reshape(len(rows), width)
    return arrays


def _convert_tensors(arrays: dict[str, np.ndarray], tensor_type: str) -> dict[str, Any]:
    """np stays int64; torch gets int64 (``torch.long``); TF gets int32, as HF's TF path does."""
    if tensor_type == "np":
        return arrays
    if tensor_type == "pt":
        try:
            import torch
        except ImportError as err:
            raise ImportError("return_tensors='pt' needs PyTorch: pip install 'convbert[torch]'") from err
        return {name: torch.from_numpy(value) for name, value in arrays.items()}
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError("return_tensors='tf' needs TensorFlow: pip install 'convbert[tf]'") from err
    return {name: tf.convert_to_tensor(value.astype(np.int32)) for name, value in arrays.items()}


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


def _build_pipeline(
    vocab: dict[str, int], tokens: dict[str, str | None], options: _Options, *, emulate_slow: bool
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
    cls, sep = tokens["cls_token"], tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=[f"{cls}:0", "$A:0", f"{sep}:0"],
        pair=[f"{cls}:0", "$A:0", f"{sep}:0", "$B:1", f"{sep}:1"],
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX, cleanup=True)
    specials = sorted({t for t in tokens.values() if t is not None}, key=vocab.__getitem__)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if emulate_slow and options.do_basic_tokenize and options.never_split:
        # The reference keeps these words whole; only those in the vocab can map to one id.
        kept = [t for t in options.never_split if t in vocab and t not in specials]
        backend.add_tokens([AddedToken(t, single_word=True, normalized=False) for t in kept])
    return backend


# ---------------------------------------------------------------------------- the tokenizers
class _WordPieceTokenizer:
    """What the slow and fast classes share: vocab, options, the call API, decoding and files."""

    is_fast = False
    _emulate_slow = True

    def __init__(
        self,
        vocab_file: str | os.PathLike,
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
    ) -> None:
        if vocab_file is None:
            raise ValueError("vocab_file is required (a WordPiece vocab.txt, one token per line)")
        self.vocab_file = os.fspath(vocab_file)
        self._vocab_lines = load_vocab(self.vocab_file)
        self._vocab = {token: index for index, token in enumerate(self._vocab_lines)}
        tokens = _special_tokens_from(
            dict(
                unk_token=unk_token,
                sep_token=sep_token,
                pad_token=pad_token,
                cls_token=cls_token,
                mask_token=mask_token,
            )
        )
        _check_special_tokens(self._vocab, tokens, self.vocab_file)
        self._special_tokens = tokens
        self.unk_token, self.sep_token = tokens["unk_token"], tokens["sep_token"]
        self.pad_token, self.cls_token = tokens["pad_token"], tokens["cls_token"]
        self.mask_token = tokens["mask_token"]
        self._options = _Options.checked(
            do_lower_case, do_basic_tokenize, never_split, tokenize_chinese_chars, strip_accents
        )
        limit = _positive_int_or_none("model_max_length", model_max_length)
        if limit is None:
            raise ValueError("model_max_length must be a positive integer, got None")
        self.model_max_length = limit
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._backend = _build_pipeline(self._vocab, tokens, self._options, emulate_slow=self._emulate_slow)
        self._lock = threading.Lock()
        self._special_ids = frozenset(self.all_special_ids)
        self._plain_decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX, cleanup=False)

    # ------------------------------------------------------------------ options and ids
    do_lower_case = property(lambda self: self._options.do_lower_case)
    do_basic_tokenize = property(lambda self: self._options.do_basic_tokenize)
    tokenize_chinese_chars = property(lambda self: self._options.tokenize_chinese_chars)
    strip_accents = property(lambda self: self._options.strip_accents)

    @property
    def never_split(self) -> list[str] | None:
        return None if self._options.never_split is None else list(self._options.never_split)

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` doing the work (HF exposes it under the same name)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self._vocab[token]

    unk_token_id = property(lambda self: self._id_of(self.unk_token))
    sep_token_id = property(lambda self: self._id_of(self.sep_token))
    pad_token_id = property(lambda self: self._id_of(self.pad_token))
    cls_token_id = property(lambda self: self._id_of(self.cls_token))
    mask_token_id = property(lambda self: self._id_of(self.mask_token))

    @property
    def all_special_tokens(self) -> list[str]:
        return [t for t in (self._special_tokens[role] for role in SPECIAL_ROLES) if t is not None]

    @property
    def all_special_ids(self) -> list[int]:
        return [self._vocab[t] for t in self.all_special_tokens]

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {role: t for role, t in self._special_tokens.items() if t is not None}

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3 if pair else 2

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_file={self.vocab_file!r}, vocab_size={self.vocab_size}, "
            f"do_lower_case={self.do_lower_case}, model_max_length={self.model_max_length})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ encoding
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[tuple[str, str]],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch of either, the way HF's ``tokenizer(...)`` does.

        ``truncation=None`` (the default) truncates only when ``max_length`` is given without
        padding, as HF does; ``max_length=None`` with truncation or ``padding='max_length'`` means
        ``model_max_length``. ``return_tensors`` adds a batch axis to a single input.
        """
        tensor_type = _check_tensor_type(return_tensors)
        items, batched = _collect_inputs(text, text_pair)
        request = self._resolve_request(
            padding, truncation, max_length, pad_to_multiple_of, add_special_tokens, _has_pair(items)
        )
        wanted = _Wanted(
            token_type_ids=return_token_type_ids is not False,
            attention_mask=return_attention_mask is not False,
            special_tokens_mask=bool(return_special_tokens_mask),
            offset_mapping=bool(return_offsets_mapping),
        )
        encodings = self._encode(items, request)
        fields = _fields(encodings, wanted)
        if tensor_type is not None:
            fields = _convert_tensors(_to_arrays(fields), tensor_type)
        elif not batched:
            fields = {name: values[0] for name, values in fields.items()}
        return BatchEncoding(fields, encodings if self.is_fast else None)

    def _resolve_request(
        self,
        padding: Any,
        truncation: Any,
        max_length: Any,
        pad_to_multiple_of: Any,
        add_special_tokens: bool,
        has_pair: bool,
    ) -> _Request:
        pad = _padding_strategy(padding)
        max_length = _positive_int_or_none("max_length", max_length)
        multiple = _positive_int_or_none("pad_to_multiple_of", pad_to_multiple_of)
        trunc = _truncation_strategy(truncation, max_length, pad)
        if max_length is None and (trunc != "do_not_truncate" or pad == "max_length"):
            max_length = self.model_max_length
        if max_length is not None and max_length >= _UNLIMITED:
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
        return _Request(pad, trunc, max_length, multiple, bool(add_special_tokens))

    def _encode(self, items: list, request: _Request) -> list[Encoding]:
        raise NotImplementedError

    def _encode_unchanged(self, inputs: list, add_special_tokens: bool, request: _Request) -> list[Encoding]:
        try:
            return self._backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as err:
            raise _encoding_error(err, inputs, request) from err

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        padding: bool | str = False,
    ) -> list[int]:
        """Token ids of one text (or pair), as HF's ``encode``."""
        if not isinstance(text, str):
            raise ValueError(f"encode takes one str (use __call__ for batches), got {type(text).__name__}")
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            padding=padding,
            return_token_type_ids=False,
            return_attention_mask=False,
        )["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """WordPiece tokens of a text; special tokens written in the text stay whole."""
        ids = self.encode(text, pair, add_special_tokens=add_special_tokens, truncation=False)
        return [self._vocab_lines[i] for i in ids]

    # ------------------------------------------------------------------ ids <-> tokens
    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Unknown tokens map to the ``[UNK]`` id, as in the reference."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self._vocab.get(tokens, unk)
        return [self._vocab.get(token, unk) for token in tokens]

    def _token_of(self, index: int) -> str:
        if not 0 <= index < len(self._vocab_lines):
            last = len(self._vocab_lines) - 1
            raise ValueError(f"token id {index} is outside the vocabulary (ids 0..{last})")
        return self._vocab_lines[index]

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
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        text = self._join_tokens(tokens)
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def _join_tokens(self, tokens: list[str]) -> str:
        """The slow reference joins tokens with spaces and glues ``##`` pieces, nothing more."""
        return self._plain_decoder.decode(tokens)

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        rows = sequences.tolist() if hasattr(sequences, "tolist") else np.asarray(sequences).tolist()
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
        added = {
            str(self._vocab[token]): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token in sorted(set(self.all_special_tokens), key=self._vocab.__getitem__)
        }
        config: dict[str, Any] = {
            "added_tokens_decoder": added,
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
        config.update(self.special_tokens_map)
        return config

    def _tokenizer_json(self) -> str:
        """HF fast's tokenizer.json for these options, built fresh so no call's padding leaks in."""
        fast = _build_pipeline(self._vocab, self._special_tokens, self._options, emulate_slow=False)
        return fast.to_str(pretty=True)

    def save_vocabulary(
        self, save_directory: str | os.PathLike, filename_prefix: str | None = None
    ) -> tuple[str]:
        directory = _writable_directory(save_directory)
        path = os.path.join(directory, (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILE)
        atomic_write_text(path, "".join(token + "\n" for token in self._vocab_lines))
        return (path,)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the four files HF writes; each appears whole or not at all."""
        directory = _writable_directory(save_directory)
        config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
        map_path = os.path.join(directory, SPECIAL_TOKENS_MAP_FILE)
        json_path = os.path.join(directory, TOKENIZER_FILE)
        atomic_write_text(config_path, _dump_json(self._config()))
        atomic_write_text(map_path, _dump_json(self.special_tokens_map))
        (vocab_path,) = self.save_vocabulary(directory)
        atomic_write_text(json_path, self._tokenizer_json())
        return (config_path, map_path, vocab_path, json_path)

    @classmethod
    def from_pretrained(cls, pretrained_path: str | os.PathLike, **overrides: Any):
        """Load a folder written by ``save_pretrained`` here or by HF ``transformers``.

        The pipeline is rebuilt from vocab.txt and the saved options (keyword arguments override
        them). Tokens that HF added beyond the vocabulary are not supported and raise.
        """
        directory = os.fspath(pretrained_path)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        kwargs = _saved_options(directory)
        kwargs.update(overrides)
        kwargs.setdefault("vocab_file", os.path.join(directory, VOCAB_FILE))
        tokenizer = cls(**kwargs)
        _check_added_tokens(directory, tokenizer._vocab)
        return tokenizer


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
                "stride": 0,
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
                "pad_type_id": 0,
                "direction": "right",
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

    def _join_tokens(self, tokens: list[str]) -> str:
        # HF fast decodes through tokenizer.json's decoder, which always removes the space
        # before . , ! ? (even with clean_up_tokenization_spaces=False); so do we.
        return self._backend.decoder.decode(tokens)

    def _encode(self, items: list, request: _Request) -> list[Encoding]:
        truncation, padding = self._backend_settings(request)
        with self._lock:
            self._configure_backend(truncation, padding)
            return self._encode_unchanged(items, request.add_special_tokens, request)


class ConvBertTokenizer(_WordPieceTokenizer):
    """HF's pure-Python ``ConvBertTokenizer``, reproduced on the Rust pipeline.

    Each sequence is encoded without special tokens, truncated by the reference's rules (see
    ``slow_truncation_lengths``), then joined by the ``[CLS] A [SEP] B [SEP]`` template and padded.
    """

    def _encode(self, items: list, request: _Request) -> list[Encoding]:
        firsts = [item[0] if type(item) is tuple else item for item in items]
        seconds = [item[1] for item in items if type(item) is tuple]
        first_encodings = self._encode_unchanged(firsts, False, request)
        second_encodings = iter(self._encode_unchanged(seconds, False, request))
        encodings = []
        for item, first in zip(items, first_encodings, strict=True):
            second = next(second_encodings) if type(item) is tuple else None
            encodings.append(self._join(first, second, request))
        _pad_encodings(encodings, request, self.pad_token_id, self.pad_token)
        return encodings

    def _join(self, first: Encoding, second: Encoding | None, request: _Request) -> Encoding:
        if request.truncation != "do_not_truncate":
            budget = request.max_length - (
                self.num_special_tokens_to_add(pair=second is not None) if request.add_special_tokens else 0
            )
            keep_first, keep_second = slow_truncation_lengths(
                len(first), None if second is None else len(second), budget, request.truncation
            )
            if keep_first < len(first):
                first.truncate(keep_first)
            if second is not None and keep_second < len(second):
                second.truncate(keep_second)
        if request.add_special_tokens:
            return self._backend.post_process(first, second, add_special_tokens=True)
        if second is None:
            return first
        # The reference gives the second sequence type id 0 when no special tokens are added.
        return Encoding.merge([first, second], growing_offsets=False)


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
        encoding.pad(target, direction="right", pad_id=pad_id, pad_type_id=0, pad_token=pad_token)


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


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _saved_options(directory: str) -> dict[str, Any]:
    """Constructor arguments from tokenizer_config.json and special_tokens_map.json, if present."""
    kwargs: dict[str, Any] = {}
    config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
    if os.path.isfile(config_path):
        config = _read_json(config_path)
        if not isinstance(config, dict):
            raise ValueError(f"{config_path} must hold a JSON object")
        kwargs.update({key: config[key] for key in _OPTION_KEYS + SPECIAL_ROLES if key in config})
    map_path = os.path.join(directory, SPECIAL_TOKENS_MAP_FILE)
    if os.path.isfile(map_path):
        special = _read_json(map_path)
        if not isinstance(special, dict):
            raise ValueError(f"{map_path} must hold a JSON object")
        kwargs.update({key: special[key] for key in SPECIAL_ROLES if key in special})
    return kwargs


def _saved_added_tokens(directory: str) -> list[tuple[str, int, str]]:
    """(content, id, file) for every token HF recorded as added to the tokenizer."""
    found = []
    config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
    if os.path.isfile(config_path):
        for index, entry in (_read_json(config_path).get("added_tokens_decoder") or {}).items():
            found.append((entry.get("content"), int(index), config_path))
    json_path = os.path.join(directory, TOKENIZER_FILE)
    if os.path.isfile(json_path):
        saved = _read_json(json_path)
        if not isinstance(saved, dict):
            raise ValueError(f"{json_path} must hold a JSON object")
        for entry in saved.get("added_tokens") or []:
            found.append((entry.get("content"), int(entry.get("id", -1)), json_path))
    return found


def _check_added_tokens(directory: str, vocab: dict[str, int]) -> None:
    """Added tokens outside vocab.txt would change tokenization; refuse rather than ignore them."""
    for content, index, path in _saved_added_tokens(directory):
        if vocab.get(content) != index:
            raise ValueError(
                f"{path} adds token {content!r} with id {index}, which is not that entry of the "
                "vocabulary: tokens added beyond vocab.txt are not supported"
            )
