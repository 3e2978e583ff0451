r"""Pseudo numerical methods for diffusion models (PNDM, Liu et al. 2022) on the DDIM ODE.

The "transfer" part is the DDIM update in ``(xbar, gamma)``: ``xbar' = xbar + (gamma' - gamma) e``
with an eps estimate ``e`` from a linear multistep formula:

* S-PNDM: first step pseudo improved Euler (2 evaluations), then ``e = (3 e_n - e_{n-1}) / 2``.
* F-PNDM: three pseudo Runge-Kutta (RK4) warm-up steps with the midpoint ``(t + t') / 2`` in ``t``
  (4 evaluations each), then ``e = (55 e_n - 59 e_{n-1} + 37 e_{n-2} - 9 e_{n-3}) / 24``.

As in the paper, the multistep weights assume equal steps (app. F.6: PNDM was run on linear
striding); on other grids F-PNDM measures second order (its weights assume equal steps in gamma).
"""
from __future__ import annotations

from ..registry import Sampler, register

__all__ = ["SPNDM", "FPNDM"]


class _PNDM(Sampler):
    n_warm = 1
    full = False

    def setup(self, ctx) -> None:
        self.ets = []

    def step(self, ctx, n, y, eps0=None):
        s, s1 = ctx.s[n], ctx.s[n + 1]
        t, t1 = ctx.t[n], ctx.t[n + 1]
        c = ctx.c
        if len(self.ets) < self.n_warm:
            with ctx.phase("warmup"):
                e1 = ctx.eps_node(y, n) if eps0 is None else eps0
                self.ets.append(e1)
                if not self.full:  # pseudo improved Euler
                    e2 = ctx.eps(y + c(s1 - s, y) * e1, s1, t1)
                    e = 0.5 * (e1 + e2)
                else:  # pseudo Runge-Kutta (RK4), midpoint in t
                    tm = 0.5 * (t + t1)
                    sm = ctx.coords.s_of_t(tm)
                    dm = c(sm - s, y)
                    e2 = ctx.eps(y + dm * e1, sm, tm)
                    e3 = ctx.eps(y + dm * e2, sm, tm)
                    e4 = ctx.eps(y + c(s1 - s, y) * e3, s1, t1)
                    e = (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0
        else:
            self.ets.append(ctx.eps_node(y, n) if eps0 is None else eps0)
            self.ets = self.ets[-4:]
            ets = self.ets
            if not self.full:
                e = 0.5 * (3.0 * ets[-1] - ets[-2])
            else:
                e = (55.0 * ets[-1] - 59.0 * ets[-2] + 37.0 * ets[-3] - 9.0 * ets[-4]) / 24.0
        return y + c(s1 - s, y) * e


@register
class SPNDM(_PNDM):
    name = "s-pndm"
    aliases = ("spndm",)
    summary = "PNDM, 2nd-order pseudo linear multistep, pseudo improved-Euler first step"
    orders = (2,)
    nfe_rule = "steps + 1"
    n_warm, full = 1, False

    def nfe(self, steps: int) -> int:
        return int(steps) + 1


@register
class FPNDM(_PNDM):
    name = "f-pndm"
    aliases = ("fpndm",)
    summary = "PNDM, 4th-order pseudo linear multistep, 3 pseudo-RK4 warm-up steps"
    orders = (4,)
    nfe_rule = "4 min(N, 3) + max(N - 3, 0)"
    min_steps = 3
    variable_step_order = 2
    n_warm, full = 3, True

    def nfe(self, steps: int) -> int:
        n = int(steps)
        return 4 * min(n, 3) + max(n - 3, 0)
