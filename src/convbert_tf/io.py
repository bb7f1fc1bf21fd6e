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

from convbert_common import checkpoint, heads, hub, loading, shards
from convbert_common import weight_map as wm
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
        # a LazyTensor has its dtype without reading its data
        checkpoint.check_weight_dtype(array if hasattr(array, "dtype") else np.asarray(array), name, source)
    # Everything fits: transform and assign one tensor at a time (no second full copy).
    for name in list(tensors):
        spec, var = specs[name], variables[name]
        array = tensors.pop(name) if consume else tensors[name]
        if _assign_in_rows(var, array, spec):
            continue
        value = get_layout(spec.keras_layout).to_target(np.asarray(array), spec.shape, f"{source}: {name}")
        var.assign(value.astype(keras.backend.standardize_dtype(var.dtype), copy=False))
        del array, value


# Tensors larger than this are assigned in slices of rows where they can be (the word embeddings of
# ConvBERT-base are 94 MB): the file's rows go into the variable without a full-size copy beside it.
_ROWS_BYTES = 4 * 2**20


def _assign_in_rows(var, array, spec: wm.WeightSpec) -> bool:
    """Assign a large, untransformed lazy tensor slice by slice into a TensorFlow variable; False if not done."""
    from convbert_common.streaming import LazyTensor

    if (not isinstance(array, LazyTensor) or spec.keras_layout != "identity" or array.nbytes <= _ROWS_BYTES
            or keras.backend.backend() != "tensorflow" or len(array.shape) < 2):
        return False
    import tensorflow as tf

    target = var.value  # the tf.Variable
    if not isinstance(target, tf.Variable):
        return False
    dtype = keras.backend.standardize_dtype(var.dtype)
    rows = max(1, _ROWS_BYTES // max(1, array.nbytes // array.shape[0]))
    for start in range(0, array.shape[0], rows):
        chunk = array.read_rows(start, start + rows).astype(dtype, copy=False)
        # A scatter writes the rows in place; a sliced assign (var[a:b].assign) reads the variable
        # first, and the next write then copies the whole table.
        target.scatter_update(tf.IndexedSlices(chunk, tf.range(start, start + chunk.shape[0])))
    return True


def _loading_info(result: checkpoint.LoadResult) -> dict[str, list]:
    return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys),
            "mismatched_keys": list(result.mismatched_keys)}


def _dtype_name(dtype: Any) -> Any:
    """A Keras dtype (policy) from what HF users pass: "bfloat16", "mixed_bfloat16", a torch/NumPy dtype."""
    if dtype is None or isinstance(dtype, keras.DTypePolicy):
        return dtype
    name = str(dtype).removeprefix("torch.")
    name = {"float": "float32", "half": "float16"}.get(name, name)
    try:
        return keras.DTypePolicy(name)
    except ValueError:
        raise ValueError(f"dtype {dtype!r} is not a Keras dtype or dtype policy (float32, bfloat16, "
                         "mixed_bfloat16, ...)") from None


def initialize_fresh(model, names) -> None:
    """Draw the variables of ``names`` (head tensors a checkpoint lacks) as a fresh model would have them."""
    specs = {s.name: s for s in wm.model_specs(model.config, model.task)}
    variables = canonical_variables(model)
    for name in names:
        var, spec = variables[name], specs[name]
        if spec.keras_variable in ("bias", "beta"):
            init = keras.initializers.Zeros()
        elif spec.keras_variable == "gamma":
            init = keras.initializers.Ones()
        else:
            init = keras.initializers.TruncatedNormal(stddev=model.config.initializer_range)
        var.assign(init(tuple(var.shape), dtype=var.dtype))


def from_pretrained(
    pretrained_model_name_or_path: str | os.PathLike,
    model_class,
    *,
    config: Any = None,
    dtype: Any = None,
    torch_dtype: Any = None,
    ignore_mismatched_sizes: bool = False,
    weights_file: str | None = None,
    from_pt: bool = False,
    from_tf: bool = False,
    output_loading_info: bool = False,
    **kwargs: Any,
):
    """Build a model from a checkpoint directory or a Hub id (``"org/name"``) and its weights.

    - ``config``: a ``ConvBertConfig`` (or dict, or config.json path) instead of the folder's
      ``config.json``; remaining keyword arguments that are config fields override it.
    - ``dtype``: the model's Keras dtype policy (``"bfloat16"``, ``"mixed_bfloat16"``...; HF's
      ``torch_dtype`` is accepted as its alias). Never a config field.
    - ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``,
      ``subfolder``: for Hub ids, as in HF (see ``convbert_common.hub``; ``HF_HUB_OFFLINE=1``
      reads the cache only). Only the config and one weights file are downloaded, in the order
      model.safetensors, its index, tf_model.h5, pytorch_model.bin: a repo with both HF files
      gives Keras the .h5, which needs no torch.
    - ``ignore_mismatched_sizes=True``: head tensors whose shape differs from the model's are
      initialised afresh and listed in ``mismatched_keys``.
    - ``weights_file`` picks one file; ``from_pt=True`` / ``from_tf=True`` pick pytorch_model.bin /
      tf_model.h5.

    Head weights absent from the checkpoint are initialised and listed in ``missing_keys``; weights
    the class does not use in ``unexpected_keys`` (``output_loading_info=True``).
    """
    options = hub.HubOptions.pop_from(kwargs)
    policy = _dtype_name(loading.one_dtype(dtype, torch_dtype))
    prepared = loading.prepare(pretrained_model_name_or_path, framework="keras", config=config, overrides=kwargs,
                               caller=f"{model_class.__name__}.from_pretrained", weights_file=weights_file,
                               from_tf=from_tf, from_pt=from_pt, options=options)
    # Read and check every tensor first: a file that does not fit raises before a model exists.
    result = checkpoint.load_for_model(prepared.config, model_class.task, prepared.folder,
                                       weights_file=prepared.weights_file,
                                       ignore_mismatched_sizes=ignore_mismatched_sizes, lazy=True)
    extra = {"dtype": policy} if policy is not None else {}
    model = model_class(prepared.config, initialize=False, **extra)  # every variable is assigned right below
    assign_canonical(model, result.tensors, source=result.source, consume=True)
    if result.missing_keys:
        initialize_fresh(model, result.missing_keys)
    return (model, _loading_info(result)) if output_loading_info else model


def load_pretrained_weights(model, path: str | os.PathLike, *, weights_file: str | None = None) -> dict:
    """Load a checkpoint directory or weight file into ``model`` in place (config from the model)."""
    result = checkpoint.load_for_model(model.config, _head_of(model), path, weights_file=weights_file)
    assign_canonical(model, result.tensors, source=result.source)
    return _loading_info(result)


def save_pretrained(model, save_directory: str | os.PathLike, *, tf_h5: bool = False,
                    max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE, push_to_hub: bool = False,
                    **push_kwargs: Any) -> str:
    """Write ``config.json`` (``architectures`` set) and canonical safetensors; optionally ``tf_model.h5``.

    Names are canonical (those of HF's PyTorch state dict, so ``convbert_pt`` and HF load the
    file), the tied LM matrix is stored once (as the word embeddings), every file is written
    atomically. Larger than ``max_shard_size`` (``"2GB"``, bytes, None for one file; HF's default
    5GB), the weights are split HF's way into ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json``. ``tf_h5=True`` also writes HF's TensorFlow layout.
    ``push_to_hub=True`` then uploads the folder (``repo_id=``, default the folder's name,
    ``token=``, ``private=``, ``commit_message=``). Returns the directory.
    """
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise FileExistsError(f"{directory} is a file; save_pretrained needs a directory")
    if push_kwargs and not push_to_hub:
        raise TypeError(f"save_pretrained got unexpected keyword argument(s) {', '.join(sorted(push_kwargs))}")
    head = _head_of(model)
    tensors = canonical_arrays(model, head)  # everything read before anything is written
    os.makedirs(directory, exist_ok=True)
    shards.write_sharded(directory, tensors, max_shard_size)
    if tf_h5:
        checkpoint.write_hf_tf_h5(os.path.join(directory, checkpoint.TF_H5_NAME), model.config, head, tensors)
    dtype = str(next(iter(tensors.values())).dtype)
    config = model.config.replace(architectures=[head.class_name], dtype=dtype)
    config.save_pretrained(directory)
    if push_to_hub:
        repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.abspath(directory))
        hub.push_folder(directory, repo_id, **push_kwargs)
    return directory


def push_to_hub(model, repo_id: str, *, max_shard_size: int | str | None = shards.DEFAULT_MAX_SHARD_SIZE,
                tokenizer: Any = None, **push_kwargs: Any) -> Any:
    """Save the model (and ``tokenizer``) into a temporary folder and upload it to ``repo_id``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="convbert-push-") as tmp:
        save_pretrained(model, tmp, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        return hub.push_folder(tmp, repo_id, **push_kwargs)
