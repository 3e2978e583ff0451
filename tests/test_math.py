"""taylorsolve.math: torch on tensors (and on anything with __torch_function__), SymPy on symbols."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taylorsolve import math as tm
from taylorsolve._symbolic_array import SymbolicArray
from taylorsolve.errors import SymbolicBackendError

UNARY = {
    "sin": (torch.sin, sp.sin),
    "cos": (torch.cos, sp.cos),
    "tan": (torch.tan, sp.tan),
    "exp": (torch.exp, sp.exp),
    "log": (torch.log, sp.log),
    "sqrt": (torch.sqrt, sp.sqrt),
    "tanh": (torch.tanh, sp.tanh),
    "sigmoid": (torch.sigmoid, lambda x: 1 / (1 + sp.exp(-x))),
    "abs": (torch.abs, sp.Abs),
    "square": (torch.square, lambda x: x**2),
    "sinh": (torch.sinh, sp.sinh),
    "cosh": (torch.cosh, sp.cosh),
    "atan": (torch.atan, sp.atan),
    "expm1": (torch.expm1, lambda x: sp.exp(x) - 1),
    "log1p": (torch.log1p, lambda x: sp.log(1 + x)),
    "reciprocal": (torch.reciprocal, lambda x: 1 / x),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_on_tensors_equals_torch(name):
    torch_fn, _ = UNARY[name]
    x = torch.linspace(0.1, 1.3, 7, dtype=torch.float64)
    out = getattr(tm, name)(x)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch_fn(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_on_symbols_gives_sympy(name):
    _, sympy_fn = UNARY[name]
    x = sp.Symbol("x", positive=True)
    out = getattr(tm, name)(x)
    assert isinstance(out, sp.Expr)
    assert sp.simplify(out - sympy_fn(x)) == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=6))
def test_unary_hypothesis_matches_torch(values):
    x = torch.tensor(values, dtype=torch.float64)
    for name in ("sin", "cos", "exp", "tanh", "sigmoid", "abs", "square"):
        torch.testing.assert_close(getattr(tm, name)(x), UNARY[name][0](x), rtol=0, atol=0)


def test_reductions_and_structure_on_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w = torch.randn(4, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(tm.softmax(x, -1), torch.softmax(x, -1))
    torch.testing.assert_close(tm.log_softmax(x, 0), torch.log_softmax(x, 0))
    torch.testing.assert_close(tm.logsumexp(x, 1), torch.logsumexp(x, 1))
    torch.testing.assert_close(tm.logsumexp(x, 1, keepdim=True), torch.logsumexp(x, 1, keepdim=True))
    torch.testing.assert_close(tm.sum(x), x.sum())
    torch.testing.assert_close(tm.sum(x, 0), x.sum(0))
    torch.testing.assert_close(tm.sum(x, -1, keepdim=True), x.sum(-1, keepdim=True))
    torch.testing.assert_close(tm.mean(x, 1), x.mean(1))
    torch.testing.assert_close(tm.matmul(x, w), x @ w)
    torch.testing.assert_close(tm.stack([x, 2 * x], dim=-1), torch.stack([x, 2 * x], dim=-1))
    torch.testing.assert_close(tm.cat([x, x[:1]], dim=0), torch.cat([x, x[:1]], dim=0))
    torch.testing.assert_close(tm.where(x > 0, x, -x), x.abs())
    torch.testing.assert_close(tm.pow(x.abs(), 1.5), x.abs() ** 1.5)
    torch.testing.assert_close(tm.pow(2.0, x), 2.0**x)
    torch.testing.assert_close(tm.softplus(x), torch.nn.functional.softplus(x))
    torch.testing.assert_close(tm.maximum(x, -x), x.abs())


class _Recorder:
    """A non-tensor object with __torch_function__ (like a Taylor-mode jet)."""

    calls: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(func.__name__)
        return ("handled", func.__name__)


def test_objects_with_torch_function_are_served_not_rejected():
    _Recorder.calls = []
    r = _Recorder()
    assert tm.sin(r) == ("handled", "sin")
    assert tm.stack([r, r], dim=-1) == ("handled", "stack")
    assert tm.softmax(r, -1)[0] == "handled"
    assert tm.where(r, r, r) == ("handled", "where")
    assert _Recorder.calls == ["sin", "stack", "softmax", "where"]


def test_symbolic_scalars_structures():
    x, y = sp.symbols("x y", real=True)
    assert tm.pow(x, 3) == x**3
    assert tm.pow(2, x) == 2**x
    assert tm.where(x > 0, x, y) == sp.Piecewise((x, x > 0), (y, True))
    assert tm.is_symbolic([1.0, (torch.ones(1), x)])
    assert not tm.is_symbolic([1.0, (torch.ones(1),)])
    s = tm.stack([x, y], dim=0)
    assert isinstance(s, SymbolicArray) and s.shape == (2,)
    sm = tm.softmax(s, 0)
    assert sp.simplify(sm[0].item() - sp.exp(x) / (sp.exp(x) + sp.exp(y))) == 0
    lse = tm.logsumexp(s, 0)
    assert sp.simplify(lse.item() - sp.log(sp.exp(x) + sp.exp(y))) == 0
    assert tm.sum(s).item() == x + y


def test_symbolic_array_with_tensor_constants():
    y = SymbolicArray.symbols("y", (2,))
    w = torch.tensor([[1.0, 0.5], [-2.0, 3.0]], dtype=torch.float64)
    out = tm.matmul(w, y)
    assert isinstance(out, SymbolicArray)
    y0, y1 = y.flat_expressions()
    assert sp.simplify(out[0].item() - (y0 + sp.Rational(1, 2) * y1)) == 0
    assert sp.simplify(out[1].item() - (-2 * y0 + 3 * y1)) == 0
    # tensor @ symbolic through the operator too (Tensor.__matmul__ -> __torch_function__)
    out2 = w @ y
    assert [sp.simplify(a - b) for a, b in zip(out.flat_expressions(), out2.flat_expressions())] == [0, 0]
    c = tm.cat([y, tm.sin(y)], dim=-1)
    assert c.shape == (4,) and c[3].item() == sp.sin(y1)
    # numeric evaluation of a symbolic result agrees with torch on the same numbers
    vals = {y0: 0.3, y1: -0.7}
    sym = tm.softmax(tm.tanh(y) * 2, -1)
    num = torch.softmax(torch.tanh(torch.tensor([0.3, -0.7], dtype=torch.float64)) * 2, -1)
    got = torch.tensor([float(e.subs(vals)) for e in sym.flat_expressions()], dtype=torch.float64)
    torch.testing.assert_close(got, num, rtol=1e-14, atol=1e-14)


def test_sympy_matrix_argument_is_symbolic():
    x = sp.Symbol("x")
    m = sp.Matrix([[x], [2 * x]])
    out = tm.exp(m)
    assert isinstance(out, SymbolicArray) and out.shape == (2, 1)
    assert out[1, 0].item() == sp.exp(2 * x)


def test_unsupported_torch_function_on_symbolic_array_names_it():
    y = SymbolicArray.symbols("y", (2,))
    with pytest.raises(SymbolicBackendError, match=r"torch\.erfinv is not supported by the symbolic backend"):
        torch.erfinv(y)
    with pytest.raises(SymbolicBackendError, match=r"torch\.Tensor\.erfinv"):
        y.erfinv()


def test_math_does_not_import_sympy_for_tensor_users():
    code = (
        "import sys, torch\n"
        "import taylorsolve.math as tm\n"
        "tm.sin(torch.ones(2)); tm.stack([torch.ones(1)], 0)\n"
        "print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_numpy_object_arrays_do_not_swallow_symbolic_arrays():
    y = SymbolicArray.symbols("y", (2,))
    a = np.array([1.0, 2.0])
    out = a * y  # numpy must defer to SymbolicArray.__rmul__
    assert isinstance(out, SymbolicArray) and out.shape == (2,)
    assert out[1].item() == 2 * y[1].item()
