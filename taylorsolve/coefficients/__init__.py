"""Taylor-coefficient backends: auto (default), Taylor-mode (interpreted and compiled), autodiff, symbolic,
finite difference, supplied."""
from __future__ import annotations

import importlib

from .base import (
    RHS,
    BackendCounters,
    CoefficientBackend,
    available_backends,
    get_backend,
    register_backend,
)

__all__ = [
    "RHS",
    "BackendCounters",
    "CoefficientBackend",
    "available_backends",
    "get_backend",
    "register_backend",
]

# Built-in backend modules register themselves on import.  They are imported lazily so that, e.g.,
# SymPy is not imported by users who never ask for the symbolic backend.
_BUILTIN_MODULES = ("autodiff", "supplied", "finite_difference", "symbolic", "taylor_mode", "auto")
_loaded = False


def _load_builtin_backends() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # a backend module not written yet must not break the rest
            if exc.name != f"{__name__}.{mod}":
                raise
    _loaded = True
