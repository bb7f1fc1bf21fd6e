"""Output objects of the PyTorch models, with Hugging Face ``ModelOutput`` semantics.

Fields are reachable by attribute (``out.logits``), by key (``out["logits"]``) and by index
(``out[0]``). As in HF, fields that are ``None`` do not exist for keys, indices, iteration and
``to_tuple()``: ``out[0]`` is the loss when labels were given and the logits otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ModelOutput:
    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} (present: {', '.join(self.keys())})")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self):
        # Like HF's OrderedDict-based outputs: iteration yields the keys of the present fields.
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # (B, L, H)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # layers + 1 tensors (B, L, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # layers tensors (B, N', L, L)


@dataclass
class LogitsOutput(ModelOutput):
    """The fields every head with one logits tensor returns, in HF's order; the subclasses name the shape."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedLMOutput(LogitsOutput):
    """``logits`` (B, L, V)."""


@dataclass
class SequenceClassifierOutput(LogitsOutput):
    """``logits`` (B, num_labels)."""


@dataclass
class MultipleChoiceModelOutput(LogitsOutput):
    """``logits`` (B, num_choices)."""


@dataclass
class TokenClassifierOutput(LogitsOutput):
    """``logits`` (B, L, num_labels)."""


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # (B, L)
    end_logits: torch.Tensor | None = None  # (B, L)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PreTrainingOutput(ModelOutput):
    """Replaced-token detection (``ConvBertForPreTraining``); without labels only the discriminator's fields."""

    loss: torch.Tensor | None = None  # generator_weight * generator_loss + disc_weight * discriminator_loss
    generator_loss: torch.Tensor | None = None  # MLM cross-entropy, mean over the masked positions
    discriminator_loss: torch.Tensor | None = None  # BCE, mean over the real tokens
    generator_logits: torch.Tensor | None = None  # (M, V): at the masked positions only, in row-major order
    discriminator_logits: torch.Tensor | None = None  # (B, L): > 0 means "replaced"
    replaced_input_ids: torch.Tensor | None = None  # (B, L): the discriminator's input
    replaced_labels: torch.Tensor | None = None  # (B, L): 1 where the sampled id differs from the original
    hidden_states: tuple[torch.Tensor, ...] | None = None  # the discriminator's
    attentions: tuple[torch.Tensor, ...] | None = None  # the discriminator's
