"""The fixed-grid and adaptive solvers: Kepler, dense output, batching, dtypes, devices, stats."""
from __future__ import annotations

import math

import pytest
import torch

import taylorsolve as ts

from .problems import angular_momentum, energy, kepler_exact, kepler_initial, kepler_rhs

E = 0.5


@pytest.fixture(scope="module")
def kepler_10_orbits():
    y0 = kepler_initial(E)
    sol = ts.solve(kepler_rhs, y0, t_span=(0.0, 20 * math.pi), order="auto", rtol=1e-12, atol=1e-12, backend="taylor_mode")
    return y0, sol


def test_kepler_ten_orbits_conserves_energy_and_angular_momentum(kepler_10_orbits):
    y0, sol = kepler_10_orbits
    assert sol.stats.order == math.ceil(-math.log(1e-12) / 2) + 1 == 15  # heyoka's order rule
    assert float(sol.t[-1]) == pytest.approx(20 * math.pi, abs=0)
    assert float((energy(sol.ys) - energy(y0)).abs().max()) < 1e-10
    assert float((angular_momentum(sol.ys) - angular_momentum(y0)).abs().max()) < 1e-10
    # after 10 periods the body is back at perihelion
    assert float((sol.ys[-1] - y0).abs().max()) < 1e-8
    assert sol.stats.accepted_steps == sol.stats.steps == len(sol.t) - 1


def test_kepler_dense_output_between_steps_matches_exact_orbit(kepler_10_orbits):
    _, sol = kepler_10_orbits
    # midpoints of the first orbit's steps: dense output from the stored Taylor polynomials
    first = sol.t[sol.t <= 2 * math.pi]
    mids = 0.5 * (first[:-1] + first[1:])
    dense = sol(mids)
    exact = torch.stack([kepler_exact(E, float(tq)) for tq in mids])
    assert dense.shape == (len(mids), 4)
    assert float((dense - exact).abs().max()) < 1e-10
    # dense output at a grid point reproduces the stored state
    torch.testing.assert_close(sol(sol.t[7]), sol.ys[7], rtol=1e-12, atol=1e-12)


def test_adaptive_steps_shrink_with_tolerance_and_errors_follow():
    y0 = kepler_initial(E)
    errs, steps = [], []
    for tol in (1e-6, 1e-9, 1e-12):
        sol = ts.solve(kepler_rhs, y0, t_span=(0.0, 2 * math.pi), order=10, rtol=tol, atol=tol, backend="taylor_mode")
        errs.append(float((sol.ys[-1] - y0).abs().max()))
        steps.append(sol.stats.steps)
        assert errs[-1] < 100 * tol
    assert steps[0] < steps[1] < steps[2]


def test_adaptive_backwards_in_time_and_dense_output_outside_raises():
    y0 = kepler_initial(E)
    sol = ts.solve(kepler_rhs, y0, t_span=(0.0, -math.pi), order=12, rtol=1e-11, atol=1e-11, backend="taylor_mode")
    torch.testing.assert_close(sol.ys[-1], kepler_exact(E, 2 * math.pi - math.pi), rtol=0, atol=1e-9)
    assert bool((torch.diff(sol.t) < 0).all())
    with pytest.raises(ts.TaylorSolveError, match="outside"):
        sol(0.5)


def test_batched_equals_individual_solves_fixed_and_adaptive():
    g = torch.Generator().manual_seed(0)
    ecc = torch.tensor([0.1, 0.3, 0.6])
    y0 = torch.stack([kepler_initial(float(e)) for e in ecc])
    t = torch.linspace(0.0, 3.0, 31, dtype=torch.float64)
    batched = ts.solve(kepler_rhs, y0, t, order=4, backend="taylor_mode")
    for i in range(3):
        single = ts.solve(kepler_rhs, y0[i], t, order=4, backend="taylor_mode")
        torch.testing.assert_close(batched.ys[:, i], single.ys, rtol=1e-14, atol=1e-14)
    # autodiff backend and a leading 2-D batch
    y2 = y0[:2] + 0.01 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    yb = torch.stack([y2, y2.flip(0)])  # [2, 2, 4]
    b = ts.solve(kepler_rhs, yb, t[:6], order=3, backend="autodiff")
    s = ts.solve(kepler_rhs, y2[1], t[:6], order=3, backend="autodiff")
    torch.testing.assert_close(b.ys[:, 0, 1], s.ys, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(b.ys[:, 1, 0], s.ys, rtol=1e-14, atol=1e-14)
    # adaptive: members share steps, each is as accurate as alone
    ad = ts.solve(kepler_rhs, y0, t_span=(0.0, 2 * math.pi), order=12, rtol=1e-10, atol=1e-10, backend="taylor_mode")
    for i in range(3):
        assert float((ad.ys[-1, i] - y0[i]).abs().max()) < 1e-8


@pytest.mark.parametrize("backend", ["autodiff", "taylor_mode"])
def test_float32_state_with_float32_and_float64_grids(backend):
    y0 = kepler_initial(E)
    ref = ts.solve(kepler_rhs, y0, torch.linspace(0.0, 1.0, 41, dtype=torch.float64), order=3, backend=backend)
    for tdtype in (torch.float32, torch.float64):
        t = torch.linspace(0.0, 1.0, 41, dtype=tdtype)
        sol = ts.solve(kepler_rhs, y0.float(), t, order=3, backend=backend)
        assert sol.ys.dtype == torch.float32
        # same method in float64: the difference is float32 rounding, far below the truncation error
        assert float((sol.ys.double() - ref.ys).abs().max()) < 2e-5


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["autodiff", "taylor_mode", "finite_difference"])
def test_cuda_matches_cpu(backend):
    y0 = kepler_initial(E)
    t = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    cpu = ts.solve(kepler_rhs, y0, t, order=3, backend=backend)
    gpu = ts.solve(kepler_rhs, y0.cuda(), t.cuda(), order=3, backend=backend)
    assert gpu.ys.device.type == "cuda"
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=1e-12, atol=1e-12)


def test_stats_count_evaluations():
    y0 = kepler_initial(E)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    s1 = ts.solve(kepler_rhs, y0, t, order=1).stats
    assert (s1.steps, s1.f_evals, s1.derivative_evals, s1.jvp_passes) == (10, 10, 0, 0)
    s3 = ts.solve(kepler_rhs, y0, t, order=3, backend="autodiff").stats
    # per step: one f, one JVP (c_2), one depth-2 nested JVP (c_3)
    assert (s3.f_evals, s3.derivative_evals, s3.jvp_passes) == (10, 20, 30)
    assert s3.wall_time > 0 and s3.order == 3 and s3.backend == "autodiff"
    fd = ts.solve(kepler_rhs, y0, t, order=3, backend="finite_difference").stats
    assert (fd.f_evals, fd.jvp_passes) == (10, 0)


def test_supplied_exact_derivatives_match_autodiff():
    """y' = -y cos t: y'' = y (cos^2 t + sin t), supplied in closed form."""
    def f(t, y):
        return -y * torch.cos(t)

    def derivatives(t, y, f0, order):
        return [y * (torch.cos(t) ** 2 + torch.sin(t))]

    y0 = torch.tensor([1.0, 3.0], dtype=torch.float64)
    t = torch.linspace(0.2, 1.2, 9, dtype=torch.float64)
    a = ts.solve(f, y0, t, order=2, backend="supplied", backend_options={"derivatives": derivatives})
    b = ts.solve(f, y0, t, order=2, backend="autodiff")
    torch.testing.assert_close(a.ys, b.ys, rtol=1e-13, atol=1e-13)
    assert a.stats.derivative_evals == 8


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_autodiff_and_taylor_mode_coefficients_agree(p):
    y0 = torch.stack([kepler_initial(0.2), kepler_initial(0.7)])
    a = ts.taylor_coefficients(kepler_rhs, 0.3, y0, p, backend="autodiff")
    b = ts.taylor_coefficients(kepler_rhs, 0.3, y0, p, backend="taylor_mode")
    for ca, cb in zip(a, b):
        torch.testing.assert_close(ca, cb, rtol=1e-12, atol=1e-14)
