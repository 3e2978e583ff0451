"""Tests of taylorsolve.diffusion.odes against closed-form solutions for Gaussian data.

For data N(M, S^2 I) the diffused marginal is N(alpha M, (alpha^2 S^2 + sigma^2) I) and
eps(x, t) = sigma (x - alpha M) / (alpha^2 S^2 + sigma^2).  Both generative ODEs transport
x_t = alpha_t M + sqrt(alpha_t^2 S^2 + sigma_t^2) z with z fixed; in DDIM coordinates
xbar(gamma) = M + sqrt(S^2 + gamma^2) z for every schedule.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from taylorsolve.diffusion.odes import (
    ReverseSDE,
    ddim_ode_rhs,
    dx_dgamma,
    from_xbar,
    probability_flow_rhs,
    reverse_sde,
    to_xbar,
)
from taylorsolve.diffusion.parameterization import EpsModel
from taylorsolve.diffusion.schedules import CosineVPSchedule, CustomSchedule, LinearVPSchedule
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64
M, S = 0.5, 0.6

SCHEDULES = [
    LinearVPSchedule(),
    CosineVPSchedule(),
    CustomSchedule(lambda t: torch.exp(-t), lambda t: 2.0 * t + 1e-3, name="non-vp"),
]
IDS = [s.name for s in SCHEDULES]


def gaussian_eps(schedule):
    def eps(x, t):
        a, s = schedule.marginal_params(t)
        a, s = a.to(x.dtype), s.to(x.dtype)
        return s * (x - a * M) / (a * a * S**2 + s * s)

    return eps


def exact_x(schedule, t, z):
    a, s = schedule.marginal_params(torch.as_tensor(t, dtype=F64))
    return a * M + torch.sqrt(a * a * S**2 + s * s) * z


def exact_xbar(gamma, z):
    return M + torch.sqrt(S**2 + gamma**2) * z


Z = torch.tensor([-1.3, -0.2, 0.4, 1.7], dtype=F64)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_ddim_ode_integrates_to_closed_form(schedule):
    f = ddim_ode_rhs(gaussian_eps(schedule), schedule)
    t_hi, t_lo = 1.0, 1e-3
    g_hi, g_lo = float(schedule.gamma(torch.tensor(t_hi))), float(schedule.gamma(torch.tensor(t_lo)))
    steps = 300 if isinstance(schedule, (LinearVPSchedule, CosineVPSchedule)) else 200  # generic inverse is slower
    gammas = torch.logspace(math.log10(g_hi), math.log10(g_lo), steps + 1, dtype=F64)
    y = exact_xbar(gammas[0], Z)
    for g0, g1 in zip(gammas[:-1], gammas[1:]):  # classical RK4 in gamma
        h = g1 - g0
        k1 = f(g0, y)
        k2 = f(g0 + h / 2, y + h / 2 * k1)
        k3 = f(g0 + h / 2, y + h / 2 * k2)
        k4 = f(g1, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert torch.allclose(y, exact_xbar(gammas[-1], Z), rtol=1e-7, atol=1e-8)
    # and back to x coordinates
    x = from_xbar(y, gammas[-1], alpha=schedule.alpha(t_lo))
    assert torch.allclose(x, exact_x(schedule, t_lo, Z), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_probability_flow_integrates_to_closed_form(schedule):
    f = probability_flow_rhs(gaussian_eps(schedule), schedule)

    def rhs(t, y):
        return f(torch.tensor(t, dtype=F64), torch.from_numpy(y)).numpy()

    x1 = exact_x(schedule, 1.0, Z).numpy()
    sol = solve_ivp(rhs, (1.0, 1e-3), x1, method="DOP853", rtol=1e-10, atol=1e-11)
    assert sol.success
    np.testing.assert_allclose(sol.y[:, -1], exact_x(schedule, 1e-3, Z).numpy(), rtol=1e-7, atol=1e-8)


def test_probability_flow_vp_is_eq_33():
    s = LinearVPSchedule()
    eps = gaussian_eps(s)
    f = probability_flow_rhs(eps, s)
    x = torch.linspace(-2, 2, 7, dtype=F64)
    for tv in (0.01, 0.3, 0.9):
        t = torch.tensor(tv, dtype=F64)
        beta, sigma = s.beta(t), s.sigma(t)
        expected = -0.5 * beta * (x - eps(x, t) / sigma)  # eq. (33)
        assert torch.allclose(f(t, x), expected, rtol=1e-13)


def _nonlinear_eps(x, t):
    return torch.tanh(x) * (1.0 + t) + 0.3 * torch.sin(3.0 * t) * x**2


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_ddim_ode_is_probability_flow_in_other_coordinates(schedule):
    """d xbar/dt from the PF ODE (chain rule) equals eps * d gamma/dt from the DDIM ODE (app. A)."""
    pf = probability_flow_rhs(_nonlinear_eps, schedule)
    ddim = ddim_ode_rhs(_nonlinear_eps, schedule)
    x = torch.linspace(-1.5, 1.5, 6, dtype=F64)
    for tv in (0.005, 0.2, 0.55, 0.97):
        t = torch.tensor(tv, dtype=F64)
        a = schedule.alpha(t)
        dxbar_dt = pf(t, x) / a - x * schedule.dalpha_dt(t) / a**2  # d(x/alpha)/dt
        g = schedule.gamma(t)
        via_ddim = ddim(g, x / a) * schedule.dgamma_dt(t)
        assert torch.allclose(dxbar_dt, via_ddim, rtol=1e-9, atol=1e-12), tv
        if schedule.variance_preserving:
            assert torch.allclose(to_xbar(x, g), x / a, rtol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_ddim_rhs_forward_mode_total_derivatives(schedule):
    """Along the exact solution, d^k/dgamma^k f(gamma, xbar(gamma)) is known in closed form; this
    checks that t(gamma) and x(gamma, xbar) are differentiable through the rhs (eq. (10)-(12))."""
    f = ddim_ode_rhs(gaussian_eps(schedule), schedule)
    along = lambda g: f(g, exact_xbar(g, Z))  # noqa: E731
    g0 = torch.tensor(0.8, dtype=F64)
    _, d1 = torch.func.jvp(along, (g0,), (torch.ones_like(g0),))
    assert torch.allclose(d1, S**2 * Z / (S**2 + g0**2) ** 1.5, rtol=1e-10)
    d2 = torch.func.jvp(lambda g: torch.func.jvp(along, (g,), (torch.ones_like(g),))[1], (g0,), (torch.ones_like(g0),))[1]
    assert torch.allclose(d2, -3 * S**2 * g0 * Z / (S**2 + g0**2) ** 2.5, rtol=1e-9)


@pytest.mark.parametrize("backend", ["autodiff", "taylor_mode"])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_ddim_rhs_with_core_taylor_coefficients(schedule, backend):
    """The core backends differentiate the DDIM rhs through t(gamma): c_k of xbar(gamma) = M + sqrt(S^2 + gamma^2) z."""
    ts = pytest.importorskip("taylorsolve")
    if not hasattr(ts, "taylor_coefficients"):
        pytest.skip("core taylor_coefficients not available")
    from taylorsolve.coefficients import available_backends

    if backend not in available_backends():
        pytest.skip(f"backend {backend} not available")
    f = ddim_ode_rhs(EpsModel(gaussian_eps(schedule), "eps", schedule))
    g0 = torch.tensor(0.8, dtype=F64)
    cs = ts.taylor_coefficients(f, g0, exact_xbar(g0, Z), 3, backend=backend)
    r2 = S**2 + g0**2
    assert torch.allclose(cs[1], g0 * Z / torch.sqrt(r2), rtol=1e-12)
    assert torch.allclose(cs[2], 0.5 * S**2 * Z / r2**1.5, rtol=1e-10)
    assert torch.allclose(cs[3], -0.5 * S**2 * g0 * Z / r2**2.5, rtol=1e-9)


def test_probability_flow_rhs_with_taylor_mode():
    ts = pytest.importorskip("taylorsolve")
    from taylorsolve.coefficients import available_backends

    if "taylor_mode" not in available_backends():
        pytest.skip("taylor_mode backend not available")
    x = M + Z
    t0 = torch.tensor(0.3, dtype=F64)
    for schedule in SCHEDULES[:2]:  # closed-form time derivatives
        f = probability_flow_rhs(gaussian_eps(schedule), schedule)
        a = ts.taylor_coefficients(f, t0, x, 3, backend="autodiff")
        b = ts.taylor_coefficients(f, t0, x, 3, backend="taylor_mode")
        for ca, cb in zip(a, b):
            assert torch.allclose(ca, cb, rtol=1e-10, atol=1e-12)
    # generic (CustomSchedule) time derivatives need torch.func: a clear error under jets
    f = probability_flow_rhs(gaussian_eps(SCHEDULES[2]), SCHEDULES[2])
    with pytest.raises(TaylorSolveError, match="jvp"):
        ts.taylor_coefficients(f, t0, x, 2, backend="taylor_mode")


def test_dx_dgamma_eq_11():
    g0 = torch.tensor(1.3, dtype=F64)
    s = LinearVPSchedule()
    x_of_g = lambda g: from_xbar(exact_xbar(g, Z), g)  # noqa: E731
    _, dx = torch.func.jvp(x_of_g, (g0,), (torch.ones_like(g0),))
    x = x_of_g(g0)
    eps = gaussian_eps(s)(x, s.t_from_gamma(g0))
    assert torch.allclose(dx_dgamma(x, eps, g0), dx, rtol=1e-12)


def test_xbar_round_trip_and_batch_gamma():
    x = torch.randn(3, 2, dtype=torch.float32)
    g = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    xb = to_xbar(x, g)
    assert xb.dtype == torch.float32
    assert torch.allclose(xb, x * torch.sqrt(1 + g**2).float()[:, None])
    assert torch.allclose(from_xbar(xb, g), x, rtol=1e-6)
    a = torch.tensor(0.5, dtype=F64)
    assert torch.allclose(from_xbar(to_xbar(x, None, alpha=a), None, alpha=a), x)


def test_ddim_rhs_dtype_shape_and_errors():
    s = LinearVPSchedule()
    f = ddim_ode_rhs(gaussian_eps(s), s)
    xb = torch.randn(2, 3, dtype=torch.float32)
    out = f(torch.tensor(2.0, dtype=F64), xb)
    assert out.shape == xb.shape and out.dtype == torch.float32
    bad = ddim_ode_rhs(lambda x, t: x[:1], s)
    with pytest.raises(TaylorSolveError, match="shape"):
        bad(torch.tensor(2.0, dtype=F64), xb)
    # schedule taken from an EpsModel when not given
    cos = CosineVPSchedule()
    assert ddim_ode_rhs(EpsModel(gaussian_eps(cos), "eps", cos)).schedule is cos
    # conditioning is forwarded
    g = ddim_ode_rhs(lambda x, t, c: x * 0 + c, s, cond={"c": 2.0})
    assert float(g(torch.tensor(1.0, dtype=F64), xb)[0, 0]) == 2.0


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_reverse_sde_coefficients(schedule):
    eps = _nonlinear_eps
    sde = reverse_sde(eps, schedule)
    assert isinstance(sde, ReverseSDE)
    drift, diffusion = sde
    pf = probability_flow_rhs(eps, schedule)
    x = torch.linspace(-1, 1, 5, dtype=F64)
    for tv in (0.01, 0.4, 0.9):
        t = torch.tensor(tv, dtype=F64)
        f = schedule.dlog_alpha_dt(t)
        # SDE drift f x - g^2 score and PF drift f x - g^2 score / 2
        assert torch.allclose(drift(t, x), 2 * pf(t, x) - f * x, rtol=1e-12)
        assert torch.allclose(diffusion(t) ** 2, schedule.g2(t), rtol=1e-12)
        if schedule.variance_preserving:
            score = -eps(x, t) / schedule.sigma(t)
            assert torch.allclose(drift(t, x), -0.5 * schedule.beta(t) * (x + 2 * score), rtol=1e-10)  # eq. (3)


def test_reverse_sde_euler_maruyama_gaussian_marginal():
    s = LinearVPSchedule()
    sde = reverse_sde(gaussian_eps(s), s)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    x = exact_x(s, 1.0, torch.randn(n, dtype=F64, generator=gen))
    ts = (1.0 - (1.0 - math.sqrt(1e-3)) * torch.arange(401, dtype=F64) / 400) ** 2
    for t0, t1 in zip(ts[:-1], ts[1:]):
        x = sde.euler_maruyama_step(x, t0, t1, generator=gen)
    a, sg = s.marginal_params(torch.tensor(1e-3, dtype=F64))
    assert float(x.mean()) == pytest.approx(float(a) * M, abs=0.03)
    assert float(x.std()) == pytest.approx(float(torch.sqrt(a**2 * S**2 + sg**2)), rel=0.05)
    with pytest.raises(TaylorSolveError, match="backwards"):
        sde.euler_maruyama_step(x, 0.5, 0.6)
