"""The GEMM behind every dense layer: MKL (``torch.mm`` / ``F.linear``) or oneDNN, whichever is faster here.

M tokens (the product of the leading dimensions), K input features, N output features.

PyTorch's fp32 CPU matmul is MKL's, and MKL takes its generic path on CPUs that are not Intel's:
on an AMD CPU with AVX-512 it runs at half the rate of oneDNN (which PyTorch also ships, for its
convolutions and low-precision matmuls). ``linear`` is ``F.linear`` computed by the faster of the
two, in true fp32 (oneDNN's fp32 matmul accumulates in fp32, as MKL's does; only the blocking
and so the summation order differ), forward and backward.

The choice is one explicit process setting, ``set_gemm_backend`` (or the ``CONVBERT_GEMM``
environment variable, which decides while no backend was set):

- ``"mkl"``: ``F.linear`` as PyTorch runs it; the path the model had before this module.
- ``"onednn"``: every fp32 CPU dense layer through oneDNN (``torch.ops.mkldnn._linear_pointwise``,
  which takes ordinary strided tensors, so activations are never converted). In inference (no
  gradient to the weight) each weight parameter is reordered once into oneDNN's blocked layout
  and the copy kept beside it (one more copy of the dense weights in memory, dropped with the
  parameter; an in-place update of the weight bumps its ``_version`` and repacks it).
- ``"auto"`` (the default): per shape class (M rounded up to a power of two, K, N), a short
  interleaved timing of both, once per process, cached; oneDNN only where it is faster. Without
  oneDNN (a build without it) every shape takes MKL and ``gemm_backend().reason`` says why.

Low-precision tensors, autocast, non-CPU devices and exports (ONNX, ``torch.export``, tracing)
always take ``F.linear``: PyTorch already sends bf16 CPU matmuls to oneDNN, autocast must see the
op it casts, and an exported graph must hold the portable op.

In inference with oneDNN, the feed-forward's activation and the residual sums before the
LayerNorms run in the GEMM's epilogue (``linear_activation``, ``linear_residual``): the same
numbers, one memory pass fewer each.

In training the gradients go through the same choice (grad_x = grad_y W, grad_W = grad_y^T x, as
GEMMs of their own shapes). Under ``torch.compile`` a oneDNN or "auto" layer is the custom op
``convbert::linear`` (a fake implementation for tracing, an autograd formula for the backward
graph), so the graph does not break and the per-shape choice is made when the compiled code runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import threading
import time
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from convbert_pt.activations import FORMULAS, Activation

logger = logging.getLogger(__name__)

FORMULA_NAMES = {activation: name for name, activation in FORMULAS.items()}

BACKENDS = ("auto", "mkl", "onednn")
ENV_VAR = "CONVBERT_GEMM"

# The timing of one shape class: the GEMM is cut down to at most this many FLOPs-defining rows and
# columns, so that deciding for the tied LM head (N = vocabulary) costs milliseconds, not seconds.
_PROBE_MAX_M = 256
_PROBE_MAX_N = 4096
_PROBE_RUNS = 5
# oneDNN must beat MKL by this factor: "auto" never trades today's path for a tie.
_PROBE_MARGIN = 0.95


@dataclasses.dataclass(frozen=True)
class ShapeChoice:
    """The backend "auto" chose for one shape class, and the medians it chose by (seconds)."""

    backend: str
    mkl_seconds: float | None
    onednn_seconds: float | None


@dataclasses.dataclass(frozen=True)
class GemmBackend:
    """What ``gemm_backend()`` reports: the setting, where it came from, and what it runs."""

    requested: str  # "auto" | "mkl" | "onednn"
    source: str  # "set_gemm_backend" | "env CONVBERT_GEMM" | "default"
    onednn_available: bool
    reason: str  # why the dense layers run what they run
    choices: dict[tuple[int, int, int], ShapeChoice]  # "auto" only: (M class, K, N) -> choice


@dataclasses.dataclass
class _ProcessSetting:
    """The one process-wide setting of this module (``set_gemm_backend``) and the per-shape cache of "auto"."""

    requested: str | None = None  # None: not set; the environment variable or the default decides
    source: str = "default"
    choices: dict[tuple[int, int, int], ShapeChoice] = dataclasses.field(default_factory=dict)
    # Inference only: id(weight parameter) -> (a weak reference to it, its _version, M class, the copy in
    # oneDNN's blocked layout). The entry goes when the parameter does (the weak reference's
    # callback); a new _version (an in-place update, load_state_dict) repacks.
    packed: dict[int, tuple] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_SETTING = _ProcessSetting()


def _check_backend(name: object, what: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name  # type: ignore[return-value]


def onednn_unavailable_reason() -> str | None:
    """Why oneDNN cannot run fp32 dense layers in this process, or None when it can."""
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this PyTorch build has no torch.ops.mkldnn._linear_pointwise"
    return None


def set_gemm_backend(name: str | None) -> None:
    """Choose the GEMM of every dense layer in this process: "auto" (default), "mkl" or "onednn".

    ``None`` undoes an earlier call: the environment variable or the default decides again, and the
    per-shape timings of "auto" and the packed inference weights are dropped (other calls keep
    them: the timings are facts of the machine).
    Raises if "onednn" is asked for where oneDNN cannot run.
    """
    if name is not None:
        _check_backend(name, "set_gemm_backend(name)")
    if name == "onednn" and (why := onednn_unavailable_reason()):
        raise RuntimeError(f"set_gemm_backend('onednn'): {why}")
    with _SETTING.lock:
        _SETTING.requested, _SETTING.source = name, ("default" if name is None else "set_gemm_backend")
        if name is None:
            _SETTING.choices.clear()
            _SETTING.packed.clear()


def _requested() -> tuple[str, str]:
    if _SETTING.requested is not None:
        return _SETTING.requested, _SETTING.source
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        name = _check_backend(env, f"the environment variable {ENV_VAR}")
        if name == "onednn" and (why := onednn_unavailable_reason()):
            raise RuntimeError(f"{ENV_VAR}=onednn: {why}")
        return name, f"env {ENV_VAR}"
    return "auto", "default"


def gemm_backend() -> GemmBackend:
    """The current setting and what it runs: ``.reason`` says why, ``.choices`` what "auto" measured."""
    requested, source = _requested()
    why_not = onednn_unavailable_reason()
    if requested == "mkl":
        reason = f"mkl requested ({source}): F.linear as PyTorch runs it"
    elif requested == "onednn":
        reason = f"onednn requested ({source}): every fp32 CPU dense layer through oneDNN"
    elif why_not:
        reason = f"auto falls back to mkl: {why_not}"
    else:
        reason = "auto: per shape class, the faster of mkl and onednn by a short timing (see .choices)"
    return GemmBackend(requested, source, why_not is None, reason, dict(_SETTING.choices))


# ------------------------------------------------------------------------------------------ kernels


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T + bias (N,) by oneDNN; any strides."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _shape_class(M: int, K: int, N: int) -> tuple[int, int, int]:
    return (1 << max(M - 1, 0).bit_length(), K, N)


def _probe(M: int, K: int, N: int) -> ShapeChoice:
    """Time F.linear and oneDNN on an (M, K) x (K, N) product, interleaved, medians."""
    m, n = min(M, _PROBE_MAX_M), min(N, _PROBE_MAX_N)
    # A generator of its own: the global one drives dropout and masking, which a probe in the middle
    # of a training step must not shift.
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, K, generator=g), torch.randn(n, K, generator=g)
    fns = {"mkl": lambda: F.linear(x, w), "onednn": lambda: _onednn(x, w, None)}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(_PROBE_RUNS):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    mkl_s, onednn_s = statistics.median(samples["mkl"]), statistics.median(samples["onednn"])
    return ShapeChoice(faster(mkl_s, onednn_s), mkl_s, onednn_s)


def faster(mkl_seconds: float, onednn_seconds: float) -> str:
    """The backend "auto" takes for these medians: oneDNN only when clearly faster, MKL on a tie."""
    return "onednn" if onednn_seconds < _PROBE_MARGIN * mkl_seconds else "mkl"


def _choose(M: int, K: int, N: int) -> str:
    """The backend for an (M, K) x (K, N) fp32 CPU product under the current setting."""
    requested, _ = _requested()
    if requested != "auto":
        return requested
    if onednn_unavailable_reason():
        return "mkl"
    key = _shape_class(M, K, N)
    choice = _SETTING.choices.get(key)
    if choice is None:
        with _SETTING.lock:
            choice = _SETTING.choices.get(key)
            if choice is None:
                choice = _probe(*key)
                _SETTING.choices[key] = choice
                logger.debug("gemm shape class %s: %s (mkl %.3g s, onednn %.3g s)", key, choice.backend,
                             choice.mkl_seconds, choice.onednn_seconds)
    return choice.backend


def _packed(weight: torch.Tensor, M: int) -> torch.Tensor:
    """``weight`` (N, K) reordered once into oneDNN's blocked layout for about M rows (cached)."""
    m_class = _shape_class(M, 1, 1)[0]
    key = id(weight)
    entry = _SETTING.packed.get(key)
    if entry is None or entry[0]() is not weight or entry[1] != weight._version or entry[2] != m_class:
        ref = weakref.ref(weight, lambda _, key=key: _SETTING.packed.pop(key, None))
        entry = (ref, weight._version, m_class, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), m_class))
        _SETTING.packed[key] = entry
    return entry[3]


def _gemm_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, pack: bool = False) -> torch.Tensor:
    """a (M, K) @ b (N, K)^T + bias (N,), by the chosen backend: (M, N). ``pack``: b is a parameter
    that no gradient flows to, worth keeping in oneDNN's layout."""
    if _choose(a.shape[0], a.shape[1], b.shape[0]) == "onednn":
        return _onednn(a, _packed(b, a.shape[0]) if pack else b, bias)
    return F.linear(a, b, bias)


# ------------------------------------------------------------------------------------------ the op


@torch.library.custom_op("convbert::linear", mutates_args=())
def _linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pack: bool) -> torch.Tensor:
    """x (M, K), weight (N, K), bias (N,) or None -> (M, N) by the chosen GEMM (``pack``: see _gemm_nt)."""
    return _gemm_nt(x, weight, bias, pack)


@_linear_op.register_fake
def _(x, weight, bias, pack):
    return x.new_empty(x.shape[0], weight.shape[0])


def _setup_context(ctx, inputs, output):
    x, weight, bias, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_grads(ctx, grad: torch.Tensor, gemm_nt) -> tuple:
    """(grad_x, grad_weight, grad_bias) of y = x W^T + b, the two products by ``gemm_nt(a, b)`` = a b^T."""
    x, weight = ctx.saved_tensors
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = gemm_nt(grad, weight.t())  # (M, N) @ (N, K) -> (M, K)
    if ctx.needs_input_grad[1]:
        grad_w = gemm_nt(grad.t(), x.t())  # (N, M) @ (M, K) -> (N, K)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad.sum(0)
    return grad_x, grad_w, grad_b


def _backward(ctx, grad):
    return (*_linear_grads(ctx, grad, lambda a, b: _linear_op(a, b, None, False)), None)


_linear_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerLinear(torch.autograd.Function):
    """``convbert::linear`` without the custom-op dispatcher, for eager calls.

    The dispatcher's first call of a custom op imports ``torch._dynamo`` and with it Triton, whose
    LLVM aborts a process that has already loaded TensorFlow's ("Option ... registered more than
    once"): moving weights between the frameworks in one process must not need the compiler.
    Same GEMMs, same backward as ``_backward``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _gemm_nt(x, weight, bias, False)

    @staticmethod
    def backward(ctx, grad):
        return _linear_grads(ctx, grad, lambda a, b: _gemm_nt(a, b, None, False))


def _exporting() -> bool:
    # An exported graph (ONNX, torch.export) must hold the portable aten op, not ours.
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _routable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        not _exporting()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` by the GEMM of ``set_gemm_backend``: x (..., K), weight (N, K) -> (..., N)."""
    if not _routable(x, weight):
        return F.linear(x, weight, bias)
    requested, _ = _requested()
    if requested == "mkl":
        return F.linear(x, weight, bias)
    lead, K, N = x.shape[:-1], x.shape[-1], weight.shape[0]
    x2 = x.reshape(-1, K)  # (M, K)
    if torch.compiler.is_compiling():
        y = _linear_op(x2, weight, bias, False)  # (M, N); the op chooses when the compiled code runs
    elif _choose(x2.shape[0], K, N) == "mkl":
        return F.linear(x, weight, bias)
    elif torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        y = _EagerLinear.apply(x2, weight, bias)  # (M, N)
    else:
        # Inference on a parameter itself (not a view made per call): pack it once.
        y = _gemm_nt(x2, weight, bias, isinstance(weight, nn.Parameter))  # (M, N)
    return y.view(*lead, N)  # (..., N)


# oneDNN post-ops for the activations it computes in the GEMM's epilogue: (attr, scalars, algorithm).
_POST_OPS = {"gelu": ("gelu", [], "none"), "gelu_tanh": ("gelu", [], "tanh"), "relu": ("relu", [], "")}


def _fused_inference(x: torch.Tensor, weight: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """Whether this product may take a fused oneDNN epilogue: eager, fp32 CPU, no gradient to any of its
    tensors (the fused ops have no autograd formula), oneDNN chosen for the shape."""
    if not _routable(x, weight) or torch.compiler.is_compiling() or _requested()[0] == "mkl":
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, *others)):
        return False
    K = x.shape[-1]
    return _choose(x.numel() // max(K, 1), K, weight.shape[0]) == "onednn"


def _inference_weight(x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _packed(weight, x2.shape[0]) if isinstance(weight, nn.Parameter) else weight


def linear_activation(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      activation: Activation) -> torch.Tensor:
    """``activation(linear(x, weight, bias))``; in oneDNN inference the activation runs in the GEMM's
    epilogue (gelu, gelu_tanh, relu), saving one pass over the (..., N) output."""
    post = _POST_OPS.get(FORMULA_NAMES.get(activation, ""))
    if post is None or not _fused_inference(x, weight, bias):
        return activation(linear(x, weight, bias))
    lead, K, N = x.shape[:-1], x.shape[-1], weight.shape[0]
    x2 = x.reshape(-1, K)  # (M, K)
    y = torch.ops.mkldnn._linear_pointwise(x2, _inference_weight(x2, weight), bias, *post)  # (M, N)
    return y.view(*lead, N)  # (..., N)


def linear_residual(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    residual: torch.Tensor) -> torch.Tensor:
    """``linear(x, weight, bias) + residual``; in oneDNN inference the sum runs in the GEMM's epilogue."""
    if (not _fused_inference(x, weight, bias, residual) or residual.dtype != torch.float32
            or residual.shape != (*x.shape[:-1], weight.shape[0])):
        return linear(x, weight, bias) + residual
    lead, K, N = x.shape[:-1], x.shape[-1], weight.shape[0]
    x2 = x.reshape(-1, K)  # (M, K)
    y = torch.ops.mkldnn._linear_pointwise.binary(
        x2, residual.reshape(-1, N), _inference_weight(x2, weight), bias, "add")  # (M, N)
    return y.view(*lead, N)  # (..., N)


def mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) @ b (N, K)^T -> (M, N) without autograd (a backward formula's product), by the chosen GEMM."""
    if not _routable(a, b) or _requested()[0] == "mkl":
        return torch.mm(a, b.t())
    return _gemm_nt(a, b, None)


def fusable(module: nn.Module) -> bool:
    """Whether a model may read ``module``'s weight and bias into a fused product instead of calling it:
    only our own ``Linear``, unwrapped and without hooks (a LoRA or quantized replacement, or a
    forward hook, must see its call)."""
    return type(module) is Linear and not (module._forward_hooks or module._forward_pre_hooks)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state_dict) whose product is ``linear``'s."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)
