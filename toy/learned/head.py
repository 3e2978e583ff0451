r"""GENIE's prediction head ``k_psi ~ d eps_theta / d gamma`` (sec. 3.1, Fig. 4, app. C.2.3-C.2.4, app. D).

The head sits on the eps model's last hidden features ``h`` and takes the time embedding ``temb``,
``x_t`` and an eps input (Fig. 4).  Its output is combined with the **mixed parameterization** of
eq. (14) / (66),

    k_psi = -1/gamma k^(1) + gamma/(1+gamma^2) k^(2) + 1/(gamma (1+gamma^2)) k^(3)  ~  d eps_theta / d gamma,

whose three prefactors are those of the three terms of eq. (12) evaluated for a single-point data
distribution (eq. (63)-(65)); ``mixed=False`` is the ablation "no mixed parameterization" (one
direct output ``k_psi = k``).

Distillation (Alg. 1) regresses on the autodiff target, eq. (12) with its ``+`` sign,

    d eps_theta / d gamma = JVP_s + JVP_t,
    JVP_s = (d eps_theta/d x) (eps_theta/sqrt(1+gamma^2) - gamma x/(1+gamma^2)),   JVP_t = (d eps_theta/d t) dt/d gamma

(Alg. 1 writes ``JVP_s - JVP_t``: a typo, see ``docs/PAPER_ERRATA.md``), computed as **one**
``torch.func.jvp`` of the frozen teacher with the tangent pair ``(dx/dgamma, dt/dgamma)`` (eq. (11)),
with the loss of eq. (15), ``g_d(t) = gamma_t^2`` (``weighting=False``: ``g_d = 1``, the ablation
"no gamma^2 weighting").

Decisions and ablations
-----------------------
* ``feed="eps_theta"`` (default, the paper's text): the head's eps input is the model's
  ``eps_theta(x_t, t)`` in training and sampling.  ``feed="true_noise"`` is the released code's
  choice: during distillation the head sees the true noise ``eps`` used to make ``x_t``, during
  sampling (where no true noise exists) ``eps_theta``.  Note: here ``eps_theta = Linear(h)`` is a
  function of the features ``h`` the head already sees, so the eps input adds no information and the
  head learns to ignore the (for the target irrelevant) true noise: both choices end up nearly equal.
* ``objective="ad_free"``: the AD-free objective of app. D for the spatial JVP.  With
  ``v = -sigma_t u``, ``u = dx/dgamma``, eq. (71) gives ``E[eps eps^T v | x_t] = sigma^2 S_2 v + sigma^2 s s^T v + v``,
  so ``S_2 v = JVP_s`` (eq. (13)) is the conditional mean of the AD-free target

      o = (eps (eps . v) - v) / sigma^2 - s_theta (s_theta . v),     s_theta = -eps_theta/sigma,

  i.e. ``o = -(eps (eps . u) - u - eps_theta (eps_theta . u)) / sigma``.  (Eq. (72) as printed
  drops the ``1/sigma^2`` in front of ``eps eps^T v``; eq. (71) fixes it.)  The time term, which
  app. D does not cover, is a central finite difference of the teacher in ``t`` (also AD-free).
  The regression target is unbiased but noisy; the head is trained on it with the same loss.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from taylorsolve.diffusion import providers as _providers
from taylorsolve.diffusion.odes import dx_dgamma
from taylorsolve.diffusion.schedules import LinearVPSchedule, Schedule, as_time_tensor, get_schedule

from .model import EpsMLP, diffuse, sample_times
from .train import TrainConfig, TrainState, load_checkpoint, read_checkpoint_metadata, train_loop

__all__ = [
    "DerivativeHead",
    "HeadConfig",
    "HeadedModel",
    "freeze",
    "autodiff_target",
    "ad_free_target",
    "distill_head",
    "evaluate_head",
    "measure_overhead",
    "count_parameters",
    "load_head",
    "FEEDS",
    "OBJECTIVES",
]

FEEDS = ("eps_theta", "true_noise")
OBJECTIVES = ("autodiff", "ad_free")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def freeze(model: nn.Module) -> nn.Module:
    """Freeze the teacher: eval mode, ``requires_grad=False`` on every parameter (docs/CONVENTIONS.md: the teacher is frozen)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def mixed_coefficients(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prefactors of eq. (14): ``(-1/gamma, gamma/(1+gamma^2), 1/(gamma (1+gamma^2)))``."""
    g2 = gamma * gamma
    return -1.0 / gamma, gamma / (1.0 + g2), 1.0 / (gamma * (1.0 + g2))


class DerivativeHead(nn.Module):
    """``k_psi(h, temb, x_t, eps, gamma)``: an MLP on ``[h, temb, x_t, eps]`` with the mixed output of eq. (14).

    ``mixed=True``: ``3 d`` output channels ``k^(1..3)`` combined by eq. (14); ``mixed=False``: ``d``
    channels used directly.  Computes in the parameters' dtype and returns it.
    """

    def __init__(self, feat_dim: int, temb_dim: int, dim: int = 2, hidden: int = 64, mixed: bool = True):
        super().__init__()
        self.feat_dim, self.temb_dim, self.dim, self.hidden, self.mixed = feat_dim, temb_dim, dim, hidden, mixed
        n_out = 3 * dim if mixed else dim
        self.net = nn.Sequential(nn.Linear(feat_dim + temb_dim + 2 * dim, hidden), nn.SiLU(), nn.Linear(hidden, n_out))

    @property
    def config(self) -> dict[str, Any]:
        return {"feat_dim": self.feat_dim, "temb_dim": self.temb_dim, "dim": self.dim, "hidden": self.hidden,
                "mixed": self.mixed}

    def forward(self, h: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
                gamma: torch.Tensor) -> torch.Tensor:
        dt = self.net[0].weight.dtype
        out = self.net(torch.cat([h.to(dt), temb.to(dt), x.to(dt), eps.to(dt)], dim=-1))
        if not self.mixed:
            return out
        g = as_time_tensor(gamma).to(dt)
        g = g[:, None] if g.ndim == 1 else g
        c1, c2, c3 = mixed_coefficients(g)
        k1, k2, k3 = out.split(self.dim, dim=-1)
        return c1 * k1 + c2 * k2 + c3 * k3  # eq. (14)


# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------
def _per_sample(t: Any, n: int) -> torch.Tensor:
    t = as_time_tensor(t)
    return t.expand(n).clone() if t.ndim == 0 else t


def autodiff_target(teacher: nn.Module, x: torch.Tensor, t: Any, schedule: Schedule | str | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_theta, d eps_theta/d gamma)`` at ``(x_t, t)`` (per-sample ``t [B]`` or a scalar).

    Eq. (12) with the ``+`` sign: one forward-mode ``torch.func.jvp`` of the (frozen) teacher in
    ``(x, t)`` with the tangents ``(dx/dgamma, dt/dgamma)``; no graph is recorded.
    """
    sched = get_schedule(schedule)
    t = _per_sample(t, x.shape[0])
    gamma = sched.gamma(t)
    dt_dg = sched.dt_dgamma(gamma)
    with torch.no_grad():
        eps = teacher(x, t)
        u = dx_dgamma(x, eps, gamma)
        _, d = torch.func.jvp(lambda x_, t_: teacher(x_, t_), (x, t), (u, dt_dg))
    return eps, d


def ad_free_target(teacher: nn.Module, x: torch.Tensor, t: Any, noise: torch.Tensor,
                   schedule: Schedule | str | None = None, fd_step: float = 2e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_theta, target)`` of the AD-free objective (app. D, eq. (68)-(72); module docstring).

    ``target = o + JVP_t^FD`` with ``E[o | x_t] = JVP_s`` (if ``eps_theta`` is the true eps) and the
    time term by a central difference of step ``fd_step`` in ``t``.  No automatic differentiation.
    """
    sched = get_schedule(schedule)
    t = _per_sample(t, x.shape[0])
    gamma = sched.gamma(t)
    sigma = sched.sigma(t).to(x.dtype)[:, None]
    dt_dg = sched.dt_dgamma(gamma).to(x.dtype)[:, None]
    with torch.no_grad():
        eps = teacher(x, t)
        u = dx_dgamma(x, eps, gamma)
        dot = lambda a, b: (a * b).sum(-1, keepdim=True)  # noqa: E731
        spatial = -(noise * dot(noise, u) - u - eps * dot(eps, u)) / sigma
        d_dt = (teacher(x, t + fd_step) - teacher(x, t - fd_step)) / (2.0 * fd_step)
    return eps, spatial + d_dt * dt_dg


# ------------------------------------------------------------------------------------------------
# distillation
# ------------------------------------------------------------------------------------------------
@dataclass
class HeadConfig(TrainConfig):
    """Distillation settings (``hidden`` is the head's width here); defaults = the paper's choices."""

    iters: int = 1500
    batch: int = 256
    lr: float = 2e-3
    lr_final: float = 1e-5
    seed: int = 1
    hidden: int = 64
    mixed: bool = True                  # eq. (14); False: "no mixed parameterization"
    weighting: bool = True              # g_d = gamma^2 of eq. (15); False: "no weighting"
    feed: str = "eps_theta"             # or "true_noise" (released code)
    objective: str = "autodiff"         # or "ad_free" (app. D)

    def __post_init__(self) -> None:
        if self.feed not in FEEDS:
            raise ValueError(f"feed must be one of {FEEDS}, got {self.feed!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")


def make_head(teacher: EpsMLP, hcfg: HeadConfig) -> DerivativeHead:
    torch.manual_seed(hcfg.seed)
    return DerivativeHead(teacher.hidden, teacher.temb_dim, teacher.dim, hcfg.hidden, hcfg.mixed)


def head_loss(teacher: EpsMLP, head: DerivativeHead, x0: torch.Tensor, t: torch.Tensor, hcfg: HeadConfig,
              schedule: Schedule, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. (15): ``mean_b g_d(t) || k_psi(x_t, t) - d eps_theta/d gamma ||^2`` (target per ``hcfg.objective``)."""
    xt, noise = diffuse(x0, t, schedule, generator)
    gamma = schedule.gamma(t)
    if hcfg.objective == "autodiff":
        eps_th, target = autodiff_target(teacher, xt, t, schedule)
    else:
        eps_th, target = ad_free_target(teacher, xt, t, noise, schedule)
    with torch.no_grad():
        h, temb, _ = teacher.forward_all(xt, t)
    eps_in = noise if hcfg.feed == "true_noise" else eps_th
    k = head(h, temb, xt, eps_in, gamma)
    w = (gamma * gamma).to(k.dtype) if hcfg.weighting else torch.ones_like(gamma, dtype=k.dtype)
    return (w * ((k - target.to(k.dtype)) ** 2).sum(-1)).mean()


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
    """Alg. 1: train ``k_psi`` on ``x_t = alpha_t x_0 + sigma_t eps``, ``t ~ U[t_cutoff, 1]``, frozen teacher."""
    from toy import nested_mixture

    hcfg = hcfg or HeadConfig()
    mixture = mixture if mixture is not None else nested_mixture()
    schedule = get_schedule(schedule if schedule is not None else LinearVPSchedule())
    freeze(teacher)
    head = make_head(teacher, hcfg)

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        x0 = mixture.sample(hcfg.batch, gen).to(teacher.out.weight.dtype)
        t = sample_times(hcfg.batch, hcfg.t_cutoff, gen)
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
                  t_cutoff: float = 1e-3, schedule: Any = None) -> dict[str, float]:
    """Held-out error of the head against the autodiff target (eq. (12)) at fresh ``(x_t, t)``.

    ``rel_mse``: ``sum_b gamma^2 ||k - d||^2 / sum_b gamma^2 ||d||^2`` (a zero derivative scores 1);
    ``rel_mse_unweighted``: the same without ``gamma^2``.  The head gets ``eps_theta`` (as in sampling).
    """
    schedule = get_schedule(schedule if schedule is not None else LinearVPSchedule())
    gen = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(n, gen).to(teacher.out.weight.dtype)
    t = sample_times(n, t_cutoff, gen)
    xt, _ = diffuse(x0, t, schedule, gen)
    eps, target = autodiff_target(teacher, xt, t, schedule)
    h, temb, _ = teacher.forward_all(xt, t)
    gamma = schedule.gamma(t)
    k = head(h, temb, xt, eps, gamma).to(target.dtype)
    w = (gamma * gamma).to(target.dtype)
    err, ref = ((k - target) ** 2).sum(-1), (target ** 2).sum(-1)
    return {"rel_mse": float((w * err).sum() / (w * ref).sum()), "rel_mse_unweighted": float(err.sum() / ref.sum())}


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
        gamma = self.schedule.gamma(_per_sample(t, x.shape[0]))
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
