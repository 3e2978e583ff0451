r"""Exact quality measures of samples against a Gaussian mixture ``p_0`` (toy experiments).

* :func:`mode_fractions` -- fraction of samples within ``h * sigma`` of a mode for ``h = 1..4``.  For
  exact samples of an isotropic 2-D mixture with well separated modes the expected fraction is the
  chi-square CDF ``1 - exp(-h^2/2)`` (0.393, 0.865, 0.989, 0.9997); :func:`ideal_mode_fractions`.
* :func:`mean_log_prob` -- mean ``log p_0(x)`` (exact; higher is better).
* :func:`sliced_wasserstein` -- sliced 2-Wasserstein distance to reference samples (fixed random
  directions, 1-D optimal transport by sorting / quantiles).
* :func:`mmd_rbf` -- unbiased squared MMD with a Gaussian kernel (a second sample distance).
* :func:`quality` -- all of the above in one dict (the columns of the experiment tables).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

F64 = torch.float64

__all__ = [
    "mode_fractions",
    "ideal_mode_fractions",
    "mean_log_prob",
    "sliced_wasserstein",
    "mmd_rbf",
    "quality",
    "QUALITY_COLUMNS",
    "H_VALUES",
]

H_VALUES = (1, 2, 3, 4)
QUALITY_COLUMNS = tuple(f"frac_{h}sigma" for h in H_VALUES) + ("mean_logp0", "sliced_w2", "mmd2")


def _as2d(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x).to(F64)
    if x.ndim != 2:
        raise ValueError(f"samples must be [n, d], got shape {tuple(x.shape)}")
    return x


def mode_fractions(x: Any, means: Any, sigma: Any, hs: Sequence[float] = H_VALUES) -> dict[float, float]:
    """``{h: fraction of rows of x within h * sigma (Euclidean) of the nearest mode}``.

    ``sigma``: a scalar or one std per mode ``[K]`` (the distance to mode k is compared to h sigma_k).
    """
    x = _as2d(x)
    m = _as2d(means)
    s = torch.as_tensor(sigma, dtype=F64).reshape(-1)
    if x.shape[0] == 0:
        return {h: float("nan") for h in hs}
    dist = torch.cdist(x, m)  # [n, K]
    z = (dist / s).min(dim=1).values  # distance in units of the mode's std
    return {h: float((z <= h).double().mean()) for h in hs}


def ideal_mode_fractions(dim: int = 2, hs: Sequence[float] = H_VALUES) -> dict[float, float]:
    """Expected :func:`mode_fractions` for exact samples of well separated ``N(m_k, sigma^2 I_dim)`` modes:
    the chi-square CDF ``P(chi2_dim <= h^2)`` (``1 - exp(-h^2/2)`` in 2-D)."""
    from scipy.stats import chi2

    return {h: float(chi2.cdf(h * h, dim)) for h in hs}


def mean_log_prob(mix: Any, x: Any, clip: float | None = None) -> float:
    """Mean exact ``log p_0(x)`` over the rows of ``x``; with ``clip``, of ``max(log p_0(x), clip)``
    (so that a few far-away samples of a poor model do not dominate the mean)."""
    lp = mix.log_prob0(_as2d(x))
    if clip is not None:
        lp = lp.clamp_min(clip)
    return float(lp.mean())


def _directions(dim: int, n_proj: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_proj, dim, dtype=F64, generator=g)
    return v / v.norm(dim=1, keepdim=True)


def _quantiles(p: torch.Tensor, n: int) -> torch.Tensor:
    """Quantile functions of the columns of ``p [m, P]`` at the ``n`` mid-points ``(i + 1/2)/n``."""
    ps = torch.sort(p, dim=0).values
    m = ps.shape[0]
    if m == n:
        return ps
    q = (torch.arange(n, dtype=F64) + 0.5) / n * m - 0.5  # fractional index into the sorted samples
    lo = q.floor().clamp(0, m - 1).long()
    hi = (lo + 1).clamp(max=m - 1)
    w = (q - lo.to(F64)).clamp(0, 1).unsqueeze(1)
    return ps[lo] * (1 - w) + ps[hi] * w


def sliced_wasserstein(x: Any, y: Any, n_proj: int = 128, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance ``sqrt(mean_theta W2^2(theta.x, theta.y))`` (fixed directions)."""
    x, y = _as2d(x), _as2d(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError("x and y must have the same dimension")
    th = _directions(x.shape[1], n_proj, seed)
    px, py = x @ th.T, y @ th.T
    n = max(px.shape[0], py.shape[0])
    qx, qy = _quantiles(px, n), _quantiles(py, n)
    return float(((qx - qy) ** 2).mean().sqrt())


def mmd_rbf(x: Any, y: Any, bandwidth: float | Sequence[float] = (0.02, 0.1, 0.5), max_n: int = 1000) -> float:
    """Unbiased squared MMD with a sum of Gaussian kernels ``exp(-|a-b|^2 / (2 bw^2))`` (first ``max_n`` rows)."""
    x, y = _as2d(x)[:max_n], _as2d(y)[:max_n]
    bws = [bandwidth] if isinstance(bandwidth, (int, float)) else list(bandwidth)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * bw * bw)) for bw in bws)

    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        return float("nan")
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def quality(mix: Any, x: Any, reference: Any | None = None, *, n_proj: int = 128, seed: int = 0,
            mmd: bool = True, log_prob_clip: float | None = None) -> dict[str, float]:
    """All quality measures of samples ``x`` against the isotropic mixture ``mix`` (:data:`QUALITY_COLUMNS`).

    ``reference``: fresh samples of ``p_0`` for the sample distances (default: ``max(len(x), 2000)``
    drawn with ``seed + 1``).
    """
    x = _as2d(x)
    stds = mix.stds if mix.stds is not None else torch.sqrt(torch.linalg.eigvalsh(mix.covariances)[:, -1])
    fr = mode_fractions(x, mix.means, stds)
    if reference is None:
        reference = mix.sample(max(x.shape[0], 2000), generator=torch.Generator().manual_seed(seed + 1))
    out = {f"frac_{h}sigma": fr[h] for h in H_VALUES}
    out["mean_logp0"] = mean_log_prob(mix, x, clip=log_prob_clip)
    out["sliced_w2"] = sliced_wasserstein(x, reference, n_proj=n_proj, seed=seed)
    out["mmd2"] = mmd_rbf(x, reference) if mmd else float("nan")
    return out
