"""The compiled taylor_mode path matches the interpreted jets (the reference) to round-off.

The compiled path traces f into a scalar tape and runs numba code generated from it
(taylorsolve.coefficients.tape / codegen / compiled); the interpreted path sweeps torch jets.  Both
implement the same recurrences, so their coefficients agree to a few ulps of the coefficients' scale:
checked on the ODE zoo (tests/core/problems.py), on right-hand sides drawn by hypothesis, and through
whole adaptive and fixed-grid solves.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import taylorsolve as ts
from taylorsolve.coefficients.taylor_mode import TaylorModeBackend

from .problems import ZOO, kepler_exact, kepler_initial, kepler_rhs, pendulum

pytest.importorskip("numba")

F64 = torch.float64


def _coeffs(f, t, y, order, compile_):
    return TaylorModeBackend(compile=compile_).coefficients(f, torch.tensor(t, dtype=y.dtype), y, order)


def _assert_roundoff(got, ref, rtol):
    scale = max(float(r.abs().max()) for r in ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype
        err = float((a - b).abs().max())
        assert err <= rtol * scale, f"c_{k}: |compiled - interpreted| = {err:.3e}, scale {scale:.3e}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_compiled_coefficients_match_interpreted(name):
    f, y0 = ZOO[name]
    y = torch.tensor(y0, dtype=F64)
    y = torch.stack([y, 0.9 * y + 0.05])  # a batch of two members: the batched code path
    ref = _coeffs(f, 0.37, y, 12, False)
    got = _coeffs(f, 0.37, y, 12, True)
    _assert_roundoff(got, ref, 1e-13)
    one = _coeffs(f, 0.37, y[1], 12, True)  # the single-trajectory code path
    _assert_roundoff(one, [r[1] for r in ref], 1e-13)


# ---- right-hand sides drawn by hypothesis ------------------------------------------------------------
N = 3
_UNARY = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "atan": torch.atan,
    "exp_tanh": lambda x: torch.exp(torch.tanh(x)),
    "sqrt1p": lambda x: torch.sqrt(1.0 + x * x),
    "log1p_sq": lambda x: torch.log1p(x * x),
    "rational": lambda x: x / (1.0 + x * x),
    "pow": lambda x: (2.0 + torch.sin(x)) ** -1.5,
}
_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "where": lambda a, b: torch.where(a > 0.1, a * b, b - a),
    "atan2": lambda a, b: torch.atan2(a, b * b + 1.0),
}


def _expr(depth):
    leaf = st.one_of(
        st.tuples(st.just("y"), st.integers(0, N - 1)),
        st.tuples(st.just("t")),
        st.tuples(st.just("c"), st.floats(-2.0, 2.0, allow_nan=False).map(lambda v: round(v, 3))),
    )
    if depth == 0:
        return leaf
    sub = _expr(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.just("u"), st.sampled_from(sorted(_UNARY)), sub),
        st.tuples(st.just("b"), st.sampled_from(sorted(_BINARY)), sub, sub),
    )


def _evaluate(e, t, y):
    kind = e[0]
    if kind == "y":
        return y[..., e[1]]
    if kind == "t":
        return t * torch.ones_like(y[..., 0])
    if kind == "c":
        return e[1] * torch.ones_like(y[..., 0])
    if kind == "u":
        return _UNARY[e[1]](_evaluate(e[2], t, y))
    return _BINARY[e[1]](_evaluate(e[2], t, y), _evaluate(e[3], t, y))


@settings(max_examples=8, deadline=None)
@given(exprs=st.lists(_expr(3), min_size=N, max_size=N),
       y0=st.lists(st.floats(-1.5, 1.5, allow_nan=False), min_size=N, max_size=N))
def test_hypothesis_rhs_compiled_matches_interpreted(exprs, y0):
    def f(t, y):
        return torch.stack([_evaluate(e, t, y) for e in exprs], dim=-1)

    y = torch.tensor(y0, dtype=F64)
    ref = _coeffs(f, 0.2, y, 8, False)
    got = _coeffs(f, 0.2, y, 8, True)
    _assert_roundoff(got, ref, 1e-12)


# ---- whole solves ----------------------------------------------------------------------------------
def test_adaptive_solve_compiled_equals_interpreted():
    y0 = kepler_initial(0.5)
    kw = dict(t_span=(0.0, 2 * math.pi), order="auto", rtol=1e-10, atol=1e-10)
    comp = ts.solve(kepler_rhs, y0, backend="taylor_mode", **kw)
    interp = ts.solve(kepler_rhs, y0, backend="taylor_mode", backend_options={"compile": False}, **kw)
    assert comp.stats.compiled and not interp.stats.compiled
    assert comp.stats.steps == interp.stats.steps
    torch.testing.assert_close(comp.t, interp.t, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(comp.ys, interp.ys, rtol=1e-12, atol=1e-12)
    tq = torch.linspace(0.0, 2 * math.pi, 50, dtype=F64)
    torch.testing.assert_close(comp(tq), interp(tq), rtol=1e-12, atol=1e-12)
    assert comp.stats.f_evals == comp.stats.steps and comp.stats.derivative_evals == comp.stats.steps


@pytest.mark.parametrize("batch", [False, True])
def test_fixed_grid_compiled_equals_interpreted(batch):
    y0 = torch.tensor([1.2, -0.4], dtype=F64)
    if batch:
        y0 = torch.stack([y0, -y0, 0.5 * y0])
    t = torch.linspace(0.0, 3.0, 61, dtype=F64)
    comp = ts.solve(pendulum, y0, t, order=6, backend="taylor_mode", backend_options={"compile": True}, dense=True)
    interp = ts.solve(pendulum, y0, t, order=6, backend="taylor_mode", backend_options={"compile": False}, dense=True)
    assert comp.stats.compiled and not interp.stats.compiled
    torch.testing.assert_close(comp.ys, interp.ys, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(comp(1.234), interp(1.234), rtol=1e-13, atol=1e-13)


def test_float32_compiled_matches_interpreted():
    y = kepler_initial(0.3).float()
    ref = _coeffs(kepler_rhs, 0.1, y, 10, False)
    got = _coeffs(kepler_rhs, 0.1, y, 10, True)
    assert all(c.dtype == torch.float32 for c in got)
    _assert_roundoff(got, ref, 1e-5)


def test_constants_are_runtime_parameters_not_baked_in():
    """A captured constant changed between solves is seen, and the compiled code is reused (no recompile)."""
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)

    def f(t, y):
        return y @ A.T

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    first = ts.solve(f, y0, t_span=(0.0, 1.0), order=12, rtol=1e-12, atol=1e-12)
    A[0, 1], A[1, 0] = 2.0, -2.0  # now the frequency is 2
    second = ts.solve(f, y0, t_span=(0.0, 1.0), order=12, rtol=1e-12, atol=1e-12)
    assert first.stats.compiled and second.stats.compiled
    assert second.stats.compile_time == 0.0
    torch.testing.assert_close(first.ys[-1], torch.tensor([math.cos(1.0), -math.sin(1.0)], dtype=F64), rtol=0, atol=1e-11)
    exact = torch.tensor([math.cos(2.0), -math.sin(2.0)], dtype=F64)
    torch.testing.assert_close(second.ys[-1], exact, rtol=0, atol=1e-11)


def test_what_the_tape_cannot_replay_runs_interpreted_with_the_reason():
    def branchy(t, y):  # Python control flow on the state: fine for jets (traced per call), not for a tape
        return -y if bool(y[0] > 0) else y

    y0 = torch.tensor([0.5, 0.1], dtype=F64)
    sol = ts.solve(branchy, y0, t_span=(0.0, 0.5), order=6, rtol=1e-9, atol=1e-9, backend="taylor_mode")
    assert not sol.stats.compiled and "not compiled" in sol.stats.notes
    torch.testing.assert_close(sol.ys[-1], y0 * math.exp(-0.5), rtol=1e-8, atol=0)

    def cumulative(t, y):  # cumsum: supported by the jets, not by the tape
        return -torch.cumsum(y, 0) * 0.1

    sol = ts.solve(cumulative, y0, t_span=(0.0, 0.5), order=4, rtol=1e-8, atol=1e-8, backend="taylor_mode")
    assert not sol.stats.compiled and "cumsum" in sol.stats.notes
    with pytest.raises(ts.UnsupportedOperationError, match="compile=True"):
        ts.solve(cumulative, y0, t_span=(0.0, 0.5), order=4, backend="taylor_mode", backend_options={"compile": True})


def test_coupled_batch_members_are_solved_as_one_system():
    """f couples the rows of y: the trace of one row would be wrong, validation catches it (one f evaluation)."""
    def f(t, y):
        return -y + y.mean(0, keepdim=True)  # couples batch members

    y0 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=F64)
    comp = ts.solve(f, y0, t_span=(0.0, 1.0), order=8, rtol=1e-10, atol=1e-10)
    interp = ts.solve(f, y0, t_span=(0.0, 1.0), order=8, rtol=1e-10, atol=1e-10, batch_steps="shared",
                      backend_options={"compile": False})
    assert comp.stats.compiled and "couples" in comp.stats.notes
    torch.testing.assert_close(comp.ys[-1], interp.ys[-1], rtol=1e-9, atol=1e-9)


def test_without_numba_the_interpreted_path_runs(monkeypatch):
    from taylorsolve.coefficients import compiled

    monkeypatch.setattr(compiled, "_HAVE_NUMBA", False)
    y0 = kepler_initial(0.5)
    sol = ts.solve(kepler_rhs, y0, t_span=(0.0, math.pi), order="auto", rtol=1e-9, atol=1e-9)
    assert not sol.stats.compiled and sol.stats.backend == "taylor_mode"
    torch.testing.assert_close(sol.ys[-1], kepler_exact(0.5, math.pi), rtol=0, atol=1e-7)


def test_auto_compile_leaves_large_right_hand_sides_interpreted():
    """compile='auto' stops tracing beyond AUTO_MAX_NODES scalar operations (numba's compile time grows
    faster than linearly); the solve runs on the interpreted jets and says why."""
    w = torch.linspace(0.1, 1.0, 150, dtype=torch.float64)

    def f(t, y):  # ~450 scalar operations per evaluation
        return -torch.stack([(w * torch.sin(w * y[..., 0:1])).sum(-1), y[..., 1]], dim=-1)

    y0 = torch.tensor([0.3, 1.0], dtype=torch.float64)
    sol = ts.solve(f, y0, t_span=(0.0, 0.5), order=8, rtol=1e-9, atol=1e-9)
    assert not sol.stats.compiled
    assert f"more than {TaylorModeBackend.AUTO_MAX_NODES} scalar operations" in " ".join(
        [sol.stats.notes] if isinstance(sol.stats.notes, str) else list(sol.stats.notes))
