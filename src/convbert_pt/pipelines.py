"""``convbert_pt.pipeline(task, model)``: Hugging Face's pipelines on the PyTorch models.

The work (features, windows, batching, scores, spans, entities) is ``convbert_common.pipelines``,
shared with ``convbert_tf.pipeline``; this module loads the model and runs it, without gradients,
on the model's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convbert_common import pipelines as core


def _forward(model: torch.nn.Module) -> core.Forward:
    def forward(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        device = next(model.parameters()).device
        feed = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)).to(device) for k, v in batch.items()}
        with torch.no_grad():
            out = model(**feed, return_dict=True)
        # float32 on the CPU whatever the model's dtype (bfloat16 has no NumPy type).
        return {k: v.detach().to("cpu", torch.float32).numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}

    return forward


def pipeline(task: str, model: Any = None, tokenizer: Any = None, *, device: str | torch.device | None = None,
             batch_size: int = 1, **kwargs: Any) -> core.Pipeline:
    """A pipeline for ``task`` on ``model`` (a checkpoint directory, a Hub id, or a loaded model).

    ``tokenizer`` defaults to ``ConvBertTokenizerFast`` from the model's folder (pass one with a
    loaded model). ``device`` moves the model there (default: where it is). Keyword arguments that
    are options of the task (``top_k``, ``aggregation_strategy``, ``doc_stride``...) become its
    defaults; the others go to ``from_pretrained`` (``dtype``, ``revision``, ``local_files_only``...).
    The result is called as HF's: ``pipe("text")``, ``pipe(question=..., context=...)``.
    """
    import convbert_pt

    def load(class_name: str, source: str, options: dict[str, Any]):
        return getattr(convbert_pt, class_name).from_pretrained(source, **options)

    cls, model, tokenizer, defaults = core.resolve(task, model, tokenizer, kwargs, load)
    if device is not None:
        model.to(device)
    model.eval()
    return cls(_forward(model), tokenizer, model.config, batch_size=batch_size, framework="pt", model=model,
               **defaults)
