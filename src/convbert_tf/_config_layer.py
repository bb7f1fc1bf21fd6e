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
    """A layer built from the model config: ``get_config()`` is its constructor arguments.

    ``initialize=False`` creates every variable as zeros instead of drawing it: for loaders, which
    overwrite every variable right after (drawing ~110M numbers for ConvBERT-base takes seconds).
    It is passed to every sub-layer (``sub``) and is not part of the config: a reloaded model is
    built the ordinary way and then loaded.
    """

    def __init__(self, config, initialize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        self.initialize = initialize

    def sub(self, name: str) -> dict:
        """Constructor keywords of a sub-layer: its name, this layer's dtype policy and init choice."""
        return {"name": name, "dtype": self.dtype_policy, "initialize": self.initialize}

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict()}

    def compute_output_spec(self, *args, **kwargs):
        return traced_output_spec(self, *args, **kwargs)


def traced_output_spec(layer, *args, **kwargs):
    """A symbolic call's outputs from tracing ``call`` (exact dtypes, optional outputs included).

    Layers here define ``compute_output_shape`` for ``summary()``; Keras would otherwise build the
    symbolic outputs from it too, in the compute dtype, where the heads return float32.
    """
    return keras.Operation.compute_output_spec(layer, *args, **kwargs)
