"""Guidance with derivative heads: eq. (81)'s pair of heads, heads computed inside the network, the exact
guided derivative by autodiff, and the documented gap between eq. (81) and the guided ODE's derivative."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.diffusion import DiffusionModel, sample
from taylorsolve.diffusion import providers as P
from taylorsolve.diffusion.schedules import LinearVPSchedule
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64
SCH = LinearVPSchedule()
X1 = torch.tensor([[0.5, -0.1], [1.0, 2.0], [-0.7, 0.4]], dtype=F64)
# conditional N(m_c, s_c^2 I) and unconditional N(m_u, s_u^2 I) data
M_C, S_C = torch.tensor([1.0, -0.5], dtype=F64), 0.3
M_U, S_U = torch.tensor([0.0, 0.2], dtype=F64), 0.8


def eps_g(x, t, m, s):
    a, sg = SCH.alpha(t), SCH.sigma(t)
    return sg * (x - a * m) / (a * a * s * s + sg * sg)


def model(x, t, c=None):
    """One network, conditional when c == 1 (the convention of sample(cond=...))."""
    return eps_g(x, t, M_C, S_C) if c == 1 else eps_g(x, t, M_U, S_U)


def own_derivative(m, s):
    """d eps/d gamma along the model's own DDIM ODE (a perfect distilled head): (xbar - m) s^2 / (s^2 + g^2)^2."""

    def head(x, t, eps):
        g = SCH.gamma(t)
        xbar = x * torch.sqrt(1 + g * g)
        return (xbar - m) * s * s / (s * s + g * g) ** 2

    return head


HEAD_C, HEAD_U = own_derivative(M_C, S_C), own_derivative(M_U, S_U)


def eq81_by_hand(w, steps):
    """GENIE with eq. (81): xbar' = xbar + h eps_hat + h^2/2 [(1 + w) k_c - w k_u] on the quadratic grid."""
    r = sample(model, X1, steps, method="ddim", cond=1, guidance_scale=w)
    t = r.times
    g = SCH.gamma(t)
    xbar = X1 * torch.sqrt(1 + g[0] ** 2)
    for n in range(steps):
        x = xbar / torch.sqrt(1 + g[n] ** 2)
        e_c, e_u = model(x, t[n], 1), model(x, t[n])
        e_hat = (1 + w) * e_c - w * e_u
        k = (1 + w) * HEAD_C(x, t[n], e_c) - w * HEAD_U(x, t[n], e_u)
        h = g[n + 1] - g[n]
        xbar = xbar + h * e_hat + 0.5 * h * h * k
    return xbar / torch.sqrt(1 + g[-1] ** 2)


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_pair_of_heads_is_eq81_with_each_head_fed_its_own_eps(w):
    r = sample(model, X1, 8, method="genie", cond=1, guidance_scale=w, derivative=(HEAD_C, HEAD_U))
    assert torch.allclose(r.x, eq81_by_hand(w, 8), rtol=1e-12, atol=1e-13)
    assert r.stats.nfe == 8 and r.stats.model_calls == 16 and r.stats.derivative_evals == 16


def test_heads_inside_the_network_give_the_same_eq81():
    """A network returning (eps, k) (a head attached by hooks): derivative="head"."""

    def headed(x, t, c=None):
        m, s = (M_C, S_C) if c == 1 else (M_U, S_U)
        e = eps_g(x, t, m, s)
        return e, own_derivative(m, s)(x, t, e)

    w = 2.0
    net = DiffusionModel(headed, overhead=0.05)
    r = sample(net, X1, 8, method="genie", cond=1, guidance_scale=w, derivative="head")
    assert torch.allclose(r.x, eq81_by_hand(w, 8), rtol=1e-12, atol=1e-13)
    # unguided: the head is the exact derivative along the conditional ODE = GENIE with the exact provider
    r1 = sample(net, X1, 8, method="genie", cond=1, derivative="head")
    r2 = sample(lambda x, t: model(x, t, 1), X1, 8, method="genie", derivative=P.learned(HEAD_C))
    assert torch.allclose(r1.x, r2.x, rtol=1e-13, atol=1e-14)
    # the head's overhead enters budgets (sec. 5): 10 / 1.05 -> 10 evaluations, 20 / 1.05 -> 19
    assert sample(net, X1, nfe=20, method="genie", cond=1, derivative="head").stats.nfe == 19
    with pytest.raises(TaylorSolveError, match="returns \\(eps, k\\)"):
        sample(model, X1, 4, method="genie", derivative="head")


def test_guidance_scale_zero_is_unguided_sampling():
    for deriv in ("autodiff", (HEAD_C, HEAD_U)):
        a = sample(model, X1, 6, method="genie", cond=1, guidance_scale=0.0, derivative=deriv)
        b = sample(lambda x, t: model(x, t, 1), X1, 6, method="genie",
                   derivative="autodiff" if deriv == "autodiff" else HEAD_C)
        assert torch.equal(a.x, b.x) if deriv != "autodiff" else torch.allclose(a.x, b.x, rtol=1e-14, atol=0)


def test_eq81_differs_from_the_guided_derivative_by_the_documented_gap():
    """eq81 - d eps_hat/d gamma = w (1 + w) / sqrt(1 + gamma^2) (J_c - J_u)(eps_u - eps_c) (J: d eps/dx)."""
    w, t = 2.0, torch.tensor(0.3, dtype=F64)
    x = X1
    g = SCH.gamma(t)

    def eps_hat(xx, tt):
        return (1 + w) * model(xx, tt, 1) - w * model(xx, tt)

    # guided ODE derivative by one JVP with the tangent (dx/dgamma, dt/dgamma) along eps_hat (eq. (11)-(12))
    e_hat = eps_hat(x, t)
    dx = e_hat / torch.sqrt(1 + g * g) - g * x / (1 + g * g)
    true = torch.func.jvp(eps_hat, (x, t), (dx, SCH.dt_dgamma(g)))[1]
    e_c, e_u = model(x, t, 1), model(x, t)
    eq81 = (1 + w) * HEAD_C(x, t, e_c) - w * HEAD_U(x, t, e_u)
    jc = torch.func.jvp(lambda xx: model(xx, t, 1), (x,), (e_u - e_c,))[1]
    ju = torch.func.jvp(lambda xx: model(xx, t), (x,), (e_u - e_c,))[1]
    gap = w * (1 + w) / torch.sqrt(1 + g * g) * (jc - ju)
    assert float((eq81 - true - gap).abs().max()) < 1e-12
    assert float(gap.abs().max()) > 1e-2   # the gap is real


def _guided_reference(w, times):
    """The guided ODE is linear here (two Gaussians): integrate it with a fine RK4 in gamma."""
    g = SCH.gamma(times)
    fine = 4000
    gg = torch.linspace(float(g[0]), float(g[-1]), fine + 1, dtype=F64)

    def f(gam, xbar):
        t = SCH.t_from_gamma(gam)
        x = xbar / torch.sqrt(1 + gam * gam)
        return (1 + w) * model(x, t, 1) - w * model(x, t)

    xbar = X1 * torch.sqrt(1 + g[0] ** 2)
    for n in range(fine):
        a, b = gg[n], gg[n + 1]
        h = b - a
        k1 = f(a, xbar)
        k2 = f(a + h / 2, xbar + h / 2 * k1)
        k3 = f(a + h / 2, xbar + h / 2 * k2)
        k4 = f(b, xbar + h * k3)
        xbar = xbar + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return xbar / torch.sqrt(1 + g[-1] ** 2)


def test_autodiff_guided_genie_is_second_order_and_eq81_is_not():
    w = 2.0
    errs_ad, errs_81 = [], []
    for n in (16, 32):
        ref = _guided_reference(w, sample(model, X1, n, method="ddim", cond=1, guidance_scale=w, t_cutoff=0.05).times)
        ad = sample(model, X1, n, method="genie", cond=1, guidance_scale=w, t_cutoff=0.05)
        e81 = sample(model, X1, n, method="genie", cond=1, guidance_scale=w, derivative=(HEAD_C, HEAD_U), t_cutoff=0.05)
        errs_ad.append(float((ad.x - ref).abs().max()))
        errs_81.append(float((e81.x - ref).abs().max()))
    assert abs(math.log2(errs_ad[0] / errs_ad[1]) - 2) < 0.3, errs_ad
    assert abs(math.log2(errs_81[0] / errs_81[1]) - 1) < 0.3, errs_81   # eq. (81) leaves an O(h^2) local error


def test_pair_of_heads_needs_guidance():
    with pytest.raises(TaylorSolveError, match="guidance_scale"):
        sample(model, X1, 4, method="genie", derivative=(HEAD_C, HEAD_U))
