"""The one tiny model config of the test suite, shared by the common, PyTorch, Keras and cross tests.

Tests that need another size pass it as an override (``tiny_config(num_groups=2)``), so every
model built in a test differs from this base only where the test says so.
"""

from __future__ import annotations

from convbert_common.config import ConvBertConfig

# vocab 99, H 32, E 16 (!= H, so the embedding projection exists), 2 layers, 4 heads -> 2 attention
# heads of 8 after head_ratio 2 and a 16-wide span conv, intermediate 36 (divisible by 2 and 4
# groups), K 5, 32 positions. initializer_range 0.2: weights large enough that a wrong mapping or a
# missing term moves the outputs far beyond every tolerance, and that plain SGD fits the toy tasks
# in a few steps. 3 labels: not the 2 of question answering, so a head that reads the wrong count
# fails. Dropout off: tests that need it turn it on.
TINY_FIELDS = dict(
    vocab_size=99, hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4, head_ratio=2,
    intermediate_size=36, conv_kernel_size=5, num_groups=1, max_position_embeddings=32, type_vocab_size=2,
    pad_token_id=0, initializer_range=0.2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    num_labels=3,
)


def tiny_config(**overrides) -> ConvBertConfig:
    """The shared tiny config, with ``overrides`` applied."""
    return ConvBertConfig(**{**TINY_FIELDS, **overrides})


def head_config(head: str, **overrides) -> ConvBertConfig:
    """``tiny_config`` for ``head``: question answering gets its 2 labels (start and end logits)."""
    if head == "question_answering":
        overrides.setdefault("num_labels", 2)
    return tiny_config(**overrides)
