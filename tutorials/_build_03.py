"""Generate ``03_gaussian_mixture_toys.ipynb`` (no stored outputs): ``python tutorials/_build_03.py``."""
from __future__ import annotations

from pathlib import Path

from _notebook import NotebookBuilder

builder = NotebookBuilder(Path(__file__).resolve().with_name("03_gaussian_mixture_toys.ipynb"))
md, code = builder.md, builder.code


md(r"""
# 03 - Gaussian-mixture toys: exact scores, DDIM vs GENIE, single-step and global errors

For a Gaussian mixture the diffused density $p_t$, its score and **every** total derivative of
$\epsilon$ along the DDIM ODE $d\bar{x}/d\gamma = \epsilon$ (GENIE eq. (6)) are known in closed form
(`toy.mixture`).  That makes mixtures the cleanest test bed for ODE samplers: any error we see is the
solver's, not the network's.  We use the nested mixture of GENIE app. E (eq. (73)-(74)): 8 groups of 8
tiny modes ($\sigma = 10^{-2}$).

The experiments below are small versions of `python -m toy <name>` (see `toy/experiments/`); the
command line writes the full figures and tables to `results/toy/`.
""")
code(r"""
import tempfile
from pathlib import Path
import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from IPython.display import Image, display

import toy
from taylorsolve.diffusion import sample, LinearVPSchedule
from toy.experiments import metrics, single_step, fd_error, global_error
from toy.experiments.common import exact_provider, iso_eps_derivatives

torch.set_num_threads(1)          # small batches: one thread is fastest
F64 = torch.float64
OUT = Path(tempfile.mkdtemp(prefix="toy03_"))
mix = toy.nested_mixture()
sch = LinearVPSchedule()
mix
""")
md(r"""
## 1. Exact scores of a mixture

$p_t(x) = \sum_k w_k\,\mathcal N(x;\alpha_t m_k, \alpha_t^2 S_k + \sigma_t^2 I)$, so the score is a
responsibility-weighted sum of Gaussian scores and the ideal eps-prediction is
$\epsilon(x,t) = -\sigma_t \nabla_x \log p_t(x)$.  We check it against autograd of the exact log-density.
""")
code(r"""
t = torch.tensor(0.3, dtype=F64)
x = mix.sample_t(200, 0.3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
score_ad, = torch.autograd.grad(mix.log_prob(x, t).sum(), x)
eps = mix.eps(x.detach(), t)
assert torch.allclose(eps, -sch.sigma(t) * score_ad, atol=1e-10)
# in (xbar, gamma) coordinates the same eps is schedule-free (eq. (6)):
g = sch.gamma(t)
assert torch.allclose(mix.eps_gamma(x.detach() / sch.alpha(t), g), eps, atol=1e-10)
# and the exact derivatives along the ODE (closed form) agree with Taylor-mode AD through eps_gamma
xb = x.detach() / sch.alpha(t)
for a, b in zip(iso_eps_derivatives(mix, xb, g, 2), mix.eps_derivatives(xb, g, 2, backend="taylor_mode")):
    assert torch.allclose(a, b, atol=1e-9)
print("exact eps, d eps/d gamma and d^2 eps/d gamma^2 agree")
""")
code(r"""
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
x0 = mix.sample(3000, generator=torch.Generator().manual_seed(1))
axes[0].scatter(x0[:, 0], x0[:, 1], s=1, c="k"); axes[0].set_title("p_0 (64 modes, sigma = 0.01)")
u = torch.linspace(-1.3, 1.3, 25, dtype=F64)
grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
for ax, tt in zip(axes[1:], (0.5, 0.05)):
    tt = torch.tensor(tt, dtype=F64)
    s = mix.score(grid * sch.alpha(tt), tt) * sch.sigma(tt)   # -eps, scaled for display
    ax.quiver(grid[:, 0], grid[:, 1], s[:, 0], s[:, 1], angles="xy")
    ax.set_title(f"-eps(alpha x, t) at t = {float(tt)}")
for ax in axes: ax.set_aspect("equal")
plt.show()
""")
md(r"""
## 2. Why DDIM falls between the modes with few steps

DDIM is Euler's method on the DDIM ODE: each step moves along the *current* $\epsilon$ for the whole step.
Late in sampling (small $\gamma$) the responsibilities sharpen quickly, so $\epsilon$ changes direction
within a step; with few steps DDIM lands between the tiny modes (GENIE Fig. 2 / 12).  GENIE (TTM-2) also
uses $d\epsilon/d\gamma$ and follows the curvature.  Same noise, quadratic grid, exact scores:
""")
code(r"""
x1 = torch.randn(1000, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
ref = mix.sample(2000, generator=torch.Generator().manual_seed(3))
res = {}
for m in ("ddim", "genie"):
    kw = {"derivative": exact_provider(mix)} if m == "genie" else {}
    res[m] = sample(mix.eps, x1, 10, method=m, grid="quadratic", **kw)
    q = metrics.quality(mix, res[m].x, ref, mmd=False)
    print(f"{m:6s} 10 steps: NFE {res[m].stats.nfe}, derivative evals {res[m].stats.derivative_evals}, "
          f"within 2 sigma of a mode {q['frac_2sigma']:.2f}, mean log p_0 {q['mean_logp0']:.1f}")
q_exact = metrics.quality(mix, mix.sample_t(1000, 1e-3), ref, mmd=False)
print(f"exact samples at t_cutoff: within 2 sigma {q_exact['frac_2sigma']:.2f}")
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, (name, xs) in zip(axes, [("ground truth", x0[:1000]), ("DDIM, 10 steps", res["ddim"].x), ("GENIE, 10 steps", res["genie"].x)]):
    ax.scatter(xs[:, 0], xs[:, 1], s=1); ax.set_title(name); ax.set_aspect("equal"); ax.set_xlim(-1.3, 1.3); ax.set_ylim(-1.3, 1.3)
plt.show()
qd = metrics.quality(mix, res["ddim"].x, ref, mmd=False); qg = metrics.quality(mix, res["genie"].x, ref, mmd=False)
assert qg["frac_2sigma"] > 1.5 * qd["frac_2sigma"]   # DDIM puts many samples between the modes
assert qg["mean_logp0"] > qd["mean_logp0"]
""")
md(r"""
## 3. Single-step error: local orders 2, 3, 4

One step of TTM-p from $t$ to $t - \Delta t$ has local error $O(\Delta t^{p+1})$.  Against a very accurate
reference solve (DOP853 at rtol $10^{-11}$) the log-log slopes of DDIM (TTM-1), GENIE (TTM-2) and TTM-3
(app. B.3) are 2, 3 and 4 (GENIE Fig. 3 top, Fig. 10).  Small version: 40 starting points, two values of $t$.
""")
code(r"""
r = single_step.run(OUT, n=40, ts=(0.1, 0.5), n_dt=6, quiet=True, fit_points=3)
display(Image(filename=str(OUT / "single_step.png")))
slopes = r["summary"]["slopes"]
print(slopes)
for t, sl in slopes.items():
    assert abs(sl["ddim"] - 2) < 0.3 and abs(sl["genie"] - 3) < 0.3 and abs(sl["ttm3"] - 4) < 0.4
assert r["summary"]["checks"]["ttm3_beats_genie_at_small_step_sizes"]["pass"]
""")
md(r"""
## 4. Global error against NFE

The deterministic samplers all solve the same ODE, so we can measure the **global error**: distance of the
final sample from the reference solution from the same $x_1$.  A reduced line-up (the full one, with every
sampler of `taylorsolve.diffusion` on its best grid, is `python -m toy global_error`):
""")
code(r"""
r = global_error.run(OUT, n=200, nfes=(5, 10, 20, 40), grids=("quadratic",),
                     methods=("ddim", "genie", "ttm3", "adams-bashforth", "dpm-solver++2m"), rk45_tols=(), quiet=True)
display(Image(filename=str(OUT / "global_error.png")))
for m, d in r["summary"]["table"].items():
    print(f"{m:16s}", {k: round(v["global_error"], 5) for k, v in d.items()})
c10 = r["summary"]["checks"]["genie_le_0.5x_ddim_at_10_steps_quadratic"]
print("GENIE / DDIM error at 10 steps:", round(c10["ratio"], 3))
assert c10["pass"]
tab = r["summary"]["table"]
assert tab["genie"]["40"]["global_error"] < tab["ddim"]["40"]["global_error"] / 5
assert tab["ttm3"]["40"]["global_error"] < tab["ddim"]["40"]["global_error"] / 5
""")
md(r"""
Note the measured relative cost of the derivatives (`derivative_relative_cost` in the summary): with exact
closed forms they are cheap here; with a neural network one pays a JVP (autodiff) or a distilled head (GENIE).
The `total_cost` column of the full table weighs derivative evaluations by this measured cost.

## 5. Finite differences fail at small t

Multistep methods (Adams-Bashforth, PNDM, DEIS) replace $d\epsilon/d\gamma$ by a difference quotient of
past $\epsilon$ values (sec. 3, "Comparison to Multistep Methods").  At small $t$ the mixture's score varies
on the scale of the mode width and the quotient is far off unless $\Delta t$ is tiny (GENIE Fig. 3 bottom):
""")
code(r"""
r = fd_error.run(OUT, n=60, ts=(0.01, 0.1, 0.5), n_dt=6, quiet=True)
display(Image(filename=str(OUT / "fd_error.png")))
dt10 = r["summary"]["dt_where_rel_error_exceeds_10pct"]
print("step size at which the relative FD error exceeds 10 %:", dt10)
assert dt10["0.01"] < dt10["0.1"] / 5      # at t = 0.01 the quotient breaks down for much smaller steps
""")
md(r"""
**Take-aways.**  With exact scores the higher-order Taylor methods do what theory says: local orders 2/3/4,
GENIE's global error far below DDIM's at equal NFE, and samples on the modes rather than between them.
Difference quotients of past evaluations are a poor substitute for the exact derivative exactly where it
matters most, at small $t$.
""")


if __name__ == "__main__":
    builder.main()
