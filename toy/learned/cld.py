r"""Hybrid score matching (HSM) of a small CLD eps-model on a toy mixture, in both parameterisations.

HSM (thesis sec. 2.3.3.2, App. 2.4.3) draws ``x_0 ~ p_0`` and perturbs it with the kernel
``p(u_t | x_0)`` that marginalises the initial velocity, ``u_t = mu_t(x_0) + K_t eps`` (thesis eq. (2.58)),
and regresses eps:

* ``factor="L"`` -- gDDIM eq. (22) with the thesis' weighting ``L^{-1} Lambda L^{-T} = diag(0, 1)``
  (gDDIM eq. (72); thesis eq. (2.59), "dropping the variance prefactor"): only the velocity part of
  ``eps_L`` is learned -- the only part the probability-flow ODE, the reverse SDE and gDDIM with ``K = L``
  use (``G G^T L^{-T}`` has a zero x-column).
* ``factor="R"`` -- gDDIM eq. (23) with ``R^{-1} Lambda R^{-T} = I`` (gDDIM eq. (73)): both parts of ``eps_R``.

(gDDIM's main-text eq. (23) writes ``L`` in the score parameterisation; it is ``R``, gDDIM app. C.1.)
The network :class:`CLDEpsMLP` maps ``(u, t)`` to a full ``[B, 2d]`` eps; sampling uses it with a CLD
process of the same ``factor`` (``DiffusionModel(net, process=CLD(factor=...))``).  Training reuses the
seeded, resumable loop of :mod:`toy.learned.train` (atomic safetensors checkpoints).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from taylorsolve.diffusion import CLD, DiffusionModel

from taylorsolve.diffusion.distillation import sample_times

from .model import FourierTimeEmbedding
from .train import TrainConfig, TrainState, load_checkpoint, read_checkpoint_metadata, train_loop

__all__ = ["CLDEpsMLP", "hsm_loss", "train_cld_model", "load_cld_model", "cld_diffusion_model"]


class CLDEpsMLP(nn.Module):
    """``eps_theta(u, t)`` for CLD states ``u [B, 2d]``: Fourier features of ``t`` and random Fourier
    features of ``x``, an MLP trunk, a linear ``2d`` output.  Computes in its own dtype, returns ``u``'s."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, temb_dim: int = 32, x_fourier: int = 32,
                 x_scale: float = 4.0) -> None:
        super().__init__()
        self.dim, self.hidden, self.depth, self.temb_dim = dim, hidden, depth, temb_dim
        self.x_fourier, self.x_scale = x_fourier, x_scale
        self.fourier = FourierTimeEmbedding(temb_dim, f_min=0.25, f_max=16.0)
        self.temb = nn.Sequential(nn.Linear(temb_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        g = torch.Generator().manual_seed(4321)
        self.register_buffer("x_freqs", x_scale * torch.randn(2 * dim, x_fourier, generator=g))
        layers: list[nn.Module] = []
        width = 2 * dim + 2 * x_fourier + temb_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, 2 * dim)

    @property
    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth, "temb_dim": self.temb_dim,
                "x_fourier": self.x_fourier, "x_scale": self.x_scale}

    def forward(self, u: torch.Tensor, t: Any) -> torch.Tensor:
        p = self.out.weight
        t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
        t = t.to(p.dtype)
        if t.ndim == 0:
            t = t.expand(u.shape[0])
        uin = u.to(p.dtype)
        feats = [uin]
        if self.x_fourier:
            ang = 2.0 * math.pi * uin @ self.x_freqs.to(p.dtype)
            feats += [torch.sin(ang), torch.cos(ang)]
        temb = self.temb(self.fourier(t))
        return self.out(self.trunk(torch.cat(feats + [temb], dim=-1))).to(u.dtype)


def hsm_loss(model: nn.Module, process: CLD, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None,
             factor: str) -> torch.Tensor:
    """HSM in the eps parameterisation: gDDIM eq. (22) (``"L"``, velocity part only, eq. (72)) or eq. (23)
    (``"R"``, both parts, eq. (73)); ``mean_b || w (eps - eps_theta(mu_t(x_0) + K_t eps, t)) ||^2``."""
    u, eps = process.hsm_perturb(x0, t, generator, factor)
    pred = model(u.to(torch.float32), t.to(torch.float32)).to(u.dtype)
    err = (pred - eps) ** 2
    if factor == "L":
        err = err[:, x0.shape[1]:]
    return err.sum(-1).mean()


def train_cld_model(mixture: Any, factor: str, cfg: TrainConfig | None = None, ckpt_path: str | None = None, *,
                    process: CLD | None = None, resume: bool = True, progress: bool = True,
                    stop_after: int | None = None) -> tuple[CLDEpsMLP, TrainState]:
    """Train a :class:`CLDEpsMLP` on ``mixture`` by HSM (``t ~ U[t_cutoff, 1]``); returns ``(model, state)``."""
    if factor not in ("R", "L"):
        raise ValueError(f"factor must be 'R' (gDDIM eq. (23)) or 'L' (gDDIM eq. (22)), got {factor!r}")
    cfg = cfg or TrainConfig()
    process = process if process is not None else CLD(data_channels=mixture.dim)
    torch.manual_seed(cfg.seed)
    model = CLDEpsMLP(dim=mixture.dim, hidden=cfg.hidden, depth=cfg.depth, temb_dim=cfg.temb_dim,
                      x_fourier=cfg.x_fourier, x_scale=cfg.x_scale)

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        x0 = mixture.sample(cfg.batch, gen)
        t = sample_times(cfg.batch, cfg.t_cutoff, gen, kind=cfg.time_sampling)
        return hsm_loss(model, process, x0, t, gen, factor)

    extra = {"model": model.config, "factor": factor,
             "process": {"M": process.M, "beta": process.beta, "gamma": process.gamma, "x_var": process.x_var}}
    state = train_loop(model, loss_fn, cfg, ckpt_path, resume=resume, progress=progress,
                       desc=f"CLD eps model (HSM, K = {factor})", kind="cld_eps_model", extra_config=extra,
                       stop_after=stop_after)
    return model, state


def load_cld_model(path: str) -> tuple[CLDEpsMLP, CLD]:
    """The model of a :func:`train_cld_model` checkpoint and the CLD process (with its factor) it was trained for."""
    meta = read_checkpoint_metadata(path)["config"]
    model = CLDEpsMLP(**meta["model"])
    load_checkpoint(path, model)
    pr = meta["process"]
    proc = CLD(pr["M"], pr["beta"], pr["gamma"], x_var=pr["x_var"], factor=meta["factor"],
               data_channels=meta["model"]["dim"])
    return model.eval(), proc


def cld_diffusion_model(model: CLDEpsMLP, process: CLD) -> DiffusionModel:
    """The network as a :class:`DiffusionModel` predicting the process's eps (in float32, t as a ``[B]`` vector)."""
    return DiffusionModel(model, parameterization="eps", process=process, name=f"cld-mlp[{process.factor}]")
