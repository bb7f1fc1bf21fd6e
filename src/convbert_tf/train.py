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
normalised by the whole batch's counts, so the step is one device's. ``grad_accum`` micro-batches
(every backend) make one ``fit`` step, as in the PyTorch loop: ``PretrainingBatches`` yields the
step's micro-batches together and ``compile(micro_batches=...)`` runs them one after the other,
each normalised by the whole step's counts, before the one update. On TensorFlow the batches can
also come through ``tf.data`` (``PretrainingBatches.to_tf_dataset``), the same batches prefetched.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

from convbert_common import checks
from convbert_common import pretraining as ptc
from convbert_common.fileio import atomic_directory
from convbert_common.pretraining_data import PretrainingDataset, mask_tokens
from convbert_tf import backend, optimizers

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
class AdamW(optimizers.SharedStepScalars, keras.optimizers.AdamW):
    """Keras' AdamW with PyTorch's update rule and clipping, so both frameworks take the same step.

    ``clip_norm``: clip by the global gradient norm as ``torch.nn.utils.clip_grad_norm_`` does
    (``apply``); Keras' own ``global_clipnorm`` is not used.

    torch: ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``; Keras' Adam divides by
    ``sqrt(v) + eps`` before the correction, i.e. uses ``eps / sqrt(1 - b2^t)`` (32x ``eps`` at the
    first step). Weight decay (``p -= lr * wd * p`` before the update) and the slots are Keras'.
    On TensorFlow each weight's update is one compiled kernel (``convbert_tf.optimizers``; ``fused=False``:
    Keras ops one by one).
    """

    def __init__(self, *args, clip_norm: float | None = None, fused: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_norm = float(clip_norm) if clip_norm else None
        self.fused = bool(fused)

    def get_config(self) -> dict:
        return {**super().get_config(), "clip_norm": self.clip_norm, "fused": self.fused}

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype

        def scalars():
            step = ops.cast(self.iterations + 1, dtype)
            # 1 - beta^t as -expm1(t log beta): in float32, 1 - 0.999 loses 5 digits (torch uses float64).
            return (ops.cast(learning_rate, dtype), -ops.expm1(step * math.log(self.beta_1)),
                    -ops.expm1(step * math.log(self.beta_2)))

        lr, correction1, correction2 = self.step_scalar(("torch_adam", dtype), scalars)
        gradient = ops.cast(gradient, dtype)
        m, v = self.moments(variable)
        args = (variable, m, v, gradient, lr, correction1, correction2, float(self.beta_1), float(self.beta_2),
                float(self.epsilon))
        if not optimizers.compiled_update(self, optimizers.torch_adam_update, *args):
            optimizers.torch_adam_update(self, *args)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # The global norm of the last step's gradients before clipping (the log's grad_norm).
        self.grad_norm = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="grad_norm",
                                           aggregation="only_first_replica")

    def apply(self, grads, trainable_variables=None):
        """Clip by the global norm as torch does, then Keras' apply.

        The norm is that of the dense gradients (an embedding's IndexedSlices may repeat a row,
        whose parts add up before squaring) and, under ``tf.distribute``, of the whole batch's
        gradient: Keras' own ``global_clipnorm`` clips each replica's share before summing them,
        so a clipped step would depend on the number of replicas. Each replica passes the clipped
        sum / replicas on (exact for two), which Keras' own sum turns back into the clipped sum.
        """
        grads = list(grads)
        replicas = backend.replicas_in_sync()
        index = [i for i, g in enumerate(grads) if g is not None]
        if not index:
            return super().apply(grads, trainable_variables)
        dense = [optimizers.dense_gradient(grads[i]) for i in index]
        if replicas > 1:
            import tensorflow as tf

            dense = tf.distribute.get_replica_context().all_reduce("sum", dense)
        norm = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in dense])))
        if self.built:
            self.grad_norm.assign(norm)
        scale = ops.cast(1.0 / replicas, "float32")
        if self.clip_norm:
            scale = scale * ops.minimum(1.0, self.clip_norm / (norm + 1e-6))  # torch's clip_grad_norm_
        out = list(grads)
        for i, g in zip(index, dense, strict=True):
            out[i] = ops.multiply(g, ops.cast(scale, g.dtype))
        return super().apply(out, trainable_variables)

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
                      epsilon=epsilon, clip_norm=clip if clip > 0 else None)
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

    Step ``s`` takes micro-batches ``s * grad_accum ...`` of ``batch_size`` examples each in the
    dataset's epoch order (epochs follow each other, a step may straddle two) and masks each with
    the framework-free masker from ``(seed, s, row)``, the row counted across the step's
    micro-batches: with one seed both frameworks train on the same examples and masks. An item is
    the whole step, its micro-batches one after the other (``compile(micro_batches=grad_accum)``
    cuts it again). Items are dicts of ``input_ids`` (masked), ``attention_mask``,
    ``token_type_ids`` and ``labels`` (int32), the input of ``ConvBertForPreTraining``'s built-in
    loss. Pass ``fit(..., shuffle=False)`` to train in step order (Keras shuffles the items of a
    PyDataset by default; each item is the same batch either way, the epoch order of the examples
    being already shuffled).
    """

    def __init__(self, dataset: PretrainingDataset, knobs: ptc.PretrainingConfig | None = None, *,
                 batch_size: int, grad_accum: int = 1, seed: int = 0, steps: int | None = None,
                 start_step: int = 0, gumbel_noise: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.knobs = knobs or ptc.PretrainingConfig()
        self.batch_size = int(batch_size)
        if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
            raise ValueError(f"grad_accum must be a positive integer, got {grad_accum!r}")
        self.grad_accum = grad_accum
        self.seed = int(seed)
        self.per_epoch = dataset.steps_per_epoch(self.batch_size)  # micro-batches
        if self.per_epoch == 0:
            raise ValueError(f"{dataset.data_dir} has {len(dataset)} examples, fewer than one batch of "
                             f"{self.batch_size}: lower --batch-size or add text")
        self.start_step = int(start_step)
        self.steps = int(steps) if steps is not None else self.per_epoch // grad_accum
        if self.steps < 1:
            raise ValueError(f"one epoch of {len(dataset)} examples is {self.per_epoch} micro-batches of "
                             f"{self.batch_size}, fewer than --grad-accum {grad_accum}: pass steps, or lower "
                             "grad_accum / batch_size")
        self.gumbel_noise = bool(gumbel_noise)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps

    def _order(self, epoch: int) -> np.ndarray:
        # One epoch's order kept; read and replaced whole, so tf.data's threads may share it.
        order = self._orders.get(epoch)
        if order is None:
            order = self.dataset.epoch_order(self.seed, epoch)
            self._orders = {epoch: order}
        return order

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The masked batch of optimizer step ``step`` (its ``grad_accum`` micro-batches, in order)."""
        d, k, size = self.dataset, self.knobs, self.batch_size
        parts = []
        for index in range(self.grad_accum):
            epoch, in_epoch = divmod(step * self.grad_accum + index, self.per_epoch)
            arrays = d.gather(self._order(epoch)[in_epoch * size:(in_epoch + 1) * size])
            ids, labels = mask_tokens(arrays["input_ids"], arrays["attention_mask"], special_ids=d.special_ids,
                                      vocab_size=d.vocab_size, mask_token_id=d.mask_token_id, seed=self.seed,
                                      step=step, row_offset=index * size, mask_prob=k.mask_prob,
                                      mask_token_prob=k.mask_token_prob, random_token_prob=k.random_token_prob)
            parts.append({"input_ids": ids, "attention_mask": arrays["attention_mask"],
                          "token_type_ids": arrays["token_type_ids"], "labels": labels})
        out = {key: np.concatenate([p[key] for p in parts]).astype(np.int32) for key in parts[0]}
        if self.gumbel_noise:
            out["gumbel_noise"] = self.noise(step, out["input_ids"].shape)
        return out

    def noise(self, step: int, shape: tuple[int, int]) -> np.ndarray:
        """(B, L, V) Gumbel noise of step ``step``, row ``i`` from the seed ``noise_seed(seed, step, i)``.

        With ``gumbel_noise=True`` every item carries it: the samples then depend on the data only,
        not on the model's seed generator or on how a strategy splits the batch over replicas.
        """
        vocab = self.dataset.vocab_size
        rows = [np.random.default_rng(ptc.noise_seed(self.seed, step, i)).random((shape[1], vocab))
                for i in range(shape[0])]
        return ptc.gumbel_from_uniform(np.stack(rows)).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.steps:
            raise IndexError(f"step {index} of {self.steps}")
        return self.batch(self.start_step + index)

    def to_tf_dataset(self, *, prefetch: int | None = None, parallel: int | None = None):
        """The same items, in step order, as a ``tf.data.Dataset`` (TensorFlow backend only).

        Item ``i`` is ``self[i]``, built by this object's masker in ``parallel`` threads of
        ``tf.data`` (default: AUTOTUNE) with the order kept, and ``prefetch`` items ahead (default:
        AUTOTUNE), so the masking of later steps overlaps the training of the current one.
        """
        backend.require_tensorflow("PretrainingBatches.to_tf_dataset (tf.data)")
        import tensorflow as tf

        first = self.batch(self.start_step)
        keys = list(first)
        dtypes = [tf.as_dtype(first[k].dtype) for k in keys]

        def build(index):
            batch = self.batch(self.start_step + int(index))
            return [batch[k] for k in keys]

        def item(index):
            values = tf.numpy_function(build, [index], dtypes, stateful=False)
            out = {}
            for key, value in zip(keys, values, strict=True):
                value.set_shape(first[key].shape)  # every step's batch has the first one's shape
                out[key] = value
            return out

        auto = tf.data.AUTOTUNE
        data = tf.data.Dataset.range(self.steps).map(item, num_parallel_calls=auto if parallel is None else parallel,
                                                      deterministic=True)
        return data.prefetch(auto if prefetch is None else prefetch)


# --------------------------------------------------------------------------------------- callbacks
class PretrainingLog(keras.callbacks.Callback):
    """Every ``log_every`` steps a ``log.jsonl`` record with the PyTorch loop's keys, for that window.

    The model's metrics are reset after each record, so each record is its window's, computed
    from the counts exactly as the PyTorch loop does (``metrics_from_sums``).
    """

    def __init__(self, knobs: ptc.PretrainingConfig, *, log_every: int, total_steps: int, start_step: int = 0,
                 positions_per_step: int, steps_per_epoch: int, grad_accum: int = 1,
                 writer: ptc.LogWriter | None = None,
                 schedule: keras.optimizers.schedules.LearningRateSchedule | None = None):
        super().__init__()
        self.knobs, self.log_every, self.total = knobs, log_every, total_steps
        self.done, self.positions_per_step, self.steps_per_epoch = start_step, positions_per_step, steps_per_epoch
        self.grad_accum = grad_accum
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
        sums = {**self.model.metric_sums(), "positions": float(self._window_steps * self.positions_per_step)}
        optimizer = self.model.optimizer
        # The rate of the window's last update (the PyTorch loop logs that one).
        lr = self.schedule(self.done - 1) if self.schedule is not None else optimizer.learning_rate
        elapsed = time.perf_counter() - self._tick
        record = {"step": self.done, "epoch": self.done * self.grad_accum / self.steps_per_epoch,
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
        if self.done != self.total:  # the last window stays on the progress bar
            self.model.reset_metrics()
        self._tick, self._window_steps = time.perf_counter(), 0


class PretrainingCheckpoint(keras.callbacks.Callback):
    """Every ``save_every`` steps (and at the end) ``checkpoint-STEP/``, in the PyTorch loop's layout.

    A pretraining directory (Hugging Face layout), ``optimizer.safetensors`` (AdamW's moments by
    PyTorch parameter name, PyTorch's layout, and its step), ``rng-keras.npz`` (the seed
    generators' states: dropout and the Gumbel noise) and ``trainer_state.json``, written last,
    all into a temporary folder renamed into place: a failed write leaves the previous one intact.
    """

    def __init__(self, run: Trainer):
        super().__init__()
        self.run = run

    def on_train_batch_end(self, batch, logs=None):
        run = self.run
        run.done += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(keras.ops.convert_to_numpy(loss))):
            return  # never over the last good checkpoint: the run stops at this step (PretrainingLog, the guard)
        if run.done % run.s.save_every == 0 or run.done == run.total:
            run.save(run.done)


# --------------------------------------------------------------------------------------- the run
class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss, a failed checkpoint write); the message names the step."""


@dataclass
class TrainResult:
    step: int
    output: str
    last_log: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


RNG_NAME = "rng-keras.npz"


def _strategy(device: str):
    """MirroredStrategy over the visible devices when there are several (TensorFlow), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU") if device != "cpu" else []
    if device == "cuda" and not gpus:
        raise ValueError("--device cuda: TensorFlow sees no GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        return None
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _seed_states(model) -> dict[str, keras.Variable]:
    """The model's random-state variables (seed generators), by path: what is not a weight."""
    weights = {id(v) for v in model.weights}
    return {v.path: v for v in model.variables if id(v) not in weights and "seed" in v.path}


class Trainer:
    """One Keras pretraining run (``train(settings)``); the PyTorch loop's set-up, flags and files."""

    def __init__(self, settings: ptc.TrainingSettings, callbacks: Sequence[keras.callbacks.Callback] = ()):
        settings.validate()
        self.s = settings
        self.callbacks = list(callbacks)
        self.output = os.path.abspath(settings.output)
        self.done = 0

    def _refuse_unsupported(self) -> None:
        s = self.s
        if s.fsdp:
            raise ValueError("--fsdp shards with PyTorch's FSDP2: use --framework pytorch; with --framework keras, "
                             "MirroredStrategy replicates the model over the visible devices and --grad-accum "
                             "bounds the memory of a step")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--framework keras runs in one process (MirroredStrategy over its devices), not "
                             "under torchrun")

    def _prepare_output(self) -> tuple[int, str] | None:
        """The checkpoint to resume from (None for a fresh run); refuses to mix runs in one OUTPUT."""
        latest, clear = ptc.resume_point(self.output, self.s.resume, self.s.overwrite)
        if clear:
            ptc.clear_run(self.output)
        return latest

    def _build(self) -> None:
        from convbert_common.pretraining_data import build_dataset
        from convbert_tf.pretraining import ConvBertForPreTraining

        s = self.s
        self._refuse_unsupported()
        os.makedirs(self.output, exist_ok=True)
        self.resume_from = self._prepare_output()
        resume_dir = self.resume_from[1] if self.resume_from else None
        run = ptc.run_models(s, resume_dir)
        self.tokenizer_dir, config, gen_config = run.tokenizer_dir, run.config, run.gen_config
        flags_config, flags_gen = run.flags_config, run.flags_gen
        if s.data:
            self.dataset = PretrainingDataset(s.data, tokenizer=self.tokenizer_dir,
                                              max_position_embeddings=config.max_position_embeddings)
            if s.max_seq_length is not None and self.dataset.max_seq_length != s.max_seq_length:
                raise ValueError(f"--data {s.data} holds examples of {self.dataset.max_seq_length} tokens, not "
                                 f"--max-seq-length {s.max_seq_length}")
        else:
            length = s.max_seq_length or min(128, config.max_position_embeddings)
            folder = os.path.join(self.output, ptc.DATA_DIR)
            build_dataset(s.corpus, self.tokenizer_dir, folder, max_seq_length=length, seed=s.seed,
                          one_doc_per_line=s.one_doc_per_line, text_field=s.text_field,
                          skip_bad_lines=s.skip_bad_lines, max_position_embeddings=config.max_position_embeddings,
                          progress=s.progress, overwrite=True)
            self.dataset = PretrainingDataset(folder, tokenizer=self.tokenizer_dir,
                                              max_position_embeddings=config.max_position_embeddings)

        keras.utils.set_random_seed(s.seed)
        self.strategy = _strategy(s.device)
        policy = {"dtype": "mixed_bfloat16"} if s.bf16 else {}
        scope = self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()
        with scope:
            if self.resume_from:
                model = ConvBertForPreTraining.from_pretrained(resume_dir, pretraining_config=s.knobs, seed=s.seed,
                                                               **policy)
            elif s.init_from and ptc.is_pretraining_dir(s.init_from):
                model = ConvBertForPreTraining.from_pretrained(s.init_from, pretraining_config=s.knobs, seed=s.seed,
                                                               **policy)
            elif s.init_from:
                model = ConvBertForPreTraining.from_pretrained(s.init_from, generator_config=gen_config,
                                                               pretraining_config=s.knobs, seed=s.seed, **policy)
            else:
                model = ConvBertForPreTraining(config, gen_config, s.knobs, seed=s.seed, **policy)
        self.model = model
        self.config, self.gen_config = model.config, model.generator_config
        self.knobs = ptc.recorded_knobs(s, self.config, self.gen_config)
        model.pretraining_config = self.knobs
        self.config_from_flags, self.gen_from_flags = flags_config, flags_gen or self.gen_config

        self.per_epoch = self.dataset.steps_per_epoch(s.batch_size)  # micro-batches, as the PyTorch loop counts
        if self.per_epoch == 0:
            raise ValueError(f"{self.dataset.data_dir} has {len(self.dataset)} examples, fewer than one batch of "
                             f"--batch-size {s.batch_size}")
        self.total = ptc.total_steps(s, self.per_epoch, len(self.dataset))
        self.warmup = ptc.warmup_steps(s, self.total, resume_dir)
        # One process here (a MirroredStrategy splits each batch): the global batch is --grad-accum micro-batches.
        self.run_record = ptc.run_record(
            s, model_config=self.config_from_flags, generator_config=self.gen_from_flags, knobs=self.knobs,
            manifest=self.dataset.manifest, max_seq_length=self.dataset.max_seq_length, examples=len(self.dataset),
            total_steps=self.total, warmup_steps=self.warmup, global_batch=s.batch_size * s.grad_accum,
            world_size=1)
        self.schedule = WarmupLinearDecay(s.learning_rate, self.warmup, self.total)
        with scope:
            optimizer = adamw(model, learning_rate=self.schedule, weight_decay=s.weight_decay, clip=s.clip,
                              beta_1=s.adam_beta1, beta_2=s.adam_beta2, epsilon=s.adam_epsilon)
            model.compile(optimizer=optimizer, jit_compile=bool(s.compile), micro_batches=s.grad_accum)

    def _restore(self) -> int:
        if not self.resume_from:
            return 0
        from safetensors.numpy import load_file

        step, folder = self.resume_from
        ptc.resume_state(folder, step, self.run_record, self.total)
        path = os.path.join(folder, ptc.OPTIMIZER_NAME)
        load_optimizer_state(self.model, self.model.optimizer, load_file(path), path)
        rng = os.path.join(folder, RNG_NAME)
        if os.path.exists(rng):
            with np.load(rng) as saved:
                for name, var in _seed_states(self.model).items():
                    if name in saved.files:
                        var.assign(saved[name])
        else:
            logger.warning("--resume: %s has no Keras random state (written by the PyTorch loop?): dropout masks "
                           "and Gumbel samples will differ from an uninterrupted run's", folder)
        return step

    def save(self, step: int) -> str:
        from safetensors.numpy import save_file

        from convbert_tf.pretraining import save_pretraining_dir

        target = os.path.join(self.output, ptc.checkpoint_name(step))
        previous = ptc.latest_checkpoint(self.output)
        try:
            state = self.model.canonical_state()
            moments = optimizer_state(self.model, self.model.optimizer)
            seeds = {name: np.asarray(keras.ops.convert_to_numpy(v.value)) for name, v in
                     _seed_states(self.model).items()}
            with atomic_directory(target, overwrite=True) as tmp:
                save_pretraining_dir(tmp, state, self.config, self.gen_config, self.knobs,
                                     tokenizer=self.tokenizer_dir)
                save_file(moments, os.path.join(tmp, ptc.OPTIMIZER_NAME), metadata={"format": "pt"})
                np.savez(os.path.join(tmp, RNG_NAME), **seeds)
                epoch, micro = ptc.data_position(step, self.s.grad_accum, self.per_epoch)
                ptc.write_trainer_state(tmp, {
                    "step": step, "epoch": epoch, "micro_batch_in_epoch": micro, "world_size": 1,
                    "framework": "keras", "keras_version": keras.__version__, "keras_backend": keras.backend.backend(),
                    "run": self.run_record, "log_window": {}, "time": time.time(),
                })
            ptc.prune_checkpoints(self.output, self.s.keep_checkpoints)
        except Exception as exc:
            raise TrainingError(ptc.write_failure(step, target, previous, exc)) from exc
        return target

    def run(self) -> TrainResult:
        from convbert_tf.pretraining import save_pretraining_dir

        self._build()
        s = self.s
        start = self._restore()
        self.done = start
        writer = ptc.LogWriter(self.output, resume_step=start if self.resume_from else None)
        batches = PretrainingBatches(self.dataset, self.knobs, batch_size=s.batch_size, grad_accum=s.grad_accum,
                                     seed=s.seed, steps=self.total - start, start_step=start)
        log = PretrainingLog(self.knobs, log_every=s.log_every, total_steps=self.total, start_step=start,
                             positions_per_step=s.batch_size * s.grad_accum * self.dataset.max_seq_length,
                             steps_per_epoch=self.per_epoch, grad_accum=s.grad_accum, writer=writer,
                             schedule=self.schedule)
        callbacks = [log, PretrainingCheckpoint(self), *self.callbacks]
        if s.max_minutes is not None:
            callbacks.append(_StopAfter(self, s.max_minutes))
        logger.info("pretraining %s steps of %d examples (%d micro-batches of %d) of %d tokens (Keras, %s backend%s)",
                    self.total, s.batch_size * s.grad_accum, s.grad_accum, s.batch_size,
                    self.dataset.max_seq_length, keras.backend.backend(),
                    f", {self.strategy.num_replicas_in_sync} replicas" if self.strategy is not None else "")
        try:
            self.model.fit(batches, epochs=1, verbose=1 if s.progress else 0, callbacks=callbacks, shuffle=False)
        except checks.NonFiniteStepError as exc:
            raise self._diverged(str(exc)) from None
        finally:
            writer.close()
        if log.diverged is not None:
            raise self._diverged(f"loss {log.diverged['loss']}, generator {log.diverged['generator_loss']}, "
                                 f"discriminator {log.diverged['discriminator_loss']}, gradient norm "
                                 f"{log.diverged['grad_norm']}")
        if self.done % s.save_every and self.done != self.total:
            self.save(self.done)  # stopped early (--max-minutes): the state to resume from
        save_pretraining_dir(self.output, self.model.canonical_state(), self.config, self.gen_config, self.knobs,
                             tokenizer=self.tokenizer_dir)
        return TrainResult(self.done, self.output, log.history[-1] if log.history else {}, log.history)

    def _diverged(self, what: str) -> TrainingError:
        previous = ptc.latest_checkpoint(self.output)
        kept = (f"the last good checkpoint is {previous[1]} (continue with --resume, perhaps with a lower "
                "--learning-rate)" if previous else "no checkpoint was written yet")
        return TrainingError(f"step {self.done}: the loss is not finite ({what}); {kept}")


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, run: Trainer, minutes: float):
        super().__init__()
        self.run, self.minutes, self.started = run, minutes, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.started > 60.0 * self.minutes:
            logger.warning("--max-minutes %s reached at step %d of %d: saved; continue with --resume", self.minutes,
                           self.run.done, self.run.total)
            self.model.stop_training = True


def train(settings: ptc.TrainingSettings, *, callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Pretrain (or continue pretraining) in Keras as ``settings`` say; see the module docstring."""
    return Trainer(settings, callbacks).run()
