"""Elementary functions that work on every kind of state a right-hand side ``f(t, y)`` may receive.

A user writes ``f`` once; the coefficient backends call it with different objects:

* ``torch.Tensor`` (``"autodiff"``, ``"finite_difference"``, ``"supplied"``, plain evaluation),
* Taylor-mode jets (``"taylor_mode"``), which implement ``__torch_function__``,
* :class:`~taylorsolve._symbolic_array.SymbolicArray` / SymPy expressions (``"symbolic"``).

Every function here dispatches on its arguments: if any argument (recursively inside lists and
tuples) is a SymPy object or a ``SymbolicArray``, the SymPy implementation runs; otherwise the
corresponding torch function is called, so tensors *and* any object that implements
``__torch_function__`` are served (nothing is rejected for not being a ``torch.Tensor``).

SymPy is imported lazily: if it has never been imported, no argument can be symbolic, and the
check costs a dictionary lookup.

Example::

    from taylorsolve import math as tm

    def pendulum(t, y):
        return tm.stack([y[..., 1], -tm.sin(y[..., 0])], dim=-1)

On SymPy scalars the elementwise functions return plain SymPy expressions
(``tm.sin(x) == sympy.sin(x)``, ``tm.sigmoid(x) == 1/(1 + exp(-x))``); on symbolic arrays they return
symbolic arrays.
"""
from __future__ import annotations

import builtins
import sys
from typing import Any, Sequence

import torch

__all__ = [
    "is_symbolic",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "sinh",
    "cosh",
    "tanh",
    "exp",
    "expm1",
    "log",
    "log1p",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "square",
    "abs",
    "sigmoid",
    "softplus",
    "softmax",
    "log_softmax",
    "logsumexp",
    "pow",
    "atan2",
    "maximum",
    "minimum",
    "stack",
    "cat",
    "sum",
    "mean",
    "matmul",
    "where",
]


def is_symbolic(x: Any) -> bool:
    """True if ``x`` (recursively inside lists/tuples) is a SymPy object or a ``SymbolicArray``."""
    if isinstance(x, (list, tuple)):
        return builtins.any(is_symbolic(v) for v in x)
    sa = sys.modules.get("taylorsolve._symbolic_array")
    if sa is not None and isinstance(x, sa.SymbolicArray):
        return True
    sympy = sys.modules.get("sympy")
    if sympy is not None and isinstance(x, (sympy.Basic, sympy.MatrixBase, sympy.NDimArray)):
        return True
    return False


def _any_symbolic(*args: Any) -> bool:
    return builtins.any(is_symbolic(a) for a in args)


def _sym(name: str, *args: Any, **kwargs: Any) -> Any:
    from ._symbolic_array import symbolic_call

    return symbolic_call(name, *args, **kwargs)


def _unary(name: str, torch_fn: Any, doc: str) -> Any:
    def fn(x: Any) -> Any:
        if is_symbolic(x):
            return _sym(name, x)
        return torch_fn(x)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc}\n\nSymPy argument -> SymPy result; otherwise ``{torch_fn.__module__ or 'torch'}.{torch_fn.__name__}(x)``."
    fn.__module__ = __name__
    return fn


sin = _unary("sin", torch.sin, "Elementwise sine.")
cos = _unary("cos", torch.cos, "Elementwise cosine.")
tan = _unary("tan", torch.tan, "Elementwise tangent.")
asin = _unary("asin", torch.asin, "Elementwise arcsine.")
acos = _unary("acos", torch.acos, "Elementwise arccosine.")
atan = _unary("atan", torch.atan, "Elementwise arctangent.")
sinh = _unary("sinh", torch.sinh, "Elementwise hyperbolic sine.")
cosh = _unary("cosh", torch.cosh, "Elementwise hyperbolic cosine.")
tanh = _unary("tanh", torch.tanh, "Elementwise hyperbolic tangent.")
exp = _unary("exp", torch.exp, "Elementwise exponential.")
expm1 = _unary("expm1", torch.expm1, "Elementwise ``exp(x) - 1``.")
log = _unary("log", torch.log, "Elementwise natural logarithm.")
log1p = _unary("log1p", torch.log1p, "Elementwise ``log(1 + x)``.")
sqrt = _unary("sqrt", torch.sqrt, "Elementwise square root.")
rsqrt = _unary("rsqrt", torch.rsqrt, "Elementwise ``1 / sqrt(x)``.")
reciprocal = _unary("reciprocal", torch.reciprocal, "Elementwise ``1 / x``.")
square = _unary("square", torch.square, "Elementwise ``x**2``.")
abs = _unary("abs", torch.abs, "Elementwise absolute value (its derivative is sign(x); SymPy's DiracDelta is dropped).")
sigmoid = _unary("sigmoid", torch.sigmoid, "Logistic function ``1 / (1 + exp(-x))``.")


def softplus(x: Any) -> Any:
    """``log(1 + exp(x))`` (torch's linear regime above its threshold is not reproduced symbolically)."""
    if is_symbolic(x):
        return _sym("softplus", x)
    return torch.nn.functional.softplus(x)


def softmax(x: Any, dim: int) -> Any:
    """``exp(x_i) / sum_j exp(x_j)`` along ``dim``."""
    if is_symbolic(x):
        return _sym("softmax", x, dim)
    return torch.softmax(x, dim)


def log_softmax(x: Any, dim: int) -> Any:
    """``x_i - logsumexp(x, dim)``."""
    if is_symbolic(x):
        return _sym("log_softmax", x, dim)
    return torch.log_softmax(x, dim)


def logsumexp(x: Any, dim: int | Sequence[int], keepdim: bool = False) -> Any:
    """``log(sum_j exp(x_j))`` along ``dim``."""
    if is_symbolic(x):
        return _sym("logsumexp", x, dim, keepdim=keepdim)
    return torch.logsumexp(x, dim, keepdim=keepdim)


def pow(x: Any, p: Any) -> Any:
    """``x ** p`` elementwise (either argument may be a number)."""
    if _any_symbolic(x, p):
        return _sym("pow", x, p)
    return torch.pow(x, p)


def atan2(y: Any, x: Any) -> Any:
    """Elementwise ``atan2(y, x)``."""
    if _any_symbolic(y, x):
        return _sym("atan2", y, x)
    return torch.atan2(y, x)


def maximum(a: Any, b: Any) -> Any:
    """Elementwise maximum (symbolically a ``Piecewise``; derivatives are one-sided at ties)."""
    if _any_symbolic(a, b):
        return _sym("maximum", a, b)
    return torch.maximum(a, b)


def minimum(a: Any, b: Any) -> Any:
    """Elementwise minimum (symbolically a ``Piecewise``)."""
    if _any_symbolic(a, b):
        return _sym("minimum", a, b)
    return torch.minimum(a, b)


def stack(seq: Sequence[Any], dim: int = 0) -> Any:
    """Stack equally shaped arrays along a new dimension ``dim``."""
    seq = list(seq)
    if is_symbolic(seq):
        return _sym("stack", seq, dim)
    return torch.stack(seq, dim=dim)


def cat(seq: Sequence[Any], dim: int = 0) -> Any:
    """Concatenate arrays along the existing dimension ``dim``."""
    seq = list(seq)
    if is_symbolic(seq):
        return _sym("cat", seq, dim)
    return torch.cat(seq, dim=dim)


def sum(x: Any, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Any:
    """Sum over ``dim`` (all dimensions when ``None``)."""
    if is_symbolic(x):
        return _sym("sum", x, dim, keepdim)
    if dim is None:
        return torch.sum(x)
    return torch.sum(x, dim, keepdim=keepdim)


def mean(x: Any, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Any:
    """Mean over ``dim`` (all dimensions when ``None``)."""
    if is_symbolic(x):
        return _sym("mean", x, dim, keepdim)
    if dim is None:
        return torch.mean(x)
    return torch.mean(x, dim, keepdim=keepdim)


def matmul(a: Any, b: Any) -> Any:
    """Matrix product with ``torch.matmul`` semantics (either side may be a constant tensor)."""
    if _any_symbolic(a, b):
        return _sym("matmul", a, b)
    return torch.matmul(a, b)


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` holds, else ``b`` (symbolically a ``Piecewise``)."""
    if _any_symbolic(cond, a, b):
        return _sym("where", cond, a, b)
    return torch.where(cond, a, b)
