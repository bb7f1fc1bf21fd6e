"""Fine-tune ConvBertForSequenceClassification on the toy sentiment set with a plain PyTorch loop.

    python examples/pt_train.py                                   # a small fresh model, CPU, ~1 min
    python examples/pt_train.py --init-from path/to/checkpoint    # start from a pretrained checkpoint
    python examples/pt_train.py --resume                          # continue from output-dir/checkpoint
    torchrun --nproc_per_node=2 examples/pt_train.py              # the same run on 2 processes (DDP, gloo)

The first 480 rows of ``examples/data/toy_sentiment.tsv`` train, the rest evaluate. AdamW, linear
warm-up then linear decay, gradient clipping, evaluation accuracy after every epoch, a checkpoint
(``save_pretrained`` + optimizer / scheduler / step) after every epoch and at the end.

Under torchrun every process takes ``batch_size / world_size`` examples of each global batch
(DistributedSampler) and DDP averages the gradients, so one step sees the same global batch with
the same gradient as a single-process run. Inputs are padded to a fixed ``--max-length``: the
dynamic convolution ignores the attention mask (as the reference does), so padding to the longest
row of a per-process batch would change the numbers with the number of processes.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import pathlib
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from convbert_common.config import ConvBertConfig
from convbert_common.tokenizer import ConvBertTokenizerFast
from convbert_pt import ConvBertForSequenceClassification
from convbert_pt.guards import check_finite_step
from convbert_tools.demo import checkpoint_dir as demo_checkpoint_dir

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "examples" / "data" / "toy_sentiment.tsv"
# The shipped demo checkpoint's tokenizer: HF's save_pretrained files of the BERT-uncased vocabulary.
TOKENIZER_CANDIDATES = (pathlib.Path(demo_checkpoint_dir()),)
TRAIN_ROWS = 480
STATE_FILE = "training_state.pt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help="TSV with columns text, label")
    p.add_argument("--tokenizer", type=pathlib.Path, default=None, help="tokenizer folder (vocab.txt ...)")
    p.add_argument("--init-from", type=pathlib.Path, default=None, help="checkpoint folder to fine-tune")
    p.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/pt_train"))
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size (split over processes)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout of a fresh model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    p.add_argument("--interrupt-after", type=int, default=None,
                   help="save a checkpoint and stop after this many steps, as if interrupted (try --resume)")
    p.add_argument("--dump-first-grads", type=pathlib.Path, default=None,
                   help="write the (all-reduced) gradients of the first step here (rank 0), for tests")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------- set-up
def setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
        return dist.get_rank(), world
    return 0, 1


def read_tsv(path: pathlib.Path) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def find_tokenizer(explicit: pathlib.Path | None, init_from: pathlib.Path | None) -> pathlib.Path:
    candidates = [explicit] if explicit else [init_from, *TOKENIZER_CANDIDATES]
    for c in candidates:
        if c is not None and (c / "vocab.txt").exists():
            return c
    raise SystemExit(f"no tokenizer found (looked in {', '.join(str(c) for c in candidates if c)}); pass --tokenizer")


def encode(tokenizer, texts: list[str], labels: list[int], max_length: int) -> TensorDataset:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return TensorDataset(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], torch.tensor(labels))


def small_config(vocab_size: int, pad_token_id: int, max_length: int, dropout: float) -> ConvBertConfig:
    return ConvBertConfig(
        vocab_size=vocab_size, pad_token_id=pad_token_id, hidden_size=64, embedding_size=32, num_hidden_layers=2,
        num_attention_heads=4, head_ratio=2, intermediate_size=128, conv_kernel_size=9,
        max_position_embeddings=max(64, max_length), hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, num_labels=2, id2label={0: "negative", 1: "positive"},
        initializer_range=0.02,
    )


def linear_warmup_decay(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------- loop
@torch.no_grad()
def evaluate(model, loader, world: int) -> float:
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64)  # correct, total
    for ids, mask, types, labels in loader:
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        counts += torch.tensor([(logits.argmax(-1) == labels).sum().item(), labels.numel()], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(counts)
    model.train()
    return (counts[0] / counts[1]).item()


def save_checkpoint(directory: pathlib.Path, model, optimizer, scheduler, step: int, rank: int) -> None:
    if rank == 0:
        model.save_pretrained(directory)
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                 "rng": torch.get_rng_state()}
        tmp = directory / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, directory / STATE_FILE)


def main(argv=None) -> dict:
    args = parse_args(argv)
    rank, world = setup_distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    torch.manual_seed(args.seed)

    tokenizer = ConvBertTokenizerFast.from_pretrained(find_tokenizer(args.tokenizer, args.init_from))
    texts, labels = read_tsv(args.data)
    train = encode(tokenizer, texts[:TRAIN_ROWS], labels[:TRAIN_ROWS], args.max_length)
    evaluation = encode(tokenizer, texts[TRAIN_ROWS:], labels[TRAIN_ROWS:], args.max_length)

    checkpoint_dir = args.output_dir / "checkpoint"
    if args.resume:
        if not (checkpoint_dir / STATE_FILE).exists():
            raise SystemExit(f"--resume: no checkpoint in {checkpoint_dir}")
        model = ConvBertForSequenceClassification.from_pretrained(checkpoint_dir)
    elif args.init_from:
        # Another label count than the checkpoint's head: that head is initialised afresh (and reported).
        model = ConvBertForSequenceClassification.from_pretrained(
            args.init_from, num_labels=2, id2label={0: "negative", 1: "positive"}, ignore_mismatched_sizes=True
        )
    else:
        pad = tokenizer.convert_tokens_to_ids("[PAD]")
        model = ConvBertForSequenceClassification(small_config(len(tokenizer), pad, args.max_length, args.dropout))
    model.train()
    if args.max_length > model.config.max_position_embeddings:
        raise SystemExit(
            f"--max-length {args.max_length} > max_position_embeddings {model.config.max_position_embeddings}"
        )
    net = DistributedDataParallel(model) if world > 1 else model

    local_batch = args.batch_size // world
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    # The loaders get their own generator: an iterator drawing from the global RNG would shift the
    # dropout masks of a resumed run against an uninterrupted one.
    loader = DataLoader(train, batch_size=local_batch, sampler=sampler, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    eval_sampler = DistributedSampler(evaluation, num_replicas=world, rank=rank, shuffle=False)
    eval_loader = DataLoader(evaluation, batch_size=local_batch, sampler=eval_sampler,
                             generator=torch.Generator().manual_seed(args.seed))

    steps_per_epoch = len(loader)
    total = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total = min(total, args.max_steps)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "LayerNorm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    scheduler = linear_warmup_decay(optimizer, max(1, int(args.warmup_ratio * total)), total)

    step = 0
    if args.resume:
        state = torch.load(checkpoint_dir / STATE_FILE, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        torch.set_rng_state(state["rng"])

    progress = tqdm(total=total, initial=step, disable=rank != 0 or args.no_progress, desc="train", file=sys.stderr)
    history = {"loss": [], "eval_accuracy": []}
    while step < total:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        for i, (ids, mask, types, y) in enumerate(loader):
            if i < skip:
                continue  # batches already seen before the checkpoint we resumed from
            loss = net(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=y).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step == 0 and args.dump_first_grads is not None and rank == 0:
                torch.save({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
                           args.dump_first_grads)
            # A bad batch (NaN loss or gradients) stops the run before it can make every weight NaN.
            check_finite_step(model, loss, step + 1)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            reduced = loss.detach().clone()
            if world > 1:
                dist.all_reduce(reduced)
                reduced /= world
            history["loss"].append(reduced.item())
            progress.update(1)
            progress.set_postfix(loss=f"{reduced.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if step >= total or step == args.interrupt_after:
                break
        if step == args.interrupt_after and step < total:
            save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step, rank)
            if rank == 0:
                progress.write(f"interrupted at step {step}; continue with --resume")
            break
        if step % steps_per_epoch == 0 or step >= total:
            accuracy = evaluate(model, eval_loader, world)
            history["eval_accuracy"].append(accuracy)
            if rank == 0:
                progress.write(f"epoch {math.ceil(step / steps_per_epoch)}  step {step}  eval accuracy {accuracy:.3f}")
            save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step, rank)
            if world > 1:
                dist.barrier()
    progress.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return history


if __name__ == "__main__":
    main()
