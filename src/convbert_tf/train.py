"""Pretraining in Keras: the optimizer, the schedule and the data of ``model.fit``, and ``convbert pretrain
--framework keras``.

The same recipe as ``convbert_pt/train.py``, from the same framework-free pieces
(``convbert_common.pretraining``): the examples and masks of step ``s`` are the PyTorch loop's
(``PretrainingBatches``: the dataset's epoch order, the seeded masker), the learning rate of the
update after ``s`` updates is ``learning_rate_factor(s, warmup, total)`` times the peak
(``WarmupLinearDecay``), and ``AdamW`` is PyTorch's AdamW (epsilon added after the bias
correction, as torch does; Keras' own adds it before, which changes the first updates by a few
percent), with no weight decay on biases and LayerNorm and clipping by the global norm.

``train(settings)`` runs ``fit`` and writes what the PyTorch loop writes: ``log.jsonl`` with the
same keys, ``checkpoint-STEP/`` (the pretraining directory in Hugging Face's layout, the AdamW
moments by PyTorch parameter name in PyTorch's layout, ``trainer_state.json``), and the final
``discriminator/`` and ``generator/``. A run of either framework resumes from the other's
checkpoint (the random state of dropout and of the Gumbel noise is each framework's own).
Several devices (``tf.distribute.MirroredStrategy`` on TensorFlow) split each batch; the loss is
normalised by the whole batch's counts, so the step is one device's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

from convbert_common import heads
from convbert_common import pretraining as ptc
from convbert_common.fileio import atomic_directory
from convbert_common.pretraining_data import PretrainingDataset, mask_tokens

logger = logging.getLogger(__name__)

_register = keras.saving.register_keras_serializable(package="convbert")

# The AdamW state in optimizer.safetensors: PyTorch's slot names (``torch.optim.AdamW.state``).
MOMENT_SLOTS = ("exp_avg", "exp_avg_sq")


# --------------------------------------------------------------------------------------- optimisation
@_register
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``peak * learning_rate_factor(step, warmup_steps, total_steps)`` (``convbert_common.pretraining``)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = (step + 1.0) / max(self.warmup_steps, 1)
        decay = ops.maximum(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))
        return self.peak * ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


@_register
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW with PyTorch's update rule, so both frameworks take the same step.

    torch: ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``; Keras' Adam divides by
    ``sqrt(v) + eps`` before the correction, i.e. uses ``eps / sqrt(1 - b2^t)`` (32x ``eps`` at the
    first step). Weight decay (``p -= lr * wd * p`` before the update) and the slots are Keras'.
    """

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        # 1 - beta^t as -expm1(t log beta): in float32, 1 - 0.999 loses 5 digits (torch uses float64).
        correction1 = -ops.expm1(step * math.log(self.beta_1))
        correction2 = -ops.expm1(step * math.log(self.beta_2))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - self.beta_1))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2), ops.multiply(ops.square(gradient), 1.0 - self.beta_2)))
        denom = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(correction2)), ops.cast(self.epsilon, dtype))
        self.assign_sub(variable, ops.multiply(ops.divide(m, denom), lr / correction1))

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # The global norm of the last step's gradients before clipping (the log's grad_norm).
        self.grad_norm = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="grad_norm",
                                           aggregation="only_first_replica")

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        present = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads if g is not None]
        if self.built and present:
            self.grad_norm.assign(ops.sqrt(ops.sum(ops.stack(present))))
        return super().apply(grads, trainable_variables)

    def moments(self, variable) -> tuple[keras.Variable, keras.Variable]:
        """The (first, second) moment variables of ``variable``."""
        index = self._get_variable_index(variable)
        return self._momentums[index], self._velocities[index]


def no_decay(name: str) -> bool:
    """ELECTRA's exclusions (PyTorch parameter names): biases and LayerNorm scales keep their size."""
    return name.endswith("bias") or "LayerNorm" in name


def adamw(model, *, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 5e-4,
          weight_decay: float = 0.01, clip: float = 1.0, beta_1: float = 0.9, beta_2: float = 0.999,
          epsilon: float = 1e-6, warmup_steps: int | None = None, total_steps: int | None = None) -> AdamW:
    """``AdamW`` for ``model`` (a ``ConvBertForPreTraining``), the PyTorch loop's defaults.

    With ``total_steps`` the learning rate follows ``WarmupLinearDecay`` (warm-up default 10%).
    ``clip``: the global gradient norm (0: off). No decay on biases and LayerNorm.
    """
    if total_steps is not None and not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        warmup = int(0.1 * total_steps) if warmup_steps is None else warmup_steps
        learning_rate = WarmupLinearDecay(learning_rate, warmup, total_steps)
    optimizer = AdamW(learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2,
                      epsilon=epsilon, global_clipnorm=clip if clip > 0 else None)
    optimizer.exclude_from_weight_decay(
        var_list=[var for name, var in model.parameter_names().items() if no_decay(name)])
    return optimizer


def optimizer_state(model, optimizer: AdamW) -> dict[str, np.ndarray]:
    """AdamW's state as PyTorch's ``optimizer.safetensors`` holds it: ``slot/name`` in PyTorch's layout."""
    table = model.canonical_variables()
    from convbert_common.layouts import get_layout

    step = np.asarray(float(keras.ops.convert_to_numpy(optimizer.iterations)), dtype=np.float32)
    out = {}
    for name, var in model.parameter_names().items():
        spec = table[name][1]
        layout = get_layout(spec.keras_layout)
        for slot, moment in zip(MOMENT_SLOTS, optimizer.moments(var), strict=True):
            value = np.asarray(keras.ops.convert_to_numpy(moment.value), dtype=np.float32)
            out[f"{slot}/{name}"] = np.ascontiguousarray(layout.to_canonical(value, spec.shape, f"{slot}/{name}"))
        out[f"step/{name}"] = step
    return out


def load_optimizer_state(model, optimizer: AdamW, state: dict[str, np.ndarray], source: str) -> None:
    """Set AdamW's moments and step from ``optimizer_state``'s layout (written by either framework)."""
    from convbert_common.layouts import get_layout

    table = model.canonical_variables()
    names = model.parameter_names()
    wanted = {f"{slot}/{name}" for name in names for slot in (*MOMENT_SLOTS, "step")}
    missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or extra:
        raise ValueError(f"{source}: the AdamW state does not fit the model (missing {missing[:4]}, unexpected "
                         f"{extra[:4]})")
    steps = {float(np.asarray(state[f"step/{name}"])) for name in names}
    if len(steps) != 1:
        raise ValueError(f"{source}: the parameters were updated different numbers of times ({sorted(steps)[:4]})")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    for name, var in names.items():
        spec = table[name][1]
        layout = get_layout(spec.keras_layout)
        for slot, moment in zip(MOMENT_SLOTS, optimizer.moments(var), strict=True):
            moment.assign(layout.to_target(np.asarray(state[f"{slot}/{name}"], dtype=np.float32), spec.shape,
                                           f"{source}: {slot}/{name}"))
    optimizer.iterations.assign(int(steps.pop()))


# --------------------------------------------------------------------------------------- data
class PretrainingBatches(keras.utils.PyDataset):
    """The PyTorch loop's batches as a ``keras.utils.PyDataset``: item ``i`` is step ``start_step + i``.

    Step ``s`` takes the ``s``-th batch of ``batch_size`` examples in the dataset's epoch order
    (epochs follow each other) and masks it with the framework-free masker from ``(seed, s,
    row)``: with one seed both frameworks train on the same examples and masks. Items are dicts of
    ``input_ids`` (masked), ``attention_mask``, ``token_type_ids`` and ``labels`` (int32), the
    input of ``ConvBertForPreTraining``'s built-in loss.
    """

    def __init__(self, dataset: PretrainingDataset, knobs: ptc.PretrainingConfig | None = None, *,
                 batch_size: int, seed: int = 0, steps: int | None = None, start_step: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.knobs = knobs or ptc.PretrainingConfig()
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.per_epoch = dataset.steps_per_epoch(self.batch_size)
        if self.per_epoch == 0:
            raise ValueError(f"{dataset.data_dir} has {len(dataset)} examples, fewer than one batch of "
                             f"{self.batch_size}: lower --batch-size or add text")
        self.start_step = int(start_step)
        self.steps = int(steps) if steps is not None else self.per_epoch
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: self.dataset.epoch_order(self.seed, epoch)}
        return self._orders[epoch]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The masked batch of optimizer step ``step``."""
        epoch, in_epoch = ptc.data_position(step, 1, self.per_epoch)
        indices = self._order(epoch)[in_epoch * self.batch_size:(in_epoch + 1) * self.batch_size]
        arrays = self.dataset.gather(indices)
        d, k = self.dataset, self.knobs
        ids, labels = mask_tokens(arrays["input_ids"], arrays["attention_mask"], special_ids=d.special_ids,
                                  vocab_size=d.vocab_size, mask_token_id=d.mask_token_id, seed=self.seed, step=step,
                                  row_offset=0, mask_prob=k.mask_prob, mask_token_prob=k.mask_token_prob,
                                  random_token_prob=k.random_token_prob)
        return {"input_ids": ids.astype(np.int32), "attention_mask": arrays["attention_mask"].astype(np.int32),
                "token_type_ids": arrays["token_type_ids"].astype(np.int32), "labels": labels.astype(np.int32)}

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.steps:
            raise IndexError(f"step {index} of {self.steps}")
        return self.batch(self.start_step + index)


# --------------------------------------------------------------------------------------- callbacks
def _window_sums(model) -> dict[str, float]:
    """The sums of ``convbert_common.pretraining.SUM_KEYS`` behind the model's metrics since their reset."""
    metrics = {m.name: m for m in model._rtd_metrics}

    def total(name):
        return float(keras.ops.convert_to_numpy(metrics[name].total))

    def count(name):
        return float(keras.ops.convert_to_numpy(metrics[name].count))

    return {"generator_loss_sum": total("generator_loss"), "discriminator_loss_sum": total("discriminator_loss"),
            "masked": count("generator_loss"), "real": count("discriminator_loss"),
            "generator_correct": total("generator_accuracy"), "discriminator_correct": total("discriminator_accuracy"),
            "replaced": total("replaced_fraction")}


class PretrainingLog(keras.callbacks.Callback):
    """Every ``log_every`` steps a ``log.jsonl`` record with the PyTorch loop's keys, for that window.

    The model's metrics are reset after each record, so each record is its window's, computed
    from the counts exactly as the PyTorch loop does (``metrics_from_sums``).
    """

    def __init__(self, knobs: ptc.PretrainingConfig, *, log_every: int, total_steps: int, start_step: int = 0,
                 positions_per_step: int, steps_per_epoch: int, writer: ptc.LogWriter | None = None,
                 schedule: keras.optimizers.schedules.LearningRateSchedule | None = None):
        super().__init__()
        self.knobs, self.log_every, self.total = knobs, log_every, total_steps
        self.done, self.positions_per_step, self.steps_per_epoch = start_step, positions_per_step, steps_per_epoch
        self.writer, self.schedule, self.history = writer, schedule, []
        self.diverged: dict[str, Any] | None = None
        self._tick, self._window_steps = time.perf_counter(), 0

    def on_train_begin(self, logs=None):
        self.model.reset_metrics()
        self._tick = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        self._window_steps += 1
        if self.done % self.log_every and self.done != self.total:
            return
        sums = {**_window_sums(self.model), "positions": float(self._window_steps * self.positions_per_step)}
        optimizer = self.model.optimizer
        # The rate of the window's last update (the PyTorch loop logs that one).
        lr = self.schedule(self.done - 1) if self.schedule is not None else optimizer.learning_rate
        elapsed = time.perf_counter() - self._tick
        record = {"step": self.done, "epoch": self.done / self.steps_per_epoch,
                  **ptc.metrics_from_sums(sums, self.knobs),
                  "learning_rate": float(keras.ops.convert_to_numpy(lr)),
                  "grad_norm": float(keras.ops.convert_to_numpy(optimizer.grad_norm)),
                  "tokens_per_second": sums["positions"] / max(elapsed, 1e-9)}
        if self.writer is not None:
            self.writer.write(record)
        self.history.append(record)
        if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
            self.model.stop_training = True
            self.diverged = record
        self.model.reset_metrics()
        self._tick, self._window_steps = time.perf_counter(), 0
