"""Safe defaults: one error hierarchy, derivative leaks caught in every backend, backend='auto', input checks."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import taylorsolve as ts

from .problems import kepler_initial, kepler_rhs

F64 = torch.float64
Y0 = torch.tensor([1.0, 0.5], dtype=F64)


def rot(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


# ---- errors ----------------------------------------------------------------------------------------
def test_one_error_hierarchy():
    for cls in (ts.SolverError, ts.StiffnessError, ts.SymbolicBackendError, ts.UnsupportedOperationError,
                ts.DerivativeLeakError):
        assert issubclass(cls, ts.TaylorSolveError)
    assert issubclass(ts.SolverError, RuntimeError)  # what it was before joining the hierarchy


def test_nan_in_y0_is_named_before_the_first_step():
    calls = {"n": 0}

    def f(t, y):
        calls["n"] += 1
        return -y

    for bad in (torch.tensor([1.0, float("nan")], dtype=F64), [1.0, float("inf")]):
        with pytest.raises(ts.TaylorSolveError, match=r"initial state y0 contains 1 NaN/Inf.*index \(1,\)"):
            ts.solve(f, bad, torch.linspace(0, 1, 5, dtype=F64))
        with pytest.raises(ts.TaylorSolveError, match="y0 contains"):
            ts.solve(f, bad, t_span=(0.0, 1.0))
    assert calls["n"] == 0


def test_unknown_backend_option_lists_the_valid_ones():
    with pytest.raises(ts.TaylorSolveError, match=r"unknown option 'compiel' for backend 'taylor_mode'; valid options: "
                                                  r"compile, compile_min_steps, max_nodes"):
        ts.solve(rot, Y0, t_span=(0.0, 1.0), backend="taylor_mode", backend_options={"compiel": True})
    with pytest.raises(ts.TaylorSolveError, match="valid options: derivatives"):
        ts.solve(rot, Y0, torch.linspace(0, 1, 3), backend="supplied", backend_options={"derivative": None})
    with pytest.raises(ts.TaylorSolveError, match=r"'autodiff'; valid options: \(none\)"):
        ts.taylor_coefficients(rot, 0.0, Y0, 2, backend="autodiff", foo=1)


def test_empirical_order_checks_the_reference_shape():
    with pytest.raises(ts.TaylorSolveError, match=r"reference has shape \(3,\) but the solver's state has shape \(2,\)"):
        ts.empirical_order(rot, Y0, (0.0, 1.0), torch.zeros(3, dtype=F64), steps=(4, 8))
    with pytest.raises(ts.TaylorSolveError, match=r"reference\(t1\) has shape \(1, 2\)"):
        ts.empirical_order(rot, Y0, (0.0, 1.0), lambda t: torch.zeros(1, 2, dtype=F64), steps=(4, 8))


def test_list_y0_takes_the_grids_dtype():
    for dt in (torch.float32, torch.float64):
        sol = ts.solve(rot, [1.0, 0.0], torch.linspace(0, 1, 5, dtype=dt), order=3)
        assert sol.ys.dtype == dt
    assert ts.solve(rot, [1.0, 0.0], [0.0, 0.5, 1.0], order=3).ys.dtype == F64  # Python floats are doubles
    assert ts.solve(rot, [1.0, 0.0], t_span=(0.0, 1.0)).ys.dtype == F64
    assert ts.solve(rot, np.array([1.0, 0.0], dtype=np.float32), t_span=(0.0, 1.0)).ys.dtype == torch.float32


def test_float32_with_tolerances_below_1e_6_warns_and_defaults_do_not():
    y32 = Y0.float()
    with pytest.warns(ts.TaylorSolveWarning, match=r"rtol=1e-12 is below what a float32 state can resolve"):
        ts.solve(rot, y32, t_span=(0.0, 0.1), rtol=1e-12, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = ts.solve(rot, y32, t_span=(0.0, 1.0))  # float32 defaults 1e-5 / 1e-6
        ts.solve(rot, Y0, t_span=(0.0, 1.0), rtol=1e-12, atol=1e-12)
    assert sol.ys.dtype == torch.float32
    torch.testing.assert_close(sol.ys[-1], torch.tensor([math.cos(1) + 0.5 * math.sin(1), 0.5 * math.cos(1) - math.sin(1)],
                                                        dtype=torch.float32),
                               rtol=0, atol=1e-4)


# ---- derivative leaks --------------------------------------------------------------------------------
def leak_float(t, y):
    return torch.stack([y[..., 1], -y[..., 0] + 0.0 * math.sin(float(y[..., 0]))], dim=-1) - 0.1 * math.sin(float(y[..., 0]))


def leak_detach(t, y):
    return torch.stack([y[..., 1], -y.detach()[..., 0]], dim=-1)


def leak_tolist(t, y):
    return torch.tensor(y.tolist(), dtype=y.dtype).flip(-1) * torch.tensor([1.0, -1.0], dtype=y.dtype)


def leak_numpy(t, y):
    return torch.from_numpy(np.sin(y.numpy())) * 0.1 + torch.stack([y[..., 1], -y[..., 0]], dim=-1)


LEAKS = {"float": (leak_float, "float"), "detach": (leak_detach, "detach"), "tolist": (leak_tolist, "tolist"),
         "numpy": (leak_numpy, "numpy")}
BACKENDS = {
    "auto": ("auto", {}),
    "taylor_mode": ("taylor_mode", {"compile": False}),
    "compiled": ("taylor_mode", {"compile": True}),
    "autodiff": ("autodiff", {}),
    "symbolic": ("symbolic", {}),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_derivative_leaks_raise_in_every_backend(backend, leak):
    f, what = LEAKS[leak]
    name, opts = BACKENDS[backend]
    f(torch.tensor(0.0, dtype=F64), Y0)  # f itself runs on tensors: the leak is silent there
    with pytest.raises(ts.DerivativeLeakError, match=what):
        ts.solve(f, Y0, torch.linspace(0, 1, 5, dtype=F64), order=3, backend=name, backend_options=opts)


def test_the_leak_check_costs_no_extra_evaluation_and_allows_control_flow():
    calls = {"n": 0}

    def f(t, y):
        calls["n"] += 1
        scale = 2.0 if bool(y.abs().max() > 10.0) else 1.0  # control flow on the state: no leak
        return scale * torch.stack([y[..., 1], -y[..., 0]], dim=-1) * (1.0 + 0.0 * float(t))

    sol = ts.solve(f, Y0, torch.linspace(0, 1, 5, dtype=F64), order=3, backend="autodiff")
    # one plain call and two (nested) JVP calls per step: the leak check ran inside the first plain call
    assert calls["n"] == sol.stats.f_evals + sol.stats.derivative_evals == 4 * 3
    # order 1 needs no derivatives: a leak cannot change the result and is not reported
    ts.solve(leak_detach, Y0, torch.linspace(0, 1, 5, dtype=F64), order=1, backend="autodiff")


def test_leak_in_the_issue_is_caught_with_the_default_backend():
    """The example of issue 8: math.sin(float(y[..., 0])) used to land 1e-2 away from the solution silently."""
    def pendulum_leak(t, y):
        return torch.stack([y[..., 1], -math.sin(float(y[..., 0])) * torch.ones_like(y[..., 1])], dim=-1)

    with pytest.raises(ts.DerivativeLeakError, match=r"float\(\)"):
        ts.solve(pendulum_leak, Y0, t_span=(0.0, 1.0), order=6)


# ---- backend="auto" ----------------------------------------------------------------------------------
def test_auto_is_the_default_and_uses_compiled_taylor_mode():
    sol = ts.solve(kepler_rhs, kepler_initial(0.5), t_span=(0.0, 1.0), order="auto", rtol=1e-10, atol=1e-10)
    assert sol.stats.backend == "taylor_mode" and sol.stats.compiled


def test_auto_falls_back_to_autodiff_with_a_warning_naming_the_operation():
    def f(t, y):
        return -torch.special.bessel_j0(y) * y

    t = torch.linspace(0.0, 0.5, 6, dtype=F64)
    with pytest.warns(ts.TaylorSolveWarning, match=r"bessel_j0.*falling back to backend='autodiff'"):
        sol = ts.solve(f, Y0, t, order=3)
    ref = ts.solve(f, Y0, t, order=3, backend="autodiff")
    assert sol.stats.backend == "autodiff"
    torch.testing.assert_close(sol.ys, ref.ys, rtol=1e-14, atol=1e-14)
    with pytest.warns(ts.TaylorSolveWarning, match=r"order 6 nested JVPs cost"):
        ts.taylor_coefficients(f, 0.0, Y0, 6)
