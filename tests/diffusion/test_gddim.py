"""gDDIM on scalar (VP) processes: equals DDIM, orders of the multistep predictor, stochastic gDDIM, weights, NFE."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taylorsolve.diffusion import CLD, encode, sample
from taylorsolve.diffusion.grids import time_grid
from taylorsolve.diffusion.processes import get_process
from taylorsolve.diffusion.samplers.gddim import _first_weight, ei_weights, lagrange_weights
from taylorsolve.diffusion.schedules import LinearVPSchedule
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64
SCH = LinearVPSchedule()
M = torch.tensor([0.5, -1.0], dtype=F64)
S = 0.5
X0 = torch.tensor([0.3, -1.2], dtype=F64)
X1 = torch.tensor([[0.5, -0.1], [1.0, 2.0], [-0.7, 0.4]], dtype=F64)


def eps_gauss(x, t):
    a, s = SCH.alpha(t), SCH.sigma(t)
    return s * (x - a * M) / (a * a * S * S + s * s)


def eps_point(x, t):
    return (x - SCH.alpha(t) * X0) / SCH.sigma(t)


def exact_gauss(x1, times):
    g0, g = SCH.gamma(times[0]), SCH.gamma(times[-1])
    u = (x1 * torch.sqrt(1 + g0 * g0) - M) * torch.sqrt((S * S + g * g) / (S * S + g0 * g0))
    return (u + M) / torch.sqrt(1 + g * g)


@pytest.mark.parametrize("grid", ["quadratic", "linear", "logsnr"])
@pytest.mark.parametrize("knobs", [{}, {"afs": True}, {"denoise": True}])
def test_gddim_order_1_is_ddim_on_vp(grid, knobs):
    """gDDIM app. B.1.3: on VP, eq. (16) is DDIM (eq. (11)); equal to round-off."""
    a = sample(eps_gauss, X1, 12, method="ddim", grid=grid, **knobs)
    b = sample(eps_gauss, X1, 12, method="gddim", grid=grid, **knobs)
    assert float((a.x - b.x).abs().max()) < 1e-14
    assert a.stats.nfe == b.stats.nfe


def test_gddim_is_exact_on_a_single_point_for_every_order():
    for q in (1, 2, 3):
        r = sample(eps_point, X1, 5, method="gddim", order=q, denoise=True)
        assert float((r.x - X0).abs().max()) < 1e-12


@pytest.mark.parametrize("q,ns", [(1, (16, 32, 64)), (2, (16, 32, 64)), (3, (32, 64, 128))])
def test_gddim_multistep_observed_order_on_vp(q, ns):
    errs = []
    for n in ns:
        r = sample(eps_gauss, X1, n, method="gddim", order=q)
        errs.append(float((r.x - exact_gauss(X1, r.times)).abs().max()))
    assert math.log2(errs[-2] / errs[-1]) == pytest.approx(q, abs=0.35)


def test_gddim_multistep_differs_from_deis_log_gamma():
    """Same exponential integrator, different extrapolation variable (t vs log gamma): equal for q = 1 only."""
    for q in (1, 2, 3):
        a = sample(eps_gauss, X1, 10, method="gddim", order=q).x
        b = sample(eps_gauss, X1, 10, method="deis", order=q).x
        d = float((a - b).abs().max())
        assert (d < 1e-13) if q == 1 else (d > 1e-5)


@pytest.mark.parametrize("proc", [get_process("vp"), CLD(), CLD(factor="L")], ids=["vp", "cld-R", "cld-L"])
def test_weights_integrate_polynomials_exactly(proc):
    """sum_j C_j p(t_j) = int B p for polynomials of degree < q (Lagrange, gDDIM eq. (37)); C_0 = P(t') - P(t)."""
    co = proc.coordinates("ei")
    for a, b in ((1.0, 0.8), (0.2, 0.05), (0.01, 0.001)):
        nodes = [a, a + 0.5 * (a - b), a + 1.1 * (a - b)]
        C = lagrange_weights(co, a, b, nodes)
        for deg in range(3):
            lhs = sum(Cj * (tj - a) ** deg for Cj, tj in zip(C, nodes))
            rhs = ei_weights(co, a, b, lambda tau, d=deg: ((tau - a) ** d)[None, :])[0]
            assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-13 * float(rhs.abs().max() + 1))
        quad = ei_weights(co, a, b, lambda tau: np.ones((1, tau.size)))[0]
        closed = _first_weight(co, a, b)
        assert torch.allclose(quad, closed, rtol=1e-12, atol=1e-14 * float(closed.abs().max()))


def test_stochastic_gddim_vp_closed_form_and_lambda_zero():
    """gDDIM Theorem 1: A = gamma_t (gamma_t/gamma_s)^{lam^2} - gamma_s, N = gamma_t sqrt(1 - (gamma_t/gamma_s)^{2 lam^2})."""
    co = get_process("vp").coordinates("ei")
    s, t = 0.6, 0.3
    gs, gt = float(SCH.gamma(torch.tensor(s, dtype=F64))), float(SCH.gamma(torch.tensor(t, dtype=F64)))
    for lam in (0.0, 0.5, 1.0):
        A, N = co.stochastic_step(s, t, lam)
        r = gt / gs
        assert float(A) == pytest.approx(gt * r ** (lam * lam) - gs, rel=1e-13, abs=1e-15)
        assert float(N) == pytest.approx(gt * math.sqrt(1 - r ** (2 * lam * lam)), rel=1e-13, abs=1e-15)
    g = torch.Generator().manual_seed(0)
    a = sample(eps_gauss, X1, 8, method="ddim").x
    b = sample(eps_gauss, X1, 8, method="gddim", lam=0.0, generator=g).x
    assert float((a - b).abs().max()) < 1e-14


def test_stochastic_gddim_is_exact_in_distribution_on_a_single_point():
    """gDDIM Prop. 3 / Theorem 1: with the exact eps of a point mass, stochastic DDIM samples p_t exactly."""
    g = torch.Generator().manual_seed(3)
    n = 40000
    x1 = torch.randn(n, 2, dtype=F64, generator=g) * SCH.sigma(torch.tensor(1.0, dtype=F64)) \
        + SCH.alpha(torch.tensor(1.0, dtype=F64)) * X0
    r = sample(eps_point, x1, 3, method="gddim", lam=1.0, generator=g)
    tc = r.times[-1]
    mean, std = SCH.alpha(tc) * X0, SCH.sigma(tc)
    assert ((r.x.mean(0) - mean).abs() < 4 * std / math.sqrt(n)).all()
    assert ((r.x.std(0) / std - 1).abs() < 4 * math.sqrt(0.5 / n)).all()


def test_gddim_encodes_when_deterministic_only():
    z = encode(eps_gauss, X1, 40, method="gddim", order=2).x
    back = sample(eps_gauss, z, 40, method="gddim", order=2).x
    assert float((back - X1).abs().max()) < 5e-3
    with pytest.raises(TaylorSolveError, match="deterministic"):
        encode(eps_gauss, X1, 4, method="gddim", lam=0.5)


@pytest.mark.parametrize("method,kw,nfe", [("gddim", {"order": 3}, 5), ("gddim", {"lam": 1.0}, 5),
                                           ("gddim-ttm", {"derivative": "zero"}, 5)])
def test_nfe(method, kw, nfe):
    calls = []

    def model(x, t):
        calls.append(1)
        return eps_gauss(x, t)

    r = sample(model, X1, 5, method=method, generator=torch.Generator().manual_seed(0), **kw)
    assert r.stats.nfe == len(calls) == nfe


def test_gddim_ttm_autodiff_costs_one_jvp_and_is_second_order_on_vp():
    r = sample(eps_gauss, X1, 8, method="gddim-ttm")
    assert r.stats.nfe == 8 and r.stats.jvp_passes == 8 and r.stats.overhead == 1.0
    z = sample(eps_gauss, X1, 8, method="gddim-ttm", derivative="zero").x
    assert float((z - sample(eps_gauss, X1, 8, method="gddim").x).abs().max()) < 1e-14
    errs = [float((sample(eps_gauss, X1, n, method="gddim-ttm").x - exact_gauss(X1, time_grid("quadratic", n, SCH)))
                  .abs().max()) for n in (16, 32)]
    assert math.log2(errs[0] / errs[1]) == pytest.approx(2.0, abs=0.3)


@pytest.mark.parametrize("name", ["ve", "edm", "vp-cosine"])
def test_gddim_is_ddim_on_every_scalar_process(name):
    proc = get_process(name)
    sch = proc.schedule

    def eps(x, t):
        a, s = sch.alpha(t), sch.sigma(t)
        return s * (x - a * M) / (a * a * S * S + s * s)

    x1 = proc.prior_sample((3, 2), dtype=F64, generator=torch.Generator().manual_seed(0))
    a = sample(eps, x1, 8, method="ddim", process=proc).x
    b = sample(eps, x1, 8, method="gddim", process=proc).x
    assert float((a - b).abs().max()) < 1e-13 * max(1.0, float(a.abs().max()))


def test_cld_knobs_and_nfe():
    """AFS (analytic eps of unit-variance data) saves one NFE, denoising (thesis eq. (2.177)) costs one."""
    proc = CLD(data_channels=1)
    calls = []

    def model(u, t):
        calls.append(1)
        return proc.analytic_eps(u, t)          # the eps of N(0, 1) data: a valid model of that data

    u1 = proc.prior_sample((5, 2), dtype=F64, generator=torch.Generator().manual_seed(1))
    r = sample(model, u1, 6, method="gddim", order=2, process=proc, afs=True, denoise=True)
    assert r.stats.nfe == len(calls) == 6 and r.stats.afs_saved == 1 and r.stats.denoise_nfe == 1
    x, v = proc.split(r.x)
    assert bool((v == 0).all()) and bool(torch.isfinite(x).all())
    calls.clear()
    r = sample(model, u1, 6, method="sscs", process=proc, generator=torch.Generator().manual_seed(0))
    assert r.stats.nfe == len(calls) == 6
    with pytest.raises(TaylorSolveError, match="afs"):
        sample(model, u1, 6, method="sscs", process=proc, afs=True, generator=torch.Generator())
