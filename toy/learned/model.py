r"""A small MLP eps-model ``eps_theta(x, t)`` for 2-D toy data (GENIE paper, sec. 2 and 3.1).

Architecture (the toy analogue of the U-Net + head of GENIE's Fig. 4):

    temb = MLP(fourier(log gamma_t))               time embedding (shared with the head)
    h    = trunk([x, sin/cos(2 pi B x), temb])     last hidden features (shared with the head)
    eps  = Linear(h)                               the eps-prediction

:meth:`EpsMLP.features` returns ``(h, eps)`` and :meth:`EpsMLP.forward_all` ``(h, temb, eps)`` so a
prediction head ``k_psi`` (:mod:`toy.learned.head`) can attach to the last feature layer.

Training objective: denoising score matching in the eps parameterisation, eq. (7),

    min_theta E_{t ~ U[t_cutoff, 1], x_0 ~ p_0, eps ~ N(0, I)} || eps - eps_theta(alpha_t x_0 + sigma_t eps, t) ||^2,

under the linear VP schedule ``beta(t) = 0.1 + 19.9 t`` (:class:`LinearVPSchedule`); see
:func:`dsm_loss` and :func:`toy.learned.train.train_eps_model`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from taylorsolve.diffusion.schedules import Schedule, as_time_tensor, get_schedule

__all__ = ["FourierTimeEmbedding", "EpsMLP", "dsm_loss", "diffuse"]


class FourierTimeEmbedding(nn.Module):
    """``t -> [sin(2 pi f_j t), cos(2 pi f_j t)]_j`` with geometrically spaced frequencies ``f_j``.

    ``t`` in ``[0, 1]``; frequencies from ``f_min`` to ``f_max`` so that both the slow variation over
    ``[0, 1]`` and the fast one near ``t = 0`` (where ``sigma_t`` changes quickly) are resolved.
    """

    def __init__(self, dim: int = 32, f_min: float = 0.25, f_max: float = 64.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        freqs = torch.exp(torch.linspace(math.log(f_min), math.log(f_max), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        ang = 2.0 * math.pi * t[..., None] * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class EpsMLP(nn.Module):
    """``eps_theta(x, t)`` for ``x [B, d]``; ``t`` a float, 0-d tensor or ``[B]`` tensor (any float dtype).

    ``x_fourier > 0`` adds fixed random Fourier features ``sin/cos(2 pi x B)``, ``B ~ N(0, x_scale^2)``
    (a plain MLP barely resolves the std-0.01 modes of the nested mixture at small t);
    ``time_input="loggamma"`` embeds ``log gamma_t`` (rescaled to about [0, 1]) instead of ``t``,
    which spreads the fast change of ``sigma_t`` near ``t = 0`` over the embedding.

    Computes in the module's dtype (float32 by default) and returns ``x``'s dtype, so it can be
    called by samplers working in float64 and differentiated by ``torch.func.jvp`` in ``x`` and ``t``.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, temb_dim: int = 32,
                 x_fourier: int = 0, x_scale: float = 4.0, time_input: str = "t", t_fmax: float = 64.0):
        super().__init__()
        if time_input not in ("t", "loggamma"):
            raise ValueError(f"time_input must be 't' or 'loggamma', got {time_input!r}")
        self.dim, self.hidden, self.depth, self.temb_dim = dim, hidden, depth, temb_dim
        self.x_fourier, self.x_scale, self.time_input, self.t_fmax = x_fourier, x_scale, time_input, t_fmax
        self.fourier = FourierTimeEmbedding(temb_dim, f_max=t_fmax)
        self.temb = nn.Sequential(nn.Linear(temb_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        # fixed random Fourier features of x (Tancik et al. 2020): lets a small MLP resolve sharp modes
        g = torch.Generator().manual_seed(1234)
        self.register_buffer("x_freqs", x_scale * torch.randn(dim, x_fourier, generator=g))
        layers: list[nn.Module] = []
        width = dim + 2 * x_fourier + temb_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, dim)

    @property
    def config(self) -> dict[str, int]:
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth, "temb_dim": self.temb_dim,
                "x_fourier": self.x_fourier, "x_scale": self.x_scale, "time_input": self.time_input,
                "t_fmax": self.t_fmax}

    def _time_feature(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` itself, or ``log gamma_t`` (linear VP, eq. (67)'s schedule) mapped to about ``[0, 1]``."""
        if self.time_input == "t":
            return t
        big_l = 0.1 * t + 9.95 * t * t                      # -log alpha_t^2
        log_gamma = 0.5 * torch.log(torch.expm1(big_l))     # in [-4.6, 5.0] for t in [1e-3, 1]
        return (log_gamma + 4.6) / 9.6

    def _x_features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.x_fourier:
            return x
        ang = 2.0 * math.pi * x @ self.x_freqs.to(x.dtype)
        return torch.cat([x, torch.sin(ang), torch.cos(ang)], dim=-1)

    def _inputs(self, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.out.weight
        t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
        t = t.to(p.dtype)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return x.to(p.dtype), t

    def time_embedding(self, t: Any, batch: int | None = None) -> torch.Tensor:
        """The (learned) time embedding ``temb(t)`` ``[B, temb_dim]``."""
        p = self.out.weight
        t = (t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)).to(p.dtype)
        if t.ndim == 0 and batch is not None:
            t = t.expand(batch)
        return self.temb(self.fourier(self._time_feature(t)))

    def forward_all(self, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(h, temb, eps)``: last hidden features, time embedding, eps (eps in ``x``'s dtype)."""
        xin, tin = self._inputs(x, t)
        temb = self.temb(self.fourier(self._time_feature(tin)))
        h = self.trunk(torch.cat([self._x_features(xin), temb], dim=-1))
        return h, temb, self.out(h).to(x.dtype)

    def features(self, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, eps)``: the last hidden features (where a head attaches, Fig. 4) and eps."""
        h, _, eps = self.forward_all(x, t)
        return h, eps

    def forward(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self.forward_all(x, t)[2]


def diffuse(x0: torch.Tensor, t: torch.Tensor, schedule: Schedule | str | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, eps)`` with ``x_t = alpha_t x_0 + sigma_t eps`` for per-sample times ``t [B]``."""
    sched = get_schedule(schedule)
    t = as_time_tensor(t)
    eps = torch.randn(x0.shape, dtype=x0.dtype, generator=generator)
    a = sched.alpha(t).to(x0.dtype)[:, None]
    s = sched.sigma(t).to(x0.dtype)[:, None]
    return a * x0 + s * eps, eps


def dsm_loss(model: nn.Module, x0: torch.Tensor, t: torch.Tensor, schedule: Schedule | str | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching, eq. (7): ``mean_b || eps - eps_theta(alpha_t x_0 + sigma_t eps, t) ||^2``."""
    xt, eps = diffuse(x0, t, schedule, generator)
    pred = model(xt, t)
    return ((pred - eps) ** 2).sum(-1).mean()
