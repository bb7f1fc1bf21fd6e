"""Pretraining test set-up: a tokenizer cut down to the bundled text's tokens, its data, tiny configs.

The vocabulary is the special tokens plus the 2,416 WordPiece tokens that the BERT-uncased
tokenizer gives the bundled sample text. Greedy longest-match WordPiece then tokenizes that text
exactly as the full vocabulary does, while the generator's softmax is 12x narrower.
"""

from __future__ import annotations

import collections
import json
import pathlib

import pytest

from convbert_common import pretraining as ptc
from convbert_common.config import ConvBertConfig
from convbert_common.pretraining_data import SAMPLE_CORPUS, build_dataset
from convbert_common.tokenizer import ConvBertTokenizerFast
from tests.conftest import hf_tokenizer_dir

BERT_TOKENIZER = hf_tokenizer_dir()
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_SEQ_LENGTH = 32


def tiny_config_dict(vocab_size: int, **overrides) -> dict:
    """A discriminator small enough for ~100 steps in a few seconds: H 32, E 16, 2 layers, 2+2 heads."""
    fields = dict(vocab_size=vocab_size, hidden_size=32, embedding_size=16, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=64, conv_kernel_size=5, max_position_embeddings=64,
                  pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  initializer_range=0.05)
    fields.update(overrides)
    return fields


class Assets:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.tokenizer = root / "tokenizer"
        self.data = root / "data"
        self.config = root / "config.json"

    @property
    def vocab_size(self) -> int:
        return len((self.tokenizer / "vocab.txt").read_text(encoding="utf-8").splitlines())

    def config_file(self, name: str, **overrides) -> pathlib.Path:
        path = self.root / name
        fields = tiny_config_dict(self.vocab_size)
        fields.update(overrides)
        path.write_text(json.dumps(fields), encoding="utf-8")
        return path

    def tiny_config(self, **overrides) -> ConvBertConfig:
        return ConvBertConfig(**tiny_config_dict(self.vocab_size, **overrides))


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    root = tmp_path_factory.mktemp("pretraining")
    out = Assets(root)
    bert = ConvBertTokenizerFast.from_pretrained(BERT_TOKENIZER)
    lines = [line for line in pathlib.Path(SAMPLE_CORPUS).read_text(encoding="utf-8").splitlines() if line.strip()]
    counts: collections.Counter = collections.Counter()
    for ids in bert(lines, add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    used = bert.convert_ids_to_tokens(sorted(counts))
    out.tokenizer.mkdir()
    (out.tokenizer / "vocab.txt").write_text("\n".join([*SPECIALS, *used]) + "\n", encoding="utf-8")
    (out.tokenizer / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    build_dataset(SAMPLE_CORPUS, out.tokenizer, out.data, max_seq_length=MAX_SEQ_LENGTH, progress=False)
    out.config_file("config.json")
    return out


def training_settings(assets: Assets, output, **overrides) -> ptc.TrainingSettings:
    """The loops' test run on ``assets``: 12 steps of 8 on the CPU, logged every 2, no progress bar."""
    fields = dict(output=str(output), data=str(assets.data), tokenizer=str(assets.tokenizer),
                  config=str(assets.config), batch_size=8, steps=12, learning_rate=5e-3, warmup_steps=2,
                  log_every=2, save_every=1000, progress=False, device="cpu")
    fields.update(overrides)
    return ptc.TrainingSettings(**fields)


def read_log(output) -> list[dict]:
    """The records of a run's log file, in order."""
    return [json.loads(line) for line in (pathlib.Path(output) / ptc.LOG_NAME).read_text().splitlines()]


def assert_a_hundred_steps_learn(records: list[dict]) -> dict:
    """Both loops' contract for 100 steps on the bundled text logged every 10: every log key, the generator
    loss down by a fifth, the discriminator loss down, 5-20% of the tokens replaced. Returns the last record."""
    assert [r["step"] for r in records] == list(range(10, 101, 10))
    assert set(ptc.LOG_KEYS) <= set(records[0])
    first, last = records[0], records[-1]
    assert last["generator_loss"] <= 0.8 * first["generator_loss"], (first, last)
    assert last["discriminator_loss"] < first["discriminator_loss"], (first, last)
    assert 0.05 < last["replaced_fraction"] < 0.2, last
    return last
