"""ConvBERT's WordPiece tokenizer as TensorFlow graph ops (tensorflow-text), for string-in SavedModels.

The graph follows the checkpoint's own Rust pipeline (``ConvBertTokenizerFast.backend_tokenizer``)
step by step, so that its ids equal the fast tokenizer's:

1. special tokens are split out of the raw text first and map to their ids (Hugging Face's added
   tokens with ``normalized=False``: matched verbatim, leftmost-longest);
2. normalisation (``BertNormalizer``) works one character at a time: it removes control characters,
   pads CJK ideographs with spaces, and maps whitespace, upper case and accented letters. The graph
   holds three tables read off the backend normaliser itself, one code point at a time, when the
   tokenizer is built (a few seconds): the characters it removes and those it pads (two regular
   expressions of code-point ranges) and every other character it changes (a hash table). So the
   graph applies the Unicode data of the installed ``tokenizers``, not RE2's or ICU's, which are
   newer (over a hundred characters that Unicode now calls punctuation are not punctuation to the
   Rust pre-tokenizer, for one);
3. the basic split (``BertPreTokenizer``): on whitespace, and around punctuation kept as tokens,
   again with character classes read off the backend;
4. WordPiece: tensorflow-text's ``FastWordpieceTokenizer`` on the vocabulary (greedy longest match,
   ``##`` continuations, a word that cannot be covered becomes ``[UNK]``); a word longer than
   ``max_input_chars_per_word`` characters becomes ``[UNK]`` (tensorflow-text counts bytes, so
   characters are counted here);
5. ``longest_first`` truncation as the fast tokenizer does it (the budget split, the shorter
   sequence keeping at most half, ties to the first), ``[CLS] A [SEP] (B [SEP])``, token types, and
   padding to the longest row.

What per-character tables cannot express: NFD sorts combining marks by combining class. Where the
normaliser strips accents it removes the marks its (older) Unicode tables call nonspacing, but keeps
some that sort (musical symbols U+1D165-U+1D172, Adlam marks U+1E944-U+1E94A): a run of those out of
canonical order keeps its order here. ``tests/tf/test_graph_tokenizer.py`` pins it.

Imports tensorflow and tensorflow_text when a tokenizer is built, never at module import.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

EXTRA = "export"  # the pip extra that brings tensorflow-text
# Code points that are not characters (UTF-16 surrogates): no Python str holds them alone in UTF-8.
_SURROGATES = range(0xD800, 0xE000)


def import_tensorflow_text():
    """tensorflow_text, or an ImportError that names the extra to install."""
    try:
        import tensorflow_text
    except ImportError as exc:
        raise ImportError(
            f"--with-tokenizer needs tensorflow-text (pip install 'convbert[{EXTRA}]'; its version must match "
            f"TensorFlow's minor version): {exc}"
        ) from exc
    return tensorflow_text


# ------------------------------------------------------------------------------ character tables
@dataclass(frozen=True)
class CharacterTables:
    """What the backend's normaliser and pre-tokenizer do to each code point, as ranges and a map."""

    removed: tuple[tuple[int, int], ...]  # normalised to "" (control, format, private use, ...)
    padded: tuple[tuple[int, int], ...]  # normalised to " c " (CJK ideographs)
    mapped: dict[str, str]  # every other character the normaliser changes, to what it becomes
    split: tuple[tuple[int, int], ...]  # the pre-tokenizer splits on them and drops them (whitespace)
    isolated: tuple[tuple[int, int], ...]  # the pre-tokenizer makes each a token of its own (punctuation)


def _ranges(code_points) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for c in sorted(code_points):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return tuple((a, b) for a, b in out)


def _all_characters() -> list[str]:
    return [chr(c) for c in range(0x110000) if c not in _SURROGATES]


def character_tables(backend) -> CharacterTables:
    """What a ``tokenizers.Tokenizer``'s normaliser and pre-tokenizer do to every code point.

    Both work one character at a time, so a run of characters that comes back unchanged (or, from
    the normaliser, empty) holds no character that changes (or survives): the runs are bisected
    down to the characters that do something: tens of thousands of calls instead of two million.
    """
    normalizer, pre_tokenizer = backend.normalizer, backend.pre_tokenizer
    chars = _all_characters()
    removed, padded, mapped = [], [], {}

    def normalize(lo: int, hi: int) -> None:
        run = "".join(chars[lo:hi])
        out = normalizer.normalize_str(run)
        if out == run:
            return
        if out == "":
            removed.extend(ord(c) for c in chars[lo:hi])
        elif hi - lo == 1:
            c = chars[lo]
            if out == f" {c} ":
                padded.append(ord(c))
            else:
                mapped[c] = out
        else:
            mid = (lo + hi) // 2
            normalize(lo, mid)
            normalize(mid, hi)

    split, isolated = [], []

    def pre_tokenize(lo: int, hi: int) -> None:
        # "a c1 a c2 ... a": a character the pre-tokenizer drops leaves its position uncovered, one it
        # isolates comes back as a piece of its own; a run of neither comes back as one piece.
        run = "a" + "a".join(chars[lo:hi]) + "a"
        pieces = pre_tokenizer.pre_tokenize_str(run)
        if len(pieces) == 1 and pieces[0][1] == (0, len(run)):
            return
        if hi - lo == 1:
            (split if len(pieces) == 2 else isolated).append(ord(chars[lo]))
            return
        mid = (lo + hi) // 2
        pre_tokenize(lo, mid)
        pre_tokenize(mid, hi)

    # Blocks of 64 code points: large enough that most come back unchanged in one call, small enough
    # that the few that do not are bisected in a handful.
    for lo in range(0, len(chars), 64):
        hi = min(lo + 64, len(chars))
        if normalizer is not None:
            normalize(lo, hi)
        if pre_tokenizer is not None:
            pre_tokenize(lo, hi)
    return CharacterTables(_ranges(removed), _ranges(padded), mapped, _ranges(split), _ranges(isolated))


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """An RE2 character class of code-point ranges ("" when empty)."""
    if not ranges:
        return ""
    parts = [f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


def _escape(literal: str) -> str:
    return "".join(f"\\x{{{ord(c):X}}}" for c in literal)


# ------------------------------------------------------------------------------ the tokenizer
def _pipeline_facts(tokenizer) -> dict:
    """What the graph needs from a ``ConvBertTokenizerFast``; ValueError for what it cannot follow."""
    backend = tokenizer.backend_tokenizer
    model = backend.model
    if type(model).__name__ != "WordPiece":
        raise ValueError(f"the in-graph tokenizer follows WordPiece models, got {type(model).__name__}")
    specials = {}
    for index, added in sorted(backend.get_added_tokens_decoder().items()):
        unsupported = [flag for flag in ("normalized", "single_word", "lstrip", "rstrip") if getattr(added, flag)]
        if unsupported:
            raise ValueError(f"the in-graph tokenizer matches added tokens verbatim; {added.content!r} (id {index}) "
                             f"sets {', '.join(unsupported)}")
        specials[added.content] = index
    vocab = tokenizer.get_vocab()
    lines = [""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        lines[index] = token
    for index, token in enumerate(lines):
        if token == "":
            # An id no token maps to (a duplicate line in vocab.txt): a string no normalised word can be.
            lines[index] = f"\x00unreachable{index}"
    return dict(
        tables=character_tables(backend),
        specials=specials,
        vocab=lines,
        unk_token=model.unk_token,
        prefix=model.continuing_subword_prefix,
        max_chars=int(model.max_input_chars_per_word),
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        pad_id=tokenizer.pad_token_id,
    )


def _truncated_lengths(n1, n2, budget):
    """Fast ``longest_first`` for a pair: the shorter keeps at most half, the longer the rest (ties: first)."""
    import tensorflow as tf

    fits = n1 + n2 <= budget
    first_shorter = n1 <= n2
    short = tf.minimum(tf.minimum(n1, n2), budget // 2)
    long_ = budget - short
    k1 = tf.where(fits, n1, tf.where(first_shorter, short, long_))
    k2 = tf.where(fits, n2, tf.where(first_shorter, long_, short))
    return k1, k2


def build(tokenizer, max_length: int):
    """The graph tokenizer of a ``ConvBertTokenizerFast``: a ``tf.Module`` called as
    ``module(text)`` or ``module(text, text_pair)`` (strings (B,)), returning int32 ids, attention mask
    and token types (B, L). ``max_length`` bounds every row, special tokens included (the model's
    ``max_position_embeddings``); a call may pass its own.
    """
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS] A [SEP] B [SEP], got {max_length}")
    facts = _pipeline_facts(tokenizer)
    import_tensorflow_text()
    return _module_class()(facts, int(max_length))


@functools.cache
def _module_class():
    import tensorflow as tf
    import tensorflow_text as tft

    class GraphTokenizer(tf.Module):
        """ConvBertTokenizerFast in graph ops: strings (B,) -> int32 ids, mask and types (B, L)."""

        def __init__(self, facts: dict, max_length: int):
            super().__init__(name="convbert_tokenizer")
            t: CharacterTables = facts["tables"]
            self.max_length = max_length
            self._cls, self._sep, self._pad = facts["cls_id"], facts["sep_id"], facts["pad_id"]
            self._unk = facts["vocab"].index(facts["unk_token"])
            self._max_chars = facts["max_chars"]
            specials = sorted(facts["specials"], key=len, reverse=True)  # longest first: leftmost-longest
            self._special_pattern = "|".join(_escape(s) for s in specials)
            self._special_ids = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(specials, tf.string),
                                                    tf.constant([facts["specials"][s] for s in specials], tf.int64)),
                default_value=-1,
            )
            self._removed = _char_class(t.removed)
            # tensorflow-text's regex_split ends a string at NUL. Where the normaliser removes NUL, it
            # becomes another character the normaliser removes before any split, which changes nothing.
            self._nul_stand_in = next((chr(c) for a, b in t.removed for c in range(max(a, 1), b + 1)), None)
            if not t.removed or t.removed[0][0] != 0:
                self._nul_stand_in = None
            self._padded = _char_class(t.padded)
            keys = sorted(t.mapped)
            # "\x00" is never a mapped value (the normaliser removes NUL): it stands for "unchanged".
            self._mapped = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                                    tf.constant([t.mapped[k] for k in keys], tf.string)),
                default_value="\x00",
            ) if keys else None
            split, isolated = _char_class(t.split), _char_class(t.isolated)
            self._delimiters = "|".join(p for p in (split, isolated) if p)
            self._kept = isolated
            self._wordpiece = tft.FastWordpieceTokenizer(
                vocab=facts["vocab"], suffix_indicator=facts["prefix"],
                # Bytes, not characters: room for the longest word allowed; characters are counted below.
                max_bytes_per_word=4 * self._max_chars + 4, token_out_type=tf.int64,
                unknown_token=facts["unk_token"], no_pretokenization=True,
            )

        # ---------------------------------------------------------------- pieces
        def normalize(self, text):
            """(N,) strings -> (N,) strings, as the backend's normaliser."""
            if self._removed:
                text = tf.strings.regex_replace(text, self._removed, "")
            if self._padded:
                text = tf.strings.regex_replace(text, f"({self._padded})", r" \1 ")
            if self._mapped is not None:
                chars = tf.strings.unicode_split(text, "UTF-8")  # (N, (chars))
                looked_up = self._mapped.lookup(chars.flat_values)
                flat = tf.where(looked_up == "\x00", chars.flat_values, looked_up)
                text = tf.strings.reduce_join(chars.with_flat_values(flat), axis=-1)
            return text

        def words(self, text):
            """(N,) normalised strings -> (N, (words)), as the backend's pre-tokenizer."""
            if not self._delimiters:
                return tf.RaggedTensor.from_tensor(text[:, None])
            return tft.regex_split(text, self._delimiters, self._kept)

        def _ids_of_pieces(self, pieces):
            """(P,) text pieces that hold no special token -> ids (N,) and row splits (P + 1,)."""
            words = self.words(self.normalize(pieces))  # (P, (W))
            flat_words = words.flat_values  # (W_total,)
            ids = self._wordpiece.tokenize(flat_words)  # (W_total, (pieces))
            too_long = tf.strings.length(flat_words, unit="UTF8_CHAR") > self._max_chars  # (W_total,)
            values, word_splits = _replace_rows(ids.flat_values, ids.row_splits, too_long, self._unk)
            return values, tf.gather(word_splits, words.row_splits)  # a piece ends where its last word does

        def encode(self, text):
            """(B,) strings -> ids (N,) and row splits (B + 1,), without special tokens around them."""
            text = tf.reshape(text, [-1])
            if self._nul_stand_in is not None:
                text = tf.strings.regex_replace(text, "\\x{0}", self._nul_stand_in)
            if not self._special_pattern:
                return self._ids_of_pieces(text)
            pieces = tft.regex_split(text, self._special_pattern, self._special_pattern)  # (B, (P))
            flat = pieces.flat_values  # (P_total,)
            special = self._special_ids.lookup(flat)  # (P_total,), -1 for text
            is_special = tf.strings.regex_full_match(flat, self._special_pattern) & (special >= 0)
            values, piece_splits = self._ids_of_pieces(flat)
            values, piece_splits = _replace_rows(values, piece_splits, is_special, special)
            return values, tf.gather(piece_splits, pieces.row_splits)

        # ---------------------------------------------------------------- the signatures' function
        def __call__(self, text, text_pair=None, max_length: int | None = None):
            """text (B,) [, text_pair (B,)] -> input_ids, attention_mask, token_type_ids int32 (B, L).

            Rows are truncated to ``max_length`` tokens, special tokens included (default: the
            module's ``max_length``), and padded to the longest row.
            """
            max_length = self.max_length if max_length is None else int(max_length)
            if max_length < 3:
                raise ValueError(f"max_length must leave room for [CLS] A [SEP] B [SEP], got {max_length}")
            pair = text_pair is not None
            text = tf.reshape(text, [-1])
            batch = tf.size(text, out_type=tf.int64)
            # Both sequences of a pair in one pass: rows 0..B-1 are the texts, B..2B-1 the pairs.
            values, splits = self.encode(tf.concat([text, tf.reshape(text_pair, [-1])], 0) if pair else text)
            starts, lengths = splits[:-1], splits[1:] - splits[:-1]  # (B or 2B,)
            n1, s1 = lengths[:batch], starts[:batch]
            if pair:
                n2, s2 = lengths[batch:], starts[batch:]
                k1, k2 = _truncated_lengths(n1, n2, max_length - 3)
            else:
                s2 = k2 = tf.zeros_like(n1)
                k1 = tf.minimum(n1, max_length - 2)
            total = k1 + k2 + (3 if pair else 2)  # (B,)
            # Row layout [CLS] a[:k1] [SEP] (b[:k2] [SEP]) [PAD]..., built as one (B, W) gather.
            j = tf.range(tf.reduce_max(tf.concat([total, [0]], 0)))[None, :]  # (1, W)
            k1, k2, s1, s2 = k1[:, None], k2[:, None], s1[:, None], s2[:, None]  # (B, 1)
            in_a = (j >= 1) & (j <= k1)
            in_b = (j >= k1 + 2) & (j < k1 + 2 + k2) if pair else tf.zeros_like(in_a)
            sep = (j == k1 + 1) | ((j == k1 + 2 + k2) if pair else tf.zeros_like(in_a))
            source = tf.where(in_a, s1 + j - 1, s2 + j - k1 - 2)  # (B, W) index into values where in a or b
            padded = tf.concat([values, tf.constant([self._pad], tf.int64)], 0)  # never empty
            last = tf.size(padded, out_type=tf.int64) - 1
            token = tf.gather(padded, tf.where(in_a | in_b, source, last))
            ids = tf.where(j == 0, tf.constant(self._cls, tf.int64), tf.where(sep, tf.constant(self._sep, tf.int64),
                                                                               token))
            real = j < total[:, None]
            ids = tf.where(real, ids, tf.constant(self._pad, tf.int64))
            return {
                "input_ids": tf.cast(ids, tf.int32),
                "attention_mask": tf.cast(real, tf.int32),
                "token_type_ids": tf.cast((in_b | (sep & (j > k1 + 1))) & real, tf.int32),
            }

    def _replace_rows(values, splits, where, value):
        """Rows r of the ragged (values, splits) where ``where[r]`` holds become the single item ``value``
        (scalar or per row). Returns the new values and splits."""
        value = tf.broadcast_to(tf.cast(value, values.dtype), tf.shape(where))  # (R,)
        lengths = splits[1:] - splits[:-1]
        new_lengths = tf.where(where, tf.ones_like(lengths), lengths)
        new_splits = tf.concat([tf.zeros([1], splits.dtype), tf.cumsum(new_lengths)], 0)
        rows = tf.repeat(tf.range(tf.size(lengths, out_type=splits.dtype)), new_lengths)  # (N',) row of each item
        offset = tf.range(new_splits[-1]) - tf.gather(new_splits, rows)
        padded = tf.concat([values, tf.zeros([1], values.dtype)], 0)  # a valid index for replaced empty rows
        old = tf.gather(padded, tf.minimum(tf.gather(splits, rows) + offset, tf.size(values, out_type=splits.dtype)))
        return tf.where(tf.gather(where, rows), tf.gather(value, rows), old), new_splits

    return GraphTokenizer
