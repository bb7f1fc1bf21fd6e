"""THE weight table: every parameter's canonical name, its names in the other formats, and layouts.

The canonical name and layout are Hugging Face's PyTorch ``state_dict`` (``convbert.`` prefix on
head models, none on the bare ``ConvBertModel``). For every canonical tensor the table gives:

- its shape, computed from the config (shapes are checked before anything is assigned);
- the Keras variable (the sub-layer attribute path, mirroring the PyTorch module path, and the
  variable's attribute name on that layer) and the layout transform to it;
- the name and layout in Hugging Face's ``tf_model.h5`` (path inside the model scope);
- the name and layout in the authors' original TF1 checkpoints (``electra/...``).

Nothing else in the library knows a weight name. Conversions look names up here and never guess
a transpose from a rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from convbert_common import heads, shapes
from convbert_common.config import ConvBertConfig

BASE_PREFIX = heads.BASE_PREFIX

# Keys that may appear in checkpoints but are not parameters (buffers of old HF versions).
IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")

# The MLM output projection is the word-embedding matrix; checkpoints may repeat it under this name.
TIED_LM_WEIGHT = "generator_lm_head.weight"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


@dataclass(frozen=True)
class WeightSpec:
    name: str  # canonical name (HF PyTorch state_dict key)
    shape: tuple[int, ...]  # canonical shape
    keras_layer: str  # attribute path of the Keras sub-layer, "/"-separated (mirrors the PT module path)
    keras_variable: str  # attribute name of the variable on that Keras layer
    keras_layout: str  # layouts.LAYOUTS key, canonical -> Keras
    hf_tf: str  # name inside the HF tf_model.h5 model scope (no ":0")
    hf_tf_layout: str
    tf1: str | None  # name in the authors' TF1 checkpoint (None: no counterpart)
    tf1_layout: str
    is_head: bool  # belongs to a task head (may be missing when the head is new)


def _prefix(name: str, prefix: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _linear(
    pt: str, keras: str, hf_tf: str, tf1: str | None, out_dim: int, in_dim: int, head: bool
) -> list[WeightSpec]:
    return [
        WeightSpec(f"{pt}.weight", (out_dim, in_dim), keras, "kernel", "transpose", f"{hf_tf}/kernel", "transpose",
                   f"{tf1}/kernel" if tf1 else None, "transpose", head),
        WeightSpec(f"{pt}.bias", (out_dim,), keras, "bias", "identity", f"{hf_tf}/bias", "identity",
                   f"{tf1}/bias" if tf1 else None, "identity", head),
    ]


def _grouped(
    pt: str, keras: str, hf_tf: str, tf1: str | None, out_dim: int, in_dim: int, groups: int
) -> list[WeightSpec]:
    if groups == 1:
        return _linear(pt, keras, hf_tf, tf1, out_dim, in_dim, False)
    # The original code names its grouped dense layers "g_dense".
    tf1_g = tf1.rsplit("/", 1)[0] + "/g_dense" if tf1 else None
    return [
        WeightSpec(f"{pt}.weight", (groups, in_dim // groups, out_dim // groups), keras, "kernel", "identity",
                   f"{hf_tf}/kernel", "grouped_hf_tf", f"{tf1_g}/kernel" if tf1_g else None, "identity", False),
        WeightSpec(f"{pt}.bias", (out_dim,), keras, "bias", "identity", f"{hf_tf}/bias", "identity",
                   f"{tf1_g}/bias" if tf1_g else None, "identity", False),
    ]


def _layer_norm(pt: str, keras: str, hf_tf: str, tf1: str | None, dim: int, head: bool) -> list[WeightSpec]:
    return [
        WeightSpec(f"{pt}.weight", (dim,), keras, "gamma", "identity", f"{hf_tf}/gamma", "identity",
                   f"{tf1}/gamma" if tf1 else None, "identity", head),
        WeightSpec(f"{pt}.bias", (dim,), keras, "beta", "identity", f"{hf_tf}/beta", "identity",
                   f"{tf1}/beta" if tf1 else None, "identity", head),
    ]


def backbone_specs(config: ConvBertConfig, *, tf1_scope: str = "electra") -> list[WeightSpec]:
    """Specs of the bare ``ConvBertModel`` (names without prefix), in module order."""
    c = config
    hs = c.heads
    E, H, I = c.embedding_size, c.hidden_size, c.intermediate_size
    A, K = hs.all_head_size, c.conv_kernel_size
    # The TF1 pre-training code shares one embedding scope between generator and discriminator.
    emb_tf1 = "electra/embeddings"
    specs = [
        WeightSpec("embeddings.word_embeddings.weight", (c.vocab_size, E), "embeddings/word_embeddings", "embeddings",
                   "identity", "convbert/embeddings/word_embeddings/weight", "identity",
                   f"{emb_tf1}/word_embeddings", "identity", False),
        WeightSpec("embeddings.position_embeddings.weight", (c.max_position_embeddings, E),
                   "embeddings/position_embeddings", "embeddings", "identity",
                   "convbert/embeddings/position_embeddings/embeddings", "identity",
                   f"{emb_tf1}/position_embeddings", "identity", False),
        WeightSpec("embeddings.token_type_embeddings.weight", (c.type_vocab_size, E),
                   "embeddings/token_type_embeddings", "embeddings", "identity",
                   "convbert/embeddings/token_type_embeddings/embeddings", "identity",
                   f"{emb_tf1}/token_type_embeddings", "identity", False),
        *_layer_norm("embeddings.LayerNorm", "embeddings/LayerNorm", "convbert/embeddings/LayerNorm",
                     f"{emb_tf1}/LayerNorm", E, False),
    ]
    if E != H:
        specs += _linear("embeddings_project", "embeddings_project", "convbert/embeddings_project",
                         f"{tf1_scope}/embeddings_project", H, E, False)
    for i in range(c.num_hidden_layers):
        pt = f"encoder.layer.{i}"
        kl = f"encoder/layer/{i}"
        tf = f"convbert/encoder/layer_._{i}"
        t1 = f"{tf1_scope}/encoder/layer_{i}"
        sa, ksa = f"{pt}.attention.self", f"{kl}/attention/self"
        tsa, t1sa = f"{tf}/attention/self", f"{t1}/attention/self"
        specs += _linear(f"{sa}.query", f"{ksa}/query", f"{tsa}/query", f"{t1sa}/query", A, H, False)
        specs += _linear(f"{sa}.key", f"{ksa}/key", f"{tsa}/key", f"{t1sa}/key", A, H, False)
        specs += _linear(f"{sa}.value", f"{ksa}/value", f"{tsa}/value", f"{t1sa}/value", A, H, False)
        sep, ksep, tsep, t1sep = (f"{sa}.key_conv_attn_layer", f"{ksa}/key_conv_attn_layer",
                                  f"{tsa}/key_conv_attn_layer", f"{t1sa}/conv_attn_key")
        specs += [
            WeightSpec(f"{sep}.depthwise.weight", (H, 1, K), ksep, "depthwise_kernel", "depthwise",
                       f"{tsep}/depthwise_kernel", "depthwise", f"{t1sep}/depthwise_kernel", "depthwise", False),
            WeightSpec(f"{sep}.pointwise.weight", (A, H, 1), ksep, "pointwise_kernel", "pointwise",
                       f"{tsep}/pointwise_kernel", "pointwise", f"{t1sep}/pointwise_kernel", "pointwise", False),
            WeightSpec(f"{sep}.bias", (A, 1), ksep, "bias", "column_bias", f"{tsep}/bias", "column_bias",
                       f"{t1sep}/bias", "column_bias", False),
        ]
        specs += _linear(f"{sa}.conv_kernel_layer", f"{ksa}/conv_kernel_layer", f"{tsa}/conv_kernel_layer",
                         f"{t1sa}/conv_attn_kernel", shapes.conv_kernel_width(hs.num_heads, K), A, False)
        specs += _linear(f"{sa}.conv_out_layer", f"{ksa}/conv_out_layer", f"{tsa}/conv_out_layer",
                         f"{t1sa}/conv_attn_point", A, H, False)
        # Keras reserves the attribute name `output`: its sub-layers are `attention_output` / `layer_output`.
        ao, kao = f"{pt}.attention.output", f"{kl}/attention/attention_output"
        tao, t1ao = f"{tf}/attention/output", f"{t1}/attention/output"
        specs += _linear(f"{ao}.dense", f"{kao}/dense", f"{tao}/dense", f"{t1ao}/dense", H, hs.mixed_size, False)
        specs += _layer_norm(f"{ao}.LayerNorm", f"{kao}/LayerNorm", f"{tao}/LayerNorm", f"{t1ao}/LayerNorm", H, False)
        specs += _grouped(f"{pt}.intermediate.dense", f"{kl}/intermediate/dense", f"{tf}/intermediate/dense",
                          f"{t1}/intermediate/dense", I, H, c.num_groups)
        specs += _grouped(f"{pt}.output.dense", f"{kl}/layer_output/dense", f"{tf}/output/dense",
                          f"{t1}/output/dense", H, I, c.num_groups)
        specs += _layer_norm(f"{pt}.output.LayerNorm", f"{kl}/layer_output/LayerNorm", f"{tf}/output/LayerNorm",
                             f"{t1}/output/LayerNorm", H, False)
    return specs


def _size(config: ConvBertConfig, dim: str | int) -> int:
    return dim if isinstance(dim, int) else int(getattr(config, dim))


def head_specs(config: ConvBertConfig, head: str | heads.Task) -> list[WeightSpec]:
    """Specs of the task head's own parameters (names as in the HF state dict), from its record."""
    specs: list[WeightSpec] = []
    for t in heads.get(head).head_tensors:
        path = t.module.replace(".", "/")
        if t.kind == "linear":
            specs += _linear(t.module, path, path, t.tf1, _size(config, t.out_dim), _size(config, t.in_dim), True)
        elif t.kind == "layer_norm":
            specs += _layer_norm(t.module, path, path, t.tf1, _size(config, t.out_dim), True)
        elif t.kind == "bias":
            specs.append(WeightSpec(f"{t.module}.bias", (_size(config, t.out_dim),), path, "bias", "identity",
                                    f"{path}/bias", "identity", t.tf1, "identity", True))
        else:
            raise ValueError(f"head tensor {t.module}: unknown kind {t.kind!r}")
    return specs


def model_specs(config: ConvBertConfig, head: str | heads.Task, *, tf1_scope: str | None = None) -> list[WeightSpec]:
    """Every parameter of the model class for ``head``, with canonical names as in its state dict.

    ``tf1_scope`` is the TF1 scope the backbone's names are read from (default: the task's own,
    ``generator`` for the masked LM, ``electra`` otherwise).
    """
    task = heads.get(head)
    prefix = task.prefix
    out = []
    for s in backbone_specs(config, tf1_scope=tf1_scope or task.tf1_scope):
        out.append(
            WeightSpec(
                _prefix(s.name, prefix), s.shape, (f"{BASE_PREFIX}/{s.keras_layer}" if prefix else s.keras_layer),
                s.keras_variable, s.keras_layout, s.hf_tf, s.hf_tf_layout, s.tf1, s.tf1_layout, s.is_head,
            )
        )
    return out + head_specs(config, task)


def strip_base_prefix(name: str) -> str:
    return name[len(BASE_PREFIX) + 1:] if name.startswith(BASE_PREFIX + ".") else name


def is_ignored(name: str) -> bool:
    return strip_base_prefix(name) in IGNORED_KEYS


def parameter_count(config: ConvBertConfig, head: str | heads.Task) -> int:
    """The number of parameters of ``head``'s model, computed from the config without building it.

    Every encoder layer has the same tensors, so one layer's specs are counted and multiplied: the
    cost does not grow with ``num_hidden_layers``.
    """
    one = config.replace(num_hidden_layers=1)
    sizes = [(s.name, math.prod(s.shape)) for s in model_specs(one, head)]
    per_layer = sum(n for name, n in sizes if strip_base_prefix(name).startswith("encoder.layer.0."))
    return sum(n for _, n in sizes) - per_layer + per_layer * config.num_hidden_layers


def check_parameter_count(config: ConvBertConfig, head: str | heads.Task, max_params: int | None, *,
                          source: str = "config") -> int:
    """Raise ValueError if ``head``'s model would have more than ``max_params`` parameters; returns the count.

    For building a model from a config alone (no checkpoint to compare with): a crafted config
    with a million layers is refused before anything is allocated.
    """
    count = parameter_count(config, head)
    if max_params is not None and count > max_params:
        raise ValueError(
            f"{source}: a {heads.get(head).class_name} of this config has {count:,} parameters "
            f"(num_hidden_layers={config.num_hidden_layers}, hidden_size={config.hidden_size}, "
            f"vocab_size={config.vocab_size}), more than max_params={max_params:,}"
        )
    return count
