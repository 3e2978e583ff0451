"""One table of operations (taylorsolve._ops) feeds taylorsolve.math, the jets, the tape and the symbolic backend;
Jet, TapeArray and SymbolicArray share one base (TensorLike)."""
from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp
import torch

import taylorsolve as ts
from taylorsolve import _ops
from taylorsolve import math as tm
from taylorsolve._ops import OPS, Op, math_names, supported_by
from taylorsolve._symbolic_array import SYMBOLIC_FUNCTIONS, SymbolicArray
from taylorsolve._tensorlike import TensorLike
from taylorsolve.coefficients.tape import TapeArray
from taylorsolve.coefficients.taylor_mode import Jet, supported_operations

F64 = torch.float64


def test_stand_ins_share_one_base_and_dispatch_exactly_the_table():
    for cls in (Jet, TapeArray, SymbolicArray):
        assert issubclass(cls, TensorLike)
    def table(b):  # reversed dunders (__radd__, ...) are dispatched by the base, swapping the arguments
        return [n for n in supported_by(b) if n not in _ops.REVERSED]

    assert sorted(Jet._table) == table("taylor_mode") and supported_operations() == supported_by("taylor_mode")
    assert sorted(TapeArray._table) == table("compiled")
    assert sorted(SymbolicArray._table) == sorted(SYMBOLIC_FUNCTIONS) == table("symbolic")
    assert tm.__all__ == ["is_symbolic", *math_names()]
    # every elementwise entry is supported by every backend that lists it, without per-backend code
    for op in OPS:
        if op.kind == "unary":
            assert op.name in Jet._table and op.name in SymbolicArray._table and op.name in TapeArray._table


@pytest.mark.parametrize("name", [n for n in math_names() if _ops.lookup(n).kind == "unary"])
def test_every_math_function_on_tensors_jets_and_symbols(name):
    op = _ops.lookup(name)
    fn = getattr(tm, name)
    x = torch.tensor([1.3, 1.7] if name == "acosh" else [0.3, 0.7], dtype=F64)
    torch.testing.assert_close(fn(x), op.torch(x), rtol=0, atol=0)
    # jets: y' = fn(y) + cos(t): coefficients from taylor_mode agree with nested JVPs
    def f(t, y):
        return fn(y) * 0.5 + torch.cos(t)

    a = ts.taylor_coefficients(f, 0.1, x, 4, backend="taylor_mode")
    b = ts.taylor_coefficients(f, 0.1, x, 4, backend="autodiff")
    for ca, cb in zip(a, b):
        torch.testing.assert_close(ca, cb, rtol=1e-11, atol=1e-13)
    s = sp.Symbol("s", positive=True)
    out = fn(s)
    x0 = float(x[0])
    assert isinstance(out, sp.Expr) and float(out.subs(s, sp.Float(x0))) == pytest.approx(float(op.torch(x)[0]), rel=1e-12)


def test_adding_an_elementwise_operation_is_one_entry():
    """softsign(x) = x / (1 + |x|): one table entry serves math, jets, the compiled tape and SymPy."""
    pytest.importorskip("numba")
    op = Op(
        "softsign", "unary", frozenset(_ops.BACKENDS), (), torch.nn.functional.softsign, True,
        sympy=lambda sp_, x: x / (1 + sp_.Abs(x)),
        scalar="{0} / (1.0 + abs({0}))",
        chain=lambda P, u, v: 1.0 / ((1.0 + P.op("abs", u)) * (1.0 + P.op("abs", u))),
        doc="x / (1 + |x|)",
    )
    _ops.add_operation(op)
    try:
        assert "softsign" in tm.__all__ and "softsign" in supported_operations()

        def f(t, y):
            return tm.softsign(y) * torch.cos(t) + torch.nn.functional.softsign(2.0 * y)

        y0 = torch.tensor([0.3, -0.7], dtype=F64)
        ref = ts.taylor_coefficients(f, 0.2, y0, 8, backend="autodiff")
        for backend, opts in (("taylor_mode", {"compile": False}), ("taylor_mode", {"compile": True})):
            got = ts.taylor_coefficients(f, 0.2, y0, 8, backend=backend, **opts)
            for k, (a, b) in enumerate(zip(got, ref)):
                torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13, msg=f"{backend} {opts} c_{k}")
        sym = ts.taylor_coefficients(f, 0.2, y0, 3, backend="symbolic")  # SymPy swells with |x|: low order
        for k, (a, b) in enumerate(zip(sym, ref)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13, msg=f"symbolic c_{k}")
        # against an independent reference: the Taylor series of softsign(t) at 0.3 by mpmath
        with mpmath.workdps(30):
            want = mpmath.taylor(lambda z: z / (1 + abs(z)), mpmath.mpf(3) / 10, 6)
        cs = ts.taylor_coefficients(lambda t, y: tm.softsign(t) * torch.ones_like(y), 0.3, torch.zeros(1, dtype=F64), 7,
                                    backend="taylor_mode")
        for k in range(6):
            assert float(cs[k + 1]) == pytest.approx(float(want[k]) / (k + 1), rel=1e-12, abs=1e-15)
    finally:
        _ops.remove_operation("softsign")
    assert "softsign" not in tm.__all__ and not hasattr(tm, "softsign")


def test_unsupported_and_leaking_calls_name_the_function_in_every_stand_in():
    y = torch.tensor([0.1, 0.2], dtype=F64)
    for backend, opts, err in (("taylor_mode", {"compile": False}, ts.UnsupportedOperationError),
                               ("taylor_mode", {"compile": True}, ts.UnsupportedOperationError),
                               ("symbolic", {}, ts.SymbolicBackendError)):
        with pytest.raises(err, match=r"erfinv"):
            ts.taylor_coefficients(lambda t, y: torch.erfinv(y), 0.0, y, 3, backend=backend, **opts)
        with pytest.raises(ts.DerivativeLeakError):
            ts.taylor_coefficients(lambda t, y: y.detach() * 2, 0.0, y, 3, backend=backend, **opts)
