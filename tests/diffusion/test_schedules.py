"""Tests of taylorsolve.diffusion.schedules: closed forms vs autograd, inverses, validation."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taylorsolve.diffusion.schedules import (
    CosineVPSchedule,
    CustomSchedule,
    LinearVPSchedule,
    Schedule,
    get_schedule,
)
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64


def _cosine_custom() -> CustomSchedule:
    """The cosine schedule written naively (VP), solved by the generic machinery."""
    s, te = 0.008, 0.9946
    c0 = math.cos(0.5 * math.pi * s / (1 + s))

    def alpha(t):
        return torch.cos(0.5 * math.pi * (te * t + s) / (1 + s)) / c0

    def sigma(t):
        return torch.sqrt(1 - alpha(t) ** 2)

    return CustomSchedule(alpha, sigma, name="cosine-naive")


def _non_vp() -> CustomSchedule:
    """A non-variance-preserving schedule: alpha = exp(-t), sigma = 2 t (+ small offset)."""
    return CustomSchedule(lambda t: torch.exp(-t), lambda t: 2.0 * t + 1e-3, name="non-vp")


SCHEDULES = {
    "linear": LinearVPSchedule(),
    "linear-other": LinearVPSchedule(beta_0=0.5, beta_1=12.0),
    "cosine": CosineVPSchedule(),
    "custom-linear": CustomSchedule(LinearVPSchedule().alpha, LinearVPSchedule().sigma),
    "custom-cosine": _cosine_custom(),
    "custom-non-vp": _non_vp(),
}

T = torch.cat([torch.tensor([1e-4, 1e-3, 3e-3], dtype=F64), torch.linspace(0.01, 1.0, 40, dtype=F64)])


def _autograd_derivative(fn, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_gamma_log_snr_consistent(name):
    s = SCHEDULES[name]
    a, sg = s.marginal_params(T)
    assert a.dtype == F64 and sg.dtype == F64
    assert torch.allclose(s.gamma(T), sg / a, rtol=1e-13, atol=0)
    assert torch.allclose(s.log_snr(T), -torch.log(s.gamma(T)), rtol=1e-12, atol=1e-13)
    assert (torch.diff(s.log_snr(T)) < 0).all()
    if s.variance_preserving:
        assert torch.allclose(a**2 + sg**2, torch.ones_like(a), atol=1e-14)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_inverse_round_trips(name):
    s = SCHEDULES[name]
    t_g = s.t_from_gamma(s.gamma(T))
    t_l = s.t_from_log_snr(s.log_snr(T))
    assert t_g.dtype == F64 and t_g.shape == T.shape
    assert torch.allclose(t_g, T, rtol=1e-10, atol=1e-13), (t_g - T).abs().max()
    assert torch.allclose(t_l, T, rtol=1e-10, atol=1e-13), (t_l - T).abs().max()
    # gamma -> t -> gamma as well
    g = s.gamma(T)
    assert torch.allclose(s.gamma(s.t_from_gamma(g)), g, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_dt_dgamma_vs_autograd(name):
    s = SCHEDULES[name]
    t = T[T > 1e-3]
    g = s.gamma(t)
    dgdt = _autograd_derivative(s.gamma, t)
    assert torch.allclose(s.dt_dgamma(g), 1.0 / dgdt, rtol=1e-9)
    # and the inverse differentiated directly by reverse-mode autograd
    assert torch.allclose(_autograd_derivative(s.t_from_gamma, g), 1.0 / dgdt, rtol=1e-9)


def test_eq_67_literal():
    """Eq. (67) as printed, for beta(t) = 0.1 + 19.9 t."""
    s = LinearVPSchedule()
    g = s.gamma(T)
    eq67 = 2 * g / (19.9 * (g**2 + 1)) / torch.sqrt((0.1 / 19.9) ** 2 + 2 * torch.log(g**2 + 1) / 19.9)
    assert torch.allclose(s.dt_dgamma(g), eq67, rtol=1e-13)
    assert torch.allclose(s.alpha(T) ** 2, torch.exp(-(0.1 * T + 19.9 * T**2 / 2)), rtol=1e-14)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_time_derivatives_vs_autograd(name):
    s = SCHEDULES[name]
    t = T[T > 1e-3]
    assert torch.allclose(s.dalpha_dt(t), _autograd_derivative(s.alpha, t), rtol=1e-10, atol=1e-14)
    assert torch.allclose(s.dsigma_dt(t), _autograd_derivative(s.sigma, t), rtol=1e-10, atol=1e-14)
    f = _autograd_derivative(lambda u: torch.log(s.alpha(u)), t)
    assert torch.allclose(s.dlog_alpha_dt(t), f, rtol=1e-10, atol=1e-14)
    assert torch.allclose(s.beta(t), -2 * f, rtol=1e-10, atol=1e-14)
    sig = s.sigma(t)
    g2 = _autograd_derivative(lambda u: s.sigma(u) ** 2, t) - 2 * f * sig**2
    assert torch.allclose(s.g2(t), g2, rtol=1e-9, atol=1e-12)
    if s.variance_preserving:
        assert torch.allclose(s.g2(t), s.beta(t), rtol=1e-9)


def test_linear_beta():
    s = LinearVPSchedule(beta_0=0.3, beta_1=7.0)
    assert torch.allclose(s.beta(T), 0.3 + 6.7 * T, rtol=1e-14)
    assert torch.allclose(s.g2(T), s.beta(T))


def test_cosine_matches_nichol_dhariwal():
    s = CosineVPSchedule(s=0.008, t_end=0.9946)

    def fbar(u):
        return torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    assert float(s.alpha(torch.tensor(0.0, dtype=F64))) == pytest.approx(1.0, abs=1e-15)
    assert torch.allclose(s.alpha(T) ** 2, fbar(0.9946 * T) / fbar(torch.zeros(1, dtype=F64)), rtol=1e-12)
    assert 100 < float(s.gamma(torch.tensor(1.0))) < 140


def _nth_derivative(fn, k):
    if k == 0:
        return fn
    inner = _nth_derivative(fn, k - 1)
    return lambda x: torch.func.jvp(inner, (x,), (torch.ones_like(x),))[1]


@pytest.mark.parametrize("gamma0", [0.05, 20.0])
def test_generic_inverse_higher_derivatives(gamma0):
    """The chord-refined numerical inverse has exact derivatives (up to refine_steps) in gamma."""
    closed = LinearVPSchedule()
    generic = SCHEDULES["custom-linear"]
    g = torch.tensor(gamma0, dtype=F64)
    for k in range(5):
        a = float(_nth_derivative(closed.t_from_gamma, k)(g))
        b = float(_nth_derivative(generic.t_from_gamma, k)(g))
        assert b == pytest.approx(a, rel=1e-7, abs=1e-12), (k, a, b)


def test_cosine_inverse_derivatives_vs_generic():
    closed = CosineVPSchedule()
    generic = SCHEDULES["custom-cosine"]
    g = torch.tensor(0.7, dtype=F64)
    for k in range(4):
        a = float(_nth_derivative(closed.t_from_gamma, k)(g))
        b = float(_nth_derivative(generic.t_from_gamma, k)(g))
        assert b == pytest.approx(a, rel=1e-6, abs=1e-10), (k, a, b)


def test_inputs_converted_to_float64():
    s = LinearVPSchedule()
    out32 = s.gamma(torch.tensor([0.5], dtype=torch.float32))
    assert out32.dtype == F64
    assert s.gamma(0.5).dtype == F64 and s.gamma(0.5).ndim == 0
    assert s.t_from_gamma(1.0).dtype == F64
    assert SCHEDULES["custom-non-vp"].t_from_gamma(torch.tensor(0.5, dtype=torch.float32)).dtype == F64


def test_batched_shapes():
    s = SCHEDULES["custom-non-vp"]
    t = torch.rand(3, 4, dtype=F64) * 0.9 + 0.05
    assert s.t_from_gamma(s.gamma(t)).shape == (3, 4)
    assert torch.allclose(s.t_from_gamma(s.gamma(t)), t, rtol=1e-10)


def test_custom_out_of_range_raises():
    s = SCHEDULES["custom-linear"]
    with pytest.raises(TaylorSolveError, match="outside the range"):
        s.t_from_gamma(torch.tensor(1e4, dtype=F64))
    non_vp = SCHEDULES["custom-non-vp"]
    with pytest.raises(TaylorSolveError, match="outside the range"):
        non_vp.t_from_gamma(torch.tensor(1e-9, dtype=F64))  # gamma(0) = 1e-3 > 1e-9


def test_custom_validation_errors():
    with pytest.raises(TaylorSolveError, match="sigma"):
        CustomSchedule(lambda t: torch.ones_like(t), lambda t: t - 0.5)
    with pytest.raises(TaylorSolveError, match="alpha"):
        CustomSchedule(lambda t: 0.5 - t, lambda t: t)
    with pytest.raises(TaylorSolveError, match="decrease"):
        CustomSchedule(lambda t: torch.ones_like(t), lambda t: 1.1 + torch.sin(6 * t))
    with pytest.raises(TaylorSolveError, match="shaped like t"):
        CustomSchedule(lambda t: torch.ones(3, dtype=F64), lambda t: t)
    with pytest.raises(TaylorSolveError):
        CustomSchedule("not callable", lambda t: t)  # type: ignore[arg-type]
    assert not SCHEDULES["custom-non-vp"].variance_preserving
    assert SCHEDULES["custom-cosine"].variance_preserving


def test_constructor_validation():
    with pytest.raises(TaylorSolveError):
        LinearVPSchedule(beta_0=-1.0)
    with pytest.raises(TaylorSolveError):
        LinearVPSchedule(beta_1=0.0)
    with pytest.raises(TaylorSolveError):
        CosineVPSchedule(t_end=1.0)
    with pytest.raises(TaylorSolveError):
        CosineVPSchedule(s=0.0)


def test_get_schedule():
    assert isinstance(get_schedule("linear"), LinearVPSchedule)
    assert isinstance(get_schedule(None), LinearVPSchedule)
    assert isinstance(get_schedule("cosine"), CosineVPSchedule)
    assert get_schedule("linear", beta_1=10.0).beta_1 == 10.0
    s = CosineVPSchedule()
    assert get_schedule(s) is s
    with pytest.raises(TaylorSolveError, match="unknown schedule"):
        get_schedule("sigmoid")
    with pytest.raises(TaylorSolveError):
        get_schedule(s, beta_1=3.0)
    assert isinstance(s, Schedule)


@settings(deadline=None)
@given(
    beta_0=st.floats(0.01, 2.0),
    beta_1=st.floats(1.0, 30.0),
    t=st.floats(1e-4, 1.0),
)
def test_linear_round_trip_property(beta_0, beta_1, t):
    s = LinearVPSchedule(beta_0=beta_0, beta_1=beta_1)
    tt = torch.tensor(t, dtype=F64)
    assert float(s.t_from_gamma(s.gamma(tt))) == pytest.approx(t, rel=1e-10)
    assert float(s.t_from_log_snr(s.log_snr(tt))) == pytest.approx(t, rel=1e-10)
    g = s.gamma(tt)
    assert float(s.dt_dgamma(g)) == pytest.approx(1.0 / float(s.dgamma_dt(tt)), rel=1e-9)
