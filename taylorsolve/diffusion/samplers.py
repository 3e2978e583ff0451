r"""One entry point for diffusion sampling: :func:`sample`.

``sample(model, x1, steps, method="genie")`` integrates a generative differential equation of a
diffusion model from ``t = 1`` (noise, ``x1``) down to ``t_cutoff`` on a time grid.  ``model(x, t)``
is an eps-prediction by default (``t`` a float64 0-d tensor); the default schedule is the linear VP
schedule ``beta(t) = 0.1 + 19.9 t`` (app. C.1).

Methods (``NFE`` for ``N`` steps before the knobs; see :mod:`taylorsolve.diffusion.cost`):

================== ======================================================================== ==========
method             what it is                                                               NFE
================== ======================================================================== ==========
``ddim``           Euler on the DDIM ODE ``d xbar/d gamma = eps`` (eq. (6)) = TTM-1          N
``genie``          TTM-2 on the DDIM ODE (eq. (9)); derivative from a provider               N
``ttm``            TTM-p on the DDIM ODE (``order=p``; p = 3 is app. B.3, eq. (52))          N
``ttm-pf``         TTM-p on the probability-flow ODE in ``t`` (eq. (33); default p = 2)      N
``s-pndm``         PNDM, 2nd-order pseudo linear multistep, improved-Euler first step        N + 1
``f-pndm``         PNDM, 4th-order pseudo linear multistep, 3 pseudo-RK4 warm-up steps       N + 9 (N>=3)
``adams-bashforth`` variable-step AB-k on the DDIM ODE in gamma (core finite differences)    N
``heun``           EDM's 2nd-order Heun on the DDIM ODE in ``(xbar, gamma)``                 2N
``dpm-solver-2``   DPM-Solver-2 (Lu et al. 2022), singlestep in lambda, ``r1 = 1/2``         2N
``dpm-solver-3``   DPM-Solver-3, singlestep, ``r1 = 1/3, r2 = 2/3``                          3N
``dpm-solver++2m`` DPM-Solver++(2M), multistep, data prediction                              N
``deis``           DEIS / gDDIM multistep predictor: Lagrange extrapolation of eps in gamma  N
``euler-maruyama`` Euler-Maruyama on the reverse SDE (eq. (3)), noise from ``generator``     N
``rk45``           adaptive Dormand-Prince (scipy ``solve_ivp``) on the probability-flow ODE  scipy's nfev
================== ======================================================================== ==========

Knobs (app. F.2, sec. 5): ``afs=True`` replaces the first model evaluation ``eps(x_1, 1)`` by
``x_1`` (eq. (75); for derivative-based steps also ``d eps/d gamma ~ 0``, eq. (76)-(78), i.e. the
first step is Alg. 2's Euler step), saving one NFE; ``denoise=True`` returns
``x_0 = (x - sigma eps(x, t_cutoff)) / alpha`` at the end, costing one.

The Taylor family (``ddim``, ``genie``, ``ttm``, ``ttm-pf``, ``adams-bashforth``) runs through
:func:`taylorsolve.solve` with a derivative provider (:mod:`taylorsolve.diffusion.providers`) as
backend; the other methods are short loops in ``(xbar, gamma)`` coordinates, where every DDIM-type
update ``x_t -> x_s`` is ``xbar_s = xbar_t + (gamma_s - gamma_t) eps``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .. import api as _core
from ..coefficients import CoefficientBackend
from ..errors import SolverError, TaylorSolveError, check_finite, validate_order
from ._evaluator import EpsEvaluator, build_eps_fn
from .cost import SampleStats, _Timer
from .grids import time_grid, validate_diffusion_grid
from .odes import ddim_ode_rhs, probability_flow_rhs, reverse_sde
from .providers import (
    AutodiffProvider,
    IdealPFBackend,
    ZeroProvider,
    finite_difference,
    get_provider,
    zero,
)
from .schedules import Schedule, as_time_tensor, get_schedule

__all__ = ["sample", "SampleResult", "METHODS", "integrate"]

#: canonical method names accepted by :func:`sample`
METHODS = (
    "ddim",
    "genie",
    "ttm",
    "ttm-pf",
    "s-pndm",
    "f-pndm",
    "adams-bashforth",
    "heun",
    "dpm-solver-2",
    "dpm-solver-3",
    "dpm-solver++2m",
    "deis",
    "euler-maruyama",
    "rk45",
)

_ALIASES = {
    "ab": "adams-bashforth",
    "adams_bashforth": "adams-bashforth",
    "spndm": "s-pndm",
    "fpndm": "f-pndm",
    "dpm-solver2": "dpm-solver-2",
    "dpm-solver3": "dpm-solver-3",
    "dpmsolver2": "dpm-solver-2",
    "dpmsolver3": "dpm-solver-3",
    "dpm-solver++(2m)": "dpm-solver++2m",
    "dpm-solver++-2m": "dpm-solver++2m",
    "em": "euler-maruyama",
    "ttm_pf": "ttm-pf",
}

_TAYLOR = ("ddim", "genie", "ttm", "ttm-pf", "adams-bashforth")
_DETERMINISTIC = tuple(m for m in METHODS if m != "euler-maruyama")
_OPTIONS: dict[str, tuple[str, ...]] = {"rk45": ("rtol", "atol"), "dpm-solver-2": ("r1",)}


@dataclass
class SampleResult:
    """``x`` (the sample; denoised if ``denoise=True``), ``stats`` (:class:`~taylorsolve.diffusion.cost.SampleStats`),
    ``trajectory`` (``[len(times), *x.shape]`` states ``x_t`` at ``times``, or None) and ``times``."""

    x: torch.Tensor
    stats: SampleStats
    trajectory: torch.Tensor | None
    times: torch.Tensor


def canonical_method(method: Any) -> str:
    """The canonical name of ``method`` (case, ``_`` vs ``-`` and a few aliases tolerated)."""
    if not isinstance(method, str):
        raise TaylorSolveError(f"method must be a string, one of: {', '.join(METHODS)}; got {method!r}")
    key = method.strip().lower()
    key = _ALIASES.get(key, key)
    key = key.replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise TaylorSolveError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    return key


# -- configuration --------------------------------------------------------------------------------
@dataclass
class _Config:
    method: str
    order: int | None
    backend: CoefficientBackend | None
    ode: str  # "ddim", "pf", "sde"
    options: dict[str, Any]


def _configure(method: str, order: Any, derivative: Any, schedule: Schedule, options: dict[str, Any]) -> _Config:
    allowed = _OPTIONS.get(method, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"; it accepts {', '.join(allowed)}" if allowed else "; it takes no extra options"
        raise TaylorSolveError(f"unknown option(s) {', '.join(unknown)} for method {method!r}{hint}")
    if derivative is not None and method not in ("genie", "ttm", "ttm-pf"):
        raise TaylorSolveError(
            f"derivative= applies to the Taylor methods 'genie', 'ttm', 'ttm-pf', not to {method!r}"
        )

    def fixed(p: int) -> int:
        if order is not None and validate_order(order) != p:
            raise TaylorSolveError(f"method {method!r} has fixed order {p}; got order={order!r}")
        return p

    if method == "ddim":
        return _Config(method, fixed(1), zero().bind(schedule), "ddim", options)
    if method == "genie":
        return _Config(method, fixed(2), get_provider(derivative, schedule), "ddim", options)
    if method == "ttm":
        if order is None:
            raise TaylorSolveError("method 'ttm' needs order=p (p = 2 is GENIE, p = 3 app. B.3)")
        return _Config(method, validate_order(order), get_provider(derivative, schedule), "ddim", options)
    if method == "ttm-pf":
        p = 2 if order is None else validate_order(order)
        if derivative is None or derivative == "autodiff":
            be: CoefficientBackend = AutodiffProvider()
        elif derivative == "ideal":
            be = IdealPFBackend(schedule)
        elif derivative == "zero":
            be = ZeroProvider()
        elif isinstance(derivative, CoefficientBackend):
            be = derivative
        else:
            raise TaylorSolveError(
                "ttm-pf takes derivative='autodiff' (default), 'ideal' (app. B.2, eq. (51)), 'zero' or a "
                f"core backend instance; got {derivative!r}"
            )
        return _Config(method, p, be, "pf", options)
    if method == "adams-bashforth":
        p = 2 if order is None else validate_order(order)
        return _Config(method, p, finite_difference(), "ddim", options)
    if method == "deis":
        p = 3 if order is None else validate_order(order)
        return _Config(method, p, None, "ddim", options)
    nominal = {"s-pndm": 2, "f-pndm": 4, "heun": 2, "dpm-solver-2": 2, "dpm-solver-3": 3,
               "dpm-solver++2m": 2, "euler-maruyama": 1, "rk45": 5}[method]
    if order is not None:
        fixed(nominal)
    ode = "sde" if method == "euler-maruyama" else ("pf" if method == "rk45" else "ddim")
    return _Config(method, nominal, None, ode, options)


# -- (xbar, gamma) helpers ------------------------------------------------------------------------
class _DDIMCoords:
    """``x <-> xbar`` and counted eps evaluation at ``(xbar, gamma)`` (VP or general schedules)."""

    def __init__(self, ev: EpsEvaluator, schedule: Schedule, dtype: torch.dtype):
        self.ev = ev
        self.schedule = schedule
        self.dtype = dtype

    def alpha(self, gamma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.schedule.variance_preserving:
            return torch.rsqrt(1.0 + gamma * gamma)
        return self.schedule.alpha(t)

    def to_xbar(self, x: torch.Tensor, gamma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x / self.alpha(gamma, t).to(self.dtype)

    def to_x(self, xbar: torch.Tensor, gamma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return xbar * self.alpha(gamma, t).to(self.dtype)

    def eps(self, xbar: torch.Tensor, gamma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.ev(self.to_x(xbar, gamma, t), t)

    def t_of(self, gamma: torch.Tensor) -> torch.Tensor:
        return self.schedule.t_from_gamma(gamma)


def _c(v: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64).to(dtype)


def _check_state(x: torch.Tensor, step: int, t: torch.Tensor) -> None:
    check_finite(x, what="the sampler state", step=step, time=float(t))


# -- the Taylor family ------------------------------------------------------------------------------
def _run_taylor(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
                stats: SampleStats) -> list[torch.Tensor]:
    backend = cfg.backend
    assert backend is not None and cfg.order is not None
    if cfg.ode == "ddim":
        co = _DDIMCoords(ev, schedule, x.dtype)
        grid = schedule.gamma(times)
        y = co.to_xbar(x, grid[0], times[0])
        rhs = ddim_ode_rhs(ev, schedule)
    else:
        grid = times
        y = x
        rhs = probability_flow_rhs(ev, schedule)
    ys = [y]
    start = 0
    if ev.afs_pending and getattr(backend, "stateless", True):
        # Alg. 2 (app. C.2.4, F.2): eps(x_1, 1) ~ x_1 (eq. (75)) and d eps/d gamma ~ 0 (eq. (76)-(78)):
        # the first step is an Euler step with the analytic eps and no derivative terms.
        ev.consume_afs()
        if cfg.ode == "ddim":
            y = y + _c(grid[1] - grid[0], y.dtype) * x
        else:
            f_afs = probability_flow_rhs(lambda x_, t_: x_, schedule)(times[0], y)
            y = y + _c(times[1] - times[0], y.dtype) * f_afs
        _check_state(y, 1, times[1])
        ys.append(y)
        start = 1
    if start < len(grid) - 1:
        sol = _core.solve(rhs, y, grid[start:], order=cfg.order, backend=backend, check_finite=True)
        stats.derivative_evals += int(sol.stats.derivative_evals)
        stats.jvp_passes += int(getattr(sol.stats, "jvp_passes", 0))
        ys.extend(list(sol.ys[1:]))
    if cfg.ode == "ddim":
        return [co.to_x(yn, grid[n], times[n]) for n, yn in enumerate(ys)]
    return ys


# -- PNDM (Liu et al. 2022) -------------------------------------------------------------------------
def _run_pndm(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
              stats: SampleStats) -> list[torch.Tensor]:
    """Pseudo numerical methods on the DDIM ODE; ``transfer`` = the DDIM update in (xbar, gamma).

    S-PNDM: first step pseudo improved Euler (2 evaluations), then ``(3 e_n - e_{n-1}) / 2``.
    F-PNDM: three pseudo Runge-Kutta (RK4) warm-up steps with the midpoint ``(t + t') / 2`` in t
    (4 evaluations each), then ``(55 e_n - 59 e_{n-1} + 37 e_{n-2} - 9 e_{n-3}) / 24``.  As in the
    paper, the multistep coefficients assume equal steps (app. F.6: run on linear striding).
    """
    co = _DDIMCoords(ev, schedule, x.dtype)
    gam = schedule.gamma(times)
    xbar = co.to_xbar(x, gam[0], times[0])
    out = [x]
    ets: list[torch.Tensor] = []
    full = cfg.method == "f-pndm"
    n_warm = 3 if full else 1
    for n in range(len(times) - 1):
        t, tn, g, gn = times[n], times[n + 1], gam[n], gam[n + 1]
        ev.step = n
        if len(ets) < n_warm:
            ev.phase = "warmup"
            e1 = co.eps(xbar, g, t)
            ets.append(e1)
            if not full:  # pseudo improved Euler
                x2 = xbar + _c(gn - g, x.dtype) * e1
                e2 = co.eps(x2, gn, tn)
                e = 0.5 * (e1 + e2)
            else:  # pseudo Runge-Kutta (RK4)
                tm = 0.5 * (t + tn)
                gm = schedule.gamma(tm)
                dm = _c(gm - g, x.dtype)
                e2 = co.eps(xbar + dm * e1, gm, tm)
                e3 = co.eps(xbar + dm * e2, gm, tm)
                e4 = co.eps(xbar + _c(gn - g, x.dtype) * e3, gn, tn)
                e = (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0
            ev.phase = "solve"
        else:
            ets.append(co.eps(xbar, g, t))
            ets = ets[-4:]
            if not full:
                e = 0.5 * (3.0 * ets[-1] - ets[-2])
            else:
                e = (55.0 * ets[-1] - 59.0 * ets[-2] + 37.0 * ets[-3] - 9.0 * ets[-4]) / 24.0
        xbar = xbar + _c(gn - g, x.dtype) * e
        _check_state(xbar, n + 1, tn)
        out.append(co.to_x(xbar, gn, tn))
    return out


# -- Heun (EDM) ---------------------------------------------------------------------------------------
def _run_heun(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
              stats: SampleStats) -> list[torch.Tensor]:
    """Karras et al. (2022), Alg. 1 (deterministic): Euler predictor, trapezoidal corrector, in (xbar, gamma)."""
    co = _DDIMCoords(ev, schedule, x.dtype)
    gam = schedule.gamma(times)
    xbar = co.to_xbar(x, gam[0], times[0])
    out = [x]
    for n in range(len(times) - 1):
        t, tn, g, gn = times[n], times[n + 1], gam[n], gam[n + 1]
        ev.step = n
        h = _c(gn - g, x.dtype)
        d = co.eps(xbar, g, t)
        d2 = co.eps(xbar + h * d, gn, tn)
        xbar = xbar + 0.5 * h * (d + d2)
        _check_state(xbar, n + 1, tn)
        out.append(co.to_x(xbar, gn, tn))
    return out


# -- DPM-Solver (Lu et al. 2022) ----------------------------------------------------------------------
def _run_dpm_singlestep(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor,
                        schedule: Schedule, stats: SampleStats) -> list[torch.Tensor]:
    r"""DPM-Solver-2 / -3 (singlestep, eps prediction, steps uniform in whatever grid is given).

    With ``h = lambda_{i} - lambda_{i-1} = log(gamma_{i-1}/gamma_i)`` and ``gamma_s = gamma_{i-1} e^{-r h}``,
    dividing Lu et al.'s updates by ``alpha`` turns every ``sigma_s (e^{r h} - 1) / alpha_s`` into
    ``gamma_{i-1} - gamma_s``:

    * DPM-Solver-2: ``u = xbar + (gamma_s - gamma) e_0``,
      ``xbar' = xbar + (gamma' - gamma) e_0 + (gamma' - gamma)/(2 r1) (eps(u, s) - e_0)``.
    * DPM-Solver-3 (``r1 = 1/3, r2 = 2/3``): ``u1 = xbar + (gamma_1 - gamma) e_0``, ``D1 = eps(u1) - e_0``,
      ``u2 = xbar + (gamma_2 - gamma) e_0 - gamma_2 (r2/r1) (phi(r2 h) - 1) D1``, ``D2 = eps(u2) - e_0``,
      ``xbar' = xbar + (gamma' - gamma) e_0 - (gamma'/r2) (phi(h) - 1) D2`` with ``phi(z) = (e^z - 1)/z``.
    """
    co = _DDIMCoords(ev, schedule, x.dtype)
    gam = schedule.gamma(times)
    xbar = co.to_xbar(x, gam[0], times[0])
    out = [x]
    third = cfg.method == "dpm-solver-3"
    r1 = float(cfg.options.get("r1", 0.5)) if not third else 1.0 / 3.0
    if not (0.0 < r1 < 1.0):
        raise TaylorSolveError(f"dpm-solver-2 needs 0 < r1 < 1, got {r1}")
    r2 = 2.0 / 3.0

    def phi1(z: float) -> float:  # (e^z - 1) / z
        return math.expm1(z) / z if z != 0.0 else 1.0

    dt = x.dtype
    for n in range(len(times) - 1):
        ev.step = n
        t, tn = times[n], times[n + 1]
        g, gn = float(gam[n]), float(gam[n + 1])
        h = math.log(g / gn)
        e0 = co.eps(xbar, gam[n], t)
        g1 = torch.as_tensor(g * math.exp(-r1 * h), dtype=torch.float64)
        u1 = xbar + _c(float(g1) - g, dt) * e0
        e1 = co.eps(u1, g1, co.t_of(g1))
        if not third:
            xbar = xbar + _c(gn - g, dt) * e0 + _c((gn - g) / (2.0 * r1), dt) * (e1 - e0)
        else:
            d1 = e1 - e0
            g2 = torch.as_tensor(g * math.exp(-r2 * h), dtype=torch.float64)
            u2 = (xbar + _c(float(g2) - g, dt) * e0
                  - _c(float(g2) * (r2 / r1) * (phi1(r2 * h) - 1.0), dt) * d1)
            d2 = co.eps(u2, g2, co.t_of(g2)) - e0
            xbar = xbar + _c(gn - g, dt) * e0 - _c(gn / r2 * (phi1(h) - 1.0), dt) * d2
        _check_state(xbar, n + 1, tn)
        out.append(co.to_x(xbar, gam[n + 1], tn))
    return out


def _run_dpmpp2m(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
                 stats: SampleStats) -> list[torch.Tensor]:
    r"""DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) with data prediction ``x0 = xbar - gamma eps``.

    Divided by ``sigma``, ``y = x / sigma = xbar / gamma`` obeys ``y' = y + (1/gamma' - 1/gamma) D``
    with ``D = x0_n`` on the first step and ``D = (1 + 1/(2r)) x0_n - 1/(2r) x0_{n-1}``,
    ``r = h_{n-1} / h_n`` afterwards.
    """
    co = _DDIMCoords(ev, schedule, x.dtype)
    gam = schedule.gamma(times)
    xbar = co.to_xbar(x, gam[0], times[0])
    out = [x]
    dt = x.dtype
    prev: tuple[torch.Tensor, float] | None = None
    for n in range(len(times) - 1):
        ev.step = n
        t, tn = times[n], times[n + 1]
        g, gn = float(gam[n]), float(gam[n + 1])
        h = math.log(g / gn)
        x0 = xbar - _c(g, dt) * co.eps(xbar, gam[n], t)
        if prev is None:
            d = x0
        else:
            r = prev[1] / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * prev[0]
        prev = (x0, h)
        y = xbar / _c(g, dt)
        y = y + _c(1.0 / gn - 1.0 / g, dt) * d
        xbar = _c(gn, dt) * y
        _check_state(xbar, n + 1, tn)
        out.append(co.to_x(xbar, gam[n + 1], tn))
    return out


# -- DEIS / gDDIM multistep predictor -----------------------------------------------------------------
def _lagrange_integrals(nodes: np.ndarray, a: float, b: float) -> np.ndarray:
    """``C_j = int_a^b prod_{k != j} (s - s_k)/(s_j - s_k) ds`` (gDDIM app. B.1.4, eq. (37) with Psi = I)."""
    m = len(nodes)
    C = np.empty(m)
    P = np.polynomial.polynomial
    for j in range(m):
        others = np.delete(nodes, j)
        basis = P.polyfromroots(others) / np.prod(nodes[j] - others) if m > 1 else np.ones(1)
        anti = P.polyint(basis)
        C[j] = P.polyval(b, anti) - P.polyval(a, anti)
    return C


def _run_deis(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
              stats: SampleStats) -> list[torch.Tensor]:
    r"""q-step exponential multistep predictor (DEIS, gDDIM eq. (36)-(37)) on the DDIM ODE.

    In ``(xbar, gamma)`` the transition matrix is the identity and the DDIM ODE is
    ``xbar' = xbar + int eps d gamma``; ``eps`` is replaced by the Lagrange polynomial (in gamma)
    through the last ``q`` evaluations (fewer while warming up, gDDIM Alg. 1's ``q_cur``).
    """
    co = _DDIMCoords(ev, schedule, x.dtype)
    gam = schedule.gamma(times)
    xbar = co.to_xbar(x, gam[0], times[0])
    out = [x]
    q = int(cfg.order or 3)
    hist: list[tuple[float, torch.Tensor]] = []
    for n in range(len(times) - 1):
        ev.step = n
        g, gn = float(gam[n]), float(gam[n + 1])
        hist.append((g, co.eps(xbar, gam[n], times[n])))
        hist = hist[-q:]
        nodes = np.array([gj - g for gj, _ in hist])  # shifted: current node at 0
        C = _lagrange_integrals(nodes, 0.0, gn - g)
        incr = sum(_c(C[j], x.dtype) * ej for j, (_, ej) in enumerate(hist))
        xbar = xbar + incr
        _check_state(xbar, n + 1, times[n + 1])
        out.append(co.to_x(xbar, gam[n + 1], times[n + 1]))
    return out


# -- Euler-Maruyama on the reverse SDE ------------------------------------------------------------------
def _run_em(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
            stats: SampleStats, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Eq. (3) backwards in time: ``x + drift (t' - t) + g(t) sqrt(t - t') z``, noise at every step."""
    if not bool(times[1] < times[0]):
        raise TaylorSolveError("euler-maruyama runs from noise to data only (it is not invertible; no encoding)")
    sde = reverse_sde(ev, schedule)
    out = [x]
    for n in range(len(times) - 1):
        ev.step = n
        z = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x = sde.euler_maruyama_step(x, times[n], times[n + 1], noise=z)
        _check_state(x, n + 1, times[n + 1])
        out.append(x)
    return out


# -- RK45 -------------------------------------------------------------------------------------------------
def _run_rk45(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
              stats: SampleStats) -> list[torch.Tensor]:
    """scipy's ``solve_ivp(method="RK45")`` on the probability-flow ODE (eq. (4)); NFE = scipy's nfev.

    The whole batch is one flattened state (as in score_sde).  Options ``rtol``, ``atol`` (default 1e-5).
    States at ``times`` come from the solver's dense output (no extra evaluations).
    """
    from scipy.integrate import solve_ivp

    rtol = float(cfg.options.get("rtol", 1e-5))
    atol = float(cfg.options.get("atol", 1e-5))
    if not (rtol > 0 and atol > 0):
        raise TaylorSolveError(f"rk45 needs rtol > 0 and atol > 0, got rtol={rtol}, atol={atol}")
    rhs = probability_flow_rhs(ev, schedule)
    shape, dtype, device = x.shape, x.dtype, x.device

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(y)).reshape(shape).to(dtype=dtype, device=device)
        with torch.no_grad():
            dx = rhs(torch.tensor(t, dtype=torch.float64), xt)
        return dx.detach().to(torch.float64).cpu().reshape(-1).numpy()

    y0 = x.detach().to(torch.float64).cpu().reshape(-1).numpy()
    t0, t1 = float(times[0]), float(times[-1])
    sol = solve_ivp(fun, (t0, t1), y0, method="RK45", rtol=rtol, atol=atol, dense_output=True)
    if not sol.success:
        raise SolverError(f"rk45 (scipy solve_ivp) failed: {sol.message}", time=float(sol.t[-1]))
    stats.steps = len(sol.t) - 1
    stats.extra["scipy_nfev"] = int(sol.nfev)
    ys = sol.sol(times.numpy()) if len(times) > 2 else np.stack([y0, sol.y[:, -1]], axis=1)
    ys[:, 0], ys[:, -1] = y0, sol.y[:, -1]
    return [torch.from_numpy(ys[:, i].copy()).reshape(shape).to(dtype=dtype, device=device) for i in range(ys.shape[1])]


def integrate(cfg: _Config, ev: EpsEvaluator, x: torch.Tensor, times: torch.Tensor, schedule: Schedule,
              stats: SampleStats, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Run a configured method along ``times`` (either direction, except Euler-Maruyama); states at ``times``."""
    m = cfg.method
    if m in _TAYLOR:
        return _run_taylor(cfg, ev, x, times, schedule, stats)
    if m in ("s-pndm", "f-pndm"):
        return _run_pndm(cfg, ev, x, times, schedule, stats)
    if m == "heun":
        return _run_heun(cfg, ev, x, times, schedule, stats)
    if m in ("dpm-solver-2", "dpm-solver-3"):
        return _run_dpm_singlestep(cfg, ev, x, times, schedule, stats)
    if m == "dpm-solver++2m":
        return _run_dpmpp2m(cfg, ev, x, times, schedule, stats)
    if m == "deis":
        return _run_deis(cfg, ev, x, times, schedule, stats)
    if m == "euler-maruyama":
        return _run_em(cfg, ev, x, times, schedule, stats, generator)
    if m == "rk45":
        return _run_rk45(cfg, ev, x, times, schedule, stats)
    raise TaylorSolveError(f"unknown method {m!r}; known methods: {', '.join(METHODS)}")  # pragma: no cover


# -- public entry point ---------------------------------------------------------------------------------
def _check_x(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TaylorSolveError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TaylorSolveError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise TaylorSolveError(f"{name} contains NaN or Inf")
    return x


def _times(grid: Any, steps: Any, schedule: Schedule, t_cutoff: Any, method: str) -> torch.Tensor:
    try:
        tc = float(t_cutoff)
    except (TypeError, ValueError) as exc:
        raise TaylorSolveError(f"t_cutoff must be a number in (0, 1), got {t_cutoff!r}") from exc
    if not (0.0 < tc < 1.0):
        raise TaylorSolveError(f"t_cutoff must lie in (0, 1), got {t_cutoff!r}")
    if isinstance(grid, str):
        if steps is None:
            if method == "rk45":
                return torch.tensor([1.0, tc], dtype=torch.float64)
            raise TaylorSolveError("steps must be given (an integer >= 1) for a named grid")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise TaylorSolveError(f"steps must be an integer >= 1, got {steps!r}")
        return time_grid(grid, int(steps), schedule, t_cutoff=tc)
    t = validate_diffusion_grid(grid, direction="decreasing", name="grid")
    if steps is not None and steps != len(t) - 1:
        raise TaylorSolveError(f"steps={steps!r} disagrees with the grid's {len(t) - 1} steps; pass steps=None")
    return t


def sample(
    model: Callable[..., torch.Tensor],
    x1: torch.Tensor,
    steps: int | None,
    method: str = "genie",
    grid: str | torch.Tensor = "quadratic",
    t_cutoff: float = 1e-3,
    *,
    schedule: Schedule | str | None = None,
    order: int | None = None,
    derivative: Any = None,
    afs: bool = False,
    denoise: bool = False,
    parameterization: str = "eps",
    cond: Any = None,
    guidance_scale: float | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    **method_options: Any,
) -> SampleResult:
    """Sample from a diffusion model by integrating from ``t = 1`` (``x1``) down to ``t_cutoff``.

    Args:
        model: ``model(x, t)`` (``t`` a float64 0-d tensor) predicting ``parameterization``
            (``"eps"`` default, ``"x0"``, ``"v"``, ``"score"``); with ``cond`` a dict it is called
            ``model(x, t, **cond)`` (otherwise ``model(x, t, cond)``).
        x1: the initial noise ``x_1``, any shape (leading dimensions are a batch).
        steps: number of solver steps (grid intervals); ``None`` with a tensor ``grid`` (or for ``rk45``).
        method: one of :data:`METHODS` (module docstring; ``sample(model, x1, 10)`` is ten GENIE steps).
        grid: a name (``"quadratic"`` default, ``"linear"``, ``"rho"``, ``"logsnr"``, ``"edm"``,
            ``"gamma"``) or a strictly decreasing tensor of times in ``(0, 1]``.
        t_cutoff: last time, ``0 < t_cutoff < 1`` (default ``1e-3``).
        schedule: a :class:`Schedule` or name (default linear VP).
        order: TTM order for ``"ttm"`` (required) / ``"ttm-pf"`` (default 2); steps ``k`` for
            ``"adams-bashforth"`` (default 2) and ``"deis"`` (default 3); fixed for the others.
        derivative: for ``"genie"``/``"ttm"``: a provider, a provider name (``"autodiff"`` default,
            ``"zero"``, ``"ideal"``, ``"finite_difference"``) or a callable head ``head(x, t, eps)``;
            for ``"ttm-pf"``: ``"autodiff"``, ``"ideal"``, ``"zero"`` or a core backend.
        afs: analytical first step (app. F.2), saves one NFE.
        denoise: final denoising ``x_0 = (x - sigma eps)/alpha`` at ``t_cutoff`` (+1 NFE).
        cond, guidance_scale: conditioning and classifier-free guidance (eq. (79)).
        generator: random numbers for ``"euler-maruyama"``.
        return_trajectory: also return the states at all grid times.
        **method_options: ``rtol``/``atol`` for ``"rk45"``; ``r1`` for ``"dpm-solver-2"``.

    Returns:
        :class:`SampleResult` ``(x, stats, trajectory, times)``.

    Raises:
        TaylorSolveError: unknown method (the message lists the known ones), bad grid / steps /
            options, a model output of the wrong shape.
        SolverError: NaN/Inf from the model or in the state; the message names the time.
    """
    method = canonical_method(method)
    schedule = get_schedule(schedule)
    x1 = _check_x(x1, "x1")
    cfg = _configure(method, order, derivative, schedule, dict(method_options))
    times = _times(grid, steps, schedule, t_cutoff, method)
    stats = SampleStats(method=method, steps=len(times) - 1, order=cfg.order,
                        derivative=getattr(cfg.backend, "name", None) if method in ("genie", "ttm", "ttm-pf") else None)
    eps_fn, calls = build_eps_fn(model, schedule, parameterization, cond, guidance_scale)
    ev = EpsEvaluator(eps_fn, stats, calls_per_eval=calls, afs=bool(afs))
    with _Timer(stats):
        states = integrate(cfg, ev, x1, times, schedule, stats, generator)
        x = states[-1]
        if denoise:
            x = denoise_step(ev, x, times[-1], schedule)
    traj = torch.stack(states) if return_trajectory else None
    return SampleResult(x=x, stats=stats, trajectory=traj, times=times)


def denoise_step(ev: EpsEvaluator, x: torch.Tensor, t: Any, schedule: Schedule) -> torch.Tensor:
    """``x_0 = (x_t - sigma_t eps(x_t, t)) / alpha_t`` (sec. 5, app. F.4); one counted evaluation."""
    t = as_time_tensor(t)
    ev.phase, ev.step = "denoise", None
    try:
        eps = ev(x, t)
    finally:
        ev.phase = "solve"
    a, s = schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype)
    return (x - s * eps) / a
