"""The public entry points: :func:`taylor_coefficients` and :func:`solve`."""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import torch

from .adaptive import auto_order, solve_adaptive
from .coefficients import RHS, CoefficientBackend, get_backend
from .errors import (
    TaylorSolveError,
    TaylorSolveWarning,
    check_finite,
    validate_grid,
    validate_initial_state,
    validate_order,
)
from .solution import Solution
from .stepping import solve_fixed

__all__ = ["taylor_coefficients", "solve", "DEFAULT_TOLERANCES"]

#: default (rtol, atol) by state dtype (scipy.integrate's spirit: what the dtype can resolve)
DEFAULT_TOLERANCES = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-5, 1e-6)}
#: tolerances below this warn for float32 states (the dtype's epsilon is 1.2e-7)
_FLOAT32_FLOOR = 1e-6


def _as_state(y0: Any, like_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``y0`` as a floating tensor: tensors and NumPy arrays keep their dtype; Python numbers and lists take
    ``like_dtype`` (the time grid's floating dtype) or float64 (Python floats are doubles)."""
    if not isinstance(y0, torch.Tensor):
        if isinstance(y0, np.ndarray):
            y0 = torch.as_tensor(y0)
            if not torch.is_floating_point(y0) and not torch.is_complex(y0):
                y0 = y0.to(like_dtype or torch.float64)
        else:
            try:
                y0 = torch.as_tensor(y0, dtype=like_dtype or torch.float64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TaylorSolveError(f"the initial state y0 must be a tensor or a list of numbers: {exc}") from None
    return validate_initial_state(y0)


def _as_time(t0: Any, like: torch.Tensor) -> torch.Tensor:
    """A scalar time: tensors keep their dtype, Python numbers become float64 (they are doubles)."""
    if not isinstance(t0, torch.Tensor):
        t0 = torch.as_tensor(t0, dtype=torch.float64)
    t0 = torch.as_tensor(t0, device=like.device)
    if not torch.is_floating_point(t0):
        t0 = t0.to(like.dtype)
    if t0.ndim != 0:
        raise TaylorSolveError(f"t0 must be a scalar (the batch shares one time), got shape {tuple(t0.shape)}")
    return t0


def _grid_dtype(t: Any) -> torch.dtype | None:
    if isinstance(t, torch.Tensor) and torch.is_floating_point(t):
        return t.dtype
    return None


def taylor_coefficients(
    f: RHS, t0: Any, y0: Any, order: int, backend: str | CoefficientBackend = "auto", **backend_options: Any
) -> list[torch.Tensor]:
    """Taylor coefficients ``[c_0, ..., c_order]``, ``c_k = y^(k)(t0) / k!``, of the solution of
    ``dy/dt = f(t, y)`` through ``(t0, y0)`` (GENIE paper, eq. (8)).

    ``y0`` may carry leading batch dimensions (independent problems).  ``backend`` is one of
    :func:`taylorsolve.coefficients.available_backends` (``"auto"`` (default: ``"taylor_mode"``, falling
    back to ``"autodiff"`` with a warning for unsupported functions), ``"taylor_mode"``, ``"autodiff"``,
    ``"symbolic"``, ``"finite_difference"``, ``"supplied"``) or a backend instance; options are passed to
    the backend's constructor (e.g. ``derivatives=`` for ``"supplied"``; unknown names raise).
    """
    order = validate_order(order)
    y0 = _as_state(y0, _grid_dtype(t0))
    t0 = _as_time(t0, y0)
    if backend == "finite_difference":
        backend_options.setdefault("warm_start", False)
    be = get_backend(backend, **backend_options)
    be.reset()
    coeffs = be.coefficients(f, t0, y0, order)
    for k, c in enumerate(coeffs):
        check_finite(c, what=f"Taylor coefficient c_{k}", time=float(t0))
    return coeffs


def _check_tolerances(rtol: Any, atol: Any, dtype: torch.dtype) -> tuple[float, float]:
    default = DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES[torch.float32])
    given = {"rtol": rtol, "atol": atol}
    out = {}
    for i, (name, tol) in enumerate(given.items()):
        if tol is None:
            out[name] = default[i]
            continue
        if isinstance(tol, torch.Tensor) and tol.numel() == 1:
            tol = float(tol)
        if not isinstance(tol, (int, float)) or isinstance(tol, bool):
            raise TaylorSolveError(f"{name} must be a number, got {type(tol).__name__}")
        tol = float(tol)
        if not (tol >= 0.0) or math.isinf(tol):
            raise TaylorSolveError(f"{name} must be a finite number >= 0, got {tol}")
        out[name] = tol
    if out["rtol"] == 0.0 and out["atol"] == 0.0:
        raise TaylorSolveError("rtol and atol cannot both be zero")
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        small = [f"{n}={given[n]:g}" for n in ("rtol", "atol") if given[n] is not None and 0 < out[n] < _FLOAT32_FLOOR]
        if small:
            eps = torch.finfo(dtype).eps
            warnings.warn(
                f"{' and '.join(small)} is below what a {str(dtype).removeprefix('torch.')} state can resolve (machine "
                f"epsilon {eps:.1e}); the solve will take tiny steps and still stop at the dtype's accuracy. "
                "Use a float64 state for tolerances below 1e-6.",
                TaylorSolveWarning,
                stacklevel=3,
            )
    return out["rtol"], out["atol"]


def solve(
    f: RHS,
    y0: Any,
    t: Any = None,
    *,
    order: int | str | None = None,
    backend: str | CoefficientBackend = "auto",
    t_span: tuple[float, float] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    backend_options: Mapping[str, Any] | None = None,
    max_steps: int = 100_000,
    check_finite: bool = True,
    dense: bool | None = None,
    event_ndim: int | None = None,
    h_max: float | None = None,
    progress: bool = False,
    batch_steps: str = "per_trajectory",
) -> Solution:
    """Solve ``dy/dt = f(t, y)`` from ``y0`` with the truncated Taylor method of order ``order``.

    Fixed grid: pass ``t``, a 1-D strictly monotone tensor of times (increasing or decreasing); the
    result holds the state at every grid time; ``order`` defaults to 2 (GENIE, eq. (9)).  Adaptive: pass
    ``t_span=(t0, t1)`` (and not ``t``); ``order`` defaults to ``"auto"``, which picks heyoka's order ``ceil(-ln(tol)/2) + 1`` for ``tol = min(rtol, atol)`` and
    heyoka's step rule, an explicit order the Jorba-Zou rule with the tolerances
    (:mod:`taylorsolve.adaptive`); the returned :class:`Solution` is callable for dense output.
    ``rtol``/``atol`` default to 1e-6/1e-9 (float64) or 1e-5/1e-6 (float32); smaller values on a float32
    state warn.

    ``backend``: ``"auto"`` (default) uses Taylor-mode arithmetic, compiled with numba for adaptive
    solves and long grids when ``f`` allows it, and falls back to nested JVPs (``"autodiff"``) with a
    :class:`~taylorsolve.errors.TaylorSolveWarning` naming the operation when ``f`` uses one the jets do
    not support.  ``backend_options`` go to the backend's constructor (unknown names raise, listing
    the valid ones).

    Batches: ``event_ndim`` says how many trailing dimensions of ``y0`` form one problem (default: 1, or 0
    for a 0-d state); leading dimensions are independent members.  Adaptive solves give each member its
    own steps (``batch_steps="per_trajectory"``, default; finished members are dropped) or one shared
    step sequence (``batch_steps="shared"``).  ``progress=True`` shows a tqdm bar (over ``t`` for
    adaptive solves).  ``h_max`` caps adaptive steps.  ``dense``: keep every step's Taylor polynomial so the
    solution is callable (default: True for adaptive solves, False on fixed grids).

    Raises :class:`taylorsolve.TaylorSolveError` on bad input (NaN/Inf in ``y0`` included),
    :class:`taylorsolve.SolverError` (naming the step and time) when NaN/Inf appears mid-solve,
    :class:`taylorsolve.StiffnessError` when steps collapse or ``max_steps`` runs out (with ``t``, ``h``
    and a stiffness diagnosis), :class:`taylorsolve.DerivativeLeakError` when ``f`` drops derivatives
    (``detach()``, ``float()``...) in a backend that needs them; all are ``TaylorSolveError``\\ s.
    """
    if (t is None) == (t_span is None):
        raise TaylorSolveError("pass exactly one of t (a fixed grid) or t_span=(t0, t1) (adaptive steps)")
    y0 = _as_state(y0, _grid_dtype(t) if t is not None else None)
    if backend_options is not None and not isinstance(backend_options, Mapping):
        raise TaylorSolveError(f"backend_options must be a dict, got {type(backend_options).__name__}")
    be = get_backend(backend, **dict(backend_options or {}))
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise TaylorSolveError(f"max_steps must be a positive integer, got {max_steps!r}")
    if event_ndim is None:
        event_ndim = 1 if y0.ndim >= 1 else 0
    if isinstance(event_ndim, bool) or not isinstance(event_ndim, int) or not (0 <= event_ndim <= y0.ndim):
        raise TaylorSolveError(f"event_ndim must be an integer in [0, {y0.ndim}], got {event_ndim!r}")
    if t is not None:
        order_ = validate_order(2 if order is None else order)
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=torch.float64)
        grid = validate_grid(t)
        grid = grid.to(device=y0.device)
        return solve_fixed(f, y0, grid, order_, be, check_nonfinite=check_finite, dense=bool(dense), progress=progress,
                           event_ndim=event_ndim)

    if not isinstance(t_span, (tuple, list)) or len(t_span) != 2:
        raise TaylorSolveError(f"t_span must be a pair (t0, t1), got {t_span!r}")
    rtol_, atol_ = _check_tolerances(rtol, atol, y0.dtype)
    order_ = validate_order("auto" if order is None else order, allow_auto=True)
    rule = "jorba_zou"
    if order_ == "auto":
        order_ = auto_order(min(x for x in (rtol_, atol_) if x > 0))
        rule = "heyoka"
    span = validate_grid(torch.as_tensor([float(t_span[0]), float(t_span[1])], dtype=torch.float64), name="t_span")
    span = span.to(device=y0.device)
    if h_max is not None and not (float(h_max) > 0):
        raise TaylorSolveError(f"h_max must be > 0, got {h_max!r}")
    if batch_steps not in ("per_trajectory", "shared"):
        raise TaylorSolveError(f"batch_steps must be 'per_trajectory' or 'shared', got {batch_steps!r}")
    return solve_adaptive(
        f, y0, span[0], span[1], order_, be, rtol=rtol_, atol=atol_, event_ndim=event_ndim,
        max_steps=max_steps, check_nonfinite=check_finite, h_max=h_max, rule=rule, batch_steps=batch_steps,
        progress=progress, dense=True if dense is None else bool(dense),
    )
