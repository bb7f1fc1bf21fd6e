"""ConvBertConfig: the model's hyper-parameters, framework-free and HF ``config.json`` compatible.

Every field is declared below with the Hugging Face default. Unknown keys found in a
``config.json`` are kept in ``extra`` and written back, so a round trip through this class loses
nothing. Validation raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from convbert_common import checks, heads, shapes
from convbert_common.fileio import atomic_write_text

CONFIG_NAME = "config.json"
# A config.json is a few kB (id2label of a large label set: a few MB); anything far larger is not one.
MAX_CONFIG_BYTES = 64 << 20
MODEL_TYPE = "convbert"

# ``hidden_act`` names (Hugging Face's) and the formula each one is. Both frameworks implement every
# formula (``convbert_pt/activations.py``, ``convbert_tf/activations.py``) and look names up here.
ACTIVATIONS = {
    "gelu": "gelu",  # exact: x * Phi(x), with erf
    # gelu_new, gelu_pytorch_tanh and gelu_fast are all 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}
SUPPORTED_ACTIVATIONS = tuple(ACTIVATIONS)

# Keys HF writes that carry no meaning for the model here; accepted on read, not re-emitted twice.
_DTYPE_KEYS = ("torch_dtype", "dtype")


@dataclass
class ConvBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # HF's class default is 1; real BERT vocabularies have [PAD] at 0, so checkpoints and presets
    # set it explicitly.
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    embedding_size: int = 768
    head_ratio: int = 2
    conv_kernel_size: int = 9
    num_groups: int = 1
    classifier_dropout: float | None = None
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None
    dtype: str | None = None
    tie_word_embeddings: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        else:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.label2id is None:
            self.label2id = {v: k for k, v in self.id2label.items()}
        else:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def require_int(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"ConvBertConfig.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value < minimum:
                raise ValueError(f"ConvBertConfig.{name} must be >= {minimum}, got {value}")

        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "embedding_size",
            "num_labels",
            "head_ratio",
            "conv_kernel_size",
            "num_groups",
        ):
            require_int(name, 1)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            checks.check_dropout_rate(f"ConvBertConfig.{name}", value)
        for name in ("initializer_range", "layer_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"ConvBertConfig.{name} must be a positive finite number, got {value!r}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"ConvBertConfig.hidden_act {self.hidden_act!r} is not supported; "
                f"choose one of {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        if self.conv_kernel_size % 2 == 0:
            raise ValueError(
                f"ConvBertConfig.conv_kernel_size must be odd (the convolution is centred), got {self.conv_kernel_size}"
            )
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % self.num_groups:
                raise ValueError(
                    f"ConvBertConfig.num_groups ({self.num_groups}) must divide {name} ({getattr(self, name)})"
                )
        if self.pad_token_id is not None:
            require_int("pad_token_id", 0)
            if self.pad_token_id >= self.vocab_size:
                raise ValueError(
                    f"ConvBertConfig.pad_token_id ({self.pad_token_id}) must be < vocab_size ({self.vocab_size})"
                )
        if self.problem_type is not None and self.problem_type not in heads.PROBLEM_TYPES:
            raise ValueError(
                f"ConvBertConfig.problem_type must be one of {heads.PROBLEM_TYPES} or None, got {self.problem_type!r}"
            )
        if len(self.id2label) != self.num_labels:
            raise ValueError(
                f"ConvBertConfig.id2label has {len(self.id2label)} entries but num_labels is {self.num_labels}"
            )
        if self.dtype is not None and not isinstance(self.dtype, str):
            # The saved weights' dtype name, as HF writes it; a torch/NumPy dtype object here would
            # not survive JSON. Loading in another dtype is from_pretrained(..., dtype=...).
            raise ValueError(
                f"ConvBertConfig.dtype records the checkpoint's dtype name ('float32', 'bfloat16'...), got "
                f"{self.dtype!r}; to load the weights in a dtype, pass dtype= to the model's from_pretrained"
            )
        archs = self.architectures
        if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
            raise ValueError(f"ConvBertConfig.architectures must be a list of class names, got {archs!r}")
        shapes.check_head_config(self.hidden_size, self.num_attention_heads, self.head_ratio)

    # ------------------------------------------------------------------ derived sizes
    @property
    def heads(self) -> shapes.HeadShapes:
        """Head arithmetic (reduced heads, head size, widths); computed in ``shapes.py`` only."""
        return shapes.head_shapes(self.hidden_size, self.num_attention_heads, self.head_ratio)

    # ------------------------------------------------------------------ dict / JSON
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "id2label":
                value = {str(k): v for k, v in value.items()}
            if f.name in ("architectures", "dtype") and value is None:
                continue
            out[f.name] = value
        out.update(self.extra)
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config dict", **overrides: Any) -> ConvBertConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "num_labels" in overrides and "id2label" not in overrides:
            # HF semantics: a new label count regenerates the label names.
            old = data.get("id2label")
            if old is None or len(old) != overrides["num_labels"]:
                data = {k: v for k, v in data.items() if k not in ("id2label", "label2id")}
        data = {**data, **overrides}
        model_type = data.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"{source}: model_type is {model_type!r}, expected {MODEL_TYPE!r}")
        # transformers < 4.56 wrote torch_dtype, newer versions write dtype: one field here.
        dtype = None
        for key in _DTYPE_KEYS:
            if key in data:
                dtype = data.pop(key) or dtype
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "dtype"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**kwargs, dtype=dtype, extra=extra)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"{source}: malformed field value ({exc})") from None

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> ConvBertConfig:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at {path}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except IsADirectoryError:
            raise IsADirectoryError(f"{path} is a directory, not a config file") from None
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is larger than {MAX_CONFIG_BYTES // (1 << 20)} MiB: not a model config")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"{path}: the JSON is nested too deeply to be a model config") from None
        return cls.from_dict(data, source=path, **overrides)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> ConvBertConfig:
        """Read ``config.json`` from a checkpoint directory, a JSON file given directly, or a Hub id.

        Hub ids (``"org/name"``) take HF's ``revision``, ``cache_dir``, ``local_files_only``,
        ``token``, ``subfolder`` (see ``convbert_common.hub``); only ``config.json`` is downloaded.
        """
        from convbert_common import hub

        options = hub.HubOptions.pop_from(overrides)
        path = os.fspath(path)
        local = hub.local_path(path, options)
        if local is None and hub.is_repo_id(path):
            path = hub.resolve_file(path, CONFIG_NAME, options)
        elif local is not None:
            path = os.path.join(local, CONFIG_NAME) if os.path.isdir(local) else local
        return cls.from_json_file(path, **overrides)

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any], caller: str) -> None:
        """Raise TypeError for keyword arguments of ``caller`` that are not config fields.

        ``from_pretrained(dir, **overrides)`` passes its leftover keywords here: a misspelt field
        must fail, not land silently in ``extra``.
        """
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(
                f"{caller} got unexpected keyword argument(s) {', '.join(unknown)} "
                "(neither a loading option nor a ConvBertConfig field)"
            )

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        target = os.path.join(directory, CONFIG_NAME)
        atomic_write_text(target, self.to_json_string())
        return target

    def replace(self, **changes: Any) -> ConvBertConfig:
        """A validated copy with some fields changed (unknown names go to ``extra``)."""
        return type(self).from_dict(self.to_dict(), **changes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConvBertConfig) and self.to_dict() == other.to_dict()
