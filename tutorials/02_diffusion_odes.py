# %% [markdown]
# # 02 · Diffusion models as ODEs: from the probability-flow ODE to DDIM and GENIE
#
# Tutorial 01 introduced truncated Taylor methods (TTMs). Here we apply them to the generative ODE of a
# diffusion model, following the GENIE paper (Dockhorn, Vahdat, Kreis 2022; equation numbers refer to it):
#
# 1. the forward process and its noise schedule ($\alpha_t, \sigma_t, \gamma_t, \lambda_t$), and $dt/d\gamma$ (eq. (67));
# 2. the **DDIM ODE** $d\bar{x}/d\gamma = \epsilon$ derived from the probability-flow ODE, every step checked by SymPy (app. A);
# 3. **DDIM is Euler's method** on the DDIM ODE;
# 4. single-point data: straight-line trajectories, DDIM exact in one step, and the "ideal derivative trick" (app. B.2);
# 5. the total derivative $d\epsilon/d\gamma$ of eq. (12) by forward-mode autodiff, in one JVP;
# 6. **GENIE** (TTM-2 on the DDIM ODE) against DDIM on Gaussian data: an order plot;
# 7. comparing samplers fairly: the sampler registry and NFE budgets (sec. 5), where a derivative by
#    autodiff costs a model evaluation.
#
# There is no neural network here: the data are a single point or a Gaussian, whose noise prediction
# $\epsilon(x_t, t)$ is known in closed form. Every section ends with `assert`s on the facts it shows,
# so the notebook fails loudly if the library regresses; the exercises at the end have worked solutions,
# checked the same way. It runs in about half a minute on one CPU core.

# %%
import matplotlib.pyplot as plt
import sympy as sp
import torch
from IPython.display import display

import taylorsolve as ts
import toy
from taylorsolve.convergence import fit_order
from taylorsolve.diffusion import (
    CosineVPSchedule,
    LinearVPSchedule,
    autodiff_terms,
    ddim_ode_rhs,
    dx_dgamma,
    probability_flow_rhs,
    processes,
    providers,
    registry,
    sample,
)

torch.set_default_dtype(torch.float64)  # all time quantities of the diffusion layer are float64 anyway
torch.set_num_threads(1)                # small problems: one thread is fastest (and deterministic)
plt.rcParams["figure.dpi"] = 80         # modest PNGs in the committed notebook

# %% [markdown]
# ## 1. The forward process and its schedule
#
# A diffusion model gradually adds noise to data $x_0 \sim p_0$. At time $t \in [0, 1]$ (data at $t=0$,
# noise at $t=1$) the noisy sample is
#
# $$
# x_t = \alpha_t\, x_0 + \sigma_t\, \epsilon, \qquad \epsilon \sim \mathcal{N}(0, I), \qquad
# p_t(x_t \mid x_0) = \mathcal{N}(\alpha_t x_0, \sigma_t^2 I) \quad \text{(eq. (1))}.
# $$
#
# *Variance-preserving* (VP) schedules have $\sigma_t^2 = 1 - \alpha_t^2$. The paper's default is the
# linear VP schedule, $\beta(t) = -\tfrac{d}{dt}\log\alpha_t^2 = 0.1 + 19.9\,t$, i.e.
# $\log \alpha_t^2 = -(0.1\,t + 19.9\,t^2/2)$; the cosine schedule of Nichol & Dhariwal is the other common
# choice. Two derived quantities matter for sampling:
#
# * $\gamma_t = \sigma_t / \alpha_t$, the inverse signal-to-noise ratio: the "time" of the DDIM ODE;
# * $\lambda_t = \log(\alpha_t/\sigma_t) = -\log\gamma_t$, the (half) log-SNR, strictly decreasing in $t$.

# %%
lin, cos = LinearVPSchedule(), CosineVPSchedule()
t = torch.linspace(1e-3, 1.0, 400)

fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
for sched, name in ((lin, "linear VP"), (cos, "cosine VP")):
    a, s, g, lam = sched.alpha(t), sched.sigma(t), sched.gamma(t), sched.log_snr(t)
    for ax, v in zip(axes, (a, s, g, lam)):
        ax.plot(t, v, label=name)
    assert torch.allclose(a**2 + s**2, torch.ones_like(t), atol=1e-12)       # variance preserving
    assert torch.allclose(g, s / a, rtol=1e-12)                              # gamma = sigma / alpha
    assert torch.allclose(lam, -torch.log(g), rtol=1e-10, atol=1e-12)        # lambda = -log gamma
    assert bool((torch.diff(lam) < 0).all())                                 # the log-SNR decreases
    assert torch.allclose(sched.t_from_gamma(g), t, rtol=1e-9, atol=1e-12)   # t <-> gamma is invertible
    print(f"{name:10s}: alpha_1 = {float(sched.alpha(1.0)):.2e}, gamma_1 = {float(sched.gamma(1.0)):6.1f}, "
          f"gamma(t=1e-3) = {float(sched.gamma(1e-3)):.4f}")
for ax, title in zip(axes, (r"$\alpha_t$", r"$\sigma_t$", r"$\gamma_t = \sigma_t/\alpha_t$",
                            r"$\lambda_t = \log(\alpha_t/\sigma_t)$")):
    ax.set_title(title)
    ax.set_xlabel("$t$")
axes[2].set_yscale("log")
axes[0].legend()
plt.tight_layout()
plt.show()

# the linear schedule's closed forms: log alpha^2 = -(0.1 t + 19.9 t^2 / 2), beta(t) = -d log alpha^2 / dt
assert torch.allclose(torch.log(lin.alpha(t) ** 2), -(0.1 * t + 19.9 * t**2 / 2), rtol=1e-12)
tt = t.clone().requires_grad_(True)
(beta_ad,) = torch.autograd.grad(-torch.log(lin.alpha(tt) ** 2).sum(), tt)
assert torch.allclose(beta_ad, 0.1 + 19.9 * t, rtol=1e-12) and torch.allclose(lin.beta(t), beta_ad, rtol=1e-12)
# at t = 1 almost all signal is gone, so p_1 is close to N(0, I): sampling can start from pure noise
assert float(lin.alpha(1.0)) < 1e-2 and float(cos.alpha(1.0)) < 1e-2

# %% [markdown]
# ### $dt/d\gamma$: closed form (eq. (67)) against autograd
#
# Samplers work on a grid of $\gamma$ values, but the model is called with $t$, so we need $t(\gamma)$
# and, for derivatives along the ODE, $dt/d\gamma$. For the linear schedule,
# $\gamma^2 = e^{L(t)} - 1$ with $L(t) = 0.1\,t + 19.9\,t^2/2$, which inverts in closed form; the paper
# prints its derivative as
#
# $$
# \frac{dt}{d\gamma} = \frac{2\gamma}{19.9\,(\gamma^2+1)}\,
# \frac{1}{\sqrt{\left(\frac{0.1}{19.9}\right)^2 + \frac{2\log(\gamma^2+1)}{19.9}}} \qquad \text{(eq. (67))}.
# $$
#
# We compare it with the library's closed form (`LinearVPSchedule.dt_dgamma`), with autograd through the
# differentiable inverse `t_from_gamma`, and with $1/(d\gamma_t/dt)$ by autograd. The cosine schedule has
# no eq. (67); its generic `dt_dgamma` is checked against autograd through its own closed-form inverse.

# %%
def dt_dgamma_eq67(g):
    # eq. (67), exactly as printed in the paper (beta_0 = 0.1, beta_1 - beta_0 = 19.9)
    return 2 * g / (19.9 * (g**2 + 1)) / torch.sqrt((0.1 / 19.9) ** 2 + 2 * torch.log(g**2 + 1) / 19.9)


def dt_dgamma_autograd(sched, g):
    # reverse-mode derivative of the inverse map gamma -> t(gamma)
    g = g.clone().requires_grad_(True)
    (d,) = torch.autograd.grad(sched.t_from_gamma(g).sum(), g)
    return d


def inverse_dgamma_dt(sched, g):
    # 1 / (d gamma_t / dt) at t = t(gamma), by autograd through gamma(t)
    tt = sched.t_from_gamma(g).detach().requires_grad_(True)
    (d,) = torch.autograd.grad(sched.gamma(tt).sum(), tt)
    return 1.0 / d


def max_rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


g_lin, g_cos = lin.gamma(t), cos.gamma(t)
errs = {
    "eq. (67) vs LinearVPSchedule.dt_dgamma": max_rel(dt_dgamma_eq67(g_lin), lin.dt_dgamma(g_lin)),
    "eq. (67) vs autograd of t(gamma)": max_rel(dt_dgamma_eq67(g_lin), dt_dgamma_autograd(lin, g_lin)),
    "eq. (67) vs 1 / (d gamma/dt)": max_rel(dt_dgamma_eq67(g_lin), inverse_dgamma_dt(lin, g_lin)),
    "cosine: dt_dgamma vs autograd of t(gamma)": max_rel(cos.dt_dgamma(g_cos), dt_dgamma_autograd(cos, g_cos)),
}
for k, v in errs.items():
    print(f"{k:45s} max rel. diff {v:.1e}")
    assert v < 1e-9, k

plt.figure(figsize=(4.5, 3.2))
g_plot = torch.logspace(-1.9, 2, 200)
plt.loglog(g_plot, lin.dt_dgamma(g_plot), label="linear VP (eq. (67))")
plt.loglog(g_plot, cos.dt_dgamma(g_plot), "--", label="cosine VP")
plt.xlabel(r"$\gamma$")
plt.ylabel(r"$dt/d\gamma$")
plt.legend()
plt.show()

# %% [markdown]
# The same formula by SymPy: solve $L(t) = \log(1+\gamma^2)$ for the positive root $t(\gamma)$,
# differentiate, and compare with eq. (67) symbolically.

# %%
t_s, g_s, L_s = sp.symbols("t gamma L", positive=True)
b0, b1 = sp.Rational(1, 10), sp.Integer(20)
L_t = b0 * t_s + (b1 - b0) * t_s**2 / 2                           # -log alpha_t^2 = int_0^t beta
t_of_L = (-b0 + sp.sqrt(b0**2 + 2 * (b1 - b0) * L_s)) / (b1 - b0)  # positive root of L(t) = L
assert sp.simplify(L_t.subs(t_s, t_of_L) - L_s) == 0
t_of_gamma = t_of_L.subs(L_s, sp.log(1 + g_s**2))                  # gamma^2 = e^L - 1
dtdg_sym = sp.diff(t_of_gamma, g_s)
eq67 = (2 * g_s / (sp.Rational(199, 10) * (g_s**2 + 1))
        / sp.sqrt((sp.Rational(1, 10) / sp.Rational(199, 10)) ** 2 + 2 * sp.log(g_s**2 + 1) / sp.Rational(199, 10)))
display(sp.Eq(sp.Symbol(r"\frac{dt}{d\gamma}"), dtdg_sym))
assert sp.simplify(dtdg_sym - eq67) == 0
print("eq. (67) confirmed symbolically")

# %% [markdown]
# ### Two data sets with a closed-form $\epsilon$
#
# The network of a diffusion model predicts the noise, $\epsilon_\theta(x_t, t) \approx -\sigma_t \nabla \log p_t(x_t)$.
# For two simple data distributions the exact $\epsilon(x_t, t)$ is known, and we use it in place of a network:
#
# * a **single point** $p_0 = \delta_{x_0}$: $p_t = \mathcal{N}(\alpha_t x_0, \sigma_t^2 I)$, so
#   $\epsilon(x, t) = (x - \alpha_t x_0)/\sigma_t$;
# * a **Gaussian** $p_0 = \mathcal{N}(m, s^2 I)$: $p_t = \mathcal{N}(\alpha_t m, (\alpha_t^2 s^2 + \sigma_t^2) I)$, so
#   $\epsilon(x, t) = \sigma_t (x - \alpha_t m)/(\alpha_t^2 s^2 + \sigma_t^2)$.
#
# Both are plain torch functions of $(x, t)$, differentiable in both arguments; they agree with the
# `toy` package's Gaussian mixtures (`toy.single_point`, `toy.single_gaussian`).

# %%
def point_eps(x0, sched):
    def eps(x, t):
        a, s = sched.alpha(t), sched.sigma(t)
        return (x - a * x0) / s
    return eps


def gaussian_eps(m, std, sched):
    def eps(x, t):
        a, s = sched.alpha(t), sched.sigma(t)
        return s * (x - a * m) / (a**2 * std**2 + s**2)
    return eps


X0 = torch.tensor([1.0, -0.5])           # the single data point
M, S = torch.tensor([1.0, -0.5]), 0.5    # mean and standard deviation of the Gaussian data
eps_point = point_eps(X0, lin)
eps_gauss = gaussian_eps(M, S, lin)

x_probe = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
for tq in (1e-3, 0.1, 0.5, 1.0):
    assert torch.allclose(eps_point(x_probe, tq), toy.single_point(X0)(x_probe, tq), rtol=1e-10, atol=1e-12)
    assert torch.allclose(eps_gauss(x_probe, tq), toy.single_gaussian(M, S)(x_probe, tq), rtol=1e-10, atol=1e-12)

# %% [markdown]
# ## 2. The DDIM ODE, derived from the probability-flow ODE (app. A)
#
# Sampling means running the diffusion backwards. The **probability-flow ODE** (eq. (4), (17)) transports
# $p_1 \approx \mathcal{N}(0, I)$ to the data distribution:
#
# $$
# \frac{dx_t}{dt} = -\tfrac12 \beta_t \left[x_t + s_\theta(x_t, t)\right], \qquad
# s_\theta(x_t, t) = -\frac{\epsilon_\theta(x_t, t)}{\sigma_t} \approx \nabla_{x_t}\log p_t(x_t) \quad \text{(eq. (18))}.
# $$
#
# Change variables to $\gamma_t = \sigma_t/\alpha_t$ and $\bar{x}_t = x_t\sqrt{1+\gamma_t^2} = x_t/\alpha_t$.
# Appendix A shows that the ODE becomes
#
# $$
# \frac{d\bar{x}_t}{d\gamma_t} = \epsilon_\theta(x_t, t) \qquad \text{(eq. (6), (31))}.
# $$
#
# We redo the derivation step by step in SymPy. $\alpha(t)$ is an arbitrary positive function,
# $\sigma = \sqrt{1-\alpha^2}$, and $x$, $s$, $\epsilon$ stand for one component of $x_t$,
# $s_\theta(x_t, t)$ and $\epsilon_\theta(x_t, t)$ (the ODE acts componentwise on them). Each `check`
# asserts that `sympy.simplify(lhs - rhs) == 0`.

# %%
def check(lhs, rhs, label):
    assert sp.simplify(lhs - rhs) == 0, f"{label}: {sp.simplify(lhs - rhs)} != 0"
    print(f"{label:58s} ok")


t_s = sp.symbols("t", positive=True)
g_s = sp.symbols("gamma", positive=True)
x_s, s_s, e_s = sp.symbols("x s epsilon", real=True)
alpha = sp.Function("alpha", positive=True)(t_s)
sigma = sp.sqrt(1 - alpha**2)                            # VP: sigma_t^2 = 1 - alpha_t^2
gamma_t = sigma / alpha                                  # gamma_t = sqrt((1 - alpha^2) / alpha^2)
beta = -sp.diff(sp.log(alpha**2), t_s)                   # eq. (2): beta_t = -d log alpha_t^2 / dt
pf_rhs = -sp.Rational(1, 2) * beta * (x_s + s_s)         # eq. (18): dx/dt
dgamma_dt = sp.diff(gamma_t, t_s)

# xbar = x sqrt(1 + gamma^2) is the same as x / alpha, and sigma = gamma / sqrt(1 + gamma^2)
check(sp.sqrt(1 + gamma_t**2), 1 / alpha, "sqrt(1 + gamma_t^2) = 1 / alpha_t")
check(sigma, gamma_t / sp.sqrt(1 + gamma_t**2), "sigma_t = gamma_t / sqrt(1 + gamma_t^2)")

# eq. (19)-(20): total derivative of xbar = x(gamma) sqrt(1 + gamma^2)
X = sp.Function("x")(g_s)
eq20 = sp.sqrt(1 + g_s**2) * sp.diff(X, g_s) + g_s / sp.sqrt(1 + g_s**2) * X
check(sp.diff(X * sp.sqrt(1 + g_s**2), g_s), eq20, "eq. (20): d xbar/d gamma")

# eq. (21)-(24): dx/dgamma = dx/dt * dt/dgamma = 1/2 (d log alpha^2 / d gamma) [x + s]
dlog_a2_dgamma = sp.diff(sp.log(alpha**2), t_s) / dgamma_dt           # chain rule
check(pf_rhs / dgamma_dt, sp.Rational(1, 2) * dlog_a2_dgamma * (x_s + s_s), "eq. (21)-(24): dx/d gamma")

# eq. (27): alpha^2 as a function of gamma, and its derivative
A = sp.symbols("A", positive=True)
(alpha2_of_gamma,) = sp.solve(sp.Eq(g_s**2, (1 - A) / A), A)
check(alpha2_of_gamma, 1 / (g_s**2 + 1), "alpha^2 = 1 / (1 + gamma^2)")
dalpha2_dgamma = sp.diff(alpha2_of_gamma, g_s)
check(dalpha2_dgamma, -2 * g_s / (g_s**2 + 1) ** 2, "eq. (27): d alpha^2/d gamma")

# eq. (25)-(26) and (28): dx/dgamma in terms of gamma only
dx_dgamma_28 = sp.Rational(1, 2) / alpha2_of_gamma * dalpha2_dgamma * (x_s + s_s)
check(dx_dgamma_28, -g_s / (g_s**2 + 1) * (x_s + s_s), "eq. (26) -> (28): dx/d gamma")
check(pf_rhs / dgamma_dt, dx_dgamma_28.subs(g_s, gamma_t), "eq. (28) agrees with dx/dt * dt/d gamma")
# ... the step used in eq. (5): beta_t dt/dgamma = 2 gamma / (gamma^2 + 1)
check(beta / dgamma_dt, 2 * gamma_t / (gamma_t**2 + 1), "eq. (5): beta dt/d gamma = 2 gamma/(gamma^2+1)")

# eq. (29): insert (28) into (20)
dxbar_dgamma_29 = eq20.subs(sp.Derivative(X, g_s), dx_dgamma_28).subs(X, x_s)
check(dxbar_dgamma_29, -g_s / sp.sqrt(g_s**2 + 1) * s_s, "eq. (29): d xbar/d gamma = -gamma/sqrt(1+gamma^2) s")

# eq. (30)-(31): the eps parameterisation s = -eps / sigma, sigma = gamma / sqrt(1 + gamma^2)
sigma_of_gamma = g_s / sp.sqrt(1 + g_s**2)
check(dxbar_dgamma_29.subs(s_s, -e_s / sigma_of_gamma), e_s, "eq. (30)-(31): d xbar/d gamma = eps")

# %% [markdown]
# The whole chain at once, directly in $t$: with $x = x(t)$ following eq. (18),
# $\dfrac{d\bar{x}}{d\gamma} = \dfrac{d(x/\alpha)/dt}{d\gamma/dt}$. The same holds for *any* schedule
# (not only VP) if the probability-flow ODE is written with the general drift $f = d\log\alpha/dt$ and
# diffusion $g^2 = d\sigma^2/dt - 2 f \sigma^2$: then $dx/dt = f x + \tfrac12 g^2 \epsilon/\sigma$,
# and again $d(x/\alpha)/d(\sigma/\alpha) = \epsilon$.

# %%
xt = sp.Function("x")(t_s)
score = -e_s / sigma
dxbar_dt = sp.diff(xt / alpha, t_s).subs(sp.Derivative(xt, t_s), -sp.Rational(1, 2) * beta * (xt + score))
check(dxbar_dt / dgamma_dt, e_s, "VP, in t: d(x/alpha)/dt / (d gamma/dt) = eps")

# general (alpha, sigma): no sigma^2 = 1 - alpha^2
sig = sp.Function("sigma", positive=True)(t_s)
f_drift = sp.diff(alpha, t_s) / alpha
g2 = sp.diff(sig**2, t_s) - 2 * f_drift * sig**2
pf_general = f_drift * xt + sp.Rational(1, 2) * g2 * e_s / sig
dxbar_dt = sp.diff(xt / alpha, t_s).subs(sp.Derivative(xt, t_s), pf_general)
check(dxbar_dt / sp.diff(sig / alpha, t_s), e_s, "any schedule: d(x/alpha)/d(sigma/alpha) = eps")

# %% [markdown]
# The library implements both right-hand sides: `probability_flow_rhs(eps_model, schedule)` is
# $f(t, x) = dx/dt$ and `ddim_ode_rhs(eps_model, schedule)` is $f(\gamma, \bar{x}) = \epsilon$. The
# numbers agree: converting $dx/dt$ into $d\bar{x}/d\gamma$ at a point gives $\epsilon$ there.
# In $(\bar{x}, \gamma)$ coordinates the ODE does not depend on $\beta(t)$ at all: for a given data set,
# the linear and the cosine schedule give the same right-hand side, they only map $\gamma$ to different $t$.

# %%
xq = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
for sched in (lin, cos):
    eps_m = gaussian_eps(M, S, sched)
    pf, ddim = probability_flow_rhs(eps_m, sched), ddim_ode_rhs(eps_m, sched)
    for tq in (0.05, 0.3, 0.9):
        tq = torch.tensor(tq)
        a, gq = sched.alpha(tq), sched.gamma(tq)
        dxbar_dt = pf(tq, xq) / a - xq * sched.dalpha_dt(tq) / a**2      # d(x / alpha)/dt
        dxbar_dgamma = dxbar_dt * sched.dt_dgamma(gq)
        assert torch.allclose(dxbar_dgamma, ddim(gq, xq / a), rtol=1e-9)
        assert torch.allclose(ddim(gq, xq / a), eps_m(xq, tq), rtol=1e-12)

# the schedule only enters through the grid: same gamma, same xbar -> same slope
f_lin, f_cos = ddim_ode_rhs(gaussian_eps(M, S, lin), lin), ddim_ode_rhs(gaussian_eps(M, S, cos), cos)
for gq in (0.05, 1.0, 30.0):
    gq = torch.tensor(gq)
    assert torch.allclose(f_lin(gq, xq), f_cos(gq, xq), rtol=1e-9)
print("probability-flow ODE and DDIM ODE agree; the DDIM ODE is schedule-free in (xbar, gamma)")

# %% [markdown]
# ## 3. DDIM is Euler's method on the DDIM ODE
#
# The DDIM update from $t$ to $s < t$ predicts the clean data, then re-noises it to level $s$ with the
# same noise prediction:
#
# $$
# \hat{x}_0 = \frac{x_t - \sigma_t\,\epsilon_\theta(x_t, t)}{\alpha_t}, \qquad
# x_s = \alpha_s\, \hat{x}_0 + \sigma_s\, \epsilon_\theta(x_t, t).
# $$
#
# One Euler step on $d\bar{x}/d\gamma = \epsilon$ is $\bar{x}_s = \bar{x}_t + (\gamma_s - \gamma_t)\,\epsilon_\theta(x_t, t)$.
# Multiplying by $\alpha_s$ gives exactly the DDIM update, for any schedule (SymPy), and the three
# implementations agree numerically: the formula above, `sample(..., method="ddim")`, and the core
# solver `ts.solve` with `order=1` on `ddim_ode_rhs`.

# %%
a_t, s_t, a_s, s_s_, x_, e_ = sp.symbols("alpha_t sigma_t alpha_s sigma_s x epsilon", positive=True)
ddim_update = a_s * (x_ - s_t * e_) / a_t + s_s_ * e_
euler_step = a_s * (x_ / a_t + (s_s_ / a_s - s_t / a_t) * e_)     # x_s = alpha_s * xbar_s
check(euler_step, ddim_update, "one Euler step in (xbar, gamma) = DDIM update")

x_t = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
t_from, t_to = torch.tensor(0.6), torch.tensor(0.25)
e = eps_gauss(x_t, t_from)
x_ddim = lin.alpha(t_to) * (x_t - lin.sigma(t_from) * e) / lin.alpha(t_from) + lin.sigma(t_to) * e
x_sample = sample(eps_gauss, x_t, None, method="ddim", grid=torch.stack([t_from, t_to])).x
g_from, g_to = lin.gamma(t_from), lin.gamma(t_to)
xbar_to = ts.solve(ddim_ode_rhs(eps_gauss, lin), x_t / lin.alpha(t_from), torch.stack([g_from, g_to]), order=1).ys[-1]
x_euler = xbar_to * lin.alpha(t_to)
assert torch.allclose(x_sample, x_ddim, rtol=1e-12) and torch.allclose(x_euler, x_ddim, rtol=1e-12)

# ... and over a whole grid: ten DDIM steps = ten hand-written DDIM updates
res = sample(eps_gauss, x_t, 10, method="ddim", return_trajectory=True)
x = x_t
for tn, tn1 in zip(res.times[:-1], res.times[1:]):
    e = eps_gauss(x, tn)
    x = lin.alpha(tn1) * (x - lin.sigma(tn) * e) / lin.alpha(tn) + lin.sigma(tn1) * e
assert torch.allclose(res.x, x, rtol=1e-11)
print(f"DDIM = Euler on the DDIM ODE; {res.stats.nfe} model evaluations for {res.stats.steps} steps")
assert res.stats.nfe == 10

# %% [markdown]
# ## 4. Single-point data: straight lines, and the ideal derivative trick
#
# For a single data point $x_0$, in DDIM coordinates $\epsilon = (x_t - \alpha_t x_0)/\sigma_t = (\bar{x} - x_0)/\gamma$,
# so $d\bar{x}/d\gamma = (\bar{x} - x_0)/\gamma$, whose solutions are **straight lines** through $x_0$:
#
# $$
# \bar{x}(\gamma) = x_0 + (\bar{x}_1 - x_0)\,\frac{\gamma}{\gamma_1}, \qquad
# \frac{d\epsilon}{d\gamma} = 0 \text{ along them}.
# $$
#
# Euler's method is exact on a straight line, so DDIM reaches the exact endpoint in **one step**, from
# any starting point. In $x$-space the same trajectories are curves,
# $x_t = \alpha_t x_0 + \sigma_t (\bar{x}_1 - x_0)/\gamma_1$.

# %%
def point_solution(x1, t1, t):
    # exact DDIM-ODE solution for single-point data, mapped back to x (VP: x = xbar / sqrt(1 + gamma^2))
    g1, g = lin.gamma(t1), lin.gamma(t)
    xbar = X0 + (x1 * torch.sqrt(1 + g1**2) - X0) * (g / g1)[..., None, None]
    return xbar / torch.sqrt(1 + g**2)[..., None, None]


x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
fine = sample(eps_point, x1, 200, method="ddim", return_trajectory=True)
exact_traj = point_solution(x1, fine.times[0], fine.times)
assert torch.allclose(fine.trajectory, exact_traj, rtol=1e-10, atol=1e-12)   # Euler follows the lines exactly

one = sample(eps_point, x1, 1, method="ddim")                                   # ONE step, t = 1 -> 1e-3
assert one.stats.nfe == 1
assert torch.allclose(one.x, exact_traj[-1], rtol=1e-12, atol=1e-12)
print(f"one DDIM step: max error {float((one.x - exact_traj[-1]).abs().max()):.1e}")

gam = lin.gamma(fine.times)
xbar_traj = fine.trajectory * torch.sqrt(1 + gam**2)[:, None, None]
# straightness: every xbar lies on the chord from xbar_1 to x0
u = (xbar_traj[0] - X0) / gam[0]
assert torch.allclose(xbar_traj, X0 + gam[:, None, None] * u, rtol=1e-10, atol=1e-10)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for i in range(x1.shape[0]):
    axes[0].plot(fine.trajectory[:, i, 0], fine.trajectory[:, i, 1], lw=1)
    axes[1].plot(xbar_traj[:, i, 0], xbar_traj[:, i, 1], lw=1)
for ax in axes:
    ax.plot(*X0, "k*", ms=12, label="$x_0$")
    ax.set_aspect("equal")
axes[0].plot(x1[:, 0], x1[:, 1], "ko", ms=3, label="$x_1$ (noise)")
axes[0].set_title(r"$x_t$: curved paths from noise to $x_0$")
axes[1].set_title(r"$\bar{x}_t = x_t/\alpha_t$: straight lines into $x_0$")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The derivative $d\epsilon/d\gamma$ (eq. (12), section 5) is zero here, but its three terms are not:
# they cancel exactly. Autodiff through the single-point $\epsilon$ shows it.

# %%
xq, tq = x1[:3] * 0.7, torch.tensor(0.4)
terms = autodiff_terms(eps_point, xq, tq, lin)
parts = {"coef1 * JVP_1": terms.coef1 * terms.jvp1, "coef2 * JVP_2": terms.coef2 * terms.jvp2,
         "time term": terms.time_term, "total": terms.total}
for k, v in parts.items():
    print(f"{k:14s} max |.| = {float(v.abs().max()):.3e}")
assert float(terms.total.abs().max()) < 1e-12 * float(terms.time_term.abs().max()) + 1e-12

# %% [markdown]
# ### The "ideal derivative trick" (app. B.2)
#
# Tachibana et al. approximate higher derivatives by pretending that, for the current $x_t$, the data is
# the single point $x_0 \approx (x_t - \sigma_t \epsilon_\theta)/\alpha_t$ (eq. (41)), so
# $\epsilon_\theta(x_t, t) \approx (x_t - \alpha_t x_0)/\sigma_t$ (eq. (38)), with $\partial\epsilon/\partial x = I/\sigma_t$ (eq. (39))
# and $\partial\epsilon/\partial t$ from eq. (40)-(42). On the DDIM ODE this gives $d\epsilon/d\gamma = 0$
# identically (eq. (44)): **TTM-2 with ideal derivatives is DDIM**. SymPy first, for any VP schedule:

# %%
x0_s = sp.symbols("x_0", real=True)
eps_ideal = (x_s - alpha * x0_s) / sigma                                   # eq. (38)
x0_hat = (x_s - sigma * e_s) / alpha                                       # eq. (41)
deps_dt_40 = sp.diff(eps_ideal, t_s)                                       # eq. (40), x held fixed
deps_dt_42 = sp.diff(sp.log(alpha**2), t_s) / (2 * sigma) * (e_s / sigma - x_s)
check(deps_dt_40.subs(x0_s, x0_hat), deps_dt_42, "eq. (40) + (41) -> (42)")
deps_dx_39 = sp.diff(eps_ideal, x_s)                                       # eq. (39): 1 / sigma
dx_dgamma_26 = pf_rhs.subs(s_s, -e_s / sigma) / dgamma_dt                  # eq. (26), s = -eps/sigma
total_44 = deps_dx_39 * dx_dgamma_26 + deps_dt_42 / dgamma_dt              # eq. (43)-(44)
check(total_44, 0, "eq. (44): ideal d eps/d gamma = 0")

# %% [markdown]
# The `ideal` provider implements eq. (44) term by term; on Gaussian data, where the true derivative is
# *not* zero, it still returns zeros (to rounding), and GENIE with it reproduces DDIM. On the
# probability-flow ODE the same trick does *not* cancel (eq. (51)): TTM-2 there differs from Euler.

# %%
gq = lin.gamma(tq)
xbar_q = xq / lin.alpha(tq)
rhs_gauss = ddim_ode_rhs(eps_gauss, lin)
eq_ = rhs_gauss(gq, xbar_q)
(ideal_d,) = providers.ideal().eps_derivatives(rhs_gauss, gq, xbar_q, eq_, 1)
true_d = autodiff_terms(eps_gauss, xq, tq, lin).total
print(f"ideal d eps/d gamma: {float(ideal_d.abs().max()):.1e}   true d eps/d gamma: {float(true_d.abs().max()):.3f}")
assert float(ideal_d.abs().max()) < 1e-12 and float(true_d.abs().max()) > 1e-2

x1g = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
r_ddim = sample(eps_gauss, x1g, 10, method="ddim")
r_ideal = sample(eps_gauss, x1g, 10, method="genie", derivative="ideal")
r_ad = sample(eps_gauss, x1g, 10, method="genie", derivative="autodiff")
print(f"GENIE(ideal) - DDIM: {float((r_ideal.x - r_ddim.x).abs().max()):.1e}, "
      f"GENIE(autodiff) - DDIM: {float((r_ad.x - r_ddim.x).abs().max()):.2e}")
assert torch.allclose(r_ideal.x, r_ddim.x, rtol=1e-10, atol=1e-12)
assert float((r_ad.x - r_ddim.x).abs().max()) > 1e-3

# on the probability-flow ODE the ideal derivatives do not vanish (eq. (51))
pf_ideal = sample(eps_gauss, x1g, 10, method="ttm-pf", order=2, derivative="ideal")
pf_euler = sample(eps_gauss, x1g, 10, method="ttm-pf", order=2, derivative="zero")
print(f"probability-flow ODE, TTM-2(ideal) - Euler: {float((pf_ideal.x - pf_euler.x).abs().max()):.2e}")
assert float((pf_ideal.x - pf_euler.x).abs().max()) > 1e-3

# %% [markdown]
# ## 5. The total derivative $d\epsilon/d\gamma$ by forward-mode autodiff (eq. (12))
#
# GENIE is TTM-2 on the DDIM ODE (eq. (9)):
# $\bar{x}_{n+1} = \bar{x}_n + h_n\,\epsilon_\theta + \tfrac12 h_n^2\, d\epsilon_\theta/d\gamma$, $h_n = \gamma_{n+1} - \gamma_n$.
# The total derivative along the ODE splits by the chain rule (eq. (10)-(12)):
#
# $$
# \frac{d\epsilon_\theta}{d\gamma}
# = \frac{\partial \epsilon_\theta}{\partial x}\frac{dx}{d\gamma} + \frac{\partial\epsilon_\theta}{\partial t}\frac{dt}{d\gamma}
# = \frac{1}{\sqrt{1+\gamma^2}}\underbrace{\frac{\partial\epsilon_\theta}{\partial x}\epsilon_\theta}_{\text{JVP}_1}
# - \frac{\gamma}{1+\gamma^2}\underbrace{\frac{\partial\epsilon_\theta}{\partial x}x}_{\text{JVP}_2}
# + \frac{\partial\epsilon_\theta}{\partial t}\frac{dt}{d\gamma},
# \qquad \frac{dx}{d\gamma} = \frac{\epsilon_\theta}{\sqrt{1+\gamma^2}} - \frac{\gamma\, x}{1+\gamma^2} \;\text{(eq. (11))}.
# $$
#
# Since it is a directional derivative of $(x, t) \mapsto \epsilon_\theta(x, t)$ along the tangent
# $(dx/d\gamma, dt/d\gamma)$, **one** forward-mode pass `torch.func.jvp` computes the whole sum.
# We compare it, on the Gaussian data, with
#
# * the three terms computed separately (`autodiff_terms`: three JVPs),
# * the closed form: with $\epsilon = \gamma(\bar{x} - m)/(s^2 + \gamma^2)$ along $\bar{x}' = \epsilon$,
#   $\;d\epsilon/d\gamma = s^2 (\bar{x} - m)/(s^2+\gamma^2)^2$ (also `toy`'s `eps_derivatives_closed_form`),
# * a central finite difference of $\epsilon$ along the exact ODE solution
#   $\bar{x}(\gamma) = m + (\bar{x}_q - m)\sqrt{(s^2+\gamma^2)/(s^2+\gamma_q^2)}$,
# * the core solver's Taylor coefficient $c_2 = \tfrac12\, d\epsilon/d\gamma$ of `ddim_ode_rhs` (what GENIE uses).

# %%
tq = torch.tensor(0.3)
gq = lin.gamma(tq)
gen = torch.Generator().manual_seed(6)
xq = lin.alpha(tq) * (M + S * torch.randn(5, 2, generator=gen)) + lin.sigma(tq) * torch.randn(5, 2, generator=gen)
xbar_q = xq / lin.alpha(tq)

eq_ = eps_gauss(xq, tq)
tangent = (dx_dgamma(xq, eq_, gq), lin.dt_dgamma(gq))          # (dx/dgamma, dt/dgamma), eq. (11) and (67)
_, d_jvp = torch.func.jvp(eps_gauss, (xq, tq), tangent)         # ONE forward-mode pass, eq. (12)

terms = autodiff_terms(eps_gauss, xq, tq, lin)                  # JVP_1, JVP_2, d eps/dt separately
d_closed = S**2 * (xbar_q - M) / (S**2 + gq**2) ** 2
d_toy = toy.single_gaussian(M, S).eps_derivatives_closed_form(xbar_q, gq, 1)[1]


def xbar_exact(g):
    return M + (xbar_q - M) * torch.sqrt((S**2 + g**2) / (S**2 + gq**2))


def eps_on_path(g):                                             # eps at the ODE solution's point at gamma = g
    return eps_gauss(xbar_exact(g) / torch.sqrt(1 + g**2), lin.t_from_gamma(g))


h = 1e-4 * gq
d_fd = (eps_on_path(gq + h) - eps_on_path(gq - h)) / (2 * h)
c = ts.taylor_coefficients(ddim_ode_rhs(eps_gauss, lin), gq, xbar_q, 2, backend="autodiff")
d_core = 2 * c[2]

print(f"gamma = {float(gq):.4f}, dt/dgamma = {float(lin.dt_dgamma(gq)):.4f}")
for name, d in (("three terms", terms.total), ("closed form", d_closed), ("toy closed form", d_toy),
                ("finite difference", d_fd), ("core Taylor coeff.", d_core)):
    err = float((d - d_jvp).abs().max())
    print(f"  one JVP vs {name:18s}: max diff {err:.1e}")
    assert err < (1e-7 if name == "finite difference" else 1e-11) * float(d_jvp.abs().max()), name
assert torch.allclose(terms.eps, eq_, rtol=1e-13)

# %% [markdown]
# How large are the three terms compared with their sum? Along one noisy sample of the Gaussian data,
# from $t = 1$ down to $t = 10^{-3}$: near the noise end $p_t \approx \mathcal{N}(0, I)$, so
# $\epsilon_\theta \approx x$ and the two JVP terms, each of size $\sim 10^{-2}$, cancel to a total many
# orders of magnitude smaller. Near the data the Jacobian $\partial\epsilon/\partial x = \sigma_t/(\alpha_t^2 s^2 + \sigma_t^2)\, I$
# vanishes and the time term carries everything (for single-point data, above, all three terms instead
# grow like $1/\gamma$ and cancel exactly). The terms behave very differently over $t$, which is why the
# paper's distilled head predicts them with separate, $\gamma$-dependent prefactors (the "mixed
# parameterisation", eq. (14)).

# %%
ts_plot = torch.logspace(-3, 0, 40)
gen = torch.Generator().manual_seed(7)
x0_sample, z = M + S * torch.randn(1, 2, generator=gen), torch.randn(1, 2, generator=gen)
norms = {k: [] for k in ("coef1 * JVP_1", "coef2 * JVP_2", "time term", "total")}
for tv in ts_plot:
    xv = lin.alpha(tv) * x0_sample + lin.sigma(tv) * z
    tr = autodiff_terms(eps_gauss, xv, tv, lin)
    for k, v in zip(norms, (tr.coef1 * tr.jvp1, tr.coef2 * tr.jvp2, tr.time_term, tr.total)):
        norms[k].append(float(v.norm()))
plt.figure(figsize=(5, 3.5))
for k, v in norms.items():
    plt.loglog(ts_plot, v, "k-" if k == "total" else "-", lw=2 if k == "total" else 1, label=k)
plt.xlabel("$t$")
plt.ylabel("norm")
plt.title(r"terms of $d\epsilon/d\gamma$ (eq. (12))")
plt.legend(fontsize=8)
plt.show()
# near the noise (t = 1) the JVP terms cancel: each is >1000x their sum; near the data the time term dominates
assert min(norms["coef1 * JVP_1"][-1], norms["coef2 * JVP_2"][-1]) > 1e3 * norms["total"][-1]
assert norms["time term"][0] > 100 * max(norms["coef1 * JVP_1"][0], norms["coef2 * JVP_2"][0])

# %% [markdown]
# ## 6. GENIE against DDIM on Gaussian data
#
# Unlike a single point, Gaussian data with $s > 0$ give curved trajectories,
# $\bar{x}(\gamma) = m + (\bar{x}_1 - m)\sqrt{(s^2+\gamma^2)/(s^2+\gamma_1^2)}$, so DDIM is no longer exact.
# We sample with $N$ steps on the quadratic time grid (the paper's "quadratic striding", $t = 1 \to 10^{-3}$)
# and measure the error at $t = 10^{-3}$ against that exact solution. DDIM (TTM-1) converges with order 1,
# GENIE (TTM-2) with order 2, for the same number of model evaluations; GENIE's derivative comes either
# from one JVP per step (`derivative="autodiff"`, what the paper distils into a small head) or from the
# closed form above (`providers.exact`): both give the same samples. GENIE with the ideal derivative trick
# coincides with DDIM.

# %%
x1g = torch.randn(16, 2, generator=torch.Generator().manual_seed(8))
t_cut = 1e-3
g1, gc = lin.gamma(1.0), lin.gamma(t_cut)
x_ref = (M + (x1g / lin.alpha(1.0) - M) * torch.sqrt((S**2 + gc**2) / (S**2 + g1**2))) * lin.alpha(t_cut)

closed = providers.exact(lambda xbar, gamma, eps, order: [S**2 * (xbar - M) / (S**2 + gamma**2) ** 2])
runs = {"DDIM": dict(method="ddim"),
        "GENIE (autodiff)": dict(method="genie", derivative="autodiff"),
        "GENIE (closed form)": dict(method="genie", derivative=closed),
        "GENIE (ideal)": dict(method="genie", derivative="ideal")}
Ns = [5, 10, 20, 40]
errors, samples = {k: [] for k in runs}, {k: [] for k in runs}
for k, kw in runs.items():
    for n in Ns:
        r = sample(eps_gauss, x1g, n, grid="quadratic", t_cutoff=t_cut, **kw)
        assert r.stats.nfe == n                                   # one model evaluation per step
        if kw.get("derivative") == "autodiff":
            assert r.stats.jvp_passes == n                        # ... plus one JVP per step
        samples[k].append(r.x)
        errors[k].append(float((r.x - x_ref).abs().max()))
orders = {k: fit_order([1 / n for n in Ns], e) for k, e in errors.items()}

print("    N " + "".join(f"{k:>22s}" for k in runs))
for i, n in enumerate(Ns):
    print(f"{n:5d} " + "".join(f"{errors[k][i]:22.3e}" for k in runs))
print("order " + "".join(f"{orders[k]:22.2f}" for k in runs))

plt.figure(figsize=(5, 3.8))
for k, style in zip(runs, ("o-", "s-", "x--", "+:")):
    plt.loglog(Ns, errors[k], style, label=f"{k} (order {orders[k]:.2f})")
n_arr = torch.tensor(Ns, dtype=torch.float64)
plt.loglog(Ns, errors["DDIM"][0] * Ns[0] / n_arr, "k:", lw=0.8, label="slope -1")
plt.loglog(Ns, errors["GENIE (autodiff)"][0] * (Ns[0] / n_arr) ** 2, "k-.", lw=0.8, label="slope -2")
plt.xticks(Ns, [str(n) for n in Ns])
plt.minorticks_off()
plt.xlabel("steps $N$ (= model evaluations)")
plt.ylabel(r"max error at $t = 10^{-3}$")
plt.legend(fontsize=8)
plt.show()

assert 0.85 < orders["DDIM"] < 1.15
assert 1.75 < orders["GENIE (autodiff)"] < 2.25
assert all(eg < ed for eg, ed in zip(errors["GENIE (autodiff)"], errors["DDIM"]))
for a_, b_ in zip(samples["GENIE (autodiff)"], samples["GENIE (closed form)"]):
    assert torch.allclose(a_, b_, rtol=1e-10, atol=1e-12)
for a_, b_ in zip(samples["GENIE (ideal)"], samples["DDIM"]):
    assert torch.allclose(a_, b_, rtol=1e-10, atol=1e-12)

# %% [markdown]
# ## 7. Comparing samplers fairly: the registry and NFE budgets
#
# Every method of `sample()` is a registered unit that declares its order, the coordinates it steps in
# and how many model evaluations $N$ steps cost; one loop does the rest (coordinates, direction,
# the analytical first step, denoising, counting). `registry.sampler_table()` lists them:

# %%
print(registry.sampler_table())
assert {"ddim", "genie", "heun", "dpm-solver++2m", "unipc", "deis"} <= set(registry.available_methods())

# %% [markdown]
# The network is the expensive part of sampling, so methods are compared at an equal **budget of model
# evaluations** (NFE), not at an equal number of steps: `sample(..., nfe=N)` picks the most steps whose
# evaluations fit in $N$. Heun needs two evaluations per step, so it gets $N/2$ steps. GENIE's
# derivative by autodiff is a JVP, a second pass through the network; the paper charges it as
# 100 % overhead (sec. 5), so GENIE-AD gets $\mathrm{round}(N/(1+1))$ evaluations. With the closed-form
# derivative of our Gaussian (free here) GENIE gets all $N$: that is the limit a cheap distilled head
# approaches (tutorial 04). Same noise, quadratic grid, error against the exact solution:

# %%
budgets = [6, 10, 20, 40]
contenders = {
    "DDIM": dict(method="ddim"),
    "Heun (2 evaluations per step)": dict(method="heun"),
    "GENIE, autodiff (charged 100 %)": dict(method="genie", derivative="autodiff"),
    "GENIE, free exact derivative": dict(method="genie", derivative="closed form"),
}
budget_errors, budget_steps = {}, {}
for name, kw in contenders.items():
    kw = dict(kw)
    if kw.get("derivative") == "closed form":
        kw["derivative"] = providers.exact(lambda xbar, gamma, eps, order: [S**2 * (xbar - M) / (S**2 + gamma**2) ** 2])
    budget_errors[name], budget_steps[name] = [], []
    for nfe in budgets:
        r = sample(eps_gauss, x1g, nfe=nfe, t_cutoff=t_cut, **kw)
        assert r.stats.nfe + r.stats.jvp_passes <= nfe          # the budget holds, JVPs included
        budget_errors[name].append(float((r.x - x_ref).abs().max()))
        budget_steps[name].append(r.stats.steps)
    print(f"{name:32s} steps {budget_steps[name]}  errors " + " ".join(f"{e:.3g}" for e in budget_errors[name]))

fig, ax = plt.subplots(figsize=(5.5, 4))
for name, style in zip(contenders, ("o-", "^-", "s-", "x--")):
    ax.loglog(budgets, budget_errors[name], style, label=name)
ax.set_xticks(budgets, [str(n) for n in budgets])
ax.minorticks_off()
ax.set_xlabel("NFE budget (model evaluations, JVPs counted as evaluations)")
ax.set_ylabel(r"max error at $t = 10^{-3}$")
ax.set_title("Gaussian data, quadratic grid, equal cost")
ax.legend(fontsize=8)
plt.show()

assert budget_steps["Heun (2 evaluations per step)"] == [n // 2 for n in budgets]
assert budget_steps["GENIE, autodiff (charged 100 %)"] == [round(n / 2) for n in budgets]
ad, free, ddim_err = (budget_errors[k] for k in ("GENIE, autodiff (charged 100 %)", "GENIE, free exact derivative", "DDIM"))
assert ad[0] > 0.8 * ddim_err[0]                                  # at 6 NFE the JVP's price eats the gain
assert ad[-1] < ddim_err[-1] / 3                                  # at 40 NFE second order still wins
assert all(f < d / 2 for f, d in zip(free[1:], ddim_err[1:]))     # a free derivative wins everywhere from 10 NFE

# %% [markdown]
# The reading: the order alone does not decide; the price of the derivative does. Charged a full
# evaluation, GENIE-AD is no better than DDIM at 6 NFE and pulls ahead only with larger budgets; with a
# (nearly) free derivative it is ahead at every budget. Tutorial 03 compares all registered samplers
# on a harder data set, tutorial 04 measures what a learned head really costs, and tutorial 06 adds
# your own sampler to the registry.
#
# **Summary.** In the coordinates $(\bar{x}, \gamma) = (x/\alpha, \sigma/\alpha)$ the probability-flow ODE
# becomes $d\bar{x}/d\gamma = \epsilon_\theta$, independent of the noise schedule; DDIM is Euler's method
# on it, exact for single-point data, where trajectories are straight lines and the "ideal" second-order
# correction vanishes. GENIE adds the second Taylor term $\tfrac12 h^2\, d\epsilon_\theta/d\gamma$, whose
# derivative is one forward-mode JVP with the tangent $(dx/d\gamma, dt/d\gamma)$; on curved trajectories it
# converges with order 2 instead of 1 at the same number of steps, and at equal cost once the derivative
# is cheap. The next step is to replace the exact $\epsilon$ by a trained network and the JVP by a
# distilled head (GENIE sec. 3.1, tutorial 04).
#
# ## Exercises
#
# Try each one before opening its solution; the solution cells check the answers with `assert`s.
#
# **Exercise 1 (predict a slope).** `sample(..., method="ttm", order=3)` is the third truncated Taylor
# method on the DDIM ODE (app. B.3), its two derivatives by nested autodiff. Which global order do you
# expect on the Gaussian data of section 6? Measure it with 10, 20, 40 and 80 steps.
#
# <details><summary>Solution</summary>
#
# TTM-3 has global order 3. On the quadratic grid the coarse grids are still far from the asymptotic
# regime (with 10 steps the first one takes $\gamma$ from 152 down to 29), so the fitted slope
# approaches 3 from below; the last two grids give nearly 3.
# </details>

# %%
Ns3 = [10, 20, 40, 80]
err3 = [float((sample(eps_gauss, x1g, n, method="ttm", order=3, t_cutoff=t_cut).x - x_ref).abs().max()) for n in Ns3]
print("TTM-3 errors:", " ".join(f"{e:.2e}" for e in err3), f"| fitted order {fit_order([1 / n for n in Ns3], err3):.2f}",
      f"| last two grids {fit_order([1 / n for n in Ns3[-2:]], err3[-2:]):.2f}")
assert 2.6 < fit_order([1 / n for n in Ns3], err3) < 3.3
assert abs(fit_order([1 / n for n in Ns3[-2:]], err3[-2:]) - 3) < 0.25

# %% [markdown]
# **Exercise 2 (derive the third-order term).** TTM-3 needs $d^2\epsilon/d\gamma^2$. For the Gaussian data,
# differentiate $d\epsilon/d\gamma = s^2 (\bar{x} - m)/(s^2+\gamma^2)^2$ once more along the ODE
# ($d\bar{x}/d\gamma = \epsilon = \gamma(\bar{x}-m)/(s^2+\gamma^2)$) and check your result against the
# core's Taylor coefficient $c_3 = \frac{1}{3!}\, d^3\bar{x}/d\gamma^3 = \frac16\, d^2\epsilon/d\gamma^2$
# of `ddim_ode_rhs`.
#
# <details><summary>Solution</summary>
#
# $$\frac{d^2\epsilon}{d\gamma^2} = \frac{s^2\,\epsilon}{(s^2+\gamma^2)^2} - \frac{4\gamma\, s^2 (\bar{x}-m)}{(s^2+\gamma^2)^3}
# = \frac{s^2\gamma(\bar{x}-m) - 4 s^2 \gamma (\bar{x}-m)}{(s^2+\gamma^2)^3} = -\frac{3 s^2 \gamma\, (\bar{x}-m)}{(s^2+\gamma^2)^3}.$$
# </details>

# %%
tq = torch.tensor(0.3)
gq = lin.gamma(tq)
xbar_q = torch.randn(5, 2, generator=torch.Generator().manual_seed(9)) / lin.alpha(tq)
d2_by_hand = -3 * S**2 * gq * (xbar_q - M) / (S**2 + gq**2) ** 3
c = ts.taylor_coefficients(ddim_ode_rhs(eps_gauss, lin), gq, xbar_q, 3, backend="autodiff")
print(f"max |6 c_3 - by hand| = {float((6 * c[3] - d2_by_hand).abs().max()):.1e}")
assert torch.allclose(6 * c[3], d2_by_hand, rtol=1e-12, atol=1e-14)
# the same with SymPy: total derivatives along d xbar/d gamma = eps, one coordinate
gam_, m_, s_, xb_ = sp.symbols("gamma m s xbar", real=True)
eps_ = gam_ * (xb_ - m_) / (s_**2 + gam_**2)
d1_ = sp.diff(eps_, gam_) + sp.diff(eps_, xb_) * eps_
d2_ = sp.diff(d1_, gam_) + sp.diff(d1_, xb_) * eps_
assert sp.simplify(d1_ - s_**2 * (xb_ - m_) / (s_**2 + gam_**2) ** 2) == 0
assert sp.simplify(d2_ + 3 * s_**2 * gam_ * (xb_ - m_) / (s_**2 + gam_**2) ** 3) == 0

# %% [markdown]
# **Exercise 3 (an NFE budget by hand).** With `nfe=12`, `afs=True` (the analytical first step saves one
# evaluation) and `denoise=True` (the final denoising step costs one), how many steps do Heun and
# GENIE-AD get? Work it out, then check `stats`.
#
# <details><summary>Solution</summary>
#
# Heun: $N$ steps cost $2N - 1 + 1 = 2N \le 12$, so $N = 6$. GENIE-AD: the budget becomes
# $\mathrm{round}(12/2) = 6$ evaluations, and $N$ steps cost $N - 1 + 1 = N \le 6$: $N = 6$ steps,
# with 6 network evaluations and 5 JVPs (the analytical first step needs no derivative), 11 in total.
# </details>

# %%
heun = sample(eps_gauss, x1g, nfe=12, method="heun", afs=True, denoise=True)
genie_ad = sample(eps_gauss, x1g, nfe=12, method="genie", afs=True, denoise=True)
for r in (heun, genie_ad):
    st = r.stats
    print(f"{st.method:6s} steps {st.steps}, nfe {st.nfe}, JVPs {st.jvp_passes}, afs saved {st.afs_saved}, "
          f"denoising {st.denoise_nfe}, evaluation budget {st.eval_budget}")
assert (heun.stats.steps, heun.stats.nfe) == (6, 12)
assert (genie_ad.stats.steps, genie_ad.stats.nfe, genie_ad.stats.jvp_passes) == (6, 6, 5)

# %% [markdown]
# **Exercise 4 (the DDIM ODE does not care about the process).** A variance-exploding (VE) process has
# $\alpha_t = 1$ and $\sigma_t$ growing geometrically, so $\bar{x} = x$ and $\gamma = \sigma$. Take the
# same Gaussian data under the VE process (`processes.ve()`), pick the same $\gamma$ values on both
# processes (different $t$!) and run DDIM from the same $\bar{x}_1$. Predict how far apart the two
# results are in $\bar{x}$.
#
# <details><summary>Solution</summary>
#
# In $(\bar{x}, \gamma)$ both ODEs are $d\bar{x}/d\gamma = \gamma(\bar{x}-m)/(s^2+\gamma^2)$, and Euler's
# method on the same $\gamma$ grid makes the same steps: the results agree to round-off. The schedule
# (or the process) only decides which $t$ a $\gamma$ belongs to.
# </details>

# %%
ve = processes.ve()
gammas = torch.logspace(1, -1.5, 11)                       # shared gamma grid, 10 -> 0.03
t_vp, t_ve = lin.t_from_gamma(gammas), ve.schedule.t_from_gamma(gammas)
xbar_1 = 3 * x1g
vp_run = sample(eps_gauss, xbar_1 * lin.alpha(t_vp[0]), None, method="ddim", grid=t_vp)
ve_run = sample(gaussian_eps(M, S, ve.schedule), xbar_1 * ve.schedule.alpha(t_ve[0]), None, method="ddim",
                grid=t_ve, process=ve)
gap = float((vp_run.x / lin.alpha(t_vp[-1]) - ve_run.x / ve.schedule.alpha(t_ve[-1])).abs().max())
print(f"VP times {float(t_vp[0]):.3f} -> {float(t_vp[-1]):.4f}, VE times {float(t_ve[0]):.3f} -> {float(t_ve[-1]):.4f}; "
      f"max |xbar_VP - xbar_VE| = {gap:.1e}")
assert gap < 1e-12
