# %% [markdown]
# # 03 · Gaussian-mixture toys: GENIE's toy figures rebuilt with exact scores
#
# Tutorial 02 used data so simple (one point, one Gaussian) that every trajectory was known in closed
# form. Real data have many modes, and the probability-flow ODE bends sharply between them late in
# sampling. A **Gaussian mixture** is the simplest data set with that behaviour for which everything is
# still exact: the diffused density $p_t$, its score, the noise prediction $\epsilon(x_t, t)$ and its
# total derivatives along the DDIM ODE $d\bar{x}/d\gamma = \epsilon$ (GENIE eq. (6)). Any error we see is
# the solver's, never a network's. We use the mixture of GENIE app. E (eq. (73)-(74)).
#
# 1. the nested mixture and its exact $\epsilon$, derived, then checked against autograd;
# 2. exact derivatives $d\epsilon/d\gamma$, $d^2\epsilon/d\gamma^2$ along the ODE, and an accurate reference solution;
# 3. GENIE Fig. 2 and Fig. 12: DDIM and GENIE samples at 5, 10 and 25 steps;
# 4. GENIE Fig. 3 (top) and Fig. 10: the error of a *single* step, orders 2, 3, 4;
# 5. GENIE Fig. 3 (bottom): how wrong the finite-difference derivative of multistep methods is;
# 6. the global error against NFE for the registered samplers, and what it says (and does not).
#
# Each figure is built step by step from `sample()` and a reference solve; `python -m toy all` runs the
# full-size versions (`toy/experiments/`, README "The main job"). Exercises with checked solutions are at
# the end. It runs in about 20 seconds on one CPU core.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import taylorsolve as ts
import toy
from taylorsolve.convergence import fit_order
from taylorsolve.diffusion import LinearVPSchedule, sample
from toy.experiments.common import exact_provider, iso_eps_derivatives, reference_solve

torch.set_num_threads(1)        # small batches: one thread is fastest (and deterministic)
plt.rcParams["figure.dpi"] = 80  # modest PNGs in the committed notebook
F64 = torch.float64
sch = LinearVPSchedule()        # GENIE's default VP schedule, beta(t) = 0.1 + 19.9 t


def T(t):
    """A time (or a list of times) as a float64 tensor."""
    return torch.as_tensor(t, dtype=F64)


# %% [markdown]
# ## 1. The nested mixture and its exact $\epsilon$
#
# App. E's data: 8 groups on a circle of radius $s_1 = 0.9$, each group made of 8 modes on a smaller
# circle of radius $s_1 s_2 = 0.18$; 64 isotropic Gaussians with standard deviation $\sigma_0 = 0.01$
# and equal weights:
#
# $$ p_0(x) = \frac{1}{64} \sum_{i,j=1}^{8} \mathcal{N}\!\left(x;\; s_1 \mu_i + s_1 s_2 \mu_j,\; \sigma_0^2 I\right). $$
#
# **Diffusing a mixture.** $x_t = \alpha_t x_0 + \sigma_t \epsilon$ maps each component
# $\mathcal{N}(m_k, S_k)$ to $\mathcal{N}(\alpha_t m_k, C_k)$ with $C_k = \alpha_t^2 S_k + \sigma_t^2 I$, so
# $p_t(x) = \sum_k w_k \mathcal{N}(x; \alpha_t m_k, C_k)$. Its score is a responsibility-weighted sum of
# Gaussian scores,
#
# $$ \nabla_x \log p_t(x) = -\sum_k r_k(x, t)\, C_k^{-1}(x - \alpha_t m_k), \qquad
#    r_k = \operatorname{softmax}_k\!\big(\log w_k + \log \mathcal{N}(x; \alpha_t m_k, C_k)\big), $$
#
# and the ideal noise prediction is $\epsilon(x, t) = -\sigma_t \nabla_x \log p_t(x)$ (eq. (18)).
#
# **In DDIM coordinates.** Put $x = \alpha_t \bar{x}$ and $C_k = \alpha_t^2 (S_k + \gamma^2 I)$: every
# $\alpha_t$ cancels (in the softmax, all components share the same factor $\alpha_t^{-d}$), leaving
#
# $$ \epsilon(\bar{x}, \gamma) = \gamma \sum_k \bar{r}_k\, (S_k + \gamma^2 I)^{-1} (\bar{x} - m_k), \qquad
#    \bar{r}_k = \operatorname{softmax}_k\!\big(\log w_k + \log\mathcal{N}(\bar{x}; m_k, S_k + \gamma^2 I)\big). $$
#
# This depends on $\gamma$ alone: for VP diffusions the DDIM ODE does not know the schedule.
# `toy.GaussianMixture` implements both forms (`eps(x, t)` and `eps_gamma(xbar, gamma)`); we check them
# against reverse-mode autograd of the exact $\log p_t$:

# %%
mix = toy.nested_mixture()
print(mix)
t = T(0.3)
x = mix.sample_t(200, 0.3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
(score_autograd,) = torch.autograd.grad(mix.log_prob(x, t).sum(), x)
eps = mix.eps(x.detach(), t)
assert torch.allclose(eps, -sch.sigma(t) * score_autograd, atol=1e-10)               # eps = -sigma * score
assert torch.allclose(mix.eps_gamma(x.detach() / sch.alpha(t), sch.gamma(t)), eps, atol=1e-10)  # schedule-free form
print("eps(x, t) = -sigma_t grad log p_t(x) = eps_gamma(x / alpha_t, gamma_t): checked on 200 points")

# %% [markdown]
# How the field looks: at $t = 0.5$ the modes are blurred into a single blob and $-\epsilon$ points
# roughly to the centre; at $t = 0.05$ the eight groups have separated and $-\epsilon$ points to the
# nearest group. Closer to $t = 0$ it turns towards the nearest of 64 modes, only $0.01$ wide, and changes
# direction over very short distances: the regime where solvers struggle.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
x0 = mix.sample(3000, generator=torch.Generator().manual_seed(1))
axes[0].scatter(x0[:, 0], x0[:, 1], s=1, c="k")
axes[0].set_title(r"$p_0$: 64 modes, $\sigma_0 = 0.01$")
u = torch.linspace(-1.3, 1.3, 25, dtype=F64)
grid_pts = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
for ax, tt in zip(axes[1:], (0.5, 0.05)):
    tt = T(tt)
    arrows = -mix.eps(grid_pts * sch.alpha(tt), tt)
    ax.quiver(grid_pts[:, 0], grid_pts[:, 1], arrows[:, 0], arrows[:, 1], angles="xy")
    ax.set_title(rf"$-\epsilon(\alpha_t \bar{{x}}, t)$ at $t = {float(tt)}$")
for ax in axes:
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Exact derivatives along the ODE, and a reference solution
#
# GENIE (TTM-2) needs $d\epsilon/d\gamma$ along the ODE, TTM-3 also $d^2\epsilon/d\gamma^2$ (tutorial 02,
# eq. (12) and app. B.3). Writing $D$ for the total derivative along the ODE ($D\bar{x} = \epsilon$,
# $D\gamma = 1$) and $\epsilon = \gamma A$ with $A = \sum_k \bar{r}_k a_k$, $a_k = (\bar{x} - m_k)/v_k$,
# $v_k = s_k^2 + \gamma^2$ for isotropic components:
#
# $$ D\epsilon = A + \gamma\, DA, \qquad DA = \sum_k (D\bar{r}_k)\, a_k + \bar{r}_k\, Da_k, \qquad
#    Da_k = \frac{\epsilon - 2\gamma a_k}{v_k}, \qquad D\bar{r}_k = \bar{r}_k (\lambda_k - \textstyle\sum_j \bar{r}_j \lambda_j), $$
#
# with $\lambda_k = D(\text{logit}_k) = -a_k\cdot\epsilon + \gamma |a_k|^2 - d\gamma/v_k$; one more $D$ gives the
# second derivative. `toy.experiments.common.iso_eps_derivatives` is exactly these lines. Since
# `eps_gamma` is written with `taylorsolve.math`, the core's Taylor-mode arithmetic (tutorial 01) can
# differentiate it too, with no formula at all: the two must agree.
#
# For the figures we also need the *exact* solution of the DDIM ODE from a given point. We use SciPy's
# DOP853 at `rtol=1e-11` in $s = \log\gamma$ (since $\gamma$ spans four decades, $d\bar{x}/ds = \gamma\,\epsilon$):
# `reference_solve(mix, xbar0, gamma0, gammas)`. We check it against the core's adaptive Taylor solver.
# (With `compile=False`: the compiled path would first compile this 64-component right-hand side into
# straight-line code, which takes minutes; the interpreted jets need half a second.)

# %%
xb = x.detach() / sch.alpha(t)
g = sch.gamma(t)
closed = iso_eps_derivatives(mix, xb, g, 2)
jets = mix.eps_derivatives(xb, g, 2, backend="taylor_mode")
for k, (a, b) in enumerate(zip(closed, jets)):
    print(f"d^{k} eps / d gamma^{k}: closed form vs Taylor mode, max diff {float((a - b).abs().max()):.1e}")
    assert torch.allclose(a, b, atol=1e-9, rtol=1e-9)

g_end = sch.gamma(T(0.05))
ref = reference_solve(mix, xb[:5], float(g), [float(g_end)])[0]
taylor = ts.solve(mix.ddim_rhs, xb[:5], t_span=(float(g), float(g_end)), rtol=1e-12, atol=1e-12,
                  backend_options={"compile": False})
print(f"DOP853 reference vs adaptive Taylor (order {taylor.stats.order}, {taylor.stats.steps} steps): "
      f"max diff {float((ref - taylor.ys[-1]).abs().max()):.1e}")
assert torch.allclose(ref, taylor.ys[-1], atol=1e-10)

# %% [markdown]
# ## 3. Why DDIM falls between the modes (GENIE Fig. 2 and Fig. 12)
#
# DDIM moves along the *current* $\epsilon$ for the whole step. Late in sampling (small $\gamma$) the
# responsibilities sharpen quickly, so $\epsilon$ turns within a step and DDIM overshoots or stops short:
# with few steps many samples land between the tiny modes. GENIE's extra term
# $\tfrac12 h^2\, d\epsilon/d\gamma$ follows the curvature. Same noise $x_1$, quadratic time grid
# (GENIE's "quadratic striding"), exact scores and exact derivatives:
#
# A simple quality measure for this data: the fraction of samples within $2\sigma_0$ of a mode. Exact
# samples of $p_0$ score $1 - e^{-2} = 0.86$; exact samples of $p_{t_\text{cutoff}}$, where sampling stops
# ($t_\text{cutoff} = 10^{-3}$, $\sigma_t \approx 0.01$ adds as much noise as the modes are wide), score less.

# %%
def near_mode_fraction(samples, width=2.0):
    """Fraction of samples within width * sigma_0 of the nearest of the 64 means."""
    dist = torch.cdist(samples.to(F64), mix.means).min(dim=1).values
    return float((dist <= width * 0.01).double().mean())


x1 = torch.randn(1000, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
step_counts = (5, 10, 25)
samples = {}
for steps in step_counts:
    samples["DDIM", steps] = sample(mix.eps, x1, steps, method="ddim").x
    samples["GENIE", steps] = sample(mix.eps, x1, steps, method="genie", derivative=exact_provider(mix)).x
exact_fraction = near_mode_fraction(mix.sample_t(1000, 1e-3, generator=torch.Generator().manual_seed(3)))

fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
for row, method in enumerate(("DDIM", "GENIE")):
    for col, steps in enumerate(step_counts):
        xs, ax = samples[method, steps], axes[row, col]
        ax.scatter(xs[:, 0], xs[:, 1], s=0.5, c="C0" if method == "DDIM" else "C1")
        ax.set_title(f"{method}, {steps} steps: {near_mode_fraction(xs):.2f} near a mode", fontsize=10)
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
plt.suptitle(f"exact scores; exact samples of $p_{{0.001}}$: {exact_fraction:.2f} near a mode")
plt.tight_layout()
plt.show()

for steps in step_counts:
    print(f"{steps:2d} steps: near a mode DDIM {near_mode_fraction(samples['DDIM', steps]):.2f}, "
          f"GENIE {near_mode_fraction(samples['GENIE', steps]):.2f}")
assert near_mode_fraction(samples["GENIE", 10]) > 1.5 * near_mode_fraction(samples["DDIM", 10])
assert near_mode_fraction(samples["GENIE", 25]) > near_mode_fraction(samples["DDIM", 25])
assert near_mode_fraction(samples["GENIE", 25]) > 0.8 * exact_fraction

# %% [markdown]
# ## 4. The error of a single step (GENIE Fig. 3 top, Fig. 10)
#
# The paper's first experiment: start on the exact trajectories at $t \in \{0.1, 0.2, 0.5\}$ and take
# *one* step of size $\Delta t$ to $t - \Delta t$. TTM-p keeps the Taylor series up to $h^p$, so one step
# misses the $h^{p+1}$ term: the error should fall like $\Delta t^{p+1}$, slopes 2, 3 and 4 for DDIM,
# GENIE and TTM-3 on a log-log plot.
#
# First one step by hand, to see that `sample()` with the two-point grid $[t, t - \Delta t]$ is exactly the
# Taylor step $\bar{x}' = \bar{x} + h\,\epsilon + \frac{h^2}{2} \epsilon' + \frac{h^3}{6} \epsilon''$,
# $h = \gamma_{t - \Delta t} - \gamma_t$ (negative: sampling runs towards the data):

# %%
t_start, dt = 0.2, 0.05
xt = mix.sample_t(200, t_start, generator=torch.Generator().manual_seed(4))
g0, g1 = sch.gamma(T(t_start)), sch.gamma(T(t_start - dt))
xbar = xt / sch.alpha(T(t_start))
e0, e1, e2 = iso_eps_derivatives(mix, xbar, g0, 2)
h = g1 - g0
by_hand = {"ddim": xbar + h * e0,
           "genie": xbar + h * e0 + h**2 / 2 * e1,
           "ttm3": xbar + h * e0 + h**2 / 2 * e1 + h**3 / 6 * e2}
two_points = T([t_start, t_start - dt])
library = {"ddim": sample(mix.eps, xt, None, method="ddim", grid=two_points).x,
           "genie": sample(mix.eps, xt, None, method="genie", grid=two_points, derivative=exact_provider(mix)).x,
           "ttm3": sample(mix.eps, xt, None, method="ttm", order=3, grid=two_points, derivative=exact_provider(mix)).x}
for name in by_hand:
    diff = float((by_hand[name] * sch.alpha(T(t_start - dt)) - library[name]).abs().max())
    print(f"{name:5s}: one step by hand vs sample(): max diff {diff:.1e}")
    assert diff < 1e-12

# %% [markdown]
# Now the experiment: 200 exact samples $x_t \sim p_t$ at each start time, 8 step sizes from $10^{-3}$
# to nearly $t$, a reference solve from the same points to every $t - \Delta t$, and the mean $L_2$ distance.

# %%
methods = {"DDIM (TTM-1)": dict(method="ddim"),
           "GENIE (TTM-2)": dict(method="genie", derivative=exact_provider(mix)),
           "TTM-3": dict(method="ttm", order=3, derivative=exact_provider(mix))}
single_step = {}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
for ax, t_start in zip(axes, (0.1, 0.2, 0.5)):
    xt = mix.sample_t(200, t_start, generator=torch.Generator().manual_seed(5))
    dts = np.logspace(-3, np.log10(t_start - 1e-3), 8)
    ends = [float(sch.gamma(T(t_start - d))) for d in dts]
    refs = reference_solve(mix, xt / sch.alpha(T(t_start)), float(sch.gamma(T(t_start))), ends)
    for name, kw in methods.items():
        errs = []
        for d, ref_xbar in zip(dts, refs):
            one = sample(mix.eps, xt, None, grid=T([t_start, t_start - d]), **kw).x
            errs.append(float((one - ref_xbar * sch.alpha(T(t_start - d))).norm(dim=-1).mean()))
        slope = fit_order(dts[:3], errs[:3])        # the three smallest steps
        single_step[t_start, name] = slope
        ax.loglog(dts, errs, "o-", ms=3, label=f"{name}: slope {slope:.2f}")
    ax.set_title(f"one step from t = {t_start}")
    ax.set_xlabel(r"step size $\Delta t$")
    ax.legend(fontsize=8)
axes[0].set_ylabel(r"mean $L_2$ error of one step")
plt.tight_layout()
plt.show()

for t_start in (0.1, 0.2, 0.5):
    for name, p in zip(methods, (1, 2, 3)):
        assert abs(single_step[t_start, name] - (p + 1)) < 0.3, (t_start, name, single_step[t_start, name])

# %% [markdown]
# As in the paper: at every start time GENIE can take a much larger step than DDIM for the same error,
# and TTM-3 (app. B.3, Fig. 10) improves on GENIE once the step is small enough. For steps as large as
# $t$ itself all three have an error of the order of the data's scale: no truncated series converges that
# far.
#
# ## 5. Finite differences instead of derivatives (GENIE Fig. 3 bottom)
#
# Multistep methods (Adams-Bashforth, PNDM, DEIS) need no derivative: they replace $d\epsilon/d\gamma$ by
# a difference quotient of the last two evaluations along the trajectory (tutorial 01, section 5):
#
# $$ \frac{d\epsilon}{d\gamma}\Big|_{t} \approx \frac{\epsilon(x_t, t) - \epsilon(x_{t+\Delta t}, t + \Delta t)}{\gamma_t - \gamma_{t+\Delta t}}, $$
#
# where $x_{t+\Delta t}$ is the *previous* point of the same trajectory (a sampler runs from noise to data).
# The paper plots $\xi_t(\Delta t)$, the norm of the difference to the exact derivative. We plot it
# relative to the mean norm of the derivative, so that different $t$ share one axis. The previous points
# come from the reference solver, run backwards (towards the noise).

# %%
fd_relative = {}
fig, ax = plt.subplots(figsize=(5.5, 4))
for t_start in (0.01, 0.1, 0.5):
    xt = mix.sample_t(100, t_start, generator=torch.Generator().manual_seed(6))
    xbar, g = xt / sch.alpha(T(t_start)), sch.gamma(T(t_start))
    e0, d_exact = iso_eps_derivatives(mix, xbar, g, 1)
    dts = np.logspace(-4, np.log10(0.9 * t_start), 8)
    g_prev = [float(sch.gamma(T(t_start + d))) for d in dts]
    prev_points = reference_solve(mix, xbar, float(g), g_prev)         # backwards along the trajectory
    rel = []
    for gp, xbar_prev in zip(g_prev, prev_points):
        quotient = (e0 - mix.eps_gamma(xbar_prev, T(gp))) / (g - gp)
        rel.append(float((quotient - d_exact).norm(dim=-1).mean() / d_exact.norm(dim=-1).mean()))
    fd_relative[t_start] = (dts, rel)
    ax.loglog(dts, rel, "o-", ms=3, label=f"t = {t_start}")
ax.axhline(0.1, color="k", lw=0.6, ls=":")
ax.set_xlabel(r"$\Delta t$ to the previous evaluation")
ax.set_ylabel(r"$\xi_t(\Delta t)\;/\;$mean $|d\epsilon/d\gamma|$")
ax.set_title("finite-difference derivative: relative error")
ax.legend()
plt.show()


def dt_at_10_percent(t_start):
    """The step at which the relative error reaches 10 % (interpolated on the log-log curve)."""
    dts, rel = fd_relative[t_start]
    return float(np.exp(np.interp(np.log(0.1), np.log(rel), np.log(dts))))


for t_start in fd_relative:
    print(f"t = {t_start}: the quotient is 10 % off from a step of dt = {dt_at_10_percent(t_start):.1e}")
assert dt_at_10_percent(0.01) < dt_at_10_percent(0.1) / 5

# %% [markdown]
# At $t = 0.1$ and $t = 0.5$ the quotient stays within 10 % up to steps of about $10^{-2}$; at $t = 0.01$
# it is 10 % off from steps of $10^{-3}$ on, because the score varies on the scale of the mode width. Exactly
# where sampling needs accuracy most, the multistep methods' derivative is poorest, which is the
# paper's argument for true derivatives (sec. 3, "Comparison to Multistep Methods").
#
# ## 6. Global error against NFE: every registered sampler
#
# All deterministic samplers solve the same ODE, so the error that matters at the end is the **global
# error**: the distance of the final sample from the reference solution from the same $x_1$, down to
# $t_\text{cutoff} = 10^{-3}$. We give each method a budget of model evaluations (`nfe=N`, tutorial 02),
# run it on two grids (quadratic, and uniform in the log-SNR $\lambda = -\log\gamma$) and keep its best
# grid. GENIE and TTM-3 get exact derivatives, *not counted* in the budget: this is the best case for
# them, the limit of a free derivative.

# %%
x1 = torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
gc = float(sch.gamma(T(1e-3)))
reference = reference_solve(mix, x1 / sch.alpha(T(1.0)), float(sch.gamma(T(1.0))), [gc])[0] * sch.alpha(T(1e-3))

lineup = {"DDIM": dict(method="ddim"),
          "GENIE (exact, free)": dict(method="genie", derivative="exact"),
          "TTM-3 (exact, free)": dict(method="ttm", order=3, derivative="exact"),
          "S-PNDM": dict(method="s-pndm"),
          "DPM-Solver++(2M)": dict(method="dpm-solver++2m"),
          "UniPC-2": dict(method="unipc"),
          "DEIS-3": dict(method="deis", order=3)}
nfes = (5, 10, 15, 20, 25)


def global_error(kw, nfe, grid):
    kw = dict(kw)
    if kw.get("derivative") == "exact":
        kw["derivative"] = exact_provider(mix)
    return float((sample(mix.eps, x1, nfe=nfe, grid=grid, **kw).x - reference).norm(dim=-1).mean())


table, best_grid = {}, {}
for name, kw in lineup.items():
    per_grid = {grid: [global_error(kw, n, grid) for n in nfes] for grid in ("quadratic", "logsnr")}
    best_grid[name] = min(per_grid, key=lambda grid: sum(np.log(per_grid[grid])))
    table[name] = per_grid
    print(f"{name:20s} " + "  ".join(f"{grid}: " + " ".join(f"{e:.4f}" for e in errs) for grid, errs in per_grid.items()))

fig, ax = plt.subplots(figsize=(6.5, 4.5))
for name in lineup:
    ax.loglog(nfes, table[name][best_grid[name]], "o-" if "exact" not in name else "s--", ms=4,
              label=f"{name} [{best_grid[name]}]")
ax.set_xticks(nfes, [str(n) for n in nfes])
ax.minorticks_off()
ax.set_xlabel("NFE (model evaluations)")
ax.set_ylabel("mean global error at $t = 10^{-3}$")
ax.set_title("nested mixture, exact scores, each method on its best grid")
ax.legend(fontsize=8)
plt.show()

ratio10 = table["GENIE (exact, free)"]["quadratic"][1] / table["DDIM"]["quadratic"][1]
ratio25 = table["GENIE (exact, free)"]["quadratic"][4] / table["DDIM"]["quadratic"][4]
print(f"quadratic grid: GENIE / DDIM = {ratio10:.2f} at NFE 10, {ratio25:.2f} at NFE 25")
assert ratio10 < 0.5 and ratio25 < 0.2                      # the paper's toy claim, on its grid
spndm10 = table["S-PNDM"]["logsnr"][1]
print(f"NFE 10: S-PNDM on the log-SNR grid {spndm10:.4f}, GENIE on the quadratic grid {table['GENIE (exact, free)']['quadratic'][1]:.4f}")
assert spndm10 < table["GENIE (exact, free)"]["quadratic"][1]     # the honest reading below

# %% [markdown]
# **Reading the plot honestly.**
#
# * On the quadratic grid, the paper's claim holds with exact scores: GENIE's error is less than half of
#   DDIM's at 10 NFE and less than a fifth at 25.
# * But GENIE is not the best sampler here. On the log-SNR grid S-PNDM (and DEIS-3) reach a smaller error
#   at NFE 10 *without any derivative*: the choice of grid matters as much as the order, and multistep
#   methods reuse past evaluations for free.
# * GENIE's derivative was free here. A real model pays for it: a JVP costs about as much as an
#   evaluation (the paper's "100 % overhead"), and even the closed-form mixture derivative of section 2
#   costs 2.6 evaluations on this machine (README, `python -m toy global_error`). Charged at that price,
#   GENIE's advantage mostly disappears (exercise 4). The distilled head of tutorial 04 exists to make the
#   derivative cheap.
#
# ## Exercises
#
# Try each one before opening its solution; the solution cells check the answers with `assert`s.
#
# **Exercise 1 (predict a slope).** Repeat the single-step experiment of section 4 from $t = 0.5$ for TTM-4
# (`method="ttm", order=4`; `exact_provider(mix)` then takes the third derivative from Taylor-mode
# arithmetic through `eps_gamma`). Which slope do you expect at small steps?
#
# <details><summary>Solution</summary>
#
# TTM-4 misses the $h^5$ term: slope 5. The reference solver's accuracy ($\sim 10^{-11}$) limits the
# smallest measurable errors, so use steps from $10^{-2.5}$ up.
# </details>

# %%
t_start = 0.5
xt = mix.sample_t(50, t_start, generator=torch.Generator().manual_seed(8))
dts = np.logspace(-2.5, -1.5, 4)
refs = reference_solve(mix, xt / sch.alpha(T(t_start)), float(sch.gamma(T(t_start))),
                       [float(sch.gamma(T(t_start - d))) for d in dts])
errs4 = [float((sample(mix.eps, xt, None, method="ttm", order=4, grid=T([t_start, t_start - d]),
                       derivative=exact_provider(mix)).x - r * sch.alpha(T(t_start - d))).norm(dim=-1).mean())
         for d, r in zip(dts, refs)]
slope4 = fit_order(dts, errs4)
print("TTM-4 single-step errors:", " ".join(f"{e:.1e}" for e in errs4), f"| slope {slope4:.2f}")
assert abs(slope4 - 5) < 0.35

# %% [markdown]
# **Exercise 2 (when is DDIM exact?).** Take one DDIM step from $t = 1$ straight to $t = 10^{-3}$ for
# data that is (a) a single point, `toy.single_point([0.3, -0.2])`, (b) a single Gaussian,
# `toy.single_gaussian([0.3, -0.2], 0.1)`. Compare with the exact solution (`ddim_solution`, closed form
# for one component). Predict the two errors first.
#
# <details><summary>Solution</summary>
#
# For a single point $\epsilon = (\bar{x} - x_0)/\gamma$ and the trajectories are straight lines in
# $\bar{x}$: Euler is exact, error at round-off. For a Gaussian with $s > 0$,
# $\bar{x}(\gamma) - m \propto \sqrt{s^2 + \gamma^2}$ is curved in $\gamma$: one Euler step is far off.
# </details>

# %%
z = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(9))
one_step_error = {}
for name, data in (("single point", toy.single_point([0.3, -0.2])), ("Gaussian, s = 0.1", toy.single_gaussian([0.3, -0.2], 0.1))):
    ddim_one = sample(data.eps, z, 1, method="ddim").x
    exact = data.ddim_solution(z / sch.alpha(T(1.0)), sch.gamma(T(1.0)), sch.gamma(T(1e-3))) * sch.alpha(T(1e-3))
    one_step_error[name] = float((ddim_one - exact).abs().max())
    print(f"{name:18s}: one DDIM step, max error {one_step_error[name]:.1e}")
assert one_step_error["single point"] < 1e-12
assert one_step_error["Gaussian, s = 0.1"] > 1e-2

# %% [markdown]
# **Exercise 3 (derive the finite-difference error).** Expand $\epsilon$ along the trajectory around
# $\gamma_t$ to show that the quotient of section 5 errs by about $\tfrac12 |d^2\epsilon/d\gamma^2|\,|\delta|$,
# $\delta = \gamma_{t+\Delta t} - \gamma_t$. Check the prediction at $t = 0.5$ and $\Delta t = 10^{-4}$,
# and the slope 1 of $\xi$ at small $\Delta t$.
#
# <details><summary>Solution</summary>
#
# $\epsilon(\gamma_t + \delta) = \epsilon + \delta\,\epsilon' + \tfrac12 \delta^2 \epsilon'' + \mathcal{O}(\delta^3)$, so
# $(\epsilon(\gamma_t) - \epsilon(\gamma_t + \delta))/(-\delta) = \epsilon' + \tfrac12 \delta\, \epsilon'' + \mathcal{O}(\delta^2)$:
# first order in $\delta$, and $\delta \approx \frac{d\gamma}{dt} \Delta t$. So $\xi$ falls with slope 1.
# </details>

# %%
t_start, d = 0.5, 1e-4
xt = mix.sample_t(100, t_start, generator=torch.Generator().manual_seed(6))
xbar, g = xt / sch.alpha(T(t_start)), sch.gamma(T(t_start))
e0, e1, e2 = iso_eps_derivatives(mix, xbar, g, 2)
gp = sch.gamma(T(t_start + d))
xbar_prev = reference_solve(mix, xbar, float(g), [float(gp)])[0]
error = ((e0 - mix.eps_gamma(xbar_prev, gp)) / (g - gp) - e1).norm(dim=-1)
predicted = 0.5 * e2.norm(dim=-1) * (gp - g)
print(f"mean error {float(error.mean()):.3e}, predicted {float(predicted.mean()):.3e}")
assert abs(float(error.mean()) / float(predicted.mean()) - 1) < 0.05
dts, rel = fd_relative[0.5]
print(f"slope of xi at t = 0.5, smallest steps: {fit_order(dts[:3], rel[:3]):.2f}")
assert abs(fit_order(dts[:3], rel[:3]) - 1) < 0.15

# %% [markdown]
# **Exercise 4 (charge GENIE for its derivative).** Run GENIE on the quadratic grid at NFE 10 and 20 with
# `overhead=1.0` (its derivative charged like a JVP, the paper's autodiff accounting) and with
# `overhead=2.6` (what the exact mixture derivative costs here). How many steps does it get, and does it
# still beat DDIM at the same NFE?
#
# <details><summary>Solution</summary>
#
# The budget becomes $\mathrm{round}(N/(1 + \text{overhead}))$ evaluations: 5 and 10 steps at overhead 1,
# 3 and 6 at overhead 2.6. At overhead 1, GENIE's 5 steps (error 0.074) lose to DDIM's 10 (0.056), and
# at NFE 20 its 10 steps (0.020) beat DDIM's 20 (0.028) by less than a third. At overhead 2.6 GENIE loses
# at both budgets, by a factor of about two.
# </details>

# %%
charged = {}
for overhead in (1.0, 2.6):
    for nfe in (10, 20):
        r = sample(mix.eps, x1, nfe=nfe, method="genie", derivative=exact_provider(mix), overhead=overhead)
        charged[overhead, nfe] = (r.stats.steps, float((r.x - reference).norm(dim=-1).mean()))
        ddim_error = table["DDIM"]["quadratic"][nfes.index(nfe)]
        print(f"overhead {overhead}: NFE {nfe} -> {r.stats.steps} GENIE steps, error {charged[overhead, nfe][1]:.4f} "
              f"(DDIM at NFE {nfe}: {ddim_error:.4f})")
assert [charged[1.0, 10][0], charged[1.0, 20][0], charged[2.6, 10][0], charged[2.6, 20][0]] == [5, 10, 3, 6]
assert charged[1.0, 10][1] > table["DDIM"]["quadratic"][1]                   # loses at NFE 10
assert charged[1.0, 20][1] < table["DDIM"]["quadratic"][3]                   # wins, narrowly, at NFE 20
assert charged[2.6, 10][1] > table["DDIM"]["quadratic"][1] and charged[2.6, 20][1] > table["DDIM"]["quadratic"][3]
