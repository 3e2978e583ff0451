"""The protocol every Taylor-coefficient backend follows, and the backend registry.

For the initial value problem ``dy/dt = f(t, y)``, ``y(t0) = y0`` the Taylor coefficients of the
solution at ``t0`` are ``c_k = y^(k)(t0) / k!`` so that

    y(t0 + h) = sum_{k=0}^{p} c_k h^k + O(h^{p+1})           (GENIE paper, eq. (8))

is the p-th truncated Taylor method (TTM).  A backend turns ``(f, t0, y0, p)`` into
``[c_0, ..., c_p]``.  Backends differ only in *where the higher total derivatives come from*
(symbolic differentiation, automatic differentiation, finite differences of past f values, or a
user-supplied callable); the stepping code never knows which one it talks to.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from ..errors import TaylorSolveError, check_rhs_output

__all__ = [
    "RHS",
    "BackendCounters",
    "CoefficientBackend",
    "register_backend",
    "get_backend",
    "available_backends",
]


class RHS(Protocol):
    """A right-hand side ``f(t, y) -> dy/dt``: ``t`` a 0-d tensor, ``y`` a tensor, output shaped like ``y``."""

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@dataclass
class BackendCounters:
    """Work done by a backend.

    ``f_evals`` counts plain evaluations of ``f`` (one primal pass each).  ``derivative_evals`` counts
    calls that produce higher derivatives: one per forward-mode JVP pass (autodiff), per call of a
    supplied derivative function, per compiled symbolic evaluation, per Taylor-mode sweep.
    """

    f_evals: int = 0
    derivative_evals: int = 0
    #: forward-mode JVP passes (a depth-k nested JVP counts k); 0 for backends that use none
    jvp_passes: int = 0

    def reset(self) -> None:
        self.f_evals = 0
        self.derivative_evals = 0
        self.jvp_passes = 0


class CoefficientBackend(abc.ABC):
    """Computes Taylor coefficients ``[c_0, ..., c_order]`` of the solution through ``(t, y)``.

    Subclasses implement :meth:`coefficients`.  Stateful backends (finite differences keep a history
    of f values) override :meth:`reset`, which :func:`taylorsolve.solve` calls before every solve.
    ``y`` may carry leading batch dimensions; batch members are independent problems.
    """

    #: registry name of the backend
    name: str = "abstract"
    #: whether the coefficients at a point depend only on (t, y) (False for multistep history)
    stateless: bool = True

    def __init__(self) -> None:
        self.counters = BackendCounters()

    def reset(self) -> None:
        """Forget any per-solve state (history).  Counters are reset too."""
        self.counters.reset()

    @abc.abstractmethod
    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Return ``[c_0, ..., c_order]``, each shaped like ``y``; ``c_0 = y`` and ``c_1 = f(t, y)``.

        ``f0``, when given, is ``f(t, y)`` already evaluated by the caller (saves one evaluation).
        """

    # helpers for subclasses -------------------------------------------------------------------
    def eval_f(self, f: RHS, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Evaluate ``f`` once, check its output's shape and dtype, and count it."""
        out = f(t, y)
        self.counters.f_evals += 1
        return check_rhs_output(out, y)


_REGISTRY: dict[str, Callable[..., CoefficientBackend]] = {}


def register_backend(name: str, factory: Callable[..., CoefficientBackend]) -> None:
    """Register ``factory(**options) -> CoefficientBackend`` under ``name``."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    """Names accepted by ``backend=`` arguments."""
    from . import _load_builtin_backends

    _load_builtin_backends()
    return sorted(_REGISTRY)


def get_backend(backend: str | CoefficientBackend, **options: Any) -> CoefficientBackend:
    """Return a backend instance: ``backend`` itself if it is one, else a new one built from its name."""
    if isinstance(backend, CoefficientBackend):
        if options:
            raise TaylorSolveError(
                f"backend options {sorted(options)} cannot be applied to an existing backend instance"
            )
        return backend
    from . import _load_builtin_backends

    _load_builtin_backends()
    if not isinstance(backend, str) or backend not in _REGISTRY:
        raise TaylorSolveError(
            f"unknown backend {backend!r}; available backends: {', '.join(sorted(_REGISTRY))}"
        )
    factory = _REGISTRY[backend]
    valid = backend_option_names(factory)
    if valid is not None:
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TaylorSolveError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for backend "
                f"{backend!r}; valid options: {', '.join(valid) if valid else '(none)'}"
            )
    return factory(**options)


_OPTION_NAMES: dict[Any, list[str] | None] = {}


def backend_option_names(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword options a backend factory accepts (None if it takes ``**kwargs``)."""
    try:
        return _OPTION_NAMES[factory]
    except (KeyError, TypeError):
        pass
    names = _option_names(factory)
    try:
        _OPTION_NAMES[factory] = names
    except TypeError:  # unhashable factory
        pass
    return names


def _option_names(factory: Callable[..., Any]) -> list[str] | None:
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY) and p.name != "self":
            names.append(p.name)
    return names
