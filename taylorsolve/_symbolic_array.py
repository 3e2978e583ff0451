"""``SymbolicArray``: a tensor-like array of SymPy expressions, so one ``f(t, y)`` serves every backend.

The symbolic backend (:mod:`taylorsolve.coefficients.symbolic`) calls the user's right-hand side with
``t`` a 0-d :class:`SymbolicArray` holding the symbol ``t`` and ``y`` a :class:`SymbolicArray` of the
state symbols ``y_0, y_1, ...``.  The array wraps a NumPy ``object`` array of SymPy expressions and
behaves enough like a ``torch.Tensor`` that right-hand sides written with plain torch calls run
unchanged::

    def pendulum(t, y):
        return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)

* indexing (``y[..., 0]``, slices, integer lists), ``shape``/``ndim``/``dtype``/``device``;
* arithmetic with numbers, torch tensors (converted to SymPy ``Float``\\ s carrying the tensor's exact
  binary value), NumPy arrays, SymPy expressions and other symbolic arrays, with broadcasting; ``@``;
* ``__torch_function__`` for a table of torch functions (``torch.sin``, ``torch.stack``,
  ``torch.softmax``, ``torch.where``, ``torch.nn.functional.silu``, ...) and the matching methods
  (``y.sin()``, ``y.sum(-1)``, ``y.unsqueeze(0)``, ...).

A torch function that is not in the table raises :class:`~taylorsolve.errors.SymbolicBackendError`
naming it, e.g. ``torch.erfinv is not supported by the symbolic backend``.  Data-dependent Python
control flow (``if y[0] > 0:``) and conversions to numbers (``float(y[0])``, ``y.item()`` used as a
number) cannot be traced symbolically either and raise the same error; use ``torch.where`` /
:func:`taylorsolve.math.where` instead.

This module imports SymPy; :mod:`taylorsolve.math` only imports it when it meets a symbolic argument.
"""
from __future__ import annotations

import builtins
import functools
import numbers
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import sympy as sp
import torch

from .errors import SymbolicBackendError

__all__ = [
    "SymbolicArray",
    "as_object_array",
    "is_symbolic",
    "symbolic_call",
    "SYMBOLIC_FUNCTIONS",
    "torch_function_name",
]

_SUPPORTED_HINT = (
    "The symbolic backend supports elementary functions (sin, cos, tan, exp, log, sqrt, tanh, sigmoid, "
    "softmax, logsumexp, abs, pow, ...), arithmetic, indexing, stack/cat/sum/matmul/where and "
    "reshaping; use backend='autodiff' or 'taylor_mode' for other right-hand sides."
)


# --------------------------------------------------------------------------------------------------
# conversion helpers
# --------------------------------------------------------------------------------------------------
def _scalar_array(value: Any) -> np.ndarray:
    """A 0-d object array holding ``value`` (never lets NumPy iterate into SymPy containers)."""
    out = np.empty((), dtype=object)
    out[()] = value
    return out


def _wrap(result: Any) -> np.ndarray:
    """Make sure a NumPy object-array operation result is an ``ndarray`` (0-d results come back bare)."""
    if isinstance(result, np.ndarray):
        if result.dtype != object:
            return _from_numeric_ndarray(result)
        return result
    return _scalar_array(_sympify(result))


def _sympify(x: Any) -> Any:
    if isinstance(x, sp.Basic):
        return x
    if isinstance(x, (bool, np.bool_)):
        return sp.true if x else sp.false
    if isinstance(x, (int, np.integer)):
        return sp.Integer(int(x))
    if isinstance(x, (float, np.floating)):
        return sp.Float(float(x))  # exact binary value of the double, 53-bit precision
    if isinstance(x, (complex, np.complexfloating)):
        return sp.sympify(complex(x))
    try:
        return sp.sympify(x, strict=True)
    except (sp.SympifyError, TypeError) as exc:
        raise SymbolicBackendError(
            f"cannot use a {type(x).__name__} inside a symbolic computation. {_SUPPORTED_HINT}"
        ) from exc


_vsympify = np.frompyfunc(_sympify, 1, 1)


def _float_const(v: float) -> Any:
    """A tensor entry as a SymPy number: integral values become exact SymPy Integers (so expressions
    read ``2*y_0`` rather than ``2.0*y_0``), others a ``Float`` holding the exact binary value."""
    v = float(v)
    if v.is_integer() and builtins.abs(v) < 2.0**53:
        return sp.Integer(int(v))
    return sp.Float(v)


def _from_numeric_ndarray(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        conv = np.frompyfunc(lambda v: sp.true if v else sp.false, 1, 1)
    elif np.issubdtype(a.dtype, np.integer):
        conv = np.frompyfunc(lambda v: sp.Integer(int(v)), 1, 1)
    elif np.issubdtype(a.dtype, np.floating):
        conv = np.frompyfunc(_float_const, 1, 1)
    else:
        conv = _vsympify
    out = conv(a)
    return out if isinstance(out, np.ndarray) else _scalar_array(out)


def _from_tensor(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu()
    if x.is_complex():
        vals = x.numpy()
    elif x.dtype == torch.bool:
        vals = x.numpy()
    elif x.is_floating_point():
        vals = x.to(torch.float64).numpy()  # float32/bfloat16 values are exactly representable in float64
    else:
        vals = x.to(torch.int64).numpy()
    return _from_numeric_ndarray(np.asarray(vals))


def as_object_array(x: Any) -> np.ndarray:
    """Convert ``x`` (symbolic array, tensor, NumPy array, SymPy object, number, nested list) to an
    object array of SymPy objects."""
    if isinstance(x, SymbolicArray):
        return x._a
    if isinstance(x, torch.Tensor):
        return _from_tensor(x)
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            out = _vsympify(x)
            return out if isinstance(out, np.ndarray) else _scalar_array(out)
        return _from_numeric_ndarray(x)
    if isinstance(x, sp.MatrixBase):
        return np.array([[_sympify(v) for v in row] for row in x.tolist()], dtype=object).reshape(x.shape)
    if isinstance(x, sp.NDimArray):
        flat = [_sympify(v) for v in x]  # row-major
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(x.shape)
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            return np.empty((0,), dtype=object)
        parts = [as_object_array(v) for v in x]
        try:
            return np.stack(parts)
        except ValueError as exc:
            raise SymbolicBackendError(
                f"cannot build a symbolic array from a ragged sequence (shapes {[p.shape for p in parts]})"
            ) from exc
    if isinstance(x, (sp.Basic, numbers.Number, np.generic, bool)):
        return _scalar_array(_sympify(x))
    raise SymbolicBackendError(
        f"cannot use a {type(x).__name__} inside a symbolic computation. {_SUPPORTED_HINT}"
    )


def is_symbolic(x: Any) -> bool:
    """True if ``x`` (recursively inside lists/tuples) holds a SymPy object or a :class:`SymbolicArray`."""
    if isinstance(x, (list, tuple)):
        return builtins.any(is_symbolic(v) for v in x)
    return isinstance(x, (SymbolicArray, sp.Basic, sp.MatrixBase, sp.NDimArray))


def _norm_dim(dim: int, ndim: int) -> int:
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"dimension {dim} out of range for a {ndim}-d symbolic array")
    return dim % max(ndim, 1)


def _map1(fn: Callable[[Any], Any], a: np.ndarray) -> np.ndarray:
    return _wrap(np.frompyfunc(fn, 1, 1)(a))


def _mapn(fn: Callable[..., Any], *arrays: np.ndarray) -> np.ndarray:
    return _wrap(np.frompyfunc(fn, len(arrays), 1)(*arrays))


# --------------------------------------------------------------------------------------------------
# SymPy building blocks (scalar level)
# --------------------------------------------------------------------------------------------------
def _sigmoid(x: Any) -> Any:
    return 1 / (1 + sp.exp(-x))


def _relu(x: Any) -> Any:
    return sp.Piecewise((x, x > 0), (0, True))


def _piecewise(c: Any, a: Any, b: Any) -> Any:
    if c is sp.true or c is True:
        return a
    if c is sp.false or c is False:
        return b
    return sp.Piecewise((a, c), (b, True))


_UNARY: dict[str, Callable[[Any], Any]] = {
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "asin": sp.asin,
    "arcsin": sp.asin,
    "acos": sp.acos,
    "arccos": sp.acos,
    "atan": sp.atan,
    "arctan": sp.atan,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "tanh": sp.tanh,
    "asinh": sp.asinh,
    "arcsinh": sp.asinh,
    "acosh": sp.acosh,
    "arccosh": sp.acosh,
    "atanh": sp.atanh,
    "arctanh": sp.atanh,
    "exp": sp.exp,
    "exp2": lambda x: 2**x,
    "expm1": lambda x: sp.exp(x) - 1,
    "log": sp.log,
    "log2": lambda x: sp.log(x) / sp.log(2),
    "log10": lambda x: sp.log(x) / sp.log(10),
    "log1p": lambda x: sp.log(1 + x),
    "sqrt": sp.sqrt,
    "rsqrt": lambda x: 1 / sp.sqrt(x),
    "reciprocal": lambda x: 1 / x,
    "square": lambda x: x**2,
    "abs": sp.Abs,
    "absolute": sp.Abs,
    "neg": lambda x: -x,
    "negative": lambda x: -x,
    "positive": lambda x: x,
    "sign": sp.sign,
    "sigmoid": _sigmoid,
    "expit": _sigmoid,
    "relu": _relu,
    "silu": lambda x: x * _sigmoid(x),
    "erf": sp.erf,
    "logical_not": sp.Not,
}


# --------------------------------------------------------------------------------------------------
# array-level implementations (take anything array-like, return SymbolicArray)
# --------------------------------------------------------------------------------------------------
def _unary(name: str) -> Callable[..., "SymbolicArray"]:
    fn = _UNARY[name]

    def impl(input: Any, *args: Any, out: Any = None, **kwargs: Any) -> SymbolicArray:
        if args or kwargs:
            # e.g. F.relu(x, inplace=False): accept harmless flags only
            bad = {k: v for k, v in kwargs.items() if k not in ("inplace",) or v}
            if args or bad:
                raise SymbolicBackendError(
                    f"torch.{name} with extra arguments {args or ''}{bad or ''} is not supported by the symbolic backend"
                )
        _no_out(out, name)
        return SymbolicArray(_map1(fn, as_object_array(input)))

    impl.__name__ = name
    return impl


def _no_out(out: Any, name: str) -> None:
    if out is not None:
        raise SymbolicBackendError(f"torch.{name}(..., out=...) is not supported by the symbolic backend")


def _binary(op: Callable[[Any, Any], Any], name: str) -> Callable[..., "SymbolicArray"]:
    def impl(a: Any, b: Any, *, out: Any = None, **kwargs: Any) -> SymbolicArray:
        _no_out(out, name)
        alpha = kwargs.pop("alpha", 1)
        rounding = kwargs.pop("rounding_mode", None)
        if kwargs or rounding is not None:
            raise SymbolicBackendError(
                f"torch.{name} with arguments {sorted(kwargs) or ['rounding_mode']} is not supported by the symbolic backend"
            )
        A, B = as_object_array(a), as_object_array(b)
        if not (isinstance(alpha, numbers.Number) and alpha == 1):
            B = _wrap(B * as_object_array(alpha))
        return SymbolicArray(_wrap(op(A, B)))

    impl.__name__ = name
    return impl


def _rbinary(op: Callable[[Any, Any], Any], name: str) -> Callable[..., "SymbolicArray"]:
    # Tensor.__rsub__(self, other) == other - self, etc.
    def impl(self: Any, other: Any) -> SymbolicArray:
        return SymbolicArray(_wrap(op(as_object_array(other), as_object_array(self))))

    impl.__name__ = name
    return impl


def _add(a, b):
    return a + b


def _sub(a, b):
    return a - b


def _mul(a, b):
    return a * b


def _div(a, b):
    return a / b


def _pow(a, b):
    return _mapn(lambda u, v: u**v, a, b)


def _matmul_arrays(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    if A.ndim == 0 or B.ndim == 0:
        raise SymbolicBackendError("matmul: both arguments need at least one dimension")
    return _wrap(np.matmul(A, B))


def _matmul(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "matmul")
    return SymbolicArray(_matmul_arrays(as_object_array(a), as_object_array(b)))


def _atan2(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "atan2")
    return SymbolicArray(_mapn(sp.atan2, as_object_array(a), as_object_array(b)))


def _cmp(fn: Callable[[Any, Any], Any], name: str) -> Callable[..., "SymbolicArray"]:
    def impl(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
        _no_out(out, name)
        return SymbolicArray(_mapn(fn, as_object_array(a), as_object_array(b)))

    impl.__name__ = name
    return impl


def _logical(fn: Callable[..., Any], name: str) -> Callable[..., "SymbolicArray"]:
    def impl(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
        _no_out(out, name)
        return SymbolicArray(_mapn(fn, as_object_array(a), as_object_array(b)))

    impl.__name__ = name
    return impl


def _where(condition: Any, input: Any = None, other: Any = None, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "where")
    if input is None or other is None:
        raise SymbolicBackendError("torch.where(condition) (returning indices) is not supported by the symbolic backend")
    C, A, B = as_object_array(condition), as_object_array(input), as_object_array(other)
    return SymbolicArray(_mapn(_piecewise, C, A, B))


def _maximum(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "maximum")
    return SymbolicArray(_mapn(lambda u, v: _piecewise(u >= v, u, v), as_object_array(a), as_object_array(b)))


def _minimum(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "minimum")
    return SymbolicArray(_mapn(lambda u, v: _piecewise(u <= v, u, v), as_object_array(a), as_object_array(b)))


def _clamp(input: Any, min: Any = None, max: Any = None, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "clamp")
    x = SymbolicArray(as_object_array(input))
    if min is not None:
        x = _maximum(x, min)
    if max is not None:
        x = _minimum(x, max)
    return x


def _dims(dim: Any, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, (list, tuple, torch.Size)):
        if len(dim) == 0:
            return None
        return tuple(sorted(_norm_dim(int(d), ndim) for d in dim))
    return (_norm_dim(int(dim), ndim),)


def _reduce_sum(A: np.ndarray, dim: Any, keepdim: bool) -> np.ndarray:
    dims = _dims(dim, A.ndim)
    if A.ndim == 0:
        return A.copy()
    if A.size == 0:
        shape = list(A.shape)
        for d in dims if dims is not None else range(A.ndim):
            shape[d] = 1
        res = np.full(shape, sp.S.Zero, dtype=object)
        if not keepdim:
            res = res.reshape([s for i, s in enumerate(A.shape) if dims is not None and i not in dims])
        return res
    return _wrap(np.sum(A, axis=dims, keepdims=keepdim))


def _sum(input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None, out: Any = None) -> SymbolicArray:
    _no_out(out, "sum")
    return SymbolicArray(_reduce_sum(as_object_array(input), dim, keepdim))


def _numel_over(A: np.ndarray, dim: Any) -> int:
    dims = _dims(dim, A.ndim)
    if dims is None or A.ndim == 0:
        return A.size
    n = 1
    for d in dims:
        n *= A.shape[d]
    return n


def _mean(input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None, out: Any = None) -> SymbolicArray:
    _no_out(out, "mean")
    A = as_object_array(input)
    return SymbolicArray(_wrap(_reduce_sum(A, dim, keepdim) / sp.Integer(_numel_over(A, dim))))


def _prod(input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None, out: Any = None) -> SymbolicArray:
    _no_out(out, "prod")
    A = as_object_array(input)
    if A.ndim == 0:
        return SymbolicArray(A.copy())
    return SymbolicArray(_wrap(np.prod(A, axis=_dims(dim, A.ndim), keepdims=keepdim)))


def _softmax(input: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> SymbolicArray:
    """softmax_i = exp(x_i) / sum_j exp(x_j) (no max-shift: it is not differentiable symbolically)."""
    A = as_object_array(input)
    if dim is None:
        if A.ndim <= 1:
            dim = 0
        else:
            raise SymbolicBackendError("softmax needs an explicit dim in the symbolic backend")
    E = _map1(sp.exp, A)
    return SymbolicArray(_wrap(E / _reduce_sum(E, dim, True)))


def _logsumexp(input: Any, dim: Any = None, keepdim: bool = False, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "logsumexp")
    A = as_object_array(input)
    if dim is None:
        raise SymbolicBackendError("logsumexp needs a dim")
    return SymbolicArray(_map1(sp.log, _reduce_sum(_map1(sp.exp, A), dim, keepdim)))


def _log_softmax(input: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> SymbolicArray:
    A = as_object_array(input)
    if dim is None:
        if A.ndim <= 1:
            dim = 0
        else:
            raise SymbolicBackendError("log_softmax needs an explicit dim in the symbolic backend")
    return SymbolicArray(_wrap(A - _logsumexp(A, dim, keepdim=True)._a))


def _softplus(input: Any, beta: Any = 1, threshold: Any = 20) -> SymbolicArray:
    """log(1 + exp(beta x)) / beta; torch's linear regime above ``threshold`` is not reproduced."""
    b = _sympify(beta)
    return SymbolicArray(_map1(lambda x: sp.log(1 + sp.exp(b * x)) / b, as_object_array(input)))


def _gelu(input: Any, approximate: str = "none") -> SymbolicArray:
    if approximate == "tanh":
        c = sp.sqrt(2 / sp.pi)
        fn = lambda x: x / 2 * (1 + sp.tanh(c * (x + sp.Rational(44715, 1000000) * x**3)))  # noqa: E731
    else:
        fn = lambda x: x / 2 * (1 + sp.erf(x / sp.sqrt(2)))  # noqa: E731
    return SymbolicArray(_map1(fn, as_object_array(input)))


def _linear(input: Any, weight: Any, bias: Any = None) -> SymbolicArray:
    W = as_object_array(weight)
    res = _matmul_arrays(as_object_array(input), W.T if W.ndim == 2 else W)
    if bias is not None:
        res = _wrap(res + as_object_array(bias))
    return SymbolicArray(res)


def _stack(tensors: Sequence[Any], dim: int = 0, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "stack")
    parts = [as_object_array(t) for t in tensors]
    if not parts:
        raise SymbolicBackendError("stack expects a non-empty sequence")
    shape = parts[0].shape
    if builtins.any(p.shape != shape for p in parts):
        try:
            shape = np.broadcast_shapes(*(p.shape for p in parts))
        except ValueError:
            raise SymbolicBackendError(f"stack expects equal shapes, got {[p.shape for p in parts]}") from None
        if builtins.any(p.shape != shape and p.ndim != 0 for p in parts):
            raise SymbolicBackendError(f"stack expects equal shapes, got {[p.shape for p in parts]}")
        parts = [np.broadcast_to(p, shape) for p in parts]  # only 0-d constants are broadcast
    d = _norm_dim(dim, len(shape) + 1)
    return SymbolicArray(np.stack(parts, axis=d))


def _cat(tensors: Sequence[Any], dim: int = 0, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "cat")
    parts = [as_object_array(t) for t in tensors]
    parts = [p for p in parts if not (p.ndim == 1 and p.size == 0)] or parts
    if not parts:
        raise SymbolicBackendError("cat expects a non-empty sequence")
    d = _norm_dim(dim, parts[0].ndim)
    return SymbolicArray(np.concatenate(parts, axis=d))


def _einsum(equation: str, *operands: Any) -> SymbolicArray:
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return SymbolicArray(_wrap(np.einsum(equation, *[as_object_array(o) for o in operands])))


def _like(fill: Any) -> Callable[..., "SymbolicArray"]:
    def impl(input: Any, *args: Any, **kwargs: Any) -> SymbolicArray:
        value = args[0] if args else kwargs.pop("fill_value", fill)
        A = as_object_array(input)
        return SymbolicArray(np.full(A.shape, _sympify(value), dtype=object))

    return impl


def _reshape(input: Any, *shape: Any) -> SymbolicArray:
    if len(shape) == 1 and isinstance(shape[0], (list, tuple, torch.Size)):
        shape = tuple(shape[0])
    return SymbolicArray(as_object_array(input).reshape(tuple(int(s) for s in shape)))


def _flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> SymbolicArray:
    A = as_object_array(input)
    if A.ndim == 0:
        return SymbolicArray(A.reshape(1))
    s, e = _norm_dim(start_dim, A.ndim), _norm_dim(end_dim, A.ndim)
    shape = A.shape[:s] + (-1,) + A.shape[e + 1 :]
    return SymbolicArray(A.reshape(shape))


def _unsqueeze(input: Any, dim: int) -> SymbolicArray:
    A = as_object_array(input)
    return SymbolicArray(np.expand_dims(A, _norm_dim(dim, A.ndim + 1)))


def _squeeze(input: Any, dim: Any = None) -> SymbolicArray:
    A = as_object_array(input)
    if dim is None:
        return SymbolicArray(A.reshape([s for s in A.shape if s != 1]))
    dims = _dims(dim, A.ndim) or ()
    dims = tuple(d for d in dims if A.shape[d] == 1)
    return SymbolicArray(np.squeeze(A, axis=dims) if dims else A)


def _transpose(input: Any, dim0: int, dim1: int) -> SymbolicArray:
    A = as_object_array(input)
    if A.ndim < 2:
        return SymbolicArray(A)
    return SymbolicArray(np.swapaxes(A, _norm_dim(dim0, A.ndim), _norm_dim(dim1, A.ndim)))


def _t(input: Any) -> SymbolicArray:
    A = as_object_array(input)
    return SymbolicArray(A.T if A.ndim == 2 else A)


def _permute(input: Any, *dims: Any) -> SymbolicArray:
    if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):
        dims = tuple(dims[0])
    A = as_object_array(input)
    return SymbolicArray(np.transpose(A, [_norm_dim(int(d), A.ndim) for d in dims]))


def _movedim(input: Any, source: Any, destination: Any) -> SymbolicArray:
    return SymbolicArray(np.moveaxis(as_object_array(input), source, destination))


def _expand(input: Any, *sizes: Any) -> SymbolicArray:
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple, torch.Size)):
        sizes = tuple(sizes[0])
    A = as_object_array(input)
    lead = len(sizes) - A.ndim
    shape = tuple(A.shape[i - lead] if (s == -1 and i >= lead) else int(s) for i, s in enumerate(sizes))
    return SymbolicArray(np.broadcast_to(A, shape).copy())


def _broadcast_to(input: Any, size: Any) -> SymbolicArray:
    return _expand(input, tuple(size))


def _unbind(input: Any, dim: int = 0) -> tuple["SymbolicArray", ...]:
    A = as_object_array(input)
    d = _norm_dim(dim, A.ndim)
    return tuple(SymbolicArray(_wrap(np.take(A, i, axis=d))) for i in range(A.shape[d]))


def _identity(input: Any, *args: Any, **kwargs: Any) -> SymbolicArray:
    return SymbolicArray(as_object_array(input).copy())


def _dot(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
    return _matmul(a, b, out=out)


def _outer(a: Any, b: Any, *, out: Any = None) -> SymbolicArray:
    _no_out(out, "outer")
    A, B = as_object_array(a), as_object_array(b)
    return SymbolicArray(_wrap(A[:, None] * B[None, :]))


#: name (``func.__name__`` as torch reports it) -> implementation
SYMBOLIC_FUNCTIONS: dict[str, Callable[..., Any]] = {name: _unary(name) for name in _UNARY}
SYMBOLIC_FUNCTIONS.update(
    {
        "special_expit": SYMBOLIC_FUNCTIONS["expit"],
        "add": _binary(_add, "add"),
        "__add__": _binary(_add, "add"),
        "__radd__": _rbinary(_add, "add"),
        "sub": _binary(_sub, "sub"),
        "subtract": _binary(_sub, "sub"),
        "__sub__": _binary(_sub, "sub"),
        "__rsub__": _rbinary(_sub, "sub"),
        "rsub": _rbinary(_sub, "rsub"),
        "mul": _binary(_mul, "mul"),
        "multiply": _binary(_mul, "mul"),
        "__mul__": _binary(_mul, "mul"),
        "__rmul__": _rbinary(_mul, "mul"),
        "div": _binary(_div, "div"),
        "divide": _binary(_div, "div"),
        "true_divide": _binary(_div, "div"),
        "__truediv__": _binary(_div, "div"),
        "__div__": _binary(_div, "div"),
        "__rtruediv__": _rbinary(_div, "div"),
        "__rdiv__": _rbinary(_div, "div"),
        "pow": lambda input, exponent, *, out=None: (_no_out(out, "pow"), SymbolicArray(_pow(as_object_array(input), as_object_array(exponent))))[1],
        "float_power": lambda input, exponent, *, out=None: SymbolicArray(_pow(as_object_array(input), as_object_array(exponent))),
        "__pow__": lambda input, exponent: SymbolicArray(_pow(as_object_array(input), as_object_array(exponent))),
        "__rpow__": lambda self, other: SymbolicArray(_pow(as_object_array(other), as_object_array(self))),
        "matmul": _matmul,
        "__matmul__": _matmul,
        "__rmatmul__": lambda self, other: _matmul(other, self),
        "mm": _matmul,
        "mv": _matmul,
        "dot": _dot,
        "inner": _dot,
        "outer": _outer,
        "ger": _outer,
        "einsum": _einsum,
        "linear": _linear,
        "atan2": _atan2,
        "arctan2": _atan2,
        "gt": _cmp(lambda a, b: sp.StrictGreaterThan(a, b), "gt"),
        "greater": _cmp(lambda a, b: sp.StrictGreaterThan(a, b), "gt"),
        "__gt__": _cmp(lambda a, b: sp.StrictGreaterThan(a, b), "gt"),
        "ge": _cmp(lambda a, b: sp.GreaterThan(a, b), "ge"),
        "greater_equal": _cmp(lambda a, b: sp.GreaterThan(a, b), "ge"),
        "__ge__": _cmp(lambda a, b: sp.GreaterThan(a, b), "ge"),
        "lt": _cmp(lambda a, b: sp.StrictLessThan(a, b), "lt"),
        "less": _cmp(lambda a, b: sp.StrictLessThan(a, b), "lt"),
        "__lt__": _cmp(lambda a, b: sp.StrictLessThan(a, b), "lt"),
        "le": _cmp(lambda a, b: sp.LessThan(a, b), "le"),
        "less_equal": _cmp(lambda a, b: sp.LessThan(a, b), "le"),
        "__le__": _cmp(lambda a, b: sp.LessThan(a, b), "le"),
        "eq": _cmp(lambda a, b: sp.Eq(a, b), "eq"),
        "ne": _cmp(lambda a, b: sp.Ne(a, b), "ne"),
        "logical_and": _logical(sp.And, "logical_and"),
        "__and__": _logical(sp.And, "logical_and"),
        "logical_or": _logical(sp.Or, "logical_or"),
        "__or__": _logical(sp.Or, "logical_or"),
        "where": _where,
        "maximum": _maximum,
        "minimum": _minimum,
        "clamp": _clamp,
        "clip": _clamp,
        "sum": _sum,
        "mean": _mean,
        "prod": _prod,
        "softmax": _softmax,
        "log_softmax": _log_softmax,
        "logsumexp": _logsumexp,
        "softplus": _softplus,
        "gelu": _gelu,
        "stack": _stack,
        "cat": _cat,
        "concat": _cat,
        "concatenate": _cat,
        "zeros_like": _like(0),
        "ones_like": _like(1),
        "full_like": _like(0),
        "empty_like": _like(0),
        "reshape": _reshape,
        "view": _reshape,
        "flatten": _flatten,
        "ravel": lambda input: _flatten(input),
        "unsqueeze": _unsqueeze,
        "squeeze": _squeeze,
        "transpose": _transpose,
        "swapaxes": _transpose,
        "swapdims": _transpose,
        "t": _t,
        "permute": _permute,
        "movedim": _movedim,
        "moveaxis": _movedim,
        "expand": _expand,
        "broadcast_to": _broadcast_to,
        "unbind": _unbind,
        "clone": _identity,
        "detach": _identity,
        "contiguous": _identity,
        "to": _identity,
        "type_as": _identity,
    }
)


def symbolic_call(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run the symbolic implementation ``name`` (a key of :data:`SYMBOLIC_FUNCTIONS`).

    Used by :mod:`taylorsolve.math`.  Plain SymPy scalars in, plain SymPy scalar out for the
    elementwise functions (``symbolic_call("sin", x) == sympy.sin(x)``); otherwise a
    :class:`SymbolicArray`.
    """
    impl = SYMBOLIC_FUNCTIONS[name]
    result = impl(*args, **kwargs)
    if (
        name in _UNARY
        and args
        and isinstance(args[0], sp.Basic)
        and isinstance(result, SymbolicArray)
        and result.ndim == 0
    ):
        return result._a[()]
    if name in ("pow", "where", "atan2", "maximum", "minimum") and isinstance(result, SymbolicArray) and result.ndim == 0:
        if not builtins.any(isinstance(a, (SymbolicArray, torch.Tensor, np.ndarray, list, tuple)) for a in args):
            return result._a[()]
    return result


def torch_function_name(func: Any) -> str:
    """A readable dotted name for a torch function/method (``torch.erfinv``, ``torch.Tensor.erfinv``)."""
    name = getattr(func, "__name__", None) or repr(func)
    candidates = [
        ("torch", torch, name),
        ("torch.nn.functional", torch.nn.functional, name),
        ("torch.special", torch.special, name.removeprefix("special_")),
        ("torch.linalg", torch.linalg, name.removeprefix("linalg_")),
        ("torch.fft", torch.fft, name.removeprefix("fft_")),
    ]
    for prefix, mod, attr in candidates:
        try:
            if getattr(mod, attr, None) is func:
                return f"{prefix}.{attr}"
        except Exception:  # pragma: no cover - exotic attribute access
            pass
    for cls in (torch.Tensor, torch._C.TensorBase):
        if getattr(cls, name, None) is func:
            return f"torch.Tensor.{name}"
    qual = getattr(func, "__qualname__", name)
    if "TensorBase." in qual or "Tensor." in qual:
        return f"torch.Tensor.{name}"
    module = getattr(func, "__module__", None) or "torch"
    if module.startswith("torch._C") or module == "torch":
        return f"torch.{name}"
    return f"{module}.{name}"


class _UnsupportedAttribute(SymbolicBackendError, AttributeError):
    """A tensor method the symbolic array does not implement (still an ``AttributeError`` for ``hasattr``)."""


# --------------------------------------------------------------------------------------------------
# the array type
# --------------------------------------------------------------------------------------------------
def _index(idx: Any) -> Any:
    if isinstance(idx, tuple):
        return tuple(_index(i) for i in idx)
    if isinstance(idx, torch.Tensor):
        return idx.detach().cpu().numpy()
    if isinstance(idx, SymbolicArray):
        raise SymbolicBackendError("indexing with a symbolic array (data-dependent indexing) is not supported by the symbolic backend")
    if isinstance(idx, list):
        return [_index(i) for i in idx]
    return idx


class SymbolicArray:
    """An n-d array of SymPy expressions that quacks like a ``torch.Tensor`` (see the module docstring)."""

    __array_ufunc__ = None  # make NumPy defer to our reflected operators
    __array_priority__ = 1000

    def __init__(self, data: Any, *, dtype: torch.dtype | None = None):
        self._a = data if isinstance(data, np.ndarray) and data.dtype == object else as_object_array(data)
        self._dtype = dtype

    # ---- constructors / views ----------------------------------------------------------------
    @classmethod
    def symbols(cls, name: str, shape: Iterable[int] | int = (), **assumptions: Any) -> "SymbolicArray":
        """An array of fresh symbols ``name_0, name_1, ...`` (row-major; a bare ``name`` for shape ``()``)."""
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        n = int(np.prod(shape)) if shape else 1
        assumptions.setdefault("real", True)
        if shape == ():
            syms = [sp.Symbol(name, **assumptions)]
        else:
            syms = [sp.Symbol(f"{name}_{i}", **assumptions) for i in range(n)]
        arr = np.empty(n, dtype=object)
        arr[:] = syms
        return cls(arr.reshape(shape))

    @property
    def data(self) -> np.ndarray:
        """The underlying NumPy object array (not a copy)."""
        return self._a

    def numpy(self) -> np.ndarray:
        return self._a.copy()

    def tolist(self) -> Any:
        return self._a.tolist()

    def flat_expressions(self) -> list[Any]:
        """The expressions in row-major order."""
        return list(self._a.reshape(-1))

    def to_sympy(self) -> Any:
        """A SymPy ``Array`` (or the bare expression when 0-d)."""
        if self.ndim == 0:
            return self._a[()]
        return sp.ImmutableDenseNDimArray(self.flat_expressions(), self._a.shape)

    # ---- tensor-like metadata ----------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._a.shape)

    @property
    def ndim(self) -> int:
        return self._a.ndim

    def dim(self) -> int:
        return self._a.ndim

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        return self._a.shape[_norm_dim(dim, self.ndim)]

    def numel(self) -> int:
        return int(self._a.size)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype if self._dtype is not None else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def requires_grad(self) -> bool:
        return False

    @property
    def T(self) -> "SymbolicArray":
        return SymbolicArray(self._a.T)

    @property
    def mT(self) -> "SymbolicArray":
        return _transpose(self, -2, -1)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d symbolic array")
        return self._a.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d symbolic array")
        for i in range(self._a.shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        if self.ndim == 0:
            return f"SymbolicArray({self._a[()]})"
        return f"SymbolicArray(shape={tuple(self._a.shape)}, {self._a.tolist()})"

    def _repr_latex_(self) -> str:
        return "$" + sp.latex(self.to_sympy()) + "$"

    # ---- indexing ------------------------------------------------------------------------------
    def __getitem__(self, idx: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(self._a[_index(idx)]), dtype=self._dtype)

    def __setitem__(self, idx: Any, value: Any) -> None:
        self._a[_index(idx)] = as_object_array(value)

    # ---- things that cannot be traced ----------------------------------------------------------
    def __bool__(self) -> bool:
        raise SymbolicBackendError(
            "f branches on the value of the state (bool() of a symbolic array, e.g. `if y[0] > 0:`); "
            "the symbolic backend cannot trace data-dependent control flow: use torch.where / "
            "taylorsolve.math.where"
        )

    def _no_number(self, what: str) -> Any:
        raise SymbolicBackendError(
            f"f converts a symbolic value to a number ({what}); the symbolic backend cannot trace that. "
            "Write f with torch operations only (e.g. torch.stack instead of torch.tensor([...]))."
        )

    def __float__(self) -> float:
        return self._no_number("float()")

    def __int__(self) -> int:
        return self._no_number("int()")

    def __index__(self) -> int:
        return self._no_number("use as an index")

    def __complex__(self) -> complex:
        return self._no_number("complex()")

    def item(self) -> Any:
        """The single expression of a one-element array (a SymPy object, not a Python number)."""
        if self._a.size != 1:
            raise SymbolicBackendError("item() needs a one-element symbolic array")
        return self._a.reshape(-1)[0]

    def _sympy_(self) -> Any:
        if self.ndim == 0:
            return self._a[()]
        raise sp.SympifyError(self)

    # ---- operators -----------------------------------------------------------------------------
    def __add__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(self._a + as_object_array(other)))

    def __radd__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(as_object_array(other) + self._a))

    def __sub__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(self._a - as_object_array(other)))

    def __rsub__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(as_object_array(other) - self._a))

    def __mul__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(self._a * as_object_array(other)))

    def __rmul__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(as_object_array(other) * self._a))

    def __truediv__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(self._a / as_object_array(other)))

    def __rtruediv__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_wrap(as_object_array(other) / self._a))

    def __pow__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_pow(self._a, as_object_array(other)))

    def __rpow__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_pow(as_object_array(other), self._a))

    def __matmul__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_matmul_arrays(self._a, as_object_array(other)))

    def __rmatmul__(self, other: Any) -> "SymbolicArray":
        return SymbolicArray(_matmul_arrays(as_object_array(other), self._a))

    def __neg__(self) -> "SymbolicArray":
        return SymbolicArray(_wrap(-self._a))

    def __pos__(self) -> "SymbolicArray":
        return self

    def __abs__(self) -> "SymbolicArray":
        return SymbolicArray(_map1(sp.Abs, self._a))

    def __lt__(self, other: Any) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["lt"](self, other)

    def __le__(self, other: Any) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["le"](self, other)

    def __gt__(self, other: Any) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["gt"](self, other)

    def __ge__(self, other: Any) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["ge"](self, other)

    def __and__(self, other: Any) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["logical_and"](self, other)

    __rand__ = __and__

    def __or__(self, other: Any) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["logical_or"](self, other)

    __ror__ = __or__

    def __invert__(self) -> "SymbolicArray":
        return SYMBOLIC_FUNCTIONS["logical_not"](self)

    def _unsupported_op(self, *args: Any) -> Any:
        raise SymbolicBackendError("floor division and modulo are not supported by the symbolic backend")

    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _unsupported_op

    # ``==``/``!=`` keep Python identity semantics (hashing); use torch.eq / torch.ne for elementwise.
    __hash__ = object.__hash__

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(torch.Tensor, name):
            raise _UnsupportedAttribute(
                f"torch.Tensor.{name} is not supported by the symbolic backend. {_SUPPORTED_HINT}"
            )
        raise AttributeError(f"'SymbolicArray' object has no attribute '{name}'", name=name, obj=self)

    # ---- torch interoperability ----------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        impl = SYMBOLIC_FUNCTIONS.get(name) if name is not None else None
        if impl is None:
            raise SymbolicBackendError(f"{torch_function_name(func)} is not supported by the symbolic backend. {_SUPPORTED_HINT}")
        return impl(*args, **kwargs)


def _method(name: str) -> Callable[..., Any]:
    impl = SYMBOLIC_FUNCTIONS[name]

    @functools.wraps(impl)
    def method(self: SymbolicArray, *args: Any, **kwargs: Any) -> Any:
        return impl(self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in list(SYMBOLIC_FUNCTIONS):
    if _name.startswith("_") or _name in ("stack", "cat", "concat", "concatenate", "einsum", "where", "special_expit"):
        continue
    if not hasattr(SymbolicArray, _name):
        setattr(SymbolicArray, _name, _method(_name))
del _name
