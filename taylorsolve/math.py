"""Elementary functions that work on every kind of state a right-hand side ``f(t, y)`` may receive.

A user writes ``f`` once; the coefficient backends call it with different objects:

* ``torch.Tensor`` (``"autodiff"``, ``"finite_difference"``, ``"supplied"``, plain evaluation),
* Taylor-mode jets and the compiled path's tape arrays (``"taylor_mode"``), which implement
  ``__torch_function__``,
* :class:`~taylorsolve._symbolic_array.SymbolicArray` / SymPy expressions (``"symbolic"``).

Every function here dispatches on its arguments: if any argument (recursively inside lists and
tuples) is a SymPy object or a ``SymbolicArray``, the SymPy implementation runs; otherwise the
corresponding torch function is called, so tensors *and* any object that implements
``__torch_function__`` are served (nothing is rejected for not being a ``torch.Tensor``).

The functions and ``__all__`` come from the operations table :mod:`taylorsolve._ops` (its entries with
``math=True``): adding an elementwise function there adds it here, to the jets, to the compiled path
and to the symbolic backend.

SymPy is imported lazily: if it has never been imported, no argument can be symbolic, and the
check costs a dictionary lookup.

Example::

    from taylorsolve import math as tm

    def pendulum(t, y):
        return tm.stack([y[..., 1], -tm.sin(y[..., 0])], dim=-1)

On SymPy scalars the elementwise functions return plain SymPy expressions
(``tm.sin(x) == sympy.sin(x)``, ``tm.sigmoid(x) == 1/(1 + exp(-x))``); on symbolic arrays they return
symbolic arrays.
"""
from __future__ import annotations

import builtins
import inspect
import sys
from typing import Any, Callable

from ._ops import OPS, Op, on_change

__all__ = ["is_symbolic"]


def is_symbolic(x: Any) -> bool:
    """True if ``x`` (recursively inside lists/tuples) is a SymPy object or a ``SymbolicArray``."""
    if isinstance(x, (list, tuple)):
        return builtins.any(is_symbolic(v) for v in x)
    sa = sys.modules.get("taylorsolve._symbolic_array")
    if sa is not None and isinstance(x, sa.SymbolicArray):
        return True
    sympy = sys.modules.get("sympy")
    if sympy is not None and isinstance(x, (sympy.Basic, sympy.MatrixBase, sympy.NDimArray)):
        return True
    return False


def _sym(name: str, *args: Any, **kwargs: Any) -> Any:
    from ._symbolic_array import symbolic_call

    return symbolic_call(name, *args, **kwargs)


def _make(op: Op) -> Callable[..., Any]:
    torch_fn = op.torch
    name = op.name

    def fn(*args: Any, **kwargs: Any) -> Any:
        if is_symbolic(args) or is_symbolic(list(kwargs.values())):
            return _sym(name, *args, **kwargs)
        return torch_fn(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    try:
        fn.__signature__ = inspect.signature(torch_fn)  # type: ignore[attr-defined]
    except (TypeError, ValueError):  # builtins without a signature: keep (*args, **kwargs)
        if op.kind == "unary" and not op.params:
            fn.__signature__ = inspect.Signature([inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)])  # type: ignore[attr-defined]
    where = getattr(torch_fn, "__module__", None) or "torch"
    where = "torch" if where.startswith("torch._C") else where
    fn.__doc__ = (op.doc or "") + (
        f"\n\nSymPy argument -> SymPy result; otherwise ``{where}.{getattr(torch_fn, '__name__', name)}``."
    )
    return fn


def _rebuild() -> None:
    """(Re)create the functions from the operations table (called again when an entry is added)."""
    for name in __all__[1:]:
        globals().pop(name, None)
    del __all__[1:]
    for op in OPS:
        if op.math:
            globals()[op.name] = _make(op)
            __all__.append(op.name)


_rebuild()
on_change(_rebuild)
