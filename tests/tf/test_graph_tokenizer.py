"""The in-graph tokenizer (``convbert_tf.graph_tokenizer``, tensorflow-text) gives ConvBertTokenizerFast's
ids on the golden tokenizer corpus, with an uncased and a cased vocabulary, alone and in pairs,
truncated or not; every code point normalises as the Rust normaliser does, but for the pinned
canonical-reordering cases."""

from __future__ import annotations

import functools
import gzip
import json

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tensorflow_text", reason="the in-graph tokenizer needs the export extra "
                                               "(pip install 'convbert[export]')")

from tokenizers import AddedToken  # noqa: E402

from convbert_common.tokenizer import ConvBertTokenizerFast  # noqa: E402
from convbert_tf import graph_tokenizer  # noqa: E402
from tests.conftest import fixture_file  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow_backend]  # a tf.Module tokenizer for SavedModel

FIELDS = ("input_ids", "token_type_ids", "attention_mask")
UNLIMITED = 10**6


@functools.cache
def golden_records() -> tuple[dict, ...]:
    with gzip.open(fixture_file("tokenizer/expected_uncased.jsonl.gz"), "rt", encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh)


def cased_vocab(path) -> tuple[str, set[int]]:
    """The BERT vocabulary with its [unused] slots holding capitals: capital letters, their ##
    continuations and capitalised words, so that cased text meets cased tokens (a cased
    vocabulary's situation) instead of only [UNK]."""
    lines = fixture_file("tokenizer/vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + list("ÀÉÈÖÜÇÑ")
    taken = set(lines)
    words = [w.capitalize() for w in lines[1996:] if w.isalpha() and w.capitalize() not in taken]
    capitals = letters + ["##" + c for c in letters] + words
    slots = [i for i, t in enumerate(lines) if t.startswith("[unused")]
    for i, token in zip(slots, capitals, strict=False):
        lines[i] = token
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), set(slots)


@pytest.fixture(scope="module")
def uncased():
    tok = ConvBertTokenizerFast(fixture_file("tokenizer/vocab.txt"))
    return tok, graph_tokenizer.build(tok, UNLIMITED)


@pytest.fixture(scope="module")
def cased(tmp_path_factory):
    vocab, capitals = cased_vocab(tmp_path_factory.mktemp("cased") / "vocab.txt")
    tok = ConvBertTokenizerFast(vocab, do_lower_case=False)
    return tok, graph_tokenizer.build(tok, UNLIMITED), capitals


def _groups(records):
    """Records by (pair?, max_length): each group goes through the graph as one batch."""
    groups: dict[tuple[bool, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["text_pair"] is not None, r["max_length"] or UNLIMITED), []).append(r)
    return groups


def _graph_rows(graph, group: list[dict], pair: bool, max_length: int) -> list[dict[str, list[int]]]:
    text = tf.constant([r["text"] for r in group])
    out = graph(text, tf.constant([r["text_pair"] for r in group]) if pair else None, max_length=max_length)
    out = {k: v.numpy() for k, v in out.items()}
    rows = []
    for i in range(len(group)):
        n = int(out["attention_mask"][i].sum())
        assert out["attention_mask"][i, :n].all() and not out["attention_mask"][i, n:].any()
        rows.append({k: out[k][i, :n].tolist() for k in FIELDS})
    return rows


def _mismatches(graph, records, expected_of) -> list[str]:
    wrong = []
    for (pair, max_length), group in _groups(records).items():
        for record, got in zip(group, _graph_rows(graph, group, pair, max_length), strict=True):
            want = expected_of(record)
            for field in FIELDS:
                if got[field] != want[field]:
                    wrong.append(f"record {record['n']} ({record['kind']}, max_length {record['max_length']}) "
                                 f"{field}: graph {got[field][:12]}... fast {want[field][:12]}...")
    return wrong


def test_golden_corpus_uncased_ids_equal_the_fast_tokenizer(uncased):
    _, graph = uncased
    records = golden_records()
    assert len(records) == 900
    assert not _mismatches(graph, records, lambda r: r["fast"])


def test_golden_corpus_cased_ids_equal_the_fast_tokenizer(cased):
    tok, graph, capitals = cased

    def fast(record):
        truncation = {"truncation": True, "max_length": record["max_length"]} if record["truncation"] else {}
        return tok(record["text"], record["text_pair"], **truncation)

    records = golden_records()
    expected = [fast(r)["input_ids"] for r in records]
    assert sum(i in capitals for ids in expected for i in ids) > 500  # the capitals are used
    assert not _mismatches(graph, records, fast)


def _blocks() -> list[str]:
    chars = graph_tokenizer._all_characters()
    return ["".join(chars[i:i + 64]) for i in range(0, len(chars), 64)]


# NFD reorders combining marks by combining class; the graph maps one character at a time, so where
# marks the normaliser keeps meet out of order, it keeps them in their order. The blocks where this
# happens among all code points in order (with accent stripping, i.e. uncased):
REORDERED_BLOCKS_UNCASED = {0x1D140, 0x1E940}  # musical symbols (U+1D16D before U+1D165), Adlam marks


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_every_code_point_normalises_as_the_rust_normaliser(which, request):
    tok, graph = request.getfixturevalue(which)[:2]
    blocks = _blocks()
    got = graph.normalize(tf.constant(blocks)).numpy()
    normalizer = tok.backend_tokenizer.normalizer
    wrong = {ord(b[0]) for b, g in zip(blocks, got, strict=True) if normalizer.normalize_str(b) != g.decode("utf-8")}
    assert wrong == (REORDERED_BLOCKS_UNCASED if which == "uncased" else set())


@pytest.mark.parametrize("text, marks", [("a\U0001D16D\U0001D165", "\U0001D165\U0001D16D"),
                                         ("x\U0001E944\U0001E94A", "\U0001E94A\U0001E944")])
def test_pinned_difference_combining_marks_keep_their_order(uncased, text, marks):
    """Known difference: the graph keeps marks of different combining classes in their order; the Rust
    NFD sorts them. The ids agree on this vocabulary (either order is [UNK])."""
    tok, graph = uncased
    assert tok.backend_tokenizer.normalizer.normalize_str(text) == text[0] + marks
    assert graph.normalize(tf.constant([text])).numpy()[0].decode("utf-8") == text
    assert graph(tf.constant([text]))["input_ids"].numpy()[0].tolist() == tok(text)["input_ids"]


def test_truncation_to_max_length_with_a_batch_of_mixed_lengths(uncased):
    tok, graph = uncased
    texts = [r["text"] for r in golden_records()[:40]]
    pairs = [r["text"] for r in golden_records()[40:80]]
    for max_length in (3, 4, 17, 64):
        out = graph(tf.constant(texts), tf.constant(pairs), max_length=max_length)
        want = tok(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        for field in FIELDS:
            np.testing.assert_array_equal(out[field].numpy(), want[field], err_msg=f"{field} at {max_length}")


def test_an_empty_batch_and_empty_strings(uncased):
    tok, graph = uncased
    assert graph(tf.constant([], tf.string))["input_ids"].shape == (0, 0)
    out = graph(tf.constant(["", " "]), tf.constant(["", "a"]))
    assert out["input_ids"].numpy().tolist() == [tok("", "")["input_ids"] + [0], tok(" ", "a")["input_ids"]]


def test_tokenizers_the_graph_cannot_follow_are_refused(tmp_path):
    tok = ConvBertTokenizerFast(fixture_file("tokenizer/vocab.txt"))
    tok.backend_tokenizer.add_special_tokens([AddedToken("[unused0]", lstrip=True, normalized=False)])
    with pytest.raises(ValueError, match=r"'\[unused0\]' \(id 1\) sets lstrip"):
        graph_tokenizer.build(tok, 64)
    with pytest.raises(ValueError, match="max_length must leave room"):
        graph_tokenizer.build(ConvBertTokenizerFast(fixture_file("tokenizer/vocab.txt")), 2)
