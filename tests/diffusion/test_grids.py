"""Tests of taylorsolve.diffusion.grids: named grids, spacing properties, validation."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.diffusion.grids import GRID_NAMES, gamma_grid, time_grid, validate_diffusion_grid
from taylorsolve.diffusion.schedules import CosineVPSchedule, LinearVPSchedule
from taylorsolve.errors import TaylorSolveError

F64 = torch.float64


def _equispaced(v: torch.Tensor, rtol: float = 1e-9) -> bool:
    d = torch.diff(v)
    return bool(torch.allclose(d, d.mean().expand_as(d), rtol=rtol, atol=1e-13))


@pytest.mark.parametrize("name", GRID_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
@pytest.mark.parametrize("schedule", [None, CosineVPSchedule()])
def test_endpoints_and_monotone(name, steps, schedule):
    t = time_grid(name, steps, schedule)
    assert t.dtype == F64 and t.ndim == 1 and t.numel() == steps + 1
    assert float(t[0]) == 1.0 and float(t[-1]) == 1e-3
    assert (torch.diff(t) < 0).all()


@pytest.mark.parametrize("name", GRID_NAMES)
def test_custom_endpoints(name):
    t = time_grid(name, 9, "linear", t_cutoff=1e-4, t_max=0.8)
    assert float(t[0]) == 0.8 and float(t[-1]) == 1e-4
    assert (torch.diff(t) < 0).all()


def test_linear_is_uniform():
    t = time_grid("linear", 10)
    expected = 1.0 - (1.0 - 1e-3) * torch.arange(11, dtype=F64) / 10  # app. C.2.4
    assert torch.allclose(t, expected, rtol=1e-15)
    assert _equispaced(t)


def test_quadratic_sqrt_equispaced():
    t = time_grid("quadratic", 12)
    assert _equispaced(torch.sqrt(t))
    n = torch.arange(13, dtype=F64)
    paper = (1.0 - (1.0 - math.sqrt(1e-3)) * n / 12) ** 2  # app. C.2.4 "quadratic striding"
    assert torch.allclose(t, paper, rtol=1e-14)
    t2 = time_grid("quadratic", 12, t_max=0.5, t_cutoff=0.01)
    assert _equispaced(torch.sqrt(t2))


@pytest.mark.parametrize("rho", [1.5, 2.0, 2.5, 7.0])
def test_rho_eq_83(rho):
    N, tc = 8, 1e-3
    t = time_grid("rho", N, rho=rho, t_cutoff=tc)
    n = torch.arange(N + 1, dtype=F64)
    eq83 = (1.0 - (1.0 - tc ** (1.0 / rho)) * n / N) ** rho
    assert torch.allclose(t, eq83, rtol=1e-13)
    assert float(eq83[-1]) == pytest.approx(tc, rel=1e-13)  # eq. (83) lands on t_cutoff
    assert _equispaced(t ** (1.0 / rho))


def test_rho_default_is_quadratic():
    assert torch.equal(time_grid("rho", 6), time_grid("quadratic", 6))


@pytest.mark.parametrize("schedule", [LinearVPSchedule(), CosineVPSchedule()])
def test_logsnr_uniform(schedule):
    t = time_grid("logsnr", 10, schedule)
    assert _equispaced(schedule.log_snr(t), rtol=1e-8)


@pytest.mark.parametrize("schedule", [LinearVPSchedule(), CosineVPSchedule()])
@pytest.mark.parametrize("name", ["edm", "karras"])
def test_edm_uniform_in_gamma_pow(schedule, name):
    t = time_grid(name, 10, schedule)
    g = schedule.gamma(t)
    assert _equispaced(g ** (1 / 7.0), rtol=1e-8)
    assert _equispaced(schedule.gamma(time_grid(name, 10, schedule, rho=3.0)) ** (1 / 3.0), rtol=1e-8)
    assert float(g[0]) == pytest.approx(float(schedule.gamma(torch.tensor(1.0))), rel=1e-12)


def test_gamma_grid_uniform():
    s = LinearVPSchedule()
    t = time_grid("gamma", 5, s)
    assert _equispaced(gamma_grid(t, s), rtol=1e-8)
    assert torch.allclose(gamma_grid(t, s), s.gamma(t))
    assert gamma_grid(t).dtype == F64


def test_user_grid_accepted():
    g = torch.tensor([1.0, 0.5, 0.1, 0.001], dtype=torch.float32)
    t = time_grid(g)
    assert t.dtype == F64 and torch.allclose(t, g.to(F64))
    assert torch.equal(time_grid([1.0, 0.5, 0.01], steps=2), torch.tensor([1.0, 0.5, 0.01], dtype=F64))
    with pytest.raises(TaylorSolveError, match="does not match"):
        time_grid(g, steps=5)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([[1.0, 0.5], [0.4, 0.1]]), "1-D"),
        (torch.tensor([1.0]), "at least 2"),
        (torch.tensor([1.0, float("nan"), 0.1]), "NaN"),
        (torch.tensor([1.0, 0.5, 0.7, 0.1]), "monotone"),
        (torch.tensor([0.1, 0.5, 1.0]), "decreasing"),
        (torch.tensor([1.0, 0.5, 0.0]), r"outside \(0, 1\]"),
        (torch.tensor([1.5, 0.5, 0.1]), r"outside \(0, 1\]"),
        (torch.tensor([1.0, -0.5]), r"outside \(0, 1\]"),
    ],
)
def test_user_grid_errors(bad, match):
    with pytest.raises(TaylorSolveError, match=match):
        time_grid(bad)
    with pytest.raises(TaylorSolveError, match=match):
        validate_diffusion_grid(bad)


def test_validate_increasing_for_encoding():
    t = validate_diffusion_grid([0.001, 0.5, 1.0], direction="increasing")
    assert t.dtype == F64
    with pytest.raises(TaylorSolveError, match="increasing"):
        validate_diffusion_grid([1.0, 0.5], direction="increasing")
    validate_diffusion_grid([1.0, 0.5], direction="any")
    with pytest.raises(TaylorSolveError):
        validate_diffusion_grid([1.0, 0.5], direction="sideways")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid="linear", steps=0), "steps"),
        (dict(grid="linear", steps=-3), "steps"),
        (dict(grid="linear", steps=2.5), "steps"),
        (dict(grid="linear", steps=None), "steps"),
        (dict(grid="linear", steps=5, t_cutoff=0.5, t_max=0.5), "t_cutoff must be < t_max"),
        (dict(grid="linear", steps=5, t_cutoff=0.9, t_max=0.5), "t_cutoff must be < t_max"),
        (dict(grid="linear", steps=5, t_cutoff=0.0), r"\(0, 1\]"),
        (dict(grid="linear", steps=5, t_max=1.2), r"\(0, 1\]"),
        (dict(grid="rho", steps=5, rho=-1.0), "rho"),
        (dict(grid="cubic", steps=5), "unknown grid"),
        (dict(grid="logsnr", steps=5, schedule="sigmoid"), "unknown schedule"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(TaylorSolveError, match=match):
        time_grid(**kwargs)


def test_collapsing_grid_raises():
    with pytest.raises(TaylorSolveError, match="not strictly decreasing"):
        time_grid("linear", 10, t_cutoff=1.0 - 2e-16, t_max=1.0)
