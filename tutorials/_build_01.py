"""Generate ``01_truncated_taylor_methods.ipynb`` (no outputs stored).

Run ``python tutorials/_build_01.py`` after editing the cells below; the notebook is committed
without outputs and executed by ``tests/test_notebooks.py``.
"""
from __future__ import annotations

from pathlib import Path

from _notebook import NotebookBuilder

builder = NotebookBuilder(Path(__file__).resolve().with_name("01_truncated_taylor_methods.ipynb"))
md, code = builder.md, builder.code


md(r"""
# 01 · Truncated Taylor methods

This notebook walks through the ideas behind `taylorsolve`, from Taylor's formula to an adaptive
high-order solver:

1. Taylor's formula and the *p*-th truncated Taylor method (TTM), GENIE paper eq. (8);
2. the higher derivatives of an ODE's solution, derived symbolically;
3. the same Taylor coefficients from automatic differentiation;
4. measuring the order of accuracy (a log-log plot of error against step size);
5. Adams-Bashforth as a TTM whose derivatives come from finite differences;
6. an adaptive Taylor solver on the Kepler problem, with dense output.

Every section ends with `assert`s on the facts it shows, so the notebook fails loudly if the library
regresses. It runs in a few seconds on a laptop CPU.
""")

code(r"""
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import taylorsolve as ts
from taylorsolve import math as tm
from taylorsolve.coefficients.symbolic import derive

torch.set_default_dtype(torch.float64)
_start = time.perf_counter()
print("taylorsolve", ts.__version__, "| backends:", ", ".join(ts.available_backends()))
""")

md(r"""
## 1. Taylor's formula and the truncated Taylor method

A smooth function can be expanded around $t$:

$$
y(t+h) = \sum_{k=0}^{p} \frac{h^k}{k!}\, y^{(k)}(t) \;+\; \mathcal{O}(h^{p+1}).
$$

If $y$ solves the ODE $\dfrac{dy}{dt} = f(t, y)$, then all derivatives of $y$ at $t$ are known
functions of $(t, y(t))$: $y' = f$, $y'' = \partial_t f + (\nabla_y f)\, f$, and so on. Dropping the
remainder gives the **p-th truncated Taylor method** (TTM-p, GENIE paper eq. (8)):

$$
y_{n+1} = y_n + \sum_{k=1}^{p} \frac{h_n^k}{k!}\, \frac{d^k y}{dt^k}\Big|_{(t_n,\, y_n)}
        = \sum_{k=0}^{p} c_k\, h_n^k, \qquad c_k = \frac{y^{(k)}(t_n)}{k!}.
$$

TTM-1 is Euler's method. The local error of one step is $\mathcal{O}(h^{p+1})$, so after
$N = T/h$ steps the global error is $\mathcal{O}(h^p)$.

`ts.taylor_coefficients(f, t0, y0, p)` returns $[c_0, \dots, c_p]$. For $y' = y$, $y(0)=1$ we know
$y = e^t$, so $c_k = 1/k!$:
""")

code(r"""
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
""")

md(r"""
## 2. The derivatives, symbolically

For a small ODE we can let SymPy do the differentiation. The *Lie derivative* along the vector field
turns $y^{(k)}$ into $y^{(k+1)}$:

$$
y^{(k+1)} = \frac{\partial y^{(k)}}{\partial t} + \big(\nabla_y\, y^{(k)}\big)\, f(t, y).
$$

Take the pendulum, $\theta'' = -\sin\theta$, as a first-order system $y = (\theta, \omega)$,
$f(t, y) = (\omega, -\sin\theta)$. The right-hand side is written once with `taylorsolve.math`
(`tm.sin`, `tm.stack`): the same function runs on SymPy symbols, on torch tensors and on Taylor-mode
jets. `derive` calls it with symbols $y_0 = \theta$, $y_1 = \omega$:
""")

code(r"""
def pendulum(t, y):
    return tm.stack([y[..., 1], -tm.sin(y[..., 0])], dim=-1)

d = derive(pendulum, (2,), order=4)
print(d)
d  # rendered as LaTeX
""")

code(r"""
import sympy as sp

th, om = d.state_symbols
# y'' = d/dt (omega, -sin theta) = (-sin theta, -omega cos theta)
assert sp.simplify(d.derivative(2)[0] - (-sp.sin(th))) == 0
assert sp.simplify(d.derivative(2)[1] - (-om * sp.cos(th))) == 0
# y''' of theta is the second component of y''
assert sp.simplify(d.derivative(3)[0] - d.derivative(2)[1]) == 0
print("expression size per order (sympy.count_ops):", d.operation_counts)
""")

md(r"""
The expressions grow quickly with the order ("expression swell"), which is why the symbolic backend
is meant for small systems and moderate orders. The backend applies `sympy.cse` and compiles
everything to one torch function with `lambdify`.

## 3. The same coefficients by automatic differentiation

Along the solution, $g(s) = f(t+s,\, y(t+s))$, and $y^{(k+1)}(t) = g^{(k)}(0)$. The `"autodiff"`
backend computes $g^{(k)}(0)$ with $k$ nested forward-mode JVPs (`torch.func.jvp`) of
$s \mapsto f(t+s, \sum_{j\le k} c_j s^j)$; for $k=1$ this is the total derivative of GENIE eq. (12),
$\partial_t f + (\nabla_y f)\, f$. The `"taylor_mode"` backend propagates truncated power series
(jets) through every operation instead. All three must agree, here on a batch of three pendulum
states:
""")

code(r"""
y0 = torch.tensor([[1.0, 0.0], [0.3, -0.5], [2.5, 1.0]])   # batch of 3 states (theta, omega)
order = 5
coeffs = {b: ts.taylor_coefficients(pendulum, 0.0, y0, order, backend=b)
          for b in ("symbolic", "autodiff", "taylor_mode")}
for k in range(order + 1):
    print(f"c_{k} (first state):", [f"{float(coeffs[b][k][0, 0]):+.6f}" for b in coeffs])

for b in ("autodiff", "taylor_mode"):
    for k in range(order + 1):
        assert torch.allclose(coeffs[b][k], coeffs["symbolic"][k], rtol=1e-12, atol=1e-12), (b, k)
print("symbolic, autodiff and taylor_mode agree to 1e-12")
""")

md(r"""
## 4. Observed order of accuracy

Theory says the global error of TTM-p behaves like $C h^p$, i.e. a straight line of slope $p$ on a
log-log plot. We check this on the logistic equation $y' = y(1-y)$, whose exact solution is
$y(t) = 1 / (1 + (1/y_0 - 1)\, e^{-t})$. `ts.empirical_order` solves on grids of $N$ steps,
measures the error at the final time (and of a single step), and fits the slopes.
""")

code(r"""
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
""")

md(r"""
## 5. Adams-Bashforth: a TTM with finite-difference derivatives

A multistep method needs no derivatives of $f$ at all: it keeps the last $p$ values
$f_{n}, f_{n-1}, \dots, f_{n-p+1}$, fits the polynomial $P$ through them and uses $P^{(i)}(t_n)$ in
place of $y^{(i+1)}(t_n)$. The TTM step with these coefficients integrates $P$ exactly,

$$
y_{n+1} = y_n + \int_{t_n}^{t_{n+1}} P(s)\, ds,
$$

which *is* the $p$-step Adams-Bashforth method (the equivalence noted in the GENIE paper, sec. 3). With
$p = 2$ on a uniform grid: $y_{n+1} = y_n + h\,(\tfrac32 f_n - \tfrac12 f_{n-1})$. The
`"finite_difference"` backend builds these coefficients; we compare it with a hand-written AB2
(started by one Euler step):
""")

code(r"""
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
""")

md(r"""
While fewer than $p$ past values exist the method has to start somehow. By default it warms up with
lower orders (Euler, then AB2, ...); the Euler step's $\mathcal{O}(h^2)$ local error then caps the
global order at 2. With `starter=` another backend supplies the full-order Taylor coefficients for
the first $p-1$ steps (like the Runge-Kutta warm-up of PNDM), and AB-p keeps its order $p$:
""")

code(r"""
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
""")

md(r"""
## 6. Adaptive high-order Taylor integration: the Kepler problem

High orders pay off when the steps are chosen adaptively. With the coefficients of the current step,
the Jorba-Zou rule picks

$$
h = e^{-0.7/(p-1)} \min_{k \in \{p-1, p\}} \Big(\frac{\varepsilon}{\|c_k\|_\infty}\Big)^{1/k},
\qquad \varepsilon = \text{atol} + \text{rtol}\, \|y_n\|_\infty,
$$

and `order="auto"` takes heyoka's $p = \lceil -\ln(\text{tol})/2 \rceil + 1$. The coefficients come
from Taylor-mode arithmetic (`backend="taylor_mode"`, cost $\mathcal{O}(p^2)$). Because every step
already has its Taylor polynomial, the solution is available at any time for free (dense output:
`sol(t)`).

The Kepler problem $q'' = -q/|q|^3$ with eccentricity 0.5 starts at perihelion; the orbit has period
$2\pi$ and conserves the energy $H = |p|^2/2 - 1/|q|$.
""")

code(r"""
def kepler(t, y):
    q0, q1, p0, p1 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    inv_r3 = (q0 * q0 + q1 * q1) ** -1.5
    return tm.stack([p0, p1, -q0 * inv_r3, -q1 * inv_r3], dim=-1)

def energy(y):
    return 0.5 * (y[..., 2] ** 2 + y[..., 3] ** 2) - 1 / torch.sqrt(y[..., 0] ** 2 + y[..., 1] ** 2)

e = 0.5
y0_kep = torch.tensor([1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))])
t1 = 2 * 2 * math.pi                                        # two orbits
sol = ts.solve(kepler, y0_kep, t_span=(0.0, t1), order="auto", rtol=1e-10, atol=1e-10,
               backend="taylor_mode")
s = sol.stats
print(f"order {s.order}, {s.steps} steps, {s.f_evals} traced f evaluations, {s.wall_time:.2f} s")
end_error = float((sol.ys[-1] - y0_kep).abs().max())
print(f"error after two periods: {end_error:.2e}")
""")

code(r"""
tq = torch.linspace(0.0, t1, 600)
yq = sol(tq)                       # dense output: the step polynomials evaluated between the steps
dE = (energy(yq) - energy(y0_kep)).abs()

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ax1.plot(yq[:, 0], yq[:, 1], lw=1, label="dense output")
ax1.plot(sol.ys[:, 0], sol.ys[:, 1], ".", ms=4, label=f"{s.steps} steps")
ax1.plot([0], [0], "k*", ms=10)
ax1.set_aspect("equal")
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
""")

md(r"""
The time steps are short near perihelion (fast motion, large coefficients) and long near aphelion,
so in space the steps are spread fairly evenly along the orbit: the step-size rule reads the local
radius of convergence of the Taylor series from its last two coefficients. `benchmarks/kepler_adaptive.py` compares this solver with SciPy's DOP853 over ten
orbits.

**Summary.** A TTM needs the Taylor coefficients $c_k = y^{(k)}/k!$ of the solution; `taylorsolve`
gets them symbolically (small systems), by nested forward-mode AD (any torch function, low orders),
by Taylor-mode arithmetic (high orders) or from finite differences of past $f$ values (Adams-Bashforth).
Later tutorials apply TTMs to the probability-flow ODE of a diffusion model (GENIE).
""")

code(r"""
print(f"notebook ran in {time.perf_counter() - _start:.1f} s")
""")


if __name__ == "__main__":
    builder.main()
