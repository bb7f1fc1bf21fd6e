"""model.summary() shows every layer's real output shape after build (no "?"), and symbolic calls stay exact."""

from __future__ import annotations

import keras
import pytest

from convbert_common import heads
from convbert_tf.modeling import MODEL_CLASSES
from tests.configs import head_config

# (input shape given to build, what the summary shows for the head layer(s)), with the tiny config's
# H 32, E 16, V 99, 3 labels (QA: 2).
EXPECTED = {
    "model": ((None, 12), ["(None, None, 16)", "(None, None, 32)"]),
    "masked_lm": ((None, 12), ["(None, 12, 32)", "(None, None, 16)", "(None, None, 99)"]),
    "sequence_classification": ((None, 12), ["(None, 12, 32)", "(None, 3)"]),
    "multiple_choice": ((None, 4, 12), ["(None, 12, 32)", "(None, 1)"]),
    "token_classification": ((None, 12), ["(None, 12, 32)", "(None, None, 3)"]),
    "question_answering": ((None, 12), ["(None, 12, 32)", "(None, None, 2)"]),
}


def _summary(model) -> str:
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=120)
    return "\n".join(lines)


@pytest.mark.parametrize("head", heads.NAMES)
def test_summary_shows_output_shapes_after_build(head):
    model = MODEL_CLASSES[head](head_config(head))
    before = _summary(model)
    assert "?" not in before, before  # built in the constructor: shapes with None dims already
    n = len(model.weights)
    shape, shown = EXPECTED[head]
    model.build(shape)
    assert len(model.weights) == n  # building again creates nothing
    after = _summary(model)
    assert "?" not in after, after
    for text in shown:
        assert text in after, (text, after)


def test_symbolic_call_keeps_float32_logits_under_mixed_precision():
    model = MODEL_CLASSES["sequence_classification"](head_config("sequence_classification"), dtype="mixed_bfloat16")
    out = model(keras.Input((12,), dtype="int32"))
    assert tuple(out["logits"].shape) == (None, 3) and out["logits"].dtype == "float32"
    hidden = MODEL_CLASSES["model"](head_config("model"))(keras.Input((12,), dtype="int32"), output_hidden_states=True)
    assert len(hidden["hidden_states"]) == 3
