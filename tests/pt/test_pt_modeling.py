"""Model behaviour: config variants, init, outputs, masks, embeddings inputs, checkpointing, autocast,
training, and bad input."""

from __future__ import annotations

import pytest
import torch

from convbert_common import heads
from convbert_pt.modeling import (
    MODEL_CLASSES,
    ConvBertForMaskedLM,
    ConvBertForMultipleChoice,
    ConvBertForSequenceClassification,
    ConvBertModel,
    GroupedLinearLayer,
    SeparableConv1D,
)
from tests.configs import tiny_config
from tests.parity import assert_close
from tests.pt.conftest import expected_outputs, head_dir, random_inputs, torch_inputs
from tests.tolerances import (
    BF16_LOGITS_ATOL,
    DISTINCT_ATOL,
    DISTINCT_RTOL,
    INIT_STD_RTOL,
    MODEL_PATHS_FP32_ATOL,
    REFERENCE_FP32_ATOL,
    SAME_COMPUTATION_FP32_ATOL,
    SAME_COMPUTATION_GRAD_RTOL,
)

VARIANTS = [
    {"head_ratio": 1},
    {"head_ratio": 2},
    {"head_ratio": 3, "num_attention_heads": 6, "hidden_size": 24, "intermediate_size": 24},
    {"head_ratio": 4, "num_attention_heads": 8},
    {"num_groups": 2},
    {"num_groups": 4},
    {"embedding_size": 32},  # no embeddings_project
    {"conv_kernel_size": 1},
    {"conv_kernel_size": 15},  # K > L
    {"hidden_act": "gelu_new"},
    {"hidden_act": "relu"},
    {"hidden_act": "silu"},
]


def _inputs_for(head, config, **kw):
    inputs = random_inputs(config, **kw)
    if head == "multiple_choice":
        inputs = {k: v.view(1, *v.shape) for k, v in inputs.items()}
    return inputs


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_config_variants_run_forward_and_backward_with_a_gradient_for_every_parameter(overrides):
    config = tiny_config(**overrides)
    model = ConvBertForMaskedLM(config).train()
    inputs = random_inputs(config, length=11)
    out = model(**inputs, labels=inputs["input_ids"], output_attentions=True, output_hidden_states=True)
    assert out.logits.shape == (3, 11, config.vocab_size)
    assert out.attentions[0].shape == (3, config.heads.num_heads, 11, 11)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if config.conv_kernel_size == 1 and ("key_conv_attn_layer" in name or "conv_kernel_layer" in name):
            continue  # a softmax over one tap is constant: the kernel predictor gets no gradient
        assert torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("head", sorted(MODEL_CLASSES))
def test_every_head_runs_forward_and_backward(head):
    config = tiny_config(num_labels=2)
    model = MODEL_CLASSES[head](config).train()
    out = model(**_inputs_for(head, config))
    first = out[0]
    first.float().pow(2).mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "pooler" not in n)


def test_fresh_initialisation_follows_the_reference():
    config = tiny_config(hidden_size=256, embedding_size=128, intermediate_size=512, num_groups=2,
                          initializer_range=0.02, vocab_size=2000, num_attention_heads=8)
    model = ConvBertForMaskedLM(config)
    std = lambda t: t.detach().float().std().item()  # noqa: E731
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert std(module.weight) == pytest.approx(config.initializer_range, rel=INIT_STD_RTOL), name
            assert torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, torch.nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, SeparableConv1D):
            assert std(module.depthwise.weight) == pytest.approx(config.initializer_range, rel=INIT_STD_RTOL), name
            assert std(module.pointwise.weight) == pytest.approx(config.initializer_range, rel=INIT_STD_RTOL), name
            assert torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, GroupedLinearLayer):
            assert std(module.weight) == pytest.approx(config.initializer_range, rel=INIT_STD_RTOL), name
            assert torch.count_nonzero(module.bias) == 0, name
    emb = model.get_input_embeddings()
    assert torch.count_nonzero(emb.weight[config.pad_token_id]) == 0
    assert std(emb.weight) == pytest.approx(config.initializer_range, rel=INIT_STD_RTOL)
    assert torch.count_nonzero(model.generator_lm_head.bias) == 0


def test_outputs_have_attribute_key_index_access_and_omit_none_fields():
    config = tiny_config()
    model = ConvBertForSequenceClassification(config).eval()
    inputs = random_inputs(config)
    out = model(**inputs)
    assert out.keys() == ["logits"] and len(out) == 1
    assert out["logits"] is out.logits is out[0] is out.to_tuple()[0]
    assert out.loss is None and "loss" not in out
    with pytest.raises(KeyError, match="no field 'loss'"):
        out["loss"]
    out = model(**inputs, labels=torch.tensor([0, 1, 1]), output_hidden_states=True)
    assert out.keys() == ["loss", "logits", "hidden_states"]
    assert out[0] is out.loss and out[1] is out.logits and out[-1] is out.hidden_states
    as_tuple = model(**inputs, labels=torch.tensor([0, 1, 1]), output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3
    assert torch.equal(as_tuple[1], out.logits)
    base = ConvBertModel(config).eval()
    assert isinstance(base(**inputs, return_dict=False), tuple)
    assert list(base(**inputs)) == ["last_hidden_state"]


def test_head_mask_of_either_shape_masks_the_named_heads():
    model = ConvBertModel.from_pretrained(head_dir("model"))
    inputs = torch_inputs(expected_outputs("model"))
    with torch.no_grad():
        plain = model(**inputs, output_attentions=True)
        ones = model(**inputs, head_mask=torch.ones(2))
        assert_close("head_mask ones", ones.last_hidden_state, plain.last_hidden_state, REFERENCE_FP32_ATOL)
        per_layer = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        masked = model(**inputs, head_mask=per_layer, output_attentions=True)
    assert torch.count_nonzero(masked.attentions[0][:, 1]) == 0 and torch.count_nonzero(masked.attentions[1][:, 0]) == 0
    assert torch.equal(masked.attentions[0][:, 0], plain.attentions[0][:, 0])
    assert not torch.allclose(masked.last_hidden_state, plain.last_hidden_state, rtol=DISTINCT_RTOL, atol=DISTINCT_ATOL)
    with pytest.raises(ValueError, match=r"head_mask must have shape \(2,\) or \(2, 2\)"):
        model(**inputs, head_mask=torch.ones(4))


@pytest.fixture
def tiny_model() -> tuple[ConvBertModel, dict[str, torch.Tensor]]:
    """A fresh tiny ConvBertModel in eval mode, and a padded batch of 3 x 11 for it."""
    config = tiny_config()
    return ConvBertModel(config).eval(), random_inputs(config)


def test_inputs_embeds_position_ids_and_token_type_defaults_match_the_explicit_inputs(tiny_model):
    model, inputs = tiny_model
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        via_embeds = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                           token_type_ids=inputs["token_type_ids"]).last_hidden_state
        positions = torch.arange(11).expand(3, 11)
        via_positions = model(**inputs, position_ids=positions).last_hidden_state
        no_types = model(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        zero_types = model(inputs["input_ids"], inputs["attention_mask"],
                           torch.zeros_like(inputs["input_ids"])).last_hidden_state
        no_mask = model(inputs["input_ids"]).last_hidden_state
        ones_mask = model(inputs["input_ids"], torch.ones_like(inputs["input_ids"])).last_hidden_state
    assert torch.equal(via_embeds, ref)
    assert torch.equal(via_positions, ref)
    assert_close("token types default", no_types, zero_types, SAME_COMPUTATION_FP32_ATOL)
    assert_close("mask default", no_mask, ones_mask, SAME_COMPUTATION_FP32_ATOL)


def test_explicit_and_fused_attention_agree_with_and_without_the_reference_dynamic_conv(tiny_model):
    model, inputs = tiny_model
    with torch.no_grad():
        fused = model(**inputs).last_hidden_state
        explicit = model(**inputs, output_attentions=True).last_hidden_state
        model.set_sdconv_impl("reference")
        reference = model(**inputs, output_attentions=True).last_hidden_state
    assert_close("fused vs explicit", fused, explicit, MODEL_PATHS_FP32_ATOL)
    assert_close("native vs reference sdconv", fused, reference, MODEL_PATHS_FP32_ATOL)
    with pytest.raises(ValueError, match="impl must be one of"):
        model.set_sdconv_impl("cuda")


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config()
    inputs = random_inputs(config)
    labels = torch.tensor([0, 1, 0])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = ConvBertForSequenceClassification(config).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        model(**inputs, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert_close(name, grads[1][name], grads[0][name], SAME_COMPUTATION_FP32_ATOL)


def test_dropout_is_active_in_training_and_off_in_eval():
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.3)
    model = ConvBertModel(config)
    inputs = random_inputs(config)
    a, b = model(**inputs).last_hidden_state, model(**inputs).last_hidden_state
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model(**inputs).last_hidden_state, model(**inputs).last_hidden_state)


def test_autocast_bfloat16_runs_forward_and_backward_close_to_fp32():
    model = ConvBertForSequenceClassification.from_pretrained(head_dir("sequence_classification"))
    inputs = torch_inputs(expected_outputs("sequence_classification"))
    with torch.no_grad():
        ref = model(**inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**inputs).logits
    assert low.dtype == torch.bfloat16
    assert_close("bf16 autocast logits", low.float(), ref, BF16_LOGITS_ATOL)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_toy_training_loop_drives_the_loss_down():
    """Label = whether token 7 occurs in the sequence."""
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, vocab_size=20)
    model = ConvBertForSequenceClassification(config).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(8, 20, (64, 10), generator=g)
    labels = torch.randint(0, 2, (64,), generator=g)
    ids[labels == 1, torch.randint(1, 10, (int(labels.sum()),), generator=g)] = 7
    ids[:, 0] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5, losses[::10]


def test_num_parameters_counts_shared_tensors_once():
    config = tiny_config()
    model = ConvBertForMaskedLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == total
    emb = config.vocab_size * 16 + config.max_position_embeddings * 16 + config.type_vocab_size * 16
    assert model.num_parameters(exclude_embeddings=True) == total - emb
    model.convbert.embeddings.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == total - emb - 2 * 16


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: {**i, "input_ids": i["input_ids"].index_fill(1, torch.tensor([2]), 99)},
         r"input_ids contains the id 99, which is >= vocab_size \(99\)"),
        (lambda i: {**i, "input_ids": i["input_ids"].index_fill(1, torch.tensor([2]), -3)},
         "input_ids contains the negative id -3"),
        (lambda i: {**i, "token_type_ids": i["token_type_ids"] * 2},
         r"token_type_ids contains the id 2, which is >= type_vocab_size \(2\)"),
        (lambda i: {k: v.repeat(1, 4) for k, v in i.items()},
         r"sequence length 44 is longer than max_position_embeddings \(32\)"),
        (lambda i: {**i, "attention_mask": i["attention_mask"][:, :-1]},
         r"attention_mask must have the shape of the input, \(3, 11\); got \(3, 10\)"),
        (lambda i: {**i, "token_type_ids": i["token_type_ids"][:2]},
         r"token_type_ids must have the shape of the input, \(3, 11\); got \(2, 11\)"),
        (lambda i: {**i, "inputs_embeds": torch.zeros(3, 11, 16)},
         r"pass exactly one of input_ids and inputs_embeds \(got both\)"),
        (lambda i: {"attention_mask": i["attention_mask"]},
         r"pass exactly one of input_ids and inputs_embeds \(got neither\)"),
        (lambda i: {"inputs_embeds": torch.zeros(3, 11, 32)},
         r"inputs_embeds must have shape \(batch, sequence, embedding_size=16\)"),
        (lambda i: {**i, "input_ids": i["input_ids"].float()}, "input_ids must be an integer tensor"),
        (lambda i: {**i, "input_ids": i["input_ids"][0]}, r"input_ids must have shape \(batch, sequence\)"),
        (lambda i: {**i, "position_ids": torch.arange(11) + 30}, r"position_ids contains the id 40"),
    ],
)
def test_bad_inputs_raise_clear_errors_before_running(change, message):
    config = tiny_config()
    model = ConvBertForMaskedLM(config)
    with pytest.raises(ValueError, match=message):
        model(**change(random_inputs(config)))


def test_multiple_choice_needs_three_dimensional_inputs():
    config = tiny_config()
    model = ConvBertForMultipleChoice(config)
    inputs = random_inputs(config)
    with pytest.raises(ValueError, match=r"must have shape \(batch, num_choices, sequence\)"):
        model(**inputs)
    mc = {k: v.unsqueeze(1) for k, v in inputs.items()}
    mc["attention_mask"] = mc["attention_mask"][..., :5]
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of the input"):
        model(**mc)


def test_model_needs_a_convbert_config():
    with pytest.raises(TypeError, match="needs a ConvBertConfig"):
        ConvBertModel({"hidden_size": 32})


# ------------------------------------------------------------------ the pooled position alone

POOLING_HEADS = sorted(h for h in MODEL_CLASSES if heads.get(h).pooled_position is not None)


def _last_layer_rows(model, call) -> list[int]:
    """Run ``call`` and return the sequence length of the last encoder layer's output."""
    seen = []
    layer = model.convbert.encoder.layer[-1]
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out[0].shape[1]))
    try:
        call()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("head", POOLING_HEADS)
@pytest.mark.parametrize("length", [1, 2, 3, 4, 11])  # K = 5: the edge window is 3 positions
def test_a_pooling_heads_last_layer_computes_its_position_alone_with_the_full_layers_numbers(head, length):
    """Sequence classification reads position 0, multiple choice the last one: the last layer computes
    that one position, and logits and every gradient are the full layer's. Asking for the hidden states
    runs the full layer, which is the reference here."""
    config = tiny_config(num_labels=2)
    model = MODEL_CLASSES[head](config).train()
    inputs = _inputs_for(head, config, length=length)
    results = []
    for full in (False, True):
        model.zero_grad()
        def call(full=full):
            results.append(model(**inputs, output_hidden_states=full).logits)

        rows = _last_layer_rows(model, call)
        assert rows == [length if full else 1]
        results[-1].pow(2).sum().backward()
        results.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    pruned, pruned_grads, reference, reference_grads = results
    assert_close(f"{head} logits at L={length}", pruned, reference, SAME_COMPUTATION_FP32_ATOL)
    assert pruned_grads.keys() == reference_grads.keys()
    bound = SAME_COMPUTATION_GRAD_RTOL * max(float(g.abs().max()) for g in reference_grads.values())
    for name, grad in reference_grads.items():
        assert_close(f"{head} gradient of {name}", pruned_grads[name], grad, bound)


def test_attention_maps_asked_for_keep_every_position_of_the_last_layer():
    config = tiny_config()
    model = ConvBertForSequenceClassification(config).eval()
    inputs = random_inputs(config, length=7)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    assert out.attentions[-1].shape == (3, config.heads.num_heads, 7, 7)


@pytest.mark.parametrize("position", [0, -1])
def test_the_bare_model_computes_one_position_on_request(tiny_model, position):
    model, inputs = tiny_model
    with torch.no_grad():
        full = model(**inputs).last_hidden_state
        one = model(**inputs, output_position=position).last_hidden_state
    assert one.shape == (full.shape[0], 1, model.config.hidden_size)
    assert_close(f"position {position}", one[:, 0], full[:, position], SAME_COMPUTATION_FP32_ATOL)


def test_the_bare_model_refuses_another_position(tiny_model):
    model, inputs = tiny_model
    with pytest.raises(ValueError, match="position must be 0 .first., -1 .last. or None, got 3"):
        model(**inputs, output_position=3)
