"""One replaced-token-detection training step: ours against the same model assembled from HF transformers.

ConvBERT-small (hidden 256, embedding 128, 4 heads, ffn 1024) with a 0.25 generator, batch 16 x 128,
the same random weights, batch, masks and Gumbel noise on both sides:

- ours: ``ConvBertForPreTraining`` (the generator's head only at the masked positions);
- HF: their ``ConvBertForMaskedLM`` as the generator (MLM loss through its ``labels``, logits at
  every position, the usual way to write RTD with HF today), their ``ConvBertModel`` plus the same
  head (dense, gelu, dense) as the discriminator, the generator's embedding module replaced by the
  discriminator's and its output layer re-tied to it, the same Gumbel-max sampling and loss.

A step is forward + backward + ``torch.optim.AdamW`` (the same settings on both sides). Runs are
interleaved (ours, HF, ours, HF, ...), medians of ``--runs`` after ``--warmup``; tokens/s are
batch x length / step time. Activation memory is the bytes of the distinct storages autograd saves
for backward during one training forward (what a step keeps alive), not a process RSS. The two
sides' losses on the first batch are printed too: they must agree (the same computation).

HF transformers is optional (``pip install 'convbert[bench]'``); without it the HF column says
so and our numbers are still printed.

    python bench/bench_pretrain.py [--runs 10] [--warmup 2] [--threads 2] [--quick]
        [--json bench/results/bench_pretrain.json]
"""

from __future__ import annotations

import os
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from _common import bench_parser, interleaved_samples, machine_info, machine_line, saved_tensor_bytes, write_json
from torch import nn

from convbert_common import heads, presets
from convbert_common import pretraining as ptc
from convbert_common.pretraining_data import mask_tokens
from convbert_pt.pretraining import ConvBertForPreTraining, gumbel

try:  # optional: the alternative
    import transformers
except ImportError:
    transformers = None

HF_UNAVAILABLE = "unavailable (transformers not installed; pip install 'convbert[bench]')"
SPECIAL_IDS = (0, 100, 101, 102, 103)  # BERT-uncased [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 103


# ------------------------------------------------------------------------------------------ the batch
def make_batch(vocab: int, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, length))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    masked, labels = mask_tokens(ids, mask, special_ids=SPECIAL_IDS, vocab_size=vocab, mask_token_id=MASK_ID,
                                 seed=seed)
    out = {"input_ids": masked, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "labels": labels}
    return {k: torch.from_numpy(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ HF assembled
class HFAssembled(nn.Module):
    """RTD from HF's classes: their masked LM as generator, their ConvBertModel + our head as discriminator."""

    def __init__(self, ours: ConvBertForPreTraining):
        super().__init__()
        hf_config = transformers.ConvBertConfig(**ours.config.to_dict())
        hf_gen_config = transformers.ConvBertConfig(**ours.generator_config.to_dict())
        self.discriminator = transformers.ConvBertModel(hf_config)
        self.generator = transformers.ConvBertForMaskedLM(hf_gen_config)
        self.head = nn.Sequential(nn.Linear(hf_config.hidden_size, hf_config.hidden_size), nn.GELU(),
                                  nn.Linear(hf_config.hidden_size, 1))
        self.generator.convbert.embeddings = self.discriminator.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.embeddings.word_embeddings.weight
        state = ours.state_dict()
        with torch.no_grad():
            self.discriminator.load_state_dict({k[len("convbert."):]: v for k, v in state.items()
                                                if k.startswith("convbert.")}, strict=False)
            gen = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
            missing = self.generator.load_state_dict(gen, strict=False).missing_keys
            assert missing == ["generator_lm_head.weight"], missing  # the tied matrix, shared above
            for i, name in ((0, "dense"), (2, "dense_prediction")):
                self.head[i].weight.copy_(state[f"discriminator_predictions.{name}.weight"])
                self.head[i].bias.copy_(state[f"discriminator_predictions.{name}.bias"])
        self.knobs = ours.pretraining_config

    def forward(self, input_ids, attention_mask, token_type_ids, labels, gumbel_noise):
        gen = self.generator(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             labels=labels)
        masked = labels != heads.IGNORE_INDEX
        with torch.no_grad():
            scores = gen.logits[masked].float() / self.knobs.temperature + gumbel_noise
            sampled = scores.argmax(-1)
            replaced_ids = input_ids.masked_scatter(masked, sampled)
            replaced = torch.zeros_like(input_ids).masked_scatter(masked, (sampled != labels[masked]).long())
        hidden = self.discriminator(input_ids=replaced_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state
        logits = self.head(hidden).squeeze(-1)
        weights = attention_mask.float()
        bce = F.binary_cross_entropy_with_logits(logits, replaced.float(), reduction="none")
        disc_loss = (bce * weights).sum() / weights.sum()
        return self.knobs.generator_weight * gen.loss + self.knobs.disc_weight * disc_loss


# ------------------------------------------------------------------------------------------ measuring
def loss_fn(model: nn.Module, batch: dict, noise: torch.Tensor, ours: bool):
    if ours:
        return lambda: model(**batch, gumbel_noise=noise).loss
    return lambda: model(**batch, gumbel_noise=noise)


def step_fn(model: nn.Module | None, batch: dict, noise: torch.Tensor, ours: bool):
    if model is None:
        return None
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    forward = loss_fn(model, batch, noise, ours)

    def run():
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def activation_bytes(model: nn.Module | None, batch: dict, noise: torch.Tensor, ours: bool) -> int | None:
    return None if model is None else saved_tensor_bytes(model, loss_fn(model, batch, noise, ours))


def main(argv=None) -> dict:
    p = bench_parser(__doc__, "bench_pretrain.json", quick="batch 4 x 64 and 3 runs: a smoke test of the script")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.batch, args.length = 3, 1, 4, 64
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = presets.preset("small", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = ConvBertForPreTraining(config, ptc.generator_config(config, 0.25))
    hf = HFAssembled(ours) if transformers is not None else None
    batch = make_batch(config.vocab_size, args.batch, args.length)
    masked = int((batch["labels"] != heads.IGNORE_INDEX).sum())
    noise = gumbel(torch.rand((masked, config.vocab_size), generator=torch.Generator().manual_seed(1)))

    machine = machine_info(args.threads)
    results = {
        "machine": {**machine, "load_average": os.getloadavg()},
        "settings": {"runs": args.runs, "warmup": args.warmup, "batch": args.batch, "length": args.length,
                     "masked_positions": masked, "generator_hidden_size": ours.generator_config.hidden_size},
    }
    print(f"{machine_line(machine)}; load average {os.getloadavg()[0]:.1f}")
    print(f"ConvBERT-small RTD step, generator hidden {ours.generator_config.hidden_size}, batch {args.batch} x "
          f"{args.length}, {masked} masked positions")
    if hf is None:
        print(f"HF column: {HF_UNAVAILABLE}")
    else:
        with torch.no_grad():
            a = loss_fn(ours.eval(), batch, noise, True)()
            b = loss_fn(hf.eval(), batch, noise, False)()
        results["loss_agreement"] = {"ours": float(a), "hf": float(b), "abs_diff": abs(float(a) - float(b))}
        print(f"same batch, weights and noise: loss ours {float(a):.6f}, HF {float(b):.6f}")

    mem = {"ours": activation_bytes(ours, batch, noise, True), "hf": activation_bytes(hf, batch, noise, False)}
    times = interleaved_samples({"ours": step_fn(ours, batch, noise, True), "hf": step_fn(hf, batch, noise, False)},
                                args.runs, args.warmup)
    tokens = args.batch * args.length
    rows = {}
    for side in ("ours", "hf"):
        if side in times:
            median, low, high = statistics.median(times[side]), min(times[side]), max(times[side])
            rows[side] = {"step_s": median, "step_min_s": low, "step_max_s": high, "tokens_per_second": tokens / median,
                          "activation_bytes": mem[side]}
    results["sides"] = rows
    if "hf" in rows:
        ours_row, hf_row = rows["ours"], rows["hf"]
        results["ratios"] = {"step_time_ours_over_hf": ours_row["step_s"] / hf_row["step_s"],
                             "activation_ours_over_hf": ours_row["activation_bytes"] / hf_row["activation_bytes"]}
    print(f"{'':12s} {'step (median)':>14s} {'min..max':>18s} {'tokens/s':>10s} {'activations':>12s}")
    for side, row in rows.items():
        print(f"{side:12s} {row['step_s'] * 1e3:11.1f} ms {row['step_min_s'] * 1e3:8.1f}..{row['step_max_s'] * 1e3:.1f}"
              f" ms {row['tokens_per_second']:10.0f} {row['activation_bytes'] / 2**20:8.1f} MiB")
    if "ratios" in results:
        r = results["ratios"]
        print(f"ours / HF: step time {r['step_time_ours_over_hf']:.2f}x, activation memory "
              f"{r['activation_ours_over_hf']:.2f}x")
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
