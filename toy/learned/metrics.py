r"""Exact sample-quality measures against a toy ``p_0`` (small local helpers).

``toy/experiments/metrics.py`` did not exist when this was written, so :mod:`toy.learned` keeps its
own: the fraction of samples within ``h sigma`` of a mode (``sigma`` = the components' std), the mean
log-density under ``p_0`` (``mixture.log_prob0``) and a sliced 2-Wasserstein distance to fresh
``p_0`` samples.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["mode_fractions", "mean_log_prob0", "sliced_wasserstein", "quality"]


def mode_fractions(x: torch.Tensor, mixture: Any, hs: Sequence[int] = (1, 2, 3, 4)) -> dict[str, float]:
    """``frac_{h}sigma``: fraction of samples within ``h * sigma`` of the nearest component mean.

    ``sigma`` is the largest component std (all equal for :func:`toy.nested_mixture`).  For exact
    ``p_0`` samples of an isotropic 2-D component the fraction is ``1 - exp(-h^2/2)`` (0.39, 0.86,
    0.99, 0.9997) up to the overlap of neighbouring components.
    """
    x = x.to(torch.float64)
    stds = mixture.stds
    sigma = float(stds.max()) if stds is not None else float(mixture.covariances.diagonal(dim1=-2, dim2=-1).max().sqrt())
    dist = torch.cdist(x, mixture.means).min(dim=-1).values
    return {f"frac_{h}sigma": float((dist <= h * sigma).double().mean()) for h in hs}


def mean_log_prob0(x: torch.Tensor, mixture: Any, clip: float = -50.0) -> float:
    """Mean of ``max(log p_0(x), clip)`` (clipped so a few far-away samples do not dominate)."""
    return float(mixture.log_prob0(x.to(torch.float64)).clamp_min(clip).mean())


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance ``sqrt(mean_dirs W_2^2(proj x, proj y))`` (equal sample sizes)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(n_proj, x.shape[1], dtype=torch.float64, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    px, py = (x @ d.T).sort(dim=0).values, (y @ d.T).sort(dim=0).values
    return float(((px - py) ** 2).mean().sqrt())


def quality(x: torch.Tensor, mixture: Any, reference: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """All measures for samples ``x`` (``reference``: fresh ``p_0`` samples for the sliced distance)."""
    out = mode_fractions(x, mixture)
    out["mean_log_p0"] = mean_log_prob0(x, mixture)
    out["sliced_w2"] = sliced_wasserstein(x, reference, seed=seed)
    return out
