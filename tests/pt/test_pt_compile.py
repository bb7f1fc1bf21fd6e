"""torch.compile: no graph breaks on the default path, compiled numbers equal eager ones."""

from __future__ import annotations

import pytest
import torch

from convbert_pt.modeling import ConvBertForSequenceClassification, ConvBertModel
from tests.configs import tiny_config
from tests.parity import assert_close
from tests.pt.conftest import expected_outputs, head_dir, random_inputs, torch_inputs
from tests.tolerances import COMPILED_FP32_ATOL


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("training", [False, True])
def test_convbert_model_forward_has_no_graph_breaks_on_the_default_path(training):
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = ConvBertModel(config).train(training)
    explanation = torch._dynamo.explain(model)(**random_inputs(config))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_fullgraph_compiled_training_step_matches_eager_gradients():
    config = tiny_config(num_labels=3)
    inputs = random_inputs(config)
    labels = torch.tensor([0, 2, 1])
    model = ConvBertForSequenceClassification(config).train()
    eager_loss = model(**inputs, labels=labels).loss
    eager = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = compiled(**inputs, labels=labels).loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert_close("loss", loss, eager_loss, COMPILED_FP32_ATOL)
    for (name, _), a, e in zip(model.named_parameters(), grads, eager, strict=True):
        assert_close(name, a, e, COMPILED_FP32_ATOL)


@pytest.mark.slow
def test_inductor_compiled_tiny_model_equals_eager():
    """Inductor on 2 CPU cores takes about a minute to compile the tiny model."""
    model = ConvBertForSequenceClassification.from_pretrained(head_dir("sequence_classification"))
    expected = expected_outputs("sequence_classification")
    inputs = torch_inputs(expected)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager = model(**inputs).logits
        got = compiled(**inputs).logits
    assert_close("compiled logits", got, eager, COMPILED_FP32_ATOL)
    assert_close("compiled vs reference", got, expected["logits"], COMPILED_FP32_ATOL)
