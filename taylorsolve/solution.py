"""The result of a solve: times, states, statistics and (for adaptive solves) dense output."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .coefficients.autodiff import horner
from .errors import TaylorSolveError

__all__ = ["SolveStats", "Solution"]


@dataclass
class SolveStats:
    """Work done by a solve.

    ``f_evals`` counts plain evaluations of ``f``; ``derivative_evals`` calls that produced higher
    derivatives (a nested JVP, a compiled symbolic evaluation, a Taylor-mode sweep, a supplied
    derivative call); ``jvp_passes`` forward-mode JVP passes; ``wall_time`` seconds.
    """

    steps: int = 0
    f_evals: int = 0
    derivative_evals: int = 0
    jvp_passes: int = 0
    wall_time: float = 0.0
    order: int = 0
    backend: str = ""
    accepted_steps: int = 0
    rejected_steps: int = 0

    def as_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


@dataclass
class Solution:
    """``t`` (times, 1-D), ``ys`` (``[len(t), *y0.shape]``) and ``stats``.

    When the solve kept its per-step Taylor polynomials (adaptive solves always do; fixed-grid solves
    with ``dense=True``), the solution is callable: ``sol(tq)`` evaluates the polynomial of the step
    containing ``tq``, ``y(t_n + s) ~ sum_k c_k s^k`` (dense output at no extra cost).  ``tq`` may be a
    scalar or a 1-D tensor; the result has shape ``[*tq.shape, *y0.shape]``.
    """

    t: torch.Tensor
    ys: torch.Tensor
    stats: SolveStats
    step_coefficients: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def y_final(self) -> torch.Tensor:
        return self.ys[-1]

    def __call__(self, tq: torch.Tensor | float) -> torch.Tensor:
        if self.step_coefficients is None:
            raise TaylorSolveError(
                "this Solution holds no dense output; solve adaptively or pass dense=True to solve()"
            )
        tq = torch.as_tensor(tq, dtype=self.t.dtype, device=self.t.device)
        scalar = tq.ndim == 0
        tq = tq.reshape(-1)
        t0, t1 = self.t[0], self.t[-1]
        lo, hi = torch.minimum(t0, t1), torch.maximum(t0, t1)
        if ((tq < lo) | (tq > hi)).any():
            raise TaylorSolveError(
                f"dense output requested outside the solved interval [{float(lo)}, {float(hi)}]"
            )
        forward = bool(t1 > t0)
        knots = self.t if forward else -self.t
        q = tq if forward else -tq
        idx = torch.searchsorted(knots.contiguous(), q.contiguous(), right=True) - 1
        idx = idx.clamp(0, len(self.t) - 2)
        out = []
        for i, tqi in zip(idx.tolist(), tq):
            s = (tqi - self.t[i]).to(self.ys.dtype)
            out.append(horner(list(self.step_coefficients[i]), s))
        res = torch.stack(out)
        return res[0] if scalar else res
