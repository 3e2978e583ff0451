"""Preset constructions (GENIE app. E, thesis eq. (2.100)) and input validation."""
import math

import pytest
import torch

import toy
from taylorsolve.errors import TaylorSolveError
from toy import GaussianMixture

F64 = torch.float64


def test_nested_mixture_construction():
    mix = toy.nested_mixture()
    assert mix.n_components == 64 and mix.dim == 2 and mix.is_isotropic
    assert torch.allclose(mix.weights, torch.full((64,), 1 / 64, dtype=F64))
    assert torch.allclose(mix.stds, torch.full((64,), 1e-2, dtype=F64))
    mu = toy.UNIT_DIRECTIONS_8
    assert torch.allclose(mu.norm(dim=1), torch.ones(8, dtype=F64))
    r = 1 / math.sqrt(2)
    assert torch.allclose(mu[4], torch.tensor([r, r], dtype=F64)) and torch.allclose(mu[7], -mu[4])
    expected = {(round(0.9 * float(a[0]) + 0.18 * float(b[0]), 12), round(0.9 * float(a[1]) + 0.18 * float(b[1]), 12)) for a in mu for b in mu}
    got = {(round(float(p[0]), 12), round(float(p[1]), 12)) for p in mix.means}
    assert got == expected and len(got) == 64
    assert torch.allclose(mix.means[0], torch.tensor([1.08, 0.0], dtype=F64))  # s1 mu_1 + s1 s2 mu_1
    assert torch.allclose(mix.mean(), torch.zeros(2, dtype=F64), atol=1e-15)


def test_lattice_9_construction():
    mix = toy.lattice_9()
    a = 2 ** -0.5
    assert mix.n_components == 9 and torch.allclose(mix.stds, torch.full((9,), 0.04, dtype=F64))
    assert torch.allclose(mix.means[0], torch.tensor([-a, 0.0], dtype=F64))
    assert torch.allclose(mix.means[4], torch.zeros(2, dtype=F64))
    # rotated by 45 degrees it is the axis-aligned grid {-1/2, 0, 1/2}^2
    rot = torch.tensor([[r := 1 / math.sqrt(2), -r], [r, r]], dtype=F64)
    grid = {(round(float(p[0]), 12) + 0.0, round(float(p[1]), 12) + 0.0) for p in mix.means @ rot.T}
    assert grid == {(u, v) for u in (-0.5, 0.0, 0.5) for v in (-0.5, 0.0, 0.5)}
    dist = torch.cdist(mix.means, mix.means) + torch.eye(9, dtype=F64) * 10
    assert abs(float(dist.min()) / 0.04 - 12.5) < 1e-12  # thesis: modes 12.5 std apart


def test_small_presets():
    p = toy.single_point([0.5, -1.0])
    assert p.n_components == 1 and torch.equal(p.stds, torch.zeros(1, dtype=F64))
    assert torch.allclose(p.sample(3), torch.tensor([[0.5, -1.0]] * 3, dtype=F64))
    g = toy.single_gaussian(0.0, 2.0)
    assert g.dim == 1 and torch.allclose(g.covariances, torch.full((1, 1, 1), 4.0, dtype=F64))
    t = toy.two_mode_1d()
    assert t.dim == 1 and t.n_components == 2 and torch.allclose(t.means[:, 0], torch.tensor([-1.0, 1.0], dtype=F64))


def test_is_an_eps_model(schedule):
    mix = toy.nested_mixture(schedule=schedule)
    x = torch.randn(7, 2, dtype=F64)
    for t in (torch.tensor(0.5, dtype=F64), 0.5, torch.full((7,), 0.5, dtype=F64)):
        out = mix(x, t)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert torch.allclose(mix(x, 0.5), mix(x, torch.full((7,), 0.5, dtype=F64)))


GOOD_M = [[0.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[], means=torch.zeros(0, 2), stds=1.0), "at least one component"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, stds=[1.0, -1.0]), "positive"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, stds=[1.0, 0.0]), "zero variance"),
        (dict(weights=[1.5, -0.5], means=GOOD_M, stds=1.0), "non-negative"),
        (dict(weights=[0.5, 0.4], means=GOOD_M, stds=1.0), "sum to one"),
        (dict(weights=[0.5, 0.5 + 1e-6], means=GOOD_M, stds=1.0), "sum to one"),
        (dict(weights=[0.5, 0.5], means=[[0.0, 0.0]], stds=1.0), "2 weights but 1 means"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, stds=[1.0, 1.0, 1.0]), "stds"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, covariances=torch.eye(3).expand(2, 3, 3)), "covariances must be"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, covariances=[[[1.0, 0.0], [0.0, -1.0]], [[1.0, 0.0], [0.0, 1.0]]]), "positive definite"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, covariances=[[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]), "positive definite"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, covariances=[[[1.0, 0.5], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]), "symmetric"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, covariances=[[[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]), "positive definite"),
        (dict(weights=[0.5, 0.5], means=GOOD_M), "exactly one"),
        (dict(weights=[0.5, 0.5], means=GOOD_M, stds=1.0, covariances=torch.eye(2)), "exactly one"),
        (dict(weights=[0.5, 0.5], means=[[0.0, float("nan")], [1.0, 1.0]], stds=1.0), "NaN"),
        (dict(weights=[0.5, 0.5], means=[[[0.0]], [[1.0]]], stds=1.0), "means must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(TaylorSolveError, match=match) as info:
        GaussianMixture(**kwargs)
    assert isinstance(info.value, ValueError)


def test_bad_call_arguments():
    mix = toy.nested_mixture()
    with pytest.raises(TaylorSolveError, match=r"\[..., 2\]"):
        mix.eps_gamma(torch.zeros(3, 3, dtype=F64), 1.0)
    with pytest.raises(TaylorSolveError, match="K = 1"):
        mix.ddim_solution(torch.zeros(1, 2, dtype=F64), 1.0, 0.5)
    with pytest.raises(TaylorSolveError, match="K = 1"):
        mix.eps_derivatives(torch.zeros(1, 2, dtype=F64), 1.0, 2, backend="closed_form")
    with pytest.raises(TaylorSolveError, match="order"):
        mix.eps_derivatives(torch.zeros(1, 2, dtype=F64), 1.0, -1, backend="autodiff")
    with pytest.raises(TaylorSolveError, match="scalar gamma"):
        mix.eps_derivatives(torch.zeros(2, 2, dtype=F64), torch.ones(2, dtype=F64), 1, backend="autodiff")
    with pytest.raises(TaylorSolveError, match="point mass"):
        toy.single_point([0.0]).log_prob0(torch.zeros(1, 1, dtype=F64))
    with pytest.raises(TaylorSolveError, match="non-negative integer"):
        mix.sample(-1)
