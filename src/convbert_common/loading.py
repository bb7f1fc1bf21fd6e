"""What both frameworks' ``from_pretrained`` do before any tensor code: find the files, settle the config.

``prepare`` resolves a local directory or a Hub id to a folder on disk and ONE weights file (in
the framework's order of preference), and builds the config: from ``config.json``, or from the
``config=`` given (a ``ConvBertConfig``, a dict, or a path), which is how folders without one load
(HF ``Trainer`` checkpoints of our models), with the keyword overrides on top. The loading options
HF users type (``dtype`` / ``torch_dtype``, the Hub options) never become config fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from convbert_common import checkpoint as ck
from convbert_common import hub
from convbert_common.config import CONFIG_NAME, ConvBertConfig


@dataclass(frozen=True)
class Prepared:
    config: ConvBertConfig
    folder: str
    weights_file: str | None  # a name inside ``folder``; None: the reader reports that none was found


def weight_files(framework: str, *, weights_file: str | None = None, from_tf: bool = False,
                 from_pt: bool = False) -> tuple[str, ...]:
    """The weights files a framework reads, in its order of preference.

    Keras prefers ``tf_model.h5`` over ``pytorch_model.bin`` (reading the latter needs torch);
    PyTorch the other way round, as HF does.
    """
    if sum((weights_file is not None, from_tf, from_pt)) > 1:
        raise ValueError("pass at most one of weights_file=, from_tf=True and from_pt=True")
    if weights_file is not None:
        return (weights_file,)
    if from_tf:
        return (ck.TF_H5_NAME,)
    if from_pt:
        return (ck.PYTORCH_BIN_NAME,)
    if framework == "keras":
        return ck.SAFETENSORS_NAME, ck.SAFETENSORS_INDEX_NAME, ck.TF_H5_NAME, ck.PYTORCH_BIN_NAME
    return ck.SAFETENSORS_NAME, ck.SAFETENSORS_INDEX_NAME, ck.PYTORCH_BIN_NAME, ck.TF_H5_NAME


def one_dtype(dtype: Any, torch_dtype: Any) -> Any:
    """``dtype`` (HF's current name) or ``torch_dtype`` (its older one); both only when they agree."""
    if dtype is not None and torch_dtype is not None and str(dtype) != str(torch_dtype):
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
    return dtype if dtype is not None else torch_dtype


def build_config(config: Any, folder: str | None, overrides: dict[str, Any], caller: str) -> ConvBertConfig:
    """The config of a load: ``config`` if given (object, dict or path), else ``folder/config.json``."""
    ConvBertConfig.check_overrides(overrides, caller)
    if config is None:
        path = os.path.join(folder, CONFIG_NAME) if folder is not None else None
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(
                f"{folder}: no {CONFIG_NAME}; pass config=ConvBertConfig(...) (or the path of a config.json), as for "
                "an HF Trainer checkpoint, or save one with the Trainer callback convbert_pt.hf_trainer."
                "SaveConfigCallback")
        return ConvBertConfig.from_pretrained(path, **overrides)
    if isinstance(config, ConvBertConfig):
        return config.replace(**overrides) if overrides else config
    if isinstance(config, dict):
        return ConvBertConfig.from_dict(config, source="config=", **overrides)
    if isinstance(config, (str, os.PathLike)):
        return ConvBertConfig.from_pretrained(config, **overrides)
    raise TypeError(f"{caller}: config= must be a ConvBertConfig, a dict or a path, got {type(config).__name__}")


def prepare(path: str | os.PathLike, *, framework: str, config: Any = None, overrides: dict[str, Any],
            caller: str, weights_file: str | None = None, from_tf: bool = False, from_pt: bool = False,
            options: hub.HubOptions | None = None) -> Prepared:
    """Resolve ``path`` (directory or Hub id) and build the config; nothing is read but the config."""
    files = weight_files(framework, weights_file=weights_file, from_tf=from_tf, from_pt=from_pt)
    # Settled before any download: a misspelt keyword must not cost a round trip to the Hub.
    ConvBertConfig.check_overrides(overrides, caller)
    resolved = hub.resolve_checkpoint(path, files, options, config=config is None)
    explicit = weights_file is not None or from_tf or from_pt
    if explicit and not os.path.exists(os.path.join(resolved.folder, resolved.weights_file or files[0])):
        asked = "weights_file=" if weights_file is not None else "from_tf=True" if from_tf else "from_pt=True"
        raise FileNotFoundError(f"{resolved.folder}: no {files[0]} ({asked} asks for it)")
    return Prepared(build_config(config, resolved.folder, overrides, caller), resolved.folder, resolved.weights_file)
