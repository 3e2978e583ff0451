r"""The one sampling loop: coordinates, trajectory, checks, direction, the analytical first step.

:func:`integrate` runs a :class:`~taylorsolve.diffusion.registry.Sampler` along a grid of diffusion
times ``t_0, ..., t_N`` (decreasing for sampling, increasing for encoding):

1. the process gives the sampler's coordinates (state ``y``, solver time ``s``; e.g. ``(xbar, gamma)``
   of the DDIM ODE, eq. (6)); ``y_0`` is ``x`` in them;
2. for ``n = 0 .. N-1`` the unit steps ``y_n -> y_{n+1}``; the loop checks the state is finite
   (:class:`SolverError` naming the step and time) and records ``x_{n+1}``;
3. the **analytical first step** (AFS, app. F.2): with ``afs=True`` the loop computes eps at the start
   analytically, ``eps(x_1, 1) ~ x_1`` for VP (eq. (75)), and hands it to the first step in place of a
   model evaluation; derivative-based steps then also take ``d eps/d gamma ~ 0`` (eq. (76)-(78)), so
   the first step is Alg. 2's Euler step.  This saves exactly one NFE for every method.

The final denoising step (``denoise=True``) is :func:`denoise`, also counted through the boundary.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..errors import TaylorSolveError, check_finite
from .boundary import ModelBoundary
from .cost import SampleStats
from .processes import Coordinates, DiffusionProcess
from .registry import Sampler
from .schedules import as_time_tensor

__all__ = ["RunContext", "integrate", "denoise"]


@dataclass
class RunContext:
    """What a sampler unit sees during one run.

    Attributes:
        process, coords, boundary, stats: the run's process, the unit's coordinates, the model
            boundary (counted eps) and the statistics.
        t: float64 grid of diffusion times ``t_0 .. t_N``; ``s``: the same nodes in solver time.
        afs: whether the first step is the analytical first step.
        denoise: whether the final denoising step (:func:`denoise`, a first-order step to ``gamma = 0``)
            follows the last grid step; multistep units count it as their final step (``lower_order_final``).
        generator: random numbers for stochastic units.
    """

    process: DiffusionProcess
    coords: Coordinates
    boundary: ModelBoundary
    stats: SampleStats
    t: torch.Tensor
    s: torch.Tensor
    afs: bool = False
    generator: torch.Generator | None = None
    denoise: bool = False
    _rhs: Any = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return len(self.t) - 1

    @property
    def forward(self) -> bool:
        """True when the grid runs from noise to data (sampling), False for encoding."""
        return bool(self.t[-1] < self.t[0])

    @property
    def rhs(self):
        """The core right-hand side ``f(s, y) = dy/ds`` through the boundary (differentiable)."""
        if self._rhs is None:
            self._rhs = self.coords.rhs(self.boundary)
        return self._rhs

    def t_of(self, s: Any) -> torch.Tensor:
        return self.coords.t_of_s(as_time_tensor(s))

    def eps(self, y: torch.Tensor, s: Any, t: Any = None) -> torch.Tensor:
        """Counted eps at state ``y`` and solver time ``s`` (``t`` if known, else ``t(s)``)."""
        s = as_time_tensor(s)
        t = self.t_of(s) if t is None else as_time_tensor(t)
        return self.boundary(self.coords.to_x(y, t, s), t)

    def eps_node(self, y: torch.Tensor, n: int) -> torch.Tensor:
        """Counted eps at state ``y`` on grid node ``n`` (exact node time, no inverse)."""
        return self.eps(y, self.s[n], self.t[n])

    def afs_step(self, n: int, eps0: torch.Tensor | None) -> bool:
        """Whether step ``n`` is the analytical first step (its ``eps0`` is the analytic value)."""
        return self.afs and n == 0 and eps0 is not None

    @staticmethod
    def c(v: Any, like: torch.Tensor) -> torch.Tensor:
        """A float64 scalar as a 0-d tensor of ``like``'s dtype and device."""
        return torch.as_tensor(v, dtype=torch.float64).to(dtype=like.dtype, device=like.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Book the model evaluations inside as ``"warmup"`` or ``"denoise"`` NFE."""
        old = self.boundary.phase
        self.boundary.phase = name
        try:
            yield
        finally:
            self.boundary.phase = old


def integrate(sampler: Sampler, ctx: RunContext, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``sampler`` along ``ctx.t`` from ``x``; the data-space states at every node (``x`` first)."""
    if sampler.stochastic and not ctx.forward:
        raise TaylorSolveError(f"{sampler.name} runs from noise to data only (it is not invertible; no encoding)")
    if ctx.afs and not ctx.forward:
        raise TaylorSolveError("the analytical first step (afs) applies to sampling from noise, not to encoding")
    coords, t, s = ctx.coords, ctx.t, ctx.s
    y = coords.to_state(x, t[0], s[0])
    eps0 = None
    if ctx.afs:
        eps0 = coords_state_eps(ctx, x, t[0])
        ctx.stats.afs_saved += 1
    sampler.setup(ctx)
    out = [x]
    if sampler.adaptive:
        ys = sampler.solve(ctx, y, eps0)
        if len(ys) != len(t):
            raise TaylorSolveError(f"internal: adaptive sampler {sampler.name} returned {len(ys)} states for {len(t)} nodes")
        for n in range(1, len(t)):
            check_finite(ys[n], what="the sampler state", step=n, time=float(t[n]))
            out.append(coords.to_x(ys[n], t[n], s[n]))
    else:
        for n in range(len(t) - 1):
            ctx.boundary.step = n
            y = sampler.step(ctx, n, y, eps0 if n == 0 else None)
            check_finite(y, what="the sampler state", step=n + 1, time=float(t[n + 1]))
            out.append(coords.to_x(y, t[n + 1], s[n + 1]))
    ctx.boundary.step = None
    sampler.finish(ctx)
    return out


def coords_state_eps(ctx: RunContext, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The analytic eps of the analytical first step at ``(x, t)`` (eq. (75)), in the state's dtype."""
    eps = ctx.process.analytic_eps(x, t)
    return eps.to(x.dtype) if eps.dtype != x.dtype else eps


def denoise(boundary: ModelBoundary, process: DiffusionProcess, x: torch.Tensor, t: Any) -> torch.Tensor:
    """``x_0 = (x_t - sigma_t eps(x_t, t)) / alpha_t`` (sec. 5, app. F.4); one counted evaluation."""
    t = as_time_tensor(t)
    old = boundary.phase
    boundary.phase, boundary.step = "denoise", None
    try:
        eps = boundary(x, t)
    finally:
        boundary.phase = old
    return process.predict_x0(x, eps, t)
