"""Pretraining data for replaced-token detection: corpus -> packed, memory-mapped shards; the masker.

NumPy only: both frameworks read the same shards and call the same ``mask_tokens``, so one seed
gives the same examples, batches and masks in PyTorch and in Keras.

Building (``build_dataset``)
----------------------------
1. Read. A corpus is ``.txt``, ``.txt.gz``, ``.jsonl`` or ``.jsonl.gz`` files, or folders searched
   recursively for them (sorted by path; folders whose name starts with ``.`` are skipped). Text
   files hold documents separated by blank lines, or one document per line with
   ``one_doc_per_line=True``. A JSONL line is one object; its ``text_field`` string is one
   document (``one_doc_per_line`` applies to text files only). Files must be UTF-8: a line that
   is not raises (naming the file, line and byte offset) or, with ``skip_bad_lines=True``, is
   skipped and counted, as are malformed JSONL lines. A skipped line is removed, not read as a
   document boundary.
2. Sentences. As in ELECTRA's data builder, every non-blank line of a document is one sentence
   (stripped of surrounding whitespace). A document made of a single line (every document of a
   one-document-per-line file, a JSONL text without line breaks, a one-line paragraph) is instead
   split after ``.``, ``!`` or ``?`` (with any closing quotes or brackets) followed by whitespace;
   ELECTRA would keep such a line whole and cut it at ``max_seq_length``. The cuts fall on
   whitespace, so they never change the tokens, only where segment A may end.
3. Tokenize with ``ConvBertTokenizerFast``'s pipeline, sentences in batches, without special
   tokens and without truncation. Special-token strings in the text ("[SEP]", "[MASK]") are read
   as ordinary text, as ELECTRA's tokenizer did, so no special id lands inside a segment. A
   sentence that tokenizes to nothing is skipped.
4. Pack, ELECTRA's ``ExampleBuilder`` rule, never across a document boundary: sentences of one
   document accumulate until their tokens reach the target length (``max_seq_length``), or the
   document ends. The accumulated sentences become one example: with probability
   ``single_segment_prob`` (0.1) all go to segment A; otherwise A takes sentences while it is empty
   or while it stays under ``(target - 3) // 2`` tokens, plus (with probability 0.5) the sentence
   that first crosses that length, and B takes the rest. The example is
   ``[CLS] A [SEP] B [SEP]`` with token types 0 then 1, or ``[CLS] A [SEP]`` when B is empty.
   After each example, with probability ``short_seq_prob`` (0.05, as in the authors' code) the
   next target is drawn uniformly from ``[5, max_seq_length]``, else it is ``max_seq_length``.
   One deliberate difference: once a sentence has gone to B, every later one does too (the
   authors' condition could send a short later sentence back to A, out of order).

   When tokens are dropped: only the tail of an example's text, in its last sentence (or last
   two). An example closes as soon as its sentences reach the target, so the last one may
   overshoot: A is cut to
   ``max_seq_length - 2`` tokens and B to ``max_seq_length - len(A) - 3`` (which can be 0: B is
   then dropped whole). The cut tokens are not carried into the next example (as in ELECTRA).
   Nothing else is lost; a document that ends early gives a shorter, padded example. The manifest
   counts ``corpus_tokens = example_tokens + dropped_tokens``.
5. Write shards into a temporary directory beside ``output_dir`` and rename it into place.

Shard layout (format version 1)
-------------------------------
``manifest.json`` plus, per shard ``NNNNN``, three ``.npy`` files read memory-mapped:
``shard-NNNNN.ids.npy`` (int32, every example's ids back to back, ``[CLS]``/``[SEP]`` included,
no padding), ``shard-NNNNN.offsets.npy`` (int64, ``examples + 1`` entries: example ``i`` is
``ids[offsets[i]:offsets[i + 1]]``) and ``shard-NNNNN.type_starts.npy`` (int32, the position in
the example where token type 1 begins; the example's length when it has no B). Padding, the
attention mask and token types are rebuilt on read.

Masking (``mask_tokens``)
-------------------------
ELECTRA's count rule: a sequence with ``n`` maskable tokens (not special, not padding, not
already ``[MASK]``) gets exactly ``max(1, round(mask_prob * n))`` masked positions (round half to
even, as ``tf.round``), drawn uniformly without replacement. ELECTRA counts ``[CLS]``/``[SEP]``
in ``n``, samples with replacement (duplicates collapse) and caps the count at
``max_predictions_per_seq``; here the rate is exactly ``mask_prob`` of the real tokens. Each
masked position independently becomes ``[MASK]`` (``mask_token_prob``), a uniformly drawn
non-special id (``random_token_prob``; it may equal the original, as in BERT) or stays unchanged.
"""

from __future__ import annotations

import array
import gzip
import hashlib
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from convbert_common.fileio import atomic_directory, read_json
from convbert_common.tokenizer import ConvBertTokenizerFast

logger = logging.getLogger(__name__)

FORMAT_NAME = "convbert-pretraining-data"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
CORPUS_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES

# The authors' ExampleBuilder: 10% single-segment examples, 5% random-length targets in [5, max].
SINGLE_SEGMENT_PROB = 0.1
SHORT_SEQ_PROB = 0.05
MIN_TARGET_LENGTH = 5
# [CLS] A [SEP] with one token of A needs 3; the random targets need MIN_TARGET_LENGTH.
MIN_SEQ_LENGTH = MIN_TARGET_LENGTH

# HF's ignore index for MLM labels.
IGNORE_INDEX = -100

# A shard closes once it holds this many ids (128 MiB of int32).
DEFAULT_SHARD_TOKENS = 1 << 25
# Sentences handed to the Rust tokenizer per call.
TOKENIZE_BATCH = 4096

# Tags that keep the packing, shuffling and masking random streams apart for one seed.
_PACK_STREAM = 0x7061636B
_SHUFFLE_STREAM = 0x73687566
_MASK_STREAM = 0x6D61736B

# The bundled English prose (see data/pretrain_sample/README.md) for tests and the demo.
SAMPLE_CORPUS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "pretrain_sample", "python_reference.txt"
)

_SENTENCE_END = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*\s+""")


# ------------------------------------------------------------------------------ small checks
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_prob(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_max_seq_length(max_seq_length: Any, max_position_embeddings: int | None = None) -> int:
    """``max_seq_length`` as an int, refused below 5 or above the model's position table."""
    length = _check_int("max_seq_length", max_seq_length, MIN_SEQ_LENGTH)
    if max_position_embeddings is not None:
        limit = _check_int("max_position_embeddings", max_position_embeddings, 1)
        if length > limit:
            raise ValueError(
                f"max_seq_length {length} is above the model's max_position_embeddings {limit}: "
                "positions past the table have no embedding"
            )
    return length


def split_sentences(text: str) -> list[str]:
    """Split one line after sentence-final punctuation followed by whitespace (see the module doc)."""
    pieces = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.end()].strip()
        if piece:
            pieces.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def _document_sentences(lines: list[str]) -> list[str]:
    return split_sentences(lines[0]) if len(lines) == 1 else lines


# ------------------------------------------------------------------------------ tokenizer identity
def _load_tokenizer(tokenizer: Any) -> ConvBertTokenizerFast:
    if isinstance(tokenizer, ConvBertTokenizerFast):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        return ConvBertTokenizerFast.from_pretrained(tokenizer)
    raise TypeError(
        f"tokenizer must be a tokenizer directory or a ConvBertTokenizerFast, got {type(tokenizer).__name__}"
    )


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What decides the ids: vocab.txt's sha256, the normalisation flags and the special ids.

    ``sha256`` hashes vocab.txt's bytes followed by the flags, so one string compares the lot.
    """
    tok = _load_tokenizer(tokenizer)
    vocab_sha = _sha256_file(tok.vocab_file)
    flags = {
        "do_lower_case": bool(tok.do_lower_case),
        "strip_accents": tok.strip_accents,
        "tokenize_chinese_chars": bool(tok.tokenize_chinese_chars),
    }
    combined = hashlib.sha256()
    with open(tok.vocab_file, "rb") as fh:
        combined.update(fh.read())
    combined.update(json.dumps(flags, sort_keys=True).encode("utf-8"))
    return {
        "sha256": combined.hexdigest(),
        "vocab_sha256": vocab_sha,
        **flags,
        "vocab_size": tok.vocab_size,
        "special_ids": {
            "cls": tok.cls_token_id,
            "sep": tok.sep_token_id,
            "pad": tok.pad_token_id,
            "mask": tok.mask_token_id,
            "unk": tok.unk_token_id,
        },
    }


def _tokenizer_mismatch(built: dict[str, Any], given: dict[str, Any]) -> str | None:
    if built["vocab_sha256"] != given["vocab_sha256"]:
        return (
            f"its vocab.txt has sha256 {built['vocab_sha256'][:16]}... ({built['vocab_size']} tokens), "
            f"the given tokenizer's {given['vocab_sha256'][:16]}... ({given['vocab_size']} tokens)"
        )
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
        if built[key] != given[key]:
            return f"it was tokenized with {key}={built[key]}, the given tokenizer has {key}={given[key]}"
    if built["sha256"] != given["sha256"]:
        return f"tokenizer hash {built['sha256'][:16]}... differs from the given tokenizer's {given['sha256'][:16]}..."
    return None


# ------------------------------------------------------------------------------ corpus files
def _is_corpus_file(path: str) -> bool:
    return path.endswith(CORPUS_SUFFIXES)


def resolve_corpus(corpus_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The corpus files, absolute, in order: given files as given, each folder's files sorted."""
    if isinstance(corpus_paths, (str, os.PathLike)):
        corpus_paths = [corpus_paths]
    corpus_paths = list(corpus_paths)
    if not corpus_paths:
        raise ValueError("no corpus given: pass at least one file or folder (--corpus)")
    files: list[str] = []
    for given in corpus_paths:
        path = os.path.abspath(os.fspath(given))
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.extend(os.path.join(root, n) for n in names if _is_corpus_file(n) and not n.startswith("."))
            if not found:
                raise ValueError(f"corpus folder {path} holds no {', '.join(CORPUS_SUFFIXES)} files")
            files.extend(sorted(found))
        elif os.path.isfile(path):
            if not _is_corpus_file(path):
                raise ValueError(f"corpus file {path} is not one of {', '.join(CORPUS_SUFFIXES)}")
            files.append(path)
        else:
            raise FileNotFoundError(f"corpus path not found: {path}")
    seen: set[str] = set()
    for path in files:
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"corpus file {path} is given twice (directly or through a folder)")
        seen.add(real)
    return files


def _describe(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:5])
    return shown if len(paths) <= 5 else f"{shown} and {len(paths) - 5} more"


@dataclass(frozen=True)
class CorpusSettings:
    """How the corpus is read and packed: the manifest's ``settings`` (see ``build_dataset``).

    Checked on construction; a build whose settings differ from the manifest's rebuilds the data.
    """

    one_doc_per_line: bool = False
    text_field: str = "text"
    skip_bad_lines: bool = False
    short_seq_prob: float = SHORT_SEQ_PROB
    single_segment_prob: float = SINGLE_SEGMENT_PROB

    def __post_init__(self) -> None:
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"text_field must be a non-empty string, got {self.text_field!r}")
        checked = {
            "one_doc_per_line": bool(self.one_doc_per_line),
            "skip_bad_lines": bool(self.skip_bad_lines),
            "short_seq_prob": _check_prob("short_seq_prob", self.short_seq_prob),
            "single_segment_prob": _check_prob("single_segment_prob", self.single_segment_prob),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CorpusStats:
    """Counts of one build, written to the manifest's ``counts``."""

    files: int = 0
    lines: int = 0
    skipped_lines: int = 0
    documents: int = 0
    sentences: int = 0
    corpus_tokens: int = 0
    examples: int = 0
    example_tokens: int = 0
    dropped_tokens: int = 0
    total_ids: int = 0
    single_segment_examples: int = 0
    skipped_by_file: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The manifest's ``counts``: every counter but the per-file skips."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped_by_file"}


class _Progress:
    """A bytes-read bar over all corpus files (compressed bytes for .gz)."""

    def __init__(self, files: Sequence[str], enabled: bool) -> None:
        total = sum(os.path.getsize(f) for f in files)
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="pretraining data", disable=not enabled)
        self.done = 0

    def at(self, position: int) -> None:
        if position > self.done:
            self.bar.update(position - self.done)
            self.done = position

    def close(self) -> None:
        self.bar.close()


def _skip_or_raise(message: str, path: str, stats: CorpusStats, skip: bool) -> None:
    if not skip:
        raise ValueError(message)
    stats.skipped_lines += 1
    stats.skipped_by_file[path] = stats.skipped_by_file.get(path, 0) + 1


def _file_lines(path: str, stats: CorpusStats, skip_bad_lines: bool, progress: _Progress) -> Iterator[tuple[int, str]]:
    """(line number, text) of one file, decoded strictly as UTF-8 with byte offsets in errors."""
    compressed = path.endswith(".gz")
    where = " of the decompressed text" if compressed else ""
    start = progress.done
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        offset = 0
        number = 0
        try:
            for number, line in enumerate(stream, 1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as err:
                    _skip_or_raise(
                        f"{path} is not UTF-8 text: line {number}, byte offset {offset + err.start}{where} "
                        f"({err.reason}); pass skip_bad_lines=True (--skip-bad-lines) to skip such lines",
                        path,
                        stats,
                        skip_bad_lines,
                    )
                    offset += len(line)
                    continue
                offset += len(line)
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                stats.lines += 1
                yield number, text
                if number % 1024 == 0:
                    progress.at(start + raw.tell())
        except (OSError, EOFError, zlib.error) as err:
            kind = "as gzip " if compressed else ""
            raise ValueError(f"{path}: cannot read it {kind}after line {number}: {err}") from err
        progress.at(start + raw.tell())
    if stats.skipped_by_file.get(path):
        logger.warning("%s: skipped %d lines that were not UTF-8 or not valid JSONL", path, stats.skipped_by_file[path])


def _text_documents(one_doc_per_line: bool, lines: Iterator[tuple[int, str]]) -> Iterator[list[str]]:
    if one_doc_per_line:
        for _number, text in lines:
            text = text.strip()
            if text:
                yield split_sentences(text)
        return
    current: list[str] = []
    for _number, text in lines:
        text = text.strip()
        if text:
            current.append(text)
        elif current:
            yield _document_sentences(current)
            current = []
    if current:
        yield _document_sentences(current)


def _jsonl_documents(
    path: str, text_field: str, lines: Iterator[tuple[int, str]], stats: CorpusStats, skip_bad_lines: bool
) -> Iterator[list[str]]:
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            _skip_or_raise(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})", path, stats,
                           skip_bad_lines)
            continue
        if not isinstance(record, dict):
            _skip_or_raise(f"{path} line {number}: a JSONL line must be a JSON object, got {type(record).__name__}",
                           path, stats, skip_bad_lines)
            continue
        if text_field not in record:
            keys = ", ".join(sorted(record)[:10]) or "none"
            _skip_or_raise(
                f"{path} line {number}: no field {text_field!r} (keys: {keys}); set text_field (--text-field)",
                path, stats, skip_bad_lines,
            )
            continue
        value = record[text_field]
        if not isinstance(value, str):
            _skip_or_raise(f"{path} line {number}: field {text_field!r} is {type(value).__name__}, not a string",
                           path, stats, skip_bad_lines)
            continue
        doc_lines = [line.strip() for line in value.split("\n")]
        doc_lines = [line for line in doc_lines if line]
        if doc_lines:
            yield _document_sentences(doc_lines)


def iter_documents(
    files: Sequence[str],
    *,
    settings: CorpusSettings | None = None,
    stats: CorpusStats | None = None,
    progress: bool = False,
) -> Iterator[list[str]]:
    """Each document of the corpus files, in order, as its list of sentences (strings)."""
    settings = CorpusSettings() if settings is None else settings
    stats = CorpusStats() if stats is None else stats
    skip = settings.skip_bad_lines
    bar = _Progress(files, progress)
    try:
        for path in files:
            stats.files += 1
            lines = _file_lines(path, stats, skip, bar)
            if path.endswith(JSONL_SUFFIXES):
                documents = _jsonl_documents(path, settings.text_field, lines, stats, skip)
            else:
                documents = _text_documents(settings.one_doc_per_line, lines)
            for document in documents:
                stats.documents += 1
                yield document
    finally:
        bar.close()


def _text_encoder(tokenizer: ConvBertTokenizerFast):
    """Encode sentences with the tokenizer's pipeline, reading "[SEP]", "[MASK]"... in the text as text.

    ELECTRA's tokenizer never matched special-token strings in the corpus; matching them would put
    a [SEP] or [MASK] id inside a segment. A copy of the backend keeps the caller's tokenizer as is.
    """
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    backend.encode_special_tokens = True

    def encode(sentences: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in backend.encode_batch(sentences, add_special_tokens=False)]

    return encode


def tokenize_documents(
    documents: Iterable[list[str]], tokenizer: ConvBertTokenizerFast, batch_sentences: int = TOKENIZE_BATCH
) -> Iterator[list[list[int]]]:
    """Each document as its sentences' token ids (no special tokens, no truncation), in order.

    Sentences that tokenize to nothing are left out.
    """
    encode = _text_encoder(tokenizer)
    pending: list[list[str]] = []
    count = 0

    def flush(docs: list[list[str]]) -> Iterator[list[list[int]]]:
        ids = encode([sentence for doc in docs for sentence in doc])
        position = 0
        for doc in docs:
            yield [s for s in ids[position : position + len(doc)] if s]
            position += len(doc)

    for doc in documents:
        pending.append(doc)
        count += len(doc)
        if count >= batch_sentences:
            yield from flush(pending)
            pending, count = [], 0
    if pending:
        yield from flush(pending)


# ------------------------------------------------------------------------------ packing
@dataclass(frozen=True)
class PackedExample:
    """Segments A and B of one example (no [CLS]/[SEP]) and the tokens the length rule cut from each."""

    first: list[int]
    second: list[int]
    first_dropped: int
    second_dropped: int
    single_segment: bool

    def input_ids(self, cls_id: int, sep_id: int) -> list[int]:
        ids = [cls_id, *self.first, sep_id]
        if self.second:
            ids += [*self.second, sep_id]
        return ids

    @property
    def type_start(self) -> int:
        """Where token type 1 begins: after ``[CLS] A [SEP]`` (the length when there is no B)."""
        return len(self.first) + 2


class ExamplePacker:
    """ELECTRA's ExampleBuilder (see the module doc), fed one tokenized document at a time.

    The random draws come from ``rng`` in a fixed order, so a seed fixes every example; the target
    length carries over from one document to the next, as in the authors' code.
    """

    def __init__(
        self,
        max_seq_length: int,
        rng: np.random.Generator,
        *,
        short_seq_prob: float = SHORT_SEQ_PROB,
        single_segment_prob: float = SINGLE_SEGMENT_PROB,
    ) -> None:
        self.max_seq_length = check_max_seq_length(max_seq_length)
        self.short_seq_prob = _check_prob("short_seq_prob", short_seq_prob)
        self.single_segment_prob = _check_prob("single_segment_prob", single_segment_prob)
        self._rng = rng
        self._target = self.max_seq_length

    def add_document(self, sentences: Iterable[Sequence[int]]) -> list[PackedExample]:
        examples = []
        current: list[Sequence[int]] = []
        length = 0
        for sentence in sentences:
            if not len(sentence):
                continue
            current.append(sentence)
            length += len(sentence)
            if length >= self._target:
                examples.append(self._create(current))
                current, length = [], 0
        if current:
            examples.append(self._create(current))
        return examples

    def _create(self, sentences: list[Sequence[int]]) -> PackedExample:
        rng = self._rng
        single = rng.random() < self.single_segment_prob
        # -3 for the [CLS] and two [SEP] not yet added.
        first_target = math.inf if single else (self._target - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for sentence in sentences:
            if not second and (
                not first
                or len(first) + len(sentence) < first_target
                or (len(first) < first_target and rng.random() < 0.5)
            ):
                first.extend(sentence)
            else:
                second.extend(sentence)
        keep_first = min(len(first), self.max_seq_length - 2)
        keep_second = min(len(second), max(0, self.max_seq_length - keep_first - 3))
        if rng.random() < self.short_seq_prob:
            self._target = int(rng.integers(MIN_TARGET_LENGTH, self.max_seq_length + 1))
        else:
            self._target = self.max_seq_length
        return PackedExample(
            first=first[:keep_first],
            second=second[:keep_second],
            first_dropped=len(first) - keep_first,
            second_dropped=len(second) - keep_second,
            single_segment=bool(single),
        )


def packing_rng(seed: int) -> np.random.Generator:
    """The packer's random stream for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([_check_int("seed", seed, 0), _PACK_STREAM]))


def iter_examples(
    files: Sequence[str],
    tokenizer: ConvBertTokenizerFast,
    *,
    max_seq_length: int,
    seed: int,
    settings: CorpusSettings | None = None,
    stats: CorpusStats | None = None,
    progress: bool = False,
) -> Iterator[PackedExample]:
    """Every packed example of the corpus files, in corpus order (what ``build_dataset`` writes)."""
    settings = CorpusSettings() if settings is None else settings
    stats = CorpusStats() if stats is None else stats
    packer = ExamplePacker(max_seq_length, packing_rng(seed), short_seq_prob=settings.short_seq_prob,
                           single_segment_prob=settings.single_segment_prob)
    documents = iter_documents(files, settings=settings, stats=stats, progress=progress)
    for sentences in tokenize_documents(documents, tokenizer):
        stats.sentences += len(sentences)
        stats.corpus_tokens += sum(len(s) for s in sentences)
        for example in packer.add_document(sentences):
            stats.examples += 1
            stats.example_tokens += len(example.first) + len(example.second)
            stats.dropped_tokens += example.first_dropped + example.second_dropped
            stats.single_segment_examples += example.single_segment
            yield example


# ------------------------------------------------------------------------------ shards
def _shard_names(index: int) -> dict[str, str]:
    stem = f"shard-{index:05d}"
    return {"ids": f"{stem}.ids.npy", "offsets": f"{stem}.offsets.npy", "type_starts": f"{stem}.type_starts.npy"}


class _ShardWriter:
    def __init__(self, directory: str, cls_id: int, sep_id: int, max_shard_tokens: int) -> None:
        self.directory = directory
        self.cls_id, self.sep_id = cls_id, sep_id
        self.max_shard_tokens = max_shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._ids = array.array("i")
        self._offsets = array.array("q", [0])
        self._type_starts = array.array("i")

    def add(self, example: PackedExample) -> int:
        ids = example.input_ids(self.cls_id, self.sep_id)
        self._ids.extend(ids)
        self._offsets.append(len(self._ids))
        self._type_starts.append(example.type_start)
        if len(self._ids) >= self.max_shard_tokens:
            self.flush()
        return len(ids)

    def flush(self) -> None:
        if len(self._type_starts) == 0:
            return
        names = _shard_names(len(self.shards))
        np.save(os.path.join(self.directory, names["ids"]), np.frombuffer(self._ids, dtype=np.int32))
        np.save(os.path.join(self.directory, names["offsets"]), np.frombuffer(self._offsets, dtype=np.int64))
        np.save(os.path.join(self.directory, names["type_starts"]), np.frombuffer(self._type_starts, dtype=np.int32))
        self.shards.append({**names, "examples": len(self._type_starts), "ids_count": len(self._ids)})
        self._reset()


def _source_records(files: Sequence[str], with_hash: bool) -> list[dict[str, Any]]:
    records = []
    for path in files:
        info = os.stat(path)
        record: dict[str, Any] = {"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        if with_hash:
            record["sha256"] = _sha256_file(path)
        records.append(record)
    return records


def _request(
    files: Sequence[str], fingerprint: dict[str, Any], max_seq_length: int, seed: int, settings: CorpusSettings
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "max_seq_length": max_seq_length,
        "seed": seed,
        "settings": settings.as_dict(),
        "tokenizer": fingerprint,
        "sources": _source_records(files, with_hash=False),
    }


def _sources_differ(built: list[dict[str, Any]], current: list[dict[str, Any]]) -> str | None:
    built_paths = [s["path"] for s in built]
    current_paths = [s["path"] for s in current]
    if built_paths != current_paths:
        return f"the corpus files differ (built from {_describe(built_paths)}; now {_describe(current_paths)})"
    for old, new in zip(built, current, strict=True):
        if old["size"] != new["size"]:
            return f"{new['path']} changed size ({old['size']} -> {new['size']} bytes)"
        # A touched or copied file with the same bytes is the same input.
        if old["mtime_ns"] != new["mtime_ns"] and old.get("sha256") != _sha256_file(new["path"]):
            return f"{new['path']} changed (modified since the build, different sha256)"
    return None


def _request_differences(manifest: dict[str, Any], request: dict[str, Any]) -> list[str]:
    differences = []
    for key in ("format", "format_version", "max_seq_length", "seed"):
        if manifest.get(key) != request[key]:
            differences.append(f"{key} {manifest.get(key)!r} -> {request[key]!r}")
    old_settings = manifest.get("settings") or {}
    for key, value in request["settings"].items():
        if old_settings.get(key) != value:
            differences.append(f"{key} {old_settings.get(key)!r} -> {value!r}")
    old_tokenizer = manifest.get("tokenizer") or {}
    if old_tokenizer.get("sha256") != request["tokenizer"]["sha256"]:
        differences.append("the tokenizer (" + (_tokenizer_mismatch(old_tokenizer, request["tokenizer"])
                                                 if "vocab_sha256" in old_tokenizer else "no recorded hash") + ")")
    sources = _sources_differ(manifest.get("sources") or [], request["sources"])
    if sources:
        differences.append(sources)
    return differences


def _read_manifest(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, MANIFEST_FILE)
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a {FORMAT_NAME} manifest (no \"format\": \"{FORMAT_NAME}\")")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}; this version reads {FORMAT_VERSION}")
    return manifest


def build_dataset(
    corpus_paths: str | os.PathLike | Sequence[str | os.PathLike],
    tokenizer_dir: str | os.PathLike | ConvBertTokenizerFast,
    output_dir: str | os.PathLike,
    *,
    max_seq_length: int,
    seed: int = 0,
    one_doc_per_line: bool = False,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    short_seq_prob: float = SHORT_SEQ_PROB,
    single_segment_prob: float = SINGLE_SEGMENT_PROB,
    max_position_embeddings: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    max_shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> dict[str, Any]:
    """Tokenize a text corpus and pack it into ELECTRA-style pretraining examples on disk.

    Reads .txt, .txt.gz, .jsonl and .jsonl.gz files, or folders of them (searched recursively,
    in sorted order). In text files, blank lines separate documents and each line is a sentence;
    a one-line document is split at sentence ends. Each example holds sentences of one document,
    up to max_seq_length tokens, as [CLS] A [SEP] B [SEP]. The output directory gets memory-mapped
    shards and a manifest.json; running again with the same corpus, tokenizer and settings reuses
    them.

    Args:
        corpus_paths: corpus files or folders (--corpus, repeatable).
        tokenizer_dir: the tokenizer folder holding vocab.txt (--tokenizer).
        output_dir: where the data directory is written (--output); built beside it, then renamed.
        max_seq_length: tokens per example, [CLS] and [SEP] included (--max-seq-length).
        seed: fixes the packing's random choices (--seed).
        one_doc_per_line: every line of a text file is one document (--one-doc-per-line).
        text_field: the JSONL field holding the text (--text-field, default "text").
        skip_bad_lines: skip and count lines that are not UTF-8 or not valid JSONL, instead of
            stopping at the first (--skip-bad-lines).
        short_seq_prob: chance that the next example aims at a random length in
            [5, max_seq_length] (the authors' 0.05).
        single_segment_prob: chance that an example has segment A only (the authors' 0.1).
        max_position_embeddings: refuse a max_seq_length above the model's position table.
        progress: show a progress bar (--no-progress turns it off).
        overwrite: replace an output directory built from other inputs or settings (--overwrite).
        max_shard_tokens: ids per shard file before a new one starts.

    Returns:
        The manifest (also in output_dir/manifest.json): settings, tokenizer hash, sources,
        counts (examples, corpus/example/dropped tokens, skipped lines) and the shard list.

    Raises:
        FileNotFoundError: a corpus path or the tokenizer folder does not exist.
        ValueError: an unsupported file, a non-UTF-8 line (with its byte offset) or malformed
            JSONL line without skip_bad_lines, an empty corpus or one in which nothing
            tokenizes, a bad setting, or an output directory built differently (without overwrite).
        FileExistsError: output_dir exists, is not a pretraining data directory and overwrite is off.
    """
    max_seq_length = check_max_seq_length(max_seq_length, max_position_embeddings)
    seed = _check_int("seed", seed, 0)
    max_shard_tokens = _check_int("max_shard_tokens", max_shard_tokens, 1)
    settings = CorpusSettings(one_doc_per_line=one_doc_per_line, text_field=text_field, skip_bad_lines=skip_bad_lines,
                              short_seq_prob=short_seq_prob, single_segment_prob=single_segment_prob)
    tokenizer = _load_tokenizer(tokenizer_dir)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.vocab_file} has no mask_token: pretraining needs one ([MASK])")
    fingerprint = tokenizer_fingerprint(tokenizer)
    files = resolve_corpus(corpus_paths)
    request = _request(files, fingerprint, max_seq_length, seed, settings)

    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.isfile(output_dir):
        raise FileExistsError(f"output directory {output_dir} is a file")
    if os.path.isfile(os.path.join(output_dir, MANIFEST_FILE)):
        manifest = _read_manifest(output_dir)
        differences = _request_differences(manifest, request)
        if not differences:
            logger.info("%s already holds this dataset (same corpus, tokenizer and settings): reusing it", output_dir)
            return manifest
        if not overwrite:
            raise ValueError(
                f"{output_dir} holds pretraining data built differently: {'; '.join(differences)}. "
                "Pass overwrite=True (--overwrite) to rebuild it, or choose another output directory"
            )
        logger.info("rebuilding %s: %s", output_dir, "; ".join(differences))
    elif os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise FileExistsError(
            f"output directory {output_dir} exists and is not pretraining data (no {MANIFEST_FILE}); "
            "pass overwrite=True (--overwrite) to replace it"
        )

    stats = CorpusStats()
    special = fingerprint["special_ids"]
    with atomic_directory(output_dir, overwrite=True) as tmp:
        writer = _ShardWriter(tmp, special["cls"], special["sep"], max_shard_tokens)
        examples = iter_examples(files, tokenizer, max_seq_length=max_seq_length, seed=seed, settings=settings,
                                 stats=stats, progress=progress)
        for example in examples:
            stats.total_ids += writer.add(example)
        writer.flush()
        _check_not_empty(stats, files, corpus_paths)
        manifest = dict(request)
        manifest["sources"] = _source_records(files, with_hash=True)
        manifest["counts"] = stats.as_dict()
        manifest["layout"] = {"ids": "int32", "offsets": "int64", "type_starts": "int32"}
        manifest["shards"] = writer.shards
        with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info(
        "wrote %s: %d examples, %d shards; %d of %d corpus tokens kept (%d dropped by the length rule), "
        "%d lines skipped",
        output_dir, stats.examples, len(writer.shards), stats.example_tokens, stats.corpus_tokens,
        stats.dropped_tokens, stats.skipped_lines,
    )
    return manifest


def _check_not_empty(stats: CorpusStats, files: Sequence[str], corpus_paths: Any) -> None:
    if stats.examples:
        return
    given = [os.fspath(p) for p in ([corpus_paths] if isinstance(corpus_paths, (str, os.PathLike)) else corpus_paths)]
    skipped = f" ({stats.skipped_lines} bad lines skipped)" if stats.skipped_lines else ""
    if stats.documents == 0:
        raise ValueError(f"the corpus is empty: no text in {_describe(given)} ({len(files)} files){skipped}")
    raise ValueError(
        f"no line of the corpus tokenizes to any token: {stats.documents} documents in {_describe(given)} "
        f"({len(files)} files){skipped}; is the tokenizer's vocabulary right for this text?"
    )


# ------------------------------------------------------------------------------ reading
class PretrainingDataset:
    """A data directory written by ``build_dataset``, memory-mapped.

    ``dataset[i]`` is one example padded to ``max_seq_length``; ``batches`` is the training
    order. Pass ``tokenizer`` (a folder or a tokenizer) to refuse data tokenized with another
    vocabulary or lowercasing, and ``max_position_embeddings`` to refuse examples longer than the
    model's position table.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        tokenizer: str | os.PathLike | ConvBertTokenizerFast | None = None,
        max_position_embeddings: int | None = None,
    ) -> None:
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        if not os.path.isfile(os.path.join(self.data_dir, MANIFEST_FILE)):
            raise FileNotFoundError(
                f"{self.data_dir} is not a pretraining data directory: no {MANIFEST_FILE} "
                "(build one with build_dataset / convbert pretrain-data)"
            )
        self.manifest = _read_manifest(self.data_dir)
        self.max_seq_length = check_max_seq_length(self.manifest["max_seq_length"], max_position_embeddings)
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)
        special = self.manifest["tokenizer"]["special_ids"]
        self.pad_token_id = int(special["pad"])
        self.mask_token_id = int(special["mask"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        # ELECTRA's never-masked ids: [CLS], [SEP], [PAD], [MASK] ([UNK] can be masked, as there).
        self.special_ids = tuple(int(special[k]) for k in ("cls", "sep", "pad", "mask"))
        self._shards = [self._open_shard(entry) for entry in self.manifest["shards"]]
        counts = [len(types) for _ids, _offsets, types in self._shards]
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        expected = self.manifest["counts"]["examples"]
        if int(self._starts[-1]) != expected:
            raise ValueError(
                f"{self.data_dir}: the shards hold {int(self._starts[-1])} examples, the manifest says {expected}"
            )

    def _open_shard(self, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = []
        for key, dtype in (("ids", np.int32), ("offsets", np.int64), ("type_starts", np.int32)):
            path = os.path.join(self.data_dir, entry[key])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"shard file missing: {path}")
            try:
                values = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as err:
                raise ValueError(f"{path} is not a readable .npy array: {err}") from err
            if values.dtype != dtype or values.ndim != 1:
                raise ValueError(
                    f"{path} holds {values.dtype} of shape {values.shape}, expected a 1-D {np.dtype(dtype)}"
                )
            arrays.append(values)
        ids, offsets, types = arrays
        n = entry["examples"]
        if len(types) != n or len(offsets) != n + 1 or int(offsets[-1]) != len(ids):
            raise ValueError(
                f"shard {entry['ids']} in {self.data_dir} is inconsistent: {len(types)} type starts, "
                f"{len(offsets)} offsets and {len(ids)} ids for {n} examples"
            )
        return ids, offsets, types

    def check_tokenizer(self, tokenizer: str | os.PathLike | ConvBertTokenizerFast) -> None:
        """Raise unless ``tokenizer`` gives the ids these shards were built with."""
        mismatch = _tokenizer_mismatch(self.manifest["tokenizer"], tokenizer_fingerprint(tokenizer))
        if mismatch:
            raise ValueError(f"{self.data_dir} was built with another tokenizer: {mismatch}")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"example index must be an integer, got {type(index).__name__}")
        n = len(self)
        position = int(index) + n if index < 0 else int(index)
        if not 0 <= position < n:
            raise IndexError(f"example index {int(index)} out of range for {n} examples")
        return position

    def gather(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The examples at ``indices`` as ``(len(indices), max_seq_length)`` int64 arrays."""
        positions = [self._check_index(i) for i in np.asarray(indices).reshape(-1).tolist()]
        rows, length = len(positions), self.max_seq_length
        input_ids = np.full((rows, length), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((rows, length), dtype=np.int64)
        token_type_ids = np.zeros((rows, length), dtype=np.int64)
        for row, position in enumerate(positions):
            shard, local = self._locate(position)
            ids, offsets, types = self._shards[shard]
            start, stop = int(offsets[local]), int(offsets[local + 1])
            size = stop - start
            input_ids[row, :size] = ids[start:stop]
            attention_mask[row, :size] = 1
            token_type_ids[row, int(types[local]) : size] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.gather([index]).items()}

    # -------------------------------------------------------------- training order
    def steps_per_epoch(self, batch_size: int, world_size: int = 1, *, drop_last: bool = True) -> int:
        """Steps of one epoch when every step takes ``batch_size`` examples on each of ``world_size`` ranks."""
        batch_size = _check_int("batch_size", batch_size, 1)
        world_size = _check_int("world_size", world_size, 1)
        global_batch = batch_size * world_size
        return len(self) // global_batch if drop_last else -(-len(self) // global_batch)

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The permutation of all example indices used for ``epoch`` (the same on every rank)."""
        stream = np.random.SeedSequence([_check_int("seed", seed, 0), _SHUFFLE_STREAM, _check_int("epoch", epoch, 0)])
        return np.random.default_rng(stream).permutation(len(self))

    def batch_indices(
        self,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        drop_last: bool = True,
    ) -> Iterator[np.ndarray]:
        """This rank's example indices for each step of ``epoch``, from ``start_step`` on.

        Step ``s`` takes the global batch ``order[s*B*W : (s+1)*B*W]`` of the epoch's permutation
        and gives rank ``r`` its ``r``-th block of ``B``, so ranks are disjoint and one rank with
        batch ``B*W`` sees the same examples as ``W`` ranks with ``B``. With ``drop_last=False``
        the last global batch is completed from the start of the permutation, so every rank gets
        a full batch (a few examples then appear twice in the epoch).
        """
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank {rank} is not below world_size {world_size}")
        steps = self.steps_per_epoch(batch_size, world_size, drop_last=drop_last)
        start_step = _check_int("start_step", start_step, 0)
        if steps == 0:
            raise ValueError(
                f"{self.data_dir} has {len(self)} examples, fewer than one global batch of "
                f"{batch_size} x {world_size} ranks (use drop_last=False or a smaller batch)"
            )
        if start_step > steps:
            raise ValueError(f"start_step {start_step} is past the end of the epoch ({steps} steps)")
        order = self.epoch_order(seed, epoch)
        global_batch = batch_size * world_size
        if len(order) < steps * global_batch:
            order = np.concatenate([order, order[: steps * global_batch - len(order)]])
        for step in range(start_step, steps):
            begin = step * global_batch + rank * batch_size
            yield order[begin : begin + batch_size]

    def batches(self, batch_size: int, **schedule: Any) -> Iterator[dict[str, np.ndarray]]:
        """This rank's batches: ``batch_indices(batch_size, **schedule)`` gathered.

        ``schedule`` is ``batch_indices``' keywords (``seed``, ``epoch``, ``rank``, ``world_size``,
        ``start_step``, ``drop_last``). Each batch is a dict of ``input_ids``, ``attention_mask``,
        ``token_type_ids`` ``(B, L)`` int64. The data position for an exact resume is ``(epoch,
        step)``: a run at global step ``g`` resumes with ``epoch, start_step = divmod(g,
        steps_per_epoch(...))``.
        """
        return map(self.gather, self.batch_indices(batch_size, **schedule))


# ------------------------------------------------------------------------------ masking
def masking_rng(seed: int, step: int, row: int) -> np.random.Generator:
    """The masking stream of one sequence: global row ``row`` of the batch at ``step``."""
    return np.random.default_rng(np.random.SeedSequence([seed, _MASK_STREAM, step, row]))


def _as_2d_int(name: str, values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array_ = np.asarray(values)
    if array_.ndim != 2:
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {array_.shape}")
    if shape is not None and array_.shape != shape:
        raise ValueError(f"{name} has shape {array_.shape}, input_ids {shape}")
    if array_.dtype != np.bool_ and not np.issubdtype(array_.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got {array_.dtype}")
    return array_


def masked_count(available: Any, mask_prob: float) -> np.ndarray:
    """How many of a row's ``available`` maskable tokens ``mask_tokens`` masks (ELECTRA's count).

    ``max(1, round(mask_prob * n))`` for ``n`` > 0 (0 when ``mask_prob`` is 0), at most ``n``. It
    grows with ``n``, so ``masked_count(L, p)`` bounds every row of length ``L``: the number of
    positions a model gathering the masked ones per row with a static shape needs.
    """
    available = np.asarray(available, dtype=np.int64)
    count = np.rint(mask_prob * available).astype(np.int64)
    if mask_prob > 0:
        count = np.maximum(count, 1)
    return np.minimum(count, available)


def mask_tokens(
    input_ids: Any,
    attention_mask: Any,
    special_tokens_mask: Any = None,
    *,
    special_ids: Iterable[int] | None = None,
    vocab_size: int,
    mask_token_id: int,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    step: int = 0,
    row_offset: int = 0,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.85,
    random_token_prob: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask a batch for the generator: ``(masked_input_ids, labels)``, both ``(B, L)``.

    ``labels`` are HF MLM labels: the original id at masked positions, -100 elsewhere. Only real
    tokens are masked: attended (``attention_mask`` 1), not in ``special_ids`` nor flagged by
    ``special_tokens_mask``, and not already ``mask_token_id``. Each sequence with ``n`` such
    tokens gets ``max(1, round(mask_prob * n))`` of them (ELECTRA's count; none when ``n`` is 0 or
    ``mask_prob`` is 0), uniformly without replacement. A masked position becomes
    ``mask_token_id`` with probability ``mask_token_prob``, a uniformly drawn id outside
    ``special_ids`` with ``random_token_prob``, and otherwise keeps its id (ELECTRA: 0.85 / 0 /
    0.15; BERT: 0.8 / 0.1 / 0.1).

    Randomness: pass ``seed`` (with ``step`` and ``row_offset``) or a NumPy ``rng``. With a seed,
    row ``i`` draws from its own stream of ``(seed, step, row_offset + i)``, so masks are fresh
    every step, a resume at ``step`` repeats them, and rank ``r`` of a data-parallel run passing
    ``row_offset = r * B`` masks its rows exactly as one process with the whole global batch
    would. The masks depend on the row's ids and on ``L``.
    """
    ids = _as_2d_int("input_ids", input_ids)
    if ids.dtype == np.bool_:
        raise ValueError("input_ids must hold integer ids, got bool")
    mask = _as_2d_int("attention_mask", attention_mask, ids.shape).astype(bool)
    vocab_size = _check_int("vocab_size", vocab_size, 1)
    mask_token_id = _check_int("mask_token_id", mask_token_id, 0)
    if mask_token_id >= vocab_size:
        raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary (vocab_size {vocab_size})")
    mask_prob = _check_prob("mask_prob", mask_prob)
    mask_token_prob = _check_prob("mask_token_prob", mask_token_prob)
    random_token_prob = _check_prob("random_token_prob", random_token_prob)
    if mask_token_prob + random_token_prob > 1.0 + 1e-12:
        raise ValueError(
            f"mask_token_prob {mask_token_prob} + random_token_prob {random_token_prob} is above 1"
        )
    if special_ids is None and special_tokens_mask is None:
        raise ValueError("pass special_ids or special_tokens_mask: [CLS] and [SEP] must never be masked")
    if (rng is None) == (seed is None):
        raise ValueError("pass exactly one of seed (with step) or rng")

    specials = sorted({int(i) for i in (special_ids or ())})
    for special in specials:
        if not 0 <= special < vocab_size:
            raise ValueError(f"special id {special} is outside the vocabulary (vocab_size {vocab_size})")
    attended = ids[mask]
    if attended.size and (attended.min() < 0 or attended.max() >= vocab_size):
        rows, cols = np.nonzero(mask & ((ids < 0) | (ids >= vocab_size)))
        raise ValueError(
            f"input_ids[{rows[0]}, {cols[0]}] = {ids[rows[0], cols[0]]} is outside the vocabulary "
            f"(vocab_size {vocab_size})"
        )

    candidates = mask & (ids != mask_token_id)
    if specials:
        candidates &= ~np.isin(ids, specials)
    if special_tokens_mask is not None:
        candidates &= ~_as_2d_int("special_tokens_mask", special_tokens_mask, ids.shape).astype(bool)
    pool = np.setdiff1d(np.arange(vocab_size), np.array(specials + [mask_token_id], dtype=np.int64))
    if random_token_prob > 0 and special_ids is None:
        raise ValueError("random_token_prob > 0 needs special_ids: random replacements must not be special tokens")
    if random_token_prob > 0 and pool.size == 0:
        raise ValueError("random_token_prob > 0 but every id of the vocabulary is special")

    batch, length = ids.shape
    if seed is not None:
        seed = _check_int("seed", seed, 0)
        step = _check_int("step", step, 0)
        row_offset = _check_int("row_offset", row_offset, 0)
        pick = np.empty((batch, length))
        kind = np.empty((batch, length))
        replacement = np.zeros((batch, length), dtype=np.int64)
        for row in range(batch):
            stream = masking_rng(seed, step, row_offset + row)
            pick[row] = stream.random(length)
            kind[row] = stream.random(length)
            if pool.size:
                replacement[row] = stream.integers(0, pool.size, length)
    else:
        pick = rng.random((batch, length))
        kind = rng.random((batch, length))
        replacement = rng.integers(0, pool.size, (batch, length)) if pool.size else np.zeros((batch, length), np.int64)

    available = candidates.sum(axis=1)
    count = masked_count(available, mask_prob)
    # A uniform subset of size count: the count candidates with the smallest uniform scores.
    scores = np.where(candidates, pick, 2.0)
    order = np.argsort(scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(length), order.shape), axis=1)
    selected = rank < count[:, None]

    to_mask = selected & (kind < mask_token_prob)
    to_random = selected & (kind >= mask_token_prob) & (kind < mask_token_prob + random_token_prob)
    out_dtype = ids.dtype if np.issubdtype(ids.dtype, np.signedinteger) else np.int64
    masked = ids.astype(out_dtype, copy=True)
    masked[to_mask] = mask_token_id
    if pool.size:
        masked[to_random] = pool[replacement[to_random]]
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=out_dtype)
    labels[selected] = ids[selected]
    return masked, labels
