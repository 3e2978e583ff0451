"""The counted, checked eps evaluation every sampler goes through (internal).

:class:`EpsEvaluator` wraps the user's model (any parameterization, optional conditioning and
classifier-free guidance) into ``eps(x, t)`` and

* counts primal evaluations (NFE) separately from evaluations under forward-mode autodiff (JVP
  passes are counted by the derivative provider, see :mod:`taylorsolve.diffusion.cost`);
* checks the output: a tensor shaped like ``x`` (else :class:`TaylorSolveError`), finite (else
  :class:`SolverError` naming the time);
* implements the analytical first step's replacement ``eps_theta(x_1, 1) ~ x_1`` (eq. (75),
  app. F.2) for the first primal evaluation (every sampler evaluates first at its start point
  ``(x_1, t = 1)``), which then costs no NFE.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import SolverError, TaylorSolveError
from .cost import SampleStats
from .schedules import Schedule, as_time_tensor

__all__ = ["EpsEvaluator", "build_eps_fn", "is_transformed"]

try:  # functorch-wrapped (dual / batched) tensors appear inside torch.func.jvp
    from torch._C._functorch import is_functorch_wrapped_tensor as _is_wrapped
except Exception:  # pragma: no cover - very old / very new torch

    def _is_wrapped(x: torch.Tensor) -> bool:  # type: ignore[misc]
        return False


def is_transformed(*tensors: Any) -> bool:
    """Whether any argument is a tensor being traced by a ``torch.func`` transform (e.g. a JVP)."""
    return any(isinstance(a, torch.Tensor) and _is_wrapped(a) for a in tensors)


def build_eps_fn(
    model: Callable[..., Any],
    schedule: Schedule,
    parameterization: str = "eps",
    cond: Any = None,
    guidance_scale: float | None = None,
    uncond: Any = None,
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]:
    """``(eps_fn, calls_per_eval)``: the model as an eps-prediction ``eps(x, t)``.

    * ``parameterization`` (``"eps"``, ``"x0"``, ``"v"``, ``"score"``) is converted to eps by
      :class:`taylorsolve.diffusion.parameterization.EpsModel`.
    * ``cond`` given: a dict is passed as keyword arguments, ``model(x, t, **cond)`` (the convention
      of :mod:`taylorsolve.diffusion.guidance`); anything else as a third argument ``model(x, t, cond)``.
    * ``guidance_scale = w`` given (needs ``cond``): classifier-free guidance, eq. (79),
      ``(1 + w) eps(x, t, cond) - w eps(x, t, uncond)`` (``uncond`` default: no condition,
      ``model(x, t)``).  Two model calls per evaluation.
    """
    from .guidance import cfg_eps
    from .parameterization import EpsModel

    if not callable(model):
        raise TaylorSolveError(f"model must be callable model(x, t), got {type(model).__name__}")
    if parameterization is None:
        parameterization = "eps"
    if guidance_scale is not None and cond is None:
        raise TaylorSolveError("guidance_scale needs cond= (classifier-free guidance, eq. (79))")
    eps_model = EpsModel(model, parameterization, schedule, check=False)

    def branch(c: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if c is None:
            return lambda x, t: eps_model(x, t)
        if isinstance(c, dict):
            return lambda x, t: eps_model(x, t, **c)
        if eps_model.parameterization == "eps":
            return lambda x, t: model(x, t, c)
        inner = EpsModel(lambda x, t: model(x, t, c), parameterization, schedule, check=False)
        return lambda x, t: inner(x, t)

    if guidance_scale is None:
        return branch(cond), 1
    w = guidance_scale
    eps_c, eps_u = branch(cond), branch(uncond)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # eq. (79)
        return cfg_eps(eps_c(x, t), eps_u(x, t), w)

    return guided, 2


class EpsEvaluator:
    """Counted and checked ``eps(x, t)``; ``t`` is passed to the model as a float64 0-d tensor."""

    def __init__(
        self,
        eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        stats: SampleStats,
        *,
        calls_per_eval: int = 1,
        afs: bool = False,
    ):
        self.eps_fn = eps_fn
        self.stats = stats
        self.calls_per_eval = calls_per_eval
        self._afs = bool(afs)
        #: "solve", "warmup" or "denoise": where primal evaluations are booked
        self.phase = "solve"
        #: step index for error messages (set by the samplers when known)
        self.step: int | None = None

    @property
    def afs_pending(self) -> bool:
        return self._afs

    def consume_afs(self) -> None:
        """Book the analytical first step (called by samplers that take it as a separate step)."""
        if not self._afs:
            raise TaylorSolveError("internal: analytical first step taken twice")
        self._afs = False
        self.stats.afs_saved += 1

    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        ad = is_transformed(x, t)
        if self._afs and not ad:
            # every sampler's first evaluation is at the start point (x_1, t = 1)
            self.consume_afs()
            return x  # eq. (75): eps_theta(x_1, 1) ~ x_1 for p_1 ~ N(0, I)
        out = self.eps_fn(x, t)
        tval = float(t.detach()) if t.ndim == 0 and not ad else None
        where = f" at t = {tval:.6g}" if tval is not None else ""
        if not isinstance(out, torch.Tensor):
            raise TaylorSolveError(f"the model must return a torch.Tensor{where}, got {type(out).__name__}")
        if out.shape != x.shape:
            raise TaylorSolveError(
                f"the model returned shape {tuple(out.shape)}{where}, but x has shape {tuple(x.shape)}"
            )
        if out.dtype != x.dtype:
            if not torch.is_floating_point(out):
                raise TaylorSolveError(f"the model returned dtype {out.dtype}{where}; expected {x.dtype}")
            out = out.to(x.dtype)
        if not ad:
            self.stats.nfe += 1
            self.stats.model_calls += self.calls_per_eval
            if self.phase == "warmup":
                self.stats.warmup_nfe += 1
            elif self.phase == "denoise":
                self.stats.denoise_nfe += 1
            if not bool(torch.isfinite(out).all()):
                n_bad = int((~torch.isfinite(out)).sum())
                loc = f" (step {self.step})" if self.step is not None else ""
                raise SolverError(
                    f"the model output has {n_bad} non-finite (NaN/Inf) entries at t = {tval:.6g}{loc}",
                    step=self.step,
                    time=tval,
                )
        return out
