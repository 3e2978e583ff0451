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


# ------------------------------------------------------------------------------------------------
# the ODE zoo: right-hand sides written with plain torch, used to check the compiled path against the
# interpreted jets (and the benchmarks' problems)
# ------------------------------------------------------------------------------------------------
def pendulum(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)


def lorenz(t, y, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    x, yy, z = y.unbind(-1)
    return torch.stack([sigma * (yy - x), x * (rho - z) - yy, x * yy - beta * z], dim=-1)


def van_der_pol(mu: float):
    def f(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=-1)

    return f


def lotka_volterra(t, y):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([1.1 * x - 0.4 * x * z, 0.1 * x * z - 0.4 * z], dim=-1)


_W = torch.tensor([[0.3, -1.2, 0.5], [0.8, 0.1, -0.4], [-0.6, 0.7, 0.2]], dtype=torch.float64)


def tanh_network(t, y):
    return torch.tanh(y @ _W.T) - torch.sigmoid(y) * torch.cos(t) + 0.1 * torch.nn.functional.silu(y)


def softmax_rhs(t, y):
    return torch.softmax(y, dim=-1) - 0.5 * y + 0.1 * torch.logsumexp(y, dim=-1, keepdim=True) * torch.exp(-t)


def piecewise(t, y):
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([torch.where(a > 0, -a * b, a.abs() * c), torch.clamp(b, -2.0, 2.0) - torch.relu(c) * 0.3,
                        torch.maximum(a, c) - 0.5 * c], dim=-1)


def special(t, y):
    a, b = y[..., 0], y[..., 1]
    return torch.stack([torch.erf(a) * torch.atan2(b, a + 3.0) + torch.log1p(a * a) * torch.sinh(0.1 * t),
                        torch.hypot(a, b) * torch.expm1(-b * b) + torch.asinh(a) - torch.rsqrt(2.0 + b * b) * t**2], dim=-1)


def kepler_vector(t, y):
    q, p = y[..., :2], y[..., 2:]
    r2 = (q * q).sum(-1, keepdim=True)
    return torch.cat([p, -q * r2 ** (-1.5)], dim=-1)


ZOO = {
    "kepler": (kepler_rhs, [0.5, 0.0, 0.0, 3.0**0.5]),
    "kepler_vector": (kepler_vector, [1.0, 0.1, 0.2, 0.9]),
    "pendulum": (pendulum, [1.2, -0.4]),
    "lorenz": (lorenz, [1.0, 1.0, 1.0]),
    "van_der_pol": (van_der_pol(2.0), [1.5, -0.3]),
    "lotka_volterra": (lotka_volterra, [1.3, 0.7]),
    "tanh_network": (tanh_network, [0.3, -0.8, 1.1]),
    "softmax": (softmax_rhs, [0.3, -1.0, 2.0, 0.5]),
    "piecewise": (piecewise, [0.4, -0.3, 0.8]),
    "special": (special, [0.4, -0.7]),
}
