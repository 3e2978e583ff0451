r"""DEIS (Zhang & Chen 2023; gDDIM's exponential multistep predictor, gDDIM eq. (17)) on the DDIM ODE.

In ``(xbar, gamma)`` the VP process's transition matrix is the identity (gDDIM app. B with
``Psi = I``), so the exponential integrator of the DDIM ODE is

    xbar_{n+1} = xbar_n + int_{gamma_n}^{gamma_{n+1}} eps(gamma) d gamma,

and DEIS replaces ``eps`` by the polynomial through the last ``q`` evaluations, here in
``u = log gamma`` (DEIS's "log-rho" variant, the one diffusers' ``DEISMultistepScheduler`` implements),
integrated **exactly**: with ``gamma = gamma_n e^v`` and the Lagrange basis ``L_j(v)`` on the nodes
``v_j = log(gamma_j / gamma_n)``,

    C_j = gamma_n int_0^H L_j(v) e^v dv,   int P(v) e^v dv = e^v sum_k (-1)^k P^(k)(v),   H = log(gamma_{n+1}/gamma_n),

and ``xbar_{n+1} = xbar_n + sum_j C_j eps_j``.  Order ``q`` in 1..3 (any ``q`` works; diffusers stops
at 3); the first steps warm up with the orders the history allows.  ``q = 1`` is DDIM.
``adams-bashforth`` keeps the polynomial in ``gamma`` itself.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import Sampler, register
from .taylor import MultistepMixin

__all__ = ["DEIS", "log_rho_weights"]


def log_rho_weights(gammas: np.ndarray, gamma_next: float) -> np.ndarray:
    """``C_j = int_{gamma_n}^{gamma_next} L_j(log gamma) d gamma`` for nodes ``gammas`` (newest first)."""
    g_n = float(gammas[0])
    v = np.log(np.asarray(gammas, dtype=np.float64) / g_n)
    H = math.log(gamma_next / g_n)
    P = np.polynomial.polynomial
    m = len(v)
    C = np.empty(m)
    for j in range(m):
        others = np.delete(v, j)
        basis = P.polyfromroots(others) / np.prod(v[j] - others) if m > 1 else np.ones(1)
        # antiderivative of basis(v) e^v: e^v sum_k (-1)^k basis^(k)(v)
        acc = np.zeros(1)
        d = basis
        sign = 1.0
        for _ in range(len(basis)):
            acc = P.polyadd(acc, sign * d)
            d = P.polyder(d)
            sign = -sign
        C[j] = g_n * (math.exp(H) * P.polyval(H, acc) - P.polyval(0.0, acc))
    return C


@register
class DEIS(MultistepMixin, Sampler):
    name = "deis"
    summary = "DEIS / gDDIM exponential multistep: eps extrapolated in log gamma, integrated exactly (order=1..3)"
    orders = (1, 2, 3)
    default_order = 3
    options = {"lower_order_final": False}
    nfe_rule = "steps"

    def setup(self, ctx) -> None:
        self.hist: list = []

    def step(self, ctx, n, y, eps0=None):
        g, gn = float(ctx.s[n]), float(ctx.s[n + 1])
        e = ctx.eps_node(y, n) if eps0 is None else eps0
        self.hist.insert(0, (g, e))
        q = self.lowered_order(ctx, n, min(self.order, len(self.hist)))
        self.hist = self.hist[: self.order]
        nodes = np.array([gj for gj, _ in self.hist[:q]])
        C = log_rho_weights(nodes, gn)
        incr = sum(ctx.c(C[j], y) * self.hist[j][1] for j in range(q))
        return y + incr
