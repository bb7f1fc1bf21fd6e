"""Both frameworks refuse bad inputs and labels with the same words, and compute every activation alike."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from convbert_common import heads  # noqa: E402
from convbert_common.config import ACTIVATIONS  # noqa: E402
from convbert_pt import activations as pt_activations  # noqa: E402
from convbert_pt import modeling as pt_modeling  # noqa: E402
from convbert_tf import activations as tf_activations  # noqa: E402
from convbert_tf import modeling as tf_modeling  # noqa: E402
from tests.configs import head_config  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.tolerances import CROSS_FP32_ATOL  # noqa: E402


def _reference(formula: str, x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    if formula == "gelu":
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if formula == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if formula == "relu":
        return np.maximum(x, 0.0)
    if formula == "silu":
        return x / (1.0 + np.exp(-x))
    if formula == "tanh":
        return np.tanh(x)
    raise AssertionError(f"no reference for {formula}")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_config_activation_is_the_same_formula_in_both_frameworks(name):
    x = np.linspace(-6.0, 6.0, 241, dtype=np.float32)
    expected = _reference(ACTIVATIONS[name], x.astype(np.float64))
    pt = pt_activations.get_activation(name)(torch.from_numpy(x)).numpy()
    tf = np.asarray(tf_activations.get_activation(name)(keras.ops.convert_to_tensor(x)))
    assert_close(f"{name} PyTorch", pt, expected, CROSS_FP32_ATOL)
    assert_close(f"{name} Keras", tf, expected, CROSS_FP32_ATOL)


def test_every_formula_is_implemented_on_both_sides_and_nothing_else():
    assert set(pt_activations.FORMULAS) == set(tf_activations.FORMULAS) == set(ACTIVATIONS.values())


def test_an_unknown_activation_is_refused_alike():
    messages = []
    for module in (pt_activations, tf_activations):
        with pytest.raises(ValueError) as info:
            module.get_activation("gelu_magic")
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "gelu_magic" in messages[0]


IDS = np.array([[5, 7, 9, 11, 13, 2], [3, 4, 6, 8, 0, 0]], dtype=np.int64)
BAD_INPUTS = {  # case: (inputs, what the message must say)
    "id >= vocab": (dict(input_ids=np.array([[1, 2, 150, 3]])), "input_ids contains the id 150"),
    "negative id": (dict(input_ids=np.array([[1, -4, 3]])), "input_ids contains the negative id -4"),
    "token type": (dict(input_ids=IDS, token_type_ids=np.full_like(IDS, 2)), "token_type_ids contains the id 2"),
    "too long": (dict(input_ids=np.ones((1, 33), np.int64)), "sequence length 33 is longer"),
    "mask shape": (dict(input_ids=IDS, attention_mask=np.ones((2, 5), np.int64)), "attention_mask must have"),
    "float ids": (dict(input_ids=IDS.astype(np.float32)), "got dtype float32"),
    "uint8 ids": (dict(input_ids=IDS.astype(np.uint8)), "got dtype uint8"),
    "rank 1": (dict(input_ids=IDS[0]), "input_ids must have shape (batch, sequence)"),
    "empty batch": (dict(input_ids=np.zeros((0, 6), np.int64)), "input_ids is empty (shape (0, 6))"),
    "empty sequence": (dict(input_ids=np.zeros((2, 0), np.int64)), "input_ids is empty (shape (2, 0))"),
    "both": (dict(input_ids=IDS, inputs_embeds=np.zeros((2, 6, 16), np.float32)), "(got both)"),
    "embeds width": (dict(inputs_embeds=np.zeros((2, 6, 5), np.float32)), "embedding_size=16"),
    "head mask": (dict(input_ids=IDS, head_mask=np.ones((3,), np.float32)), "head_mask must have shape"),
    "position ids": (dict(input_ids=IDS, position_ids=np.array([[0, 1, 2, 3, 4, 40]] * 2)),
                     "position_ids contains the id 40"),
}
BAD_LABELS = {
    ("masked_lm", "shape"): np.zeros((2, 5), np.int64),
    ("masked_lm", "dtype"): np.zeros((2, 6), np.float32),
    ("sequence_classification", "shape"): np.zeros((3,), np.int64),
    ("token_classification", "dtype"): np.zeros((2, 6), np.float32),
}


def _pt_error(cls, config, kwargs) -> str:
    model = cls(config).eval()
    with pytest.raises(ValueError) as info:
        model(**{k: torch.from_numpy(np.asarray(v)) for k, v in kwargs.items()})
    return str(info.value)


def _tf_error(cls, config, kwargs) -> str:
    model = cls(config)
    with pytest.raises(ValueError) as info:
        model(**kwargs)
    # Keras wraps an error raised inside call(): "Exception encountered when calling ...\n\n<bold message>\n\n..."
    wrapped = re.search(r"\x1b\[1m(.*?)\x1b\[0m", str(info.value), re.S)
    return wrapped.group(1) if wrapped else str(info.value)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_get_the_same_message_in_both_frameworks(case):
    config = head_config("model", embedding_size=16)
    inputs, says = BAD_INPUTS[case]
    pt = _pt_error(pt_modeling.ConvBertModel, config, inputs)
    tf = _tf_error(tf_modeling.ConvBertModel, config, inputs)
    assert pt == tf and says in pt


@pytest.mark.parametrize(("head", "case"), sorted(BAD_LABELS))
def test_bad_labels_get_the_same_message_in_both_frameworks(head, case):
    config = head_config(head, embedding_size=16)
    cls_name = heads.get(head).class_name
    kwargs = {"input_ids": IDS, "labels": BAD_LABELS[(head, case)]}
    pt = _pt_error(getattr(pt_modeling, cls_name), config, kwargs)
    tf = _tf_error(getattr(tf_modeling, cls_name), config, kwargs)
    assert pt == tf and "labels" in pt
