"""``ObjectArray``: an n-d NumPy object array of scalar expressions that behaves like a ``torch.Tensor``.

Two tracing stand-ins share this machinery and differ only in their scalars:

* :class:`~taylorsolve._symbolic_array.SymbolicArray` holds SymPy expressions (``backend="symbolic"``);
* :class:`~taylorsolve.coefficients.tape.TapeArray` holds nodes of the compiled path's scalar tape.

Indexing, reshapes, ``stack``/``cat``, reductions, ``matmul``/``einsum``, ``where``, softmax and the
elementwise functions of :mod:`taylorsolve._ops` are written once here against a few class hooks:
``_element`` (a Python/NumPy constant as a scalar), ``_from_tensor``, ``_unary_scalar`` (a table entry
on one scalar), ``_compare``, ``_select``, ``_logic``, ``_atan2`` and ``_softmax_shift``.  The dispatch
table of each subclass is built from :mod:`taylorsolve._ops` by :meth:`ObjectArray._build_table`.
"""
from __future__ import annotations

import builtins
import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ._ops import Op, dispatch_table, lookup
from ._tensorlike import TensorLike

__all__ = ["ObjectArray"]


def _scalar_array(value: Any) -> np.ndarray:
    """A 0-d object array holding ``value`` (never lets NumPy iterate into containers)."""
    out = np.empty((), dtype=object)
    out[()] = value
    return out


def _norm_dim(dim: int, ndim: int) -> int:
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"dimension {dim} out of range for a {ndim}-d array")
    return dim % max(ndim, 1)


def _dims(dim: Any, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, (list, tuple, torch.Size)):
        if len(dim) == 0:
            return None
        return tuple(sorted(_norm_dim(int(d), ndim) for d in dim))
    return (_norm_dim(int(dim), ndim),)


def _index(cls: type, idx: Any) -> Any:
    if isinstance(idx, tuple):
        return tuple(_index(cls, i) for i in idx)
    if isinstance(idx, torch.Tensor):
        return idx.detach().cpu().numpy()
    if isinstance(idx, ObjectArray):
        raise cls._error(f"indexing with {cls._what} (data-dependent indexing) is not supported by the "
                         f"{cls.backend_name} backend")
    if isinstance(idx, list):
        return [_index(cls, i) for i in idx]
    return idx


class ObjectArray(TensorLike):
    """An n-d array of scalar expressions (see the module docstring); subclasses set the scalar hooks."""

    __slots__ = ("_a", "_dtype")

    def __init__(self, data: Any, *, dtype: torch.dtype | None = None):
        self._a = data if isinstance(data, np.ndarray) and data.dtype == object else type(self)._as_array(data)
        self._dtype = dtype

    # ---- hooks ---------------------------------------------------------------------------------
    @classmethod
    def _error(cls, message: str) -> Exception:
        from .errors import UnsupportedOperationError

        return UnsupportedOperationError(message, backend=cls.backend_name)

    @classmethod
    def _is_scalar(cls, x: Any) -> bool:
        """Whether ``x`` is already one of this class's scalars (a SymPy expression, a tape node)."""
        raise NotImplementedError

    @classmethod
    def _element(cls, x: Any) -> Any:
        """A Python / NumPy number or bool as a scalar of this class."""
        raise NotImplementedError

    @classmethod
    def _from_numeric(cls, a: np.ndarray) -> np.ndarray:
        out = np.frompyfunc(cls._element, 1, 1)(a)
        return out if isinstance(out, np.ndarray) else _scalar_array(out)

    @classmethod
    def _from_tensor(cls, x: torch.Tensor) -> np.ndarray:
        x = x.detach().cpu()
        if x.is_complex() or x.dtype == torch.bool:
            vals = x.numpy()
        elif x.is_floating_point():
            vals = x.to(torch.float64).numpy()  # float32/bfloat16 values are exact in float64
        else:
            vals = x.to(torch.int64).numpy()
        return cls._from_numeric(np.asarray(vals))

    @classmethod
    def _unary_scalar(cls, op: Op, x: Any, params: list) -> Any:
        raise NotImplementedError

    @classmethod
    def _compare(cls, name: str, a: Any, b: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def _select(cls, c: Any, a: Any, b: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def _logic(cls, name: str, *xs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def _atan2(cls, y: Any, x: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def _softmax_shift(cls, A: np.ndarray, dim: int) -> np.ndarray | None:
        """A constant to subtract before ``exp`` in softmax/logsumexp (None: no shift)."""
        return None

    # ---- conversion ----------------------------------------------------------------------------
    @classmethod
    def _wrap(cls, result: Any) -> np.ndarray:
        """Make sure a NumPy object-array result is an object ``ndarray`` (0-d results come back bare)."""
        if isinstance(result, np.ndarray):
            return result if result.dtype == object else cls._from_numeric(result)
        if cls._is_scalar(result):
            return _scalar_array(result)
        return _scalar_array(cls._element(result))

    @classmethod
    def _as_array(cls, x: Any) -> np.ndarray:
        """``x`` (an array of this class, tensor, NumPy array, scalar, number, nested list) as an object array."""
        if isinstance(x, cls):
            return x._a
        if isinstance(x, ObjectArray):
            raise cls._error(f"cannot mix a {type(x).__name__} into a {cls.__name__} computation")
        if isinstance(x, torch.Tensor):
            return cls._from_tensor(x)
        if isinstance(x, np.ndarray):
            if x.dtype == object:
                out = np.frompyfunc(lambda v: v if cls._is_scalar(v) else cls._element(v), 1, 1)(x)
                return out if isinstance(out, np.ndarray) else _scalar_array(out)
            return cls._from_numeric(x)
        if isinstance(x, (list, tuple)):
            if len(x) == 0:
                return np.empty((0,), dtype=object)
            parts = [cls._as_array(v) for v in x]
            try:
                return np.stack(parts)
            except ValueError as exc:
                raise cls._error(f"cannot build an array from a ragged sequence (shapes {[p.shape for p in parts]})") from exc
        if cls._is_scalar(x):
            return _scalar_array(x)
        return _scalar_array(cls._element(x))

    @classmethod
    def _new(cls, a: np.ndarray, dtype: torch.dtype | None = None) -> "ObjectArray":
        return cls(cls._wrap(a), dtype=dtype)

    @classmethod
    def _map1(cls, fn: Callable[[Any], Any], a: np.ndarray) -> np.ndarray:
        return cls._wrap(np.frompyfunc(fn, 1, 1)(a))

    @classmethod
    def _mapn(cls, fn: Callable[..., Any], *arrays: np.ndarray) -> np.ndarray:
        return cls._wrap(np.frompyfunc(fn, len(arrays), 1)(*arrays))

    # ---- metadata ------------------------------------------------------------------------------
    @property
    def data_array(self) -> np.ndarray:
        """The underlying NumPy object array (not a copy)."""
        return self._a

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._a.shape)

    @property
    def ndim(self) -> int:
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
    def T(self) -> "ObjectArray":
        return type(self)(self._a.T, dtype=self._dtype)

    def flat_expressions(self) -> list[Any]:
        """The scalars in row-major order."""
        return list(self._a.reshape(-1))

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError(f"iteration over a 0-d {type(self).__name__}")
        for i in range(self._a.shape[0]):
            yield self[i]

    # ---- indexing ------------------------------------------------------------------------------
    def __getitem__(self, idx: Any) -> "ObjectArray":
        return type(self)(type(self)._wrap(self._a[_index(type(self), idx)]), dtype=self._dtype)

    def __setitem__(self, idx: Any, value: Any) -> None:
        self._a = self._a.copy() if not self._a.flags.writeable else self._a
        self._a[_index(type(self), idx)] = type(self)._as_array(value)

    def _inplace(self, name: str) -> Callable[..., Any]:
        impl = type(self)._table[name[:-1]]
        method = getattr(torch.Tensor, name[:-1])

        def inplace(*args: Any, **kwargs: Any) -> "ObjectArray":
            res = impl(method, (self, *args), kwargs)
            arr = type(self)._as_array(res)
            if arr.shape != self._a.shape:
                raise self._error(f"in-place torch.Tensor.{name} would change the shape")
            self._a = arr
            return self

        return inplace

    # ---- the dispatch table ----------------------------------------------------------------------
    @classmethod
    def _build_table(cls) -> None:
        """Build the dispatch table from :mod:`taylorsolve._ops` (and again whenever the table changes)."""
        from ._ops import on_change

        def build() -> None:
            impls = {name: _adapt(cls, fn) for name, fn in _generic_impls().items()}
            impls.update(cls._extra_impls())
            cls._table = dispatch_table(cls.backend_name, impls, lambda op: _elementwise(cls, op))
            cls._on_rebuild()

        build()
        on_change(build)

    @classmethod
    def _on_rebuild(cls) -> None:
        """Hook after the table was (re)built."""

    @classmethod
    def _extra_impls(cls) -> dict[str, Callable]:
        """Subclass-specific implementations (by canonical name), on top of the generic ones."""
        return {}


def _adapt(cls: type, fn: Callable) -> Callable:
    def handler(func: Any, args: tuple, kwargs: dict) -> Any:
        return fn(cls, *args, **kwargs)

    return handler


def _elementwise(cls: type, op: Op) -> Callable:
    def handler(func: Any, args: tuple, kwargs: dict) -> Any:
        if not args:
            raise cls._error(f"{op.name} needs an input")
        kwargs = dict(kwargs)
        kwargs.pop("out", None)
        try:
            params = op.parse_params(tuple(args[1:]), kwargs)
        except TypeError as exc:
            raise cls._error(f"torch.{op.name} with these arguments is not supported by the {cls.backend_name} "
                             f"backend: {exc}") from None
        A = cls._as_array(args[0])
        return cls._new(cls._map1(lambda x: cls._unary_scalar(op, x, params), A))

    return handler


# --------------------------------------------------------------------------------------------------
# generic implementations: fn(cls, *args, **kwargs)
# --------------------------------------------------------------------------------------------------
def _binary(op: Callable[[Any, Any], Any]) -> Callable:
    def impl(cls, a: Any, b: Any, *, alpha: Any = 1, rounding_mode: Any = None, **kwargs: Any) -> Any:
        if kwargs or rounding_mode is not None:
            raise cls._error(f"arguments {sorted(kwargs) or ['rounding_mode']} are not supported by the "
                             f"{cls.backend_name} backend")
        A, B = cls._as_array(a), cls._as_array(b)
        if not (isinstance(alpha, numbers.Number) and alpha == 1):
            B = cls._wrap(B * cls._as_array(alpha))
        return cls._new(op(A, B))

    return impl


def _pow_impl(cls, input: Any, exponent: Any, **kw: Any) -> Any:
    return cls._new(cls._mapn(lambda u, v: u**v, cls._as_array(input), cls._as_array(exponent)))


def _matmul_arrays(cls, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    if A.ndim == 0 or B.ndim == 0:
        raise cls._error("matmul: both arguments need at least one dimension")
    return cls._wrap(np.matmul(A, B))


def _matmul(cls, a: Any, b: Any) -> Any:
    return cls._new(_matmul_arrays(cls, cls._as_array(a), cls._as_array(b)))


def _outer(cls, a: Any, b: Any) -> Any:
    A, B = cls._as_array(a), cls._as_array(b)
    return cls._new(A[:, None] * B[None, :])


def _einsum(cls, equation: str, *operands: Any) -> Any:
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return cls._new(np.einsum(equation, *[cls._as_array(o) for o in operands]))


def _linear(cls, input: Any, weight: Any, bias: Any = None) -> Any:
    W = cls._as_array(weight)
    res = _matmul_arrays(cls, cls._as_array(input), W.T if W.ndim == 2 else W)
    if bias is not None:
        res = cls._wrap(res + cls._as_array(bias))
    return cls._new(res)


def _atan2(cls, a: Any, b: Any) -> Any:
    return cls._new(cls._mapn(cls._atan2, cls._as_array(a), cls._as_array(b)))


def _hypot(cls, a: Any, b: Any) -> Any:
    A, B = cls._as_array(a), cls._as_array(b)
    sq = cls._wrap(A * A + B * B)
    return cls._table["sqrt"](None, (cls._new(sq),), {})


def _cmp(name: str) -> Callable:
    def impl(cls, a: Any, b: Any) -> Any:
        return cls._new(cls._mapn(lambda u, v: cls._compare(name, u, v), cls._as_array(a), cls._as_array(b)))

    return impl


def _logic(name: str) -> Callable:
    def impl(cls, *xs: Any) -> Any:
        return cls._new(cls._mapn(lambda *v: cls._logic(name, *v), *[cls._as_array(x) for x in xs]))

    return impl


def _where(cls, condition: Any, input: Any = None, other: Any = None) -> Any:
    if input is None or other is None:
        raise cls._error(f"torch.where(condition) (returning indices) is not supported by the {cls.backend_name} backend")
    C, A, B = cls._as_array(condition), cls._as_array(input), cls._as_array(other)
    return cls._new(cls._mapn(cls._select, C, A, B))


def _maximum(cls, a: Any, b: Any) -> Any:
    return cls._new(cls._mapn(lambda u, v: cls._select(cls._compare("ge", u, v), u, v), cls._as_array(a), cls._as_array(b)))


def _minimum(cls, a: Any, b: Any) -> Any:
    return cls._new(cls._mapn(lambda u, v: cls._select(cls._compare("le", u, v), u, v), cls._as_array(a), cls._as_array(b)))


def _clamp(cls, input: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002
    x = cls._new(cls._as_array(input))
    if min is not None:
        x = _maximum(cls, x, min)
    if max is not None:
        x = _minimum(cls, x, max)
    return x


def _reduce_sum(cls, A: np.ndarray, dim: Any, keepdim: bool) -> np.ndarray:
    dims = _dims(dim, A.ndim)
    if A.ndim == 0:
        return A.copy()
    if A.size == 0:
        shape = list(A.shape)
        for d in dims if dims is not None else range(A.ndim):
            shape[d] = 1
        res = np.full(shape, cls._element(0), dtype=object)
        if not keepdim:
            res = res.reshape([s for i, s in enumerate(A.shape) if dims is not None and i not in dims])
        return res
    return cls._wrap(np.sum(A, axis=dims, keepdims=keepdim))


def _sum(cls, input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    return cls._new(_reduce_sum(cls, cls._as_array(input), dim, keepdim))


def _numel_over(A: np.ndarray, dim: Any) -> int:
    dims = _dims(dim, A.ndim)
    if dims is None or A.ndim == 0:
        return A.size
    n = 1
    for d in dims:
        n *= A.shape[d]
    return n


def _mean(cls, input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    A = cls._as_array(input)
    return cls._new(cls._wrap(_reduce_sum(cls, A, dim, keepdim) / cls._element(_numel_over(A, dim))))


def _prod(cls, input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    A = cls._as_array(input)
    if A.ndim == 0:
        return cls._new(A.copy())
    return cls._new(np.prod(A, axis=_dims(dim, A.ndim), keepdims=keepdim))


def _elementwise_by_name(cls, name: str, A: np.ndarray) -> np.ndarray:
    op = lookup(name)
    return cls._map1(lambda x: cls._unary_scalar(op, x, []), A)


def _softmax_dim(cls, A: np.ndarray, dim: Any, what: str) -> int:
    if dim is None:
        if A.ndim <= 1:
            return 0
        raise cls._error(f"{what} needs an explicit dim in the {cls.backend_name} backend")
    return dim


def _softmax(cls, input: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    """softmax_i = exp(x_i - m) / sum_j exp(x_j - m), ``m`` the subclass's shift (none symbolically)."""
    A = cls._as_array(input)
    dim = _softmax_dim(cls, A, dim, "softmax")
    shift = cls._softmax_shift(A, dim)
    E = _elementwise_by_name(cls, "exp", A if shift is None else cls._wrap(A - shift))
    return cls._new(E / _reduce_sum(cls, E, dim, True))


def _logsumexp_arr(cls, A: np.ndarray, dim: Any, keepdim: bool) -> np.ndarray:
    shift = cls._softmax_shift(A, dim)
    E = _elementwise_by_name(cls, "exp", A if shift is None else cls._wrap(A - shift))
    L = _elementwise_by_name(cls, "log", _reduce_sum(cls, E, dim, True))
    if shift is not None:
        L = cls._wrap(L + shift)
    if not keepdim:
        dims = _dims(dim, A.ndim) or ()
        L = L.reshape([s for i, s in enumerate(L.shape) if i not in dims])
    return L


def _logsumexp(cls, input: Any, dim: Any = None, keepdim: bool = False) -> Any:
    A = cls._as_array(input)
    if dim is None:
        raise cls._error("logsumexp needs a dim")
    return cls._new(_logsumexp_arr(cls, A, dim, keepdim))


def _log_softmax(cls, input: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    A = cls._as_array(input)
    dim = _softmax_dim(cls, A, dim, "log_softmax")
    return cls._new(A - _logsumexp_arr(cls, A, dim, True))


def _logaddexp(cls, a: Any, b: Any) -> Any:
    A, B = np.broadcast_arrays(cls._as_array(a), cls._as_array(b))
    return cls._new(_logsumexp_arr(cls, np.stack([A, B]), 0, False))


def _clamp_min(cls, input: Any, min: Any) -> Any:  # noqa: A002
    return _clamp(cls, input, min, None)


def _clamp_max(cls, input: Any, max: Any) -> Any:  # noqa: A002
    return _clamp(cls, input, None, max)


def _stack(cls, tensors: Sequence[Any], dim: int = 0) -> Any:
    parts = [cls._as_array(t) for t in tensors]
    if not parts:
        raise cls._error("stack expects a non-empty sequence")
    shape = parts[0].shape
    if builtins.any(p.shape != shape for p in parts):
        try:
            shape = np.broadcast_shapes(*(p.shape for p in parts))
        except ValueError:
            raise cls._error(f"stack expects equal shapes, got {[p.shape for p in parts]}") from None
        if builtins.any(p.shape != shape and p.ndim != 0 for p in parts):
            raise cls._error(f"stack expects equal shapes, got {[p.shape for p in parts]}")
        parts = [np.broadcast_to(p, shape) for p in parts]  # only 0-d constants are broadcast
    d = _norm_dim(dim, len(shape) + 1)
    return cls._new(np.stack(parts, axis=d))


def _cat(cls, tensors: Sequence[Any], dim: int = 0) -> Any:
    parts = [cls._as_array(t) for t in tensors]
    parts = [p for p in parts if not (p.ndim == 1 and p.size == 0)] or parts
    if not parts:
        raise cls._error("cat expects a non-empty sequence")
    d = _norm_dim(dim, parts[0].ndim)
    return cls._new(np.concatenate(parts, axis=d))


def _like(fill: Any) -> Callable:
    def impl(cls, input: Any, *args: Any, **kwargs: Any) -> Any:
        value = args[0] if args else kwargs.pop("fill_value", fill)
        A = cls._as_array(input)
        return cls._new(np.full(A.shape, cls._element(value), dtype=object))

    return impl


def _reshape(cls, input: Any, *shape: Any) -> Any:
    if len(shape) == 1 and isinstance(shape[0], (list, tuple, torch.Size)):
        shape = tuple(shape[0])
    if shape and isinstance(shape[0], torch.dtype):
        raise cls._error(f"view(dtype) is not supported by the {cls.backend_name} backend")
    return cls._new(cls._as_array(input).reshape(tuple(int(s) for s in shape)))


def _flatten(cls, input: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    A = cls._as_array(input)
    if A.ndim == 0:
        return cls._new(A.reshape(1))
    s, e = _norm_dim(start_dim, A.ndim), _norm_dim(end_dim, A.ndim)
    shape = A.shape[:s] + (-1,) + A.shape[e + 1 :]
    return cls._new(A.reshape(shape))


def _ravel(cls, input: Any) -> Any:
    return _flatten(cls, input)


def _unsqueeze(cls, input: Any, dim: int) -> Any:
    A = cls._as_array(input)
    return cls._new(np.expand_dims(A, _norm_dim(dim, A.ndim + 1)))


def _squeeze(cls, input: Any, dim: Any = None) -> Any:
    A = cls._as_array(input)
    if dim is None:
        return cls._new(A.reshape([s for s in A.shape if s != 1]))
    dims = _dims(dim, A.ndim) or ()
    dims = tuple(d for d in dims if A.shape[d] == 1)
    return cls._new(np.squeeze(A, axis=dims) if dims else A)


def _transpose(cls, input: Any, dim0: int, dim1: int) -> Any:
    A = cls._as_array(input)
    if A.ndim < 2:
        return cls._new(A)
    return cls._new(np.swapaxes(A, _norm_dim(dim0, A.ndim), _norm_dim(dim1, A.ndim)))


def _t(cls, input: Any) -> Any:
    A = cls._as_array(input)
    return cls._new(A.T if A.ndim == 2 else A)


def _permute(cls, input: Any, *dims: Any) -> Any:
    if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):
        dims = tuple(dims[0])
    A = cls._as_array(input)
    return cls._new(np.transpose(A, [_norm_dim(int(d), A.ndim) for d in dims]))


def _movedim(cls, input: Any, source: Any, destination: Any) -> Any:
    return cls._new(np.moveaxis(cls._as_array(input), source, destination))


def _expand(cls, input: Any, *sizes: Any) -> Any:
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple, torch.Size)):
        sizes = tuple(sizes[0])
    A = cls._as_array(input)
    lead = len(sizes) - A.ndim
    shape = tuple(A.shape[i - lead] if (s == -1 and i >= lead) else int(s) for i, s in enumerate(sizes))
    return cls._new(np.broadcast_to(A, shape).copy())


def _broadcast_to(cls, input: Any, size: Any) -> Any:
    return _expand(cls, input, tuple(size))


def _unbind(cls, input: Any, dim: int = 0) -> tuple:
    A = cls._as_array(input)
    d = _norm_dim(dim, A.ndim)
    return tuple(cls._new(np.take(A, i, axis=d)) for i in range(A.shape[d]))


def _identity(cls, input: Any, *args: Any, **kwargs: Any) -> Any:
    return cls._new(cls._as_array(input).copy())


def _getitem(cls, input: Any, idx: Any) -> Any:
    return cls._new(cls._as_array(input)).__getitem__(idx)


def _setitem(cls, target: Any, idx: Any, value: Any) -> None:
    if not isinstance(target, cls):
        raise cls._error(
            f"assigning {cls._what} into a plain tensor (out[i] = ...) is not supported by the {cls.backend_name} "
            "backend; start from torch.zeros_like(y) or build the result with torch.stack/torch.cat"
        )
    target.__setitem__(idx, value)


def _generic_impls() -> dict[str, Callable]:
    return {
        "add": _binary(lambda a, b: a + b),
        "sub": _binary(lambda a, b: a - b),
        "rsub": _binary(lambda a, b: b - a),
        "mul": _binary(lambda a, b: a * b),
        "div": _binary(lambda a, b: a / b),
        "pow": _pow_impl,
        "atan2": _atan2,
        "maximum": _maximum,
        "minimum": _minimum,
        "hypot": _hypot,
        "logaddexp": _logaddexp,
        "clamp": _clamp,
        "clamp_min": _clamp_min,
        "clamp_max": _clamp_max,
        "matmul": _matmul,
        "dot": _matmul,
        "inner": _matmul,
        "outer": _outer,
        "einsum": _einsum,
        "linear": _linear,
        "sum": _sum,
        "mean": _mean,
        "prod": _prod,
        "softmax": _softmax,
        "log_softmax": _log_softmax,
        "logsumexp": _logsumexp,
        "stack": _stack,
        "cat": _cat,
        "where": _where,
        "__getitem__": _getitem,
        "__setitem__": _setitem,
        "reshape": _reshape,
        "view": _reshape,
        "flatten": _flatten,
        "ravel": _ravel,
        "squeeze": _squeeze,
        "unsqueeze": _unsqueeze,
        "transpose": _transpose,
        "t": _t,
        "permute": _permute,
        "movedim": _movedim,
        "expand": _expand,
        "broadcast_to": _broadcast_to,
        "unbind": _unbind,
        "clone": _identity,
        "contiguous": _identity,
        "to": _identity,
        "type_as": _identity,
        "zeros_like": _like(0),
        "ones_like": _like(1),
        "full_like": _like(0),
        "empty_like": _like(0),
        "gt": _cmp("gt"),
        "ge": _cmp("ge"),
        "lt": _cmp("lt"),
        "le": _cmp("le"),
        "eq": _cmp("eq"),
        "ne": _cmp("ne"),
        "logical_and": _logic("and"),
        "logical_or": _logic("or"),
        "logical_not": _logic("not"),
    }
