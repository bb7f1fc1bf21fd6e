"""Pretraining data: corpus reading, ELECTRA packing, shards and their manifest, batching, masking.

The tokenizer is the real BERT-uncased one (tests/fixtures/tokenizer), so sentence lengths and
special ids are what a user's run sees.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from convbert_common import pretraining_data as pdata
from convbert_common.tokenizer import ConvBertTokenizerFast
from tests.conftest import hf_tokenizer_dir
from tests.tolerances import BINOMIAL_SLACK, BINOMIAL_Z

TOKENIZER_DIR = hf_tokenizer_dir()
CLS, SEP, PAD, MASK, UNK = 101, 102, 0, 103, 100


@pytest.fixture(scope="module")
def tokenizer():
    return ConvBertTokenizerFast.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def words(tokenizer):
    """Whole-word vocabulary entries, each one token, to compose sentences of known length."""
    vocab = tokenizer.get_vocab()
    return sorted(t for t, i in vocab.items() if t.isalpha() and t.isascii() and len(t) >= 3 and i > 2000)[:3000]


def make_documents(words, seed, n_docs=12, max_words=40, long_every=7):
    """Documents (lists of sentences) with varied lengths; every ``long_every``-th sentence is long."""
    rng = np.random.default_rng(seed)
    docs = []
    count = 0
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(1, 15))):
            count += 1
            n = int(rng.integers(60, 90)) if count % long_every == 0 else int(rng.integers(1, max_words))
            sentences.append(" ".join(rng.choice(words, n)) + ".")
        docs.append(sentences)
    return docs


def write_text(path: Path, docs) -> Path:
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return path


def token_stream(tokenizer, docs):
    """Per document: its sentences' ids, tokenized one by one (independently of the batching)."""
    return [[tokenizer(s, add_special_tokens=False)["input_ids"] for s in doc] for doc in docs]


def walk_examples(examples, tokenized_docs, max_seq_length):
    """Check that the examples consume the documents in order, sentence-aligned, never across one.

    Returns the number of tokens the walk consumed (kept plus dropped).
    """
    docs = [[t for s in doc for t in s] for doc in tokenized_docs if any(doc)]
    boundaries = [set(np.cumsum([0] + [len(s) for s in doc if s]).tolist()) for doc in tokenized_docs if any(doc)]
    d, p, consumed = 0, 0, 0
    for number, ex in enumerate(examples):
        stream, cuts = docs[d], boundaries[d]
        assert p in cuts, f"example {number} starts inside a sentence"
        assert stream[p : p + len(ex.first)] == ex.first, f"example {number}: A is not the next text"
        p += len(ex.first) + ex.first_dropped
        if ex.second or ex.second_dropped:
            assert p in cuts, f"example {number}: B does not start at a sentence boundary"
        assert stream[p : p + len(ex.second)] == ex.second, f"example {number}: B is not the next text"
        p += len(ex.second) + ex.second_dropped
        assert p in cuts and p <= len(stream), f"example {number} ends inside a sentence or past its document"
        # Tokens are dropped only from an example the length rule filled: A to max - 2, or A + B
        # to max - 3 (B is dropped whole when A alone already fills that).
        if ex.first_dropped:
            assert len(ex.first) == max_seq_length - 2
        if ex.second_dropped:
            assert len(ex.first) + len(ex.second) >= max_seq_length - 3
            assert ex.second or len(ex.first) >= max_seq_length - 3
        consumed += len(ex.first) + ex.first_dropped + len(ex.second) + ex.second_dropped
        if p == len(stream):
            d, p = d + 1, 0
    assert d == len(docs), f"examples stop at document {d} of {len(docs)}"
    return consumed


def build(tmp_path, corpus, name="data", **kwargs):
    kwargs.setdefault("max_seq_length", 64)
    kwargs.setdefault("progress", False)
    return pdata.build_dataset(corpus, TOKENIZER_DIR, tmp_path / name, **kwargs)


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def within_binomial(count, n, p):
    sigma = np.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= BINOMIAL_Z * sigma + BINOMIAL_SLACK


# ------------------------------------------------------------------------------ packing
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_seq_length", [32, 128])
def test_every_corpus_token_lands_in_one_example_except_the_rule_s_cuts(tmp_path, tokenizer, words, seed,
                                                                         max_seq_length):
    docs = make_documents(words, seed)
    corpus = write_text(tmp_path / "corpus.txt", docs)
    stats = pdata.CorpusStats()
    examples = list(
        pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=max_seq_length, seed=seed, stats=stats)
    )
    tokenized = token_stream(tokenizer, docs)
    total = sum(len(s) for doc in tokenized for s in doc)
    assert walk_examples(examples, tokenized, max_seq_length) == total
    assert stats.corpus_tokens == total
    assert stats.example_tokens + stats.dropped_tokens == total
    assert stats.example_tokens == sum(len(e.first) + len(e.second) for e in examples)
    assert stats.documents == len(docs)


def test_one_doc_per_line_keeps_each_line_its_own_document(tmp_path, tokenizer, words):
    docs = make_documents(words, 5, n_docs=20)
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(" ".join(doc) for doc in docs) + "\n\n", encoding="utf-8")
    examples = list(pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=48, seed=0,
                                        settings=pdata.CorpusSettings(one_doc_per_line=True)))
    # One line per document, split at ". " into the original sentences.
    tokenized = token_stream(tokenizer, docs)
    assert walk_examples(examples, tokenized, 48) == sum(len(s) for doc in tokenized for s in doc)


def test_sentence_split_of_one_line_documents():
    assert pdata.split_sentences(' He said "stop." Then (quietly) left?! Yes.\tNo (not yet.) e.g.x ') == [
        'He said "stop."',
        "Then (quietly) left?!",
        "Yes.",
        "No (not yet.)",
        "e.g.x",
    ]


def test_examples_are_cls_a_sep_b_sep_with_token_types(tmp_path, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 3, n_docs=30))
    manifest = build(tmp_path, corpus, max_seq_length=64)
    data = pdata.PretrainingDataset(tmp_path / "data")
    assert len(data) == manifest["counts"]["examples"] > 20
    with_b = 0
    for i in range(len(data)):
        ex = data[i]
        ids, att, types = ex["input_ids"], ex["attention_mask"], ex["token_type_ids"]
        assert ids.shape == att.shape == types.shape == (64,)
        n = int(att.sum())
        assert att[:n].all() and not att[n:].any()
        assert (ids[n:] == PAD).all() and not types[n:].any()
        assert ids[0] == CLS and ids[n - 1] == SEP
        seps = np.flatnonzero(ids[:n] == SEP)
        assert len(seps) in (1, 2) and seps[-1] == n - 1
        # Types: 0 through the first [SEP], then 1 through the last.
        assert not types[: seps[0] + 1].any()
        assert types[seps[0] + 1 : n].all()
        with_b += len(seps) == 2
        assert (len(seps) == 2) == bool(types.any())
    assert 0 < with_b < len(data)


def test_special_token_strings_in_the_text_are_plain_text(tmp_path, tokenizer):
    corpus = tmp_path / "c.txt"
    corpus.write_text("BERT puts [CLS] first and [SEP] between segments.\nA [MASK] hides a word; [PAD] pads.\n")
    (example,) = pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=64, seed=0)
    assert not {CLS, SEP, PAD, MASK} & set(example.first + example.second)
    assert tokenizer.convert_tokens_to_ids(["[", "sep", "]"]) == example.first[8:11]


def test_single_segment_probability_and_b_segments(tmp_path, tokenizer, words):
    docs = make_documents(words, 8, n_docs=200, max_words=6, long_every=10**9)
    corpus = write_text(tmp_path / "short.txt", docs)
    always = list(pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=64, seed=0,
                                     settings=pdata.CorpusSettings(single_segment_prob=1.0)))
    assert all(not e.second for e in always)
    never = list(
        pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=64, seed=0,
                            settings=pdata.CorpusSettings(single_segment_prob=0.0, short_seq_prob=0.0))
    )
    # Short sentences never fill A, so an example that reached the target always has a B.
    full = [e for e in never if len(e.first) + len(e.second) + e.first_dropped + e.second_dropped >= 64]
    assert full and all(e.second for e in full)
    stats = pdata.CorpusStats()
    default = list(pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=64, seed=0, stats=stats))
    assert within_binomial(stats.single_segment_examples, len(default), pdata.SINGLE_SEGMENT_PROB)


def test_only_random_targets_make_examples_short_inside_a_document(tmp_path, tokenizer, words):
    docs = make_documents(words, 9, n_docs=10)
    corpus = write_text(tmp_path / "c.txt", docs)
    tokenized = token_stream(tokenizer, docs)

    def not_last_of_document(examples):
        # Recover each example's document from the walk: the examples before a document's end.
        lengths = [sum(len(s) for s in doc) for doc in tokenized]
        out, d, p = [], 0, 0
        for ex in examples:
            p += len(ex.first) + ex.first_dropped + len(ex.second) + ex.second_dropped
            if p == lengths[d]:
                d, p = d + 1, 0
            else:
                out.append(ex)
        return out

    full = not_last_of_document(pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=48, seed=0,
                                                    settings=pdata.CorpusSettings(short_seq_prob=0.0)))
    assert full and all(len(e.input_ids(CLS, SEP)) == 48 for e in full)
    short = not_last_of_document(pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=48, seed=0,
                                                     settings=pdata.CorpusSettings(short_seq_prob=1.0)))
    assert any(len(e.input_ids(CLS, SEP)) < 48 for e in short)


def test_packing_is_deterministic_per_seed(tmp_path, tokenizer, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 4, n_docs=40))

    def run(seed):
        return [(e.first, e.second) for e in pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=64,
                                                                 seed=seed)]

    assert run(7) == run(7)
    assert run(7) != run(8)


# ------------------------------------------------------------------------------ shards and manifest
def test_shards_reload_bit_identically(tmp_path, tokenizer, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 6, n_docs=40))
    manifest = build(tmp_path, corpus, "one", max_seq_length=64, seed=3)
    sharded = build(tmp_path, corpus, "many", max_seq_length=64, seed=3, max_shard_tokens=300)
    assert len(manifest["shards"]) == 1 and len(sharded["shards"]) > 3
    expected = [e.input_ids(CLS, SEP) for e in pdata.iter_examples([str(corpus)], tokenizer, max_seq_length=64,
                                                                   seed=3)]
    for name in ("one", "many"):
        data = pdata.PretrainingDataset(tmp_path / name)
        batch = data.gather(np.arange(len(data)))
        assert batch["input_ids"].dtype == np.int64
        got = [row[: int(m.sum())].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"],
                                                                 strict=True)]
        assert got == expected
    # A second build of the same inputs writes the same bytes.
    build(tmp_path, corpus, "again", max_seq_length=64, seed=3)
    assert file_hashes(tmp_path / "again") == file_hashes(tmp_path / "one")
    ids = np.load(tmp_path / "one" / manifest["shards"][0]["ids"], mmap_mode="r")
    assert ids.dtype == np.int32 and len(ids) == manifest["counts"]["total_ids"]


def test_manifest_records_tokenizer_settings_sources_and_counts(tmp_path, tokenizer, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 1))
    manifest = build(tmp_path, corpus, max_seq_length=64, seed=5)
    on_disk = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["format_version"] == pdata.FORMAT_VERSION
    assert manifest["max_seq_length"] == 64 and manifest["seed"] == 5
    vocab_sha = hashlib.sha256((TOKENIZER_DIR / "vocab.txt").read_bytes()).hexdigest()
    assert manifest["tokenizer"]["vocab_sha256"] == vocab_sha
    assert manifest["tokenizer"]["do_lower_case"] is True
    assert manifest["tokenizer"]["special_ids"] == {"cls": CLS, "sep": SEP, "pad": PAD, "mask": MASK, "unk": UNK}
    (source,) = manifest["sources"]
    assert source["path"] == str(corpus) and source["size"] == corpus.stat().st_size
    assert source["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    counts = manifest["counts"]
    assert counts["example_tokens"] + counts["dropped_tokens"] == counts["corpus_tokens"]
    assert sum(s["examples"] for s in manifest["shards"]) == counts["examples"]


def test_rerun_reuses_the_shards_and_says_so(tmp_path, words, caplog):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 2))
    first = build(tmp_path, corpus)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()}
    with caplog.at_level(logging.INFO, logger="convbert_common.pretraining_data"):
        again = build(tmp_path, corpus)
    assert again == first
    assert "reusing" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()} == before
    # Same bytes, newer mtime: still the same input.
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))
    assert build(tmp_path, corpus) == first


def test_other_inputs_or_settings_raise_unless_overwrite(tmp_path, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 2))
    build(tmp_path, corpus, seed=0)
    with pytest.raises(ValueError, match=r"built differently: seed 0 -> 1\. Pass overwrite=True"):
        build(tmp_path, corpus, seed=1)
    with pytest.raises(ValueError, match=r"max_seq_length 64 -> 32"):
        build(tmp_path, corpus, max_seq_length=32)
    with pytest.raises(ValueError, match=r"one_doc_per_line False -> True"):
        build(tmp_path, corpus, one_doc_per_line=True)
    text = corpus.read_text()
    mtime = corpus.stat().st_mtime_ns
    corpus.write_text(text.replace("a", "e", 1))  # same size, other bytes
    os.utime(corpus, ns=(mtime + 10**9, mtime + 10**9))  # a write within one clock tick keeps the mtime
    with pytest.raises(ValueError, match=rf"{corpus} changed \(modified since the build, different sha256\)"):
        build(tmp_path, corpus)
    corpus.write_text(text + "More text here.\n")
    with pytest.raises(ValueError, match=rf"{corpus} changed size"):
        build(tmp_path, corpus)
    rebuilt = build(tmp_path, corpus, overwrite=True)
    assert rebuilt["sources"][0]["size"] == corpus.stat().st_size
    assert pdata.PretrainingDataset(tmp_path / "data").manifest == rebuilt
    other = write_text(tmp_path / "d.txt", make_documents(words, 3))
    with pytest.raises(ValueError, match=r"the corpus files differ"):
        build(tmp_path, other)


def test_output_dir_that_is_not_pretraining_data_is_kept(tmp_path, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 2))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"exists and is not pretraining data \(no manifest.json\)"):
        build(tmp_path, corpus)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"
    build(tmp_path, corpus, overwrite=True)
    assert not (tmp_path / "data" / "notes.txt").exists()


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    empty = tmp_path / "corpus" / "empty.txt"
    empty.parent.mkdir()
    empty.write_text("\n\n")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="the corpus is empty"):
        pdata.build_dataset(empty, TOKENIZER_DIR, out / "data", max_seq_length=64, progress=False)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------ reader checks
def test_tokenizer_with_another_vocabulary_or_casing_is_refused(tmp_path, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 2))
    build(tmp_path, corpus)
    pdata.PretrainingDataset(tmp_path / "data", tokenizer=TOKENIZER_DIR)  # the same one passes
    other = tmp_path / "other_tokenizer"
    shutil.copytree(TOKENIZER_DIR, other)
    lines = (other / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[2000], lines[2001] = lines[2001], lines[2000]
    (other / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"built with another tokenizer: its vocab.txt has sha256 \w+\.\.\. "
                                         r"\(30522 tokens\), the given tokenizer's \w+\.\.\. \(30522 tokens\)"):
        pdata.PretrainingDataset(tmp_path / "data", tokenizer=other)
    cased = ConvBertTokenizerFast(TOKENIZER_DIR / "vocab.txt", do_lower_case=False)
    casing = r"it was tokenized with do_lower_case=True, the given tokenizer has do_lower_case=False"
    with pytest.raises(ValueError, match=casing):
        pdata.PretrainingDataset(tmp_path / "data", tokenizer=cased)


def test_max_seq_length_above_the_position_table_is_refused(tmp_path, words):
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 2))
    message = r"max_seq_length 64 is above the model's max_position_embeddings 32"
    with pytest.raises(ValueError, match=message):
        build(tmp_path, corpus, max_seq_length=64, max_position_embeddings=32)
    assert not (tmp_path / "data").exists()
    build(tmp_path, corpus, max_seq_length=64, max_position_embeddings=64)
    with pytest.raises(ValueError, match=message):
        pdata.PretrainingDataset(tmp_path / "data", max_position_embeddings=32)
    with pytest.raises(ValueError, match=r"max_seq_length must be an integer >= 5, got 4"):
        build(tmp_path, corpus, "tiny", max_seq_length=4)


def test_reader_names_a_missing_manifest_or_shard(tmp_path, words):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} is not a pretraining data directory: no manifest.json"):
        pdata.PretrainingDataset(tmp_path)
    corpus = write_text(tmp_path / "c.txt", make_documents(words, 2))
    manifest = build(tmp_path, corpus)
    (tmp_path / "data" / manifest["shards"][0]["offsets"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"shard file missing: .*shard-00000\.offsets\.npy"):
        pdata.PretrainingDataset(tmp_path / "data")


# ------------------------------------------------------------------------------ batches
@pytest.fixture(scope="module")
def dataset(tmp_path_factory, words):
    root = tmp_path_factory.mktemp("batches")
    corpus = write_text(root / "c.txt", make_documents(words, 11, n_docs=40))
    pdata.build_dataset(corpus, TOKENIZER_DIR, root / "data", max_seq_length=32, progress=False,
                        max_shard_tokens=500)
    data = pdata.PretrainingDataset(root / "data")
    assert len(data) > 100
    return data


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_slices_are_disjoint_and_cover_the_epoch(dataset, drop_last):
    batch, world = 5, 3
    steps = dataset.steps_per_epoch(batch, world, drop_last=drop_last)
    per_rank = [
        np.concatenate(list(dataset.batch_indices(batch, seed=1, epoch=0, rank=r, world_size=world,
                                                  drop_last=drop_last)))
        for r in range(world)
    ]
    assert all(len(p) == steps * batch for p in per_rank)
    for a in range(world):
        for b in range(a + 1, world):
            overlap = set(per_rank[a].tolist()) & set(per_rank[b].tolist())
            # Only the wrap-around that completes the last batch may repeat an example.
            assert not overlap if drop_last else len(overlap) <= steps * batch * world - len(dataset)
    seen = np.concatenate(per_rank)
    if drop_last:
        assert len(set(seen.tolist())) == len(seen) == (len(dataset) // (batch * world)) * batch * world
    else:
        assert set(seen.tolist()) == set(range(len(dataset)))


def test_one_rank_with_the_whole_batch_sees_what_the_ranks_see(dataset):
    single = dataset.batches(8, seed=2, epoch=1)
    ranks = [dataset.batches(4, seed=2, epoch=1, rank=r, world_size=2) for r in range(2)]
    for whole, first, second in zip(single, *ranks, strict=True):
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]))


def test_resume_from_a_step_gives_the_same_next_batches(dataset):
    full = list(dataset.batches(6, seed=3, epoch=2, rank=1, world_size=2))
    resumed = list(dataset.batches(6, seed=3, epoch=2, rank=1, world_size=2, start_step=4))
    assert len(resumed) == len(full) - 4
    for a, b in zip(full[4:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_epochs_shuffle_differently_and_deterministically(dataset):
    assert np.array_equal(dataset.epoch_order(0, 0), dataset.epoch_order(0, 0))
    assert not np.array_equal(dataset.epoch_order(0, 0), dataset.epoch_order(0, 1))
    assert not np.array_equal(dataset.epoch_order(0, 0), dataset.epoch_order(1, 0))
    assert sorted(dataset.epoch_order(4, 4).tolist()) == list(range(len(dataset)))


def test_batch_arguments_are_checked(dataset):
    with pytest.raises(ValueError, match=r"rank 2 is not below world_size 2"):
        next(dataset.batches(4, seed=0, epoch=0, rank=2, world_size=2))
    steps = dataset.steps_per_epoch(4)
    with pytest.raises(ValueError, match=rf"start_step {steps + 1} is past the end of the epoch \({steps} steps\)"):
        next(dataset.batches(4, seed=0, epoch=0, start_step=steps + 1))
    with pytest.raises(ValueError, match=rf"has {len(dataset)} examples, fewer than one global batch of 1000 x 1"):
        next(dataset.batches(1000, seed=0, epoch=0))
    with pytest.raises(IndexError, match=rf"example index {len(dataset)} out of range"):
        dataset[len(dataset)]
    np.testing.assert_array_equal(dataset[-1]["input_ids"], dataset[len(dataset) - 1]["input_ids"])


# ------------------------------------------------------------------------------ corpus formats
def test_txt_gz_and_jsonl_read_the_same_documents(tmp_path, tokenizer, words):
    docs = make_documents(words, 12)
    txt = write_text(tmp_path / "a.txt", docs)
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress(txt.read_bytes()))
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": "\n".join(d)}) + "\n\n" for i, d in enumerate(docs)))

    def examples(path, **kwargs):
        return [(e.first, e.second) for e in pdata.iter_examples([str(path)], tokenizer, max_seq_length=64, seed=0,
                                                                 settings=pdata.CorpusSettings(**kwargs))]

    assert examples(gz) == examples(txt)
    assert examples(jsonl, text_field="body") == examples(txt)


def test_folders_are_read_recursively_in_sorted_order(tmp_path):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ("b/2.txt", "a.jsonl", "b/1.txt.gz", "z.md", ".hidden/x.txt"):
        (root / name).write_text("x")
    extra = tmp_path / "extra.txt"
    extra.write_text("x")
    files = pdata.resolve_corpus([extra, root])
    assert files == [str(extra)] + [str(root / n) for n in ("a.jsonl", "b/1.txt.gz", "b/2.txt")]
    with pytest.raises(ValueError, match=r"corpus file .*extra\.txt is given twice"):
        pdata.resolve_corpus([extra, extra])


def test_non_utf8_lines_name_the_file_and_byte_offset_or_are_skipped_and_counted(tmp_path, caplog):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"A fine first line.\nA bad \xff line.\nAnother fine line.\n")
    with pytest.raises(ValueError, match=rf"{bad} is not UTF-8 text: line 2, byte offset 25 \(invalid start byte\); "
                                         r"pass skip_bad_lines=True \(--skip-bad-lines\)"):
        build(tmp_path, bad)
    assert not (tmp_path / "data").exists()
    with caplog.at_level(logging.WARNING, logger="convbert_common.pretraining_data"):
        manifest = build(tmp_path, bad, skip_bad_lines=True)
    assert manifest["counts"]["skipped_lines"] == 1 and manifest["counts"]["lines"] == 2
    assert f"{bad}: skipped 1 lines" in caplog.text
    gz = tmp_path / "bad.txt.gz"
    gz.write_bytes(gzip.compress(bad.read_bytes()))
    with pytest.raises(ValueError, match=r"line 2, byte offset 25 of the decompressed text"):
        build(tmp_path, gz, "gz")


@pytest.mark.parametrize(("second_line", "problem"), [
    ('{"text": "broken"', r"not valid JSON \(Expecting ',' delimiter at column 18\)"),
    ('["a list"]', r"a JSONL line must be a JSON object, got list"),
    ('{"body": "x"}', r"no field 'text' \(keys: body\); set text_field"),
    ('{"text": 3}', r"field 'text' is int, not a string"),
])
def test_malformed_jsonl_names_the_file_and_line(tmp_path, second_line, problem):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "Fine."}\n' + second_line + "\n")
    with pytest.raises(ValueError, match=rf"{path} line 2: {problem}"):
        build(tmp_path, path)
    manifest = build(tmp_path, path, skip_bad_lines=True)
    assert manifest["counts"]["skipped_lines"] == 1 and manifest["counts"]["examples"] == 1


def test_empty_or_untokenizable_corpus_names_the_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n")
    with pytest.raises(ValueError, match=rf"the corpus is empty: no text in {empty} \(1 files\)"):
        build(tmp_path, empty)
    junk = tmp_path / "junk.txt"
    junk.write_text("\x00\x01\n\n\x02\x03\x04\n")
    with pytest.raises(ValueError, match=rf"no line of the corpus tokenizes to any token: 2 documents in {junk}"):
        build(tmp_path, junk)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\n")
    with pytest.raises(ValueError, match=r"the corpus is empty: .* \(1 bad lines skipped\)"):
        build(tmp_path, bad, skip_bad_lines=True)


def test_bad_corpus_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"corpus path not found: {tmp_path / 'nope.txt'}"):
        pdata.resolve_corpus(tmp_path / "nope.txt")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.md is not one of \.txt, \.txt\.gz, \.jsonl, \.jsonl\.gz"):
        pdata.resolve_corpus(tmp_path / "notes.md")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"corpus folder .*folder holds no \.txt"):
        pdata.resolve_corpus(tmp_path / "folder")
    with pytest.raises(ValueError, match=r"no corpus given"):
        pdata.resolve_corpus([])
    corrupt = tmp_path / "c.txt.gz"
    corrupt.write_bytes(gzip.compress(b"Some text.\n" * 100)[:-20])
    with pytest.raises(ValueError, match=rf"{corrupt}: cannot read it as gzip"):
        build(tmp_path, corrupt)


def test_bundled_sample_is_prose_with_its_licence(tmp_path, capsys):
    sample = Path(pdata.SAMPLE_CORPUS)
    folder = sample.parent
    assert (folder / "README.md").is_file() and (folder / "LICENSE-PSF.txt").is_file()
    assert "Python Software Foundation License" in (folder / "README.md").read_text()
    assert 100_000 < sample.stat().st_size < 400_000
    manifest = pdata.build_dataset(sample, TOKENIZER_DIR, tmp_path / "sample", max_seq_length=128, progress=True)
    assert manifest["counts"]["documents"] > 50 and manifest["counts"]["examples"] > 300
    assert "pretraining data" in capsys.readouterr().err  # the progress bar


# ------------------------------------------------------------------------------ masking
MASK_ARGS = {"special_ids": (CLS, SEP, PAD, MASK), "vocab_size": 30522, "mask_token_id": MASK}


def random_batch(seed, batch=64, length=128):
    """[CLS] text [SEP] text [SEP] then padding, with random lengths; text ids avoid the special ids."""
    rng = np.random.default_rng(seed)
    ids = np.full((batch, length), PAD, dtype=np.int64)
    mask = np.zeros((batch, length), dtype=np.int64)
    for row in range(batch):
        n = int(rng.integers(4, length + 1))
        ids[row, :n] = rng.integers(1000, 30522, n)
        ids[row, 0], ids[row, n - 1], ids[row, n // 2] = CLS, SEP, SEP
        mask[row, :n] = 1
    return ids, mask


def real_tokens(ids, mask):
    return (mask == 1) & ~np.isin(ids, [CLS, SEP, PAD, MASK])


def test_each_sequence_gets_electras_count_of_masks_on_real_tokens_only():
    ids, mask = random_batch(0)
    ids[3, 5] = MASK  # an existing [MASK] is never a target
    masked, labels = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=0, step=0)
    real = real_tokens(ids, mask)
    chosen = labels != pdata.IGNORE_INDEX
    assert not (chosen & ~real).any()
    np.testing.assert_array_equal(chosen.sum(1), np.maximum(1, np.rint(0.15 * real.sum(1))))
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])


def test_masked_positions_are_uniform_over_real_tokens():
    # Every position of a full row is equally likely: per-position counts within binomial bounds.
    ids = np.full((4000, 40), 2000, dtype=np.int64)
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = np.ones_like(ids)
    _, labels = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=1, step=0)
    counts = (labels != pdata.IGNORE_INDEX).sum(0)
    assert counts[0] == counts[-1] == 0
    p = round(0.15 * 38) / 38
    assert all(within_binomial(c, len(ids), p) for c in counts[1:-1]), counts


def test_pad_and_special_tokens_are_never_masked_or_drawn(tmp_path):
    ids, mask = random_batch(2, batch=256)
    special_mask = np.isin(ids, [CLS, SEP]).astype(np.int64)
    ids_unk = ids.copy()
    ids_unk[:, 1] = UNK
    for kwargs in ({"special_ids": (CLS, SEP, PAD, MASK)}, {"special_tokens_mask": special_mask}):
        masked, labels = pdata.mask_tokens(ids, mask, vocab_size=30522, mask_token_id=MASK, seed=4, step=1,
                                           **kwargs)
        assert not (labels[mask == 0] != pdata.IGNORE_INDEX).any()
        assert not (labels[special_mask == 1] != pdata.IGNORE_INDEX).any()
        np.testing.assert_array_equal(masked[mask == 0], PAD)
    masked, labels = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=4, step=1, mask_token_prob=0.0,
                                       random_token_prob=1.0)
    replaced = labels != pdata.IGNORE_INDEX
    assert not np.isin(masked[replaced], [CLS, SEP, PAD, MASK]).any()


@pytest.mark.parametrize(
    "mask_token_prob, random_token_prob", [(0.85, 0.0), (0.8, 0.1)], ids=["electra_85_15", "bert_80_10_10"]
)
def test_mask_random_and_unchanged_split(mask_token_prob, random_token_prob):
    ids, mask = random_batch(3, batch=512)
    masked, labels = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=9, step=2, mask_token_prob=mask_token_prob,
                                       random_token_prob=random_token_prob)
    chosen = labels != pdata.IGNORE_INDEX
    n = int(chosen.sum())
    as_mask = int((masked[chosen] == MASK).sum())
    unchanged = int((masked[chosen] == ids[chosen]).sum())
    random = n - as_mask - unchanged
    assert n > 5000
    assert within_binomial(as_mask, n, mask_token_prob)
    # A random draw equals the original with probability 1 / 30518: it counts as unchanged.
    assert within_binomial(unchanged, n, 1 - mask_token_prob - random_token_prob + random_token_prob / 30518)
    assert within_binomial(random, n, random_token_prob * (1 - 1 / 30518))
    if random_token_prob == 0:
        assert random == 0


def test_masks_are_deterministic_per_seed_and_step_and_fresh_each_step():
    ids, mask = random_batch(5)
    first = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=11, step=7)
    again = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=11, step=7)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=11, step=8)[1])
    assert not np.array_equal(first[1], pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=12, step=7)[1])
    # A rank holding rows 32.. of the global batch masks them as one process would.
    part = pdata.mask_tokens(ids[32:], mask[32:], **MASK_ARGS, seed=11, step=7, row_offset=32)
    np.testing.assert_array_equal(part[0], first[0][32:])
    np.testing.assert_array_equal(part[1], first[1][32:])
    # With a Generator: the same state gives the same masks.
    a = pdata.mask_tokens(ids, mask, **MASK_ARGS, rng=np.random.default_rng(3))
    b = pdata.mask_tokens(ids, mask, **MASK_ARGS, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a[1], b[1])


def test_rows_without_real_tokens_and_dtypes():
    ids = np.array([[CLS, SEP, PAD, PAD], [CLS, 2000, 2001, SEP]], dtype=np.int32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    masked, labels = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=0)
    assert masked.dtype == labels.dtype == np.int32
    assert (labels[0] == pdata.IGNORE_INDEX).all()
    assert (labels[1] != pdata.IGNORE_INDEX).sum() == 1  # max(1, round(0.15 * 2))
    none = pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=0, mask_prob=0.0)[1]
    assert (none == pdata.IGNORE_INDEX).all()


def test_mask_tokens_rejects_bad_arguments():
    ids, mask = random_batch(0, batch=2, length=8)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 7\), input_ids \(2, 8\)"):
        pdata.mask_tokens(ids, mask[:, :7], **MASK_ARGS, seed=0)
    with pytest.raises(ValueError, match=r"input_ids must be 2-D \(batch, length\), got shape \(8,\)"):
        pdata.mask_tokens(ids[0], mask[0], **MASK_ARGS, seed=0)
    with pytest.raises(ValueError, match=r"pass special_ids or special_tokens_mask"):
        pdata.mask_tokens(ids, mask, vocab_size=30522, mask_token_id=MASK, seed=0)
    with pytest.raises(ValueError, match=r"pass exactly one of seed \(with step\) or rng"):
        pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"mask_token_prob 0.9 \+ random_token_prob 0.2 is above 1"):
        pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=0, mask_token_prob=0.9, random_token_prob=0.2)
    with pytest.raises(ValueError, match=r"mask_prob must be a probability in \[0, 1\], got 1.5"):
        pdata.mask_tokens(ids, mask, **MASK_ARGS, seed=0, mask_prob=1.5)
    bad = ids.copy()
    bad[1, 2] = 40000
    with pytest.raises(ValueError, match=r"input_ids\[1, 2\] = 40000 is outside the vocabulary \(vocab_size 30522\)"):
        pdata.mask_tokens(bad, np.ones_like(mask), **MASK_ARGS, seed=0)
