"""``convbert_tf.pipeline(task, model)``: Hugging Face's pipelines on the Keras models.

The work (features, windows, batching, scores, spans, entities) is ``convbert_common.pipelines``,
shared with ``convbert_pt.pipeline``; this module loads the model and runs it in inference mode
(``training=False``), on ``device`` when one is given.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np

from convbert_common import pipelines as core


def _forward(model, device: str | None) -> core.Forward:
    def forward(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v, dtype=np.int32) for k, v in batch.items()}
        with keras.device(device) if device else contextlib.nullcontext():
            out = model(feed, training=False)
        return {k: np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32) for k, v in out.items()
                if not isinstance(v, (tuple, list))}

    return forward


def pipeline(task: str, model: Any = None, tokenizer: Any = None, *, device: str | None = None, batch_size: int = 1,
             **kwargs: Any) -> core.Pipeline:
    """A pipeline for ``task`` on ``model`` (a checkpoint directory, a Hub id, or a loaded model).

    As ``convbert_pt.pipeline``: ``tokenizer`` defaults to the model folder's; task options become
    defaults, other keyword arguments go to ``from_pretrained``. ``device`` (``"cpu"``,
    ``"gpu:0"``...) places the computation through ``keras.device``.
    """
    import convbert_tf

    def load(class_name: str, source: str, options: dict[str, Any]):
        return getattr(convbert_tf, class_name).from_pretrained(source, **options)

    cls, model, tokenizer, defaults = core.resolve(task, model, tokenizer, kwargs, load)
    return cls(_forward(model, device), tokenizer, model.config, batch_size=batch_size, framework="tf", model=model,
               **defaults)
