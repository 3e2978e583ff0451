r"""One entry point for diffusion sampling: :func:`sample` (and the shared set-up of :func:`encode`).

``sample(model, x1, steps, method="genie")`` integrates a generative equation of a diffusion process
from noise ``x1`` (at ``t = 1``, or the first time of a given grid) down to ``t_cutoff``.  It builds,
once: the model boundary (:mod:`taylorsolve.diffusion.boundary`: time convention, shapes, dtypes,
parameterisation, conditioning, guidance, counting, output checks), the process
(:mod:`taylorsolve.diffusion.processes`), the sampler unit (:mod:`taylorsolve.diffusion.registry`)
and the time grid, then runs the one loop of :mod:`taylorsolve.diffusion.loop` without building
autograd graphs through the model (``torch.no_grad``; forward-mode JVPs still work).

**NFE budgets** (sec. 5, "Accounting for Computational Overhead"): ``nfe=N`` instead of ``steps``
chooses the largest number of steps whose model evaluations -- warm-ups, intermediate stages, the
final denoising step included, minus one for the analytical first step -- fit in ``N``.  A method
whose derivative costs ``overhead`` model evaluations per step (a distilled head's measured cost, or
the JVP passes of autodiff derivatives) gets ``round(N / (1 + overhead))`` evaluations, as in the
paper.  ``stats`` reports the budget and the split (:class:`~taylorsolve.diffusion.cost.SampleStats`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..errors import TaylorSolveError
from .boundary import DiffusionModel, ModelBoundary
from .cost import SampleStats, _Timer, overhead_adjusted_nfe
from .forward_ad import forward_ad_safe
from .grids import time_grid, validate_diffusion_grid
from .loop import RunContext, denoise, integrate
from .processes import DiffusionProcess, get_process
from .registry import Sampler, canonical_method, get_sampler
from .schedules import DiscreteVPSchedule, Schedule

__all__ = ["sample", "SampleResult", "plan_steps", "prepare_model", "resolve_process"]


@dataclass
class SampleResult:
    """``x`` (the sample; denoised if ``denoise=True``), ``stats`` (:class:`~taylorsolve.diffusion.cost.SampleStats`),
    ``trajectory`` (``[len(times), *x.shape]`` states ``x_t`` at ``times``, or None) and ``times`` (float64)."""

    x: torch.Tensor
    stats: SampleStats
    trajectory: torch.Tensor | None
    times: torch.Tensor


# -- set-up shared with encode ------------------------------------------------------------------------------
def prepare_model(model: Any, parameterization: str | None) -> DiffusionModel:
    """A :class:`DiffusionModel` from ``model`` (a plain callable is wrapped with ``parameterization``)."""
    if isinstance(model, DiffusionModel):
        if parameterization is not None and parameterization != model.parameterization:
            raise TaylorSolveError(
                f"parameterization={parameterization!r} contradicts the model's declared {model.parameterization!r}"
            )
        return model
    if not callable(model):
        raise TaylorSolveError(f"model must be callable model(x, t), got {type(model).__name__}")
    return DiffusionModel(model, parameterization=parameterization or "eps", overhead=getattr(model, "overhead", None))


def resolve_process(dm: DiffusionModel, process: Any, schedule: Any) -> DiffusionProcess:
    """The run's process: the model's own, or ``process=`` / ``schedule=`` (not both, and not a contradiction)."""
    if process is not None and schedule is not None:
        raise TaylorSolveError("pass process= or schedule=, not both")
    spec = process if process is not None else schedule
    if dm.process is not None:
        if spec is not None and get_process(spec) is not dm.process:
            raise TaylorSolveError(
                f"the model declares its process {dm.process!r}; process/schedule {spec!r} contradicts it"
            )
        return dm.process
    return get_process(spec)


def check_input(x: Any, name: str, process: DiffusionProcess) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TaylorSolveError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TaylorSolveError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise TaylorSolveError(f"{name} contains NaN or Inf")
    process.check_state(x, name)
    return x


def _default_cutoff(process: DiffusionProcess) -> float:
    sched = getattr(process, "schedule", None)
    if isinstance(sched, DiscreteVPSchedule):
        return 1.0 / sched.num_timesteps  # DPM-Solver's t_cutoff for discrete models: timestep 0
    return 1e-3


def _check_cutoff(t_cutoff: Any, process: DiffusionProcess) -> float:
    if t_cutoff is None:
        return _default_cutoff(process)
    try:
        tc = float(t_cutoff)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"t_cutoff must be a number in (0, 1), got {t_cutoff!r}") from exc
    if not (0.0 < tc < 1.0):
        raise TaylorSolveError(f"t_cutoff must lie in (0, 1), got {t_cutoff!r}")
    return tc


def tensor_grid(grid: Any, process: DiffusionProcess, direction: str) -> torch.Tensor:
    """A user grid as float64 times: integer tensors are a discrete model's timesteps (``t = (n + 1)/N``)."""
    if isinstance(grid, torch.Tensor) and not grid.is_floating_point() and not grid.is_complex():
        sched = getattr(process, "schedule", None)
        if not isinstance(sched, DiscreteVPSchedule):
            raise TaylorSolveError(
                "an integer grid is a list of a discrete model's timesteps; this process has no timestep table "
                "(use a discrete-time model, e.g. from_diffusers, or a float grid of times in (0, 1])"
            )
        n = grid.detach().cpu().to(torch.int64).reshape(-1)
        N = sched.num_timesteps
        if n.numel() < 2:
            raise TaylorSolveError(f"the timestep grid needs at least 2 timesteps, got {n.numel()}")
        bad = (n < 0) | (n > N - 1)
        if bool(bad.any()):
            raise TaylorSolveError(
                f"timestep grid outside the table: timestep {int(n[bad][0])} is not in [0, {N - 1}] "
                f"(the model's alphas_cumprod has {N} entries)"
            )
        grid = sched.t_of_timestep(n.to(torch.float64))
    return validate_diffusion_grid(grid, direction=direction, name="grid")


def plan_steps(sampler: Sampler, nfe: Any, *, afs: bool, denoise: bool, overhead: float = 0.0) -> tuple[int, int]:
    """``(steps, evaluations)``: the most steps whose model evaluations fit the budget ``nfe`` (module docstring).

    The evaluation budget is ``round(nfe / (1 + overhead))`` (sec. 5).  Raises :class:`TaylorSolveError`
    naming the minimum budget when not even the method's fewest steps fit.
    """
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 0:
        raise TaylorSolveError(f"nfe must be an integer >= 1, got {nfe!r}")
    if sampler.adaptive:
        raise TaylorSolveError(f"{sampler.name} is adaptive: it chooses its own steps; nfe= does not apply")
    nfe = int(nfe)
    budget = overhead_adjusted_nfe(nfe, overhead) if overhead > 0 else nfe

    def cost(n: int) -> int:
        return sampler.nfe(n) - int(bool(afs)) + int(bool(denoise))

    best = 0
    n = sampler.min_steps
    while cost(n) <= budget:
        best = n
        n += 1
    if best == 0:
        need = cost(sampler.min_steps)
        minimum = need if overhead <= 0 else next(m for m in range(need, 100 * need + 10)
                                                   if overhead_adjusted_nfe(m, overhead) >= need)
        knobs = ", ".join(k for k, v in (("afs", afs), ("denoise", denoise)) if v) or "no knobs"
        extra = ""
        if sampler.name == "f-pndm":
            extra = "; F-PNDM needs its 3 Runge-Kutta warm-up steps (the paper lists it as N/A for <= 10 NFE)"
        ov = f", derivative overhead {overhead:.3g}" if overhead > 0 else ""
        raise TaylorSolveError(
            f"an NFE budget of {nfe} is too small for {sampler.name!r} ({knobs}{ov}): it needs at least "
            f"{minimum} NFE for {sampler.min_steps} step(s){extra}"
        )
    return best, cost(best)


def resolve_times(grid: Any, steps: Any, nfe: Any, sampler: Sampler, process: DiffusionProcess, t_cutoff: Any,
                  *, afs: bool, denoise: bool, overhead: float, direction: str = "decreasing") -> tuple[torch.Tensor, int | None]:
    """The float64 time grid (and the evaluation budget when ``nfe`` was given)."""
    if steps is not None and nfe is not None:
        raise TaylorSolveError("give steps= or nfe=, not both (nfe=N chooses the steps from the budget)")
    tc = _check_cutoff(t_cutoff, process)
    eval_budget = None
    if not isinstance(grid, str):
        t = tensor_grid(grid, process, "decreasing" if direction == "decreasing" else "any")
        if steps is not None and steps != len(t) - 1:
            raise TaylorSolveError(f"steps={steps!r} disagrees with the grid's {len(t) - 1} steps; pass steps=None")
        if nfe is not None:
            n_steps, _ = plan_steps(sampler, nfe, afs=afs, denoise=denoise, overhead=overhead)
            if n_steps < len(t) - 1:
                raise TaylorSolveError(f"the grid's {len(t) - 1} steps do not fit the NFE budget {nfe} ({sampler.name!r})")
        return t, eval_budget
    if nfe is not None:
        steps, _ = plan_steps(sampler, nfe, afs=afs, denoise=denoise, overhead=overhead)
        eval_budget = overhead_adjusted_nfe(int(nfe), overhead) if overhead > 0 else int(nfe)
    if steps is None:
        if sampler.adaptive:
            return torch.tensor([1.0, tc], dtype=torch.float64), None
        raise TaylorSolveError("give steps= (an integer >= 1) or nfe= (a budget of model evaluations) for a named grid")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise TaylorSolveError(f"steps must be an integer >= 1, got {steps!r}")
    schedule = getattr(process, "schedule", None)
    if schedule is None and grid not in ("linear", "quadratic", "rho"):
        raise TaylorSolveError(f"grid {grid!r} needs a process with a scalar schedule; use 'linear', 'quadratic' or a tensor")
    return time_grid(grid, int(steps), schedule, t_cutoff=tc), eval_budget


def build_run(model: Any, x: torch.Tensor, *, method: str, order: Any, derivative: Any, process: Any, schedule: Any,
              parameterization: str | None, cond: Any, guidance_scale: Any, uncond: Any,
              method_options: dict[str, Any]) -> tuple[DiffusionModel, DiffusionProcess, Sampler, SampleStats, ModelBoundary]:
    """Model, process, sampler unit, statistics and boundary of one run (shared by sample and encode)."""
    method = canonical_method(method)
    dm = prepare_model(model, parameterization)
    proc = resolve_process(dm, process, schedule)
    cls = get_sampler(method)
    sampler = cls(order=order, derivative=derivative, **method_options)
    if not proc.supports(cls.coordinates):
        able = [m for m in _methods_for(proc)]
        raise TaylorSolveError(
            f"method {method!r} steps in {cls.coordinates!r} coordinates, which process {proc.name!r} does not have; "
            f"methods for this process: {', '.join(able)}"
        )
    check_input(x, "x1", proc)
    stats = SampleStats(method=method, order=sampler.order,
                        derivative=_derivative_name(sampler))
    boundary = ModelBoundary(dm, proc, stats, cond=cond, guidance_scale=guidance_scale, uncond=uncond)
    return dm, proc, sampler, stats, boundary


def _methods_for(proc: DiffusionProcess) -> list[str]:
    from .registry import available_methods

    return [m for m in available_methods() if proc.supports(get_sampler(m).coordinates)]


def _derivative_name(sampler: Sampler) -> str | None:
    if not sampler.takes_derivative:
        return None
    make = getattr(sampler, "make_backend", None)
    return getattr(make(), "name", None) if callable(make) else None


def sample(
    model: Callable[..., Any] | DiffusionModel,
    x1: torch.Tensor,
    steps: int | None = None,
    method: str = "genie",
    grid: str | torch.Tensor = "quadratic",
    t_cutoff: float | None = None,
    *,
    nfe: int | None = None,
    process: DiffusionProcess | str | None = None,
    schedule: Schedule | str | None = None,
    order: int | None = None,
    derivative: Any = None,
    afs: bool = False,
    denoise: bool = False,
    parameterization: str | None = None,
    cond: Any = None,
    guidance_scale: float | None = None,
    uncond: Any = None,
    overhead: float | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    **method_options: Any,
) -> SampleResult:
    """Sample from a diffusion model by integrating from ``x1`` (noise) down to ``t_cutoff``.

    Args:
        model: a :class:`~taylorsolve.diffusion.boundary.DiffusionModel` (e.g. from
            :func:`~taylorsolve.diffusion.from_diffusers` or :func:`~taylorsolve.diffusion.from_edm`),
            or any callable ``model(x, t)`` predicting ``parameterization`` (``"eps"`` default, ``"x0"``,
            ``"v"``, ``"score"``, ``"edm"``); a plain callable gets ``t`` as a float64 0-d tensor, a
            ``torch.nn.Module`` a ``[B]`` vector in its parameters' dtype.
        x1: the initial noise (leading dimensions are a batch); its dtype is the solver state's.
        steps: number of solver steps; or ``nfe=`` instead (exactly one, unless ``grid`` is a tensor).
        method: a registered method (``taylorsolve.diffusion.registry.available_methods()``; aliases
            accepted).  ``sample(model, x1, 10)`` is ten GENIE steps.
        grid: a name (``"quadratic"`` default, ``"linear"``, ``"rho"``, ``"logsnr"``, ``"edm"``,
            ``"gamma"``), a strictly decreasing float tensor of times in ``(0, 1]``, or an integer
            tensor of a discrete model's timesteps (``scheduler.timesteps``).
        t_cutoff: last time (default ``1e-3``; ``1/N`` for a discrete model with ``N`` timesteps).
        nfe: a budget of model evaluations (module docstring); ``stats.nfe <= nfe`` always.
        process, schedule: the diffusion process (default: the model's, else linear VP) or a schedule.
        order: the method's order where it has a choice (``ttm``, ``ttm-pf``, ``adams-bashforth``,
            ``deis``, ``unipc``).
        derivative: for the Taylor methods (``genie``, ``ttm``, ``ttm-pf``): ``"autodiff"`` (default),
            ``"head"`` (a network returning ``(eps, k)``), ``"zero"``, ``"ideal"``,
            ``"finite_difference"``, a provider, a callable head ``head(x, t, eps)``, or a pair of heads
            ``(head_cond, head_uncond)`` for guidance (eq. (81)).
        afs: analytical first step (app. F.2), saves one NFE.
        denoise: final denoising ``x_0 = (x - sigma eps)/alpha`` at ``t_cutoff`` (+1 NFE).
        cond, guidance_scale, uncond: conditioning (a dict of keyword arguments or one positional
            argument) and classifier-free guidance ``(1 + w) eps_c - w eps_u`` (eq. (79)).
        overhead: the derivative's cost per step in model evaluations for NFE budgets (default: the
            provider's own: a head's declared ``overhead``, one per JVP pass for autodiff).
        generator: random numbers for stochastic methods.
        return_trajectory: also return the states at all grid times.
        **method_options: the method's own options (e.g. ``rtol``/``atol`` for ``rk45``, ``r1`` for
            ``dpm-solver-2``, ``lower_order_final`` for the multistep methods).

    Raises:
        TaylorSolveError: bad input, named: unknown method (the known ones listed), both or neither
            of steps/nfe, a budget too small (the minimum named), a grid outside ``(0, 1]`` or a
            timestep outside the model's table, a model output of the wrong shape or dtype, ...
        SolverError: NaN/Inf from the model or in the state; the message names the time and step.
    """
    dm, proc, sampler, stats, boundary = build_run(
        model, x1, method=method, order=order, derivative=derivative, process=process, schedule=schedule,
        parameterization=parameterization, cond=cond, guidance_scale=guidance_scale, uncond=uncond,
        method_options=dict(method_options))
    ov = _overhead(sampler, dm, overhead)
    times, eval_budget = resolve_times(grid, steps, nfe, sampler, proc, t_cutoff, afs=bool(afs),
                                       denoise=bool(denoise), overhead=ov)
    stats.steps = len(times) - 1
    stats.nfe_budget = None if nfe is None else int(nfe)
    stats.eval_budget = eval_budget
    stats.overhead = ov
    coords = proc.coordinates(sampler.coordinates)
    with torch.no_grad(), forward_ad_safe(dm.module), _Timer(stats):
        ctx = RunContext(process=proc, coords=coords, boundary=boundary, stats=stats, t=times,
                         s=coords.s_of_t(times), afs=bool(afs), generator=generator,
                         denoise=bool(denoise))
        states = integrate(sampler, ctx, x1)
        x = states[-1]
        if denoise:
            x = denoise_fn(boundary, proc, x, times[-1])
    if eval_budget is not None and stats.nfe > eval_budget:  # pragma: no cover - a unit's nfe() is wrong
        raise TaylorSolveError(f"internal: {sampler.name} used {stats.nfe} evaluations for a budget of {eval_budget}")
    traj = torch.stack(states) if return_trajectory else None
    return SampleResult(x=x, stats=stats, trajectory=traj, times=times)


denoise_fn = denoise


def _overhead(sampler: Sampler, dm: DiffusionModel, overhead: Any) -> float:
    if overhead is None:
        return float(sampler.derivative_overhead(dm))
    try:
        ov = float(overhead)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"overhead must be a number >= 0, got {overhead!r}") from exc
    if not (math.isfinite(ov) and ov >= 0):
        raise TaylorSolveError(f"overhead must be a finite fraction >= 0 (0.05 for 5 %), got {overhead!r}")
    return ov
