"""Issue 15, model inputs and training (items 9 and 15): bad labels and ids, compiled or not.

- Out-of-range labels get the shared message (the label, the value, what bounds it) in both
  frameworks, eager; TensorFlow graphs and ``torch.compile`` raise with the bounds.
- A bad batch never destroys the model: Keras ``fit`` under XLA refuses the update and stops naming
  the step; PyTorch loops get ``convbert_pt.guards.check_finite_step``.
- QA positions >= L: both frameworks compute Hugging Face's loss exactly (checked against NumPy),
  the all-ignored case included.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import convbert_tf  # noqa: E402
from convbert_common import checks, heads  # noqa: E402
from convbert_pt import modeling as pt_modeling  # noqa: E402
from convbert_pt.guards import check_finite_step  # noqa: E402
from convbert_tf import modeling as tf_modeling  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.tf.helpers import fit_config, head_config, model_class, toy_batch  # noqa: E402
from tests.tolerances import CROSS_FP32_ATOL  # noqa: E402

IDS = np.array([[5, 7, 9, 11, 13, 2], [3, 4, 6, 8, 0, 0]], dtype=np.int64)


def _pt_error(model, kwargs) -> str:
    with pytest.raises(ValueError) as info:
        model(**{k: torch.from_numpy(np.asarray(v)) for k, v in kwargs.items()})
    return str(info.value)


def _tf_error(model, kwargs) -> str:
    with pytest.raises(ValueError) as info:
        model(kwargs)
    wrapped = re.search(r"\x1b\[1m(.*?)\x1b\[0m", str(info.value), re.S)
    return wrapped.group(1) if wrapped else str(info.value)


# ------------------------------------------------------------------ item 15: the shared label check
BAD_CLASSES = {  # (head, labels) -> the message
    ("sequence_classification", "too large"): (np.array([1, 5]), "labels contains the class 5, which is >= "
                                                                  "num_labels (3)"),
    ("sequence_classification", "negative"): (np.array([-3, 1]), "labels contains -3; class ids must be in "
                                                                 "[0, num_labels=3) or -100 (ignored)"),
    ("token_classification", "too large"): (np.where(IDS > 8, 3, 0), "labels contains the class 3, which is >= "
                                                                     "num_labels (3)"),
    ("masked_lm", "too large"): (np.where(IDS > 8, 99, -100), "labels contains the class 99, which is >= "
                                                              "vocab_size (99)"),
    ("multiple_choice", "too large"): (np.array([2]), "labels contains the class 2, which is >= num_choices (2)"),
}


@pytest.mark.parametrize(("head", "case"), sorted(BAD_CLASSES))
def test_out_of_range_labels_get_the_shared_message_in_both_frameworks(head, case):
    labels, says = BAD_CLASSES[(head, case)]
    config = head_config(head, embedding_size=16)
    cls = heads.get(head).class_name
    ids = IDS[None] if head == "multiple_choice" else IDS
    kwargs = {"input_ids": ids, "labels": labels}
    pt = _pt_error(getattr(pt_modeling, cls)(config).eval(), kwargs)
    tf = _tf_error(getattr(tf_modeling, cls)(config), kwargs)
    assert pt == tf == says


def test_ignored_labels_are_not_out_of_range():
    config = head_config("token_classification", embedding_size=16)
    labels = np.full(IDS.shape, -100)
    labels[0, 0] = 2
    out = pt_modeling.ConvBertForTokenClassification(config)(input_ids=torch.from_numpy(IDS),
                                                             labels=torch.from_numpy(labels))
    assert torch.isfinite(out.loss)


def test_a_tensorflow_graph_asserts_the_label_range_with_the_bounds():
    head = "sequence_classification"
    model = model_class(head)(fit_config(head))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = toy_batch(head)
    y = y.copy()
    y[3] = 7
    before = model.get_weights()
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
            checks.label_range_message("labels", 3, "num_labels"))):
        model.fit(x, y, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def _compiled_error(model, kwargs) -> str:
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    try:
        with pytest.raises(RuntimeError) as info:
            compiled(**{k: torch.from_numpy(np.asarray(v)) for k, v in kwargs.items()})
    finally:
        torch._dynamo.reset()
    return str(info.value)


def test_torch_compile_keeps_the_id_and_label_checks():
    config = head_config("sequence_classification", embedding_size=16)
    model = pt_modeling.ConvBertForSequenceClassification(config).eval()
    bad_id = IDS.copy()
    bad_id[0, 2] = 500
    assert checks.id_range_message("input_ids", 99, "vocab_size") in _compiled_error(model, {"input_ids": bad_id})
    message = _compiled_error(model, {"input_ids": IDS, "labels": np.array([0, 9])})
    assert checks.label_range_message("labels", 3, "num_labels") in message


# ------------------------------------------------------------------ item 9: Keras fit under XLA
class _WeightsAfterFirstStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.weights = self.model.get_weights()


@pytest.mark.parametrize("bad", ["label", "id"])
def test_xla_fit_refuses_a_bad_batch_and_stops_naming_the_step(bad):
    head = "sequence_classification"
    x, y = toy_batch(head, batch=16)
    x, y = dict(x), y.copy()
    if bad == "label":
        y[12] = 7  # in the second batch of 8
    else:
        x["input_ids"] = x["input_ids"].copy()
        x["input_ids"][12, 3] = 500
    model = model_class(head)(fit_config(head))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    first = _WeightsAfterFirstStep()
    with pytest.raises(checks.NonFiniteStepError) as info:
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[first])
    message = str(info.value)
    assert message.startswith("training step 2 (epoch 1, batch 2): the loss and the gradients of ")
    assert " are not finite; the update was not applied and training stopped (the weights are those after " \
           "step 1)" in message
    # The weights are exactly those of the one good step, none NaN (and the first step did train).
    for got, want in zip(model.get_weights(), first.weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations) == 1


@pytest.mark.slow
def test_xla_fit_of_good_batches_is_unchanged_by_the_guard():
    head = "sequence_classification"
    x, y = toy_batch(head, batch=16)
    results = []
    for guard in (True, False):
        keras.utils.set_random_seed(0)
        model = model_class(head)(fit_config(head))
        model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True, guard_non_finite=guard)
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        results.append((history["loss"], model.get_weights()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_array_equal(a, b)


def _bad_label_batch_and_model():
    """A batch with one label (7) past the 2 classes, and a fresh classifier: XLA's loss is NaN."""
    head = "sequence_classification"
    x, y = toy_batch(head, batch=8)
    y = y.copy()
    y[0] = 7
    return x, y, model_class(head)(fit_config(head))


def test_the_guard_can_be_turned_off_and_then_xla_gives_nan_weights():
    """What the guard prevents (documents why it is on by default)."""
    x, y, model = _bad_label_batch_and_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True, guard_non_finite=False)
    model.fit(x, y, batch_size=8, verbose=0)
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_train_on_batch_is_guarded_too():
    x, y, model = _bad_label_batch_and_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    before = model.get_weights()
    with pytest.raises(checks.NonFiniteStepError, match="^training step 1: the loss and the gradients of"):
        model.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ item 9: PyTorch loops
def test_check_finite_step_names_the_step_and_the_parameters():
    config = head_config("sequence_classification", embedding_size=16)
    model = pt_modeling.ConvBertForSequenceClassification(config)
    out = model(input_ids=torch.from_numpy(IDS), labels=torch.tensor([0, 1]))
    out.loss.backward()
    check_finite_step(model, out.loss, 1)  # a good step passes
    model.classifier.out_proj.weight.grad[0, 0] = float("nan")
    with pytest.raises(checks.NonFiniteStepError) as info:
        check_finite_step(model, out.loss, 7)
    assert str(info.value).startswith("training step 7: the gradients of 1 tensor(s) (classifier.out_proj.weight) "
                                      "are not finite; the update was not applied and training stopped (the "
                                      "weights are those after step 6)")
    model.zero_grad()
    with pytest.raises(checks.NonFiniteStepError, match=r"^training step 1: the loss is not finite; .* \(the "
                                                        r"weights are as they were before it\)"):
        check_finite_step(model, torch.tensor(float("inf")), 1)


def test_a_compiled_pytorch_loop_with_the_guard_keeps_its_weights():
    """torch.compile turns an all-ignored QA batch into a NaN loss (as HF): the guard stops the loop."""
    config = head_config("question_answering", embedding_size=16)
    model = pt_modeling.ConvBertForQuestionAnswering(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ids = torch.from_numpy(IDS)
    try:
        with pytest.raises(checks.NonFiniteStepError, match="^training step 1: the loss is not finite"):
            for step in (1, 2):
                loss = compiled(input_ids=ids, start_positions=torch.tensor([6, 9]),
                                end_positions=torch.tensor([7, 6])).loss
                optimizer.zero_grad()
                loss.backward()
                check_finite_step(model, loss, step)
                optimizer.step()
    finally:
        torch._dynamo.reset()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the refused step changed nothing, bit for bit


# ------------------------------------------------------------------ item 15: QA positions >= L
def _hf_span_loss(start_logits, end_logits, start, end) -> float:
    """Hugging Face's ConvBertForQuestionAnswering loss in NumPy (float64): clamp to [0, L], ignore L,
    mean cross-entropy over the rest (0/0 = NaN when none is left), then the mean of the two."""
    def ce(logits, positions):
        length = logits.shape[1]
        positions = np.clip(positions, 0, length)
        keep = positions != length
        z = logits.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        with np.errstate(invalid="ignore"):
            return -logp[keep, positions[keep]].sum() / keep.sum()
    return (ce(start_logits, start) + ce(end_logits, end)) / 2


@pytest.fixture(scope="module")
def qa_models(tmp_path_factory):
    config = head_config("question_answering", embedding_size=16)
    pt = pt_modeling.ConvBertForQuestionAnswering(config).eval()
    folder = tmp_path_factory.mktemp("qa")
    pt.save_pretrained(folder)
    return pt, convbert_tf.ConvBertForQuestionAnswering.from_pretrained(folder)


@pytest.mark.parametrize(("start", "end"), [
    ([1, 3], [2, 4]),  # inside
    ([6, 2], [9, 3]),  # one example's positions are L (6) and beyond: ignored
    ([-2, 40], [1, 5]),  # clamped to 0 and to L
    ([6, 7], [2, 3]),  # every start ignored: HF's start loss is 0/0
    ([6, 7], [8, 6]),  # everything ignored
])
def test_question_answering_loss_is_hugging_faces_in_both_frameworks(qa_models, start, end):
    pt_model, tf_model = qa_models
    start, end = np.array(start), np.array(end)
    with torch.no_grad():
        pt = pt_model(input_ids=torch.from_numpy(IDS), start_positions=torch.from_numpy(start),
                      end_positions=torch.from_numpy(end))
    tf = tf_model({"input_ids": IDS, "start_positions": start, "end_positions": end})
    expected = _hf_span_loss(pt.start_logits.numpy(), pt.end_logits.numpy(), start, end)
    pt_loss, tf_loss = float(pt.loss), float(np.asarray(tf["loss"]))
    if np.isnan(expected):
        assert np.isnan(pt_loss) and np.isnan(tf_loss)
        return
    assert_close("PyTorch QA loss", pt_loss, expected, CROSS_FP32_ATOL)
    assert_close("Keras QA loss", tf_loss, expected, CROSS_FP32_ATOL)

