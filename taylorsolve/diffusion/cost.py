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
    "nfe_rules",
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
    #: the ``nfe=`` budget asked for (None with ``steps=``)
    nfe_budget: int | None = None
    #: model evaluations the budget allows after the derivative overhead, ``round(nfe / (1 + overhead))``
    eval_budget: int | None = None
    #: cost of the derivative per step, in model evaluations (a head's measured overhead; JVP passes)
    overhead: float = 0.0
    #: steps that used derivatives (the analytical first step and first-order steps do not)
    derivative_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def equivalent_nfe(self) -> float:
        """Model evaluations plus the derivative work in evaluations: ``nfe + overhead * derivative_steps``."""
        return self.nfe + self.overhead * self.derivative_steps

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["equivalent_nfe"] = self.equivalent_nfe
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


def _sampler(method: str, order: Any = None, **options: Any):
    from .registry import get_sampler

    cls = get_sampler(method)
    if order is None and cls.default_order is None and (cls.orders is None or len(cls.orders) != 1):
        order = (cls.orders or (2,))[0]
    return cls(order=order, **options)


def nfe_rules() -> dict[str, str]:
    """The NFE rule of every registered method (``steps`` = N before the knobs; AFS -1, denoise +1)."""
    from .registry import _REGISTRY

    return {name: cls.nfe_rule for name, cls in _REGISTRY.items()}


def expected_nfe(method: str, steps: int, *, afs: bool = False, denoise: bool = False, order: Any = None,
                 **options: Any) -> int:
    """NFE of ``method`` (any accepted name or alias) with ``steps`` solver steps, from its unit's rule."""
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or int(steps) != steps or steps < 1:
        raise TaylorSolveError(f"steps must be an integer >= 1, got {steps!r}")
    sampler = _sampler(method, order, **options)
    return sampler.nfe(int(steps)) - int(bool(afs)) + int(bool(denoise))


def steps_for_nfe(method: str, nfe: int, *, afs: bool = False, denoise: bool = False, overhead: float = 0.0,
                  order: Any = None, **options: Any) -> int:
    """Largest number of steps whose NFE (after ``overhead``, sec. 5) fits in the budget ``nfe``.

    Raises :class:`TaylorSolveError` naming the minimum budget when not even one step fits, and for
    F-PNDM when its three Runge-Kutta warm-up steps do not fit (the paper lists it as N/A for <= 10 NFE).
    """
    from .sampling import plan_steps

    return plan_steps(_sampler(method, order, **options), nfe, afs=afs, denoise=denoise, overhead=overhead)[0]
