"""Shared helpers for the toy tests: an independent RK4, central differences, a schedule, and an
independent nested-JVP reference for Taylor coefficients (written apart from the core's backends so
that it can check them)."""
from __future__ import annotations

import math

import torch

F64 = torch.float64


def rk4(f, t0: float, y0: torch.Tensor, t1: float, steps: int) -> torch.Tensor:
    """Classical RK4 for y' = f(t, y) from t0 to t1 with `steps` equal steps (float64)."""
    h = (t1 - t0) / steps
    y = y0.clone()
    t = t0
    for _ in range(steps):
        tt = torch.tensor(t, dtype=F64)
        k1 = f(tt, y)
        k2 = f(tt + h / 2, y + h / 2 * k1)
        k3 = f(tt + h / 2, y + h / 2 * k2)
        k4 = f(tt + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t = t0 + (_ + 1) * h
    return y


# central-difference weights on the 7-point stencil j = -3..3 (error O(h^4) for k = 1, 2, 3)
FD7 = {
    1: [-1 / 60, 3 / 20, -3 / 4, 0.0, 3 / 4, -3 / 20, 1 / 60],
    2: [1 / 90, -3 / 20, 3 / 2, -49 / 18, 3 / 2, -3 / 20, 1 / 90],
    3: [1 / 8, -1.0, 13 / 8, 0.0, -13 / 8, 1.0, -1 / 8],
}


def central_differences(values: list[torch.Tensor], h: float, k: int) -> torch.Tensor:
    """k-th derivative from values at offsets -3h..3h (7 points)."""
    return sum(w * v for w, v in zip(FD7[k], values)) / h**k


class LocalLinearVP:
    """beta(t) = 0.1 + 19.9 t; log alpha^2 = -(0.1 t + 19.9 t^2 / 2) (only if the package one is missing)."""

    b0, b1 = 0.1, 19.9

    def _la2(self, t):
        t = torch.as_tensor(t, dtype=F64)
        return -(self.b0 * t + self.b1 * t * t / 2)

    def alpha(self, t):
        return torch.exp(0.5 * self._la2(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._la2(t)))

    def gamma(self, t):
        return self.sigma(t) / self.alpha(t)

    def t_from_gamma(self, g):
        g = torch.as_tensor(g, dtype=F64)
        c = torch.log1p(g * g)  # = b0 t + b1 t^2 / 2
        return (-self.b0 + torch.sqrt(self.b0**2 + 2 * self.b1 * c)) / self.b1


class CosineVP:
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2): a different VP schedule, gamma = tan(pi t / 2)."""

    def alpha(self, t):
        return torch.cos(math.pi / 2 * torch.as_tensor(t, dtype=F64))

    def sigma(self, t):
        return torch.sin(math.pi / 2 * torch.as_tensor(t, dtype=F64))

    def t_from_gamma(self, g):
        return 2 / math.pi * torch.atan(torch.as_tensor(g, dtype=F64))


def linear_vp():
    try:
        from taylorsolve.diffusion.schedules import LinearVPSchedule

        return LinearVPSchedule()
    except ImportError:
        return LocalLinearVP()


def rk4_grid(f, grid: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Classical RK4 for y' = f(t, y) along the time points of `grid` (any spacing, float64)."""
    y = y0.clone()
    for i in range(len(grid) - 1):
        t, h = grid[i], grid[i + 1] - grid[i]
        k1 = f(t, y)
        k2 = f(t + h / 2, y + h / 2 * k1)
        k3 = f(t + h / 2, y + h / 2 * k2)
        k4 = f(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def log_grid(g0: float, g1: float, n: int) -> torch.Tensor:
    """n + 1 gamma values from g0 to g1, equally spaced in log(gamma)."""
    return torch.logspace(math.log10(g0), math.log10(g1), n + 1, dtype=F64)


def _nth_derivative(fn, n):
    for _ in range(n):
        fn = (lambda g: (lambda s: torch.func.jvp(g, (s,), (torch.ones_like(s),))[1]))(fn)
    return fn


def taylor_coefficients_nested_jvp(f, t0, y0: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Reference ``[c_0..c_order]`` (``c_k = y^(k)(t0)/k!``) of ``y' = f(t, y)`` by nested JVPs.

    With ``p_k(s) = sum_{j<=k} c_j s^j``, ``g(s) = f(t0 + s, p_k(s))`` agrees with ``y'(t0 + s)`` to
    ``O(s^{k+1})``, so ``c_{k+1} = g^(k)(0) / (k+1)!``.  Slow (nested forward mode); tests only.
    """
    t0 = torch.as_tensor(t0, dtype=F64)
    coeffs = [y0]
    if order == 0:
        return coeffs
    coeffs.append(f(t0, y0))
    for k in range(1, order):
        cs = list(coeffs)

        def g(s, cs=cs):
            y = cs[-1]
            for c in reversed(cs[:-1]):  # Horner: sum_j c_j s^j
                y = c + s * y
            return f(t0 + s, y)

        coeffs.append(_nth_derivative(g, k)(torch.zeros((), dtype=F64)) / math.factorial(k + 1))
    return coeffs


def nested_jvp_eps_derivatives(mix, xbar, gamma, order: int) -> list[torch.Tensor]:
    """``[eps, ..., d^order eps/d gamma^order]`` along the DDIM ODE from the reference above."""
    c = taylor_coefficients_nested_jvp(mix.ddim_rhs, gamma, torch.as_tensor(xbar, dtype=F64), order + 1)
    return [c[k + 1] * math.factorial(k + 1) for k in range(order + 1)]
