"""HF's data collators run on our tokenizers and give what they give on HF's (opt-in: needs transformers).

``DataCollatorWithPadding`` (the ``Trainer`` default), ``DataCollatorForLanguageModeling`` and
``DataCollatorForTokenClassification`` call ``tokenizer.pad``, ``len(tokenizer)``,
``mask_token``, ``convert_tokens_to_ids``, ``get_special_tokens_mask(...,
already_has_special_tokens=True)``, ``pad_token`` / ``pad_token_id`` and ``padding_side``. With
the same seed the masking collator draws the same positions, so the batches must be equal.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from tests.conftest import hf_tokenizer_dir

transformers = pytest.importorskip("transformers", reason="HF collators need the bench extra (transformers 4.x)")
torch = pytest.importorskip("torch")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
HF_FOLDER = hf_tokenizer_dir()
PAIRS = [(ConvBertTokenizerFast, "ConvBertTokenizerFast"), (ConvBertTokenizer, "ConvBertTokenizer")]


def corpus(limit: int = 24) -> list[str]:
    with open(FIXTURES / "corpus.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:limit]


def as_lists(batch) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else np.asarray(v).tolist()) for k, v in batch.items()}


def tokenizers(ours_cls, theirs_name):
    return ours_cls.from_pretrained(HF_FOLDER), getattr(transformers, theirs_name).from_pretrained(HF_FOLDER)


@pytest.mark.parametrize(("ours_cls", "theirs_name"), PAIRS)
@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_data_collator_with_padding_batches_equal_hf_s(ours_cls, theirs_name, return_tensors):
    ours, theirs = tokenizers(ours_cls, theirs_name)
    features = [dict(theirs(t, truncation=True, max_length=64), label=i % 3) for i, t in enumerate(corpus())]
    for kwargs in ({}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 72}):
        make = transformers.DataCollatorWithPadding
        got = make(ours, return_tensors=return_tensors, **kwargs)(copy.deepcopy(features))
        want = make(theirs, return_tensors=return_tensors, **kwargs)(copy.deepcopy(features))
        assert set(got) == set(want) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        assert as_lists(got) == as_lists(want), kwargs
        assert type(got["input_ids"]) is type(want["input_ids"]) and got["input_ids"].dtype == want["input_ids"].dtype


@pytest.mark.parametrize(("ours_cls", "theirs_name"), PAIRS)
@pytest.mark.parametrize("form", ["dicts", "dicts_with_special_tokens_mask", "id_lists"])
def test_data_collator_for_language_modeling_masks_as_on_hf_s_tokenizer(ours_cls, theirs_name, form):
    ours, theirs = tokenizers(ours_cls, theirs_name)
    encoded = [theirs(t, truncation=True, max_length=48, return_special_tokens_mask=True) for t in corpus()]
    if form == "dicts":
        examples = [{"input_ids": e["input_ids"]} for e in encoded]
    elif form == "dicts_with_special_tokens_mask":
        examples = [{"input_ids": e["input_ids"], "special_tokens_mask": e["special_tokens_mask"]} for e in encoded]
    else:
        examples = [e["input_ids"] for e in encoded]
    for kwargs in ({}, {"pad_to_multiple_of": 8, "mlm_probability": 0.3}):
        make = transformers.DataCollatorForLanguageModeling
        got = make(ours, seed=7, **kwargs)(copy.deepcopy(examples))
        want = make(theirs, seed=7, **kwargs)(copy.deepcopy(examples))
        assert as_lists(got) == as_lists(want), kwargs
        labels = got["labels"]
        assert (labels != -100).any() and (got["input_ids"][labels != -100] == ours.mask_token_id).any()
        assert not ((labels != -100) & (got["attention_mask"] == 0)).any() if "attention_mask" in got else True


@pytest.mark.parametrize(("ours_cls", "theirs_name"), PAIRS)
def test_data_collator_for_token_classification_pads_labels_as_on_hf_s(ours_cls, theirs_name):
    ours, theirs = tokenizers(ours_cls, theirs_name)
    features = []
    for text in corpus():
        ids = theirs(text, truncation=True, max_length=40)["input_ids"]
        features.append({"input_ids": ids, "labels": [i % 5 for i in range(len(ids))]})
    got = transformers.DataCollatorForTokenClassification(ours)(copy.deepcopy(features))
    want = transformers.DataCollatorForTokenClassification(theirs)(copy.deepcopy(features))
    assert as_lists(got) == as_lists(want)


def test_a_torch_dataloader_with_the_collator_feeds_whole_batches():
    ours = ConvBertTokenizerFast.from_pretrained(HF_FOLDER)
    features = [dict(ours(t, truncation=True, max_length=32), label=i % 2) for i, t in enumerate(corpus())]
    loader = torch.utils.data.DataLoader(
        features, batch_size=8, collate_fn=transformers.DataCollatorWithPadding(ours, pad_to_multiple_of=8)
    )
    shapes = [tuple(batch["input_ids"].shape) for batch in loader]
    assert len(shapes) == 3 and all(shape[0] == 8 and shape[1] % 8 == 0 for shape in shapes)
