"""Keras pretraining: fit learns on the bundled text, the model round-trips (.keras, the pretraining
directory, into PyTorch), and bad input is refused with PyTorch's words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from convbert_common import heads  # noqa: E402
from convbert_common import pretraining as ptc  # noqa: E402
from convbert_common.pretraining_data import PretrainingDataset  # noqa: E402
from convbert_tf import train as tf_train  # noqa: E402
from convbert_tf.pretraining import ConvBertForPreTraining, masked_slots  # noqa: E402
from tests.configs import tiny_config  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.pt.pretraining.conftest import (  # noqa: E402
    assert_a_hundred_steps_learn,
    assets,  # noqa: F401 (the fixture)
)
from tests.tolerances import (  # noqa: E402
    EXACT,
    REPLICAS_FP32_ATOL,
    REPLICAS_FP32_RTOL,
    SAME_COMPUTATION_FP32_ATOL,
    SAME_COMPUTATION_FP32_RTOL,
)


def small_batch(config, batch=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[2, -4:] = 0
    ids[mask == 0] = 0
    labels = np.full_like(ids, heads.IGNORE_INDEX)
    labels[:, 3] = ids[:, 3]
    labels[0, 6] = ids[0, 6]
    masked = np.where(labels >= 0, 4, ids)
    return {"input_ids": masked, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "labels": labels}


def test_a_hundred_fit_steps_on_the_bundled_text_lower_both_losses(assets):  # noqa: F811
    keras.utils.set_random_seed(0)
    config = assets.tiny_config()
    model = ConvBertForPreTraining(config, seed=0)
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    steps = 100
    batches = tf_train.PretrainingBatches(data, model.pretraining_config, batch_size=8, seed=0, steps=steps)
    schedule = tf_train.WarmupLinearDecay(5e-3, 10, steps)
    model.compile(optimizer=tf_train.adamw(model, learning_rate=schedule))
    log = tf_train.PretrainingLog(model.pretraining_config, log_every=10, total_steps=steps,
                                  positions_per_step=8 * data.max_seq_length,
                                  steps_per_epoch=batches.per_epoch, schedule=schedule)
    history = model.fit(batches, epochs=1, verbose=0, callbacks=[log], shuffle=False)
    last = assert_a_hundred_steps_learn(log.history)
    assert last["grad_norm"] > 0
    assert last["learning_rate"] == pytest.approx(5e-3 * ptc.learning_rate_factor(99, 10, 100))
    assert {"loss", *(k for k in ptc.LOG_KEYS if k in history.history)} <= set(history.history)


def test_the_masked_slots_hold_each_row_s_masked_positions_in_order():
    labels = np.array([[-100, 5, -100, 7, 8], [-100, -100, -100, -100, 9], [-100] * 5])
    positions, valid = masked_slots(keras.ops.convert_to_tensor(labels), 3)
    positions, valid = np.asarray(positions), np.asarray(valid)
    assert positions[0].tolist() == [1, 3, 4] and valid[0].tolist() == [True] * 3
    assert positions[1, 0] == 4 and valid[1].tolist() == [True, False, False]
    assert not valid[2].any()


def test_dot_keras_round_trip_keeps_the_weights_the_tying_and_the_knobs(tmp_path):
    config = tiny_config()
    model = ConvBertForPreTraining(config, pretraining_config=ptc.PretrainingConfig(temperature=0.5), seed=3)
    batch = small_batch(config)
    model.compile(optimizer=tf_train.adamw(model))
    path = tmp_path / "rtd.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    assert type(again) is ConvBertForPreTraining
    assert again.generator.convbert.embeddings is again.convbert.embeddings
    assert again.pretraining_config.temperature == 0.5 and again.generator_config == model.generator_config
    noise = np.zeros((3, 12, config.vocab_size), np.float32)
    a, b = model({**batch, "gumbel_noise": noise}), again({**batch, "gumbel_noise": noise})
    for key in ("loss", "discriminator_logits", "replaced_input_ids"):
        assert_close(key, b[key], a[key], EXACT)
    assert isinstance(again.optimizer, tf_train.AdamW)


def test_the_pretraining_directory_round_trips_and_loads_in_pytorch(tmp_path, assets):  # noqa: F811
    config = assets.tiny_config()
    model = ConvBertForPreTraining(config)
    model.save_pretrained(tmp_path / "pt", tokenizer=assets.tokenizer)
    assert ptc.is_pretraining_dir(tmp_path / "pt")
    assert (tmp_path / "pt" / "generator" / "vocab.txt").exists()
    loaded = ConvBertForPreTraining.from_pretrained(tmp_path / "pt")
    assert loaded.generator.convbert.embeddings is loaded.convbert.embeddings
    a, b = model.canonical_state(), loaded.canonical_state()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    torch = pytest.importorskip("torch")
    from convbert_pt.pretraining import ConvBertForPreTraining as PtPreTraining

    pt = PtPreTraining.from_pretrained(tmp_path / "pt")
    batch = small_batch(config)
    with torch.no_grad():
        expected = pt(torch.from_numpy(batch["input_ids"].astype(np.int64)),
                      torch.from_numpy(batch["attention_mask"].astype(np.int64))).discriminator_logits
    ours = model({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    assert_close("discriminator logits (PyTorch from Keras' directory)", ours["discriminator_logits"], expected,
                 SAME_COMPUTATION_FP32_ATOL * 10)
    # A plain checkpoint directory loads as the discriminator alone, the RTD head kept.
    alone = ConvBertForPreTraining.from_pretrained(tmp_path / "pt" / "discriminator")
    assert alone.generator is None
    assert_close("discriminator alone", alone({"input_ids": batch["input_ids"],
                                               "attention_mask": batch["attention_mask"]})["discriminator_logits"],
                 ours["discriminator_logits"], EXACT)


def test_bad_pretraining_inputs_are_refused_with_pytorch_s_words():
    config = tiny_config()
    model = ConvBertForPreTraining(config)
    batch = small_batch(config)
    with pytest.raises(ValueError, match=r"labels must have shape \(3, 12\) \(that of input_ids\), got \(3, 11\)"):
        model({**batch, "labels": batch["labels"][:, :11]})
    with pytest.raises(ValueError, match=r"gumbel_noise must have shape \(3, 12, 99\) .* got \(3, 12, 98\)"):
        model({**batch, "gumbel_noise": np.zeros((3, 12, 98), np.float32)})
    with pytest.raises(ValueError, match="gumbel_noise .* needs labels"):
        model({"input_ids": batch["input_ids"], "gumbel_noise": np.zeros((3, 12, 99), np.float32)})
    with pytest.raises(ValueError, match="labels contains the id 99, which is >= vocab_size"):
        model({**batch, "labels": np.where(batch["labels"] >= 0, 99, batch["labels"])})
    with pytest.raises(ValueError, match="sequence length 40 is longer than max_position_embeddings"):
        model({k: np.tile(v, (1, 4))[:, :40] for k, v in batch.items()})
    too_many = np.where(np.arange(12) < 6, batch["input_ids"], heads.IGNORE_INDEX)
    with pytest.raises(ValueError, match="labels row 0 masks 6 positions, more than the 2 the model gathers"):
        model({**batch, "labels": too_many})
    with pytest.raises(ValueError, match="has no generator"):
        ConvBertForPreTraining(config, with_generator=False)(batch)
    with pytest.raises(ValueError, match="generator's embedding_size is 8 but the discriminator's is 16"):
        ConvBertForPreTraining(config, ptc.generator_config(config).replace(embedding_size=8))


_MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from convbert_common.config import ConvBertConfig
    from convbert_common.pretraining_data import PretrainingDataset
    from convbert_tf import train as tf_train
    from convbert_tf.pretraining import ConvBertForPreTraining
    data_dir, tokenizer, config_file = sys.argv[1:4]
    data = PretrainingDataset(data_dir, tokenizer=tokenizer)
    config = ConvBertConfig.from_pretrained(config_file)

    def run(model, scope, accum=1):
        schedule = tf_train.WarmupLinearDecay(5e-3, 1, 4)
        with scope:
            model.compile(optimizer=tf_train.adamw(model, learning_rate=schedule, clip=1.0), micro_batches=accum)
        log = tf_train.PretrainingLog(model.pretraining_config, log_every=1, total_steps=4, positions_per_step=256,
                                      steps_per_epoch=10, schedule=schedule)
        # 8 // accum examples a micro-batch: every step is the same 8 rows, masks and noise.
        batches = tf_train.PretrainingBatches(data, model.pretraining_config, batch_size=8 // accum,
                                              grad_accum=accum, steps=4, gumbel_noise=True)
        model.fit(batches, epochs=1, verbose=0, callbacks=[log], shuffle=False)
        return log.history

    keras.utils.set_random_seed(0)
    single = ConvBertForPreTraining(config)
    start = single.get_weights()
    one = run(single, tf.init_scope())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        replicated = ConvBertForPreTraining(config)
        replicated.set_weights(start)
    two = run(replicated, strategy.scope())
    with strategy.scope():
        accumulated = ConvBertForPreTraining(config)
        accumulated.set_weights(start)
    two_by_two = run(accumulated, strategy.scope(), accum=2)

    def diff(model):
        return max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), model.get_weights()))

    print("RESULT", json.dumps({"replicas": strategy.num_replicas_in_sync, "one": one, "two": two,
                                "two_by_two": two_by_two, "diff": diff(replicated),
                                "diff_two_by_two": diff(accumulated)}))
""")


@pytest.mark.slow
@pytest.mark.tensorflow_backend
def test_mirrored_strategy_over_two_cpus_with_and_without_micro_batches_gives_one_device_s_steps(assets):  # noqa: F811
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(root, "src"), root,
                                                        os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _MIRRORED, str(assets.data), str(assets.tokenizer),
                           str(assets.config)], capture_output=True, text=True, cwd=root, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    # Two replicas, and two replicas of two micro-batches each (--grad-accum 2): one device's steps.
    for other in ("two", "two_by_two"):
        for a, b in zip(result["one"], result[other], strict=True):
            # The same loss scale (normalised by the whole batch's counts), not twice or half of it.
            for key in ("loss", "generator_loss", "discriminator_loss", "grad_norm"):
                assert b[key] == pytest.approx(a[key], rel=REPLICAS_FP32_RTOL), (other, key, a["step"])
            for key in ("generator_accuracy", "discriminator_accuracy", "replaced_fraction"):
                assert b[key] == a[key], (other, key, a["step"])  # counts over counts: equal, not close
    assert result["diff"] < REPLICAS_FP32_ATOL
    assert result["diff_two_by_two"] < REPLICAS_FP32_ATOL


# The command's layout, checkpoints and resume are backend-neutral; the Keras loop itself is trained,
# stopped and checkpointed on every backend by the tests around it.
@pytest.mark.tensorflow_leg
def test_convbert_pretrain_framework_keras_writes_pytorch_s_layout_and_resumes(assets, tmp_path, capsys):  # noqa: F811
    from convbert_common.pretraining_data import SAMPLE_CORPUS
    from convbert_tools.cli import main

    out = tmp_path / "run"
    common = ["--framework", "keras", "--tokenizer", str(assets.tokenizer), "--config", str(assets.config),
              "--output", str(out), "--no-progress", "--device", "cpu", "--batch-size", "8", "--learning-rate",
              "5e-3", "--warmup-steps", "2", "--log-every", "3", "--save-every", "3", "--keep-checkpoints", "2"]
    assert main(["pretrain", "--corpus", SAMPLE_CORPUS, "--max-seq-length", "32", "--steps", "6", *common]) == 0
    assert capsys.readouterr().out.startswith(f"pretrained 6 steps -> {out}")
    assert ptc.is_pretraining_dir(out) and (out / ptc.DATA_DIR / "manifest.json").exists()
    for part in ("discriminator", "generator"):
        assert (out / part / "vocab.txt").exists() and (out / part / "model.safetensors").exists()
    log = [json.loads(line) for line in (out / ptc.LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6] and list(log[0]) == list(ptc.LOG_KEYS)
    assert [s for s, _ in ptc.list_checkpoints(out)] == [3, 6]
    state = ptc.read_trainer_state(out / "checkpoint-6")
    assert state["framework"] == "keras" and state["step"] == 6
    assert (out / "checkpoint-6" / ptc.OPTIMIZER_NAME).exists()
    # --resume goes on from checkpoint-6 (a longer --steps is the one change a resume may make).
    assert main(["pretrain", "--corpus", SAMPLE_CORPUS, "--max-seq-length", "32", "--steps", "9", "--resume",
                 *common]) == 0
    log = [json.loads(line) for line in (out / ptc.LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9]
    assert [s for s, _ in ptc.list_checkpoints(out)] == [6, 9]
    capsys.readouterr()
    assert main(["pretrain", "--data", str(assets.data), "--steps", "2", "--resume",
                 *[a if a != str(out) else str(tmp_path / "empty") for a in common]]) == 1
    assert "holds no checkpoint" in capsys.readouterr().err


def test_mixed_bfloat16_trains_with_float32_variables_logits_and_losses():
    config = tiny_config()
    model = ConvBertForPreTraining(config, dtype="mixed_bfloat16", seed=0)
    assert {v.dtype for v in model.weights} == {"float32"}
    model.compile(optimizer=tf_train.adamw(model, learning_rate=1e-2))
    batch = small_batch(config)
    first = model.train_on_batch(batch, return_dict=True)
    for _ in range(3):
        last = model.train_on_batch(batch, return_dict=True)
    assert np.isfinite(first["loss"]) and last["generator_loss"] < first["generator_loss"]
    out = model(batch)
    assert {keras.backend.standardize_dtype(out[k].dtype) for k in ("loss", "generator_logits",
                                                                     "discriminator_logits")} == {"float32"}


def test_a_non_finite_loss_stops_the_keras_run_naming_the_step_and_keeping_the_last_good_checkpoint(
        assets, tmp_path):  # noqa: F811
    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:  # after step 3: step 4's forward sees a NaN weight
                var = self.model.discriminator_predictions.dense.kernel
                var.assign(np.full(var.shape, np.nan, np.float32))

    s = ptc.TrainingSettings(output=str(tmp_path), data=str(assets.data), tokenizer=str(assets.tokenizer),
                             config=str(assets.config), batch_size=8, steps=6, learning_rate=5e-3, warmup_steps=1,
                             log_every=1, save_every=2, progress=False, device="cpu")
    with pytest.raises(tf_train.TrainingError, match=r"step 4: the loss is not finite .*checkpoint-2"):
        tf_train.train(s, callbacks=[Poison()])
    assert [step for step, _ in ptc.list_checkpoints(tmp_path)] == [2]
    assert not ptc.is_pretraining_dir(tmp_path)  # no final models from a diverged run


@pytest.mark.tensorflow_backend
def test_the_tf_data_pipeline_yields_the_py_dataset_s_batches_and_fit_trains_on_them_in_order(assets):  # noqa: F811
    keras.utils.set_random_seed(0)
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    model = ConvBertForPreTraining(assets.tiny_config(), seed=0)
    # Three steps of two micro-batches from the last micro-batch of the first epoch on: one step straddles two.
    start = data.steps_per_epoch(4) // 2
    batches = tf_train.PretrainingBatches(data, model.pretraining_config, batch_size=4, grad_accum=2, seed=3,
                                          steps=3, start_step=start, gumbel_noise=True)
    dataset = batches.to_tf_dataset()
    items = list(dataset.as_numpy_iterator())
    assert len(items) == len(batches) == 3
    for index, item in enumerate(items):
        expected = batches[index]
        assert sorted(item) == sorted(expected)
        for key, value in expected.items():
            assert item[key].dtype == value.dtype
            assert_close(f"step {start + index}: {key}", item[key], value, EXACT)
    first = float(keras.ops.convert_to_numpy(model(batches[0])["generator_loss"]))
    schedule = tf_train.WarmupLinearDecay(5e-3, 1, 3)
    model.compile(optimizer=tf_train.adamw(model, learning_rate=schedule))
    log = tf_train.PretrainingLog(model.pretraining_config, log_every=1, total_steps=3, positions_per_step=256,
                                  steps_per_epoch=batches.per_epoch, grad_accum=2, schedule=schedule)
    model.fit(dataset, epochs=1, verbose=0, callbacks=[log], shuffle=False)
    assert [r["step"] for r in log.history] == [1, 2, 3]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3
    # The first step trained on the first batch: its logged loss is that batch's before the update.
    assert_close("step 1 generator loss", log.history[0]["generator_loss"], first,
                 SAME_COMPUTATION_FP32_RTOL * first)
    assert all(np.isfinite(r["loss"]) for r in log.history)


def _one_fit_step(config, start, item, micro_batches):
    """The history and weights after one ``fit`` step on ``item`` from the weights ``start``."""
    model = ConvBertForPreTraining(config, seed=0)
    model.set_weights(start)
    model.compile(optimizer=tf_train.adamw(model, learning_rate=5e-3, clip=1.0), micro_batches=micro_batches)
    history = model.fit(item, batch_size=len(item["labels"]), epochs=1, shuffle=False, verbose=0).history
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1
    return history, model.get_weights()


def _whole_batch_case(assets):  # noqa: F811
    """A config without dropout, start weights, and a step of 4 + 4 rows with its own Gumbel noise:
    one step over 8 rows and two over 4 + 4 then see the same computation."""
    config = assets.tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    keras.utils.set_random_seed(0)
    start = ConvBertForPreTraining(config, seed=0).get_weights()
    item = tf_train.PretrainingBatches(data, ptc.PretrainingConfig(), batch_size=4, grad_accum=2, seed=5,
                                       gumbel_noise=True).batch(0)
    for key in ("labels", "attention_mask"):
        counts = (item[key] != (heads.IGNORE_INDEX if key == "labels" else 0)).reshape(2, -1).sum(axis=1)
        assert counts[0] != counts[1], f"{key}: the micro-batches should hold different counts"
    return config, start, item


def _assert_the_same_step(one, two, start):
    (history_one, after_one), (history_two, after_two) = one, two
    assert max(float(np.abs(a - b).max()) for a, b in zip(after_one, start, strict=True)) > 100 * REPLICAS_FP32_ATOL
    for a, b in zip(after_one, after_two, strict=True):
        assert_close("weights after the step", b, a, REPLICAS_FP32_ATOL)
    for key in ("loss", "generator_loss", "discriminator_loss"):
        assert history_two[key][0] == pytest.approx(history_one[key][0], rel=REPLICAS_FP32_RTOL), key
    for key in ("generator_accuracy", "discriminator_accuracy", "replaced_fraction"):
        assert history_two[key][0] == history_one[key][0], key  # counts over counts: equal, not close


def test_micro_batches_give_the_whole_batch_s_step_on_every_backend(assets):  # noqa: F811
    # Each slice's sums over the whole step's counts: averaging each slice's own means would not pass.
    config, start, item = _whole_batch_case(assets)
    _assert_the_same_step(_one_fit_step(config, start, item, 1), _one_fit_step(config, start, item, 2), start)
    odd = ConvBertForPreTraining(config, seed=0)
    odd.compile(optimizer=tf_train.adamw(odd, learning_rate=5e-3), micro_batches=3)
    with pytest.raises(ValueError, match=r"a batch of 8 rows does not split into micro_batches=3"):
        odd.train_on_batch(item)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution.DataParallel: JAX only")
def test_micro_batches_under_jax_data_parallel_give_one_device_s_step(assets):  # noqa: F811
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        pytest.skip("needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    config, start, item = _whole_batch_case(assets)
    one = _one_fit_step(config, start, item, 1)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices[:2]))
    try:
        two = _one_fit_step(config, start, item, 2)
    finally:
        keras.distribution.set_distribution(None)
    _assert_the_same_step(one, two, start)


def test_the_keras_loop_runs_grad_accum_on_every_backend(assets, tmp_path):  # noqa: F811
    from tests.pt.pretraining.conftest import read_log, training_settings

    tf_train.train(training_settings(assets, tmp_path, batch_size=4, grad_accum=2, steps=2, log_every=1,
                                     save_every=2))
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in read_log(tmp_path))
    state = ptc.read_trainer_state(tmp_path / ptc.checkpoint_name(2))
    assert state["run"]["global_batch"] == 8 and state["step"] == 2


def test_the_tensorflow_only_pretraining_features_name_the_backend_they_need(assets):  # noqa: F811
    from convbert_tf.backend import BackendError

    model = ConvBertForPreTraining(tiny_config(), seed=0)
    data = PretrainingDataset(assets.data, tokenizer=assets.tokenizer)
    batches = tf_train.PretrainingBatches(data, model.pretraining_config, batch_size=4, steps=1)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"micro_batches must be a positive integer"):
            model.compile(micro_batches=bad)
    with pytest.raises(ValueError, match=r"grad_accum must be a positive integer, got 0"):
        tf_train.PretrainingBatches(data, model.pretraining_config, batch_size=4, grad_accum=0)
    with pytest.raises(ValueError, match=r"accumulates the model's own loss: keep loss='auto'"):
        model.compile(loss="mse", micro_batches=2)
    if keras.backend.backend() == "tensorflow":
        return
    with pytest.raises(BackendError, match=r"to_tf_dataset \(tf.data\) needs the TensorFlow backend"):
        batches.to_tf_dataset()
