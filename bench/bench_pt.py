"""ConvBERT on the CPU: our PyTorch model against Hugging Face transformers' ConvBERT (and BERT-base).

One invocation, the same random weights and inputs on both sides, ``--threads`` intra-op threads,
runs interleaved (ours, HF, ours, HF, ...), medians of ``--runs`` runs after ``--warmup``:

- ConvBERT-base forward at 8x128 and 1x512; train step (forward + backward + the same AdamW,
  sequence-classification head) at 8x128; activation memory of a train step at 1x512; the memory
  and the train step again with the default dropout 0.1 (every other case runs without dropout);
- ConvBERT-small (hidden 256, embedding 128, 4 heads, ffn 1024) forward at 8x128;
- HF BERT-base (SDPA) forward at 8x128, the yardstick ConvBERT promised to beat;
- ``--compile``: the base forward under ``torch.compile`` (both sides); ``--bf16``: the base
  forward and train step under ``torch.autocast("cpu", torch.bfloat16)``, the forward of the model
  cast with ``.to(torch.bfloat16)``, and the logits' distance to our fp32 logits;
- ``gemm`` (a default case): our base forward at 8x128 with each dense-layer GEMM backend of
  ``convbert_pt.set_gemm_backend`` ("mkl", "onednn", "auto"), interleaved; the train step too with
  the ``train`` case (as is the bf16 train step).

HF transformers is optional (``pip install 'convbert[bench]'``): without it the HF columns say
"unavailable" and our numbers, the FLOP counts and the measured matmul rate are still printed.
FLOPs count the matmuls (2 per multiply-add) of our model and of a BERT-base of the same batch
shape ("BERT-equivalent"); the roofline ("the limit") is the best fp32 GEMM rate at the model's own
dense-layer shapes timed here by torch.mm (MKL), oneDNN, NumPy and, where it is installed,
onnxruntime's MLAS (``bench/_common.best_gemm_rate``,
``bench/bench_gemm.py``), and "% of limit" is model matmul FLOPs / time / that rate. Activation
memory is the bytes of the distinct storages autograd saves for backward during the forward (what a
train step keeps alive), not a process RSS.

    python bench/bench_pt.py [--runs 10] [--threads 2] [--cases forward,small,train,memory]
        [--compile] [--bf16] [--quick] [--json bench/results/bench_pt.json]
"""

from __future__ import annotations

import argparse
import os

import torch
from _common import (
    best_gemm_rate,
    convbert_matmul_flops,
    gemm_line,
    interleaved,
    machine_info,
    machine_line,
    model_gemm_shapes,
    saved_tensor_bytes,
    write_json,
)

from convbert_common import presets
from convbert_common.config import ConvBertConfig
from convbert_pt import ConvBertForSequenceClassification, ConvBertModel, gemm_backend, set_gemm_backend

try:  # optional: the reference implementation
    import transformers
except ImportError:  # the HF column is then reported as unavailable
    transformers = None

HF_UNAVAILABLE = "unavailable (transformers not installed; pip install 'convbert[bench]')"


# ------------------------------------------------------------------------------------------ models
ALL_CASES = ("forward", "small", "train", "memory", "gemm", "pooled", "compile", "bf16")
DEFAULT_CASES = ("forward", "small", "train", "memory", "gemm", "pooled")
GEMM_BACKENDS = ("mkl", "onednn", "auto")


def base_config() -> ConvBertConfig:
    return presets.preset("base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)


def small_config() -> ConvBertConfig:
    return presets.preset("small", num_groups=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          num_labels=2)


# The configs' default dropout, for the cases that measure training as it is usually run; the other
# cases run without dropout so that both sides do the same deterministic work.
TRAINING_DROPOUT = 0.1


def set_dropout(model: torch.nn.Module | None, p: float) -> None:
    """Every nn.Dropout of the model (attention probabilities included, on both sides) to rate p."""
    for module in model.modules() if model is not None else ():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def hf_twin(ours: torch.nn.Module, config: ConvBertConfig, head: bool):
    """HF's ConvBERT with our weights (the state dict keys are the same by construction)."""
    if transformers is None:
        return None
    fields = {k: v for k, v in config.to_dict().items() if k not in ("architectures", "dtype", "model_type")}
    hf_config = transformers.ConvBertConfig(**fields)
    cls = transformers.ConvBertForSequenceClassification if head else transformers.ConvBertModel
    model = cls(hf_config)
    missing, unexpected = model.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids") and k != "generator_lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"HF model does not take our weights: missing {missing}, unexpected {unexpected}")
    return model


def hf_bert_base():
    if transformers is None:
        return None
    config = transformers.BertConfig(attn_implementation="sdpa", hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertModel(config).eval()


# ------------------------------------------------------------------------------------------ flops
def bert_base_flops(batch: int, length: int, layers: int = 12, H: int = 768, I: int = 3072) -> float:
    tokens = batch * length
    return 2.0 * layers * ((4 * H * H + 2 * H * I) * tokens + 2 * batch * length * length * H)


def inputs(vocab: int, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def forward_fn(model, batch_inputs, autocast: bool = False, gemm: str | None = None):
    """One no-grad forward; ``gemm`` names the dense-layer backend set before each call."""
    if model is None:
        return None

    def run():
        if gemm:
            set_gemm_backend(gemm)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(**batch_inputs)

    return run


def train_step_fn(model, batch_inputs, autocast: bool = False, gemm: str | None = None):
    if model is None:
        return None
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    labels = torch.zeros(batch_inputs["input_ids"].shape[0], dtype=torch.long)

    def run():
        if gemm:
            set_gemm_backend(gemm)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch_inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def activation_bytes(model, batch_inputs) -> int | None:
    """Bytes of the distinct storages autograd saves for backward in one training forward."""
    if model is None:
        return None
    labels = torch.zeros(batch_inputs["input_ids"].shape[0], dtype=torch.long)
    return saved_tensor_bytes(model, lambda: model(**batch_inputs, labels=labels).loss)


# ------------------------------------------------------------------------------------------ report
def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def fmt_time(t: float | None) -> str:
    return f"{t * 1e3:9.1f} ms" if t is not None else HF_UNAVAILABLE if transformers is None else "n/a"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated subset of {','.join(ALL_CASES)} (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="add the 'compile' case: base forward under torch.compile")
    p.add_argument("--bf16", action="store_true", help="add the 'bf16' case (CPUs with AMX / AVX512-BF16)")
    p.add_argument("--quick", action="store_true", help="smaller shapes and 3 runs: a smoke test of the script")
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "bench_pt.json"))
    args = p.parse_args(argv)
    cases = set(filter(None, args.cases.split(","))) | {c for c in ("compile", "bf16") if getattr(args, c)}
    unknown = cases - set(ALL_CASES)
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_CASES)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        args.runs, args.warmup = 3, 1
    batch, length, long_len = (2, 32, 64) if args.quick else (8, 128, 512)

    base = base_config()
    limit = best_gemm_rate(model_gemm_shapes(base.hidden_size, base.intermediate_size, batch * length),
                           runs=5 if args.quick else 15)
    rate = limit["best"]
    machine = machine_info(args.threads)
    results: dict = {
        "machine": {**machine, "transformers": getattr(transformers, "__version__", None),
                    "gemm_fp32_gflops": rate / 1e9, "gemm_fp32_best_library": limit["best_library"],
                    "gemm_fp32_gflops_by_library": {k: v / 1e9 for k, v in limit["overall"].items() if v}},
        "settings": {"runs": args.runs, "warmup": args.warmup, "batch": batch, "length": length,
                     "long_length": long_len},
        "cases": {},
    }
    print(machine_line(machine))
    print(f"{gemm_line(limit)} (the limit)")
    if transformers is None:
        print(f"HF column: {HF_UNAVAILABLE}")

    ours_base = ConvBertModel(base).eval()
    hf_base = hf_twin(ours_base, base, head=False)
    hf_base = hf_base.eval() if hf_base is not None else None
    x = inputs(base.vocab_size, batch, length)
    x_long = inputs(base.vocab_size, 1, long_len)

    def record(name: str, times: dict, flops: float | None = None, **extra) -> None:
        ours, hf = times.get("ours"), times.get("hf")
        row = {"ours_s": ours, "hf_s": hf, "ours_over_hf": (ours / hf) if ours and hf else None, **extra}
        if flops:
            row["matmul_gflop"] = flops / 1e9
            row["ours_pct_limit"] = 100 * flops / ours / rate if ours else None
        results["cases"][name] = row
        pct = f"  {row['ours_pct_limit']:.0f}% of limit" if flops and ours else ""
        extras = "".join(f"  {k}={v}" for k, v in extra.items())
        print(f"{name:46s} ours {fmt_time(ours)}   HF {fmt_time(hf)}   ours/HF {ratio(ours, hf)}{pct}{extras}")

    flops = convbert_matmul_flops(base, batch, length)
    results["flops"] = {"convbert_base_forward_gflop": flops / 1e9,
                        "bert_base_equivalent_forward_gflop": bert_base_flops(batch, length) / 1e9}
    print(f"ConvBERT-base forward matmul FLOPs at {batch}x{length}: {flops / 1e9:.1f} G "
          f"(BERT-base equivalent: {bert_base_flops(batch, length) / 1e9:.1f} G)")

    if "forward" in cases:
        record(f"base forward {batch}x{length}", interleaved(
            {"ours": forward_fn(ours_base, x), "hf": forward_fn(hf_base, x)}, args.runs, args.warmup), flops)
        record(f"base forward 1x{long_len}", interleaved(
            {"ours": forward_fn(ours_base, x_long), "hf": forward_fn(hf_base, x_long)}, args.runs, args.warmup),
            convbert_matmul_flops(base, 1, long_len))
        bert = hf_bert_base()
        t = interleaved({"ours": forward_fn(ours_base, x), "hf": forward_fn(bert, x)}, args.runs, args.warmup)
        record(f"base forward vs HF BERT-SDPA {batch}x{length}", t, flops,
               bert_gflop=round(bert_base_flops(batch, length) / 1e9, 1))
        del bert

    if "small" in cases:
        small = small_config()
        ours_small = ConvBertModel(small).eval()
        hf_small = hf_twin(ours_small, small, head=False)
        record(f"small forward {batch}x{length}", interleaved(
            {"ours": forward_fn(ours_small, x), "hf": forward_fn(hf_small.eval() if hf_small else None, x)},
            args.runs, args.warmup), convbert_matmul_flops(small, batch, length))
        del ours_small, hf_small

    ours_cls = ConvBertForSequenceClassification(base)
    hf_cls = hf_twin(ours_cls, base, head=True)
    # Sequence classification reads position 0: our last layer computes it alone (HF's the whole layer).
    cls_flops = convbert_matmul_flops(base, batch, length, pooled=True)
    if "train" in cases:
        record(f"base train step {batch}x{length}", interleaved(
            {"ours": train_step_fn(ours_cls, x), "hf": train_step_fn(hf_cls, x)}, args.runs, args.warmup),
            3 * cls_flops)
    for p in (0.0, TRAINING_DROPOUT) if "memory" in cases else ():
        set_dropout(ours_cls, p)
        set_dropout(hf_cls, p)
        name = f"activation memory train step 1x{long_len}" + (f", dropout {p}" if p else "")
        mem_ours, mem_hf = activation_bytes(ours_cls, x_long), activation_bytes(hf_cls, x_long)
        results["cases"][name] = {
            "ours_bytes": mem_ours, "hf_bytes": mem_hf, "ours_over_hf": (mem_ours / mem_hf) if mem_hf else None}
        print(f"{name:46s} ours {mem_ours / 2**20:9.1f} MiB   HF "
              + (f"{mem_hf / 2**20:.1f} MiB   ours/HF {ratio(mem_ours, mem_hf)}" if mem_hf else HF_UNAVAILABLE))
    if "train" in cases:
        set_dropout(ours_cls, TRAINING_DROPOUT)
        set_dropout(hf_cls, TRAINING_DROPOUT)
        record(f"base train step {batch}x{length}, dropout {TRAINING_DROPOUT}", interleaved(
            {"ours": train_step_fn(ours_cls, x), "hf": train_step_fn(hf_cls, x)}, args.runs, args.warmup),
            3 * cls_flops)
        set_dropout(ours_cls, 0.0)
        set_dropout(hf_cls, 0.0)

    if "gemm" in cases:
        def backends(name: str, make, flop: float) -> None:
            times = interleaved({b: make(b) for b in GEMM_BACKENDS}, args.runs, args.warmup, alternate=True)
            row = {f"{b}_s": t for b, t in times.items()}
            row.update({f"{b}_pct_limit": 100 * flop / t / rate for b, t in times.items()})
            row["onednn_over_mkl"] = times["onednn"] / times["mkl"]
            results["cases"][name] = row
            print(f"{name:46s} " + "   ".join(f"{b} {fmt_time(t)} ({100 * flop / t / rate:.0f}% of limit)"
                                               for b, t in times.items()))

        backends(f"gemm backends: base forward {batch}x{length}", lambda b: forward_fn(ours_base, x, gemm=b), flops)
        if "train" in cases:
            backends(f"gemm backends: base train step {batch}x{length}",
                     lambda b: train_step_fn(ours_cls, x, gemm=b), 3 * flops)
        results["gemm_auto_choices"] = {"x".join(map(str, k)): v.backend for k, v in gemm_backend().choices.items()}
        set_gemm_backend(None)
        ours_cls.eval()

    if "pooled" in cases:
        # The same classifier with the last layer computed at every position (what asking for the hidden
        # states does), beside the default that computes position 0 alone, and HF's.
        ours_cls.eval()
        hf_cls_eval = hf_cls.eval() if hf_cls is not None else None
        sides = {"pooled": forward_fn(ours_cls, x), "full": forward_fn(ours_cls, {**x, "output_hidden_states": True}),
                 "hf": forward_fn(hf_cls_eval, x)}
        times = interleaved(sides, args.runs, args.warmup)
        row = {f"{k}_s": v for k, v in times.items()}
        row.update(pooled_over_full=times["pooled"] / times["full"],
                   pooled_over_hf=times["pooled"] / times["hf"] if times.get("hf") else None,
                   pooled_gflop=cls_flops / 1e9, full_gflop=flops / 1e9,
                   pooled_pct_limit=100 * cls_flops / times["pooled"] / rate,
                   full_pct_limit=100 * flops / times["full"] / rate)
        name = f"seqcls forward {batch}x{length}: last layer at position 0"
        results["cases"][name] = row
        print(f"{name:46s} pooled {fmt_time(times['pooled'])}   full {fmt_time(times['full'])}   HF "
              f"{fmt_time(times.get('hf'))}   pooled/full {ratio(times['pooled'], times['full'])}   pooled/HF "
              f"{ratio(times['pooled'], times.get('hf'))}   {row['pooled_pct_limit']:.0f}% of limit "
              f"({cls_flops / 1e9:.1f} of {flops / 1e9:.1f} GFLOP)")

    if "bf16" in cases:
        with torch.no_grad():
            ref = ours_cls.eval()(**x).logits
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = ours_cls(**x).logits.float()
            cast_cls = ConvBertForSequenceClassification(base).eval()
            cast_cls.load_state_dict(ours_cls.state_dict())
            cast = cast_cls.to(torch.bfloat16)(**x).logits.float()
            ours_bf16 = ConvBertModel(base).eval()
            ours_bf16.load_state_dict(ours_base.state_dict())
            ours_bf16.to(torch.bfloat16)
        record(f"bf16 autocast base forward {batch}x{length}", interleaved(
            {"ours": forward_fn(ours_base, x, autocast=True), "hf": forward_fn(hf_base, x)}, args.runs, args.warmup),
            flops, logits_max_abs_diff_vs_fp32=float((low - ref).abs().max()))
        record(f"bf16 .to(bfloat16) base forward {batch}x{length}", interleaved(
            {"ours": forward_fn(ours_bf16, x), "hf": forward_fn(hf_base, x)}, args.runs, args.warmup),
            flops, logits_max_abs_diff_vs_fp32=float((cast - ref).abs().max()))
        del ours_bf16, cast_cls
        if "train" in cases:
            record(f"bf16 autocast train step {batch}x{length}", interleaved(
                {"ours": train_step_fn(ours_cls, x, autocast=True), "hf": train_step_fn(hf_cls, x)},
                args.runs, args.warmup), 3 * flops)

    if "compile" in cases:
        compiled = torch.compile(ours_base)
        hf_compiled = torch.compile(hf_base) if hf_base is not None else None
        record(f"compiled base forward {batch}x{length}", interleaved(
            {"ours": forward_fn(compiled, x), "hf": forward_fn(hf_compiled, x)}, args.runs, args.warmup), flops)
        bert = hf_bert_base()
        bert_compiled = torch.compile(bert) if bert is not None else None
        record(f"compiled base forward vs compiled HF BERT-SDPA {batch}x{length}", interleaved(
            {"ours": forward_fn(compiled, x), "hf": forward_fn(bert_compiled, x)}, args.runs, args.warmup), flops)

    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
