r"""Sampling from the project's U-Net with :func:`taylorsolve.diffusion.sample`.

The U-Net crosses the diffusion layer's model boundary once (:func:`diffusion_model`): as a
``torch.nn.Module`` it receives ``t`` as a ``[B]`` vector in its own dtype (float32) while the solver
state keeps the dtype of ``x1`` (float64 here); class labels travel as ``cond={"class_labels": ...}``;
sampling builds no autograd graph.  NFE budgets are the layer's (``sample(..., nfe=N)``): GENIE with
the autodiff derivative pays its JVP passes at their measured cost through ``overhead=`` (sec. 5).

Each method runs on its customary time grid (:data:`DEFAULT_GRIDS`: quadratic striding for DDIM and
GENIE as in the paper, linear striding for PNDM as in the paper, log-SNR for DPM-Solver++ and UniPC as
in their papers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from taylorsolve.diffusion import DiffusionModel, available_methods, canonical_method, sample, steps_for_nfe
from taylorsolve.errors import TaylorSolveError

from .errors import UnknownNameError

__all__ = [
    "diffusion_model",
    "DEFAULT_GRIDS",
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


def diffusion_model(model: nn.Module) -> DiffusionModel:
    """The U-Net as the diffusion layer's :class:`~taylorsolve.diffusion.DiffusionModel` (eps or v prediction,
    continuous ``t`` as ``[B]`` in the network's dtype; a headed network's ``overhead`` is kept)."""
    if isinstance(model, DiffusionModel):
        return model
    pred = getattr(getattr(model, "config", None), "prediction", "eps")     # "eps" or "v" (UNetConfig.prediction)
    return DiffusionModel(model, parameterization=pred, t_shape="batch", overhead=getattr(model, "overhead", None),
                          name=type(model).__name__)


def canonical(method: str) -> str:
    """Canonical method name (the registry's aliases; ``genie-ad`` = ``genie``)."""
    key = method.strip().lower().replace("_", "-")
    if key in ("genie-ad", "genie-autodiff"):
        return "genie"
    try:
        return canonical_method(key)
    except TaylorSolveError:
        return key


def method_available(method: str) -> bool:
    """Whether the sampler registry knows ``method``."""
    return canonical(method) in available_methods()


def _overhead(method: str, jvp_cost: float | None) -> float:
    return float(jvp_cost) if canonical(method) == "genie" and jvp_cost else 0.0


def steps_for_budget(method: str, nfe: int, *, afs: bool = False, denoise: bool = False, jvp_cost: float = 0.0) -> int:
    """Solver steps that fit the budget ``nfe`` (the diffusion layer's ``steps_for_nfe``); for GENIE with
    the autodiff derivative each JVP pass costs ``jvp_cost`` evaluations, so the budget is
    ``round(nfe / (1 + jvp_cost))`` evaluations (sec. 5's rule)."""
    return steps_for_nfe(canonical(method), nfe, afs=afs, denoise=denoise, overhead=_overhead(method, jvp_cost))


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


def run_sampler(model: nn.Module, x1: torch.Tensor, method: str, steps: int | None = None, *, nfe: int | None = None,
                jvp_cost: float | None = None, afs: bool = False, denoise: bool = False, grid: str | None = None,
                class_labels: torch.Tensor | None = None, cond: dict[str, Any] | None = None,
                guidance_scale: float | None = None, **options: Any) -> SampleRun:
    """``sample(diffusion_model(model), x1, steps | nfe=..., method=..., grid=..., afs=..., denoise=...)`` in
    eval mode; ``jvp_cost`` prices GENIE-AD's JVP passes in an NFE budget.  ``model`` may be a headed
    model (:func:`images.heads.attach_head`) with ``derivative="head"``; its overhead prices the heads.
    ``cond``: the network's conditioning keyword arguments (an upsampler's ``low_res``/``aug_level``),
    ``class_labels`` joins them; ``guidance_scale``: classifier-free guidance (eq. (79)) of a
    class-conditional model, ``None`` or ``0``: none."""
    m = canonical(method)
    if not method_available(m):
        raise UnknownNameError(f"method {method!r} is not a registered sampler; known methods: "
                               f"{', '.join(available_methods())}")
    g = grid or DEFAULT_GRIDS.get(m, "quadratic")
    module = model.module if isinstance(model, DiffusionModel) else model    # a headed model: its network
    was_training = module.training
    module.eval()
    try:
        kw = dict(options)
        if m == "genie":
            kw.setdefault("derivative", "autodiff")
        if nfe is not None and _overhead(m, jvp_cost):
            kw["overhead"] = _overhead(m, jvp_cost)
        c = dict(cond or {})
        if class_labels is not None:
            c["class_labels"] = class_labels
        if c:
            kw["cond"] = c
        if guidance_scale is not None:
            from .guidance import check_guidable, check_scale

            check_guidable(model)                     # GuidanceError for an unconditional model
            if check_scale(guidance_scale):
                kw["guidance_scale"] = float(guidance_scale)
        out = sample(diffusion_model(model), x1, steps, method=m, grid=g, nfe=nfe, afs=afs, denoise=denoise, **kw)
    finally:
        module.train(was_training)
    st = out.stats
    return SampleRun(x=out.x, method=m, steps=int(st.steps), grid=g, afs=afs, denoise=denoise, nfe=int(st.nfe),
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

    net = model.module if isinstance(model, DiffusionModel) else model      # a headed model: its network
    cfg = net.config  # type: ignore[attr-defined]
    device = next(net.parameters()).device
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
                    class_labels: torch.Tensor | None = None, steps: int | None = None,
                    cond: dict[str, Any] | None = None, guidance_scale: float | None = None) -> SampleRun:
    """The ODE solution ``x(t_cutoff)`` from ``x1`` by a high-accuracy solver (:data:`REFERENCE_SOLVERS`).

    ``x1`` should be float64 (the solver state); the model runs in its own dtype.
    """
    if solver not in REFERENCE_SOLVERS:
        raise UnknownNameError(f"unknown reference solver {solver!r}; known: {', '.join(REFERENCE_SOLVERS)}")
    method, n, grid, opts = REFERENCE_SOLVERS[solver]
    return run_sampler(model, x1, method, steps if steps is not None else n, grid=grid, denoise=denoise,
                       class_labels=class_labels, cond=cond, guidance_scale=guidance_scale, **opts)
