"""The result of a solve: times, states, statistics and (for adaptive solves) dense output."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import TaylorSolveError

__all__ = ["SolveStats", "Solution"]


@dataclass
class SolveStats:
    """Work done by a solve.

    ``f_evals`` counts evaluations of ``f``: plain calls, traced calls and compiled replays of the
    tape (one per step on the compiled path); ``derivative_evals`` calls that produced higher
    derivatives (a nested JVP, a compiled symbolic evaluation, a Taylor-mode sweep, a supplied
    derivative call); ``jvp_passes`` forward-mode JVP passes; ``wall_time`` seconds, including
    ``compile_time`` (seconds spent compiling or loading compiled code for this solve; 0 when it was
    already in memory).  ``compiled`` says whether the compiled path ran; ``notes`` why not, or which
    backend an ``"auto"`` choice fell back to.  For per-trajectory batched solves ``steps`` is the most
    steps any member took and ``steps_per_member`` holds each member's count (batch-shaped).
    """

    steps: int = 0
    f_evals: int = 0
    derivative_evals: int = 0
    jvp_passes: int = 0
    wall_time: float = 0.0
    order: int = 0
    backend: str = ""
    accepted_steps: int = 0
    rejected_steps: int = 0
    compile_time: float = 0.0
    compiled: bool = False
    notes: str = ""
    steps_per_member: torch.Tensor | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if isinstance(d.get("steps_per_member"), torch.Tensor):
            d["steps_per_member"] = d["steps_per_member"].tolist()
        return d


class Solution:
    """``t`` (times), ``ys`` (states) and ``stats``.

    Shared steps (fixed grids, unbatched or ``batch_steps="shared"`` adaptive solves): ``t`` is 1-D and
    ``ys`` is ``[len(t), *y0.shape]``.  Per-trajectory adaptive steps (the default for batches): every
    batch member has its own times; ``t`` is ``[S + 1, *batch_shape]`` and ``ys`` ``[S + 1, *y0.shape]``
    where ``S`` is the most steps any member took, and a member that finished earlier repeats its final
    time and state (so ``ys[-1]`` holds every member's final state and ``t[-1] == t1``).

    When the solve kept its per-step Taylor polynomials (adaptive solves always do; fixed-grid solves
    with ``dense=True``), the solution is callable: ``sol(tq)`` evaluates the polynomial of the step
    containing ``tq``, ``y(t_n + s) ~ sum_k c_k s^k`` (dense output at no extra cost), vectorised over
    the query points.  ``tq`` may be a scalar or a 1-D tensor; the result has shape
    ``[*tq.shape, *y0.shape]``.  ``coefficients`` holds the polynomials, ``[S, p + 1, *y0.shape]``.
    """

    def __init__(
        self,
        t: torch.Tensor,
        ys: torch.Tensor,
        stats: SolveStats,
        step_coefficients: list[torch.Tensor] | torch.Tensor | None = None,
        *,
        coefficients: torch.Tensor | None = None,
        batch_ndim: int = 0,
    ) -> None:
        self.t = t
        self.ys = ys
        self.stats = stats
        if coefficients is None and step_coefficients is not None:
            coefficients = step_coefficients
        if isinstance(coefficients, (list, tuple)):
            coefficients = torch.stack(list(coefficients)) if len(coefficients) else None
        #: ``[S, p + 1, *y0.shape]``: the Taylor polynomial of every step (None without dense output)
        self.coefficients = coefficients
        #: number of leading dimensions of ``ys[i]`` that are batch members with their own times (0: shared)
        self.batch_ndim = batch_ndim

    def __repr__(self) -> str:
        return (f"Solution(t={tuple(self.t.shape)}, ys={tuple(self.ys.shape)}, steps={self.stats.steps}, "
                f"backend={self.stats.backend!r}, compiled={self.stats.compiled}, dense={self.coefficients is not None})")

    @property
    def y_final(self) -> torch.Tensor:
        return self.ys[-1]

    @property
    def step_coefficients(self) -> list[torch.Tensor] | None:
        """The per-step polynomials as a list of ``[p + 1, *y0.shape]`` tensors (``coefficients`` unbound)."""
        return None if self.coefficients is None else list(self.coefficients.unbind(0))

    def __call__(self, tq: torch.Tensor | float) -> torch.Tensor:
        C = self.coefficients
        if C is None:
            raise TaylorSolveError(
                "this Solution holds no dense output; solve adaptively or pass dense=True to solve()"
            )
        tq = torch.as_tensor(tq, dtype=self.t.dtype, device=self.t.device)
        scalar = tq.ndim == 0
        if tq.ndim > 1:
            raise TaylorSolveError(f"dense output takes a scalar or a 1-D tensor of times, got shape {tuple(tq.shape)}")
        tq = tq.reshape(-1)
        t0, t1 = self.t[0], self.t[-1]
        lo, hi = torch.minimum(t0, t1), torch.maximum(t0, t1)
        if bool(((tq[:, None] < lo.reshape(1, -1)) | (tq[:, None] > hi.reshape(1, -1))).any()):
            raise TaylorSolveError(
                f"dense output requested outside the solved interval [{float(lo.min())}, {float(hi.max())}]"
            )
        forward = bool((t1 > t0).all())
        sign = 1.0 if forward else -1.0
        S = C.shape[0]
        P = C.shape[1]
        dtype = self.ys.dtype
        Ck = self._by_order()  # [p+1, S * B, E]: coefficient k of every step (and member) in rows
        if self.batch_ndim == 0:
            knots = (self.t * sign).contiguous()
            idx = (torch.searchsorted(knots, (tq * sign).contiguous(), right=True) - 1).clamp_(0, S - 1)
            s = (tq - self.t.index_select(0, idx)).to(dtype).unsqueeze(-1)  # [Q, 1]
            rows = idx
            out_shape = (tq.numel(), *C.shape[2:])
        else:
            # per-trajectory: every batch member has its own knots ([S + 1, *batch])
            bshape = self.t.shape[1:]
            B = self.t[0].numel()
            tT = self.t.reshape(S + 1, B).T.contiguous()  # [B, S+1]
            q = (tq * sign).reshape(1, -1).expand(B, -1).contiguous()  # [B, Q]
            idx = torch.searchsorted((tT * sign).contiguous(), q, right=True) - 1
            counts = self.stats.steps_per_member
            counts = (counts.reshape(B, 1).to(idx.device) if counts is not None
                      else torch.full((B, 1), S, device=idx.device))
            idx = torch.minimum(idx.clamp_min(0), (counts - 1).clamp_min(0))  # [B, Q]
            s = (tq.reshape(1, -1) - torch.gather(tT, 1, idx)).to(dtype)  # [B, Q]
            rows = (idx * B + torch.arange(B, device=idx.device).reshape(B, 1)).T.reshape(-1)  # [Q * B]
            s = s.T.reshape(-1, 1)
            out_shape = (tq.numel(), *bshape, *C.shape[2 + len(bshape):])
        acc = Ck[P - 1].index_select(0, rows)
        for k in range(P - 2, -1, -1):
            acc.mul_(s).add_(Ck[k].index_select(0, rows))
        out = acc.reshape(out_shape)
        return out[0] if scalar else out

    def _by_order(self) -> torch.Tensor:
        """The coefficients as ``[p+1, S * B, E]`` rows (cached): one contiguous gather per order."""
        cached = getattr(self, "_ck", None)
        if cached is None or cached[0] is not self.coefficients:
            C = self.coefficients
            S, P = C.shape[:2]
            if self.batch_ndim == 0:
                ck = C.reshape(S, P, -1).transpose(0, 1).contiguous()
            else:
                B = self.t[0].numel()
                ck = C.reshape(S, P, B, -1).transpose(0, 1).reshape(P, S * B, -1).contiguous()
            cached = self._ck = (C, ck)
        return cached[1]
