"""Shared set-up of the Keras tests: the toy-fit config, toy batches, output conversion, fixture lookup, a
layer's output and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from convbert_common.config import ConvBertConfig
from tests.configs import head_config
from tests.conftest import REPO_FIXTURES, SHARED_FIXTURES
from tests.parity import to_numpy as array

TINY = "hf-convbert-tiny"

CLASS_NAMES = {
    "model": "ConvBertModel",
    "masked_lm": "ConvBertForMaskedLM",
    "sequence_classification": "ConvBertForSequenceClassification",
    "multiple_choice": "ConvBertForMultipleChoice",
    "token_classification": "ConvBertForTokenClassification",
    "question_answering": "ConvBertForQuestionAnswering",
}
INPUT_FILES = {"masked_lm": "inputs_masked_lm.npz", "multiple_choice": "inputs_multiple_choice.npz"}


def model_class(head: str):
    import convbert_tf

    return getattr(convbert_tf, CLASS_NAMES[head])


def fit_config(head: str, **overrides) -> ConvBertConfig:
    """One layer of the tiny config (its large initial weights included): plain SGD learns the toy
    tasks in a few steps, and one layer is fast to trace."""
    return head_config(head, **{"num_hidden_layers": 1, **overrides})


def toy_batch(head: str, batch: int = 8, length: int = 8, seed: int = 0):
    """(x, y) for a learnable toy task of ``head``, on a sub-vocabulary of ids 4..11.

    Marker tokens carry the answer: id 1/2/3 at position 0 is the class; the choice holding id 1
    first is the right one; ids 1 and 2 mark the start and end of the span; token labels are id % 3.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 12, (batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[1::2, -2:] = 0
    x = {"input_ids": ids, "attention_mask": mask}
    if head == "model":
        return x, None
    if head == "sequence_classification":
        y = rng.integers(0, 3, batch).astype("int32")
        ids[:, 0] = y + 1
        return x, y
    if head == "token_classification":
        return x, np.where(mask == 1, ids % 3, -100).astype("int32")
    if head == "masked_lm":
        return x, np.where(rng.random(ids.shape) < 0.5, ids, -100).astype("int32")
    if head == "multiple_choice":
        y = rng.integers(0, 2, batch // 2).astype("int32")
        ids[:, 0] = 2
        ids[2 * np.arange(batch // 2) + y, 0] = 1
        return {k: v.reshape(batch // 2, 2, length) for k, v in x.items()}, y
    if head == "question_answering":
        start = rng.integers(1, length // 2, batch).astype("int32")
        end = (start + rng.integers(0, 2, batch)).astype("int32")
        ids[np.arange(batch), start] = 1
        ids[np.arange(batch), end] = np.where(end > start, 2, 1)
        mask[:] = 1
        return x, (start, end)
    raise ValueError(head)


def to_numpy(outputs):
    """A tensor (any backend) as an array; an output dict as arrays, with the tuples of hidden states /
    attentions stacked on a new first axis."""
    if not isinstance(outputs, dict):
        return array(outputs)
    out = {}
    for key, value in outputs.items():
        if isinstance(value, (tuple, list)):
            out[key] = np.stack([array(v) for v in value])
        else:
            out[key] = array(value)
    return out


def reference_file(relative: str):
    """A reference fixture path, repository copy first, else the shared one; None when neither exists."""
    for root in (REPO_FIXTURES, SHARED_FIXTURES):
        path = root / relative
        if path.exists():
            return path
    return None


def expected_outputs(head: str) -> dict[str, np.ndarray]:
    """expected_tf.npz of ``head``; expected_pt.npz where only that exists (PT vs TF differ by <= 1.6e-6)."""
    for name in ("expected_tf.npz", "expected_pt.npz"):
        path = reference_file(f"{TINY}/{head}/{name}")
        if path is not None:
            return dict(np.load(path))
    pytest.skip(f"no expected outputs for {head} in tests/fixtures or ../shared/fixtures")


def reference_inputs(head: str) -> dict[str, np.ndarray]:
    path = reference_file(f"{TINY}/{INPUT_FILES.get(head, 'inputs.npz')}")
    if path is None:
        pytest.skip(f"reference inputs for {head} not found")
    return {k: v for k, v in np.load(path).items()}


def tensorflow_runs_onednn() -> bool:
    """Whether TensorFlow runs its oneDNN kernels here: by default only on x86 CPUs with AVX512-VNNI,
    AVX512-BF16 or AMX; ``TF_ENABLE_ONEDNN_OPTS`` overrides. TensorFlow answers it only privately."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def layer_value_and_grads(layer, x, upstream, mode: str) -> list[np.ndarray]:
    """``layer(x)`` and the gradients of sum(output * upstream) by x and by each trainable weight, in
    float32, run eagerly (``mode`` "eager"), in a ``tf.function`` ("tf.function") or under XLA ("xla")."""
    import tensorflow as tf

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    return [np.asarray(tf.cast(t, tf.float32)) for t in run(x)]
