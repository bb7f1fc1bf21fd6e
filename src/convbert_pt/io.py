"""Loading and saving PyTorch models in the canonical (Hugging Face) checkpoint layout.

Everything about names, layouts and file formats is in ``convbert_common``: ``checkpoint.load_for_model``
reads ``model.safetensors``, ``pytorch_model.bin`` (``weights_only``) or HF's ``tf_model.h5``,
translates them through the weight table and checks every name and shape. Only then are tensors
copied into the model, so a checkpoint that does not fit leaves the model as it was.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from convbert_common import checkpoint
from convbert_common import weight_map as wm
from convbert_common.config import ConvBertConfig
from convbert_common.fileio import atomic_path

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def _resolve_dtype(torch_dtype: Any, config: ConvBertConfig) -> torch.dtype | None:
    if torch_dtype is None:
        return None
    if torch_dtype == "auto":
        torch_dtype = config.dtype or "float32"
    if isinstance(torch_dtype, str):
        name = torch_dtype.removeprefix("torch.")
        if name not in _DTYPES:
            raise ValueError(f"torch_dtype {torch_dtype!r} is not one of {', '.join(_DTYPES)} or 'auto'")
        return _DTYPES[name]
    if isinstance(torch_dtype, torch.dtype) and torch_dtype.is_floating_point:
        return torch_dtype
    raise ValueError(f"torch_dtype must be a floating torch.dtype, a dtype name or 'auto', got {torch_dtype!r}")


def _weights_file(weights_file: str | None, from_tf: bool) -> str | None:
    if from_tf:
        if weights_file not in (None, checkpoint.TF_H5_NAME):
            raise ValueError("from_tf=True reads tf_model.h5; do not also pass another weights_file")
        return checkpoint.TF_H5_NAME
    return weights_file


def _assign(model: torch.nn.Module, result: checkpoint.LoadResult) -> None:
    """Copy checked tensors into the parameters; verify the whole plan before the first copy."""
    params = dict(model.named_parameters())
    plan = []
    for name, array in result.tensors.items():
        if name not in params:
            raise checkpoint.CheckpointError(f"{result.source}: {name} has no parameter in {type(model).__name__}")
        if tuple(params[name].shape) != tuple(array.shape):
            raise checkpoint.CheckpointError(
                f"{result.source}: {name}: checkpoint shape {tuple(array.shape)}, "
                f"model parameter {tuple(params[name].shape)} (nothing was loaded)"
            )
        plan.append((params[name], array))
    with torch.no_grad():
        for param, array in plan:
            param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _loading_info(result: checkpoint.LoadResult) -> dict[str, list[str]]:
    return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}


def from_pretrained(
    cls,
    pretrained_model_path: str | os.PathLike,
    *,
    torch_dtype: Any = None,
    device: str | torch.device | None = None,
    output_loading_info: bool = False,
    weights_file: str | None = None,
    from_tf: bool = False,
    **config_overrides: Any,
):
    """Build ``cls`` from ``config.json`` (fields overridden by ``config_overrides``) and the weights.

    ``weights_file`` picks one file of the directory (default: the first of model.safetensors,
    its index, pytorch_model.bin, tf_model.h5); ``from_tf=True`` is ``weights_file="tf_model.h5"``.
    Head weights absent from the checkpoint keep their fresh initialisation and are listed in
    ``missing_keys``; weights the class does not use are listed in ``unexpected_keys``. The model
    is returned in ``eval()`` mode, as HF does.
    """
    path = os.fspath(pretrained_model_path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a checkpoint directory (expected config.json and a weights file)")
    ConvBertConfig.check_overrides(config_overrides, f"{cls.__name__}.from_pretrained")
    config = ConvBertConfig.from_pretrained(path, **config_overrides)
    dtype = _resolve_dtype(torch_dtype, config)
    result = checkpoint.load_for_model(config, cls.task, path, weights_file=_weights_file(weights_file, from_tf))
    model = cls(config)
    _assign(model, result)
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    model.eval()
    return (model, _loading_info(result)) if output_loading_info else model


def load_weights(
    model: torch.nn.Module, path: str | os.PathLike, *, weights_file: str | None = None, from_tf: bool = False
) -> dict[str, list[str]]:
    """Load a checkpoint directory or weight file into ``model`` in place (config from the model)."""
    weights_file = _weights_file(weights_file, from_tf)
    result = checkpoint.load_for_model(model.config, model.task, path, weights_file=weights_file)
    _assign(model, result)
    return _loading_info(result)


def state_arrays(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under their canonical names, checked against the weight table."""
    return checked_arrays(model.state_dict(), model.config, model.task)


def checked_arrays(state: dict[str, torch.Tensor], config: ConvBertConfig, task) -> dict[str, torch.Tensor]:
    """``state`` (a state dict of ``task``'s model) in the weight table's order, on the CPU."""
    expected = [s.name for s in wm.model_specs(config, task)]
    if sorted(state) != sorted(expected):
        extra, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
        raise RuntimeError(f"state_dict disagrees with the weight table: extra {extra}, missing {missing}")
    return {name: state[name].detach().to("cpu").contiguous() for name in expected}


def _numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a NumPy array, no copy; bfloat16 (which NumPy lacks) as ml_dtypes' bfloat16."""
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def save_pretrained(
    model: torch.nn.Module, save_directory: str | os.PathLike, *, safe_serialization: bool = True
) -> str:
    """Write ``config.json`` (``architectures`` set) and ``model.safetensors`` (or ``pytorch_model.bin``).

    Names are canonical, the tied LM matrix is stored once (as the word embeddings), every file is
    written atomically. Returns the directory.
    """
    return write_checkpoint_dir(save_directory, state_arrays(model), model.config, model.task,
                                safe_serialization=safe_serialization)


def write_checkpoint_dir(save_directory: str | os.PathLike, tensors: dict[str, torch.Tensor], config: ConvBertConfig,
                         task, *, safe_serialization: bool = True) -> str:
    """``save_pretrained`` from canonical tensors (``checked_arrays``) and the config of ``task``'s model."""
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise FileExistsError(f"{directory} is a file; save_pretrained needs a directory")
    os.makedirs(directory, exist_ok=True)
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    if safe_serialization:
        target = os.path.join(directory, checkpoint.SAFETENSORS_NAME)
        checkpoint.write_safetensors(target, {k: _numpy_view(v) for k, v in tensors.items()})
    else:
        target = os.path.join(directory, checkpoint.PYTORCH_BIN_NAME)
        with atomic_path(target) as tmp:
            torch.save(tensors, tmp)
    config = config.replace(architectures=[task.class_name], dtype=dtype)
    config.save_pretrained(directory)
    return directory
