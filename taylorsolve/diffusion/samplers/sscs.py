r"""The symmetric splitting CLD sampler (SSCS, thesis sec. 2.3.3.3 and App. 2.4.4, Alg. 1).

CLD's generative SDE in reversed time splits into an analytically solvable part ``A = A_H + A_O`` (the
reversed Hamiltonian dynamics, the velocity's Ornstein-Uhlenbeck friction and the noise) and the score
part ``S: dv = 2 beta Gamma [score_v + v / M] dt`` (thesis eq. (2.78)).  One step of length ``h`` is the
Strang splitting ``exp(h/2 L_A) exp(h L_S) exp(h/2 L_A)`` (thesis eq. (2.87)):

1. ``u <- N(J Psi(h/2) J u, J Q_{h/2} J)`` (thesis eq. (2.88)-(2.94); :meth:`half_step` of the
   ``"langevin"`` coordinates),
2. ``v <- v + h 2 beta Gamma [score_v(u, t_mid) + v / M]`` (thesis eq. (2.96)-(2.97), one Euler step, one
   model evaluation),
3. the second half-step as 1.

Alg. 1 writes the score at the step's start time; the state after the first half-step lives at the
midpoint ``t - h/2``, where we evaluate it (``score_time="mid"``, the symmetric choice; ``"start"`` is
Alg. 1 literally).  Weak order 1 (thesis eq. (2.98)), measured in the tests.  CLD only.
"""
from __future__ import annotations

import torch

from ...errors import TaylorSolveError
from ..registry import Sampler, register

__all__ = ["SSCS"]


@register
class SSCS(Sampler):
    name = "sscs"
    summary = "symmetric splitting CLD sampler (thesis Alg. 1): analytic half-steps + Euler score step (CLD only)"
    coordinates = "langevin"
    orders = (1,)
    options = {"score_time": "mid"}
    stochastic = True
    exact_on_single_point = False

    def validate(self) -> None:
        if self.opts["score_time"] not in ("mid", "start"):
            raise TaylorSolveError(f"sscs: score_time must be 'mid' or 'start', got {self.opts['score_time']!r}")

    def setup(self, ctx) -> None:
        if ctx.afs:
            raise TaylorSolveError("sscs evaluates the score after an analytic half-step, not at the node: "
                                   "the analytical first step (afs) does not apply")

    def step(self, ctx, n, y, eps0=None):
        coords, proc = ctx.coords, ctx.process
        t, t1 = float(ctx.t[n]), float(ctx.t[n + 1])
        h = t - t1
        z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=ctx.generator)
        u = coords.half_step(y, 0.5 * h, z)
        tm = torch.tensor(t - 0.5 * h if self.opts["score_time"] == "mid" else t, dtype=torch.float64)
        eps = ctx.eps(u, tm, tm)
        _, sv = proc.split(proc.score_from_eps(eps, tm))
        x, v = proc.split(u)
        v = v + ctx.c(h * proc.q, v) * (sv + v / proc.M)
        z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=ctx.generator)
        return coords.half_step(proc.join(x, v), 0.5 * h, z)
