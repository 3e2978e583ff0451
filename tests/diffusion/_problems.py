"""Exact-eps problems shared by the diffusion tests: single-point data (straight-line DDIM ODE) and
Gaussian data N(M, S^2 I) (linear DDIM ODE with a closed-form solution and derivatives)."""
from __future__ import annotations

import torch

from taylorsolve.diffusion.schedules import LinearVPSchedule

F64 = torch.float64
SCH = LinearVPSchedule()
X0 = torch.tensor([0.3, -1.2, 2.0], dtype=F64)
M = torch.tensor([0.5, -1.0], dtype=F64)
S = 0.5
X1_3 = torch.tensor([[0.5, -0.1, 1.3], [1.0, 2.0, -0.5]], dtype=F64)
X1_2 = torch.tensor([[0.5, -0.1], [1.0, 2.0], [-0.7, 0.4]], dtype=F64)


def eps_point(x, t):
    return (x - SCH.alpha(t) * X0) / SCH.sigma(t)


def eps_gauss(x, t):
    a, s = SCH.alpha(t), SCH.sigma(t)
    return s * (x - a * M) / (a * a * S * S + s * s)


def gauss_derivatives(xbar, gamma, eps, order):
    g = torch.as_tensor(gamma, dtype=F64)
    r2 = S * S + g * g
    K = (xbar - M) / torch.sqrt(r2)
    phis = [S * S * r2**-1.5, -3 * S * S * g * r2**-2.5, 3 * S * S * (4 * g * g - S * S) * r2**-3.5]
    return [K * p for p in phis[:order]]


def exact_point(x1, times):
    """Single point: xbar(gamma) = x0 + (xbar1 - x0) gamma / gamma1, a straight line."""
    g0, g = SCH.gamma(times[0]), SCH.gamma(times[-1])
    xbar = X0 + (x1 * torch.sqrt(1 + g0 * g0) - X0) * g / g0
    return xbar / torch.sqrt(1 + g * g)


def exact_gauss(x1, times):
    """Gaussian data: the DDIM ODE is linear, u = xbar - m scales by sqrt((s^2+g^2)/(s^2+g0^2))."""
    g0, g = SCH.gamma(times[0]), SCH.gamma(times[-1])
    u = (x1 * torch.sqrt(1 + g0 * g0) - M) * torch.sqrt((S * S + g * g) / (S * S + g0 * g0))
    return (u + M) / torch.sqrt(1 + g * g)
