"""The PyTorch and Keras modeling files mirror each other class by class.

Parses both files of each pair (``modeling.py``, ``pretraining.py``; no framework import) and
compares, in order, the classes and the sub-layer attributes each class assigns in ``__init__``.
Differences must be listed below, with the reason.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
PT_FILE = SRC / "convbert_pt" / "modeling.py"
TF_FILE = SRC / "convbert_tf" / "modeling.py"
PT_PRETRAINING = SRC / "convbert_pt" / "pretraining.py"
TF_PRETRAINING = SRC / "convbert_tf" / "pretraining.py"

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
# Attributes that are framework plumbing, not sub-layers (each must match an attribute of some class).
IGNORED_ATTRIBUTES = {
    "config": "the ConvBertConfig every class keeps",
    "gradient_checkpointing": "PyTorch's per-encoder switch",
    "num_groups": "GroupedLinearLayer's group count (PyTorch; Keras reads its config)",
    "input_size": "GroupedLinearLayer's sizes (Keras builds its variables in build())",
    "output_size": "as input_size",
    "kernel_size": "a size, not a layer",
    "input_filters": "a size, not a layer",
    "output_filters": "a size, not a layer",
    "num_labels": "HF's attribute on the PyTorch heads",
    "sdconv_impl": "the dynamic-convolution implementation switch",
    "depthwise_impl": "the Keras depthwise-convolution switch (XLA)",
    "initialize": "Keras' zero-initialised build for loaders",
    "heads": "the head arithmetic record",
}
# Module-level functions on one side only, with the reason.
PT_ONLY_FUNCTIONS = {
    "_is_compiling": "torch.compile skips the eager id checks",
    "_check_ids": "PyTorch checks id ranges eagerly; Keras does it in the embeddings, graph-aware (_checked_ids)",
    "_labels_batch_shape": "Keras has it as ConvBertPreTrainedModel._batch_shape on its dict inputs",
    "_bf16_on_cpu": "PyTorch decides bf16 per forward (dtype, autocast); Keras once, from the policy "
                    "(backend.cpu_only)",
}
TF_ONLY_FUNCTIONS = {
    "_large_negative": "the masking value of Keras' fused attention, for the explicit path",
    "_concrete": "values of an eager tensor, None inside a graph (any backend)",
    "_checked_ids": "the graph-aware id check (see PT_ONLY_FUNCTIONS)",
    "_initializer": "PyTorch initialises in ConvBertPreTrainedModel._init_weights",
    "_dense": "PyTorch uses nn.Linear directly",
    "_layer_norm": "PyTorch uses nn.LayerNorm directly",
    "_float32_variables": "the LayerNorms' policy in a half-precision model; PyTorch keeps those parameters in "
                          "float32 in ConvBertPreTrainedModel._apply (float32_parameter_names)",
}

# The pretraining pair: classes and module-level functions on one side only, with the reason.
PRETRAINING_TF_ONLY = {
    "_Discriminator": "a view of the model as its discriminator/ checkpoint, for io.canonical_variables' checks",
}
PRETRAINING_PT_ONLY_FUNCTIONS = {
    "gumbel_noise_for_rows": "the PyTorch loop's per-row torch noise; Keras draws it in-model from a SeedGenerator",
    "_return": "the output dataclass or its tuple; Keras returns dicts (ConvBertPreTrainedModel._return)",
    "_assign": "Keras has it as ConvBertForPreTraining.assign_state (through the weight table's layouts)",
    "split_state": "Keras splits the state inside save_pretraining_dir",
}
PRETRAINING_TF_ONLY_FUNCTIONS = {
    "masked_slots": "the static (B, P) grid of masked positions that XLA and JAX need (PyTorch indexes by mask)",
    "_nan_unless": "traced bad labels make the loss NaN (XLA drops asserts)",
    "_ordered": "PyTorch's io.checked_arrays",
}
PAIRS = {
    "modeling": (PT_FILE, TF_FILE, PT_ONLY, TF_ONLY, PT_ONLY_FUNCTIONS, TF_ONLY_FUNCTIONS),
    "pretraining": (PT_PRETRAINING, TF_PRETRAINING, {}, PRETRAINING_TF_ONLY, PRETRAINING_PT_ONLY_FUNCTIONS,
                    PRETRAINING_TF_ONLY_FUNCTIONS),
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
                                and not t.attr.startswith("_") and t.attr not in attrs):
                            attrs.append(t.attr)
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        if not attrs and bases and bases[0] in dict(out):
            attrs = list(dict(out)[bases[0]])  # a subclass that only changes methods keeps its base's sub-layers
        out.append((node.name, attrs))
    return out


def _sub_layers(classes: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    return [(name, [a for a in attrs if a not in IGNORED_ATTRIBUTES]) for name, attrs in classes]


def _functions(path: pathlib.Path) -> list[str]:
    return [node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)]


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(request):
    pt_file, tf_file, pt_only, tf_only, pt_fn, tf_fn = PAIRS[request.param]
    if not pt_file.exists() or not tf_file.exists():
        pytest.fail(f"both {request.param} files must exist")
    return dict(pt=_sub_layers(_classes(pt_file)), tf=_sub_layers(_classes(tf_file)), pt_file=pt_file,
                tf_file=tf_file, pt_only=pt_only, tf_only=tf_only, pt_functions=pt_fn, tf_functions=tf_fn)


def test_same_classes_in_the_same_order(pair):
    pt_names = [n for n, _ in pair["pt"] if n not in pair["pt_only"]]
    tf_names = [n for n, _ in pair["tf"] if n not in pair["tf_only"]]
    assert pt_names == tf_names


def test_same_sub_layer_attributes_in_the_same_order(pair):
    pt, tf = dict(pair["pt"]), dict(pair["tf"])
    drift = {}
    for cls, pt_attrs in pt.items():
        if cls in pair["pt_only"] or cls not in tf:
            continue
        mapped = [RENAMED.get((cls, a), a) for a in pt_attrs]
        if mapped != tf[cls]:
            drift[cls] = {"pytorch (renamed)": mapped, "keras": tf[cls]}
    assert not drift, f"sub-layer attributes drifted apart: {drift}"


def test_same_module_level_functions_in_the_same_order(pair):
    pt = [f for f in _functions(pair["pt_file"]) if f not in pair["pt_functions"]]
    tf = [f for f in _functions(pair["tf_file"]) if f not in pair["tf_functions"]]
    assert pt == tf


def test_the_exception_lists_are_not_stale(pair):
    pt, tf = dict(pair["pt"]), dict(pair["tf"])
    if pair["pt_file"] == PT_FILE:
        for (cls, attr), renamed in RENAMED.items():
            assert attr in pt.get(cls, []) and renamed in tf.get(cls, []), (cls, attr)
        seen = {a for path in (PT_FILE, TF_FILE, PT_PRETRAINING, TF_PRETRAINING) for _, attrs in _classes(path)
                for a in attrs}
        assert sorted(a for a in IGNORED_ATTRIBUTES if a not in seen) == []
    assert all(c in pt for c in pair["pt_only"]) and all(c in tf for c in pair["tf_only"])
    pt_functions, tf_functions = set(_functions(pair["pt_file"])), set(_functions(pair["tf_file"]))
    assert sorted(f for f in pair["pt_functions"] if f not in pt_functions or f in tf_functions) == []
    assert sorted(f for f in pair["tf_functions"] if f not in tf_functions or f in pt_functions) == []


def test_checker_detects_a_drifted_attribute(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("class X:\n    def __init__(self):\n        self.dense = 1\n        self.LayerNorm = 2\n")
    b = tmp_path / "b.py"
    b.write_text("class X:\n    def __init__(self):\n        self.LayerNorm = 2\n        self.dense = 1\n")
    assert _classes(a) != _classes(b)
