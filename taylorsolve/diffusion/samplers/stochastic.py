r"""Euler-Maruyama on the reverse-time SDE (eq. (3)), backwards in time.

One step from ``t`` to ``t' < t``: ``x' = x + drift(t, x) (t' - t) + g(t) sqrt(t - t') z`` with
``drift = f(t) x + g(t)^2 eps / sigma_t`` (VP: ``-beta/2 (x + 2 score)``) and ``z`` from ``generator``.
"""
from __future__ import annotations

import torch

from ..registry import Sampler, register

__all__ = ["EulerMaruyama"]


@register
class EulerMaruyama(Sampler):
    name = "euler-maruyama"
    aliases = ("em",)
    summary = "Euler-Maruyama on the reverse SDE (eq. (3)), noise from generator"
    coordinates = "sde"
    orders = (1,)
    stochastic = True
    exact_on_single_point = False

    def step(self, ctx, n, y, eps0=None):
        t, t1 = ctx.t[n], ctx.t[n + 1]
        eps = ctx.eps_node(y, n) if eps0 is None else eps0
        drift = ctx.coords.velocity(eps, y, t, t)
        z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=ctx.generator)
        g = ctx.coords.diffusion(t)
        return y + ctx.c(t1 - t, y) * drift + ctx.c(g * torch.sqrt(t - t1), y) * z
