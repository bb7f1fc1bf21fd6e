"""The pretraining loop: it learns, it resumes exactly, it stops cleanly, it refuses what it cannot use."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import pathlib

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from convbert_common import checkpoint as ck
from convbert_common import pretraining as ptc
from convbert_pt.train import TrainingError, train
from tests.pt.pretraining.conftest import assert_a_hundred_steps_learn, read_log
from tests.pt.pretraining.conftest import training_settings as settings

STEADY_KEYS = ("loss", "generator_loss", "discriminator_loss", "generator_accuracy", "discriminator_accuracy",
               "replaced_fraction", "learning_rate", "grad_norm")


def weights(folder) -> dict[str, np.ndarray]:
    folder = pathlib.Path(folder)
    return {f"{part}/{k}": v for part in ("discriminator", "generator")
            for k, v in load_file(str(folder / part / "model.safetensors")).items()}


def tree_hash(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_hundred_steps_on_the_bundled_text_lower_both_losses(assets, tmp_path):
    torch.set_num_threads(1)
    result = train(settings(assets, tmp_path, steps=100, log_every=10, warmup_steps=10))
    last = assert_a_hundred_steps_learn(read_log(tmp_path))
    assert last["tokens_per_second"] > 0
    assert result.step == 100 and ptc.is_pretraining_dir(tmp_path)
    assert [s for s, _ in ptc.list_checkpoints(tmp_path)] == [100]


def test_a_resumed_run_continues_exactly_where_the_interrupted_one_stopped(assets, tmp_path):
    torch.set_num_threads(1)
    # Dropout on: the random state of the interrupted run must come back too.
    config = assets.config_file("dropout.json", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    common = dict(config=str(config), steps=8, save_every=3, log_every=1, grad_accum=2, batch_size=4)
    train(settings(assets, tmp_path / "straight", **common))

    def interrupt(event, step, trainer):
        if event == "step_end" and step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(settings(assets, tmp_path / "resumed", **common), callbacks=[interrupt])
    assert [s for s, _ in ptc.list_checkpoints(tmp_path / "resumed")] == [3]
    torch.manual_seed(1234)  # the resumed run restores the random state it saved
    train(settings(assets, tmp_path / "resumed", resume=True, **common))

    straight, resumed = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == list(range(1, 9))
    for a, b in zip(straight, resumed, strict=True):
        assert {k: a[k] for k in STEADY_KEYS} == {k: b[k] for k in STEADY_KEYS}, a["step"]
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    opt_a = load_file(str(tmp_path / "straight" / "checkpoint-8" / ptc.OPTIMIZER_NAME))
    opt_b = load_file(str(tmp_path / "resumed" / "checkpoint-8" / ptc.OPTIMIZER_NAME))
    assert opt_a.keys() == opt_b.keys() and any(k.startswith("exp_avg_sq/generator.") for k in opt_a)
    for name in opt_a:
        np.testing.assert_array_equal(opt_b[name], opt_a[name], err_msg=name)


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(assets, tmp_path):
    def poison(event, step, trainer):
        if event == "step_end" and step == 4:
            with torch.no_grad():
                trainer.model.discriminator_predictions.dense.weight.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"step 5: the loss is not finite .*stopped before updating the weights; "
                                            r"the last good checkpoint is .*checkpoint-4"):
        train(settings(assets, tmp_path, steps=8, save_every=2), callbacks=[poison])
    assert [s for s, _ in ptc.list_checkpoints(tmp_path)] == [2, 4]
    assert all(np.isfinite(v).all() for v in weights(tmp_path / "checkpoint-4").values())
    assert read_log(tmp_path)[-1]["step"] == 4


def test_a_failing_checkpoint_write_leaves_the_previous_one_intact_and_resumable(assets, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    common = dict(steps=6, save_every=2, keep_checkpoints=1)
    train(settings(assets, tmp_path / "straight", **common))
    real_write = ck.write_safetensors
    calls = {"n": 0}

    def full_disk(path, tensors):
        calls["n"] += 1
        if calls["n"] == 3:  # checkpoint-4's generator: its discriminator is already on disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, tensors)

    monkeypatch.setattr(ck, "write_safetensors", full_disk)
    with pytest.raises(TrainingError, match=r"step 4: writing .*checkpoint-4 failed \(OSError: .*No space left on "
                                            r"device\); the previous checkpoint .*checkpoint-2 is intact"):
        train(settings(assets, tmp_path / "run", **common))
    monkeypatch.setattr(ck, "write_safetensors", real_write)
    run = tmp_path / "run"
    scalars = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []  # written where installed
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "log.jsonl", *scalars]
    before = tree_hash(run / "checkpoint-2")
    assert ptc.read_trainer_state(run / "checkpoint-2")["step"] == 2
    train(settings(assets, run, resume=True, **common))
    assert [s for s, _ in ptc.list_checkpoints(run)] == [6]
    a, b = weights(tmp_path / "straight"), weights(run)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    assert before != tree_hash(run / "checkpoint-6")


# ------------------------------------------------------------------------------ refusals
def test_resume_refuses_a_missing_checkpoint_and_another_run_s_settings_or_data(assets, tmp_path):
    with pytest.raises(ValueError, match="--resume: .* holds no checkpoint"):
        train(settings(assets, tmp_path / "none", resume=True))
    train(settings(assets, tmp_path / "run", steps=2, save_every=2))
    with pytest.raises(ValueError, match="holds an earlier run .*pass --resume to continue it, --overwrite"):
        train(settings(assets, tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match=r"other settings or data: model.hidden_size: 32 in the checkpoint, 64 now"):
        train(settings(assets, tmp_path / "run", steps=4, resume=True,
                       config=str(assets.config_file("wider.json", hidden_size=64))))
    with pytest.raises(ValueError, match=r"optimizer.learning_rate: 0.005 in the checkpoint, 0.001 now"):
        train(settings(assets, tmp_path / "run", steps=4, resume=True, learning_rate=1e-3))
    other = ptc.TrainingSettings(**{**settings(assets, tmp_path / "run").__dict__, "data": None,
                                    "corpus": [str(assets.root / "other.txt")]})
    (assets.root / "other.txt").write_text("One more document.\nIt is short.\n" * 200, encoding="utf-8")
    with pytest.raises(ValueError, match=r"data.fingerprint: '[0-9a-f]+' in the checkpoint"):
        train(ptc.TrainingSettings(**{**other.__dict__, "steps": 4, "resume": True, "batch_size": 2}))
    with pytest.raises(ValueError, match="is at step 2, the run's end"):
        train(settings(assets, tmp_path / "run", steps=2, resume=True))
    # A longer run may go on from it (its warm-up kept).
    assert train(settings(assets, tmp_path / "run", steps=3, resume=True, warmup_steps=None)).step == 3


def test_max_minutes_stops_with_a_checkpoint_and_the_final_models(assets, tmp_path):
    result = train(settings(assets, tmp_path, steps=50, max_minutes=1e-9))
    assert result.step == 1 and [s for s, _ in ptc.list_checkpoints(tmp_path)] == [1]
    assert ptc.is_pretraining_dir(tmp_path)
    assert ptc.read_trainer_state(tmp_path / "checkpoint-1")["run"]["schedule"]["total_steps"] == 50


def test_a_tokenizer_and_a_config_that_disagree_are_refused(assets, tmp_path):
    wrong = assets.config_file("wrong_vocab.json", vocab_size=1000)
    with pytest.raises(ValueError, match=rf"has {assets.vocab_size} tokens but --config .* has vocab_size 1000"):
        train(settings(assets, tmp_path, config=str(wrong)))
    gen = assets.config_file("gen.json", hidden_size=16, num_attention_heads=2, embedding_size=8)
    with pytest.raises(ValueError, match="generator's embedding_size is 8 but the discriminator's is 16"):
        train(settings(assets, tmp_path, generator_config=str(gen)))
    with pytest.raises(ValueError, match="--max-seq-length: max_seq_length 65 is above the model's "
                                         "max_position_embeddings 64"):
        train(settings(assets, tmp_path, data=None, corpus=[str(assets.root / "x.txt")], max_seq_length=65))
    with pytest.raises(ValueError, match="holds examples of 32 tokens, not --max-seq-length 48"):
        train(settings(assets, tmp_path, max_seq_length=48))
    assert not os.path.exists(tmp_path / ptc.LOG_NAME)
