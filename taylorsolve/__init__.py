"""taylorsolve: truncated Taylor methods for ODEs, and for diffusion-model sampling (GENIE).

Core API::

    taylor_coefficients(f, t0, y0, order, backend="auto")       -> [c_0, ..., c_order]
    solve(f, y0, t, order=2, backend="auto")                    -> Solution (.t, .ys, .stats)
    solve(f, y0, t_span=(t0, t1), order="auto", rtol=, atol=)   -> callable Solution (dense output)
    empirical_order(...)                                        -> observed global/local order

The core knows nothing about diffusion; :mod:`taylorsolve.diffusion` builds on it.
"""
from __future__ import annotations

from . import math
from .api import solve, taylor_coefficients
from .coefficients import CoefficientBackend, available_backends, get_backend, register_backend
from .convergence import OrderResult, empirical_order
from .errors import (
    DerivativeLeakError,
    SolverError,
    StiffnessError,
    SymbolicBackendError,
    TaylorSolveError,
    TaylorSolveWarning,
    UnsupportedOperationError,
)
from .solution import Solution, SolveStats

__version__ = "0.1.0"

__all__ = [
    "CoefficientBackend",
    "DerivativeLeakError",
    "OrderResult",
    "Solution",
    "SolveStats",
    "SolverError",
    "StiffnessError",
    "SymbolicBackendError",
    "TaylorSolveError",
    "TaylorSolveWarning",
    "UnsupportedOperationError",
    "available_backends",
    "empirical_order",
    "get_backend",
    "math",
    "register_backend",
    "solve",
    "taylor_coefficients",
]
