"""Classifier-free guidance (eq. (16), (79)-(81)) and latent interpolation (eq. (82)).

Classifier-free guidance replaces ``eps(x, t)`` in the DDIM ODE by

    eps_hat(x, t, c, w) = (1 + w) eps(x, t, c) - w eps(x, t)                          (eq. (79))

Being linear, the same combination applies to every total derivative in ``gamma`` (eq. (16)) and to the
distilled heads (eq. (81)): ``d^k eps_hat = (1 + w) d^k eps_c - w d^k eps_u``.  (The paper calls
``w > 1`` the guidance scale; any real ``w`` is accepted, ``w = 0`` is the conditional model.)

Encoding/decoding (app. F.4) needs the samplers and lives with them; only interpolation is here.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from ..errors import TaylorSolveError

__all__ = ["cfg_eps", "cfg_derivatives", "guided_eps_model", "GuidedEpsModel", "slerp"]


def _check_w(w: Any) -> float | torch.Tensor:
    if isinstance(w, torch.Tensor):
        if not torch.isfinite(w).all():
            raise TaylorSolveError("guidance scale w must be finite")
        return w
    try:
        wf = float(w)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"guidance scale w must be a real number, got {w!r}") from exc
    if not math.isfinite(wf):
        raise TaylorSolveError(f"guidance scale w must be finite, got {w!r}")
    return wf


def cfg_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: Any) -> torch.Tensor:
    """``(1 + w) eps_cond - w eps_uncond`` (eq. (79)); also for derivatives (eq. (16)) and heads (eq. (81))."""
    if isinstance(eps_cond, torch.Tensor) and isinstance(eps_uncond, torch.Tensor) and eps_cond.shape != eps_uncond.shape:
        raise TaylorSolveError(
            f"conditional and unconditional predictions differ in shape: {tuple(eps_cond.shape)} vs {tuple(eps_uncond.shape)}"
        )
    w = _check_w(w)
    return (1 + w) * eps_cond - w * eps_uncond


def cfg_derivatives(
    ders_cond: Sequence[torch.Tensor], ders_uncond: Sequence[torch.Tensor], w: Any
) -> list[torch.Tensor]:
    """Guided derivatives ``[(1 + w) d^k eps_c - w d^k eps_u]_k`` (eq. (16), (81)) for matching lists."""
    if len(ders_cond) != len(ders_uncond):
        raise TaylorSolveError(
            f"need as many conditional as unconditional derivatives, got {len(ders_cond)} and {len(ders_uncond)}"
        )
    return [cfg_eps(c, u, w) for c, u in zip(ders_cond, ders_uncond)]


class GuidedEpsModel:
    """``eps_hat(x, t) = (1 + w) model(x, t, **cond) - w model(x, t, **uncond)`` (eq. (79)).

    ``model`` is an eps model (e.g. :class:`~taylorsolve.diffusion.parameterization.EpsModel`);
    ``uncond`` defaults to no keyword arguments (the "null" condition).  Extra keyword arguments at
    call time are passed to both branches.  Differentiable, so derivatives in ``gamma`` of the guided
    model are the guided combination of the branches' derivatives (eq. (16)).
    """

    def __init__(self, model: Callable[..., torch.Tensor], w: Any, cond: dict | None = None, uncond: dict | None = None):
        if not callable(model):
            raise TaylorSolveError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.w = _check_w(w)
        self.cond = dict(cond or {})
        self.uncond = dict(uncond or {})
        self.schedule = getattr(model, "schedule", None)

    def __call__(self, x: torch.Tensor, t: Any, **kw: Any) -> torch.Tensor:
        eps_c = self.model(x, t, **self.cond, **kw)
        if self.w == 0:
            return eps_c
        eps_u = self.model(x, t, **self.uncond, **kw)
        return cfg_eps(eps_c, eps_u, self.w)

    def __repr__(self) -> str:
        return f"GuidedEpsModel({self.model!r}, w={self.w!r}, cond={self.cond!r}, uncond={self.uncond!r})"


def guided_eps_model(
    model: Callable[..., torch.Tensor], w: Any, cond: dict | None = None, uncond: dict | None = None
) -> GuidedEpsModel:
    """Classifier-free guided eps model (eq. (79)); see :class:`GuidedEpsModel`."""
    return GuidedEpsModel(model, w, cond, uncond)


def slerp(x0: torch.Tensor, x1: torch.Tensor, alpha: Any, *, method: str = "sqrt") -> torch.Tensor:
    """Interpolate two latent codes, ``alpha in [0, 1]`` (``alpha = 0`` gives ``x0``, ``1`` gives ``x1``).

    ``method="sqrt"`` (default) is the paper's "spherical interpolation" eq. (82):

        x^(alpha) = x0 sqrt(1 - alpha) + x1 sqrt(alpha),

    which is not the geometric slerp: it keeps the variance of independent standard normal codes
    (``(1 - alpha) + alpha = 1``).  ``method="geometric"`` is the usual great-circle slerp
    ``sin((1 - alpha) theta)/sin(theta) x0 + sin(alpha theta)/sin(theta) x1`` per sample (leading
    dimension is the batch, ``theta`` the angle between the flattened samples; linear interpolation
    when the angle is ~0).  ``alpha`` may be a float, a 0-d tensor or a ``[B]`` vector.
    """
    if not (isinstance(x0, torch.Tensor) and isinstance(x1, torch.Tensor)):
        raise TaylorSolveError("slerp needs two tensors")
    if x0.shape != x1.shape:
        raise TaylorSolveError(f"slerp endpoints differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
    a = alpha if isinstance(alpha, torch.Tensor) else torch.as_tensor(float(alpha), dtype=torch.float64)
    if not torch.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise TaylorSolveError(f"slerp weight must lie in [0, 1], got {alpha!r}")
    dtype = x0.dtype if torch.is_floating_point(x0) else torch.float64
    a = a.to(dtype)
    if a.ndim == 1 and x0.ndim >= 1:
        a = a.reshape(a.shape[0], *([1] * (x0.ndim - 1)))
    elif a.ndim > 1:
        raise TaylorSolveError(f"slerp weight must be a scalar or a [B] vector, got shape {tuple(a.shape)}")
    if method == "sqrt":
        return x0 * torch.sqrt(1 - a) + x1 * torch.sqrt(a)
    if method != "geometric":
        raise TaylorSolveError(f"unknown slerp method {method!r}; use 'sqrt' (eq. (82)) or 'geometric'")
    if x0.ndim == 0:
        raise TaylorSolveError("geometric slerp needs at least 1-D inputs")
    flat0 = x0.reshape(x0.shape[0], -1) if x0.ndim > 1 else x0.reshape(1, -1)
    flat1 = x1.reshape(x1.shape[0], -1) if x1.ndim > 1 else x1.reshape(1, -1)
    cos = (flat0 * flat1).sum(-1) / (flat0.norm(dim=-1) * flat1.norm(dim=-1))
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    shape = (x0.shape[0],) + (1,) * (x0.ndim - 1) if x0.ndim > 1 else (1,)
    theta = theta.reshape(shape)
    sin = torch.sin(theta)
    small = sin.abs() < 1e-7
    safe = torch.where(small, torch.ones_like(sin), sin)
    w0 = torch.where(small, 1 - a + 0 * theta, torch.sin((1 - a) * theta) / safe)
    w1 = torch.where(small, a + 0 * theta, torch.sin(a * theta) / safe)
    return w0 * x0 + w1 * x1
