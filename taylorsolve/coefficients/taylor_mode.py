r"""``"taylor_mode"``: Taylor coefficients by truncated Taylor arithmetic (jets), cost O(p^2).

The p-th truncated Taylor method (TTM, GENIE paper eq. (8))

    y(t0 + h) ~ sum_{k=0}^{p} c_k h^k,        c_k = y^(k)(t0) / k!,

needs the Taylor coefficients of the solution of ``dy/dt = f(t, y)`` through ``(t0, y0)``.  Nested
forward-mode AD (the ``"autodiff"`` backend) costs ~3^k-4^k (measured) and symbolic differentiation
swells; the classical remedy, used by Taylor-series ODE integrators (Jorba & Zou, "A software
package for the numerical integration of ODEs by means of high-order Taylor methods", Exp. Math.
14 (2005); heyoka; ``jax.experimental.jet``), is *Taylor-mode arithmetic*: propagate truncated
power series ``u(s) = sum_k u_k s^k`` through every elementary operation with O(k) recurrences.

How it works
------------
1. **Trace.**  ``f`` is evaluated once on :class:`Jet` objects (``t`` has the series ``t0 + s``,
   ``y`` the unknown series ``y0 + c_1 s + ...``).  Python operators, ``Tensor`` methods and torch
   functions (through ``__torch_function__``; :mod:`taylorsolve.math` forwards to torch) record a
   graph.  Every node owns a preallocated buffer ``[p+1, *shape]`` of coefficients; coefficient 0
   (the primal value) is computed while tracing, and creation order is a topological order.
2. **ODE recursion.**  Because ``y' = f(t, y)``, coefficient ``k`` of ``f(t, y(t))`` needs only
   ``y_0..y_k`` and gives ``y_{k+1} = f_k / (k+1)``.  For ``k = 1..p-1``: write ``c_k`` into the
   state node, sweep all nodes to compute their coefficient ``k``, read ``f_k``.  A sweep over one
   node costs O(k), so the whole computation costs O(p^2) per node and about ``p * nodes`` torch
   calls (compare ~3^p-4^p f evaluations for nested forward mode, measured).

Recurrences (``u, w`` inputs, ``v`` result, all sums over the indicated ``j``; index ``k >= 1``)
-------------------------------------------------------------------------------------------------
* linear ops (``+ - neg``, indexing, reshapes, ``sum``, ``mean``, ``cat``, ``stack``, ``where`` with a
  constant condition, products / ``@`` with constants, ``F.linear``/``conv`` in the input):
  ``v_k = L(u_k)``; additive constants only enter ``v_0``.
* product ``v = u w``:                 ``v_k = sum_{j=0}^{k} u_j w_{k-j}``  (Cauchy product; ``u @ w``,
  ``einsum``, ``outer``... likewise with the bilinear map in place of ``*``).
* quotient ``v = u / w``:              ``v_k = (u_k - sum_{j=0}^{k-1} v_j w_{k-j}) / w_0``.
* ``v = exp(u)``:                      ``v_k = sum_{j=1}^{k} (j/k) u_j v_{k-j}``      (from ``v' = v u'``).
* ``v = log(u)``:                      ``v_k = (u_k - sum_{j=1}^{k-1} (j/k) v_j u_{k-j}) / u_0``.
* ``v = u^a`` (constant ``a``):         ``v_k = (1/u_0) sum_{j=1}^{k} ((a+1) j/k - 1) u_j v_{k-j}``
  (from ``u v' = a u' v``); positive integer ``a`` uses repeated products (valid at ``u_0 = 0``),
  ``a = 1/2`` uses ``sqrt``; ``u^w`` with a jet exponent is ``exp(w log u)``.
* ``v = sqrt(u)``:                     ``v_k = (u_k - sum_{j=1}^{k-1} v_j v_{k-j}) / (2 v_0)``.
* ``s, c = sin(u), cos(u)`` (coupled):  ``s_k = sum_{j=1}^{k} (j/k) u_j c_{k-j}``,
  ``c_k = -sum_{j=1}^{k} (j/k) u_j s_{k-j}``; ``sinh``/``cosh`` with ``+``.
* ``v = tan(u)``, ``tanh(u)``, ``sigmoid(u)``: ``v' = g u'`` with ``g = 1 + v^2``, ``1 - v^2``,
  ``v - v^2``: ``v_k = sum_{j=1}^{k} (j/k) u_j g_{k-j}``, where ``g_{k-1}`` (a Cauchy square of
  ``v_0..v_{k-1}``) is updated just before ``v_k``.
* any ``v' = g(u) u'`` with ``g`` built from the above (``atan``, ``asin``, ``acos``, ``asinh``,
  ``acosh``, ``atanh``, ``erf``, ``erfc``, ``atan2``): the same "chain" recurrence with ``g`` a graph
  node.
* piecewise functions (``abs``, ``relu``, ``clamp``, ``maximum``, ``amax``...) pick the branch from
  the primal and are linear there (valid off the switching set).  ``softmax``/``logsumexp`` shift by
  the primal's maximum, a constant.

``taylor_mode`` never differentiates through its own arithmetic (it runs under ``torch.no_grad``),
so the coefficients it returns carry no autograd history.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch.overrides import resolve_name

from .._ops import OPS, dispatch_table, lookup, on_change, supported_by
from .._tensorlike import TensorLike
from ..errors import TaylorSolveError, UnsupportedOperationError, check_rhs_output, validate_order
from .base import RHS, CoefficientBackend, register_backend

__all__ = ["TaylorModeBackend", "Jet", "supported_operations", "jet_coefficients"]

_Number = (int, float)


# =============================================================================================
# tape and jets
# =============================================================================================
#: small weight vectors ``j/k`` and ``(a+1) j/k - 1`` shared by all calls (bounded)
_WEIGHTS: dict[Any, torch.Tensor] = {}
_WEIGHTS_MAX = 4096


class _Tape:
    """The recorded graph: a list of per-node ``step(k)`` closures in topological order."""

    __slots__ = ("n", "steps", "_cache", "pairs")

    def __init__(self, n: int) -> None:
        self.n = n  # number of coefficients per buffer (order + 1)
        self.steps: list[Callable[[int], None]] = []
        self._cache = _WEIGHTS
        self.pairs: dict[Any, tuple] = {}

    def new(self, primal: torch.Tensor, *, zeros: bool = False) -> "Jet":
        if not isinstance(primal, torch.Tensor):
            primal = torch.as_tensor(primal)
        alloc = torch.zeros if zeros else torch.empty
        buf = alloc((self.n, *primal.shape), dtype=primal.dtype, device=primal.device)
        buf[0] = primal
        return Jet(self, buf)

    def jk(self, k: int, nd: int, ref: torch.Tensor) -> torch.Tensor:
        """``[1/k, 2/k, ..., k/k]`` shaped ``[k, 1, ..., 1]`` (``nd`` ones)."""
        key = ("jk", k, nd, ref.dtype, ref.device)
        w = self._cache.get(key)
        if w is None:
            w = (torch.arange(1, k + 1, dtype=ref.dtype, device=ref.device) / k).reshape(k, *([1] * nd))
            if len(self._cache) > _WEIGHTS_MAX:
                self._cache.clear()
            self._cache[key] = w
        return w

    def powk(self, a: float, k: int, nd: int, ref: torch.Tensor) -> torch.Tensor:
        """``[(a+1) j/k - 1 for j = 1..k]`` shaped ``[k, 1, ..., 1]``."""
        key = ("pow", a, k, nd, ref.dtype, ref.device)
        w = self._cache.get(key)
        if w is None:
            w = (a + 1.0) * self.jk(k, nd, ref) - 1.0
            if len(self._cache) > _WEIGHTS_MAX:
                self._cache.clear()
            self._cache[key] = w
        return w

    def sweep(self, k: int) -> None:
        for step in self.steps:
            step(k)


def _unsupported(what: Any) -> UnsupportedOperationError:
    return Jet._unsupported(what)


class Jet(TensorLike):
    """A truncated Taylor series ``sum_k buf[k] s^k`` of a tensor, recorded on a tape.

    Jets stand in for ``t`` and ``y`` while the taylor_mode backend traces ``f``.  They support the
    Python operators, ``Tensor`` methods and torch functions listed for ``"taylor_mode"`` in the
    operations table (:mod:`taylorsolve._ops`, ``supported_operations()``); anything else raises
    :class:`~taylorsolve.errors.UnsupportedOperationError` naming the function, and conversions that
    would drop the series (``float()``, ``detach()``, ``tolist()``...) raise
    :class:`~taylorsolve.errors.DerivativeLeakError`.  Comparisons and other piecewise-constant
    functions act on the primal (coefficient 0) and return plain tensors.
    ``isinstance(jet, torch.Tensor)`` is False.
    """

    __slots__ = ("tape", "buf")
    backend_name = "taylor_mode"
    _what = "a Jet (a traced value)"

    def __init__(self, tape: _Tape, buf: torch.Tensor) -> None:
        self.tape = tape
        self.buf = buf

    # --- tensor-like metadata ------------------------------------------------------------------
    @property
    def primal(self) -> torch.Tensor:
        return self.buf[0]

    @property
    def shape(self) -> torch.Size:
        return self.buf.shape[1:]

    @property
    def dtype(self) -> torch.dtype:
        return self.buf.dtype

    @property
    def device(self) -> torch.device:
        return self.buf.device

    @property
    def ndim(self) -> int:
        return self.buf.ndim - 1

    def numel(self) -> int:
        return self.buf[0].numel()

    def element_size(self) -> int:
        return self.buf.element_size()

    @property
    def T(self) -> "Jet":
        return _linear1(self, lambda c: c.T)

    @property
    def mT(self) -> "Jet":
        return _linear1(self, lambda c: c.mT)

    def __repr__(self) -> str:
        return f"Jet(shape={tuple(self.shape)}, dtype={self.dtype}, primal={self.primal!r})"

    def __bool__(self):
        raise UnsupportedOperationError(
            "the truth value of a Jet is ambiguous; compare explicitly (y > 0 gives a bool tensor of the "
            "primal) if f branches on the state",
            operation="bool()",
            backend="taylor_mode",
        )

    def __eq__(self, o):  # type: ignore[override]
        return _primal(self) == _primal(o)

    def __ne__(self, o):  # type: ignore[override]
        return _primal(self) != _primal(o)

    __hash__ = object.__hash__

    def _inplace(self, name: str):
        method = getattr(torch.Tensor, name[:-1])
        base = type(self)._table[name[:-1]]

        def inplace(*args, **kwargs):
            res = base(method, (self, *args), kwargs)
            if not isinstance(res, Jet):
                res = _const_jet(self.tape, res)
            if res.shape != self.shape:
                raise TaylorSolveError(f"in-place torch.Tensor.{name} would change the shape of a Jet")
            self.buf = res.buf
            return self

        return inplace


def _getitem(u: Jet, idx) -> Jet:
    if _has_jet(idx):
        raise TaylorSolveError("indexing with a Jet is not supported by the taylor_mode backend")
    fn = lambda c: c[idx]  # noqa: E731
    v = _view_node(u, "__getitem__", (idx,), {}, fn)
    return v if v is not None else _linear1(u, fn)


def _setitem(target: Jet, idx, value) -> None:
    if _has_jet(idx):
        raise TaylorSolveError("indexing with a Jet is not supported by the taylor_mode backend")
    old = target.buf
    primal = old[0].clone()
    primal[idx] = _primal(value)
    v = target.tape.new(primal)
    vb = v.buf
    if isinstance(value, Jet):
        valb = value.buf

        def step(k):
            vb[k].copy_(old[k])
            vb[k][idx] = valb[k]
    else:

        def step(k):
            vb[k].copy_(old[k])
            vb[k][idx] = 0

    target.tape.steps.append(step)
    target.buf = vb


# =============================================================================================
# helpers
# =============================================================================================
def _primal(x):
    return x.buf[0] if isinstance(x, Jet) else x


def _has_jet(x) -> bool:
    if isinstance(x, Jet):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_jet(e) for e in x)
    if isinstance(x, dict):
        return any(_has_jet(e) for e in x.values())
    return False


def _tape_of(*xs) -> _Tape:
    for x in xs:
        if isinstance(x, Jet):
            return x.tape
        if isinstance(x, (list, tuple)):
            for e in x:
                if isinstance(e, Jet):
                    return e.tape
    raise AssertionError("no jet among the arguments")


def _al(buf: torch.Tensor, nd: int) -> torch.Tensor:
    """View a coefficient buffer ``[n, *shape]`` as ``[n, 1, .., 1, *shape]`` with ``nd`` trailing dims."""
    extra = nd - (buf.ndim - 1)
    if extra <= 0:
        return buf
    return buf.view(buf.shape[0], *([1] * extra), *buf.shape[1:])


def _const_jet(tape: _Tape, value) -> Jet:
    """A jet with zero higher coefficients (e.g. ``torch.zeros_like(y)``, which may be assigned into)."""
    return tape.new(torch.as_tensor(value), zeros=True)


def _linear1(u: Jet, fn: Callable[[torch.Tensor], torch.Tensor], primal=None) -> Jet:
    """``v_k = fn(u_k)`` for k >= 1 (``fn`` linear); ``v_0 = primal`` (default ``fn(u_0)``)."""
    if primal is None:
        primal = fn(u.buf[0])
    v = u.tape.new(primal)
    ub, vb = u.buf, v.buf

    def step(k):
        vb[k].copy_(fn(ub[k]))

    u.tape.steps.append(step)
    return v


def _sd(d: int) -> int:
    """A dim of a coefficient slice as a dim of the whole buffer (leading coefficient axis)."""
    return d + 1 if d >= 0 else d


def _flat_args(args):
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(args)


def _is_basic_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(
        (isinstance(i, int) and not isinstance(i, bool)) or i is None or i is Ellipsis or isinstance(i, slice)
        for i in items
    )


_VIEWS: dict[str, Callable] = {
    "__getitem__": lambda b, a, kw: b[(slice(None),) + (a[0] if isinstance(a[0], tuple) else (a[0],))]
    if _is_basic_index(a[0]) else None,
    "view": lambda b, a, kw: b.view(b.shape[0], *_flat_args(a)) if a and not isinstance(a[0], torch.dtype) else None,
    "reshape": lambda b, a, kw: b.view(b.shape[0], *_flat_args(a)),
    "unsqueeze": lambda b, a, kw: b.unsqueeze(_sd(a[0])),
    "squeeze": lambda b, a, kw: None
    if not a
    else b.squeeze(tuple(_sd(d) for d in a[0]) if isinstance(a[0], (tuple, list)) else _sd(a[0])),
    "transpose": lambda b, a, kw: b.transpose(_sd(a[0]), _sd(a[1])),
    "swapaxes": lambda b, a, kw: b.transpose(_sd(a[0]), _sd(a[1])),
    "swapdims": lambda b, a, kw: b.transpose(_sd(a[0]), _sd(a[1])),
    "permute": lambda b, a, kw: b.permute(0, *[d % (b.ndim - 1) + 1 for d in _flat_args(a)]),
    "expand": lambda b, a, kw: b.expand(b.shape[0], *_flat_args(a)) if len(_flat_args(a)) == b.ndim - 1 else None,
    "select": lambda b, a, kw: b.select(_sd(a[0]), a[1]),
    "narrow": lambda b, a, kw: b.narrow(_sd(a[0]), a[1], a[2]),
    "movedim": lambda b, a, kw: b.movedim(
        tuple(_sd(d) for d in a[0]) if isinstance(a[0], (tuple, list)) else _sd(a[0]),
        tuple(_sd(d) for d in a[1]) if isinstance(a[1], (tuple, list)) else _sd(a[1]),
    ),
}


def _view_node(u: Jet, name: str, args: tuple, kwargs: dict, fn) -> Jet | None:
    """A result whose buffer is a view of ``u``'s buffer (no per-order work), or None if not possible."""
    maker = _VIEWS.get(name)
    if maker is None or kwargs or _has_jet(args):
        return None
    try:
        vbuf = maker(u.buf, args, kwargs)
    except (RuntimeError, IndexError, TypeError, ValueError):
        return None
    if vbuf is None or vbuf.untyped_storage().data_ptr() != u.buf.untyped_storage().data_ptr():
        return None
    if vbuf.shape[0] != u.buf.shape[0] or vbuf.shape[1:] != fn(u.buf[0]).shape:
        return None
    return Jet(u.tape, vbuf)


def _linear_n(jets: Sequence[Jet], fn: Callable[..., torch.Tensor], primal) -> Jet:
    """``v_k = fn(u1_k, u2_k, ...)`` for k >= 1 (``fn`` linear in all its arguments)."""
    v = jets[0].tape.new(primal)
    bufs = [j.buf for j in jets]
    vb = v.buf

    def step(k):
        vb[k].copy_(fn(*[b[k] for b in bufs]))

    jets[0].tape.steps.append(step)
    return v


def _as_scalar(x):
    """A Python number for a number or a constant 0-d tensor, else None."""
    if isinstance(x, bool):
        return None
    if isinstance(x, _Number):
        return x
    if isinstance(x, torch.Tensor) and x.ndim == 0 and not x.is_complex():
        return x.item()
    return None


# =============================================================================================
# arithmetic
# =============================================================================================
def _add(a, b, alpha=1):
    """``a + alpha * b``."""
    ja, jb = isinstance(a, Jet), isinstance(b, Jet)
    if not (ja or jb):
        return torch.add(a, b, alpha=alpha) if alpha != 1 else a + b
    tape = _tape_of(a, b)
    if alpha == 1:
        primal = _primal(a) + _primal(b)
    elif alpha == -1:
        primal = _primal(a) - _primal(b)
    else:
        primal = torch.add(torch.as_tensor(_primal(a)), _primal(b), alpha=alpha)
    v = tape.new(primal)
    vb = v.buf
    if ja and jb:
        ab, bb = a.buf, b.buf
        if alpha == 1 and a.shape == b.shape == v.shape and a.dtype == b.dtype == v.dtype:

            def step(k):
                torch.add(ab[k], bb[k], out=vb[k])
        elif alpha == 1:

            def step(k):
                vb[k].copy_(ab[k] + bb[k])
        else:

            def step(k):
                vb[k].copy_(torch.add(ab[k], bb[k], alpha=alpha))
    elif ja:
        ab = a.buf

        def step(k):
            vb[k].copy_(ab[k])
    else:
        bb = b.buf
        if alpha == 1:

            def step(k):
                vb[k].copy_(bb[k])
        else:

            def step(k):
                vb[k].copy_(bb[k] * alpha)

    tape.steps.append(step)
    return v


def _mul(a, b):
    ja, jb = isinstance(a, Jet), isinstance(b, Jet)
    if not (ja or jb):
        return a * b
    if ja and not jb:
        return _linear1(a, lambda c: c * b)
    if jb and not ja:
        return _linear1(b, lambda c: a * c)
    tape = a.tape
    v = tape.new(a.buf[0] * b.buf[0])
    vb = v.buf
    nd = v.ndim
    ua, wa = _al(a.buf, nd), _al(b.buf, nd)

    if ua.dtype == wa.dtype == vb.dtype:

        def step(k):  # Cauchy product v_k = sum_{j=0}^k u_j w_{k-j}
            torch.sum(ua[: k + 1] * wa[: k + 1].flip(0), 0, out=vb[k])
    else:

        def step(k):
            vb[k].copy_((ua[: k + 1] * wa[: k + 1].flip(0)).sum(0))

    tape.steps.append(step)
    return v


def _div(a, b):
    ja, jb = isinstance(a, Jet), isinstance(b, Jet)
    if not (ja or jb):
        return a / b
    if not jb:
        return _linear1(a, lambda c: c / b)
    tape = b.tape
    w0 = b.buf[0]
    v = tape.new(_primal(a) / w0)
    vb = v.buf
    nd = v.ndim
    wa = _al(b.buf, nd)
    iw0 = 1.0 / w0
    if ja:
        ub = a.buf

        def step(k):  # v_k = (u_k - sum_{j<k} v_j w_{k-j}) / w_0
            vb[k].copy_((ub[k] - (vb[:k] * wa[1 : k + 1].flip(0)).sum(0)) * iw0)
    else:

        def step(k):  # constant numerator: v_k = -sum_{j<k} v_j w_{k-j} / w_0
            vb[k].copy_((vb[:k] * wa[1 : k + 1].flip(0)).sum(0) * (-iw0))

    tape.steps.append(step)
    return v


def _exp(u: Jet, primal=None) -> Jet:
    tape = u.tape
    v = tape.new(torch.exp(u.buf[0]) if primal is None else primal)
    ub, vb = u.buf, v.buf
    nd = v.ndim

    def step(k):  # v_k = sum_{j=1}^k (j/k) u_j v_{k-j}
        torch.sum(tape.jk(k, nd, vb) * ub[1 : k + 1] * vb[:k].flip(0), 0, out=vb[k])

    tape.steps.append(step)
    return v


def _log(u: Jet, shift: float = 0.0, primal=None) -> Jet:
    """``log(u + shift)`` (``shift = 1`` gives ``log1p``)."""
    tape = u.tape
    u0 = u.buf[0]
    if primal is None:
        primal = torch.log(u0) if shift == 0 else torch.log(u0 + shift)
    v = tape.new(primal)
    ub, vb = u.buf, v.buf
    nd = v.ndim
    iu0 = 1.0 / (u0 + shift) if shift else 1.0 / u0

    def step(k):  # v_k = (u_k - sum_{j=1}^{k-1} (j/k) v_j u_{k-j}) / u_0
        if k == 1:
            vb[1].copy_(ub[1] * iu0)
        else:
            s = (tape.jk(k, nd, vb)[: k - 1] * vb[1:k] * ub[1:k].flip(0)).sum(0)
            vb[k].copy_((ub[k] - s) * iu0)

    tape.steps.append(step)
    return v


def _sqrt(u: Jet) -> Jet:
    tape = u.tape
    v = tape.new(torch.sqrt(u.buf[0]))
    ub, vb = u.buf, v.buf
    i2v0 = 0.5 / vb[0]

    def step(k):  # v_k = (u_k - sum_{j=1}^{k-1} v_j v_{k-j}) / (2 v_0)
        if k == 1:
            vb[1].copy_(ub[1] * i2v0)
        else:
            vb[k].copy_((ub[k] - (vb[1:k] * vb[1:k].flip(0)).sum(0)) * i2v0)

    tape.steps.append(step)
    return v


def _pow_rec(u: Jet, a) -> Jet:
    """``u ** a`` for a constant ``a`` (number or tensor) by ``u v' = a u' v`` (needs ``u_0 != 0``)."""
    tape = u.tape
    u0 = u.buf[0]
    v = tape.new(torch.pow(u0, a))
    ub, vb = u.buf, v.buf
    nd = v.ndim
    ua = _al(ub, nd)
    iu0 = 1.0 / u0
    if isinstance(a, _Number):
        a = float(a)

        def step(k):  # v_k = (1/u_0) sum_{j=1}^k ((a+1) j/k - 1) u_j v_{k-j}
            torch.sum(tape.powk(a, k, nd, vb) * ua[1 : k + 1] * vb[:k].flip(0), 0, out=vb[k]).mul_(iu0)
    else:
        a1 = (torch.as_tensor(a, dtype=vb.dtype, device=vb.device) + 1.0).unsqueeze(0)

        def step(k):
            w = a1 * tape.jk(k, nd, vb) - 1.0
            vb[k].copy_((w * ua[1 : k + 1] * vb[:k].flip(0)).sum(0) * iu0)

    tape.steps.append(step)
    return v


def _pow(a, b):
    ja, jb = isinstance(a, Jet), isinstance(b, Jet)
    if not (ja or jb):
        return a**b
    if ja and not jb:
        e = _as_scalar(b)
        if e is None:  # elementwise tensor exponent
            return _pow_rec(a, b)
        if float(e).is_integer():
            n = int(e)
            if n == 0:
                return torch.ones_like(torch.pow(a.buf[0], b))
            if n == 1:
                return _linear1(a, lambda c: c, primal=torch.pow(a.buf[0], b))
            if n > 1:  # binary exponentiation with Cauchy products (exact also at u_0 = 0)
                result, base = None, a
                while n:
                    if n & 1:
                        result = base if result is None else _mul(result, base)
                    n >>= 1
                    if n:
                        base = _mul(base, base)
                return result
            if n == -1:
                return _div(torch.ones((), dtype=a.dtype, device=a.device), a)
            return _pow_rec(a, float(n))
        if e == 0.5:
            return _sqrt(a)
        return _pow_rec(a, float(e))
    if not ja:  # constant base: a^w = exp(w log a)
        la = math.log(a) if isinstance(a, _Number) else torch.log(torch.as_tensor(a))
        return _exp(_mul(b, la), primal=torch.pow(a, b.buf[0]))
    return _exp(_mul(b, _log(a)), primal=torch.pow(a.buf[0], b.buf[0]))


def _pair(u: Jet, kind: str) -> tuple[Jet, Jet]:
    """Coupled ``(sin u, cos u)`` (kind "trig") or ``(sinh u, cosh u)`` (kind "hyp"), cached per ``u``."""
    key = (kind, id(u.buf))
    hit = u.tape.pairs.get(key)
    if hit is not None:
        return hit[1], hit[2]
    tape = u.tape
    u0 = u.buf[0]
    if kind == "trig":
        s, c = tape.new(torch.sin(u0)), tape.new(torch.cos(u0))
        sign = -1.0
    else:
        s, c = tape.new(torch.sinh(u0)), tape.new(torch.cosh(u0))
        sign = 1.0
    ub, sb, cb = u.buf, s.buf, c.buf
    nd = s.ndim

    def step(k):  # s_k = sum (j/k) u_j c_{k-j};  c_k = -+ sum (j/k) u_j s_{k-j}
        du = tape.jk(k, nd, sb) * ub[1 : k + 1]
        torch.sum(du * cb[:k].flip(0), 0, out=sb[k])
        torch.sum(du * sb[:k].flip(0), 0, out=cb[k])
        if sign < 0:
            cb[k].neg_()

    tape.steps.append(step)
    tape.pairs[key] = (u.buf, s, c)
    return s, c


def _chain(pairs: Sequence[tuple[Jet, Any]], primal: torch.Tensor) -> Jet:
    """``v' = sum_i g_i u_i'``: ``v_k = sum_i sum_{j=1}^k (j/k) u_{i,j} g_{i,k-j}`` (``g_i`` jets or constants)."""
    tape = pairs[0][0].tape
    v = tape.new(primal)
    vb = v.buf
    nd = v.ndim
    terms = []
    for u, g in pairs:
        if isinstance(g, Jet):
            terms.append((True, _al(u.buf, nd), _al(g.buf, nd)))
        else:
            terms.append((False, u.buf, g))

    def step(k):
        acc = None
        for is_jet, ua, g in terms:
            if is_jet:
                t = (tape.jk(k, nd, vb) * ua[1 : k + 1] * g[:k].flip(0)).sum(0)
            else:
                t = ua[k] * g
            acc = t if acc is None else acc + t
        vb[k].copy_(acc)

    tape.steps.append(step)
    return v


def _abs(u: Jet) -> Jet:
    sgn = torch.sign(u.buf[0])
    return _linear1(u, lambda c: c * sgn, primal=torch.abs(u.buf[0]))


def _where(cond, a, b):
    """``torch.where`` with a constant condition; constant branches contribute only to ``v_0``."""
    if isinstance(cond, Jet):
        raise TaylorSolveError("torch.where with a Jet condition is not supported by the taylor_mode backend")
    ja, jb = isinstance(a, Jet), isinstance(b, Jet)
    if not (ja or jb):
        return torch.where(cond, a, b)
    primal = torch.where(cond, _primal(a), _primal(b))
    if ja and jb:
        return _linear_n([a, b], lambda x, y: torch.where(cond, x, y), primal)
    if ja:
        zb = torch.zeros_like(b) if isinstance(b, torch.Tensor) else 0.0
        return _linear1(a, lambda x: torch.where(cond, x, zb), primal=primal)
    za = torch.zeros_like(a) if isinstance(a, torch.Tensor) else 0.0
    return _linear1(b, lambda y: torch.where(cond, za, y), primal=primal)


def _bilinear(func, a, b, *rest, **kwargs):
    """A function bilinear in ``(a, b)``: linear if one is constant, else ``v_k = sum_j F(a_j, b_{k-j})``."""
    ja, jb = isinstance(a, Jet), isinstance(b, Jet)
    if not (ja or jb):
        return func(a, b, *rest, **kwargs)
    if ja and not jb:
        return _linear1(a, lambda c: func(c, b, *rest, **kwargs))
    if jb and not ja:
        return _linear1(b, lambda c: func(a, c, *rest, **kwargs))
    tape = a.tape
    ab, bb = a.buf, b.buf
    v = tape.new(func(ab[0], bb[0], *rest, **kwargs))
    vb = v.buf

    def step(k):
        acc = func(ab[0], bb[k], *rest, **kwargs)
        for j in range(1, k + 1):
            acc = acc + func(ab[j], bb[k - j], *rest, **kwargs)
        vb[k].copy_(acc)

    tape.steps.append(step)
    return v


def _amax_like(u: Jet, dim, keepdim: bool, largest: bool) -> Jet:
    """``amax``/``amin`` values: the mean of ``u_k`` over the primal's arg-max set (linear)."""
    u0 = u.buf[0]
    m = torch.amax(u0, dim=dim, keepdim=True) if largest else torch.amin(u0, dim=dim, keepdim=True)
    mask = (u0 == m).to(u.dtype)
    cnt = mask.sum(dim=dim, keepdim=True)
    w = mask / cnt

    def fn(c):
        return (c * w).sum(dim=dim, keepdim=keepdim)

    primal = torch.amax(u0, dim=dim, keepdim=keepdim) if largest else torch.amin(u0, dim=dim, keepdim=keepdim)
    return _linear1(u, fn, primal=primal)


def _sum(u, dim=None, keepdim=False):
    if dim is None:
        return _linear1(u, lambda c: c.sum()) if not keepdim else _linear1(u, lambda c: c.sum(tuple(range(c.ndim)), keepdim=True))
    return _linear1(u, lambda c: c.sum(dim, keepdim=keepdim))


def _mean(u, dim=None, keepdim=False):
    if dim is None:
        return _linear1(u, lambda c: c.mean()) if not keepdim else _linear1(u, lambda c: c.mean(tuple(range(c.ndim)), keepdim=True))
    return _linear1(u, lambda c: c.mean(dim, keepdim=keepdim))


def _logsumexp(u: Jet, dim, keepdim: bool = False) -> Jet:
    m = torch.amax(u.buf[0], dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = _add(_log(_sum(_exp(_add(u, m, -1)), dim, keepdim=True)), m)
    if not keepdim:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        nd = u.ndim
        dims = sorted((d % nd for d in dims), reverse=True) if nd else []
        for d in dims:
            s = _linear1(s, lambda c, d=d: c.squeeze(d))
    return s


def _softmax(u: Jet, dim) -> Jet:
    m = torch.amax(u.buf[0], dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = _exp(_add(u, m, -1))
    return _div(e, _sum(e, dim, keepdim=True))


def _norm2(u: Jet, dim=None, keepdim=False) -> Jet:
    return _sqrt(_sum(_mul(u, u), dim, keepdim))


# =============================================================================================
# handlers: name -> handler(func, args, kwargs)
# =============================================================================================
_HANDLERS: dict[str, Callable[[Any, tuple, dict], Any]] = {}


def _reg(*names: str):
    def deco(h):
        for n in names:
            _HANDLERS[n] = h
        return h

    return deco


def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _first_jet(func, args) -> Jet:
    if not args or not isinstance(args[0], Jet):
        raise _unsupported(func)
    return args[0]


def _no_jets(func, *things):
    if _has_jet(things):
        raise TaylorSolveError(
            f"{resolve_name(func) or getattr(func, '__name__', func)} with a Jet in this argument position "
            "is not supported by the taylor_mode backend"
        )


# --- linear in the first argument, everything else constant -----------------------------------
_LINEAR_NAMES = (
    "clone contiguous reshape view flatten unflatten ravel squeeze unsqueeze "
    "transpose swapaxes swapdims t permute movedim moveaxis expand broadcast_to flip fliplr flipud roll "
    "rot90 narrow select index_select gather take_along_dim take diagonal diag diag_embed tril triu "
    "cumsum trace repeat tile repeat_interleave real to type double float half bfloat16 "
    "cpu cuda nansum view_as reshape_as expand_as type_as narrow_copy select_scatter "
    "unfold avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
    "interpolate upsample pixel_shuffle pixel_unshuffle channel_shuffle diff"
).split()


def _h_linear(func, args, kwargs):
    u = _first_jet(func, args)
    name = func.__name__
    rest = list(args[1:])
    if name in ("view_as", "reshape_as", "expand_as", "type_as"):
        rest = [_primal(r) for r in rest]
    if name == "diff":
        for key in ("prepend", "append"):
            if isinstance(kwargs.get(key), Jet):
                raise _unsupported(func)
        if kwargs.get("prepend") is not None or kwargs.get("append") is not None or len(rest) > 2:
            raise TaylorSolveError("torch.diff with prepend/append is not supported by the taylor_mode backend")
    _no_jets(func, rest, kwargs)
    fn = lambda c: func(c, *rest, **kwargs)  # noqa: E731
    if name in _VIEWS:
        v = _view_node(u, name, tuple(rest), kwargs, fn)
        if v is not None:
            return v
    return _linear1(u, fn)


for _n in _LINEAR_NAMES:
    _HANDLERS[_n] = _h_linear


@_reg("sum")
def _h_sum(func, args, kwargs):
    u = _first_jet(func, args)
    _no_jets(func, args[1:], kwargs)
    rest = args[1:]
    return _linear1(u, lambda c: func(c, *rest, **kwargs))


_HANDLERS["mean"] = _h_sum


_SPLIT_ARG = {"chunk": "chunks", "split": "split_size_or_sections", "tensor_split": "indices_or_sections"}


@_reg("unbind", "chunk", "split", "tensor_split", "hsplit", "vsplit", "dsplit", "split_with_sizes")
def _h_multi(func, args, kwargs):
    u = _first_jet(func, args)
    rest = args[1:]
    _no_jets(func, rest, kwargs)
    primals = func(u.buf[0], *rest, **kwargs)
    name = func.__name__
    if name in ("unbind", "chunk", "split", "tensor_split"):  # outputs as views of u's buffer
        try:
            if name == "unbind":
                views = u.buf.unbind(_sd(_arg(rest, kwargs, 0, "dim", 0)))
            else:
                views = func(u.buf, rest[0] if rest else kwargs[_SPLIT_ARG[name]], _sd(_arg(rest, kwargs, 1, "dim", 0)))
            if len(views) == len(primals) and all(v.shape[1:] == p.shape for v, p in zip(views, primals)):
                return tuple(Jet(u.tape, v) for v in views)
        except (RuntimeError, KeyError, TypeError, IndexError):
            pass
    return tuple(
        _linear1(u, (lambda c, i=i: func(c, *rest, **kwargs)[i]), primal=p) for i, p in enumerate(primals)
    )


@_reg("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack", "row_stack")
def _h_cat(func, args, kwargs):
    seq = list(_arg(args, kwargs, 0, "tensors"))
    rest = args[1:]
    kw = {k: v for k, v in kwargs.items() if k != "tensors"}
    _no_jets(func, rest, kw)
    primal = func([_primal(x) for x in seq], *rest, **kw)
    jets = [x for x in seq if isinstance(x, Jet)]
    if not jets:
        return primal
    slots = []  # for k >= 1 constants contribute zeros
    for x in seq:
        slots.append(None if isinstance(x, Jet) else torch.zeros_like(torch.as_tensor(x, dtype=primal.dtype)))

    def fn(*cs):
        it = iter(cs)
        return func([next(it) if z is None else z for z in slots], *rest, **kw)

    return _linear_n(jets, fn, primal)


@_reg("where")
def _h_where(func, args, kwargs):
    cond = _arg(args, kwargs, 0, "condition")
    if len(args) + len(kwargs) < 3:
        raise _unsupported("torch.where with one argument")
    a = _arg(args, kwargs, 1, "input")
    b = _arg(args, kwargs, 2, "other")
    return _where(cond, a, b)


# --- arithmetic --------------------------------------------------------------------------------
@_reg("add", "__add__", "__iadd__")
def _h_add(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "other")
    return _add(a, b, kwargs.get("alpha", 1))


@_reg("sub", "subtract", "__sub__", "__isub__")
def _h_sub(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "other")
    return _add(a, b, -kwargs.get("alpha", 1))


@_reg("rsub")
def _h_rsub(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "other")
    return _add(b, a, -kwargs.get("alpha", 1))


@_reg("mul", "multiply", "__mul__", "__rmul__", "__imul__")
def _h_mul(func, args, kwargs):
    return _mul(args[0], _arg(args, kwargs, 1, "other"))


@_reg("div", "divide", "true_divide", "__truediv__", "__div__", "__itruediv__")
def _h_div(func, args, kwargs):
    if kwargs.get("rounding_mode") is not None:
        raise TaylorSolveError("torch.div with rounding_mode is not supported by the taylor_mode backend")
    return _div(args[0], _arg(args, kwargs, 1, "other"))


@_reg("pow", "__pow__", "float_power")
def _h_pow(func, args, kwargs):
    a = _arg(args, kwargs, 0, "input", None)
    if a is None:
        a = kwargs.get("self")
    b = _arg(args, kwargs, 1, "exponent")
    return _pow(a, b)


@_reg("matmul", "__matmul__", "mm", "bmm", "mv", "dot", "inner", "outer", "ger", "vdot", "kron", "cross")
def _h_matmul(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "other")
    if b is None:
        b = _arg(args, kwargs, 1, "vec") if func.__name__ == "mv" else _arg(args, kwargs, 1, "mat2")
    rest = args[2:]
    kw = {k: v for k, v in kwargs.items() if k not in ("other", "vec", "mat2", "input")}
    _no_jets(func, rest, kw)
    return _bilinear(func, a, b, *rest, **kw)


@_reg("einsum")
def _h_einsum(func, args, kwargs):
    eq = args[0]
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    jets = [i for i, o in enumerate(ops) if isinstance(o, Jet)]
    if len(jets) == 1:
        i0 = jets[0]
        consts = list(ops)

        def fn(c):
            consts[i0] = c
            return torch.einsum(eq, *consts)

        consts_p = [_primal(o) for o in ops]
        return _linear1(ops[i0], fn, primal=torch.einsum(eq, *consts_p))
    if len(jets) == 2:
        i0, i1 = jets
        others = list(ops)

        def f2(x, y):
            ops2 = list(others)
            ops2[i0], ops2[i1] = x, y
            return torch.einsum(eq, *ops2)

        return _bilinear(f2, ops[i0], ops[i1])
    raise TaylorSolveError("torch.einsum with more than two Jet operands is not supported by the taylor_mode backend")


@_reg("tensordot")
def _h_tensordot(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "b")
    dims = _arg(args, kwargs, 2, "dims", 2)
    return _bilinear(torch.tensordot, a, b, dims)


@_reg("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _h_affine_bias(func, args, kwargs):
    """``F.linear`` / ``F.conv*``: linear in the input plus a constant bias (only in ``v_0``)."""
    u = _first_jet(func, args)
    weight = _arg(args, kwargs, 1, "weight")
    bias = _arg(args, kwargs, 2, "bias")
    rest = args[3:]
    kw = {k: v for k, v in kwargs.items() if k not in ("weight", "bias", "input")}
    _no_jets(func, weight, bias, rest, kw)
    primal = func(u.buf[0], weight, bias, *rest, **kw)
    return _linear1(u, lambda c: func(c, weight, None, *rest, **kw), primal=primal)


@_reg("pad")
def _h_pad(func, args, kwargs):
    u = _first_jet(func, args)
    pad = _arg(args, kwargs, 1, "pad")
    mode = _arg(args, kwargs, 2, "mode", "constant")
    value = _arg(args, kwargs, 3, "value", None)
    primal = func(u.buf[0], pad, mode, value)
    return _linear1(u, lambda c: func(c, pad, mode, None), primal=primal)


# --- elementwise nonlinear: built from the operations table (see _jet_elementwise below) ----
def _clamp(u: Jet, lo, hi) -> Jet:
    if _has_jet((lo, hi)):
        out = u
        if lo is not None:
            out = _maximum(out, lo)
        if hi is not None:
            out = _minimum(out, hi)
        return out
    u0 = u.buf[0]
    primal = torch.clamp(u0, lo, hi)
    mask = torch.ones_like(u0, dtype=torch.bool)
    if lo is not None:
        mask = mask & (u0 > lo)
    if hi is not None:
        mask = mask & (u0 < hi)
    return _linear1(u, lambda c: torch.where(mask, c, torch.zeros((), dtype=c.dtype, device=c.device)), primal=primal)


@_reg("clamp", "clip")
def _h_clamp(func, args, kwargs):
    u = _first_jet(func, args)
    return _clamp(u, _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max"))


@_reg("clamp_min")
def _h_clamp_min(func, args, kwargs):
    return _clamp(_first_jet(func, args), _arg(args, kwargs, 1, "min"), None)


@_reg("clamp_max")
def _h_clamp_max(func, args, kwargs):
    return _clamp(_first_jet(func, args), None, _arg(args, kwargs, 1, "max"))


def _maximum(a, b):
    mask = torch.as_tensor(_primal(a) >= _primal(b))
    return _where(mask, a, b)


def _minimum(a, b):
    mask = torch.as_tensor(_primal(a) <= _primal(b))
    return _where(mask, a, b)


@_reg("maximum", "fmax")
def _h_maximum(func, args, kwargs):
    return _maximum(args[0], _arg(args, kwargs, 1, "other"))


@_reg("minimum", "fmin")
def _h_minimum(func, args, kwargs):
    return _minimum(args[0], _arg(args, kwargs, 1, "other"))


def _reduce_minmax(func, args, kwargs, largest: bool):
    u = args[0]
    other = _arg(args, kwargs, 1, "dim", kwargs.get("other"))
    if isinstance(other, (Jet, torch.Tensor)):  # elementwise max(input, other)
        return (_maximum if largest else _minimum)(u, other)
    u = _first_jet(func, args)
    dim = other
    keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
    if dim is None:
        return _amax_like(u, None, False, largest) if u.ndim else _linear1(u, lambda c: c)
    values = _amax_like(u, dim, keepdim, largest)
    indices = (torch.argmax if largest else torch.argmin)(u.buf[0], dim=dim, keepdim=keepdim)
    rt = torch.return_types.max if largest else torch.return_types.min
    return rt((values, indices))


@_reg("max")
def _h_max(func, args, kwargs):
    return _reduce_minmax(func, args, kwargs, True)


@_reg("min")
def _h_min(func, args, kwargs):
    return _reduce_minmax(func, args, kwargs, False)


@_reg("amax")
def _h_amax(func, args, kwargs):
    u = _first_jet(func, args)
    dim = _arg(args, kwargs, 1, "dim", ())
    dim = None if dim == () or dim == [] else dim
    return _amax_like(u, dim, bool(_arg(args, kwargs, 2, "keepdim", False)), True)


@_reg("amin")
def _h_amin(func, args, kwargs):
    u = _first_jet(func, args)
    dim = _arg(args, kwargs, 1, "dim", ())
    dim = None if dim == () or dim == [] else dim
    return _amax_like(u, dim, bool(_arg(args, kwargs, 2, "keepdim", False)), False)


@_reg("atan2", "arctan2")
def _h_atan2(func, args, kwargs):
    y, x = args[0], _arg(args, kwargs, 1, "other")
    primal = torch.atan2(torch.as_tensor(_primal(y)), torch.as_tensor(_primal(x)))
    if not _has_jet((y, x)):
        return primal
    r2 = _add(_mul(x, x), _mul(y, y))
    pairs = []
    if isinstance(y, Jet):
        pairs.append((y, _div(x, r2)))
    if isinstance(x, Jet):
        pairs.append((x, _linear1(_div(y, r2), torch.neg)))
    return _chain(pairs, primal)


@_reg("hypot")
def _h_hypot(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "other")
    return _sqrt(_add(_mul(a, a), _mul(b, b)))


@_reg("logaddexp")
def _h_logaddexp(func, args, kwargs):
    a, b = args[0], _arg(args, kwargs, 1, "other")
    m = torch.maximum(torch.as_tensor(_primal(a)), torch.as_tensor(_primal(b)))
    ea = _exp(_add(a, m, -1)) if isinstance(a, Jet) else torch.exp(a - m)
    eb = _exp(_add(b, m, -1)) if isinstance(b, Jet) else torch.exp(b - m)
    return _add(_log(_add(ea, eb)), m)


# --- reductions and normalizations --------------------------------------------------------------
def _softmax_dim(func, args, kwargs):
    u = _first_jet(func, args)
    dim = _arg(args, kwargs, 1, "dim")
    if dim is None:
        raise TaylorSolveError("softmax without dim is not supported by the taylor_mode backend; pass dim")
    if kwargs.get("dtype") is not None:
        u = _linear1(u, lambda c: c.to(kwargs["dtype"]))
    return u, dim


@_reg("softmax", "special_softmax")
def _h_softmax(func, args, kwargs):
    u, dim = _softmax_dim(func, args, kwargs)
    return _softmax(u, dim)


@_reg("log_softmax", "special_log_softmax")
def _h_log_softmax(func, args, kwargs):
    u, dim = _softmax_dim(func, args, kwargs)
    return _add(u, _logsumexp(u, dim, keepdim=True), -1)


@_reg("logsumexp", "special_logsumexp")
def _h_logsumexp(func, args, kwargs):
    u = _first_jet(func, args)
    dim = _arg(args, kwargs, 1, "dim")
    return _logsumexp(u, dim, bool(_arg(args, kwargs, 2, "keepdim", False)))


def _pnorm(u: Jet, p, dim, keepdim: bool) -> Jet:
    if isinstance(dim, list):
        dim = tuple(dim)
    if p is None or p == 2 or p == "fro":
        return _norm2(u, dim, keepdim)
    if p == 1:
        return _sum(_abs(u), dim, keepdim)
    if p == float("inf"):
        return _amax_like(_abs(u), dim, keepdim, True)
    raise TaylorSolveError(f"norms of order {p!r} are not supported by the taylor_mode backend (use 1, 2 or inf)")


@_reg("norm")
def _h_norm(func, args, kwargs):
    u = _first_jet(func, args)
    p = _arg(args, kwargs, 1, "p", "fro")
    dim = _arg(args, kwargs, 2, "dim")
    keepdim = bool(_arg(args, kwargs, 3, "keepdim", False))
    return _pnorm(u, p, dim, keepdim)


@_reg("linalg_vector_norm")
def _h_vector_norm(func, args, kwargs):
    u = _first_jet(func, args)
    return _pnorm(u, _arg(args, kwargs, 1, "ord", 2), _arg(args, kwargs, 2, "dim"), bool(_arg(args, kwargs, 3, "keepdim", False)))


@_reg("linalg_norm")
def _h_linalg_norm(func, args, kwargs):
    u = _first_jet(func, args)
    ord_ = _arg(args, kwargs, 1, "ord")
    dim = _arg(args, kwargs, 2, "dim")
    keepdim = bool(_arg(args, kwargs, 3, "keepdim", False))
    is_matrix = (dim is None and u.ndim == 2) or (isinstance(dim, (tuple, list)) and len(dim) == 2)
    if is_matrix and ord_ not in (None, "fro"):
        raise TaylorSolveError(f"matrix norms of order {ord_!r} are not supported by the taylor_mode backend")
    return _pnorm(u, 2 if ord_ is None else ord_, dim, keepdim)


@_reg("var", "std")
def _h_var(func, args, kwargs):
    u = _first_jet(func, args)
    dim = _arg(args, kwargs, 1, "dim")
    if isinstance(dim, bool):  # legacy var(input, unbiased)
        kwargs = {**kwargs, "unbiased": dim}
        dim = None
    keepdim = bool(kwargs.get("keepdim", _arg(args, {}, 3, "keepdim", False)))
    correction = kwargs.get("correction")
    if correction is None:
        unbiased = kwargs.get("unbiased", _arg(args, {}, 2, "unbiased", True))
        correction = 1 if unbiased else 0
    dims = tuple(range(u.ndim)) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
    n = 1
    for d in dims:
        n *= u.shape[d]
    xc = _add(u, _mean(u, dims, keepdim=True), -1)
    var = _mul(_sum(_mul(xc, xc), dims, keepdim), 1.0 / max(n - correction, 0))
    return _sqrt(var) if func.__name__ == "std" else var


@_reg("layer_norm")
def _h_layer_norm(func, args, kwargs):
    u = _first_jet(func, args)
    shape = _arg(args, kwargs, 1, "normalized_shape")
    weight, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = float(_arg(args, kwargs, 4, "eps", 1e-5))
    dims = tuple(range(-len(tuple(shape)), 0))
    xc = _add(u, _mean(u, dims, keepdim=True), -1)
    var = _mean(_mul(xc, xc), dims, keepdim=True)
    out = _mul(xc, _pow_rec(_add(var, eps), -0.5))
    if weight is not None:
        out = _mul(out, weight)
    if bias is not None:
        out = _add(out, bias)
    return out


@_reg("group_norm")
def _h_group_norm(func, args, kwargs):
    u = _first_jet(func, args)
    groups = int(_arg(args, kwargs, 1, "num_groups"))
    weight, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = float(_arg(args, kwargs, 4, "eps", 1e-5))
    shape = tuple(u.shape)
    x = _linear1(u, lambda c: c.reshape(shape[0], groups, -1))
    xc = _add(x, _mean(x, -1, keepdim=True), -1)
    var = _mean(_mul(xc, xc), -1, keepdim=True)
    out = _linear1(_mul(xc, _pow_rec(_add(var, eps), -0.5)), lambda c: c.reshape(shape))
    bshape = (shape[1],) + (1,) * (len(shape) - 2)
    if weight is not None:
        out = _mul(out, weight.reshape(bshape))
    if bias is not None:
        out = _add(out, bias.reshape(bshape))
    return out


@_reg("normalize")
def _h_normalize(func, args, kwargs):
    u = _first_jet(func, args)
    p = _arg(args, kwargs, 1, "p", 2.0)
    dim = _arg(args, kwargs, 2, "dim", 1)
    eps = float(_arg(args, kwargs, 3, "eps", 1e-12))
    n = _pnorm(u, p, dim, True)
    return _div(u, _clamp(n, eps, None))


# --- piecewise constant / metadata: act on the primal -----------------------------------------
_PRIMAL_NAMES = (
    "signbit argmax argmin argsort isnan isinf isfinite isreal "
    "isclose allclose equal eq ne lt le gt ge logical_and logical_or logical_not logical_xor "
    "heaviside count_nonzero nonzero all any is_nonzero searchsorted bucketize"
).split()


def _h_primal(func, args, kwargs):
    def sub(x):
        if isinstance(x, Jet):
            return x.buf[0]
        if isinstance(x, (list, tuple)):
            return type(x)(sub(e) for e in x)
        return x

    return func(*sub(list(args)), **{k: sub(v) for k, v in kwargs.items()})


for _n in _PRIMAL_NAMES:
    _HANDLERS[_n] = _h_primal


@_reg("zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like", "new_zeros",
      "new_ones", "new_full", "new_empty", "new_tensor")
def _h_like(func, args, kwargs):
    """Constant jets (zero higher coefficients), so that ``out = torch.zeros_like(y); out[0] = ...`` works."""
    u = _first_jet(func, args)
    value = func(u.buf[0], *args[1:], **kwargs)
    return _const_jet(u.tape, value)


@_reg("__setitem__")
def _h_setitem(func, args, kwargs):
    target = args[0]
    if isinstance(target, Jet):
        _setitem(target, args[1], args[2])
        return None
    raise TaylorSolveError(
        "assigning a Jet into a plain tensor (out[i] = ...) is not supported by the taylor_mode backend; "
        "start from torch.zeros_like(y) (a Jet) or build the result with torch.stack/torch.cat"
    )


@_reg("__getitem__")
def _h_getitem(func, args, kwargs):
    return _getitem(_first_jet(func, args), args[1])


# --- elementwise functions of the operations table ------------------------------------------------
class _JetPrimitives:
    """The primitives the table's Taylor-series constructions are written with (``P`` in :mod:`taylorsolve._ops`)."""

    @staticmethod
    def op(name: str, x):
        if isinstance(x, Jet):
            return Jet._table[name](_NAMED[name], (x,), {})
        return lookup(name).torch(torch.as_tensor(x))

    @staticmethod
    def pow(u, c):
        return _pow(u, c)

    @staticmethod
    def where(cond, a, b):
        return _where(cond, a, b)

    @staticmethod
    def gt(a, b):
        return torch.as_tensor(_primal(a) > _primal(b))

    @staticmethod
    def lt(a, b):
        return torch.as_tensor(_primal(a) < _primal(b))


_P = _JetPrimitives()
_NAMED: dict[str, Any] = {}
_RECS = {
    "exp": lambda u: _exp(u),
    "log": lambda u: _log(u),
    "sqrt": lambda u: _sqrt(u),
    "sin": lambda u: _pair(u, "trig")[0],
    "cos": lambda u: _pair(u, "trig")[1],
    "sinh": lambda u: _pair(u, "hyp")[0],
    "cosh": lambda u: _pair(u, "hyp")[1],
    "abs": lambda u: _abs(u),
    "neg": lambda u: _linear1(u, torch.neg),
}


def _chain_self(u: Jet, primal: torch.Tensor, deriv: Callable[[Jet], Any]) -> Jet:
    """``v' = g u'`` with ``g = deriv(v)`` built *after* ``v`` (``g`` may use ``v``; ``v_k`` needs ``g_0..g_{k-1}``)."""
    tape = u.tape
    v = tape.new(primal)
    slot = len(tape.steps)
    tape.steps.append(None)  # v's step runs before g's steps in every sweep
    g = deriv(v)
    ub, vb = u.buf, v.buf
    nd = v.ndim
    if isinstance(g, Jet):
        ga = _al(g.buf, nd)
        ua = _al(ub, nd)

        def step(k):  # v_k = sum_{j=1}^k (j/k) u_j g_{k-j}
            torch.sum(tape.jk(k, nd, vb) * ua[1 : k + 1] * ga[:k].flip(0), 0, out=vb[k])
    else:
        gc = torch.as_tensor(g, dtype=vb.dtype, device=vb.device)

        def step(k):  # constant g: v_k = u_k g
            vb[k].copy_(ub[k] * gc)

    tape.steps[slot] = step
    return v


def _jet_unary(op, u: Jet, params: list):
    """An elementwise table entry applied to a jet (see :mod:`taylorsolve._ops`)."""
    u0 = u.buf[0]
    if op.kind == "primal":
        return op.torch(u0)
    if op.rec is not None:
        return _RECS[op.rec](u)
    if op.chain is not None:
        return _chain_self(u, op.torch(u0), lambda v: op.chain(_P, u, v))
    v = op.compose(_P, u, *params)
    if op.scalar is not None and isinstance(v, Jet) and v is not u:
        v.buf[0] = op.torch(u0)  # the function's own primal (e.g. log1p, expm1 near 0)
    return v


def _jet_elementwise(op):
    def handler(func, args, kwargs):
        u = _first_jet(func, args)
        params = op.parse_params(tuple(args[1:]), kwargs)
        return _jet_unary(op, u, params)

    return handler


def _canonical_impls() -> dict[str, Callable]:
    impls: dict[str, Callable] = {}
    for name, h in _HANDLERS.items():
        op = lookup(name)
        if op is None:
            raise RuntimeError(f"taylor_mode registers {name!r}, which is not in the operations table")
        prev = impls.get(op.name)
        if prev is not None and prev is not h and name == op.name:
            impls[op.name] = h
        else:
            impls.setdefault(op.name, h)
    return impls


def _rebuild() -> None:
    _NAMED.clear()
    _NAMED.update({op.name: op.torch for op in OPS if op.elementwise})
    Jet._table = dispatch_table("taylor_mode", _canonical_impls(), _jet_elementwise)


_rebuild()
on_change(_rebuild)


def supported_operations() -> list[str]:
    """Names of the torch functions / ``Tensor`` methods the taylor_mode backend handles (from the table)."""
    return supported_by("taylor_mode")


# =============================================================================================
# the backend
# =============================================================================================
class _TimeJet(Jet):
    """The jet of ``t``: records whether ``f`` reads it (autonomous right-hand sides do not)."""

    __slots__ = ("_b", "read")

    def __init__(self, tape: _Tape, buf: torch.Tensor) -> None:
        self.tape = tape
        self._b = buf
        self.read = False

    @property
    def buf(self) -> torch.Tensor:  # type: ignore[override]
        self.read = True
        return self._b

    @buf.setter
    def buf(self, value: torch.Tensor) -> None:
        self._b = value


def jet_coefficients(
    f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, info: dict | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run the Taylor-mode ODE recursion; return ``([c_0..c_order], f(t, y))`` without counting evaluations.

    ``c_{k+1} = [f(t, y(t))]_k / (k+1)``: coefficient ``k`` of ``f`` along the solution depends only on
    ``c_0..c_k`` (see the module docstring), so one sweep over the recorded graph per order suffices.
    ``info``, if given, receives ``{"read_time": bool}`` (whether ``f`` used ``t``).
    """
    order = validate_order(order)
    if not isinstance(y, torch.Tensor):
        raise TaylorSolveError(f"the state y must be a torch.Tensor, got {type(y).__name__}")
    if not torch.is_floating_point(y):
        raise TaylorSolveError(f"the taylor_mode backend needs a floating-point state, got dtype {y.dtype}")
    t = torch.as_tensor(t)
    if t.numel() != 1:
        raise TaylorSolveError(f"t must be a scalar (0-d tensor), got shape {tuple(t.shape)}")
    n = order + 1
    with torch.no_grad():
        t = t.reshape(()).to(dtype=y.dtype, device=y.device)
        tape = _Tape(n)
        state = tape.new(y.detach())
        ybuf = state.buf
        tbuf = torch.zeros((n, *t.shape), dtype=t.dtype, device=t.device)
        tbuf[0] = t
        if n > 1:
            tbuf[1] = 1.0
        time = _TimeJet(tape, tbuf)
        out = f(time, Jet(tape, ybuf))
        if info is not None:
            info["read_time"] = time.read
        if isinstance(out, Jet):
            check_rhs_output(out.buf[0], y)
            obuf = out.buf
        else:
            check_rhs_output(out, y)
            obuf = None
        for k in range(order):
            if k > 0:
                tape.sweep(k)
            if obuf is not None:
                torch.div(obuf[k], k + 1, out=ybuf[k + 1])
            elif k == 0:
                ybuf[1].copy_(out)
            else:
                ybuf[k + 1].zero_()
        f0 = obuf[0] if obuf is not None else out
        return list(ybuf.unbind(0)), f0


class TaylorModeBackend(CoefficientBackend):
    """Taylor coefficients by Taylor-mode arithmetic: trace ``f`` on jets, then O(p^2) recurrences.

    The p-th TTM step (GENIE paper, eq. (8)) needs ``c_k = y^(k)(t0)/k!`` for ``k <= p``.  This
    backend records ``f`` as a graph of elementary operations on truncated power series and runs the
    Taylor-series ODE recursion ``c_{k+1} = f_k / (k+1)`` of Jorba & Zou (2005) / heyoka, sweeping the
    graph once per order with the recurrences listed in the module docstring.  Work per call is
    O(p^2) per graph node (vs ~3^p-4^p for nested JVPs, measured), so high orders (15-25, as in adaptive
    high-accuracy solves) stay cheap.

    Two paths compute the same numbers (to round-off, tested):

    * **interpreted** (the reference): ``f`` is traced on :class:`Jet` objects anew at every call
      (data-dependent branches on the primal are allowed, any tensor size, any device);
    * **compiled** (:mod:`taylorsolve.coefficients.compiled`): ``f`` is traced once per solve into a
      scalar tape, turned into straight-line numba code (cached per structure of ``f``), and the whole
      stepping loop runs compiled, ~1 us a step for small systems instead of ~1 ms.

    ``compile``: ``"auto"`` (default) compiles adaptive solves and fixed grids of at least
    ``compile_min_steps`` steps when numba is installed and ``f`` can be traced (CPU, float32/float64,
    at most ``max_nodes`` scalar operations, no Python branching on the state); other uses, and
    ``f`` the tape cannot serve, run interpreted (``Solution.stats.notes`` says why).  ``True`` compiles
    whenever possible, also single ``coefficients()`` calls; ``False`` never compiles.

    ``f`` must be written with torch operations (Python operators, ``Tensor`` methods, torch
    functions or :mod:`taylorsolve.math`); see :func:`supported_operations`.  An unsupported function
    raises :class:`~taylorsolve.errors.UnsupportedOperationError` naming it; conversions that drop the
    series (``detach()``, ``float()``, ``tolist()``, NumPy) raise
    :class:`~taylorsolve.errors.DerivativeLeakError`.  Each call counts one ``f_evals`` (the trace or
    compiled replay) and, for order >= 2, one ``derivative_evals`` (the Taylor sweep).  ``f0`` is
    accepted for protocol compatibility and ignored.  Results carry no autograd history.
    """

    name = "taylor_mode"
    stateless = True

    #: ``compile="auto"`` compiles tapes up to this many scalar operations: numba's compile time grows
    #: faster than linearly with the straight-line code (measured here: ~1 s for Kepler's ~30 operations,
    #: ~6 s for 54, ~300 s for the 1,054 of a 64-component mixture), so larger ``f`` run interpreted
    #: unless ``compile=True`` (then up to ``max_nodes``)
    AUTO_MAX_NODES = 200

    def __init__(self, compile: bool | str = "auto", *, compile_min_steps: int = 1000, max_nodes: int = 4000,
                 auto_max_nodes: int | None = None) -> None:  # noqa: A002
        super().__init__()
        if compile not in (True, False, "auto"):
            raise TaylorSolveError(f"compile must be True, False or 'auto', got {compile!r}")
        self.compile = compile
        self.compile_min_steps = int(compile_min_steps)
        self.max_nodes = int(max_nodes)
        self.auto_max_nodes = int(self.AUTO_MAX_NODES if auto_max_nodes is None else auto_max_nodes)
        #: whether ``f`` read ``t`` in the last interpreted call (None before any call)
        self.last_read_time: bool | None = None

    # ---- the compiled path ---------------------------------------------------------------------------
    def compile_mode(self, kind: str, steps: int | None = None) -> bool:
        """Whether a solve of ``kind`` (``"adaptive"``/``"fixed"``/``"call"``) should try the compiled path."""
        from .compiled import numba_available

        if self.compile is False or not numba_available():
            return False
        if self.compile is True:
            return True
        if kind == "adaptive":
            return True
        if kind == "fixed":
            return steps is not None and steps >= self.compile_min_steps
        return False

    def compiled_plan(self, f: RHS, t0: torch.Tensor, y0: torch.Tensor, event_ndim: int):
        """``((plan, event_ndim), "")`` for a solve, or ``(None, reason)`` when it runs interpreted."""
        from .compiled import PlanUnavailable, plan_for_solve

        if y0.ndim - event_ndim >= 0 and math.prod(y0.shape[y0.ndim - event_ndim :]) > self.max_nodes:
            return None, f"not compiled: the state of one problem has more than {self.max_nodes} entries"
        limit = self.max_nodes if self.compile is True else min(self.max_nodes, self.auto_max_nodes)
        try:
            return plan_for_solve(f, torch.as_tensor(t0), y0, event_ndim, max_nodes=limit), ""
        except PlanUnavailable as exc:
            if self.compile is True:
                raise UnsupportedOperationError(f"compile=True but the compiled path cannot run f: {exc}",
                                                backend="taylor_mode") from None
            if limit < self.max_nodes and "limit" in str(exc):
                return None, (f"not compiled: f has more than {limit} scalar operations, where numba's compile time "
                              "(seconds to minutes) outweighs the gain; backend_options={'compile': True} compiles "
                              f"up to {self.max_nodes}")
            return None, f"not compiled: {exc}"

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        if self.compile is True and isinstance(y, torch.Tensor) and self.compile_mode("call"):
            plan, _ = self.compiled_plan(f, torch.as_tensor(t), y, 1 if y.ndim >= 1 else 0)
            p, _nd = plan
            cs = p.coefficients(float(t), y.detach().reshape(-1, p.n_state).cpu().numpy(), validate_order(order))
            self.compile_time = getattr(self, "compile_time", 0.0) + p.compile_time
            self.counters.f_evals += 1
            self.counters.derivative_evals += 1 if order > 1 else 0
            return [torch.from_numpy(c.copy()).reshape(y.shape).to(y.device) for c in cs]
        info: dict = {}
        coeffs, _ = jet_coefficients(f, t, y, order, info=info)
        self.last_read_time = info.get("read_time")
        self.counters.f_evals += 1
        self.counters.derivative_evals += 1 if order > 1 else 0
        return coeffs


register_backend("taylor_mode", TaylorModeBackend)
