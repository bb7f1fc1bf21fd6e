"""``convbert pretrain``: replaced-token-detection pretraining (ELECTRA's method) from text or data to checkpoints.

One process: ``convbert pretrain --corpus TEXT --tokenizer DIR --output OUT``. Several: the same
command under ``torchrun --nproc_per_node=N -m convbert_tools.cli pretrain ...`` (DDP; ``--fsdp``
shards with FSDP2), gloo on CPUs, nccl on GPUs. ``--framework keras`` runs ``model.fit`` in one
process (``tf.distribute.MirroredStrategy`` over its devices when it sees several) with the same
flags, files and checkpoints; either framework resumes the other's.
"""

from __future__ import annotations

import argparse
import os
import sys

from convbert_common.presets import PRESETS
from convbert_tools.commands import EXIT_ERROR, EXIT_OK

NAME = "pretrain"
HELP = "pretrain (or continue pretraining) a ConvBERT with replaced-token detection"
FRAMEWORKS = ("pytorch", "keras")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from convbert_common.pretraining import PretrainingConfig, TrainingSettings

    d, k = TrainingSettings(output=""), PretrainingConfig()
    io = p.add_argument_group("data and models")
    io.add_argument("--corpus", nargs="+", default=[], metavar="PATH",
                    help=".txt / .txt.gz / .jsonl files or folders; built into OUTPUT/data (reused when unchanged)")
    io.add_argument("--data", default=None, metavar="DIR", help="a data directory of convbert pretrain-data")
    io.add_argument("--tokenizer", default=None, metavar="DIR",
                    help="the tokenizer folder (vocab.txt); default: that of --init-from or the resumed checkpoint")
    io.add_argument("--config", default=None, metavar="PRESET|FILE",
                    help=f"the discriminator: a preset ({', '.join(PRESETS)}; sized to the tokenizer) or a "
                         "config.json (default: small)")
    io.add_argument("--generator-size", type=float, default=None, metavar="F",
                    help=f"the generator's width as a fraction of the discriminator's (default {k.generator_size})")
    io.add_argument("--generator-config", default=None, metavar="FILE", help="the generator's config.json instead")
    io.add_argument("--init-from", default=None, metavar="DIR",
                    help="start from these weights: a pretraining directory (convert --pretraining, an earlier "
                         "run), or a checkpoint directory as the discriminator (then a fresh generator)")
    io.add_argument("--output", required=True, metavar="DIR",
                    help="the run: log.jsonl, checkpoint-STEP/, and the final discriminator/ and generator/")
    io.add_argument("--resume", action="store_true", help="continue OUTPUT's last checkpoint exactly")
    io.add_argument("--overwrite", action="store_true", help="discard an earlier run in OUTPUT")
    io.add_argument("--max-seq-length", type=int, default=None,
                    help="tokens per example (default: the data's, else 128 or the model's positions if fewer)")
    io.add_argument("--one-doc-per-line", action="store_true", help="--corpus: every text line is a document")
    io.add_argument("--text-field", default=d.text_field, help="--corpus: the JSONL field with the text")
    io.add_argument("--skip-bad-lines", action="store_true", help="--corpus: skip and count bad lines")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per process and micro-batch")
    opt.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    opt.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs 1)")
    opt.add_argument("--epochs", type=int, default=None, help="passes over the data, when --steps is not given")
    opt.add_argument("--max-minutes", type=float, default=None,
                     help="stop after this wall time with a checkpoint and the final models (the learning-rate "
                          "schedule still spans --steps; --resume goes on)")
    opt.add_argument("--learning-rate", type=float, default=d.learning_rate, help="peak AdamW learning rate")
    opt.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 10%% of the steps)")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay,
                     help="AdamW weight decay (none on biases and LayerNorm)")
    opt.add_argument("--clip", type=float, default=d.clip, help="clip the global gradient norm (0: off)")
    opt.add_argument("--adam-beta1", type=float, default=d.adam_beta1, help="AdamW beta1 (default %(default)s)")
    opt.add_argument("--adam-beta2", type=float, default=d.adam_beta2, help="AdamW beta2 (default %(default)s)")
    opt.add_argument("--adam-epsilon", type=float, default=d.adam_epsilon, help="AdamW epsilon (default %(default)s)")
    opt.add_argument("--seed", type=int, default=d.seed, help="data order, masks, samples and initialisation")
    opt.add_argument("--bf16", action="store_true", help="bfloat16 autocast (weights and AdamW stay float32)")
    opt.add_argument("--compile", action="store_true", help="torch.compile the two encoders")
    opt.add_argument("--fsdp", action="store_true", help="under torchrun: shard with FSDP2 instead of DDP")
    opt.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"),
                     help="where to train (auto: CUDA when available)")
    opt.add_argument("--framework", default="pytorch", choices=FRAMEWORKS, help="PyTorch or Keras (default pytorch)")

    rtd = p.add_argument_group("replaced-token detection")
    rtd.add_argument("--mask-prob", type=float, default=k.mask_prob, help="masked fraction of the real tokens")
    rtd.add_argument("--mask-token-prob", type=float, default=k.mask_token_prob,
                     help="masked positions shown as [MASK] (ELECTRA 0.85; BERT 0.8)")
    rtd.add_argument("--random-token-prob", type=float, default=k.random_token_prob,
                     help="masked positions given a random token (ELECTRA 0; BERT 0.1)")
    rtd.add_argument("--temperature", type=float, default=k.temperature, help="of the generator's sampling softmax")
    rtd.add_argument("--disc-weight", type=float, default=k.disc_weight, help="weight of the discriminator's loss")
    rtd.add_argument("--generator-weight", type=float, default=k.generator_weight, help="weight of the MLM loss")

    rep = p.add_argument_group("reporting")
    rep.add_argument("--log-every", type=int, default=d.log_every, help="steps per log.jsonl record")
    rep.add_argument("--save-every", type=int, default=d.save_every, help="steps per checkpoint")
    rep.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="newest kept (0: all)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace):
    """The ``TrainingSettings`` of the parsed flags (shared by the PyTorch and the Keras loop)."""
    from convbert_common.pretraining import PretrainingConfig, TrainingSettings

    knobs = PretrainingConfig(
        generator_size=args.generator_size if args.generator_size is not None else PretrainingConfig.generator_size,
        mask_prob=args.mask_prob, mask_token_prob=args.mask_token_prob, random_token_prob=args.random_token_prob,
        temperature=args.temperature, generator_weight=args.generator_weight, disc_weight=args.disc_weight,
    )
    settings = TrainingSettings(
        output=args.output, tokenizer=args.tokenizer, corpus=list(args.corpus), data=args.data, config=args.config,
        generator_config=args.generator_config, init_from=args.init_from, resume=args.resume,
        overwrite=args.overwrite, max_seq_length=args.max_seq_length, batch_size=args.batch_size,
        grad_accum=args.grad_accum, steps=args.steps, epochs=args.epochs, max_minutes=args.max_minutes,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, clip=args.clip, adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon, seed=args.seed, log_every=args.log_every,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, bf16=args.bf16, compile=args.compile,
        fsdp=args.fsdp, device=args.device, progress=not args.no_progress, one_doc_per_line=args.one_doc_per_line,
        text_field=args.text_field, skip_bad_lines=args.skip_bad_lines, knobs=knobs,
        generator_size_given=args.generator_size is not None,
    )
    settings.validate()
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.framework == "keras":
        from convbert_tf.train import TrainingError, train
    else:
        from convbert_pt.train import TrainingError, train

    try:
        result = train(settings)
    except TrainingError as exc:
        sys.stderr.write(f"convbert pretrain: error: {exc}\n")
        return EXIT_ERROR
    last = result.last_log
    summary = (f"loss {last['loss']:.4f} (generator {last['generator_loss']:.4f}, discriminator "
               f"{last['discriminator_loss']:.4f}, accuracy {last['discriminator_accuracy']:.3f})" if last else "")
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(f"pretrained {result.step} steps -> {result.output} (discriminator/, generator/) {summary}\n")
    return EXIT_OK
