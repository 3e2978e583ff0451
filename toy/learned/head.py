r"""GENIE's prediction head ``k_psi ~ d eps_theta / d gamma`` on the toy eps-MLP (sec. 3.1, Fig. 4, Alg. 1).

The toy owns only its network (an MLP on the eps model's last hidden features ``h``, the time
embedding ``temb``, ``x_t`` and an eps input, Fig. 4) and its training loop.  Everything else is the
shared objective of :mod:`taylorsolve.diffusion.distillation` (the same code as the image heads):
targets by one ``torch.func.jvp`` with the sign of eq. (12) (:func:`~taylorsolve.diffusion.distillation.derivative_targets`),
the AD-free target of app. D, the mixed parameterisation of eq. (14)
(:func:`~taylorsolve.diffusion.distillation.combine_outputs`), the weighting ``g_d = gamma^2`` and loss of
eq. (15), the distribution of the distillation times and the held-out relative errors per band of ``t``.

Decisions and ablations (:class:`HeadConfig`; see the shared module for the math)
----------------------------------------------------------------------------------
* ``feed="eps_theta"`` (default, the paper's text): the head's eps input is the model's
  ``eps_theta(x_t, t)`` in training and sampling.  ``feed="true_noise"`` is the released code's
  choice.  Here ``eps_theta = Linear(h)`` is a function of the features the head already sees, so
  both choices end up nearly equal.
* ``objective="ad_free"``: app. D's regression target (unbiased, noisy) instead of the JVP.
* ``mixed=False``: "no mixed parameterisation"; ``weighting=False``: "no gamma^2 weighting".
* ``time_sampling``: the distribution of ``t`` (:func:`taylorsolve.diffusion.distillation.sample_times`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from taylorsolve.diffusion import distillation as dist
from taylorsolve.diffusion import providers as _providers
from taylorsolve.diffusion.schedules import LinearVPSchedule, Schedule, as_time_tensor, get_schedule

from .model import EpsMLP, diffuse
from .train import TrainConfig, TrainState, load_checkpoint, read_checkpoint_metadata, train_loop

__all__ = [
    "DerivativeHead",
    "HeadConfig",
    "HeadedModel",
    "freeze",
    "autodiff_target",
    "distill_head",
    "evaluate_head",
    "measure_overhead",
    "count_parameters",
    "load_head",
    "make_head",
    "calibrate_head",
]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def freeze(model: nn.Module) -> nn.Module:
    """Freeze the teacher: eval mode, ``requires_grad=False`` on every parameter (docs/CONVENTIONS.md: the teacher is frozen)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class DerivativeHead(nn.Module):
    """``k_psi(h, temb, x_t, eps, gamma)``: an MLP on ``[h, temb, x_t, eps, log gamma]`` with the mixed output of eq. (14).

    ``mixed=True``: ``3 d`` outputs ``k^(1..3)`` combined by
    :func:`taylorsolve.diffusion.distillation.combine_outputs`; ``mixed=False``: ``d`` outputs used
    directly.  ``depth`` hidden layers of width ``hidden``.  The inputs are standardised by fixed
    per-feature shifts and scales (buffers saved with the head, set once by :meth:`calibrate` before
    training; identity until then): the teacher's features, its time embedding and ``x_t`` live on very
    different scales.  Computes in the parameters' dtype and returns it.
    """

    def __init__(self, feat_dim: int, temb_dim: int, dim: int = 2, hidden: int = 64, mixed: bool = True,
                 depth: int = 1):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.feat_dim, self.temb_dim, self.dim, self.hidden, self.mixed, self.depth = feat_dim, temb_dim, dim, hidden, mixed, depth
        n_in = feat_dim + temb_dim + 2 * dim + 1
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 3 * dim if mixed else dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("in_shift", torch.zeros(n_in))
        self.register_buffer("in_scale", torch.ones(n_in))

    @property
    def config(self) -> dict[str, Any]:
        return {"feat_dim": self.feat_dim, "temb_dim": self.temb_dim, "dim": self.dim, "hidden": self.hidden,
                "mixed": self.mixed, "depth": self.depth}

    def _inputs(self, h: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
                gamma: torch.Tensor) -> torch.Tensor:
        dt = self.net[0].weight.dtype
        g = as_time_tensor(gamma)
        g = g.expand(x.shape[0]) if g.ndim == 0 else g
        return torch.cat([h.to(dt), temb.to(dt), x.to(dt), eps.to(dt), torch.log(g).to(dt)[:, None]], dim=-1)

    @torch.no_grad()
    def calibrate(self, h: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
                  gamma: torch.Tensor) -> None:
        """Set the input standardisation from a batch (mean and standard deviation per input feature)."""
        z = self._inputs(h, temb, x, eps, gamma)
        self.in_shift.copy_(z.mean(0))
        self.in_scale.copy_(z.std(0).clamp_min(1e-3))

    def forward(self, h: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
                gamma: torch.Tensor) -> torch.Tensor:
        z = (self._inputs(h, temb, x, eps, gamma) - self.in_shift) / self.in_scale
        return dist.combine_outputs(self.net(z), gamma, mixed=self.mixed, dim=-1)      # eq. (14)


# ------------------------------------------------------------------------------------------------
# targets (the shared implementation; kept under the toy's name for its callers)
# ------------------------------------------------------------------------------------------------
def autodiff_target(teacher: nn.Module, x: torch.Tensor, t: Any, schedule: Schedule | str | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_theta, d eps_theta/d gamma)`` at ``(x_t, t)``: :func:`taylorsolve.diffusion.distillation.derivative_targets`
    (one ``torch.func.jvp``, eq. (12) with its ``+`` sign) for the toy's schedule."""
    tg = dist.derivative_targets(teacher, x, t, process=get_schedule(schedule))
    return tg.eps, tg.d1


# ------------------------------------------------------------------------------------------------
# distillation
# ------------------------------------------------------------------------------------------------
@dataclass
class HeadConfig(TrainConfig):
    """Distillation settings (``hidden``/``depth`` are the head's here); the objective's knobs are those of
    :class:`taylorsolve.diffusion.distillation.DistillationObjective` (checked by it)."""

    iters: int = 1500
    batch: int = 256
    lr: float = 2e-3
    lr_final: float = 1e-5
    seed: int = 1
    hidden: int = 128
    depth: int = 2
    mixed: bool = True                  # eq. (14); False: "no mixed parameterization"
    weighting: bool = True              # g_d = gamma^2 of eq. (15); False: "no weighting"
    feed: str = "eps_theta"             # or "true_noise" (released code)
    objective: str = "autodiff"         # or "ad_free" (app. D)
    time_sampling: str = "uniform+log"  # distribution of the distillation times

    def __post_init__(self) -> None:
        self.distillation_objective()

    def distillation_objective(self) -> dist.DistillationObjective:
        return dist.DistillationObjective(order=1, mixed=self.mixed, weighting=self.weighting, feed=self.feed,
                                          objective=self.objective, time_sampling=self.time_sampling,
                                          t_cutoff=self.t_cutoff)


def make_head(teacher: EpsMLP, hcfg: HeadConfig) -> DerivativeHead:
    torch.manual_seed(hcfg.seed)
    return DerivativeHead(teacher.hidden, teacher.temb_dim, teacher.dim, hcfg.hidden, hcfg.mixed, hcfg.depth)


def calibrate_head(teacher: EpsMLP, head: DerivativeHead, mixture: Any, hcfg: HeadConfig, schedule: Any = None,
                   n: int = 4096) -> None:
    """:meth:`DerivativeHead.calibrate` on ``n`` fresh ``(x_t, t)`` (its own seed; times as in training)."""
    schedule = get_schedule(schedule if schedule is not None else LinearVPSchedule())
    gen = torch.Generator().manual_seed(hcfg.seed + 7919)
    x0 = mixture.sample(n, gen).to(teacher.out.weight.dtype)
    t = dist.sample_times(n, hcfg.t_cutoff, gen, kind=hcfg.time_sampling)
    xt, _ = diffuse(x0, t, schedule, gen)
    with torch.no_grad():
        h, temb, eps = teacher.forward_all(xt, t)
    head.calibrate(h, temb, xt, eps, schedule.gamma(t))


def head_loss(teacher: EpsMLP, head: DerivativeHead, x0: torch.Tensor, t: torch.Tensor, hcfg: HeadConfig,
              schedule: Schedule, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. (15) by :func:`taylorsolve.diffusion.distillation.distillation_loss` (targets per ``hcfg.objective``)."""
    obj = hcfg.distillation_objective()
    xt, noise = diffuse(x0, t, schedule, generator)
    with torch.no_grad():
        h, temb, eps_th = teacher.forward_all(xt, t)
    if obj.objective == "autodiff":
        target = dist.derivative_targets(teacher, xt, t, process=schedule, eps=eps_th).d1
    else:
        target = dist.ad_free_target(teacher, xt, t, noise, process=schedule, eps=eps_th)
    gamma = schedule.gamma(t)
    k = head(h, temb, xt, noise if obj.feed == "true_noise" else eps_th, gamma)
    return dist.distillation_loss(k, target, gamma, weighting=obj.weighting)


def distill_head(
    teacher: EpsMLP,
    mixture: Any = None,
    hcfg: HeadConfig | None = None,
    ckpt_path: str | None = None,
    *,
    schedule: Any = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[DerivativeHead, TrainState]:
    """Alg. 1: train ``k_psi`` on ``x_t = alpha_t x_0 + sigma_t eps`` with the frozen teacher, ``t`` drawn by
    :func:`taylorsolve.diffusion.distillation.sample_times` (``hcfg.time_sampling``)."""
    from toy import nested_mixture

    hcfg = hcfg or HeadConfig()
    mixture = mixture if mixture is not None else nested_mixture()
    schedule = get_schedule(schedule if schedule is not None else LinearVPSchedule())
    freeze(teacher)
    head = make_head(teacher, hcfg)
    calibrate_head(teacher, head, mixture, hcfg, schedule)   # (a resumed run restores these buffers)

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        x0 = mixture.sample(hcfg.batch, gen).to(teacher.out.weight.dtype)
        t = dist.sample_times(hcfg.batch, hcfg.t_cutoff, gen, kind=hcfg.time_sampling)
        return head_loss(teacher, head, x0, t, hcfg, schedule, gen)

    desc = f"head (mixed={hcfg.mixed}, w={hcfg.weighting}, {hcfg.feed}, {hcfg.objective})"
    state = train_loop(head, loss_fn, hcfg, ckpt_path, resume=resume, progress=progress, desc=desc, kind="head",
                       extra_config={"head": head.config}, stop_after=stop_after)
    return head, state


def load_head(path: str) -> DerivativeHead:
    meta = read_checkpoint_metadata(path)
    head = DerivativeHead(**meta["config"]["head"])
    load_checkpoint(path, head)
    return head.eval()


@torch.no_grad()
def evaluate_head(teacher: EpsMLP, head: DerivativeHead, mixture: Any, n: int = 4096, seed: int = 12345,
                  t_cutoff: float = 1e-3, schedule: Any = None, time_sampling: str = "uniform+log",
                  bands: Any = dist.DEFAULT_BANDS) -> dict[str, Any]:
    """Held-out error of the head against the autodiff target (eq. (12)) at fresh ``(x_t, t)``.

    :func:`taylorsolve.diffusion.distillation.relative_errors`: ``rel_mse`` (``gamma^2``-weighted, a zero
    derivative scores 1), ``rel_mse_unweighted`` and ``bands`` (per band of ``t``), with ``t`` drawn
    by ``time_sampling``.  The head gets ``eps_theta`` (as in sampling).
    """
    schedule = get_schedule(schedule if schedule is not None else LinearVPSchedule())
    gen = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(n, gen).to(teacher.out.weight.dtype)
    t = dist.sample_times(n, t_cutoff, gen, kind=time_sampling)
    xt, _ = diffuse(x0, t, schedule, gen)
    h, temb, eps = teacher.forward_all(xt, t)
    tg = dist.derivative_targets(teacher, xt, t, process=schedule, eps=eps)
    k = head(h, temb, xt, eps, tg.gamma)
    return dist.relative_errors(k, tg.d1, t, tg.gamma, bands=bands)


# ------------------------------------------------------------------------------------------------
# sampling with the head
# ------------------------------------------------------------------------------------------------
class HeadedModel:
    """Teacher + head for sampling: ``model(x, t) -> eps_theta`` and ``derivative(x, t, eps) -> k_psi``.

    The features of the last eps evaluation are cached (the head reuses the trunk's forward pass, as
    in Fig. 4; ``cache_hits``/``cache_misses`` count reuse).  ``provider()`` gives
    ``taylorsolve.diffusion.providers.learned(self.derivative)`` for ``sample(..., derivative=...)``.
    """

    def __init__(self, teacher: EpsMLP, head: DerivativeHead, schedule: Any = None):
        self.teacher = freeze(teacher)
        self.head = head.eval()
        self.schedule = get_schedule(schedule if schedule is not None else LinearVPSchedule())
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.cache_hits = 0
        self.cache_misses = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        h, temb, eps = self.teacher.forward_all(x, t)
        self._cache = (x.detach().clone(), t.detach().clone(), h, temb)
        return eps

    @torch.no_grad()
    def derivative(self, x: torch.Tensor, t: Any, eps: torch.Tensor) -> torch.Tensor:
        t = as_time_tensor(t)
        c = self._cache
        if (c is not None and c[0].shape == x.shape and torch.equal(c[1], t)
                and torch.allclose(c[0], x.to(c[0].dtype), rtol=1e-10, atol=1e-12)):
            h, temb = c[2], c[3]
            self.cache_hits += 1
        else:
            h, temb, _ = self.teacher.forward_all(x, t)
            self.cache_misses += 1
        gamma = self.schedule.gamma(t)
        return self.head(h, temb, x, eps, gamma).to(x.dtype)

    def provider(self) -> _providers.LearnedProvider:
        return _providers.learned(self.derivative, schedule=self.schedule)


@torch.no_grad()
def measure_overhead(teacher: EpsMLP, head: DerivativeHead, batch: int = 1024, repeats: int = 21, inner: int = 20,
                     seed: int = 0) -> dict[str, float]:
    """Head time / eps-model forward time (medians over ``repeats`` of ``inner`` calls; interleaved).

    The head's time excludes the trunk (it reuses the features, Fig. 4), as in app. C.2.5.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, teacher.dim, generator=gen)
    t = torch.full((batch,), 0.3, dtype=torch.float64)
    gamma = LinearVPSchedule().gamma(t)
    h, temb, eps = teacher.forward_all(x, t)
    for _ in range(3):
        teacher.forward_all(x, t)
        head(h, temb, x, eps, gamma)
    tm, th = [], []
    for _ in range(repeats):
        s = time.perf_counter()
        for _ in range(inner):
            teacher.forward_all(x, t)
        tm.append((time.perf_counter() - s) / inner)
        s = time.perf_counter()
        for _ in range(inner):
            head(h, temb, x, eps, gamma)
        th.append((time.perf_counter() - s) / inner)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {"model_s": med(tm), "head_s": med(th), "overhead": med(th) / med(tm),
            "head_params": count_parameters(head), "model_params": count_parameters(teacher)}
