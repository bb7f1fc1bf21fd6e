"""Loading and saving Keras models in the canonical (Hugging Face) checkpoint layout.

Names, layouts and file formats live in ``convbert_common``: ``checkpoint.load_for_model`` reads
``model.safetensors``, ``pytorch_model.bin`` (``weights_only``, only when torch is installed) or
HF's ``tf_model.h5`` (by name, with h5py), translates them to canonical names and layouts through
the weight table and checks every name and shape. Here each canonical tensor is mapped to its
Keras variable by the attribute path of ``WeightSpec.keras_layer`` / ``keras_variable`` and
transformed by ``keras_layout``; the whole plan is checked before the first assignment, so a
checkpoint that does not fit leaves the model as it was.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from convbert_common import checkpoint, heads
from convbert_common import weight_map as wm
from convbert_common.config import ConvBertConfig
from convbert_common.layouts import get_layout


def _head_of(model) -> heads.Task:
    return model.task


def _walk(model, path: str):
    """The sub-layer at a "/"-separated attribute path; digits index into lists."""
    layer = model
    for part in path.split("/"):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def canonical_variables(model, head: str | None = None) -> dict[str, keras.Variable]:
    """{canonical name: keras.Variable} for every spec of ``weight_map.model_specs``.

    Raises RuntimeError unless the map is a bijection: every spec is found, no variable is named
    twice, and every variable of the model (``model.weights``) is named once.
    """
    head = head or _head_of(model)
    out: dict[str, keras.Variable] = {}
    problems = []
    for spec in wm.model_specs(model.config, head):
        try:
            var = getattr(_walk(model, spec.keras_layer), spec.keras_variable)
        except (AttributeError, IndexError, TypeError) as exc:
            problems.append(f"{spec.name}: no variable at {spec.keras_layer}/{spec.keras_variable} ({exc})")
            continue
        if not isinstance(var, keras.Variable):
            problems.append(f"{spec.name}: {spec.keras_layer}/{spec.keras_variable} is a {type(var).__name__}")
            continue
        out[spec.name] = var
    seen: dict[int, str] = {}
    for name, var in out.items():
        if id(var) in seen:
            problems.append(f"{name} and {seen[id(var)]} are the same variable {var.path}")
        seen[id(var)] = name
    unmapped = [v.path for v in model.weights if id(v) not in seen]
    if unmapped:
        problems.append(f"model variables with no canonical name: {unmapped}")
    if problems:
        raise RuntimeError(f"{type(model).__name__}: the weight table and the model disagree: " + "; ".join(problems))
    return out


def canonical_arrays(model, head: str | None = None) -> dict[str, np.ndarray]:
    """The model's weights as canonical-layout float arrays, by canonical name."""
    head = head or _head_of(model)
    specs = {s.name: s for s in wm.model_specs(model.config, head)}
    out = {}
    for name, var in canonical_variables(model, head).items():
        spec = specs[name]
        value = np.asarray(keras.ops.convert_to_numpy(var.value))
        out[name] = get_layout(spec.keras_layout).to_canonical(value, spec.shape, f"{var.path} ({name})")
    return out


def assign_canonical(model, tensors: dict[str, np.ndarray], *, source: str = "checkpoint",
                     consume: bool = False) -> None:
    """Assign canonical tensors to the model; every name, shape and dtype is checked before the first write.

    With ``consume=True`` each entry is removed from ``tensors`` once assigned, so that a large
    checkpoint is not held twice (canonical arrays and Keras variables) at the peak.
    """
    head = _head_of(model)
    specs = {s.name: s for s in wm.model_specs(model.config, head)}
    variables = canonical_variables(model, head)
    for name, array in tensors.items():
        if name not in variables:
            raise checkpoint.CheckpointError(f"{source}: {name} has no variable in {type(model).__name__}")
        spec, var = specs[name], variables[name]
        layout = get_layout(spec.keras_layout)
        if tuple(np.shape(array)) != spec.shape:
            raise checkpoint.CheckpointError(
                f"{source}: {name}: checkpoint shape {tuple(np.shape(array))}, model expects {spec.shape} "
                "(nothing was loaded)"
            )
        if tuple(layout.target_shape(spec.shape)) != tuple(var.shape):
            raise checkpoint.CheckpointError(
                f"{source}: {name}: {spec.keras_layout} layout gives {layout.target_shape(spec.shape)}, the Keras "
                f"variable {var.path} is {tuple(var.shape)} (nothing was loaded)"
            )
        checkpoint.check_weight_dtype(np.asarray(array), name, source)
    # Everything fits: transform and assign one tensor at a time (no second full copy).
    for name in list(tensors):
        spec, var = specs[name], variables[name]
        array = tensors.pop(name) if consume else tensors[name]
        value = get_layout(spec.keras_layout).to_target(np.asarray(array), spec.shape, f"{source}: {name}")
        var.assign(value.astype(keras.backend.standardize_dtype(var.dtype), copy=False))
        del array, value


def _loading_info(result: checkpoint.LoadResult) -> dict[str, list[str]]:
    return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}


def from_pretrained(
    pretrained_model_path: str | os.PathLike,
    model_class,
    *,
    weights_file: str | None = None,
    output_loading_info: bool = False,
    **config_overrides: Any,
):
    """Build a model from ``config.json`` (fields overridden by ``config_overrides``) and its weights.

    ``weights_file`` picks one file of the directory (default: the first of
    model.safetensors, its index, pytorch_model.bin, tf_model.h5). Head weights absent from the
    checkpoint keep their fresh initialisation and are listed in ``missing_keys``; weights the
    class does not use are listed in ``unexpected_keys`` (``output_loading_info=True``).
    """
    path = os.fspath(pretrained_model_path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a checkpoint directory (expected config.json and a weights file)")
    ConvBertConfig.check_overrides(config_overrides, "from_pretrained")
    config = ConvBertConfig.from_pretrained(path, **config_overrides)
    # Read and check every tensor first: a file that does not fit raises before a model exists.
    result = checkpoint.load_for_model(config, model_class.task, path, weights_file=weights_file)
    model = model_class(config, initialize=False)  # every variable is assigned right below
    assign_canonical(model, result.tensors, source=result.source, consume=True)
    return (model, _loading_info(result)) if output_loading_info else model


def load_pretrained_weights(model, path: str | os.PathLike, *, weights_file: str | None = None) -> dict:
    """Load a checkpoint directory or weight file into ``model`` in place (config from the model)."""
    result = checkpoint.load_for_model(model.config, _head_of(model), path, weights_file=weights_file)
    assign_canonical(model, result.tensors, source=result.source)
    return _loading_info(result)


def save_pretrained(model, save_directory: str | os.PathLike, *, tf_h5: bool = False) -> str:
    """Write ``config.json`` (``architectures`` set) and canonical ``model.safetensors``; optionally ``tf_model.h5``.

    Names are canonical (those of HF's PyTorch state dict, so ``convbert_pt`` and HF load the
    file), the tied LM matrix is stored once (as the word embeddings), every file is written
    atomically. ``tf_h5=True`` also writes HF's TensorFlow layout. Returns the directory.
    """
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise FileExistsError(f"{directory} is a file; save_pretrained needs a directory")
    head = _head_of(model)
    tensors = canonical_arrays(model, head)  # everything read before anything is written
    os.makedirs(directory, exist_ok=True)
    checkpoint.write_safetensors(os.path.join(directory, checkpoint.SAFETENSORS_NAME), tensors)
    if tf_h5:
        checkpoint.write_hf_tf_h5(os.path.join(directory, checkpoint.TF_H5_NAME), model.config, head, tensors)
    dtype = str(next(iter(tensors.values())).dtype)
    config = model.config.replace(architectures=[head.class_name], dtype=dtype)
    config.save_pretrained(directory)
    return directory
