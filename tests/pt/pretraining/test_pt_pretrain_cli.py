"""The commands: pretrain-data, pretrain (from text, from data, from the authors' TF1 checkpoint), fill-mask and
detect-replaced, with their tables, JSON and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from convbert_common import pretraining as ptc
from convbert_common.pretraining_data import SAMPLE_CORPUS
from convbert_pt.pretraining import ConvBertForPreTraining
from convbert_tools.cli import main
from tests.conftest import fixture_file

FAST = ["--no-progress", "--device", "cpu", "--batch-size", "8", "--learning-rate", "5e-3", "--warmup-steps", "2",
        "--log-every", "5"]


@pytest.fixture(scope="module")
def trained(assets, tmp_path_factory):
    """A run of the command from the bundled text (its data built under the output)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["pretrain", "--corpus", SAMPLE_CORPUS, "--tokenizer", str(assets.tokenizer), "--config",
                 str(assets.config), "--output", str(out), "--max-seq-length", "32", "--steps", "20", *FAST])
    assert code == 0
    return out


def test_pretrain_from_text_writes_the_models_the_log_and_the_data(trained, capsys):
    assert ptc.is_pretraining_dir(trained) and (trained / ptc.DATA_DIR / "manifest.json").exists()
    assert (trained / "discriminator" / "vocab.txt").exists() and (trained / "generator" / "vocab.txt").exists()
    log = [json.loads(line) for line in (trained / ptc.LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20]


def test_pretrain_data_then_pretrain_from_it(assets, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["pretrain-data", "--corpus", SAMPLE_CORPUS, "--tokenizer", str(assets.tokenizer), "--output",
                 str(data), "--max-seq-length", "32", "--no-progress"]) == 0
    assert "examples of up to 32 tokens" in capsys.readouterr().out
    assert main(["pretrain", "--data", str(data), "--config", str(assets.config), "--tokenizer",
                 str(assets.tokenizer), "--output", str(tmp_path / "run"), "--steps", "2", *FAST]) == 0
    assert capsys.readouterr().out.startswith(f"pretrained 2 steps -> {tmp_path / 'run'}")


def test_fill_mask_prints_the_generator_s_top_k_as_a_table_and_json(trained, capsys):
    assert main(["fill-mask", str(trained), "the [MASK] statement is executed .", "--top-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "[MASK] at position 2" and len(table) == 5
    assert main(["fill-mask", str(trained / "generator"), "a [MASK] is a [MASK] .", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [m["position"] for m in result["masks"]] == [2, 5]
    for mask in result["masks"]:
        scores = [p["score"] for p in mask["predictions"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert all(p["token_str"].lstrip("#") in p["sequence"] for p in mask["predictions"])


def test_detect_replaced_scores_every_token(trained, capsys):
    assert main(["detect-replaced", str(trained), "the statement is executed .", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [t["token"] for t in result["tokens"]] == ["the", "statement", "is", "executed", "."]
    assert all(0 < t["replaced_probability"] < 1 for t in result["tokens"])
    assert main(["detect-replaced", str(trained / "discriminator"), "the statement is executed ."]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["position", "p(replaced)", "token"]


def test_each_command_refuses_a_model_of_the_wrong_kind(trained, capsys):
    assert main(["fill-mask", str(trained / "discriminator"), "a [MASK] ."]) == 1
    assert "holds a ConvBertForPreTraining, not a masked LM" in capsys.readouterr().err
    assert main(["fill-mask", str(trained), "no mask here ."]) == 1
    assert "the text has no [MASK] token" in capsys.readouterr().err
    assert main(["detect-replaced", str(trained / "generator"), "a text ."]) == 1
    assert "has no replaced-token-detection head" in capsys.readouterr().err
    assert main(["verify", str(trained / "discriminator")]) == 0  # the RTD head in both frameworks
    assert "discriminator_logits" in capsys.readouterr().out
    assert main(["info", str(trained / "discriminator")]) == 0
    assert "class             ConvBertForPreTraining" in capsys.readouterr().out


def test_bad_corpora_and_flags_are_refused_by_name(assets, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    common = ["--tokenizer", str(assets.tokenizer), "--config", str(assets.config), "--steps", "2", *FAST]
    assert main(["pretrain", "--corpus", str(empty), "--output", str(tmp_path / "a"), *common]) == 1
    assert "the corpus is empty" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Good line.\n\nAnother good one \xff here.\n")
    assert main(["pretrain-data", "--corpus", str(bad), "--tokenizer", str(assets.tokenizer), "--output",
                 str(tmp_path / "d"), "--no-progress"]) == 1
    assert f"{bad} is not UTF-8 text: line 3, byte offset 29" in capsys.readouterr().err
    assert main(["pretrain-data", "--corpus", str(bad), "--tokenizer", str(assets.tokenizer), "--output",
                 str(tmp_path / "d"), "--no-progress", "--skip-bad-lines"]) == 0
    assert "1 bad lines skipped" in capsys.readouterr().out
    assert main(["pretrain", "--data", str(assets.data), "--output", str(tmp_path / "k"), "--framework", "keras",
                 "--fsdp", *common]) == 1
    assert "--fsdp shards with PyTorch's FSDP2: use --framework pytorch; with --framework keras, MirroredStrategy" \
        in capsys.readouterr().err
    assert main(["pretrain", "--data", str(assets.data), "--output", str(tmp_path / "g"), "--generator-size", "0",
                 *common]) == 1
    assert "generator_size must be in (0.0, 1.0], got 0" in capsys.readouterr().err


def test_the_authors_tf1_checkpoint_converts_and_pretraining_continues_from_it(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="reading TF1 checkpoints needs tensorflow")
    src = fixture_file("tf1-original/model.ckpt.index").parent
    dst = tmp_path / "authors"
    assert main(["convert", str(src), str(dst), "--pretraining", "-q"]) == 0
    assert "ConvBertForPreTraining + ConvBertForMaskedLM" in capsys.readouterr().out
    corpus = tmp_path / "domain.txt"
    corpus.write_text("\n\n".join(" ".join(f"[unused{(7 * d + i) % 90}]" for i in range(40)) for d in range(64)),
                      encoding="utf-8")
    imported = ConvBertForPreTraining.from_pretrained(dst)
    assert main(["pretrain", "--init-from", str(dst), "--corpus", str(corpus), "--output", str(tmp_path / "run"),
                 "--steps", "2", "--max-seq-length", "32", *FAST]) == 0
    tuned = ConvBertForPreTraining.from_pretrained(tmp_path / "run")
    assert tuned.generator_config.hidden_size == imported.generator_config.hidden_size == 16
    with torch.no_grad():
        moved = (tuned.discriminator_predictions.dense.weight - imported.discriminator_predictions.dense.weight).abs()
    assert 0 < float(moved.max()) < 0.1  # two small steps away from the authors' head, not a fresh one
