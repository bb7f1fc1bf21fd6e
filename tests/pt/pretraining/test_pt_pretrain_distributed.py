"""Scale-out: two DDP processes (gloo) compute the gradient of one process with the doubled batch; an FSDP2
run on two processes trains and saves; gradient accumulation is the doubled batch too."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from convbert_common import pretraining as ptc
from convbert_pt.pretraining import ConvBertForPreTraining
from convbert_pt.train import train
from tests.parity import assert_close

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "ddp_worker.py"
REPO = HERE.parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}


def _worker_args(assets, output, dump, batch_size) -> list[str]:
    return [str(WORKER), "--output", str(output), "--data", str(assets.data), "--tokenizer", str(assets.tokenizer),
            "--config", str(assets.config), "--dump", str(dump), "--batch-size", str(batch_size)]


def _torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _log(output) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(output) / ptc.LOG_NAME).read_text().splitlines()]


def _compare_grads(one: dict, two: dict) -> None:
    assert one.keys() == two.keys() and len(one) > 50
    scale = max(g.abs().max().item() for g in one.values())
    for name in one:
        assert_close(f"grad {name}", two[name], one[name], 1e-6 * scale)


def _in_process(assets, output, batch_size, grad_accum=1) -> dict[str, torch.Tensor]:
    grads = {}

    def keep(event, step, trainer):
        if event == "after_backward" and step == 0:
            grads.update({n: q.grad.detach().clone() for n, q in trainer.model.named_parameters()})

    torch.set_num_threads(1)
    train(ptc.TrainingSettings(output=str(output), data=str(assets.data), tokenizer=str(assets.tokenizer),
                               config=str(assets.config), batch_size=batch_size, grad_accum=grad_accum, steps=2,
                               learning_rate=5e-3, warmup_steps=1, log_every=1, save_every=1000, progress=False,
                               device="cpu"), callbacks=[keep])
    return grads


@pytest.mark.slow
def test_two_ddp_processes_give_the_gradient_of_one_process_with_the_doubled_batch(assets, tmp_path):
    torch.save(_in_process(assets, tmp_path / "one", 16), tmp_path / "g1.pt")
    _torchrun(_worker_args(assets, tmp_path / "ddp", tmp_path / "g2.pt", 8))
    one, two = torch.load(tmp_path / "g1.pt"), torch.load(tmp_path / "g2.pt")
    _compare_grads(one, two)
    a, b = _log(tmp_path / "one"), _log(tmp_path / "ddp")
    for key in ("loss", "generator_loss", "discriminator_accuracy", "replaced_fraction"):
        assert_close(key, [r[key] for r in b], [r[key] for r in a], 1e-5)


def test_gradient_accumulation_gives_the_gradient_of_the_doubled_batch(assets, tmp_path):
    _compare_grads(_in_process(assets, tmp_path / "one", 16), _in_process(assets, tmp_path / "accum", 8, 2))


@pytest.mark.slow
def test_an_fsdp2_run_on_two_processes_trains_and_saves(assets, tmp_path):
    out = tmp_path / "fsdp"
    _torchrun(["-m", "convbert_tools.cli", "pretrain", "--data", str(assets.data), "--tokenizer",
               str(assets.tokenizer), "--config", str(assets.config), "--output", str(out), "--fsdp",
               "--batch-size", "8", "--steps", "4", "--save-every", "2", "--log-every", "1", "--learning-rate", "5e-3",
               "--warmup-steps", "1", "--no-progress", "--device", "cpu"])
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4] and log[-1]["loss"] < log[0]["loss"]
    assert [s for s, _ in ptc.list_checkpoints(out)] == [2, 4]
    state = ptc.read_trainer_state(out / "checkpoint-4")
    assert state["world_size"] == 2 and (out / "checkpoint-4" / "rng-rank1.pt").exists()
    model = ConvBertForPreTraining.from_pretrained(out)
    assert model.generator.convbert.embeddings is model.convbert.embeddings
    # FSDP's checkpoint resumes in one process (same global batch: 16 rows).
    train(ptc.TrainingSettings(output=str(out), data=str(assets.data), tokenizer=str(assets.tokenizer),
                               config=str(assets.config), batch_size=16, steps=5, learning_rate=5e-3, warmup_steps=1,
                               log_every=1, save_every=2, progress=False, device="cpu", resume=True))
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4, 5]
