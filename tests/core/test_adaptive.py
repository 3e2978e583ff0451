"""Adaptive solves: heyoka's step rule, per-trajectory batches, progress bar, stiffness diagnosis, dense output."""
from __future__ import annotations

import math

import pytest
import torch

import taylorsolve as ts
from taylorsolve.adaptive import auto_order

from .problems import kepler_exact, kepler_initial, kepler_rhs, van_der_pol

F64 = torch.float64


def test_heyoka_step_rule_on_exponential_growth():
    """y' = y: c_k = y0/k!, so heyoka's first step has a closed form (computed here, not by the library)."""
    y0 = torch.tensor([3.0], dtype=F64)
    tol = 1e-10
    p = auto_order(tol)  # 13
    assert p == math.ceil(-math.log(tol) / 2) + 1
    sol = ts.solve(lambda t, y: y, y0, t_span=(0.0, 100.0), order="auto", rtol=tol, atol=tol, dense=False)
    rho = min((max(1.0, 3.0) / (3.0 / math.factorial(m))) ** (1.0 / m) for m in (p - 1, p))
    h = rho * math.exp(-2.0) * math.exp(-0.7 / (p - 1))
    assert float(sol.t[1]) == pytest.approx(h, rel=1e-14)
    # the same with the interpreted path
    interp = ts.solve(lambda t, y: y, y0, t_span=(0.0, 1.0), order="auto", rtol=tol, atol=tol,
                      backend_options={"compile": False})
    assert float(interp.t[1]) == pytest.approx(h, rel=1e-14)
    # rtol != atol: the scale is max(atol, rtol |x|) / min(rtol, atol)
    s = ts.solve(lambda t, y: y, y0, t_span=(0.0, 100.0), order="auto", rtol=1e-8, atol=1e-12, dense=False)
    p2 = auto_order(1e-12)
    scale = max(1e-12, 1e-8 * 3.0) / 1e-12
    rho2 = min((scale / (3.0 / math.factorial(m))) ** (1.0 / m) for m in (p2 - 1, p2))
    assert float(s.t[1]) == pytest.approx(rho2 * math.exp(-2.0) * math.exp(-0.7 / (p2 - 1)), rel=1e-14)


def test_explicit_order_uses_jorba_zou_rule_with_tolerances():
    y0 = torch.tensor([3.0], dtype=F64)
    p, rtol, atol = 10, 1e-9, 1e-12
    sol = ts.solve(lambda t, y: y, y0, t_span=(0.0, 10.0), order=p, rtol=rtol, atol=atol, dense=False)
    eps = atol + rtol * 3.0
    rho = min((eps / (3.0 / math.factorial(m))) ** (1.0 / m) for m in (p - 1, p))
    assert float(sol.t[1]) == pytest.approx(rho * math.exp(-0.7 / (p - 1)), rel=1e-14)


def test_same_steps_and_end_error_as_heyoka_on_kepler():
    hy = pytest.importorskip("heyoka")
    np = pytest.importorskip("numpy")
    e, tol = 0.5, 1e-12
    y0 = kepler_initial(e)
    x, y, vx, vy = hy.make_vars("x", "y", "vx", "vy")
    r3 = (x * x + y * y) ** -1.5
    ta = hy.taylor_adaptive([(x, vx), (y, vy), (vx, -x * r3), (vy, -y * r3)], y0.numpy().copy(), tol=tol)
    times = [0.0]
    while ta.time < 2 * math.pi:
        ta.step(max_delta_t=2 * math.pi - ta.time)
        times.append(ta.time)
    sol = ts.solve(kepler_rhs, y0, t_span=(0.0, 2 * math.pi), order="auto", rtol=tol, atol=tol)
    assert sol.stats.steps == len(times) - 1
    torch.testing.assert_close(sol.t, torch.tensor(times, dtype=F64), rtol=1e-12, atol=1e-12)
    err_ts = float((sol.ys[-1] - y0).abs().max())
    err_hy = float(np.abs(ta.state - y0.numpy()).max())
    assert err_ts <= 2 * err_hy + 1e-15


@pytest.mark.parametrize("compile_", [True, False])
def test_per_trajectory_steps_equal_each_member_alone(compile_):
    ecc = [0.1, 0.5, 0.8]
    y0 = torch.stack([kepler_initial(e) for e in ecc])
    opts = {"compile": compile_}
    kw = dict(t_span=(0.0, 2 * math.pi), order=10, rtol=1e-9, atol=1e-9, backend_options=opts)
    batch = ts.solve(kepler_rhs, y0, **kw)
    assert batch.stats.compiled == compile_
    assert batch.t.shape == (batch.stats.steps + 1, 3) and batch.ys.shape == (batch.stats.steps + 1, 3, 4)
    tq = torch.linspace(0.3, 6.0, 7, dtype=F64)
    dense = batch(tq)
    assert dense.shape == (7, 3, 4)
    for i, e in enumerate(ecc):
        alone = ts.solve(kepler_rhs, y0[i], **kw)
        assert int(batch.stats.steps_per_member[i]) == alone.stats.steps
        torch.testing.assert_close(batch.ys[-1, i], alone.ys[-1], rtol=0, atol=1e-13 if compile_ else 1e-11)
        torch.testing.assert_close(dense[:, i], alone(tq), rtol=0, atol=1e-11)
        torch.testing.assert_close(batch.ys[-1, i], kepler_exact(e, 2 * math.pi), rtol=0, atol=1e-7)
    assert float(batch.t[-1].min()) == float(batch.t[-1].max()) == 2 * math.pi
    # the more eccentric orbit needs more steps; members finish on their own
    steps = batch.stats.steps_per_member
    assert steps[2] > steps[0]
    shared = ts.solve(kepler_rhs, y0, batch_steps="shared", **kw)
    assert shared.t.ndim == 1 and shared.stats.steps >= int(steps.max())
    torch.testing.assert_close(shared.ys[-1], batch.ys[-1], rtol=0, atol=1e-7)


def test_per_trajectory_needs_compiled_path_or_autonomous_f():
    def forced(t, y):  # reads t: members at different times cannot share one call of f
        return torch.stack([y[..., 1], -y[..., 0] + torch.cos(t) * torch.ones_like(y[..., 0])], dim=-1)

    y0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    sol = ts.solve(forced, y0, t_span=(0.0, 1.0), order=8, rtol=1e-10, atol=1e-10, backend_options={"compile": False})
    assert "shared" in sol.stats.notes and sol.t.ndim == 1
    comp = ts.solve(forced, y0, t_span=(0.0, 1.0), order=8, rtol=1e-10, atol=1e-10)
    assert comp.stats.compiled and comp.t.ndim == 2
    torch.testing.assert_close(comp.ys[-1], sol.ys[-1], rtol=0, atol=1e-9)


def test_progress_bar_over_t(capsys):
    y0 = kepler_initial(0.5)
    ts.solve(kepler_rhs, y0, t_span=(0.0, 4 * math.pi), order="auto", rtol=1e-9, atol=1e-9, progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and "12.57/12.57" in err and "steps" in err
    ts.solve(kepler_rhs, torch.stack([y0, y0]), t_span=(0.0, 1.0), order=6, rtol=1e-6, atol=1e-6, progress=True,
             backend_options={"compile": False})
    assert "100%" in capsys.readouterr().err


def test_stiff_van_der_pol_says_stiff_and_points_to_implicit_solvers():
    f = van_der_pol(1000.0)
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    with pytest.raises(ts.StiffnessError, match=r"looks stiff.*Radau.*BDF") as info:
        ts.solve(f, y0, t_span=(0.0, 3000.0), order="auto", rtol=1e-8, atol=1e-8, max_steps=3000)
    err = info.value
    assert isinstance(err, ts.SolverError) and isinstance(err, ts.TaylorSolveError)
    assert err.h is not None and 0 < err.h < 1e-2 and 0 < err.time < 3000.0
    assert f"t = {err.time:.6g}" in str(err) and "max_steps=3000" in str(err)


def test_blow_up_is_not_called_stiff():
    with pytest.raises(ts.StiffnessError, match="does not look stiff") as info:
        ts.solve(lambda t, y: y * y, torch.ones(1, dtype=F64), t_span=(0.0, 2.0), order=8, rtol=1e-8, atol=1e-8,
                 max_steps=300)
    assert 0.9 < info.value.time <= 1.0  # y = 1 / (1 - t) blows up at t = 1


def test_dense_output_vectorised_equals_per_point_horner():
    y0 = kepler_initial(0.7)
    sol = ts.solve(kepler_rhs, y0, t_span=(0.0, 3.0), order=12, rtol=1e-10, atol=1e-10)
    g = torch.Generator().manual_seed(0)
    tq = 3.0 * torch.rand(500, generator=g, dtype=F64)
    got = sol(tq)
    C = sol.coefficients
    for j in range(0, 500, 37):
        i = int(torch.searchsorted(sol.t, tq[j], right=True)) - 1
        i = min(max(i, 0), len(C) - 1)
        s = tq[j] - sol.t[i]
        want = sum(C[i, k] * s**k for k in range(C.shape[1]))
        torch.testing.assert_close(got[j], want, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(sol(sol.t), sol.ys, rtol=1e-12, atol=1e-12)
    assert ts.solve(kepler_rhs, y0, t_span=(0.0, 3.0), order=8, dense=False).coefficients is None
