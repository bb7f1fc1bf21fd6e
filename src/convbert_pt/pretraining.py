"""Replaced-token detection (ELECTRA's method, as the ConvBERT authors pretrained): the PyTorch model.

B batch, L sequence, M masked positions of the batch, V vocab, H hidden size (Hg the generator's),
E embedding size.

``ConvBertForPreTraining`` = ``convbert`` (the discriminator's ``ConvBertModel``), then
``discriminator_predictions`` (dense H -> H, ``hidden_act``, dense H -> 1), and ``generator``, a
narrower ``ConvBertForMaskedLM`` whose ``convbert.embeddings`` IS the discriminator's embedding
module (word, position and token-type tables and their LayerNorm: one set of parameters, so
both losses' gradients add up in it) and whose output layer is the word-embedding matrix.

One training forward: the generator reads the masked ids and predicts the masked positions (its
MLM loss); at those positions a replacement is sampled from its softmax with the Gumbel-max trick,
without gradient; the discriminator reads the ids with the replacements and tells, per real token,
whether it was replaced (binary cross-entropy). A sample equal to the original counts as original.
The generator's head runs on the M masked positions only, as ELECTRA's does: the (B, L, V) logits
of every position are never needed.

``save_pretrained(dir)`` writes a pretraining directory (``convbert_common.pretraining``):
``discriminator/`` (this class's checkpoint: backbone + ``discriminator_predictions``; Hugging
Face loads it into any ``ConvBertFor*``, the new head then missing) and ``generator/`` (a plain
``ConvBertForMaskedLM``), each with the tokenizer files, and ``pretraining_config.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convbert_common import checkpoint, checks, heads
from convbert_common import pretraining as ptc
from convbert_common.config import ConvBertConfig
from convbert_common.fileio import atomic_directory
from convbert_common.formats import copy_tokenizer
from convbert_pt import gemm, io
from convbert_pt.activations import get_activation
from convbert_pt.losses import tensor_info
from convbert_pt.modeling import ConvBertForMaskedLM, ConvBertModel, ConvBertPreTrainedModel, _check_ids
from convbert_pt.outputs import PreTrainingOutput

Tensor = torch.Tensor | None


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    """ELECTRA's Gumbel noise from uniform samples in [0, 1) (``convbert_common.pretraining``)."""
    eps = ptc.GUMBEL_EPS
    return -torch.log(-torch.log(uniform + eps) + eps)


def gumbel_noise_for_rows(counts: Sequence[int], vocab_size: int, *, seed: int, step: int, row_offset: int,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """(M, V) noise for the masked positions of a batch whose row ``i`` has ``counts[i]`` of them.

    Row ``i`` draws from its own generator seeded by ``(seed, step, row_offset + i)``, so a rank
    holding rows ``row_offset ...`` samples exactly what one process with the whole batch samples.
    """
    parts = []
    for i, count in enumerate(counts):
        if count:
            generator = torch.Generator(device=device).manual_seed(ptc.noise_seed(seed, step, row_offset + i))
            parts.append(torch.rand((int(count), vocab_size), generator=generator, device=device))
    if not parts:
        return torch.empty((0, vocab_size), device=device)
    return gumbel(torch.cat(parts))  # (M, V)


def _return(result: PreTrainingOutput, return_dict: bool | None):
    return result if return_dict is None or return_dict else result.to_tuple()


class ConvBertDiscriminatorPredictions(nn.Module):
    """H -> H, hidden_act, H -> 1: a replaced-or-original logit per token."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = gemm.Linear(config.hidden_size, config.hidden_size)
        self.activation = get_activation(config.hidden_act)
        self.dense_prediction = gemm.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L)."""
        return self.dense_prediction(self.activation(self.dense(hidden_states))).squeeze(-1)


class ConvBertForPreTraining(ConvBertPreTrainedModel):
    """The discriminator and its generator, sharing one embedding module.

    ``generator_config`` defaults to ``pretraining.generator_config(config, generator_size)``;
    it must be able to share the discriminator's embedding tables (same ``embedding_size``,
    vocabulary, positions, token types and padding id). ``with_generator=False`` builds the
    discriminator alone (inference: which tokens look replaced), as ``from_pretrained`` does for
    a directory holding only a discriminator.
    """

    task = heads.PRETRAINING

    def __init__(self, config: ConvBertConfig, generator_config: ConvBertConfig | None = None,
                 pretraining_config: ptc.PretrainingConfig | None = None, *, with_generator: bool = True):
        super().__init__(config)
        self.pretraining_config = pretraining_config or ptc.PretrainingConfig()
        self.convbert = ConvBertModel(config)
        self.discriminator_predictions = ConvBertDiscriminatorPredictions(config)
        self.generator: ConvBertForMaskedLM | None = None
        if with_generator:
            if generator_config is None:
                generator_config = ptc.generator_config(config, self.pretraining_config.generator_size)
            if not isinstance(generator_config, ConvBertConfig):
                raise TypeError(f"generator_config must be a ConvBertConfig, got {type(generator_config).__name__}")
            ptc.check_shareable(config, generator_config)
            self.generator = ConvBertForMaskedLM(generator_config)
            # One module in two places: its parameters are registered (and optimised) once, under
            # convbert.embeddings, and the generator's tied output layer reads the same matrix.
            self.generator.convbert.embeddings = self.convbert.embeddings
        elif generator_config is not None:
            raise ValueError("with_generator=False builds no generator: do not pass a generator_config")
        self.post_init()

    @property
    def generator_config(self) -> ConvBertConfig | None:
        return self.generator.config if self.generator is not None else None

    # -------------------------------------------------------------- forward
    def _discriminate(self, input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                      output_hidden_states):
        out = self.convbert(input_ids, attention_mask, token_type_ids, position_ids,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            return_dict=True)
        return self.discriminator_predictions(out.last_hidden_state), out  # (B, L)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Tensor = None,
        token_type_ids: Tensor = None,
        labels: Tensor = None,
        gumbel_noise: Tensor = None,
        position_ids: Tensor = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> PreTrainingOutput | tuple:
        """Training with ``labels`` (HF MLM labels: the original ids at the masked positions of
        ``input_ids``, -100 elsewhere); without them the discriminator alone on ``input_ids``.

        ``gumbel_noise`` fixes the sample: (B, L, V), or (M, V) for the masked positions only in
        row-major order; default: drawn from torch's global generator.
        """
        if labels is None:
            if gumbel_noise is not None:
                raise ValueError(checks.GUMBEL_NEEDS_LABELS)
            logits, out = self._discriminate(input_ids, attention_mask, token_type_ids, position_ids,
                                             output_attentions, output_hidden_states)
            return _return(PreTrainingOutput(discriminator_logits=logits, hidden_states=out.hidden_states,
                                                  attentions=out.attentions), return_dict)
        if self.generator is None:
            raise ValueError(checks.NO_GENERATOR)
        if input_ids is None:
            raise ValueError("ConvBertForPreTraining needs input_ids (the sampled replacements are ids)")
        checks.check_labels(self.task, {"labels": tensor_info(labels)}, tuple(input_ids.shape),
                            self.config.num_labels)
        masked = labels != heads.IGNORE_INDEX  # (B, L)
        targets = labels[masked]  # (M,)
        _check_ids("labels", targets, self.config.vocab_size, "vocab_size")
        knobs = self.pretraining_config
        vocab = self.config.vocab_size

        gen = self.generator
        gen_hidden = gen.convbert(input_ids, attention_mask, token_type_ids, position_ids, return_dict=True)
        features = gen.generator_predictions(gen_hidden.last_hidden_state[masked])  # (M, E)
        gen_logits = gen.generator_lm_head(features, gen.get_input_embeddings().weight)  # (M, V)
        count = targets.numel()
        gen_loss = F.cross_entropy(gen_logits.float(), targets.long(), reduction="sum") / max(count, 1)

        noise = self._noise(gumbel_noise, masked, count, vocab, gen_logits.device)
        with torch.no_grad():
            scores = gen_logits.detach().float() / knobs.temperature + noise  # (M, V)
            sampled = scores.argmax(dim=-1).to(input_ids.dtype)  # (M,)
            replaced_input_ids = input_ids.masked_scatter(masked, sampled)  # (B, L)
            replaced_labels = torch.zeros_like(input_ids).masked_scatter(masked, (sampled != targets).to(
                input_ids.dtype))  # (B, L)

        disc_logits, out = self._discriminate(replaced_input_ids, attention_mask, token_type_ids, position_ids,
                                              output_attentions, output_hidden_states)
        per_token = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced_labels.float(),
                                                       reduction="none")  # (B, L)
        if attention_mask is None:
            disc_loss = per_token.mean()
        else:
            weights = attention_mask.to(per_token.dtype)
            disc_loss = (per_token * weights).sum() / weights.sum().clamp_min(1.0)
        loss = knobs.generator_weight * gen_loss + knobs.disc_weight * disc_loss
        return _return(PreTrainingOutput(
            loss=loss, generator_loss=gen_loss, discriminator_loss=disc_loss, generator_logits=gen_logits,
            discriminator_logits=disc_logits, replaced_input_ids=replaced_input_ids, replaced_labels=replaced_labels,
            hidden_states=out.hidden_states, attentions=out.attentions,
        ), return_dict)

    @staticmethod
    def _noise(gumbel_noise: Tensor, masked: torch.Tensor, count: int, vocab: int, device) -> torch.Tensor:
        if gumbel_noise is None:
            return gumbel(torch.rand((count, vocab), device=device))
        kind = checks.check_gumbel_noise(tensor_info(gumbel_noise), tuple(masked.shape), count, vocab)
        noise = gumbel_noise.to(device=device, dtype=torch.float32)
        return noise[masked] if kind == "positions" else noise  # (M, V)

    @staticmethod
    @torch.no_grad()
    def metric_sums(output: PreTrainingOutput, labels: torch.Tensor, attention_mask: Tensor) -> torch.Tensor:
        """The step's sums in the order of ``convbert_common.pretraining.SUM_KEYS`` (float64)."""
        masked = labels != heads.IGNORE_INDEX
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)
        count, tokens = masked.sum(), real.sum()
        replaced = output.replaced_labels.bool()
        values = [
            output.generator_loss.detach().double() * count,
            output.discriminator_loss.detach().double() * tokens,
            count,
            tokens,
            (output.generator_logits.argmax(-1) == labels[masked]).sum(),
            (((output.discriminator_logits > 0) == replaced) & real).sum(),
            (replaced & real).sum(),
            torch.tensor(labels.numel(), device=labels.device),
        ]
        return torch.stack([v.to(torch.float64) for v in values])

    # -------------------------------------------------------------- embeddings
    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Resize the shared vocabulary, and the generator's output bias and config with it."""
        new = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if self.generator is not None:
            self.generator.generator_lm_head.resize(new.num_embeddings, mean_resizing)
            self.generator.config.vocab_size = new.num_embeddings
        return new

    # -------------------------------------------------------------- saving and loading
    def save_pretrained(self, save_directory, *, tokenizer: Any = None, safe_serialization: bool = True) -> str:
        """Write the pretraining directory (``discriminator/``, ``generator/``, ``pretraining_config.json``).

        ``tokenizer``: a tokenizer folder, or an object with ``save_pretrained``, copied into both
        model folders. Each part is written to a temporary folder and renamed into place.
        """
        return save_pretraining_dir(save_directory, self.state_dict(), self.config, self.generator_config,
                                    self.pretraining_config, tokenizer=tokenizer,
                                    safe_serialization=safe_serialization)

    @classmethod
    def from_pretrained(cls, pretrained_model_path, *, torch_dtype: Any = None, device: Any = None,
                        output_loading_info: bool = False, generator_config: ConvBertConfig | None = None,
                        pretraining_config: ptc.PretrainingConfig | None = None, **config_overrides: Any):
        """A pretraining directory (both models, tied again), or any checkpoint directory as the discriminator.

        From a pretraining directory, ``config_overrides`` apply to both configs. Any other
        checkpoint directory loads as the discriminator (its RTD head fresh where the checkpoint
        has none, listed in ``missing_keys``) with no generator, unless ``generator_config`` is
        given: then a fresh generator of that config shares the loaded embeddings (continued
        pretraining from a released discriminator).
        """
        path = os.fspath(pretrained_model_path)
        ConvBertConfig.check_overrides(config_overrides, f"{cls.__name__}.from_pretrained")
        info: dict[str, list] = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
        if ptc.is_pretraining_dir(path):
            if generator_config is not None:
                raise ValueError(f"{path} is a pretraining directory: its generator/ is loaded; do not pass a "
                                 "generator_config")
            config, gen_config, knobs = ptc.read_pretraining_dir(path)
            if config_overrides:
                config, gen_config = config.replace(**config_overrides), gen_config.replace(**config_overrides)
            layout = ptc.PretrainingDir(path)
            disc = checkpoint.load_for_model(config, cls.task, layout.discriminator)
            gen = checkpoint.load_for_model(gen_config, heads.MASKED_LM, layout.generator)
            if gen.missing_keys:
                raise checkpoint.CheckpointError(f"{layout.generator}: missing generator weights {gen.missing_keys}")
            ptc.check_shared_embeddings(disc.tensors, gen.tensors, layout)
            model = cls(config, gen_config, pretraining_config or knobs)
            plan = dict(disc.tensors)
            plan.update({f"generator.{k}": v for k, v in gen.tensors.items() if not ptc.is_shared_embedding(k)})
            for result in (disc, gen):
                info["missing_keys"] += result.missing_keys
                info["unexpected_keys"] += result.unexpected_keys
        else:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{path}: not a pretraining directory or checkpoint directory")
            config = ConvBertConfig.from_pretrained(path, **config_overrides)
            result = checkpoint.load_for_model(config, cls.task, path)
            model = cls(config, generator_config, pretraining_config, with_generator=generator_config is not None)
            plan = dict(result.tensors)
            info = {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys),
                    "mismatched_keys": list(result.mismatched_keys)}
        _assign(model, plan, path)
        dtype = io._resolve_dtype(torch_dtype, config)
        if dtype is not None or device is not None:
            model.to(device=device, dtype=dtype)
        model.eval()
        return (model, info) if output_loading_info else model


def _assign(model: nn.Module, tensors: dict[str, np.ndarray], source: str) -> None:
    """Copy checked arrays into the parameters, every shape verified before the first copy."""
    params = dict(model.named_parameters())
    plan = []
    for name, array in tensors.items():
        if name not in params:
            raise checkpoint.CheckpointError(f"{source}: {name} has no parameter in {type(model).__name__}")
        if tuple(params[name].shape) != tuple(array.shape):
            raise checkpoint.CheckpointError(f"{source}: {name}: checkpoint shape {tuple(array.shape)}, model "
                                             f"parameter {tuple(params[name].shape)} (nothing was loaded)")
        plan.append((params[name], array))
    with torch.no_grad():
        for param, array in plan:
            param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A ``ConvBertForPreTraining`` state dict as the discriminator's and the generator's state dicts."""
    disc = {k: v for k, v in state.items() if not k.startswith("generator.")}
    gen = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
    return disc, gen


def save_pretraining_dir(directory, state: dict[str, torch.Tensor], config: ConvBertConfig,
                         generator_config: ConvBertConfig | None, knobs: ptc.PretrainingConfig, *,
                         tokenizer: Any = None, safe_serialization: bool = True) -> str:
    """Write a pretraining directory from a ``ConvBertForPreTraining`` state dict (full, on any device)."""
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        raise FileExistsError(f"{directory} is a file; save_pretrained needs a directory")
    layout = ptc.PretrainingDir(directory)
    disc_state, gen_state = split_state(state)
    parts = [(layout.discriminator, io.checked_arrays(disc_state, config, heads.PRETRAINING), config,
              heads.PRETRAINING)]
    if generator_config is not None:
        parts.append((layout.generator, io.checked_arrays(gen_state, generator_config, heads.MASKED_LM),
                      generator_config, heads.MASKED_LM))
    os.makedirs(directory, exist_ok=True)
    for folder, tensors, cfg, task in parts:
        with atomic_directory(folder, overwrite=True) as tmp:
            io.write_checkpoint_dir(tmp, tensors, cfg, task, safe_serialization=safe_serialization)
            _save_tokenizer(tokenizer, tmp)
    knobs.save_pretrained(directory)
    return directory


def _save_tokenizer(tokenizer: Any, folder: str) -> None:
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, os.PathLike)):
        copy_tokenizer(os.fspath(tokenizer), folder)
    elif hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder)
    else:
        raise TypeError(f"tokenizer must be a folder or have save_pretrained, got {type(tokenizer).__name__}")
