"""Exceptions, warnings and input validation shared by every layer of taylorsolve.

One hierarchy: every exception the library raises on purpose is a :class:`TaylorSolveError`.

* :class:`TaylorSolveError` (a ``ValueError``): bad input, named in the message.
* :class:`SolverError` (also a ``RuntimeError``): a solve failed part-way (NaN/Inf, step-size
  collapse, step budget); carries ``step`` and ``time``.  :class:`StiffnessError` is the collapse case,
  with ``h`` and a pointer to implicit solvers.
* :class:`UnsupportedOperationError`: ``f`` uses a function a backend cannot trace (``operation`` names it).
* :class:`DerivativeLeakError`: ``f`` drops the derivatives a backend tracks (``detach()``, ``float()``,
  ``tolist()``, NumPy): the coefficients would be silently wrong, so the solve refuses.
* :class:`SymbolicBackendError`: the SymPy backend cannot handle ``f``.

:class:`TaylorSolveWarning` marks the library's warnings (fallbacks, tolerances below a dtype's reach).
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "TaylorSolveError",
    "SolverError",
    "StiffnessError",
    "SymbolicBackendError",
    "UnsupportedOperationError",
    "DerivativeLeakError",
    "TaylorSolveWarning",
    "validate_order",
    "validate_grid",
    "validate_initial_state",
    "check_rhs_output",
    "check_finite",
]


class TaylorSolveError(ValueError):
    """Base class of every error taylorsolve raises on purpose (bad input, failed solves, unsupported ``f``)."""


class SolverError(TaylorSolveError, RuntimeError):
    """A solve failed part-way (NaN/Inf, step-size collapse, step budget); the message names the step and time.

    Also a ``RuntimeError`` (what it was before it joined the :class:`TaylorSolveError` hierarchy).
    """

    def __init__(self, message: str, *, step: int | None = None, time: float | None = None):
        super().__init__(message)
        self.step = step
        self.time = time


class StiffnessError(SolverError):
    """Adaptive steps collapsed or the step budget ran out; ``h`` is the step size at ``time``.

    The message says whether the problem looks stiff and points to implicit solvers
    (``scipy.integrate.solve_ivp(method="Radau")`` or ``"BDF"``).
    """

    def __init__(self, message: str, *, step: int | None = None, time: float | None = None, h: float | None = None):
        super().__init__(message, step=step, time=time)
        self.h = h


class SymbolicBackendError(TaylorSolveError):
    """The symbolic (SymPy) backend met a function or construct it cannot differentiate."""


class UnsupportedOperationError(TaylorSolveError):
    """``f`` calls a function a tracing backend does not support; ``operation`` names it, ``backend`` the backend."""

    def __init__(self, message: str, *, operation: str | None = None, backend: str | None = None):
        super().__init__(message)
        self.operation = operation
        self.backend = backend


class DerivativeLeakError(TaylorSolveError):
    """``f`` turns a value computed from the state into something that does not carry derivatives.

    ``detach()``, ``float()``, ``item()``, ``tolist()``, ``numpy()``, ``torch.tensor(...)`` of state values:
    ``f``'s value is unchanged but every backend that differentiates ``f`` would see a constant, and the
    Taylor coefficients (hence the solution) would be silently wrong.  ``operation`` names the call.
    """

    def __init__(self, message: str, *, operation: str | None = None):
        super().__init__(message)
        self.operation = operation


class TaylorSolveWarning(UserWarning):
    """Warnings of taylorsolve: backend fallbacks, tolerances a dtype cannot reach."""


def validate_order(order: Any, *, allow_auto: bool = False) -> int | str:
    """Return ``order`` as an ``int >= 1`` (or ``"auto"`` when allowed), else raise."""
    if allow_auto and isinstance(order, str) and order == "auto":
        return "auto"
    if isinstance(order, bool) or not isinstance(order, (int,)) and not (
        isinstance(order, float) and order.is_integer()
    ):
        if isinstance(order, torch.Tensor) and order.numel() == 1 and float(order).is_integer():
            order = int(order)
        else:
            extra = ' or "auto"' if allow_auto else ""
            raise TaylorSolveError(f"order must be an integer >= 1{extra}, got {order!r}")
    order = int(order)
    if order < 1:
        raise TaylorSolveError(f"order must be an integer >= 1, got {order}")
    return order


def validate_grid(t: Any, *, name: str = "t") -> torch.Tensor:
    """Check that ``t`` is a 1-D, finite, strictly monotone tensor of >= 2 floating times."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if not torch.is_floating_point(t):
        t = t.to(torch.get_default_dtype())
    if t.ndim != 1:
        raise TaylorSolveError(f"time grid {name} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() < 2:
        raise TaylorSolveError(f"time grid {name} needs at least 2 points, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise TaylorSolveError(f"time grid {name} contains NaN or Inf")
    d = torch.diff(t)
    if not ((d > 0).all() or (d < 0).all()):
        bad = int(torch.nonzero(d * torch.sign(d[0]) <= 0)[0]) if (d[0] != 0) else 0
        raise TaylorSolveError(
            f"time grid {name} must be strictly monotone (increasing or decreasing); "
            f"it breaks between index {bad} ({float(t[bad])!r}) and {bad + 1} ({float(t[bad + 1])!r})"
        )
    return t


def validate_initial_state(y0: torch.Tensor, *, name: str = "y0") -> torch.Tensor:
    """Check that the initial state is a floating-point tensor without NaN/Inf (before the first step)."""
    if not torch.is_floating_point(y0) and not torch.is_complex(y0):
        raise TaylorSolveError(f"the initial state {name} must be a floating-point tensor, got dtype {y0.dtype}")
    finite = torch.isfinite(y0)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        first = tuple(int(i) for i in bad[0]) if y0.ndim else ()
        raise TaylorSolveError(
            f"the initial state {name} contains {len(bad) if y0.ndim else 1} NaN/Inf entries "
            f"(first at index {first}: {y0[first].item()!r})"
        )
    return y0


def check_rhs_output(out: Any, y: torch.Tensor, *, where: str = "f(t, y)") -> torch.Tensor:
    """Check that a right-hand side returned a tensor with ``y``'s shape and dtype."""
    if not isinstance(out, torch.Tensor):
        raise TaylorSolveError(f"{where} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != y.shape:
        raise TaylorSolveError(
            f"{where} returned shape {tuple(out.shape)} but the state has shape {tuple(y.shape)}"
        )
    if out.dtype != y.dtype:
        raise TaylorSolveError(f"{where} returned dtype {out.dtype} but the state has dtype {y.dtype}")
    return out


def check_finite(x: torch.Tensor, *, what: str, step: int | None = None, time: float | None = None) -> None:
    """Raise :class:`SolverError` naming step and time when ``x`` has NaN or Inf entries."""
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        loc = ""
        if step is not None:
            loc += f" at step {step}"
        if time is not None and not math.isnan(time):
            loc += f" (t = {time:.6g})"
        raise SolverError(f"{what} has {n_bad} non-finite (NaN/Inf) entries{loc}", step=step, time=time)
