"""Encoding data into the latent space of a diffusion model and decoding back (sec. 5.2, app. F.4).

Encoding solves the generative ODE *backwards*, from ``t_cutoff`` up to ``t = 1``, with any
deterministic sampler of :func:`taylorsolve.diffusion.sample` on the reversed time grid, through the
same loop (:mod:`taylorsolve.diffusion.loop`) and model boundary; decoding is ordinary sampling from
the latent.  App. F.4: the data point is first diffused to ``t_cutoff`` (``x_t = alpha_t x_0 +
sigma_t eps``, ``diffuse=True``) and the decoder denoises at the end (``denoise=True``, the default
of :func:`decode`), so that the two ends match.  With ``diffuse=False`` the input is taken as the
state at ``t_cutoff`` itself and ``decode(encode(x), denoise=False)`` reconstructs ``x`` up to the
discretisation error of the method (second order for GENIE).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import TaylorSolveError
from .cost import _Timer
from .forward_ad import forward_ad_safe
from .loop import RunContext, integrate
from .sampling import SampleResult, _overhead, build_run, resolve_times, sample
from .schedules import Schedule

__all__ = ["encode", "decode"]


def encode(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    steps: int | None = None,
    method: str = "genie",
    grid: str | torch.Tensor = "quadratic",
    t_cutoff: float | None = None,
    *,
    nfe: int | None = None,
    process: Any = None,
    schedule: Schedule | str | None = None,
    order: int | None = None,
    derivative: Any = None,
    diffuse: bool = False,
    generator: torch.Generator | None = None,
    parameterization: str | None = None,
    cond: Any = None,
    guidance_scale: float | None = None,
    uncond: Any = None,
    return_trajectory: bool = False,
    **method_options: Any,
) -> SampleResult:
    """Latent ``x_1`` of ``x`` by solving the generative ODE from ``t_cutoff`` to ``t = 1`` (app. F.4).

    ``grid``/``steps``/``nfe``/``t_cutoff`` describe the same grid as for :func:`sample` (named grids are
    reversed; a tensor grid may be given in either direction).  ``diffuse=True`` first replaces ``x``
    by a sample of the forward kernel at ``t_cutoff`` (``alpha x + sigma eps`` for scalar processes, eq. (1);
    :meth:`~taylorsolve.diffusion.processes.DiffusionProcess.perturb`), ``eps`` from ``generator``, as in the paper.  Any
    deterministic method works.  Returns a :class:`SampleResult` whose ``x`` is the latent and whose
    ``times`` increase.
    """
    dm, proc, sampler, stats, boundary = build_run(
        model, x, method=method, order=order, derivative=derivative, process=process, schedule=schedule,
        parameterization=parameterization, cond=cond, guidance_scale=guidance_scale, uncond=uncond,
        method_options=dict(method_options))
    if sampler.stochastic:
        raise TaylorSolveError(f"encoding needs a deterministic method (an ODE solver), not {sampler.name!r}")
    ov = _overhead(sampler, dm, None)
    times, _ = resolve_times(grid, steps, nfe, sampler, proc, t_cutoff, afs=False, denoise=False, overhead=ov,
                             direction="any")
    if bool(times[1] < times[0]):
        times = times.flip(0)
    stats.steps = len(times) - 1
    stats.overhead = ov
    stats.extra["direction"] = "encode"
    if diffuse:
        x = proc.perturb(x, times[0], generator=generator)  # eq. (1) for scalar processes
    coords = proc.coordinates(sampler.coordinates)
    with torch.no_grad(), forward_ad_safe(dm.module), _Timer(stats):
        ctx = RunContext(process=proc, coords=coords, boundary=boundary, stats=stats, t=times,
                         s=coords.s_of_t(times), afs=False, generator=generator)
        states = integrate(sampler, ctx, x)
    traj = torch.stack(states) if return_trajectory else None
    return SampleResult(x=states[-1], stats=stats, trajectory=traj, times=times)


def decode(
    model: Callable[..., torch.Tensor],
    z: torch.Tensor,
    steps: int | None = None,
    method: str = "genie",
    grid: str | torch.Tensor = "quadratic",
    t_cutoff: float | None = None,
    *,
    denoise: bool = True,
    **kwargs: Any,
) -> SampleResult:
    """Decode a latent ``z = x_1``: :func:`sample` from ``z`` with final denoising on by default (app. F.4)."""
    return sample(model, z, steps, method, grid, t_cutoff, denoise=denoise, **kwargs)
