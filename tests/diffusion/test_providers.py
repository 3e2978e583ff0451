"""Derivative providers for d^k eps / d gamma^k along the DDIM ODE (GENIE eq. (12), app. B.2, B.3)."""
from __future__ import annotations

import math

import pytest
import torch

import taylorsolve
from taylorsolve.errors import TaylorSolveError
from taylorsolve.diffusion import providers as P
from taylorsolve.diffusion.odes import ddim_ode_rhs
from taylorsolve.diffusion.schedules import LinearVPSchedule

F64 = torch.float64
SCH = LinearVPSchedule()
X0 = torch.tensor([0.3, -1.2, 2.0], dtype=F64)   # single data point
M = torch.tensor([0.5, -1.0, 0.25], dtype=F64)    # Gaussian data N(M, S^2 I)
S = 0.5


def eps_point(x, t):
    """Exact eps for data = the single point X0: (x - alpha x0) / sigma (eq. (38))."""
    return (x - SCH.alpha(t) * X0) / SCH.sigma(t)


def eps_gauss(x, t):
    """Exact eps for Gaussian data N(M, S^2 I): sigma (x - alpha m) / (alpha^2 s^2 + sigma^2)."""
    a, s = SCH.alpha(t), SCH.sigma(t)
    return s * (x - a * M) / (a * a * S * S + s * s)


def gauss_xbar(xbar0, g0, g):
    """Closed-form DDIM-ODE solution for Gaussian data: xbar - m scales by sqrt((s^2+g^2)/(s^2+g0^2))."""
    return M + (xbar0 - M) * torch.sqrt((S * S + g * g) / (S * S + g0 * g0))


def gauss_derivatives(xbar, gamma, eps, order):
    """d^k eps/d gamma^k = (xbar - m)/sqrt(s^2+g^2) * phi^(k)(g), phi(g) = g (s^2 + g^2)^(-1/2)."""
    g = torch.as_tensor(gamma, dtype=F64)
    r2 = S * S + g * g
    K = (xbar - M) / torch.sqrt(r2)
    phis = [S * S * r2**-1.5, -3 * S * S * g * r2**-2.5, 3 * S * S * (4 * g * g - S * S) * r2**-3.5]
    return [K * p for p in phis[:order]]


XBAR = torch.tensor([[0.7, -0.4, 1.9], [-1.5, 0.2, 0.6]], dtype=F64)


@pytest.mark.parametrize("gamma", [0.05, 0.8, 12.0])
def test_single_point_derivative_is_zero_along_ddim_ode(gamma):
    """App. B.2: for single-point data eps is constant along the DDIM ODE (straight lines)."""
    rhs = ddim_ode_rhs(eps_point, SCH)
    g = torch.tensor(gamma, dtype=F64)
    c = P.autodiff().coefficients(rhs, g, XBAR, 3)
    eps = c[1]
    assert torch.allclose(eps, (XBAR - X0) / gamma, rtol=1e-12, atol=1e-12)
    scale = float(eps.abs().max()) / gamma
    assert float(c[2].abs().max()) < 1e-10 * max(1.0, scale)
    assert float(c[3].abs().max()) < 1e-9 * max(1.0, scale / gamma)


@pytest.mark.parametrize("gamma", [0.1, 0.9, 4.0])
def test_autodiff_equals_eq12_terms_and_central_difference(gamma):
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    g = torch.tensor(gamma, dtype=F64)
    prov = P.autodiff()
    c = prov.coefficients(rhs, g, XBAR, 2)
    d_ad = 2.0 * c[2]
    # eq. (12), its three terms computed by separate JVPs
    x = XBAR / math.sqrt(1 + gamma**2)
    t = SCH.t_from_gamma(g)
    terms = P.autodiff_terms(eps_gauss, x, t, SCH)
    assert torch.allclose(terms.total, d_ad, rtol=1e-10, atol=1e-12)
    # the individual terms against the Gaussian's analytic Jacobian k I, k = sigma/(alpha^2 s^2 + sigma^2)
    a, s = SCH.alpha(t), SCH.sigma(t)
    k = s / (a * a * S * S + s * s)
    assert torch.allclose(terms.jvp1, k * terms.eps, rtol=1e-12)
    assert torch.allclose(terms.jvp2, k * x, rtol=1e-12)
    assert torch.allclose(terms.coef1, torch.tensor(1 / math.sqrt(1 + gamma**2), dtype=F64))
    assert torch.allclose(terms.coef2, torch.tensor(-gamma / (1 + gamma**2), dtype=F64))
    assert float(terms.time_term.abs().max()) > 1e-6  # not a vanishing term
    # central finite difference of eps along the exact ODE solution
    h = 1e-5 * gamma
    def eps_on_path(gg):
        gg = torch.tensor(gg, dtype=F64)
        xb = gauss_xbar(XBAR, g, gg)
        return eps_gauss(xb / torch.sqrt(1 + gg * gg), SCH.t_from_gamma(gg))
    d_fd = (eps_on_path(gamma + h) - eps_on_path(gamma - h)) / (2 * h)
    assert torch.allclose(d_fd, d_ad, rtol=1e-6, atol=1e-8)
    # and the closed form
    assert torch.allclose(gauss_derivatives(XBAR, g, None, 1)[0], d_ad, rtol=1e-10, atol=1e-12)
    assert prov.counters.f_evals == 1 and prov.counters.jvp_passes == 1


def test_autodiff_second_derivative_matches_closed_form():
    """TTM-3 (app. B.3): nested JVPs give d^2 eps/d gamma^2."""
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    g = torch.tensor(0.6, dtype=F64)
    c = P.autodiff().coefficients(rhs, g, XBAR, 3)
    ref = gauss_derivatives(XBAR, g, None, 2)
    assert torch.allclose(2 * c[2], ref[0], rtol=1e-10)
    assert torch.allclose(6 * c[3], ref[1], rtol=1e-9)


def test_exact_provider_and_includes_eps_convention():
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    g = torch.tensor(0.6, dtype=F64)
    c_ad = P.autodiff().coefficients(rhs, g, XBAR, 4)
    prov = P.exact(gauss_derivatives)
    c = prov.coefficients(rhs, g, XBAR, 4)
    for a, b in zip(c, c_ad):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert prov.counters.derivative_evals == 1 and prov.counters.f_evals == 1

    def with_eps(xbar, gamma, eps, order):
        return [eps] + gauss_derivatives(xbar, gamma, eps, order)

    c2 = P.exact(with_eps, includes_eps=True).coefficients(rhs, g, XBAR, 3)
    assert torch.allclose(c2[3], c_ad[3], rtol=1e-9)
    with pytest.raises(TaylorSolveError, match="needs 3"):
        P.exact(lambda xb, gm, e, o: gauss_derivatives(xb, gm, e, 1)).coefficients(rhs, g, XBAR, 4)


def test_ideal_provider_vanishes_to_rounding_on_ddim_ode():
    """Eq. (44): the ideal derivative trick gives d eps/d gamma = 0, for any model (here Gaussian data)."""
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    for gamma in (0.05, 1.0, 30.0):
        g = torch.tensor(gamma, dtype=F64)
        c = P.ideal().coefficients(rhs, g, XBAR, 3)
        scale = float(c[1].abs().max())
        assert float(c[2].abs().max()) <= 1e-13 * scale / gamma + 1e-15
        assert float(c[3].abs().max()) <= 1e-12 * scale / gamma**2 + 1e-15
        # ... although the true derivative is far from zero
        true = float((2 * P.autodiff().coefficients(rhs, g, XBAR, 2)[2]).abs().max())
        assert true > 1e5 * (1e-13 * scale / gamma + 1e-15)


def test_ideal_trick_on_probability_flow_ode_is_eq51():
    """App. B.2, eq. (51): on the PF ODE the ideal derivative does not vanish.

    Re-deriving eq. (47) -> (51) gives ``- beta^2 / (4 sigma)`` for the second eps coefficient; the
    paper prints ``+``.  The corrected form is checked here, and against a central difference of
    ``f`` along the single-point (surrogate) trajectory ``x(t') = alpha' x_0 + sigma' eps``.
    """
    from taylorsolve.diffusion.odes import probability_flow_rhs

    rhs = probability_flow_rhs(eps_gauss, SCH)
    x = XBAR * 0.3
    for tv in (0.05, 0.4, 0.9):
        t = torch.tensor(tv, dtype=F64)
        c = P.IdealPFBackend(SCH).coefficients(rhs, t, x, 2)
        eps = eps_gauss(x, t)
        b, db = SCH.beta(t), SCH.beta_1 - SCH.beta_0
        s, a = SCH.sigma(t), SCH.alpha(t)
        e_int = a**2  # exp(-int_0^t beta)
        ref = (db / (2 * s) - b * b / (4 * s) - b * b * e_int / (4 * s**3)) * eps + (-db / 2 + b * b / 4) * x
        assert torch.allclose(2 * c[2], ref, rtol=1e-9, atol=1e-10)
        assert float(ref.abs().max()) > 1e-3
        printed = ref + (b * b / (2 * s)) * eps  # eq. (51) as printed (sign slip)
        assert not torch.allclose(2 * c[2], printed, rtol=1e-3)
        x0 = (x - s * eps) / a

        def f_path(tq):
            tq = torch.tensor(tq, dtype=F64)
            xq = SCH.alpha(tq) * x0 + SCH.sigma(tq) * eps
            return -0.5 * SCH.beta(tq) * (xq - eps / SCH.sigma(tq))  # eps is constant on this path

        h = 1e-5
        assert torch.allclose((f_path(tv + h) - f_path(tv - h)) / (2 * h), ref, rtol=1e-6, atol=1e-7)


def test_learned_head_receives_x_t_eps_and_is_first_order_only():
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    g = torch.tensor(0.7, dtype=F64)
    seen = {}

    def head(x, t, eps):
        seen.update(x=x, t=t, eps=eps)
        return gauss_derivatives(x * torch.sqrt(1 + SCH.gamma(t) ** 2), SCH.gamma(t), eps, 1)[0]

    prov = P.learned(head)
    c = prov.coefficients(rhs, g, XBAR, 2)
    t = SCH.t_from_gamma(g)
    assert torch.allclose(seen["x"], XBAR / torch.sqrt(1 + g * g))
    assert torch.allclose(seen["t"], t) and seen["t"].dtype == F64 and seen["t"].ndim == 0
    assert torch.allclose(seen["eps"], c[1])
    assert torch.allclose(2 * c[2], gauss_derivatives(XBAR, g, None, 1)[0], rtol=1e-10)
    assert prov.counters.derivative_evals == 1
    with pytest.raises(TaylorSolveError, match="order <= 2"):
        prov.coefficients(rhs, g, XBAR, 3)


def test_zero_provider_and_resolution_errors():
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    c = P.zero().coefficients(rhs, torch.tensor(0.5, dtype=F64), XBAR, 3)
    assert float(c[2].abs().max()) == 0.0 and float(c[3].abs().max()) == 0.0
    assert isinstance(P.get_provider(None), P.AutodiffProvider)
    assert isinstance(P.get_provider("finite-difference"), P.FiniteDifferenceProvider)
    assert isinstance(P.get_provider(lambda x, t, e: e), P.LearnedProvider)
    with pytest.raises(TaylorSolveError, match="unknown derivative provider"):
        P.get_provider("magic")
    with pytest.raises(TaylorSolveError):
        P.get_provider(3.0)


def test_provider_is_a_core_backend_for_solve():
    """GENIE is literally taylorsolve.solve on the DDIM ODE with a provider as backend."""
    rhs = ddim_ode_rhs(eps_gauss, SCH)
    gam = torch.linspace(2.0, 0.5, 5, dtype=F64)
    sol = taylorsolve.solve(rhs, XBAR, gam, order=2, backend=P.exact(gauss_derivatives))
    sol_ad = taylorsolve.solve(rhs, XBAR, gam, order=2, backend=P.autodiff())
    assert torch.allclose(sol.ys, sol_ad.ys, rtol=1e-10, atol=1e-12)
    assert sol.stats.f_evals == 4 and sol.stats.derivative_evals == 4


def test_fused_autodiff_is_second_order_with_one_jvp_per_step():
    """derivative="autodiff_fused": eps from the JVP's primal, tangent from the previous step's prediction."""
    import math

    from taylorsolve.diffusion import sample

    SCH_ = LinearVPSchedule()
    M_, S_ = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.5
    calls = {"n": 0}

    def eps(x, t):
        calls["n"] += 1
        a, s = SCH_.alpha(t), SCH_.sigma(t)
        return s * (x - a * M_) / (a * a * S_ * S_ + s * s)

    x1 = torch.tensor([[0.5, -0.1], [1.0, 2.0]], dtype=torch.float64)
    g = lambda tt: SCH_.gamma(tt)  # noqa: E731
    errs, diffs = [], []
    for n in (16, 32, 64):
        calls["n"] = 0
        r = sample(eps, x1, n, method="genie", derivative="autodiff_fused", t_cutoff=0.01)
        assert calls["n"] == n + 1            # one forward pass on the first step, then one JVP per step
        assert r.stats.nfe == n and r.stats.jvp_passes == n
        exact = sample(eps, x1, n, method="genie", t_cutoff=0.01)
        g0, g1 = g(r.times[0]), g(r.times[-1])
        u = (x1 * torch.sqrt(1 + g0 * g0) - M_) * torch.sqrt((S_ * S_ + g1 * g1) / (S_ * S_ + g0 * g0))
        ref = (u + M_) / torch.sqrt(1 + g1 * g1)
        errs.append(float((r.x - ref).abs().max()))
        diffs.append(float((r.x - exact.x).abs().max()))
    assert abs(math.log2(errs[-2] / errs[-1]) - 2) < 0.3, errs
    assert all(d < e for d, e in zip(diffs, errs))      # the prediction's error is below the method's own
    assert diffs[-1] > 0.0
