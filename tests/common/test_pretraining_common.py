"""The framework-free pieces of pretraining: the RTD head's record, the generator's size, the knobs, the
pretraining directory, the schedule, the batch stream, checkpoint folders and the log."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from convbert_common import heads, presets
from convbert_common import pretraining as ptc
from convbert_common import weight_map as wm
from convbert_common.config import ConvBertConfig
from convbert_common.pretraining_data import SAMPLE_CORPUS, PretrainingDataset, build_dataset
from tests.conftest import hf_tokenizer_dir


def test_the_rtd_head_is_a_task_record_named_in_every_format():
    assert heads.get("pretraining") is heads.PRETRAINING is heads.of_class("ConvBertForPreTraining")
    assert heads.of_architectures(["ConvBertForPreTraining"]) is heads.PRETRAINING
    assert "pretraining" not in heads.NAMES and len(heads.NAMES) == 6  # the fine-tuning heads stay as they were
    config = presets.preset("small", vocab_size=100)
    specs = {s.name: s for s in wm.head_specs(config, heads.PRETRAINING)}
    head = "discriminator_predictions"
    parts = ("dense.weight", "dense_prediction.weight", "dense_prediction.bias")
    dense, out, bias = (specs[f"{head}.{n}"] for n in parts)
    assert dense.shape == (256, 256) and out.shape == (1, 256) and bias.shape == (1,)
    assert (dense.tf1, out.tf1) == (f"{head}/dense/kernel", f"{head}/dense_1/kernel")
    assert out.hf_tf == "discriminator_predictions/dense_prediction/kernel" and out.tf1_layout == "transpose"
    assert (out.keras_layer, out.keras_variable) == ("discriminator_predictions/dense_prediction", "kernel")
    names = [s.name for s in wm.model_specs(config, heads.PRETRAINING)]
    assert names[0] == "convbert.embeddings.word_embeddings.weight" and len(names) == len(set(names))


@pytest.mark.parametrize("name, size, expected", [
    ("small", 0.25, (64, 1, 256)), ("medium-small", 0.25, (96, 2, 384)), ("base", 1 / 3, (256, 4, 1024)),
    ("small", 1.0, (256, 4, 1024)),
])
def test_the_generator_is_narrower_with_the_same_depth_and_embedding_tables(name, size, expected):
    config = presets.preset(name)
    gen = ptc.generator_config(config, size)
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == expected
    assert gen.num_hidden_layers == config.num_hidden_layers and gen.architectures == ["ConvBertForMaskedLM"]
    for field in ptc.SHARED_EMBEDDING_FIELDS:
        assert getattr(gen, field) == getattr(config, field)


def test_generator_sizes_round_to_a_valid_convbert():
    config = ConvBertConfig(hidden_size=96, num_attention_heads=6, intermediate_size=300, num_groups=3,
                            embedding_size=32, vocab_size=50, pad_token_id=0)
    gen = ptc.generator_config(config, 0.3)  # 28.8 -> a multiple of lcm(2 * 1, 3) = 6: 30
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (30, 2, 90)
    with pytest.raises(ValueError, match=r"--generator-size: generator_size must be in \(0.0, 1.0\], got 1.5"):
        ptc.generator_config(config, 1.5)


def test_a_generator_that_cannot_share_the_tables_is_refused_naming_both_sizes():
    config = presets.preset("small", vocab_size=100)
    gen = ptc.generator_config(config)
    with pytest.raises(ValueError, match="gen.json: the generator's embedding_size is 64 but the discriminator's is "
                                         "128; .* so its embedding_size must be 128"):
        ptc.check_shareable(config, gen.replace(embedding_size=64), source="gen.json")
    with pytest.raises(ValueError, match="generator's vocab_size is 99 but the discriminator's is 100"):
        ptc.check_shareable(config, gen.replace(vocab_size=99))


def test_the_knobs_round_trip_and_bad_ones_are_refused(tmp_path):
    knobs = ptc.PretrainingConfig(generator_size=0.5, random_token_prob=0.1, mask_token_prob=0.8)
    knobs.save_pretrained(tmp_path)
    data = json.loads((tmp_path / ptc.PRETRAINING_CONFIG_NAME).read_text())
    assert data["disc_weight"] == 50.0 and data["temperature"] == 1.0
    (tmp_path / ptc.PRETRAINING_CONFIG_NAME).write_text(json.dumps({**data, "note": "kept"}))
    again = ptc.PretrainingConfig.from_pretrained(tmp_path)
    assert again.to_dict() == {**knobs.to_dict(), "note": "kept"}
    with pytest.raises(ValueError, match="mask_token_prob 0.9 \\+ random_token_prob 0.2 is above 1"):
        ptc.PretrainingConfig(mask_token_prob=0.9, random_token_prob=0.2)
    with pytest.raises(ValueError, match=r"temperature must be in \(0.0, inf\], got 0"):
        ptc.PretrainingConfig(temperature=0)
    (tmp_path / ptc.PRETRAINING_CONFIG_NAME).write_text(json.dumps({"mask_prob": 2}))
    with pytest.raises(ValueError, match=r"pretraining_config.json: mask_prob must be in \[0.0, 1.0\], got 2"):
        ptc.PretrainingConfig.from_pretrained(tmp_path)


def test_a_pretraining_directory_names_what_it_lacks(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pretraining directory"):
        ptc.read_pretraining_dir(tmp_path / "nothing")
    config = presets.preset("small", vocab_size=100)
    ptc.PretrainingConfig().save_pretrained(tmp_path)
    config.replace(architectures=["ConvBertForPreTraining"]).save_pretrained(tmp_path / "discriminator")
    with pytest.raises(FileNotFoundError, match=r"not a pretraining directory: missing .*generator/config.json"):
        ptc.read_pretraining_dir(tmp_path)
    ptc.generator_config(config).replace(embedding_size=64).save_pretrained(tmp_path / "generator")
    with pytest.raises(ValueError, match="generator/config.json: the generator's embedding_size is 64"):
        ptc.read_pretraining_dir(tmp_path)
    config.replace(architectures=["ConvBertForMaskedLM"]).save_pretrained(tmp_path / "generator")
    config.replace(architectures=["ConvBertForMaskedLM"]).save_pretrained(tmp_path / "discriminator")
    with pytest.raises(ValueError, match="discriminator/config.json: names ConvBertForMaskedLM; a pretraining "
                                         "directory's discriminator/ holds a ConvBertForPreTraining or ConvBertModel"):
        ptc.read_pretraining_dir(tmp_path)


def test_the_learning_rate_warms_up_linearly_then_decays_to_zero_after_the_last_step():
    factors = [ptc.learning_rate_factor(s, 4, 12) for s in range(12)]
    np.testing.assert_allclose(factors[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(factors[4:], [1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert ptc.learning_rate_factor(12, 4, 12) == 0.0 and ptc.learning_rate_factor(0, 0, 5) == 1.0


def test_gumbel_noise_seeds_differ_by_row_step_and_seed():
    seeds = {ptc.noise_seed(s, t, r) for s in range(3) for t in range(3) for r in range(3)}
    assert len(seeds) == 27 and all(0 <= x < 2**63 for x in seeds)
    noise = ptc.gumbel_from_uniform(np.array([0.0, 0.5, 1 - 1e-7]))
    assert np.isfinite(noise).all() and noise[0] < noise[1] < noise[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rtd-data") / "data"
    build_dataset(SAMPLE_CORPUS, hf_tokenizer_dir(), folder, max_seq_length=24,
                  progress=False)
    return PretrainingDataset(folder)


def _rows(dataset, *, batch_size, grad_accum, world_size, steps=3, start_step=0):
    """{(step, global row): (ids, labels)} over every rank's micro-batches."""
    out = {}
    for rank in range(world_size):
        stream = ptc.masked_batches(dataset, ptc.PretrainingConfig(), batch_size=batch_size, grad_accum=grad_accum,
                                    world_size=world_size, rank=rank, seed=7, start_step=start_step)
        for _ in range(steps * grad_accum):
            mb = next(stream)
            for i in range(batch_size):
                out[(mb.step, mb.row_offset + i)] = (mb.input_ids[i].tolist(), mb.labels[i].tolist())
    return out


def test_a_step_holds_the_same_rows_masks_however_its_batch_is_split(dataset):
    whole = _rows(dataset, batch_size=8, grad_accum=1, world_size=1)
    assert len(whole) == 24 and sorted({s for s, _ in whole}) == [0, 1, 2]
    assert _rows(dataset, batch_size=4, grad_accum=1, world_size=2) == whole
    assert _rows(dataset, batch_size=2, grad_accum=2, world_size=2) == whole
    assert _rows(dataset, batch_size=8, grad_accum=1, world_size=1, steps=2, start_step=1) == {
        k: v for k, v in whole.items() if k[0] >= 1}
    masked = sum(sum(label != heads.IGNORE_INDEX for label in labels) for _ids, labels in whole.values())
    assert masked > 0


def test_the_batch_stream_goes_on_into_the_next_epoch(dataset):
    per_epoch = dataset.steps_per_epoch(16)
    stream = ptc.masked_batches(dataset, ptc.PretrainingConfig(), batch_size=16, grad_accum=1, world_size=1, rank=0,
                                seed=0, start_step=per_epoch - 1)
    last, first_of_next = next(stream), next(stream)
    assert (last.step, first_of_next.step) == (per_epoch - 1, per_epoch)
    assert ptc.data_position(per_epoch, 1, per_epoch) == (1, 0)


def test_checkpoints_are_listed_complete_only_and_the_oldest_pruned(tmp_path):
    for step in (5, 10, 20):
        folder = tmp_path / ptc.checkpoint_name(step)
        folder.mkdir()
        ptc.write_trainer_state(folder, {"step": step, "run": {}})
    (tmp_path / "checkpoint-30").mkdir()  # no trainer_state.json: an interrupted write
    (tmp_path / ".checkpoint-40.abc.tmp").mkdir()
    assert [s for s, _ in ptc.list_checkpoints(tmp_path)] == [5, 10, 20]
    assert ptc.latest_checkpoint(tmp_path)[0] == 20
    removed = ptc.prune_checkpoints(tmp_path, 2)
    assert [os.path.basename(p) for p in removed] == ["checkpoint-5"]
    assert [s for s, _ in ptc.list_checkpoints(tmp_path)] == [10, 20]
    (tmp_path / "checkpoint-10" / ptc.TRAINER_STATE_NAME).write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="is not a convbert pretraining checkpoint state"):
        ptc.read_trainer_state(tmp_path / "checkpoint-10")


def test_resume_mismatches_name_the_setting_and_let_the_length_change():
    saved = {"model": {"hidden_size": 32}, "schedule": {"total_steps": 10}, "world_size": 1, "seed": 0}
    now = {"model": {"hidden_size": 64}, "schedule": {"total_steps": 20}, "world_size": 2, "seed": 0}
    refused, allowed = ptc.resume_mismatches(saved, now)
    assert refused == ["model.hidden_size: 32 in the checkpoint, 64 now"]
    assert allowed == ["schedule.total_steps: 10 in the checkpoint, 20 now", "world_size: 1 in the checkpoint, 2 now"]


def test_the_warm_up_is_the_flag_else_the_resumed_runs_else_a_tenth(tmp_path):
    ptc.write_trainer_state(tmp_path, {"step": 40, "run": {"schedule": {"total_steps": 40, "warmup_steps": 7}}})
    settings = ptc.TrainingSettings(output=str(tmp_path))
    assert ptc.warmup_steps(settings, 80, None) == 8
    assert ptc.warmup_steps(settings, 80, str(tmp_path)) == 7  # a longer resumed run keeps its warm-up
    assert ptc.warmup_steps(ptc.TrainingSettings(output=str(tmp_path), warmup_steps=3), 80, str(tmp_path)) == 3


def test_the_step_count_is_the_flag_else_the_epochs_in_optimizer_steps():
    def steps(**flags):
        return ptc.total_steps(ptc.TrainingSettings(output="run", **flags), 10, 40)

    assert steps(steps=7) == 7
    assert steps() == 10  # one epoch by default
    assert steps(epochs=3, grad_accum=4) == 7  # 30 micro-batches, 4 a step: the last 2 are not a step
    with pytest.raises(ValueError, match=r"one epoch of 40 examples is 10 micro-batches, fewer than --grad-accum 16"):
        steps(grad_accum=16)


def test_a_resume_is_refused_past_the_end_or_with_other_settings(tmp_path):
    run = {"model": {"hidden_size": 32}, "schedule": {"total_steps": 10}}
    ptc.write_trainer_state(tmp_path, {"step": 4, "run": run})
    assert ptc.resume_state(str(tmp_path), 4, {**run, "schedule": {"total_steps": 20}}, 20)["run"] == run
    with pytest.raises(ValueError, match="is at step 10, the run's end"):
        ptc.resume_state(str(tmp_path), 10, run, 10)
    with pytest.raises(ValueError, match="other settings or data: model.hidden_size: 32 in the checkpoint, 64 now"):
        ptc.resume_state(str(tmp_path), 4, {**run, "model": {"hidden_size": 64}}, 10)


def test_the_log_of_a_resumed_run_drops_what_came_after_its_checkpoint(tmp_path):
    log = ptc.LogWriter(tmp_path, tensorboard=False)
    for step in (2, 4, 6):
        log.write({"step": step, "loss": float(step)})
    log.close()
    with open(tmp_path / ptc.LOG_NAME, "a", encoding="utf-8") as fh:
        fh.write('{"step": 8, "lo')  # cut off by the interruption
    resumed = ptc.LogWriter(tmp_path, resume_step=4, tensorboard=False)
    resumed.write({"step": 6, "loss": 6.5})
    resumed.close()
    lines = [json.loads(line) for line in (tmp_path / ptc.LOG_NAME).read_text().splitlines()]
    assert lines == [{"step": 2, "loss": 2.0}, {"step": 4, "loss": 4.0}, {"step": 6, "loss": 6.5}]
    ptc.LogWriter(tmp_path, tensorboard=False).close()  # a fresh run starts a fresh log
    assert (tmp_path / ptc.LOG_NAME).read_text() == ""


def test_training_settings_name_the_flag_they_refuse(tmp_path):
    base = dict(output=str(tmp_path), data=str(tmp_path))
    ptc.TrainingSettings(**base).validate()
    cases = [({"batch_size": 0}, "--batch-size must be an integer >= 1, got 0"),
             ({"steps": 5, "epochs": 1}, "pass --steps or --epochs, not both"),
             ({"data": None}, "pass --corpus PATH... .* or --data DIR"),
             ({"corpus": ["x.txt"]}, "pass --corpus or --data, not both"),
             ({"resume": True, "overwrite": True}, "--resume continues OUTPUT's run and --overwrite discards it"),
             ({"init_from": "x", "config": "small"}, "--init-from brings its own config: drop --config"),
             ({"learning_rate": -1.0}, r"--learning-rate must be a number in \[0.0, inf\], got -1.0"),
             ({"device": "tpu"}, "--device must be auto, cpu or cuda")]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ptc.TrainingSettings(**{**base, **change}).validate()


def _scalar_file(folder):
    from convbert_common import events

    writer = events.ScalarWriter(str(folder))
    writer.add_scalars(3, {"pretrain/loss": 2.5})
    writer.close()
    return writer


def test_tensorboard_events_are_crc32c_framed_event_records(tmp_path):
    import struct

    from convbert_common import events

    assert events.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    writer = _scalar_file(tmp_path)
    data = open(writer.path, "rb").read()
    records = []
    while data:
        (length,) = struct.unpack("<Q", data[:8])
        assert struct.unpack("<I", data[8:12])[0] == events._masked(events.crc32c(data[:8]))
        body = data[12:12 + length]
        assert struct.unpack("<I", data[12 + length:16 + length])[0] == events._masked(events.crc32c(body))
        records.append(body)
        data = data[16 + length:]
    assert len(records) == 2 and b"brain.Event:2" in records[0] and b"pretrain/loss" in records[1]
    assert struct.pack("<f", 2.5) in records[1]


def test_tensorboard_reads_the_scalars_when_installed(tmp_path):
    _scalar_file(tmp_path)
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    reader = accumulator.EventAccumulator(str(tmp_path))
    reader.Reload()
    assert [(e.step, e.value) for e in reader.Scalars("pretrain/loss")] == [(3, 2.5)]
