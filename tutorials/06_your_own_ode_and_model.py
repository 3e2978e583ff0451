# %% [markdown]
# # 06 · Your own ODE and your own model
#
# Tutorials 01-04 used the library's examples. This one is a template for your own work, in two parts:
#
# **Part 1, your own ODE** (a chemical oscillator, the Brusselator):
# 1. write the right-hand side once, with `taylorsolve.math`;
# 2. print its derivatives with SymPy;
# 3. run it through every coefficient backend;
# 4. property-test the order of the Taylor methods with hypothesis;
# 5. solve it adaptively with dense output and compare with SciPy;
# 6. see what happens on a stiff problem.
#
# **Part 2, your own diffusion model** (2-D data of your choosing):
# 7. your own noise schedule and process;
# 8. your own eps-network, trained by denoising score matching, sampled through `sample()`;
# 9. a discrete-timestep network (a diffusers `UNet2DModel`) through `from_diffusers`;
# 10. your own sampler, registered in a few lines and usable everywhere.
#
# Exercises with checked solutions are at the end. It runs in about half a minute on one CPU core.
#
# ## Part 1: your own ODE

# %%
import math

import diffusers
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.display import display
from scipy.integrate import solve_ivp

import taylorsolve as ts
from taylorsolve import math as tm
from taylorsolve.coefficients.symbolic import derive
from taylorsolve.convergence import fit_order
from taylorsolve.diffusion import CustomSchedule, DiffusionModel, LinearVPSchedule, from_diffusers, registry, sample
from taylorsolve.diffusion.processes import ScalarProcess
from toy.experiments.metrics import sliced_wasserstein

torch.set_default_dtype(torch.float64)  # numerics in float64; the networks below ask for float32 explicitly
torch.set_num_threads(1)                # small problems: one thread is fastest (and deterministic)
torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80         # modest PNGs in the committed notebook

# %% [markdown]
# ### 1. The right-hand side, written once
#
# The Brusselator is a model of an autocatalytic reaction. With the concentrations of the reactants held
# at $A$ and $B$ and unit rate constants, the concentrations $x$, $y$ of two intermediates follow
#
# $$ x' = A + x^2 y - (B + 1)\, x, \qquad y' = B x - x^2 y . $$
#
# Its only fixed point $(A, B/A)$ is stable for $B < 1 + A^2$; beyond that the concentrations oscillate
# on a limit cycle. We take $A = 1$, $B = 3$ (oscillating; not stiff).
#
# Write $f(t, y)$ with torch indexing and `taylorsolve.math` functions (`tm.stack` here; `tm.sin`, `tm.exp`
# ... for others). Then the same function runs on torch tensors, on SymPy symbols and on the Taylor-mode
# jets of the coefficient backends. Leading dimensions of `y` are a batch.

# %%
A, B = 1.0, 3.0


def brusselator(t, y):
    x, v = y[..., 0], y[..., 1]
    return tm.stack([A + x * x * v - (B + 1) * x, B * x - x * x * v], dim=-1)


y0 = torch.tensor([1.5, 3.0])
print("f(0, y0) =", brusselator(0.0, y0))

# %% [markdown]
# ### 2. Its derivatives, printed by SymPy
#
# `derive` calls $f$ with SymPy symbols $y_0 = x$, $y_1 = y$ and applies the Lie derivative
# $y^{(k+1)} = (\partial_t + f\cdot\nabla_y)\, y^{(k)}$ (tutorial 01):

# %%
d = derive(brusselator, (2,), order=3)
print(d)
d

# %% [markdown]
# The numbers 4.0 and 3.0 are $B + 1$ and $B$. To see the parameters in the formulas, make them part of the
# state with zero derivative ($A' = B' = 0$): the derivatives are then functions of $y_2 = A$, $y_3 = B$.
# The same trick lets one batched solve run many parameter values (exercise 4).

# %%
def brusselator_ab(t, y):
    x, v, a, b = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    zero = 0 * a
    return tm.stack([a + x * x * v - (b + 1) * x, b * x - x * x * v, zero, zero], dim=-1)


d_ab = derive(brusselator_ab, (4,), order=2)
x_, v_, a_, b_ = sp.symbols("x y A B")
names = dict(zip(d_ab.state_symbols, (x_, v_, a_, b_)))
second = [sp.collect(sp.expand(e.subs(names)), [a_, b_]) for e in d_ab.derivative(2)[:2]]
display(sp.Eq(sp.Symbol("x''"), second[0]))
display(sp.Eq(sp.Symbol("y''"), second[1]))
# x'' + y'' = (x' + y')' = (A - x)' = -x'
assert sp.simplify(second[0] + second[1] + (a_ + x_**2 * v_ - (b_ + 1) * x_)) == 0

# %% [markdown]
# ### 3. Through every coefficient backend
#
# The Taylor coefficients $c_k = y^{(k)}(t_0)/k!$ from Taylor arithmetic (`"taylor_mode"`, what `"auto"`
# picks), nested JVPs (`"autodiff"`), SymPy (`"symbolic"`) and from **your own derivatives**
# (`"supplied"`: a function returning $[y'', \dots, y^{(p)}]$; here generated from the SymPy expressions
# with `lambdify`, in exercise 1 written by hand) must agree:

# %%
t_, ys_ = sp.Symbol("t"), sp.symbols("y0 y1")
dd = derive(brusselator, (2,), order=4)
sym = dict(zip(dd.state_symbols, ys_))
higher = [sp.lambdify((t_, ys_), [e.subs(sym) for e in dd.derivative(k)], "math") for k in (2, 3, 4)]


def my_derivatives(t, y, f0, order):
    """[y'', ..., y^(order)] at (t, y), as the "supplied" backend asks (plain derivatives, no factorials)."""
    out = []
    for k in range(2, order + 1):
        out.append(torch.tensor(higher[k - 2](float(t), y.tolist()), dtype=y.dtype))
    return out


coefficients = {b: ts.taylor_coefficients(brusselator, 0.0, y0, 4, backend=b)
                for b in ("auto", "taylor_mode", "autodiff", "symbolic")}
coefficients["supplied"] = ts.taylor_coefficients(brusselator, 0.0, y0, 4, backend="supplied",
                                                  derivatives=my_derivatives)
for b, c in coefficients.items():
    print(f"{b:12s}", " ".join(f"{float(ck[0]):+.6f}" for ck in c))
    for k in range(5):
        assert torch.allclose(c[k], coefficients["symbolic"][k], rtol=1e-12, atol=1e-12), (b, k)

# %% [markdown]
# `my_derivatives` converts the state to Python floats: fine for `"supplied"`, which takes your numbers
# as they are, but the derivative-based backends would reject such an $f$ (`DerivativeLeakError`,
# tutorial 01). Whole solves on a fixed grid, TTM-3 with 100 steps over $[0, 5]$: the Taylor backends give
# the same method, the `"finite_difference"` backend gives Adams-Bashforth-3 (tutorial 01, section 5),
# a different and less accurate method.

# %%
grid = torch.linspace(0.0, 5.0, 101)
reference = solve_ivp(lambda t, y: brusselator(t, torch.tensor(y)).numpy(), (0.0, 5.0), y0.tolist(),
                      method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
ends = {}
for b in ("auto", "taylor_mode", "autodiff", "symbolic", "supplied", "finite_difference"):
    options = {"derivatives": my_derivatives} if b == "supplied" else {}
    ends[b] = ts.solve(brusselator, y0, grid, order=3, backend=b, backend_options=options).ys[-1]
    print(f"{b:18s} y(5) = {ends[b].numpy()}   error {np.abs(ends[b].numpy() - reference).max():.1e}")
for b in ("auto", "taylor_mode", "autodiff", "supplied"):
    assert torch.allclose(ends[b], ends["symbolic"], rtol=1e-12, atol=1e-12), b
assert np.abs(ends["symbolic"].numpy() - reference).max() < 1e-5
assert np.abs(ends["finite_difference"].numpy() - reference).max() > np.abs(ends["symbolic"].numpy() - reference).max()

# %% [markdown]
# ### 4. The order, property-tested with hypothesis
#
# "TTM-p has order p" is a claim about *every* smooth problem, so let hypothesis pick the problems: random
# $A$, $B$ and start state, and for each of them the orders $p = 1, \dots, 4$. One step of TTM-p misses the
# $h^{p+1}$ term, so its error against an accurate solution (SciPy's DOP853 at `rtol=1e-13`) must fall at
# least like $h^{p+1}$. The step sizes are scaled to the problem: $h = \rho/20, \rho/40, \rho/80$ with
# $\rho = \min_k |c_k|^{-1/k}$, an estimate of the Taylor series' radius of convergence (tutorial 01,
# section 6). The slope can exceed $p + 1$ only where the $h^{p+1}$ coefficient happens to vanish, so the
# property is "slope $\geq p + 1$" (up to 0.3). Settings: 10 problems, a fixed seed, no example database.

# %%
def make_brusselator(a, b):
    def f(t, y):
        x, v = y[..., 0], y[..., 1]
        return tm.stack([a + x * x * v - (b + 1) * x, b * x - x * x * v], dim=-1)
    return f


def one_step_slope(f, start, p):
    """Log-log slope of the error of one TTM-p step against the step size."""
    c = ts.taylor_coefficients(f, 0.0, start, p + 2)
    rho = min(float(ck.abs().max()) ** (-1 / k) for k, ck in enumerate(c) if k >= 1 and float(ck.abs().max()) > 0)
    hs = [rho / 20, rho / 40, rho / 80]
    errors = []
    for h in hs:
        exact = solve_ivp(lambda t, y: f(t, torch.tensor(y)).numpy(), (0.0, h), start.tolist(), method="DOP853",
                          rtol=1e-13, atol=1e-15).y[:, -1]
        one_step = ts.solve(f, start, torch.tensor([0.0, h]), order=p).ys[-1].numpy()
        errors.append(float(np.abs(one_step - exact).max()))
    return fit_order(hs, errors)


slopes = []


@settings(max_examples=10, derandomize=True, database=None, deadline=None)
@given(a=st.floats(0.5, 2.0), b=st.floats(1.0, 4.0), x=st.floats(0.2, 3.0), v=st.floats(0.2, 4.0))
def test_one_step_order(a, b, x, v):
    f, start = make_brusselator(a, b), torch.tensor([x, v])
    for p in (1, 2, 3, 4):
        slope = one_step_slope(f, start, p)
        slopes.append((p, slope))
        assert slope > p + 1 - 0.3, (p, slope)


test_one_step_order()
for p in range(1, 5):
    found = [s for q, s in slopes if q == p]
    print(f"p = {p}: {len(found):2d} problems, one-step slopes {min(found):.2f} .. {max(found):.2f}")
assert len(slopes) >= 40

# %% [markdown]
# ### 5. Adaptive steps and dense output, against SciPy
#
# `ts.solve(f, y0, t_span=...)` picks the order from the tolerance and every step from the Taylor
# coefficients (tutorial 01, section 6), and compiles the stepping loop for a small right-hand side like
# this one. The solution is callable between the steps. We compare it with SciPy's DOP853 at a tighter
# tolerance on 2,001 points of four oscillation periods:

# %%
sol = ts.solve(brusselator, y0, t_span=(0.0, 25.0), rtol=1e-12, atol=1e-12)
print(f"order {sol.stats.order}, {sol.stats.steps} steps, compiled: {sol.stats.compiled}")
scipy_sol = solve_ivp(lambda t, y: brusselator(t, torch.tensor(y)).numpy(), (0.0, 25.0), y0.tolist(),
                      method="DOP853", rtol=1e-13, atol=1e-13, dense_output=True)
print(f"SciPy DOP853 at 1e-13: {scipy_sol.t.size - 1} steps, {scipy_sol.nfev} evaluations of f")
tq = np.linspace(0.0, 25.0, 2001)
ours = sol(torch.tensor(tq)).numpy()
theirs = scipy_sol.sol(tq).T
gap = np.abs(ours - theirs).max(axis=1)
print(f"largest difference of the dense outputs: {gap.max():.1e}")
assert gap.max() < 1e-9

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
axes[0].plot(ours[:, 0], ours[:, 1], lw=1)
axes[0].plot(sol.ys[:, 0], sol.ys[:, 1], ".", ms=3, label=f"{sol.stats.steps} steps")
axes[0].plot([A], [B / A], "k+", ms=10, label="fixed point (A, B/A)")
axes[0].set_xlabel("x")
axes[0].set_ylabel("y")
axes[0].set_title("phase plane: onto the limit cycle")
axes[0].legend(fontsize=8)
axes[1].plot(tq, ours[:, 0], label="x")
axes[1].plot(tq, ours[:, 1], label="y")
axes[1].set_xlabel("t")
axes[1].set_ylabel("concentration")
axes[1].legend()
axes[2].semilogy(tq, np.maximum(gap, 1e-17))
axes[2].set_xlabel("t")
axes[2].set_ylabel("|taylorsolve - DOP853|")
axes[2].set_title("dense outputs, max over x and y")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 6. A problem the explicit Taylor method should not be used for
#
# Robertson's chemical kinetics has reaction rates from $0.04$ to $3\cdot 10^7$: it is **stiff**. Any
# explicit method, Taylor's included, must keep steps tiny for *stability* long after the fast reactions
# have settled. The solver notices that its steps stopped being limited by accuracy and says so (a
# `ts.StiffnessError`, naming an implicit method); SciPy's Radau is the right tool here.

# %%
def robertson(t, y):
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    return tm.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], dim=-1)


try:
    ts.solve(robertson, torch.tensor([1.0, 0.0, 0.0]), t_span=(0.0, 100.0), max_steps=5000)
    raise AssertionError("expected a StiffnessError")
except ts.StiffnessError as err:
    message = str(err)
    print(message)
    assert "stiff" in message and "Radau" in message
radau = solve_ivp(lambda t, y: robertson(t, torch.tensor(y)).numpy(), (0.0, 100.0), [1.0, 0.0, 0.0], method="Radau",
                  rtol=1e-8, atol=1e-10)
print(f"Radau: {radau.t.size - 1} steps to t = 100, y(100) = {radau.y[:, -1]}")
assert radau.success and radau.t.size < 500

# %% [markdown]
# ## Part 2: your own diffusion model
#
# `sample()` needs three things from you: a **network** (any callable `net(x, t)`), the **process** it was
# trained for (schedule, prior, coordinates) and the **parameterization** of its output (eps, x0, v,
# score or an EDM denoiser). `DiffusionModel` declares them once; the model boundary then converts times,
# shapes and dtypes, counts evaluations and checks the output, whatever the sampler.
#
# ### 7. Your own schedule
#
# A schedule is a pair $(\alpha_t, \sigma_t)$. Here: the log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$ falls
# linearly from $5$ at $t = 0$ to $-6$ at $t = 1$, variance preserving, so $\alpha_t^2 = \operatorname{sigmoid}(2\lambda_t)$ and
# $\sigma_t^2 = \operatorname{sigmoid}(-2\lambda_t)$. `CustomSchedule` takes the two functions (written in torch, so
# everything the samplers need, $\gamma_t$, its inverse and $dt/d\gamma$, follows by autodiff and a
# root finder) and checks them; `ScalarProcess` turns it into a process with the prior $\mathcal{N}(0, I)$.

# %%
LAMBDA_0, LAMBDA_1 = 5.0, -6.0


def log_snr(t):
    return LAMBDA_0 + (LAMBDA_1 - LAMBDA_0) * t


my_schedule = CustomSchedule(lambda t: torch.sigmoid(2 * log_snr(t)).sqrt(),
                             lambda t: torch.sigmoid(-2 * log_snr(t)).sqrt(), name="linear log-SNR")
my_process = ScalarProcess(my_schedule, name="vp-linear-log-snr")
print(my_schedule, "| prior std", my_process.prior_std)
t_check = torch.tensor([0.1, 0.5, 0.9])
assert torch.allclose(my_schedule.log_snr(t_check), log_snr(t_check), rtol=1e-12)
assert my_schedule.variance_preserving

# %% [markdown]
# ### 8. Your own data and your own eps-network
#
# The data: two interleaved half-moons. The network: an MLP with a sinusoidal embedding of $\lambda_t$.
# Training is denoising score matching (eq. (7)) written out: draw $x_0$, $t$ and noise, form
# $x_t = \alpha_t x_0 + \sigma_t \epsilon$, regress the network's output on $\epsilon$. 8,000 Adam steps, about ten
# seconds on a CPU core.

# %%
def two_moons(n, generator):
    s = torch.rand(n, generator=generator) * math.pi
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(s), 1 - torch.cos(s)) - 0.5
    y = torch.where(upper, torch.sin(s), 0.5 - torch.sin(s)) - 0.25
    return torch.stack([x, y], dim=-1) + 0.05 * torch.randn(n, 2, generator=generator)


class EpsNet(torch.nn.Module):
    def __init__(self, hidden=128):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, 3.0, 8)))
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 + 16, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 2))

    def forward(self, x, t):                       # x [B, 2], t [B] (what an nn.Module gets from sample())
        angle = log_snr(t.to(x.dtype))[:, None] / 6 * self.freqs
        return self.mlp(torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=-1))


net = EpsNet().float()
opt = torch.optim.Adam(net.parameters(), lr=2e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8000, eta_min=1e-4)
gen = torch.Generator().manual_seed(0)
losses = []
for step in range(8000):
    x0 = two_moons(256, gen).float()
    t = 1e-3 + (1 - 1e-3) * torch.rand(256, generator=gen, dtype=torch.float64)
    noise = torch.randn(256, 2, generator=gen).float()
    xt = my_schedule.alpha(t).float()[:, None] * x0 + my_schedule.sigma(t).float()[:, None] * noise
    loss = ((net(xt, t.float()) - noise) ** 2).sum(-1).mean()       # eq. (7)
    opt.zero_grad()
    loss.backward()
    opt.step()
    scheduler.step()
    losses.append(loss.item())
net.eval()
print(f"DSM loss {np.mean(losses[:100]):.3f} -> {np.mean(losses[-500:]):.3f}")
assert np.mean(losses[-500:]) < 0.8 * np.mean(losses[:100])

# %% [markdown]
# Declare it once: an eps-prediction network trained for `my_process`. Because it is a `torch.nn.Module`,
# the boundary calls it with a `[B]` vector of times in its own dtype (float32) while the solver state
# stays float64. Then every registered sampler works with it, at any NFE budget; GENIE's derivative comes
# from a JVP through the MLP:

# %%
my_model = DiffusionModel(net, parameterization="eps", process=my_process, name="two-moons MLP")
print(my_model)
x1 = my_process.prior_sample((2000, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
data = two_moons(4000, torch.Generator().manual_seed(2))
floor = sliced_wasserstein(two_moons(2000, torch.Generator().manual_seed(3)), data)
runs = {}
for method in ("ddim", "genie", "dpm-solver++2m", "unipc"):
    for nfe in (10, 20):
        runs[method, nfe] = sample(my_model, x1, nfe=nfe, method=method, grid="logsnr", denoise=True)
        assert runs[method, nfe].stats.nfe <= nfe
w2 = {key: sliced_wasserstein(r.x, data) for key, r in runs.items()}
for (method, nfe), r in runs.items():
    print(f"{method:15s} NFE {nfe}: {r.stats.steps:2d} steps, sliced W2 to the data {w2[method, nfe]:.3f}")
print(f"(two sets of data samples: {floor:.3f})")

fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), sharex=True, sharey=True)
axes[0].scatter(data[:2000, 0], data[:2000, 1], s=1, c="k")
axes[0].set_title("data")
for ax, key in zip(axes[1:], (("ddim", 10), ("unipc", 10), ("ddim", 20))):
    ax.scatter(runs[key].x[:, 0], runs[key].x[:, 1], s=1)
    ax.set_title(f"{key[0]}, NFE {key[1]}: sliced W2 {w2[key]:.3f}")
for ax in axes:
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
axes[0].set_ylabel("$x_2$")
plt.tight_layout()
plt.show()
assert w2["unipc", 20] < 3 * floor + 0.05 and w2["ddim", 20] < w2["ddim", 10]

# %% [markdown]
# At NFE 10 the multistep methods (DPM-Solver++(2M), UniPC) come close to the measure's noise floor
# while DDIM does not; GENIE with autodiff spends half its budget on JVPs (tutorial 02, section 7). With
# 20 evaluations the model itself, not the solver, limits DDIM, DPM-Solver++ and UniPC.
#
# ### 9. A discrete-timestep network: a diffusers `UNet2DModel`
#
# Most released models are trained on integer timesteps $n = 0, \dots, N-1$ of an `alphas_cumprod` table.
# `from_diffusers(unet, scheduler)` declares such a model: its process is `vp_discrete(alphas_cumprod)`
# (timestep $n$ sits at $t = (n+1)/N$, with DPM-Solver's interpolation in between), it is called as
# `unet(x, timestep).sample`, and the scheduler's `prediction_type` sets the parameterization. A tiny,
# randomly initialised `UNet2DModel` (nothing downloaded; its "images" are noise) shows the plumbing:
# `sample(..., method="ddim", grid=scheduler.timesteps, denoise=True)` is diffusers' own DDIM loop, to
# float32 round-off.

# %%
torch.manual_seed(0)
unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                             block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).float().eval()
ddim_scheduler = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
ddim_scheduler.set_timesteps(10)
noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float32)

x = noise.clone()
with torch.no_grad():                                   # diffusers' loop
    for n in ddim_scheduler.timesteps:
        x = ddim_scheduler.step(unet(x, n).sample, n, x, eta=0.0).prev_sample

unet_model = from_diffusers(unet, ddim_scheduler)
ours = sample(unet_model, noise, method="ddim", grid=ddim_scheduler.timesteps, denoise=True)
print(unet_model)
print("timesteps", ddim_scheduler.timesteps.tolist(), "-> times", unet_model.process.schedule.t_of_timestep(
    ddim_scheduler.timesteps.double()).numpy().round(3).tolist())
difference = float((ours.x - x).abs().max())
tolerance = 50 * torch.finfo(torch.float32).eps * float(x.abs().max())
print(f"max |taylorsolve - diffusers| = {difference:.1e} (float32 round-off scale {tolerance:.1e})")
assert ours.x.dtype == torch.float32 and difference < tolerance
genie = sample(unet_model, noise, nfe=10, method="genie")      # one JVP per step through the U-Net
print(f"GENIE through the U-Net: {genie.stats.steps} steps, {genie.stats.nfe} evaluations + {genie.stats.jvp_passes} JVPs")
assert genie.stats.nfe + genie.stats.jvp_passes <= 10

# %% [markdown]
# ### 10. Your own sampler
#
# A sampler is a `Sampler` subclass registered with `@register`: it declares its name, order, the
# coordinates it steps in (`"ddim"`: state $\bar{x}$, time $\gamma$, right-hand side $\epsilon$, eq. (6)) and
# the evaluations per step, and implements one `step`. Everything else (grids, NFE budgets, the
# analytical first step, denoising, counting, checks, any model) comes from the loop. Here Ralston's
# second-order Runge-Kutta method: $k_1 = \epsilon(\bar{x}, \gamma)$,
# $k_2 = \epsilon(\bar{x} + \frac23 h k_1, \gamma + \frac23 h)$, $\bar{x}' = \bar{x} + h(\frac14 k_1 + \frac34 k_2)$.
# (Registering a name twice is an error: to change the class, restart the kernel.)

# %%
@registry.register
class Ralston(registry.Sampler):
    name = "ralston"
    summary = "Ralston's 2nd-order Runge-Kutta on the DDIM ODE (2 evaluations per step)"
    coordinates = "ddim"
    orders = (2,)
    nfe_rule = "2 steps"

    def nfe(self, steps):
        return 2 * steps

    def step(self, ctx, n, y, eps0=None):
        s, s_next = ctx.s[n], ctx.s[n + 1]
        h = ctx.c(s_next - s, y)                                # the step in gamma, in y's dtype
        k1 = ctx.eps_node(y, n) if eps0 is None else eps0       # eps0: the analytical first step's value
        k2 = ctx.eps(y + 2 / 3 * h * k1, s + 2 / 3 * (s_next - s))
        return y + h * (k1 / 4 + 3 * k2 / 4)


print(registry.sampler_table().splitlines()[-1])
assert "ralston" in registry.available_methods()

# %% [markdown]
# It is now a method like any other. Its order, measured on the Gaussian data of tutorial 02 (exact
# solution known), should be 2; and it runs on your model with an NFE budget:

# %%
M, S = torch.tensor([1.0, -0.5]), 0.5
lin = LinearVPSchedule()


def gaussian_eps(x, t):                      # exact eps of N(M, S^2 I) data, linear VP schedule
    a, s = lin.alpha(t), lin.sigma(t)
    return s * (x - a * M) / (a**2 * S**2 + s**2)


def gaussian_exact(x1):                      # exact solution of the DDIM ODE from t = 1 to 1e-3
    g1, gc = lin.gamma(1.0), lin.gamma(1e-3)
    return (M + (x1 / lin.alpha(1.0) - M) * torch.sqrt((S**2 + gc**2) / (S**2 + g1**2))) * lin.alpha(1e-3)


z = torch.randn(16, 2, generator=torch.Generator().manual_seed(8))
Ns = [10, 20, 40, 80]
ralston_errors = [float((sample(gaussian_eps, z, n, method="ralston").x - gaussian_exact(z)).abs().max()) for n in Ns]
print("Ralston:", " ".join(f"{e:.2e}" for e in ralston_errors), f"| order {fit_order([1 / n for n in Ns], ralston_errors):.2f}")
assert abs(fit_order([1 / n for n in Ns], ralston_errors) - 2) < 0.25
mine = sample(my_model, x1, nfe=20, method="ralston", grid="logsnr", denoise=True)
print(f"on the two-moons model, NFE 20: {mine.stats.steps} steps, sliced W2 {sliced_wasserstein(mine.x, data):.3f}")
assert mine.stats.steps == 9 and mine.stats.nfe == 19

# %% [markdown]
# ## Exercises
#
# Try each one before opening its solution; the solution cells check the answers with `assert`s.
#
# **Exercise 1 (your own derivatives, by hand).** Derive $x''$ and $y''$ of the Brusselator by hand (chain
# rule on $x' = A + x^2 y - (B+1)x$, $y' = Bx - x^2 y$) and use them as the `"supplied"` backend for TTM-2.
# The solve must equal TTM-2 with Taylor arithmetic.
#
# <details><summary>Solution</summary>
#
# $x'' = 2xy\,x' + x^2 y' - (B + 1)\,x'$ and $y'' = B x' - 2xy\,x' - x^2 y'$. (Their sum is $-x'$,
# as the SymPy cell of section 2 showed.)
# </details>

# %%
def second_derivative(t, y, f0, order):
    x, v = y[..., 0], y[..., 1]
    dx, dv = f0[..., 0], f0[..., 1]                   # f0 = f(t, y) = (x', y'), given by the backend
    ddx = 2 * x * v * dx + x * x * dv - (B + 1) * dx
    ddv = B * dx - 2 * x * v * dx - x * x * dv
    return [torch.stack([ddx, ddv], dim=-1)]


by_hand = ts.solve(brusselator, y0, grid, order=2, backend="supplied", backend_options={"derivatives": second_derivative})
by_jets = ts.solve(brusselator, y0, grid, order=2, backend="taylor_mode")
print(f"max difference: {float((by_hand.ys - by_jets.ys).abs().max()):.1e}")
assert torch.allclose(by_hand.ys, by_jets.ys, rtol=1e-12, atol=1e-12)

# %% [markdown]
# **Exercise 2 (a third-order sampler).** Register Kutta's third-order method as `"kutta3"`:
# $k_1 = \epsilon(\bar{x}, \gamma)$, $k_2 = \epsilon(\bar{x} + \frac h2 k_1, \gamma + \frac h2)$,
# $k_3 = \epsilon(\bar{x} - h k_1 + 2h k_2, \gamma + h)$, $\bar{x}' = \bar{x} + \frac h6 (k_1 + 4k_2 + k_3)$.
# Predict its order on the Gaussian data and how many steps it gets for `nfe=12` with `denoise=True`.
#
# <details><summary>Solution</summary>
#
# Order 3 (the order conditions of a three-stage method are met); as for TTM-3 in tutorial 02 the fitted
# slope approaches 3 from below on these grids. Three evaluations per step plus one for denoising:
# $3N + 1 \le 12$ gives $N = 3$.
# </details>

# %%
@registry.register
class Kutta3(registry.Sampler):
    name = "kutta3"
    summary = "Kutta's 3rd-order Runge-Kutta on the DDIM ODE (3 evaluations per step)"
    coordinates = "ddim"
    orders = (3,)
    nfe_rule = "3 steps"

    def nfe(self, steps):
        return 3 * steps

    def step(self, ctx, n, y, eps0=None):
        s, s_next = ctx.s[n], ctx.s[n + 1]
        h = ctx.c(s_next - s, y)
        k1 = ctx.eps_node(y, n) if eps0 is None else eps0
        k2 = ctx.eps(y + h / 2 * k1, s + (s_next - s) / 2)
        k3 = ctx.eps(y - h * k1 + 2 * h * k2, s_next, ctx.t[n + 1])
        return y + h / 6 * (k1 + 4 * k2 + k3)


kutta_errors = [float((sample(gaussian_eps, z, n, method="kutta3").x - gaussian_exact(z)).abs().max()) for n in Ns]
print("Kutta-3:", " ".join(f"{e:.2e}" for e in kutta_errors), f"| fitted order (20-80 steps) {fit_order([1 / n for n in Ns[1:]], kutta_errors[1:]):.2f}")
assert abs(fit_order([1 / n for n in Ns[1:]], kutta_errors[1:]) - 3) < 0.3
budget = sample(gaussian_eps, z, nfe=12, method="kutta3", denoise=True).stats
assert (budget.steps, budget.nfe) == (3, 10)

# %% [markdown]
# **Exercise 3 (your schedule's $dt/d\gamma$).** Samplers step in $\gamma = \sigma/\alpha = e^{-\lambda}$ and need
# $t(\gamma)$ and $dt/d\gamma$. For the linear log-SNR schedule derive both in closed form and compare with
# what the library computes from your two functions (a root finder and autodiff).
#
# <details><summary>Solution</summary>
#
# $\lambda_t = \lambda_0 + (\lambda_1 - \lambda_0)\,t$ and $\gamma = e^{-\lambda}$, so
# $t(\gamma) = \frac{-\ln\gamma - \lambda_0}{\lambda_1 - \lambda_0}$ and
# $\frac{dt}{d\gamma} = \frac{-1}{\gamma(\lambda_1 - \lambda_0)} = \frac{1}{11\gamma}$.
# </details>

# %%
gammas = torch.logspace(-2, 2, 9)
t_closed = (-torch.log(gammas) - LAMBDA_0) / (LAMBDA_1 - LAMBDA_0)
dt_closed = -1 / (gammas * (LAMBDA_1 - LAMBDA_0))
print("max |t(gamma) - closed form|      :", float((my_schedule.t_from_gamma(gammas) - t_closed).abs().max()))
print("max rel |dt/dgamma - closed form| :", float(((my_schedule.dt_dgamma(gammas) - dt_closed) / dt_closed).abs().max()))
assert torch.allclose(my_schedule.t_from_gamma(gammas), t_closed, rtol=1e-10, atol=1e-12)
assert torch.allclose(my_schedule.dt_dgamma(gammas), dt_closed, rtol=1e-8)

# %% [markdown]
# **Exercise 4 (find the oscillation, many parameters in one solve).** For $A = 1$ the fixed point $(1, B)$
# loses stability at $B = 1 + A^2 = 2$. Predict what happens to the oscillation's amplitude for
# $B = 1.5, 1.9, 2.1, 2.5, 3$, then check with *one* batched adaptive solve of `brusselator_ab` (section 2),
# whose state carries $A$ and $B$, from $(x, y) = (1.2, B)$ to $t = 80$.
#
# <details><summary>Solution</summary>
#
# Below $B = 2$ the deviations from the fixed point decay (a stable focus): amplitude near 0 at $t = 80$. Above it
# a limit cycle appears and grows with $B - 2$ (a Hopf bifurcation): small at $B = 2.1$, large at $B = 3$.
# Each batch member takes its own steps (tutorial 01, section 7).
# </details>

# %%
Bs = torch.tensor([1.5, 1.9, 2.1, 2.5, 3.0])
start = torch.stack([torch.full_like(Bs, 1.2), Bs, torch.ones_like(Bs), Bs], dim=-1)
hopf = ts.solve(brusselator_ab, start, t_span=(0.0, 80.0), rtol=1e-10, atol=1e-10)
late = hopf(torch.linspace(70.0, 80.0, 400))[..., 0]            # x over the last 10 time units: [400, 5]
amplitude = (late.max(dim=0).values - late.min(dim=0).values) / 2
for b, amp, steps in zip(Bs.tolist(), amplitude.tolist(), hopf.stats.steps_per_member.tolist()):
    print(f"B = {b:.1f}: amplitude of x after t = 70: {amp:.4f} ({steps} steps)")
assert amplitude[0] < 1e-3 and amplitude[1] < 0.05                  # below the bifurcation: decays
assert 0.05 < amplitude[2] < amplitude[3] < amplitude[4]            # above: a growing limit cycle
