r"""The sampler registry: every method of :func:`taylorsolve.diffusion.sample` is one :class:`Sampler` unit.

A unit declares what it is (name, aliases, order, the coordinates it steps in, its NFE rule, its
options) and how it steps; the loop of :mod:`taylorsolve.diffusion.loop` owns everything else
(coordinate changes, the trajectory, finiteness checks, the direction, the analytical first step,
the final denoising, counting).  Adding a sampler is one new unit::

    from taylorsolve.diffusion.registry import Sampler, register

    @register
    class MidpointDDIM(Sampler):
        name = "midpoint"
        summary = "explicit midpoint rule on the DDIM ODE"
        coordinates = "ddim"            # state xbar, solver time gamma (eq. (6))
        orders = (2,)

        def nfe(self, steps):           # model evaluations of `steps` steps, before AFS / denoising
            return 2 * steps

        def step(self, ctx, n, y, eps0=None):
            s, s1 = ctx.s[n], ctx.s[n + 1]
            e0 = ctx.eps_node(y, n) if eps0 is None else eps0
            sm = 0.5 * (s + s1)
            return y + ctx.c(s1 - s, y) * ctx.eps(y + ctx.c(sm - s, y) * e0, sm)

and the test suite gives it the single-point exactness, Gaussian-order and NFE tests by iterating
over :func:`available_methods`.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch

from ..errors import TaylorSolveError, validate_order

if TYPE_CHECKING:  # pragma: no cover
    from .loop import RunContext

__all__ = [
    "Sampler",
    "register",
    "get_sampler",
    "canonical_method",
    "available_methods",
    "sampler_table",
]

_REGISTRY: dict[str, type["Sampler"]] = {}
_ALIASES: dict[str, str] = {}


class Sampler(abc.ABC):
    """One sampling method (see the module docstring).  Instances are made per run (they may keep history).

    Class attributes (the declaration):
        name: canonical name (lower case, ``-`` separated).
        aliases: other accepted names.
        summary: one line for tables and messages.
        coordinates: the coordinate kind the unit steps in (``"ddim"``, ``"pf"``, ``"sde"``, or a
            process's own kind); the process must support it.
        orders: allowed orders (``None``: any integer >= 1).
        default_order: the order when none is given (``None`` with ``orders`` of one entry: that one;
            ``None`` otherwise: ``order=`` is required).
        options: extra keyword options and their defaults.
        takes_derivative: accepts ``derivative=`` (a provider, :mod:`taylorsolve.diffusion.providers`).
        stochastic: draws noise (needs ``generator=`` for reproducibility; cannot encode).
        adaptive: chooses its own steps (:meth:`solve` instead of :meth:`step`; no NFE budget).
        nfe_rule: the NFE rule in words.
        min_steps: fewest steps a budget may choose (F-PNDM: its 3 warm-up steps).
        exact_on_single_point: integrates the DDIM ODE of single-point data exactly (app. B.2);
            a conformance property checked by the tests.
        variable_step_order: the global order on smoothly varying (non-uniform) grids when it is
            lower than :attr:`order` (F-PNDM: its Adams-Bashforth weights assume equal steps, so the
            step variation leaves an O(h^3) local error: order 2); ``None``: the declared order.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    coordinates: ClassVar[str] = "ddim"
    orders: ClassVar[tuple[int, ...] | None] = None
    default_order: ClassVar[int | None] = None
    options: ClassVar[Mapping[str, Any]] = {}
    takes_derivative: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    nfe_rule: ClassVar[str] = "steps"
    min_steps: ClassVar[int] = 1
    exact_on_single_point: ClassVar[bool] = True
    variable_step_order: ClassVar[int | None] = None

    def __init__(self, order: int | None = None, derivative: Any = None, **options: Any) -> None:
        cls = type(self)
        self.order = cls._resolve_order(order)
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            hint = f"; it accepts {', '.join(cls.options)}" if cls.options else "; it takes no extra options"
            raise TaylorSolveError(f"unknown option(s) {', '.join(unknown)} for method {cls.name!r}{hint}")
        if derivative is not None and not cls.takes_derivative:
            users = [m for m, c in _REGISTRY.items() if c.takes_derivative]
            raise TaylorSolveError(
                f"derivative= applies to the methods {', '.join(repr(u) for u in users)}, not to {cls.name!r}"
            )
        self.derivative = derivative
        self.opts: dict[str, Any] = {**dict(cls.options), **options}
        self.validate()

    @classmethod
    def _resolve_order(cls, order: Any) -> int:
        if order is None:
            if cls.default_order is not None:
                return cls.default_order
            if cls.orders is not None and len(cls.orders) == 1:
                return cls.orders[0]
            allowed = f" ({', '.join(map(str, cls.orders))})" if cls.orders else ""
            raise TaylorSolveError(f"method {cls.name!r} needs order=p{allowed}")
        p = validate_order(order)
        if cls.orders is not None and p not in cls.orders:
            if len(cls.orders) == 1:
                raise TaylorSolveError(f"method {cls.name!r} has fixed order {cls.orders[0]}; got order={order!r}")
            raise TaylorSolveError(
                f"method {cls.name!r} supports order {', '.join(map(str, cls.orders))}; got order={order!r}"
            )
        return p

    def validate(self) -> None:
        """Check :attr:`opts` (subclasses raise :class:`TaylorSolveError` naming a bad option)."""

    @property
    def accuracy_order(self) -> int:
        """The global order of accuracy on smooth problems (a corrector may raise it above :attr:`order`)."""
        return self.order

    # -- cost ---------------------------------------------------------------------------------------------
    def nfe(self, steps: int) -> int:
        """Model evaluations of ``steps`` steps before the knobs (AFS saves one, denoising adds one)."""
        return int(steps)

    def derivative_overhead(self, model: Any = None) -> float:
        """Cost of the derivative work per step in model evaluations (0 for methods without one);
        ``model`` is the run's :class:`~taylorsolve.diffusion.boundary.DiffusionModel` (its head's overhead)."""
        return 0.0

    # -- stepping -----------------------------------------------------------------------------------------
    def setup(self, ctx: "RunContext") -> None:
        """Called once before the first step (bind providers, reset history)."""

    def step(self, ctx: "RunContext", n: int, y: torch.Tensor, eps0: torch.Tensor | None = None) -> torch.Tensor:
        """The state at node ``n + 1`` from ``y`` at node ``n``.

        ``eps0``: eps at ``(y, node n)`` when the loop already knows it (the analytical first step,
        eq. (75)); then it must be used instead of a model evaluation at node ``n``.
        """
        raise NotImplementedError(f"method {type(self).name!r} does not step (it is adaptive)")

    def solve(self, ctx: "RunContext", y: torch.Tensor, eps0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Adaptive methods only: the states at all nodes of ``ctx.t`` (``y`` first)."""
        raise NotImplementedError

    def finish(self, ctx: "RunContext") -> None:
        """Called after the last step (copy counters into ``ctx.stats``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order}, options={self.opts})"


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _redefinition(owner: type, cls: type) -> bool:
    """The same class defined again (a re-run notebook cell, a reloaded module): it replaces the old one."""
    return owner.__module__ == cls.__module__ and owner.__qualname__ == cls.__qualname__


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: add a :class:`Sampler` unit under its name and aliases.

    Names must be new, except that a class defined again under the same module and qualified name (a
    re-run notebook cell, a reloaded module) replaces its earlier definition."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TaylorSolveError(f"register needs a Sampler subclass, got {cls!r}")
    if not cls.name:
        raise TaylorSolveError(f"sampler {cls.__name__} has no name")
    name = _key(cls.name)
    if name != cls.name:
        raise TaylorSolveError(f"sampler name {cls.name!r} must be lower case with '-' separators ({name!r})")
    for key in (name, *(_key(a) for a in cls.aliases)):
        owner = _REGISTRY.get(key) or (_REGISTRY.get(_ALIASES[key]) if key in _ALIASES else None)
        if owner is not None and owner is not cls and not _redefinition(owner, cls):
            raise TaylorSolveError(f"sampler name {key!r} is taken by {owner.__module__}.{owner.__qualname__}")
    _REGISTRY[name] = cls
    for a in cls.aliases:
        _ALIASES[_key(a)] = name
    return cls


def canonical_method(method: Any) -> str:
    """The registered name of ``method`` (case, ``_`` vs ``-`` and aliases tolerated)."""
    if not isinstance(method, str):
        raise TaylorSolveError(f"method must be a string, one of: {', '.join(available_methods())}; got {method!r}")
    key = _key(method)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise TaylorSolveError(f"unknown method {method!r}; known methods: {', '.join(available_methods())}")
    return key


def get_sampler(method: str) -> type[Sampler]:
    """The :class:`Sampler` class registered as ``method`` (or one of its aliases)."""
    return _REGISTRY[canonical_method(method)]


def available_methods() -> tuple[str, ...]:
    """All registered method names, in registration order."""
    return tuple(_REGISTRY)


def sampler_table() -> str:
    """A plain-text table of the registered methods: name, order, coordinates, NFE rule, summary."""
    rows = [("method", "order", "coords", "NFE of N steps", "what it is")]
    for name, cls in _REGISTRY.items():
        if cls.orders is None:
            order = "p"
        else:
            order = "/".join(map(str, cls.orders))
        rows.append((name, order, cls.coordinates, cls.nfe_rule, cls.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)
