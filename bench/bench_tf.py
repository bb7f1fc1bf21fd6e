"""ConvBERT on the CPU with Keras 3: our model against Hugging Face transformers' TFConvBertModel (tf-keras).

One invocation, the same weights (ours saved with ``save_pretrained(tf_h5=True)``, HF's class loads
that ``tf_model.h5``) and the same inputs on both sides, runs interleaved (ours, HF, ours, HF, ...),
medians of ``--runs`` runs after ``--warmup``:

- ConvBERT-base forward at 8x128 and 1x512, in eager mode, under ``tf.function`` and under XLA
  (``jit_compile=True``), for both sides;
- one ``fit`` step (``train_on_batch``, Adam, sequence-classification head with its built-in loss)
  at 8x128 in each compile mode (ours: ``compile()``'s default, XLA, plain ``tf.function``; HF's:
  its default and XLA), and the first step's time (tracing / compiling included);
- our forward under ``mixed_bfloat16`` and with bfloat16 variables (``dtype="bfloat16"``), at 8x128
  and 1x128 (``tf.function`` and XLA; which one wins is printed: XLA on CPU does not use AMX for bf16);
- ``--cases pretrain``: one replaced-token-detection ``fit`` step (``train_on_batch``: forward,
  backward, our AdamW) of ConvBERT-small with a 0.25 generator at 16x128 (``--pretrain-batch``),
  under ``tf.function`` and under XLA, with the first step's time (trace + compile), against our
  PyTorch step (``bench/bench_pretrain.py``, run in a subprocess: torch and TensorFlow in one
  process abort on their two LLVMs), and against HF's TF ConvBERT assembled the same way
  (``hf_pretraining_model``: HF has no TF pretraining model; its ``TFConvBertForMaskedLM``
  generator and ``TFConvBertModel`` discriminator on one embeddings layer, a dense RTD head, the
  loss 1 x MLM + 50 x BCE, tf-keras' AdamW), both under ``tf.function`` and XLA, interleaved.

HF transformers is optional (``pip install 'convbert[bench]'``, TF classes need ``tf-keras``):
without it the HF column says "unavailable" and our numbers are still measured. Targets, as ratios
within one run: our best fp32 forward <= 0.90x HF's best, fit step <= 0.60x HF's best mode, first
fit step well under HF's, mixed_bfloat16 forward <= 0.30x HF's fp32 (issue 16).

"% of limit": model matmul FLOPs / time / the best fp32 GEMM rate at the model's dense-layer shapes:
the higher of TensorFlow's own matmul, timed here, and the best library of ``bench/bench_gemm.py``'s
JSON when that was written on the same CPU model (torch cannot share this process).

    python bench/bench_tf.py [--runs 5] [--warmup 2] [--quick] [--cases forward,bf16,fit,pretrain]
                             [--json bench/results/bench_tf.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# HF's TF classes run on tf-keras; and transformers must not import torch here: torch's triton and
# TensorFlow's XLA both register LLVM options, and loading both aborts the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("USE_TF", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import (  # noqa: E402
    convbert_matmul_flops,
    interleaved,
    machine_info,
    machine_line,
    model_gemm_shapes,
    tf_gemm_rates,
    wall_seconds,
)

from convbert_common import presets, shapes  # noqa: E402
from convbert_common.config import ConvBertConfig  # noqa: E402
from convbert_common.fileio import atomic_write_text  # noqa: E402
from convbert_tf import ConvBertForSequenceClassification, ConvBertModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HF_UNAVAILABLE = "unavailable (transformers' TF classes not importable; pip install 'convbert[bench]')"
CASES = ("forward", "bf16", "fit", "pretrain", "adam")
# Issue 16's targets on a CPU with AVX-512 (the fit step and bf16), the older ones elsewhere.
TARGETS = {"forward": 0.90, "fit_step": 0.60, "bf16_forward_vs_hf_fp32": 0.30, "pretrain_step_vs_pytorch": 1.3}


def hf_classes():
    """HF's TF ConvBERT classes, or None (they need transformers 4.x and tf-keras)."""
    try:
        import transformers

        return transformers.TFConvBertModel, transformers.TFConvBertForSequenceClassification
    except Exception:  # ImportError, or transformers without TF support
        return None


def config(quick: bool) -> ConvBertConfig:
    name = "small" if quick else "base"
    return presets.preset(name, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)


def inputs(config: ConvBertConfig, batch: int, length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, config.vocab_size, (batch, length)).astype("int32")
    return {"input_ids": tf.constant(ids), "attention_mask": tf.ones_like(ids),
            "token_type_ids": tf.zeros_like(ids)}


def _sync(out) -> None:
    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()


def forward_fns(model, x: dict, prefix: str, hf: bool) -> dict[str, Callable]:
    def call(inp):
        out = model(inp, training=False)
        return out.last_hidden_state if hf else out["last_hidden_state"]

    graph = tf.function(call)
    compiled = tf.function(call, jit_compile=True)

    def xla(inp):
        if hf:
            return compiled(inp)
        # Ours traced for XLA takes the shifted depthwise convolution, as set_depthwise_impl documents
        # (compile(jit_compile=True) selects it itself); the other modes keep "auto".
        model.set_depthwise_impl("shift")
        try:
            return compiled(inp)
        finally:
            model.set_depthwise_impl("auto")

    return {
        f"{prefix}/eager": lambda: _sync(call(x)),
        f"{prefix}/tf.function": lambda: _sync(graph(x)),
        f"{prefix}/xla": lambda: _sync(xla(x)),
    }


def bench_forward(results: dict, cfg: ConvBertConfig, ours, hf_model, runs: int, warmup: int) -> None:
    """fp32 forward at 8x128 and 1x512: eager, tf.function and XLA, both sides; best of each and the ratio."""
    seconds = results["seconds"]
    for batch, length in ((8, 128), (1, 512)):
        x = inputs(cfg, batch, length)
        shape = f"{batch}x{length}"
        fns = forward_fns(ours, x, f"ours/forward/{shape}", hf=False)
        if hf_model is not None:
            fns.update(forward_fns(hf_model, x, f"hf/forward/{shape}", hf=True))
        for name, fn in fns.items():  # the first call traces / compiles
            results["first_step_seconds"][name] = wall_seconds(fn)
        seconds.update(interleaved(fns, runs, warmup))
        best_ours = min(v for k, v in seconds.items() if k.startswith(f"ours/forward/{shape}/"))
        seconds[f"ours/forward/{shape}/best"] = best_ours
        if hf_model is not None:
            best_hf = min(v for k, v in seconds.items() if k.startswith(f"hf/forward/{shape}/"))
            seconds[f"hf/forward/{shape}/best"] = best_hf
            results["ratios"][f"forward/{shape} ours/hf (best of each)"] = best_ours / best_hf


def bench_bf16(results: dict, cfg: ConvBertConfig, ours, runs: int, warmup: int) -> None:
    """Our forward under mixed_bfloat16 and with bfloat16 variables (``dtype="bfloat16"``: the LayerNorms
    keep float32 ones), under tf.function and XLA, at 8x128 and 1x128; our fp32 forward at 1x128
    beside (8x128's is the forward case's); against HF's best fp32 when that was measured.

    The mixed model casts every float32 variable to bf16 on each call; the bf16 one has nothing to cast.
    """
    seconds = results["seconds"]
    mixed = ConvBertModel(cfg, dtype="mixed_bfloat16")
    mixed.set_weights(ours.get_weights())
    half = ConvBertModel(cfg, dtype="bfloat16")
    for variable, value in zip(half.weights, ours.get_weights(), strict=True):
        variable.assign(keras.ops.cast(value, variable.dtype))
    for batch, length in ((8, 128), (1, 128)):
        shape = f"{batch}x{length}"
        x = inputs(cfg, batch, length)
        fns = {}
        for case, model in (("forward_bf16", mixed), ("forward_bf16_variables", half)):
            fns.update({k.replace("/forward/", f"/{case}/"): v
                        for k, v in forward_fns(model, x, f"ours/forward/{shape}", hf=False).items()
                        if not k.endswith("/eager")})
        if batch == 1:
            fp32 = forward_fns(ours, x, f"ours/forward/{shape}", hf=False)
            fns[f"ours/forward/{shape}/tf.function"] = fp32[f"ours/forward/{shape}/tf.function"]
        for fn in fns.values():
            fn()
        seconds.update(interleaved(fns, runs, warmup))
        best = {case: min((k for k in fns if f"/{case}/" in k), key=lambda k: seconds[k])
                for case in ("forward_bf16", "forward_bf16_variables")}
        results["ratios"][f"forward_bf16_variables/{shape} ours/mixed (best modes)"] = (
            seconds[best["forward_bf16_variables"]] / seconds[best["forward_bf16"]])
        if batch == 1:
            results["ratios"][f"forward_bf16/{shape} ours mixed/fp32 (tf.function)"] = (
                seconds[f"ours/forward_bf16/{shape}/tf.function"] / seconds[f"ours/forward/{shape}/tf.function"])
            results["ratios"][f"forward_bf16_variables/{shape} ours/fp32 (tf.function)"] = (
                seconds[f"ours/forward_bf16_variables/{shape}/tf.function"]
                / seconds[f"ours/forward/{shape}/tf.function"])
        if batch == 8:
            results["bf16_best_mode"] = best["forward_bf16"].rsplit("/", 1)[1]
            hf_best = seconds.get("hf/forward/8x128/best")
            for case, key in best.items() if hf_best else ():
                results["ratios"][f"{case}/8x128 ours/hf fp32 best"] = seconds[key] / hf_best


def _as_before_fused(model) -> None:
    """``model`` with the exact GELU and the layer norm op by op, as before ``convbert_tf.fused`` (the A/B)."""
    from convbert_tf import fused

    blocks = model.convbert.encoder.layer
    norms = [model.convbert.embeddings.LayerNorm, *(b.attention.attention_output.LayerNorm for b in blocks),
             *(b.layer_output.LayerNorm for b in blocks)]
    for block in blocks:
        block.intermediate.intermediate_act_fn = lambda z: keras.ops.gelu(z, approximate=False)
    for norm in norms:
        assert isinstance(norm, fused.LayerNormalization), type(norm)
        norm.call = keras.layers.LayerNormalization.call.__get__(norm)


def bench_fit(results: dict, cfg: ConvBertConfig, ours_cls, hf_cls, runs: int, warmup: int) -> None:
    """One train_on_batch step at 8x128 (Adam, the head's built-in loss) per compile mode and optimizer.

    Ours with ``compile()``'s default (``jit_compile="auto"``) and with XLA forced on and off, with
    Keras' Adam; and the default with ``convbert_tf.optimizers.Adam`` (each weight's update one XLA
    kernel), and that default as it was before the einsum input gradient of the feed-forward's first
    layer (``convbert_tf.dense``) and the step size shared by every weight. HF's with tf-keras' default
    (no XLA) and with XLA, with tf-keras' Adam; and its default with tf-keras' legacy Adam (one
    ``ResourceApplyAdam`` kernel a weight, what transformers' ``AdamWeightDecay`` builds on).
    The ratios are against HF's fastest.
    """
    from convbert_tf import optimizers

    seconds = results["seconds"]
    x = inputs(cfg, 8, 128)
    y = tf.constant(np.arange(8) % 2, dtype=tf.int32)
    weights = ours_cls.get_weights()
    steps = {}
    ours_modes = (("default", "auto", keras.optimizers.Adam), ("xla", True, keras.optimizers.Adam),
                  ("tf.function", False, keras.optimizers.Adam), ("default+compiled_adam", "auto", optimizers.Adam),
                  ("previous:default+compiled_adam", "auto", optimizers.Adam))
    for mode, jit, adam in ours_modes:
        model = ours_cls if mode == "default" else ConvBertForSequenceClassification(ours_cls.config)
        if model is not ours_cls:
            model.set_weights(weights)
        if mode.startswith("previous"):
            _as_before_fused(model)
        model.compile(optimizer=adam(1e-5), jit_compile=jit)
        results.setdefault("fit_jit_compile", {})[mode] = bool(model.jit_compile)
        steps[f"ours/fit_step/8x128/{mode}"] = lambda m=model: m.train_on_batch(x, y)
    if hf_cls is not None:
        import tf_keras

        hf_weights = hf_cls.get_weights()
        hf_modes = (("default", None, tf_keras.optimizers.Adam), ("xla", True, tf_keras.optimizers.Adam),
                    ("default+legacy_adam", None, tf_keras.optimizers.legacy.Adam))
        for mode, jit, adam in hf_modes:
            model = hf_cls if mode == "default" else type(hf_cls)(hf_cls.config)
            if model is not hf_cls:
                model(x)
                model.set_weights(hf_weights)
            model.compile(optimizer=adam(1e-5), jit_compile=jit)
            steps[f"hf/fit_step/8x128/{mode}"] = lambda m=model: m.train_on_batch(x, y)
    for name, fn in steps.items():
        results["first_step_seconds"][name] = wall_seconds(fn)
    seconds.update(interleaved(steps, runs, warmup, alternate=True))
    for side in ("ours", "hf"):
        mine = [k for k in steps if k.startswith(f"{side}/") and "previous" not in k]  # the A/B's old code
        if mine:
            seconds[f"{side}/fit_step/8x128/best"] = min(seconds[k] for k in mine)
    if hf_cls is not None:
        hf_best = seconds["hf/fit_step/8x128/best"]
        for mode, *_ in ours_modes:
            results["ratios"][f"fit_step/8x128 ours {mode}/hf best"] = seconds[f"ours/fit_step/8x128/{mode}"] / hf_best
        results["ratios"]["first fit step ours/hf (defaults)"] = (
            results["first_step_seconds"]["ours/fit_step/8x128/default"]
            / results["first_step_seconds"]["hf/fit_step/8x128/default"])


def gemm_limit(cfg: ConvBertConfig, tokens: int, gemm_json: Path) -> tuple[float, str]:
    """The best fp32 GEMM rate (FLOP/s) at the model's shapes and who reached it (see the module doc)."""
    shapes = model_gemm_shapes(cfg.hidden_size, cfg.intermediate_size, tokens)
    tf_rate = tf_gemm_rates(shapes, os.cpu_count() or 1, 15)
    total = sum(2.0 * m * k * n for m, k, n in shapes.values())
    best = (total / sum(2.0 * m * k * n / tf_rate[name] for name, (m, k, n) in shapes.items()),
            "tensorflow (tf.matmul)")
    if gemm_json.exists():
        saved = json.loads(gemm_json.read_text())
        same_cpu = saved.get("machine", {}).get("cpu_model") == machine_info()["cpu_model"]
        if same_cpu and saved.get("tokens") == tokens and saved["torch_best_gflops"] * 1e9 > best[0]:
            best = (saved["torch_best_gflops"] * 1e9, f"{saved['torch_best_library']} ({gemm_json.name})")
    return best


def pretrain_batch(vocab: int, batch: int, length: int, seed: int = 0) -> dict:
    """bench_pretrain.py's batch: random ids, [CLS] ... [SEP], masked by the framework-free masker."""
    from convbert_common.pretraining_data import mask_tokens

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, length))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    masked, labels = mask_tokens(ids, mask, special_ids=(0, 100, 101, 102, 103), vocab_size=vocab,
                                 mask_token_id=103, seed=seed)
    arrays = {"input_ids": masked, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "labels": labels}
    return {k: tf.constant(v.astype("int32")) for k, v in arrays.items()}


def hf_pretraining_model(cfg: ConvBertConfig, gen_cfg: ConvBertConfig, generator_weight: float,
                         disc_weight: float, temperature: float, jit_compile: bool):
    """HF's TF ConvBERT classes assembled into ELECTRA's replaced-token detection, compiled (tf-keras).

    The discriminator is ``TFConvBertModel`` plus a dense H -> H (gelu) -> 1 head; the generator
    ``TFConvBertForMaskedLM`` of ``gen_cfg`` whose main layer and tied LM head both read the
    discriminator's embeddings layer (one set of variables, as ours). HF's MLM head scores every
    position (B, L, V); the sample is the Gumbel-max of its logits at the masked positions, and
    the loss ``generator_weight`` x the masked positions' cross-entropy + ``disc_weight`` x the
    real tokens' BCE. ``train_on_batch(x)`` takes our batch dict (labels inside).
    """
    import tf_keras
    import transformers

    def hf_config(c: ConvBertConfig):
        # Fewer heads than head_ratio (the 0.25 generator of ConvBERT-small has 1 of ratio 2) breaks
        # HF's TF attention reshape; head_ratio x our reduced heads gives HF the same shapes as ours.
        fields = {k: v for k, v in c.to_dict().items() if k != "architectures"}
        fields["num_attention_heads"] = shapes.reduced_heads(c.num_attention_heads, c.head_ratio) * c.head_ratio
        return transformers.ConvBertConfig(**fields)

    class HFPreTraining(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.discriminator = transformers.TFConvBertModel(hf_config(cfg), name="discriminator")
            self.generator = transformers.TFConvBertForMaskedLM(hf_config(gen_cfg), name="generator")
            shared = self.discriminator.convbert.embeddings
            self.generator.convbert.embeddings = shared  # before the first call builds anything
            self.generator.generator_lm_head.input_embeddings = shared
            self.rtd_dense = tf_keras.layers.Dense(cfg.hidden_size, activation=tf_keras.activations.gelu)
            self.rtd_prediction = tf_keras.layers.Dense(1)

        def losses_of(self, x, training):
            ids, mask, types, labels = x["input_ids"], x["attention_mask"], x["token_type_ids"], x["labels"]
            masked = tf.not_equal(labels, -100)
            logits = self.generator(input_ids=ids, attention_mask=mask, token_type_ids=types,
                                    training=training).logits  # (B, L, V)
            targets = tf.where(masked, labels, 0)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            weight = tf.cast(masked, tf.float32)
            gen_loss = tf.reduce_sum(nll * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
            uniform = tf.random.uniform(tf.shape(logits))
            noise = -tf.math.log(-tf.math.log(uniform + 1e-9) + 1e-9)
            sampled = tf.argmax(tf.stop_gradient(logits) / temperature + noise, axis=-1, output_type=ids.dtype)
            replaced = tf.stop_gradient(tf.where(masked, sampled, ids))
            is_replaced = tf.cast(tf.logical_and(masked, tf.not_equal(replaced, labels)), tf.float32)
            hidden = self.discriminator(input_ids=replaced, attention_mask=mask, token_type_ids=types,
                                        training=training).last_hidden_state
            disc_logits = tf.squeeze(self.rtd_prediction(self.rtd_dense(hidden)), -1)
            real = tf.cast(mask, tf.float32)
            bce = tf.nn.sigmoid_cross_entropy_with_logits(is_replaced, disc_logits)
            disc_loss = tf.reduce_sum(bce * real) / tf.maximum(tf.reduce_sum(real), 1.0)
            return generator_weight * gen_loss + disc_weight * disc_loss

        def call(self, x, training=False):
            return self.losses_of(x, training)

        def train_step(self, data):
            x, _, _ = tf_keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                loss = self.losses_of(x, training=True)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
            return {"loss": loss}

    model = HFPreTraining()
    model.compile(optimizer=tf_keras.optimizers.AdamW(learning_rate=1e-5, weight_decay=0.01, epsilon=1e-6,
                                                      global_clipnorm=1.0), jit_compile=jit_compile)
    return model


def bench_adam(results: dict, cfg: ConvBertConfig, ours_cls, runs: int, warmup: int) -> None:
    """One optimizer ``apply`` over the sequence classifier's weights, fixed gradients, in a ``tf.function``.

    Keras' Adam against ``convbert_tf.optimizers.Adam`` (each weight's update one XLA call), and the
    pretraining ``AdamW`` (PyTorch's rule, with its global-norm clip) compiled and plain.
    """
    from convbert_tf import optimizers
    from convbert_tf import train as tf_train

    variables = ours_cls.trainable_variables
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(scale=1e-3, size=v.shape).astype("float32")) for v in variables]
    results["adam_parameters"] = int(sum(np.prod(v.shape) for v in variables))
    fns = {}
    for name, optimizer in (("keras_adam", keras.optimizers.Adam(1e-5)),
                            ("compiled_adam", optimizers.Adam(1e-5)),
                            ("pretraining_adamw/plain", tf_train.AdamW(1e-5, clip_norm=1.0, fused=False)),
                            ("pretraining_adamw/compiled", tf_train.AdamW(1e-5, clip_norm=1.0))):
        optimizer.build(variables)
        fns[f"ours/adam_apply/{name}"] = tf.function(lambda o=optimizer: o.apply(grads, variables))
    seconds = interleaved(fns, runs, warmup, alternate=True)
    results["seconds"].update(seconds)
    results["ratios"]["adam_apply compiled/keras"] = (seconds["ours/adam_apply/compiled_adam"]
                                                      / seconds["ours/adam_apply/keras_adam"])
    results["ratios"]["adam_apply pretraining compiled/plain"] = (
        seconds["ours/adam_apply/pretraining_adamw/compiled"] / seconds["ours/adam_apply/pretraining_adamw/plain"])


def bench_pretrain(results: dict, runs: int, warmup: int, batch: int, length: int) -> None:
    """Our Keras RTD fit step (tf.function and XLA), HF's assembled one (the same modes) and our PyTorch
    step (a subprocess), with first steps."""
    import subprocess
    import sys

    from convbert_common import pretraining as ptc
    from convbert_tf import train as tf_train
    from convbert_tf.pretraining import ConvBertForPreTraining

    seconds, first = results["seconds"], results["first_step_seconds"]
    cfg = presets.preset("small", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    x = pretrain_batch(cfg.vocab_size, batch, length)
    shape = f"{batch}x{length}"
    knobs = ptc.PretrainingConfig()
    gen_cfg = ptc.generator_config(cfg, knobs.generator_size)
    steps = {}
    params = results["pretrain_parameters"] = {}  # the same model on both sides: the same count
    hf = hf_classes() is not None
    # The last mode: AdamW's update as Keras ops one by one (fused=False), what the compiled update saves.
    modes = (("tf.function", False, True), ("xla", True, True), ("tf.function+plain_adamw", False, False))
    for mode, jit, fused in modes:
        model = ConvBertForPreTraining(cfg, gen_cfg, knobs, seed=0)
        optimizer = tf_train.adamw(model, learning_rate=1e-5)
        optimizer.fused = fused
        model.compile(optimizer=optimizer, jit_compile=jit)
        name = f"ours/pretrain_step/{shape}/{mode}"
        first[name] = wall_seconds(lambda m=model: m.train_on_batch(x))
        params["ours"] = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        steps[name] = lambda m=model: m.train_on_batch(x)
        if hf and fused:
            theirs = hf_pretraining_model(cfg, gen_cfg, knobs.generator_weight, knobs.disc_weight,
                                          knobs.temperature, jit)
            name = f"hf/pretrain_step/{shape}/{mode}"
            first[name] = wall_seconds(lambda m=theirs: m.train_on_batch(x))
            params["hf"] = sum(int(np.prod(v.shape)) for v in theirs.trainable_variables)
            steps[name] = lambda m=theirs: m.train_on_batch(x)
    seconds.update(interleaved(steps, runs, warmup))
    for side in ("ours", "hf") if hf else ("ours",):
        mine = [k for k in steps if k.startswith(f"{side}/")]
        best = min(mine, key=lambda k: seconds[k])
        seconds[f"{side}/pretrain_step/{shape}/best"] = seconds[best]
        results[f"pretrain_best_mode_{side}"] = best.rsplit("/", 1)[1]
        results["first_step_seconds"][f"{side}/pretrain_step/{shape}/best"] = first[best]
    if hf:
        results["ratios"][f"pretrain_step/{shape} keras best/hf best"] = (seconds[f"ours/pretrain_step/{shape}/best"]
                                                                          / seconds[f"hf/pretrain_step/{shape}/best"])

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pt.json"
        cmd = [sys.executable, str(ROOT / "bench" / "bench_pretrain.py"), "--runs", str(runs), "--warmup",
               str(warmup), "--threads", str(os.cpu_count()), "--batch", str(batch), "--length", str(length),
               "--json", str(out)]
        # Not this script's transformers switches (no torch, tf-keras): the PyTorch side needs torch.
        env = {k: v for k, v in os.environ.items() if k not in ("USE_TORCH", "USE_TF", "TF_USE_LEGACY_KERAS")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0 or not out.exists():
            results["pytorch_pretrain"] = f"failed: {proc.stderr[-500:]}"
            return
        pt = json.loads(out.read_text())
    results["pytorch_pretrain"] = pt
    step = pt["sides"]["ours"]["step_s"]
    seconds[f"pytorch/pretrain_step/{shape}"] = step
    results["ratios"][f"pretrain_step/{shape} keras best/pytorch"] = seconds[f"ours/pretrain_step/{shape}/best"] / step


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="ConvBERT-small instead of base (a smoke run)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated subset of {', '.join(CASES)} (all by default)")
    p.add_argument("--pretrain-batch", default="16x128", help="the pretrain case's batch x length")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "bench_tf.json")
    p.add_argument("--gemm-json", type=Path, default=ROOT / "bench" / "results" / "bench_gemm.json",
                   help="bench_gemm.py's results: its best library joins the limit when it ran on this CPU")
    args = p.parse_args(argv)
    cases = set(args.cases.split(","))
    if not cases <= set(CASES):
        p.error(f"--cases: unknown {sorted(cases - set(CASES))}; choose from {', '.join(CASES)}")

    keras.utils.set_random_seed(0)
    cfg = config(args.quick)
    hf = hf_classes()
    results: dict = {
        "machine": machine_info(),
        "config": "small" if args.quick else "base", "runs": args.runs, "warmup": args.warmup,
        "cases": sorted(cases),
        "hf": "available" if hf else HF_UNAVAILABLE, "seconds": {}, "first_step_seconds": {}, "ratios": {},
    }
    seconds = results["seconds"]

    ours = ours_cls = hf_model = hf_cls = None
    with tempfile.TemporaryDirectory() as tmp:
        if cases & {"forward", "bf16", "fit", "adam"}:
            ours = ConvBertModel(cfg)
            ours_cls = ConvBertForSequenceClassification(cfg)
            ours.save_pretrained(Path(tmp) / "base", tf_h5=True)
            ours_cls.save_pretrained(Path(tmp) / "cls", tf_h5=True)
        if hf and cases & {"forward", "bf16", "fit"}:
            # use_safetensors=False: HF's TF loader would try the PyTorch-layout model.safetensors first.
            hf_model = hf[0].from_pretrained(Path(tmp) / "base", use_safetensors=False)
            hf_cls = hf[1].from_pretrained(Path(tmp) / "cls", use_safetensors=False)

    if "forward" in cases:
        bench_forward(results, cfg, ours, hf_model, args.runs, args.warmup)
    if "bf16" in cases:
        bench_bf16(results, cfg, ours, args.runs, args.warmup)
    if "fit" in cases:
        bench_fit(results, cfg, ours_cls, hf_cls, args.runs, args.warmup)
    if "adam" in cases:
        bench_adam(results, cfg, ours_cls, args.runs, args.warmup)
    if "pretrain" in cases:
        batch, length = (int(v) for v in args.pretrain_batch.split("x"))
        bench_pretrain(results, args.runs, args.warmup, batch, length)

    limit, limit_library = gemm_limit(cfg, 8 * 128, args.gemm_json) if cases & {"forward", "fit"} else (None, None)
    results["gemm_fp32_gflops"] = limit / 1e9 if limit else None
    results["gemm_fp32_best_library"] = limit_library
    results["pct_limit"] = {}
    for name, flop in (("forward/8x128", convbert_matmul_flops(cfg, 8, 128)),
                       ("forward/1x512", convbert_matmul_flops(cfg, 1, 512)),
                       # The fit step trains the sequence classifier: its last layer computes position 0 alone.
                       ("fit_step/8x128", 3 * convbert_matmul_flops(cfg, 8, 128, pooled=True))):
        for key in [k for k in seconds if limit and k.startswith(f"ours/{name}")]:
            results["pct_limit"][key] = 100 * flop / seconds[key] / limit

    # ------------------------------------------------------------------ report
    print(machine_line(results["machine"]))
    if limit:
        print(f"limit: best fp32 GEMM at the model's shapes {limit / 1e9:,.0f} GFLOP/s ({limit_library})")
    models = [f"ConvBERT-{results['config']}"] if cases & {"forward", "bf16", "fit", "adam"} else []
    if "pretrain" in cases:
        models.append("pretrain: ConvBERT-small + a 0.25 generator")
    print(f"{'; '.join(models)}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs; medians of {args.runs} interleaved runs (seconds)")
    print(f"HF transformers: {results['hf']}")
    print("| measurement | ours | HF |")
    print("|---|---:|---:|")
    # A mode that only one side has (our compiled Adam, tf-keras' legacy Adam) is "n/a" on the other.
    missing = {"ours": "n/a", "hf": "n/a" if results["hf"] == "available" else "unavailable"}
    for case in sorted({k.split("/", 1)[1] for k in seconds if k.startswith(("ours/", "hf/"))}):
        mine, theirs = (f"{seconds[k]:.4f}" if k in seconds else missing[side]
                        for side, k in (("ours", f"ours/{case}"), ("hf", f"hf/{case}")))
        print(f"| {case} | {mine} | {theirs} |")
    for name in sorted(k for k in seconds if k.startswith("pytorch/")):
        print(f"| {name} (ours, PyTorch) | {seconds[name]:.4f} | |")
    print("first call (trace / compile included): "
          + ", ".join(f"{k} {v:.2f}s" for k, v in results["first_step_seconds"].items()))
    if results.get("pretrain_parameters"):
        print("pretrain parameters: " + ", ".join(f"{k} {v:,}" for k, v in results["pretrain_parameters"].items()))
    for side in ("ours", "hf"):
        if f"pretrain_best_mode_{side}" in results:
            print(f"pretrain step ({side}): {results[f'pretrain_best_mode_{side}']} is faster")
    if isinstance(results.get("pytorch_pretrain"), str):
        print(f"PyTorch pretrain step: {results['pytorch_pretrain']}")
    if "bf16_best_mode" in results:
        print(f"mixed_bfloat16 forward: {results['bf16_best_mode']} is faster")
    for name, value in results["ratios"].items():
        print(f"ratio {name}: {value:.3f}")
    for name, value in results["pct_limit"].items():
        print(f"{name}: {value:.0f}% of limit")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
