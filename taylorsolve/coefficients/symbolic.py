"""``backend="symbolic"``: Taylor coefficients from SymPy total derivatives (Lie derivatives).

For the autonomous-in-form system ``dy/dt = f(t, y)`` every total time derivative of the solution is a
function of ``(t, y)`` alone.  With ``D`` the Lie derivative along the vector field ``(1, f)``,

    D g = dg/dt + sum_j (dg/dy_j) f_j            (i.e. d/dt + f . grad_y),

they follow from the recursion

    y^(1) = f(t, y),        y^(k+1) = D y^(k) = d/dt y^(k) + (grad_y y^(k)) . f(t, y).

For k = 1 this is the familiar total derivative ``df/dt + J_y f . f`` of GENIE eq. (10)-(12).  The
truncated Taylor method (TTM) of order p, GENIE eq. (8),

    y(t + h) ~ y + h y' + h^2/2! y'' + ... + h^p/p! y^(p),

then needs the coefficients ``c_k = y^(k)(t) / k!``, which this backend evaluates from the
expressions.

Pipeline: ``f`` is called **once** with ``t`` a 0-d :class:`~taylorsolve._symbolic_array.SymbolicArray`
holding the symbol ``t`` and ``y`` a ``SymbolicArray`` of the symbols ``y_0 .. y_{n-1}`` (shaped like one
batch member, the *event shape*); the recursion above runs in SymPy; numeric constants such as
``sqrt(2)`` are folded into floats; ``sympy.cse`` shares common subexpressions across all orders; and
``sympy.lambdify`` compiles everything to one torch function.  The derivation and the compiled
function are cached per ``(f, event_shape)`` (orders are added incrementally), so the per-step cost of
a solve is one call of the compiled function (counted in ``counters.derivative_evals``).

Event shape and batching: ``y`` has shape ``batch_shape + event_shape``; batch members are
independent problems that share the symbolic derivation.  The default event shape is ``y.shape[-1:]``
(the last dimension is the state; leading dimensions are a batch) or ``()`` for a 0-d ``y``.  Pass
``event_shape=y.shape`` (``backend_options={"event_shape": ...}``) when ``f`` couples all entries of a
multi-dimensional state, e.g. a matrix ODE.  On the first evaluation the backend checks that the
compiled ``y'`` reproduces ``f(t, y)`` (using ``f0`` when the caller passes it) and raises
:class:`~taylorsolve.errors.SymbolicBackendError` suggesting the event shape otherwise.

Limits -- expression swell is real.  The size of ``y^(k)`` can grow exponentially with ``k``
(each Lie step applies the product rule to every factor).  Measured on one shared CPU core
(derive + cse/lambdify, SymPy 1.14): the pendulum costs 0.2 s + 0.1 s at order 8, 2 s + 1 s at
order 10 and 17 s + 10 s at order 12; Van der Pol
2.5 s + 1.4 s at order 8 (22k operations); the Kepler problem (``r^-3`` terms) 2.5 s + 1 s at
order 5, 13 s + 9 s at order 6 and 78 s + 39 s at order 7 (267k operations), i.e. minutes and
growing ~6x per order beyond.  Softmax/tanh-heavy right-hand sides grow ~10x per order.  For polynomial
right-hand sides pass ``simplify=sympy.expand``: Van der Pol at order 8 then has 277 instead of 22k
operations and derives + compiles in 1.2 s instead of 5 s.  ``cse``
keeps the *evaluation* cost moderate but not the derivation.  Note that ``solve(..., order="auto")``
picks ``p = ceil(-ln(tol)/2) + 1`` (13 for ``tol = 1e-10``), which is out of reach symbolically for
anything but tiny polynomial systems.  Use this backend for small ODEs and moderate orders (tutorials, reference
values, checking other backends); use ``"taylor_mode"`` (O(p^2) recurrences) for high orders and
``"autodiff"`` for neural-network right-hand sides.  Constants captured by ``f`` (tensors, Python
numbers) are baked into the expressions when ``f`` is first derived: after changing them call
:func:`clear_cache` or pass ``cache=False``.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import sympy as sp
import torch

from .._symbolic_array import SymbolicArray, as_object_array
from ..errors import SymbolicBackendError, TaylorSolveError, validate_order
from .base import RHS, CoefficientBackend, register_backend

__all__ = ["SymbolicBackend", "Derivation", "derive", "clear_cache", "lie_derivative"]

#: the time symbol used in every derivation
T_SYMBOL = sp.Symbol("t", real=True)

_CACHE_SIZE = 64
_CACHE: "OrderedDict[tuple[Any, tuple[int, ...]], _Entry]" = OrderedDict()
_CACHE_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------------
# derivation
# --------------------------------------------------------------------------------------------------
def _normalise_event_shape(event_shape: Any) -> tuple[int, ...]:
    if event_shape is None:
        raise TaylorSolveError("event_shape must be given")
    if isinstance(event_shape, (int, np.integer)):
        return (int(event_shape),)
    try:
        shape = tuple(int(s) for s in event_shape)
    except TypeError as exc:
        raise TaylorSolveError(f"event_shape must be a tuple of ints, got {event_shape!r}") from exc
    if any(s < 0 for s in shape):
        raise TaylorSolveError(f"event_shape must be non-negative, got {shape}")
    return shape


def _normalise_output(out: Any, event_shape: tuple[int, ...], symbols: set) -> list[sp.Expr]:
    """Turn whatever ``f`` returned symbolically into a flat list of ``prod(event_shape)`` expressions."""
    if isinstance(out, sp.MatrixBase):
        arr = as_object_array(out)
        if arr.shape != event_shape and arr.size == int(np.prod(event_shape, dtype=np.int64)):
            arr = arr.reshape(event_shape)
    else:
        arr = as_object_array(out)
    if arr.shape != event_shape:
        if arr.size == int(np.prod(event_shape, dtype=np.int64)) and arr.ndim == len(event_shape) + 1 and 1 in arr.shape:
            arr = arr.reshape(event_shape)  # e.g. a column vector for a 1-d state
        else:
            try:
                arr = np.broadcast_to(arr, event_shape).copy()  # constant / lower-rank output
            except ValueError:
                raise SymbolicBackendError(
                    f"f(t, y) returned shape {tuple(arr.shape)} for a symbolic state of shape {event_shape}"
                ) from None
    flat = []
    for e in arr.reshape(-1):
        e = sp.sympify(e)
        if not isinstance(e, sp.Expr):
            raise SymbolicBackendError(f"f(t, y) returned a non-expression entry {e!r} ({type(e).__name__})")
        extra = e.free_symbols - symbols
        if extra:
            raise SymbolicBackendError(
                f"f(t, y) returned expressions with symbols {sorted(map(str, extra))} other than t and the state"
            )
        flat.append(e)
    return flat


def _clean(e: sp.Expr) -> sp.Expr:
    """Drop ``DiracDelta`` terms (derivatives of sign/abs: zero almost everywhere); reject leftovers."""
    if e.has(sp.DiracDelta):
        e = e.replace(lambda s: isinstance(s, sp.DiracDelta), lambda s: sp.S.Zero)
    if e.has(sp.Derivative):
        raise SymbolicBackendError(f"SymPy could not differentiate part of f: {e.atoms(sp.Derivative)}")
    return e


def lie_derivative(
    exprs: Sequence[sp.Expr], rhs: Sequence[sp.Expr], t: sp.Symbol, ys: Sequence[sp.Symbol]
) -> list[sp.Expr]:
    """One step of the recursion ``D g = dg/dt + sum_j dg/dy_j f_j`` applied to each of ``exprs``."""
    out = []
    for e in exprs:
        fs = e.free_symbols
        terms = [e.diff(t)] if t in fs else []
        for yj, fj in zip(ys, rhs):
            if yj in fs:
                terms.append(e.diff(yj) * fj)
        out.append(_clean(sp.Add(*terms)))
    return out


def _fold_constants(e: sp.Expr) -> sp.Expr:
    """Evaluate symbol-free subexpressions (``sqrt(2)``, ``exp(1/3)``) to Floats so torch functions only
    ever receive tensors."""

    def is_const(s: Any) -> bool:
        return isinstance(s, sp.Expr) and not s.is_Atom and s.is_number

    def to_num(s: sp.Expr) -> sp.Expr:
        v = s.evalf(30)
        return v if v.is_Number else s

    if is_const(e):
        e = to_num(e)
    else:
        e = e.replace(is_const, to_num)
    # 53-bit Floats print with 15 digits, which does not round-trip every double: widen them so the
    # generated code reproduces the exact binary constants.
    floats = e.atoms(sp.Float)
    if floats:
        e = e.xreplace({v: sp.Float(v, 32) for v in floats})
    return e


class Derivation:
    """The total derivatives ``y', y'', ..., y^(order)`` of ``dy/dt = f(t, y)`` as SymPy expressions.

    Attributes
    ----------
    t : sympy.Symbol
        the time symbol ``t``.
    y : SymbolicArray
        the state symbols ``y_0, ..., y_{n-1}`` (row-major over ``event_shape``; a bare ``y`` when the
        event shape is ``()``).
    event_shape, order
    flat : list[tuple[sympy.Expr, ...]]
        ``flat[k-1]`` holds the ``n`` components of ``y^(k)`` in row-major order.
    expressions : list
        ``expressions[k-1]`` is ``y^(k)`` as a SymPy ``Array`` of the event shape (a bare expression
        for event shape ``()``); ``expressions[0]`` is ``f`` itself.

    ``str(d)`` lists the derivatives; in Jupyter the object renders as LaTeX.  :attr:`cse` gives the
    common-subexpression form; :meth:`compile` returns numeric torch/NumPy functions.
    """

    def __init__(
        self,
        f: Callable | None,
        event_shape: tuple[int, ...],
        t: sp.Symbol,
        y: SymbolicArray,
        flat: list[tuple[sp.Expr, ...]],
        simplify: Callable[[sp.Expr], sp.Expr] | None = None,
    ):
        self.f = f
        self.event_shape = event_shape
        self.t = t
        self.y = y
        self.flat = flat
        self.simplify = simplify
        self._compiled: dict[tuple[str, int], Callable] = {}
        self._cse: dict[int, Any] = {}
        self._lock = threading.RLock()

    # ---- building -------------------------------------------------------------------------------
    @classmethod
    def from_rhs(
        cls, f: Callable, event_shape: Any, *, simplify: Callable[[sp.Expr], sp.Expr] | None = None
    ) -> "Derivation":
        """Call ``f`` symbolically once and record ``y' = f(t, y)``."""
        event_shape = _normalise_event_shape(event_shape)
        y = SymbolicArray.symbols("y", event_shape)
        t_arr = SymbolicArray(np.array(T_SYMBOL, dtype=object).reshape(()))
        try:
            out = f(t_arr, y)
        except SymbolicBackendError:
            raise
        except TypeError as exc:
            if "Cannot convert" in str(exc):  # SymPy's Expr.__float__/__int__: f turned a traced value into a number
                from .._symbolic_array import SymbolicLeakError

                raise SymbolicLeakError(
                    f"f converts a symbolic value to a number ({exc}; e.g. via tolist() / numpy() and torch.tensor): "
                    "the symbolic backend cannot trace that, and derivative-based backends would silently lose the "
                    "derivatives. Write f with torch operations only.",
                    operation="a conversion to a number",
                ) from exc
            raise SymbolicBackendError(
                f"calling f(t, y) with symbolic arguments (state shape {event_shape}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:  # f failed on symbolic input: say so, keep the cause
            raise SymbolicBackendError(
                f"calling f(t, y) with symbolic arguments (state shape {event_shape}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        symbols = set(y.flat_expressions()) | {T_SYMBOL}
        rhs = _normalise_output(out, event_shape, symbols)
        if simplify is not None:
            rhs = [simplify(e) for e in rhs]
        return cls(f, event_shape, T_SYMBOL, y, [tuple(rhs)], simplify)

    @property
    def order(self) -> int:
        return len(self.flat)

    @property
    def state_symbols(self) -> list[sp.Symbol]:
        return self.y.flat_expressions()

    @property
    def n(self) -> int:
        """Number of state components (``prod(event_shape)``)."""
        return len(self.flat[0])

    def extend(self, order: int) -> "Derivation":
        """Append Lie derivatives until ``order`` derivatives are known (in place); returns ``self``."""
        with self._lock:
            ys = self.state_symbols
            while len(self.flat) < order:
                nxt = lie_derivative(self.flat[-1], self.flat[0], self.t, ys)
                if self.simplify is not None:
                    nxt = [self.simplify(e) for e in nxt]
                self.flat.append(tuple(nxt))
        return self

    def truncated(self, order: int) -> "Derivation":
        """A derivation holding only ``y' .. y^(order)`` (extending first if needed)."""
        self.extend(order)
        if order == self.order:
            return self
        return Derivation(self.f, self.event_shape, self.t, self.y, list(self.flat[:order]), self.simplify)

    # ---- views ----------------------------------------------------------------------------------
    def _shaped(self, exprs: Sequence[sp.Expr]) -> Any:
        if self.event_shape == ():
            return exprs[0]
        return sp.ImmutableDenseNDimArray(list(exprs), self.event_shape)

    @property
    def expressions(self) -> list[Any]:
        return [self._shaped(e) for e in self.flat]

    @property
    def rhs(self) -> Any:
        """``f(t, y)`` as SymPy (``expressions[0]``)."""
        return self._shaped(self.flat[0])

    def derivative(self, k: int) -> Any:
        """``y^(k)`` (``k >= 1``) as SymPy."""
        if not 1 <= k <= self.order:
            raise TaylorSolveError(f"derivative order must be in 1..{self.order}, got {k}")
        return self._shaped(self.flat[k - 1])

    @property
    def cse(self) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
        """``sympy.cse`` of all components of all orders: ``(replacements, reduced)``; ``reduced`` is
        flat, order by order (``reduced[(k-1)*n + i]`` is component ``i`` of ``y^(k)``)."""
        with self._lock:
            if self.order not in self._cse:
                exprs = [e for order_exprs in self.flat for e in order_exprs]
                self._cse[self.order] = sp.cse(exprs)
            return self._cse[self.order]

    @property
    def operation_counts(self) -> list[int]:
        """``sympy.count_ops`` of each order (summed over components): a measure of expression swell."""
        return [int(sum(sp.count_ops(e) for e in exprs)) for exprs in self.flat]

    def _name(self, k: int) -> str:
        return "y" + ("'" * k if k <= 3 else f"^({k})")

    def __str__(self) -> str:
        ys = ", ".join(map(str, self.state_symbols))
        lines = [f"Total derivatives of dy/dt = f(t, y), y = ({ys}), event shape {self.event_shape}:"]
        for k, exprs in enumerate(self.flat, start=1):
            body = str(exprs[0]) if self.event_shape == () else "[" + ", ".join(map(str, exprs)) + "]"
            lines.append(f"  {self._name(k)} = {body}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Derivation(event_shape={self.event_shape}, order={self.order}, operation_counts={self.operation_counts})"

    def _repr_latex_(self) -> str:
        rows = []
        for k, exprs in enumerate(self.flat, start=1):
            lhs = "y'" if k == 1 else ("y''" if k == 2 else f"y^{{({k})}}")
            if self.event_shape == ():
                body = sp.latex(exprs[0])
            else:
                body = r"\left[" + r",\; ".join(sp.latex(e) for e in exprs) + r"\right]"
            rows.append(f"{lhs} &= {body}")
        return "$$\\begin{aligned}" + r" \\ ".join(rows) + "\\end{aligned}$$"

    # ---- numeric functions ----------------------------------------------------------------------
    def compile(self, module: str = "torch", order: int | None = None) -> Callable[[Any, Any], list[Any]]:
        """Return ``g(t, y) -> [y', ..., y^(order)]`` (total derivatives, *not* divided by factorials).

        ``module`` is ``"torch"`` (tensors in and out; what the backend uses) or ``"numpy"``.  ``y`` has
        shape ``batch_shape + event_shape``; each returned array has ``y``'s shape (constant
        components are broadcast) and, for torch, ``y``'s dtype and device.  ``t`` is a scalar (or
        anything broadcasting against the batch shape).  All orders share one ``cse`` pass.
        """
        if module not in ("torch", "numpy"):
            raise TaylorSolveError(f"module must be 'torch' or 'numpy', got {module!r}")
        order = self.order if order is None else validate_order(order)
        self.extend(order)
        key = (module, order)
        with self._lock:
            fn = self._compiled.get(key)
            if fn is None:
                fn = self._compile(module, order)
                self._compiled[key] = fn
        return fn

    def _compile(self, module: str, order: int) -> Callable[[Any, Any], list[Any]]:
        exprs = [_fold_constants(e) for order_exprs in self.flat[:order] for e in order_exprs]
        ys = self.state_symbols
        try:
            raw = sp.lambdify([self.t, ys], exprs, modules=module, cse=True, docstring_limit=0)
        except Exception as exc:  # e.g. a SymPy function with no torch translation
            raise SymbolicBackendError(f"could not compile the derivatives to {module}: {exc}") from exc
        n = len(ys)
        event_shape = self.event_shape
        ne = len(event_shape)

        if module == "torch":

            def evaluate(t: Any, y: torch.Tensor) -> list[torch.Tensor]:
                y = torch.as_tensor(y)
                batch = y.shape[: y.ndim - ne]
                t = torch.as_tensor(t, device=y.device).to(y.dtype if y.is_floating_point() else torch.get_default_dtype())
                comps = list(y.reshape(*batch, n).unbind(-1))
                outs = raw(t, comps)
                res = []
                for k in range(order):
                    parts = [
                        torch.broadcast_to(
                            o.to(y.dtype) if isinstance(o, torch.Tensor) else torch.as_tensor(o, dtype=y.dtype, device=y.device),
                            batch,
                        )
                        for o in outs[k * n : (k + 1) * n]
                    ]
                    res.append(torch.stack(parts, dim=-1).reshape(y.shape))
                return res

        else:

            def evaluate(t: Any, y: Any) -> list[np.ndarray]:
                y = np.asarray(y)
                batch = y.shape[: y.ndim - ne]
                comps = [y.reshape(*batch, n)[..., i] for i in range(n)]
                outs = raw(np.asarray(t, dtype=y.dtype if y.dtype.kind == "f" else float), comps)
                res = []
                for k in range(order):
                    parts = [np.broadcast_to(np.asarray(o, dtype=y.dtype if y.dtype.kind == "f" else float), batch) for o in outs[k * n : (k + 1) * n]]
                    res.append(np.stack(parts, axis=-1).reshape(y.shape))
                return res

        evaluate.__doc__ = f"Total derivatives y' .. y^({order}) of the ODE (compiled with sympy.lambdify to {module})."
        return evaluate

    def lambdify_numpy(self, order: int | None = None) -> Callable[[Any, Any], list[np.ndarray]]:
        """``compile("numpy", order)``: NumPy functions for users who want the derivatives outside torch."""
        return self.compile("numpy", order)


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------
class _Entry:
    def __init__(self, f: Callable, derivation: Derivation):
        self.f = f  # strong reference keeps id(f) valid for unhashable f
        self.derivation = derivation


def _fkey(f: Callable) -> Any:
    try:
        hash(f)
        return f
    except TypeError:
        return ("id", id(f))


def _get_derivation(
    f: Callable, event_shape: tuple[int, ...], order: int, *, cache: bool, simplify: Callable | None
) -> Derivation:
    if not cache:
        return Derivation.from_rhs(f, event_shape, simplify=simplify).extend(order)
    key = (_fkey(f), event_shape, simplify)
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is not None and isinstance(key[0], tuple) and key[0][:1] == ("id",) and entry.f is not f:
            entry = None
        if entry is None:
            entry = _Entry(f, Derivation.from_rhs(f, event_shape, simplify=simplify))
            _CACHE[key] = entry
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
    return entry.derivation.extend(order)


def clear_cache() -> None:
    """Forget every cached derivation and compiled function (e.g. after changing constants in ``f``)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def derive(
    f: Callable,
    event_shape: Any = (),
    order: int = 1,
    *,
    cache: bool = True,
    simplify: Callable[[sp.Expr], sp.Expr] | None = None,
) -> Derivation:
    """Derive ``y', y'', ..., y^(order)`` of ``dy/dt = f(t, y)`` symbolically and return a :class:`Derivation`.

    ``f`` is called once with ``t`` a symbolic scalar and ``y`` a :class:`SymbolicArray` of the symbols
    ``y_0 .. y_{n-1}`` shaped ``event_shape`` (an int ``n`` means ``(n,)``; ``()`` gives a scalar
    ``y``).  ``f`` may use torch functions, :mod:`taylorsolve.math` or SymPy directly, and may return a
    symbolic array, a list/tuple of expressions or a SymPy ``Matrix``.  The higher derivatives follow
    the Lie-derivative recursion ``y^(k+1) = d/dt y^(k) + (grad_y y^(k)) . f`` (see the module
    docstring); they enter the truncated Taylor method of GENIE eq. (8) divided by ``k!``.

    ``simplify`` (e.g. ``sympy.expand`` for polynomial systems) is applied to every new derivative;
    the default applies none.  Expression size can grow exponentially with the order: see
    :attr:`Derivation.operation_counts`.

    Example::

        >>> d = derive(lambda t, y: torch.stack([y[..., 1], -torch.sin(y[..., 0])], -1), (2,), 2)
        >>> print(d)   # y' = [y_1, -sin(y_0)], y'' = [-sin(y_0), -y_1*cos(y_0)]
    """
    order = validate_order(order)
    event_shape = _normalise_event_shape(event_shape)
    return _get_derivation(f, event_shape, order, cache=cache, simplify=simplify).truncated(order)


# --------------------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------------------
class SymbolicBackend(CoefficientBackend):
    """``backend="symbolic"``: exact total derivatives by SymPy, compiled to torch (see module docstring).

    Options
    -------
    event_shape : tuple of int, optional
        Shape of one problem's state; ``y.shape`` must end with it and the leading dimensions are a
        batch of independent problems.  Default ``y.shape[-1:]`` (``()`` for a 0-d ``y``).
    cache : bool
        Reuse derivations/compiled functions across calls and backend instances (default True).
    validate : bool
        On the first evaluation for each ``(f, event_shape)`` check that the compiled ``y'`` equals
        ``f(t, y)`` (``f0`` if given, else one numeric call of ``f``, counted in ``f_evals``; skipped if
        ``f`` cannot be evaluated on tensors).  Catches a wrong event shape.  Default True.
    simplify : callable, optional
        Applied to each new derivative expression (e.g. ``sympy.expand``).
    """

    name = "symbolic"

    def __init__(
        self,
        event_shape: Sequence[int] | int | None = None,
        *,
        cache: bool = True,
        validate: bool = True,
        simplify: Callable[[sp.Expr], sp.Expr] | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = None if event_shape is None else _normalise_event_shape(event_shape)
        self.cache = cache
        self.validate = validate
        self.simplify = simplify
        self._validated: set = set()
        self._local: dict = {}  # per-instance derivations when cache=False

    def _event_shape_for(self, y: torch.Tensor) -> tuple[int, ...]:
        if self.event_shape is None:
            return tuple(y.shape[-1:]) if y.ndim >= 1 else ()
        es = self.event_shape
        if len(es) > y.ndim or tuple(y.shape[y.ndim - len(es) :]) != es:
            raise TaylorSolveError(
                f"the symbolic backend's event_shape {es} does not match the trailing dimensions of y "
                f"(shape {tuple(y.shape)})"
            )
        return es

    def derivation(self, f: RHS, event_shape: tuple[int, ...], order: int) -> Derivation:
        """The (cached) :class:`Derivation` used for ``f``."""
        if self.cache:
            return _get_derivation(f, event_shape, order, cache=True, simplify=self.simplify)
        key = (_fkey(f), event_shape)
        d = self._local.get(key)
        if d is None or d.f is not f:
            d = Derivation.from_rhs(f, event_shape, simplify=self.simplify)
            self._local = {key: d}  # keep only the latest f
        return d.extend(order)

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        order = validate_order(order)
        if not isinstance(y, torch.Tensor):
            raise TaylorSolveError(f"y must be a torch.Tensor, got {type(y).__name__}")
        event_shape = self._event_shape_for(y)
        derivation = self.derivation(f, event_shape, order)
        fn = derivation.compile("torch", order)
        t = torch.as_tensor(t, device=y.device)
        derivs = fn(t, y)
        self.counters.derivative_evals += 1
        if self.validate:
            self._check_first(f, t, y, derivs[0], f0, event_shape)
        return [y] + [d / math.factorial(k) for k, d in enumerate(derivs, start=1)]

    def _check_first(
        self,
        f: RHS,
        t: torch.Tensor,
        y: torch.Tensor,
        d1: torch.Tensor,
        f0: torch.Tensor | None,
        event_shape: tuple[int, ...],
    ) -> None:
        key = (_fkey(f), event_shape)
        if key in self._validated:
            return
        self._validated.add(key)
        ref = f0
        if ref is None:
            try:
                with torch.no_grad():
                    ref = f(t, y)
            except Exception:  # f written for SymPy only: nothing numeric to compare with
                return
            self.counters.f_evals += 1
        if not isinstance(ref, torch.Tensor) or ref.shape != y.shape:
            return
        ref = ref.detach().to(d1.dtype)
        eps = torch.finfo(d1.dtype).eps if d1.is_floating_point() else 1e-12
        tol = math.sqrt(eps)
        scale = 1.0 + float(ref.abs().max()) if ref.numel() else 1.0
        finite = torch.isfinite(ref) & torch.isfinite(d1)
        err = float((d1 - ref)[finite].abs().max()) if bool(finite.any()) else 0.0
        if err > tol * scale:
            batch = tuple(y.shape[: y.ndim - len(event_shape)])
            raise SymbolicBackendError(
                f"the symbolic derivation of f does not reproduce f(t, y) (max abs difference {err:.3g}). "
                f"The symbolic backend called f with a state of shape {event_shape} and treated the leading "
                f"dimensions {batch} of y as independent problems; if f couples them pass "
                f"event_shape={tuple(y.shape)} (backend_options={{'event_shape': ...}})."
            )


register_backend("symbolic", SymbolicBackend)
