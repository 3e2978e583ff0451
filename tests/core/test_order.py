"""Order of accuracy as a property: global order p and local order p + 1 for TTM-p (float64)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, strategies as st

import taylorsolve as ts

from .problems import linear_system

torch.set_default_dtype(torch.float64)

# step counts per order: errors must sit in the asymptotic range and above rounding
STEPS = {1: (32, 64, 128), 2: (16, 32, 64), 3: (16, 32, 64), 4: (8, 16, 32), 5: (8, 16, 32), 6: (8, 16, 32)}


@st.composite
def linear_problems(draw, n=3):
    """y' = A y + v sin(omega t) with A's spectral norm <= 1.5 (bounded spectrum)."""
    entries = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=n * n, max_size=n * n))
    A = torch.tensor(entries).reshape(n, n)
    A = A * (1.5 / max(1.5, float(torch.linalg.matrix_norm(A, ord=2))))
    v = torch.tensor(draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=n, max_size=n)))
    # unit forcing direction: the solution is then never a polynomial of low degree (no zero errors)
    v = v / float(torch.linalg.vector_norm(v)) if float(torch.linalg.vector_norm(v)) > 1e-3 else torch.eye(n)[0]
    omega = draw(st.floats(0.5, 2.0))
    y0 = torch.tensor(draw(st.lists(st.floats(-2, 2, allow_nan=False), min_size=n, max_size=n)))
    return A, v, omega, y0


def _check(res: ts.OrderResult, p: int) -> None:
    assert abs(res.global_order - p) <= 0.3, f"TTM-{p}: global order {res.global_order:.3f}\n{res}"
    assert abs(res.local_order - (p + 1)) <= 0.3, f"TTM-{p}: local order {res.local_order:.3f}\n{res}"


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 6])
@given(problem=linear_problems())
def test_linear_systems_global_and_local_order_taylor_mode(p, problem):
    A, v, omega, y0 = problem
    f, exact = linear_system(A, v, omega)
    t0 = 0.25
    res = ts.empirical_order(f, y0, (t0, t0 + 2.0), exact(y0, t0), STEPS[p], order=p, backend="taylor_mode")
    _check(res, p)


@pytest.mark.parametrize("p", [1, 2, 3, 4, pytest.param(5, marks=pytest.mark.slow), pytest.param(6, marks=pytest.mark.slow)])
def test_linear_system_order_autodiff(p):
    """Nested-JVP coefficients cost ~3^p-4^p f-evaluations: orders 5 and 6 take minutes, hence slow."""
    g = torch.Generator().manual_seed(p)
    A = torch.randn(3, 3, generator=g)
    A = A / float(torch.linalg.matrix_norm(A, ord=2))
    v, y0 = torch.randn(3, generator=g), torch.randn(3, generator=g)
    f, exact = linear_system(A, v, 1.3)
    res = ts.empirical_order(f, y0, (0.5, 2.5), exact(y0, 0.5), STEPS[p], order=p, backend="autodiff")
    _check(res, p)


# Nonlinear ODEs with closed-form solutions: (f, exact(t), y0, t_span)
def _riccati():
    # y' = y^2, y(0) = 0.4: y = 0.4 / (1 - 0.4 t)
    return (lambda t, y: y * y), (lambda t: 0.4 / (1 - 0.4 * torch.as_tensor(t)) * torch.ones(2)), torch.full((2,), 0.4), (0.0, 1.0)


def _time_dependent():
    # y' = -y cos(t): y = y0 exp(-(sin t - sin t0))
    y0 = torch.tensor([1.0, -2.0])
    return (lambda t, y: -y * torch.cos(t)), (lambda t: y0 * torch.exp(-(torch.sin(torch.as_tensor(t)) - math.sin(1.1)))), y0, (1.1, 3.1)


def _logistic():
    # y' = y (1 - y): y = 1 / (1 + (1/y0 - 1) e^{-t})
    y0 = torch.tensor([0.2])
    return (lambda t, y: y * (1 - y)), (lambda t: 1 / (1 + 4.0 * torch.exp(-torch.as_tensor(t))) * torch.ones(1)), y0, (0.0, 2.0)


def _tan():
    # y' = 1 + y^2, y(0) = 0: y = tan(t)
    return (lambda t, y: 1 + y * y), (lambda t: torch.tan(torch.as_tensor(t)) * torch.ones(1)), torch.zeros(1), (0.1, 1.0)


@pytest.mark.parametrize("make", [_riccati, _time_dependent, _logistic, _tan], ids=["riccati", "cos", "logistic", "tan"])
@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 6])
def test_nonlinear_closed_form_orders(make, p):
    f, exact, y0, span = make()
    if make is _tan:
        y0 = torch.tan(torch.tensor([span[0]]))
    steps = tuple(2 * n for n in STEPS[p])
    res = ts.empirical_order(f, y0, span, exact, steps, order=p, backend="taylor_mode")
    assert abs(res.global_order - p) <= 0.3, str(res)
    assert abs(res.local_order - (p + 1)) <= 0.3, str(res)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_finite_difference_reaches_order_p_once_warm(p):
    """Adams-Bashforth p (finite-difference TTM-p) with a full-order starter is of order p; on a non-uniform grid too."""
    f, exact, y0, span = _time_dependent()
    t0, t1 = span

    def warped(n):  # smooth, strictly increasing, non-uniform grid
        u = torch.linspace(0, 1, n + 1)
        return t0 + (t1 - t0) * (u + 0.15 * torch.sin(2 * math.pi * u) / (2 * math.pi))

    for grid in (None, warped):
        res = ts.empirical_order(
            f, y0, span, exact, (32, 64, 128, 256), order=p, backend="finite_difference",
            backend_options={"starter": "autodiff"}, grid=grid, local=False,
        )
        assert abs(res.global_order - p) <= 0.3, str(res)


def test_finite_difference_plain_warm_start_is_second_order_limited():
    """Warming up with AB-1, AB-2, ... costs order: the first Euler step's O(h^2) error stays."""
    f, exact, y0, span = _time_dependent()
    res = ts.empirical_order(f, y0, span, exact, (32, 64, 128, 256), order=4, backend="finite_difference", local=False)
    assert abs(res.global_order - 2.0) <= 0.3, str(res)


def test_finite_difference_equals_adams_bashforth_2_formula():
    """On a uniform grid, FD-TTM-2 is y_{n+1} = y_n + h (3/2 f_n - 1/2 f_{n-1}) after one Euler step."""
    f, _, y0, _ = _time_dependent()
    t = torch.linspace(0.3, 1.3, 11)
    sol = ts.solve(f, y0, t, order=2, backend="finite_difference")
    h = t[1] - t[0]
    y = [y0, y0 + h * f(t[0], y0)]
    for n in range(1, 10):
        y.append(y[n] + h * (1.5 * f(t[n], y[n]) - 0.5 * f(t[n - 1], y[n - 1])))
    torch.testing.assert_close(sol.ys, torch.stack(y), rtol=1e-13, atol=1e-14)
