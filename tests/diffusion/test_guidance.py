"""Tests of taylorsolve.diffusion.guidance: classifier-free guidance (eq. (16), (79)-(81)) and slerp (eq. (82))."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.diffusion.guidance import GuidedEpsModel, cfg_derivatives, cfg_eps, guided_eps_model, slerp
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64


def test_cfg_eps_formula():
    c = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    u = torch.tensor([0.5, -1.0, 3.0], dtype=F64)
    assert torch.allclose(cfg_eps(c, u, 2.0), 3 * c - 2 * u)  # eq. (79)
    assert torch.equal(cfg_eps(c, u, 0.0), c)
    assert torch.allclose(cfg_eps(c, u, -1.0), u)
    assert torch.allclose(cfg_eps(c, u, torch.tensor(1.5, dtype=F64)), 2.5 * c - 1.5 * u)


def test_cfg_errors():
    with pytest.raises(TaylorSolveError, match="shape"):
        cfg_eps(torch.zeros(3), torch.zeros(4), 1.0)
    with pytest.raises(TaylorSolveError, match="finite"):
        cfg_eps(torch.zeros(3), torch.zeros(3), float("inf"))
    with pytest.raises(TaylorSolveError, match="real number"):
        cfg_eps(torch.zeros(3), torch.zeros(3), "big")
    with pytest.raises(TaylorSolveError, match="as many"):
        cfg_derivatives([torch.zeros(2)], [], 1.0)


def test_cfg_derivatives_list():
    g = torch.Generator().manual_seed(0)
    dc = [torch.randn(4, dtype=F64, generator=g) for _ in range(3)]
    du = [torch.randn(4, dtype=F64, generator=g) for _ in range(3)]
    out = cfg_derivatives(dc, du, 3.0)
    for o, c, u in zip(out, dc, du):
        assert torch.allclose(o, 4 * c - 3 * u)


def _model(x, t, *, label=None):
    shift = 0.0 if label is None else float(label)
    return torch.sin(x * (1 + shift)) * t + shift * t**2


def test_guided_eps_model_and_derivative_linearity():
    """The guided model's gamma/t-derivatives are the guided combination of the branches' (eq. (16), (81))."""
    w = 2.5
    guided = guided_eps_model(_model, w, cond={"label": 1})
    assert isinstance(guided, GuidedEpsModel)
    x = torch.linspace(-1, 1, 5, dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    expected = (1 + w) * _model(x, t, label=1) - w * _model(x, t)
    assert torch.allclose(guided(x, t), expected)
    v = torch.ones_like(x)
    _, jg = torch.func.jvp(lambda xx, tt: guided(xx, tt), (x, t), (v, torch.ones_like(t)))
    _, jc = torch.func.jvp(lambda xx, tt: _model(xx, tt, label=1), (x, t), (v, torch.ones_like(t)))
    _, ju = torch.func.jvp(lambda xx, tt: _model(xx, tt), (x, t), (v, torch.ones_like(t)))
    assert torch.allclose(jg, cfg_eps(jc, ju, w))


def test_guided_uncond_and_w0():
    calls = []

    def model(x, t, **kw):
        calls.append(kw)
        return x + kw.get("c", 0.0)

    x = torch.zeros(2, dtype=F64)
    out = guided_eps_model(model, 1.0, cond={"c": 1.0}, uncond={"c": -1.0})(x, 0.5)
    assert torch.allclose(out, torch.full_like(x, 3.0))  # 2 * 1 - 1 * (-1)
    calls.clear()
    assert torch.allclose(guided_eps_model(model, 0.0, cond={"c": 1.0})(x, 0.5), torch.ones_like(x))
    assert len(calls) == 1  # w = 0 needs no unconditional call


def test_slerp_eq_82():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 8, dtype=F64, generator=g)
    x1 = torch.randn(3, 8, dtype=F64, generator=g)
    assert torch.allclose(slerp(x0, x1, 0.0), x0)
    assert torch.allclose(slerp(x0, x1, 1.0), x1)
    b = 0.3
    assert torch.allclose(slerp(x0, x1, b), x0 * math.sqrt(1 - b) + x1 * math.sqrt(b))
    bs = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    out = slerp(x0, x1, bs)
    assert torch.allclose(out[0], x0[0]) and torch.allclose(out[2], x1[2])
    assert torch.allclose(out[1], (x0[1] + x1[1]) / math.sqrt(2))


def test_slerp_preserves_variance_of_normal_codes():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(200_000, dtype=F64, generator=g)
    x1 = torch.randn(200_000, dtype=F64, generator=g)
    assert float(slerp(x0, x1, 0.5).var()) == pytest.approx(1.0, abs=0.02)
    assert float(((x0 + x1) / 2).var()) == pytest.approx(0.5, abs=0.02)  # linear interpolation would not


def test_slerp_geometric():
    x0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    x1 = torch.tensor([[0.0, 1.0]], dtype=F64)
    mid = slerp(x0, x1, 0.5, method="geometric")
    assert torch.allclose(mid, torch.tensor([[1.0, 1.0]], dtype=F64) / math.sqrt(2))
    for b in (0.0, 0.2, 1.0):
        out = slerp(x0, x1, b, method="geometric")
        assert float(out.norm()) == pytest.approx(1.0)
        assert torch.allclose(out, torch.tensor([[math.cos(b * math.pi / 2), math.sin(b * math.pi / 2)]], dtype=F64))
    # (anti)parallel-free degenerate case: identical inputs -> linear interpolation
    assert torch.allclose(slerp(x0, x0, 0.4, method="geometric"), x0)


def test_slerp_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(TaylorSolveError, match=r"\[0, 1\]"):
        slerp(x, x, 1.5)
    with pytest.raises(TaylorSolveError, match=r"\[0, 1\]"):
        slerp(x, x, -0.1)
    with pytest.raises(TaylorSolveError, match="shape"):
        slerp(x, torch.zeros(3, 2), 0.5)
    with pytest.raises(TaylorSolveError, match="method"):
        slerp(x, x, 0.5, method="lerp")
