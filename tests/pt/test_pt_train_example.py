"""examples/pt_train.py: one process and two DDP processes (gloo) compute the same gradients and
weights; a run interrupted and resumed ends where an uninterrupted one does; the toy task is learnt."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.conftest import hf_tokenizer_dir
from tests.parity import assert_close
from tests.tolerances import SAME_COMPUTATION_FP32_ATOL, SAME_COMPUTATION_FP32_RTOL

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "pt_train.py"
FAST = ["--threads", "1", "--no-progress", "--dropout", "0", "--max-length", "32"]


def _tokenizer_dir() -> pathlib.Path:
    return hf_tokenizer_dir()


def _example():
    spec = importlib.util.spec_from_file_location("pt_train_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(run: pathlib.Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def test_two_ddp_processes_give_the_gradients_and_weights_of_one_process(tmp_path):
    common = [*FAST, "--tokenizer", str(_tokenizer_dir()), "--max-steps", "2"]
    single, double = tmp_path / "single", tmp_path / "ddp"
    _example().main([*common, "--output-dir", str(single), "--dump-first-grads", str(tmp_path / "g1.pt")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
         *common, "--output-dir", str(double), "--dump-first-grads", str(tmp_path / "g2.pt")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = torch.load(tmp_path / "g1.pt"), torch.load(tmp_path / "g2.pt")
    assert one.keys() == two.keys() and len(one) > 10
    scale = max(g.abs().max().item() for g in one.values())
    for name in one:
        assert_close(f"grad {name}", two[name], one[name], SAME_COMPUTATION_FP32_RTOL * scale)
    w1, w2 = _weights(single), _weights(double)
    for name in w1:
        assert_close(f"weight {name}", w2[name], w1[name], SAME_COMPUTATION_FP32_ATOL)


def test_interrupted_then_resumed_run_ends_where_an_uninterrupted_run_does(tmp_path):
    common = [*FAST, "--tokenizer", str(_tokenizer_dir()), "--epochs", "2", "--dropout", "0.1"]
    example = _example()
    torch.manual_seed(123)
    example.main([*common, "--output-dir", str(tmp_path / "straight")])
    example.main([*common, "--output-dir", str(tmp_path / "resumed"), "--interrupt-after", "20"])
    assert int(torch.load(tmp_path / "resumed" / "checkpoint" / "training_state.pt")["step"]) == 20
    torch.manual_seed(456)  # the resumed run restores the RNG state it saved
    example.main([*common, "--output-dir", str(tmp_path / "resumed"), "--resume"])
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for name in a:
        assert_close(name, b[name], a[name], SAME_COMPUTATION_FP32_ATOL)


def test_the_example_learns_the_toy_sentiment_task(tmp_path):
    history = _example().main(["--threads", "1", "--no-progress", "--tokenizer", str(_tokenizer_dir()),
                               "--output-dir", str(tmp_path)])
    assert history["eval_accuracy"][-1] >= 0.9, history["eval_accuracy"]
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5])
