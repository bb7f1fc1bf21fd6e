"""Moving one checkpoint through every format and both frameworks, checking the numbers at each step.

    python examples/convert_walkthrough.py [--checkpoint DIR] [--workdir DIR]

Uses the small checkpoint shipped in the package by default. Each step is what a user would type
as ``convbert convert`` / ``convbert verify``; here through the Python API.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np


def main() -> int:
    from convbert_tools import convert, verify
    from convbert_tools.cli import demo_checkpoint_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=demo_checkpoint_dir())
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="convbert-walkthrough-")

    # 1. HF PyTorch layout -> HF TensorFlow layout (tf_model.h5), which HF's TF classes read.
    h5_dir = os.path.join(work, "hf-tf")
    convert.convert(args.checkpoint, h5_dir, to="hf-tf-h5", force=True)
    # 2. -> a Keras 3 .keras file (architecture + weights), loadable with keras.saving.load_model.
    keras_file = os.path.join(work, "model.keras")
    convert.convert(h5_dir, keras_file, to="keras", force=True)
    # 3. -> back to canonical safetensors, the format both frameworks' from_pretrained read.
    back = os.path.join(work, "back")
    convert.convert(keras_file, back, to="safetensors", force=True)

    # Every tensor survived the trip bit for bit...
    from convbert_common import checkpoint as ck

    a = ck.read_safetensors(os.path.join(args.checkpoint, "model.safetensors"))
    b = ck.read_safetensors(os.path.join(back, "model.safetensors"))
    identical = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    print(f"round trip safetensors -> tf_model.h5 -> .keras -> safetensors bit-identical: {identical}")

    # ...and both frameworks give the same outputs on the result. A .keras file carries no tokenizer,
    # so the tokenizer files of the source go beside the round-tripped weights first.
    from convbert_common.formats import copy_tokenizer

    copy_tokenizer(args.checkpoint, back)
    report = verify.verify(back, text="Conversions should never change a number.")
    print(f"verified {report.path}")
    print(verify.format_report(report))
    print(f"files in {work}: {sorted(os.listdir(work))}")
    return 0 if identical and report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
