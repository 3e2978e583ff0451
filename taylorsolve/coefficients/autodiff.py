"""Taylor coefficients by forward-mode automatic differentiation (``torch.func.jvp``).

Along the solution, ``g(s) = f(t + s, y(t + s))``.  If ``y`` is replaced by its Taylor polynomial of
degree ``k``, ``P_k(s) = sum_{j<=k} c_j s^j``, then ``g^(k)(0)`` is exact (coefficients above ``k`` do
not influence the ``k``-th derivative of ``f(t + s, P(s))`` at ``s = 0``) and

    c_{k+1} = y^(k+1)(t) / (k+1)! = g^(k)(0) / (k+1)!.

``g^(k)(0)`` is obtained by nesting ``torch.func.jvp`` ``k`` times around the scalar map
``s -> f(t + s, P_k(s))`` with unit tangent.  For ``k = 1`` this is a single JVP with the tangent pair
``(dt, dy) = (1, f(t, y))``: exactly the total derivative of GENIE eq. (12), ``d f/dt + J_y f . f``.

Cost: each nesting level carries primal and tangent through every operation of the level below, and
a product of dual numbers costs about three products, so the ``k``-th coefficient costs roughly
``3^k``-``4^k`` evaluations of ``f``.  Measured (``python benchmarks/coefficient_cost.py --threads 1``,
Kepler, 4 entries): all coefficients up to order 1..7 cost 1.3x, 92x, 254x, 1.1e3x, 4.5e3x, 2.2e4x and
9.2e4x one evaluation of ``f``; on a batch of 10^5 entries 0.9x, 21x, 70x, 256x, 991x, 3.6e3x, 1.3e4x.
This is fine for the orders used in diffusion sampling (2-4); for high orders use the
``"taylor_mode"`` backend (cost O(p^2): 16x..103x on the same problem for orders 2..8).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.func import jvp

from ..errors import check_rhs_output
from .base import RHS, CoefficientBackend, register_backend

__all__ = ["AutodiffBackend", "horner"]


def horner(coeffs: list[torch.Tensor], s: torch.Tensor) -> torch.Tensor:
    """Evaluate ``sum_k coeffs[k] * s**k`` by Horner's rule (``s`` broadcasts against the coefficients)."""
    acc = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = acc * s + c
    return acc


def _nested_derivative(g: Callable[[torch.Tensor], torch.Tensor], k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``s -> g^(k)(s)`` for a scalar-argument ``g`` by nesting ``k`` forward-mode JVPs."""
    fn = g
    for _ in range(k):
        fn = (lambda h: (lambda s: jvp(h, (s,), (torch.ones_like(s),))[1]))(fn)
    return fn


class AutodiffBackend(CoefficientBackend):
    """``backend="autodiff"``: coefficients by nested ``torch.func.jvp`` (any differentiable torch ``f``).

    Derivative leaks: the first evaluation of ``f`` after :meth:`reset` (once per solve) runs under
    :class:`~taylorsolve.coefficients.leaks.LeakDetector` when derivatives are needed (order >= 2), so
    an ``f`` that calls ``float()``, ``detach()``, ``tolist()`` or NumPy on values computed from ``y``
    raises :class:`~taylorsolve.errors.DerivativeLeakError` instead of returning silently wrong
    coefficients.  No extra evaluation of ``f`` is made.
    """

    name = "autodiff"

    def reset(self) -> None:
        super().reset()
        self._leak_checked = False

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        if f0 is None and order >= 2 and not getattr(self, "_leak_checked", False):
            from .leaks import check_no_leak

            out = check_no_leak(f, t, y)
            self.counters.f_evals += 1
            f0 = check_rhs_output(out, y)
            self._leak_checked = True
        if f0 is None:
            f0 = self.eval_f(f, t, y)
        coeffs = [y, f0]
        s0 = torch.zeros((), dtype=t.dtype, device=t.device)
        for k in range(1, order):
            known = list(coeffs)  # c_0 .. c_k, frozen for this closure

            def g(s: torch.Tensor, known: list[torch.Tensor] = known) -> torch.Tensor:
                return f(t + s, horner(known, s.to(y.dtype)))

            dk = _nested_derivative(g, k)(s0)
            self.counters.derivative_evals += 1
            self.counters.jvp_passes += k
            coeffs.append(dk / math.factorial(k + 1))
        return coeffs


register_backend("autodiff", AutodiffBackend)
