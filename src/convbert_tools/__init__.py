"""The top floor: the ``convbert`` command and what it drives, above both frameworks.

``cli`` (the command), ``convert`` (the conversion driver over the format registry), ``verify``
(one checkpoint in PyTorch and in Keras, every output compared), ``demo`` (the whole pipeline on
the checkpoint shipped in ``data/demo``). Frameworks are imported only where a sub-command needs
one, so ``convbert info`` and conversions between framework-free formats run with neither installed.
"""

from convbert_common.version import __version__

__all__ = ["__version__"]
