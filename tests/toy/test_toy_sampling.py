"""Sample moments of p_0 and p_t against the exact mixture moments."""
import math

import torch

import toy
from toy import GaussianMixture

F64 = torch.float64


def moments_ok(x, mean, cov, n_sigma=5.0):
    """Sample mean / covariance within n_sigma standard errors (Gaussian-moment approximation)."""
    n = x.shape[0]
    mu_hat = x.mean(0)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert ((mu_hat - mean).abs() <= n_sigma * se_mean).all(), (mu_hat, mean)
    cov_hat = torch.cov(x.T)
    # var of a sample covariance entry ~ (C_ii C_jj + C_ij^2)/n (Gaussian); mixtures have heavier tails: x2
    diag = torch.diagonal(cov)
    se_cov = 2 * torch.sqrt((diag[:, None] * diag[None, :] + cov**2) / n)
    assert ((cov_hat - cov).abs() <= n_sigma * se_cov).all(), (cov_hat, cov)


def asym_full_mixture(schedule=None):
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.05, -0.02], [-0.02, 0.4]]], dtype=F64)
    means = torch.tensor([[1.0, -0.5], [-0.3, 0.8]], dtype=F64)
    return GaussianMixture([0.35, 0.65], means, covs, schedule=schedule)


def test_mixture_moment_formulas_are_independent_of_sampling():
    mix = asym_full_mixture()
    w = torch.tensor([0.35, 0.65], dtype=F64)
    m = mix.means
    mu = w @ m
    assert torch.allclose(mix.mean(), mu)
    second = sum(w[k] * (mix.covariances[k] + torch.outer(m[k], m[k])) for k in range(2))
    assert torch.allclose(mix.covariance(), second - torch.outer(mu, mu))
    assert torch.allclose(mix.covariances[0], torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64))


def test_sample_moments_full_and_iso():
    g = torch.Generator().manual_seed(0)
    for mix in (asym_full_mixture(), toy.nested_mixture(), toy.two_mode_1d(weights=(0.2, 0.8))):
        x = mix.sample(20000, generator=g)
        assert x.shape == (20000, mix.dim) and x.dtype == F64
        moments_ok(x, mix.mean(), mix.covariance())


def test_sample_component_frequencies_and_spread():
    mix = toy.lattice_9()
    x = mix.sample(9000, generator=torch.Generator().manual_seed(1))
    d = torch.cdist(x, mix.means)  # [n, 9]
    nearest = d.argmin(1)
    counts = torch.bincount(nearest, minlength=9).double()
    assert ((counts - 1000).abs() < 5 * math.sqrt(9000 * (1 / 9) * (8 / 9))).all()
    # within-mode squared distance / (2 std^2) ~ chi2_2 / 2 with mean 1
    r2 = d.min(1).values ** 2 / (2 * 0.04**2)
    assert abs(float(r2.mean()) - 1.0) < 0.05


def test_sample_reproducible_with_generator():
    mix = asym_full_mixture()
    a = mix.sample(10, generator=torch.Generator().manual_seed(7))
    b = mix.sample(10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sample_t_matches_diffused_moments(schedule):
    mix = asym_full_mixture(schedule)
    g = torch.Generator().manual_seed(2)
    for t in [0.2, 0.5, 1.0]:
        tt = torch.tensor(t, dtype=F64)
        a, s = schedule.alpha(tt), schedule.sigma(tt)
        x = mix.sample_t(20000, t, generator=g)
        moments_ok(x, a * mix.mean(), a * a * mix.covariance() + s * s * torch.eye(2, dtype=F64))


def test_sample_t_fits_log_prob(schedule):
    """Samples from p_t have higher average log p_t than samples from p_0 pushed to a wrong time."""
    mix = toy.lattice_9(schedule=schedule)
    g = torch.Generator().manual_seed(3)
    x = mix.sample_t(4000, 0.3, generator=g)
    ll_right = mix.log_prob(x, 0.3).mean()
    ll_wrong = mix.log_prob(x, 0.15).mean()
    assert ll_right > ll_wrong
