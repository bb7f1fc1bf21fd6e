"""What a pretraining run's models say about a text: the generator fills ``[MASK]``, the discriminator
tells which tokens look replaced. PyTorch, imported when called.

A directory argument may be a pretraining directory (its ``generator/`` or ``discriminator/`` is
used), or a checkpoint directory of the right class.
"""

from __future__ import annotations

import os
from typing import Any

from convbert_common import heads
from convbert_common import pretraining as ptc
from convbert_common.config import ConvBertConfig


def _model_dir(path: str, part: str) -> str:
    if ptc.is_pretraining_dir(path):
        return os.path.join(path, part)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such checkpoint or pretraining directory")
    return path


def _tokenizer(folder: str):
    from convbert_common.tokenizer import ConvBertTokenizerFast

    if not os.path.isfile(os.path.join(folder, "vocab.txt")):
        raise FileNotFoundError(f"{folder}: no vocab.txt; the model's folder needs its tokenizer files")
    return ConvBertTokenizerFast.from_pretrained(folder)


def fill_mask(path: str, text: str, *, top_k: int = 5) -> dict[str, Any]:
    """The ``top_k`` most likely tokens at every ``[MASK]`` of ``text``, from a masked-LM model."""
    import torch

    from convbert_pt import ConvBertForMaskedLM

    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    folder = _model_dir(path, ptc.GENERATOR_DIR)
    task = heads.of_architectures(ConvBertConfig.from_pretrained(folder).architectures, source=folder)
    if task is not None and task is not heads.MASKED_LM:
        raise ValueError(f"{folder} holds a {task.class_name}, not a masked LM: fill-mask needs a generator "
                         "(a pretraining directory, or its generator/)")
    tokenizer = _tokenizer(folder)
    model, info = ConvBertForMaskedLM.from_pretrained(folder, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"{folder} has no masked-LM head (missing {', '.join(info['missing_keys'][:3])}): it is a "
                         "discriminator, as the released ConvBERT checkpoints are; use the generator of a "
                         "pretraining directory (convbert convert TF1_DIR DST --pretraining brings it)")
    encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=model.config.max_position_embeddings)
    ids = encoded["input_ids"]
    positions = (ids[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise ValueError(f"the text has no {tokenizer.mask_token} token: write {tokenizer.mask_token} where a word "
                         "should be predicted")
    with torch.no_grad():
        probs = model(**encoded).logits[0].float().softmax(-1)  # (L, V)
    masks = []
    for position in positions:
        scores, tokens = probs[position].topk(min(top_k, probs.shape[-1]))
        predictions = []
        for score, token in zip(scores.tolist(), tokens.tolist(), strict=True):
            filled = ids[0].clone()
            filled[position] = token
            predictions.append({"token": token, "token_str": tokenizer.convert_ids_to_tokens(token),
                                "score": score,
                                "sequence": tokenizer.decode(filled.tolist(), skip_special_tokens=True)})
        masks.append({"position": position, "predictions": predictions})
    return {"model": folder, "text": text, "masks": masks}


def detect_replaced(path: str, text: str) -> dict[str, Any]:
    """Per token of ``text``, the discriminator's probability that it was replaced."""
    import torch

    from convbert_pt.pretraining import ConvBertForPreTraining

    folder = _model_dir(path, ptc.DISCRIMINATOR_DIR)
    tokenizer = _tokenizer(folder)
    model, info = ConvBertForPreTraining.from_pretrained(folder, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if k.startswith("discriminator_predictions.")]
    if missing:
        raise ValueError(f"{folder} has no replaced-token-detection head (missing {', '.join(missing[:2])}): use "
                         "the discriminator of a pretraining directory (convbert pretrain, or convbert convert "
                         "TF1_DIR DST --pretraining)")
    encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=model.config.max_position_embeddings)
    with torch.no_grad():
        probs = model(**encoded).discriminator_logits[0].float().sigmoid().tolist()  # (L,)
    ids = encoded["input_ids"][0].tolist()
    special = set(tokenizer.all_special_ids)
    tokens = [{"position": i, "token": tokenizer.convert_ids_to_tokens(t), "token_id": t, "replaced_probability": p,
               "replaced": p > 0.5} for i, (t, p) in enumerate(zip(ids, probs, strict=True)) if t not in special]
    return {"model": folder, "text": text, "tokens": tokens}
