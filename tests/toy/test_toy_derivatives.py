"""Total derivatives d^k eps / d gamma^k along the DDIM ODE, closed forms for one Gaussian, single points."""
import math

import numpy as np
import pytest
import torch
from scipy import special

import taylorsolve
import toy
from _toy_helpers import (
    central_differences,
    log_grid,
    nested_jvp_eps_derivatives,
    rk4,
    rk4_grid,
    taylor_coefficients_nested_jvp,
)
from toy import GaussianMixture, legendre_polynomials

F64 = torch.float64


def smooth_iso():
    means = torch.tensor([[0.0, 1.0], [1.0, -0.5], [-1.2, 0.3]], dtype=F64)
    return GaussianMixture([0.25, 0.45, 0.30], means, stds=[0.3, 0.5, 0.2])


def full3():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, 3, dtype=F64, generator=g)
    covs = A @ A.transpose(-1, -2) * 0.2 + 0.05 * torch.eye(3, dtype=F64)
    return GaussianMixture([0.2, 0.5, 0.3], torch.randn(3, 3, dtype=F64, generator=g), covs)


def full_single():
    S = torch.tensor([[0.5, 0.2, 0.0], [0.2, 0.3, -0.1], [0.0, -0.1, 0.05]], dtype=F64)
    return GaussianMixture([1.0], torch.tensor([[0.3, -0.2, 1.0]], dtype=F64), S[None])


def trajectory_fd(mix, xbar0, gamma0, h, steps_per_h=40):
    """eps along the accurately solved DDIM ODE at gamma0 + j h, j = -3..3; then derivatives 1..3."""
    vals = []
    for j in range(-3, 4):
        y = xbar0 if j == 0 else rk4(mix.ddim_rhs, gamma0, xbar0, gamma0 + j * h, steps_per_h * abs(j))
        vals.append(mix.eps_gamma(y, gamma0 + j * h))
    return [central_differences(vals, h, k) for k in (1, 2, 3)]


def relerr(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ------------------------------------------------------------------------------ reference machinery
def test_nested_jvp_reference_on_known_odes():
    # y' = y^2, y(0) = 1: y = 1/(1 - t), c_k = 1
    c = taylor_coefficients_nested_jvp(lambda t, y: y * y, 0.0, torch.ones(2, dtype=F64), 4)
    assert all(torch.allclose(ck, torch.ones(2, dtype=F64), rtol=1e-14) for ck in c)
    # y' = -2 t y, y(t0) = exp(-t0^2): derivatives of exp(-t^2) = (-1)^k H_k(t) exp(-t^2)
    t0 = 0.7
    c = taylor_coefficients_nested_jvp(lambda t, y: -2 * t * y, t0, torch.tensor([math.exp(-t0**2)], dtype=F64), 4)
    for k, ck in enumerate(c):
        exact = (-1) ** k * special.eval_hermite(k, t0) * math.exp(-t0**2) / math.factorial(k)
        assert abs(float(ck) - exact) < 1e-13, k


def test_legendre_polynomials():
    z = torch.linspace(-1, 1, 11, dtype=F64)
    ps = legendre_polynomials(z, 7)
    for n, p in enumerate(ps):
        assert np.allclose(p.numpy(), special.eval_legendre(n, z.numpy()), atol=1e-14)


# ------------------------------------------------------------------------------ mixtures: derivatives vs FD
@pytest.mark.parametrize("which, gamma0", [("iso", 0.4), ("iso", 2.0), ("full", 0.6), ("nested", 1.0), ("nested", 0.3)])
def test_derivatives_match_finite_differences_along_the_ode(which, gamma0):
    mix = {"iso": smooth_iso, "full": full3, "nested": toy.nested_mixture}[which]()
    xbar0 = torch.randn(3, mix.dim, dtype=F64, generator=torch.Generator().manual_seed(2)) * (1 + gamma0) * 0.7
    ders = nested_jvp_eps_derivatives(mix, xbar0, gamma0, 3)
    assert torch.allclose(ders[0], mix.eps_gamma(xbar0, gamma0), rtol=1e-14, atol=1e-14)
    fds = trajectory_fd(mix, xbar0, gamma0, h=0.005 * gamma0)  # FD error ~h^4: <1e-6 here
    for k in (1, 2, 3):
        assert relerr(fds[k - 1], ders[k]) < 1e-5, (k, fds[k - 1], ders[k])


def test_first_derivative_is_the_jvp_of_eq_12():
    """d eps/d gamma = J_xbar eps . eps + d eps/d gamma|_xbar (chain rule along d xbar/d gamma = eps)."""
    mix = full3()
    xbar = torch.randn(4, 3, dtype=F64)
    g = torch.tensor(0.8, dtype=F64)
    eps = mix.eps_gamma(xbar, g)
    _, total = torch.func.jvp(mix.eps_gamma, (xbar, g), (eps, torch.ones_like(g)))
    assert torch.allclose(nested_jvp_eps_derivatives(mix, xbar, g, 1)[1], total, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ one Gaussian: closed forms
@pytest.mark.parametrize("make", [lambda: toy.single_gaussian([0.3, -0.2], 0.5), full_single])
@pytest.mark.parametrize("gamma0", [0.05, 0.7, 5.0])
def test_closed_form_derivatives_match_nested_jvp(make, gamma0):
    mix = make()
    xbar = torch.randn(4, mix.dim, dtype=F64, generator=torch.Generator().manual_seed(3))
    cf = mix.eps_derivatives(xbar, gamma0, 4, backend="closed_form")
    ref = nested_jvp_eps_derivatives(mix, xbar, gamma0, 4)
    for k in range(5):
        assert relerr(cf[k], ref[k]) < 1e-11, k


def test_closed_form_derivatives_match_fd_of_closed_form_solution():
    """Independent of any AD: differentiate eps along the closed-form trajectory numerically."""
    mix = full_single()
    xbar0, g0, h = torch.tensor([[0.9, -1.0, 0.4]], dtype=F64), 0.5, 0.005  # FD error ~h^4, < 4e-7 here
    vals = [mix.eps_gamma(mix.ddim_solution(xbar0, g0, g0 + j * h), g0 + j * h) for j in range(-3, 4)]
    cf = mix.eps_derivatives(xbar0, g0, 3, backend="closed_form")
    for k in (1, 2, 3):
        assert relerr(central_differences(vals, h, k), cf[k]) < 1e-5, k


@pytest.mark.parametrize("make", [lambda: toy.single_gaussian([0.3, -0.2], 0.5), full_single])
def test_single_gaussian_closed_form_solution_vs_rk4(make):
    mix = make()
    xbar1 = torch.randn(5, mix.dim, dtype=F64, generator=torch.Generator().manual_seed(4)) * 50
    g1, g_end = 50.0, 0.02
    y = rk4_grid(mix.ddim_rhs, log_grid(g1, g_end, 600), xbar1)  # error ~2e-10 (checked: ~h^4)
    exact = mix.ddim_solution(xbar1, g1, g_end)
    assert relerr(y, exact) < 1e-9
    # the whole path: gamma as a 1-D tensor
    gs = torch.tensor([g1, 10.0, g_end], dtype=F64)
    path = mix.ddim_solution(xbar1, g1, gs)
    assert path.shape == (3, *xbar1.shape) and torch.allclose(path[0], xbar1) and torch.allclose(path[2], exact)


def test_isotropic_gaussian_lines_are_straight_but_ddim_is_not_exact():
    m = torch.tensor([0.3, -0.2], dtype=F64)
    mix = toy.single_gaussian(m, 0.5)
    xbar1, g1 = torch.tensor([[12.0, 5.0]], dtype=F64), 20.0
    gs = torch.tensor([10.0, 1.0, 0.3, 0.01], dtype=F64)
    path = mix.ddim_solution(xbar1, g1, gs) - m
    d0 = (xbar1 - m) / (xbar1 - m).norm()
    for p in path:  # direction of xbar - m is preserved
        assert torch.allclose(p / p.norm(), d0, atol=1e-13)
    # ... but not linearly in gamma: d eps / d gamma != 0 and one Euler (DDIM) step misses
    ders = mix.eps_derivatives(xbar1, g1, 1, backend="closed_form")
    assert float(ders[1].abs().max()) > 1e-6
    euler = xbar1 + (0.01 - g1) * mix.eps_gamma(xbar1, g1)
    assert float((euler - mix.ddim_solution(xbar1, g1, 0.01)).abs().max()) > 1e-3


def test_standard_normal_data_keeps_x_constant():
    """N(0, I) data: xbar(gamma) sqrt(1+gamma0^2)/sqrt(1+gamma^2) = xbar0, i.e. x_t does not move."""
    mix = toy.single_gaussian([0.0, 0.0, 0.0], 1.0)
    xbar0 = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64) * math.sqrt(1 + 3.0**2)
    for g in (2.0, 0.5, 0.0):
        x = mix.ddim_solution(xbar0, 3.0, g) / math.sqrt(1 + g * g)
        assert torch.allclose(x, xbar0 / math.sqrt(10.0), atol=1e-14)


# ------------------------------------------------------------------------------ single point
def test_single_point_eps_and_zero_derivatives(schedule):
    x0 = torch.tensor([0.5, -1.0], dtype=F64)
    mix = toy.single_point(x0, schedule=schedule)
    xbar = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(5)) * 3
    for g in (0.05, 1.0, 30.0):
        assert torch.allclose(mix.eps_gamma(xbar, g), (xbar - x0) / g, rtol=1e-13, atol=1e-13)
        for backend in ("reference", "closed_form"):
            ders = (nested_jvp_eps_derivatives(mix, xbar, g, 4) if backend == "reference"
                    else mix.eps_derivatives(xbar, g, 4, backend=backend))
            for k in range(1, 5):
                assert float(ders[k].abs().max()) < 1e-9 * float(ders[0].abs().max()) / g**k, (backend, k)
    t = torch.tensor(0.4, dtype=F64)
    x = torch.randn(3, 2, dtype=F64)
    assert torch.allclose(mix.eps(x, t), (x - schedule.alpha(t) * x0) / schedule.sigma(t), rtol=1e-12)


def test_single_point_trajectories_are_straight_lines():
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    mix = toy.single_point(x0)
    xbar1, g1 = torch.tensor([[40.0, 10.0, -25.0]], dtype=F64), 50.0
    y = rk4(mix.ddim_rhs, g1, xbar1, 0.01, 50)
    line = x0 + (xbar1 - x0) * (0.01 / g1)
    assert torch.allclose(y, line, rtol=1e-12, atol=1e-12)
    assert torch.allclose(mix.ddim_solution(xbar1, g1, 0.01), line, rtol=1e-14, atol=1e-14)
    # one DDIM (Euler) step from gamma = 50 to 0 lands exactly on x0
    euler = xbar1 + (0.0 - g1) * mix.eps_gamma(xbar1, g1)
    assert torch.allclose(euler, x0.expand_as(euler), atol=1e-12)


# ------------------------------------------------------------------------------ the core's backends
def small_iso_gaussian():
    return toy.single_gaussian([0.3, -0.2], 0.5)


# the symbolic backend expands every component, so it only gets the small cases (seconds, not minutes)
CORE_CASES = [
    ("autodiff", smooth_iso, 3),
    ("autodiff", full3, 3),
    ("autodiff", full_single, 3),
    ("taylor_mode", smooth_iso, 4),
    ("taylor_mode", full3, 4),
    ("taylor_mode", full_single, 7),
    ("taylor_mode", toy.nested_mixture, 4),
    ("symbolic", small_iso_gaussian, 3),
    ("symbolic", toy.two_mode_1d, 2),
]


@pytest.mark.parametrize("backend, make, order", CORE_CASES, ids=[f"{b}-{m.__name__}-{o}" for b, m, o in CORE_CASES])
def test_core_backends_match_reference(backend, make, order):
    if backend not in taylorsolve.available_backends():
        pytest.skip(f"core backend {backend!r} not available yet")
    mix = make()
    xbar = torch.randn(2, mix.dim, dtype=F64, generator=torch.Generator().manual_seed(6))
    g = torch.tensor(0.7, dtype=F64)
    got = mix.eps_derivatives(xbar, g, order, backend=backend)
    assert len(got) == order + 1
    ref = nested_jvp_eps_derivatives(mix, xbar, g, min(order, 4))  # 2^k cost: stop at 4
    for k in range(len(ref)):
        assert relerr(got[k], ref[k]) < 1e-10, (backend, k)
    if mix.n_components == 1:
        cf = mix.eps_derivatives(xbar, g, order, backend="closed_form")
        for k in range(order + 1):
            assert relerr(got[k], cf[k]) < 1e-9, (backend, k)


# ------------------------------------------------------------------------------ eps(x, t) under torch.func
def test_eps_xt_is_differentiable_and_matches_eq_12(schedule):
    """eq. (10)-(12): d eps/d gamma = J_x eps . (eps/sqrt(1+g^2) - g x/(1+g^2)) + d eps/dt . dt/d gamma,
    one forward-mode JVP of eps(x, t) through the schedule, vs the (xbar, gamma) derivative."""
    mix = full3()
    mix._schedule = schedule
    g = torch.tensor(0.9, dtype=F64)
    xbar = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(8))
    x = xbar / torch.sqrt(1 + g * g)
    t, dt_dg = torch.func.jvp(schedule.t_from_gamma, (g,), (torch.ones_like(g),))
    eps = mix.eps(x, t)
    dx = eps / torch.sqrt(1 + g * g) - g * x / (1 + g * g)
    _, total = torch.func.jvp(mix.eps, (x, t), (dx, dt_dg))
    ref = nested_jvp_eps_derivatives(mix, xbar, g, 1)[1]
    assert relerr(total, ref) < 1e-9


def test_default_schedule_is_the_linear_vp_schedule(schedule):
    mix = toy.two_mode_1d()
    assert type(mix.schedule).__name__ == "LinearVPSchedule"
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    la2 = -(0.1 * t + 19.9 * t * t / 2)
    assert torch.allclose(mix.schedule.alpha(t), torch.exp(la2 / 2), rtol=1e-13)
    x = torch.randn(3, 1, dtype=F64)
    assert torch.allclose(mix.eps(x, t[1]), toy.two_mode_1d(schedule=schedule).eps(x, t[1]), rtol=1e-12)
