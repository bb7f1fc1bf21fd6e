"""The pretraining loop of ``convbert pretrain`` in PyTorch: replaced-token detection from text to checkpoints.

One process, or one per device under ``torchrun`` (DDP by default, FSDP2 ``fully_shard`` with
``fsdp=True``); every rank reads its own slice of each global batch, rank 0 logs and saves.

A step: ``grad_accum`` micro-batches of ``batch_size`` rows per rank, masked by the framework-free
masker and sampled with per-row Gumbel noise (``convbert_common.pretraining``), so the examples,
masks and samples of a step are the same for any split of its global batch over ranks and
micro-batches. The losses are normalised by the step's global counts (masked positions for the
generator, real tokens for the discriminator), so the gradient is the one of the whole global
batch however it is split. Then clipping, AdamW (fused where torch has it; no weight decay on
biases and LayerNorm), and the learning rate of ``learning_rate_factor``.

A step whose loss or gradient norm is not finite stops the run before the weights change, naming
the step and the last good checkpoint. ``checkpoint-STEP/`` is written into a temporary folder and
renamed into place, so a failing write leaves the previous checkpoint as it was; ``resume``
continues from the last one exactly: the weights, the AdamW moments, the step (and so the
learning rate, the data position, the masks and the samples) and every rank's random state (the
dropout masks).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from convbert_common import heads
from convbert_common import pretraining as ptc
from convbert_common.config import ConvBertConfig
from convbert_common.fileio import atomic_directory
from convbert_common.pretraining_data import PretrainingDataset, build_dataset
from convbert_pt import pretraining as ptm

logger = logging.getLogger(__name__)

DEFAULT_MAX_SEQ_LENGTH = 128


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss, a failed checkpoint write); the message names the step."""


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    output: str  # the final pretraining directory
    last_log: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # every logged record of this process' run


# --------------------------------------------------------------------------------------- processes
class _Processes:
    """The process group (if any), this rank's device, and the helpers that keep ranks in step."""

    def __init__(self, device_flag: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() if device_flag == "auto" else device_flag == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device")
        self.device = torch.device(f"cuda:{self.local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
            self.owns_group = True

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            values = values.to(self.device)
            dist.all_reduce(values)
        return values

    def on_main(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on rank 0; every rank raises if it failed there (none waits forever)."""
        error, result = None, None
        if self.main:
            try:
                result = fn()
            except Exception as exc:  # re-raised below, on every rank
                error = exc
        if self.distributed:
            box = [None if error is None else f"{type(error).__name__}: {error}"]
            dist.broadcast_object_list(box, src=0)
            if box[0] is not None and error is None:
                raise TrainingError(f"rank 0 failed {what}: {box[0]}")
        if error is not None:
            raise error
        return result

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self, finished: bool) -> None:
        if self.owns_group and dist.is_initialized():
            # Gloo can abort a process ("terminate called without an active exception") that tears its
            # group down while another rank is still inside a collective: ranks that finished leave
            # together (after a failure a rank may be alone, and a barrier would wait for ever).
            if finished:
                dist.barrier()
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------- set-up pieces
def _open_data(settings: ptc.TrainingSettings, tokenizer_dir: str, max_seq_length: int | None,
               config: ConvBertConfig, procs: _Processes) -> PretrainingDataset:
    if settings.data:
        dataset = PretrainingDataset(settings.data, tokenizer=tokenizer_dir,
                                     max_position_embeddings=config.max_position_embeddings)
        if max_seq_length is not None and dataset.max_seq_length != max_seq_length:
            raise ValueError(f"--data {settings.data} holds examples of {dataset.max_seq_length} tokens, not "
                             f"--max-seq-length {max_seq_length}")
        return dataset
    length = max_seq_length or min(DEFAULT_MAX_SEQ_LENGTH, config.max_position_embeddings)
    folder = os.path.join(settings.output, ptc.DATA_DIR)
    procs.on_main(lambda: build_dataset(
        settings.corpus, tokenizer_dir, folder, max_seq_length=length, seed=settings.seed,
        one_doc_per_line=settings.one_doc_per_line, text_field=settings.text_field,
        skip_bad_lines=settings.skip_bad_lines, max_position_embeddings=config.max_position_embeddings,
        progress=settings.progress, overwrite=True,
    ), "building the data")
    return PretrainingDataset(folder, tokenizer=tokenizer_dir, max_position_embeddings=config.max_position_embeddings)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        # ELECTRA's exclusions: biases and LayerNorm scales keep their size.
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(model: torch.nn.Module, settings: ptc.TrainingSettings) -> torch.optim.AdamW:
    groups = _param_groups(model, settings.weight_decay)
    kwargs = dict(lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2),
                  eps=settings.adam_epsilon)
    try:
        optimizer = torch.optim.AdamW(groups, fused=True, **kwargs)
        logger.info("AdamW: fused")
        return optimizer
    except (RuntimeError, ValueError, TypeError) as exc:
        # No fused kernel for this device or parameter type (e.g. FSDP's DTensors on some versions).
        logger.info("AdamW: fused not available (%s); using the default implementation", exc)
        return torch.optim.AdamW(groups, **kwargs)


def _state_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def _full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, whole and on the CPU, on rank 0 (a collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_state_options(cpu_offload=True))


def _full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW's moments and step counts by parameter name (``slot/name``), whole and on the CPU."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_state_options(cpu_offload=True))
    out = {}
    # With cpu_offload only rank 0 receives the state; the other ranks get an empty dict.
    for name, slots in state.get("state", {}).items():
        for slot, value in slots.items():
            out[f"{slot}/{name}"] = torch.as_tensor(value, dtype=torch.float32).detach().cpu().contiguous()
    return out


def _load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    flat = load_file(path)
    current = get_optimizer_state_dict(model, optimizer, options=_state_options())
    names = [n for group in current["param_groups"] for n in group["params"]]
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        slot, name = key.split("/", 1)
        state.setdefault(name, {})[slot] = value
    missing, extra = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    if missing or extra:
        raise ValueError(f"{path}: the AdamW state does not fit the model (missing {missing[:4]}, unexpected "
                         f"{extra[:4]})")
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": current["param_groups"]},
                             options=_state_options())


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def _shard(model: ptm.ConvBertForPreTraining, procs: _Processes) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(procs.device.type, (procs.world,))
    for encoder in (model.convbert.encoder, model.generator.convbert.encoder):
        for layer in encoder.layer:
            fully_shard(layer, mesh=mesh)
    # The root unit holds the shared embeddings and the heads: one all-gather serves both models.
    fully_shard(model, mesh=mesh)
    return model


def _grad_norm(parameters: Sequence[torch.nn.Parameter], clip: float) -> torch.Tensor:
    norm = torch.nn.utils.clip_grad_norm_(parameters, clip if clip > 0 else math.inf)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# --------------------------------------------------------------------------------------- the run
class Trainer:
    """One pretraining run; ``train(settings)`` is the entry point."""

    def __init__(self, settings: ptc.TrainingSettings, procs: _Processes,
                 callbacks: Sequence[Callable[..., None]] = ()) -> None:
        settings.validate()
        self.s = settings
        self.procs = procs
        self.callbacks = list(callbacks)
        self.output = os.path.abspath(settings.output)

    # -------------------------------------------------------------- preparation
    def _prepare_output(self) -> tuple[int, str] | None:
        """The checkpoint to resume from (None for a fresh run); refuses to mix runs in one OUTPUT."""
        latest, clear = ptc.resume_point(self.output, self.s.resume, self.s.overwrite)
        if clear:
            self.procs.on_main(lambda: ptc.clear_run(self.output), "clearing the earlier run")
        return latest

    def _build(self) -> None:
        s, procs = self.s, self.procs
        if procs.main:
            os.makedirs(self.output, exist_ok=True)
        procs.barrier()
        self.resume_from = self._prepare_output()
        resume_dir = self.resume_from[1] if self.resume_from else None
        run = ptc.run_models(s, resume_dir)
        self.tokenizer_dir, config, gen_config = run.tokenizer_dir, run.config, run.gen_config
        flags_config, flags_gen = run.flags_config, run.flags_gen
        self.dataset = _open_data(s, self.tokenizer_dir, s.max_seq_length, config, procs)

        # The model: from the checkpoint, from --init-from, or fresh (the same seed on every rank).
        torch.manual_seed(s.seed)
        if self.resume_from:
            model = ptm.ConvBertForPreTraining.from_pretrained(resume_dir, pretraining_config=s.knobs)
        elif s.init_from and ptc.is_pretraining_dir(s.init_from):
            model = ptm.ConvBertForPreTraining.from_pretrained(s.init_from, pretraining_config=s.knobs)
        elif s.init_from:
            model = ptm.ConvBertForPreTraining.from_pretrained(s.init_from, generator_config=gen_config,
                                                               pretraining_config=s.knobs)
        else:
            model = ptm.ConvBertForPreTraining(config, gen_config, s.knobs)
        self.model = model
        self.config, self.gen_config = model.config, model.generator_config
        self.knobs = ptc.recorded_knobs(s, self.config, self.gen_config)
        model.pretraining_config = self.knobs
        self.config_from_flags, self.gen_from_flags = flags_config, flags_gen or self.gen_config

        world, batch = procs.world, s.batch_size
        per_epoch = self.dataset.steps_per_epoch(batch, world)
        if per_epoch == 0:
            raise ValueError(f"{self.dataset.data_dir} has {len(self.dataset)} examples, fewer than one global "
                             f"batch of --batch-size {batch} x {world} processes")
        self.steps_per_epoch_micro = per_epoch
        self.total = ptc.total_steps(s, per_epoch, len(self.dataset))
        self.warmup = ptc.warmup_steps(s, self.total, resume_dir)
        self.run_record = ptc.run_record(
            s, model_config=self.config_from_flags, generator_config=self.gen_from_flags, knobs=self.knobs,
            manifest=self.dataset.manifest, max_seq_length=self.dataset.max_seq_length, examples=len(self.dataset),
            total_steps=self.total, warmup_steps=self.warmup, global_batch=s.batch_size * s.grad_accum * procs.world,
            world_size=procs.world)

        model.to(procs.device)
        model.train()
        self.net: torch.nn.Module = model
        if s.fsdp:
            if not procs.distributed:
                logger.warning("--fsdp with one process shards nothing; it runs, as FSDP over one rank")
            self.net = _shard(model, procs)
        elif procs.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=[procs.device.index] if procs.device.type == "cuda"
                                               else None)
        if s.compile:
            for module in (model.convbert, model.generator.convbert):
                module.compile()
        self.optimizer = _adamw(model, s)
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]

    def _restore(self) -> tuple[int, dict[str, float]]:
        if not self.resume_from:
            return 0, dict.fromkeys(ptc.SUM_KEYS, 0.0)
        step, folder = self.resume_from
        state = ptc.resume_state(folder, step, self.run_record, self.total)
        _load_optimizer_state(self.net, self.optimizer, os.path.join(folder, ptc.OPTIMIZER_NAME))
        rng = os.path.join(folder, _rng_file(self.procs.rank))
        if state.get("world_size") == self.procs.world and os.path.exists(rng):
            _set_rng_state(torch.load(rng, weights_only=True), self.procs.device)
        else:
            logger.warning("--resume: %s has no random state for rank %d of %d: dropout masks will differ from "
                           "the interrupted run's", folder, self.procs.rank, self.procs.world)
        window = {k: float(v) for k, v in state.get("log_window", {}).items()} if self.procs.main else {}
        return step, {k: window.get(k, 0.0) for k in ptc.SUM_KEYS}

    # -------------------------------------------------------------- checkpoints
    def _save(self, step: int, window: dict[str, float]) -> str:
        target = os.path.join(self.output, ptc.checkpoint_name(step))
        model_state = _full_model_state(self.net)
        optim_state = _full_optimizer_state(self.net, self.optimizer)
        rngs = self.procs.gather_objects(_rng_state(self.procs.device))

        def write() -> None:
            from safetensors.torch import save_file

            with atomic_directory(target, overwrite=True) as tmp:
                ptm.save_pretraining_dir(tmp, model_state, self.config, self.gen_config, self.knobs,
                                         tokenizer=self.tokenizer_dir)
                save_file(optim_state, os.path.join(tmp, ptc.OPTIMIZER_NAME), metadata={"format": "pt"})
                for rank, rng in enumerate(rngs):
                    torch.save(rng, os.path.join(tmp, _rng_file(rank)))
                epoch, micro = ptc.data_position(step, self.s.grad_accum, self.steps_per_epoch_micro)
                ptc.write_trainer_state(tmp, {
                    "step": step, "epoch": epoch, "micro_batch_in_epoch": micro, "world_size": self.procs.world,
                    "framework": "pytorch", "torch_version": torch.__version__, "run": self.run_record,
                    "log_window": window, "time": time.time(),
                })
            ptc.prune_checkpoints(self.output, self.s.keep_checkpoints)

        previous = ptc.latest_checkpoint(self.output)
        try:
            self.procs.on_main(write, f"writing {target}")
        except Exception as exc:
            raise TrainingError(ptc.write_failure(step, target, previous, exc)) from exc
        return target

    def _save_final(self) -> None:
        state = _full_model_state(self.net)
        self.procs.on_main(lambda: ptm.save_pretraining_dir(self.output, state, self.config, self.gen_config,
                                                            self.knobs, tokenizer=self.tokenizer_dir),
                           f"writing the final models into {self.output}")

    # -------------------------------------------------------------- the loop
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.procs.device.type == "cuda":
            return tensor.pin_memory().to(self.procs.device, non_blocking=True)
        return tensor

    def _diverged(self, step: int, metrics: dict[str, float], grad_norm: float) -> TrainingError:
        previous = ptc.latest_checkpoint(self.output)
        kept = (f"the last good checkpoint is {previous[1]} (continue with --resume, perhaps with a lower "
                "--learning-rate)" if previous else "no checkpoint was written yet")
        return TrainingError(
            f"step {step}: the loss is not finite (loss {metrics['loss']}, generator {metrics['generator_loss']}, "
            f"discriminator {metrics['discriminator_loss']}, gradient norm {grad_norm}); stopped before updating "
            f"the weights; {kept}"
        )

    def run(self) -> TrainResult:
        self._build()
        s, procs, model = self.s, self.procs, self.model
        start, window = self._restore()
        vocab = self.config.vocab_size
        log = ptc.LogWriter(self.output, resume_step=start if self.resume_from else None) if procs.main else None
        history: list[dict[str, Any]] = []
        batches = ptc.masked_batches(self.dataset, self.knobs, batch_size=s.batch_size, grad_accum=s.grad_accum,
                                     world_size=procs.world, rank=procs.rank, seed=s.seed, start_step=start)
        if procs.main:
            logger.info("pretraining %s steps of %d examples (%d x %d processes x %d micro-batches) of %d tokens",
                        self.total, self.run_record["global_batch"], s.batch_size, procs.world, s.grad_accum,
                        self.dataset.max_seq_length)
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total, initial=start, desc="pretrain", disable=not (procs.main and s.progress),
                   dynamic_ncols=True)
        autocast = (torch.autocast(procs.device.type, dtype=torch.bfloat16) if s.bf16
                    else contextlib.nullcontext())
        tick, window_positions = time.perf_counter(), 0.0
        started = tick
        done = start
        try:
            for step in range(start, self.total):
                micro = [next(batches) for _ in range(s.grad_accum)]
                counts = torch.tensor([sum(int((m.labels != heads.IGNORE_INDEX).sum()) for m in micro),
                                       sum(int(m.attention_mask.sum()) for m in micro)], dtype=torch.float64)
                masked_total, real_total = (max(float(v), 1.0) for v in procs.all_sum(counts).tolist())
                sums = torch.zeros(len(ptc.SUM_KEYS), dtype=torch.float64, device=procs.device)
                for index, mb in enumerate(micro):
                    last = index == len(micro) - 1
                    ids, mask = self._to_device(mb.input_ids), self._to_device(mb.attention_mask)
                    types, labels = self._to_device(mb.token_type_ids), self._to_device(mb.labels)
                    noise = ptm.gumbel_noise_for_rows((mb.labels != heads.IGNORE_INDEX).sum(axis=1).tolist(), vocab,
                                                      seed=s.seed, step=step, row_offset=mb.row_offset,
                                                      device=procs.device)
                    with self._sync(last):
                        with autocast:
                            out = self.net(ids, mask, types, labels=labels, gumbel_noise=noise)
                        # Sums over this micro-batch divided by the step's global counts; DDP / FSDP
                        # average over the ranks, hence the world factor.
                        masked_here = float((mb.labels != heads.IGNORE_INDEX).sum())
                        real_here = float(mb.attention_mask.sum())
                        scaled = (self.knobs.generator_weight * out.generator_loss * (masked_here / masked_total)
                                  + self.knobs.disc_weight * out.discriminator_loss * (real_here / real_total))
                        (scaled * procs.world).backward()
                    sums += model.metric_sums(out, labels, mask).to(sums.device)
                for callback in self.callbacks:
                    callback("after_backward", step, self)
                grad_norm = _grad_norm(self.parameters, s.clip)
                sums = procs.all_sum(torch.cat([sums, grad_norm.detach().reshape(1).to(sums)]))
                values = sums.tolist()
                step_sums, norm = dict(zip(ptc.SUM_KEYS, values[:-1], strict=True)), values[-1]
                metrics = ptc.metrics_from_sums(step_sums, self.knobs)
                if not (math.isfinite(metrics["loss"]) and math.isfinite(norm)):
                    raise self._diverged(step + 1, metrics, norm)
                lr = s.learning_rate * ptc.learning_rate_factor(step, self.warmup, self.total)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                done = step + 1
                for key in ptc.SUM_KEYS:
                    window[key] += step_sums[key]
                window_positions += step_sums["positions"]
                if done % s.log_every == 0 or done == self.total:
                    elapsed = time.perf_counter() - tick
                    record = {"step": done, "epoch": done * s.grad_accum / self.steps_per_epoch_micro,
                              **ptc.metrics_from_sums(window, self.knobs), "learning_rate": lr, "grad_norm": norm,
                              "tokens_per_second": window_positions / max(elapsed, 1e-9)}
                    if log is not None:
                        log.write(record)
                    history.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}")
                    window = dict.fromkeys(ptc.SUM_KEYS, 0.0)
                    tick, window_positions = time.perf_counter(), 0.0
                bar.update(1)
                out_of_time = self._out_of_time(started)
                if done % s.save_every == 0 or done == self.total or out_of_time:
                    # The sums of a half-full log window travel with the checkpoint (rank 0 holds them).
                    self._save(done, window if procs.main else {})
                for callback in self.callbacks:
                    callback("step_end", done, self)
                if out_of_time:
                    logger.warning("--max-minutes %s reached at step %d of %d: saved; continue with --resume",
                                   s.max_minutes, done, self.total)
                    break
            self._save_final()
        finally:
            bar.close()
            if log is not None:
                log.close()
        return TrainResult(done, self.output, history[-1] if history else {}, history)

    def _out_of_time(self, started: float) -> bool:
        """Whether --max-minutes has passed (rank 0's clock decides, so every rank stops together)."""
        if self.s.max_minutes is None:
            return False
        late = torch.tensor([float(time.perf_counter() - started > 60.0 * self.s.max_minutes)], dtype=torch.float64)
        if self.procs.distributed:
            late = late.to(self.procs.device)
            dist.broadcast(late, src=0)
        return bool(late.item())

    def _sync(self, last: bool):
        """Gradient synchronisation only on the last micro-batch of a step."""
        if last or not self.procs.distributed:
            return contextlib.nullcontext()
        if hasattr(self.net, "no_sync"):
            return self.net.no_sync()
        if hasattr(self.net, "set_requires_gradient_sync"):
            return _fsdp_no_sync(self.net)
        return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def train(settings: ptc.TrainingSettings, *, callbacks: Sequence[Callable[..., None]] = ()) -> TrainResult:
    """Pretrain (or continue pretraining) as ``settings`` say; see the module docstring.

    ``callbacks`` are called as ``callback(event, step, trainer)`` with ``event`` "after_backward"
    (gradients summed, before clipping) and "step_end" (after the update, the log and the checkpoint).
    """
    procs = _Processes(settings.device)
    finished = False
    try:
        result = Trainer(settings, procs, callbacks).run()
        finished = True
        return result
    finally:
        procs.close(finished)
