r"""UniPC (Zhao, Bai, Rao, Zhou & Lu, NeurIPS 2023, arXiv:2302.04867): the multistep predictor-corrector
with data prediction and ``B(h) = e^h - 1`` ("bh2"), on the DDIM ODE in ``(xbar, gamma)``.

Equations (U1)-(U4) are this module's; ``eq. (n)`` is the GENIE paper; the UniPC paper is cited by
theorem and corollary.

**The exact step** (variation of constants).  With the data prediction ``x0 = xbar - gamma eps`` the
DDIM ODE ``d xbar / d gamma = eps`` (eq. (6)) reads ``d xbar / d gamma = (xbar - x0) / gamma``, i.e.
``d (xbar / gamma) / d gamma = -x0 / gamma^2``.  In ``lambda = -log gamma`` (half the log-SNR) and with
``h = lambda_{n+1} - lambda_n = log(gamma_n / gamma_{n+1})``:

    xbar_{n+1} = e^{-h} xbar_n + gamma_{n+1} int_{lambda_n}^{lambda_{n+1}} e^{lambda} x0(lambda) d lambda
               = e^{-h} xbar_n + sum_{k>=0} h^{k+1} phi_{k+1}(-h) x0^{(k)}(lambda_n),              (U1)

``phi_k(z) = sum_{m>=0} z^m / (m + k)!`` (``h phi_1(-h) = 1 - e^{-h}``).  This is DPM-Solver++'s
update divided by ``alpha_{n+1}`` (``sigma_{n+1} / (alpha_{n+1} sigma_n) x_n = e^{-h} xbar_n``); the
UniPC paper writes it for ``x``.  Truncating (U1) after ``k = 0`` is DDIM.

**UniP-p, the predictor** (UniPC paper, Corollary 3.2: order ``p``).  With the data
predictions ``m_j`` at the last ``p`` nodes (``m_0`` the newest), ``r_k = (lambda_{n-k} - lambda_n) / h``
and ``D_k = (m_k - m_0) / r_k``,

    xbar_{n+1} = e^{-h} xbar_n + B(h) (m_0 + sum_{k=1}^{p-1} rho_k D_k),   B(h) = 1 - e^{-h},      (U2)

where ``rho`` solves the Vandermonde system that matches (U2) to (U1) up to ``x0^{(p-1)}``
(insert ``D_k = sum_{j>=1} x0^{(j)} r_k^{j-1} h^j / j!``):

    sum_k rho_k r_k^{i-1} = i! h phi_{i+1}(-h) / B(h),   i = 1 .. p - 1.                          (U3)

``B(h)`` is a free normalisation of size ``O(h)`` (bh1: ``hh``, bh2: ``e^{hh} - 1`` in the paper's
``hh = -h`` of data prediction); bh2 is ``B(h) = 1 - e^{-h}`` here, the coefficient of DDIM's step.
``B(h) rho`` does not depend on it, so it only matters where ``rho`` is not solved from (U3): UniP-2
and UniC-1 (below) take ``rho_1 = 1/2`` in the paper's code and in diffusers (the limit ``h -> 0``;
the order is kept).  So UniP-2 *is* DPM-Solver++(2M) (``rho_1 D_1 = (m_0 - m_1) / (2 r)``,
``r = h_{n-1} / h_n``), and UniP-1 is DDIM.

**UniC-p, the corrector** (UniPC paper, Theorem 3.1: order ``p + 1``).  After the predictor reached
``xbar_{n+1}``, the next step evaluates ``m_new = x0(xbar_{n+1}, gamma_{n+1})`` anyway; UniC-p re-does
step ``n`` with that value as one more node (``r = 1``, ``D_new = m_new - m_0``):

    xbar^c_{n+1} = e^{-h} xbar^c_n + B(h) (m_0 + sum_{k=1}^{p-1} rho^c_k D_k + rho^c_p D_new),     (U4)

``rho^c`` solving (U3) for ``i = 1 .. p`` on the nodes ``r_1 .. r_{p-1}, 1`` (``p = 1``: ``rho^c = 1/2``, as
in the paper's code and diffusers).  The next predictor starts from ``xbar^c_{n+1}`` but keeps
``m_new``, evaluated at the *uncorrected* point: the corrector costs no evaluation, **NFE = steps**.
No corrector follows the final step (its evaluation would be an extra NFE); with ``denoise=True`` the
denoising step evaluates ``x0`` at the last (uncorrected) state, exactly what diffusers' final step to
``sigma = 0`` returns.  The states the loop records (``return_trajectory``) are the predictor's; the
corrected state of node ``n`` exists inside step ``n``.

**Orders.**  ``order=p`` is diffusers' ``solver_order``; the corrector raises the accuracy to ``p + 1``
(:attr:`UniPC.accuracy_order`; ``p`` with ``disable_corrector=True``).  The first steps warm up with the
orders the history allows (``min(p, n + 1)``), the corrector of node ``n + 1`` uses the predictor order
of step ``n``.  Default ``p = 2``: diffusers' default (so ``method="unipc"`` is a default
``UniPCMultistepScheduler``), which its documentation recommends for guided sampling; it recommends
``p = 3`` for unconditional sampling (here UniPC-3 is the most accurate method of
``benchmarks/diffusers_peers.py`` at 25 steps on a log-SNR grid).

Options:
    lower_order_final: default False (diffusers: True).  The last step first order, the one before at
        most second, for any number of steps (UniPC's scheduler and reference code have no ``< 15``
        threshold); a final ``denoise=True`` counts as the last step
        (:class:`~taylorsolve.diffusion.samplers.taylor.MultistepMixin`).  It trades the asymptotic
        order (the uncorrected last steps are first / second order) for robustness at few steps.
    disable_corrector: False (default), True (UniP only), or step indices ``k`` whose *result* is not
        corrected (diffusers' ``disable_corrector`` list: step ``k``'s output is corrected in step ``k + 1``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ...errors import TaylorSolveError
from ..registry import Sampler, register
from .taylor import MultistepMixin

__all__ = ["UniPC", "phi", "unipc_weights"]


def phi(k: int, z: float) -> float:
    """``phi_k(z) = sum_{m>=0} z^m / (m + k)!`` (``phi_0 = e^z``, ``phi_1 = (e^z - 1)/z``), float64.

    Series for ``|z| <= 1`` (no cancellation), the recursion ``phi_{j+1} = (phi_j - 1/j!) / z`` beyond.
    """
    if k == 0:
        return math.exp(z)
    if abs(z) <= 1.0:
        term = 1.0 / math.factorial(k)
        total, m = term, 0
        while abs(term) > 1e-18 * abs(total):
            m += 1
            term *= z / (m + k)
            total += term
        return total
    v = math.expm1(z) / z
    for j in range(1, k):
        v = (v - 1.0 / math.factorial(j)) / z
    return v


def unipc_weights(rks: Sequence[float], h: float) -> np.ndarray:
    """``rho`` of eq. (U3): ``sum_k rho_k r_k^(i-1) = i! h phi_{i+1}(-h) / B(h)``, ``i = 1..len(rks)``, bh2."""
    K = len(rks)
    B = -math.expm1(-h)
    b = np.array([math.factorial(i) * h * phi(i + 1, -h) / B for i in range(1, K + 1)])
    R = np.vander(np.asarray(rks, dtype=np.float64), K, increasing=True).T   # R[i, k] = r_k^i
    return np.linalg.solve(R, b)


@register
class UniPC(MultistepMixin, Sampler):
    name = "unipc"
    aliases = ("uni-pc", "unipc-bh2")
    summary = ("UniPC bh2 (data prediction): UniP-p + UniC-p corrector on the next step's evaluation "
               "(order=p in 1..3, default 2; accuracy p + 1)")
    orders = (1, 2, 3)
    default_order = 2
    options = {"lower_order_final": False, "disable_corrector": False}
    nfe_rule = "steps (the corrector reuses the next step's evaluation)"
    lower_order_final_below = None

    def validate(self) -> None:
        dc = self.opts["disable_corrector"]
        if isinstance(dc, bool):
            return
        try:
            items = list(dc)
        except TypeError:
            items = None
        if items is None or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 for k in items):
            raise TaylorSolveError(
                "unipc's disable_corrector must be True/False or a list of step indices >= 0 "
                f"(diffusers' convention), got {dc!r}"
            )
        self.opts["disable_corrector"] = frozenset(int(k) for k in items)

    @property
    def accuracy_order(self) -> int:
        """The global order: ``order + 1`` with the corrector (Theorem 3.1), ``order`` without."""
        return self.order if self.opts["disable_corrector"] is True else self.order + 1

    def _corrects(self, n: int) -> bool:
        """Whether step ``n`` corrects the state that step ``n - 1`` predicted."""
        dc = self.opts["disable_corrector"]
        if dc is True:
            return False
        return dc is False or (n - 1) not in dc

    def setup(self, ctx) -> None:
        self.hist: list[tuple[float, torch.Tensor]] = []   # (lambda_j, m_j), newest first
        self.base: torch.Tensor | None = None              # corrected state at the previous node
        self.base_order = 0                                # predictor order of the previous step
        self.corrections = 0
        self.step_orders: list[int] = []

    @staticmethod
    def _update(ctx, y0: torch.Tensor, lam0: float, lam1: float, m0: torch.Tensor,
                nodes: list[tuple[float, torch.Tensor]], rho: Sequence[float] | None) -> torch.Tensor:
        """``e^{-h} y0 + B(h) (m0 + sum_k rho_k (m_k - m0) / r_k)`` (eq. (U2) / (U4)); ``nodes``: ``(lambda_k, m_k)``."""
        c = ctx.c
        h = lam1 - lam0
        acc = m0
        if rho is not None:
            for rk, (lam_k, m_k) in zip(rho, nodes):
                r = (lam_k - lam0) / h
                acc = acc + c(float(rk) / r, y0) * (m_k - m0)
        return c(math.exp(-h), y0) * y0 + c(-math.expm1(-h), y0) * acc

    def step(self, ctx, n, y, eps0=None):
        g, gn = float(ctx.s[n]), float(ctx.s[n + 1])
        lam, lam_next = -math.log(g), -math.log(gn)
        e = ctx.eps_node(y, n) if eps0 is None else eps0
        m = y - ctx.c(g, y) * e                                       # data prediction at the predicted state

        # UniC-q: re-do the previous step with m as one more node (r = 1), eq. (U4)
        if self.base is not None and self._corrects(n):
            q = self.base_order
            lam0, m0 = self.hist[0]
            older = self.hist[1:q]
            h = lam - lam0
            rks = [(lk - lam0) / h for lk, _ in older] + [1.0]
            rho = [0.5] if q == 1 else unipc_weights(rks, h)
            y = self._update(ctx, self.base, lam0, lam, m0, older + [(lam, m)], rho)
            self.corrections += 1

        self.hist.insert(0, (lam, m))
        del self.hist[self.order:]
        p = self.lowered_order(ctx, n, min(self.order, len(self.hist)))

        # UniP-p, eq. (U2)
        older = self.hist[1:p]
        if p == 1:
            rho = None
        elif p == 2:
            rho = [0.5]
        else:
            h = lam_next - lam
            rho = unipc_weights([(lk - lam) / h for lk, _ in older], h)
        y_next = self._update(ctx, y, lam, lam_next, m, older, rho)
        self.base, self.base_order = y, p
        self.step_orders.append(p)
        return y_next

    def finish(self, ctx) -> None:
        ctx.stats.extra["corrections"] = self.corrections
        ctx.stats.extra["step_orders"] = list(self.step_orders)


def _ensure_registered() -> tuple[Any, ...]:  # pragma: no cover - import side effect only
    return (UniPC,)
