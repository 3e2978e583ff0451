"""Tests of taylorsolve.diffusion.parameterization: conversions and the EpsModel wrapper."""
from __future__ import annotations

import itertools

import pytest
import torch

from taylorsolve.diffusion.parameterization import (
    PARAMETERIZATIONS,
    EpsModel,
    broadcast_to_x,
    eps_from_score,
    eps_from_v,
    eps_from_x0,
    from_eps,
    score_from_eps,
    to_eps,
    v_from_eps,
    x0_from_eps,
    x0_from_v,
)
from taylorsolve.diffusion.schedules import CosineVPSchedule, CustomSchedule, LinearVPSchedule
from taylorsolve.errors import SolverError, TaylorSolveError

F64 = torch.float64
M, S = 0.7, 0.4  # Gaussian data N(M, S^2 I)


def gaussian_predictions(x, t, schedule):
    """Exact predictions for data N(M, S^2 I): p_t = N(alpha M, (alpha^2 S^2 + sigma^2) I)."""
    a, s = schedule.marginal_params(t)
    if a.ndim == 1:
        a = a.reshape(-1, *([1] * (x.ndim - 1)))
        s = s.reshape(-1, *([1] * (x.ndim - 1)))
    a, s = a.to(x.dtype), s.to(x.dtype)
    var = a * a * S**2 + s * s
    y = x - a * M
    score = -y / var
    eps = s * y / var
    x0 = M + a * S**2 * y / var  # E[x0 | x_t]
    v = a * eps - s * x0
    return {"eps": eps, "x0": x0, "v": v, "score": score}


def test_round_trips_scalar_and_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, dtype=F64, generator=g)
    val = torch.randn(5, 3, dtype=F64, generator=g)
    coeffs = [
        (0.6, 0.8),  # VP
        (torch.tensor(0.3, dtype=F64), torch.tensor(0.9, dtype=F64)),  # non-VP, 0-d
        (torch.rand(5, dtype=F64, generator=g) + 0.1, torch.rand(5, dtype=F64, generator=g) + 0.1),  # [B], non-VP
    ]
    for a, s in coeffs:
        for p in PARAMETERIZATIONS:
            eps = to_eps(from_eps(val, p, x, a, s), p, x, a, s)
            assert torch.allclose(eps, val, rtol=1e-12, atol=1e-12), p
            back = from_eps(to_eps(val, p, x, a, s), p, x, a, s)
            assert torch.allclose(back, val, rtol=1e-12, atol=1e-12), p
        # pairwise consistency through x0
        x0 = x0_from_eps(x, val, a, s)
        assert torch.allclose(eps_from_x0(x, x0, a, s), val)
        v = v_from_eps(x, val, a, s)
        assert torch.allclose(x0_from_v(x, v, a, s), x0)
        assert torch.allclose(eps_from_v(x, v, a, s), val)
        assert torch.allclose(eps_from_score(x, score_from_eps(x, val, a, s), a, s), val)


def test_vp_formulas():
    """For VP: v = alpha eps - sigma x0, eps = alpha v + sigma x, x0 = alpha x - sigma v."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, dtype=F64, generator=g)
    eps = torch.randn(4, dtype=F64, generator=g)
    a, s = 0.6, 0.8
    x = a * x0 + s * eps
    v = a * eps - s * x0
    assert torch.allclose(v_from_eps(x, eps, a, s), v)
    assert torch.allclose(eps_from_v(x, v, a, s), a * v + s * x)
    assert torch.allclose(x0_from_v(x, v, a, s), a * x - s * v)
    assert torch.allclose(score_from_eps(x, eps, a, s), -eps / s)


def test_broadcast_to_x():
    x = torch.zeros(3, 2, 2)
    assert broadcast_to_x(torch.ones(3, dtype=F64), x).shape == (3, 1, 1)
    assert broadcast_to_x(torch.ones(3, dtype=F64), x).dtype == x.dtype
    assert broadcast_to_x(torch.tensor(2.0, dtype=F64), x).ndim == 0
    assert broadcast_to_x(0.5, x) == 0.5
    with pytest.raises(TaylorSolveError, match="broadcast"):
        broadcast_to_x(torch.ones(4), x)


SCHEDULES = [LinearVPSchedule(), CosineVPSchedule(),
             CustomSchedule(lambda t: torch.exp(-t), lambda t: 2.0 * t + 1e-3, name="non-vp")]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("time", ["float", "0d", "batch"])
def test_eps_model_all_parameterizations_agree(schedule, time):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, dtype=F64, generator=g)
    t = {"float": 0.37, "0d": torch.tensor(0.37, dtype=F64), "batch": torch.tensor([0.1, 0.3, 0.6, 0.95], dtype=F64)}[time]
    ref = gaussian_predictions(x, torch.as_tensor(t, dtype=F64), schedule)["eps"]
    for p in PARAMETERIZATIONS:
        model = EpsModel(lambda x, t, p=p: gaussian_predictions(x, t, schedule)[p], p, schedule)
        eps = model(x, t)
        assert eps.shape == x.shape and eps.dtype == x.dtype
        assert torch.allclose(eps, ref, rtol=1e-11, atol=1e-12), p
        for q in PARAMETERIZATIONS:
            ref_q = gaussian_predictions(x, torch.as_tensor(t, dtype=F64), schedule)[q]
            assert torch.allclose(model.predict(x, t, q), ref_q, rtol=1e-10, atol=1e-11), (p, q)
        assert torch.allclose(model.predict_x0(x, t), gaussian_predictions(x, torch.as_tensor(t, dtype=F64), schedule)["x0"], rtol=1e-10)


def test_eps_model_float32_state():
    s = LinearVPSchedule()
    x = torch.randn(2, 3, dtype=torch.float32)
    model = EpsModel(lambda x, t: gaussian_predictions(x, t, s)["v"], "v", s)
    out = model(x, torch.tensor(0.5, dtype=F64))
    assert out.dtype == torch.float32
    ref = gaussian_predictions(x.double(), torch.tensor(0.5, dtype=F64), s)["eps"]
    assert torch.allclose(out.double(), ref, atol=1e-5)


def test_expand_t_and_t_dtype():
    seen = {}

    def model(x, t):
        seen["shape"], seen["dtype"] = tuple(t.shape), t.dtype
        return torch.zeros_like(x)

    x = torch.zeros(3, 2)
    EpsModel(model, expand_t=True, t_dtype=torch.float32)(x, 0.5)
    assert seen == {"shape": (3,), "dtype": torch.float32}
    EpsModel(model)(x, 0.5)
    assert seen == {"shape": (), "dtype": F64}


def test_conditioning_is_passed():
    def model(x, t, *, label):
        return torch.full_like(x, float(label))

    assert float(EpsModel(model)(torch.zeros(2), 0.5, label=3)[0]) == 3.0


def test_output_shape_error():
    model = EpsModel(lambda x, t: torch.zeros(x.shape[0], 5))
    with pytest.raises(TaylorSolveError, match=r"expected \(2, 3\).*got \(2, 5\)"):
        model(torch.zeros(2, 3), 0.5)
    with pytest.raises(TaylorSolveError, match="torch.Tensor"):
        EpsModel(lambda x, t: 1.0)(torch.zeros(2), 0.5)


def test_output_nan_error_names_time():
    model = EpsModel(lambda x, t: x * float("nan"), "x0")
    with pytest.raises(SolverError, match=r"t = 0\.25") as info:
        model(torch.ones(2, 3), 0.25)
    assert info.value.time == pytest.approx(0.25)


def test_bad_arguments():
    with pytest.raises(TaylorSolveError, match="parameterization"):
        EpsModel(lambda x, t: x, "noise")
    with pytest.raises(TaylorSolveError, match="callable"):
        EpsModel(3)  # type: ignore[arg-type]
    with pytest.raises(TaylorSolveError, match=r"shape \[B\]"):
        EpsModel(lambda x, t: x)(torch.zeros(3, 2), torch.ones(4, dtype=F64) * 0.5)


@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_eps_model_differentiable_in_t(p):
    """EpsModel works under torch.func.jvp; d eps/dt matches a central difference."""
    s = LinearVPSchedule()
    model = EpsModel(lambda x, t: gaussian_predictions(x, t, s)[p], p, s)
    x = torch.linspace(-1.0, 1.0, 5, dtype=F64)
    t = torch.tensor(0.4, dtype=F64)
    _, dt = torch.func.jvp(lambda u: model(x, u), (t,), (torch.ones_like(t),))
    h = 1e-6
    fd = (model(x, t + h) - model(x, t - h)) / (2 * h)
    assert torch.allclose(dt, fd, rtol=1e-6, atol=1e-8)


def test_all_pairs_consistent_with_definitions():
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, dtype=F64, generator=g)
    eps = torch.randn(6, dtype=F64, generator=g)
    for a, s in itertools.product([0.2, 0.9], [0.3, 1.5]):
        x = a * x0 + s * eps
        assert torch.allclose(from_eps(eps, "x0", x, a, s), x0)
        assert torch.allclose(from_eps(eps, "v", x, a, s), a * eps - s * x0)
        assert torch.allclose(from_eps(eps, "score", x, a, s), -eps / s)
