"""Toy distributions with exact scores for testing diffusion samplers built on :mod:`taylorsolve`.

Gaussian mixtures diffuse in closed form under VP diffusion, so their score, eps-prediction and every
total derivative along the DDIM ODE (eq. (6)) are exact; see :mod:`toy.mixture`.  Under critically-damped
Langevin diffusion they stay Gaussian mixtures in the joint (x, v) space: :mod:`toy.cld`.
"""
from .mixture import GaussianMixture, legendre_polynomials
from .presets import UNIT_DIRECTIONS_8, lattice_9, nested_mixture, single_gaussian, single_point, two_mode_1d
from .cld import CLDMixture

__all__ = [
    "GaussianMixture",
    "CLDMixture",
    "nested_mixture",
    "single_point",
    "single_gaussian",
    "two_mode_1d",
    "lattice_9",
    "UNIT_DIRECTIONS_8",
    "legendre_polynomials",
]
