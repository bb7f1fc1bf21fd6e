"""Loading and saving PyTorch models in the canonical (Hugging Face) checkpoint layout.

Everything about names, layouts and file formats is in ``convbert_common``: ``loading.prepare``
finds the files (a local folder or a Hub id) and the config, ``checkpoint.load_for_model`` reads
``model.safetensors`` (or its shards), ``pytorch_model.bin`` (``weights_only``) or HF's
``tf_model.h5``, translates them through the weight table and checks every name and shape. Only
then is the model built, on the meta device, and given the checked tensors as its parameters, so a
checkpoint that does not fit raises before a model exists and loading holds the weights once.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from convbert_common import checkpoint, hub, loading, shards
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


def _resolve_device(device: Any, device_map: Any) -> torch.device | None:
    if device is not None and device_map is not None:
        raise ValueError("pass device= or device_map=, not both")
    if device_map is None:
        return torch.device(device) if device is not None else None
    if isinstance(device_map, dict):
        raise ValueError("device_map as a dict (a model split over devices) is not supported; pass one device")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_map if not isinstance(device_map, int) else f"cuda:{device_map}")


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


def _as_tensor(array: np.ndarray, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    """The checkpoint array as a tensor: shared with NumPy (no copy) when dtype and device allow it."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device, dtype=dtype) if device is not None else tensor.to(dtype)


class _NoDrawsOnMeta(torch.overrides.TorchFunctionMode):
    """Random draws on meta tensors are skipped while a model is built for loading.

    They are no-ops there anyway, but PyTorch runs ``normal_`` on meta through its Python
    reference implementation, which imports ``torch._dynamo`` and with it Triton (whose LLVM clashes
    with TensorFlow's in one process). The mode is active only inside the ``with`` block.
    """

    _DRAWS = (torch.nn.init.normal_, torch.nn.init.trunc_normal_, torch.Tensor.normal_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._DRAWS:
            tensor = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def _build_and_assign(cls, config: ConvBertConfig, result: checkpoint.LoadResult, dtype: torch.dtype,
                      device: torch.device | None) -> torch.nn.Module:
    """Build ``cls`` on the meta device (no memory, no random draws) and hand it the checkpoint's tensors.

    The checkpoint's arrays become the parameters (``assign=True``): the peak is the checkpoint
    itself. Parameters the checkpoint does not have (a new head, ``ignore_mismatched_sizes``) are
    then created on the real device and initialised by the model's own ``_init_weights``.
    """
    with torch.device("meta"), _NoDrawsOnMeta():
        model = cls(config)
    names = {n for n, _ in model.named_parameters()}
    stray = sorted(set(result.tensors) - names)
    if stray:
        raise checkpoint.CheckpointError(f"{result.source}: {stray[0]} has no parameter in {cls.__name__}")
    float32 = model.float32_parameter_names() if dtype in (torch.float16, torch.bfloat16) else set()
    state = {}
    for name in list(result.tensors):
        state[name] = _as_tensor(result.tensors.pop(name), torch.float32 if name in float32 else dtype, device)
    model.load_state_dict(state, strict=False, assign=True)
    del state
    _initialise_what_is_left(model, dtype, device or torch.device("cpu"))
    return model


@torch.no_grad()
def _initialise_what_is_left(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> None:
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not any(p.is_meta for p in own.values()):
            continue
        kept = {n: p.detach().clone() for n, p in own.items() if not p.is_meta}
        for n, p in own.items():
            if p.is_meta:
                setattr(module, n, torch.nn.Parameter(torch.empty(p.shape, dtype=dtype, device=device),
                                                      requires_grad=p.requires_grad))
        model._init_weights(module)
        for n, value in kept.items():
            getattr(module, n).copy_(value)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__}: no value for {left} after loading (a module _init_weights "
                           "does not initialise)")


def _loading_info(result: checkpoint.LoadResult) -> dict[str, list]:
    return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys),
            "mismatched_keys": list(result.mismatched_keys)}


def from_pretrained(
    cls,
    pretrained_model_name_or_path: str | os.PathLike,
    *,
    config: Any = None,
    dtype: Any = None,
    torch_dtype: Any = None,
    device: str | torch.device | None = None,
    device_map: Any = None,
    ignore_mismatched_sizes: bool = False,
    output_loading_info: bool = False,
    weights_file: str | None = None,
    from_tf: bool = False,
    **kwargs: Any,
):
    """Build ``cls`` from a checkpoint directory or a Hub id (``"org/name"``) and its weights.

    - ``config``: a ``ConvBertConfig`` (or dict, or config.json path) to use instead of the
      folder's ``config.json``, e.g. for an HF ``Trainer`` checkpoint; remaining keyword arguments
      that are config fields override it (``num_labels=5``).
    - ``dtype`` (or HF's older ``torch_dtype``): the parameters' dtype, a ``torch.dtype``, its name,
      or ``"auto"`` (the dtype the checkpoint was saved in); default float32. Never a config field.
    - ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``,
      ``subfolder``: for Hub ids, as in HF (see ``convbert_common.hub``; ``HF_HUB_OFFLINE=1``
      reads the cache only). Only the config and one weights file are downloaded.
    - ``ignore_mismatched_sizes=True``: head tensors whose shape differs from the model's (another
      ``num_labels``) are initialised afresh and listed in ``mismatched_keys``.
    - ``weights_file`` picks one file (default: the first of model.safetensors, its index,
      pytorch_model.bin, tf_model.h5); ``from_tf=True`` is ``weights_file="tf_model.h5"``.

    The model is built on the meta device and takes the checkpoint's tensors as its parameters, so
    loading needs about the checkpoint's size in memory. Head weights absent from the checkpoint are
    initialised and listed in ``missing_keys``; weights the class does not use in
    ``unexpected_keys``. The model is returned in ``eval()`` mode, as HF does.
    """
    options = hub.HubOptions.pop_from(kwargs)
    wanted = _resolve_device(device, device_map)
    prepared = loading.prepare(pretrained_model_name_or_path, framework="torch", config=config, overrides=kwargs,
                               caller=f"{cls.__name__}.from_pretrained", weights_file=weights_file, from_tf=from_tf,
                               options=options)
    dtype = _resolve_dtype(loading.one_dtype(dtype, torch_dtype), prepared.config) or torch.get_default_dtype()
    result = checkpoint.load_for_model(prepared.config, cls.task, prepared.folder,
                                       weights_file=prepared.weights_file,
                                       ignore_mismatched_sizes=ignore_mismatched_sizes, lazy=True)
    model = _build_and_assign(cls, prepared.config, result, dtype, wanted)
    model.eval()
    return (model, _loading_info(result)) if output_loading_info else model


def _weights_file(weights_file: str | None, from_tf: bool) -> str | None:
    if from_tf:
        if weights_file not in (None, checkpoint.TF_H5_NAME):
            raise ValueError("from_tf=True reads tf_model.h5; do not also pass another weights_file")
        return checkpoint.TF_H5_NAME
    return weights_file


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


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor as NumPy without a copy; bfloat16 through ml_dtypes (NumPy has none of its own)."""
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def save_pretrained(
    model: torch.nn.Module, save_directory: str | os.PathLike, *, safe_serialization: bool = True,
    max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE, is_main_process: bool = True,
    push_to_hub: bool = False, **push_kwargs: Any,
) -> str:
    """Write ``config.json`` (``architectures`` set) and the weights in HF's layout; returns the directory.

    Safetensors by default, split HF's way into ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json`` when larger than ``max_shard_size`` (``"2GB"``, bytes, or None
    for one file; HF's default 5GB); ``safe_serialization=False`` writes one ``pytorch_model.bin``.
    Names are canonical, the tied LM matrix is stored once (as the word embeddings), every file is
    written atomically. ``push_to_hub=True`` then uploads the folder (``repo_id=``, default the
    folder's name, ``token=``, ``private=``, ``commit_message=``).
    """
    if not is_main_process:
        return os.fspath(save_directory)
    return write_checkpoint_dir(save_directory, state_arrays(model), model.config, model.task,
                                safe_serialization=safe_serialization, max_shard_size=max_shard_size,
                                push_to_hub=push_to_hub, **push_kwargs)


def write_checkpoint_dir(save_directory: str | os.PathLike, tensors: dict[str, torch.Tensor], config: ConvBertConfig,
                         task, *, safe_serialization: bool = True,
                         max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE, push_to_hub: bool = False,
                         **push_kwargs: Any) -> str:
    """``save_pretrained`` from canonical tensors (``checked_arrays``) and the config of ``task``'s model."""
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise FileExistsError(f"{directory} is a file; save_pretrained needs a directory")
    os.makedirs(directory, exist_ok=True)
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    if safe_serialization:
        shards.write_sharded(directory, {k: _numpy(v) for k, v in tensors.items()}, max_shard_size)
    else:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if max_shard_size is not None and size > shards.parse_size(max_shard_size):
            raise ValueError(f"{directory}: {size} bytes exceed max_shard_size={max_shard_size!r}, and sharded "
                             "pytorch_model.bin files are not written; use safe_serialization=True")
        target = os.path.join(directory, checkpoint.PYTORCH_BIN_NAME)
        with atomic_path(target) as tmp:
            torch.save(tensors, tmp)
    config = config.replace(architectures=[task.class_name], dtype=dtype)
    config.save_pretrained(directory)
    if push_to_hub:
        repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.abspath(directory))
        hub.push_folder(directory, repo_id, **push_kwargs)
    elif push_kwargs:
        raise TypeError(f"save_pretrained got unexpected keyword argument(s) {', '.join(sorted(push_kwargs))}")
    return directory


def push_to_hub(model: torch.nn.Module, repo_id: str, *,
                max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE, safe_serialization: bool = True,
                tokenizer: Any = None, **push_kwargs: Any) -> Any:
    """Save the model (and ``tokenizer``) into a temporary folder and upload it to ``repo_id``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="convbert-push-") as tmp:
        save_pretrained(model, tmp, safe_serialization=safe_serialization, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        return hub.push_folder(tmp, repo_id, **push_kwargs)
