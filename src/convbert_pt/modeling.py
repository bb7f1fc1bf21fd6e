"""ConvBERT for PyTorch.

B batch, L sequence, E embedding size, H hidden size, N' attention heads after head_ratio,
D head size, A = N'*D, K conv kernel size, G groups, V vocab, I intermediate size.

Embeddings -> mixed attention (N' self-attention heads beside N' span-based dynamic convolution
heads) -> feed-forward, repeated; then the task heads. Module and parameter names are Hugging
Face's, so ``state_dict()`` keys are the canonical names of ``convbert_common.weight_map``; the
Keras file ``convbert_tf/modeling.py`` has the same classes in the same order.

Fast paths, each chosen in one line with the plain path beside it: attention through
``F.scaled_dot_product_attention`` unless attention maps or a head mask are asked for; the dynamic
convolution by shift-and-accumulate (``sdconv.py``); the depthwise convolution channels-last.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from convbert_common import checks, cpu, heads, shapes
from convbert_common.config import ConvBertConfig
from convbert_pt import gemm, losses
from convbert_pt.activations import Activation, get_activation
from convbert_pt.losses import tensor_info
from convbert_pt.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from convbert_pt.recompute import activation_dense, attention_probs, dropout_attention
from convbert_pt.sdconv import span_dynamic_conv

HALF_DTYPES = (torch.float16, torch.bfloat16)

Tensor = torch.Tensor | None  # an optional tensor argument

# ----------------------------------------------------------------------------------- pure functions


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (..., I), weight (G, I/G, O/G), bias (O,) -> (..., O): G independent dense maps side by side."""
    G, group_in, group_out = weight.shape
    lead = x.shape[:-1]
    x = x.reshape(-1, G, group_in).transpose(0, 1)  # (G, M, I/G)
    y = torch.bmm(x, weight)  # (G, M, O/G)
    y = y.transpose(0, 1).reshape(*lead, G * group_out)  # (..., O)
    return y + bias


def edge_rows(x: torch.Tensor, position: int | None) -> torch.Tensor:
    """x (B, L, ...) -> (B, 1, ...), the first (``position`` 0) or last (-1) row; x when ``position`` is None."""
    if position is None:
        return x
    return x[:, :1] if position == 0 else x[:, -1:]


def edge_window(x: torch.Tensor, position: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, L, H) -> the ``width`` rows at the start (``position`` 0) or end (-1) of the sequence, zero
    rows standing in past its other end when L < width: (B, width, H), and which rows are real (width,).

    The zero rows go on before the slice, so it never reads past the end: neither the window's length nor
    the slice depends on L, and a traced graph carries no guard on L.
    """
    if position not in (0, -1):
        raise ValueError(f"position must be 0 (first), -1 (last) or None, got {position!r}")
    B, L, H = x.shape
    zeros = x.new_zeros(B, width, H)
    rows = torch.arange(width, device=x.device)
    if position == 0:
        return torch.cat([x, zeros], dim=1)[:, :width], rows < L  # (B, width, H)
    return torch.cat([zeros, x], dim=1)[:, -width:], rows >= width - L  # (B, width, H)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    head_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention.

    query, key, value (B, N', L, D); mask (B, 1, 1, L) with 1 for tokens to attend to, or None;
    head_mask broadcastable to (B, N', L, L). Returns the context (B, N', L, D) and, when
    ``need_weights``, the probabilities (B, N', L, L) after dropout and head mask.
    """
    additive = None
    if mask is not None:
        # The reference's additive mask: 0 where attended, the dtype's most negative value elsewhere.
        additive = (1.0 - mask.to(query.dtype)) * torch.finfo(query.dtype).min  # (B, 1, 1, L)
    if not need_weights and head_mask is None:
        if dropout_p > 0.0 and query.device.type == "cpu" and torch.is_grad_enabled() and not _is_compiling():
            # CPU SDPA has no dropout kernel: its math path would keep three (B, N', L, L) tensors for
            # backward. Under torch.compile the partitioner chooses what to recompute itself.
            return dropout_attention(query, key, value, additive, dropout_p), None
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=additive, dropout_p=dropout_p)
        return context, None
    probs = attention_probs(query, key, additive)  # (B, N', L, L)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    if head_mask is not None:
        probs = probs * head_mask
    return torch.matmul(probs, value), probs  # (B, N', L, D), (B, N', L, L)


# ----------------------------------------------------------------------------------- input checks


def _is_compiling() -> bool:
    return torch.compiler.is_compiling()


def _bf16_on_cpu(t: torch.Tensor) -> bool:
    """Whether this forward runs bfloat16 matmuls on the CPU (a bf16 model, or bf16 autocast)."""
    if t.device.type != "cpu" or _is_compiling():
        return False
    return t.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _info(t: torch.Tensor | None) -> checks.TensorInfo | None:
    return None if t is None else tensor_info(t)


def _check_ids(name: str, ids: torch.Tensor, upper: int, upper_name: str) -> None:
    """Value checks on index tensors, before any lookup.

    Eager: ValueError naming the id. Compiled, the values are unknown while tracing: an
    asynchronous assert in the graph raises with the bounds.
    """
    if ids.numel() == 0:
        return
    if _is_compiling():
        valid = (ids >= 0) & (ids < upper)
        torch._assert_async(valid.all(), checks.id_range_message(name, upper, upper_name))
        return
    checks.check_id_range(name, int(ids.min()), int(ids.max()), upper, upper_name)


def _check_inputs(
    config: ConvBertConfig,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
) -> None:
    """Validate the backbone's inputs: shapes and dtypes (``checks``), and id ranges in eager mode."""
    checks.check_inputs(config, _info(input_ids), _info(attention_mask), _info(token_type_ids), _info(position_ids),
                        _info(inputs_embeds))
    if input_ids is not None:
        _check_ids("input_ids", input_ids, config.vocab_size, "vocab_size")
    if token_type_ids is not None:
        _check_ids("token_type_ids", token_type_ids, config.type_vocab_size, "type_vocab_size")
    if position_ids is not None:
        _check_ids("position_ids", position_ids, config.max_position_embeddings, "max_position_embeddings")


# ----------------------------------------------------------------------------------- embeddings


class ConvBertEmbeddings(nn.Module):
    """word + position + token type -> LayerNorm -> dropout, all E wide."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, L, E)
        length = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = torch.arange(length, device=inputs_embeds.device).unsqueeze(0)  # (1, L)
        position = self.position_embeddings(position_ids)  # (1 or B, L, E)
        if token_type_ids is None:
            # Every token is in segment 0: broadcast row 0 instead of gathering it B*L times.
            token_type = self.token_type_embeddings.weight[0]  # (E,)
        else:
            token_type = self.token_type_embeddings(token_type_ids)  # (B, L, E)
        if inputs_embeds.dtype in HALF_DTYPES:
            # A half-precision model: sum the three rows in float32 and normalise there (the LayerNorm
            # stays float32, see ConvBertPreTrainedModel), so that only the LayerNorm's output is rounded.
            embeddings = inputs_embeds.float() + position.float() + token_type.float()
            return self.dropout(self.LayerNorm(embeddings).to(inputs_embeds.dtype))
        embeddings = inputs_embeds + position + token_type
        return self.dropout(self.LayerNorm(embeddings))


# ----------------------------------------------------------------------------------- mixed attention


class SeparableConv1D(nn.Module):
    """Depthwise (K taps per channel) then pointwise (H -> A) convolution over the sequence."""

    def __init__(self, config: ConvBertConfig, input_filters: int, output_filters: int, kernel_size: int):
        super().__init__()
        self.depthwise = nn.Conv1d(
            input_filters, input_filters, kernel_size, groups=input_filters,
            padding=shapes.conv_padding(kernel_size), bias=False,
        )
        self.pointwise = nn.Conv1d(input_filters, output_filters, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(output_filters, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, A)."""
        H, K = self.depthwise.weight.shape[0], self.depthwise.weight.shape[-1]
        # Channels-last all the way: the (B, H, 1, L) view below is already NHWC-contiguous, so the
        # depthwise conv reads the activations in place and its output transposes back for free.
        x = hidden_states.transpose(1, 2).unsqueeze(2)  # (B, H, 1, L)
        # view (not unsqueeze): the weight's gradient then comes back with the parameter's own strides,
        # which DDP's gradient buckets expect.
        weight = self.depthwise.weight.view(H, 1, 1, K)  # (H, 1, 1, K)
        x = F.conv2d(x, weight, padding=(0, self.depthwise.padding[0]), groups=H)
        x = x.squeeze(2).transpose(1, 2)  # (B, L, H)
        # A 1x1 convolution is a dense layer on the channels: (A, H, 1) -> (A, H), bias (A, 1) -> (A,).
        return gemm.linear(x, self.pointwise.weight.squeeze(-1), self.bias.squeeze(-1))


class ConvBertSelfAttention(nn.Module):
    """N' self-attention heads and N' span-based dynamic convolution heads on the same input."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.heads = config.heads
        H, A, K = config.hidden_size, self.heads.all_head_size, config.conv_kernel_size
        self.kernel_size = K
        self.query = gemm.Linear(H, A)
        self.key = gemm.Linear(H, A)
        self.value = gemm.Linear(H, A)
        self.key_conv_attn_layer = SeparableConv1D(config, H, A, K)
        self.conv_kernel_layer = gemm.Linear(A, shapes.conv_kernel_width(self.heads.num_heads, K))
        self.conv_out_layer = gemm.Linear(H, A)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        # span_dynamic_conv implementation: one of sdconv.IMPLS ("auto" unless set_sdconv_impl says)
        self.sdconv_impl = "auto"

    def forward(self, hidden_states: torch.Tensor, attention_mask: Tensor = None, head_mask: Tensor = None,
                output_attentions: bool = False, position: int | None = None) -> tuple[torch.Tensor, Tensor]:
        """(B, L, H) -> (B, Q, 2A), Q = L; ``position`` 0 or -1: the first or last position only, Q = 1
        (the queries and the convolution branch then run on the edge window alone)."""
        B, L, _ = hidden_states.shape
        N, D, K = self.heads.num_heads, self.heads.head_size, self.kernel_size
        window, real = hidden_states, None  # (B, W, H), W = L
        if position is not None:
            window, real = edge_window(hidden_states, position, shapes.edge_window(K))  # (B, W, H)
        W = window.shape[1]
        mixed_query = self.query(window)  # (B, W, A)
        key = self.key(hidden_states).view(B, L, N, D).transpose(1, 2)  # (B, N', L, D)
        value = self.value(hidden_states).view(B, L, N, D).transpose(1, 2)  # (B, N', L, D)

        # Convolution branch: a K-tap kernel per token and head, predicted from the span around it.
        span_key = self.key_conv_attn_layer(window)  # (B, W, A)
        kernel_logits = self.conv_kernel_layer(span_key * mixed_query).view(B, W, N, K)  # (B, W, N', K)
        conv_values = self.conv_out_layer(window).view(B, W, N, D)  # (B, W, N', D)
        if real is not None:  # past the sequence the values are the convolution's zero padding, not the bias
            conv_values = conv_values * real.to(conv_values.dtype)[:, None, None]
        conv = span_dynamic_conv(conv_values, kernel_logits, impl=self.sdconv_impl)  # (B, W, N', D)
        conv, mixed_query = edge_rows(conv, position), edge_rows(mixed_query, position)  # (B, Q, ...)
        Q = mixed_query.shape[1]
        query = mixed_query.view(B, Q, N, D).transpose(1, 2)  # (B, N', Q, D)

        dropout_p = self.dropout.p if self.training else 0.0
        context, probs = attention(query, key, value, attention_mask, head_mask, dropout_p, output_attentions)
        context = context.transpose(1, 2)  # (B, Q, N', D)
        # Attention heads first, convolution heads second.
        mixed = torch.cat([context, conv], dim=2).reshape(B, Q, self.heads.mixed_size)  # (B, Q, 2A)
        return mixed, probs


class ConvBertSelfOutput(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = gemm.Linear(config.heads.mixed_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """(B, L, 2A), residual (B, L, H) -> (B, L, H)."""
        if (self.training and self.dropout.p > 0) or not gemm.fusable(self.dense):
            return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)
        return self.LayerNorm(gemm.linear_residual(hidden_states, self.dense.weight, self.dense.bias, input_tensor))


class ConvBertAttention(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.self = ConvBertSelfAttention(config)
        self.output = ConvBertSelfOutput(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Tensor = None, head_mask: Tensor = None,
                output_attentions: bool = False, position: int | None = None) -> tuple[torch.Tensor, Tensor]:
        mixed, probs = self.self(hidden_states, attention_mask, head_mask, output_attentions, position)
        return self.output(mixed, edge_rows(hidden_states, position)), probs


# ----------------------------------------------------------------------------------- feed-forward


class GroupedLinearLayer(nn.Module):
    """A dense layer split into G groups along the input and output channels."""

    def __init__(self, input_size: int, output_size: int, num_groups: int):
        super().__init__()
        self.num_groups = num_groups
        self.weight = nn.Parameter(torch.empty(num_groups, input_size // num_groups, output_size // num_groups))
        self.bias = nn.Parameter(torch.zeros(output_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return grouped_linear(hidden_states, self.weight, self.bias)


def _feed_forward_dense(config: ConvBertConfig, input_size: int, output_size: int) -> nn.Module:
    """The feed-forward's dense layer: grouped when the config has groups."""
    if config.num_groups == 1:
        return gemm.Linear(input_size, output_size)
    return GroupedLinearLayer(input_size, output_size, config.num_groups)


class ConvBertIntermediate(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = _feed_forward_dense(config, config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, I)."""
        if not gemm.fusable(self.dense):
            return self.intermediate_act_fn(self.dense(hidden_states))
        return gemm.linear_activation(hidden_states, self.dense.weight, self.dense.bias, self.intermediate_act_fn)


class ConvBertOutput(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = _feed_forward_dense(config, config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, input_tensor: torch.Tensor, activation: Activation | None = None
    ) -> torch.Tensor:
        """(B, L, I), residual (B, L, H) -> (B, L, H).

        Given ``activation``, hidden_states is the pre-activation: the activation is applied here and
        recomputed in backward rather than its (B, L, I) output kept (``recompute.activation_dense``).
        """
        if activation is None and gemm.fusable(self.dense) and not (self.training and self.dropout.p > 0):
            out = gemm.linear_residual(hidden_states, self.dense.weight, self.dense.bias, input_tensor)
            return self.LayerNorm(out)
        if activation is None:
            out = self.dense(hidden_states)
        elif isinstance(self.dense, GroupedLinearLayer):
            out = activation_dense(hidden_states, self.dense.weight, self.dense.bias, activation, grouped_linear)
        else:
            out = activation_dense(hidden_states, self.dense.weight, self.dense.bias, activation, gemm.linear)
        return self.LayerNorm(self.dropout(out) + input_tensor)


class ConvBertLayer(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.attention = ConvBertAttention(config)
        self.intermediate = ConvBertIntermediate(config)
        self.output = ConvBertOutput(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Tensor = None, head_mask: Tensor = None,
                output_attentions: bool = False, position: int | None = None) -> tuple[torch.Tensor, Tensor]:
        """(B, L, H) -> (B, L, H); (B, 1, H) at ``position`` (0 or -1) alone."""
        attention_output, probs = self.attention(hidden_states, attention_mask, head_mask, output_attentions,
                                                 position)
        if torch.is_grad_enabled() and not _is_compiling():
            # Training: keep the feed-forward's pre-activation only; ConvBertOutput applies the
            # activation and recomputes it in backward.
            pre_activation = self.intermediate.dense(attention_output)
            return self.output(pre_activation, attention_output, self.intermediate.intermediate_act_fn), probs
        return self.output(self.intermediate(attention_output), attention_output), probs


class ConvBertEncoder(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([ConvBertLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False
        self._checkpoint_kwargs = {"use_reentrant": False}  # torch.utils.checkpoint options

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        output_position: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """hidden_states (B, L, H); attention_mask (B, 1, 1, L); head_mask (layers, 1, N', 1, 1).

        ``output_position`` (0 or -1): the last layer computes that position only, and the last hidden
        state is (B, 1, H); what comes out there is what the full layer gives at that position.
        """
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            layer_head_mask = head_mask[i] if head_mask is not None else None
            position = output_position if i == last else None
            if self.gradient_checkpointing and self.training:
                hidden_states, probs = torch.utils.checkpoint.checkpoint(
                    layer, hidden_states, attention_mask, layer_head_mask, output_attentions, position,
                    **self._checkpoint_kwargs,
                )
            else:
                hidden_states, probs = layer(hidden_states, attention_mask, layer_head_mask, output_attentions,
                                             position)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (probs,)
        return hidden_states, all_hidden, all_attentions


# ----------------------------------------------------------------------------------- base class


class ConvBertPreTrainedModel(nn.Module):
    """Config handling, initialisation, embeddings helpers, and loading / saving through ``io.py``."""

    base_model_prefix = "convbert"
    task = heads.MODEL  # the task record of the class (convbert_common.heads)

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        if not isinstance(config, ConvBertConfig):
            raise TypeError(f"{type(self).__name__} needs a ConvBertConfig, got {type(config).__name__}")
        config.validate()
        self.config = config

    # -------------------------------------------------------------- initialisation
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, SeparableConv1D):
            module.depthwise.weight.normal_(mean=0.0, std=std)
            module.pointwise.weight.normal_(mean=0.0, std=std)
            module.bias.zero_()
        elif isinstance(module, GroupedLinearLayer):
            module.weight.normal_(mean=0.0, std=std)
            module.bias.zero_()
        elif isinstance(module, ConvBertMaskedLMHead):
            module.bias.zero_()

    def post_init(self) -> None:
        self.apply(self._init_weights)

    # -------------------------------------------------------------- half precision
    def float32_parameter_names(self) -> set[str]:
        """The parameters a half-precision model keeps in float32: the LayerNorms' gains and biases.

        Each gain scales one channel of every token's stream, so rounding it to bf16 (2^-9 relative)
        is a bias shared by every token and layer: on the reference fixtures the largest share of a
        bf16 model's logit error. They are 0.1% of the weights; PyTorch's LayerNorm takes a
        half-precision input with float32 parameters and normalises in float32, as autocast does.
        """
        return {f"{prefix}.{name}" if prefix else name for prefix, module in self.named_modules()
                if isinstance(module, nn.LayerNorm) for name, _ in module.named_parameters(recurse=False)}

    def _apply(self, fn, recurse=True):
        # Module.to / .half() / .bfloat16() reach every tensor through here: a float32 LayerNorm
        # parameter (and its gradient) that fn would turn half-precision only changes device.
        names = self.float32_parameter_names()
        kept = {id(t) for name, p in self.named_parameters() if name in names for t in (p, p.grad) if t is not None}

        def convert(t):
            out = fn(t)
            if id(t) in kept and t.dtype == torch.float32 and out.dtype in HALF_DTYPES:
                return t.to(device=out.device)
            return out

        return super()._apply(convert, recurse)

    # -------------------------------------------------------------- properties
    @property
    def base_model(self) -> ConvBertModel:
        return getattr(self, self.base_model_prefix, self)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (the tied LM projection is the word-embedding matrix)."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel() for p in self.parameters()
            if id(p) not in skip and (p.requires_grad or not only_trainable)
        )

    # -------------------------------------------------------------- embeddings
    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.base_model.embeddings.word_embeddings = value

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Resize the vocabulary to ``new_num_tokens`` rows (rounded up to ``pad_to_multiple_of``).

        Kept rows are copied; new rows are the mean of the old ones (``mean_resizing``, HF's default)
        or drawn from N(0, initializer_range). The MLM head reads the embedding matrix at call time,
        so it stays tied; its bias is resized alongside (new entries: the old mean, or zero).
        """
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        size = old.num_embeddings if new_num_tokens is None else int(new_num_tokens)
        if pad_to_multiple_of is not None:
            size = math.ceil(size / pad_to_multiple_of) * pad_to_multiple_of
        if size < 1:
            raise ValueError(f"resize_token_embeddings: the vocabulary needs at least one row, got {size}")
        pad = self.config.pad_token_id
        if pad is not None and pad >= size:
            raise ValueError(f"resize_token_embeddings: pad_token_id {pad} would not fit in {size} rows")
        keep = min(old.num_embeddings, size)
        new = nn.Embedding(size, old.embedding_dim, padding_idx=pad, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            if mean_resizing:
                new.weight.copy_(old.weight.mean(dim=0, keepdim=True).expand(size, -1))
            else:
                new.weight.normal_(mean=0.0, std=self.config.initializer_range)
            new.weight[:keep] = old.weight[:keep]
            if size > old.num_embeddings and pad is not None and pad >= old.num_embeddings:
                new.weight[pad].zero_()
        new.weight.requires_grad_(old.weight.requires_grad)
        self.set_input_embeddings(new)
        lm_head = getattr(self, "generator_lm_head", None)
        if isinstance(lm_head, ConvBertMaskedLMHead):
            lm_head.resize(size, mean_resizing)
        self.config.vocab_size = size
        return new

    # -------------------------------------------------------------- training helpers
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each layer in backward instead of keeping its activations (training only).

        ``gradient_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint``, as in HF
        (``{"use_reentrant": False}``, the default here, is what ``TrainingArguments`` recipes pass).
        """
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        if not isinstance(kwargs["use_reentrant"], bool):
            raise ValueError(f"gradient_checkpointing_kwargs['use_reentrant'] must be a bool, got "
                             f"{kwargs['use_reentrant']!r}")
        for module in self.modules():
            if isinstance(module, ConvBertEncoder):
                module.gradient_checkpointing = True
                module._checkpoint_kwargs = kwargs

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if isinstance(module, ConvBertEncoder):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(m.gradient_checkpointing for m in self.modules() if isinstance(m, ConvBertEncoder))

    def set_sdconv_impl(self, impl: str) -> None:
        """Choose the span_dynamic_conv implementation of every layer ("auto", "reference", "native", ...)."""
        from convbert_pt.sdconv import IMPLS

        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        for module in self.modules():
            if isinstance(module, ConvBertSelfAttention):
                module.sdconv_impl = impl

    # -------------------------------------------------------------- loading / saving (io.py)
    @classmethod
    def from_pretrained(cls, pretrained_model_path, **kwargs):
        """Config and weights from a checkpoint directory; see ``convbert_pt.io.from_pretrained``."""
        from convbert_pt import io

        return io.from_pretrained(cls, pretrained_model_path, **kwargs)

    def save_pretrained(self, save_directory, **kwargs) -> str:
        """``config.json`` + ``model.safetensors`` in HF's layout; see ``convbert_pt.io.save_pretrained``."""
        from convbert_pt import io

        return io.save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload ``save_pretrained``'s folder to the Hub (huggingface_hub); see ``convbert_pt.io.push_to_hub``."""
        from convbert_pt import io

        return io.push_to_hub(self, repo_id, **kwargs)

    def load_weights(self, path, **kwargs) -> dict[str, list[str]]:
        """Load a checkpoint into this model in place; nothing changes if it does not fit."""
        from convbert_pt import io

        return io.load_weights(self, path, **kwargs)

    # -------------------------------------------------------------- shared forward pieces
    def _head_mask(self, head_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(N',) or (layers, N') -> (layers, 1, N', 1, 1), broadcastable onto (B, N', L, L)."""
        if head_mask is None:
            return None
        layers, n = self.config.num_hidden_layers, self.config.heads.num_heads
        if not checks.check_head_mask(tuple(head_mask.shape), layers, n):
            head_mask = head_mask.unsqueeze(0).expand(layers, n)
        return head_mask.to(self.dtype)[:, None, :, None, None]  # (layers, 1, N', 1, 1)

    def _pooled_position(self, output_attentions: bool | None, output_hidden_states: bool | None) -> int | None:
        """The one position the head reads, for the encoder's last layer to compute alone; None (every
        position) when the caller asked for each layer's hidden states or attention maps."""
        if output_attentions or output_hidden_states:
            return None
        return self.task.pooled_position

    @staticmethod
    def _return(result, return_dict: bool | None):
        """The output dataclass, or its tuple when ``return_dict=False`` (HF's convention)."""
        return result if return_dict is None or return_dict else result.to_tuple()


# ----------------------------------------------------------------------------------- the model


class ConvBertModel(ConvBertPreTrainedModel):
    """The bare encoder: last hidden state (B, L, H), optionally every hidden state and attention map."""

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.embeddings = ConvBertEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = gemm.Linear(config.embedding_size, config.hidden_size)
        self.encoder = ConvBertEncoder(config)
        self.post_init()

    def forward(self, input_ids: Tensor = None, attention_mask: Tensor = None, token_type_ids: Tensor = None,
                position_ids: Tensor = None, head_mask: Tensor = None, inputs_embeds: Tensor = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, *, output_position: int | None = None) -> BaseModelOutput | tuple:
        """``output_position`` 0 or -1 (not in Hugging Face's API): the last layer computes only the first
        or last position, so last_hidden_state is (B, 1, H), with the values the full model gives there.
        The heads that read one position ask for it (``Task.pooled_position``)."""
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        head_mask = self._head_mask(head_mask)
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, L, E)
        if _bf16_on_cpu(hidden_states):
            cpu.warn_bf16_emulated()
        if hasattr(self, "embeddings_project"):
            hidden_states = self.embeddings_project(hidden_states)  # (B, L, H)
        mask = attention_mask[:, None, None, :] if attention_mask is not None else None  # (B, 1, 1, L)
        last, all_hidden, all_attentions = self.encoder(
            hidden_states, mask, head_mask, bool(output_attentions), bool(output_hidden_states), output_position
        )
        out = BaseModelOutput(last_hidden_state=last, hidden_states=all_hidden, attentions=all_attentions)
        return self._return(out, return_dict)


# ----------------------------------------------------------------------------------- heads


class ConvBertGeneratorPredictions(nn.Module):
    """H -> E, exact gelu (whatever hidden_act is), LayerNorm: the input of the tied output layer."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = gemm.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, E)."""
        return self.LayerNorm(F.gelu(self.dense(hidden_states)))


class ConvBertMaskedLMHead(nn.Module):
    """The MLM output layer: the word-embedding matrix (tied, passed in at call time) and its own bias.

    Owning only the bias keeps the tie unbreakable (set_input_embeddings, resizing) and keeps the
    state dict canonical: no ``generator_lm_head.weight``.
    """

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, L, E), embedding matrix (V, E) -> logits (B, L, V)."""
        return gemm.linear(hidden_states, word_embeddings, self.bias)

    @torch.no_grad()
    def resize(self, size: int, mean_resizing: bool = True) -> None:
        old = self.bias
        keep = min(old.shape[0], size)
        fill = old.mean() if mean_resizing else 0.0
        new = torch.full((size,), float(fill), dtype=old.dtype, device=old.device)
        new[:keep] = old[:keep]
        self.bias = nn.Parameter(new, requires_grad=old.requires_grad)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # HF state dicts also carry the tied matrix under this module's name: it is the embedding.
        state_dict.pop(prefix + "weight", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _labels_batch_shape(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> tuple[int, ...]:
    if input_ids is not None:
        return tuple(input_ids.shape)
    if inputs_embeds is not None:
        return tuple(inputs_embeds.shape[:-1])
    raise ValueError("pass exactly one of input_ids and inputs_embeds (got neither)")


class ConvBertForMaskedLM(ConvBertPreTrainedModel):
    task = heads.MASKED_LM

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        if not config.tie_word_embeddings:
            raise ValueError(
                "ConvBertForMaskedLM: untied output embeddings (tie_word_embeddings=False) are not supported"
            )
        self.convbert = ConvBertModel(config)
        self.generator_predictions = ConvBertGeneratorPredictions(config)
        self.generator_lm_head = ConvBertMaskedLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> ConvBertMaskedLMHead:
        return self.generator_lm_head

    def forward(self, input_ids: Tensor = None, attention_mask: Tensor = None, token_type_ids: Tensor = None,
                position_ids: Tensor = None, head_mask: Tensor = None, inputs_embeds: Tensor = None,
                labels: Tensor = None, output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> MaskedLMOutput | tuple:
        losses.check_labels(self.task, {"labels": labels}, _labels_batch_shape(input_ids, inputs_embeds), self.config)
        out = self.convbert(input_ids, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        features = self.generator_predictions(out.last_hidden_state)  # (B, L, E)
        logits = self.generator_lm_head(features, self.get_input_embeddings().weight)  # (B, L, V)
        loss = losses.masked_lm_loss(logits, labels) if labels is not None else None
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self._return(result, return_dict)


class ConvBertClassificationHead(nn.Module):
    """Token 0 -> dropout -> dense -> hidden_act -> dropout -> out_proj (no pooler)."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = gemm.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = gemm.Linear(config.hidden_size, config.num_labels)
        self.act = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, num_labels)."""
        x = self.dropout(hidden_states[:, 0])  # (B, H)
        x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x)


class ConvBertForSequenceClassification(ConvBertPreTrainedModel):
    task = heads.SEQUENCE_CLASSIFICATION

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.convbert = ConvBertModel(config)
        self.classifier = ConvBertClassificationHead(config)
        self.post_init()

    def forward(self, input_ids: Tensor = None, attention_mask: Tensor = None, token_type_ids: Tensor = None,
                position_ids: Tensor = None, head_mask: Tensor = None, inputs_embeds: Tensor = None,
                labels: Tensor = None, output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> SequenceClassifierOutput | tuple:
        problem_type = losses.check_labels(self.task, {"labels": labels}, _labels_batch_shape(input_ids, inputs_embeds),
                                           self.config)
        out = self.convbert(input_ids, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True,
                            output_position=self._pooled_position(output_attentions, output_hidden_states))
        logits = self.classifier(out.last_hidden_state)  # (B, num_labels)
        loss = losses.sequence_classification_loss(logits, labels, problem_type) if labels is not None else None
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                          attentions=out.attentions)
        return self._return(result, return_dict)


class ConvBertForMultipleChoice(ConvBertPreTrainedModel):
    task = heads.MULTIPLE_CHOICE

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.convbert = ConvBertModel(config)
        self.classifier = gemm.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids: Tensor = None, attention_mask: Tensor = None, token_type_ids: Tensor = None,
                position_ids: Tensor = None, head_mask: Tensor = None, inputs_embeds: Tensor = None,
                labels: Tensor = None, output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> MultipleChoiceModelOutput | tuple:
        lead = _labels_batch_shape(input_ids, inputs_embeds)
        checks.check_choice_inputs(lead, inputs_embeds is not None, _info(attention_mask), _info(token_type_ids))
        batch, choices, length = lead
        losses.check_labels(self.task, {"labels": labels}, lead, self.config)

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.reshape(batch * choices, *t.shape[2:]) if t is not None else None  # (B*C, L, ...)

        if position_ids is not None and position_ids.dim() == 3:
            position_ids = flat(position_ids)
        out = self.convbert(flat(input_ids), flat(attention_mask), flat(token_type_ids), position_ids, head_mask,
                            flat(inputs_embeds), output_attentions, output_hidden_states, return_dict=True,
                            output_position=self._pooled_position(output_attentions, output_hidden_states))
        pooled = out.last_hidden_state[:, self.task.pooled_position]  # (B*C, H)
        logits = self.classifier(pooled).view(batch, choices)  # (B, C)
        loss = losses.multiple_choice_loss(logits, labels) if labels is not None else None
        result = MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                           attentions=out.attentions)
        return self._return(result, return_dict)


class ConvBertForTokenClassification(ConvBertPreTrainedModel):
    task = heads.TOKEN_CLASSIFICATION

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.convbert = ConvBertModel(config)
        self.dropout = nn.Dropout(dropout)
        self.classifier = gemm.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: Tensor = None, attention_mask: Tensor = None, token_type_ids: Tensor = None,
                position_ids: Tensor = None, head_mask: Tensor = None, inputs_embeds: Tensor = None,
                labels: Tensor = None, output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> TokenClassifierOutput | tuple:
        losses.check_labels(self.task, {"labels": labels}, _labels_batch_shape(input_ids, inputs_embeds), self.config)
        out = self.convbert(input_ids, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, L, num_labels)
        loss = losses.token_classification_loss(logits, labels) if labels is not None else None
        result = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                       attentions=out.attentions)
        return self._return(result, return_dict)


class ConvBertForQuestionAnswering(ConvBertPreTrainedModel):
    task = heads.QUESTION_ANSWERING

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"ConvBertForQuestionAnswering needs num_labels=2 (start and end logits), got {config.num_labels}"
            )
        self.num_labels = config.num_labels
        self.convbert = ConvBertModel(config)
        self.qa_outputs = gemm.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: Tensor = None, attention_mask: Tensor = None, token_type_ids: Tensor = None,
                position_ids: Tensor = None, head_mask: Tensor = None, inputs_embeds: Tensor = None,
                start_positions: Tensor = None, end_positions: Tensor = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> QuestionAnsweringModelOutput | tuple:
        losses.check_labels(self.task, {"start_positions": start_positions, "end_positions": end_positions},
                            _labels_batch_shape(input_ids, inputs_embeds), self.config)
        out = self.convbert(input_ids, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, L, 2)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()  # (B, L) each
        loss = None
        if start_positions is not None:
            loss = losses.question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        result = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                              hidden_states=out.hidden_states, attentions=out.attentions)
        return self._return(result, return_dict)


MODEL_CLASSES = {
    cls.task.name: cls
    for cls in (
        ConvBertModel,
        ConvBertForMaskedLM,
        ConvBertForSequenceClassification,
        ConvBertForMultipleChoice,
        ConvBertForTokenClassification,
        ConvBertForQuestionAnswering,
    )
}
