"""ConvBERT for Keras 3.

B batch, L sequence, E embedding size, H hidden size, N' attention heads after head_ratio,
D head size, A = N'*D, K conv kernel size, G groups, V vocab, I intermediate size.

Embeddings -> mixed attention (N' self-attention heads beside N' span-based dynamic convolution
heads) -> feed-forward, repeated; then the task heads. The classes, their order and their
sub-layer attribute names are those of ``convbert_pt/modeling.py`` (Keras reserves ``output``:
the two sub-layers PyTorch calls ``output`` are ``attention_output`` and ``layer_output`` here).
Every variable is reached from the model by the attribute path that ``convbert_common.weight_map``
names (``WeightSpec.keras_layer`` / ``keras_variable``); ``convbert_tf.io`` loads and saves through it.

The math is written with ``keras.ops``; TensorFlow is imported only for the id checks that must
raise inside a graph and to tell whether XLA is compiling. Fast paths, each chosen in one line with
the plain path beside it: attention through ``keras.ops.dot_product_attention`` unless attention
maps, a head mask or attention dropout are needed; the dynamic convolution by shift-and-accumulate
(``sdconv.py``); under XLA, the depthwise convolution by the same shift-and-accumulate (XLA's
grouped convolution is an order of magnitude slower on CPU). Softmaxes, LayerNorms
and logits are float32 under mixed precision; variables are always float32.

Every model builds all its variables in ``__init__`` (their shapes depend on the config only),
so a fresh model can be loaded into, saved, or compiled with XLA before it has seen any data.
"""

from __future__ import annotations

import contextvars
import math

import keras
import numpy as np
from keras import ops

from convbert_common import shapes
from convbert_common.config import ConvBertConfig
from convbert_tf import losses
from convbert_tf._config_layer import ConfigLayer, as_config
from convbert_tf.sdconv import depthwise_conv1d, span_dynamic_conv

_register = keras.saving.register_keras_serializable(package="convbert")

# ----------------------------------------------------------------------------------- pure functions


def _gelu_exact(x):
    return ops.gelu(x, approximate=False)


def _gelu_tanh(x):
    return ops.gelu(x, approximate=True)


ACTIVATIONS = {
    "gelu": _gelu_exact,  # exact (erf)
    # gelu_new, gelu_pytorch_tanh and gelu_fast are all 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
    "tanh": ops.tanh,
}


def get_activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def grouped_linear(x, kernel, bias):
    """x (B, L, I), kernel (G, I/G, O/G), bias (O,) -> (B, L, O): G independent dense maps side by side."""
    groups, group_in, group_out = kernel.shape
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    x = ops.reshape(x, (batch, length, groups, group_in))  # (B, L, G, I/G)
    y = ops.einsum("blgi,gio->blgo", x, kernel)  # (B, L, G, O/G)
    y = ops.reshape(y, (batch, length, groups * group_out))  # (B, L, O)
    return y + bias


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
    if not need_weights and head_mask is None and not use_dropout:
        return ops.dot_product_attention(query, key, value, mask=mask, scale=scale), None
    scores = ops.einsum("btnd,bsnd->bnts", query, key)  # (B, N', L, L)
    scores = ops.cast(scores, "float32") * scale
    if mask is not None:
        scores = ops.where(mask, scores, _large_negative("float32"))
    probs = ops.cast(ops.softmax(scores, axis=-1), value.dtype)  # softmax in float32
    if use_dropout:
        probs = dropout(probs, training=training)
    if head_mask is not None:
        probs = probs * ops.cast(head_mask, probs.dtype)
    return ops.einsum("bnts,bsnd->btnd", probs, value), probs  # (B, L, N', D), (B, N', L, L)


# ----------------------------------------------------------------------------------- input checks


def _concrete(x) -> np.ndarray | None:
    """The values of ``x`` when they are known now (eager), else None (inside a graph / XLA)."""
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


def _compiling_with_xla() -> bool:
    """Whether TensorFlow is tracing this call for XLA: ``tf.function(jit_compile=True)``, or ``fit`` after
    ``compile(jit_compile=True)`` (Keras' default where a GPU is visible)."""
    if keras.backend.backend() != "tensorflow":
        return False
    try:  # TF's own test for "inside an XLA context"; it has no public equivalent
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a TensorFlow that moved it: the plain path is correct, only slower
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def _checked_ids(ids, upper: int, name: str, upper_name: str):
    """Validate index tensor values before a lookup; return (ids, valid) with valid None if nothing to mask.

    Eager: ValueError naming the offending id. Graph (tf.function, tf.data): an assert that raises
    InvalidArgumentError with the largest and smallest id, ordered before the lookup. XLA ignores
    asserts, so the caller also replaces the embeddings of invalid ids by NaN: a wrong id shows in
    the outputs instead of silently reading a clamped row (CPU) or zeros (GPU).
    """
    values = _concrete(ids)
    if values is not None:
        if values.size:
            low, high = int(values.min()), int(values.max())
            if high >= upper:
                raise ValueError(f"{name} contains the id {high}, which is >= {upper_name} ({upper})")
            if low < 0:
                raise ValueError(f"{name} contains the negative id {low}; ids must be in [0, {upper_name}={upper})")
        return ids, None
    if keras.backend.backend() != "tensorflow":
        return ids, None
    import tensorflow as tf

    ids = tf.convert_to_tensor(ids)
    valid = tf.logical_and(ids >= 0, ids < upper)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [f"{name} must hold ids in [0, {upper_name}={upper}); largest id:", tf.reduce_max(ids),
         "smallest id:", tf.reduce_min(ids)],
    )
    with tf.control_dependencies([check]):
        ids = tf.identity(ids)
    return ids, valid


def _in_symbolic_build() -> bool:
    """Whether Keras is only computing output specs (``backend.compute_output_spec``), not running."""
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # pragma: no cover - a Keras without the module
        return False
    return in_symbolic_scope()


def _static_shape(x) -> tuple:
    return tuple(x.shape)


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _check_inputs(config: ConvBertConfig, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
    """Shape and dtype checks of the backbone's inputs (static: they run in every mode)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds (got "
                         + ("both" if input_ids is not None else "neither") + ")")
    if input_ids is not None:
        shape = _static_shape(input_ids)
        if len(shape) != 2:
            raise ValueError(f"input_ids must have shape (batch, sequence), got {shape}")
        if "int" not in keras.backend.standardize_dtype(input_ids.dtype):
            raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    else:
        emb = _static_shape(inputs_embeds)
        if len(emb) != 3 or emb[-1] not in (None, config.embedding_size):
            raise ValueError(
                f"inputs_embeds must have shape (batch, sequence, embedding_size={config.embedding_size}), got {emb}"
            )
        if "float" not in keras.backend.standardize_dtype(inputs_embeds.dtype):
            raise ValueError(f"inputs_embeds must be a floating-point tensor, got dtype {inputs_embeds.dtype}")
        shape = emb[:2]
    length = shape[1]
    if length is not None and length > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {length} is longer than max_position_embeddings ({config.max_position_embeddings})"
        )
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and not _same_shape(_static_shape(t), shape):
            raise ValueError(f"{name} must have the shape of the input, {shape}; got {_static_shape(t)}")
    if token_type_ids is not None and "int" not in keras.backend.standardize_dtype(token_type_ids.dtype):
        raise ValueError(f"token_type_ids must be an integer tensor, got dtype {token_type_ids.dtype}")
    if position_ids is not None:
        pshape = _static_shape(position_ids)
        if not any(_same_shape(pshape, s) for s in (shape, (1, length), (length,))):
            raise ValueError(
                f"position_ids must have shape {shape}, (1, {length}) or ({length},), got {pshape}"
            )
        if "int" not in keras.backend.standardize_dtype(position_ids.dtype):
            raise ValueError(f"position_ids must be an integer tensor, got dtype {position_ids.dtype}")


# Set (only) by ``convbert_tf.io.skip_init()`` around building a model whose every variable is
# overwritten right after: drawing ~110M random numbers for ConvBERT-base costs seconds.
SKIP_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("convbert_skip_init", default=False)


def _initializer(config: ConvBertConfig):
    if SKIP_INIT.get():
        return keras.initializers.Zeros()
    # A fresh initializer per variable: Keras gives a reused unseeded instance the same values.
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


def _dense(config: ConvBertConfig, units: int, name: str, dtype) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=_initializer(config), name=name, dtype=dtype)


def _layer_norm(config: ConvBertConfig, dtype) -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name="LayerNorm", dtype=dtype)


# ----------------------------------------------------------------------------------- embeddings


@_register
class ConvBertEmbeddings(ConfigLayer):
    """word + position + token type -> LayerNorm -> dropout, all E wide."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, E, dt = self.config, self.config.embedding_size, self.dtype_policy
        self.word_embeddings = keras.layers.Embedding(
            c.vocab_size, E, embeddings_initializer=_initializer(c), name="word_embeddings", dtype=dt)
        self.position_embeddings = keras.layers.Embedding(
            c.max_position_embeddings, E, embeddings_initializer=_initializer(c), name="position_embeddings",
            dtype=dt)
        self.token_type_embeddings = keras.layers.Embedding(
            c.type_vocab_size, E, embeddings_initializer=_initializer(c), name="token_type_embeddings", dtype=dt)
        self.LayerNorm = _layer_norm(c, dt)
        self.dropout = keras.layers.Dropout(c.hidden_dropout_prob, name="dropout", dtype=dt)

    def build(self, input_shape=None):
        self.word_embeddings.build()
        self.position_embeddings.build()
        self.token_type_embeddings.build()
        self.LayerNorm.build((None, None, self.config.embedding_size))
        pad = self.config.pad_token_id
        if pad is not None and not SKIP_INIT.get():
            # As PyTorch's nn.Embedding(padding_idx=...): a fresh model starts with a zero [PAD] row.
            table = self.word_embeddings.embeddings
            row = ops.zeros((1, self.config.embedding_size), dtype=table.dtype)
            table.assign(ops.slice_update(table.value, (pad, 0), row))

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


@_register
class SeparableConv1D(keras.layers.Layer):
    """Depthwise (K taps per channel) then pointwise (H -> A) convolution over the sequence, plus bias.

    Variables: depthwise_kernel (K, H, 1), pointwise_kernel (1, H, A), bias (A,).
    """

    def __init__(self, config, input_filters: int, output_filters: int, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        self.input_filters = input_filters
        self.output_filters = output_filters
        self.kernel_size = kernel_size

    def build(self, input_shape=None):
        self.depthwise_kernel = self.add_weight(
            shape=(self.kernel_size, self.input_filters, 1), initializer=_initializer(self.config),
            name="depthwise_kernel")
        self.pointwise_kernel = self.add_weight(
            shape=(1, self.input_filters, self.output_filters), initializer=_initializer(self.config),
            name="pointwise_kernel")
        self.bias = self.add_weight(shape=(self.output_filters,), initializer="zeros", name="bias")

    def call(self, hidden_states):
        """(B, L, H) -> (B, L, A); 'same' padding, (K - 1) / 2 zeros on each side."""
        if _compiling_with_xla():
            # XLA lowers a depthwise convolution to a grouped one, on CPU ~13x slower than K shifted
            # multiply-adds that it fuses into one loop (31 ms vs 2.4 ms at 8x128x768, K=9: a third of
            # a second per ConvBERT-base forward); TF's own depthwise kernel beats both outside XLA.
            x = depthwise_conv1d(hidden_states, self.depthwise_kernel)  # (B, L, H)
            x = ops.matmul(x, self.pointwise_kernel[0])  # (B, L, A)
        else:
            x = ops.separable_conv(hidden_states, self.depthwise_kernel, self.pointwise_kernel, strides=1,
                                   padding="same", data_format="channels_last")  # (B, L, A)
        return x + self.bias

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict(), "input_filters": self.input_filters,
                "output_filters": self.output_filters, "kernel_size": self.kernel_size}


@_register
class ConvBertSelfAttention(ConfigLayer):
    """N' self-attention heads and N' span-based dynamic convolution heads on the same input."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.heads = c.heads
        H, A, K = c.hidden_size, self.heads.all_head_size, c.conv_kernel_size
        self.kernel_size = K
        self.query = _dense(c, A, "query", dt)
        self.key = _dense(c, A, "key", dt)
        self.value = _dense(c, A, "value", dt)
        self.key_conv_attn_layer = SeparableConv1D(c, H, A, K, name="key_conv_attn_layer", dtype=dt)
        self.conv_kernel_layer = _dense(c, shapes.conv_kernel_width(self.heads.num_heads, K), "conv_kernel_layer", dt)
        self.conv_out_layer = _dense(c, A, "conv_out_layer", dt)
        self.dropout = keras.layers.Dropout(c.attention_probs_dropout_prob, name="dropout", dtype=dt)
        # span_dynamic_conv implementation: "auto" | "native" | "reference"
        self.sdconv_impl = "auto"

    def build(self, input_shape=None):
        H, A = self.config.hidden_size, self.heads.all_head_size
        for layer in (self.query, self.key, self.value, self.key_conv_attn_layer, self.conv_out_layer):
            layer.build((None, None, H))
        self.conv_kernel_layer.build((None, None, A))

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=None):
        N, D, K = self.heads.num_heads, self.heads.head_size, self.kernel_size
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        mixed_query = self.query(hidden_states)  # (B, L, A)
        query = ops.reshape(mixed_query, (batch, length, N, D))  # (B, L, N', D)
        key = ops.reshape(self.key(hidden_states), (batch, length, N, D))  # (B, L, N', D)
        value = ops.reshape(self.value(hidden_states), (batch, length, N, D))  # (B, L, N', D)

        # Convolution branch: a K-tap kernel per token and head, predicted from the span around it.
        span_key = self.key_conv_attn_layer(hidden_states)  # (B, L, A)
        kernel_logits = self.conv_kernel_layer(span_key * mixed_query)  # (B, L, N'*K)
        kernel_logits = ops.reshape(kernel_logits, (batch, length, N, K))  # (B, L, N', K)
        conv_values = ops.reshape(self.conv_out_layer(hidden_states), (batch, length, N, D))  # (B, L, N', D)
        conv = span_dynamic_conv(conv_values, kernel_logits, impl=self.sdconv_impl)  # (B, L, N', D)

        context, probs = attention(query, key, value, attention_mask, head_mask, self.dropout, training,
                                   need_weights=output_attentions)  # (B, L, N', D)
        # Attention heads first, convolution heads second.
        mixed = ops.concatenate([context, ops.cast(conv, context.dtype)], axis=2)  # (B, L, 2N', D)
        return ops.reshape(mixed, (batch, length, self.heads.mixed_size)), probs  # (B, L, 2A)


@_register
class ConvBertSelfOutput(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.dense = _dense(c, c.hidden_size, "dense", dt)
        self.LayerNorm = _layer_norm(c, dt)
        self.dropout = keras.layers.Dropout(c.hidden_dropout_prob, name="dropout", dtype=dt)

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.heads.mixed_size))
        self.LayerNorm.build((None, None, self.config.hidden_size))

    def call(self, hidden_states, input_tensor, training=None):
        """(B, L, 2A), residual (B, L, H) -> (B, L, H)."""
        return self.LayerNorm(self.dropout(self.dense(hidden_states), training=training) + input_tensor)


@_register
class ConvBertAttention(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.self = ConvBertSelfAttention(self.config, name="self", dtype=self.dtype_policy)
        self.attention_output = ConvBertSelfOutput(self.config, name="attention_output", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.self.build()
        self.attention_output.build()

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=None):
        mixed, probs = self.self(hidden_states, attention_mask=attention_mask, head_mask=head_mask,
                                 output_attentions=output_attentions, training=training)
        return self.attention_output(mixed, input_tensor=hidden_states, training=training), probs


# ----------------------------------------------------------------------------------- feed-forward


@_register
class GroupedLinearLayer(keras.layers.Layer):
    """A dense layer split into G groups along the input and output channels: kernel (G, I/G, O/G), bias (O,)."""

    def __init__(self, input_size: int, output_size: int, num_groups: int, initializer_range: float = 0.02,
                 **kwargs):
        super().__init__(**kwargs)
        if input_size % num_groups or output_size % num_groups:
            raise ValueError(f"num_groups ({num_groups}) must divide input_size ({input_size}) "
                             f"and output_size ({output_size})")
        self.input_size = input_size
        self.output_size = output_size
        self.num_groups = num_groups
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        G = self.num_groups
        self.kernel = self.add_weight(
            shape=(G, self.input_size // G, self.output_size // G),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range), name="kernel")
        self.bias = self.add_weight(shape=(self.output_size,), initializer="zeros", name="bias")

    def call(self, hidden_states):
        return grouped_linear(hidden_states, self.kernel, self.bias)

    def get_config(self) -> dict:
        return {**super().get_config(), "input_size": self.input_size, "output_size": self.output_size,
                "num_groups": self.num_groups, "initializer_range": self.initializer_range}


def _feed_forward_dense(config: ConvBertConfig, input_size: int, output_size: int, dtype):
    if config.num_groups == 1:
        return _dense(config, output_size, "dense", dtype)
    return GroupedLinearLayer(input_size, output_size, config.num_groups, config.initializer_range, name="dense",
                              dtype=dtype)


@_register
class ConvBertIntermediate(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.dense = _feed_forward_dense(c, c.hidden_size, c.intermediate_size, self.dtype_policy)
        self.intermediate_act_fn = get_activation(c.hidden_act)

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.hidden_size))

    def call(self, hidden_states):
        """(B, L, H) -> (B, L, I)."""
        return self.intermediate_act_fn(self.dense(hidden_states))


@_register
class ConvBertOutput(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.dense = _feed_forward_dense(c, c.intermediate_size, c.hidden_size, dt)
        self.LayerNorm = _layer_norm(c, dt)
        self.dropout = keras.layers.Dropout(c.hidden_dropout_prob, name="dropout", dtype=dt)

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.intermediate_size))
        self.LayerNorm.build((None, None, self.config.hidden_size))

    def call(self, hidden_states, input_tensor, training=None):
        """(B, L, I), residual (B, L, H) -> (B, L, H)."""
        return self.LayerNorm(self.dropout(self.dense(hidden_states), training=training) + input_tensor)


@_register
class ConvBertLayer(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        dt = self.dtype_policy
        self.attention = ConvBertAttention(self.config, name="attention", dtype=dt)
        self.intermediate = ConvBertIntermediate(self.config, name="intermediate", dtype=dt)
        self.layer_output = ConvBertOutput(self.config, name="layer_output", dtype=dt)

    def build(self, input_shape=None):
        self.attention.build()
        self.intermediate.build()
        self.layer_output.build()

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=None):
        attention_output, probs = self.attention(hidden_states, attention_mask=attention_mask, head_mask=head_mask,
                                                 output_attentions=output_attentions, training=training)
        intermediate = self.intermediate(attention_output)  # (B, L, I)
        return self.layer_output(intermediate, input_tensor=attention_output, training=training), probs


@_register
class ConvBertEncoder(ConfigLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.layer = [ConvBertLayer(self.config, name=f"layer_{i}", dtype=self.dtype_policy)
                      for i in range(self.config.num_hidden_layers)]

    def build(self, input_shape=None):
        for layer in self.layer:
            layer.build()

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
             output_hidden_states=False, training=None):
        """hidden_states (B, L, H); attention_mask (B, 1, 1, L) bool; head_mask (layers, 1, N', 1, 1)."""
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, layer in enumerate(self.layer):
            layer_head_mask = head_mask[i] if head_mask is not None else None
            hidden_states, probs = layer(hidden_states, attention_mask=attention_mask, head_mask=layer_head_mask,
                                         output_attentions=output_attentions, training=training)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (probs,)
        return hidden_states, all_hidden, all_attentions


# ----------------------------------------------------------------------------------- base class

# The seed API's inputs, in its positional order (a list input follows it).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")
def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


_ID_INPUTS = ("input_ids", "token_type_ids", "position_ids", "labels", "start_positions", "end_positions")


@_register
class ConvBertPreTrainedModel(keras.Model):
    """Config handling, input parsing, ``compile`` defaults, and loading / saving through ``io.py``.

    Every model takes its inputs as a dict (HF names, labels included), a list in the order of
    ``INPUT_NAMES``, or a single ``input_ids`` tensor, and returns a dict of tensors with HF's
    keys. ``compile(optimizer=...)`` picks the task's loss (see ``losses.py``): ``fit`` works with
    labels in ``y`` or HF-style inside ``x``.
    """

    head_name = "model"  # the weight_map head of the class

    def __init__(self, config, **kwargs):
        config = as_config(config)
        super().__init__(**kwargs)
        self.config = config
        self._task_loss = losses.TaskLoss(self.head_name, config)
        self._uses_task_loss = False
        self._uses_default_metrics = False

    def _make_backbone(self) -> ConvBertModel:
        # The nested model builds itself in its __init__; under this model's name scope its variable
        # paths read "<model>/convbert/...", like the head's own "<model>/<head layer>/...".
        with keras.name_scope(self.name):
            return ConvBertModel(self.config, name="convbert", dtype=self.dtype_policy)

    def _finish_init(self) -> None:
        # Variables' shapes depend on the config only: build them now, deterministically.
        self.build()

    # -------------------------------------------------------------- serialisation
    def get_config(self) -> dict:
        return {**keras.layers.Layer.get_config(self), "config": self.config.to_dict()}

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
        from convbert_tf import io

        return io.from_pretrained(pretrained_model_path, model_class=cls, **kwargs)

    def save_pretrained(self, save_directory, **kwargs) -> str:
        """``config.json`` + ``model.safetensors`` in HF's layout; see ``convbert_tf.io.save_pretrained``."""
        from convbert_tf import io

        return io.save_pretrained(self, save_directory, **kwargs)

    def set_sdconv_impl(self, impl: str) -> None:
        """Choose the span_dynamic_conv implementation of every layer ("auto", "native", "reference")."""
        from convbert_tf.sdconv import IMPLS

        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        base = self.convbert if self.head_name != "model" else self
        for layer in base.encoder.layer:
            layer.attention.self.sdconv_impl = impl

    # -------------------------------------------------------------- inputs
    def _unpack(self, input_ids, **given) -> dict:
        """Merge a dict / list / tensor first argument with the keyword arguments; None means absent."""
        names = INPUT_NAMES + self._task_loss.label_names
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
        out = {**first, **given}
        for k, v in out.items():
            out[k] = ops.convert_to_tensor(v)
            if (k in _ID_INPUTS and _in_symbolic_build()
                    and "float" in keras.backend.standardize_dtype(out[k].dtype)):
                # Keras' symbolic build under tf.distribute averages an input batch over replicas,
                # turning int ids into floats; only shapes matter there.
                out[k] = ops.cast(out[k], "int32")
        return out

    def _split_labels(self, inputs: dict) -> dict | None:
        names = self._task_loss.label_names
        labels = {n: inputs.pop(n) for n in names if n in inputs}
        return labels or None

    def _head_mask(self, head_mask):
        """(N',) or (layers, N') -> (layers, 1, N', 1, 1), broadcastable onto (B, N', L, L)."""
        if head_mask is None:
            return None
        layers, n = self.config.num_hidden_layers, self.config.heads.num_heads
        shape = _static_shape(head_mask)
        if shape == (n,):
            head_mask = ops.broadcast_to(ops.expand_dims(head_mask, 0), (layers, n))
        elif shape != (layers, n):
            raise ValueError(
                f"head_mask must have shape ({n},) or ({layers}, {n}) (num_attention_heads // head_ratio = {n} "
                f"heads per layer), got {shape}"
            )
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

    def _backbone(self, inputs: dict, output_attentions, output_hidden_states, training) -> dict:
        return self.convbert(inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             training=training)

    @staticmethod
    def _batch_shape(inputs: dict) -> tuple:
        if "input_ids" in inputs:
            return _static_shape(inputs["input_ids"])
        if "inputs_embeds" in inputs:
            return _static_shape(inputs["inputs_embeds"])[:-1]
        raise ValueError("pass exactly one of input_ids and inputs_embeds (got neither)")

    @staticmethod
    def _return(result: dict, return_dict):
        return result if return_dict is None or return_dict else tuple(result.values())

    # -------------------------------------------------------------- training (compile / fit)
    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics=None, **kwargs):
        """Keras ``compile`` with task defaults.

        ``optimizer="auto"``: Adam(5e-5). ``loss="auto"``: the task's loss (``losses.TaskLoss``), labels
        taken from ``y`` or, HF-style, from ``labels`` / ``start_positions`` / ``end_positions`` in ``x``.
        ``metrics="auto"``: accuracy (or MAE for regression), masked like the loss. Any other value is
        passed to Keras unchanged (a user loss then sees the output dict as ``y_pred``).
        """
        if _is_auto(optimizer):
            optimizer = keras.optimizers.Adam(learning_rate=5e-5)
        if _is_auto(loss) and self.head_name == "model":
            raise ValueError("ConvBertModel has no task loss: pass loss=... to compile(), or use a head class")
        self._uses_task_loss = _is_auto(loss)
        self._uses_default_metrics = _is_auto(metrics) and self._uses_task_loss
        if self._uses_task_loss:
            loss = None
        if _is_auto(metrics):
            metrics = None
            if self._uses_default_metrics and weighted_metrics is None:
                weighted_metrics = self._task_loss.default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs)
        # The model is built, so the optimizer can create its slots now: created inside the first
        # traced train step instead, they would make tf.function trace that step twice.
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self._uses_task_loss:
            config = dict(config)
            config["loss"] = "auto"
            if self._uses_default_metrics:
                config["metrics"] = "auto"
                config["weighted_metrics"] = None
        return config

    def serving_input_signature(self) -> dict:
        """Named int32 specs of ``input_ids``, ``attention_mask`` and ``token_type_ids`` (B, L) / (B, C, L)."""
        import tensorflow as tf

        shape = (None, None, None) if self.head_name == "multiple_choice" else (None, None)
        return {name: tf.TensorSpec(shape, tf.int32, name=name)
                for name in ("input_ids", "attention_mask", "token_type_ids")}

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras ``export``; a SavedModel's serving signature defaults to ``serving_input_signature()``."""
        if input_signature is None and format == "tf_saved_model":
            input_signature = [self.serving_input_signature()]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    def compile_from_config(self, config) -> None:
        """Re-compile after ``keras.saving.load_model`` (the compile config holds "auto" for the defaults)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)  # also builds the optimizer, so that its saved state can be loaded

    def _labels_for_loss(self, x, y) -> tuple[dict, bool]:
        """The labels by HF name, from ``y`` or from ``x``; and whether they came from ``x``."""
        names = self._task_loss.label_names
        if y is not None:
            if isinstance(y, dict):
                missing = [n for n in names if n not in y]
                if missing:
                    raise ValueError(f"y is a dict without {missing}; expected the keys {list(names)}")
                return {n: y[n] for n in names}, False
            if len(names) == 2:
                if not isinstance(y, (list, tuple)) or len(y) != 2:
                    raise ValueError("question answering needs y = (start_positions, end_positions) or a dict")
                return dict(zip(names, y, strict=True)), False
            return {names[0]: y}, False
        if isinstance(x, dict) and all(n in x for n in names):
            return {n: x[n] for n in names}, True
        raise ValueError(
            f"{type(self).__name__}: no labels; pass y to fit/evaluate, or put {list(names)} in the input dict"
        )

    def _task_labels(self, x, y) -> tuple[dict, bool]:
        labels, from_x = self._labels_for_loss(x, y)
        if _in_symbolic_build() and self._task_loss.expects_integer_labels():
            # See _unpack: Keras' symbolic build under tf.distribute hands over float-averaged labels.
            labels = {k: ops.cast(v, "int32") for k, v in labels.items()}
        return labels, from_x

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not self._uses_task_loss:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        labels, from_x = self._task_labels(x, y)
        if from_x and sample_weight is None and "loss" in y_pred:
            loss = y_pred["loss"]  # call() computed it with the same Loss objects
        else:
            self._task_loss.check(labels, self._batch_shape(x if isinstance(x, dict) else {"input_ids": x}))
            loss = self._task_loss(labels, y_pred, sample_weight)
        if self.losses:  # add_loss / regularisers: Keras adds them when no compiled loss is set
            loss = loss + super().compute_loss(x, y, y_pred, sample_weight, training=training)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self._uses_task_loss:
            labels, _ = self._task_labels(x, y)
            y, y_pred, sample_weight = self._task_loss.metric_arguments(labels, y_pred, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)


# ----------------------------------------------------------------------------------- the model


@_register
class ConvBertModel(ConvBertPreTrainedModel):
    """The bare encoder: last hidden state (B, L, H), optionally every hidden state and attention map."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.embeddings = ConvBertEmbeddings(c, name="embeddings", dtype=dt)
        if c.embedding_size != c.hidden_size:
            self.embeddings_project = _dense(c, c.hidden_size, "embeddings_project", dt)
        else:
            self.embeddings_project = None
        self.encoder = ConvBertEncoder(c, name="encoder", dtype=dt)
        self._finish_init()

    def build(self, input_shape=None):
        self.embeddings.build()
        if self.embeddings_project is not None:
            self.embeddings_project.build((None, None, self.config.embedding_size))
        self.encoder.build()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
             training=None):
        inputs = self._unpack(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds)
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
            mask = ops.not_equal(attention_mask, 0)[:, None, None, :]  # (B, 1, 1, L) bool
        last, all_hidden, all_attentions = self.encoder(
            hidden_states, attention_mask=mask, head_mask=head_mask, output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states), training=training,
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
        c, dt = self.config, self.dtype_policy
        self.dense = _dense(c, c.embedding_size, "dense", dt)
        self.LayerNorm = _layer_norm(c, dt)

    def build(self, input_shape=None):
        self.dense.build((None, None, self.config.hidden_size))
        self.LayerNorm.build((None, None, self.config.embedding_size))

    def call(self, hidden_states):
        """(B, L, H) -> (B, L, E)."""
        return self.LayerNorm(_gelu_exact(self.dense(hidden_states)))


@_register
class ConvBertMaskedLMHead(ConfigLayer):
    """The MLM output layer: the word-embedding matrix (tied, passed in at call time) and its own bias (V,)."""

    def build(self, input_shape=None):
        self.bias = self.add_weight(shape=(self.config.vocab_size,), initializer="zeros", name="bias")

    def call(self, hidden_states, word_embeddings):
        """(B, L, E), embedding matrix (V, E) -> float32 logits (B, L, V)."""
        table = ops.cast(word_embeddings, hidden_states.dtype)
        logits = ops.einsum("ble,ve->blv", hidden_states, table)  # (B, L, V)
        return ops.cast(logits, "float32") + ops.cast(self.bias, "float32")


@_register
class ConvBertForMaskedLM(ConvBertPreTrainedModel):
    head_name = "masked_lm"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        if not c.tie_word_embeddings:
            raise ValueError(
                "ConvBertForMaskedLM: untied output embeddings (tie_word_embeddings=False) are not supported"
            )
        self.convbert = self._make_backbone()
        self.generator_predictions = ConvBertGeneratorPredictions(c, name="generator_predictions", dtype=dt)
        self.generator_lm_head = ConvBertMaskedLMHead(c, name="generator_lm_head", dtype=dt)
        self._finish_init()

    def build(self, input_shape=None):
        self.generator_predictions.build()
        self.generator_lm_head.build()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs = self._unpack(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              labels=labels)
        labels = self._split_labels(inputs)
        if labels is not None:
            self._task_loss.check(labels, self._batch_shape(inputs))
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
        self.dense = _dense(c, c.hidden_size, "dense", dt)
        self.dropout = keras.layers.Dropout(rate, name="dropout", dtype=dt)
        self.out_proj = _dense(c, c.num_labels, "out_proj", dt)
        self.act = get_activation(c.hidden_act)

    def build(self, input_shape=None):
        self.dense.build((None, self.config.hidden_size))
        self.out_proj.build((None, self.config.hidden_size))

    def call(self, hidden_states, training=None):
        """(B, L, H) -> float32 (B, num_labels)."""
        x = self.dropout(hidden_states[:, 0], training=training)  # (B, H)
        x = self.dropout(self.act(self.dense(x)), training=training)
        return ops.cast(self.out_proj(x), "float32")


@_register
class ConvBertForSequenceClassification(ConvBertPreTrainedModel):
    head_name = "sequence_classification"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.convbert = self._make_backbone()
        self.classifier = ConvBertClassificationHead(c, name="classifier", dtype=dt)
        self._finish_init()

    def build(self, input_shape=None):
        self.classifier.build()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs = self._unpack(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              labels=labels)
        labels = self._split_labels(inputs)
        if labels is not None:
            self._task_loss.check(labels, self._batch_shape(inputs))
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        logits = self.classifier(base["last_hidden_state"], training=training)  # (B, num_labels)
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertForMultipleChoice(ConvBertPreTrainedModel):
    head_name = "multiple_choice"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        self.convbert = self._make_backbone()
        self.classifier = _dense(c, 1, "classifier", dt)
        self._finish_init()

    def build(self, input_shape=None):
        self.classifier.build((None, self.config.hidden_size))

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs = self._unpack(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              labels=labels)
        labels = self._split_labels(inputs)
        lead = self._batch_shape(inputs)
        if len(lead) != 3:
            raise ValueError(
                "multiple choice inputs must have shape (batch, num_choices, sequence)"
                + (", embedding" if "inputs_embeds" in inputs else "") + f", got {lead}"
            )
        if labels is not None:
            self._task_loss.check(labels, lead)
        for name in ("attention_mask", "token_type_ids"):
            if name in inputs and not _same_shape(_static_shape(inputs[name]), lead):
                raise ValueError(f"{name} must have the shape of the input, {lead}; got {_static_shape(inputs[name])}")
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
        # The reference pools the LAST position (its summary_type default), padding or not.
        pooled = base["last_hidden_state"][:, -1]  # (B*C, H)
        logits = ops.reshape(ops.cast(self.classifier(pooled), "float32"), (-1, choices))  # (B, C)
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertForTokenClassification(ConvBertPreTrainedModel):
    head_name = "token_classification"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        rate = c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob
        self.convbert = self._make_backbone()
        self.dropout = keras.layers.Dropout(rate, name="dropout", dtype=dt)
        self.classifier = _dense(c, c.num_labels, "classifier", dt)
        self._finish_init()

    def build(self, input_shape=None):
        self.classifier.build((None, None, self.config.hidden_size))

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=None):
        inputs = self._unpack(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              labels=labels)
        labels = self._split_labels(inputs)
        if labels is not None:
            self._task_loss.check(labels, self._batch_shape(inputs))
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        hidden = self.dropout(base["last_hidden_state"], training=training)
        logits = ops.cast(self.classifier(hidden), "float32")  # (B, L, num_labels)
        return self._return(self._outputs({"logits": logits}, base, labels), return_dict)


@_register
class ConvBertForQuestionAnswering(ConvBertPreTrainedModel):
    head_name = "question_answering"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        c, dt = self.config, self.dtype_policy
        if c.num_labels != 2:
            raise ValueError(
                f"ConvBertForQuestionAnswering needs num_labels=2 (start and end logits), got {c.num_labels}"
            )
        self.convbert = self._make_backbone()
        self.qa_outputs = _dense(c, c.num_labels, "qa_outputs", dt)
        self._finish_init()

    def build(self, input_shape=None):
        self.qa_outputs.build((None, None, self.config.hidden_size))

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
             start_positions=None, end_positions=None, training=None):
        inputs = self._unpack(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              start_positions=start_positions, end_positions=end_positions)
        labels = self._split_labels(inputs)
        if labels is not None:
            self._task_loss.check(labels, self._batch_shape(inputs))
        base = self._backbone(inputs, output_attentions, output_hidden_states, training)
        logits = ops.cast(self.qa_outputs(base["last_hidden_state"]), "float32")  # (B, L, 2)
        head = {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}  # (B, L) each
        return self._return(self._outputs(head, base, labels), return_dict)


MODEL_CLASSES = {
    cls.head_name: cls
    for cls in (
        ConvBertModel,
        ConvBertForMaskedLM,
        ConvBertForSequenceClassification,
        ConvBertForMultipleChoice,
        ConvBertForTokenClassification,
        ConvBertForQuestionAnswering,
    )
}
