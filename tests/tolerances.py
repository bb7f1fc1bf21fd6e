"""Every numerical tolerance of the test suite, in one table.

fp32 comparisons are absolute max-abs-diff bounds. Low-precision and kernel checks use the
three-way rule of DESIGN.md: ``|x - ref32| <= LOWP_FACTOR * |x_plain - ref32| + atol``, where the
plain same-precision path sets the bar.
"""

# Our fp32 forward vs the reference implementation's golden outputs (HF transformers 4.57).
REFERENCE_FP32_ATOL = 1e-5
# PyTorch vs Keras on the same weights, fp32, eval mode.
CROSS_FP32_ATOL = 1e-5
# Gradients PyTorch vs Keras, relative to the gradient's max magnitude.
CROSS_GRAD_RTOL = 1e-5
# A gradient that is exactly zero in exact arithmetic (a bias that a softmax cancels) is float32
# rounding noise of the O(1) upstream gradients it sums: a few float32 epsilons, in both frameworks.
ZERO_GRAD_ATOL = 8 * 1.1920929e-07
# Shift-and-accumulate dynamic conv vs the unfold reference, fp32 (forward and gradients).
SDCONV_NATIVE_FP32_ATOL = 1e-6
# recompute.py's autograd functions vs plain autograd, fp32 gradients (same formulas, recomputed).
RECOMPUTE_FP32_ATOL = 1e-6
# XLA / tf.function / torch.compile vs eager, fp32.
COMPILED_FP32_ATOL = 1e-5
# Three-way rule for low precision and kernels.
LOWP_FACTOR = 2.0
LOWP_ATOL = {"float16": 1e-3, "bfloat16": 1e-2, "float32": 1e-6}
# bf16 autocast model logits vs our fp32 logits (issue target).
BF16_LOGITS_ATOL = 5e-2
# Seeded statistical checks (masking rates and splits): a count must lie within this many binomial
# standard deviations of n*p. Five sigma fails a correct sampler with probability < 1e-6 per check,
# so a failure means a wrong rate, not bad luck; the seeds make every run the same.
BINOMIAL_Z = 5.0
# Exported graphs against our own eager model, fp32 (the export issue's targets): onnxruntime's CPU
# kernels (MLAS GEMM, its fused LayerNormalization) and LiteRT's (XNNPACK) sum in other orders.
ONNX_FP32_ATOL = 1e-4
LITERT_FP32_ATOL = 1e-4
# Dynamic int8 (onnxruntime) against fp32 on the fine-tuned toy classifier: the share of evaluation
# examples whose predicted label must not change.
INT8_LABEL_AGREEMENT = 0.99
