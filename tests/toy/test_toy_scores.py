"""Exact log densities, scores and eps of diffused Gaussian mixtures."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import toy
from _toy_helpers import CosineVP
from toy import GaussianMixture

F64 = torch.float64


def full_cov_mixture(schedule, d=3, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, d, d, dtype=F64, generator=g)
    covs = A @ A.transpose(-1, -2) * 0.2 + 0.05 * torch.eye(d, dtype=F64)
    means = torch.randn(K, d, dtype=F64, generator=g)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64)[:K]
    return GaussianMixture(w / w.sum(), means, covs, schedule=schedule)


def iso_mixture(schedule):
    means = torch.tensor([[0.0, 1.0], [1.0, -0.5], [-1.2, 0.3]], dtype=F64)
    return GaussianMixture([0.25, 0.45, 0.30], means, stds=[0.3, 0.5, 0.2], schedule=schedule)


def fd_grad(fun, x, h=1e-5):
    g = torch.zeros_like(x)
    for i in range(x.shape[-1]):
        e = torch.zeros_like(x)
        e[..., i] = h
        g[..., i] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("kind", ["iso", "full"])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_score_matches_finite_differences_of_log_prob(schedule, kind, t):
    mix = iso_mixture(schedule) if kind == "iso" else full_cov_mixture(schedule)
    x = torch.randn(5, mix.dim, dtype=F64, generator=torch.Generator().manual_seed(1))
    sc = mix.score(x, t)
    fd = fd_grad(lambda z: mix.log_prob(z, t), x)
    assert torch.allclose(sc, fd, rtol=1e-6, atol=1e-6)
    # eps = -sigma score
    sigma = float(schedule.sigma(torch.tensor(t, dtype=F64)))
    assert torch.allclose(mix.eps(x, t), -sigma * sc, rtol=1e-12, atol=1e-12)
    assert torch.allclose(mix(x, t), mix.eps(x, t))


def test_score0_and_log_prob0_match_t_zero(schedule):
    mix = full_cov_mixture(schedule)
    x = torch.randn(4, 3, dtype=F64)
    assert torch.allclose(mix.score0(x), fd_grad(mix.log_prob0, x), rtol=1e-6, atol=1e-6)
    assert torch.allclose(mix.log_prob0(x), mix.log_prob(x, 0.0), atol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.2, 0.7])
def test_single_component_closed_forms(schedule, t):
    tt = torch.tensor(t, dtype=F64)
    a, s = schedule.alpha(tt), schedule.sigma(tt)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    m = torch.tensor([0.4, -0.7], dtype=F64)
    # isotropic: N(alpha m, (alpha^2 s0^2 + sigma^2) I)
    s0 = 0.6
    g = toy.single_gaussian(m, s0, schedule=schedule)
    v = a**2 * s0**2 + s**2
    assert torch.allclose(g.score(x, t), -(x - a * m) / v, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g.eps(x, t), s * (x - a * m) / v, rtol=1e-12, atol=1e-12)
    ref = stats.multivariate_normal(mean=(a * m).numpy(), cov=float(v) * np.eye(2)).logpdf(x.numpy())
    assert np.allclose(g.log_prob(x, t).numpy(), ref, rtol=1e-12, atol=1e-12)
    # full covariance
    S = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=F64)
    gf = GaussianMixture([1.0], m[None], S[None], schedule=schedule)
    C = a**2 * S + s**2 * torch.eye(2, dtype=F64)
    expected = -torch.linalg.solve(C, (x - a * m).T).T
    assert torch.allclose(gf.score(x, t), expected, rtol=1e-11, atol=1e-11)


def test_log_prob_matches_scipy_full_covariance_2d(schedule):
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.05, -0.02], [-0.02, 0.4]]], dtype=F64)
    means = torch.tensor([[1.0, -0.5], [-0.3, 0.8]], dtype=F64)
    w = torch.tensor([0.35, 0.65], dtype=F64)
    mix = GaussianMixture(w, means, covs, schedule=schedule)
    x = torch.randn(20, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    for t in [0.0, 0.4, 0.9]:
        tt = torch.tensor(t, dtype=F64)
        a, s = float(schedule.alpha(tt)), float(schedule.sigma(tt))
        ref = np.log(
            sum(
                float(w[k]) * stats.multivariate_normal(a * means[k].numpy(), a * a * covs[k].numpy() + s * s * np.eye(2)).pdf(x.numpy())
                for k in range(2)
            )
        )
        assert np.allclose(mix.log_prob(x, t).numpy(), ref, rtol=1e-10, atol=1e-10), t


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 1.0])
def test_log_prob_integrates_to_one_1d(schedule, t):
    mix = toy.two_mode_1d(means=(-1.0, 1.5), stds=(0.2, 0.5), weights=(0.3, 0.7), schedule=schedule)
    f = lambda z: math.exp(float(mix.log_prob(torch.tensor([[z]], dtype=F64), t)))  # noqa: E731
    total = sum(integrate.quad(f, lo, hi, limit=200, epsabs=1e-12)[0] for lo, hi in [(-12, -1), (-1, 1.5), (1.5, 12)])
    assert abs(total - 1.0) < 1e-8


def test_vector_time_and_dtype(schedule):
    mix = iso_mixture(schedule)
    x = torch.randn(4, 2, dtype=F64)
    tv = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=F64)
    out = mix.eps(x, tv)
    rows = torch.stack([mix.eps(x[i : i + 1], tv[i])[0] for i in range(4)])
    assert torch.allclose(out, rows, rtol=1e-13, atol=1e-13)
    assert torch.allclose(mix.log_prob(x, tv), torch.stack([mix.log_prob(x[i], tv[i]) for i in range(4)]))
    out32 = mix(x.float(), torch.tensor(0.3, dtype=F64))
    assert out32.dtype == torch.float32 and out32.shape == (4, 2)
    assert torch.allclose(out32.double(), mix.eps(x.float().double(), 0.3), atol=1e-6)


def test_far_from_modes_is_finite(schedule):
    mix = toy.nested_mixture(schedule=schedule)
    x = torch.tensor([[30.0, -40.0], [0.0, 0.0]], dtype=F64)
    for fn in (mix.log_prob0, lambda z: mix.log_prob(z, 1e-3), lambda z: mix.score(z, 1e-3)):
        assert torch.isfinite(fn(x)).all()


@pytest.mark.parametrize("gamma", [0.02, 0.3, 1.0, 7.0, 80.0])
def test_eps_gamma_equals_eps_at_t_of_gamma(schedule, gamma):
    for mix in (toy.nested_mixture(schedule=schedule), full_cov_mixture(schedule)):
        xbar = torch.randn(8, mix.dim, dtype=F64, generator=torch.Generator().manual_seed(5)) * (1 + gamma)
        g = torch.tensor(gamma, dtype=F64)
        t = schedule.t_from_gamma(g)
        x = xbar / torch.sqrt(1 + g * g)
        assert torch.allclose(mix.eps_gamma(xbar, g), mix.eps(x, t), rtol=1e-9, atol=1e-10)


def test_eps_gamma_is_schedule_free():
    cos = CosineVP()
    mix = full_cov_mixture(cos)
    xbar = torch.randn(5, 3, dtype=F64)
    for gamma in [0.1, 1.3, 9.0]:
        g = torch.tensor(gamma, dtype=F64)
        x = xbar / torch.sqrt(1 + g * g)
        assert torch.allclose(mix.eps_gamma(xbar, g), mix.eps(x, cos.t_from_gamma(g)), rtol=1e-10, atol=1e-11)


def test_eps_gamma_vector_gamma():
    mix = iso_mixture(None)
    xbar = torch.randn(3, 2, dtype=F64)
    gv = torch.tensor([0.1, 1.0, 4.0], dtype=F64)
    rows = torch.stack([mix.eps_gamma(xbar[i], gv[i]) for i in range(3)])
    assert torch.allclose(mix.eps_gamma(xbar, gv), rows, rtol=1e-13, atol=1e-13)
    # single component closed form: gamma (xbar - m) / (s^2 + gamma^2)
    g1 = toy.single_gaussian([1.0, 2.0], 0.3)
    m = torch.tensor([1.0, 2.0], dtype=F64)
    assert torch.allclose(g1.eps_gamma(xbar, gv), gv[:, None] * (xbar - m) / (0.09 + gv[:, None] ** 2))
