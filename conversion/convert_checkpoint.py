#!/usr/bin/env python
"""Convert a ConvBERT checkpoint between formats: the same as ``convbert convert``.

    python conversion/convert_checkpoint.py SRC DST --to keras|safetensors|pytorch-bin|keras-weights|hf-tf-h5
"""

import sys

from convbert_tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
