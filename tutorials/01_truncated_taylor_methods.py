# %% [markdown]
# # 01 · Truncated Taylor methods
#
# This notebook walks through the ideas behind `taylorsolve`, from Taylor's formula to an adaptive
# high-order solver:
#
# 1. Taylor's formula and the *p*-th truncated Taylor method (TTM), GENIE paper eq. (8);
# 2. the higher derivatives of an ODE's solution, derived symbolically;
# 3. the same Taylor coefficients from automatic differentiation and from Taylor arithmetic;
# 4. measuring the order of accuracy (a log-log plot of error against step size);
# 5. Adams-Bashforth as a TTM whose derivatives come from finite differences;
# 6. an adaptive Taylor solver on the Kepler problem, with dense output;
# 7. many problems in one call, each with its own steps, and what the solver refuses to do.
#
# Every section ends with `assert`s on the facts it shows, so the notebook fails loudly if the library
# regresses. The exercises at the end have worked solutions, checked the same way. It runs in about
# ten seconds on one CPU core.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
import torch

import taylorsolve as ts
from taylorsolve import math as tm
from taylorsolve.coefficients.symbolic import derive

torch.set_default_dtype(torch.float64)  # numerics: every state below is float64
torch.set_num_threads(1)                # small problems: one thread is fastest (and deterministic)
plt.rcParams["figure.dpi"] = 80         # modest PNGs in the committed notebook
print("taylorsolve", ts.__version__, "| coefficient backends:", ", ".join(ts.available_backends()))

# %% [markdown]
# ## 1. Taylor's formula and the truncated Taylor method
#
# A smooth function can be expanded around $t$:
#
# $$
# y(t+h) = \sum_{k=0}^{p} \frac{h^k}{k!}\, y^{(k)}(t) \;+\; \mathcal{O}(h^{p+1}).
# $$
#
# If $y$ solves the ODE $\dfrac{dy}{dt} = f(t, y)$, then all derivatives of $y$ at $t$ are known
# functions of $(t, y(t))$: $y' = f$, $y'' = \partial_t f + (\nabla_y f)\, f$, and so on. Dropping the
# remainder gives the **p-th truncated Taylor method** (TTM-p, GENIE paper eq. (8)):
#
# $$
# y_{n+1} = y_n + \sum_{k=1}^{p} \frac{h_n^k}{k!}\, \frac{d^k y}{dt^k}\Big|_{(t_n,\, y_n)}
#         = \sum_{k=0}^{p} c_k\, h_n^k, \qquad c_k = \frac{y^{(k)}(t_n)}{k!}.
# $$
#
# TTM-1 is Euler's method. The local error of one step is $\mathcal{O}(h^{p+1})$, so after
# $N = T/h$ steps the global error is $\mathcal{O}(h^p)$.
#
# `ts.taylor_coefficients(f, t0, y0, p)` returns $[c_0, \dots, c_p]$. For $y' = y$, $y(0)=1$ we know
# $y = e^t$, so $c_k = 1/k!$:

# %%
def growth(t, y):
    return y

c = ts.taylor_coefficients(growth, 0.0, torch.tensor(1.0), order=6)
print([round(float(ck), 6) for ck in c])
assert all(abs(float(ck) - 1 / math.factorial(k)) < 1e-14 for k, ck in enumerate(c))

# one TTM step of each order from t = 0 to h = 0.5, against the exact e^{0.5}
h = 0.5
for p in range(1, 7):
    step = sum(float(c[k]) * h**k for k in range(p + 1))
    print(f"TTM-{p}: y(0.5) ~ {step:.8f}   error {abs(step - math.exp(h)):.2e}")

# %% [markdown]
# The error of TTM-p is about the first term left out, $\frac{h^{p+1}}{(p+1)!}$ here, so each extra
# order multiplies it by about $h/(p+2)$.
#
# ## 2. The derivatives, symbolically
#
# For a small ODE we can let SymPy do the differentiation. The *Lie derivative* along the vector field
# turns $y^{(k)}$ into $y^{(k+1)}$:
#
# $$
# y^{(k+1)} = \frac{\partial y^{(k)}}{\partial t} + \big(\nabla_y\, y^{(k)}\big)\, f(t, y).
# $$
#
# Take the pendulum, $\theta'' = -\sin\theta$, as a first-order system $y = (\theta, \omega)$,
# $f(t, y) = (\omega, -\sin\theta)$. The right-hand side is written once with `taylorsolve.math`
# (`tm.sin`, `tm.stack`): the same function runs on SymPy symbols, on torch tensors and on Taylor-mode
# jets. `derive` calls it with symbols $y_0 = \theta$, $y_1 = \omega$:

# %%
def pendulum(t, y):
    return tm.stack([y[..., 1], -tm.sin(y[..., 0])], dim=-1)

d = derive(pendulum, (2,), order=4)
print(d)
d  # rendered as LaTeX

# %%
th, om = d.state_symbols
# y'' = d/dt (omega, -sin theta) = (-sin theta, -omega cos theta)
assert sp.simplify(d.derivative(2)[0] - (-sp.sin(th))) == 0
assert sp.simplify(d.derivative(2)[1] - (-om * sp.cos(th))) == 0
# y''' of theta is the second component of y''
assert sp.simplify(d.derivative(3)[0] - d.derivative(2)[1]) == 0
print("expression size per order (sympy.count_ops):", d.operation_counts)

# %% [markdown]
# The expressions grow quickly with the order ("expression swell"), which is why the symbolic backend
# is meant for small systems and moderate orders. The backend applies `sympy.cse` and compiles
# everything to one torch function with `lambdify`.
#
# ## 3. The same coefficients by automatic differentiation and by Taylor arithmetic
#
# Along the solution, $g(s) = f(t+s,\, y(t+s))$, and $y^{(k+1)}(t) = g^{(k)}(0)$. Two ways to get
# $g^{(k)}(0)$ without SymPy:
#
# * `"autodiff"`: $k$ nested forward-mode JVPs (`torch.func.jvp`) of
#   $s \mapsto f(t+s, \sum_{j\le k} c_j s^j)$. For $k=1$ this is the total derivative
#   $\partial_t f + (\nabla_y f)\, f$ of GENIE eq. (12). Each nesting roughly triples the cost.
# * `"taylor_mode"`: run $f$ once on truncated power series ("jets"): every operation ($+$, $\times$,
#   $\sin$, ...) has a recurrence for the coefficients of its result, so $c_{k+1} = [f(t, y(t))]_k/(k+1)$
#   comes out of one sweep, at a cost $\mathcal{O}(p^2)$.
#
# The default, `backend="auto"`, is `"taylor_mode"` (and falls back to `"autodiff"`, with a warning,
# when $f$ calls a function the jets do not know). All of them must agree, here on a batch of three
# pendulum states:

# %%
y0 = torch.tensor([[1.0, 0.0], [0.3, -0.5], [2.5, 1.0]])   # batch of 3 states (theta, omega)
order = 5
coeffs = {b: ts.taylor_coefficients(pendulum, 0.0, y0, order, backend=b)
          for b in ("symbolic", "autodiff", "taylor_mode", "auto")}
for k in range(order + 1):
    print(f"c_{k} (first state):", [f"{float(coeffs[b][k][0, 0]):+.6f}" for b in coeffs])

for b in ("autodiff", "taylor_mode", "auto"):
    for k in range(order + 1):
        assert torch.allclose(coeffs[b][k], coeffs["symbolic"][k], rtol=1e-12, atol=1e-12), (b, k)
print("symbolic, autodiff, taylor_mode and auto agree to 1e-12")

# %% [markdown]
# ## 4. Observed order of accuracy
#
# Theory says the global error of TTM-p behaves like $C h^p$, i.e. a straight line of slope $p$ on a
# log-log plot. We check this on the logistic equation $y' = y(1-y)$, whose exact solution is
# $y(t) = 1 / (1 + (1/y_0 - 1)\, e^{-t})$. `ts.empirical_order` solves on grids of $N$ steps,
# measures the error at the final time (and of a single step), and fits the slopes.

# %%
def logistic(t, y):
    return y * (1 - y)

y0_log = torch.tensor([0.1])
T = 2.0

def exact_logistic(t):
    return 1 / (1 + (1 / y0_log - 1) * torch.exp(-torch.as_tensor(t)))

steps = (16, 32, 64, 128)
results = {}
for p in range(1, 5):
    results[p] = ts.empirical_order(logistic, y0_log, (0.0, T), exact_logistic, steps=steps,
                                    order=p, backend="symbolic")
    r = results[p]
    print(f"TTM-{p}: global order {r.global_order:.2f}, local order {r.local_order:.2f}")

fig, ax = plt.subplots(figsize=(5.5, 4))
for p, r in results.items():
    ax.loglog(r.step_sizes, r.global_errors, "o-", label=f"TTM-{p} (slope {r.global_order:.2f})")
    h = np.array(r.step_sizes)
    ax.loglog(h, r.global_errors[-1] * (h / h[-1]) ** p, "k:", lw=0.8)
ax.set_xlabel("step size h")
ax.set_ylabel("global error at t = 2")
ax.set_title("Logistic equation: error ~ h^p (dotted: exact slope p)")
ax.legend()
plt.show()

for p, r in results.items():
    assert abs(r.global_order - p) < 0.3, (p, r.global_order)
    assert abs(r.local_order - (p + 1)) < 0.3, (p, r.local_order)

# %% [markdown]
# ## 5. Adams-Bashforth: a TTM with finite-difference derivatives
#
# A multistep method needs no derivatives of $f$ at all: it keeps the last $p$ values
# $f_{n}, f_{n-1}, \dots, f_{n-p+1}$, fits the polynomial $P$ through them and uses $P^{(i)}(t_n)$ in
# place of $y^{(i+1)}(t_n)$. The TTM step with these coefficients integrates $P$ exactly,
#
# $$
# y_{n+1} = y_n + \int_{t_n}^{t_{n+1}} P(s)\, ds,
# $$
#
# which *is* the $p$-step Adams-Bashforth method (the equivalence noted in the GENIE paper, sec. 3). With
# $p = 2$ on a uniform grid: $y_{n+1} = y_n + h\,(\tfrac32 f_n - \tfrac12 f_{n-1})$. The
# `"finite_difference"` backend builds these coefficients; we compare it with a hand-written AB2
# (started by one Euler step):

# %%
grid = torch.linspace(0.0, T, 21)
h = float(grid[1] - grid[0])
sol_fd = ts.solve(logistic, y0_log, grid, order=2, backend="finite_difference")

ys, fs = [y0_log], []
for n in range(len(grid) - 1):
    fs.append(logistic(grid[n], ys[-1]))
    if n == 0:
        ys.append(ys[-1] + h * fs[-1])                          # Euler warm-up
    else:
        ys.append(ys[-1] + h * (1.5 * fs[-1] - 0.5 * fs[-2]))   # AB2
ab2 = torch.stack(ys)
print("max |finite_difference TTM-2 - hand-written AB2| =", float((sol_fd.ys - ab2).abs().max()))
assert torch.allclose(sol_fd.ys, ab2, rtol=0, atol=1e-14)

# %% [markdown]
# While fewer than $p$ past values exist the method has to start somehow. By default it warms up with
# lower orders (Euler, then AB2, ...); the Euler step's $\mathcal{O}(h^2)$ local error then caps the
# global order at 2. With `starter=` another backend supplies the full-order Taylor coefficients for
# the first $p-1$ steps (like the Runge-Kutta warm-up of PNDM), and AB-p keeps its order $p$:

# %%
ab = {}
for p in range(1, 5):
    ab[p] = ts.empirical_order(logistic, y0_log, (0.0, T), exact_logistic, steps=steps, order=p,
                               backend="finite_difference",
                               backend_options={"starter": "taylor_mode"}, local=False)
    print(f"AB-{p} (Taylor starter): global order {ab[p].global_order:.2f}")
ab3_plain = ts.empirical_order(logistic, y0_log, (0.0, T), exact_logistic, steps=steps, order=3,
                               backend="finite_difference", local=False)
print(f"AB-3 (low-order warm-up): global order {ab3_plain.global_order:.2f}")

for p, r in ab.items():
    assert abs(r.global_order - p) < 0.3, (p, r.global_order)
assert ab3_plain.global_order < 2.5

# %% [markdown]
# ## 6. Adaptive high-order Taylor integration: the Kepler problem
#
# High orders pay off when the steps are chosen adaptively. Every step already has the coefficients
# $c_0, \dots, c_p$ of its Taylor polynomial, and they tell how far the polynomial can be trusted:
# the series $\sum_k c_k h^k$ converges for $h$ below a radius $\rho$, which the last two coefficients
# estimate as $\rho \approx \min_{m \in \{p-1,\, p\}} (s / \|c_m\|_\infty)^{1/m}$ with
# $s = \max(1, \|y_n\|_\infty)$. With `order="auto"` (the default for adaptive solves), `taylorsolve`
# uses the rule of the Taylor integrator heyoka:
#
# $$
# p = \left\lceil -\tfrac12 \ln \text{tol} \right\rceil + 1, \qquad
# h = \rho\, e^{-2}\, e^{-0.7/(p-1)}, \qquad \text{tol} = \min(\text{rtol}, \text{atol}).
# $$
#
# Then the last kept term $\|c_p\| h^p \le s\, e^{-2p} \approx s \cdot \text{tol}$: the tolerance
# picks the **order**, and the step is a fixed fraction of the radius of convergence. Every step is
# accepted (there is no trial-and-reject as in Runge-Kutta pairs). With an explicit `order=p`, the
# step comes from the tolerances instead (the Jorba-Zou rule, `h = e^{-0.7/(p-1)} min_m (eps/||c_m||)^{1/m}`).
#
# The Kepler problem $q'' = -q/|q|^3$ with eccentricity 0.5 starts at perihelion; the orbit has period
# $2\pi$ and conserves the energy $H = |p|^2/2 - 1/|q|$. Because every step keeps its Taylor polynomial,
# the solution can be evaluated at any time for free (dense output: `sol(t)`).

# %%
def kepler(t, y):
    q0, q1, p0, p1 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    inv_r3 = (q0 * q0 + q1 * q1) ** -1.5
    return tm.stack([p0, p1, -q0 * inv_r3, -q1 * inv_r3], dim=-1)

def energy(y):
    return 0.5 * (y[..., 2] ** 2 + y[..., 3] ** 2) - 1 / torch.sqrt(y[..., 0] ** 2 + y[..., 1] ** 2)

def perihelion_state(e):
    """Start at perihelion of an orbit with eccentricity e (semi-major axis 1, period 2 pi)."""
    e = torch.as_tensor(e)
    return torch.stack([1 - e, 0 * e, 0 * e, torch.sqrt((1 + e) / (1 - e))], dim=-1)

y0_kep = perihelion_state(0.5)
t1 = 2 * 2 * math.pi                                        # two orbits
sol = ts.solve(kepler, y0_kep, t_span=(0.0, t1), rtol=1e-10, atol=1e-10)
s = sol.stats
print(f"order {s.order}, {s.steps} steps, backend {s.backend!r}, compiled: {s.compiled}")
end_error = float((sol.ys[-1] - y0_kep).abs().max())
print(f"error after two periods: {end_error:.2e}")

# %% [markdown]
# `compiled: True` means the fast path ran: `taylor_mode` traced `kepler` once into a list of scalar
# operations, generated straight-line numba code for its Taylor coefficients and ran the whole stepping
# loop compiled (about a microsecond per step instead of about a millisecond). The first solve of a new
# right-hand side pays a compilation of about a second (`sol.stats.compile_time`), cached in memory and
# on disk. Where `f` cannot be traced (a Python `if` on the state, for example) the interpreted jets
# run and `sol.stats.notes` says why. The README's benchmark tables compare this with SciPy's DOP853
# and with heyoka.

# %%
tq = torch.linspace(0.0, t1, 600)
yq = sol(tq)                       # dense output: the step polynomials evaluated between the steps
dE = (energy(yq) - energy(y0_kep)).abs()

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ax1.plot(yq[:, 0], yq[:, 1], lw=1, label="dense output")
ax1.plot(sol.ys[:, 0], sol.ys[:, 1], ".", ms=4, label=f"{s.steps} steps")
ax1.plot([0], [0], "k*", ms=10)
ax1.set_aspect("equal")
ax1.set_xlabel("$q_0$")
ax1.set_ylabel("$q_1$")
ax1.set_title("Kepler orbit, e = 0.5")
ax1.legend(loc="lower left")
ax2.semilogy(tq, dE.clamp_min(1e-17))
ax2.set_xlabel("t")
ax2.set_ylabel("|H(t) - H(0)|")
ax2.set_title("energy error along the dense output")
plt.tight_layout()
plt.show()

assert s.order == 13                          # ceil(-ln(1e-10) / 2) + 1
assert end_error < 1e-7, end_error
assert float(dE.max()) < 1e-9, float(dE.max())
# the time steps are shortest at perihelion, where the motion is fastest
h_steps = torch.diff(sol.t)[:-1]                 # the last step is cut to land on t1
r_start = sol.ys[:-2, :2].norm(dim=-1)           # distance from the sun at the start of each step
print(f"step sizes: {float(h_steps.min()):.3f} (at r = {float(r_start[h_steps.argmin()]):.2f}) "
      f"to {float(h_steps.max()):.3f} (at r = {float(r_start[h_steps.argmax()]):.2f})")
assert float(h_steps.max()) > 3 * float(h_steps.min())
assert float(r_start[h_steps.argmin()]) < float(r_start[h_steps.argmax()])

# %% [markdown]
# The time steps are short near perihelion (fast motion, large coefficients, small radius of
# convergence) and long near aphelion, so in space the steps are spread fairly evenly along the orbit.
#
# ## 7. Many problems in one call, and what the solver refuses
#
# Leading dimensions of `y0` are independent problems. An adaptive solve gives **each member its own
# steps** (`batch_steps="per_trajectory"`, the default): a circular orbit needs far fewer steps than an
# eccentric one, and nobody waits for the slowest. `sol.t` then has one column of times per member
# (`[S + 1, batch]`; a member that finished early repeats its last time and state). The batch gives
# every member exactly the steps, and the end state, it gets when solved alone:

# %%
eccentricities = torch.tensor([0.0, 0.3, 0.5, 0.7, 0.9])
orbits = ts.solve(kepler, perihelion_state(eccentricities), t_span=(0.0, t1), rtol=1e-10, atol=1e-10)
per_member = orbits.stats.steps_per_member
print("steps per member:", per_member.tolist(), "| sol.t shape:", tuple(orbits.t.shape))
shared = ts.solve(kepler, perihelion_state(eccentricities), t_span=(0.0, t1), rtol=1e-10, atol=1e-10,
                  batch_steps="shared")
print("one shared step sequence instead:", shared.stats.steps, "steps for everyone")

for i, e in enumerate(eccentricities):
    alone = ts.solve(kepler, perihelion_state(e), t_span=(0.0, t1), rtol=1e-10, atol=1e-10)
    assert alone.stats.steps == int(per_member[i])
    assert torch.equal(alone.ys[-1], orbits.ys[-1, i])          # bit for bit
assert bool((torch.diff(per_member) > 0).all())                  # more eccentric, more steps
assert shared.stats.steps >= int(per_member.max())

fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.plot(eccentricities, per_member, "o-")
ax.set_xlabel("eccentricity e")
ax.set_ylabel("steps for two orbits")
ax.set_title("per-trajectory steps, tol 1e-10")
plt.show()

# %% [markdown]
# The derivative-based backends need $f$ written with torch operations on `y`: `float(y[0])`,
# `y.detach()`, `y.tolist()` or a detour through NumPy would silently drop the derivatives, so every
# Taylor coefficient above $c_1$ would be wrong. The solver catches this at the first evaluation and
# names the operation (`ts.DerivativeLeakError`, a `ts.TaylorSolveError` like every error it raises):

# %%
def leaky(t, y):
    return -y * float(y[0])          # float() cuts y[0] out of the derivative chain

try:
    ts.solve(leaky, torch.tensor([1.0, 2.0]), t_span=(0.0, 1.0))
    raise AssertionError("expected a DerivativeLeakError")
except ts.DerivativeLeakError as err:
    print(f"{type(err).__name__}: {str(err)[:150]}...")
    assert "float()" in str(err)

# %% [markdown]
# **Summary.** A TTM needs the Taylor coefficients $c_k = y^{(k)}/k!$ of the solution; `taylorsolve`
# gets them symbolically (small systems, printable), by Taylor-mode arithmetic (the default, compiled for
# adaptive solves), by nested forward-mode AD (any torch function, low orders) or from finite
# differences of past $f$ values (Adams-Bashforth). The coefficients also choose the step. Tutorial 02
# applies TTMs to the ODE of a diffusion model (GENIE); tutorial 06 puts your own ODE through all of
# this.
#
# ## Exercises
#
# Try each one before opening its solution. The solution cells check the answers with `assert`s.
#
# **Exercise 1 (predict a slope).** Apply TTM-5 (`backend="taylor_mode"`) to the logistic equation on
# grids of 8, 16, 32, 64 steps. Before running it: which global and which local (one-step) order do you
# expect?
#
# <details><summary>Solution</summary>
#
# The global error of TTM-p is $\mathcal{O}(h^p)$ and the error of one step $\mathcal{O}(h^{p+1})$:
# expect slopes 5 and 6. (With 128 steps the global error reaches $4\cdot 10^{-13}$, near
# round-off for this problem, which is why the coarser grids are used.)
# </details>

# %%
r5 = ts.empirical_order(logistic, y0_log, (0.0, T), exact_logistic, steps=(8, 16, 32, 64), order=5,
                        backend="taylor_mode")
print(f"TTM-5: global order {r5.global_order:.2f}, local order {r5.local_order:.2f}")
assert abs(r5.global_order - 5) < 0.3 and abs(r5.local_order - 6) < 0.3

# %% [markdown]
# **Exercise 2 (derive the third-order term).** For the logistic equation $y' = y(1-y)$ derive
# $y''$ and $y'''$ as functions of $y$ by hand, and from them the Taylor coefficient $c_3 = y'''/3!$.
# Check your formula at $y_0 = 0.1$ against `ts.taylor_coefficients` and against SymPy.
#
# <details><summary>Solution</summary>
#
# $f$ does not depend on $t$, so $y^{(k+1)} = \frac{d y^{(k)}}{dy}\, f(y)$. With
# $f = y - y^2$: $y'' = (1 - 2y)\, f = y - 3y^2 + 2y^3$, and
# $y''' = (1 - 6y + 6y^2)\, f = y(1-y)(1 - 6y + 6y^2)$. At $y_0 = 0.1$:
# $y''' = 0.09 \cdot 0.46 = 0.0414$, so $c_3 = 0.0069$.
# </details>

# %%
def c3_by_hand(y):
    return y * (1 - y) * (1 - 6 * y + 6 * y**2) / 6

c_log = ts.taylor_coefficients(logistic, 0.0, y0_log, order=3)
y_sym = sp.Symbol("y")
y3_sympy = sp.diff(sp.diff(y_sym * (1 - y_sym), y_sym) * y_sym * (1 - y_sym), y_sym) * y_sym * (1 - y_sym)
print(f"c_3 by hand {float(c3_by_hand(y0_log)):.6f}, by the library {float(c_log[3]):.6f}")
assert abs(float(c3_by_hand(y0_log)) - 0.0069) < 1e-12
assert torch.allclose(c_log[3], c3_by_hand(y0_log), rtol=1e-13)
assert sp.simplify(y3_sympy / 6 - c3_by_hand(y_sym)) == 0

# %% [markdown]
# **Exercise 3 (Adams-Bashforth on an uneven grid).** On a grid with varying steps
# $h_{n-1} = t_n - t_{n-1}$ and $h_n = t_{n+1} - t_n$, integrate the line through $(t_{n-1}, f_{n-1})$ and
# $(t_n, f_n)$ over $[t_n, t_{n+1}]$ to get the variable-step AB2 formula. Check it against the
# `"finite_difference"` backend (TTM-2) on the grid `0, 0.1, 0.25, 0.45, 0.7, 1.0`.
#
# <details><summary>Solution</summary>
#
# $P(s) = f_n + (s - t_n)\,\frac{f_n - f_{n-1}}{h_{n-1}}$, so
# $y_{n+1} = y_n + h_n f_n + \frac{h_n^2}{2}\,\frac{f_n - f_{n-1}}{h_{n-1}}$. The TTM-2 step
# $y_n + h_n c_1 + h_n^2 c_2$ with $c_1 = f_n$, $c_2 = \tfrac12 P'(t_n)$ is the same thing. For equal
# steps it is $h(\tfrac32 f_n - \tfrac12 f_{n-1})$ again.
# </details>

# %%
uneven = torch.tensor([0.0, 0.1, 0.25, 0.45, 0.7, 1.0])
ys, fs = [y0_log], []
for n in range(len(uneven) - 1):
    fs.append(logistic(uneven[n], ys[-1]))
    h_n = uneven[n + 1] - uneven[n]
    if n == 0:
        ys.append(ys[-1] + h_n * fs[-1])                                   # Euler warm-up
    else:
        h_prev = uneven[n] - uneven[n - 1]
        ys.append(ys[-1] + h_n * fs[-1] + h_n**2 / 2 * (fs[-1] - fs[-2]) / h_prev)
by_hand = torch.stack(ys)
library = ts.solve(logistic, y0_log, uneven, order=2, backend="finite_difference").ys
print("max difference:", float((by_hand - library).abs().max()))
assert torch.allclose(by_hand, library, rtol=0, atol=1e-15)

# %% [markdown]
# **Exercise 4 (what does a tighter tolerance buy?).** Solve the two Kepler orbits of section 6 again with
# `rtol = atol = 1e-14`. Predict the order heyoka's rule picks, and whether the number of steps goes up
# a lot, a little, or not at all compared with the 1e-10 solve.
#
# <details><summary>Solution</summary>
#
# $p = \lceil 7 \ln 10 \rceil + 1 = \lceil 16.12 \rceil + 1 = 18$. The step is
# $\rho\, e^{-2} e^{-0.7/(p-1)}$: the radius of convergence $\rho$ is a property of the solution,
# not of the tolerance, and $e^{-0.7/(p-1)}$ changes only from 0.94 to 0.96. So the number of steps
# stays about the same; the tighter tolerance is paid for with more Taylor terms per step (the cost
# of a step in Taylor arithmetic grows like $p^2$).
# </details>

# %%
tight = ts.solve(kepler, y0_kep, t_span=(0.0, t1), rtol=1e-14, atol=1e-14)
print(f"tol 1e-14: order {tight.stats.order}, {tight.stats.steps} steps "
      f"(tol 1e-10: order {s.order}, {s.steps} steps); end error {float((tight.ys[-1] - y0_kep).abs().max()):.1e}")
assert tight.stats.order == math.ceil(-math.log(1e-14) / 2) + 1 == 18
assert 0.8 < tight.stats.steps / s.steps < 1.1
assert float((tight.ys[-1] - y0_kep).abs().max()) < 1e-11
