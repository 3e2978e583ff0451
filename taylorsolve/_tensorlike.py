"""``TensorLike``: the shared base of the objects that stand in for tensors while a backend traces ``f``.

Taylor-mode jets (:class:`~taylorsolve.coefficients.taylor_mode.Jet`), the compiled path's scalar tape
arrays (:class:`~taylorsolve.coefficients.tape.TapeArray`) and SymPy arrays
(:class:`~taylorsolve._symbolic_array.SymbolicArray`) all need the same machinery, kept here once:

* tensor-like metadata (``shape``, ``dtype``, ``device``, ``ndim``, ``size()``, ``numel()``, ``T``, ...);
* refusing conversion to numbers (``float()``, ``int()``, ``item()``, ``tolist()``, ``numpy()``,
  ``detach()``...): each raises :class:`~taylorsolve.errors.DerivativeLeakError` naming the call, because
  the value would silently stop carrying derivatives;
* the Python operators, which dispatch by name like torch functions do;
* ``__torch_function__``: ``torch.sin(x)``, ``x.sin()`` and ``F.softplus(x)`` all dispatch by the function's
  name through the subclass's table (built from :mod:`taylorsolve._ops`), and an unknown name raises
  :class:`~taylorsolve.errors.UnsupportedOperationError` naming the torch function;
* method lookup (``x.sum(-1)``, in-place ``x.add_(1)`` where the subclass allows it).

Subclasses set ``backend_name``, ``_table`` (``name -> impl(func, args, kwargs)``) and implement the
metadata properties ``shape``, ``dtype`` and ``device``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from ._ops import REVERSED
from .errors import DerivativeLeakError, UnsupportedOperationError

__all__ = ["TensorLike", "torch_function_name", "UnsupportedAttribute"]


class UnsupportedAttribute(UnsupportedOperationError, AttributeError):
    """A ``Tensor`` method a stand-in does not implement (an ``AttributeError`` too, so ``hasattr`` is False)."""


def torch_function_name(func: Any) -> str:
    """A readable dotted name for a torch function/method (``torch.erfinv``, ``torch.Tensor.erfinv``)."""
    if isinstance(func, str):
        return func
    name = getattr(func, "__name__", None) or repr(func)
    if name == "__get__" and hasattr(func, "__self__"):  # a Tensor property getter (e.g. Tensor.data)
        return f"torch.Tensor.{getattr(func.__self__, '__name__', name)}"
    candidates = [
        ("torch", torch, name),
        ("torch.nn.functional", torch.nn.functional, name),
        ("torch.special", torch.special, name.removeprefix("special_")),
        ("torch.linalg", torch.linalg, name.removeprefix("linalg_")),
        ("torch.fft", torch.fft, name.removeprefix("fft_")),
    ]
    for prefix, mod, attr in candidates:
        try:
            if getattr(mod, attr, None) is func:
                return f"{prefix}.{attr}"
        except Exception:  # pragma: no cover - exotic attribute access
            pass
    for cls in (torch.Tensor, torch._C.TensorBase):
        if getattr(cls, name, None) is func:
            return f"torch.Tensor.{name}"
    qual = getattr(func, "__qualname__", name)
    if "TensorBase." in qual or "Tensor." in qual:
        return f"torch.Tensor.{name}"
    module = getattr(func, "__module__", None) or "torch"
    if module.startswith("torch._C") or module == "torch":
        return f"torch.{name}"
    return f"{module}.{name}"


_LEAK_HINT = (
    "build results from y with torch operations (torch.stack / torch.cat / torch.zeros_like(y) and "
    "indexing) instead"
)


#: conversions that drop derivatives, by torch name -> how messages call them
_LEAK_NAMES = {
    "detach": "detach()",
    "detach_": "detach_()",
    "item": "item()",
    "tolist": "tolist()",
    "numpy": "numpy()",
    "__float__": "float()",
    "__int__": "int()",
    "__index__": "an index conversion",
    "__complex__": "complex()",
    "__array__": "numpy.asarray()",
}


class TensorLike:
    """Shared base of the tracing stand-ins (see the module docstring)."""

    __array_priority__ = 1000  # NumPy scalars and arrays defer to our reflected operators
    __array_ufunc__ = None
    __slots__ = ()

    #: registry name of the backend this stand-in traces for ("taylor_mode", "compiled", "symbolic")
    backend_name: ClassVar[str] = "abstract"
    #: name -> implementation(func, args, kwargs); built from the operations table by each subclass
    _table: ClassVar[dict[str, Callable[[Any, tuple, dict], Any]]] = {}
    #: what the error messages call the object ("a Jet", "a symbolic array", ...)
    _what: ClassVar[str] = "a traced value"
    #: exception classes (the symbolic backend's are also SymbolicBackendErrors)
    _unsupported_error: ClassVar[type] = UnsupportedOperationError
    _attribute_error: ClassVar[type] = UnsupportedAttribute
    _leak_error: ClassVar[type] = DerivativeLeakError

    # ---- errors ------------------------------------------------------------------------------------
    @classmethod
    def _unsupported(cls, what: Any, extra: str = "") -> UnsupportedOperationError:
        name = torch_function_name(what)
        return cls._unsupported_error(
            f"{name} is not supported by the {cls.backend_name} backend{extra}", operation=name, backend=cls.backend_name
        )

    def _leak(self, what: str) -> Any:
        raise self._leak_error(
            f"f calls {what} on {self._what} computed from the state y: the result would carry no derivatives, "
            f"so every derivative-based backend would return silently wrong Taylor coefficients; {_LEAK_HINT}",
            operation=what,
        )

    # ---- metadata (subclasses provide shape, dtype, device) ----------------------------------------
    @property
    def shape(self) -> torch.Size:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        return self.shape[dim]

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def nelement(self) -> int:
        return self.numel()

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def is_complex(self) -> bool:
        return self.dtype.is_complex

    @property
    def requires_grad(self) -> bool:
        return False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def T(self) -> Any:
        return self._call("permute", (self, tuple(range(self.ndim - 1, -1, -1))), {}) if self.ndim > 1 else self

    @property
    def mT(self) -> Any:
        return self._call("transpose", (self, -2, -1), {})

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError(f"len() of a 0-d {type(self).__name__}")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError(f"iteration over a 0-d {type(self).__name__}")
        return iter(self._call("unbind", (self, 0), {}))

    # ---- conversions that would silently drop the derivatives --------------------------------------
    def __float__(self) -> float:
        return self._leak("float()")

    def __int__(self) -> int:
        return self._leak("int()")

    def __index__(self) -> int:
        return self._leak("an index conversion")

    def __complex__(self) -> complex:
        return self._leak("complex()")

    def item(self) -> Any:
        return self._leak("item()")

    def tolist(self) -> Any:
        return self._leak("tolist()")

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        return self._leak("numpy()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self._leak("numpy.asarray()")

    def detach(self) -> Any:
        return self._leak("detach()")

    @property
    def data(self) -> Any:
        return self._leak(".data")

    def __bool__(self) -> bool:
        raise self._unsupported_error(
            f"the truth value of {self._what} is not defined while tracing f (a Python `if` on the state); "
            "use torch.where for data-dependent branches",
            operation="bool()",
            backend=self.backend_name,
        )

    # ---- dispatch ----------------------------------------------------------------------------------
    @classmethod
    def _call(cls, name: str, args: tuple, kwargs: dict, func: Any = None) -> Any:
        impl = cls._table.get(name)
        if impl is None:
            raise cls._unsupported(func if func is not None else f"torch.{name}")
        return impl(func if func is not None else _NamedFunc(name), args, kwargs)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", None)
        if name == "__get__" and hasattr(func, "__self__"):  # property getters (Tensor.data, .T, .mT)
            prop = getattr(func.__self__, "__name__", "")
            if prop == "data":
                return args[0]._leak(".data") if isinstance(args[0], TensorLike) else func(*args)
            if prop in ("T", "mT", "shape", "dtype", "device", "ndim"):
                return getattr(args[0], prop)
            raise cls._unsupported(f"torch.Tensor.{prop}")
        if name in _LEAK_NAMES and args and isinstance(args[0], TensorLike):
            return args[0]._leak(_LEAK_NAMES[name])
        if name in REVERSED and len(args) == 2:
            name, args = REVERSED[name], (args[1], args[0])
        if name is None or name not in cls._table:
            raise cls._unsupported(func)
        if kwargs.get("out", None) is not None:
            raise cls._unsupported_error(
                f"the out= argument of {torch_function_name(func)} is not supported by the {cls.backend_name} backend",
                operation=torch_function_name(func),
                backend=cls.backend_name,
            )
        kwargs.pop("out", None)
        return cls._table[name](func, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        # Tensor methods that are not attributes of the class: look them up in the table by name.
        if name.startswith("__"):
            raise AttributeError(name)
        table = type(self)._table
        if name in table and hasattr(torch.Tensor, name):
            method = getattr(torch.Tensor, name)
            impl = table[name]
            return lambda *args, **kwargs: impl(method, (self, *args), kwargs)
        if name.endswith("_") and name[:-1] in table and hasattr(torch.Tensor, name[:-1]):
            return self._inplace(name)
        if hasattr(torch.Tensor, name):
            raise self._attribute_error(
                f"torch.Tensor.{name} is not supported by the {self.backend_name} backend",
                operation=f"torch.Tensor.{name}",
                backend=self.backend_name,
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _inplace(self, name: str) -> Callable[..., Any]:
        """In-place methods (``x.add_(1)``): subclasses that can rebind their value override this."""
        raise self._attribute_error(
            f"in-place torch.Tensor.{name} is not supported by the {self.backend_name} backend",
            operation=f"torch.Tensor.{name}",
            backend=self.backend_name,
        )

    # ---- Python operators --------------------------------------------------------------------------
    def __add__(self, o: Any) -> Any:
        return self._call("add", (self, o), {})

    def __radd__(self, o: Any) -> Any:
        return self._call("add", (o, self), {})

    def __sub__(self, o: Any) -> Any:
        return self._call("sub", (self, o), {})

    def __rsub__(self, o: Any) -> Any:
        return self._call("sub", (o, self), {})

    def __mul__(self, o: Any) -> Any:
        return self._call("mul", (self, o), {})

    def __rmul__(self, o: Any) -> Any:
        return self._call("mul", (o, self), {})

    def __truediv__(self, o: Any) -> Any:
        return self._call("div", (self, o), {})

    def __rtruediv__(self, o: Any) -> Any:
        return self._call("div", (o, self), {})

    def __pow__(self, o: Any) -> Any:
        return self._call("pow", (self, o), {})

    def __rpow__(self, o: Any) -> Any:
        return self._call("pow", (o, self), {})

    def __matmul__(self, o: Any) -> Any:
        return self._call("matmul", (self, o), {})

    def __rmatmul__(self, o: Any) -> Any:
        return self._call("matmul", (o, self), {})

    def __neg__(self) -> Any:
        return self._call("neg", (self,), {})

    def __pos__(self) -> Any:
        return self

    def __abs__(self) -> Any:
        return self._call("abs", (self,), {})

    def __floordiv__(self, o: Any) -> Any:
        raise self._unsupported("floor division (//)")

    __rfloordiv__ = __floordiv__

    def __mod__(self, o: Any) -> Any:
        raise self._unsupported("the remainder (%)")

    __rmod__ = __mod__

    def __lt__(self, o: Any) -> Any:
        return self._call("lt", (self, o), {})

    def __le__(self, o: Any) -> Any:
        return self._call("le", (self, o), {})

    def __gt__(self, o: Any) -> Any:
        return self._call("gt", (self, o), {})

    def __ge__(self, o: Any) -> Any:
        return self._call("ge", (self, o), {})

    def __and__(self, o: Any) -> Any:
        return self._call("logical_and", (self, o), {})

    __rand__ = __and__

    def __or__(self, o: Any) -> Any:
        return self._call("logical_or", (self, o), {})

    __ror__ = __or__

    def __invert__(self) -> Any:
        return self._call("logical_not", (self,), {})

    def __getitem__(self, idx: Any) -> Any:
        return self._call("__getitem__", (self, idx), {})

    def __setitem__(self, idx: Any, value: Any) -> None:
        self._call("__setitem__", (self, idx, value), {})

    __hash__ = object.__hash__


class _NamedFunc:
    """Stand-in for a torch function object when an operator dispatches by name (``__name__`` only)."""

    __slots__ = ("__name__",)

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(torch, self.__name__, None) or getattr(torch.Tensor, self.__name__)
        return fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"torch.{self.__name__}"
