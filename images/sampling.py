r"""Sampling from the project's U-Net with :func:`taylorsolve.diffusion.sample`.

:func:`as_eps_fn` is the ONE place where the U-Net meets the diffusion layer: the samplers call
``eps_fn(x, t)`` with ``x`` in the solver's dtype and ``t`` a float64 0-d tensor; the U-Net wants
``t`` as ``[B]`` in its own dtype.  Everything else here (NFE budgets, batching, the reference
solves) goes through that function, so replacing it by the diffusion layer's model boundary is a
one-place change.

Methods are those of ``sample()`` (``taylorsolve.diffusion.METHODS``); names it does not know yet
(:data:`PLANNED_METHODS`, e.g. ``"unipc"``) are reported as unavailable.  Each method runs on its
customary time grid (:data:`DEFAULT_GRIDS`: quadratic striding for DDIM and GENIE as in the paper,
linear striding for PNDM as in the paper, log-SNR for DPM-Solver++ and UniPC as in their papers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from taylorsolve.diffusion import sample, steps_for_nfe, expected_nfe
from taylorsolve.errors import TaylorSolveError

from .errors import UnknownNameError

__all__ = [
    "as_eps_fn",
    "DEFAULT_GRIDS",
    "PLANNED_METHODS",
    "method_available",
    "canonical",
    "steps_for_budget",
    "SampleRun",
    "run_sampler",
    "generate",
    "reference_solve",
    "REFERENCE_SOLVERS",
]

#: time grid per method (any method not listed: quadratic)
DEFAULT_GRIDS: dict[str, str] = {
    "ddim": "quadratic",
    "genie": "quadratic",
    "ttm": "quadratic",
    "s-pndm": "linear",
    "f-pndm": "linear",
    "dpm-solver++2m": "logsnr",
    "dpm-solver-2": "logsnr",
    "dpm-solver-3": "logsnr",
    "deis": "quadratic",
    "unipc": "logsnr",
    "heun": "edm",
}

#: methods the main job compares that ``sample()`` may not implement yet
PLANNED_METHODS = ("unipc",)


def as_eps_fn(model: nn.Module, class_labels: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """THE glue between the U-Net and ``taylorsolve.diffusion.sample``: ``eps_fn(x, t)``.

    * ``t`` (a float64 0-d tensor from the sampler, possibly a dual tensor inside ``torch.func.jvp``)
      is cast to the model's dtype and device and expanded to ``[B]``;
    * ``x`` is cast to the model's dtype, the result back to ``x``'s dtype;
    * the call runs under ``torch.no_grad()`` (no autograd graph; forward-mode AD for GENIE's
      derivative still flows: ``torch.func.jvp`` is unaffected by ``no_grad``);
    * ``class_labels`` (int ``[B]``) are passed for class-conditional models.

    The model should be in eval mode (dropout off); :func:`run_sampler` makes sure of it.
    """
    p = next(model.parameters())
    dtype, device = p.dtype, p.device

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tb = t.to(device=device, dtype=dtype).expand(x.shape[0])
        with torch.no_grad():
            if class_labels is None:
                out = model(x.to(dtype), tb)
            else:
                out = model(x.to(dtype), tb, class_labels)
        return out.to(x.dtype)

    return eps_fn


def canonical(method: str) -> str:
    """Canonical method name (``sample()``'s aliases; ``genie-ad`` = ``genie``)."""
    key = method.strip().lower().replace("_", "-")
    if key in ("genie-ad", "genie-autodiff"):
        return "genie"
    try:
        from taylorsolve.diffusion.samplers import canonical_method

        return canonical_method(key)
    except TaylorSolveError:
        return key


def method_available(method: str) -> bool:
    """Whether ``sample()`` knows ``method`` today."""
    from taylorsolve.diffusion import METHODS

    return canonical(method) in METHODS


def steps_for_budget(method: str, nfe: int, *, afs: bool = False, denoise: bool = False, jvp_cost: float = 0.0) -> int:
    """Solver steps whose cost fits ``nfe``: ``steps_for_nfe`` of the diffusion layer; for GENIE with
    the autodiff derivative each step also costs ``jvp_cost`` (the JVP pass in units of one eps
    evaluation), i.e. the budget is ``round(nfe / (1 + jvp_cost))`` evaluations (sec. 5's rule)."""
    m = canonical(method)
    if m == "genie" and jvp_cost > 0:
        # the AFS step and the denoising step take no JVP; the others do
        best = 0
        for n in range(1, nfe + 2):
            jvps = n - int(afs)
            cost = expected_nfe("genie", n, afs=afs, denoise=denoise) + jvp_cost * jvps
            if cost <= nfe + 1e-9:
                best = n
        if best == 0:
            raise TaylorSolveError(f"genie (autodiff, JVP cost {jvp_cost:.2f}) cannot take a step with {nfe} NFE")
        return best
    return steps_for_nfe(m, nfe, afs=afs, denoise=denoise)


@dataclass
class SampleRun:
    """One sampler run: final states, the diffusion layer's stats, steps and grid used."""

    x: torch.Tensor
    method: str
    steps: int
    grid: str
    afs: bool
    denoise: bool
    nfe: int
    jvp_passes: int
    wall_time: float
    stats: dict[str, Any] = field(default_factory=dict)


def run_sampler(model: nn.Module, x1: torch.Tensor, method: str, steps: int, *, afs: bool = False,
                denoise: bool = False, grid: str | None = None, class_labels: torch.Tensor | None = None,
                **options: Any) -> SampleRun:
    """``sample(as_eps_fn(model), x1, steps, method=..., grid=..., afs=..., denoise=...)`` in eval mode."""
    m = canonical(method)
    if not method_available(m):
        from taylorsolve.diffusion import METHODS

        raise UnknownNameError(f"method {method!r} is not (yet) implemented by taylorsolve.diffusion.sample; "
                               f"known methods: {', '.join(METHODS)}")
    g = grid or DEFAULT_GRIDS.get(m, "quadratic")
    was_training = model.training
    model.eval()
    try:
        kw = dict(options)
        if m == "genie":
            kw.setdefault("derivative", "autodiff")
        out = sample(as_eps_fn(model, class_labels), x1, steps, method=m, grid=g, afs=afs, denoise=denoise, **kw)
    finally:
        model.train(was_training)
    st = out.stats
    return SampleRun(x=out.x, method=m, steps=steps, grid=g, afs=afs, denoise=denoise, nfe=int(st.nfe),
                     jvp_passes=int(st.jvp_passes), wall_time=float(st.wall_time), stats=st.as_dict())


def initial_noise(num: int, shape: Sequence[int], seed: int, dtype: torch.dtype = torch.float64,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """``x_1 ~ N(0, I)`` ``[num, *shape]`` drawn on the CPU from ``seed`` (same noise on every device)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((num, *shape), generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def generate(model: nn.Module, num: int, *, seed: int, method: str, steps: int, afs: bool = False,
             denoise: bool = False, grid: str | None = None, batch_size: int = 256, dtype: torch.dtype = torch.float64,
             class_labels: torch.Tensor | None = None, progress: bool = False, **options: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """``num`` samples in batches; returns ``(x [num, C, H, W] on CPU, totals)`` (NFE per batch, JVPs, seconds)."""
    from tqdm.auto import tqdm

    cfg = model.config  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    x1 = initial_noise(num, (cfg.in_channels, cfg.resolution, cfg.resolution), seed, dtype=dtype)
    outs, nfe, jvp, secs = [], 0, 0, 0.0
    for i in tqdm(range(0, num, batch_size), disable=not progress, desc=f"{method} x{steps}", leave=False):
        xb = x1[i:i + batch_size].to(device)
        lb = None if class_labels is None else class_labels[i:i + batch_size].to(device)
        r = run_sampler(model, xb, method, steps, afs=afs, denoise=denoise, grid=grid, class_labels=lb, **options)
        outs.append(r.x.detach().cpu())
        nfe, jvp, secs = r.nfe, r.jvp_passes, secs + r.wall_time
    return torch.cat(outs), {"nfe": nfe, "jvp_passes": jvp, "seconds": secs, "method": canonical(method), "steps": steps}


# ------------------------------------------------------------------------------------------------
# high-accuracy reference solves of the same ODE from the same noise
# ------------------------------------------------------------------------------------------------
#: reference solvers: name -> (method, steps or None, grid, options)
REFERENCE_SOLVERS: dict[str, tuple[str, int | None, str, dict[str, Any]]] = {
    # adaptive Dormand-Prince on the probability-flow ODE in t (scipy), tight tolerances
    "rk45": ("rk45", None, "quadratic", {"rtol": 1e-7, "atol": 1e-7}),
    # DPM-Solver-3 (third order, singlestep) on the DDIM ODE, uniform in log-SNR
    "dpm3": ("dpm-solver-3", 100, "logsnr", {}),
}


def reference_solve(model: nn.Module, x1: torch.Tensor, solver: str = "rk45", *, denoise: bool = False,
                    class_labels: torch.Tensor | None = None, steps: int | None = None) -> SampleRun:
    """The ODE solution ``x(t_cutoff)`` from ``x1`` by a high-accuracy solver (:data:`REFERENCE_SOLVERS`).

    ``x1`` should be float64 (the solver state); the model runs in its own dtype.
    """
    if solver not in REFERENCE_SOLVERS:
        raise UnknownNameError(f"unknown reference solver {solver!r}; known: {', '.join(REFERENCE_SOLVERS)}")
    method, n, grid, opts = REFERENCE_SOLVERS[solver]
    return run_sampler(model, x1, method, steps if steps is not None else n, grid=grid, denoise=denoise,
                       class_labels=class_labels, **opts)
