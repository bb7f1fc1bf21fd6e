"""What only JAX or PyTorch can show: jit equals eager, Keras' distribution API, and parity with convbert_pt
in the same process. These run in the subprocesses of tests/backends (KERAS_BACKEND=jax / torch)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from convbert_tf import distribution
from tests.conftest import HEADS, fixture_file
from tests.parity import assert_close
from tests.tf.helpers import fit_config, head_config, model_class, to_numpy, toy_batch
from tests.tolerances import COMPILED_FP32_ATOL, CROSS_FP32_ATOL

BACKEND = keras.backend.backend()
jax_only = pytest.mark.skipif(BACKEND != "jax", reason=f"JAX only; this run is {BACKEND}")
torch_only = pytest.mark.skipif(BACKEND != "torch", reason=f"the torch backend only; this run is {BACKEND}")


@jax_only
@pytest.mark.parametrize("head", HEADS)
def test_jax_jit_equals_eager(head):
    import jax

    model = model_class(head)(head_config(head))
    x, _ = toy_batch(head)
    eager = to_numpy(model(x, output_hidden_states=True, training=False))
    compiled = to_numpy(jax.jit(lambda inputs: model(inputs, output_hidden_states=True, training=False))(x))
    assert sorted(compiled) == sorted(eager)
    for key in eager:
        assert_close(f"{head}/{key} jit", compiled[key], eager[key], COMPILED_FP32_ATOL)


@jax_only
def test_jax_jit_turns_an_out_of_range_id_into_nan_instead_of_a_silent_row():
    import jax

    model = model_class("model")(head_config("model"))
    run = jax.jit(lambda ids: model(ids)["last_hidden_state"])
    assert np.isnan(to_numpy(run(np.array([[1, 2, 150, 3]])))).all()
    assert np.isfinite(to_numpy(run(np.array([[1, 2, 15, 3]])))).all()


def _two_devices():
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        pytest.skip("needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    return devices[:2]


def _sgd_step(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    loss = model.train_on_batch(x, y, return_dict=True)["loss"]
    return float(loss), [to_numpy(v) for v in model.weights]


@jax_only
def test_data_parallel_over_two_devices_gives_the_single_device_loss_and_step():
    devices = _two_devices()
    head = "sequence_classification"
    x, y = toy_batch(head, batch=8)
    single = model_class(head)(fit_config(head))
    start = [to_numpy(v) for v in single.weights]
    loss_one, after_one = _sgd_step(single, x, y)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        parallel = model_class(head)(fit_config(head))
        parallel.set_weights(start)
        loss_two, after_two = _sgd_step(parallel, x, y)
    finally:
        keras.distribution.set_distribution(None)
    assert_close("loss", np.float64(loss_two), np.float64(loss_one), CROSS_FP32_ATOL)
    for a, b in zip(after_two, after_one, strict=True):
        assert_close("weights after one step", a, b, CROSS_FP32_ATOL)


@jax_only
@pytest.mark.parametrize("num_groups", [1, 2])
def test_model_parallel_layout_map_shards_the_large_kernels_and_trains(num_groups):
    devices = _two_devices()
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    config = fit_config("sequence_classification", num_groups=num_groups)
    keras.distribution.set_distribution(keras.distribution.ModelParallel(
        layout_map=distribution.get_layout_map(mesh, config), batch_dim_name="batch"))
    try:
        model = model_class("sequence_classification")(config)
        specs = {v.path.split("/", 2)[-1]: tuple(v.value.sharding.spec) for v in model.weights}
        x, y = toy_batch("sequence_classification")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        losses = model.fit(x, y, epochs=3, verbose=0).history["loss"]
    finally:
        keras.distribution.set_distribution(None)
    assert "model" in specs["encoder/layer_0/attention/self/query/kernel"]
    assert "model" in specs["encoder/layer_0/layer_output/dense/kernel"]
    assert "model" in specs["embeddings/word_embeddings/embeddings"]
    assert all(s in ((None,), ()) for k, s in specs.items() if k.endswith("/bias"))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@torch_only
@pytest.mark.parametrize("head", ["sequence_classification", "masked_lm", "question_answering"])
def test_convbert_pt_and_convbert_tf_run_in_one_process_with_the_same_numbers(head):
    import torch

    import convbert_pt
    import convbert_tf
    from convbert_common import heads

    folder = fixture_file(f"hf-convbert-tiny/{head}/model.safetensors").parent
    name = heads.get(head).class_name
    pt = getattr(convbert_pt, name).from_pretrained(folder).eval()
    tf = getattr(convbert_tf, name).from_pretrained(folder)
    x = {k: v for k, v in toy_batch(head, length=12)[0].items()}
    x["input_ids"] = x["input_ids"] + 1000  # real vocabulary rows of the fixture
    with torch.no_grad():
        theirs = pt(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in x.items()})
    ours = tf(x, training=False)
    for key in heads.get(head).output_keys:
        assert_close(f"{head}/{key}", ours[key], getattr(theirs, key), CROSS_FP32_ATOL)
