"""Bad input gets a clear error that names the problem."""
from __future__ import annotations

import math

import pytest
import torch

import taylorsolve as ts

Y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
T = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)


def f(t, y):
    return -y


@pytest.mark.parametrize("order", [0, -2, 1.5, "two", None, True])
def test_bad_order(order):
    if order is not None:  # solve(order=None) means the default (2 on grids, "auto" adaptively)
        with pytest.raises(ts.TaylorSolveError, match="order must be an integer >= 1"):
            ts.solve(f, Y0, T, order=order)
    with pytest.raises(ts.TaylorSolveError, match="order must be an integer >= 1"):
        ts.taylor_coefficients(f, 0.0, Y0, order)


def test_auto_order_only_in_adaptive_mode():
    with pytest.raises(ts.TaylorSolveError, match="order must be an integer"):
        ts.solve(f, Y0, T, order="auto")


@pytest.mark.parametrize(
    "grid, message",
    [
        (torch.tensor([0.0, 0.5, 0.5, 1.0]), "strictly monotone.*index 1"),
        (torch.tensor([0.0, 0.6, 0.4, 1.0]), "strictly monotone"),
        (torch.tensor([[0.0, 1.0]]), "must be 1-D"),
        (torch.tensor([0.0]), "at least 2 points"),
        (torch.tensor([0.0, float("nan"), 1.0]), "NaN or Inf"),
    ],
)
def test_bad_grids(grid, message):
    with pytest.raises(ts.TaylorSolveError, match=message):
        ts.solve(f, Y0, grid.double())


def test_rhs_wrong_shape_and_dtype():
    with pytest.raises(ts.TaylorSolveError, match=r"returned shape \(3,\) but the state has shape \(2,\)"):
        ts.solve(lambda t, y: torch.zeros(3, dtype=torch.float64), Y0, T)
    with pytest.raises(ts.TaylorSolveError, match="returned dtype torch.float32 but the state has dtype torch.float64"):
        ts.solve(lambda t, y: y.float(), Y0, T)
    with pytest.raises(ts.TaylorSolveError, match="must return a torch.Tensor"):
        ts.solve(lambda t, y: [1.0, 2.0], Y0, T)


@pytest.mark.parametrize("backend", ["autodiff", "taylor_mode", "finite_difference"])
def test_nan_mid_solve_names_step_and_time(backend):
    # y' = -1/sqrt(y): y reaches 0 and then goes negative -> sqrt gives NaN at a known step
    def g(t, y):
        return -1.0 / torch.sqrt(y)

    t = torch.linspace(0.0, 2.0, 21, dtype=torch.float64)
    with pytest.raises(ts.SolverError, match=r"non-finite .* at step \d+ \(t = [0-9.]+\)") as info:
        ts.solve(g, torch.tensor([1.0], dtype=torch.float64), t, order=2, backend=backend)
    assert info.value.step is not None and 0 < info.value.step <= 20
    assert info.value.time == pytest.approx(float(t[info.value.step]))


def test_infinite_value_mid_solve_adaptive():
    with pytest.raises(ts.SolverError):
        # y' = y^2 from y = 1 blows up at t = 1
        ts.solve(lambda t, y: y * y, torch.ones(1, dtype=torch.float64), t_span=(0.0, 2.0), order=8,
                 rtol=1e-8, atol=1e-8, backend="taylor_mode", max_steps=2000)


def test_unknown_backend_and_missing_supplied_derivatives():
    with pytest.raises(ts.TaylorSolveError, match="unknown backend 'jax'.*autodiff"):
        ts.solve(f, Y0, T, backend="jax")
    with pytest.raises(ts.TaylorSolveError, match="needs derivatives=callable"):
        ts.solve(f, Y0, T, backend="supplied")
    with pytest.raises(ts.TaylorSolveError, match="returned 0 derivatives; order 3 needs 2"):
        ts.solve(f, Y0, T, order=3, backend="supplied", backend_options={"derivatives": lambda t, y, f0, p: []})


def test_finite_difference_standalone_needs_history():
    with pytest.raises(ts.TaylorSolveError, match="past f values but order 3 needs 3"):
        ts.taylor_coefficients(f, 0.0, Y0, 3, backend="finite_difference")
    # with a history of exact past f values it gives the Adams-Bashforth interpolant's coefficients
    hist = [(-0.2, -Y0 * math.exp(0.2)), (-0.1, -Y0 * math.exp(0.1))]
    c = ts.taylor_coefficients(f, 0.0, Y0, 3, backend="finite_difference", history=hist)
    torch.testing.assert_close(c[2], Y0 / 2, rtol=5e-3, atol=0)  # y'' = y, c_2 = y/2, O(h^2)


def test_adaptive_argument_errors():
    with pytest.raises(ts.TaylorSolveError, match="exactly one of t"):
        ts.solve(f, Y0, T, t_span=(0.0, 1.0))
    with pytest.raises(ts.TaylorSolveError, match="exactly one of t"):
        ts.solve(f, Y0)
    with pytest.raises(ts.TaylorSolveError, match="cannot both be zero"):
        ts.solve(f, Y0, t_span=(0.0, 1.0), rtol=0.0, atol=0.0)
    with pytest.raises(ts.TaylorSolveError, match="strictly monotone"):
        ts.solve(f, Y0, t_span=(1.0, 1.0))
    with pytest.raises(ts.SolverError, match="max_steps=3"):
        ts.solve(f, Y0, t_span=(0.0, 10.0), order=2, rtol=1e-10, atol=1e-10, max_steps=3)


def test_non_float_state_and_dense_without_coefficients():
    with pytest.raises(ts.TaylorSolveError, match="floating-point"):
        ts.solve(f, torch.tensor([1, 2]), T)
    sol = ts.solve(f, Y0, T)
    with pytest.raises(ts.TaylorSolveError, match="no dense output"):
        sol(0.5)
    dense = ts.solve(f, Y0, T, order=4, dense=True)
    torch.testing.assert_close(dense(0.6), Y0 * math.exp(-0.6), rtol=5e-5, atol=0)  # TTM-4, h = 0.25


def test_empirical_order_input_errors():
    with pytest.raises(ts.TaylorSolveError, match="at least two"):
        ts.empirical_order(f, Y0, (0.0, 1.0), lambda t: Y0 * torch.exp(-t), steps=(8,))
    with pytest.raises(ts.TaylorSolveError, match="positive and finite"):
        ts.empirical_order(lambda t, y: torch.zeros_like(y), Y0, (0.0, 1.0), lambda t: Y0, steps=(4, 8), order=1)
