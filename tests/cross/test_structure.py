"""The PyTorch and Keras modeling files mirror each other class by class.

Parses both files (no framework import) and compares, in order, the classes and the sub-layer
attributes each class assigns in ``__init__``. Differences must be listed below, with the reason.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
PT_FILE = SRC / "convbert_pt" / "modeling.py"
TF_FILE = SRC / "convbert_tf" / "modeling.py"

# (class, PyTorch attribute) -> Keras attribute: Keras reserves `output` as a Layer property.
RENAMED = {
    ("ConvBertAttention", "output"): "attention_output",
    ("ConvBertLayer", "output"): "layer_output",
    # PyTorch composes two nn.Conv1d modules; the Keras layer owns the two kernels directly, named
    # as in HF's TF checkpoints.
    ("SeparableConv1D", "depthwise"): "depthwise_kernel",
    ("SeparableConv1D", "pointwise"): "pointwise_kernel",
    # Keras calls a dense layer's matrix `kernel`.
    ("GroupedLinearLayer", "weight"): "kernel",
}
# Classes on one side only, with the reason.
PT_ONLY: dict[str, str] = {}
TF_ONLY: dict[str, str] = {}
# Attributes that are framework plumbing, not sub-layers.
IGNORED_ATTRIBUTES = {
    "config", "gradient_checkpointing", "supports_masking", "_head", "head_name", "_built_model",
    "num_heads", "head_size", "all_head_size", "conv_kernel_size", "padding", "num_groups",
    "group_in_dim", "group_out_dim", "input_size", "output_size", "kernel_size", "input_filters",
    "output_filters", "initializer_range", "num_labels", "vocab_size", "embedding_size", "hidden_size",
    "layer_norm_eps", "max_position_embeddings", "type_vocab_size", "pad_token_id", "initializer",
    "embeddings_table", "word_embeddings_layer", "sdconv_impl", "attention_impl", "mixed_size",
    "problem_type", "_problem_type", "hidden_act", "dropout_rate", "_config", "training_loss",
}


def _classes(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs: list[str] = []
        for fn in node.body:
            if isinstance(fn, ast.FunctionDef) and fn.name in ("__init__", "build"):
                for sub in ast.walk(fn):
                    targets = sub.targets if isinstance(sub, ast.Assign) else (
                        [sub.target] if isinstance(sub, (ast.AnnAssign, ast.AugAssign)) else [])
                    for t in targets:
                        if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
                                and not t.attr.startswith("_") and t.attr not in IGNORED_ATTRIBUTES
                                and t.attr not in attrs):
                            attrs.append(t.attr)
        out.append((node.name, attrs))
    return out


@pytest.fixture(scope="module")
def both():
    if not PT_FILE.exists() or not TF_FILE.exists():
        pytest.fail("both modeling files must exist")
    return _classes(PT_FILE), _classes(TF_FILE)


def test_same_classes_in_the_same_order(both):
    pt, tf = both
    pt_names = [n for n, _ in pt if n not in PT_ONLY]
    tf_names = [n for n, _ in tf if n not in TF_ONLY]
    assert pt_names == tf_names


def test_same_sub_layer_attributes_in_the_same_order(both):
    pt, tf = dict(both[0]), dict(both[1])
    drift = {}
    for cls, pt_attrs in pt.items():
        if cls in PT_ONLY or cls not in tf:
            continue
        mapped = [RENAMED.get((cls, a), a) for a in pt_attrs]
        if mapped != tf[cls]:
            drift[cls] = {"pytorch (renamed)": mapped, "keras": tf[cls]}
    assert not drift, f"sub-layer attributes drifted apart: {drift}"


def test_the_exception_lists_are_not_stale(both):
    pt, tf = dict(both[0]), dict(both[1])
    for (cls, attr), renamed in RENAMED.items():
        assert attr in pt.get(cls, []) and renamed in tf.get(cls, []), (cls, attr)
    assert all(c in pt for c in PT_ONLY) and all(c in tf for c in TF_ONLY)


def test_checker_detects_a_drifted_attribute(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("class X:\n    def __init__(self):\n        self.dense = 1\n        self.LayerNorm = 2\n")
    b = tmp_path / "b.py"
    b.write_text("class X:\n    def __init__(self):\n        self.LayerNorm = 2\n        self.dense = 1\n")
    assert _classes(a) != _classes(b)
