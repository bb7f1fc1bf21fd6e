"""Replaced-token detection (ELECTRA's method, as the ConvBERT authors pretrained): the Keras model.

B batch, L sequence, P masked positions gathered per row (static), M masked positions of the
batch, V vocab, H hidden size (Hg the generator's), E embedding size.

The same model as ``convbert_pt/pretraining.py``, class by class: ``convbert`` (the
discriminator's ``ConvBertModel``), ``discriminator_predictions`` (dense H -> H, ``hidden_act``,
dense H -> 1) and ``generator``, a narrower ``ConvBertForMaskedLM`` built on the discriminator's
``ConvBertEmbeddings`` layer (one set of variables: both losses' gradients add up in them) whose
output layer is the word-embedding matrix.

One training call: the generator reads the masked ids; its head runs on the masked positions
only, gathered per row into a static (B, P) grid so that XLA and JAX see fixed shapes. P is the
most positions the framework-free masker masks in a row of L tokens
(``pretraining_data.masked_count(L, mask_prob)``), or ``max_predictions``; a row with more masked
labels is refused (eager: ValueError; TensorFlow graph: an assert; XLA / jit: the loss is NaN,
which the training step refuses). Slots past a row's count are padding, weighted 0. At those
positions a replacement is sampled with the Gumbel-max trick, without gradient; the discriminator
reads the ids with the replacements and tells, per real token, whether it was replaced. Without
``gumbel_noise`` the noise is drawn from the model's ``keras.random.SeedGenerator`` (inside a
compiled step too).

Outputs have PyTorch's keys; ``generator_logits`` is (B, P, V) here (PyTorch: (M, V), the same
rows in row-major order without the padding slots: ``masked_slots`` gives the grid).

``compile(optimizer=...)`` + ``fit(dataset)``: the loss is the model's (generator weight x MLM +
``disc_weight`` x BCE); under ``tf.distribute`` each replica's share is normalised by the
global counts, so the summed gradient is one device's. The default metrics are the generator's
and the discriminator's losses and accuracies and the replaced fraction, weighted by their counts
(so an epoch's value is the value of all its tokens). The pretraining directory is written and
read in PyTorch's layout (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
from keras import ops

from convbert_common import checkpoint, checks, heads, shards
from convbert_common import pretraining as ptc
from convbert_common import weight_map as wm
from convbert_common.config import ConvBertConfig
from convbert_common.fileio import atomic_directory
from convbert_common.formats import copy_tokenizer
from convbert_common.layouts import get_layout
from convbert_common.pretraining_data import masked_count
from convbert_tf import backend, io
from convbert_tf._config_layer import ConfigLayer, as_config
from convbert_tf.activations import get_activation
from convbert_tf.losses import tensor_info
from convbert_tf.modeling import (
    INPUT_NAMES,
    ConvBertForMaskedLM,
    ConvBertPreTrainedModel,
    _check_inputs,
    _concrete,
    _dense,
)
from convbert_tf.tasks import _is_auto

_register = keras.saving.register_keras_serializable(package="convbert")
GENERATOR_PREFIX = "generator."


def gumbel(uniform):
    """ELECTRA's Gumbel noise from uniform samples in [0, 1) (``convbert_common.pretraining``)."""
    eps = ptc.GUMBEL_EPS
    return -ops.log(-ops.log(uniform + eps) + eps)


def masked_slots(labels, slots: int):
    """The masked positions of each row, in order, on a static grid: ``(positions, valid)``, both (B, P).

    ``labels`` (B, L) HF MLM labels. ``positions`` holds row ``b``'s masked positions first
    (ascending), then unmasked ones; ``valid`` marks the first ``count_b`` slots.
    """
    masked = ops.not_equal(labels, heads.IGNORE_INDEX)  # (B, L)
    where = ops.cast(ops.expand_dims(ops.arange(ops.shape(labels)[1]), 0), "float32")  # (1, L)
    # Largest key first: masked positions (-where) before the others (-L - where), each ascending.
    key = ops.where(masked, -where, -where - ops.cast(ops.shape(labels)[1], "float32"))
    _, positions = ops.top_k(key, k=slots, sorted=True)  # (B, P)
    positions = ops.cast(positions, "int32")
    valid = ops.take_along_axis(masked, positions, axis=1)  # (B, P)
    return positions, valid


def _nan_unless(valid, value):
    return value if valid is None else ops.where(valid, value, ops.cast(float("nan"), value.dtype))


@_register
class ConvBertDiscriminatorPredictions(ConfigLayer):
    """H -> H, hidden_act, H -> 1: a replaced-or-original logit per token."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.dense = _dense(self, self.config.hidden_size, "dense")
        self.activation = get_activation(self.config.hidden_act)
        self.dense_prediction = _dense(self, 1, "dense_prediction")

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.hidden_size))
        self.dense_prediction.build((None, None, self.config.hidden_size))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1]

    def call(self, hidden_states):
        """(B, L, H) -> float32 (B, L)."""
        logits = self.dense_prediction(self.activation(self.dense(hidden_states)))  # (B, L, 1)
        return ops.cast(ops.squeeze(logits, -1), "float32")


@_register
class ConvBertForPreTraining(ConvBertPreTrainedModel):
    """The discriminator and its generator, sharing one embedding layer.

    ``generator_config`` defaults to ``pretraining.generator_config(config, generator_size)``; it
    must be able to share the discriminator's embedding tables. ``with_generator=False`` builds the
    discriminator alone (inference), as ``from_pretrained`` does for a directory holding only a
    discriminator. ``max_predictions``: masked positions gathered per row (default: the masker's
    bound for the sequence length). ``seed``: of the Gumbel noise drawn when none is given.
    """

    task = heads.PRETRAINING

    def __init__(self, config, generator_config=None, pretraining_config=None, *, with_generator: bool = True,
                 max_predictions: int | None = None, seed: int | None = None, **kwargs):
        config = as_config(config)
        super().__init__(config, **kwargs)
        if isinstance(pretraining_config, dict):
            pretraining_config = ptc.PretrainingConfig.from_dict(pretraining_config)
        self.pretraining_config = pretraining_config or ptc.PretrainingConfig()
        self.convbert = self._make_backbone()
        self.discriminator_predictions = ConvBertDiscriminatorPredictions(
            self.config, **self.sub("discriminator_predictions"))
        self.generator = None
        if with_generator:
            if generator_config is None:
                generator_config = ptc.generator_config(self.config, self.pretraining_config.generator_size)
            if isinstance(generator_config, dict):
                generator_config = ConvBertConfig.from_dict(generator_config)
            if not isinstance(generator_config, ConvBertConfig):
                raise TypeError(f"generator_config must be a ConvBertConfig, got {type(generator_config).__name__}")
            ptc.check_shareable(self.config, generator_config)
            with keras.name_scope(self.name):
                # One layer in two places: its variables are the discriminator's, tracked once.
                self.generator = ConvBertForMaskedLM(generator_config, shared_embeddings=self.convbert.embeddings,
                                                     **self.sub("generator"))
        elif generator_config is not None:
            raise ValueError("with_generator=False builds no generator: do not pass a generator_config")
        if max_predictions is not None and (isinstance(max_predictions, bool) or not isinstance(max_predictions, int)
                                            or max_predictions < 1):
            raise ValueError(f"max_predictions must be a positive integer, got {max_predictions!r}")
        self._max_predictions = max_predictions
        self._seed = seed
        self._noise_seed = keras.random.SeedGenerator(seed, name="gumbel_seed")
        self._rtd_metrics = [keras.metrics.Mean(name=name) for name in METRIC_NAMES]
        self._micro_batches = 1
        self._finish_init()

    @property
    def generator_config(self) -> ConvBertConfig | None:
        return self.generator.config if self.generator is not None else None

    def build(self, input_shape=None):
        if self._rebuild(input_shape):
            return
        self.discriminator_predictions.build((None, None, self.config.hidden_size))

    def compute_output_shape(self, input_shape=None):
        return {"discriminator_logits": self._lead(input_shape)}

    def get_config(self) -> dict:
        return {**super().get_config(), "generator_config": (self.generator_config.to_dict()
                                                             if self.generator is not None else None),
                "pretraining_config": self.pretraining_config.to_dict(), "with_generator": self.generator is not None,
                "max_predictions": self._max_predictions, "seed": self._seed}

    # -------------------------------------------------------------- inputs
    def _inputs(self, arguments: dict) -> tuple[dict, Any, Any]:
        """The backbone inputs by name, the labels and the noise, from ``call``'s ``locals()``."""
        first = arguments["input_ids"]
        noise = arguments.get("gumbel_noise")
        if isinstance(first, dict):
            first = dict(first)
            if "gumbel_noise" in first:
                if noise is not None:
                    raise ValueError(f"{type(self).__name__}: ['gumbel_noise'] given both in the inputs and as "
                                     "keyword arguments")
                noise = first.pop("gumbel_noise")
        given = {name: arguments.get(name) for name in (*INPUT_NAMES[1:], "labels") if name in arguments}
        inputs = self._unpack(first, **given)
        for name in ("head_mask", "inputs_embeds"):
            if name in inputs:
                raise ValueError(f"{type(self).__name__} takes no {name}: the generator and the discriminator read ids")
        labels = inputs.pop("labels", None)
        return inputs, labels, None if noise is None else ops.convert_to_tensor(noise)

    def _slots(self, length) -> int | None:
        """P for sequences of ``length`` tokens (None: not known until run time; then every position)."""
        if not isinstance(length, int):
            return None
        bound = self._max_predictions or int(masked_count(length, self.pretraining_config.mask_prob))
        return max(1, min(length, bound))

    def _check_labels(self, labels, slots: int):
        """Value checks of the labels: eager raises (PyTorch's words); traced returns a validity scalar."""
        vocab = self.config.vocab_size
        values = _concrete(labels)
        if values is not None:
            scored = values[values != heads.IGNORE_INDEX]
            if scored.size:
                checks.check_id_range("labels", int(scored.min()), int(scored.max()), vocab, "vocab_size")
            counts = (values != heads.IGNORE_INDEX).sum(axis=1)
            for row, count in enumerate(counts.tolist()):
                checks.check_masked_per_row(row, count, slots, values.shape[1], self.pretraining_config.mask_prob)
            return None
        ignored = ops.equal(labels, heads.IGNORE_INDEX)
        in_range = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, vocab))
        counts = ops.sum(ops.cast(ops.logical_not(ignored), "int32"), axis=1)
        valid = ops.logical_and(ops.all(ops.logical_or(ignored, in_range)), ops.all(ops.less_equal(counts, slots)))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            check = tf.debugging.Assert(valid, [checks.id_range_message("labels", vocab, "vocab_size") + " or "
                                                + checks.masked_per_row_message(slots)])
            with tf.control_dependencies([check]):
                valid = tf.identity(valid)
        return valid

    # -------------------------------------------------------------- forward
    def _discriminate(self, inputs: dict, output_attentions, output_hidden_states, training):
        out = self.convbert(inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            training=training)
        return self.discriminator_predictions(out["last_hidden_state"]), out  # (B, L)

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, gumbel_noise=None,
             position_ids=None, output_attentions=None, output_hidden_states=None, return_dict=None, training=None):
        """Training with ``labels`` (HF MLM labels: the original ids at the masked positions of
        ``input_ids``, -100 elsewhere); without them the discriminator alone on ``input_ids``.

        ``gumbel_noise`` fixes the sample: (B, L, V), or (M, V) for the masked positions only in
        row-major order; default: drawn from the model's seed generator.
        """
        inputs, labels, noise = self._inputs(locals())
        if labels is None:
            if noise is not None:
                raise ValueError(checks.GUMBEL_NEEDS_LABELS)
            logits, out = self._discriminate(inputs, output_attentions, output_hidden_states, training)
            return self._return(self._extras({"discriminator_logits": logits}, out), return_dict)
        if self.generator is None:
            raise ValueError(checks.NO_GENERATOR)
        if "input_ids" not in inputs:
            raise ValueError("ConvBertForPreTraining needs input_ids (the sampled replacements are ids)")
        ids = inputs["input_ids"]
        shape = tuple(ids.shape)
        _check_inputs(self.config, ids, inputs.get("attention_mask"), inputs.get("token_type_ids"),
                      inputs.get("position_ids"), None)
        checks.check_labels(self.task, {"labels": tensor_info(labels)}, shape, self.config.num_labels)
        labels = ops.cast(labels, ids.dtype)
        knobs, vocab = self.pretraining_config, self.config.vocab_size
        length = shape[1] if isinstance(shape[1], int) else None
        slots = self._slots(length) if length is not None else ops.shape(ids)[1]
        valid = self._check_labels(labels, slots)
        positions, slot_valid = masked_slots(labels, slots)  # (B, P)
        weight = ops.cast(slot_valid, "float32")
        count = ops.sum(weight)

        gen = self.generator
        gen_hidden = gen.convbert(inputs, training=training)["last_hidden_state"]  # (B, L, Hg)
        picked = ops.take_along_axis(gen_hidden, ops.expand_dims(positions, -1), axis=1)  # (B, P, Hg)
        features = gen.generator_predictions(picked)  # (B, P, E)
        table = ops.convert_to_tensor(gen.convbert.embeddings.word_embeddings.embeddings)  # (V, E), tied
        gen_logits = gen.generator_lm_head(features, word_embeddings=table)  # (B, P, V) float32
        targets = ops.where(slot_valid, ops.take_along_axis(labels, positions, axis=1), 0)  # (B, P)
        log_probs = ops.log_softmax(gen_logits, axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(targets, "int32"), -1), axis=-1),
                           -1)  # (B, P)
        gen_loss = ops.sum(nll * weight) / ops.maximum(count, 1.0)

        scores = ops.stop_gradient(gen_logits) / knobs.temperature + self._noise(noise, labels, positions,
                                                                                slot_valid, vocab)  # (B, P, V)
        sampled = ops.cast(ops.argmax(scores, axis=-1), ids.dtype)  # (B, P)
        hit = ops.one_hot(positions, ops.shape(ids)[1], dtype=ids.dtype) * ops.expand_dims(
            ops.cast(slot_valid, ids.dtype), -1)  # (B, P, L)
        placed = ops.sum(hit * ops.expand_dims(sampled, -1), axis=1)  # (B, L)
        masked = ops.not_equal(labels, heads.IGNORE_INDEX)  # (B, L)
        replaced_input_ids = ops.stop_gradient(ops.where(masked, placed, ids))
        replaced_labels = ops.stop_gradient(ops.cast(ops.logical_and(masked, ops.not_equal(replaced_input_ids, labels)),
                                                     ids.dtype))  # (B, L)

        disc_inputs = {**inputs, "input_ids": replaced_input_ids}
        disc_logits, out = self._discriminate(disc_inputs, output_attentions, output_hidden_states, training)
        z = ops.cast(replaced_labels, "float32")
        per_token = ops.relu(disc_logits) - disc_logits * z + ops.log1p(ops.exp(-ops.abs(disc_logits)))  # (B, L)
        mask = inputs.get("attention_mask")
        if mask is None:
            disc_loss = ops.mean(per_token)
        else:
            real = ops.cast(mask, "float32")
            disc_loss = ops.sum(per_token * real) / ops.maximum(ops.sum(real), 1.0)
        loss = _nan_unless(valid, knobs.generator_weight * gen_loss + knobs.disc_weight * disc_loss)
        result = {"loss": loss, "generator_loss": _nan_unless(valid, gen_loss),
                  "discriminator_loss": _nan_unless(valid, disc_loss), "generator_logits": gen_logits,
                  "discriminator_logits": disc_logits, "replaced_input_ids": replaced_input_ids,
                  "replaced_labels": replaced_labels}
        return self._return(self._extras(result, out), return_dict)

    @staticmethod
    def _extras(result: dict, base: dict) -> dict:
        for key in ("hidden_states", "attentions"):
            if key in base:
                result[key] = base[key]
        return result

    def _noise(self, gumbel_noise, labels, positions, slot_valid, vocab: int):
        """(B, P, V) noise at the gathered slots: given (B, L, V) or (M, V), or drawn."""
        if gumbel_noise is None:
            shape = (*ops.shape(positions), vocab)
            return gumbel(keras.random.uniform(shape, seed=self._noise_seed))
        values = _concrete(labels)
        count = None if values is None else int((values != heads.IGNORE_INDEX).sum())
        kind = checks.check_gumbel_noise(tensor_info(gumbel_noise), tuple(labels.shape), count, vocab)
        noise = ops.cast(gumbel_noise, "float32")
        if kind == "positions":
            return ops.take_along_axis(noise, ops.expand_dims(positions, -1), axis=1)  # (B, P, V)
        counts = ops.sum(ops.cast(ops.not_equal(labels, heads.IGNORE_INDEX), "int32"), axis=1)  # (B,)
        starts = ops.cumsum(counts) - counts  # (B,) the first row of each row's positions in (M, V)
        index = ops.expand_dims(starts, 1) + ops.expand_dims(ops.arange(ops.shape(positions)[1], dtype="int32"), 0)
        index = ops.where(slot_valid, index, 0)  # (B, P)
        rows = ops.take(noise, ops.reshape(index, (-1,)), axis=0)  # (B*P, V)
        return ops.reshape(rows, (*ops.shape(positions), vocab))  # (B, P, V)

    # -------------------------------------------------------------- compile, loss and metrics
    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics=None, *,
                micro_batches: int = 1, **kwargs):
        """Keras ``compile``; ``optimizer="auto"``: ``convbert_tf.train.adamw`` with the issue's defaults.

        ``loss="auto"``: the model's own (generator MLM + ``disc_weight`` x BCE), labels inside ``x``.
        ``metrics="auto"``: ``METRIC_NAMES``, weighted by their counts.
        ``micro_batches``: gradient accumulation as the PyTorch loop's ``--grad-accum``, on every
        backend. Each batch ``fit`` reads is one optimizer step: it is cut into this many equal
        micro-batches, run one after the other (a ``tf.while_loop``, a ``jax.lax.scan`` or a Python
        loop of ``backward`` calls), so only one micro-batch's activations are alive at a time.
        """
        if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"micro_batches must be a positive integer, got {micro_batches!r}")
        if micro_batches > 1:
            if not _is_auto(loss):
                raise ValueError(f"compile(micro_batches={micro_batches}) accumulates the model's own loss: keep "
                                 "loss='auto'")
        self._micro_batches = micro_batches
        if _is_auto(optimizer):
            from convbert_tf.train import adamw

            optimizer = adamw(self)
        return super().compile(optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics,
                               **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self._micro_batches > 1:
            config = {**config, "micro_batches": self._micro_batches}
        return config

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not self._uses_task_loss:
            loss = keras.Model.compute_loss(self, x, y, y_pred, sample_weight, training=training)
        else:
            if y is not None or sample_weight is not None:
                raise ValueError("ConvBertForPreTraining takes its labels inside x (HF MLM labels) and no y or "
                                 "sample_weight")
            if "loss" not in y_pred:
                raise ValueError("ConvBertForPreTraining: no labels; put labels (the original ids at the masked "
                                 "positions, -100 elsewhere) in the input dict")
            loss = self._replica_loss(x, y_pred)
        self._step_guard.loss = loss
        return loss

    def _replica_loss(self, x, y_pred):
        """The loss; under a tf.distribute strategy this replica's share of the global batch's loss.

        Each replica's sums are divided by the global counts (masked positions, real tokens), so the
        gradients Keras sums over the replicas are the gradient of the whole batch's loss, and the
        loss Keras reports (the replicas' shares, rescaled and averaged) is that batch's loss.
        """
        if backend.replicas_in_sync() == 1:
            return y_pred["loss"]
        return self._share(x, y_pred, self._global_counts(x))

    @staticmethod
    def _counts(x):
        """(masked positions, real tokens) of the batch ``x``, float32 scalars."""
        labels = x["labels"]
        masked = ops.sum(ops.cast(ops.not_equal(labels, heads.IGNORE_INDEX), "float32"))
        mask = x.get("attention_mask")
        real = ops.sum(ops.cast(mask, "float32")) if mask is not None else ops.cast(ops.size(labels), "float32")
        return masked, real

    def _global_counts(self, x):
        """``_counts`` summed over the replicas of a tf.distribute strategy: the step's denominators."""
        masked, real = self._counts(x)
        if backend.replicas_in_sync() == 1:
            return ops.maximum(masked, 1.0), ops.maximum(real, 1.0)
        import tensorflow as tf

        totals = tf.distribute.get_replica_context().all_reduce("sum", ops.stack([masked, real]))
        return ops.maximum(totals[0], 1.0), ops.maximum(totals[1], 1.0)

    def _share(self, x, y_pred, totals):
        """The part of the step's loss that the rows of ``x`` hold: their sums over the step's counts."""
        knobs = self.pretraining_config
        masked, real = self._counts(x)
        return (knobs.generator_weight * y_pred["generator_loss"] * masked / totals[0]
                + knobs.disc_weight * y_pred["discriminator_loss"] * real / totals[1])

    def _train_step(self, *args):
        if self._micro_batches == 1:
            return super()._train_step(*args)
        step = {"jax": self._accumulated_train_step_jax,
                "torch": self._accumulated_train_step_torch}.get(backend.name(), self._accumulated_train_step)
        return step(*args)

    def _micro_batch_input(self, data) -> dict:
        """The step's input dict, checked for ``micro_batches``: labels inside it, rows that split evenly."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is not None or sample_weight is not None or not isinstance(x, dict) or "labels" not in x:
            raise ValueError("ConvBertForPreTraining with micro_batches takes one dict per step, labels inside it, "
                             "and no y or sample_weight")
        rows = x["labels"].shape[0]
        if rows is not None and rows % self._micro_batches:
            raise ValueError(f"a batch of {rows} rows does not split into micro_batches={self._micro_batches} "
                             "equal micro-batches")
        return x

    def _sliced(self, x: dict) -> dict:
        """Each input as ``(micro_batches, rows / micro_batches, ...)``; static shapes (JAX, PyTorch)."""
        return {key: ops.reshape(value, (self._micro_batches, -1, *ops.shape(value)[1:]))  # (n, B / n, ...)
                for key, value in x.items()}

    def _accumulated_train_step(self, data):
        """One optimizer step over ``micro_batches`` equal slices of the batch, as the PyTorch loop's ``--grad-accum``.

        The batch is the step's whole batch (``PretrainingBatches(grad_accum=n)``: the loop's n
        micro-batches one after the other). Every slice's sums are divided by the whole step's
        counts (over the replicas too), so the summed gradient is the whole batch's gradient,
        clipped and applied once: one ``fit`` step, one optimizer step, one learning rate. The
        slices run in a ``tf.while_loop`` (one traced copy of the model, one slice alive at a time).
        """
        import tensorflow as tf

        from convbert_tf.optimizers import dense_gradient as dense

        x = self._micro_batch_input(data)
        n = self._micro_batches
        sliced = {}
        for key, value in x.items():
            value = tf.convert_to_tensor(value)
            tail = [d if d is not None else tf.shape(value)[i + 1] for i, d in enumerate(value.shape[1:])]
            sliced[key] = tf.reshape(value, [n, -1, *tail])  # (n, rows / n, ...)
        totals = self._global_counts(x)
        variables = list(self.trainable_weights)
        untouched: list[bool] = []  # per variable: no slice gives it a gradient (its update is skipped)

        def body(i, loss, *sums):
            part = {key: tf.gather(value, i) for key, value in sliced.items()}
            with tf.GradientTape() as tape:
                y_pred = self(part, training=True)
                share = self._share(part, y_pred, totals)
                scaled = self.optimizer.scale_loss(share) if self.optimizer is not None else share
            grads = tape.gradient(scaled, variables)
            untouched[:] = [g is None for g in grads]
            self.compute_metrics(part, None, y_pred)
            return (i + 1, loss + share,
                    *[s if g is None else s + tf.cast(dense(g), s.dtype) for s, g in zip(sums, grads, strict=True)])

        start = [tf.zeros(v.shape, dtype=v.dtype) for v in variables]
        out = tf.while_loop(lambda i, *_: i < n, body, [tf.constant(0), tf.constant(0.0), *start],
                            parallel_iterations=1, maximum_iterations=n)
        loss, grads = out[1], [None if skip else g for g, skip in zip(out[2:], untouched, strict=True)]
        self._step_guard.loss = loss
        self._loss_tracker.update_state(loss * backend.replicas_in_sync(), sample_weight=tf.shape(x["labels"])[0])
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self.get_metrics_result()

    def _accumulated_train_step_jax(self, state, data):
        """``_accumulated_train_step`` for JAX's stateless trainer: the slices in a ``jax.lax.scan``.

        The carry holds the summed gradients, the loss, the metrics and the non-trainable state
        (the seed generators, so each slice draws its own dropout masks and Gumbel noise); each
        scan step differentiates one slice, so one slice's activations are alive at a time.
        """
        import jax
        import jax.numpy as jnp

        trainable, non_trainable, optimizer_state, metrics_state = state
        x = self._micro_batch_input(data)
        totals = self._global_counts(x)
        optimizer = self.optimizer

        def scaled_share(trainable, non_trainable, part):
            y_pred, non_trainable = self.stateless_call(trainable, non_trainable, part, training=True)
            share = self._share(part, y_pred, totals)
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_state, strict=True))):
                scaled = optimizer.scale_loss(share)
            return scaled, (share, y_pred, non_trainable)

        gradient = jax.value_and_grad(scaled_share, has_aux=True)

        def body(carry, part):
            non_trainable, metrics_state, loss, sums = carry
            (_, (share, y_pred, non_trainable)), grads = gradient(trainable, non_trainable, part)
            metrics_state = self._stateless_metrics(metrics_state, lambda: self.compute_metrics(part, None, y_pred))
            sums = [s + g.astype(s.dtype) for s, g in zip(sums, grads, strict=True)]
            return (non_trainable, metrics_state, loss + share, sums), None

        start = (non_trainable, metrics_state, jnp.zeros((), "float32"), [jnp.zeros_like(v) for v in trainable])
        (non_trainable, metrics_state, loss, grads), _ = jax.lax.scan(body, start, self._sliced(x))
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        logs = {}

        def record():
            self._loss_tracker.update_state(loss, sample_weight=x["labels"].shape[0])
            logs.update(self.get_metrics_result())

        metrics_state = self._stateless_metrics(metrics_state, record)
        return logs, (trainable, non_trainable, optimizer_state, metrics_state)

    def _stateless_metrics(self, values: list, update) -> list:
        """Runs ``update`` on the metrics variables holding ``values`` (JAX); their values after it."""
        with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, values, strict=True))) as scope:
            update()
        return [value if (new := scope.get_current_value(v)) is None else new
                for v, value in zip(self.metrics_variables, values, strict=True)]

    def _accumulated_train_step_torch(self, data):
        """``_accumulated_train_step`` for the PyTorch trainer: one ``backward`` per slice into ``.grad``."""
        import torch

        x = self._micro_batch_input(data)
        with torch.no_grad():
            totals = self._global_counts(x)
        sliced = self._sliced(x)
        self.zero_grad()
        loss = None
        for index in range(self._micro_batches):
            part = {key: value[index] for key, value in sliced.items()}
            y_pred = self(part, training=True)
            share = self._share(part, y_pred, totals)
            self.optimizer.scale_loss(share).backward()
            with torch.no_grad():
                loss = share.detach() if loss is None else loss + share.detach()
                self.compute_metrics(part, None, y_pred)
            del y_pred, share  # the slice's activations go before the next slice's forward
        self._loss_tracker.update_state(loss, sample_weight=x["labels"].shape[0])
        variables = self.trainable_weights[:]
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in variables], variables)
        return self.get_metrics_result()

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self._uses_task_loss and self._uses_default_metrics and "loss" in y_pred:
            self._update_metrics(x, y_pred)
        return keras.Model.compute_metrics(self, x, y, y_pred, sample_weight)

    def _update_metrics(self, x, y_pred) -> None:
        labels = ops.cast(x["labels"], "int32")
        slots = ops.shape(y_pred["generator_logits"])[1]
        positions, slot_valid = masked_slots(labels, slots)
        targets = ops.take_along_axis(labels, positions, axis=1)
        gen_weight = ops.cast(slot_valid, "float32")
        gen_right = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred["generator_logits"], -1), "int32"), targets),
                             "float32")
        mask = x.get("attention_mask")
        real = ops.cast(mask, "float32") if mask is not None else ops.ones_like(y_pred["discriminator_logits"])
        replaced = ops.cast(y_pred["replaced_labels"], "float32")
        disc_right = ops.cast(ops.equal(ops.cast(y_pred["discriminator_logits"] > 0, "float32"), replaced), "float32")
        gen_count, real_count = ops.sum(gen_weight), ops.sum(real)
        values = {
            "generator_loss": (y_pred["generator_loss"], gen_count),
            "discriminator_loss": (y_pred["discriminator_loss"], real_count),
            "generator_accuracy": (gen_right, gen_weight),
            "discriminator_accuracy": (disc_right, real),
            "replaced_fraction": (replaced, real),
        }
        for metric in self._rtd_metrics:
            value, weight = values[metric.name]
            # Flat: Keras' Mean averages each sample over its other axes before weighting.
            metric.update_state(ops.reshape(value, (-1,)), sample_weight=ops.reshape(weight, (-1,)))

    def metric_sums(self) -> dict[str, float]:
        """The sums of ``convbert_common.pretraining.SUM_KEYS`` (all but ``positions``) behind the default
        metrics since their last reset: ``metrics_from_sums`` turns them into the logged values."""
        metrics = {m.name: m for m in self._rtd_metrics}

        def total(name):
            return float(keras.ops.convert_to_numpy(metrics[name].total))

        def count(name):
            return float(keras.ops.convert_to_numpy(metrics[name].count))

        return {"generator_loss_sum": total("generator_loss"), "discriminator_loss_sum": total("discriminator_loss"),
                "masked": count("generator_loss"), "real": count("discriminator_loss"),
                "generator_correct": total("generator_accuracy"),
                "discriminator_correct": total("discriminator_accuracy"), "replaced": total("replaced_fraction")}

    # -------------------------------------------------------------- weights by canonical name
    def canonical_variables(self) -> dict[str, tuple[keras.Variable, wm.WeightSpec]]:
        """{PyTorch state-dict name: (variable, spec)}; the shared embeddings under both prefixes, as there.

        Raises RuntimeError unless every variable of the model has a name.
        """
        out = {}
        for name, var in io.canonical_variables(_Discriminator(self), heads.PRETRAINING).items():
            out[name] = var
        specs = {s.name: s for s in wm.model_specs(self.config, heads.PRETRAINING)}
        table = {name: (var, specs[name]) for name, var in out.items()}
        if self.generator is not None:
            gen_specs = {s.name: s for s in wm.model_specs(self.generator_config, heads.MASKED_LM)}
            for name, var in io.canonical_variables(self.generator, heads.MASKED_LM).items():
                table[GENERATOR_PREFIX + name] = (var, gen_specs[name])
        named = {id(var) for var, _ in table.values()}
        unmapped = [v.path for v in self.weights if id(v) not in named]
        if unmapped:
            raise RuntimeError(f"{type(self).__name__}: variables with no canonical name: {unmapped}")
        return table

    def parameter_names(self) -> dict[str, keras.Variable]:
        """{name: variable} once per variable, in PyTorch's ``named_parameters`` order and names."""
        out, seen = {}, set()
        for name, (var, _spec) in self.canonical_variables().items():
            if id(var) not in seen:
                seen.add(id(var))
                out[name] = var
        return out

    def canonical_state(self) -> dict[str, np.ndarray]:
        """The weights as canonical-layout arrays by PyTorch state-dict name (embeddings twice, as there)."""
        out = {}
        for name, (var, spec) in self.canonical_variables().items():
            value = np.asarray(keras.ops.convert_to_numpy(var.value))
            out[name] = get_layout(spec.keras_layout).to_canonical(value, spec.shape, f"{var.path} ({name})")
        return out

    def assign_state(self, tensors: dict[str, np.ndarray], source: str = "checkpoint") -> None:
        """Assign canonical arrays by PyTorch state-dict name; every name and shape checked before the first write."""
        table = self.canonical_variables()
        plan = []
        for name, array in tensors.items():
            if name not in table:
                raise checkpoint.CheckpointError(f"{source}: {name} has no variable in {type(self).__name__}")
            var, spec = table[name]
            if tuple(np.shape(array)) != spec.shape:
                raise checkpoint.CheckpointError(f"{source}: {name}: checkpoint shape {tuple(np.shape(array))}, model "
                                                 f"expects {spec.shape} (nothing was loaded)")
            plan.append((var, spec, name, array))
        for var, spec, name, array in plan:
            value = get_layout(spec.keras_layout).to_target(np.asarray(array), spec.shape, f"{source}: {name}")
            var.assign(value.astype(keras.backend.standardize_dtype(var.dtype), copy=False))

    # -------------------------------------------------------------- saving and loading
    def save_pretrained(self, save_directory, *, tokenizer: Any = None,
                        max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE) -> str:
        """Write the pretraining directory (``discriminator/``, ``generator/``, ``pretraining_config.json``).

        ``tokenizer``: a tokenizer folder, or an object with ``save_pretrained``, copied into both
        model folders. Each part is written to a temporary folder and renamed into place.
        """
        return save_pretraining_dir(save_directory, self.canonical_state(), self.config, self.generator_config,
                                    self.pretraining_config, tokenizer=tokenizer, max_shard_size=max_shard_size)

    @classmethod
    def from_pretrained(cls, pretrained_model_path, *, dtype: Any = None, output_loading_info: bool = False,
                        generator_config: ConvBertConfig | None = None,
                        pretraining_config: ptc.PretrainingConfig | None = None, max_predictions: int | None = None,
                        seed: int | None = None, **config_overrides: Any):
        """A pretraining directory (both models, tied again), or any checkpoint directory as the discriminator.

        As PyTorch's: from a pretraining directory, ``config_overrides`` apply to both configs. Any
        other checkpoint directory loads as the discriminator (its RTD head fresh where the
        checkpoint has none, listed in ``missing_keys``) with no generator, unless
        ``generator_config`` is given: then a fresh generator of that config shares the loaded
        embeddings (continued pretraining from a released discriminator).
        """
        path = os.fspath(pretrained_model_path)
        ConvBertConfig.check_overrides(config_overrides, f"{cls.__name__}.from_pretrained")
        extra = {"dtype": io._dtype_name(dtype)} if dtype is not None else {}
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
            model = cls(config, gen_config, pretraining_config or knobs, initialize=False,
                        max_predictions=max_predictions, seed=seed, **extra)
            plan = dict(disc.tensors)
            plan.update({GENERATOR_PREFIX + k: v for k, v in gen.tensors.items() if not ptc.is_shared_embedding(k)})
            missing = list(disc.missing_keys)
            for result in (disc, gen):
                info["missing_keys"] += result.missing_keys
                info["unexpected_keys"] += result.unexpected_keys
        else:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{path}: not a pretraining directory or checkpoint directory")
            config = ConvBertConfig.from_pretrained(path, **config_overrides)
            result = checkpoint.load_for_model(config, cls.task, path)
            model = cls(config, generator_config, pretraining_config, with_generator=generator_config is not None,
                        initialize=generator_config is not None, max_predictions=max_predictions, seed=seed, **extra)
            plan = dict(result.tensors)
            missing = list(result.missing_keys)
            info = {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys),
                    "mismatched_keys": list(result.mismatched_keys)}
        model.assign_state(plan, path)
        if missing:
            io.initialize_fresh(_Discriminator(model), missing)
        return (model, info) if output_loading_info else model


# The logged metrics of fit (``compile(metrics="auto")``), in convbert_common.pretraining.LOG_KEYS' order.
METRIC_NAMES = ("generator_loss", "discriminator_loss", "generator_accuracy", "discriminator_accuracy",
                "replaced_fraction")


class _Discriminator:
    """A view of a ``ConvBertForPreTraining`` as the model the discriminator/ checkpoint describes
    (backbone + RTD head): what ``io.canonical_variables`` walks and counts."""

    task = heads.PRETRAINING

    def __init__(self, model: ConvBertForPreTraining):
        self.config = model.config
        self.convbert = model.convbert
        self.discriminator_predictions = model.discriminator_predictions
        self.weights = [*model.convbert.weights, *model.discriminator_predictions.weights]


def save_pretraining_dir(directory, state: dict[str, np.ndarray], config: ConvBertConfig,
                         generator_config: ConvBertConfig | None, knobs: ptc.PretrainingConfig, *,
                         tokenizer: Any = None,
                         max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE) -> str:
    """Write a pretraining directory from canonical arrays by PyTorch state-dict name (``canonical_state``)."""
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        raise FileExistsError(f"{directory} is a file; save_pretrained needs a directory")
    layout = ptc.PretrainingDir(directory)
    disc = {k: v for k, v in state.items() if not k.startswith(GENERATOR_PREFIX)}
    gen = {k[len(GENERATOR_PREFIX):]: v for k, v in state.items() if k.startswith(GENERATOR_PREFIX)}
    parts = [(layout.discriminator, _ordered(disc, config, heads.PRETRAINING), config, heads.PRETRAINING)]
    if generator_config is not None:
        parts.append((layout.generator, _ordered(gen, generator_config, heads.MASKED_LM), generator_config,
                      heads.MASKED_LM))
    os.makedirs(directory, exist_ok=True)
    for folder, tensors, cfg, task in parts:
        with atomic_directory(folder, overwrite=True) as tmp:
            shards.write_sharded(tmp, tensors, max_shard_size)
            dtype = str(next(iter(tensors.values())).dtype)
            cfg.replace(architectures=[task.class_name], dtype=dtype).save_pretrained(tmp)
            _save_tokenizer(tokenizer, tmp)
    knobs.save_pretrained(directory)
    return directory


def _ordered(state: dict[str, np.ndarray], config: ConvBertConfig, task) -> dict[str, np.ndarray]:
    expected = [s.name for s in wm.model_specs(config, task)]
    if sorted(state) != sorted(expected):
        extra, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
        raise RuntimeError(f"the weights disagree with the weight table: extra {extra}, missing {missing}")
    return {name: state[name] for name in expected}


def _save_tokenizer(tokenizer: Any, folder: str) -> None:
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, os.PathLike)):
        copy_tokenizer(os.fspath(tokenizer), folder)
    elif hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder)
    else:
        raise TypeError(f"tokenizer must be a folder or have save_pretrained, got {type(tokenizer).__name__}")
