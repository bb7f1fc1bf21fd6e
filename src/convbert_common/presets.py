"""The released ConvBERT sizes, every field written out (YituTech/conv-bert-{small,medium-small,base})."""

from __future__ import annotations

from typing import Any

from convbert_common.config import ConvBertConfig

_COMMON: dict[str, Any] = {
    "vocab_size": 30522,
    "num_hidden_layers": 12,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "head_ratio": 2,
    "conv_kernel_size": 9,
}

PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        **_COMMON,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "embedding_size": 128,
        "num_groups": 1,
    },
    "medium-small": {
        **_COMMON,
        "hidden_size": 384,
        "num_attention_heads": 8,
        "intermediate_size": 1536,
        "embedding_size": 128,
        "num_groups": 2,
    },
    "base": {
        **_COMMON,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "embedding_size": 768,
        "num_groups": 1,
    },
}


def preset(name: str, **overrides: Any) -> ConvBertConfig:
    """A config for one of the released sizes, optionally with fields changed."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ConvBertConfig(**{**PRESETS[name], **overrides})
