"""Serving exports of the Keras models: a TF SavedModel (optionally with the tokenizer in the graph) and LiteRT.

``export(model, path, format="saved-model")`` writes a SavedModel directory whose
``serving_default`` signature takes ``input_ids``, ``attention_mask`` and ``token_type_ids``
(int32, dynamic (B, L), or (B, C, L) for multiple choice) and returns the head's output dict
(``logits``, ``last_hidden_state``, ``start_logits`` / ``end_logits``).

With ``tokenizer`` (a ``ConvBertTokenizerFast``) it also holds the tokenizer as graph ops
(``graph_tokenizer.py``, tensorflow-text) and four more signatures:

- ``tokenize(text)`` and ``tokenize_pair(text, text_pair)``: strings (B,) (or (B, C) for multiple
  choice) -> ``input_ids``, ``attention_mask``, ``token_type_ids``, truncated to
  ``max_position_embeddings`` and padded to the longest row;
- ``serve_text(text)`` and ``serve_text_pair(text, text_pair)``: the same, through the model.

A SavedModel signature has a fixed set of inputs, hence a signature per arity. The model-only
export never imports tensorflow-text.

``format="litert"`` writes a ``.tflite`` flatbuffer through Keras' own ``litert`` export (Keras
3.12 and later), with LiteRT builtin operators only (checked by running it in the interpreter of
``ai-edge-litert``), so the plain interpreter runs it with dynamic batch and sequence.

Both need the TensorFlow backend of Keras.
"""

from __future__ import annotations

import logging
import os

import keras

from convbert_common import heads
from convbert_common.fileio import atomic_directory, atomic_path
from convbert_tf import backend

logger = logging.getLogger(__name__)

EXTRA = "export"
FORMATS = ("saved-model", "litert")
TOKENIZER_SIGNATURES = ("tokenize", "tokenize_pair", "serve_text", "serve_text_pair")


def _task_of(model) -> heads.Task:
    task = getattr(model, "task", None)
    if not isinstance(task, heads.Task):
        raise TypeError(f"export needs a ConvBERT model of convbert_tf, got {type(model).__name__}")
    return task


def export(model, path: str | os.PathLike, *, format: str = "saved-model", tokenizer=None,
           max_length: int | None = None, overwrite: bool = False) -> str:
    """Write ``model`` for serving at ``path``; returns the path.

    ``format``: ``"saved-model"`` (a directory) or ``"litert"`` (a ``.tflite`` file). ``tokenizer``
    (SavedModel only) adds the string signatures; ``max_length`` bounds their rows (default: the
    model's ``max_position_embeddings``). The result appears atomically; an existing ``path`` is
    replaced only with ``overwrite=True``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    task = _task_of(model)
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    if format == "litert":
        if tokenizer is not None:
            raise ValueError("the in-graph tokenizer is a SavedModel feature (tensorflow-text ops have no LiteRT "
                             "builtins); export the tokenizer-free model to LiteRT")
        return export_litert(model, path)
    backend.require_tensorflow("the SavedModel export")
    if tokenizer is None:
        with atomic_directory(path, overwrite=True) as tmp:
            model.export(tmp, format="tf_saved_model", verbose=False)
        return path
    from convbert_tf import graph_tokenizer

    length = model.config.max_position_embeddings if max_length is None else int(max_length)
    tok = graph_tokenizer.build(tokenizer, length)
    archive = _archive(model, task, tok)
    with atomic_directory(path, overwrite=True) as tmp:
        archive.write_out(tmp, verbose=False)
    return path


def _archive(model, task: heads.Task, tok):
    """An ExportArchive with the model's serving signature and the four string signatures."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tok)
    ids_spec = model.serving_input_signature()
    text_shape = (None,) * (task.input_rank - 1)  # (B,) or (B, C)
    text = tf.TensorSpec(text_shape, tf.string, name="text")
    pair = tf.TensorSpec(text_shape, tf.string, name="text_pair")

    def tokenized(text, text_pair=None):
        shape = tf.shape(text)
        flat_pair = None if text_pair is None else tf.reshape(text_pair, [-1])
        out = tok(tf.reshape(text, [-1]), flat_pair)  # (B*C, L)
        if task.input_rank == 3:
            out = {k: tf.reshape(v, tf.concat([shape, [-1]], 0)) for k, v in out.items()}  # (B, C, L)
        return out

    # Each graph is traced once; the string signatures call the traced functions instead of
    # tracing the tokenizer and the model again (each trace adds thousands of ops to the file).
    serve = tf.function(lambda inputs: model(inputs, training=False), input_signature=[ids_spec], autograph=False)
    single = tf.function(lambda text: tokenized(text), input_signature=[text], autograph=False)
    double = tf.function(tokenized, input_signature=[text, pair], autograph=False)
    archive.add_endpoint("serving_default", serve)
    archive.add_endpoint("tokenize", single)
    archive.add_endpoint("tokenize_pair", double)
    archive.add_endpoint("serve_text", lambda text: serve(single(text)), input_signature=[text])
    archive.add_endpoint("serve_text_pair", lambda text, text_pair: serve(double(text, text_pair)),
                         input_signature=[text, pair])
    return archive


# ------------------------------------------------------------------------------ LiteRT
def export_litert(model, path: str | os.PathLike) -> str:
    """Write ``model`` as a LiteRT (``.tflite``) flatbuffer at ``path``, builtin operators only.

    The result is loaded and run once in the LiteRT interpreter without the Flex delegate
    (``ai-edge-litert``); anything it cannot run is refused, naming the operator.
    """
    task = _task_of(model)
    backend.require_tensorflow("the LiteRT export")
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"a LiteRT model is a .tflite file, got {path}")
    interpreter = _litert_interpreter()
    with atomic_path(path) as tmp:
        target = tmp + ".tflite"  # Keras wants the suffix
        try:
            try:
                model.export(target, format="litert", verbose=False,
                             input_signature=[model.serving_input_signature()])
            except ValueError as exc:
                if "litert" in str(exc) and "format" in str(exc):
                    raise ValueError(f"--format litert: the installed Keras {keras.__version__} has no 'litert' "
                                     f"export (Keras 3.12 and later have it): {exc}") from exc
                raise
            check_litert(target, task, interpreter)
            os.replace(target, tmp)
        finally:
            if os.path.exists(target):
                os.remove(target)
    return path


def _litert_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ImportError(f"--format litert checks the model with the LiteRT interpreter: it needs ai-edge-litert "
                          f"(pip install 'convbert[{EXTRA}]'): {exc}") from exc
    return Interpreter


def check_litert(path: str, task: heads.Task, interpreter=None) -> None:
    """Run ``path`` once in the plain LiteRT interpreter (no Flex delegate): ValueError if it needs more."""
    import numpy as np

    interpreter = interpreter or _litert_interpreter()
    runner = interpreter(model_path=path).get_signature_runner("serving_default")
    shape = (1, 2, 2) if task.input_rank == 3 else (1, 2)
    feed = {name: np.zeros(shape, np.int32) for name in ("input_ids", "attention_mask", "token_type_ids")}
    feed["attention_mask"][:] = 1
    try:
        runner(**feed)
    except RuntimeError as exc:
        raise ValueError(f"the LiteRT model needs operators the builtin LiteRT interpreter lacks: {exc}") from exc
