"""Adaptive truncated Taylor integration: Jorba-Zou step sizes, heyoka's order rule, dense output.

Step size (Jorba & Zou 2005, "A software package for the numerical integration of ODEs by means of
high-order Taylor methods", Exp. Math. 14; the rule heyoka uses).  With the coefficients ``c_k`` of the
current step and the tolerance ``eps_n = atol + rtol * ||y_n||_inf``, the last two coefficients
estimate how fast the series converges:

    rho_k = (eps_n / ||c_k||_inf)^(1/k),  k in {p-1, p},     h = exp(-0.7 / (p - 1)) * min(rho_{p-1}, rho_p).

``||c_p|| h^p <= eps_n`` then bounds the size of the last kept term, which (for a convergent series)
bounds the truncation error; two coefficients are used because one may vanish by symmetry.  Steps
are never rejected (the estimate is made before the step), so every step taken is accepted.  For a
batch, all members share one step: the smallest.

Order (heyoka): with ``order="auto"`` and ``tol = min(rtol, atol)``, ``p = ceil(-ln(tol) / 2) + 1``
(with ``h ~ rho / e^2`` the truncation error ``~ e^{-2p}`` then matches ``tol``).
"""
from __future__ import annotations

import math
import time

import torch

from .coefficients import RHS, CoefficientBackend
from .errors import SolverError, TaylorSolveError, check_finite
from .solution import Solution
from .stepping import _stats, check_coefficients, taylor_step

__all__ = ["auto_order", "jorba_zou_step", "solve_adaptive"]


def auto_order(tol: float) -> int:
    """heyoka's order for a tolerance: ``ceil(-ln(tol) / 2) + 1`` (at least 2)."""
    if not (0.0 < tol < 1.0):
        raise TaylorSolveError(f"order='auto' needs a tolerance in (0, 1), got {tol}")
    return max(2, math.ceil(-math.log(tol) / 2.0) + 1)


def _batch_inf_norm(x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Max-abs over the event dimensions: shape = batch shape (a 0-d tensor for an unbatched state)."""
    if event_ndim == 0:
        return x.abs()
    return x.abs().flatten(start_dim=x.ndim - event_ndim).amax(dim=-1)


def jorba_zou_step(coeffs: list[torch.Tensor], rtol: float, atol: float, event_ndim: int) -> float:
    """The Jorba-Zou step size (module docstring) for the coefficients of one step; shared by a batch."""
    p = len(coeffs) - 1
    eps = atol + rtol * _batch_inf_norm(coeffs[0], event_ndim).to(torch.float64)
    ks = [p] if p == 1 else [p - 1, p]
    h = torch.full_like(eps, math.inf)
    for k in ks:
        norm = _batch_inf_norm(coeffs[k], event_ndim).to(torch.float64)
        rho = torch.where(norm > 0, (eps / norm.clamp_min(1e-300)) ** (1.0 / k), torch.full_like(norm, math.inf))
        h = torch.minimum(h, rho)
    safety = math.exp(-0.7 / (p - 1)) if p > 1 else 0.9
    return float(h.min()) * safety


def solve_adaptive(
    f: RHS,
    y0: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    order: int,
    backend: CoefficientBackend,
    *,
    rtol: float,
    atol: float,
    event_ndim: int,
    max_steps: int,
    check_nonfinite: bool = True,
    h_max: float | None = None,
) -> Solution:
    """Integrate from ``t0`` to ``t1`` with Jorba-Zou steps; the result is callable (dense output)."""
    backend.reset()
    start = time.perf_counter()
    direction = 1.0 if float(t1) > float(t0) else -1.0
    ts = [t0]
    ys = [y0]
    dense: list[torch.Tensor] = []
    t, y = t0, y0
    span = abs(float(t1 - t0))
    h_cap = span if h_max is None else min(span, h_max)
    n = 0
    while direction * float(t1 - t) > 0:
        if n >= max_steps:
            raise SolverError(
                f"adaptive solve reached max_steps={max_steps} at t = {float(t):.6g} before t1 = {float(t1):.6g}",
                step=n,
                time=float(t),
            )
        coeffs = backend.coefficients(f, t, y, order)
        if check_nonfinite:
            check_coefficients(coeffs, order, y, step=n, time_=float(t))
        h = min(jorba_zou_step(coeffs, rtol, atol, event_ndim), h_cap)
        remaining = abs(float(t1 - t))
        if h >= remaining or remaining - h < 1e-12 * max(1.0, abs(float(t1))):
            t_next = t1
        else:
            if h <= 1e-14 * max(1.0, abs(float(t))):
                raise SolverError(
                    f"adaptive step size underflow (h = {h:.3g}) at step {n}, t = {float(t):.6g}",
                    step=n,
                    time=float(t),
                )
            t_next = t + direction * h
        y = taylor_step(coeffs, t_next - t)
        n += 1
        if check_nonfinite:
            check_finite(y, what="the state", step=n, time=float(t_next))
        dense.append(torch.stack([c.detach() for c in coeffs]))
        t = torch.as_tensor(t_next, dtype=t0.dtype, device=t0.device)
        ts.append(t)
        ys.append(y)
    stats = _stats(backend, steps=n, order=order, start=start)
    return Solution(t=torch.stack(ts), ys=torch.stack(ys), stats=stats, step_coefficients=dense)
