"""A pretraining run started in one framework goes on in the other.

Both loops train on the same examples and masks (one seed, the framework-free masker), so after a
resume from the other framework's checkpoint the next step's generator loss (weights and masks
only) equals the one the writing framework computes itself; the whole loss does too when both
are given the same Gumbel noise. The AdamW state crosses over in PyTorch's layout, moment for
moment. (Each framework's own Gumbel and dropout randomness does not cross: the samples of later
steps differ, as the PyTorch loop warns.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from safetensors.numpy import load_file  # noqa: E402

from convbert_common import heads  # noqa: E402
from convbert_common import pretraining as ptc  # noqa: E402
from convbert_common.pretraining_data import PretrainingDataset  # noqa: E402
from convbert_pt import train as pt_train  # noqa: E402
from convbert_pt.pretraining import ConvBertForPreTraining as PtPreTraining  # noqa: E402
from convbert_tf import train as tf_train  # noqa: E402
from convbert_tf.pretraining import ConvBertForPreTraining as TfPreTraining  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.pt.pretraining.conftest import (  # noqa: E402
    assets,  # noqa: F401 (the fixture)
    read_log,
    training_settings,
)
from tests.tolerances import CROSS_FP32_ATOL, CROSS_LOSS_FP32_RTOL, EXACT  # noqa: E402


def settings(assets, output, **overrides) -> ptc.TrainingSettings:  # noqa: F811
    """Runs of two steps (one of warm-up), each step logged."""
    return training_settings(assets, output, **{"steps": 2, "warmup_steps": 1, "log_every": 1, **overrides})


def _close(name, actual, expected):
    assert_close(name, actual, expected, max(CROSS_FP32_ATOL, CROSS_LOSS_FP32_RTOL * abs(expected)))


@pytest.fixture(scope="module")
def runs(assets, tmp_path_factory):  # noqa: F811
    """Three steps in each framework (checkpoints 2 and 3), then each continued from the other's
    checkpoint-2 (its checkpoint-3 removed) to step 3."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cross-resume")
    pt_train.train(settings(assets, root / "pt", steps=3, save_every=2))
    tf_train.train(settings(assets, root / "tf", steps=3, save_every=2))
    out = {("pt", "pt"): read_log(root / "pt"), ("tf", "tf"): read_log(root / "tf")}
    for writer, reader, run in (("pt", "tf", tf_train.train), ("tf", "pt", pt_train.train)):
        folder = root / f"{writer}-then-{reader}"
        shutil.copytree(root / writer, folder)
        shutil.rmtree(folder / "checkpoint-3")
        run(settings(assets, folder, steps=3, save_every=2, resume=True))
        out[writer, reader] = read_log(folder)
    return root, out


def test_each_framework_resumes_the_other_s_checkpoint_with_the_same_next_generator_loss(runs):
    _root, logs = runs
    for writer, other in (("pt", "tf"), ("tf", "pt")):
        own, crossed = logs[writer, writer], logs[writer, other]
        assert [r["step"] for r in crossed] == [1, 2, 3] == [r["step"] for r in own]
        assert crossed[:2] == own[:2]  # the log of the written part is kept as it was
        _close(f"{writer} -> {other}: step 3 generator loss", crossed[2]["generator_loss"], own[2]["generator_loss"])
        _close(f"{writer} -> {other}: step 3 learning rate", crossed[2]["learning_rate"], own[2]["learning_rate"])
        assert crossed[2]["generator_accuracy"] == own[2]["generator_accuracy"]


def test_the_next_step_s_loss_is_the_same_in_both_frameworks_from_either_checkpoint(runs, assets):  # noqa: F811
    root, _logs = runs
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    for writer in ("pt", "tf"):
        ckpt = root / writer / "checkpoint-2"
        pt, tfm = PtPreTraining.from_pretrained(ckpt), TfPreTraining.from_pretrained(ckpt)
        batch = tf_train.PretrainingBatches(data, pt.pretraining_config, batch_size=8, seed=0).batch(2)
        uniform = np.random.default_rng(5).random((*batch["input_ids"].shape, pt.config.vocab_size))
        noise = ptc.gumbel_from_uniform(uniform).astype(np.float32)
        with torch.no_grad():
            a = pt(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()},
                   gumbel_noise=torch.from_numpy(noise))
        b = tfm({**batch, "gumbel_noise": noise})
        assert_close(f"{writer}: replaced ids", b["replaced_input_ids"], a.replaced_input_ids, EXACT)
        for key in ("loss", "generator_loss", "discriminator_loss"):
            _close(f"{writer}: {key}", b[key], float(getattr(a, key)))


def test_the_adamw_state_crosses_over_moment_for_moment(runs, assets):  # noqa: F811
    root, _logs = runs
    for writer in ("pt", "tf"):
        ckpt = root / writer / "checkpoint-2"
        saved = load_file(str(ckpt / ptc.OPTIMIZER_NAME))
        model = TfPreTraining.from_pretrained(ckpt)
        optimizer = tf_train.adamw(model)
        tf_train.load_optimizer_state(model, optimizer, saved, str(ckpt))
        again = tf_train.optimizer_state(model, optimizer)
        assert sorted(again) == sorted(saved)
        assert any(k.startswith("exp_avg_sq/generator.") for k in saved)
        for name in saved:
            np.testing.assert_array_equal(again[name], saved[name], err_msg=f"{writer}: {name}")
        assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2
    # The Keras checkpoint names every PyTorch parameter once (the shared embeddings under convbert.).
    names = {k.split("/", 1)[1] for k in load_file(str(root / "tf" / "checkpoint-2" / ptc.OPTIMIZER_NAME))}
    pt_names = {n for n, _ in PtPreTraining.from_pretrained(root / "pt" / "checkpoint-2").named_parameters()}
    assert names == pt_names
    assert not any(n.startswith(f"generator.{heads.BASE_PREFIX}.embeddings.") for n in names)
