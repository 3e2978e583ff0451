"""Tests for taylorsolve.diffusion.distillation: the distillation objective shared by the toy and image heads.

References are independent of the code under test: derivatives along the DDIM ODE by finite differences
of a path integrated here (RK4 in ``xbar``, times from the schedule's own inverse), the closed-form
derivatives of Gaussian data (``_problems.gauss_derivatives``), hand-derived prefactors, and Monte Carlo
over the exact posterior of the noise.  Everything is float64 and small (well under a few seconds).
"""
from __future__ import annotations

import math

import pytest
import torch

from _problems import M, S, SCH, eps_gauss, gauss_derivatives
from taylorsolve import TaylorSolveError
from taylorsolve.diffusion import distillation as D

F64 = torch.float64


def _eps_gauss(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact eps of N(M, S^2 I) with per-sample times ``t [B]``."""
    return eps_gauss(x, t.reshape(-1, 1))


# ------------------------------------------------------------------------------------------------
# helpers: a smooth float64 eps-function and its path along the DDIM ODE
# ------------------------------------------------------------------------------------------------
def _smooth_eps(dim: int = 3, width: int = 16, seed: int = 0):
    """A smooth (tanh) function of ``(x, t)``, float64, with per-sample times ``t [B]``."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim, width, generator=g, dtype=F64) / math.sqrt(dim)
    wt = torch.randn(width, generator=g, dtype=F64)
    b = 0.3 * torch.randn(width, generator=g, dtype=F64)
    w2 = torch.randn(width, dim, generator=g, dtype=F64) / math.sqrt(width)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(-1, 1) if t.ndim else t
        return torch.tanh(x @ w1 + tt * wt + b) @ w2 + 0.5 * x * torch.cos(3.0 * tt)

    return eps


def _eps_along_path(eps_fn, x: torch.Tensor, gamma0: float, offsets, substeps: int = 8) -> list[torch.Tensor]:
    """``eps(x(gamma), t(gamma))`` at ``gamma0 + offset`` along the DDIM ODE ``d xbar/d gamma = eps`` (eq. (6)),
    ``x = xbar / sqrt(1 + gamma^2)``, integrated from ``(gamma0, x)`` by RK4 (independent of ``ddim_tangents``)."""

    def t_of(g: float) -> torch.Tensor:
        return SCH.t_from_gamma(torch.tensor(g, dtype=F64)).expand(x.shape[0]).clone()

    def f(g: float, xbar: torch.Tensor) -> torch.Tensor:
        return eps_fn(xbar / math.sqrt(1.0 + g * g), t_of(g))

    out = []
    xbar0 = x * math.sqrt(1.0 + gamma0 * gamma0)
    for off in offsets:
        xbar, g, h = xbar0.clone(), gamma0, off / substeps
        for _ in range(substeps if off else 0):
            k1 = f(g, xbar)
            k2 = f(g + h / 2, xbar + h / 2 * k1)
            k3 = f(g + h / 2, xbar + h / 2 * k2)
            k4 = f(g + h, xbar + h * k3)
            xbar, g = xbar + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), g + h
        out.append(f(gamma0 + off, xbar))
    return out


# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.004, 0.05, 0.4, 0.9])
def test_order1_target_is_derivative_along_ddim_ode(t):
    eps_fn = _smooth_eps()
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    tt = torch.full((5,), t, dtype=F64)
    tg = D.derivative_targets(eps_fn, x, tt, process=SCH, order=1)
    g0 = float(SCH.gamma(torch.tensor(t, dtype=F64)))
    h = 1e-3 * g0
    em, ep = _eps_along_path(eps_fn, x, g0, [-h, h])
    fd = (ep - em) / (2 * h)
    torch.testing.assert_close(tg.eps, eps_fn(x, tt))
    torch.testing.assert_close(tg.gamma, SCH.gamma(tt))
    assert tg.d2 is None
    scale = fd.abs().max()
    assert (tg.d1 - fd).abs().max() < 1e-6 * max(1.0, float(scale)), (tg.d1, fd)
    # the sign of eq. (12): flipping the time term (Alg. 1's typo) is far off
    _, dt_dg, _ = D.ddim_tangents(x, tg.eps, tt, SCH)
    _, jt = torch.func.jvp(eps_fn, (x, tt), (torch.zeros_like(x), dt_dg))
    assert (tg.d1 - 2 * jt - fd).abs().max() > 1e3 * (tg.d1 - fd).abs().max()


@pytest.mark.parametrize("t", [0.01, 0.2, 0.8])
def test_order2_target_is_second_derivative_along_ddim_ode(t):
    eps_fn = _smooth_eps(seed=3)
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    tt = torch.full((4,), t, dtype=F64)
    tg = D.derivative_targets(eps_fn, x, tt, process=SCH, order=2)
    g0 = float(SCH.gamma(torch.tensor(t, dtype=F64)))
    h = 2e-3 * g0
    em, e0, ep = _eps_along_path(eps_fn, x, g0, [-h, 0.0, h])
    fd2 = (ep - 2 * e0 + em) / (h * h)
    fd1 = (ep - em) / (2 * h)
    torch.testing.assert_close(tg.d1, fd1, rtol=1e-5, atol=1e-6)
    assert (tg.d2 - fd2).abs().max() < 1e-4 * fd2.abs().max(), (tg.d2, fd2)   # relative: not vacuous


@pytest.mark.parametrize("t", [0.002, 0.03, 0.3, 0.95])
def test_targets_equal_closed_form_on_gaussian_data(t):
    """Exact eps of N(M, S^2 I): d eps/d gamma and d^2 eps/d gamma^2 in closed form (``_problems``)."""
    x = torch.tensor([[0.1, 0.2], [-1.0, 0.7], [1.5, -2.0]], dtype=F64)
    tt = torch.full((3,), t, dtype=F64)
    tg = D.derivative_targets(_eps_gauss, x, tt, process=SCH, order=2)
    g = SCH.gamma(torch.tensor(t, dtype=F64))
    want = gauss_derivatives(x * torch.sqrt(1 + g * g), g, None, 2)
    torch.testing.assert_close(tg.d1, want[0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(tg.d2, want[1], rtol=1e-8, atol=1e-9)


def test_per_sample_times_match_one_time_at_a_time():
    eps_fn = _smooth_eps()
    x = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    ts = torch.tensor([0.01, 0.3, 0.7], dtype=F64)
    tg = D.derivative_targets(eps_fn, x, ts, process=SCH, order=2)
    for i in range(3):
        one = D.derivative_targets(eps_fn, x[i:i + 1], ts[i], process=SCH, order=2)
        torch.testing.assert_close(tg.d1[i:i + 1], one.d1)
        torch.testing.assert_close(tg.d2[i:i + 1], one.d2)


def test_ad_free_target_conditional_mean_equals_jvp_target():
    """App. D: with the exact eps, E[target | x_t] over the posterior of the noise is d eps/d gamma.

    Anisotropic Gaussian data N(m, diag(s^2)): ``noise | x_t ~ N(eps(x_t), diag(a^2 s^2/(a^2 s^2 + sigma^2)))``."""
    m = torch.tensor([0.4, -0.3, 1.0], dtype=F64)
    s = torch.tensor([0.3, 1.0, 2.0], dtype=F64)

    def eps_fn(x, t):
        a, sg = SCH.alpha(t).reshape(-1, 1), SCH.sigma(t).reshape(-1, 1)
        return sg * (x - a * m) / (a * a * s * s + sg * sg)

    gen = torch.Generator().manual_seed(5)
    n_mc = 20000
    for t in (0.02, 0.3):
        x = torch.tensor([[0.5, -0.5, 1.5]], dtype=F64).expand(n_mc, 3).clone()
        tt = torch.full((n_mc,), t, dtype=F64)
        a, sg = SCH.alpha(tt[:1]), SCH.sigma(tt[:1])
        mean = eps_fn(x, tt)
        std = torch.sqrt(a * a * s * s / (a * a * s * s + sg * sg))
        noise = mean + std * torch.randn(n_mc, 3, dtype=F64, generator=gen)
        o = D.ad_free_target(eps_fn, x, tt, noise, process=SCH)
        want = D.derivative_targets(eps_fn, x[:1], tt[:1], process=SCH).d1[0]
        est, se = o.mean(0), o.std(0) / math.sqrt(n_mc)
        assert ((est - want).abs() < 4 * se + 1e-6).all(), (t, est, want, se)
        assert (want.abs() > 10 * se).any()          # the estimate resolves a nonzero derivative
        # a wrong conditional mean is detected: the noise term without its 1/sigma^2 (eq. (72) as printed)
        u, _, _ = D.ddim_tangents(x, mean, tt, SCH)
        wrong = o + (noise * (noise * u).sum(1, keepdim=True)) / sg * (1 - sg * sg)
        assert ((wrong.mean(0) - want).abs() > 6 * se).any()


# ------------------------------------------------------------------------------------------------
# parameterisation
# ------------------------------------------------------------------------------------------------
GAMMAS = torch.tensor([1e-2, 0.1, 0.5, 1.0, 3.0, 50.0], dtype=F64)


def test_mixed_coefficients_values_and_sums():
    c1, c2, c3 = D.mixed_coefficients(torch.tensor(2.0, dtype=F64))
    assert (float(c1), float(c2), float(c3)) == pytest.approx((-0.5, 0.4, 0.1), rel=1e-14)   # eq. (14) by hand
    for order in (1, 2):
        cs = D.mixed_coefficients(GAMMAS, order)
        total = cs[0] + cs[1] + cs[2]
        assert (total.abs() <= 1e-12 * torch.stack(cs).abs().amax(0)).all(), (order, total)


def test_order2_coefficients_are_gamma_derivatives_of_order1():
    h = 1e-6 * GAMMAS
    up, dn = D.mixed_coefficients(GAMMAS + h, 1), D.mixed_coefficients(GAMMAS - h, 1)
    for c_up, c_dn, c2 in zip(up, dn, D.mixed_coefficients(GAMMAS, 2)):
        torch.testing.assert_close(c2, (c_up - c_dn) / (2 * h), rtol=1e-6, atol=1e-9)


def test_combine_outputs():
    raw = torch.randn(6, 9, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(6))
    g = GAMMAS
    out = D.combine_outputs(raw, g)
    k1, k2, k3 = raw[:, :3], raw[:, 3:6], raw[:, 6:]
    gb = g.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, -k1 / gb + gb / (1 + gb * gb) * k2 + k3 / (gb * (1 + gb * gb)))
    assert D.combine_outputs(raw, g, mixed=False) is raw
    flat = torch.randn(6, 6, dtype=F64)
    torch.testing.assert_close(D.combine_outputs(flat, g, dim=-1), D.combine_outputs(flat.reshape(6, 6, 1), g).squeeze(-1))
    # for single-point data the three outputs agree (k^(i) = -eps) and the derivative is zero
    same = torch.randn(6, 3, dtype=F64).repeat(1, 3)
    assert D.combine_outputs(same, g).abs().max() < 1e-12 * same.abs().max() / float(g.min())


# ------------------------------------------------------------------------------------------------
# loss, weighting, time sampling, evaluation
# ------------------------------------------------------------------------------------------------
def test_distillation_loss_weighting():
    gen = torch.Generator().manual_seed(7)
    k, d = torch.randn(4, 2, 3, dtype=F64, generator=gen), torch.randn(4, 2, 3, dtype=F64, generator=gen)
    g = torch.tensor([0.1, 1.0, 2.0, 10.0], dtype=F64)
    per = [float(((k[b] - d[b]) ** 2).mean()) for b in range(4)]
    want = {(True, 1): sum(float(g[b]) ** 2 * per[b] for b in range(4)) / 4,
            (True, 2): sum(float(g[b]) ** 4 * per[b] for b in range(4)) / 4,
            (False, 1): sum(per) / 4}
    for (w, order), v in want.items():
        assert float(D.distillation_loss(k, d, g, weighting=w, order=order)) == pytest.approx(v, rel=1e-12)
    assert float(D.distillation_loss(d, d, g)) == 0.0
    # gradients flow to the head's output only
    kk = k.clone().requires_grad_(True)
    D.distillation_loss(kk, d, g).backward()
    torch.testing.assert_close(kk.grad, 2 * (g.reshape(-1, 1, 1) ** 2) * (k - d) / (4 * 6))


def test_relative_errors():
    gen = torch.Generator().manual_seed(8)
    t = torch.tensor([0.001, 0.005, 0.02, 0.05, 0.5, 1.0], dtype=F64)
    g = SCH.gamma(t)
    d = torch.randn(6, 2, dtype=F64, generator=gen)
    zero = D.relative_errors(torch.zeros_like(d), d, t, g)
    assert zero["rel_mse"] == pytest.approx(1.0) and zero["rel_mse_unweighted"] == pytest.approx(1.0)
    assert [b["n"] for b in zero["bands"]] == [2, 2, 2]          # t = 1 falls into the closed last band
    assert all(b["rel_mse"] == pytest.approx(1.0) for b in zero["bands"])
    exact = D.relative_errors(d, d, t, g)
    assert exact["rel_mse"] == 0.0
    # error only in the first sample: weighted by gamma^2, unweighted not
    k = d.clone()
    k[0] = 0.0
    r = D.relative_errors(k, d, t, g)
    ref = d.square().sum(1)
    assert r["rel_mse_unweighted"] == pytest.approx(float(ref[0] / ref.sum()))
    assert r["rel_mse"] == pytest.approx(float(g[0] ** 2 * ref[0] / (g ** 2 * ref).sum()))
    assert r["bands"][0]["rel_mse"] == pytest.approx(float(ref[0] / (ref[0] + ref[1] * g[1] ** 2 / g[0] ** 2)))
    assert r["bands"][1]["rel_mse"] == 0.0 and r["bands"][2]["rel_mse"] == 0.0
    empty = D.relative_errors(k, d, t, g, bands=((0.1, 0.2), (0.3, 1.0)))
    assert empty["bands"][0]["n"] == 0 and math.isnan(empty["bands"][0]["rel_mse"])


def test_sample_times():
    n = 20000
    for kind in D.TIME_SAMPLINGS:
        t = D.sample_times(n, 1e-3, torch.Generator().manual_seed(9), kind=kind)
        assert t.dtype == F64 and t.shape == (n,)
        assert float(t.min()) >= 1e-3 and float(t.max()) <= 1.0
        again = D.sample_times(n, 1e-3, torch.Generator().manual_seed(9), kind=kind)
        assert torch.equal(t, again)
    uni = D.sample_times(n, 1e-3, torch.Generator().manual_seed(10), kind="uniform")
    mix = D.sample_times(n, 1e-3, torch.Generator().manual_seed(10), kind="uniform+log")
    # U[1e-3, 1] puts 0.9 % in [1e-3, 1e-2); the mixture half of that plus half of log-uniform's 1/3
    for t, p in ((uni, 9e-3 / 0.999), (mix, 0.5 * 9e-3 / 0.999 + 0.5 / 3)):
        frac = float(((t >= 1e-3) & (t < 1e-2)).double().mean())
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), (frac, p)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(TaylorSolveError, match="order"):
        D.DistillationObjective(order=3)
    with pytest.raises(TaylorSolveError, match="feed"):
        D.DistillationObjective(feed="noise")
    with pytest.raises(TaylorSolveError, match="objective"):
        D.DistillationObjective(objective="fd")
    with pytest.raises(TaylorSolveError, match="first derivative only"):
        D.DistillationObjective(order=2, objective="ad_free")
    with pytest.raises(TaylorSolveError, match="time_sampling"):
        D.DistillationObjective(time_sampling="log")
    with pytest.raises(TaylorSolveError, match="t_cutoff"):
        D.DistillationObjective(t_cutoff=0.0)
    with pytest.raises(TaylorSolveError, match="order"):
        D.mixed_coefficients(1.0, order=3)
    with pytest.raises(TaylorSolveError, match="3 x channels"):
        D.combine_outputs(torch.zeros(2, 4), torch.ones(2))
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(TaylorSolveError, match="order"):
        D.derivative_targets(_eps_gauss, x, 0.5, process=SCH, order=3)
    with pytest.raises(TaylorSolveError, match="one time per sample"):
        D.derivative_targets(_eps_gauss, x, torch.tensor([0.1, 0.2], dtype=F64), process=SCH)
    with pytest.raises(TaylorSolveError, match="scalar schedule"):
        D.derivative_targets(_eps_gauss, x, 0.5, process="cld")
    with pytest.raises(TaylorSolveError, match="time sampling"):
        D.sample_times(4, kind="loguniform")
    assert M.shape == (2,) and S > 0   # the Gaussian problem used above
