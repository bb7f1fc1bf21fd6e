"""The bf16 opt-in on the CPU: autocast and a bf16-cast model stay within their documented distance of
fp32 on the reference fixtures, agree on the toy classifier's labels, and warn once without bf16 units."""

from __future__ import annotations

import warnings

import pytest
import torch

from convbert_common import cpu
from convbert_pt import ConvBertForMaskedLM, ConvBertForSequenceClassification, ConvBertModel
from convbert_pt.modeling import MODEL_CLASSES
from tests.configs import tiny_config
from tests.parity import assert_close
from tests.pt.conftest import expected_outputs, head_dir, torch_inputs
from tests.tolerances import BF16_LABEL_AGREEMENT, BF16_LOGITS_ATOL

# Each head's class and its first output (heads.py's order): start_logits for question answering.
HEADS = {head: (cls, cls.task.output_keys[0]) for head, cls in MODEL_CLASSES.items()}


@pytest.fixture(autouse=True)
def _quiet_bf16_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bfloat16 on a CPU without bfloat16 units")
        yield


@pytest.mark.parametrize("head", sorted(HEADS))
def test_bf16_on_the_reference_fixtures(head):
    cls, key = HEADS[head]
    model = cls.from_pretrained(head_dir(head)).eval()
    inputs = torch_inputs(expected_outputs(head))
    with torch.no_grad():
        ref = model(**inputs)[key]
        with torch.autocast("cpu", torch.bfloat16):
            autocast = model(**inputs)[key]
        cast = model.to(torch.bfloat16)(**inputs)[key]
    assert cast.dtype == torch.bfloat16
    assert_close(f"{head} autocast", autocast.float(), ref, BF16_LOGITS_ATOL)
    assert_close(f"{head} cast", cast.float(), ref, BF16_LOGITS_ATOL)


def test_a_bf16_model_keeps_its_layernorms_float32():
    head = "masked_lm"
    loaded = ConvBertForMaskedLM.from_pretrained(head_dir(head), dtype=torch.bfloat16)
    cast = ConvBertForMaskedLM.from_pretrained(head_dir(head)).to(torch.bfloat16)
    for model in (loaded, cast):
        names = model.float32_parameter_names()
        assert names and all(".LayerNorm." in n for n in names)
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        assert {dtypes[n] for n in names} == {torch.float32}
        assert {d for n, d in dtypes.items() if n not in names} == {torch.bfloat16}
    inputs = torch_inputs(expected_outputs(head))
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, cast(**inputs).logits)
    assert all(p.dtype == torch.float32 for p in cast.float().parameters())  # and back


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label = whether token 7 occurs in the sequence (test_pt_modeling's toy task)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 20, (n, 10), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[labels == 1, torch.randint(1, 10, (int(labels.sum()),), generator=g)] = 7
    ids[:, 0] = 1
    return ids, labels


def test_bf16_agrees_with_fp32_on_the_toy_classifiers_labels():
    torch.manual_seed(0)
    model = ConvBertForSequenceClassification(tiny_config(num_labels=2, vocab_size=20)).train()
    ids, labels = _toy(64, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_ids, test_labels = _toy(512, 2)
    with torch.no_grad():
        ref = model(input_ids=test_ids).logits.argmax(-1)
        with torch.autocast("cpu", torch.bfloat16):
            autocast = model(input_ids=test_ids).logits.argmax(-1)
        cast = model.to(torch.bfloat16)(input_ids=test_ids).logits.argmax(-1)
    assert (ref == test_labels).float().mean() > 0.9  # the toy task is learnt, so agreement means something
    assert (autocast == ref).float().mean() >= BF16_LABEL_AGREEMENT
    assert (cast == ref).float().mean() >= BF16_LABEL_AGREEMENT


def test_warns_once_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    calls = []
    real = cpu.warn_bf16_emulated.__wrapped__  # without the once-per-process cache
    monkeypatch.setattr(cpu, "warn_bf16_emulated", lambda: calls.append(1) or real())
    model = ConvBertModel(tiny_config()).eval()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        model(input_ids=ids)
        assert calls == []  # fp32 never asks
        with torch.autocast("cpu", torch.bfloat16):
            model(input_ids=ids)
        model.to(torch.bfloat16)(input_ids=ids)
    assert len(calls) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert real() is True
    assert any("without bfloat16 units" in str(w.message) for w in caught)


def test_warn_bf16_emulated_is_once_per_process(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    once = cpu.warn_bf16_emulated
    once.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            once()
            once()
        assert len([w for w in caught if "without bfloat16 units" in str(w.message)]) == 1
    finally:
        once.cache_clear()


def test_bf16_units_from_the_flags(monkeypatch):
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    for flags, expected in [({"avx512_bf16"}, True), ({"amx_bf16", "avx2"}, True), ({"avx2"}, False), (set(), None)]:
        monkeypatch.setattr(cpu, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert cpu.bf16_units() is expected
