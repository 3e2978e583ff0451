"""Forward-mode AD through real networks: work-arounds for PyTorch kernels without a forward-mode formula.

GENIE's derivatives (eq. (12)) and the distillation targets of its head are ``torch.func.jvp`` passes
through the score network.  On torch 2.x two common layers break them:

* ``F.scaled_dot_product_attention`` dispatches to fused CPU / GPU kernels (flash, memory-efficient)
  that have no forward-mode derivative; the ``MATH`` backend has one;
* ``group_norm``'s forward-mode formula views its input and fails on non-contiguous tensors ("view
  size is not compatible with input tensor's size and stride"), which diffusers' attention blocks pass
  (``group_norm(hidden_states.transpose(1, 2))``).

:func:`forward_ad_safe` makes both work for one module for the duration of a ``with`` block, touching
only calls made under a ``torch.func`` transform: plain forward passes keep their fast kernels.
``sample`` applies it to every ``torch.nn.Module`` network; distillation code can use it too.
(``F.silu``'s backward has no forward-mode formula either, so *nested* JVPs -- TTM-3 by autodiff --
through networks that use it still fail; write ``x * sigmoid(x)`` there.)
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["forward_ad_safe", "math_attention", "is_transformed"]

try:  # functorch-wrapped (dual / batched) tensors appear inside torch.func.jvp
    from torch._C._functorch import is_functorch_wrapped_tensor as _is_wrapped
except Exception:  # pragma: no cover - very old / very new torch

    def _is_wrapped(x: torch.Tensor) -> bool:  # type: ignore[misc]
        return False


def is_transformed(*tensors: Any) -> bool:
    """Whether any argument is a tensor being traced by a ``torch.func`` transform (e.g. a JVP)."""
    return any(isinstance(a, torch.Tensor) and _is_wrapped(a) for a in tensors)


def math_attention() -> contextlib.AbstractContextManager:
    """A context selecting the ``MATH`` backend of ``scaled_dot_product_attention`` (forward-AD capable)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def _contiguous_under_transform(module: nn.Module, args: tuple) -> tuple | None:
    if args and is_transformed(args[0]) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


@contextlib.contextmanager
def forward_ad_safe(module: Any) -> Iterator[None]:
    """Within the block, ``GroupNorm`` layers of ``module`` get contiguous inputs under ``torch.func``
    transforms (forward pre-hooks, removed afterwards).  A non-module is passed through unchanged."""
    handles = []
    if isinstance(module, nn.Module):
        for m in module.modules():
            if isinstance(m, nn.GroupNorm):
                handles.append(m.register_forward_pre_hook(_contiguous_under_transform))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
