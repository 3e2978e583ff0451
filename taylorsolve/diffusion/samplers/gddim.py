r"""gDDIM (Zhang, Tao & Chen): the exponential integrator of any linear diffusion, for every process.

Both units step in ``"ei"`` coordinates (:mod:`taylorsolve.diffusion.processes`, :mod:`taylorsolve.diffusion.cld`):
a state ``y = Psi(0, t) u`` and a weight ``B_t = Psi(0, t) 1/2 G G^T K_t^{-T}`` with

    dy/dt = B_t eps(u, t),   eps = -K_t^T grad log p_t                     (gDDIM eq. (7) with eq. (4))

(scalar processes: ``y = xbar``, ``B_t = d gamma/dt``; CLD: a rank-one 2x2 matrix per ``(x_i, v_i)`` pair).
Time runs from ``t_i`` to ``t_{i-1}`` (noise to data); every integral below is signed.

* ``gddim`` -- the multistep predictor (gDDIM eq. (17); its appendix eq. (36)-(37)): eps on
  ``[t_{n+1}, t_n]`` is the Lagrange polynomial *in t* through the last ``q = order`` evaluations,

      y_{n+1} = y_n + sum_j C_j eps_{n-j},   C_j = int_{t_n}^{t_{n+1}} B_tau l_j(tau) d tau,

  ``q = 1`` is deterministic gDDIM (gDDIM eq. (16)), where ``C_0 = P(t_{n+1}) - P(t_n)`` in closed form when
  ``K = R`` (gDDIM Lemma 2; ``P = gamma`` on scalar processes, so ``gddim`` is DDIM there).  The other
  weights are Gauss-Legendre quadratures in ``sqrt(tau)`` (smooth there; 2 x 16 nodes per panel,
  panels of width <= 0.05 in ``sqrt(tau)``), about 1e-14 relative (tested against the closed form).
  The first ``q - 1`` steps warm up with the orders the history allows (gDDIM Alg. 1).  On VP
  processes this is DEIS's "tAB" exponential multistep; the ``deis`` unit fits eps in ``log gamma``.
  ``lam > 0`` switches to stochastic gDDIM (gDDIM eq. (20)-(21), ``order = 1``):
  ``y' = y + A eps + N z`` from the coordinates' :meth:`stochastic_step`.
* ``gddim-ttm`` -- GENIE on gDDIM's transformed ODE (beyond the sources): the second truncated Taylor
  method of eps inside the exact weight integral,

      y_{n+1} = y_n + C_0 eps_n + D_1 (d eps/dt)_n,   D_1 = int_{t_n}^{t_{n+1}} B_tau (tau - t_n) d tau,

  with ``d eps/dt`` the total derivative along the probability-flow ODE: ``derivative="autodiff"``
  (one ``torch.func.jvp`` of the model with the tangent ``(du/dt, 1)``, ``du/dt`` the PF velocity), a
  callable ``fn(u, t, eps) -> d eps/dt`` (e.g. a toy's exact derivative) or ``"zero"`` (= ``gddim``).
  On Gaussian data with ``K = R`` eps is constant along PF trajectories (gDDIM Prop. 4), so
  ``d eps/dt`` is small and every step is exact.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ...errors import TaylorSolveError, check_rhs_output
from ..registry import Sampler, register
from .stochastic import check_lambda
from .taylor import MultistepMixin

__all__ = ["GDDIM", "GDDIMTaylor", "ei_weights", "lagrange_weights", "taylor_weight"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_GL_X, _GL_W = 0.5 * (_GL_X + 1.0), 0.5 * _GL_W


def _sqrt_nodes(t_from: float, t_to: float, panel: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``tau`` and signed weights of ``int_{t_from}^{t_to} f(tau) d tau``, Gauss-Legendre in ``sqrt(tau)``."""
    a, b = math.sqrt(t_from), math.sqrt(t_to)
    n_pan = max(2, int(math.ceil(abs(b - a) / panel)))
    edges = np.linspace(a, b, n_pan + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    sig = (lo + (hi - lo) * _GL_X[None, :]).reshape(-1)
    w = ((hi - lo) * _GL_W[None, :]).reshape(-1)                # signed: hi - lo < 0 when t_to < t_from
    return sig * sig, 2.0 * sig * w


def ei_weights(coords: Any, t_from: float, t_to: float, polys: np.ndarray) -> list[torch.Tensor]:
    """``[int_{t_from}^{t_to} B_tau p_j(tau) d tau]_j`` for polynomial values ``p_j`` given by ``polys(tau) -> [J, n]``."""
    tau, w = _sqrt_nodes(t_from, t_to)
    B = coords.weight(torch.as_tensor(tau, dtype=torch.float64))                   # [n] or [n, 2, 2]
    vals = torch.as_tensor(polys(tau) * w[None, :], dtype=torch.float64)           # [J, n]
    return [torch.tensordot(vals[j], B, dims=([0], [0])) for j in range(vals.shape[0])]


def lagrange_weights(coords: Any, t_from: float, t_to: float, nodes: list[float]) -> list[torch.Tensor]:
    """``C_j = int_{t_from}^{t_to} B_tau l_j(tau) d tau`` for the Lagrange basis on ``nodes`` (gDDIM eq. (37))."""
    nodes = [float(v) for v in nodes]

    def polys(tau: np.ndarray) -> np.ndarray:
        out = []
        for j, tj in enumerate(nodes):
            lj = np.ones_like(tau)
            for k, tk in enumerate(nodes):
                if k != j:
                    lj = lj * (tau - tk) / (tj - tk)
            out.append(lj)
        return np.stack(out)

    return ei_weights(coords, t_from, t_to, polys)


def taylor_weight(coords: Any, t_from: float, t_to: float, k: int) -> torch.Tensor:
    """``D_k = int_{t_from}^{t_to} B_tau (tau - t_from)^k / k! d tau``."""
    return ei_weights(coords, t_from, t_to,
                      lambda tau: ((tau - t_from) ** k / math.factorial(k))[None, :])[0]


def _first_weight(coords: Any, t_from: float, t_to: float) -> torch.Tensor:
    """``C_0`` of one step with eps frozen: ``P(t_to) - P(t_from)`` when ``P`` has a closed form (Lemma 2)."""
    P = getattr(coords, "antiderivative", None)
    if P is not None:
        p1 = P(torch.tensor(t_to, dtype=torch.float64))
        if p1 is not None:
            return p1 - P(torch.tensor(t_from, dtype=torch.float64))
    return ei_weights(coords, t_from, t_to, lambda tau: np.ones((1, tau.size)))[0]


@register
class GDDIM(MultistepMixin, Sampler):
    name = "gddim"
    aliases = ("g-ddim",)
    summary = ("gDDIM exponential integrator (gDDIM eq. (16)/(17)): eps extrapolated in t, exact weight "
               "integrals (order=q 1..3); lam>0: stochastic gDDIM (eq. (20)-(21))")
    coordinates = "ei"
    orders = (1, 2, 3)
    default_order = 1
    options = {"lam": 0.0, "lower_order_final": False}
    nfe_rule = "steps"

    def validate(self) -> None:
        self.lam = check_lambda(self.opts["lam"], self.name)
        if self.lam > 0 and self.order != 1:
            raise TaylorSolveError(
                f"gddim: stochastic gDDIM (lam={self.lam!r} > 0, gDDIM eq. (20)) has no multistep form; use order=1")
        self.stochastic = self.lam > 0          # per instance: lam = 0 is an ODE solver (encodes)
        self.exact_on_single_point = not self.stochastic

    def setup(self, ctx) -> None:
        self.hist: list[tuple[float, torch.Tensor]] = []
        self._cache: dict[Any, Any] = {}

    def _weights(self, ctx, t_n: float, t_next: float, nodes: tuple[float, ...]) -> list[torch.Tensor]:
        key = (t_n, t_next, nodes)
        if key not in self._cache:
            if len(nodes) == 1:
                self._cache[key] = [_first_weight(ctx.coords, t_n, t_next)]
            else:
                self._cache[key] = lagrange_weights(ctx.coords, t_n, t_next, list(nodes))
        return self._cache[key]

    def step(self, ctx, n, y, eps0=None):
        t_n, t_next = float(ctx.t[n]), float(ctx.t[n + 1])
        e = ctx.eps_node(y, n) if eps0 is None else eps0
        coords = ctx.coords
        if self.stochastic:
            key = ("stochastic", t_n, t_next)
            if key not in self._cache:
                self._cache[key] = coords.stochastic_step(t_n, t_next, self.lam)
            A, N = self._cache[key]
            z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=ctx.generator)
            return y + coords.apply(A, e) + coords.apply(N, z)
        self.hist.insert(0, (t_n, e))
        q = self.lowered_order(ctx, n, min(self.order, len(self.hist)))
        self.hist = self.hist[: self.order]
        W = self._weights(ctx, t_n, t_next, tuple(tj for tj, _ in self.hist[:q]))
        out = y
        for j in range(q):
            out = out + coords.apply(W[j], self.hist[j][1])
        return out


@register
class GDDIMTaylor(Sampler):
    name = "gddim-ttm"
    aliases = ("genie-gddim",)
    summary = ("GENIE on gDDIM's transformed ODE: exact weight integrals + (d eps/dt) term, TTM-2 "
               "(derivative='autodiff' default, 'zero', or fn(u, t, eps) -> d eps/dt)")
    coordinates = "ei"
    orders = (2,)
    takes_derivative = True
    nfe_rule = "steps (the derivative comes from the provider)"

    def _kind(self) -> str | Callable[..., torch.Tensor]:
        d = self.derivative
        if d is None or d == "autodiff":
            return "autodiff"
        if d == "zero":
            return "zero"
        if callable(d) and not isinstance(d, str):
            return d
        raise TaylorSolveError(
            f"gddim-ttm takes derivative='autodiff' (default), 'zero' or a callable fn(u, t, eps) -> d eps/dt; got {d!r}")

    def validate(self) -> None:
        self._kind()

    def derivative_overhead(self, model: Any = None) -> float:
        """One JVP pass per step for ``"autodiff"`` (the paper's 100 % for GENIE with AD, sec. 5); 0 otherwise."""
        return 1.0 if self._kind() == "autodiff" else 0.0

    def setup(self, ctx) -> None:
        self._cache: dict[Any, Any] = {}
        self._pf = ctx.process.coordinates("pf")

    def _deps_dt(self, ctx, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        kind = self._kind()
        if kind == "zero":
            return torch.zeros_like(eps)
        if kind == "autodiff":
            xdot = self._pf.velocity(eps, x, t, t)            # du/dt along the probability-flow ODE
            _, d = torch.func.jvp(lambda xx, tt: ctx.boundary(xx, tt), (x, t), (xdot, torch.ones_like(t)))
            ctx.stats.jvp_passes += 1
        else:
            d = kind(x, t, eps)
        ctx.stats.derivative_evals += 1
        return check_rhs_output(d, eps, where="gddim-ttm's d eps/dt")

    def step(self, ctx, n, y, eps0=None):
        t_n, t_next = float(ctx.t[n]), float(ctx.t[n + 1])
        key = (t_n, t_next)
        if key not in self._cache:
            self._cache[key] = (_first_weight(ctx.coords, t_n, t_next), taylor_weight(ctx.coords, t_n, t_next, 1))
        C0, D1 = self._cache[key]
        t = ctx.t[n]
        x = ctx.coords.to_x(y, t, ctx.s[n])
        if eps0 is not None:   # analytical first step: d eps/dt ~ 0 there (eq. (76)-(78))
            return y + ctx.coords.apply(C0, eps0)
        e = ctx.boundary(x, t)
        de = self._deps_dt(ctx, x, t, e)
        ctx.stats.derivative_steps += 1
        return y + ctx.coords.apply(C0, e) + ctx.coords.apply(D1, de)
