"""``--grad-accum`` in Keras is the PyTorch loop's: the same micro-batches, one optimizer step, the same weights.

A step of ``--grad-accum 2 --batch-size 4`` is one ``fit`` step over the step's 8 rows, cut into
two micro-batches whose losses are divided by the whole step's counts, clipped and applied once.
Both loops start from one pretraining directory; the Gumbel noise given to Keras is the PyTorch
loop's own (per row, from ``noise_seed``), so the samples agree and the weights after the step
must too.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from convbert_common import heads  # noqa: E402
from convbert_common import pretraining as ptc  # noqa: E402
from convbert_common.pretraining_data import PretrainingDataset  # noqa: E402
from convbert_pt import train as pt_train  # noqa: E402
from convbert_pt.pretraining import ConvBertForPreTraining as PtPreTraining  # noqa: E402
from convbert_pt.pretraining import gumbel_noise_for_rows  # noqa: E402
from convbert_tf import train as tf_train  # noqa: E402
from convbert_tf.pretraining import ConvBertForPreTraining as TfPreTraining  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.pt.pretraining.conftest import assets  # noqa: E402,F401 (the fixture)
from tests.tolerances import ADAMW_STEP_FP32_ATOL, CROSS_FP32_ATOL, CROSS_LOSS_FP32_RTOL, EXACT  # noqa: E402

pytestmark = pytest.mark.tensorflow_backend  # against PyTorch in one process: Keras on TensorFlow

BATCH, ACCUM = 4, 2
# AdamW's first update is lr * g / (|g| + eps): its slope in g is at most lr / eps, which turns the
# two frameworks' float32 gradient difference (CROSS_GRAD_RTOL of the largest clipped gradient,
# <= 1) into an update difference of lr * 1e-5 / eps. This eps keeps that 100x under
# ADAMW_STEP_FP32_ATOL while the update still moves the weights by up to lr / 2.
LEARNING_RATE, EPSILON = 1e-3, 0.1
# The first step of this seed has micro-batches of different counts (masked positions, real
# tokens): averaging each micro-batch's own mean would give another gradient than the step's.
SEED = 5


def settings(assets, output, start, **overrides) -> ptc.TrainingSettings:  # noqa: F811
    fields = dict(output=str(output), data=str(assets.data), tokenizer=str(assets.tokenizer), init_from=str(start),
                  batch_size=BATCH, grad_accum=ACCUM, steps=1, learning_rate=LEARNING_RATE, warmup_steps=1,
                  adam_epsilon=EPSILON, seed=SEED, log_every=1, save_every=1000, progress=False, device="cpu")
    fields.update(overrides)
    return ptc.TrainingSettings(**fields)


def read_log(output) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(output) / ptc.LOG_NAME).read_text().splitlines()]


@pytest.fixture(scope="module")
def start(assets, tmp_path_factory):  # noqa: F811
    """A fresh pretraining directory both frameworks start from."""
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("grad-accum") / "start"
    PtPreTraining(assets.tiny_config()).save_pretrained(folder, tokenizer=str(assets.tokenizer))
    return folder


def _pt_step_noise(batch: dict, vocab: int, seed: int, step: int) -> np.ndarray:
    """The PyTorch loop's Gumbel noise of ``step`` (micro-batch by micro-batch, per global row) as (B, L, V)."""
    labels = batch["labels"]
    out = np.zeros((*labels.shape, vocab), np.float32)
    for index in range(ACCUM):
        rows = slice(index * BATCH, (index + 1) * BATCH)
        counts = (labels[rows] != heads.IGNORE_INDEX).sum(axis=1).tolist()
        noise = gumbel_noise_for_rows(counts, vocab, seed=seed, step=step, row_offset=index * BATCH).numpy()
        out[rows][labels[rows] != heads.IGNORE_INDEX] = noise  # row-major (M, V) -> the masked positions
    return out


def test_the_keras_step_is_the_pytorch_loop_s_micro_batches(assets):  # noqa: F811
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    knobs = ptc.PretrainingConfig()
    batches = tf_train.PretrainingBatches(data, knobs, batch_size=BATCH, grad_accum=ACCUM, seed=0)
    micro = ptc.masked_batches(data, knobs, batch_size=BATCH, grad_accum=ACCUM, world_size=1, rank=0, seed=0)
    per_epoch = data.steps_per_epoch(BATCH)
    assert per_epoch % ACCUM, "the data should give a step that straddles two epochs"
    for step in (0, per_epoch // ACCUM):  # the first step, and the one that straddles the epochs
        item = batches.batch(step)
        while True:
            parts = [next(micro) for _ in range(ACCUM)]
            if parts[0].step == step:
                break
        assert [p.row_offset for p in parts] == [0, BATCH]
        for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
            assert_close(f"step {step}: {key}", item[key], np.concatenate([getattr(p, key) for p in parts]), EXACT)
    assert len(batches) == per_epoch // ACCUM


@pytest.fixture(scope="module")
def pt_run(assets, start, tmp_path_factory):  # noqa: F811
    """Three steps of the PyTorch loop, a checkpoint after each."""
    torch.set_num_threads(1)
    output = tmp_path_factory.mktemp("grad-accum-pt") / "pt"
    pt_train.train(settings(assets, output, start, steps=3, save_every=1))
    return output


def test_two_micro_batches_of_four_give_the_pytorch_loop_s_weights_after_one_step(assets, start, pt_run):  # noqa: F811
    first = pt_run / ptc.checkpoint_name(1)
    expected = {k: v.numpy() for k, v in PtPreTraining.from_pretrained(first).state_dict().items()}

    model = TfPreTraining.from_pretrained(start)
    before = model.canonical_state()
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    item = tf_train.PretrainingBatches(data, model.pretraining_config, batch_size=BATCH, grad_accum=ACCUM,
                                       seed=SEED).batch(0)
    for key in ("labels", "attention_mask"):
        counts = (item[key] != (heads.IGNORE_INDEX if key == "labels" else 0)).reshape(ACCUM, -1).sum(axis=1)
        assert len(set(counts.tolist())) == ACCUM, f"{key}: the micro-batches should hold different counts"
    item["gumbel_noise"] = _pt_step_noise(item, model.config.vocab_size, seed=SEED, step=0)
    # The PyTorch run's schedule: warm-up 1 of 3 steps, so its first update has the peak rate.
    optimizer = tf_train.adamw(model, learning_rate=tf_train.WarmupLinearDecay(LEARNING_RATE, 1, 3),
                               weight_decay=0.01, clip=1.0, epsilon=EPSILON)
    model.compile(optimizer=optimizer, micro_batches=ACCUM)
    history = model.fit(item, batch_size=BATCH * ACCUM, epochs=1, shuffle=False, verbose=0).history
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1
    after = model.canonical_state()
    moved = max(float(np.abs(after[n] - before[n]).max()) for n in after)
    assert moved > 100 * ADAMW_STEP_FP32_ATOL
    for name, value in expected.items():
        assert_close(f"after one step: {name}", after[name], value, ADAMW_STEP_FP32_ATOL)
    logged = read_log(pt_run)[0]
    for key in ("loss", "generator_loss", "discriminator_loss"):
        assert_close(key, history[key][0], logged[key], max(CROSS_FP32_ATOL, CROSS_LOSS_FP32_RTOL * logged[key]))
    assert_close("grad_norm", optimizer.grad_norm, logged["grad_norm"], CROSS_LOSS_FP32_RTOL * logged["grad_norm"])


def test_keras_resumes_the_pytorch_run_counting_steps_epochs_and_checkpoints_alike(assets, start, pt_run,  # noqa: F811
                                                                                    tmp_path):
    resumed = tmp_path / "pt-then-tf"
    shutil.copytree(pt_run, resumed)
    for step in (2, 3):
        shutil.rmtree(resumed / ptc.checkpoint_name(step))
    tf_train.train(settings(assets, resumed, start, steps=3, save_every=1, resume=True))
    pt_log, tf_log = read_log(pt_run), read_log(resumed)
    assert [r["step"] for r in tf_log] == [r["step"] for r in pt_log] == [1, 2, 3]
    assert [r["epoch"] for r in tf_log] == [r["epoch"] for r in pt_log]
    for a, b in zip(tf_log, pt_log, strict=True):
        assert_close(f"step {a['step']}: learning rate", a["learning_rate"], b["learning_rate"],
                     CROSS_LOSS_FP32_RTOL * b["learning_rate"])
    # The first step after the resume: the generator loss and accuracy depend on the weights and masks only.
    assert_close("step 2 generator loss", tf_log[1]["generator_loss"], pt_log[1]["generator_loss"],
                 CROSS_LOSS_FP32_RTOL * pt_log[1]["generator_loss"])
    assert tf_log[1]["generator_accuracy"] == pt_log[1]["generator_accuracy"]
    for step in (2, 3):
        name = ptc.checkpoint_name(step)
        pt_state, tf_state = (ptc.read_trainer_state(root / name) for root in (pt_run, resumed))
        for key in ("step", "epoch", "micro_batch_in_epoch"):
            assert tf_state[key] == pt_state[key], f"{name}: {key}"
        assert tf_state["run"]["global_batch"] == pt_state["run"]["global_batch"] == BATCH * ACCUM
        assert ptc.resume_mismatches(tf_state["run"], pt_state["run"]) == ([], [])
