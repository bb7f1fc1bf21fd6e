"""Every numerical tolerance of the test suite, in one table.

fp32 comparisons are absolute max-abs-diff bounds (``tests.parity.assert_close``) unless the name
ends in ``_RTOL`` (relative: ``pytest.approx(rel=)``, ``rtol=``, or a bound scaled by the largest
magnitude). Low-precision and kernel checks use the three-way rule of DESIGN.md:
``|x - ref32| <= LOWP_FACTOR * |x_plain - ref32| + atol``, where the plain same-precision path sets
the bar. A test never writes a number for a tolerance: it names one of these.
"""

# Bit-identical: the same operations on the same numbers (the same forward reached through dict,
# list or keyword inputs, a head's backbone vs the bare model on the same weights, "auto" choosing
# the native op). Any difference at all means another code path ran.
EXACT = 0.0

# Our fp32 forward vs the reference implementation's golden outputs (HF transformers 4.57).
REFERENCE_FP32_ATOL = 1e-5
# PyTorch vs Keras on the same weights, fp32, eval mode.
CROSS_FP32_ATOL = 1e-5
# Gradients PyTorch vs Keras, relative to the gradient's max magnitude.
CROSS_GRAD_RTOL = 1e-5
# A gradient that is exactly zero in exact arithmetic (a bias that a softmax cancels) is float32
# rounding noise of the O(1) upstream gradients it sums: a few float32 epsilons, in both frameworks.
ZERO_GRAD_ATOL = 8 * 1.1920929e-07
# Two fp32 implementations of the span dynamic conv against each other (shift-and-accumulate, the
# unfold reference, the Triton kernel, the closed form at L = 1; Keras' grouped-conv depthwise),
# forward and gradients: sums of at most K products of O(1) terms, a few float32 epsilons each.
SDCONV_NATIVE_FP32_ATOL = 1e-6
# The same in float64 (native vs reference; the reference vs the definition written out index by
# index): a few float64 epsilons (2.2e-16) of O(1) sums, so 1e-13 is ~450 eps and anything that
# is not the same formula misses it by orders of magnitude.
SDCONV_FP64_ATOL = 1e-13
# A float64 layer (the compiled layer norm under a float64 policy) against its formula in float64
# NumPy: O(1) values through means over C and a reciprocal square root, ~100 float64 eps; a float32
# computation anywhere misses it by nine orders of magnitude.
FP64_FORMULA_ATOL = 1e-12
# The Triton kernel's softmax probabilities vs torch.softmax on the same fp32 logits, elementwise
# (torch.testing.assert_close): the kernel computes the softmax itself (its own max, exp and
# summation order); probabilities are <= 1, so the absolute part only matters for near-zero taps.
SOFTMAX_KERNEL_FP32_RTOL = 1e-6
SOFTMAX_KERNEL_FP32_ATOL = 1e-7
# recompute.py's autograd functions vs plain autograd, fp32 gradients (same formulas, recomputed).
RECOMPUTE_FP32_ATOL = 1e-6
# A dense layer's GEMM by oneDNN vs MKL vs float64, fp32 (gemm.py): the same products blocked and
# summed in another order; a tiny model's outputs and gradients, forward and backward, O(1) values.
# Also the Keras widening Dense's einsum input gradient against MatMul's (convbert_tf/dense.py).
GEMM_BACKEND_FP32_ATOL = 1e-5
# One model forward through two of our implementations of a block (fused vs explicit attention,
# native vs reference span conv), fp32: different op sequences whose rounding compounds through
# the layers.
MODEL_PATHS_FP32_ATOL = 1e-5
# XLA / tf.function / torch.compile / a served SavedModel vs eager, fp32 (outputs, gradients, and
# the weights after a few SGD steps).
COMPILED_FP32_ATOL = 1e-5
# The same for the per-epoch losses of a fit, relative (losses are O(1) and shrink as they train).
COMPILED_FP32_RTOL = 1e-5
# The same fp32 computation reached by two routes that can only regroup float operations: default
# vs explicit token types and mask, inputs_embeds vs ids, an all-ones head mask vs none, gradient
# checkpointing's recomputed activations vs stored ones, a head layer re-applied to the pooled
# state, a resumed or a two-process DDP run vs a straight one. Values are O(1): ~10 float32 eps.
SAME_COMPUTATION_FP32_ATOL = 1e-6
# The same, relative: a model's loss vs the loss function on its own logits, labels in y vs
# inside x, a metric vs its NumPy count, the losses of a reloaded model that keeps training, and
# DDP gradients (bound scaled by the largest gradient). It is also pytest.approx's default, which
# these checks used implicitly.
SAME_COMPUTATION_FP32_RTOL = 1e-6
# Every gradient of one fp32 model computed with other GEMM shapes (the pooled last layer alone vs
# the full one: each product behind it changes its row count, so each sum regroups), relative to the
# model's largest gradient: a key bias's exact gradient is zero, so its own scale is pure rounding.
# Measured up to 1.1e-6 (~10 float32 eps) on the tiny config.
SAME_COMPUTATION_GRAD_RTOL = 4e-6
# Keras' MirroredStrategy over two CPU replicas vs one device, two epochs of SGD: the weights and
# the per-epoch losses. Each replica scales its mean loss by 1/replicas and the gradients are
# summed across replicas, so the steps round differently from one device's; PyTorch DDP only
# averages gradients and is held to SAME_COMPUTATION_*.
REPLICAS_FP32_ATOL = 1e-5
REPLICAS_FP32_RTOL = 1e-5
# A pretraining loss (~disc_weight x an O(1) BCE, so O(10-50)) PyTorch vs Keras, relative: the fp32
# forward agrees within CROSS_FP32_ATOL per logit, and the weighted sum of ~100 per-token terms
# carries that to a few float32 eps of the loss' own size.
CROSS_LOSS_FP32_RTOL = 1e-6
# The weights after one AdamW step, PyTorch (fused) vs our Keras AdamW on the same gradients: the
# update is lr * m / (sqrt(v)/sqrt(1-b2^t) + eps) in both; only float32 rounding of the same formula
# (and torch's bias corrections in float64) differ, O(lr * 1e-7) on O(1) weights.
ADAMW_STEP_FP32_ATOL = 1e-6
# A Keras layer's fp32 output vs the same formula written in NumPy (the tied LM head as an einsum
# with the embedding table, the grouped feed-forward as per-group matmuls): another matmul
# blocking and summation order. Also the compiled exact GELU and layer norm (convbert_tf/fused.py), and
# Keras' own layer norm, against their formulas in float64, outputs and hand-written gradients.
NUMPY_FORMULA_FP32_ATOL = 1e-5
# A Keras task loss in fp32 vs HF's formula in float64 NumPy on the model's own logits
# (cross-entropy with -100 ignored, BCE with logits, MSE, the QA start/end mean): log-sum-exp in
# float32 over O(1) losses, ~100 float32 eps. Absolute for one loss value, relative for evaluate().
TASK_LOSS_FP32_ATOL = 1e-5
TASK_LOSS_FP32_RTOL = 1e-5
# PyTorch's loss functions in float64 vs the same losses written out by hand in float64.
LOSS_FP64_RTOL = 1e-9
# The tied LM head's logits vs features @ word_embeddings^T + bias written out in torch, elementwise
# (torch.allclose): the same matmul on the same tensors, so only a different matrix (an untied or
# stale copy after resizing or set_input_embeddings) moves it. torch.allclose's defaults, which the
# tightest of these checks used.
TIED_HEAD_RTOL = 1e-5
TIED_HEAD_ATOL = 1e-8
# Outputs that must differ (a masked head, another activation) are "not allclose" at this
# elementwise bound: torch's / NumPy's allclose defaults, which these checks used implicitly.
# Both changes move outputs by orders of magnitude more.
DISTINCT_RTOL = 1e-5
DISTINCT_ATOL = 1e-8
# Three-way rule for low precision and kernels.
LOWP_FACTOR = 2.0
LOWP_ATOL = {"float16": 1e-3, "bfloat16": 1e-2, "float32": 1e-6}
# bf16 model logits vs our fp32 logits on the reference fixtures (issue target), for autocast and for
# a model cast with .to(torch.bfloat16) (whose LayerNorms and embedding sum stay float32).
BF16_LOGITS_ATOL = 5e-2
# The same on a CPU without bf16 units, where bf16 is emulated (the opt-in warns) and TensorFlow runs
# its Eigen kernels (it turns oneDNN on by default only on CPUs with AVX512-VNNI/BF16 or AMX), whose
# bf16 matmuls round more than oneDNN's: measured on an AVX2 EPYC, model / masked_lm /
# token_classification 0.039 / 0.069 / 0.043 there against 0.030 / 0.041 / 0.040 on oneDNN, and
# still 0.032 / 0.051 / 0.037 with every matmul of the model computed in float32 by hand.
BF16_EMULATED_LOGITS_ATOL = 1e-1
# One bf16 contraction whose products are summed in float32 and rounded once, vs float32 on the same
# (bf16-rounded) inputs, relative to the largest |output|: one rounding is 2^-9; summing in bf16
# (TensorFlow's Eigen einsum) measured 2e-2 to 3e-2.
BF16_CONTRACTION_RTOL = 1e-2
# Predicted labels of the trained toy classifier under bf16 (autocast or cast) vs fp32, the share
# that agree on 512 fresh sequences (measured: all of them).
BF16_LABEL_AGREEMENT = 0.99
# Seeded statistical checks (masking rates and splits): a count must lie within this many binomial
# standard deviations of n*p. Five sigma fails a correct sampler with probability < 1e-6 per check,
# so a failure means a wrong rate, not bad luck; the seeds make every run the same.
BINOMIAL_Z = 5.0
# Added to that bound for the float rounding of n*p: where a rate is 0 or 1 (sigma 0) the count
# must equal n*p, which a rate computed in floats (1 - 0.8 - 0.1 ...) reaches only up to rounding.
BINOMIAL_SLACK = 1e-9
# Seeded dropout on attention probabilities: the mean row sum of the dropped and rescaled
# probabilities (1024 rows of 64) is 1 in expectation, with a standard deviation of ~0.004 over
# seeds; 0.02 is ~5 of them, while a missing 1/(1-p) rescale is off by p = 0.25.
DROPOUT_MEAN_ATOL = 0.02
# A hashed dropout mask's share of dropped elements against the rate, and the correlation of two
# masks (of each other, of neighbouring rows or columns), in standard deviations of n samples: the
# masks are fixed by their seeds, so these are not flaky, and 6 sigma stays far from a biased or
# repeating mask (whose correlation would be of order 1).
DROPOUT_MASK_SIGMAS = 6.0
# A kept element is x * fp32(1 / (1 - rate)) where a reference divides by (1 - rate): the two
# differ by the rounding of the reciprocal and of the product, two ulps of fp32.
DROPOUT_SCALE_RTOL = 2 * 1.1920929e-07
# The standard deviation of a freshly initialised weight vs config.initializer_range, relative:
# every tensor checked has >= 2304 entries, so the sample std is within ~1.5% of the true one,
# and a wrong init (PyTorch's default kaiming-uniform, a forgotten layer) is off by far more.
INIT_STD_RTOL = 0.1
# A fresh Keras table is random at the configured scale, not zeros: its std exceeds this fraction
# of initializer_range (a 2-sigma truncated normal gives ~0.88 of it).
INIT_STD_MIN_FRACTION = 0.5
# Exported graphs against our own eager model, fp32 (the export issue's targets): onnxruntime's CPU
# kernels (MLAS GEMM, its fused LayerNormalization) and LiteRT's (XNNPACK) sum in other orders.
ONNX_FP32_ATOL = 1e-4
LITERT_FP32_ATOL = 1e-4
# Dynamic int8 (onnxruntime) against fp32 on the fine-tuned toy classifier: the share of evaluation
# examples whose predicted label must not change.
INT8_LABEL_AGREEMENT = 0.99
# Our pipelines' scores and features vs Hugging Face's pipelines on the same checkpoint, fp32. They
# come from logits / hidden states within REFERENCE_FP32_ATOL of HF's, through a softmax (which does
# not enlarge a max-norm difference) and, for question answering, products and sums of two such
# probabilities: at most twice that bound.
PIPELINE_FP32_ATOL = 2e-5
