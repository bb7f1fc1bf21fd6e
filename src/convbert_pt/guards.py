"""A guard for PyTorch training loops: never apply an update computed from a non-finite loss or gradient.

One bad batch (an out-of-range id or label that ``torch.compile`` turns into NaN, an overflow in
half precision, a NaN in the data) would otherwise make every weight NaN at the next
``optimizer.step()``. Call ``check_finite_step`` between ``loss.backward()`` and
``optimizer.step()``: it raises ``NonFiniteStepError`` (``convbert_common.checks``, the same
message as Keras' ``fit``) naming the step and the tensors, and the step is never applied::

    loss.backward()
    check_finite_step(model, loss, step)
    optimizer.step()

It costs one device-to-host transfer of one boolean per step. Under DDP the gradients are
all-reduced by then, so every rank raises together.
"""

from __future__ import annotations

import torch

from convbert_common.checks import NonFiniteStepError, non_finite_step_message

__all__ = ["NonFiniteStepError", "check_finite_step"]


def check_finite_step(model: torch.nn.Module, loss: torch.Tensor | None, step: int) -> None:
    """Raise NonFiniteStepError if ``loss`` or a gradient of ``model`` is NaN or inf (``step`` 1-based)."""
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    flags = [torch.isfinite(g).all() for _, g in named]
    if loss is not None:
        flags.append(torch.isfinite(loss.detach()).all())
    if not flags or bool(torch.stack(flags).all()):
        return
    loss_finite = None if loss is None else bool(flags[-1])
    bad = [name for (name, _), ok in zip(named, flags, strict=False) if not bool(ok)]
    raise NonFiniteStepError(non_finite_step_message(step, loss_finite, bad, len(bad)))
