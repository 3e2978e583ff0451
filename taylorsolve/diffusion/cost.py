"""Cost accounting for diffusion samplers: model evaluations (NFE), derivative work, wall time.

Counting rules (the same for every method in :func:`taylorsolve.diffusion.sample`):

* ``nfe`` -- evaluations of the eps model ``eps_theta(x_t, t)`` (one primal forward pass each), the
  quantity the GENIE paper calls NFE (sec. 5).  Warm-up evaluations (F-PNDM's Runge-Kutta steps,
  S-PNDM's improved-Euler first step), intermediate stages (Heun, DPM-Solver) and the final
  denoising step ``x_0 = (x_t - sigma_t eps) / alpha_t`` (sec. 5, "Synthesis Strategy") count.
  The analytical first step (AFS, app. F.2) replaces the evaluation ``eps_theta(x_1, 1) ~ x_1``
  (eq. (75)) and so saves exactly one.  With classifier-free guidance (eq. (79)) one guided
  evaluation counts once in ``nfe`` and twice in ``model_calls``.
* ``derivative_evals`` -- evaluations of the derivative provider: calls of a distilled head or of a
  closed-form derivative function, autodiff derivative computations (one per Taylor coefficient
  above the first), finite-difference reconstructions.
* ``jvp_passes`` -- forward-mode JVP passes through the model (autodiff providers only); a nested
  JVP of depth ``k`` counts ``k`` (the core's convention, cost ~ ``3^k``-``4^k`` f evaluations, measured).
* ``wall_time`` -- seconds spent in the sampler.

The paper compares solvers with different per-step overhead by dividing the NFE budget by the
relative cost of one step and rounding to the nearest integer (sec. 5, "Accounting for
Computational Overhead"; Tab. 5 lists the head overheads): :func:`overhead_adjusted_nfe`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import TaylorSolveError

__all__ = [
    "SampleStats",
    "overhead_adjusted_nfe",
    "expected_nfe",
    "steps_for_nfe",
    "NFE_RULES",
    "PAPER_HEAD_OVERHEAD",
]

#: additional computational overhead of GENIE's prediction heads, as fractions (Tab. 5)
PAPER_HEAD_OVERHEAD: dict[str, float] = {
    "cifar10": 0.0147,
    "lsun_bedrooms": 0.140,
    "lsun_church": 0.144,
    "imagenet": 0.0283,
    "cats_base": 0.0755,
    "cats_upsampler": 0.133,
}


@dataclass
class SampleStats:
    """Work done by one call of :func:`taylorsolve.diffusion.sample` (see the module docstring)."""

    method: str = ""
    steps: int = 0
    nfe: int = 0
    derivative_evals: int = 0
    jvp_passes: int = 0
    model_calls: int = 0
    warmup_nfe: int = 0
    afs_saved: int = 0
    denoise_nfe: int = 0
    wall_time: float = 0.0
    order: int | None = None
    derivative: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(d.pop("extra"))
        return d

    def adjusted_nfe(self, overhead: float) -> int:
        """:func:`overhead_adjusted_nfe` of this run's NFE."""
        return overhead_adjusted_nfe(self.nfe, overhead)


class _Timer:
    """Context manager adding elapsed seconds to ``stats.wall_time``."""

    def __init__(self, stats: SampleStats):
        self.stats = stats

    def __enter__(self) -> "_Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stats.wall_time += time.perf_counter() - self._start


def overhead_adjusted_nfe(nfe: int | float, overhead: float) -> int:
    """NFE budget of a method whose steps cost ``1 + overhead`` model evaluations.

    The GENIE paper (sec. 5): "we divide the NFEs by the computational overhead and round to the
    nearest integer. For example, on LSUN Bedrooms [overhead 14.0 %, Tab. 5], we compare baselines
    with 10/15 NFEs to GENIE with 9/13 NFEs"; and with autodiff derivatives "NFEs adjusted assuming
    an additional computational overhead of 100%".  So this returns ``round(nfe / (1 + overhead))``
    with halves rounded up; ``overhead`` is a fraction (``0.14`` for 14 %, ``1.0`` for 100 %).

    >>> overhead_adjusted_nfe(10, 0.14), overhead_adjusted_nfe(15, 0.14)
    (9, 13)
    """
    try:
        nfe_f = float(nfe)
        ov = float(overhead)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"nfe and overhead must be numbers, got {nfe!r}, {overhead!r}") from exc
    if not math.isfinite(nfe_f) or nfe_f < 0:
        raise TaylorSolveError(f"nfe must be a finite number >= 0, got {nfe!r}")
    if not math.isfinite(ov) or ov < 0:
        raise TaylorSolveError(f"overhead must be a finite fraction >= 0 (0.14 for 14 %), got {overhead!r}")
    return int(math.floor(nfe_f / (1.0 + ov) + 0.5))


#: NFE of ``steps`` solver steps before the knobs (``afs`` subtracts 1, ``denoise`` adds 1).
NFE_RULES: dict[str, str] = {
    "ddim": "steps (one eps evaluation per Euler step on the DDIM ODE)",
    "genie": "steps (one eps evaluation per step; the derivative comes from the provider)",
    "ttm": "steps (one eps evaluation per step; derivatives from the provider)",
    "ttm-pf": "steps (one eps evaluation per step; derivatives by autodiff)",
    "s-pndm": "steps + 1 (first step: pseudo improved Euler, 2 evaluations)",
    "f-pndm": "4 * min(steps, 3) + max(steps - 3, 0) (three pseudo Runge-Kutta warm-up steps of 4 evaluations)",
    "adams-bashforth": "steps (history reused)",
    "heun": "2 * steps (Euler predictor + trapezoidal corrector)",
    "dpm-solver-2": "2 * steps",
    "dpm-solver-3": "3 * steps",
    "dpm-solver++2m": "steps",
    "deis": "steps",
    "euler-maruyama": "steps",
    "rk45": "adaptive: scipy's nfev",
}


def expected_nfe(method: str, steps: int, *, afs: bool = False, denoise: bool = False) -> int:
    """NFE of ``method`` with ``steps`` solver steps, from the method definitions (:data:`NFE_RULES`)."""
    method = method.lower()
    if method not in NFE_RULES:
        raise TaylorSolveError(f"unknown method {method!r}; known: {', '.join(NFE_RULES)}")
    if method == "rk45":
        raise TaylorSolveError("rk45 is adaptive: its NFE is only known after the solve (stats.nfe)")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise TaylorSolveError(f"steps must be an integer >= 1, got {steps!r}")
    n = int(steps)
    base = {
        "s-pndm": n + 1,
        "f-pndm": 4 * min(n, 3) + max(n - 3, 0),
        "heun": 2 * n,
        "dpm-solver-2": 2 * n,
        "dpm-solver-3": 3 * n,
    }.get(method, n)
    return base - int(bool(afs)) + int(bool(denoise))


def steps_for_nfe(method: str, nfe: int, *, afs: bool = False, denoise: bool = False) -> int:
    """Largest number of steps whose :func:`expected_nfe` fits in the budget ``nfe``.

    Raises :class:`TaylorSolveError` when not even one step fits, and for F-PNDM when its three
    Runge-Kutta warm-up steps do not fit (the paper reports it as N/A for <= 10 NFE, Tab. 1).
    """
    best = 0
    for n in range(1, int(nfe) + 2):
        if expected_nfe(method, n, afs=afs, denoise=denoise) <= nfe:
            best = n
    if best == 0:
        raise TaylorSolveError(f"method {method!r} cannot take a single step with {nfe} NFE")
    if method.lower() == "f-pndm" and best < 3:
        raise TaylorSolveError(
            f"f-pndm needs its 3 Runge-Kutta warm-up steps (12 NFE{', 11 with AFS' if afs else ''}); "
            f"{nfe} NFE is not enough (the paper lists F-PNDM as N/A for <= 10 NFE)"
        )
    return best
