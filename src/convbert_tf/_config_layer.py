"""Base of the Keras layers built from a ConvBertConfig (outside modeling.py, which mirrors the PyTorch file)."""

from __future__ import annotations

import keras

from convbert_common.config import ConvBertConfig


def as_config(config) -> ConvBertConfig:
    """A validated ConvBertConfig from a config or its dict (what ``get_config`` stores)."""
    if isinstance(config, ConvBertConfig):
        config.validate()
        return config
    if isinstance(config, dict):
        return ConvBertConfig.from_dict(config)
    raise TypeError(f"expected a ConvBertConfig (or its dict), got {type(config).__name__}")


class ConfigLayer(keras.layers.Layer):
    """A layer built from the model config: ``get_config()`` is its constructor arguments."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict()}
