r"""The scalar Taylor tape of the compiled path: ``f`` decomposed into elementary operations on scalars.

The compiled ``taylor_mode`` path traces ``f`` **once** per (``f``, event shape, dtype) with
:class:`TapeArray` stand-ins (NumPy object arrays of :class:`Node` scalars; the array machinery is the
shared :class:`~taylorsolve._object_array.ObjectArray`), like heyoka's decomposition of an ODE system:
every entry of ``f(t, y)`` becomes a small DAG of scalar operations whose Taylor coefficients follow
from O(k) recurrences (the same as the jets', listed in :mod:`taylorsolve.coefficients.taylor_mode`):

=============  ===========================================================  ==============================
node           coefficient ``k >= 1`` of ``v``                              primal ``v_0``
=============  ===========================================================  ==============================
``var i``      ``c_k`` of state component ``i`` (from the ODE recursion)    ``y_i``
``time``       ``1`` for ``k = 1``, else ``0``                              ``t``
``const``      ``0``                                                        ``c``
``add/sub``    ``a_k +- b_k``                                               ``a_0 +- b_0``
``addc/rsubc`` ``a_k``, ``-a_k``                                            ``a_0 + c``, ``c - a_0``
``mulc/divc``  ``c a_k``, ``a_k / c``                                       likewise
``neg``        ``-a_k``                                                     ``-a_0``
``mul``        ``sum_{j=0}^{k} a_j b_{k-j}``                                ``a_0 b_0``
``sqr``        the same with ``b = a`` (symmetric, half the products)       ``a_0^2``
``div``        ``(a_k - sum_{j<k} v_j b_{k-j}) / b_0``                      ``a_0 / b_0``
``rdivc``      ``-(sum_{j<k} v_j b_{k-j}) / b_0`` (``v = c / b``)          ``c / b_0``
``powc``       ``(1/a_0) sum_{j=1}^{k} ((c+1) j/k - 1) a_j v_{k-j}``        ``a_0^c``
``sqrt``       ``(a_k - sum_{j=1}^{k-1} v_j v_{k-j}) / (2 v_0)``            ``sqrt(a_0)``
``exp``        ``sum_{j=1}^{k} (j/k) a_j v_{k-j}``                          ``exp(a_0)``
``log``        ``(a_k - sum_{j=1}^{k-1} (j/k) v_j a_{k-j}) / a_0``          ``log(a_0)``
``sin/cos``    ``s_k = sum (j/k) a_j c_{k-j}``, ``c_k = -sum (j/k) a_j s_{k-j}``  (``sinh/cosh`` with ``+``)
``chain``      ``sum_{j=1}^{k} (j/k) a_j g_{k-j}`` (``v' = g a'``)          the entry's scalar function
``chain2``     ``sum (j/k) (a_j ga_{k-j} + b_j gb_{k-j})`` (``atan2``)       ``atan2(a_0, b_0)``
``abs``        ``sign(a_0) a_k``                                            ``|a_0|``
``select``     ``a_k`` if the condition holds at the primal, else ``b_k``   likewise
``pconst``     ``0`` (piecewise constant: sign, floor, softmax's shift)     a function of the primal(s)
``setprimal``  ``a_k`` of the composed series                               the entry's own function
``cmp/and/or`` conditions: primal only (``1.0``/``0.0``)
=============  ===========================================================  ==============================

Nodes are hash-consed (the same operation on the same inputs is one node), arithmetic on Python
numbers alone is done while tracing, and arithmetic with numbers never depends on their values (``x * 1``
is a ``mulc`` node), so the generated code depends only on the structure of ``f``.  Creation order is a topological order, except for ``chain`` nodes whose
derivative factor ``g`` uses ``v`` itself (``tan``: ``g = 1 + v^2``): ``v`` is created first and ``g``
after it, which is valid because ``v_k`` needs only ``g_0 .. g_{k-1}``.

Tracing refuses what a replayed tape cannot represent: Python control flow on the state (``bool()``),
conversions to numbers (:class:`~taylorsolve.errors.DerivativeLeakError`) and operations without a
``"compiled"`` entry in :mod:`taylorsolve._ops`; the backend then uses the interpreted jets.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np
import torch

from .._object_array import ObjectArray, _scalar_array
from .._ops import Op, lookup
from ..errors import TaylorSolveError, UnsupportedOperationError

__all__ = ["Node", "Tape", "TapeArray", "trace", "TraceResult"]

_Const = (int, float)


class Tape:
    """The list of nodes (topological order, see the module docstring) and the hash-consing table."""

    def __init__(self, max_nodes: int = 1 << 62) -> None:
        self.max_nodes = max_nodes
        self.nodes: list[Node] = []
        self._memo: dict[Any, Node] = {}
        self._pairs: dict[Any, tuple[Node, Node]] = {}

    def node(self, op: str, args: tuple = (), const: Any = None, pfn: str | None = None, *, memo: bool = True) -> "Node":
        key = (op, tuple(a.idx for a in args), const, pfn)
        if memo:
            hit = self._memo.get(key)
            if hit is not None:
                return hit
        if len(self.nodes) >= self.max_nodes:  # stop early: a large f must not be traced scalar by scalar
            raise UnsupportedOperationError(
                f"the traced tape exceeds the compiled path's limit of {self.max_nodes} scalar operations "
                "(large tensor right-hand sides run on the interpreted jets)",
                operation="size", backend="compiled",
            )
        n = Node(self, len(self.nodes), op, args, const, pfn)
        self.nodes.append(n)
        if memo:
            self._memo[key] = n
        return n

    def const(self, c: float) -> "Node":
        return self.node("const", (), float(c))

    def as_node(self, x: Any) -> "Node":
        if isinstance(x, Node):
            return x
        if isinstance(x, bool):
            return self.node("const", (), 1.0 if x else 0.0)
        return self.const(float(x))

    def pair(self, u: "Node", kind: str) -> tuple["Node", "Node"]:
        """Coupled ``(sin u, cos u)`` (kind ``"trig"``) or ``(sinh u, cosh u)`` (``"hyp"``), one pair per ``u``."""
        key = (kind, u.idx)
        hit = self._pairs.get(key)
        if hit is None:
            s = self.node("sin" if kind == "trig" else "sinh", (u,), memo=False)
            c = self.node("cos" if kind == "trig" else "cosh", (u, s), memo=False)
            hit = self._pairs[key] = (s, c)
        return hit

    def chain(self, name: str, u: "Node", deriv: Callable[["Node"], Any], pfn: str) -> "Node":
        """``v' = g u'`` with ``g = deriv(v)`` created after ``v``; ``v_0`` from the scalar function ``pfn``."""
        key = ("chain", name, u.idx)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        v = self.node("chain", (u,), None, pfn, memo=False)
        self._memo[key] = v
        g = deriv(v)
        if isinstance(g, Node):
            v.args = (u, g)
        else:
            v.op, v.const = "chainc", float(g)
        return v


class Node:
    """One scalar of the tape; Python operators build new nodes (numbers fold into ``c`` parameters)."""

    __slots__ = ("tape", "idx", "op", "args", "const", "pfn")

    def __init__(self, tape: Tape, idx: int, op: str, args: tuple, const: Any, pfn: str | None) -> None:
        self.tape, self.idx, self.op, self.args, self.const, self.pfn = tape, idx, op, args, const, pfn

    def __repr__(self) -> str:
        return f"Node({self.idx}: {self.op}{tuple(a.idx for a in self.args)}{'' if self.const is None else ', ' + repr(self.const)})"

    def _is_cond(self) -> bool:
        return self.op in ("cmp", "and", "or", "not")

    # ---- arithmetic ------------------------------------------------------------------------------
    def __add__(self, o: Any) -> Any:
        if isinstance(o, Node):
            return self.tape.node("add", (self, o) if self.idx <= o.idx else (o, self))
        if isinstance(o, _Const):  # no folding on the value: the code must not depend on constants' values
            return self.tape.node("addc", (self,), float(o))
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, o: Any) -> Any:
        if isinstance(o, Node):
            return self.tape.node("sub", (self, o))
        if isinstance(o, _Const):
            return self.tape.node("addc", (self,), -float(o))
        return NotImplemented

    def __rsub__(self, o: Any) -> Any:
        if isinstance(o, _Const):
            return self.tape.node("rsubc", (self,), float(o))
        return NotImplemented

    def __mul__(self, o: Any) -> Any:
        if isinstance(o, Node):
            if o is self:
                return self.tape.node("sqr", (self,))
            return self.tape.node("mul", (self, o) if self.idx <= o.idx else (o, self))
        if isinstance(o, _Const):
            return self.tape.node("mulc", (self,), float(o))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, o: Any) -> Any:
        if isinstance(o, Node):
            return self.tape.node("div", (self, o))
        if isinstance(o, _Const):
            return self.tape.node("divc", (self,), float(o))
        return NotImplemented

    def __rtruediv__(self, o: Any) -> Any:
        if isinstance(o, _Const):
            return self.tape.node("rdivc", (self,), float(o))
        return NotImplemented

    def __neg__(self) -> "Node":
        if self.op == "neg":
            return self.args[0]
        return self.tape.node("neg", (self,))

    def __pos__(self) -> "Node":
        return self

    def __abs__(self) -> "Node":
        return self.tape.node("abs", (self,))

    def __pow__(self, o: Any) -> Any:
        if isinstance(o, Node):  # u^w = exp(w log u)
            return _unary("exp", o * _unary("log", self))
        if not isinstance(o, _Const):
            return NotImplemented
        e = float(o)
        if e.is_integer():
            n = int(e)
            if n == 0:
                return 1.0
            if n == 1:
                return self
            if n > 1:  # binary exponentiation with Cauchy products (exact also at u_0 = 0)
                result, base = None, self
                while n:
                    if n & 1:
                        result = base if result is None else result * base
                    n >>= 1
                    if n:
                        base = base * base
                return result
            if n == -1:
                return 1.0 / self
        if e == 0.5:
            return _unary("sqrt", self)
        return self.tape.node("powc", (self,), e)

    def __rpow__(self, o: Any) -> Any:
        if isinstance(o, _Const):  # c^w = exp(w log c)
            return self.tape.node("setprimal", (_unary("exp", self * math.log(float(o))), self), None,
                                  f"math.pow({float(o)!r}, {{0}})")
        return NotImplemented

    # ---- conditions (primal only) --------------------------------------------------------------------
    def _cmp(self, o: Any, name: str) -> "Node":
        return self.tape.node("cmp", (self, self.tape.as_node(o)), name)

    def __gt__(self, o: Any) -> "Node":
        return self._cmp(o, "gt")

    def __ge__(self, o: Any) -> "Node":
        return self._cmp(o, "ge")

    def __lt__(self, o: Any) -> "Node":
        return self._cmp(o, "lt")

    def __le__(self, o: Any) -> "Node":
        return self._cmp(o, "le")

    def __bool__(self) -> bool:
        raise UnsupportedOperationError(
            "f branches on the value of the state (a Python `if` on a traced value): the compiled path "
            "cannot replay data-dependent control flow; use torch.where",
            operation="bool()",
            backend="compiled",
        )

    def __float__(self) -> float:
        raise TapeArray._leak_error(
            "f converts a traced value to a number (float()): the result would carry no derivatives",
            operation="float()",
        )

    __hash__ = object.__hash__


def _fold(op: Op, x: float, params: list) -> float:
    return float(op.torch(torch.tensor(float(x), dtype=torch.float64), *params))


def _unary(name: str, x: Any, params: list | None = None) -> Any:
    return TapeArray._unary_scalar(lookup(name), x, params or [])


class _TapePrimitives:
    """``P`` of the table's Taylor constructions, for tape nodes."""

    @staticmethod
    def op(name: str, x: Any) -> Any:
        return _unary(name, x)

    @staticmethod
    def pow(u: Any, c: float) -> Any:
        return u**c

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return TapeArray._select(cond, a, b)

    @staticmethod
    def gt(a: Any, b: Any) -> Any:
        return TapeArray._compare("gt", a, b)

    @staticmethod
    def lt(a: Any, b: Any) -> Any:
        return TapeArray._compare("lt", a, b)


_P = _TapePrimitives()


def _tape_of(*xs: Any) -> Tape | None:
    for x in xs:
        if isinstance(x, Node):
            return x.tape
    return None


class TapeArray(ObjectArray):
    """An array of tape nodes and Python numbers; the stand-in for ``t`` and ``y`` of the compiled path."""

    __slots__ = ()
    backend_name = "compiled"
    _what = "a traced value"

    @classmethod
    def _is_scalar(cls, x: Any) -> bool:
        return isinstance(x, (Node, float, bool))

    @classmethod
    def _element(cls, x: Any) -> Any:
        if isinstance(x, (Node, bool)):
            return x
        if isinstance(x, (bool, np.bool_)):
            return bool(x)
        if isinstance(x, numbers.Real):
            return float(x)
        raise UnsupportedOperationError(
            f"a {type(x).__name__} cannot enter the compiled path's tape", operation=type(x).__name__, backend="compiled"
        )

    #: the node budget of the trace in progress (constants much larger cannot fit a tape of that size)
    _budget = 1 << 62

    @classmethod
    def _from_tensor(cls, x: torch.Tensor) -> np.ndarray:
        if x.is_complex():
            raise UnsupportedOperationError("complex constants are not supported by the compiled path", backend="compiled")
        if x.numel() > cls._budget:
            raise UnsupportedOperationError(
                f"a constant tensor of {x.numel()} entries is too large for the compiled path's tape "
                f"({cls._budget} scalar operations at most)", operation="size", backend="compiled")
        return super()._from_tensor(x)

    @classmethod
    def _unary_scalar(cls, op: Op, x: Any, params: list) -> Any:
        if not isinstance(x, Node):
            return _fold(op, x, params)
        tape = x.tape
        if op.kind == "primal":
            return tape.node("pconst", (x,), None, op.scalar)
        if op.rec is not None:
            rec = op.rec
            if rec == "neg":
                return -x
            if rec == "abs":
                return abs(x)
            if rec in ("sin", "cos"):
                return tape.pair(x, "trig")[0 if rec == "sin" else 1]
            if rec in ("sinh", "cosh"):
                return tape.pair(x, "hyp")[0 if rec == "sinh" else 1]
            return tape.node(rec, (x,))  # exp, log, sqrt
        if op.chain is not None:
            return tape.chain(op.name, x, lambda v: op.chain(_P, x, v), op.scalar)
        v = op.compose(_P, x, *params)
        if op.scalar is not None and isinstance(v, Node) and v is not x:
            v = tape.node("setprimal", (v, x), None, op.scalar)
        return v

    @classmethod
    def _compare(cls, name: str, a: Any, b: Any) -> Any:
        tape = _tape_of(a, b)
        if tape is None:
            return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b, "eq": a == b, "ne": a != b}[name]
        return tape.node("cmp", (tape.as_node(a), tape.as_node(b)), name)

    @classmethod
    def _select(cls, c: Any, a: Any, b: Any) -> Any:
        if not isinstance(c, Node):
            return a if bool(c) else b
        tape = c.tape
        if not isinstance(a, Node) and not isinstance(b, Node) and a == b:
            return a
        return tape.node("select", (c, tape.as_node(a), tape.as_node(b)))

    @classmethod
    def _logic(cls, name: str, *xs: Any) -> Any:
        tape = _tape_of(*xs)
        if tape is None:
            vals = [bool(x) for x in xs]
            return {"and": lambda: vals[0] and vals[1], "or": lambda: vals[0] or vals[1], "not": lambda: not vals[0]}[name]()
        return tape.node(name, tuple(tape.as_node(x) for x in xs))

    @classmethod
    def _atan2(cls, y: Any, x: Any) -> Any:
        tape = _tape_of(y, x)
        if tape is None:
            return math.atan2(float(y), float(x))
        yn, xn = tape.as_node(y), tape.as_node(x)
        r2 = xn * xn + yn * yn
        ga, gb = xn / r2, -(yn / r2)
        return tape.node("chain2", (yn, ga, xn, gb), None, "math.atan2({0}, {1})")

    @classmethod
    def _softmax_shift(cls, A: np.ndarray, dim: int) -> np.ndarray:
        """``max`` of the primal along ``dim``: a piecewise-constant node (zero higher coefficients)."""
        def pmax(vals):
            tape = _tape_of(*vals)
            if tape is None:
                return max(float(v) for v in vals)
            return tape.node("pmax", tuple(tape.as_node(v) for v in vals))

        B = np.moveaxis(A, dim, -1)
        out = np.empty(B.shape[:-1], dtype=object)
        for idx in np.ndindex(*B.shape[:-1]):
            out[idx] = pmax(list(B[idx]))
        return np.expand_dims(out, dim % max(A.ndim, 1)) if A.ndim else out


TapeArray._build_table()


class TraceResult:
    """A traced right-hand side: the tape, the state/time nodes and the output (nodes or constants)."""

    def __init__(self, tape: Tape, time: Node, states: list[Node], outputs: list[Any], event_shape: tuple[int, ...]):
        self.tape, self.time, self.states, self.outputs, self.event_shape = tape, time, states, outputs, event_shape

    @property
    def n_state(self) -> int:
        return len(self.states)

    def __len__(self) -> int:
        return len(self.tape.nodes)


def trace(f: Callable, event_shape: tuple[int, ...], dtype: torch.dtype, *, max_nodes: int = 4000) -> TraceResult:
    """Trace ``f`` once on a :class:`TapeArray` state of ``event_shape``; raise if it cannot be replayed.

    Raises :class:`~taylorsolve.errors.UnsupportedOperationError` (an operation without a ``"compiled"``
    table entry, Python branching on the state, a tape over ``max_nodes`` nodes) or
    :class:`~taylorsolve.errors.DerivativeLeakError`; other exceptions from ``f`` propagate as
    :class:`~taylorsolve.errors.TaylorSolveError`.
    """
    tape = Tape(max_nodes)
    time = tape.node("time", memo=False)
    n = int(np.prod(event_shape)) if event_shape else 1
    states = [tape.node("var", (), i, memo=False) for i in range(n)]
    arr = np.empty(n, dtype=object)
    arr[:] = states
    y = TapeArray(arr.reshape(event_shape), dtype=dtype)
    t = TapeArray(_scalar_array(time), dtype=dtype)
    TapeArray._budget = max_nodes
    try:
        out = f(t, y)
    except TaylorSolveError:
        raise
    except Exception as exc:  # f failed on traced input (e.g. numpy on a traced array)
        raise UnsupportedOperationError(
            f"tracing f for the compiled path failed: {type(exc).__name__}: {exc}", operation=type(exc).__name__,
            backend="compiled",
        ) from exc
    finally:
        TapeArray._budget = 1 << 62
    if isinstance(out, torch.Tensor):
        arr = TapeArray._from_tensor(out)
    elif isinstance(out, TapeArray):
        arr = out._a
    else:
        raise TaylorSolveError(f"f(t, y) must return a torch.Tensor, got {type(out).__name__}")
    if tuple(arr.shape) != tuple(event_shape):
        raise UnsupportedOperationError(
            f"f returned shape {tuple(arr.shape)} for a traced state of shape {tuple(event_shape)}",
            operation="shape", backend="compiled",
        )
    outputs = []
    for e in arr.reshape(-1):
        if isinstance(e, Node) and e._is_cond():
            raise TaylorSolveError("f returned a boolean (a comparison) where a number was expected")
        outputs.append(e if isinstance(e, Node) else float(e))
    if len(tape.nodes) > max_nodes:
        raise UnsupportedOperationError(
            f"the traced tape has {len(tape.nodes)} scalar operations, more than the compiled path's limit of "
            f"{max_nodes} (large tensor right-hand sides run on the interpreted jets)",
            operation="size", backend="compiled",
        )
    return TraceResult(tape, time, states, outputs, tuple(event_shape))
