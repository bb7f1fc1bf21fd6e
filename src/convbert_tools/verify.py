"""``convbert verify``: load one checkpoint in PyTorch and in Keras, run both, compare every output.

The batch is fixed (seeded ids with a padded row and a sentence pair) and, with ``text``, also the
user's text through the checkpoint's tokenizer. Labels are included so the losses are compared too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from convbert_common import checkpoint as ck
from convbert_common import heads
from convbert_common.config import ConvBertConfig
from convbert_common.formats import head_from_config

DEFAULT_ATOL = 1e-5


@dataclass
class Row:
    head: str
    batch: str
    output: str
    max_abs_diff: float
    ok: bool


@dataclass
class Report:
    path: str
    atol: float
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)


def fixed_batch(config: ConvBertConfig, batch: int = 3, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded ids: row 0 full, row 1 a padded sentence pair, row 2 half padding."""
    rng = np.random.default_rng(seed)
    length = min(length, config.max_position_embeddings)
    low = min(5, config.vocab_size - 1)
    ids = rng.integers(low, config.vocab_size, size=(batch, length), dtype=np.int64)
    mask = np.ones_like(ids)
    types = np.zeros_like(ids)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    if batch > 1:
        mask[1, length - length // 4:] = 0
        types[1, length // 2: length - length // 4] = min(1, config.type_vocab_size - 1)
    if batch > 2:
        mask[2, length // 2:] = 0
    ids[mask == 0] = pad
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def labels_for(config: ConvBertConfig, head, inputs: dict[str, np.ndarray], seed: int = 1) -> dict:
    """Seeded labels of the task's kind for ``inputs`` (multiple choice: inputs (B, C, L))."""
    task = heads.get(head)
    rng = np.random.default_rng(seed)
    ids = inputs["input_ids"]
    b, length = ids.shape[0], ids.shape[-1]
    classes = getattr(config, task.label_classes) if task.label_classes else None
    if task.label_kind == "token":
        # Scored at ~half of the real tokens (the first always), ignored elsewhere.
        labels = rng.integers(0, classes, size=(b, length), dtype=np.int64)
        scored = (inputs["attention_mask"] == 1) & (rng.random((b, length)) < 0.5)
        scored[:, 0] = True
        return {"labels": np.where(scored, labels, heads.IGNORE_INDEX)}
    if task.label_kind == "sequence":
        return {"labels": rng.integers(0, classes, size=(b,), dtype=np.int64)}
    if task.label_kind == "choice":
        return {"labels": rng.integers(0, ids.shape[1], size=(b,), dtype=np.int64)}
    if task.label_kind == "span":
        return {name: rng.integers(0, length, size=(b,), dtype=np.int64) for name in task.label_names}
    return {}


def _flatten(outputs: dict) -> dict[str, np.ndarray]:
    flat = {}
    for key, value in outputs.items():
        if value is None:
            continue
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                flat[f"{key}[{i}]"] = np.asarray(v)
        else:
            flat[key] = np.asarray(value)
    return flat


def run_pytorch(path: str, head, inputs: dict, labels: dict) -> dict[str, np.ndarray]:
    import torch

    import convbert_pt

    model = getattr(convbert_pt, heads.get(head).class_name).from_pretrained(path)
    model.eval()
    feed = {k: torch.from_numpy(np.asarray(v)) for k, v in {**inputs, **labels}.items()}
    with torch.no_grad():
        out = model(**feed, output_hidden_states=True, output_attentions=True, return_dict=True)
    return _flatten({k: (tuple(t.numpy() for t in v) if isinstance(v, tuple) else v.numpy())
                     for k, v in out.items() if v is not None})


def run_keras(path: str, head, inputs: dict, labels: dict) -> dict[str, np.ndarray]:
    import keras

    import convbert_tf

    model = getattr(convbert_tf, heads.get(head).class_name).from_pretrained(path)
    out = model({**inputs, **labels}, output_hidden_states=True, output_attentions=True, training=False)
    # keras.ops.convert_to_numpy, not np.asarray: on the PyTorch backend the outputs require grad.
    numpy = keras.ops.convert_to_numpy
    return _flatten({k: (tuple(numpy(t) for t in v) if isinstance(v, (tuple, list)) else numpy(v))
                     for k, v in out.items() if v is not None})


def _batches(path: str, config: ConvBertConfig, text: str | None) -> dict[str, dict[str, np.ndarray]]:
    batches = {"fixed": fixed_batch(config)}
    if text is not None:
        from convbert_common.tokenizer import ConvBertTokenizerFast

        if not os.path.exists(os.path.join(path, "vocab.txt")):
            raise FileNotFoundError(f"{path}: --text needs the checkpoint's vocab.txt")
        tok = ConvBertTokenizerFast.from_pretrained(path)
        enc = tok([text], truncation=True, max_length=config.max_position_embeddings, return_tensors="np")
        batches["text"] = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask",
                                                                         "token_type_ids")}
    return batches


def check_finite(path: str, config: ConvBertConfig, task) -> None:
    """Refuse weights that hold NaN or inf, naming the tensors: both frameworks would compute NaN
    and the comparison would report a mismatch that is the checkpoint's, not theirs."""
    result = ck.load_for_model(config, task, path)
    bad = ck.non_finite(result.tensors)
    if bad:
        raise ck.CheckpointError(f"{result.source}: {len(bad)} weight tensor(s) hold values that are not finite: "
                                 f"{ck.describe_non_finite(bad)}; there is nothing to compare")


def verify(path: str, *, tasks: list[str] | None = None, text: str | None = None,
           atol: float = DEFAULT_ATOL, progress: bool | None = False) -> Report:
    """Compare PyTorch and Keras on ``path``; a progress bar with ``progress=True`` (None: on a TTY)."""
    from tqdm.auto import tqdm

    config = ConvBertConfig.from_pretrained(path)
    todo = [heads.get(t) for t in tasks] if tasks else [head_from_config(config, source=path)]
    check_finite(path, config, todo[0])
    report = Report(path=path, atol=atol)
    batches = _batches(path, config, text)
    bar = tqdm(total=2 * len(todo) * len(batches), desc="verifying", unit="run",
               disable=None if progress is None else not progress, leave=False)
    for task in todo:
        head = task.name
        for batch_name, inputs in batches.items():
            if task.input_rank == 3:
                # Choices along axis 1: the same batch seen as one example with B choices.
                inputs = {k: v[None] for k, v in inputs.items()}
            # A discriminator directory has no generator: without labels it scores the ids.
            labels = {} if task is heads.PRETRAINING else labels_for(config, task, inputs)
            bar.set_postfix_str(f"{task.class_name} {batch_name} PyTorch")
            pt = run_pytorch(path, head, inputs, labels)
            bar.update()
            bar.set_postfix_str(f"{task.class_name} {batch_name} Keras")
            tf = run_keras(path, head, inputs, labels)
            bar.update()
            for key in sorted(set(pt) | set(tf)):
                if key not in pt or key not in tf:
                    report.rows.append(Row(head, batch_name, key + (" (PyTorch only)" if key in pt else
                                                                    " (Keras only)"), float("inf"), False))
                    continue
                if pt[key].shape != tf[key].shape:
                    report.rows.append(Row(head, batch_name, f"{key} shape {pt[key].shape} vs {tf[key].shape}",
                                           float("inf"), False))
                    continue
                diff = float(np.max(np.abs(pt[key].astype(np.float64) - tf[key].astype(np.float64)))) \
                    if pt[key].size else 0.0
                report.rows.append(Row(head, batch_name, key, diff, diff <= atol))
    bar.close()
    return report


def report_dict(report: Report) -> dict:
    """The --json form of a report."""
    return {"path": report.path, "atol": report.atol, "ok": report.ok,
            "rows": [{"head": r.head, "batch": r.batch, "output": r.output, "max_abs_diff": r.max_abs_diff,
                      "ok": r.ok} for r in report.rows]}


def format_report(report: Report) -> str:
    width = max([len(r.output) for r in report.rows] + [6])
    lines = [f"{'head':24s} {'batch':6s} {'output':{width}s} {'max |PT - Keras|':>17s}"]
    for r in report.rows:
        lines.append(f"{r.head:24s} {r.batch:6s} {r.output:{width}s} {r.max_abs_diff:17.3e}{'' if r.ok else '  FAIL'}")
    verdict = "OK" if report.ok else "MISMATCH"
    lines.append(f"{verdict}: {sum(r.ok for r in report.rows)}/{len(report.rows)} outputs within {report.atol:.0e}")
    return "\n".join(lines)
