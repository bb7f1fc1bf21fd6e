"""The Keras checkpoint formats, ``.keras`` and ``.weights.h5``, as ``convbert_common.formats`` records.

Both are written tensor by tensor in the layout Keras' own writer uses, without building the
full-size model (``keras_file``). A ``.keras`` file in another layout than this Keras writes (an
older Keras, extra state) is read through ``keras.saving.load_model`` instead.
"""

from __future__ import annotations

import logging
import os

import keras
from tqdm.auto import tqdm

from convbert_common import heads
from convbert_common.formats import Format, FormatRegistry, Loaded
from convbert_tf import io as tf_io
from convbert_tf import keras_file

logger = logging.getLogger(__name__)


def read_keras(src: str, *, head: str | heads.Task | None = None, config_path: str | None = None,
               generator: bool = False) -> Loaded:
    if generator:
        raise ValueError(f"{src}: --generator applies to original TF1 checkpoints only")
    if config_path is not None:
        raise ValueError(f"{src}: a .keras file carries its own config; --config applies to TF1 checkpoints")
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such .keras file")
    try:
        # The weights straight from the archive, by the layout Keras gives the model: no model built.
        config, task, tensors, skipped = keras_file.read_keras_file(src)
    except keras_file.LayoutMismatch as exc:
        logger.info("%s: not in this Keras' layout (%s); loading it through keras.saving.load_model", src, exc)
    else:
        _check_head(src, head, task)
        return Loaded(config, task, tensors, src, skipped)
    try:
        model = keras.saving.load_model(src, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise ValueError(f"{src}: not a loadable .keras file ({exc})") from None
    task = getattr(model, "task", None)
    if not isinstance(task, heads.Task):
        raise ValueError(f"{src}: holds a {type(model).__name__}, not a ConvBERT model")
    _check_head(src, head, task)
    return Loaded(model.config, task, tf_io.canonical_arrays(model), src)


def _check_head(src: str, wanted: str | heads.Task | None, found: heads.Task) -> None:
    if wanted is not None and heads.get(wanted) is not found:
        raise ValueError(f"{src}: holds a {found.class_name}, not a {heads.get(wanted).class_name}")


def _writer(weights_only: bool):
    def write(loaded: Loaded, target: str, *, dtype: str | None = None, progress: bool = False) -> None:
        if dtype not in (None, "float32"):
            raise ValueError(f"{target}: Keras files store float32 variables; --dtype {dtype} applies to the "
                             "other formats")
        # The canonical arrays are freed as they are written (``consume``): the checkpoint is not held twice.
        with tqdm(total=len(loaded.tensors), desc="writing " + ("keras-weights" if weights_only else "keras"),
                  disable=None if progress is None else not progress, leave=False) as bar:
            kwargs = dict(consume=True, source=loaded.source, on_tensor=lambda _name: bar.update())
            if weights_only:
                keras_file.write_weights(target, loaded.config, loaded.head, loaded.tensors, **kwargs)
            else:
                keras_file.write_keras_file(target, loaded.config, loaded.head, loaded.tensors, **kwargs)

    return write


FORMATS = (
    Format("keras", "file", "a Keras 3 .keras archive (keras.saving.load_model)", suffix=".keras",
           framework="keras", extra="tf", read=read_keras, write=_writer(False),
           detect=lambda path: path.endswith(".keras"), dtypes=("float32",)),
    Format("keras-weights", "file", "Keras 3 weights (model.load_weights)", suffix=".weights.h5",
           framework="keras", extra="tf", write=_writer(True), dtypes=("float32",)),
)


def register(registry: FormatRegistry) -> None:
    """Add the Keras formats to ``registry``."""
    for fmt in FORMATS:
        registry.register(fmt)
