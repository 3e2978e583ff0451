"""Detect ``f`` dropping the derivatives a backend tracks, for backends that call ``f`` on plain tensors.

The tracing backends refuse such conversions by construction (their stand-ins raise
:class:`~taylorsolve.errors.DerivativeLeakError` on ``float()``, ``detach()``, ``tolist()``...).  The
``"autodiff"`` backend calls ``f`` on real tensors, where ``math.sin(float(y[0]))``, ``y.detach()`` or
``torch.tensor(y.tolist())`` run silently and every nested JVP sees a constant: the coefficients, and
the solution, are then wrong by O(h^2) per step without a word.

:func:`check_no_leak` runs one evaluation of ``f`` (the one the backend needs anyway: no extra
evaluation) under a ``TorchFunctionMode`` that taints ``y`` and everything computed from it, and raises
naming the call when a tainted tensor is converted to a number, detached, copied into a new tensor
(``torch.tensor``) or handed to NumPy.  Using such values only for control flow (``if y.max() > 1``
via ``bool``) is allowed; ``item()``/``float()`` are not, because whether the number re-enters the
arithmetic cannot be seen.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from .._tensorlike import _LEAK_NAMES, torch_function_name
from ..errors import DerivativeLeakError

__all__ = ["check_no_leak", "LeakDetector"]

#: functions that return something without the derivatives of their (tainted) input
_LEAKS = {
    **_LEAK_NAMES,                       # the conversions the tracing stand-ins refuse too
    "tensor": "torch.tensor(...)",
    "new_tensor": "Tensor.new_tensor(...)",
}
#: copy constructors that leak only when a tainted tensor sits inside a list/tuple argument
_COPY_FROM_SEQUENCE = {"as_tensor", "asarray"}


class LeakDetector(TorchFunctionMode):
    """Taints ``roots`` and every tensor computed from them; raises on a derivative leak (module docstring)."""

    def __init__(self, roots: list[torch.Tensor]) -> None:
        super().__init__()
        self._ids = {id(r) for r in roots}
        self._keep: list[Any] = list(roots)  # keep tainted tensors alive so their ids stay unique

    def _tainted(self, x: Any, depth: int = 0) -> bool:
        if isinstance(x, torch.Tensor):
            return id(x) in self._ids
        if depth < 3 and isinstance(x, (list, tuple)):
            return any(self._tainted(v, depth + 1) for v in x)
        if depth < 3 and isinstance(x, dict):
            return any(self._tainted(v, depth + 1) for v in x.values())
        return False

    def _taint(self, x: Any, depth: int = 0) -> None:
        if isinstance(x, torch.Tensor):
            self._ids.add(id(x))
            self._keep.append(x)
        elif depth < 3 and isinstance(x, (list, tuple)):
            for v in x:
                self._taint(v, depth + 1)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        tainted = self._tainted(args) or self._tainted(kwargs)
        if tainted:
            name = getattr(func, "__name__", "")
            if name == "__get__" and getattr(getattr(func, "__self__", None), "__name__", "") == "data":
                self._raise(".data")
            what = _LEAKS.get(name)
            if what is None and name in _COPY_FROM_SEQUENCE and args and isinstance(args[0], (list, tuple)):
                what = f"torch.{name}([...])"
            if what is not None:
                self._raise(what if name not in ("tensor",) else f"{torch_function_name(func)}(...)")
        out = func(*args, **kwargs)
        if tainted:
            self._taint(out)
            name = getattr(func, "__name__", "")
            if name == "__setitem__" or (name.endswith("_") and not name.startswith("__")):
                self._taint(args[0])
            if kwargs.get("out") is not None:
                self._taint(kwargs["out"])
        return out

    @staticmethod
    def _raise(what: str) -> None:
        raise DerivativeLeakError(
            f"f calls {what} on a value computed from the state y: the result carries no derivatives, so the "
            "autodiff backend's Taylor coefficients would be silently wrong. Build results with torch operations "
            "(torch.stack / torch.cat / indexing, torch.sin instead of math.sin) instead",
            operation=what,
        )


def check_no_leak(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Evaluate ``f(t, y)`` once under :class:`LeakDetector` and return its value (raises on a leak)."""
    with LeakDetector([y]):
        return f(t, y)
