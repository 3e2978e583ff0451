r"""The one table of operations a right-hand side ``f(t, y)`` may use on traced states.

Three stand-ins for tensors trace ``f``: Taylor-mode jets (``backend="taylor_mode"``, interpreted),
the scalar tape of the compiled path (``taylor_mode`` with ``compile=True``) and SymPy arrays
(``backend="symbolic"``).  Every operation they accept is an entry here, and from this table come

* the names each stand-in dispatches (``__torch_function__`` and ``Tensor`` methods): a stand-in's
  dispatch dictionary holds exactly the table's entries that list its backend;
* ``taylorsolve.math.__all__`` (entries with ``math=True``) and the generic functions there;
* the symbolic backend's function list and the jet handlers.

Elementwise functions of one argument carry everything every backend needs, so **adding one is one
entry**: a torch function (the primal), a SymPy function (the symbolic backend differentiates it), a
scalar expression for the compiled code, and how its Taylor series is built:

* ``chain=deriv``: ``v' = g(u, v) u'`` with ``g = deriv(P, u, v)`` written with the primitives ``P`` of
  the stand-in (its arithmetic, ``P.op(name, x)`` for other entries, ``P.where``/``P.gt``...).  The
  series follows from ``v_k = sum_{j=1}^{k} (j/k) u_j g_{k-j}`` (``g`` may use ``v`` itself: ``tan``
  has ``g = 1 + v^2``; only ``g_0 .. g_{k-1}`` are needed for ``v_k``);
* ``compose=build``: ``v = build(P, u, *params)`` in terms of other entries (``log2 = log(u) / ln 2``);
  the primal is then recomputed with the entry's own function where it has one;
* ``rec=name``: a dedicated recurrence of the stand-in (``exp``, ``log``, ``sqrt``, ``sin``/``cos`` pairs,
  ``abs``): cheaper than the chain rule, or the chain rule's base cases.

Other operations (arithmetic, reductions, reshapes, linear algebra, layers) are entries listing the
backends that implement them; each backend registers its implementation under the entry's name, and
an implementation for a name that is not in the table (or a table entry without an implementation)
is an error at import.  ``supported_by(backend)`` gives a backend's names; ``docs/ARCHITECTURE.md`` has
the list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

__all__ = ["Op", "OPS", "lookup", "supported_by", "math_names", "BACKENDS", "REVERSED", "add_operation", "on_change"]

#: the tracing stand-ins: Taylor-mode jets, the compiled path's scalar tape, SymPy arrays
BACKENDS = ("taylor_mode", "compiled", "symbolic")
_ALL = frozenset(BACKENDS)
_JETS = frozenset({"taylor_mode"})
_JS = frozenset({"taylor_mode", "symbolic"})

LN2 = math.log(2.0)
LN10 = math.log(10.0)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class Op:
    """One operation: its name (torch's ``func.__name__``), aliases and how each backend supports it."""

    name: str
    kind: str  # unary | primal | binary | bilinear | reduction | structure | layer | creation | identity | compare
    backends: frozenset = _ALL
    aliases: tuple[str, ...] = ()
    #: the function ``taylorsolve.math`` calls on tensors (None: not exported by taylorsolve.math)
    torch: Callable[..., Any] | None = None
    math: bool = False
    #: elementwise ops: SymPy implementation ``sympy(sp, x, *params)``
    sympy: Callable[..., Any] | None = None
    #: elementwise ops: scalar expression for the compiled code, ``{0}`` the argument (``math.sin({0})``)
    scalar: str | None = None
    #: elementwise ops: Taylor series construction (one of chain / compose / rec)
    chain: Callable[..., Any] | None = None
    compose: Callable[..., Any] | None = None
    rec: str | None = None
    #: parameters after the input, with defaults: ``(("beta", 1.0), ("threshold", 20.0))``
    params: tuple[tuple[str, Any], ...] = ()
    doc: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def elementwise(self) -> bool:
        return self.kind in ("unary", "primal")

    def parse_params(self, args: tuple, kwargs: dict) -> list[Any]:
        """Positional ``args`` (after the input) and ``kwargs`` matched to ``params`` (unknown names raise)."""
        allowed = {n for n, _ in self.params} | {"inplace"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"{self.name}() got unexpected arguments {sorted(unknown)}")
        if len(args) > len(self.params):
            raise TypeError(f"{self.name}() takes {len(self.params)} parameters after the input, got {len(args)}")
        out = []
        for i, (n, default) in enumerate(self.params):
            out.append(args[i] if i < len(args) else kwargs.get(n, default))
        return out


# --------------------------------------------------------------------------------------------------
# elementwise functions of one argument (one entry each serves every backend)
# --------------------------------------------------------------------------------------------------
def _u(name, torch_fn, sympy, *, scalar=None, chain=None, compose=None, rec=None, aliases=(), math_=True,
       params=(), doc="", backends=_ALL):
    return Op(name, "unary", backends, tuple(aliases), torch_fn, math_, sympy, scalar, chain, compose, rec,
              tuple(params), doc)


def _softplus_build(P, u, beta=1.0, threshold=20.0):
    beta = float(beta)
    x = u * beta if beta != 1.0 else u
    # softplus(x) = relu(x) + log1p(exp(-|x|)) (torch's linear regime above `threshold` differs by < e^-20)
    out = P.op("relu", x) + P.op("log1p", P.op("exp", -P.op("abs", x)))
    return out * (1.0 / beta) if beta != 1.0 else out


def _clamp_build(P, u, lo, hi):
    out = u
    if lo is not None:
        out = P.where(P.gt(out, lo), out, lo)
    if hi is not None:
        out = P.where(P.lt(out, hi), out, hi)
    return out


def _gelu_build(P, u, approximate="none"):
    if approximate == "tanh":
        inner = (u + u * u * u * 0.044715) * math.sqrt(2.0 / math.pi)
        return u * 0.5 * (P.op("tanh", inner) + 1.0)
    return u * 0.5 * (P.op("erf", u * (1.0 / math.sqrt(2.0))) + 1.0)


def _gelu_sympy(sp, x, approximate="none"):
    if approximate == "tanh":
        return x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Rational(44715, 1000000) * x**3)))
    return x / 2 * (1 + sp.erf(x / sp.sqrt(2)))


def _piecewise(sp, cond, a, b):
    return sp.Piecewise((a, cond), (b, True))


UNARY: list[Op] = [
    _u("sin", torch.sin, lambda sp, x: sp.sin(x), scalar="math.sin({0})", rec="sin", doc="Elementwise sine."),
    _u("cos", torch.cos, lambda sp, x: sp.cos(x), scalar="math.cos({0})", rec="cos", doc="Elementwise cosine."),
    _u("tan", torch.tan, lambda sp, x: sp.tan(x), scalar="math.tan({0})", chain=lambda P, u, v: v * v + 1.0,
       doc="Elementwise tangent (v' = (1 + v^2) u')."),
    _u("asin", torch.asin, lambda sp, x: sp.asin(x), scalar="math.asin({0})", aliases=("arcsin",),
       chain=lambda P, u, v: P.op("rsqrt", 1.0 - u * u), doc="Elementwise arcsine."),
    _u("acos", torch.acos, lambda sp, x: sp.acos(x), scalar="math.acos({0})", aliases=("arccos",),
       chain=lambda P, u, v: -P.op("rsqrt", 1.0 - u * u), doc="Elementwise arccosine."),
    _u("atan", torch.atan, lambda sp, x: sp.atan(x), scalar="math.atan({0})", aliases=("arctan",),
       chain=lambda P, u, v: 1.0 / (u * u + 1.0), doc="Elementwise arctangent."),
    _u("sinh", torch.sinh, lambda sp, x: sp.sinh(x), scalar="math.sinh({0})", rec="sinh", doc="Elementwise hyperbolic sine."),
    _u("cosh", torch.cosh, lambda sp, x: sp.cosh(x), scalar="math.cosh({0})", rec="cosh", doc="Elementwise hyperbolic cosine."),
    _u("tanh", torch.tanh, lambda sp, x: sp.tanh(x), scalar="math.tanh({0})", chain=lambda P, u, v: 1.0 - v * v,
       doc="Elementwise hyperbolic tangent (v' = (1 - v^2) u')."),
    _u("asinh", torch.asinh, lambda sp, x: sp.asinh(x), scalar="math.asinh({0})", aliases=("arcsinh",),
       chain=lambda P, u, v: P.op("rsqrt", u * u + 1.0), doc="Elementwise inverse hyperbolic sine."),
    _u("acosh", torch.acosh, lambda sp, x: sp.acosh(x), scalar="math.acosh({0})", aliases=("arccosh",),
       chain=lambda P, u, v: P.op("rsqrt", u * u - 1.0), doc="Elementwise inverse hyperbolic cosine."),
    _u("atanh", torch.atanh, lambda sp, x: sp.atanh(x), scalar="math.atanh({0})", aliases=("arctanh",),
       chain=lambda P, u, v: 1.0 / (1.0 - u * u), doc="Elementwise inverse hyperbolic tangent."),
    _u("exp", torch.exp, lambda sp, x: sp.exp(x), scalar="math.exp({0})", aliases=("special_exp",), rec="exp",
       doc="Elementwise exponential (v' = v u')."),
    _u("exp2", torch.exp2, lambda sp, x: 2**x, scalar="math.pow(2.0, {0})", aliases=("special_exp2",),
       chain=lambda P, u, v: v * LN2, doc="Elementwise ``2**x``."),
    _u("expm1", torch.expm1, lambda sp, x: sp.exp(x) - 1, scalar="math.expm1({0})", aliases=("special_expm1",),
       chain=lambda P, u, v: v + 1.0, doc="Elementwise ``exp(x) - 1``."),
    _u("log", torch.log, lambda sp, x: sp.log(x), scalar="math.log({0})", rec="log", doc="Elementwise natural logarithm."),
    _u("log2", torch.log2, lambda sp, x: sp.log(x) / sp.log(2), scalar="math.log2({0})",
       compose=lambda P, u: P.op("log", u) * (1.0 / LN2), doc="Elementwise base-2 logarithm."),
    _u("log10", torch.log10, lambda sp, x: sp.log(x) / sp.log(10), scalar="math.log10({0})",
       compose=lambda P, u: P.op("log", u) * (1.0 / LN10), doc="Elementwise base-10 logarithm."),
    _u("log1p", torch.log1p, lambda sp, x: sp.log(1 + x), scalar="math.log1p({0})", aliases=("special_log1p",),
       compose=lambda P, u: P.op("log", u + 1.0), doc="Elementwise ``log(1 + x)``."),
    _u("sqrt", torch.sqrt, lambda sp, x: sp.sqrt(x), scalar="math.sqrt({0})", rec="sqrt", doc="Elementwise square root."),
    _u("rsqrt", torch.rsqrt, lambda sp, x: 1 / sp.sqrt(x), scalar="1.0 / math.sqrt({0})",
       compose=lambda P, u: P.pow(u, -0.5), doc="Elementwise ``1 / sqrt(x)``."),
    _u("reciprocal", torch.reciprocal, lambda sp, x: 1 / x, scalar="1.0 / {0}", compose=lambda P, u: 1.0 / u,
       doc="Elementwise ``1 / x``."),
    _u("square", torch.square, lambda sp, x: x**2, scalar="{0} * {0}", compose=lambda P, u: u * u,
       doc="Elementwise ``x**2``."),
    _u("abs", torch.abs, lambda sp, x: sp.Abs(x), scalar="abs({0})", aliases=("absolute", "__abs__"), rec="abs",
       doc="Elementwise absolute value (its derivative is sign(x); SymPy's DiracDelta is dropped)."),
    _u("neg", torch.neg, lambda sp, x: -x, scalar="-{0}", aliases=("negative", "__neg__"), rec="neg",
       math_=False, doc="``-x``."),
    _u("positive", torch.positive, lambda sp, x: x, scalar="{0}", aliases=("__pos__",), compose=lambda P, u: u,
       math_=False, doc="``+x``."),
    _u("sigmoid", torch.sigmoid, lambda sp, x: 1 / (1 + sp.exp(-x)), scalar="1.0 / (1.0 + math.exp(-{0}))",
       aliases=("special_expit", "expit"), chain=lambda P, u, v: v - v * v,
       doc="Logistic function ``1 / (1 + exp(-x))`` (v' = v (1 - v) u')."),
    _u("relu", torch.relu, lambda sp, x: sp.Piecewise((x, x > 0), (0, True)), scalar=None,
       compose=lambda P, u: P.where(P.gt(u, 0.0), u, 0.0), doc="``max(x, 0)`` (branch from the primal)."),
    _u("silu", F.silu, lambda sp, x: x / (1 + sp.exp(-x)), compose=lambda P, u: u * P.op("sigmoid", u),
       doc="``x * sigmoid(x)``."),
    _u("erf", torch.erf, lambda sp, x: sp.erf(x), scalar="math.erf({0})", aliases=("special_erf",),
       chain=lambda P, u, v: P.op("exp", -(u * u)) * TWO_OVER_SQRT_PI, doc="Error function."),
    _u("erfc", torch.erfc, lambda sp, x: sp.erfc(x), scalar="math.erfc({0})", aliases=("special_erfc",),
       chain=lambda P, u, v: P.op("exp", -(u * u)) * (-TWO_OVER_SQRT_PI), doc="Complementary error function."),
    _u("logsigmoid", F.logsigmoid, lambda sp, x: -sp.log(1 + sp.exp(-x)), aliases=("log_sigmoid",),
       compose=lambda P, u: -P.op("relu", -u) - P.op("log1p", P.op("exp", -P.op("abs", u))),
       doc="``log(sigmoid(x))``."),
    # elementwise with parameters
    _u("softplus", F.softplus, lambda sp, x, beta=1, threshold=20: sp.log(1 + sp.exp(beta * x)) / beta,
       compose=_softplus_build, params=(("beta", 1.0), ("threshold", 20.0)),
       doc="``log(1 + exp(beta x)) / beta`` (torch's linear regime above ``threshold`` is not reproduced)."),
    _u("elu", F.elu, lambda sp, x, alpha=1.0: _piecewise(sp, x > 0, x, alpha * (sp.exp(x) - 1)),
       compose=lambda P, u, alpha=1.0: P.where(P.gt(u, 0.0), u, P.op("expm1", u) * float(alpha)),
       params=(("alpha", 1.0),), math_=False, doc="ELU."),
    _u("leaky_relu", F.leaky_relu, lambda sp, x, negative_slope=0.01: _piecewise(sp, x > 0, x, negative_slope * x),
       compose=lambda P, u, negative_slope=0.01: P.where(P.gt(u, 0.0), u, u * float(negative_slope)),
       params=(("negative_slope", 0.01),), math_=False, doc="Leaky ReLU."),
    _u("relu6", F.relu6, lambda sp, x: sp.Min(sp.Max(x, 0), 6),
       compose=lambda P, u: _clamp_build(P, u, 0.0, 6.0), math_=False, doc="``min(max(x, 0), 6)``."),
    _u("hardtanh", F.hardtanh, lambda sp, x, min_val=-1.0, max_val=1.0: sp.Min(sp.Max(x, min_val), max_val),
       compose=lambda P, u, min_val=-1.0, max_val=1.0: _clamp_build(P, u, float(min_val), float(max_val)),
       params=(("min_val", -1.0), ("max_val", 1.0)), math_=False, doc="Hard tanh (a clamp)."),
    _u("gelu", F.gelu, _gelu_sympy, compose=_gelu_build, params=(("approximate", "none"),), math_=False,
       doc="GELU (exact or tanh approximation)."),
]

# piecewise-constant functions: act on the primal, derivatives zero
PRIMAL: list[Op] = [
    Op("sign", "primal", _ALL, ("sgn",), torch.sign, False, lambda sp, x: sp.sign(x), "math.copysign(1.0, {0}) if {0} != 0 else 0.0"),
    Op("floor", "primal", frozenset({"taylor_mode", "compiled"}), (), torch.floor, False, None, "math.floor({0})"),
    Op("ceil", "primal", frozenset({"taylor_mode", "compiled"}), (), torch.ceil, False, None, "math.ceil({0})"),
    Op("trunc", "primal", frozenset({"taylor_mode", "compiled"}), (), torch.trunc, False, None, "float(int({0}))"),
    Op("round", "primal", _JETS, (), torch.round),
]


# --------------------------------------------------------------------------------------------------
# everything else: names and the backends implementing them
# --------------------------------------------------------------------------------------------------
def _ops(kind: str, spec: str, backends: Iterable[str] = _ALL, **kw: Any) -> list[Op]:
    """``spec``: space-separated ``name[=alias,alias]`` items."""
    out = []
    for item in spec.split():
        name, _, al = item.partition("=")
        out.append(Op(name, kind, frozenset(backends), tuple(a for a in al.split(",") if a), **kw))
    return out


def _m(name: str, kind: str, torch_fn: Callable, doc: str, aliases: tuple = (), backends=_ALL) -> Op:
    return Op(name, kind, frozenset(backends), aliases, torch_fn, True, doc=doc)


def _sum(x, dim=None, keepdim=False):
    """Sum over ``dim`` (all dimensions when ``None``)."""
    return torch.sum(x) if dim is None else torch.sum(x, dim, keepdim=keepdim)


def _mean(x, dim=None, keepdim=False):
    """Mean over ``dim`` (all dimensions when ``None``)."""
    return torch.mean(x) if dim is None else torch.mean(x, dim, keepdim=keepdim)


def _stack(seq, dim=0):
    """Stack equally shaped arrays along a new dimension ``dim``."""
    return torch.stack(list(seq), dim=dim)


def _cat(seq, dim=0):
    """Concatenate arrays along the existing dimension ``dim``."""
    return torch.cat(list(seq), dim=dim)


def _softmax(x, dim):
    """``exp(x_i) / sum_j exp(x_j)`` along ``dim``."""
    return torch.softmax(x, dim)


def _log_softmax(x, dim):
    """``x_i - logsumexp(x, dim)``."""
    return torch.log_softmax(x, dim)


def _logsumexp(x, dim, keepdim=False):
    """``log(sum_j exp(x_j))`` along ``dim``."""
    return torch.logsumexp(x, dim, keepdim=keepdim)


def _pow(x, p):
    """``x ** p`` elementwise (either argument may be a number)."""
    return torch.pow(x, p)


def _atan2(y, x):
    """Elementwise ``atan2(y, x)``."""
    return torch.atan2(y, x)


def _maximum(a, b):
    """Elementwise maximum (symbolically a ``Piecewise``; derivatives are one-sided at ties)."""
    return torch.maximum(a, b)


def _minimum(a, b):
    """Elementwise minimum (symbolically a ``Piecewise``)."""
    return torch.minimum(a, b)


def _matmul(a, b):
    """Matrix product with ``torch.matmul`` semantics (either side may be a constant tensor)."""
    return torch.matmul(a, b)


def _where(cond, a, b):
    """``a`` where ``cond`` holds, else ``b`` (symbolically a ``Piecewise``)."""
    return torch.where(cond, a, b)


def _hypot(a, b):
    """Elementwise ``sqrt(a**2 + b**2)``."""
    return torch.hypot(torch.as_tensor(a), torch.as_tensor(b))


def _clamp(x, min=None, max=None):  # noqa: A002 - torch's names
    """``x`` clamped to ``[min, max]`` (derivative zero outside)."""
    return torch.clamp(x, min, max)


OTHER: list[Op] = [
    # arithmetic (the Python operators dispatch here too; reversed dunders swap the arguments)
    *_ops("binary", "add=__add__,__iadd__ sub=subtract,__sub__,__isub__ mul=multiply,__mul__,__rmul__,__imul__ "
          "div=divide,true_divide,__truediv__,__div__,__itruediv__ rsub"),
    Op("pow", "binary", _ALL, ("__pow__", "float_power"), _pow, True, doc=_pow.__doc__),
    Op("atan2", "binary", _ALL, ("arctan2",), _atan2, True, doc=_atan2.__doc__),
    Op("maximum", "binary", _ALL, ("fmax",), _maximum, True, doc=_maximum.__doc__),
    Op("minimum", "binary", _ALL, ("fmin",), _minimum, True, doc=_minimum.__doc__),
    Op("hypot", "binary", _ALL, (), _hypot, True, doc=_hypot.__doc__),
    *_ops("binary", "logaddexp"),
    Op("clamp", "unary_param", _ALL, ("clip",), _clamp, True, doc=_clamp.__doc__),
    *_ops("unary_param", "clamp_min clamp_max"),
    # linear algebra
    Op("matmul", "bilinear", _ALL, ("__matmul__", "mm", "mv"), _matmul, True, doc=_matmul.__doc__),
    *_ops("bilinear", "dot inner outer=ger einsum linear"),
    *_ops("bilinear", "bmm vdot kron cross tensordot", _JETS),
    # reductions
    Op("sum", "reduction", _ALL, (), _sum, True, doc=_sum.__doc__),
    Op("mean", "reduction", _ALL, (), _mean, True, doc=_mean.__doc__),
    Op("softmax", "reduction", _ALL, ("special_softmax",), _softmax, True, doc=_softmax.__doc__),
    Op("log_softmax", "reduction", _ALL, ("special_log_softmax",), _log_softmax, True, doc=_log_softmax.__doc__),
    Op("logsumexp", "reduction", _ALL, ("special_logsumexp",), _logsumexp, True, doc=_logsumexp.__doc__),
    *_ops("reduction", "prod", frozenset({"compiled", "symbolic"})),
    *_ops("reduction", "nansum amax amin max min norm linalg_norm linalg_vector_norm var std cumsum trace", _JETS),
    # structure
    Op("stack", "structure", _ALL, (), _stack, True, doc=_stack.__doc__),
    Op("cat", "structure", _ALL, ("concat", "concatenate"), _cat, True, doc=_cat.__doc__),
    Op("where", "structure", _ALL, (), _where, True, doc=_where.__doc__),
    *_ops("structure", "__getitem__ __setitem__ reshape view flatten ravel squeeze unsqueeze "
          "transpose=swapaxes,swapdims t permute movedim=moveaxis expand broadcast_to unbind"),
    *_ops("structure", "unflatten expand_as view_as reshape_as flip fliplr flipud roll rot90 narrow narrow_copy "
          "select select_scatter index_select gather take_along_dim take diagonal diag diag_embed tril triu repeat "
          "tile repeat_interleave unfold diff hstack vstack dstack column_stack row_stack chunk split "
          "split_with_sizes tensor_split hsplit vsplit dsplit pad", _JETS),
    # copies, dtype, device (identity on the series)
    *_ops("identity", "clone contiguous to type_as"),
    *_ops("identity", "type double float half bfloat16 cpu cuda real", _JETS),
    # layers (linear in the input, or built from the above)
    *_ops("layer", "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d avg_pool1d avg_pool2d "
          "avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d interpolate upsample "
          "pixel_shuffle pixel_unshuffle channel_shuffle layer_norm group_norm normalize", _JETS),
    # constants shaped like the input
    *_ops("creation", "zeros_like ones_like full_like empty_like"),
    *_ops("creation", "rand_like randn_like new_zeros new_ones new_full new_empty new_tensor", _JETS),
    # comparisons and logic: act on the primal (jets) / build relations (symbolic) / condition nodes (tape)
    *_ops("compare", "gt=greater,__gt__ ge=greater_equal,__ge__ lt=less,__lt__ le=less_equal,__le__ "
          "eq=__eq__ ne=not_equal,__ne__ logical_and=__and__ logical_or=__or__ logical_not"),
    *_ops("compare", "logical_xor signbit argmax argmin argsort isnan isinf isfinite isreal isclose allclose equal "
          "heaviside count_nonzero nonzero all any is_nonzero searchsorted bucketize", _JETS),
]

#: reversed dunders: ``Tensor.__rsub__(self, other)`` is ``other - self``: (canonical name, swap arguments)
REVERSED = {
    "__radd__": "add",
    "__rsub__": "sub",
    "__rtruediv__": "div",
    "__rdiv__": "div",
    "__rpow__": "pow",
    "__rmatmul__": "matmul",
}

OPS: list[Op] = UNARY + PRIMAL + OTHER

_BY_NAME: dict[str, Op] = {}
for _op in OPS:
    for _n in _op.names:
        if _n in _BY_NAME:  # pragma: no cover - a table error
            raise RuntimeError(f"operation name {_n!r} appears twice in the table")
        _BY_NAME[_n] = _op
del _op, _n


_LISTENERS: list[Callable[[], None]] = []


def on_change(callback: Callable[[], None]) -> None:
    """Register ``callback`` to rebuild a dispatch table when the table changes (each stand-in registers one)."""
    _LISTENERS.append(callback)


def add_operation(op: Op) -> None:
    """Add an entry (e.g. a new elementwise function) and rebuild every stand-in's table and taylorsolve.math.

    For an elementwise entry with ``torch``, ``sympy``, ``scalar`` and one of ``chain``/``compose``/``rec``
    this is all it takes for the jets, the compiled path, the symbolic backend and ``taylorsolve.math``
    to support it (``tests/test_ops_table.py`` adds ``softsign`` this way).
    """
    for n in op.names:
        if n in _BY_NAME:
            raise ValueError(f"operation name {n!r} is already in the table")
    OPS.append(op)
    for n in op.names:
        _BY_NAME[n] = op
    for cb in list(_LISTENERS):
        cb()


def remove_operation(name: str) -> None:
    """Remove an entry added by :func:`add_operation` (tests) and rebuild the tables."""
    op = _BY_NAME[name]
    OPS.remove(op)
    for n in op.names:
        del _BY_NAME[n]
    for cb in list(_LISTENERS):
        cb()


def lookup(name: str) -> Op | None:
    """The table entry of a torch name or alias (``"arcsin"`` -> the ``asin`` entry); None if absent."""
    return _BY_NAME.get(name)


def supported_by(backend: str) -> list[str]:
    """Every name (canonical and aliases, plus reversed dunders) the stand-in of ``backend`` dispatches."""
    names = [n for op in OPS if backend in op.backends for n in op.names]
    names += [r for r, canon in REVERSED.items() if backend in _BY_NAME[canon].backends]
    return sorted(names)


def math_names() -> list[str]:
    """The functions of :mod:`taylorsolve.math` (in table order)."""
    return [op.name for op in OPS if op.math]


def dispatch_table(backend: str, impls: dict[str, Callable], elementwise: Callable[[Op], Callable]) -> dict[str, Callable]:
    """Build a stand-in's ``name -> implementation`` dictionary from the table.

    ``impls`` holds the backend's own implementations by canonical name (arithmetic, reductions...);
    ``elementwise(op)`` builds the implementation of a table-defined elementwise entry.  Raises if the
    backend implements a name the table does not list for it, or misses one it lists.
    """
    extra = sorted(set(impls) - {op.name for op in OPS if backend in op.backends})
    if extra:
        raise RuntimeError(f"{backend}: implementations for names not in the operations table: {extra}")
    table: dict[str, Callable] = {}
    missing = []
    for op in OPS:
        if backend not in op.backends:
            continue
        impl = impls.get(op.name)
        if impl is None and op.elementwise:
            impl = elementwise(op)
        if impl is None:
            missing.append(op.name)
            continue
        for n in op.names:
            table[n] = impl
    if missing:
        raise RuntimeError(f"{backend}: table entries without an implementation: {missing}")
    return table
