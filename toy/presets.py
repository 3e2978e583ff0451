r"""Named toy distributions (all float64, exact scores through :class:`toy.GaussianMixture`).

* :func:`nested_mixture` -- GENIE paper app. E, eq. (73)-(74): 8 groups of 8 isotropic components in 2-D.
* :func:`lattice_9` -- Dockhorn thesis eq. (2.100) (and (4.29)): 9 modes on a 3x3 lattice rotated by 45
  degrees, std 0.04 (= 1/25), ``a = 2^{-1/2}``.
* :func:`single_point`, :func:`single_gaussian`, :func:`two_mode_1d` -- small analytic test cases.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from taylorsolve.errors import TaylorSolveError

from .mixture import GaussianMixture

__all__ = ["UNIT_DIRECTIONS_8", "nested_mixture", "single_point", "single_gaussian", "two_mode_1d", "lattice_9"]

_R = 1.0 / math.sqrt(2.0)
#: mu_1..mu_8 of GENIE app. E: the four axis directions, then the four diagonals (in the paper's order).
UNIT_DIRECTIONS_8 = torch.tensor(
    [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [_R, _R], [_R, -_R], [-_R, _R], [-_R, -_R]],
    dtype=torch.float64,
)


def nested_mixture(sigma: float = 1e-2, s1: float = 0.9, s2: float = 0.2, *, schedule: Any = None) -> GaussianMixture:
    r"""GENIE app. E toy distribution (eq. (73)-(74)), 2-D, 64 components of weight 1/64:

        p_0(x) = 1/8 sum_{i=1}^8 p^{(i)}(x),   p^{(i)}(x) = 1/8 sum_{j=1}^8 N(x; s1 mu_i + s1 s2 mu_j, sigma^2 I),

    ``sigma = 1e-2``, ``s1 = 0.9``, ``s2 = 0.2``, ``mu_1..mu_8`` = :data:`UNIT_DIRECTIONS_8`.  Component
    ``8 (i-1) + (j-1)`` has mean ``s1 mu_i + s1 s2 mu_j``.
    """
    mu = UNIT_DIRECTIONS_8
    means = (s1 * mu[:, None, :] + s1 * s2 * mu[None, :, :]).reshape(64, 2)
    weights = torch.full((64,), 1.0 / 64, dtype=torch.float64)
    return GaussianMixture(weights, means, stds=sigma, schedule=schedule)


def single_point(x0: Any, *, schedule: Any = None) -> GaussianMixture:
    r"""``p_0 = delta(x - x0)`` (GENIE app. C.2.3): ``p_t = N(alpha_t x0, sigma_t^2 I)``,
    ``eps(x, t) = (x - alpha_t x0)/sigma_t``, ``eps_gamma = (xbar - x0)/gamma``; along the DDIM ODE
    ``d eps / d gamma = 0`` and trajectories are straight lines.  Valid for ``t > 0`` only."""
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    if x0.ndim == 0:
        x0 = x0.reshape(1)
    if x0.ndim != 1:
        raise TaylorSolveError(f"x0 must be a point [d], got shape {tuple(x0.shape)}")
    return GaussianMixture([1.0], x0[None, :], stds=0.0, schedule=schedule, allow_point_masses=True)


def single_gaussian(mean: Any, std: Any, *, schedule: Any = None) -> GaussianMixture:
    r"""``p_0 = N(mean, std^2 I)``: ``eps_gamma = gamma (xbar - mean)/(std^2 + gamma^2)`` and the DDIM ODE
    has the closed-form solution ``xbar(gamma) = mean + (xbar0 - mean) sqrt((std^2+gamma^2)/(std^2+gamma0^2))``."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    if mean.ndim == 0:
        mean = mean.reshape(1)
    if mean.ndim != 1:
        raise TaylorSolveError(f"mean must be a point [d], got shape {tuple(mean.shape)}")
    return GaussianMixture([1.0], mean[None, :], stds=std, schedule=schedule)


def two_mode_1d(
    means: tuple[float, float] = (-1.0, 1.0),
    stds: tuple[float, float] = (0.2, 0.2),
    weights: tuple[float, float] = (0.5, 0.5),
    *,
    schedule: Any = None,
) -> GaussianMixture:
    r"""1-D two-mode mixture ``w_1 N(m_1, s_1^2) + w_2 N(m_2, s_2^2)``; default ``0.5 N(-1, 0.2^2) + 0.5 N(1, 0.2^2)``."""
    return GaussianMixture(list(weights), torch.tensor(means, dtype=torch.float64)[:, None], stds=list(stds), schedule=schedule)


def lattice_9(std: float = 0.04, a: float = 2.0 ** -0.5, *, schedule: Any = None) -> GaussianMixture:
    r"""Dockhorn thesis eq. (2.100): ``1/9 sum_k N(x; mu_k, 0.04^2 I_2)``, ``a = 2^{-1/2}``, with

        mu_1 = (-a, 0),    mu_2 = (-a/2, a/2),  mu_3 = (0, a),
        mu_4 = (-a/2, -a/2), mu_5 = (0, 0),     mu_6 = (a/2, a/2),
        mu_7 = (0, -a),    mu_8 = (a/2, -a/2),  mu_9 = (a, 0),

    a 3x3 lattice rotated by 45 degrees (a diamond); neighbouring modes are ``a/sqrt(2) = 0.5`` apart,
    i.e. 12.5 standard deviations (thesis sec. 4.4.5).
    """
    h = a / 2.0
    means = torch.tensor(
        [[-a, 0.0], [-h, h], [0.0, a], [-h, -h], [0.0, 0.0], [h, h], [0.0, -a], [h, -h], [a, 0.0]],
        dtype=torch.float64,
    )
    weights = torch.full((9,), 1.0 / 9, dtype=torch.float64)
    return GaussianMixture(weights, means, stds=std, schedule=schedule)
