"""Taylor coefficients from user-supplied total derivatives (closed form, or a learned model).

The user passes ``derivatives(t, y, f0, order)`` returning ``[y^(2), ..., y^(order)]``: the total
derivatives of the solution (not divided by factorials) at ``(t, y)``; ``f0 = f(t, y) = y'`` is
passed in so that a model of the derivative can use it (GENIE's distilled head receives
``eps_theta``, sec. 3.1).  This is how a distilled prediction head plugs into the p-th TTM.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..errors import TaylorSolveError, check_rhs_output
from .base import RHS, CoefficientBackend, register_backend

__all__ = ["SuppliedBackend", "DerivativeFn"]

DerivativeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], Sequence[torch.Tensor]]


class SuppliedBackend(CoefficientBackend):
    """``backend="supplied"``: ``c_k = y^(k) / k!`` with ``y^(k)`` from the user's ``derivatives``."""

    name = "supplied"

    def __init__(self, derivatives: DerivativeFn | None = None) -> None:
        super().__init__()
        if derivatives is None or not callable(derivatives):
            raise TaylorSolveError(
                "backend='supplied' needs derivatives=callable(t, y, f0, order) returning "
                "[y^(2), ..., y^(order)]"
            )
        self.derivatives = derivatives

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        if f0 is None:
            f0 = self.eval_f(f, t, y)
        coeffs = [y, f0]
        if order < 2:
            return coeffs
        ders = self.derivatives(t, y, f0, order)
        self.counters.derivative_evals += 1
        if isinstance(ders, torch.Tensor) or not isinstance(ders, Sequence):
            raise TaylorSolveError(
                "supplied derivatives(t, y, f0, order) must return a list [y^(2), ..., y^(order)], "
                f"got {type(ders).__name__}"
            )
        if len(ders) < order - 1:
            raise TaylorSolveError(
                f"supplied derivatives returned {len(ders)} derivatives; order {order} needs "
                f"{order - 1} ([y^(2), ..., y^({order})])"
            )
        for k, d in enumerate(ders[: order - 1], start=2):
            check_rhs_output(d, y, where=f"supplied derivative y^({k})")
            coeffs.append(d / math.factorial(k))
        return coeffs


register_backend("supplied", SuppliedBackend)
