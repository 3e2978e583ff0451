"""The compiled ``taylor_mode`` path: plans (trace -> code -> numba) and the solves that run on them.

A :class:`CompiledPlan` belongs to one (``f``, event shape, dtype).  It is built by tracing ``f`` on the
scalar tape (:mod:`taylorsolve.coefficients.tape`), generating the straight-line coefficient code and
the stepping loops (:mod:`taylorsolve.coefficients.codegen`) and compiling them with numba.  The code
depends only on the *structure* of ``f``: its numeric constants (captured tensors and numbers) are a
runtime array, and ``f`` is traced again for every solve (cheap: ~0.1-1 ms for small systems), so a
changed constant is always seen and a parameter sweep reuses the compiled code.

Every solve checks the compiled ``f(t0, y0)`` against one ordinary evaluation of ``f`` on the whole
batch (the one extra ``f`` evaluation of the compiled path; it also catches an ``f`` that couples batch
members, which tracing one member's event shape cannot see).  On a mismatch, an unsupported
operation, Python branching on the state or a tape too large to compile, the backend falls back to
the interpreted jets and records the reason in ``Solution.stats.compiled`` / ``.notes``.

Requires numba; without it (or on a non-CPU device, or for dtypes other than float32/float64) the
interpreted path runs.
"""
from __future__ import annotations

import importlib.util
import math
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DerivativeLeakError, TaylorSolveError, UnsupportedOperationError
from . import codegen
from .tape import TraceResult, trace

__all__ = ["numba_available", "CompiledPlan", "get_plan", "PlanUnavailable"]

_HAVE_NUMBA: bool | None = None


def numba_available() -> bool:
    global _HAVE_NUMBA
    if _HAVE_NUMBA is None:
        _HAVE_NUMBA = importlib.util.find_spec("numba") is not None
    return _HAVE_NUMBA


class PlanUnavailable(Exception):
    """The compiled path cannot run this ``f`` (the message says why); the interpreted path takes over."""


_DTYPES = {torch.float64: "float64", torch.float32: "float32"}
_NP = {torch.float64: np.float64, torch.float32: np.float32}


class CompiledPlan:
    """``f`` traced for one event shape and dtype, with its compiled module and constants ``K``."""

    def __init__(self, tr: TraceResult, module: Any, dtype: torch.dtype, disk: bool) -> None:
        self.trace = tr
        self.module = module
        self.dtype = dtype
        self.np_dtype = _NP[dtype]
        self.disk_cached = disk
        self.n_state = tr.n_state
        self.n_nodes = len(tr)
        self.event_shape = tr.event_shape
        _, vals = codegen.constants(tr)
        self.K = np.asarray(vals if vals else [0.0], dtype=np.float64)
        #: seconds spent compiling (or loading from numba's cache) for this plan's solves
        self.compile_time = 0.0
        self._compiled: set[str] = set()

    def ensure(self, *loops: str) -> float:
        """Compile ``coef1`` and the named loops of :mod:`._loops` for this dtype (cached); returns the seconds now."""
        from . import _loops

        dt = _DTYPES[self.dtype]
        start = time.perf_counter()
        with _LOCK:
            codegen.compile_coef(self.module, dt)
            for name in loops:
                _loops.get(name, dt)
        spent = time.perf_counter() - start
        spent = spent if spent > 2e-3 else 0.0  # dictionary lookups only: nothing was compiled or loaded
        self.compile_time += spent
        return spent

    def loop(self, name: str):
        from . import _loops

        return _loops.get(name, _DTYPES[self.dtype])

    @property
    def coef(self):
        return self.module.coef1

    def work(self, order: int) -> np.ndarray:
        return np.zeros((self.n_nodes, order + 1), dtype=self.np_dtype)

    # ---- coefficients --------------------------------------------------------------------------------
    def coefficients(self, t: float, y: np.ndarray, order: int) -> np.ndarray:
        """``[order+1, M, n]`` coefficients of ``M`` members (``y`` shaped ``[M, n]``) at time ``t``."""
        self.ensure("coefficients")
        Y = np.ascontiguousarray(y, dtype=self.np_dtype)
        out = np.zeros((Y.shape[0], order + 1, self.n_state), dtype=self.np_dtype)
        self.loop("coefficients")(self.coef, float(t), Y, order, self.work(order), self.K, out)
        return np.ascontiguousarray(out.transpose(1, 0, 2))


_LOCK = threading.RLock()


def get_plan(f: Callable, event_shape: tuple[int, ...], dtype: torch.dtype, *, max_nodes: int = 4000) -> CompiledPlan:
    """Trace ``f`` now and return its plan (the compiled module is shared by all ``f`` of the same structure).

    Raises :class:`PlanUnavailable` when the compiled path cannot serve ``f``; a
    :class:`~taylorsolve.errors.DerivativeLeakError` (``f`` drops derivatives) propagates: no backend could
    serve that ``f`` correctly.
    """
    if not numba_available():
        raise PlanUnavailable("numba is not installed")
    if dtype not in _DTYPES:
        raise PlanUnavailable(f"the compiled path runs float32/float64 states, not {dtype}")
    try:
        tr = trace(f, event_shape, dtype, max_nodes=max_nodes)
    except DerivativeLeakError:
        raise
    except UnsupportedOperationError as exc:
        raise PlanUnavailable(str(exc)) from None
    except TaylorSolveError as exc:
        raise PlanUnavailable(str(exc)) from None
    if tr.n_state == 0:
        raise PlanUnavailable("empty state")
    module, disk = codegen.module_for(tr)
    return CompiledPlan(tr, module, dtype, disk)


def validate(plan: CompiledPlan, f: Callable, t0: torch.Tensor, y0: torch.Tensor) -> float:
    """Max relative difference between the compiled ``f(t0, y0)`` and one ordinary evaluation of ``f``."""
    with torch.no_grad():
        ref = f(t0.to(y0.dtype), y0)
    if not isinstance(ref, torch.Tensor) or ref.shape != y0.shape:
        return math.inf
    yb = y0.detach().reshape(-1, plan.n_state).cpu().numpy()
    c = plan.coefficients(float(t0), yb, 1)[1]  # [M, n]: c_1 = f(t0, y0)
    r = ref.detach().reshape(-1, plan.n_state).cpu().double().numpy()
    c = c.astype(np.float64)
    if not (np.isfinite(r) == np.isfinite(c)).all():
        return math.inf
    finite = np.isfinite(r)
    scale = np.maximum(np.abs(r), 1.0)
    return float(np.max(np.abs(c - r)[finite] / scale[finite])) if finite.any() else 0.0


def plan_for_solve(f: Callable, t0: torch.Tensor, y0: torch.Tensor, event_ndim: int, *,
                   max_nodes: int = 4000) -> tuple[CompiledPlan, int]:
    """A validated plan for this solve: event shape ``y0.shape[-event_ndim:]``, else the whole state.

    Returns ``(plan, event_ndim used)``; raises :class:`PlanUnavailable` with the reason otherwise.
    """
    if y0.device.type != "cpu":
        raise PlanUnavailable(f"the compiled path runs on the CPU; the state is on {y0.device}")
    if y0.requires_grad:
        raise PlanUnavailable("the state requires grad (the compiled path does not propagate autograd)")
    tol = 1e-10 if y0.dtype == torch.float64 else 1e-4
    tried = []
    for nd in dict.fromkeys((event_ndim, y0.ndim)):
        shape = tuple(y0.shape[y0.ndim - nd :])
        plan = get_plan(f, shape, y0.dtype, max_nodes=max_nodes)
        err = validate(plan, f, t0, y0)
        if err <= tol:
            return plan, nd
        tried.append(f"event shape {shape}: compiled f differs from f by {err:.3g}")
    raise PlanUnavailable("; ".join(tried) + " (f couples batch members, or is not a function of (t, y) alone)")
