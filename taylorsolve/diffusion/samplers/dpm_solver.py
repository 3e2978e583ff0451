r"""DPM-Solver (Lu et al. 2022) and DPM-Solver++(2M) (Lu et al. 2022b) on the DDIM ODE.

With ``lambda = -log gamma`` and ``h = lambda_{n+1} - lambda_n = log(gamma_n / gamma_{n+1})``, dividing
Lu et al.'s updates by ``alpha`` turns every ``sigma_s (e^{r h} - 1) / alpha_s`` into a difference of
gammas (``gamma_s = gamma_n e^{-r h}`` at the intermediate points):

* DPM-Solver-2 (singlestep, ``r1 = 1/2`` default): ``u = xbar + (gamma_s - gamma) e_0``,
  ``xbar' = xbar + (gamma' - gamma) e_0 + (gamma' - gamma) / (2 r1) (eps(u, s) - e_0)``.
* DPM-Solver-3 (``r1 = 1/3, r2 = 2/3``): ``u1 = xbar + (gamma_1 - gamma) e_0``, ``D1 = eps(u1) - e_0``,
  ``u2 = xbar + (gamma_2 - gamma) e_0 - gamma_2 (r2 / r1) (phi(r2 h) - 1) D1``, ``D2 = eps(u2) - e_0``,
  ``xbar' = xbar + (gamma' - gamma) e_0 - (gamma' / r2) (phi(h) - 1) D2``, ``phi(z) = (e^z - 1) / z``.
* DPM-Solver++(2M), data prediction ``x0 = xbar - gamma eps``: with ``y = xbar / gamma``,
  ``y' = y + (1/gamma' - 1/gamma) D``, ``D = x0_n`` on the first step and
  ``D = (1 + 1/(2r)) x0_n - 1/(2r) x0_{n-1}``, ``r = h_{n-1} / h_n`` afterwards (Alg. 2).
"""
from __future__ import annotations

import math

import torch

from ...errors import TaylorSolveError
from ..registry import Sampler, register
from .taylor import MultistepMixin

__all__ = ["DPMSolver2", "DPMSolver3", "DPMSolverPP2M"]


def _phi1(z: float) -> float:
    return math.expm1(z) / z if z != 0.0 else 1.0


@register
class DPMSolver2(Sampler):
    name = "dpm-solver-2"
    aliases = ("dpm-solver2", "dpmsolver2")
    summary = "DPM-Solver-2, singlestep in lambda (option r1, default 1/2)"
    orders = (2,)
    options = {"r1": 0.5}
    nfe_rule = "2 steps"

    def validate(self) -> None:
        r1 = self.opts["r1"]
        if isinstance(r1, bool) or not isinstance(r1, (int, float)) or not (0.0 < float(r1) < 1.0):
            raise TaylorSolveError(f"dpm-solver-2 needs 0 < r1 < 1, got {r1!r}")

    def nfe(self, steps: int) -> int:
        return 2 * int(steps)

    def step(self, ctx, n, y, eps0=None):
        c = ctx.c
        g, gn = float(ctx.s[n]), float(ctx.s[n + 1])
        r1 = float(self.opts["r1"])
        h = math.log(g / gn)
        e0 = ctx.eps_node(y, n) if eps0 is None else eps0
        g1 = torch.as_tensor(g * math.exp(-r1 * h), dtype=torch.float64)
        e1 = ctx.eps(y + c(float(g1) - g, y) * e0, g1)
        return y + c(gn - g, y) * e0 + c((gn - g) / (2.0 * r1), y) * (e1 - e0)


@register
class DPMSolver3(Sampler):
    name = "dpm-solver-3"
    aliases = ("dpm-solver3", "dpmsolver3")
    summary = "DPM-Solver-3, singlestep, r1 = 1/3, r2 = 2/3"
    orders = (3,)
    nfe_rule = "3 steps"

    def nfe(self, steps: int) -> int:
        return 3 * int(steps)

    def step(self, ctx, n, y, eps0=None):
        c = ctx.c
        g, gn = float(ctx.s[n]), float(ctx.s[n + 1])
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        h = math.log(g / gn)
        e0 = ctx.eps_node(y, n) if eps0 is None else eps0
        g1 = torch.as_tensor(g * math.exp(-r1 * h), dtype=torch.float64)
        d1 = ctx.eps(y + c(float(g1) - g, y) * e0, g1) - e0
        g2 = torch.as_tensor(g * math.exp(-r2 * h), dtype=torch.float64)
        u2 = y + c(float(g2) - g, y) * e0 - c(float(g2) * (r2 / r1) * (_phi1(r2 * h) - 1.0), y) * d1
        d2 = ctx.eps(u2, g2) - e0
        return y + c(gn - g, y) * e0 - c(gn / r2 * (_phi1(h) - 1.0), y) * d2


@register
class DPMSolverPP2M(MultistepMixin, Sampler):
    name = "dpm-solver++2m"
    aliases = ("dpm-solver++(2m)", "dpm-solver++-2m", "dpmpp2m")
    summary = "DPM-Solver++(2M), multistep, data prediction"
    orders = (2,)
    options = {"lower_order_final": False}
    nfe_rule = "steps"

    def setup(self, ctx) -> None:
        self.prev = None

    def step(self, ctx, n, y, eps0=None):
        c = ctx.c
        g, gn = float(ctx.s[n]), float(ctx.s[n + 1])
        h = math.log(g / gn)
        x0 = y - c(g, y) * (ctx.eps_node(y, n) if eps0 is None else eps0)
        if self.prev is None or self.lowered_order(ctx, n, 2) < 2:
            d = x0
        else:
            r = self.prev[1] / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * self.prev[0]
        self.prev = (x0, h)
        yy = y / c(g, y) + c(1.0 / gn - 1.0 / g, y) * d
        return c(gn, y) * yy
