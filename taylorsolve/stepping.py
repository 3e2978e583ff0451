"""Truncated Taylor stepping on a fixed time grid (GENIE paper, eq. (8)).

One step of the p-th truncated Taylor method (TTM-p) from ``(t_n, y_n)`` with ``h = t_{n+1} - t_n``:

    y_{n+1} = sum_{k=0}^{p} c_k h^k,    c_k = y^(k)(t_n) / k!,

evaluated by Horner's rule.  TTM-1 is Euler's method (on the DDIM ODE: DDIM, eq. (6)); TTM-2 on the
DDIM ODE is GENIE (eq. (9)).  The coefficients come from a backend (:mod:`taylorsolve.coefficients`);
with the ``taylor_mode`` backend on long grids the whole loop runs compiled
(:mod:`taylorsolve.coefficients.compiled`).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .coefficients import RHS, CoefficientBackend
from .coefficients.autodiff import horner
from .errors import SolverError, TaylorSolveError, check_finite
from .solution import SolveStats, Solution

__all__ = ["taylor_step", "compensated_step", "solve_fixed", "check_coefficients"]


def check_coefficients(coeffs: list[torch.Tensor], order: int, y: torch.Tensor, *, step: int, time_: float) -> None:
    """Check a backend's output: ``order + 1`` coefficients shaped like ``y``, all finite."""
    if len(coeffs) != order + 1:
        raise TaylorSolveError(f"backend returned {len(coeffs)} coefficients, expected {order + 1}")
    for k, c in enumerate(coeffs):
        if c.shape != y.shape:
            raise TaylorSolveError(
                f"Taylor coefficient c_{k} has shape {tuple(c.shape)}, the state has {tuple(y.shape)}"
            )
    bad = [k for k, c in enumerate(coeffs) if not bool(torch.isfinite(c).all())]
    if bad:
        check_finite(coeffs[bad[0]], what=f"Taylor coefficient c_{bad[0]}", step=step, time=time_)


def taylor_step(coeffs: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """``sum_k c_k h^k`` (eq. (8)); ``h`` a 0-d tensor (cast to the state's dtype)."""
    return horner(coeffs, h.to(coeffs[0].dtype))


def compensated_step(coeffs: list[torch.Tensor], s: torch.Tensor, lo: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``y_{n+1} = c_0 + sum_{k>=1} c_k s^k`` (eq. (8)) with compensated summation; returns ``(y_{n+1}, lo)``.

    The increment is small against ``c_0 = y_n`` over most steps, so a plain sum drops up to half an ulp
    of ``y`` per step; ``lo`` carries the dropped bits into the next step (Fast2Sum).  Over hundreds of
    steps this keeps the end error near the truncation error instead of an accumulation of roundings
    (Kepler e = 0.9 at tol 1e-15: 1.8e-10 without, 4e-11 with; ``benchmarks/compare.py``).
    """
    y = coeffs[0]
    acc = coeffs[-1]
    for c in reversed(coeffs[1:-1]):
        acc = acc * s + c
    corr = acc * s if len(coeffs) > 1 else torch.zeros_like(y)
    if lo is not None:
        corr = corr + lo
    new = y + corr
    lo = torch.where(y.abs() >= corr.abs(), corr - (new - y), y - (new - corr))
    return new, lo


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
    event_ndim: int | None = None,
) -> Solution:
    """Step TTM-``order`` along the validated grid ``t``; see :func:`taylorsolve.solve`."""
    backend.reset()
    start = time.perf_counter()
    want = getattr(backend, "compile_mode", None)
    note = ""
    if want is not None and want("fixed", steps=len(t) - 1):
        nd = (1 if y0.ndim >= 1 else 0) if event_ndim is None else event_ndim
        plan, note = backend.compiled_plan(f, t[0], y0, nd)
        if plan is not None:
            return _compiled_fixed(plan[0], f, y0, t, order, backend, check=check_nonfinite, dense=dense, start=start)
    ys = [y0]
    y = y0
    dense_coeffs: list[torch.Tensor] | None = [] if dense else None
    steps = range(len(t) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"TTM-{order} ({backend.name})")
    lo = None
    for n in steps:
        tn = t[n]
        coeffs = backend.coefficients(f, tn, y, order)
        if check_nonfinite:
            check_coefficients(coeffs, order, y, step=n, time_=float(tn))
        y, lo = compensated_step(coeffs, (t[n + 1] - tn).to(coeffs[0].dtype), lo)
        if check_nonfinite:
            check_finite(y, what="the state", step=n + 1, time=float(t[n + 1]))
        ys.append(y)
        if dense_coeffs is not None:
            dense_coeffs.append(torch.stack([c.detach() for c in coeffs]))
    stats = _stats(backend, steps=len(t) - 1, order=order, start=start)
    stats.notes = note
    return Solution(t=t, ys=torch.stack(ys), stats=stats, coefficients=dense_coeffs)


def _compiled_fixed(plan: Any, f: RHS, y0: torch.Tensor, t: torch.Tensor, order: int, backend: CoefficientBackend, *,
                    check: bool, dense: bool, start: float) -> Solution:
    ns = plan.n_state
    N = len(t) - 1
    B = y0.numel() // ns
    npd = plan.np_dtype
    grid = np.ascontiguousarray(t.detach().cpu().double().numpy())
    yb = np.ascontiguousarray(y0.detach().reshape(B, ns).cpu().numpy().astype(npd))
    plan.ensure("fixed")
    ys = np.zeros((N + 1, B, ns), dtype=npd)
    ys[0] = yb
    cs = np.zeros((N if dense else 1, order + 1, B, ns), dtype=npd)
    badm = np.zeros(1, dtype=np.int64)
    n, status = plan.loop("fixed")(plan.coef, grid, yb.copy(), order, 0, plan.work(order), plan.K, ys, cs, dense,
                                   check, badm, np.zeros((order + 1, ns), dtype=npd), np.zeros((B, ns), dtype=npd))
    bad = f" (batch member {int(badm[0])})" if B > 1 else ""
    if status:
        what = "a Taylor coefficient" if status == 4 else "the state"
        raise SolverError(f"{what} has non-finite (NaN/Inf) entries{bad} at step {n} (t = {grid[n]:.6g})",
                          step=n, time=float(grid[n]))
    backend.counters.f_evals += N
    backend.counters.derivative_evals += N if order > 1 else 0
    stats = _stats(backend, steps=N, order=order, start=start)
    stats.compile_time, stats.compiled = plan.compile_time, True
    ys_t = torch.from_numpy(ys).reshape(N + 1, *y0.shape)
    coeffs = None
    if dense:
        c = torch.from_numpy(cs)
        coeffs = c.reshape(N, order + 1, *y0.shape)
    return Solution(t=t, ys=ys_t, stats=stats, coefficients=coeffs)


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
