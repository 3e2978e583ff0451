"""The sampler entry point: exactness on single-point data, observed orders on Gaussian data, knobs, errors."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.errors import SolverError, TaylorSolveError
from taylorsolve.diffusion import providers as P
from taylorsolve.diffusion.grids import time_grid
from taylorsolve.diffusion.samplers import METHODS, sample

from _problems import (  # noqa: E402  (tests/diffusion/conftest.py puts this folder on sys.path)
    F64,
    M,
    S,
    SCH,
    X0,
    X1_2,
    X1_3,
    eps_gauss,
    eps_point,
    exact_gauss,
    exact_point,
    gauss_derivatives,
)


def test_ddim_lands_on_the_point_in_one_step():
    r = sample(eps_point, X1_3, 1, method="ddim")
    assert torch.allclose(r.x, exact_point(X1_3, r.times), rtol=1e-13, atol=1e-14)
    r = sample(eps_point, X1_3, 1, method="ddim", denoise=True)
    assert torch.allclose(r.x, X0.expand_as(X1_3), rtol=1e-12, atol=1e-12)


EXACT_ON_POINT = [
    ("ddim", {}),
    ("genie", {}),
    ("genie", {"derivative": "ideal"}),
    ("ttm", {"order": 3}),
    ("s-pndm", {}),
    ("f-pndm", {}),
    ("adams-bashforth", {"order": 2}),
    ("adams-bashforth", {"order": 3}),
    ("heun", {}),
    ("dpm-solver-2", {}),
    ("dpm-solver-3", {}),
    ("dpm-solver++2m", {}),
    ("deis", {"order": 3}),
]


@pytest.mark.parametrize("method,kw", EXACT_ON_POINT, ids=[f"{m}{kw}" for m, kw in EXACT_ON_POINT])
def test_single_point_data_is_integrated_exactly(method, kw):
    """App. B.2: d eps/d gamma = 0, the DDIM ODE's solutions are straight lines -> exact to rounding."""
    r = sample(eps_point, X1_3, 5, method=method, **kw)
    ref = exact_point(X1_3, r.times)
    assert float((r.x - ref).abs().max()) < 1e-12


def test_ttm_on_probability_flow_ode_is_not_exact_on_single_point():
    """App. B.2 / eq. (51): the PF ODE is curved in t even for a single data point."""
    ref = exact_point(X1_3, time_grid("quadratic", 5, SCH))
    for kw in ({}, {"derivative": "ideal"}, {"order": 3}):
        r = sample(eps_point, X1_3, 5, method="ttm-pf", **kw)
        assert float((r.x - ref).abs().max()) > 1e-4
    # ... but it converges to the same solution (slowly: sigma_t ~ sqrt(t) makes the PF ODE singular at t = 0)
    e10, e20 = (float((sample(eps_point, X1_3, n, method="ttm-pf").x - ref).abs().max()) for n in (10, 20))
    assert e20 < 0.75 * e10


def _observed_order(method, kw, ns):
    errs = []
    for n in ns:
        r = sample(eps_gauss, X1_2, n, method=method, grid="quadratic", **kw)
        errs.append(float((r.x - exact_gauss(X1_2, r.times)).abs().max()))
    return math.log2(errs[-2] / errs[-1]), errs


ORDER_CASES = [
    ("ddim", {}, 1, (16, 32, 64)),
    ("genie", {"derivative": P.exact(gauss_derivatives)}, 2, (16, 32, 64)),
    ("ttm", {"order": 3, "derivative": P.exact(gauss_derivatives)}, 3, (16, 32, 64)),
    ("adams-bashforth", {"order": 2}, 2, (16, 32, 64)),
    ("adams-bashforth", {"order": 3}, 3, (32, 64, 128)),
    ("deis", {"order": 3}, 3, (32, 64, 128)),
    ("heun", {}, 2, (16, 32, 64)),
    ("dpm-solver-2", {}, 2, (16, 32, 64)),
    ("dpm-solver-3", {}, 3, (16, 32, 64)),
    ("dpm-solver++2m", {}, 2, (16, 32, 64)),
    ("ttm-pf", {"derivative": "zero", "order": 1}, 1, (16, 32, 64)),
]


@pytest.mark.parametrize("method,kw,nominal,ns", ORDER_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in ORDER_CASES])
def test_observed_global_order_on_gaussian_data(method, kw, nominal, ns):
    """Gaussian data N(m, s^2 I): closed-form eps and closed-form DDIM-ODE solution (linear in xbar)."""
    p, errs = _observed_order(method, kw, ns)
    assert errs[-1] < errs[0]
    assert abs(p - nominal) <= 0.3, (p, errs)


def test_genie_with_autodiff_is_second_order():
    p, errs = _observed_order("genie", {}, (8, 16, 32))
    assert abs(p - 2) <= 0.3, (p, errs)
    r_ad = sample(eps_gauss, X1_2, 8, method="genie")
    r_ex = sample(eps_gauss, X1_2, 8, method="genie", derivative=P.exact(gauss_derivatives))
    assert torch.allclose(r_ad.x, r_ex.x, rtol=1e-10, atol=1e-12)


def test_ideal_and_zero_providers_reproduce_ddim():
    r_ddim = sample(eps_gauss, X1_2, 7, method="ddim", return_trajectory=True)
    r_zero = sample(eps_gauss, X1_2, 7, method="genie", derivative="zero", return_trajectory=True)
    r_ideal = sample(eps_gauss, X1_2, 7, method="genie", derivative=P.ideal(), return_trajectory=True)
    r_ideal3 = sample(eps_gauss, X1_2, 7, method="ttm", order=3, derivative="ideal")
    assert torch.equal(r_zero.trajectory, r_ddim.trajectory)
    assert torch.allclose(r_ideal.trajectory, r_ddim.trajectory, rtol=1e-12, atol=1e-13)
    assert torch.allclose(r_ideal3.x, r_ddim.x, rtol=1e-12, atol=1e-13)
    # while true derivatives change the result (Gaussian data is not a single point)
    r_genie = sample(eps_gauss, X1_2, 7, method="genie", derivative=P.exact(gauss_derivatives))
    assert float((r_genie.x - r_ddim.x).abs().max()) > 1e-3


def test_deis_weights_integrate_polynomials_in_log_gamma_exactly():
    """DEIS (log-rho): sum_j C_j P(log gamma_j) = int P(log gamma) d gamma for P of degree < q."""
    import numpy as np
    from scipy.integrate import quad

    from taylorsolve.diffusion.samplers.deis import log_rho_weights

    rng = np.random.default_rng(0)
    nodes = np.array([2.0, 3.1, 4.7])          # newest first, sampling runs to smaller gamma
    g_next = 1.3
    for q in (1, 2, 3):
        C = log_rho_weights(nodes[:q], g_next)
        for _ in range(3):
            a = rng.normal(size=q)
            P = lambda g: np.polynomial.polynomial.polyval(np.log(g), a)  # noqa: E731
            exact = quad(P, nodes[0], g_next, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
            assert abs(sum(C[j] * P(nodes[j]) for j in range(q)) - exact) < 1e-12


def test_deis_second_order_weights_match_the_closed_form():
    """The DEIS paper's 2-node log-rho weights, int (log r - log c)/(log b - log c) dr, written out."""
    from taylorsolve.diffusion.samplers.deis import log_rho_weights

    def ind(r, b, c):  # antiderivative of (log r - log c) / (log b - log c)
        return r * (math.log(r) - math.log(c) - 1.0) / (math.log(b) - math.log(c))

    s0, s1, t = 2.0, 3.5, 1.2
    C = log_rho_weights([s0, s1], t)
    assert abs(C[0] - (ind(t, s0, s1) - ind(s0, s0, s1))) < 1e-14
    assert abs(C[1] - (ind(t, s1, s0) - ind(s0, s1, s0))) < 1e-14


def test_deis_order_one_is_ddim_and_higher_orders_differ_from_ab_in_gamma():
    ddim = sample(eps_gauss, X1_2, 9, method="ddim")
    assert torch.allclose(sample(eps_gauss, X1_2, 9, method="deis", order=1).x, ddim.x, rtol=1e-13, atol=1e-14)
    for k in (2, 3):
        a = sample(eps_gauss, X1_2, 9, method="deis", order=k)
        b = sample(eps_gauss, X1_2, 9, method="adams-bashforth", order=k)
        assert float((a.x - b.x).abs().max()) > 1e-4   # fit in log gamma, not in gamma


def test_heun_is_trapezoid_in_xbar_gamma():
    r = sample(eps_gauss, X1_2, 1, method="heun")
    g0, g1 = SCH.gamma(r.times[0]), SCH.gamma(r.times[1])
    xb = X1_2 * torch.sqrt(1 + g0**2)
    d1 = eps_gauss(X1_2, r.times[0])
    xp = xb + (g1 - g0) * d1
    d2 = eps_gauss(xp / torch.sqrt(1 + g1**2), r.times[1])
    ref = (xb + 0.5 * (g1 - g0) * (d1 + d2)) / torch.sqrt(1 + g1**2)
    assert torch.allclose(r.x, ref, rtol=1e-13)


def test_afs_first_step_is_alg2_euler_with_analytic_eps():
    r = sample(eps_gauss, X1_2, 4, method="genie", afs=True, return_trajectory=True)
    g0, g1 = SCH.gamma(r.times[0]), SCH.gamma(r.times[1])
    xbar1 = X1_2 * torch.sqrt(1 + g0**2) + (g1 - g0) * X1_2  # Alg. 2, eps(x_1, 1) ~ x_1 (eq. (75))
    assert torch.allclose(r.trajectory[1], xbar1 / torch.sqrt(1 + g1**2), rtol=1e-13)
    assert r.stats.afs_saved == 1
    # the rest are ordinary GENIE steps from there
    rest = sample(eps_gauss, r.trajectory[1], None, method="genie", grid=r.times[1:])
    assert torch.allclose(rest.x, r.x, rtol=1e-12)


def test_denoise_and_trajectory():
    r = sample(eps_gauss, X1_2, 3, method="dpm-solver-2", return_trajectory=True)
    rd = sample(eps_gauss, X1_2, 3, method="dpm-solver-2", denoise=True)
    t = r.times[-1]
    ref = (r.x - SCH.sigma(t) * eps_gauss(r.x, t)) / SCH.alpha(t)
    assert torch.allclose(rd.x, ref, rtol=1e-13)
    assert r.trajectory.shape == (4, *X1_2.shape)
    assert torch.equal(r.trajectory[0], X1_2) and torch.equal(r.trajectory[-1], r.x)
    assert torch.equal(r.times, time_grid("quadratic", 3, SCH))
    assert rd.trajectory is None


def test_other_parameterizations_give_the_same_samples():
    def x0_model(x, t):  # the single point's x0-prediction is the point itself
        return X0.expand_as(x).clone()

    a = sample(eps_point, X1_3, 4, method="heun")
    b = sample(x0_model, X1_3, 4, method="heun", parameterization="x0")
    assert torch.allclose(a.x, b.x, rtol=1e-10, atol=1e-12)


def test_classifier_free_guidance_and_conditioning():
    calls = {"n": 0}

    def model(x, t, label=None):
        calls["n"] += 1
        shift = 0.0 if label is None else 0.3 * label
        return eps_gauss(x - shift, t)

    w = 1.5
    r = sample(model, X1_2, 4, method="dpm-solver++2m", cond={"label": 1.0}, guidance_scale=w)
    assert r.stats.nfe == 4 and r.stats.model_calls == 8 and calls["n"] == 8

    def guided(x, t):
        return (1 + w) * model(x, t, label=1.0) - w * model(x, t)

    ref = sample(guided, X1_2, 4, method="dpm-solver++2m")
    assert torch.allclose(r.x, ref.x, rtol=1e-13)
    rc = sample(model, X1_2, 4, method="ddim", cond={"label": 1.0})
    rr = sample(lambda x, t: model(x, t, label=1.0), X1_2, 4, method="ddim")
    assert torch.allclose(rc.x, rr.x)
    with pytest.raises(TaylorSolveError, match="cond"):
        sample(model, X1_2, 4, guidance_scale=1.0)


def test_euler_maruyama_is_seeded_and_samples_the_gaussian():
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    x1 = torch.randn(4000, 2, dtype=F64, generator=g(0))
    a = sample(eps_gauss, x1, 200, method="euler-maruyama", grid="linear", generator=g(1))
    b = sample(eps_gauss, x1, 200, method="euler-maruyama", grid="linear", generator=g(1))
    c = sample(eps_gauss, x1[:10], 20, method="euler-maruyama", generator=g(2))
    d = sample(eps_gauss, x1[:10], 20, method="euler-maruyama", generator=g(3))
    assert torch.equal(a.x, b.x)
    assert not torch.allclose(c.x, d.x)
    assert torch.allclose(a.x.mean(0), M, atol=0.05)
    assert torch.allclose(a.x.std(0), torch.full((2,), S, dtype=F64), atol=0.05)


def test_rk45_solves_the_probability_flow_ode():
    r = sample(eps_gauss, X1_2, None, method="rk45", rtol=1e-8, atol=1e-8)
    assert float((r.x - exact_gauss(X1_2, r.times)).abs().max()) < 1e-5
    assert r.stats.nfe == r.stats.extra["scipy_nfev"] > 0
    coarse = sample(eps_gauss, X1_2, 5, method="rk45", rtol=1e-2, atol=1e-2, return_trajectory=True)
    assert coarse.stats.nfe < r.stats.nfe
    assert coarse.trajectory.shape == (6, *X1_2.shape)


def test_bad_inputs():
    with pytest.raises(TaylorSolveError) as ei:
        sample(eps_gauss, X1_2, 3, method="rk4")
    for m in METHODS:
        assert m in str(ei.value)
    with pytest.raises(TaylorSolveError, match="shape"):
        sample(lambda x, t: x[..., :1], X1_2, 3, method="ddim")
    with pytest.raises(TaylorSolveError, match="shape"):
        sample(lambda x, t: x[..., :1], X1_2, 3, method="genie")

    def nan_late(x, t):
        return eps_gauss(x, t) * (float("nan") if float(t) < 0.5 else 1.0)

    for m in ("ddim", "genie", "s-pndm", "heun"):
        with pytest.raises(SolverError, match=r"t = 0\.\d"):
            sample(nan_late, X1_2, 4, method=m, grid="linear")
    with pytest.raises(TaylorSolveError):
        sample(eps_gauss, X1_2, None, grid=torch.tensor([0.5, 0.8, 1.0], dtype=F64))  # increasing
    with pytest.raises(TaylorSolveError):
        sample(eps_gauss, X1_2, None, grid=torch.tensor([1.2, 0.5, 0.1], dtype=F64))  # outside (0, 1]
    with pytest.raises(TaylorSolveError):
        sample(eps_gauss, X1_2, 3, t_cutoff=1.0)
    with pytest.raises(TaylorSolveError):
        sample(eps_gauss, X1_2, 0)
    with pytest.raises(TaylorSolveError, match="disagrees"):
        sample(eps_gauss, X1_2, 5, grid=time_grid("linear", 4, SCH))
    with pytest.raises(TaylorSolveError, match="order"):
        sample(eps_gauss, X1_2, 3, method="ttm")
    with pytest.raises(TaylorSolveError, match="fixed order"):
        sample(eps_gauss, X1_2, 3, method="genie", order=3)
    with pytest.raises(TaylorSolveError, match="derivative"):
        sample(eps_gauss, X1_2, 3, method="ddim", derivative="autodiff")
    with pytest.raises(TaylorSolveError, match="unknown option"):
        sample(eps_gauss, X1_2, 3, method="heun", rtol=1e-3)
    with pytest.raises(TaylorSolveError):
        sample(eps_gauss, X1_2.to(torch.int64), 3)
    with pytest.raises(TaylorSolveError, match="order <= 2"):
        sample(eps_gauss, X1_2, 3, method="ttm", order=3, derivative=lambda x, t, e: e)


def test_default_call_is_ten_genie_steps_and_float32_works():
    x1 = X1_2.to(torch.float32)
    r = sample(lambda x, t: eps_gauss(x.double(), t).float(), x1, 10)
    assert r.stats.method == "genie" and r.stats.steps == 10 and r.stats.order == 2
    assert r.stats.derivative == "autodiff" and r.stats.afs_saved == 0 and r.stats.denoise_nfe == 0
    assert r.x.dtype == torch.float32
    assert torch.allclose(r.x.double(), sample(eps_gauss, X1_2, 10).x, atol=1e-4)
