"""``convbert demo``: tokenise, run PyTorch, convert to Keras, run Keras, compare.

Runs offline in seconds on the tiny checkpoint shipped in the package. Output goes to the stream
given by the command line; the library itself never prints.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from typing import TextIO

import numpy as np

DEMO_ATOL = 1e-5


def checkpoint_dir() -> str:
    """The small checkpoint shipped inside the package (random weights, real vocabulary)."""
    return str(resources.files("convbert_tools") / "data" / "demo")


def run(checkpoint: str, *, text: str, text_pair: str | None, out: TextIO) -> int:
    from convbert_common.tokenizer import ConvBertTokenizerFast
    from convbert_tools import convert as conv

    tok = ConvBertTokenizerFast.from_pretrained(checkpoint)
    enc = tok(text, text_pair, return_tensors="np")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    out.write(f"text       {text!r}\ntext_pair  {text_pair!r}\n")
    out.write(f"tokens     {' '.join(tokens)}\n")
    out.write(f"input_ids  {enc['input_ids'][0].tolist()}\n")
    out.write(f"type_ids   {enc['token_type_ids'][0].tolist()}\n")

    missing = [name for name in ("torch", "keras") if not _importable(name)]
    if missing:
        out.write(f"\n{' and '.join(missing)} not installed: install 'convbert[all]' to run both frameworks\n")
        return 1

    import torch

    from convbert_pt import ConvBertForSequenceClassification as PTModel

    pt_model = PTModel.from_pretrained(checkpoint)
    with torch.no_grad():
        pt_logits = pt_model(**{k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()}).logits.numpy()

    import keras

    with tempfile.TemporaryDirectory() as tmp:
        keras_file = os.path.join(tmp, "demo.keras")
        conv.convert(checkpoint, keras_file, to="keras", progress=False)
        tf_model = keras.saving.load_model(keras_file)
        # convert_to_numpy: on Keras' PyTorch backend the logits are a torch tensor that requires grad.
        tf_logits = keras.ops.convert_to_numpy(tf_model({k: np.asarray(v) for k, v in enc.items()},
                                                         training=False)["logits"])

    labels = [pt_model.config.id2label[i] for i in range(pt_model.config.num_labels)]
    diff = float(np.max(np.abs(pt_logits - tf_logits)))
    out.write(f"\n{'':10s}{''.join(f'{name:>12s}' for name in labels)}\n")
    out.write(f"{'PyTorch':10s}{''.join(f'{v:12.6f}' for v in pt_logits[0])}\n")
    out.write(f"{'Keras':10s}{''.join(f'{v:12.6f}' for v in tf_logits[0])}\n")
    verdict = "identical within" if diff <= DEMO_ATOL else "DIFFER beyond"
    out.write(f"\nmax |PyTorch - Keras| = {diff:.2e} ({verdict} {DEMO_ATOL:.0e}); "
              f"the weights are random, so the labels mean nothing\n")
    return 0 if diff <= DEMO_ATOL else 2


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
