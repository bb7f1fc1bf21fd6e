"""The framework-free ground floor of convbert: every fact that is not tensor code, in NumPy.

``config`` / ``presets`` (hyper-parameters, HF ``config.json``), ``shapes`` (head arithmetic),
``heads`` (the task table), ``checks`` (input and label validation for both frameworks),
``tokenizer``, ``weight_map`` and ``layouts`` (weight names and layouts in every format),
``checkpoint`` and ``formats`` (reading and writing checkpoint files). Nothing here imports
``convbert_pt``, ``convbert_tf`` or ``convbert_tools``, and no framework at module level.
"""

from convbert_common.version import __version__

# The public names, imported on first use (PEP 562): ``import convbert_common.shapes`` must not
# pay for the tokenizer library.
_LAZY = {
    "ConvBertConfig": "convbert_common.config",
    "ConvBertTokenizer": "convbert_common.tokenizer",
    "ConvBertTokenizerFast": "convbert_common.tokenizer",
    "BatchEncoding": "convbert_common.batch_encoding",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'convbert_common' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
