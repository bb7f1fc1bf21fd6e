"""PyTorch test set-up: thread limits, random inputs, fixture loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convbert_common.config import ConvBertConfig
from tests.conftest import TINY, fixture_file, head_dir  # noqa: F401 (head_dir: imported from here too)

# Tiny tensors: one intra-op thread avoids OpenMP hand-off costs that dominate on a shared 2-core box.
torch.set_num_threads(1)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5")
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def random_inputs(config: ConvBertConfig, batch: int = 3, length: int = 11, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1:, length - 3:] = 0  # some padding
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def expected_outputs(head: str, which: str = "expected_pt.npz") -> dict[str, np.ndarray]:
    with np.load(fixture_file(f"{TINY}/{head}/{which}")) as data:
        return {k: data[k] for k in data.files}


def torch_inputs(expected: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(expected[k]) for k in INPUT_KEYS}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
