r"""Euler-Maruyama on the reverse-time SDE (eq. (3)), backwards in time; any process with ``"sde"`` coordinates.

One step from ``t`` to ``t' < t``: ``x' = x + drift(t, x) (t' - t) + G(t) sqrt(t - t') z`` with ``z`` from
``generator``.  With the option ``lam`` (default 1) the unit integrates gDDIM's family of marginal-equivalent
SDEs (gDDIM eq. (6)),

    du = [F u - (1 + lam^2)/2 G G^T score] dt + lam G dw,

whose drift is ``(1 - lam^2)`` times the probability-flow drift plus ``lam^2`` times the reverse-SDE drift:
``lam = 1`` is the reverse SDE (VP: ``f x + g^2 eps / sigma_t = -beta/2 (x + 2 score)``), ``lam = 0`` Euler's
method on the probability-flow ODE.  The noise ``G(t) sqrt(dt) z`` comes from the coordinates
(:meth:`~taylorsolve.diffusion.processes.Coordinates.noise`: ``g(t)`` for scalar processes; only the
velocity for CLD).
"""
from __future__ import annotations

import math

import torch

from ...errors import TaylorSolveError
from ..registry import Sampler, register

__all__ = ["EulerMaruyama", "check_lambda"]


def check_lambda(lam: object, method: str) -> float:
    """``lam`` as a float ``>= 0`` (gDDIM eq. (6)), else :class:`TaylorSolveError` naming it."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(float(lam)):
        raise TaylorSolveError(f"{method}: lam must be a finite number >= 0 (gDDIM eq. (6)), got {lam!r}")
    if float(lam) < 0:
        raise TaylorSolveError(f"{method}: lam must be >= 0 (the noise scale of gDDIM eq. (6)), got {lam!r}")
    return float(lam)


@register
class EulerMaruyama(Sampler):
    name = "euler-maruyama"
    aliases = ("em",)
    summary = "Euler-Maruyama on the reverse SDE (eq. (3)); lam= for gDDIM eq. (6)'s family (lam=1 default)"
    coordinates = "sde"
    orders = (1,)
    options = {"lam": 1.0}
    stochastic = True
    exact_on_single_point = False

    def validate(self) -> None:
        self.lam = check_lambda(self.opts["lam"], self.name)

    def setup(self, ctx) -> None:
        self._pf = ctx.process.coordinates("pf") if self.lam != 1.0 else None

    def step(self, ctx, n, y, eps0=None):
        t, t1 = ctx.t[n], ctx.t[n + 1]
        eps = ctx.eps_node(y, n) if eps0 is None else eps0
        drift = ctx.coords.velocity(eps, y, t, t)
        if self._pf is not None:                       # (1 - lam^2) PF drift + lam^2 reverse-SDE drift
            w = self.lam * self.lam
            drift = w * drift + (1.0 - w) * self._pf.velocity(eps, y, t, t)
        z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=ctx.generator)
        out = y + ctx.c(t1 - t, y) * drift
        if self.lam == 0.0:
            return out
        noise = ctx.coords.noise(z, t, t - t1)
        return out + (noise if self.lam == 1.0 else ctx.c(self.lam, y) * noise)
