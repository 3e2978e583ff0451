"""Taylor coefficients from finite differences of past ``f`` values: the multistep family.

With the last ``m`` values ``f_j = f(t_j, y_j)`` (``t_n`` the newest), let ``P`` be the polynomial of
degree ``m - 1`` interpolating them, written in ``s = t - t_n``: ``P(s) = sum_i a_i s^i``.  Using
``P^(i)(0)`` in place of ``y^(i+1)(t_n)`` gives

    c_0 = y_n,   c_{i+1} = a_i / (i + 1)       (i = 0 .. m-1),

and the p-th truncated Taylor step with these coefficients integrates ``P`` exactly:
``y_{n+1} = y_n + int_0^h P(s) ds``.  That is the (variable-step) ``p``-step Adams-Bashforth method,
the equivalence the GENIE paper points out in "Comparison to Multistep Methods" (sec. 3).  Step sizes
may vary: the interpolation uses the actual past times.  While fewer than ``p`` values are known the
method warms up: by default with the order the history allows (AB-1 = Euler first, then AB-2, ...),
which limits the global order to 2 (the Euler step's local error is O(h^2)); with ``starter=``
another backend (e.g. ``"autodiff"``) computes the full-order coefficients on the first ``p - 1``
steps, like the Runge-Kutta warm-up of F-PNDM, and the method keeps its order ``p``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import TaylorSolveError
from .base import RHS, CoefficientBackend, get_backend, register_backend

__all__ = ["FiniteDifferenceBackend", "interpolation_monomial_weights"]


def interpolation_monomial_weights(nodes: np.ndarray) -> np.ndarray:
    """Matrix ``W`` with ``a_i = sum_j W[i, j] f_j`` for the interpolant ``P(s) = sum_i a_i s^i`` through ``(nodes[j], f_j)``.

    Computed in float64 from the Lagrange basis: the ``j``-th basis polynomial is
    ``prod_{l != j} (s - s_l) / (s_j - s_l)``.
    """
    m = len(nodes)
    W = np.zeros((m, m))
    for j in range(m):
        others = np.delete(nodes, j)
        basis = np.polynomial.polynomial.polyfromroots(others) if m > 1 else np.ones(1)
        W[:, j] = basis / np.prod(nodes[j] - others)
    return W


class FiniteDifferenceBackend(CoefficientBackend):
    """``backend="finite_difference"``: coefficients from the history of ``f`` values (Adams-Bashforth).

    Options: ``warm_start`` (default ``True``): with too little history, use the order it allows; with
    ``False`` a request for more coefficients than the history supports raises.  ``history``: an
    optional list of ``(t_j, f_j)`` pairs from before the first call (oldest first).  ``starter``: a
    backend (name or instance) that supplies full-order coefficients while the history is short.
    """

    name = "finite_difference"
    stateless = False

    def __init__(
        self,
        warm_start: bool = True,
        history: list[tuple[float, torch.Tensor]] | None = None,
        starter: str | CoefficientBackend | None = None,
    ) -> None:
        super().__init__()
        self.warm_start = warm_start
        self.starter = None if starter is None else get_backend(starter)
        self._initial_history = list(history or [])
        self._history: list[tuple[float, torch.Tensor]] = list(self._initial_history)
        #: order actually used at the last call (< requested while warming up)
        self.effective_order = 0

    def reset(self) -> None:
        super().reset()
        if self.starter is not None:
            self.starter.reset()
        self._history = list(self._initial_history)
        self.effective_order = 0

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        if f0 is None:
            f0 = self.eval_f(f, t, y)
        tn = float(t)
        if self._history and self._history[-1][0] == tn:
            self._history[-1] = (tn, f0)  # same point asked again: replace, do not duplicate
        else:
            self._history.append((tn, f0))
        self._history = self._history[-max(order, 1):]
        m = min(order, len(self._history))
        if m < order and self.starter is not None:
            before = (self.starter.counters.derivative_evals, self.starter.counters.jvp_passes)
            coeffs = self.starter.coefficients(f, t, y, order, f0=f0)
            self.counters.derivative_evals += self.starter.counters.derivative_evals - before[0]
            self.counters.jvp_passes += self.starter.counters.jvp_passes - before[1]
            self.effective_order = order
            return coeffs
        if m < order and not self.warm_start:
            raise TaylorSolveError(
                f"finite_difference backend has {len(self._history)} past f values but order {order} "
                f"needs {order}; pass history=[(t_j, f_j), ...] or use it inside solve() (warm start)"
            )
        self.effective_order = m
        recent = self._history[-m:]
        nodes = np.array([tj - tn for tj, _ in recent], dtype=np.float64)
        if len(set(nodes.tolist())) != m:
            raise TaylorSolveError("finite_difference history has repeated times; the grid must be strictly monotone")
        W = torch.as_tensor(interpolation_monomial_weights(nodes), dtype=y.dtype, device=y.device)
        fs = torch.stack([fj for _, fj in recent])  # [m, *shape]
        a = torch.tensordot(W, fs, dims=([1], [0]))  # [m, *shape]: a_i
        self.counters.derivative_evals += 1 if m > 1 else 0
        coeffs = [y] + [a[i] / (i + 1) for i in range(m)]
        zeros = torch.zeros_like(y)
        coeffs += [zeros] * (order - m)
        return coeffs


register_backend("finite_difference", FiniteDifferenceBackend)
