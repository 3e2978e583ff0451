r"""EDM's second-order Heun method (Karras et al. 2022, Alg. 1, deterministic) on the DDIM ODE in ``(xbar, gamma)``.

Euler predictor ``u = xbar + h e_0``, trapezoidal corrector ``xbar' = xbar + h (e_0 + eps(u, gamma')) / 2``
(``h = gamma' - gamma``); two evaluations per step.
"""
from __future__ import annotations

from ..registry import Sampler, register

__all__ = ["Heun"]


@register
class Heun(Sampler):
    name = "heun"
    summary = "EDM's 2nd-order Heun on the DDIM ODE in (xbar, gamma)"
    orders = (2,)
    nfe_rule = "2 steps"

    def nfe(self, steps: int) -> int:
        return 2 * int(steps)

    def step(self, ctx, n, y, eps0=None):
        s, s1 = ctx.s[n], ctx.s[n + 1]
        h = ctx.c(s1 - s, y)
        d = ctx.eps_node(y, n) if eps0 is None else eps0
        d2 = ctx.eps(y + h * d, s1, ctx.t[n + 1])
        return y + 0.5 * h * (d + d2)
