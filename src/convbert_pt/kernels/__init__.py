"""Fused GPU kernels of convbert_pt, each with its plain-torch reference beside it.

Nothing here is imported by ``import convbert_pt``, and this package imports nothing on its own:
``reference`` needs only torch; ``sdconv_triton`` imports Triton and registers the
``convbert::span_dynamic_conv`` operator, so import it only where the kernel is about to be used.

- ``reference.span_dynamic_conv_reference``: the span-based dynamic convolution as a loop over
  the K taps in the inputs' own precision (the "plain same-precision path" of the kernel tests).
- ``sdconv_triton.span_dynamic_conv_triton`` / ``sdconv_triton.unsupported_reason``: the fused
  Triton forward and backward, one autograd- and torch.compile-visible operator.
"""
