#!/usr/bin/env python
"""Import an original TF1 ConvBERT checkpoint (the authors' ``electra/...`` variables).

    python conversion/convert_tf1_original.py CKPT_DIR DST [--generator] [--to ...] [--config FILE]

The discriminator becomes a ``ConvBertModel``; ``--generator`` imports the generator as a
``ConvBertForMaskedLM`` (its config from ``generator_config.json`` beside the checkpoint, or
``--config``). Optimizer slots, ``global_step`` and the replaced-token-detection head are skipped
and listed. Same as ``convbert convert``.
"""

import sys

from convbert_tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
