"""The CLD process: kernel closed forms against the moment ODEs and Monte Carlo, Psi, L_t, gDDIM's R_t, bad input."""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from taylorsolve.diffusion import CLD, DiffusionModel, sample
from taylorsolve.diffusion.processes import get_process
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64
P = CLD()                                            # thesis defaults M = 0.25, beta = 4, gamma = 0.04
TIMES = (1e-4, 1e-3, 0.01, 0.1, 0.37, 0.8, 1.0)


def T(v):
    return torch.tensor(float(v), dtype=F64)


def moment_ode_solution(proc, t, x_var):
    """Mean map and covariance by integrating thesis eq. (2.29)-(2.30) numerically (independent of the closed forms)."""
    F = proc.F.numpy()
    GG = proc.GGT.numpy()

    def rhs(_, y):
        Psi = y[:4].reshape(2, 2)
        S = y[4:].reshape(2, 2)
        return np.concatenate([(F @ Psi).ravel(), (F @ S + S @ F.T + GG).ravel()])

    y0 = np.concatenate([np.eye(2).ravel(), np.diag([x_var, proc.gamma * proc.M]).ravel()])
    sol = solve_ivp(rhs, (0.0, t), y0, method="DOP853", rtol=1e-13, atol=1e-16)
    return sol.y[:4, -1].reshape(2, 2), sol.y[4:, -1].reshape(2, 2)


@pytest.mark.parametrize("x_var", [0.0, 0.3])
def test_kernel_mean_and_covariance_match_the_moment_odes(x_var):
    proc = CLD(x_var=x_var)
    for t in TIMES:
        Psi, S = moment_ode_solution(proc, t, x_var)
        assert np.allclose(proc.psi(T(t)).numpy(), Psi, rtol=1e-11, atol=1e-14)
        assert np.allclose(proc.sigma(T(t)).numpy(), S, rtol=1e-10, atol=1e-15)
        det = float(proc.cov_parts(T(t))[3])
        assert abs(det - np.linalg.det(S)) <= 1e-9 * abs(det) + 1e-18


def test_covariance_closed_forms_have_no_cancellation_at_small_t():
    """Against 60-digit mpmath of thesis eq. (2.34)-(2.36) (x_var = 0): relative 1e-13 down to t = 1e-6."""
    mp.mp.dps = 60
    G, b, gm = mp.mpf(1), mp.mpf(4), mp.mpf("0.04") * mp.mpf("0.25")          # Gamma = 2 sqrt(M), M = 0.25
    for t in ("1e-6", "1e-4", "1e-2", "0.5"):
        B = b * mp.mpf(t)
        e = mp.e ** (-4 * B / G)
        xx = (mp.e ** (4 * B / G) - 1 - 4 * B / G - 8 * B ** 2 / G ** 2 + 16 * B ** 2 / G ** 4 * gm) * e
        xv = (4 * B / G ** 2 * gm + 4 * B ** 2 / G - 8 * B ** 2 / G ** 3 * gm) * e
        vv = (G ** 2 / 4 * (mp.e ** (4 * B / G) - 1) + B * G + gm * (1 + 4 * B ** 2 / G ** 2 - 4 * B / G) - 2 * B ** 2) * e
        ref = [xx, xv, vv, xx * vv - xv ** 2]
        got = P.cov_parts(T(float(t)))
        for g, r in zip(got, ref):
            assert abs(float(g) - float(r)) <= 1e-13 * abs(float(r))


def test_kernel_against_monte_carlo_of_the_forward_sde():
    """Euler-Maruyama (4000 steps) from a fixed u_0: mean and covariance within 4 standard errors."""
    gen = torch.Generator().manual_seed(0)
    n, t, steps = 20000, 0.6, 4000
    u0 = torch.tensor([0.7, -0.3], dtype=F64)
    h = t / steps
    A = torch.eye(2, dtype=F64) + h * P.F
    u = u0.expand(n, 2).clone()
    for _ in range(steps):
        u = u @ A.T
        u[:, 1] += math.sqrt(P.q * h) * torch.randn(n, dtype=F64, generator=gen)
    mean = P.psi(T(t)) @ u0
    cov = P.noise_cov_parts(T(t))
    Q = torch.tensor([[cov[0], cov[1]], [cov[1], cov[2]]], dtype=F64)
    se_mean = torch.sqrt(Q.diagonal() / n)
    assert ((u.mean(0) - mean).abs() < 4 * se_mean).all()
    emp = torch.cov(u.T)
    se_cov = torch.sqrt((Q.diagonal()[:, None] * Q.diagonal()[None, :] + Q * Q) / n)
    assert ((emp - Q).abs() < 4 * se_cov).all()


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_psi_is_a_semigroup(t, s, r):
    assert torch.allclose(P.psi(T(t), T(s)) @ P.psi(T(s), T(r)), P.psi(T(t), T(r)), rtol=1e-12, atol=1e-12)
    assert torch.allclose(P.psi(T(t), T(t)), torch.eye(2, dtype=F64), atol=0)
    # d Psi(t, s) / dt = F Psi(t, s)
    d = torch.func.jvp(lambda tt: P.psi(tt, T(s)), (T(t),), (T(1.0),))[1]
    assert torch.allclose(d, P.F @ P.psi(T(t), T(s)), rtol=1e-12, atol=1e-12)


def test_cholesky_and_r_factor_sigma():
    for t in TIMES:
        S = P.sigma(T(t))
        L, R = P.L(T(t)), P.R(T(t))
        assert torch.allclose(L, torch.linalg.cholesky(S), rtol=1e-12, atol=1e-15)
        assert torch.allclose(R @ R.T, S, rtol=1e-12, atol=1e-16)
        assert abs(float(P.L(T(t))[1, 1]) - 1.0 / float(_ell(t))) < 1e-12 * float(P.L(T(t))[1, 1])


def _ell(t):
    """thesis eq. (2.55): ell_t = sqrt(Sxx / (Sxx Svv - Sxv^2))."""
    sxx, sxv, svv, _ = (float(v) for v in P.cov_parts(T(t)))
    return math.sqrt(sxx / (sxx * svv - sxv * sxv))


@pytest.mark.parametrize("x_var", [0.0, 0.3])
def test_r_solves_gddim_eq_15(x_var):
    """dR/dt = (F + 1/2 G G^T Sigma^{-1}) R: by forward-mode autodiff (exact) and by an independent DOP853 solve."""
    proc = CLD(x_var=x_var)
    for t in (0.003, 0.2, 0.9):
        R, dR = torch.func.jvp(proc.R, (T(t),), (T(1.0),))
        A = proc.F + 0.5 * proc.GGT @ torch.linalg.inv(proc.sigma(T(t)))
        assert torch.allclose(dR, A @ R, rtol=1e-11, atol=1e-11 * float(dR.abs().max()))
    t0 = 0.05

    def rhs(tau, y):
        Rm = y.reshape(2, 2)
        A = (proc.F + 0.5 * proc.GGT @ torch.linalg.inv(proc.sigma(T(tau)))).numpy()
        return (A @ Rm).ravel()

    sol = solve_ivp(rhs, (t0, 1.0), proc.R(T(t0)).numpy().ravel(), method="DOP853", rtol=1e-12, atol=1e-14,
                    t_eval=[0.3, 1.0])
    for k, t in enumerate((0.3, 1.0)):
        assert np.allclose(sol.y[:, k].reshape(2, 2), proc.R(T(t)).numpy(), rtol=1e-9, atol=1e-11)


def test_gddims_regularised_start_differs_by_a_constant_rotation():
    """gDDIM's code starts eq. (15) at R_0 = diag(sqrt(eps), sqrt(gamma M + eps)) (Sigma_0 is singular for the
    HSM kernel).  That R_t is ours times a constant rotation Q(delta_eps) (t-independent), and delta_eps drifts
    towards -pi/2 as eps -> 0, slowly (like eps^(1/6)); every gDDIM step is invariant under K -> K Q."""
    deltas = []
    for eps in (1e-3, 1e-5, 1e-7, 1e-9):
        proc = CLD(x_var=eps)
        d = [float(proc.theta(T(t)) - P.theta(T(t))) for t in (0.1, 0.5, 1.0)]
        assert max(d) - min(d) < 2e-3 * (1 if eps > 1e-4 else 1e-2)
        Rq = P.R(T(0.5)) @ P.rotation(T(d[1]))
        assert torch.allclose(proc.R(T(0.5)), Rq, atol=5e-3 if eps > 1e-4 else 1e-5)
        deltas.append(d[1])
    assert deltas[0] > deltas[1] > deltas[2] > deltas[3] > -math.pi / 2
    assert deltas[3] + math.pi / 2 < 0.5 * (deltas[2] + math.pi / 2) + 0.05


def test_theta_against_a_high_precision_quadrature():
    mp.mp.dps = 30
    M, G, b, gm = mp.mpf("0.25"), mp.mpf(1), mp.mpf(4), mp.mpf("0.01")

    def theta_dot(tau):
        B = b * tau
        e = mp.e ** (-4 * B / G)
        xx = (mp.e ** (4 * B / G) - 1 - 4 * B / G - 8 * B ** 2 / G ** 2 + 16 * B ** 2 / G ** 4 * gm) * e
        xv = (4 * B / G ** 2 * gm + 4 * B ** 2 / G - 8 * B ** 2 / G ** 3 * gm) * e
        vv = (G ** 2 / 4 * (mp.e ** (4 * B / G) - 1) + B * G + gm * (1 + 4 * B ** 2 / G ** 2 - 4 * B / G) - 2 * B ** 2) * e
        return -(b / M) * mp.sqrt(xx * vv - xv ** 2) / xx

    for t in (1e-3, 1.0):
        ref = mp.quad(lambda s: 2 * s * theta_dot(s * s), mp.linspace(0, mp.sqrt(t), 5), method="gauss-legendre")
        assert abs(float(P.theta(T(t))) - float(ref)) < 1e-13 * max(1.0, abs(float(ref)))


def test_time_functions_have_exact_nested_derivatives():
    """Under forward-mode autodiff the kernel follows its moment ODE to second order (CLD._cov_jet)."""
    t = T(0.3)

    def sig(tt):
        return P.sigma(tt)

    def dsig(tt):
        return torch.func.jvp(sig, (tt,), (torch.ones_like(tt),))[1]

    S = sig(t)
    d1 = dsig(t)
    d2 = torch.func.jvp(dsig, (t,), (torch.ones_like(t),))[1]
    F, GG = P.F, P.GGT
    assert torch.allclose(d1, F @ S + S @ F.T + GG, rtol=1e-12, atol=1e-13)
    assert torch.allclose(d2, F @ d1 + d1 @ F.T, rtol=1e-12, atol=1e-12)
    th1 = torch.func.jvp(P.theta, (t,), (torch.ones_like(t),))[1]
    assert abs(float(th1) - float(P.theta_dot(t))) < 1e-13 * abs(float(th1))


def test_eps_parameterisations_and_the_gddim_weight():
    """eps_L = Q(theta) eps_R; to_eps round trips; P' = B (gDDIM Lemma 2)."""
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(4, 6, dtype=F64, generator=gen)
    s = torch.randn(4, 6, dtype=F64, generator=gen)
    t = T(0.4)
    eps_r = P.eps_from_score(s, t, "R")
    eps_l = P.eps_from_score(s, t, "L")
    assert torch.allclose(eps_l, P.apply(P.rotation(P.theta(t)), eps_r), atol=1e-12)
    assert torch.allclose(P.to_eps(eps_l, "eps_l", u, t), eps_r, atol=1e-12)
    assert torch.allclose(P.to_eps(s, "score", u, t), eps_r, atol=1e-12)
    assert torch.allclose(P.score_from_eps(eps_r, t), s, atol=1e-12)
    pl = P.with_factor("L")
    assert torch.allclose(pl.to_eps(eps_r, "eps_r", u, t), eps_l, atol=1e-12)
    dP = torch.func.jvp(P.P, (t,), (T(1.0),))[1]
    assert torch.allclose(dP, P.ei_weight(t), rtol=1e-11, atol=1e-12)


def test_prior_and_perturb_shapes_and_moments():
    gen = torch.Generator().manual_seed(2)
    z = P.prior_sample((20000, 2), generator=gen, dtype=F64)
    assert abs(float(z[:, 0].var()) - 1.0) < 0.05 and abs(float(z[:, 1].var()) - P.M) < 0.05 * P.M
    u0 = torch.tensor([[0.5, 0.1]], dtype=F64).expand(20000, 2)
    ut = P.perturb(u0, 0.3, generator=gen)
    assert torch.allclose(ut.mean(0), P.psi(T(0.3)) @ u0[0], atol=0.02)
    x0 = torch.zeros(3, 2, dtype=F64)
    u, eps = P.hsm_perturb(x0, torch.full((3,), 0.5, dtype=F64), generator=gen)
    assert u.shape == (3, 4) and eps.shape == (3, 4)
    assert torch.allclose(u, P.apply(P.R(T(0.5)), eps), atol=1e-12)        # x_0 = 0: u = R eps


def test_bad_input_is_named():
    for kw, word in (({"M": 0.0}, "M"), ({"M": -1.0}, "M"), ({"M": float("nan")}, "M"), ({"beta": 0.0}, "beta"),
                     ({"gamma": -0.1}, "gamma"), ({"factor": "Q"}, "factor"), ({"data_channels": 0}, "data_channels")):
        with pytest.raises(TaylorSolveError, match=word):
            CLD(**kw)
    proc = CLD(data_channels=2)
    model = lambda u, t: u  # noqa: E731
    with pytest.raises(TaylorSolveError, match="data dimension mismatch"):
        sample(model, torch.zeros(3, 6, dtype=F64), 2, method="gddim", process=proc)
    with pytest.raises(TaylorSolveError, match="even number"):
        sample(model, torch.zeros(3, 5, dtype=F64), 2, method="gddim", process=CLD())
    with pytest.raises(TaylorSolveError, match=r"\[B, 2C"):
        sample(model, torch.zeros(4, dtype=F64), 2, method="gddim", process=CLD())
    x1 = torch.zeros(3, 4, dtype=F64)
    with pytest.raises(TaylorSolveError, match=r"\(0, 1\]"):
        sample(model, x1, None, method="gddim", process=proc, grid=torch.tensor([1.2, 0.5, 0.1], dtype=F64))
    with pytest.raises(TaylorSolveError, match=r"\(0, 1\]"):
        sample(model, x1, None, method="gddim", process=proc, grid=torch.tensor([0.5, 0.1, 0.0], dtype=F64))
    for method in ("gddim", "euler-maruyama"):
        with pytest.raises(TaylorSolveError, match="lam"):
            sample(model, x1, 2, method=method, process=proc, lam=-0.5)
    with pytest.raises(TaylorSolveError, match="order=1"):
        sample(model, x1, 2, method="gddim", process=proc, lam=0.5, order=2)
    with pytest.raises(TaylorSolveError, match="langevin"):
        sample(model, torch.zeros(3, 2, dtype=F64), 2, method="sscs")          # SSCS needs CLD
    with pytest.raises(TaylorSolveError, match="ddim"):
        sample(model, x1, 2, method="genie", process=proc)                     # no (xbar, gamma) for CLD
    with pytest.raises(TaylorSolveError, match="does not take parameterization 'x0'"):
        sample(model, x1, 2, method="gddim", process=proc, parameterization="x0")
    with pytest.raises(TaylorSolveError, match="does not take parameterization 'eps_l'"):
        sample(model, torch.zeros(3, 2, dtype=F64), 2, method="ddim", parameterization="eps_l")
    with pytest.raises(TaylorSolveError, match="unknown parameterization"):
        DiffusionModel(model, parameterization="velocity")
    assert isinstance(get_process("cld"), CLD)
