"""``SymbolicArray``: a tensor-like array of SymPy expressions, so one ``f(t, y)`` serves every backend.

The symbolic backend (:mod:`taylorsolve.coefficients.symbolic`) calls the user's right-hand side with
``t`` a 0-d :class:`SymbolicArray` holding the symbol ``t`` and ``y`` a :class:`SymbolicArray` of the
state symbols ``y_0, y_1, ...``.  The array wraps a NumPy ``object`` array of SymPy expressions and
behaves enough like a ``torch.Tensor`` that right-hand sides written with plain torch calls run
unchanged::

    def pendulum(t, y):
        return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)

The array machinery (indexing, reshapes, ``stack``/``cat``, reductions, ``matmul``, ``where``...) is the
shared :class:`~taylorsolve._object_array.ObjectArray`, and the functions it accepts are the
``"symbolic"`` entries of the operations table :mod:`taylorsolve._ops` (elementwise functions bring
their SymPy form there).  Constants: torch tensors become SymPy ``Float``\\ s carrying the tensor's exact
binary value (integral values become exact ``Integer``\\ s).

A torch function that is not in the table raises :class:`~taylorsolve.errors.SymbolicBackendError`
naming it, e.g. ``torch.erfinv is not supported by the symbolic backend``.  Data-dependent Python
control flow (``if y[0] > 0:``) and conversions to numbers (``float(y[0])``, ``detach()``) cannot be
traced symbolically either and raise the same error; use ``torch.where`` /
:func:`taylorsolve.math.where` instead.

This module imports SymPy; :mod:`taylorsolve.math` only imports it when it meets a symbolic argument.
"""
from __future__ import annotations

import builtins
from typing import Any, Callable, Iterable

import numpy as np
import sympy as sp
import torch

from ._object_array import ObjectArray, _scalar_array
from ._ops import Op, lookup
from ._tensorlike import torch_function_name
from .errors import DerivativeLeakError, SymbolicBackendError, UnsupportedOperationError

__all__ = [
    "SymbolicArray",
    "as_object_array",
    "is_symbolic",
    "symbolic_call",
    "SYMBOLIC_FUNCTIONS",
    "torch_function_name",
]

_SUPPORTED_HINT = (
    "The symbolic backend supports elementary functions (sin, cos, tan, exp, log, sqrt, tanh, sigmoid, erf, "
    "softmax, logsumexp, abs, pow, ...), arithmetic, indexing, stack/cat/sum/matmul/where and "
    "reshaping (taylorsolve._ops lists them); use backend='autodiff' or 'taylor_mode' for other right-hand sides."
)


class SymbolicUnsupportedError(SymbolicBackendError, UnsupportedOperationError):
    """A torch function the symbolic backend cannot trace."""

    def __init__(self, message: str, *, operation: str | None = None, backend: str | None = "symbolic"):
        SymbolicBackendError.__init__(self, message)
        self.operation, self.backend = operation, backend


class _UnsupportedAttribute(SymbolicUnsupportedError, AttributeError):
    """A tensor method the symbolic array does not implement (still an ``AttributeError`` for ``hasattr``)."""


class SymbolicLeakError(SymbolicBackendError, DerivativeLeakError):
    """``f`` converts a symbolic value to a number."""

    def __init__(self, message: str, *, operation: str | None = None):
        SymbolicBackendError.__init__(self, message)
        self.operation = operation


# --------------------------------------------------------------------------------------------------
# conversion helpers
# --------------------------------------------------------------------------------------------------
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


def _float_const(v: float) -> Any:
    """A tensor entry as a SymPy number: integral values become exact SymPy Integers (so expressions
    read ``2*y_0`` rather than ``2.0*y_0``), others a ``Float`` holding the exact binary value."""
    v = float(v)
    if v.is_integer() and builtins.abs(v) < 2.0**53:
        return sp.Integer(int(v))
    return sp.Float(v)


_RELATIONS = {
    "gt": lambda a, b: sp.StrictGreaterThan(a, b),
    "ge": lambda a, b: sp.GreaterThan(a, b),
    "lt": lambda a, b: sp.StrictLessThan(a, b),
    "le": lambda a, b: sp.LessThan(a, b),
    "eq": lambda a, b: sp.Eq(a, b),
    "ne": lambda a, b: sp.Ne(a, b),
}


def _piecewise(c: Any, a: Any, b: Any) -> Any:
    if c is sp.true or c is True:
        return a
    if c is sp.false or c is False:
        return b
    return sp.Piecewise((a, c), (b, True))


class SymbolicArray(ObjectArray):
    """An n-d array of SymPy expressions that quacks like a ``torch.Tensor`` (see the module docstring)."""

    __slots__ = ()
    backend_name = "symbolic"
    _what = "a symbolic array"
    _unsupported_error = SymbolicUnsupportedError
    _attribute_error = _UnsupportedAttribute
    _leak_error = SymbolicLeakError

    # ---- scalar hooks ----------------------------------------------------------------------------
    @classmethod
    def _error(cls, message: str) -> Exception:
        return SymbolicBackendError(message)

    @classmethod
    def _unsupported(cls, what: Any, extra: str = "") -> Exception:
        name = torch_function_name(what)
        return SymbolicUnsupportedError(f"{name} is not supported by the symbolic backend. {_SUPPORTED_HINT}", operation=name)

    @classmethod
    def _is_scalar(cls, x: Any) -> bool:
        return isinstance(x, sp.Basic)

    @classmethod
    def _element(cls, x: Any) -> Any:
        return _sympify(x)

    @classmethod
    def _from_numeric(cls, a: np.ndarray) -> np.ndarray:
        if a.dtype == bool:
            conv = np.frompyfunc(lambda v: sp.true if v else sp.false, 1, 1)
        elif np.issubdtype(a.dtype, np.integer):
            conv = np.frompyfunc(lambda v: sp.Integer(int(v)), 1, 1)
        elif np.issubdtype(a.dtype, np.floating):
            conv = np.frompyfunc(_float_const, 1, 1)
        else:
            conv = np.frompyfunc(_sympify, 1, 1)
        out = conv(a)
        return out if isinstance(out, np.ndarray) else _scalar_array(out)

    @classmethod
    def _unary_scalar(cls, op: Op, x: Any, params: list) -> Any:
        if op.sympy is None:
            raise cls._unsupported(f"torch.{op.name}")
        return op.sympy(sp, x, *params)

    @classmethod
    def _compare(cls, name: str, a: Any, b: Any) -> Any:
        return _RELATIONS[name](a, b)

    @classmethod
    def _select(cls, c: Any, a: Any, b: Any) -> Any:
        return _piecewise(c, a, b)

    @classmethod
    def _logic(cls, name: str, *xs: Any) -> Any:
        return {"and": sp.And, "or": sp.Or, "not": sp.Not}[name](*xs)

    @classmethod
    def _atan2(cls, y: Any, x: Any) -> Any:
        return sp.atan2(y, x)

    # ---- leaks are "numbers" here --------------------------------------------------------------------
    def _leak(self, what: str) -> Any:
        raise SymbolicLeakError(
            f"f converts a symbolic value to a number ({what}); the symbolic backend cannot trace that (and "
            "derivative-based backends would silently lose the derivatives). Write f with torch operations "
            "only (e.g. torch.stack instead of torch.tensor([...])).",
            operation=what,
        )

    def __bool__(self) -> bool:
        raise SymbolicUnsupportedError(
            "f branches on the value of the state (bool() of a symbolic array, e.g. `if y[0] > 0:`); "
            "the symbolic backend cannot trace data-dependent control flow: use torch.where / "
            "taylorsolve.math.where",
            operation="bool()",
        )

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
        """The underlying NumPy object array of SymPy expressions (not a copy).

        ``numpy()`` and ``tolist()`` raise, as on every tracing stand-in (inside ``f`` they would leave torch);
        use ``data``, :meth:`flat_expressions` or :meth:`to_sympy` to read the expressions."""
        return self._a

    def item(self) -> Any:
        """The single expression of a one-element array (a SymPy object, not a Python number)."""
        if self._a.size != 1:
            raise SymbolicBackendError("item() needs a one-element symbolic array")
        return self._a.reshape(-1)[0]

    def to_sympy(self) -> Any:
        """A SymPy ``Array`` (or the bare expression when 0-d)."""
        if self.ndim == 0:
            return self._a[()]
        return sp.ImmutableDenseNDimArray(self.flat_expressions(), self._a.shape)

    def _sympy_(self) -> Any:
        if self.ndim == 0:
            return self._a[()]
        raise sp.SympifyError(self)

    def __repr__(self) -> str:
        if self.ndim == 0:
            return f"SymbolicArray({self._a[()]})"
        return f"SymbolicArray(shape={tuple(self._a.shape)}, {self._a.tolist()})"

    def _repr_latex_(self) -> str:
        return "$" + sp.latex(self.to_sympy()) + "$"


def as_object_array(x: Any) -> np.ndarray:
    """Convert ``x`` (symbolic array, tensor, NumPy array, SymPy object, number, nested list) to an
    object array of SymPy objects."""
    if isinstance(x, sp.MatrixBase):
        return np.array([[_sympify(v) for v in row] for row in x.tolist()], dtype=object).reshape(x.shape)
    if isinstance(x, sp.NDimArray):
        flat = [_sympify(v) for v in x]  # row-major
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(x.shape)
    return SymbolicArray._as_array(x)


def is_symbolic(x: Any) -> bool:
    """True if ``x`` (recursively inside lists/tuples) holds a SymPy object or a :class:`SymbolicArray`."""
    if isinstance(x, (list, tuple)):
        return builtins.any(is_symbolic(v) for v in x)
    return isinstance(x, (SymbolicArray, sp.Basic, sp.MatrixBase, sp.NDimArray))


def _as_function(handler: Callable) -> Callable[..., Any]:
    def fn(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("out", None)
        return handler(None, args, kwargs)

    return fn


#: name (``func.__name__`` as torch reports it) -> implementation ``fn(*args, **kwargs)``; from the table
SYMBOLIC_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _refresh_functions() -> None:
    SYMBOLIC_FUNCTIONS.clear()
    SYMBOLIC_FUNCTIONS.update({n: _as_function(h) for n, h in SymbolicArray._table.items()})


SymbolicArray._on_rebuild = classmethod(lambda cls: _refresh_functions())  # type: ignore[method-assign]
SymbolicArray._build_table()


def _sympy_arg(x: Any) -> Any:
    if isinstance(x, (sp.MatrixBase, sp.NDimArray)):
        return SymbolicArray(as_object_array(x))
    if isinstance(x, (list, tuple)):
        return type(x)(_sympy_arg(v) for v in x)
    return x


def symbolic_call(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run the symbolic implementation ``name`` (a key of :data:`SYMBOLIC_FUNCTIONS`).

    Used by :mod:`taylorsolve.math`.  Plain SymPy scalars in, plain SymPy scalar out for the
    elementwise functions (``symbolic_call("sin", x) == sympy.sin(x)``); otherwise a
    :class:`SymbolicArray`.
    """
    impl = SYMBOLIC_FUNCTIONS[name]
    args = tuple(_sympy_arg(a) for a in args)
    result = impl(*args, **kwargs)
    op = lookup(name)
    scalar_in = not builtins.any(isinstance(a, (SymbolicArray, torch.Tensor, np.ndarray, list, tuple)) for a in args)
    if isinstance(result, SymbolicArray) and result.ndim == 0 and scalar_in:
        if (op is not None and op.elementwise) or name in ("pow", "where", "atan2", "maximum", "minimum", "hypot"):
            return result._a[()]
    return result
