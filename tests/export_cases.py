"""What both frameworks' export tests feed the exported graphs (ONNX in PyTorch; SavedModel and LiteRT in Keras)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convbert_common import heads
from tests.conftest import HEADS

# (batch, length): batch 1 with L = 1, batch 1 with L < K (= 5), and a padded batch; none is traced
# at export (PyTorch traces (2, 7); Keras' signature is (None, None)). Multiple choice adds 2 choices.
SHAPES = ((1, 1), (1, 3), (4, 13))


def export_batch(config, head: str, b: int, length: int, dtype: str) -> dict[str, np.ndarray]:
    """A seeded batch of ``b`` x ``length`` in ``dtype``: the first row (of each example) padded, two segments."""
    rng = np.random.default_rng(97 * length + b)
    shape = (b, 2, length) if heads.get(head).input_rank == 3 else (b, length)
    ids = rng.integers(1, config.vocab_size, shape).astype(dtype)
    mask = np.ones(shape, dtype)
    types = np.zeros(shape, dtype)
    if length > 2:
        mask[..., :1, -2:] = 0
        ids[mask == 0] = 0
        types[..., length // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def export_every_head(model_of: Callable[[str], object], export: Callable[[object, str], tuple]) -> dict[str, tuple]:
    """{head: (model, *export(model, head))}: every head's model, from ``model_of(head)``, exported once."""
    out = {}
    for head in HEADS:
        model = model_of(head)
        out[head] = (model, *export(model, head))
    return out
