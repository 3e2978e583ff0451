"""The public entry points: :func:`taylor_coefficients` and :func:`solve`."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .adaptive import auto_order, solve_adaptive
from .coefficients import RHS, CoefficientBackend, get_backend
from .errors import TaylorSolveError, check_finite, validate_grid, validate_order
from .solution import Solution
from .stepping import solve_fixed

__all__ = ["taylor_coefficients", "solve"]


def _as_state(y0: Any) -> torch.Tensor:
    if not isinstance(y0, torch.Tensor):
        y0 = torch.as_tensor(y0)
    if not torch.is_floating_point(y0) and not torch.is_complex(y0):
        raise TaylorSolveError(f"the initial state must be a floating-point tensor, got dtype {y0.dtype}")
    return y0


def _as_time(t0: Any, like: torch.Tensor) -> torch.Tensor:
    t0 = torch.as_tensor(t0, device=like.device)
    if not torch.is_floating_point(t0):
        t0 = t0.to(like.dtype)
    if t0.ndim != 0:
        raise TaylorSolveError(f"t0 must be a scalar (the batch shares one time), got shape {tuple(t0.shape)}")
    return t0


def taylor_coefficients(
    f: RHS, t0: Any, y0: Any, order: int, backend: str | CoefficientBackend = "autodiff", **backend_options: Any
) -> list[torch.Tensor]:
    """Taylor coefficients ``[c_0, ..., c_order]``, ``c_k = y^(k)(t0) / k!``, of the solution of
    ``dy/dt = f(t, y)`` through ``(t0, y0)`` (GENIE paper, eq. (8)).

    ``y0`` may carry leading batch dimensions (independent problems).  ``backend`` is one of
    :func:`taylorsolve.coefficients.available_backends` (``"autodiff"``, ``"symbolic"``,
    ``"taylor_mode"``, ``"finite_difference"``, ``"supplied"``) or a backend instance; options are passed
    to the backend's constructor (e.g. ``derivatives=`` for ``"supplied"``).
    """
    order = validate_order(order)
    y0 = _as_state(y0)
    t0 = _as_time(t0, y0)
    if backend == "finite_difference":
        backend_options.setdefault("warm_start", False)
    be = get_backend(backend, **backend_options)
    coeffs = be.coefficients(f, t0, y0, order)
    for k, c in enumerate(coeffs):
        check_finite(c, what=f"Taylor coefficient c_{k}", time=float(t0))
    return coeffs


def solve(
    f: RHS,
    y0: Any,
    t: Any = None,
    *,
    order: int | str = 2,
    backend: str | CoefficientBackend = "autodiff",
    t_span: tuple[float, float] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    backend_options: Mapping[str, Any] | None = None,
    max_steps: int = 100_000,
    check_finite: bool = True,
    dense: bool = False,
    event_ndim: int | None = None,
    h_max: float | None = None,
    progress: bool = False,
) -> Solution:
    """Solve ``dy/dt = f(t, y)`` from ``y0`` with the truncated Taylor method of order ``order``.

    Fixed grid: pass ``t``, a 1-D strictly monotone tensor of times (increasing or decreasing); the
    result holds the state at every grid time.  Adaptive: pass ``t_span=(t0, t1)`` (and not ``t``);
    steps are chosen by the Jorba-Zou rule from the tolerances ``rtol``/``atol``
    (:mod:`taylorsolve.adaptive`), ``order`` may be ``"auto"`` (heyoka's rule), and the returned
    :class:`Solution` is callable for dense output.  ``event_ndim`` (adaptive only) says how many
    trailing dimensions of ``y0`` form one problem (default: 1, or 0 for a 0-d state); the members
    of the batch share the steps.

    Raises :class:`taylorsolve.TaylorSolveError` on bad input and :class:`taylorsolve.SolverError`
    (naming the step and time) when NaN/Inf appears mid-solve.
    """
    y0 = _as_state(y0)
    be = get_backend(backend, **dict(backend_options or {}))
    if (t is None) == (t_span is None):
        raise TaylorSolveError("pass exactly one of t (a fixed grid) or t_span=(t0, t1) (adaptive steps)")
    if t is not None:
        order_ = validate_order(order)
        grid = validate_grid(t)
        grid = grid.to(device=y0.device)
        return solve_fixed(f, y0, grid, order_, be, check_nonfinite=check_finite, dense=dense, progress=progress)

    if len(t_span) != 2:
        raise TaylorSolveError(f"t_span must be a pair (t0, t1), got {t_span!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (tol >= 0.0):
            raise TaylorSolveError(f"{name} must be >= 0, got {tol}")
    if rtol == 0.0 and atol == 0.0:
        raise TaylorSolveError("rtol and atol cannot both be zero")
    order_ = validate_order(order, allow_auto=True)
    if order_ == "auto":
        order_ = auto_order(min(x for x in (rtol, atol) if x > 0))
    span = validate_grid(torch.as_tensor(t_span, dtype=torch.float64 if y0.dtype == torch.float64 else None), name="t_span")
    span = span.to(device=y0.device)
    if event_ndim is None:
        event_ndim = 1 if y0.ndim >= 1 else 0
    if not (0 <= event_ndim <= y0.ndim):
        raise TaylorSolveError(f"event_ndim must be in [0, {y0.ndim}], got {event_ndim}")
    return solve_adaptive(
        f, y0, span[0], span[1], order_, be, rtol=rtol, atol=atol, event_ndim=event_ndim,
        max_steps=max_steps, check_nonfinite=check_finite, h_max=h_max,
    )
