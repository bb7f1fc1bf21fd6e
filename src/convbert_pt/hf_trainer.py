"""Hugging Face ``Trainer`` checkpoints that load with ``from_pretrained``: ``SaveConfigCallback``.

``Trainer`` saves the weights of a model that is not one of its own ``PreTrainedModel`` classes
(``model.safetensors``) but no ``config.json``, so ``checkpoint-N/`` folders need
``from_pretrained(folder, config=...)``. With the callback, every checkpoint also gets
``config.json`` and the tokenizer files, and loads like any checkpoint directory::

    from convbert_pt.hf_trainer import SaveConfigCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator,
                      callbacks=[SaveConfigCallback(tokenizer)])
    trainer.train()
    model = ConvBertForSequenceClassification.from_pretrained(f"{args.output_dir}/checkpoint-500")

transformers is imported only when ``SaveConfigCallback`` is first used (this module imports
without it). ``save_checkpoint_files`` is the same work without transformers.
"""

from __future__ import annotations

import functools
import os
from typing import Any


def save_checkpoint_files(folder: str | os.PathLike, model: Any, tokenizer: Any = None) -> list[str]:
    """Write ``config.json`` (``architectures`` and ``dtype`` set) and the tokenizer's files into ``folder``."""
    folder = os.fspath(folder)
    model = getattr(model, "module", model)  # DistributedDataParallel / DataParallel wrap the model
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    config = model.config.replace(architectures=[model.task.class_name], dtype=dtype)
    written = [config.save_pretrained(folder)]
    if tokenizer is not None:
        written += list(tokenizer.save_pretrained(folder))
    return written


@functools.cache
def _callback_class() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ImportError("SaveConfigCallback is a transformers TrainerCallback: pip install 'transformers>=4.40'"
                          ) from None

    class SaveConfigCallback(TrainerCallback):
        """After each checkpoint save: ``config.json`` and the tokenizer files into ``checkpoint-<step>/``.

        ``tokenizer`` defaults to the Trainer's ``processing_class`` (``tokenizer`` in older versions).
        Only the main process writes.
        """

        def __init__(self, tokenizer: Any = None) -> None:
            self.tokenizer = tokenizer

        def on_save(self, args, state, control, model=None, **kwargs):
            if state.is_world_process_zero and model is not None:
                folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                tokenizer = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
                save_checkpoint_files(folder, model, tokenizer)
            return control

    return SaveConfigCallback


def __getattr__(name: str):
    if name == "SaveConfigCallback":
        return _callback_class()
    raise AttributeError(f"module 'convbert_pt.hf_trainer' has no attribute {name!r}")
