"""ODEs with closed-form solutions, shared by the core tests (float64)."""
from __future__ import annotations

import math

import torch


def linear_system(A: torch.Tensor, v: torch.Tensor, omega: float):
    """y' = A y + v sin(omega t); exact solution through the augmented linear system.

    With z = (y, sin(omega t), cos(omega t)): z' = M z, M = [[A, v, 0], [0, 0, omega], [0, -omega, 0]],
    so y(t) = (expm(M (t - t0)) z0)[:n].
    """
    n = A.shape[0]
    M = torch.zeros(n + 2, n + 2, dtype=torch.float64)
    M[:n, :n] = A
    M[:n, n] = v
    M[n, n + 1] = omega
    M[n + 1, n] = -omega

    def f(t, y):
        return y @ A.T + v * torch.sin(omega * t)

    def exact(y0, t0):
        z0 = torch.cat([y0, torch.tensor([math.sin(omega * t0), math.cos(omega * t0)], dtype=torch.float64)])

        def y(t):
            return (torch.linalg.matrix_exp(M * (float(t) - t0)) @ z0)[:n]

        return y

    return f, exact


def kepler_rhs(t, y):
    x, yy, vx, vy = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    r3 = (x * x + yy * yy) ** 1.5
    return torch.stack([vx, vy, -x / r3, -yy / r3], dim=-1)


def kepler_initial(e: float) -> torch.Tensor:
    """Perihelion start, semi-major axis 1, GM = 1: period 2 pi."""
    return torch.tensor([1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))], dtype=torch.float64)


def kepler_exact(e: float, t: float) -> torch.Tensor:
    """Exact Kepler orbit at time t: Newton on Kepler's equation M = E - e sin E (M = t)."""
    M = math.fmod(t, 2 * math.pi)
    E = M if e < 0.8 else math.pi
    for _ in range(50):
        E -= (E - e * math.sin(E) - M) / (1 - e * math.cos(E))
    b = math.sqrt(1 - e * e)
    d = 1 - e * math.cos(E)
    return torch.tensor(
        [math.cos(E) - e, b * math.sin(E), -math.sin(E) / d, b * math.cos(E) / d], dtype=torch.float64
    )


def energy(y):
    return 0.5 * (y[..., 2] ** 2 + y[..., 3] ** 2) - 1 / torch.sqrt(y[..., 0] ** 2 + y[..., 1] ** 2)


def angular_momentum(y):
    return y[..., 0] * y[..., 3] - y[..., 1] * y[..., 2]
