"""Encoding data into the latent space of a diffusion model and decoding back (sec. 5.2, app. F.4).

Encoding solves the generative ODE *backwards*, from ``t_cutoff`` up to ``t = 1``, with any
deterministic sampler of :func:`taylorsolve.diffusion.sample` on the reversed time grid; decoding is
ordinary sampling from the latent.  App. F.4: the data point is first diffused to ``t_cutoff``
(``x_t = alpha_t x_0 + sigma_t eps``, ``diffuse=True``) and the decoder denoises at the end
(``denoise=True``, the default of :func:`decode`), so that the two ends match.  With
``diffuse=False`` the input is taken as the state at ``t_cutoff`` itself and
``decode(encode(x), denoise=False)`` reconstructs ``x`` up to the discretisation error of the
method (second order for GENIE).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import TaylorSolveError
from ._evaluator import EpsEvaluator, build_eps_fn
from .cost import SampleStats, _Timer
from .grids import time_grid, validate_diffusion_grid
from .samplers import SampleResult, _check_x, _configure, canonical_method, integrate, sample
from .schedules import Schedule, get_schedule

__all__ = ["encode", "decode"]


def _encoding_times(grid: Any, steps: Any, schedule: Schedule, t_cutoff: float) -> torch.Tensor:
    if isinstance(grid, str):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise TaylorSolveError(f"steps must be an integer >= 1, got {steps!r}")
        return time_grid(grid, steps, schedule, t_cutoff=t_cutoff).flip(0)
    t = validate_diffusion_grid(grid, direction="any", name="grid")
    if steps is not None and steps != len(t) - 1:
        raise TaylorSolveError(f"steps={steps!r} disagrees with the grid's {len(t) - 1} steps; pass steps=None")
    return t if bool(t[1] > t[0]) else t.flip(0)


def encode(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    steps: int | None,
    method: str = "genie",
    grid: str | torch.Tensor = "quadratic",
    t_cutoff: float = 1e-3,
    *,
    schedule: Schedule | str | None = None,
    order: int | None = None,
    derivative: Any = None,
    diffuse: bool = False,
    generator: torch.Generator | None = None,
    parameterization: str = "eps",
    cond: Any = None,
    guidance_scale: float | None = None,
    return_trajectory: bool = False,
    **method_options: Any,
) -> SampleResult:
    """Latent ``x_1`` of ``x`` by solving the generative ODE from ``t_cutoff`` to ``t = 1`` (app. F.4).

    ``grid``/``steps``/``t_cutoff`` describe the same grid as for :func:`sample` (named grids are
    reversed; a tensor grid may be given in either direction).  ``diffuse=True`` first replaces ``x``
    by ``alpha x + sigma eps`` at ``t_cutoff`` (``eps`` from ``generator``), as in the paper.  Any
    deterministic method of :func:`sample` works (not ``"euler-maruyama"``).  Returns a
    :class:`SampleResult` whose ``x`` is the latent and whose ``times`` increase.
    """
    method = canonical_method(method)
    if method == "euler-maruyama":
        raise TaylorSolveError("encoding needs a deterministic method (an ODE solver), not 'euler-maruyama'")
    schedule = get_schedule(schedule)
    x = _check_x(x, "x")
    cfg = _configure(method, order, derivative, schedule, dict(method_options))
    try:
        tc = float(t_cutoff)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"t_cutoff must be a number in (0, 1), got {t_cutoff!r}") from exc
    if not (0.0 < tc < 1.0):
        raise TaylorSolveError(f"t_cutoff must lie in (0, 1), got {t_cutoff!r}")
    times = _encoding_times(grid, steps, schedule, tc)
    if diffuse:
        t0 = times[0]
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x = schedule.alpha(t0).to(x.dtype) * x + schedule.sigma(t0).to(x.dtype) * noise  # eq. (1)
    stats = SampleStats(method=method, steps=len(times) - 1, order=cfg.order,
                        derivative=getattr(cfg.backend, "name", None) if method in ("genie", "ttm", "ttm-pf") else None)
    stats.extra["direction"] = "encode"
    eps_fn, calls = build_eps_fn(model, schedule, parameterization, cond, guidance_scale)
    ev = EpsEvaluator(eps_fn, stats, calls_per_eval=calls)
    with _Timer(stats):
        states = integrate(cfg, ev, x, times, schedule, stats)
    traj = torch.stack(states) if return_trajectory else None
    return SampleResult(x=states[-1], stats=stats, trajectory=traj, times=times)


def decode(
    model: Callable[..., torch.Tensor],
    z: torch.Tensor,
    steps: int | None,
    method: str = "genie",
    grid: str | torch.Tensor = "quadratic",
    t_cutoff: float = 1e-3,
    *,
    denoise: bool = True,
    **kwargs: Any,
) -> SampleResult:
    """Decode a latent ``z = x_1``: :func:`sample` from ``z`` with final denoising on by default (app. F.4)."""
    return sample(model, z, steps, method, grid, t_cutoff, denoise=denoise, **kwargs)
