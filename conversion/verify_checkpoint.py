#!/usr/bin/env python
"""Run a checkpoint in PyTorch and Keras and compare every output: the same as ``convbert verify``."""

import sys

from convbert_tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["verify", *sys.argv[1:]]))
