"""Run by the distributed tests under torchrun (and once without): a short pretraining run that
writes the first step's summed gradients (rank 0) for comparison."""

from __future__ import annotations

import argparse
import os

import torch

from convbert_common import pretraining as ptc
from convbert_pt.train import train


def main() -> None:
    p = argparse.ArgumentParser()
    for flag in ("--output", "--data", "--tokenizer", "--config", "--dump"):
        p.add_argument(flag, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)

    def dump(event, step, trainer):
        if event == "after_backward" and step == 0 and int(os.environ.get("RANK", "0")) == 0:
            torch.save({n: q.grad.detach().clone() for n, q in trainer.model.named_parameters()}, args.dump)

    train(ptc.TrainingSettings(output=args.output, data=args.data, tokenizer=args.tokenizer, config=args.config,
                               batch_size=args.batch_size, steps=args.steps,
                               learning_rate=5e-3, warmup_steps=1, log_every=1, save_every=1000, progress=False,
                               device="cpu"), callbacks=[dump])


if __name__ == "__main__":
    main()
