"""Losses per task against hand computations, HF's problem_type inference, and label checks."""

from __future__ import annotations

import math

import pytest
import torch

from convbert_common import heads
from convbert_common.config import ConvBertConfig
from convbert_pt import losses
from convbert_pt.modeling import (
    ConvBertForMaskedLM,
    ConvBertForMultipleChoice,
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
)
from tests.configs import tiny_config
from tests.pt.conftest import random_inputs
from tests.tolerances import LOSS_FP64_RTOL, SAME_COMPUTATION_FP32_RTOL


def _ce(logits_row, target):
    return -(logits_row[target] - torch.logsumexp(logits_row, 0))


def test_masked_lm_loss_ignores_minus_100_and_averages_the_rest():
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    labels = torch.tensor([[1, -100, 4], [-100, -100, 0]])
    hand = (_ce(logits[0, 0], 1) + _ce(logits[0, 2], 4) + _ce(logits[1, 2], 0)) / 3
    assert math.isclose(losses.masked_lm_loss(logits, labels).item(), hand.item(), rel_tol=LOSS_FP64_RTOL)


def test_sequence_problem_type_is_inferred_like_hf():
    assert losses.resolve_problem_type(None, 1, torch.zeros(2)) == "regression"
    assert losses.resolve_problem_type(None, 3, torch.zeros(2, dtype=torch.long)) == "single_label_classification"
    assert losses.resolve_problem_type(None, 3, torch.zeros(2, dtype=torch.int32)) == "single_label_classification"
    assert losses.resolve_problem_type(None, 3, torch.zeros(2, 3)) == "multi_label_classification"
    assert losses.resolve_problem_type("regression", 3, torch.zeros(2, 3)) == "regression"


def test_sequence_losses_per_problem_type_match_hand_computations():
    logits = torch.randn(4, 3, dtype=torch.float64)
    single = torch.tensor([0, 2, 1, 2])
    hand = sum(_ce(logits[i], single[i]) for i in range(4)) / 4
    assert math.isclose(losses.sequence_classification_loss(logits, single).item(), hand.item(), rel_tol=LOSS_FP64_RTOL)

    multi = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float64)
    p = torch.sigmoid(logits)
    hand = -(multi * p.log() + (1 - multi) * (1 - p).log()).mean()
    assert math.isclose(losses.sequence_classification_loss(logits, multi).item(), hand.item(), rel_tol=LOSS_FP64_RTOL)

    targets = torch.randn(4, 3, dtype=torch.float64)
    hand = ((logits - targets) ** 2).mean()
    got = losses.sequence_classification_loss(logits, targets, "regression").item()
    assert math.isclose(got, hand.item(), rel_tol=LOSS_FP64_RTOL)

    one = torch.randn(4, 1, dtype=torch.float64)
    y = torch.randn(4, dtype=torch.float64)
    assert math.isclose(losses.sequence_classification_loss(one, y).item(), ((one[:, 0] - y) ** 2).mean().item(),
                        rel_tol=LOSS_FP64_RTOL)


def test_question_answering_loss_clamps_positions_and_ignores_those_past_the_end():
    start, end = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    sp = torch.tensor([1, 99, -5])  # 99 -> 6 (ignored); -5 -> 0
    ep = torch.tensor([[2], [3], [6]])  # (B, 1) accepted; 6 == L is ignored
    start_hand = (_ce(start[0], 1) + _ce(start[2], 0)) / 2
    end_hand = (_ce(end[0], 2) + _ce(end[1], 3)) / 2
    got = losses.question_answering_loss(start, end, sp, ep)
    assert math.isclose(got.item(), ((start_hand + end_hand) / 2).item(), rel_tol=LOSS_FP64_RTOL)


def test_multiple_choice_loss_is_cross_entropy_over_choices():
    logits = torch.randn(3, 4, dtype=torch.float64)
    labels = torch.tensor([3, 0, 1])
    hand = sum(_ce(logits[i], labels[i]) for i in range(3)) / 3
    assert math.isclose(losses.multiple_choice_loss(logits, labels).item(), hand.item(), rel_tol=LOSS_FP64_RTOL)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.masked_lm_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)),
         r"labels must have shape \(2, 3\)"),
        (lambda: losses.masked_lm_loss(torch.zeros(2, 3, 5), torch.zeros(2, 3)), "must be an integer tensor"),
        (lambda: losses.sequence_classification_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)),
         r"single_label_classification\) must have shape \(2,\)"),
        (lambda: losses.sequence_classification_loss(torch.zeros(2, 3), torch.zeros(2, 2)),
         r"multi_label_classification\) must have shape \(2, 3\)"),
        (lambda: losses.sequence_classification_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)),
         r"labels \(regression\) must be a floating-point tensor"),
        (lambda: losses.sequence_classification_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long),
                                                      "multi_label_classification"),
         "must be a floating-point tensor"),
        (lambda: losses.question_answering_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long),
                                                torch.zeros(3, dtype=torch.long)), r"end_positions must have shape"),
        (lambda: losses.check_labels(heads.QUESTION_ANSWERING, {"start_positions": torch.zeros(2, dtype=torch.long)},
                                     (2, 4), ConvBertConfig(num_labels=2)), "give both"),
        (lambda: losses.multiple_choice_loss(torch.zeros(2, 4), torch.zeros(2)), "must be an integer tensor"),
        (lambda: losses.resolve_problem_type("ranking", 2, torch.zeros(2)), "problem_type must be one of"),
    ],
)
def test_labels_of_the_wrong_shape_or_dtype_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_models_compute_the_same_losses_as_the_loss_functions():
    config = tiny_config()
    inputs = random_inputs(config)
    B, L = inputs["input_ids"].shape

    m = ConvBertForMaskedLM(config).eval()
    labels = torch.where(inputs["attention_mask"].bool(), inputs["input_ids"], -100)
    out = m(**inputs, labels=labels)
    assert out.loss.item() == pytest.approx(losses.masked_lm_loss(out.logits, labels).item(),
                                            rel=SAME_COMPUTATION_FP32_RTOL)
    assert out[0] is out.loss and out.to_tuple()[1] is out.logits

    m = ConvBertForSequenceClassification(config.replace(num_labels=3)).eval()
    out = m(**inputs, labels=torch.tensor([0, 2, 1]))
    assert out.loss.item() == pytest.approx(
        losses.sequence_classification_loss(out.logits, torch.tensor([0, 2, 1])).item(), rel=SAME_COMPUTATION_FP32_RTOL)
    assert m.config.problem_type is None  # inferred per call, the config is not mutated

    m = ConvBertForTokenClassification(config.replace(num_labels=5)).eval()
    labels = torch.randint(0, 5, (B, L))
    out = m(**inputs, labels=labels)
    assert out.loss.item() == pytest.approx(losses.token_classification_loss(out.logits, labels).item(),
                                            rel=SAME_COMPUTATION_FP32_RTOL)

    m = ConvBertForQuestionAnswering(config.replace(num_labels=2)).eval()
    out = m(**inputs, start_positions=torch.tensor([0, 3, 50]), end_positions=torch.tensor([1, 4, 5]))
    ref = losses.question_answering_loss(out.start_logits, out.end_logits, torch.tensor([0, 3, 50]),
                                         torch.tensor([1, 4, 5]))
    assert out.loss.item() == pytest.approx(ref.item(), rel=SAME_COMPUTATION_FP32_RTOL)

    m = ConvBertForMultipleChoice(config).eval()
    mc = {k: v[:2].unsqueeze(0).expand(2, 2, L).clone() for k, v in inputs.items()}
    out = m(**mc, labels=torch.tensor([1, 0]))
    assert out.logits.shape == (2, 2)
    assert out.loss.item() == pytest.approx(losses.multiple_choice_loss(out.logits, torch.tensor([1, 0])).item(),
                                            rel=SAME_COMPUTATION_FP32_RTOL)


def test_models_reject_bad_labels_before_running():
    config = tiny_config()
    inputs = random_inputs(config)
    with pytest.raises(ValueError, match=r"labels must have shape \(3, 11\)"):
        ConvBertForMaskedLM(config)(**inputs, labels=torch.zeros(3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="must be an integer tensor"):
        ConvBertForTokenClassification(config)(**inputs, labels=torch.zeros(3, 11))
    with pytest.raises(ValueError, match=r"must have shape \(3,\)"):
        ConvBertForSequenceClassification(config)(**inputs, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="give both start_positions and end_positions"):
        qa = ConvBertForQuestionAnswering(config.replace(num_labels=2))
        qa(**inputs, start_positions=torch.zeros(3, dtype=torch.long))
    mc = {k: v.unsqueeze(1) for k, v in inputs.items()}
    with pytest.raises(ValueError, match=r"labels \(multiple choice\) must have shape \(3,\)"):
        ConvBertForMultipleChoice(config)(**mc, labels=torch.zeros(2, dtype=torch.long))
