"""Accuracy of the multistep samplers against diffusers' schedulers on image-shaped Gaussian data.

The problem: data ``x_0 ~ N(mu, Sigma)`` of shape ``3 x S x S`` (default ``S = 32``: 3072 dimensions)
with a non-trivial covariance ``Sigma = C (x) K (x) K`` -- channel correlation ``C`` (std 0.5, correlation
0.8 / 0.6) times an exponential kernel ``K_ij = exp(-|i - j| / 3)`` along rows and columns -- and a smooth
mean.  Its eps is exact in closed form (``eps = sigma Sigma_t^{-1} (x - alpha mu)``,
``Sigma_t = alpha^2 Sigma + sigma^2 I``), and so is the flow: in the eigenbasis of ``Sigma``,
``u = U^T (xbar - mu)`` scales by ``sqrt((lambda_i + gamma^2) / (lambda_i + gamma_0^2))``.  The process is
diffusers' default discrete schedule (linear betas 1e-4 .. 0.02, 1000 timesteps), everything float64 on
both sides (diffusers' float32 tables replaced by float64 ones, as in tests/diffusion/test_diffusers.py;
its DPM-Solver still rounds the state to float32 in each step, ~1e-7 relative, far below these errors).

Each run integrates a batch of prior samples from timestep 999 to timestep 0 (``gamma ~ 0.01``, no
denoising: diffusers' ``final_sigmas_type="sigma_min"``) and the table shows the RMS error (over all
entries) to the exact flow there, on two grids:

* ``diffusers``: the scheduler's own ``set_timesteps(N)`` timesteps (``"linspace"`` spacing) and timestep 0;
* ``logsnr``: ``N`` steps uniform in ``lambda = -log gamma`` (our ``grid="logsnr"``); diffusers is handed the
  identical nodes (its ``sigmas`` and continuous ``timesteps`` set to ours).

Columns: ours with ``lower_order_final`` off (our default) and on (diffusers' default), diffusers with its
default ``lower_order_final=True``, the ratio ours(on) / diffusers (1.000 = the same algorithm) and the
largest difference of the two samples relative to the largest entry (round-off: ~1e-15, DPM-Solver ~1e-7).
``adams-bashforth`` (order 3, the old ``deis``: AB in gamma) and ``ddim`` have no diffusers peer here.

Run::

    python benchmarks/diffusers_peers.py              # 3 x 32 x 32, N = 10, 25 (3.3 min here, 1 thread, shared 2-core box)
    python benchmarks/diffusers_peers.py --size 16 --steps 10 25 50
"""
from __future__ import annotations

import argparse
import math
import platform
import types
import warnings

import torch

import taylorsolve
from taylorsolve.diffusion import from_diffusers
from taylorsolve.diffusion.grids import time_grid
from taylorsolve.diffusion.samplers import sample
from taylorsolve.diffusion.schedules import DiscreteVPSchedule

F64 = torch.float64
BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
ABAR = torch.cumprod(1.0 - BETAS, 0)
SCHED = DiscreteVPSchedule(ABAR)


class GaussianImages:
    """``N(mu, C (x) K (x) K)`` on ``3 x S x S``: exact eps (diffusers' calling convention) and exact flow."""

    def __init__(self, size: int, length: float = 3.0):
        idx = torch.arange(size, dtype=F64)
        K = torch.exp(-(idx[:, None] - idx[None, :]).abs() / length)
        C = 0.25 * torch.tensor([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]], dtype=F64)
        (lc, self.Uc), (lk, self.Uk) = torch.linalg.eigh(C), torch.linalg.eigh(K)
        self.lam = lc[:, None, None] * lk[None, :, None] * lk[None, None, :]          # eigenvalues, 3 x S x S
        yy, xx = torch.meshgrid(idx / size, idx / size, indexing="ij")
        self.mu = torch.stack([0.3 * torch.sin(2 * math.pi * xx), 0.2 - 0.4 * yy, 0.1 * torch.cos(2 * math.pi * (xx + yy))])
        self.calls = 0

    def to_eig(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ci,hj,wk,bchw->bijk", self.Uc, self.Uk, self.Uk, x)

    def from_eig(self, u: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ci,hj,wk,bijk->bchw", self.Uc, self.Uk, self.Uk, u)

    def __call__(self, x: torch.Tensor, timestep) -> types.SimpleNamespace:
        self.calls += 1
        n = torch.as_tensor(timestep, dtype=F64).reshape(-1)[0]
        t = SCHED.t_of_timestep(n)
        a, s = SCHED.alpha(t), SCHED.sigma(t)
        u = self.to_eig(x - a * self.mu)
        return types.SimpleNamespace(sample=self.from_eig(s * u / (a * a * self.lam + s * s)))

    def flow(self, x1: torch.Tensor, g0: float, g1: float) -> torch.Tensor:
        """The exact DDIM-ODE solution at ``gamma = g1`` from ``x1`` at ``gamma = g0``."""
        u = self.to_eig(x1 * math.sqrt(1 + g0 * g0) - self.mu)
        u = u * torch.sqrt((self.lam + g1 * g1) / (self.lam + g0 * g0))
        return (self.from_eig(u) + self.mu) / math.sqrt(1 + g1 * g1)


def diffusers_run(cls, data: GaussianImages, x1: torch.Tensor, timesteps: torch.Tensor, **config) -> torch.Tensor:
    """``cls`` stepping through the float timesteps ``timesteps[:-1]`` to ``timesteps[-1]``, in float64."""
    sch = cls(**config)
    sch.alphas_cumprod = ABAR.clone()
    sch.alpha_t, sch.sigma_t = ABAR.sqrt(), (1.0 - ABAR).sqrt()
    sch.lambda_t = sch.alpha_t.log() - sch.sigma_t.log()
    sch.set_timesteps(len(timesteps) - 1)
    sch.timesteps = timesteps[:-1].clone()
    sch.sigmas = SCHED.gamma(SCHED.t_of_timestep(timesteps.to(F64)))
    x = x1.clone()
    for t in sch.timesteps:
        x = sch.step(data(x, t).sample, t, x).prev_sample
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import diffusers

    warnings.filterwarnings("ignore", category=DeprecationWarning)   # diffusers' numpy-on-tensor calls
    data = GaussianImages(args.size)
    x1 = torch.randn(args.batch, 3, args.size, args.size, dtype=F64, generator=torch.Generator().manual_seed(0))
    model = from_diffusers(data, types.SimpleNamespace(alphas_cumprod=ABAR, config={"prediction_type": "epsilon"}))
    peers = {
        "deis": (diffusers.DEISMultistepScheduler, {"order": 3}, {"solver_order": 3}),
        "unipc": (diffusers.UniPCMultistepScheduler, {"order": 2}, {"solver_order": 2, "final_sigmas_type": "sigma_min"}),
        "unipc-3": (diffusers.UniPCMultistepScheduler, {"order": 3}, {"solver_order": 3, "final_sigmas_type": "sigma_min"}),
        "dpm-solver++2m": (diffusers.DPMSolverMultistepScheduler, {}, {"solver_order": 2, "final_sigmas_type": "sigma_min"}),
        "adams-bashforth": (None, {"order": 3}, {}),
        "ddim": (None, {}, {}),
    }
    print(f"taylorsolve {taylorsolve.__version__}, diffusers {diffusers.__version__}, torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print(f"Gaussian data 3 x {args.size} x {args.size}, batch {args.batch}, float64; RMS error to the exact flow at "
          f"timestep 0 (gamma = {float(SCHED.gamma(SCHED.t_of_timestep(torch.tensor(0.0)))):.4f})")
    print(f"eigenvalues of Sigma in [{float(data.lam.min()):.2e}, {float(data.lam.max()):.2e}]\n")
    head = (f"{'method':<16}{'order':>6}{'grid':>11}{'N':>5}{'ours':>12}{'ours lof':>12}{'diffusers':>12}"
            f"{'ours lof/diff':>15}{'sample diff':>13}")
    print(head)
    print("-" * len(head))
    for grid_name in ("diffusers", "logsnr"):
        for N in args.steps:
            if grid_name == "diffusers":
                s = diffusers.DEISMultistepScheduler()
                s.set_timesteps(N)
                ts = torch.cat([s.timesteps, torch.zeros(1, dtype=s.timesteps.dtype)])
                grid = ts
            else:
                t = time_grid("logsnr", N, SCHED, t_cutoff=1.0 / 1000)
                ts = t * 1000 - 1.0                                   # continuous timesteps, 999 .. 0
                grid = t
            g = SCHED.gamma(SCHED.t_of_timestep(ts.to(F64)))
            ref = data.flow(x1, float(g[0]), float(g[-1]))
            rms = lambda x: float(torch.sqrt(((x - ref) ** 2).mean()))  # noqa: E731
            for name, (peer, kw, cfg) in peers.items():
                method = name.split("-3")[0] if name == "unipc-3" else name
                ours = rms(sample(model, x1, method=method, grid=grid, **kw).x)
                multistep = method in ("deis", "unipc", "dpm-solver++2m", "adams-bashforth")
                x_lof = sample(model, x1, method=method, grid=grid, lower_order_final=True, **kw).x if multistep else None
                ours_lof = rms(x_lof) if multistep else None
                x_peer = diffusers_run(peer, data, x1, ts, **cfg) if peer is not None else None
                theirs = rms(x_peer) if peer is not None else None
                order = kw.get("order", 2 if method == "dpm-solver++2m" else 1)
                fmt = lambda v: f"{v:12.3e}" if v is not None else f"{'-':>12}"  # noqa: E731
                ratio = f"{ours_lof / theirs:15.3f}" if theirs is not None else f"{'-':>15}"
                diff = (f"{float((x_lof - x_peer).abs().max() / x_peer.abs().max()):13.1e}" if x_peer is not None
                        else f"{'-':>13}")
                print(f"{method:<16}{order:>6}{grid_name:>11}{N:>5}{fmt(ours)}{fmt(ours_lof)}{fmt(theirs)}{ratio}{diff}")
            print()


if __name__ == "__main__":
    main()
