"""Plot a pretraining run's ``log.jsonl``: losses, discriminator accuracy and throughput against the step.

Needs matplotlib (not a dependency of the library: ``pip install matplotlib``, a throwaway venv
with ``--system-site-packages`` is enough).

    python bench/plot_pretrain_log.py runs/prose/log.jsonl bench/results/pretrain_curves.png
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", help="the run's log.jsonl")
    p.add_argument("png", help="where to write the plot")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.log, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    if not records:
        raise SystemExit(f"{args.log} holds no records")
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    panels = (("generator_loss", "generator MLM loss"), ("discriminator_loss", "discriminator BCE"),
              ("discriminator_accuracy", "discriminator accuracy"), ("tokens_per_second", "tokens / s"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.plot(steps, [r[key] for r in records], linewidth=1)
        if key == "discriminator_accuracy":
            ax.plot(steps, [1 - r["replaced_fraction"] for r in records], linewidth=1, linestyle="--",
                    label="always 'original'")
            ax.legend(loc="lower right")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png} ({len(records)} records, steps {steps[0]}..{steps[-1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
