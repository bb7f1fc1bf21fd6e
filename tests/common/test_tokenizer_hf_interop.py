"""Hugging Face transformers loads the tokenizer files we write (runs where the bench extra is installed)."""

import pytest

from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from tests.conftest import hf_tokenizer_dir

transformers = pytest.importorskip("transformers", reason="HF interop needs the bench extra (transformers 4.x)")

TEXTS = ["Hello, World! Ünïcödé and 中文 text.", "[CLS] a [MASK] b", "x" * 120]
PAIRS = ["A second sentence that is rather long to force truncation of the pair", "short"]


@pytest.mark.parametrize("ours,theirs", [(ConvBertTokenizerFast, "ConvBertTokenizerFast"),
                                         (ConvBertTokenizer, "ConvBertTokenizer")])
def test_hf_loads_our_saved_tokenizer_and_encodes_identically(tmp_path, ours, theirs):
    tok = ours.from_pretrained(hf_tokenizer_dir())
    tok.save_pretrained(tmp_path)
    hf = getattr(transformers, theirs).from_pretrained(tmp_path)
    for kwargs in ({}, {"truncation": True, "max_length": 12}, {"padding": "max_length", "max_length": 40}):
        a = tok(TEXTS, [PAIRS[0]] * 3, **kwargs)
        b = hf(TEXTS, [PAIRS[0]] * 3, **kwargs)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert a[key] == b[key], (key, kwargs)
    assert hf.pad_token_id == tok.pad_token_id == 0 and hf.mask_token_id == tok.mask_token_id == 103
