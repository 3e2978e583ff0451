"""``backend="auto"`` (the default): Taylor-mode arithmetic where ``f`` allows it, nested JVPs otherwise.

The ``"taylor_mode"`` backend costs O(p^2) per coefficient sweep (and runs compiled for adaptive
solves), the ``"autodiff"`` backend ~3^p-4^p evaluations of ``f`` (order 15 on a 4-dimensional ODE:
hours).  ``"auto"`` therefore uses ``taylor_mode`` and falls back to ``autodiff`` only when ``f`` calls a
function the jets do not support, with a :class:`~taylorsolve.errors.TaylorSolveWarning` naming the
operation (and the cost at the order asked).  A derivative leak (``float()``, ``detach()``...) is not an
unsupported operation: it raises :class:`~taylorsolve.errors.DerivativeLeakError` in every backend.
The choice is made per solve (:meth:`reset` returns to ``taylor_mode``); ``Solution.stats.backend``
names the backend that ran.
"""
from __future__ import annotations

import warnings
import torch

from ..errors import DerivativeLeakError, TaylorSolveWarning, UnsupportedOperationError
from .autodiff import AutodiffBackend
from .base import RHS, CoefficientBackend, register_backend
from .taylor_mode import TaylorModeBackend

__all__ = ["AutoBackend"]


class AutoBackend(CoefficientBackend):
    """Taylor-mode coefficients, falling back to nested JVPs (with a warning) for unsupported ``f``.

    Options are those of :class:`~taylorsolve.coefficients.taylor_mode.TaylorModeBackend` (``compile``,
    ``compile_min_steps``, ``max_nodes``, ``auto_max_nodes``).
    """

    stateless = True

    def __init__(self, compile: bool | str = "auto", *, compile_min_steps: int = 1000, max_nodes: int = 4000,
                 auto_max_nodes: int | None = None) -> None:  # noqa: A002
        super().__init__()
        self.primary = TaylorModeBackend(compile, compile_min_steps=compile_min_steps, max_nodes=max_nodes,
                                         auto_max_nodes=auto_max_nodes)
        self.fallback = AutodiffBackend()
        self.primary.counters = self.counters
        self.fallback.counters = self.counters
        self.active: CoefficientBackend = self.primary
        #: why the last solve fell back (None if it did not)
        self.fallback_reason: str | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.active.name

    def reset(self) -> None:
        self.counters.reset()
        self.primary.reset()
        self.fallback.reset()
        self.active = self.primary
        self.fallback_reason = None

    # the compiled path of taylor_mode (used by the solvers while taylor_mode is active)
    def compile_mode(self, kind: str, steps: int | None = None) -> bool:
        return self.active is self.primary and self.primary.compile_mode(kind, steps)

    def compiled_plan(self, f: RHS, t0: torch.Tensor, y0: torch.Tensor, event_ndim: int):
        return self.primary.compiled_plan(f, t0, y0, event_ndim)

    @property
    def last_read_time(self) -> bool | None:
        return self.primary.last_read_time if self.active is self.primary else True

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        if self.active is self.primary:
            try:
                return self.primary.coefficients(f, t, y, order, f0=f0)
            except DerivativeLeakError:
                raise
            except UnsupportedOperationError as exc:
                self._fall_back(exc, order)
        return self.fallback.coefficients(f, t, y, order, f0=f0)

    def _fall_back(self, exc: UnsupportedOperationError, order: int) -> None:
        what = exc.operation or "an operation"
        cost = ""
        if order >= 5:
            cost = (f" At order {order} nested JVPs cost roughly {3 ** (order - 1):.0e}-{4 ** (order - 1):.0e} "
                    "evaluations of f per step: consider a lower order or an f written with supported operations.")
        self.fallback_reason = f"f uses {what}, which taylor_mode does not support"
        warnings.warn(
            f"backend='auto': {self.fallback_reason} ({exc}); falling back to backend='autodiff' (nested JVPs).{cost} "
            "Pass backend='autodiff' to silence this warning.",
            TaylorSolveWarning,
            stacklevel=4,
        )
        self.active = self.fallback


register_backend("auto", AutoBackend)
