"""Observed order of accuracy from refined grids (log-log fits).

For a method of order ``p`` the global error at a fixed final time behaves like ``C h^p`` and the
local (one-step) error like ``C h^(p+1)``.  Fitting ``log err = p log h + log C`` by least squares over
a sequence of step sizes gives the observed orders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import math
import torch

from .coefficients import RHS, CoefficientBackend
from .errors import TaylorSolveError

__all__ = ["OrderResult", "fit_order", "empirical_order"]


@dataclass
class OrderResult:
    """Step counts, step sizes, errors and the fitted slopes (``local_*`` is ``None`` without a callable reference)."""

    steps: list[int]
    step_sizes: list[float]
    global_errors: list[float]
    global_order: float
    local_errors: list[float] | None = None
    local_order: float | None = None

    def __str__(self) -> str:
        rows = ["   N          h        global err" + ("       local err" if self.local_errors else "")]
        for i, n in enumerate(self.steps):
            row = f"{n:4d}  {self.step_sizes[i]:9.3e}  {self.global_errors[i]:14.6e}"
            if self.local_errors:
                row += f"  {self.local_errors[i]:14.6e}"
            rows.append(row)
        rows.append(f"observed global order {self.global_order:.3f}")
        if self.local_order is not None:
            rows.append(f"observed local order  {self.local_order:.3f}")
        return "\n".join(rows)


def fit_order(step_sizes: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``log(error)`` against ``log(step size)``."""
    if len(step_sizes) != len(errors) or len(errors) < 2:
        raise TaylorSolveError("fit_order needs at least two (step size, error) pairs of equal length")
    if any(not (e > 0 and math.isfinite(e)) for e in errors):
        raise TaylorSolveError(f"errors must be positive and finite to fit an order, got {list(errors)}")
    x = torch.log(torch.tensor(step_sizes, dtype=torch.float64))
    y = torch.log(torch.tensor(errors, dtype=torch.float64))
    xm, ym = x.mean(), y.mean()
    return float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())


def _max_abs(x: torch.Tensor) -> float:
    return float(x.detach().abs().max())


def empirical_order(
    f: RHS,
    y0: torch.Tensor,
    t_span: tuple[float, float],
    reference: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
    steps: Sequence[int] = (8, 16, 32, 64),
    *,
    order: int = 2,
    backend: str | CoefficientBackend = "auto",
    backend_options: Mapping[str, Any] | None = None,
    solver: Callable[[torch.Tensor], torch.Tensor] | None = None,
    grid: Callable[[int], torch.Tensor] | None = None,
    local: bool = True,
) -> OrderResult:
    """Observed global (and local) order of a solver on ``dy/dt = f(t, y)``, ``y(t0) = y0``.

    ``reference`` is the exact or a high-accuracy solution: a callable ``t -> y(t)`` (a dense
    :class:`~taylorsolve.Solution` works) or a tensor holding ``y(t1)`` only (then no local order).
    ``solver(grid) -> y at grid[-1]`` defaults to :func:`taylorsolve.solve` with ``order`` and
    ``backend``; pass your own to measure any method.  ``grid(n)`` builds the grid of ``n`` steps
    (default: uniform in ``t``, float64).  Errors are max-abs over all entries (the whole batch).
    """
    from .api import solve

    t0, t1 = float(t_span[0]), float(t_span[1])
    if grid is None:
        def grid(n: int) -> torch.Tensor:
            return torch.linspace(t0, t1, n + 1, dtype=torch.float64)
    if solver is None:
        def solver(g: torch.Tensor) -> torch.Tensor:
            return solve(f, y0, g, order=order, backend=backend, backend_options=backend_options).ys[-1]
    if len(steps) < 2 or any(int(n) < 1 for n in steps):
        raise TaylorSolveError(f"steps must hold at least two positive step counts, got {list(steps)}")

    callable_ref = callable(reference)
    y_end = reference(torch.tensor(t1, dtype=torch.float64)) if callable_ref else reference
    if not isinstance(y_end, torch.Tensor):
        try:
            y_end = torch.as_tensor(y_end, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TaylorSolveError(f"the reference must be a tensor or a callable t -> y(t), got {type(y_end).__name__}") from exc
    hs, gerrs, lerrs, lhs = [], [], [], []
    for n in steps:
        g = grid(int(n))
        hs.append(abs(t1 - t0) / int(n))
        y_n = solver(g)
        if y_end.shape != y_n.shape:
            what = "reference(t1)" if callable_ref else "the reference"
            raise TaylorSolveError(
                f"{what} has shape {tuple(y_end.shape)} but the solver's state has shape {tuple(y_n.shape)}; "
                "pass y(t1) shaped like y0 (or a callable t -> y(t))"
            )
        gerrs.append(_max_abs(y_n - y_end))
        if local and callable_ref:
            one = g[:2]
            lhs.append(abs(float(one[1] - one[0])))
            lerrs.append(_max_abs(solver(one) - reference(one[1])))
    res = OrderResult(steps=[int(n) for n in steps], step_sizes=hs, global_errors=gerrs, global_order=fit_order(hs, gerrs))
    if lerrs:
        res.local_errors = lerrs
        res.local_order = fit_order(lhs, lerrs)
    return res
