"""Adam and AdamW with compiled updates (``convbert_tf.optimizers``): Keras' numbers, one kernel a weight.

Backend-neutral: on JAX and PyTorch the update is the plain one (the JAX and PyTorch legs of
tests/backends run this file again), on TensorFlow it is one XLA call per weight.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from convbert_tf import optimizers
from convbert_tf import train as tf_train
from tests.tf.helpers import to_numpy
from tests.tolerances import EXACT, SAME_COMPUTATION_FP32_RTOL

TENSORFLOW = keras.backend.backend() == "tensorflow"
SHAPES = ((5,), (3, 4), (2, 3, 4))



class KerasAdam(keras.optimizers.Adam):
    """Keras' own ``update_step``. (On PyTorch, ``keras.optimizers.Adam()`` itself builds another class,
    a ``torch._foreach`` version whose rounding differs; a subclass keeps the generic one.)"""


class KerasAdamW(keras.optimizers.AdamW):
    """Keras' own ``update_step`` (see ``KerasAdam``)."""


PAIRS = {
    "adam": (lambda fused: optimizers.Adam(0.1, fused=fused), lambda: KerasAdam(0.1)),
    "adam_amsgrad": (lambda fused: optimizers.Adam(0.1, amsgrad=True, fused=fused),
                     lambda: KerasAdam(0.1, amsgrad=True)),
    "adamw": (lambda fused: optimizers.AdamW(0.1, weight_decay=0.5, fused=fused),
              lambda: KerasAdamW(0.1, weight_decay=0.5)),
    # PyTorch's rule (the pretraining loop's): its plain update is the reference.
    "torch_adamw": (lambda fused: tf_train.AdamW(0.1, weight_decay=0.5, fused=fused),
                    lambda: tf_train.AdamW(0.1, weight_decay=0.5, fused=False)),
}


def _steps(optimizer, steps: int = 3):
    """Weights, first and second moments after ``steps`` updates of variables of three ranks.

    The weights start near zero, so the sum of the updates is what they hold (float32 keeps its
    digits), and each step's gradients differ.
    """
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(scale=0.01, size=s).astype("float32")) for s in SHAPES]
    optimizer.build(variables)
    for step in range(steps):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=s).astype("float32") * (step + 1)) for s in SHAPES]
        optimizer.apply(grads, variables)
    slots = [to_numpy(x) for x in (*optimizer._momentums, *optimizer._velocities)]
    return [to_numpy(v) for v in variables], slots


@pytest.mark.parametrize("rule", sorted(PAIRS))
def test_the_compiled_update_takes_the_reference_steps(rule):
    ours, reference = PAIRS[rule]
    weights, slots = _steps(ours(True))
    ref_weights, ref_slots = _steps(reference())
    for got, want in zip(weights + slots, ref_weights + ref_slots, strict=True):
        np.testing.assert_allclose(got, want, rtol=SAME_COMPUTATION_FP32_RTOL, atol=EXACT)


@pytest.mark.parametrize("rule", sorted(PAIRS))
def test_fused_false_runs_the_reference_ops_bit_for_bit(rule):
    ours, reference = PAIRS[rule]
    assert not optimizers.fuses(ours(False))
    assert optimizers.fuses(ours(True)) == TENSORFLOW
    weights, slots = _steps(ours(False))
    ref_weights, ref_slots = _steps(reference())
    for got, want in zip(weights + slots, ref_weights + ref_slots, strict=True):
        np.testing.assert_array_equal(got, want)


ASSIGNS = {"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"}


def _update_ops(optimizer, variables, grads) -> tuple[int, int]:
    """(variable assignments, calls that XLA must compile) in the traced ``apply``."""
    import tensorflow as tf

    graph = tf.function(lambda: optimizer.apply(grads, variables)).get_concrete_function().graph
    ops = graph.get_operations()
    compiled = [op for op in ops if op.type == "StatefulPartitionedCall" and op.get_attr("_XlaMustCompile")]
    return sum(op.type in ASSIGNS for op in ops), len(compiled)


@pytest.mark.tensorflow_backend
@pytest.mark.parametrize("rule", sorted(PAIRS))
def test_on_tensorflow_each_weight_s_update_is_one_compiled_call(rule):
    variables = [keras.Variable(np.zeros(s, "float32")) for s in SHAPES]
    grads = [keras.ops.ones(s) for s in SHAPES]
    fused, plain = PAIRS[rule][0](True), PAIRS[rule][0](False)
    for optimizer in (fused, plain):
        optimizer.build(variables)
    assigns, compiled = _update_ops(fused, variables, grads)
    plain_assigns, plain_compiled = _update_ops(plain, variables, grads)
    assert compiled == len(variables) and plain_compiled == 0
    # The first and second moments (and amsgrad's running maximum) and the weight itself: assigned
    # op by op in the plain graph, inside the compiled calls in the fused one. The step counter and
    # the weight decay stay outside in both.
    per_weight = 4 if "amsgrad" in rule else 3
    assert plain_assigns - assigns == per_weight * len(variables)


# The op that forms each rule's scalars (beta_1^t and beta_2^t; 1 - beta^t through expm1).
SCALAR_OPS = {"adam": "Pow", "adam_amsgrad": "Pow", "adamw": "Pow", "torch_adamw": "Expm1"}


@pytest.mark.tensorflow_backend
@pytest.mark.parametrize("rule", sorted(PAIRS))
def test_one_apply_forms_its_step_scalars_once_not_per_weight(rule):
    """Keras forms the step size again for every weight: a dozen scalar ops each, run one by one."""
    import tensorflow as tf

    variables = [keras.Variable(np.zeros(s, "float32")) for s in SHAPES * 2]
    grads = [keras.ops.ones(s) for s in SHAPES * 2]
    optimizer = PAIRS[rule][0](True)
    optimizer.build(variables)
    graph = tf.function(lambda: optimizer.apply(grads, variables)).get_concrete_function().graph
    assert sum(op.type == SCALAR_OPS[rule] for op in graph.get_operations()) == 2
    # Outside an apply (a direct update_step) the scalars are formed on the spot.
    assert optimizer.step_scalar("key", lambda: 3) == 3


@pytest.mark.tensorflow_backend
@pytest.mark.parametrize("cls", [optimizers.Adam, optimizers.AdamW])
def test_an_embedding_s_sparse_gradient_updates_as_its_dense_sum(cls):
    """A row used twice (indices [1, 1]) gets (g1 + g2)^2 in its second moment, as the dense gradient."""
    import tensorflow as tf

    values = tf.constant([[1.0, 2.0], [3.0, -1.0]])
    sparse = tf.IndexedSlices(values, tf.constant([1, 1]), tf.constant([3, 2]))
    dense = tf.convert_to_tensor(sparse)
    results = []
    for grad in (sparse, dense):
        for fused in (True, False):
            variable = keras.Variable(np.full((3, 2), 0.5, "float32"))
            optimizer = cls(0.1, fused=fused)
            optimizer.build([variable])
            optimizer.apply([grad], [variable])
            results.append((to_numpy(variable), to_numpy(optimizer._velocities[0])))
    np.testing.assert_allclose(results[0][1][1], 0.001 * np.array([4.0, 1.0]) ** 2, rtol=SAME_COMPUTATION_FP32_RTOL)
    for weights, second in results[1:]:
        np.testing.assert_allclose(weights, results[0][0], rtol=EXACT, atol=EXACT)
        np.testing.assert_allclose(second, results[0][1], rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("cls", [optimizers.Adam, optimizers.AdamW, tf_train.AdamW])
def test_the_optimizers_serialize_with_their_fused_setting(cls):
    optimizer = cls(learning_rate=0.01, fused=False)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is cls and restored.fused is False
    assert restored.get_config() == optimizer.get_config()


def test_compile_auto_gives_the_compiled_adam_on_tensorflow_and_keras_adam_elsewhere():
    from convbert_tf import ConvBertForSequenceClassification
    from tests.configs import tiny_config

    model = ConvBertForSequenceClassification(tiny_config())
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    # On PyTorch Keras swaps its own Adam for a torch._foreach one, which a subclass would lose.
    assert isinstance(model.optimizer, optimizers.Adam) == TENSORFLOW
    assert float(to_numpy(model.optimizer.learning_rate)) == pytest.approx(5e-5)
