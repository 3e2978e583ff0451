"""Time discretisations ("striding schedules") for diffusion sampling.

A grid is a float64 1-D tensor ``t_0 = t_max > t_1 > ... > t_N = t_cutoff`` inside ``(0, 1]``
(sampling runs from noise, ``t = 1``, towards data; app. C.2.4, Alg. 2).  Along the DDIM ODE
(eq. (6)) the schedule only matters through the grid of ``gamma_{t_n}`` values, see :func:`gamma_grid`.

Named grids (``n = 0..N``, ``N = steps``):

* ``"linear"`` -- uniform in ``t``: ``t_n = t_max - (t_max - t_cutoff) n / N`` ("linear striding",
  app. C.2.4).
* ``"quadratic"`` -- uniform in ``sqrt(t)``: ``t_n = (sqrt(t_max) - (sqrt(t_max) - sqrt(t_cutoff)) n / N)^2``
  ("quadratic striding" of DDIM/GENIE, app. C.2.4; equal to ``"rho"`` with ``rho = 2``).
* ``"rho"`` -- eq. (83): ``t_n = (1 - (1 - t_cutoff^(1/rho)) n / N)^rho`` (the paper uses ``rho`` in
  {1.5, 2, 2.5}); generalised to ``t_max < 1`` as uniform in ``t^(1/rho)`` between the endpoints.
  At ``n = N`` it lands exactly on ``t_cutoff``.  Default ``rho = 2`` (quadratic).
* ``"logsnr"`` -- uniform in ``lambda_t = log(alpha_t / sigma_t)`` between ``lambda(t_max)`` and
  ``lambda(t_cutoff)``, mapped back with the schedule's inverse.
* ``"edm"`` / ``"karras"`` -- Karras et al. (2022): uniform in ``gamma^(1/rho)`` (``gamma = sigma/alpha``
  is the EDM noise level), ``gamma_n = (gamma_max^(1/rho) + n/N (gamma_min^(1/rho) - gamma_max^(1/rho)))^rho``
  with ``gamma_max = gamma(t_max)``, ``gamma_min = gamma(t_cutoff)``; default ``rho = 7``.
* ``"gamma"`` -- uniform in ``gamma``.

The endpoints are set exactly (``t_0 = t_max``, ``t_N = t_cutoff``), independent of rounding.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..errors import TaylorSolveError, validate_grid
from .schedules import Schedule, as_time_tensor, get_schedule

__all__ = ["time_grid", "validate_diffusion_grid", "gamma_grid", "GRID_NAMES"]

_F64 = torch.float64

GRID_NAMES = ("linear", "quadratic", "rho", "logsnr", "edm", "karras", "gamma")


def validate_diffusion_grid(t: Any, *, direction: str = "decreasing", name: str = "t") -> torch.Tensor:
    """Check a diffusion time grid and return it as a float64 tensor.

    Requirements: 1-D, at least 2 points, finite, strictly monotone in ``direction``
    (``"decreasing"`` for sampling, noise -> data; ``"increasing"`` for encoding, data -> noise;
    ``"any"``), and all times inside ``(0, 1]``.  Raises :class:`TaylorSolveError` naming the problem.
    """
    if direction not in ("decreasing", "increasing", "any"):
        raise TaylorSolveError(f"direction must be 'decreasing', 'increasing' or 'any', got {direction!r}")
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=_F64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TaylorSolveError(f"time grid {name} cannot be converted to a float64 tensor: {exc}") from exc
    if t.is_complex():
        raise TaylorSolveError(f"time grid {name} must be real, got dtype {t.dtype}")
    t = t.detach().to(_F64)
    t = validate_grid(t, name=name)  # 1-D, >= 2 points, finite, strictly monotone
    dec = bool(t[1] < t[0])
    if direction == "decreasing" and not dec:
        raise TaylorSolveError(
            f"time grid {name} must be strictly decreasing (from noise t_max <= 1 down to t_cutoff > 0); "
            f"it increases ({float(t[0])!r} -> {float(t[1])!r})"
        )
    if direction == "increasing" and dec:
        raise TaylorSolveError(
            f"time grid {name} must be strictly increasing (encoding, data -> noise); "
            f"it decreases ({float(t[0])!r} -> {float(t[1])!r})"
        )
    lo, hi = float(t.min()), float(t.max())
    if lo <= 0.0 or hi > 1.0:
        raise TaylorSolveError(
            f"time grid {name} is outside (0, 1]: it spans [{lo!r}, {hi!r}] "
            "(t = 0 is the data distribution, where eps/sigma is singular; t = 1 is pure noise)"
        )
    return t


def gamma_grid(t_grid: Any, schedule: str | Schedule | None = None) -> torch.Tensor:
    """``gamma_{t_n} = sigma_{t_n} / alpha_{t_n}`` on a time grid (float64): the DDIM ODE's grid, eq. (6)."""
    schedule = get_schedule(schedule)
    return schedule.gamma(as_time_tensor(t_grid))


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int,)) and not (
        isinstance(steps, float) and steps.is_integer()
    ):
        if isinstance(steps, torch.Tensor) and steps.numel() == 1 and float(steps).is_integer():
            steps = int(steps)
        else:
            raise TaylorSolveError(f"steps must be an integer >= 1, got {steps!r}")
    steps = int(steps)
    if steps < 1:
        raise TaylorSolveError(f"steps must be an integer >= 1, got {steps}")
    return steps


def _power_grid(t_max: float, t_cutoff: float, steps: int, rho: float) -> torch.Tensor:
    """Uniform in ``t^(1/rho)`` from ``t_max`` to ``t_cutoff`` (eq. (83) for ``t_max = 1``)."""
    n = torch.arange(steps + 1, dtype=_F64)
    a, b = t_max ** (1.0 / rho), t_cutoff ** (1.0 / rho)
    return (a - (a - b) * n / steps) ** rho


def time_grid(
    grid: str | torch.Tensor | Sequence[float] = "quadratic",
    steps: int | None = None,
    schedule: str | Schedule | None = None,
    t_cutoff: float = 1e-3,
    t_max: float = 1.0,
    rho: float | None = None,
) -> torch.Tensor:
    """A float64 1-D tensor of ``steps + 1`` strictly decreasing times from ``t_max`` to ``t_cutoff``.

    Args:
        grid: a name from :data:`GRID_NAMES` (see the module docstring for formulas), or a user grid
            (tensor/sequence), which is validated with :func:`validate_diffusion_grid` and returned
            as float64; ``steps`` must then be ``None`` or ``len(grid) - 1``.
        steps: number of solver steps ``N >= 1`` (``N + 1`` times).
        schedule: needed by ``"logsnr"``, ``"edm"``/``"karras"``, ``"gamma"`` (default: the linear VP
            schedule); ignored by the others.
        t_cutoff, t_max: the endpoints, ``0 < t_cutoff < t_max <= 1``.
        rho: exponent for ``"rho"`` (default 2.0, quadratic striding; eq. (83) takes ``rho > 1``,
            any ``rho > 0`` is accepted) and ``"edm"`` (default 7.0).

    Raises:
        TaylorSolveError: unknown name, ``steps < 1``, ``t_cutoff >= t_max``, endpoints outside
            ``(0, 1]``, a user grid that is not 1-D / finite / strictly decreasing / inside ``(0, 1]``,
            or a grid that collapses (repeated times) in floating point.
    """
    if not isinstance(grid, str):
        t = validate_diffusion_grid(grid, direction="decreasing", name="grid")
        if steps is not None and _check_steps(steps) != t.numel() - 1:
            raise TaylorSolveError(f"steps={steps} does not match the user grid of {t.numel()} times ({t.numel() - 1} steps)")
        return t
    name = grid.lower()
    if name not in GRID_NAMES:
        raise TaylorSolveError(f"unknown grid {grid!r}; available: {', '.join(GRID_NAMES)} or a tensor of times")
    if steps is None:
        raise TaylorSolveError(f"grid {grid!r} needs steps (an integer >= 1)")
    steps = _check_steps(steps)
    try:
        t_cutoff, t_max = float(t_cutoff), float(t_max)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"t_cutoff and t_max must be numbers, got {t_cutoff!r}, {t_max!r}") from exc
    if not (math.isfinite(t_cutoff) and math.isfinite(t_max)):
        raise TaylorSolveError(f"t_cutoff and t_max must be finite, got {t_cutoff!r}, {t_max!r}")
    if t_cutoff >= t_max:
        raise TaylorSolveError(f"t_cutoff must be < t_max, got t_cutoff={t_cutoff!r} >= t_max={t_max!r}")
    if t_cutoff <= 0.0 or t_max > 1.0:
        raise TaylorSolveError(
            f"the grid's endpoints must lie in (0, 1]: got t_cutoff={t_cutoff!r}, t_max={t_max!r}"
        )
    if rho is not None:
        rho = float(rho)
        if not (math.isfinite(rho) and rho > 0):
            raise TaylorSolveError(f"rho must be a finite number > 0, got {rho!r}")

    n = torch.arange(steps + 1, dtype=_F64)
    if name == "linear":
        t = t_max - (t_max - t_cutoff) * n / steps
    elif name == "quadratic":
        t = _power_grid(t_max, t_cutoff, steps, 2.0)
    elif name == "rho":
        t = _power_grid(t_max, t_cutoff, steps, 2.0 if rho is None else rho)
    else:
        sched = get_schedule(schedule)
        ends = torch.tensor([t_max, t_cutoff], dtype=_F64)
        with torch.no_grad():
            if name == "logsnr":
                lam = sched.log_snr(ends)
                t = sched.t_from_log_snr(lam[0] + (lam[1] - lam[0]) * n / steps)
            elif name in ("edm", "karras"):
                r = 7.0 if rho is None else rho
                g = sched.gamma(ends) ** (1.0 / r)
                t = sched.t_from_gamma((g[0] + (g[1] - g[0]) * n / steps) ** r)
            else:  # "gamma"
                g = sched.gamma(ends)
                t = sched.t_from_gamma(g[0] + (g[1] - g[0]) * n / steps)
        t = t.detach()
    t = t.clone()
    t[0] = t_max
    t[-1] = t_cutoff
    d = torch.diff(t)
    if not (d < 0).all():
        i = int(torch.nonzero(d >= 0)[0])
        raise TaylorSolveError(
            f"grid {grid!r} with {steps} steps on [{t_cutoff!r}, {t_max!r}] is not strictly decreasing in "
            f"float64 (t[{i}] = {float(t[i])!r}, t[{i + 1}] = {float(t[i + 1])!r}); use fewer steps or another grid"
        )
    return t
