"""Truncated Taylor stepping on a fixed time grid (GENIE paper, eq. (8)).

One step of the p-th truncated Taylor method (TTM-p) from ``(t_n, y_n)`` with ``h = t_{n+1} - t_n``:

    y_{n+1} = sum_{k=0}^{p} c_k h^k,    c_k = y^(k)(t_n) / k!,

evaluated by Horner's rule.  TTM-1 is Euler's method (on the DDIM ODE: DDIM, eq. (6)); TTM-2 on the
DDIM ODE is GENIE (eq. (9)).  The coefficients come from a backend (:mod:`taylorsolve.coefficients`).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from .coefficients import RHS, CoefficientBackend
from .coefficients.autodiff import horner
from .errors import TaylorSolveError, check_finite
from .solution import SolveStats, Solution

__all__ = ["taylor_step", "solve_fixed", "check_coefficients"]


def check_coefficients(coeffs: list[torch.Tensor], order: int, y: torch.Tensor, *, step: int, time_: float) -> None:
    """Check a backend's output: ``order + 1`` coefficients shaped like ``y``, all finite."""
    if len(coeffs) != order + 1:
        raise TaylorSolveError(f"backend returned {len(coeffs)} coefficients, expected {order + 1}")
    for k, c in enumerate(coeffs):
        if c.shape != y.shape:
            raise TaylorSolveError(
                f"Taylor coefficient c_{k} has shape {tuple(c.shape)}, the state has {tuple(y.shape)}"
            )
        check_finite(c, what=f"Taylor coefficient c_{k}", step=step, time=time_)


def taylor_step(coeffs: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """``sum_k c_k h^k`` (eq. (8)); ``h`` a 0-d tensor (cast to the state's dtype)."""
    return horner(coeffs, h.to(coeffs[0].dtype))


def solve_fixed(
    f: RHS,
    y0: torch.Tensor,
    t: torch.Tensor,
    order: int,
    backend: CoefficientBackend,
    *,
    check_nonfinite: bool = True,
    dense: bool = False,
    progress: bool = False,
) -> Solution:
    """Step TTM-``order`` along the validated grid ``t``; see :func:`taylorsolve.solve`."""
    backend.reset()
    start = time.perf_counter()
    ys = [y0]
    y = y0
    dense_coeffs: list[torch.Tensor] | None = [] if dense else None
    steps = range(len(t) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"TTM-{order} ({backend.name})")
    for n in steps:
        tn = t[n]
        coeffs = backend.coefficients(f, tn, y, order)
        if check_nonfinite:
            check_coefficients(coeffs, order, y, step=n, time_=float(tn))
        y = taylor_step(coeffs, t[n + 1] - tn)
        if check_nonfinite:
            check_finite(y, what="the state", step=n + 1, time=float(t[n + 1]))
        ys.append(y)
        if dense_coeffs is not None:
            dense_coeffs.append(torch.stack([c.detach() for c in coeffs]))
    stats = _stats(backend, steps=len(t) - 1, order=order, start=start)
    return Solution(t=t, ys=torch.stack(ys), stats=stats, step_coefficients=dense_coeffs)


def _stats(backend: CoefficientBackend, *, steps: int, order: int, start: float, **extra: Any) -> SolveStats:
    c = backend.counters
    return SolveStats(
        steps=steps,
        f_evals=c.f_evals,
        derivative_evals=c.derivative_evals,
        jvp_passes=c.jvp_passes,
        wall_time=time.perf_counter() - start,
        order=order,
        backend=backend.name,
        accepted_steps=steps,
        **extra,
    )

