"""UniPC (bh2, data prediction): order conditions, observed orders, exactness, NFE, options; the
``lower_order_final`` rule of the multistep units.  Agreement with diffusers: tests/diffusion/test_diffusers.py."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from taylorsolve.diffusion.encoding import decode, encode
from taylorsolve.diffusion.samplers import sample
from taylorsolve.diffusion.samplers.deis import DEIS
from taylorsolve.diffusion.samplers.dpm_solver import DPMSolverPP2M
from taylorsolve.diffusion.samplers.taylor import AdamsBashforth
from taylorsolve.diffusion.samplers.unipc import UniPC, phi, unipc_weights
from taylorsolve.errors import TaylorSolveError

from _problems import F64, SCH, X0, X1_2, X1_3, eps_gauss, eps_point, exact_gauss, exact_point  # noqa: E402


# -- the coefficients ---------------------------------------------------------------------------------------
def test_phi_functions():
    for z in (-3.0, -1.0, -0.3, -1e-6, 0.0, 0.7, 2.5):
        assert phi(0, z) == pytest.approx(math.exp(z), rel=1e-15)
        if z != 0.0:
            assert phi(1, z) == pytest.approx(math.expm1(z) / z, rel=1e-14)
            assert phi(2, z) == pytest.approx((math.expm1(z) - z) / z**2, rel=1e-9)
        # phi_k(z) = int_0^1 e^{(1-s) z} s^(k-1) / (k-1)! ds
        from scipy.integrate import quad
        for k in (1, 2, 3, 4):
            ref = quad(lambda s: math.exp((1 - s) * z) * s ** (k - 1) / math.factorial(k - 1), 0, 1, epsabs=1e-15)[0]
            assert phi(k, z) == pytest.approx(ref, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("h", [0.05, 0.4, 1.5, -0.3])
def test_weights_integrate_polynomial_data_predictions_exactly(h):
    """(U3) is the order condition: with rho from (U3), B(h) (m_0 + sum rho_k D_k) equals the exact
    integral gamma' int e^lambda x0(lambda) d lambda of (U1) for x0 a polynomial of degree <= K in lambda."""
    from scipy.integrate import quad

    rng = np.random.default_rng(1)
    lam0 = 0.3
    for rks in ([1.0], [-1.0], [-0.8, 1.0], [-1.1, -2.3], [-0.9, -2.0, 1.0]):
        K = len(rks)
        rho = unipc_weights(rks, h)
        for _ in range(3):
            c = rng.normal(size=K + 1)
            x0 = lambda lam: np.polynomial.polynomial.polyval(lam - lam0, c)  # noqa: E731
            m0 = x0(lam0)
            acc = m0 + sum(r * (x0(lam0 + rk * h) - m0) / rk for r, rk in zip(rho, rks))
            approx = -math.expm1(-h) * acc
            exact = quad(lambda lam: math.exp(lam - lam0 - h) * x0(lam), lam0, lam0 + h, epsabs=1e-14, epsrel=1e-13)[0]
            assert approx == pytest.approx(exact, rel=1e-11, abs=1e-13), (rks, h)


def test_weights_tend_to_the_simplified_values():
    """UniP-2 / UniC-1 use rho = 1/2 (paper code, diffusers): the h -> 0 limit of (U3)."""
    assert unipc_weights([1.0], 1e-6)[0] == pytest.approx(0.5, abs=1e-6)
    assert unipc_weights([-1.0], 1e-6)[0] == pytest.approx(0.5, abs=1e-6)
    assert abs(unipc_weights([1.0], 1.0)[0] - 0.5) > 1e-2


# -- the method -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("disable", [False, True])
def test_single_point_data_is_integrated_exactly(order, disable):
    r = sample(eps_point, X1_3, 5, method="unipc", order=order, disable_corrector=disable)
    assert float((r.x - exact_point(X1_3, r.times)).abs().max()) < 1e-12
    rd = sample(eps_point, X1_3, 5, method="unipc", order=order, denoise=True, lower_order_final=True)
    assert float((rd.x - X0).abs().max()) < 1e-12
    enc = encode(eps_point, X1_3, 4, method="unipc", order=order)
    dec = decode(eps_point, enc.x, 4, method="unipc", order=order, denoise=False)
    assert float((dec.x - X1_3).abs().max()) < 1e-11


# (options, observed global order): the corrector adds one order (Theorem 3.1), UniP-p alone has order p
ORDER_CASES = [
    ({"order": 1}, 2, (16, 32, 64)),
    ({"order": 2}, 3, (16, 32, 64)),
    ({"order": 3}, 4, (16, 32, 64)),
    ({"order": 2, "disable_corrector": True}, 2, (32, 64, 128)),
    ({"order": 3, "disable_corrector": True}, 3, (32, 64, 128)),
]


@pytest.mark.parametrize("kw,nominal,ns", ORDER_CASES, ids=[str(c[0]) for c in ORDER_CASES])
def test_observed_order_on_gaussian_data(kw, nominal, ns):
    errs = []
    for n in ns:
        r = sample(eps_gauss, X1_2, n, method="unipc", grid="quadratic", **kw)
        errs.append(float((r.x - exact_gauss(X1_2, r.times)).abs().max()))
    p = math.log2(errs[-2] / errs[-1])
    assert errs[-1] < errs[0]
    assert abs(p - nominal) <= 0.3, (p, errs)
    unit = UniPC(**kw)
    assert unit.accuracy_order == nominal


def test_predictor_alone_is_dpm_solver_pp_2m_and_ddim():
    """UniP-2 with rho = 1/2 is DPM-Solver++(2M); UniP-1 is DDIM (module docstring)."""
    for grid in ("quadratic", "logsnr"):
        a = sample(eps_gauss, X1_2, 9, method="unipc", order=2, disable_corrector=True, grid=grid)
        b = sample(eps_gauss, X1_2, 9, method="dpm-solver++2m", grid=grid)
        assert torch.allclose(a.x, b.x, rtol=1e-13, atol=1e-14)
    a = sample(eps_gauss, X1_2, 9, method="unipc", order=1, disable_corrector=True)
    assert torch.allclose(a.x, sample(eps_gauss, X1_2, 9, method="ddim").x, rtol=1e-13, atol=1e-14)
    # and the corrector changes the result (Gaussian data is not a single point)
    c = sample(eps_gauss, X1_2, 9, method="unipc", order=2)
    assert float((c.x - b.x).abs().max()) > 1e-4


def test_one_step_by_hand():
    """Two steps of UniPC-2 written out: step 0 (DDIM), corrector UniC-1 (rho = 1/2), predictor UniP-2."""
    times = torch.tensor([1.0, 0.6, 0.3], dtype=F64)
    r = sample(eps_gauss, X1_2, None, method="unipc", grid=times, order=2, return_trajectory=True)
    g = SCH.gamma(times)
    lam = -torch.log(g)
    xb0 = X1_2 * torch.sqrt(1 + g[0] ** 2)
    m0 = xb0 - g[0] * eps_gauss(X1_2, times[0])
    xb1 = (g[1] / g[0]) * xb0 + (1 - g[1] / g[0]) * m0                   # DDIM
    m1 = xb1 - g[1] * eps_gauss(xb1 / torch.sqrt(1 + g[1] ** 2), times[1])
    xb1c = (g[1] / g[0]) * xb0 + (1 - g[1] / g[0]) * (m0 + 0.5 * (m1 - m0))   # UniC-1
    h = lam[2] - lam[1]
    r1 = (lam[0] - lam[1]) / h
    xb2 = (g[2] / g[1]) * xb1c + (1 - g[2] / g[1]) * (m1 + 0.5 * (m0 - m1) / r1)   # UniP-2 from the corrected state
    assert torch.allclose(r.trajectory[1], xb1 / torch.sqrt(1 + g[1] ** 2), rtol=1e-14)   # the predictor's state
    assert torch.allclose(r.x, xb2 / torch.sqrt(1 + g[2] ** 2), rtol=1e-13)


@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("denoise", [False, True])
def test_nfe_is_steps_and_the_last_step_is_not_corrected(afs, denoise):
    calls = {"n": 0}

    def model(x, t):
        calls["n"] += 1
        return eps_gauss(x, t)

    r = sample(model, X1_2, 7, method="unipc", order=3, afs=afs, denoise=denoise)
    assert r.stats.nfe == calls["n"] == 7 - int(afs) + int(denoise)
    assert r.stats.extra["corrections"] == 6
    assert r.stats.extra["step_orders"] == [1, 2, 3, 3, 3, 3, 3]
    with_budget = sample(model, X1_2, method="unipc", nfe=10, afs=afs, denoise=denoise)
    assert with_budget.stats.steps == 10 + int(afs) - int(denoise)


def test_disable_corrector_options():
    r = sample(eps_gauss, X1_2, 6, method="unipc", disable_corrector=[1, 4])
    assert r.stats.extra["corrections"] == 5 - 2
    r = sample(eps_gauss, X1_2, 6, method="unipc", disable_corrector=True)
    assert r.stats.extra["corrections"] == 0
    for bad in ("yes", [1, -2], [0.5], 3):
        with pytest.raises(TaylorSolveError, match="disable_corrector"):
            sample(eps_gauss, X1_2, 6, method="unipc", disable_corrector=bad)
    with pytest.raises(TaylorSolveError, match="supports order 1, 2, 3"):
        sample(eps_gauss, X1_2, 6, method="unipc", order=4)
    assert UniPC().order == 2


# -- lower_order_final: diffusers' rule, the denoising step counted as the final one ---------------------------
def _ctx(steps: int, denoise: bool):
    return types.SimpleNamespace(steps=steps, denoise=denoise)


@pytest.mark.parametrize("cls", [DEIS, DPMSolverPP2M, AdamsBashforth, UniPC])
def test_lower_order_final_rule(cls):
    unit = cls(order=3 if cls is not DPMSolverPP2M else 2, lower_order_final=True)
    p = unit.order
    # 10 grid steps: the last one first order, the one before at most second
    assert [unit.lowered_order(_ctx(10, False), n, p) for n in range(10)] == [p] * 8 + [min(p, 2), 1]
    # with denoising, that is the final (first-order) step: the last grid step is at most second order
    assert [unit.lowered_order(_ctx(10, True), n, p) for n in range(10)] == [p] * 9 + [min(p, 2)]
    # diffusers' threshold: DPM-Solver and DEIS only below 15 steps (the denoising step counts), UniPC always
    lowered = [unit.lowered_order(_ctx(14, True), n, p) for n in range(14)]
    assert lowered == ([p] * 14 if cls is not UniPC else [p] * 13 + [min(p, 2)])
    assert [unit.lowered_order(_ctx(14, False), n, p) for n in range(14)] == [p] * 12 + [min(p, 2), 1]
    off = cls(order=p)
    assert [off.lowered_order(_ctx(5, False), n, p) for n in range(5)] == [p] * 5


def test_lower_order_final_with_denoise_in_a_run():
    """The orders UniPC-3 uses on 6 grid steps, with and without the final denoising step."""
    r = sample(eps_gauss, X1_2, 6, method="unipc", order=3, lower_order_final=True, denoise=True)
    assert r.stats.extra["step_orders"] == [1, 2, 3, 3, 3, 2]
    r = sample(eps_gauss, X1_2, 6, method="unipc", order=3, lower_order_final=True)
    assert r.stats.extra["step_orders"] == [1, 2, 3, 3, 2, 1]
    r = sample(eps_gauss, X1_2, 6, method="unipc", order=3, denoise=True)
    assert r.stats.extra["step_orders"] == [1, 2, 3, 3, 3, 3]
