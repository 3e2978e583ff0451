"""taylorsolve: truncated Taylor methods for ODEs, and for diffusion-model sampling (GENIE).

Core API::

    taylor_coefficients(f, t0, y0, order, backend="autodiff")  -> [c_0, ..., c_order]
    solve(f, y0, t, order=2, backend="autodiff")                -> Solution (.t, .ys, .stats)
    solve(f, y0, t_span=(t0, t1), order="auto", rtol=, atol=)   -> callable Solution (dense output)
    empirical_order(...)                                        -> observed global/local order

The core knows nothing about diffusion; :mod:`taylorsolve.diffusion` builds on it.
"""
from __future__ import annotations

from . import math
from .api import solve, taylor_coefficients
from .coefficients import CoefficientBackend, available_backends, get_backend, register_backend
from .convergence import OrderResult, empirical_order
from .errors import SolverError, SymbolicBackendError, TaylorSolveError
from .solution import Solution, SolveStats

__version__ = "0.1.0"

__all__ = [
    "CoefficientBackend",
    "OrderResult",
    "Solution",
    "SolveStats",
    "SolverError",
    "SymbolicBackendError",
    "TaylorSolveError",
    "available_backends",
    "empirical_order",
    "get_backend",
    "math",
    "register_backend",
    "solve",
    "taylor_coefficients",
]
