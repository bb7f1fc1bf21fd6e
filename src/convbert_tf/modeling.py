"""ConvBERT for Keras 3.

B batch, L sequence, E embedding size, H hidden size, N' attention heads after head_ratio,
D head size, A = N'*D, K conv kernel size, G groups, V vocab, I intermediate size.

Embeddings -> mixed attention (N' self-attention heads beside N' span-based dynamic convolution
heads) -> feed-forward, repeated; then the task heads. The classes, their order and their
sub-layer attribute names are those of ``convbert_pt/modeling.py`` (Keras reserves ``output``:
the two sub-layers PyTorch calls ``output`` are ``attention_output`` and ``layer_output`` here).
Every variable is reached from the model by the attribute path that ``convbert_common.weight_map``
names (``WeightSpec.keras_layer`` / ``keras_variable``); ``convbert_tf.io`` loads and saves through it.
Input and label checks are ``convbert_common.checks``, the same words as PyTorch's; the compile,
loss and export defaults of the task heads are ``tasks.py``.

The math is written with ``keras.ops``; TensorFlow is imported only for the id checks that must
raise inside a TensorFlow graph. Fast paths, each chosen in one line with the plain path beside
it: attention through ``keras.ops.dot_product_attention`` on JAX and PyTorch unless attention maps,
a head mask or attention dropout are needed (on TensorFlow Keras' version is two einsums; ours are
float32-accumulating batched matmuls); the dynamic convolution by shift-and-accumulate (``sdconv.py``);
for XLA, the depthwise convolution by the same shift-and-accumulate (XLA's grouped convolution is
an order of magnitude slower on CPU; ``set_depthwise_impl``). Softmaxes, LayerNorms and logits are
float32 under mixed precision; variables are always float32.

Every model builds all its variables in ``__init__`` (their shapes depend on the config only),
so a fresh model can be loaded into, saved, or compiled with XLA before it has seen any data.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from convbert_common import checks, cpu, heads, shapes
from convbert_common.config import ConvBertConfig
from convbert_tf import backend, io
from convbert_tf._config_layer import ConfigLayer, as_config, traced_output_spec
from convbert_tf.activations import _gelu, get_activation, softmax_last
from convbert_tf.dense import Dense
from convbert_tf.dropout import Dropout
from convbert_tf.fused import LayerNormalization
from convbert_tf.losses import tensor_info
from convbert_tf.sdconv import depthwise_conv1d, span_dynamic_conv
from convbert_tf.tasks import TaskModel, integers_from_a_distributed_build

_register = keras.saving.register_keras_serializable(package="convbert")

# ----------------------------------------------------------------------------------- pure functions


def grouped_linear(x, kernel, bias):
    """x (B, L, I), kernel (G, I/G, O/G), bias (O,) -> (B, L, O): G independent dense maps side by side."""
    groups, group_in, group_out = kernel.shape
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    x = ops.transpose(ops.reshape(x, (batch * length, groups, group_in)), (1, 0, 2))  # (G, B*L, I/G)
    y = ops.transpose(ops.matmul(x, kernel), (1, 0, 2))  # (B*L, G, O/G)
    y = ops.reshape(y, (batch, length, groups * group_out))  # (B, L, O)
    return y + bias


def edge_rows(x, position: int | None):
    """x (B, L, ...) -> (B, 1, ...), the first (``position`` 0) or last (-1) row; x when ``position`` is None."""
    if position is None:
        return x
    return x[:, :1] if position == 0 else x[:, -1:]


def edge_window(x, position: int, width: int):
    """x (B, L, H) -> the ``width`` rows at the start (``position`` 0) or end (-1) of the sequence, zero
    rows standing in past its other end when L < width: (B, width, H), and which rows are real (width,).

    The zero rows go on before the slice, so it never reads past the end: neither the window's length nor
    the slice depends on L, and a traced graph carries no guard on L.
    """
    if position not in (0, -1):
        raise ValueError(f"position must be 0 (first), -1 (last) or None, got {position!r}")
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    zeros = ops.zeros((batch, width, x.shape[-1]), dtype=x.dtype)
    rows = ops.arange(width, dtype="int32")
    length = ops.cast(length, "int32")
    if position == 0:
        return ops.concatenate([x, zeros], axis=1)[:, :width], rows < length  # (B, width, H)
    return ops.concatenate([zeros, x], axis=1)[:, -width:], rows >= width - length  # (B, width, H)


def _large_negative(dtype: str) -> float:
    # The fused path's own masking value, so that both paths give the same probabilities.
    return -0.7 * (65500.0 if dtype == "float16" else 3.38953e38)


def attention(query, key, value, mask, head_mask=None, dropout=None, training=False, need_weights=False):
    """Scaled dot-product attention.

    query, key, value (B, L, N', D); mask (B, 1, 1, L) bool, True for tokens to attend to, or None;
    head_mask broadcastable to (B, N', L, L), or None; ``dropout`` a Dropout layer for the
    probabilities. Returns the context (B, L, N', D) and, on the explicit path, the probabilities
    (B, N', L, L) after dropout and head mask (None on the fused path).
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    use_dropout = bool(training) and dropout is not None and dropout.rate > 0
    # Keras' TensorFlow dot_product_attention is this same arithmetic written as two tf.einsum calls,
    # and TensorFlow's own (Eigen) CPU einsum sums half-precision products in half precision: the
    # batched matmuls below accumulate in float32 on every kernel library.
    fused = backend.name() != "tensorflow"
    if fused and not need_weights and head_mask is None and not use_dropout:
        return ops.dot_product_attention(query, key, value, mask=mask, scale=scale), None
    heads_first = (0, 2, 1, 3)
    scores = ops.matmul(ops.transpose(query, heads_first), ops.transpose(key, (0, 2, 3, 1)))  # (B, N', L, L)
    scores = ops.cast(scores, "float32") * scale
    if mask is not None:
        scores = ops.where(mask, scores, _large_negative("float32"))
    probs = ops.cast(softmax_last(scores), value.dtype)  # softmax in float32
    if use_dropout:
        probs = dropout(probs, training=training)
    if head_mask is not None:
        probs = probs * ops.cast(head_mask, probs.dtype)
    context = ops.matmul(probs, ops.transpose(value, heads_first))  # (B, N', L, D)
    return ops.transpose(context, heads_first), probs  # (B, L, N', D), (B, N', L, L)


# ----------------------------------------------------------------------------------- input checks


def _info(x) -> checks.TensorInfo | None:
    return None if x is None else tensor_info(x)


def _concrete(x) -> np.ndarray | None:
    """The values of ``x`` when they are known now (eager), else None (inside a graph / under jit)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly() or not hasattr(x, "numpy"):
            return None
        return x.numpy()
    if keras.backend.is_keras_tensor(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # a tracer of another backend
        return None


def _checked_ids(ids, upper: int, name: str, upper_name: str):
    """Validate index tensor values before a lookup; return (ids, valid) with valid None if nothing to mask.

    Eager: ValueError naming the offending id (``checks.check_id_range``). Traced (tf.function,
    tf.data, XLA, ``jax.jit``, ``torch.compile``), where no value is known: the caller replaces the
    embeddings of invalid ids by NaN, so that a wrong id shows in the outputs instead of silently
    reading a clamped row (CPU) or zeros (GPU). A TensorFlow graph also carries an assert that
    raises InvalidArgumentError with the largest and smallest id before the lookup (XLA drops it).
    """
    values = _concrete(ids)
    if values is not None:
        if values.size:
            checks.check_id_range(name, int(values.min()), int(values.max()), upper, upper_name)
        return ids, None
    valid = ops.logical_and(ops.greater_equal(ids, 0), ops.less(ids, upper))
    if keras.backend.backend() != "tensorflow":
        return ids, valid
    import tensorflow as tf

    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [checks.id_range_message(name, upper, upper_name) + "; largest id:", tf.reduce_max(ids),
         "smallest id:", tf.reduce_min(ids)],
    )
    with tf.control_dependencies([check]):
        ids = tf.identity(ids)
    return ids, valid


def _check_inputs(config: ConvBertConfig, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
    """Shape and dtype checks of the backbone's inputs (static: they run in every mode)."""
    checks.check_inputs(config, _info(input_ids), _info(attention_mask), _info(token_type_ids), _info(position_ids),
                        _info(inputs_embeds))


def _initializer(layer: ConfigLayer):
    if not layer.initialize:
        return keras.initializers.Zeros()
    # A fresh initializer per variable: Keras gives a reused unseeded instance the same values.
    return keras.initializers.TruncatedNormal(stddev=layer.config.initializer_range)


def _dense(layer: ConfigLayer, units: int, name: str) -> keras.layers.Dense:
    """A plain dense layer, a sub-layer of ``layer`` (its config, dtype policy and init choice)."""
    return Dense(units, kernel_initializer=_initializer(layer), name=name, dtype=layer.dtype_policy)


def _layer_norm(layer: ConfigLayer) -> keras.layers.LayerNormalization:
    return LayerNormalization(epsilon=layer.config.layer_norm_eps, name="LayerNorm",
                              dtype=_float32_variables(layer.dtype_policy))


def _float32_variables(policy: keras.DTypePolicy) -> keras.DTypePolicy:
    """A half-precision policy's mixed twin (same compute dtype, float32 variables); others as given.

    For the LayerNorms of a model built with a half-precision policy ("bfloat16"), as the PyTorch
    model's ``float32_parameter_names``: a gain rounded to bf16 biases one channel of every token in
    every layer. Their layers then compute as under ``mixed_bfloat16``, so such a model gives the
    same numbers as the mixed one, without casting every other variable on every call.
    """
    if policy.variable_dtype in ("bfloat16", "float16") and policy.compute_dtype == policy.variable_dtype:
        return keras.DTypePolicy(f"mixed_{policy.compute_dtype}")
    return policy


# ----------------------------------------------------------------------------------- embeddings


@_register
class ConvBertEmbeddings(ConfigLayer):
    """word + position + token type -> LayerNorm -> dropout, all E wide."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, E, dt = self.config, self.config.embedding_size, self.dtype_policy
        self.word_embeddings = keras.layers.Embedding(
            c.vocab_size, E, embeddings_initializer=_initializer(self), name="word_embeddings", dtype=dt)
        self.position_embeddings = keras.layers.Embedding(
            c.max_position_embeddings, E, embeddings_initializer=_initializer(self), name="position_embeddings",
            dtype=dt)
        self.token_type_embeddings = keras.layers.Embedding(
            c.type_vocab_size, E, embeddings_initializer=_initializer(self), name="token_type_embeddings", dtype=dt)
        self.LayerNorm = _layer_norm(self)
        self.dropout = Dropout(c.hidden_dropout_prob, name="dropout", dtype=dt)

    def build(self, input_shape=None):
        self.word_embeddings.build()
        self.position_embeddings.build()
        self.token_type_embeddings.build()
        self.LayerNorm.build((None, None, self.config.embedding_size))
        pad = self.config.pad_token_id
        if pad is not None and self.initialize:
            # As PyTorch's nn.Embedding(padding_idx=...): a fresh model starts with a zero [PAD] row.
            table = self.word_embeddings.embeddings
            row = ops.zeros((1, self.config.embedding_size), dtype=table.dtype)
            table.assign(ops.slice_update(table.value, (pad, 0), row))

    def compute_output_shape(self, input_shape=None):
        """(B, L) ids -> (B, L, E); for summary()."""
        lead = tuple(input_shape)[:2] if input_shape is not None else (None, None)
        return (*lead, self.config.embedding_size)

    def call(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, training=None):
        c = self.config
        valid = []
        if inputs_embeds is None:
            input_ids, ok = _checked_ids(input_ids, c.vocab_size, "input_ids", "vocab_size")
            valid.append(ok)
            inputs_embeds = self.word_embeddings(input_ids)  # (B, L, E)
            if c.pad_token_id is not None:
                # As PyTorch's nn.Embedding(padding_idx=...): the [PAD] row gets no gradient from the lookup.
                is_pad = ops.expand_dims(ops.equal(input_ids, c.pad_token_id), -1)  # (B, L, 1)
                inputs_embeds = ops.where(is_pad, ops.stop_gradient(inputs_embeds), inputs_embeds)
        length = ops.shape(inputs_embeds)[1]
        if position_ids is None:
            position_ids = ops.expand_dims(ops.arange(length, dtype="int32"), 0)  # (1, L)
            if not isinstance(length, int):  # a dynamic length is only known at run time
                position_ids, ok = _checked_ids(position_ids, c.max_position_embeddings, "position ids (sequence "
                                                "length)", "max_position_embeddings")
                valid.append(ok)
        else:
            position_ids, ok = _checked_ids(position_ids, c.max_position_embeddings, "position_ids",
                                            "max_position_embeddings")
            valid.append(ok)
        position = self.position_embeddings(position_ids)  # (1 or B, L, E)
        if token_type_ids is None:
            # Every token is in segment 0: broadcast row 0 instead of gathering it B*L times.
            token_type = ops.cast(self.token_type_embeddings.embeddings[0], self.compute_dtype)  # (E,)
        else:
            token_type_ids, ok = _checked_ids(token_type_ids, c.type_vocab_size, "token_type_ids",
                                              "type_vocab_size")
            valid.append(ok)
            token_type = self.token_type_embeddings(token_type_ids)  # (B, L, E)
        embeddings = inputs_embeds + position + token_type
        for ok in valid:
            if ok is not None:  # graph mode: NaN where an id was out of range (see _checked_ids)
                ok = ops.expand_dims(ok, -1)  # (B or 1, L, 1)
                embeddings = ops.where(ok, embeddings, ops.cast(float("nan"), embeddings.dtype))
        return self.dropout(self.LayerNorm(embeddings), training=training)


# ----------------------------------------------------------------------------------- mixed attention


# Depthwise-convolution implementations: "conv" (the backend's depthwise kernel), "shift" (K shifted
# multiply-adds, which XLA fuses into one loop), "auto" ("shift" where every call is compiled by XLA,
# and where the backend's kernel is not safe: backend.depthwise_kernel_is_safe).
DEPTHWISE_IMPLS = ("auto", "conv", "shift")


@_register
class SeparableConv1D(ConfigLayer):
    """Depthwise (K taps per channel) then pointwise (H -> A) convolution over the sequence, plus bias.

    Variables: depthwise_kernel (K, H, 1), pointwise_kernel (1, H, A), bias (A,).
    """

    def __init__(self, config, input_filters: int, output_filters: int, kernel_size: int, **kwargs):
        super().__init__(config, **kwargs)
        self.input_filters = input_filters
        self.output_filters = output_filters
        self.kernel_size = kernel_size
        self.depthwise_impl = "auto"

    def build(self, input_shape=None):
        self.depthwise_kernel = self.add_weight(
            shape=(self.kernel_size, self.input_filters, 1), initializer=_initializer(self), name="depthwise_kernel")
        self.pointwise_kernel = self.add_weight(
            shape=(1, self.input_filters, self.output_filters), initializer=_initializer(self),
            name="pointwise_kernel")
        self.bias = self.add_weight(shape=(self.output_filters,), initializer="zeros", name="bias")

    def call(self, hidden_states):
        """(B, L, H) -> (B, L, A); 'same' padding, (K - 1) / 2 zeros on each side."""
        impl = self.depthwise_impl
        if impl == "auto":
            impl = "shift" if keras.backend.backend() == "jax" or not backend.depthwise_kernel_is_safe() else "conv"
        if impl == "shift":
            # XLA lowers a depthwise convolution to a grouped one, on CPU an order of magnitude slower
            # than K shifted multiply-adds that it fuses into one loop; TF's own depthwise kernel beats
            # both outside XLA.
            x = depthwise_conv1d(hidden_states, self.depthwise_kernel)  # (B, L, H)
            x = ops.matmul(x, self.pointwise_kernel[0])  # (B, L, A)
        else:
            x = ops.separable_conv(hidden_states, self.depthwise_kernel, self.pointwise_kernel, strides=1,
                                   padding="same", data_format="channels_last")  # (B, L, A)
        return x + self.bias

    def get_config(self) -> dict:
        return {**super().get_config(), "input_filters": self.input_filters, "output_filters": self.output_filters,
                "kernel_size": self.kernel_size}


@_register
class ConvBertSelfAttention(ConfigLayer):
    """N' self-attention heads and N' span-based dynamic convolution heads on the same input."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.heads = c.heads
        H, A, K = c.hidden_size, self.heads.all_head_size, c.conv_kernel_size
        self.kernel_size = K
        self.query = _dense(self, A, "query")
        self.key = _dense(self, A, "key")
        self.value = _dense(self, A, "value")
        self.key_conv_attn_layer = SeparableConv1D(c, H, A, K, **self.sub("key_conv_attn_layer"))
        self.conv_kernel_layer = _dense(self, shapes.conv_kernel_width(self.heads.num_heads, K), "conv_kernel_layer")
        self.conv_out_layer = _dense(self, A, "conv_out_layer")
        self.dropout = Dropout(c.attention_probs_dropout_prob, name="dropout", dtype=dt)
        # span_dynamic_conv implementation: "auto" | "native" | "reference"
        self.sdconv_impl = "auto"

    def build(self, input_shape=None):
        H, A = self.config.hidden_size, self.heads.all_head_size
        for layer in (self.query, self.key, self.value, self.key_conv_attn_layer, self.conv_out_layer):
            layer.build((None, None, H))
        self.conv_kernel_layer.build((None, None, A))

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=None,
             position=None):
        """(B, L, H) -> (B, Q, 2A), Q = L; ``position`` 0 or -1: the first or last position only, Q = 1
        (the queries and the convolution branch then run on the edge window alone)."""
        N, D, K = self.heads.num_heads, self.heads.head_size, self.kernel_size
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        window, real = hidden_states, None  # (B, W, H), W = L
        if position is not None:
            window, real = edge_window(hidden_states, position, shapes.edge_window(K))  # (B, W, H)
        width = ops.shape(window)[1]
        mixed_query = self.query(window)  # (B, W, A)
        key = ops.reshape(self.key(hidden_states), (batch, length, N, D))  # (B, L, N', D)
        value = ops.reshape(self.value(hidden_states), (batch, length, N, D))  # (B, L, N', D)

        # Convolution branch: a K-tap kernel per token and head, predicted from the span around it.
        span_key = self.key_conv_attn_layer(window)  # (B, W, A)
        kernel_logits = self.conv_kernel_layer(span_key * mixed_query)  # (B, W, N'*K)
        kernel_logits = ops.reshape(kernel_logits, (batch, width, N, K))  # (B, W, N', K)
        conv_values = ops.reshape(self.conv_out_layer(window), (batch, width, N, D))  # (B, W, N', D)
        if real is not None:  # past the sequence the values are the convolution's zero padding, not the bias
            conv_values = conv_values * ops.cast(real, conv_values.dtype)[:, None, None]
        conv = span_dynamic_conv(conv_values, kernel_logits, impl=self.sdconv_impl)  # (B, W, N', D)
        conv, mixed_query = edge_rows(conv, position), edge_rows(mixed_query, position)  # (B, Q, ...)
        rows = ops.shape(mixed_query)[1]
        query = ops.reshape(mixed_query, (batch, rows, N, D))  # (B, Q, N', D)

        context, probs = attention(query, key, value, attention_mask, head_mask, self.dropout, training,
                                   need_weights=output_attentions)  # (B, Q, N', D)
        # Attention heads first, convolution heads second.
        mixed = ops.concatenate([context, ops.cast(conv, context.dtype)], axis=2)  # (B, Q, 2N', D)
        return ops.reshape(mixed, (batch, rows, self.heads.mixed_size)), probs  # (B, Q, 2A)


@_register
class ConvBertSelfOutput(ConfigLayer):
    """dense -> dropout -> + residual -> LayerNorm; its input is the mixed block's (B, L, 2A)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.dense = self._make_dense()
        self.LayerNorm = _layer_norm(self)
        self.dropout = Dropout(c.hidden_dropout_prob, name="dropout", dtype=dt)

    def _input_size(self) -> int:
        return self.config.heads.mixed_size

    def _make_dense(self):
        return _dense(self, self.config.hidden_size, "dense")

    def build(self, input_shape=None):
        self.dense.build((None, None, self._input_size()))
        self.LayerNorm.build((None, None, self.config.hidden_size))

    def call(self, hidden_states, input_tensor, training=None):
        """(B, L, 2A) (ConvBertOutput: (B, L, I)), residual (B, L, H) -> (B, L, H)."""
        return self.LayerNorm(self.dropout(self.dense(hidden_states), training=training) + input_tensor)


@_register
class ConvBertAttention(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.self = ConvBertSelfAttention(self.config, **self.sub("self"))
        self.attention_output = ConvBertSelfOutput(self.config, **self.sub("attention_output"))

    def build(self, input_shape=None):
        self.self.build()
        self.attention_output.build()

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=None,
             position=None):
        mixed, probs = self.self(hidden_states, attention_mask=attention_mask, head_mask=head_mask,
                                 output_attentions=output_attentions, training=training, position=position)
        residual = edge_rows(hidden_states, position)
        return self.attention_output(mixed, input_tensor=residual, training=training), probs


# ----------------------------------------------------------------------------------- feed-forward


@_register
class GroupedLinearLayer(ConfigLayer):
    """A dense layer split into G groups along the input and output channels: kernel (G, I/G, O/G), bias (O,)."""

    def __init__(self, config, input_size: int, output_size: int, **kwargs):
        super().__init__(config, **kwargs)
        self.input_size = input_size
        self.output_size = output_size

    def build(self, input_shape=None):
        G = self.config.num_groups
        self.kernel = self.add_weight(shape=(G, self.input_size // G, self.output_size // G),
                                      initializer=_initializer(self), name="kernel")
        self.bias = self.add_weight(shape=(self.output_size,), initializer="zeros", name="bias")

    def call(self, hidden_states):
        return grouped_linear(hidden_states, self.kernel, self.bias)

    def get_config(self) -> dict:
        return {**super().get_config(), "input_size": self.input_size, "output_size": self.output_size}


def _feed_forward_dense(layer: ConfigLayer, input_size: int, output_size: int):
    """The feed-forward's dense layer "dense" of ``layer``: grouped when the config has groups."""
    if layer.config.num_groups == 1:
        return _dense(layer, output_size, "dense")
    return GroupedLinearLayer(layer.config, input_size, output_size, **layer.sub("dense"))


@_register
class ConvBertIntermediate(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.dense = _feed_forward_dense(self, c.hidden_size, c.intermediate_size)
        self.intermediate_act_fn = get_activation(c.hidden_act)

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.hidden_size))

    def call(self, hidden_states):
        """(B, L, H) -> (B, L, I)."""
        return self.intermediate_act_fn(self.dense(hidden_states))


@_register
class ConvBertOutput(ConvBertSelfOutput):
    """The feed-forward's output: the same as ConvBertSelfOutput from (B, L, I), its dense grouped if configured."""

    def _input_size(self) -> int:
        return self.config.intermediate_size

    def _make_dense(self):
        return _feed_forward_dense(self, self.config.intermediate_size, self.config.hidden_size)


@_register
class ConvBertLayer(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.attention = ConvBertAttention(self.config, **self.sub("attention"))
        self.intermediate = ConvBertIntermediate(self.config, **self.sub("intermediate"))
        self.layer_output = ConvBertOutput(self.config, **self.sub("layer_output"))

    def build(self, input_shape=None):
        self.attention.build()
        self.intermediate.build()
        self.layer_output.build()

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=None,
             position=None):
        """(B, L, H) -> (B, L, H); (B, 1, H) at ``position`` (0 or -1) alone."""
        attention_output, probs = self.attention(hidden_states, attention_mask=attention_mask, head_mask=head_mask,
                                                 output_attentions=output_attentions, training=training,
                                                 position=position)
        intermediate = self.intermediate(attention_output)  # (B, L, I)
        return self.layer_output(intermediate, input_tensor=attention_output, training=training), probs


@_register
class ConvBertEncoder(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.layer = [ConvBertLayer(self.config, **self.sub(f"layer_{i}"))
                      for i in range(self.config.num_hidden_layers)]

    def build(self, input_shape=None):
        for layer in self.layer:
            layer.build()

    def compute_output_shape(self, input_shape=None):
        """The last hidden state (B, L, H), what summary() shows (call also returns the optional tuples)."""
        lead = tuple(input_shape)[:2] if input_shape is not None else (None, None)
        return (*lead, self.config.hidden_size)

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
             output_hidden_states=False, training=None, output_position=None):
        """hidden_states (B, L, H); attention_mask (B, 1, 1, L) bool; head_mask (layers, 1, N', 1, 1).

        ``output_position`` (0 or -1): the last layer computes that position only, and the last hidden
        state is (B, 1, H); what comes out there is what the full layer gives at that position.
        """
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            layer_head_mask = head_mask[i] if head_mask is not None else None
            position = output_position if i == last else None
            hidden_states, probs = layer(hidden_states, attention_mask=attention_mask, head_mask=layer_head_mask,
                                         output_attentions=output_attentions, training=training, position=position)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (probs,)
        return hidden_states, all_hidden, all_attentions


# ----------------------------------------------------------------------------------- base class

# The seed API's inputs, in its positional order (a list input follows it).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")


@_register
class ConvBertPreTrainedModel(TaskModel, keras.Model):
    """Config handling, input parsing, and loading / saving through ``io.py``; task defaults from ``tasks.py``.

    Every model takes its inputs as a dict (HF names, labels included), a list in the order of
    ``INPUT_NAMES``, or a single ``input_ids`` tensor, and returns a dict of tensors with HF's
    keys. ``compile(optimizer=...)`` picks the task's loss (see ``tasks.py``): ``fit`` works with
    labels in ``y`` or HF-style inside ``x``. ``initialize=False`` (loaders) builds zero variables.
    """

    task = heads.MODEL

    def __init__(self, config, initialize: bool = True, **kwargs):
        config = as_config(config)
        super().__init__(**kwargs)
        self.config = config
        self.initialize = initialize
        self._init_task(config)

    def sub(self, name: str) -> dict:
        """Constructor keywords of a sub-layer (see ``ConfigLayer.sub``)."""
        return {"name": name, "dtype": self.dtype_policy, "initialize": self.initialize}

    def _make_backbone(self, shared_embeddings=None) -> ConvBertModel:
        # The nested model builds itself in its __init__; under this model's name scope its variable
        # paths read "<model>/convbert/...", like the head's own "<model>/<head layer>/...".
        with keras.name_scope(self.name):
            return ConvBertModel(self.config, shared_embeddings=shared_embeddings, **self.sub(heads.BASE_PREFIX))

    def _finish_init(self) -> None:
        # Variables' shapes depend on the config only: build them now, deterministically. The
        # ``None`` input shape is recorded by Keras, so summary() can ask compute_output_shape.
        self.build(None)

    def _rebuild(self, input_shape) -> bool:
        """Whether the model is built already; then ``build(shape)`` only records the new input shape
        (Keras' summary reads it) for the model and its backbone, and creates nothing."""
        if not self.built:
            return False
        backbone = getattr(self, heads.BASE_PREFIX, None)
        if backbone is not None:
            backbone.build(input_shape)
        return True

    @staticmethod
    def _lead(input_shape, rank: int = 2) -> tuple:
        """The (B, L) (or (B, C, L) for multiple choice) of an input shape, a dict of them, or None."""
        if isinstance(input_shape, dict):
            if "input_ids" in input_shape:
                input_shape = input_shape["input_ids"]
            elif "inputs_embeds" in input_shape:
                input_shape = tuple(input_shape["inputs_embeds"])[:-1]
            else:
                input_shape = None
        if input_shape is None or len(tuple(input_shape)) != rank:
            return (None,) * rank
        return tuple(input_shape)

    # -------------------------------------------------------------- serialisation
    def get_config(self) -> dict:
        return {**keras.layers.Layer.get_config(self), "config": self.config.to_dict()}

    def compute_output_spec(self, *args, **kwargs):
        return traced_output_spec(self, *args, **kwargs)

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    # -------------------------------------------------------------- loading / saving (io.py)
    @classmethod
    def from_pretrained(cls, pretrained_model_path, **kwargs):
        """Config and weights from a checkpoint directory; see ``convbert_tf.io.from_pretrained``."""
        return io.from_pretrained(pretrained_model_path, model_class=cls, **kwargs)

    def save_pretrained(self, save_directory, **kwargs) -> str:
        """``config.json`` + ``model.safetensors`` in HF's layout; see ``convbert_tf.io.save_pretrained``."""
        return io.save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload ``save_pretrained``'s folder to the Hub (huggingface_hub); see ``convbert_tf.io.push_to_hub``."""
        return io.push_to_hub(self, repo_id, **kwargs)

    # -------------------------------------------------------------- implementation choices
    def _self_attention_layers(self) -> list:
        base = getattr(self, heads.BASE_PREFIX, self)
        return [layer.attention.self for layer in base.encoder.layer]

    def set_sdconv_impl(self, impl: str) -> None:
        """Choose the span_dynamic_conv implementation of every layer ("auto", "native", "reference")."""
        from convbert_tf.sdconv import IMPLS

        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        for layer in self._self_attention_layers():
            layer.sdconv_impl = impl

    def set_depthwise_impl(self, impl: str) -> None:
        """Choose the depthwise convolution of every layer: "conv", "shift" (for XLA) or "auto".

        ``compile(jit_compile=True)`` selects "shift"; call this before tracing the model with
        ``tf.function(jit_compile=True)`` yourself. "auto" is "shift" on JAX (always XLA) and on
        TensorFlow 2.16 (whose depthwise kernel crashes at some kernel sizes), else "conv". Both give
        the same numbers; only their speed differs.
        """
        if impl not in DEPTHWISE_IMPLS:
            raise ValueError(f"impl must be one of {', '.join(DEPTHWISE_IMPLS)}, got {impl!r}")
        for layer in self._self_attention_layers():
            layer.key_conv_attn_layer.depthwise_impl = impl

    # -------------------------------------------------------------- inputs
    def _unpack(self, input_ids, **given) -> dict:
        """Merge a dict / list / tensor first argument with the keyword arguments; None means absent."""
        names = INPUT_NAMES + self.task.label_names
        given = {k: v for k, v in given.items() if v is not None}
        first = {}
        if isinstance(input_ids, dict):
            unknown = sorted(set(input_ids) - set(names))
            if unknown:
                raise ValueError(
                    f"{type(self).__name__}: unknown input names {unknown}; expected some of {list(names)}"
                )
            first = {k: v for k, v in input_ids.items() if v is not None}
        elif isinstance(input_ids, (list, tuple)):
            if len(input_ids) > len(INPUT_NAMES):
                raise ValueError(
                    f"{type(self).__name__}: a list input holds at most {len(INPUT_NAMES)} tensors "
                    f"({', '.join(INPUT_NAMES)}), got {len(input_ids)}"
                )
            first = {k: v for k, v in zip(INPUT_NAMES, input_ids, strict=False) if v is not None}
        elif input_ids is not None:
            first = {"input_ids": input_ids}
        both = sorted(set(first) & set(given))
        if both:
            raise ValueError(f"{type(self).__name__}: {both} given both in the inputs and as keyword arguments")
        integers = self._integer_arguments()
        out = {k: ops.convert_to_tensor(v) for k, v in {**first, **given}.items()}
        return {k: integers_from_a_distributed_build(k, v) if k in integers else v for k, v in out.items()}

    def _split_labels(self, inputs: dict) -> dict | None:
        """Take the label arguments out of ``inputs`` and check them against the input's shape."""
        labels = {n: inputs.pop(n) for n in self.task.label_names if n in inputs}
        if self.task.input_rank == 3:
            checks.check_choice_inputs(self._batch_shape(inputs), "inputs_embeds" in inputs,
                                       _info(inputs.get("attention_mask")), _info(inputs.get("token_type_ids")))
        if not labels:
            return None
        self._task_loss.check(labels, self._batch_shape(inputs))
        return labels

    def _arguments(self, arguments: dict) -> tuple[dict, dict | None]:
        """``call``'s inputs by name and its checked labels, from its ``locals()``: the first argument
        (a dict, list or tensor) merged with the keyword inputs."""
        given = {name: arguments.get(name) for name in (*INPUT_NAMES[1:], *self.task.label_names)}
        inputs = self._unpack(arguments["input_ids"], **given)
        return inputs, self._split_labels(inputs)

    def _head_mask(self, head_mask):
        """(N',) or (layers, N') -> (layers, 1, N', 1, 1), broadcastable onto (B, N', L, L)."""
        if head_mask is None:
            return None
        layers, n = self.config.num_hidden_layers, self.config.heads.num_heads
        if not checks.check_head_mask(tuple(head_mask.shape), layers, n):
            head_mask = ops.broadcast_to(ops.expand_dims(head_mask, 0), (layers, n))
        return ops.reshape(ops.cast(head_mask, self.compute_dtype), (layers, 1, n, 1, 1))  # (layers, 1, N', 1, 1)

    def _outputs(self, head: dict, base: dict, labels: dict | None) -> dict:
        """HF's output dict: loss (when labels were given), the head's tensors, hidden states, attentions."""
        out = {}
        if labels is not None:
            out["loss"] = self._task_loss(labels, head)
        out.update(head)
        for key in ("hidden_states", "attentions"):
            if key in base:
                out[key] = base[key]
        return out

    def _pooled_position(self, output_attentions, output_hidden_states) -> int | None:
        """The one position the head reads, for the encoder's last layer to compute alone; None (every
        position) when the caller asked for each layer's hidden states or attention maps."""
        if output_attentions or output_hidden_states:
            return None
        return self.task.pooled_position

    def _backbone(self, inputs: dict, output_attentions, output_hidden_states, training) -> dict:
        return self.convbert(inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             training=training,
                             output_position=self._pooled_position(output_attentions, output_hidden_states))

    @staticmethod
    def _batch_shape(inputs: dict) -> tuple:
        if "input_ids" in inputs:
            return tuple(inputs["input_ids"].shape)
        if "inputs_embeds" in inputs:
            return tuple(inputs["inputs_embeds"].shape)[:-1]
        raise ValueError("pass exactly one of input_ids and inputs_embeds (got neither)")

    @staticmethod
    def _return(result: dict, return_dict):
        return result if return_dict is None or return_dict else tuple(result.values())


# ----------------------------------------------------------------------------------- the model


@_register
class ConvBertModel(ConvBertPreTrainedModel):
    """The bare encoder: last hidden state (B, L, H), optionally every hidden state and attention map.

    ``shared_embeddings``: an existing ``ConvBertEmbeddings`` layer to use instead of a new one (the
    pretraining generator reads the discriminator's tables: one set of variables, as PyTorch's one
    module assigned to both models). It is not part of ``get_config``: the owner passes it again.
    """

    def __init__(self, config, shared_embeddings=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if shared_embeddings is not None and not isinstance(shared_embeddings, ConvBertEmbeddings):
            raise TypeError(f"shared_embeddings must be a ConvBertEmbeddings layer, got "
                            f"{type(shared_embeddings).__name__}")
        self.embeddings = (shared_embeddings if shared_embeddings is not None
                           else ConvBertEmbeddings(c, **self.sub("embeddings")))
        if c.embedding_size != c.hidden_size:
            self.embeddings_project = _dense(self, c.hidden_size, "embeddings_project")
        else:
            self.embeddings_project = None
        self.encoder = ConvBertEncoder(c, **self.sub("encoder"))
        if self.dtype_policy.compute_dtype == "bfloat16" and backend.cpu_only():
            cpu.warn_bf16_emulated()
        self._finish_init()

    def build(self, input_shape=None):
        if self._rebuild(input_shape):
            return
        if not self.embeddings.built:  # a shared layer is built by its owner
            self.embeddings.build((None, None))
        if self.embeddings_project is not None:
            self.embeddings_project.build((None, None, self.config.embedding_size))
        self.encoder.build((None, None, self.config.hidden_size))

    def compute_output_shape(self, input_shape=None):
        return {"last_hidden_state": (*self._lead(input_shape), self.config.hidden_size)}

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
             training=None, output_position=None):
        """``output_position`` 0 or -1 (not in Hugging Face's API): the last layer computes only the first
        or last position, so last_hidden_state is (B, 1, H), with the values the full model gives there.
        The heads that read one position ask for it (``Task.pooled_position``)."""
        inputs, _ = self._arguments(locals())
        input_ids, inputs_embeds = inputs.get("input_ids"), inputs.get("inputs_embeds")
        attention_mask, token_type_ids = inputs.get("attention_mask"), inputs.get("token_type_ids")
        position_ids = inputs.get("position_ids")
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        head_mask = self._head_mask(inputs.get("head_mask"))
        hidden_states = self.embeddings(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                        inputs_embeds=inputs_embeds, training=training)  # (B, L, E)
        if self.embeddings_project is not None:
            hidden_states = self.embeddings_project(hidden_states)  # (B, L, H)
        mask = None
        if attention_mask is not None:
            # expand_dims, not [:, None, None, :]: LiteRT has no builtin for a strided slice that adds axes.
            mask = ops.not_equal(ops.expand_dims(ops.expand_dims(attention_mask, 1), 1), 0)  # (B, 1, 1, L) bool
        last, all_hidden, all_attentions = self.encoder(
            hidden_states, attention_mask=mask, head_mask=head_mask, output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states), training=training, output_position=output_position,
        )
        out = {"last_hidden_state": last}
        if all_hidden is not None:
            out["hidden_states"] = all_hidden
        if all_attentions is not None:
            out["attentions"] = all_attentions
        return self._return(out, return_dict)


# ----------------------------------------------------------------------------------- heads


@_register
class ConvBertGeneratorPredictions(ConfigLayer):
    """H -> E, exact gelu (whatever hidden_act is), LayerNorm: the input of the tied output layer."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.dense = _dense(self, self.config.embedding_size, "dense")
        self.LayerNorm = _layer_norm(self)

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.hidden_size))
        self.LayerNorm.build((None, None, self.config.embedding_size))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.config.embedding_size)

    def call(self, hidden_states):
        """(B, L, H) -> (B, L, E)."""
        return self.LayerNorm(_gelu(self.dense(hidden_states)))


@_register
class ConvBertMaskedLMHead(ConfigLayer):
    """The MLM output layer: the word-embedding matrix (tied, passed in at call time) and its own bias (V,)."""

    def build(self, input_shape=None):
        self.bias = self.add_weight(shape=(self.config.vocab_size,), initializer="zeros", name="bias")

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.config.vocab_size)

    def call(self, hidden_states, word_embeddings):
        """(B, L, E), embedding matrix (V, E) -> float32 logits (B, L, V)."""
        table = ops.cast(word_embeddings, hidden_states.dtype)
        logits = backend.matmul_transposed(hidden_states, table)  # (B, L, V)
        return ops.cast(logits, "float32") + ops.cast(self.bias, "float32")


@_register
class ConvBertForMaskedLM(ConvBertPreTrainedModel):
    """``shared_embeddings``: see ``ConvBertModel`` (the pretraining generator's)."""

    task = heads.MASKED_LM

    def __init__(self, config, shared_embeddings=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if not c.tie_word_embeddings:
            raise ValueError(
                "ConvBertForMaskedLM: untied output embeddings (tie_word_embeddings=False) are not supported"
            )
        self.convbert = self._make_backbone(shared_embeddings)
        self.generator_predictions = ConvBertGeneratorPredictions(c, **self.sub("generator_predictions"))
        self.generator_lm_head = ConvBertMaskedLMHead(c, **self.sub("generator_lm_head"))
        self._finish_init()

    def build(self, input_shape=None):
        if self._rebuild(input_shape):
            return
        c = self.config
        self.generator_predictions.build((None, None, c.hidden_size))
        self.generator_lm_head.build((None, None, c.embedding_size))

    def compute_output_shape(self, input_shape=None):
        return {"logits": (*self._lead(input_shape), self.config.vocab_size)}

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs, labels = self._arguments(locals())
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        features = self.generator_predictions(base["last_hidden_state"])  # (B, L, E)
        table = self.convbert.embeddings.word_embeddings.embeddings  # (V, E), tied
        logits = self.generator_lm_head(features, word_embeddings=ops.convert_to_tensor(table))  # (B, L, V) float32
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertClassificationHead(ConfigLayer):
    """Token 0 -> dropout -> dense -> hidden_act -> dropout -> out_proj (no pooler)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        rate = c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob
        self.dense = _dense(self, c.hidden_size, "dense")
        self.dropout = Dropout(rate, name="dropout", dtype=dt)
        self.out_proj = _dense(self, c.num_labels, "out_proj")
        self.act = get_activation(c.hidden_act)

    def build(self, input_shape=None):
        self.dense.build((None, self.config.hidden_size))
        self.out_proj.build((None, self.config.hidden_size))

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.config.num_labels)

    def call(self, hidden_states, training=None):
        """(B, L, H) -> float32 (B, num_labels)."""
        x = self.dropout(hidden_states[:, 0], training=training)  # (B, H)
        x = self.dropout(self.act(self.dense(x)), training=training)
        return ops.cast(self.out_proj(x), "float32")


@_register
class ConvBertForSequenceClassification(ConvBertPreTrainedModel):
    task = heads.SEQUENCE_CLASSIFICATION

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.convbert = self._make_backbone()
        self.classifier = ConvBertClassificationHead(self.config, **self.sub("classifier"))
        self._finish_init()

    def build(self, input_shape=None):
        if self._rebuild(input_shape):
            return
        self.classifier.build((None, None, self.config.hidden_size))

    def compute_output_shape(self, input_shape=None):
        return {"logits": (self._lead(input_shape)[0], self.config.num_labels)}

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs, labels = self._arguments(locals())
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        logits = self.classifier(base["last_hidden_state"], training=training)  # (B, num_labels)
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertForMultipleChoice(ConvBertPreTrainedModel):
    task = heads.MULTIPLE_CHOICE

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.convbert = self._make_backbone()
        self.classifier = _dense(self, 1, "classifier")
        self._finish_init()

    def build(self, input_shape=None):
        if self._rebuild(None if input_shape is None else self._flat_choices(input_shape)):
            return
        self.classifier.build((None, self.config.hidden_size))

    def _flat_choices(self, input_shape):
        b, c, length = self._lead(input_shape, rank=3)
        return (None if b is None or c is None else b * c, length)

    def compute_output_shape(self, input_shape=None):
        return {"logits": self._lead(input_shape, rank=3)[:2]}

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs, labels = self._arguments(locals())
        lead = self._batch_shape(inputs)
        key = "input_ids" if "input_ids" in inputs else "inputs_embeds"
        choices = ops.shape(inputs[key])[1]

        def flat(t):
            return ops.reshape(t, (-1, *ops.shape(t)[2:]))  # (B*C, L, ...)

        flat_inputs = {}
        for name, t in inputs.items():
            if name == "head_mask" or (name == "position_ids" and len(t.shape) < 3):
                flat_inputs[name] = t
            else:
                flat_inputs[name] = flat(t)
        base = self._backbone(flat_inputs, output_attentions, output_hidden_states, training)
        pooled = base["last_hidden_state"][:, self.task.pooled_position]  # (B*C, H)
        logits = ops.reshape(ops.cast(self.classifier(pooled), "float32"), (-1, choices))  # (B, C)
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertForTokenClassification(ConvBertPreTrainedModel):
    task = heads.TOKEN_CLASSIFICATION

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        rate = c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob
        self.convbert = self._make_backbone()
        self.dropout = Dropout(rate, name="dropout", dtype=dt)
        self.classifier = _dense(self, c.num_labels, "classifier")
        self._finish_init()

    def build(self, input_shape=None):
        if self._rebuild(input_shape):
            return
        self.dropout.build((None, None, self.config.hidden_size))
        self.classifier.build((None, None, self.config.hidden_size))

    def compute_output_shape(self, input_shape=None):
        return {"logits": (*self._lead(input_shape), self.config.num_labels)}

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs, labels = self._arguments(locals())
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        hidden = self.dropout(base["last_hidden_state"], training=training)
        logits = ops.cast(self.classifier(hidden), "float32")  # (B, L, num_labels)
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertForQuestionAnswering(ConvBertPreTrainedModel):
    task = heads.QUESTION_ANSWERING

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        if c.num_labels != 2:
            raise ValueError(
                f"ConvBertForQuestionAnswering needs num_labels=2 (start and end logits), got {c.num_labels}"
            )
        self.convbert = self._make_backbone()
        self.qa_outputs = _dense(self, c.num_labels, "qa_outputs")
        self._finish_init()

    def build(self, input_shape=None):
        if self._rebuild(input_shape):
            return
        self.qa_outputs.build((None, None, self.config.hidden_size))

    def compute_output_shape(self, input_shape=None):
        lead = self._lead(input_shape)
        return {"start_logits": lead, "end_logits": lead}

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
             start_positions=None, end_positions=None, training=None):
        inputs, labels = self._arguments(locals())
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        logits = ops.cast(self.qa_outputs(base["last_hidden_state"]), "float32")  # (B, L, 2)
        head = {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}  # (B, L) each
        return self._return(self._outputs(head, base, labels), return_dict)


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
