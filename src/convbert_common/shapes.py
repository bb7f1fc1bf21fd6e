"""Head arithmetic of the mixed attention block: the only place it is computed.

ConvBERT keeps ``num_attention_heads // head_ratio`` self-attention heads (at least one) and as
many span-based dynamic convolution heads; each branch is ``A = N' * D`` wide and the block
outputs ``2A`` channels, attention heads first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadShapes:
    num_heads: int  # N': self-attention heads == dynamic-convolution heads
    head_size: int  # D
    all_head_size: int  # A = N' * D, width of each branch
    mixed_size: int  # 2A, width of the concatenated block output


def reduced_heads(num_attention_heads: int, head_ratio: int) -> int:
    return max(1, num_attention_heads // head_ratio)


def head_shapes(hidden_size: int, num_attention_heads: int, head_ratio: int) -> HeadShapes:
    n = reduced_heads(num_attention_heads, head_ratio)
    d = (hidden_size // n) // 2
    return HeadShapes(num_heads=n, head_size=d, all_head_size=n * d, mixed_size=2 * n * d)


def check_head_config(hidden_size: int, num_attention_heads: int, head_ratio: int) -> None:
    """Raise ValueError unless the mixed block maps ``hidden_size`` back onto itself."""
    n = reduced_heads(num_attention_heads, head_ratio)
    if hidden_size % (2 * n):
        raise ValueError(
            f"ConvBertConfig.hidden_size ({hidden_size}) must be divisible by 2 * {n}: "
            f"num_attention_heads={num_attention_heads} // head_ratio={head_ratio} gives {n} attention heads "
            f"and {n} convolution heads of equal size"
        )


def conv_kernel_width(num_heads: int, kernel_size: int) -> int:
    """Output width of ``conv_kernel_layer``: one K-tap kernel per convolution head."""
    return num_heads * kernel_size


def conv_padding(kernel_size: int) -> int:
    """Zero padding on each side of the centred convolution."""
    return (kernel_size - 1) // 2


def edge_window(kernel_size: int) -> int:
    """How many positions at either end of the sequence the mixed block's output at that end reads
    through its convolution branch: the depthwise key convolution and the span convolution over the
    values each reach ``conv_padding`` positions inward, both from the same centre, so p + 1. The
    attention heads still read every position."""
    return conv_padding(kernel_size) + 1
