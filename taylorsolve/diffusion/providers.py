r"""Derivative providers: where the total derivatives ``d^k eps / d gamma^k`` along the DDIM ODE come from.

The p-th truncated Taylor method (TTM-p) on the DDIM ODE ``d xbar / d gamma = eps(x_t, t)`` (eq. (6))
needs the Taylor coefficients of ``xbar(gamma)``:

    c_0 = xbar,  c_1 = eps,  c_{k+1} = (d^k eps / d gamma^k) / (k+1)!        (eq. (8), (9), (52))

A *provider* is a :class:`taylorsolve.coefficients.CoefficientBackend` for this ODE: it evaluates
``c_1 = eps`` through the right-hand side ``f(gamma, xbar)`` (one model evaluation) and gets the
higher derivatives from its own source, so GENIE / TTM-p is literally

    taylorsolve.solve(ddim_ode_rhs(eps_model, schedule), xbar_1, gammas, order=p, backend=provider)

Providers (factories below):

* :func:`exact` -- a user closed form ``fn(xbar, gamma, eps, order)`` (the toys have one).
* :func:`autodiff` -- the core ``"autodiff"`` backend: for TTM-2 one ``torch.func.jvp`` of the
  right-hand side with the tangent ``(d gamma, d xbar) = (1, eps)``, which through
  ``x = xbar / sqrt(1 + gamma^2)`` and ``t = t(gamma)`` is the tangent pair
  ``(dx/dgamma, dt/dgamma)`` of eq. (11)/(12): ``d eps/d gamma = J_x eps . dx/dgamma + d eps/dt . dt/dgamma``.
  Higher orders nest JVPs (app. B.3).  :func:`autodiff_terms` computes eq. (12)'s three terms
  separately for checks and tutorials.
* :func:`autodiff` with ``fused=True`` (``derivative="autodiff_fused"``) -- TTM-2 with **one** JVP per
  step and no separate forward pass (:class:`FusedAutodiffProvider`).
* :func:`learned` -- any ``head(x, t, eps) -> d eps / d gamma``, e.g. GENIE's distilled head ``k_psi``
  (sec. 3.1, Alg. 2).  Only the first derivative (TTM-2).
* :func:`finite_difference` -- derivatives of the polynomial interpolating past eps values: TTM-p
  becomes the variable-step p-step Adams-Bashforth method (sec. 3, "Comparison to Multistep Methods").
* :func:`ideal` -- the "ideal derivative trick" (app. B.2): derivatives of the single-point model
  ``eps ~ (x_t - alpha_t x_0) / sigma_t`` with ``x_0`` frozen at the current prediction (eq. (38)-(44)).
  On the DDIM ODE these vanish (to rounding): the Taylor step reproduces DDIM.
* :func:`zero` -- zero derivatives: TTM-p with this provider *is* DDIM.
* :func:`head` (``derivative="head"``) -- the ``k`` a network computes in its own forward pass
  (a distilled head attached to the network, which returns ``(eps, k)``); with classifier-free
  guidance eq. (81)'s combination ``(1 + w) k_c - w k_u`` of the two branches' heads.
* :func:`guided_heads` (``derivative=(head_c, head_u)``) -- eq. (81) with two separate heads, each
  called with its own branch's eps.  Eq. (81) is *not* the derivative of the guided eps along the
  guided ODE: each head follows its own model's ODE, so the two differ by
  ``w (1 + w) / sqrt(1 + gamma^2) (J_c - J_u)(eps_u - eps_c)`` (docs/PAPER_ERRATA.md); the exact
  guided derivative is ``derivative="autodiff"`` with ``guidance_scale``.

Providers are bound to the run's :class:`~taylorsolve.diffusion.processes.DiffusionProcess` by the
sampler (:meth:`DerivativeProvider.attach`) and declare their cost per step in model evaluations
(:meth:`DerivativeProvider.overhead`), which NFE budgets use (sec. 5).

All providers accept leading batch dimensions in ``xbar`` (the batch shares ``gamma``).
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..coefficients import RHS, CoefficientBackend
from ..coefficients.autodiff import AutodiffBackend
from ..coefficients.finite_difference import FiniteDifferenceBackend
from ..errors import TaylorSolveError, check_rhs_output, validate_order
from .processes import DiffusionProcess, get_process
from .schedules import Schedule, as_time_tensor, get_schedule

__all__ = [
    "DerivativeProvider",
    "ExactProvider",
    "AutodiffProvider",
    "FusedAutodiffProvider",
    "LearnedProvider",
    "FiniteDifferenceProvider",
    "IdealProvider",
    "ZeroProvider",
    "HeadProvider",
    "GuidedHeadsProvider",
    "IdealPFBackend",
    "AutodiffTerms",
    "exact",
    "autodiff",
    "learned",
    "finite_difference",
    "ideal",
    "zero",
    "head",
    "guided_heads",
    "provider_overhead",
    "get_provider",
    "autodiff_terms",
    "PROVIDER_NAMES",
]


class _Bindable:
    """Mixin: the process the sampler binds (``provider.bind(process)``); default the linear VP process."""

    process: DiffusionProcess | None = None

    def bind(self, spec: DiffusionProcess | Schedule | str | None) -> "_Bindable":
        """Use the process of ``spec`` (a process, a schedule or a name) to map ``gamma -> (x, t)``."""
        self.process = get_process(get_schedule(spec) if isinstance(spec, str) else spec)
        return self

    def attach(self, ctx: Any) -> None:
        """Called by the sampler before a run: bind the run's process (``ctx.process``)."""
        self.bind(ctx.process)

    @property
    def schedule(self) -> Schedule | None:
        """The bound process's schedule (scalar processes)."""
        return getattr(self._process, "schedule", None)

    @schedule.setter
    def schedule(self, value: Any) -> None:
        self.process = None if value is None else get_process(get_schedule(value))

    @property
    def _process(self) -> DiffusionProcess:
        if self.process is None:
            self.process = get_process(None)
        return self.process

    @property
    def _schedule(self) -> Schedule:
        sched = getattr(self._process, "schedule", None)
        if sched is None:
            raise TaylorSolveError(f"the {getattr(self, 'name', 'provider')!r} provider needs a process with a scalar schedule")
        return sched

    def _x_t(self, xbar: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, t)`` of the DDIM-ODE state ``xbar`` at ``gamma`` (``x = alpha_t xbar``, sec. 2)."""
        coords = self._process.coordinates("ddim")
        t = coords.t_of_s(gamma)
        return coords.to_x(xbar, t, gamma), t

    def overhead(self, order: int) -> float:
        """Cost of the derivatives of one TTM-``order`` step, in model evaluations (NFE budgets, sec. 5)."""
        return 0.0


class DerivativeProvider(_Bindable, CoefficientBackend):
    """Base class: ``c_0 = xbar``, ``c_1 = eps = f(gamma, xbar)``, ``c_{k+1} = eps^(k) / (k+1)!``.

    Subclasses implement :meth:`eps_derivatives`.  ``counters.f_evals`` counts the eps evaluations
    made here, ``counters.derivative_evals`` the provider's own evaluations.
    """

    name = "provider"
    #: the highest derivative order ``d^k eps / d gamma^k`` the provider can give (None: any)
    max_derivative: int | None = None

    def __init__(self, schedule: Schedule | str | None = None) -> None:
        CoefficientBackend.__init__(self)
        self.schedule = schedule

    def coefficients(
        self, f: RHS, t: torch.Tensor, y: torch.Tensor, order: int, *, f0: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        order = validate_order(order)
        eps = self.eval_f(f, t, y) if f0 is None else f0
        coeffs = [y, eps]
        n = order - 1
        if n < 1:
            return coeffs
        if self.max_derivative is not None and n > self.max_derivative:
            raise TaylorSolveError(
                f"the {self.name!r} provider gives derivatives up to d^{self.max_derivative} eps/d gamma^"
                f"{self.max_derivative} (TTM order <= {self.max_derivative + 1}); order {order} was asked"
            )
        ders = self.eps_derivatives(f, t, y, eps, n)
        if isinstance(ders, torch.Tensor) or not isinstance(ders, Sequence):
            raise TaylorSolveError(
                f"the {self.name!r} provider must give a list [d eps/d gamma, ...], got {type(ders).__name__}"
            )
        if len(ders) < n:
            raise TaylorSolveError(
                f"the {self.name!r} provider gave {len(ders)} derivatives; TTM order {order} needs {n} "
                f"([d eps/d gamma, ..., d^{n} eps/d gamma^{n}])"
            )
        for k, d in enumerate(ders[:n], start=1):
            d = check_rhs_output(d, y, where=f"the {self.name!r} provider's d^{k} eps/d gamma^{k}")
            coeffs.append(d / math.factorial(k + 1))
        return coeffs

    @abc.abstractmethod
    def eps_derivatives(
        self, f: RHS, gamma: torch.Tensor, xbar: torch.Tensor, eps: torch.Tensor, n: int
    ) -> Sequence[torch.Tensor]:
        """``[d eps/d gamma, ..., d^n eps/d gamma^n]`` at ``(gamma, xbar)`` (``eps`` already known)."""


class ZeroProvider(DerivativeProvider):
    """All derivatives zero: TTM-p with this provider is DDIM (Euler on eq. (6)), at no extra cost."""

    name = "zero"

    def eps_derivatives(self, f, gamma, xbar, eps, n):
        z = torch.zeros_like(eps)
        return [z] * n


class ExactProvider(DerivativeProvider):
    """A closed form ``fn(xbar, gamma, eps, order) -> [d eps/d gamma, ..., d^order eps/d gamma^order]``.

    ``order`` is the highest derivative needed (``p - 1`` for TTM-p); extra entries are ignored.
    With ``includes_eps=True`` the list starts with ``eps`` itself (``[eps, d eps/d gamma, ...]``,
    the convention of ``toy.GaussianMixture.eps_derivatives_closed_form(xbar, gamma, order)``, which
    can be passed as ``lambda xbar, gamma, eps, order: gm.eps_derivatives_closed_form(xbar, gamma, order)``).
    One call counts one derivative evaluation.
    """

    name = "exact"

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], *, includes_eps: bool = False,
                 schedule: Schedule | str | None = None) -> None:
        super().__init__(schedule)
        if not callable(fn):
            raise TaylorSolveError(f"exact(fn) needs a callable fn(xbar, gamma, eps, order), got {type(fn).__name__}")
        self.fn = fn
        self.includes_eps = bool(includes_eps)

    def eps_derivatives(self, f, gamma, xbar, eps, n):
        out = self.fn(xbar, gamma, eps, n)
        self.counters.derivative_evals += 1
        if isinstance(out, torch.Tensor) and n == 1 and not self.includes_eps and out.shape == xbar.shape:
            out = [out]
        if isinstance(out, torch.Tensor) or not isinstance(out, Sequence):
            raise TaylorSolveError(
                f"exact derivative fn must return a list of tensors, got {type(out).__name__}"
            )
        out = list(out)
        return out[1:] if self.includes_eps else out


class LearnedProvider(DerivativeProvider):
    """A learned ``head(x, t, eps) -> d eps/d gamma`` (GENIE's distilled ``k_psi``, sec. 3.1, Alg. 2).

    The head receives ``x_t`` (not ``xbar``), ``t`` (float64 0-d tensor) and the model's
    ``eps_theta(x_t, t)`` (the paper's choice; the released training code fed the true noise during
    distillation, see docs/CONVENTIONS.md).  It gives only the first derivative, so TTM order <= 2.
    """

    name = "learned"
    max_derivative = 1

    def __init__(self, head: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 schedule: Schedule | str | None = None) -> None:
        super().__init__(schedule)
        if not callable(head):
            raise TaylorSolveError(f"learned(head) needs a callable head(x, t, eps), got {type(head).__name__}")
        self.head = head

    def eps_derivatives(self, f, gamma, xbar, eps, n):
        x, t = self._x_t(xbar, gamma)
        d = self.head(x, t, eps)
        self.counters.derivative_evals += 1
        if not isinstance(d, torch.Tensor):
            raise TaylorSolveError(f"the learned head must return a tensor, got {type(d).__name__}")
        if d.dtype != xbar.dtype and torch.is_floating_point(d):
            d = d.to(xbar.dtype)
        return [d]


class IdealProvider(DerivativeProvider):
    r"""The "ideal derivative trick" (app. B.2) on the DDIM ODE.

    Assume the data is the single point ``x_0 = (x_t - sigma_t eps) / alpha_t`` (eq. (41)), so that
    ``eps(x', t') ~ (x' - alpha_{t'} x_0) / sigma_{t'}`` (eq. (38)) with ``d eps/dx = I / sigma`` (eq. (39))
    and ``d eps/dt`` from eq. (42).  The first derivative is eq. (44),

        d eps/d gamma ~ (1/sigma) dx/dgamma + (d log alpha^2/d gamma) / (2 sigma) (eps/sigma - x),

    computed term by term; it cancels to rounding, so TTM-2 with this provider reproduces DDIM.  Higher
    derivatives are those of the same single-point surrogate, which in ``(xbar, gamma)`` reads
    ``eps(xbar', gamma') = (xbar' - x_0) / gamma'`` (nested JVPs; also zero to rounding).
    """

    name = "ideal"

    def eps_derivatives(self, f, gamma, xbar, eps, n):
        self.counters.derivative_evals += 1
        sched = self._schedule
        dt = xbar.dtype
        t = sched.t_from_gamma(gamma)
        g = gamma.to(dt)
        alpha, sigma = (v.to(dt) for v in sched.marginal_params(t))
        if sched.variance_preserving:          # closed forms of sec. 2 / eq. (27)
            one_g2 = 1.0 + g * g
            x = xbar * torch.rsqrt(one_g2)
            dx_dgamma = eps * torch.rsqrt(one_g2) - g / one_g2 * x          # eq. (11)
            dlog_a_dgamma = -g / one_g2                                     # alpha^2 = 1 / (1 + gamma^2)
            dlog_s_dgamma = 1.0 / (g * one_g2)                              # sigma^2 = gamma^2 / (1 + gamma^2)
        else:                                  # x = alpha xbar, any scalar schedule
            dt_dg = sched.dt_dgamma(gamma).to(dt)
            dlog_a_dgamma = (sched.dlog_alpha_dt(t).to(dt)) * dt_dg
            dlog_s_dgamma = (sched.dsigma_dt(t).to(dt) / sigma) * dt_dg
            x = alpha * xbar
            dx_dgamma = alpha * eps + dlog_a_dgamma * x
        x0 = (x - sigma * eps) / alpha                                      # eq. (41)
        # surrogate eps(x', t') = (x' - alpha_t' x0) / sigma_t' (eq. (38)); its total derivative along the ODE:
        jvp_term = dx_dgamma / sigma                                         # eq. (39): d eps/dx = I / sigma
        time_term = -(alpha * dlog_a_dgamma * x0) / sigma - dlog_s_dgamma * eps   # eq. (42) times dt/dgamma
        first = jvp_term + time_term                                         # eq. (44)
        if n == 1:
            return [first]
        x0bar = xbar - g * eps  # eq. (41) in (xbar, gamma): x_0 = xbar - gamma eps

        def surrogate(gam: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
            return (xb - x0bar) / gam.to(xb.dtype)

        coeffs = AutodiffBackend().coefficients(surrogate, gamma, xbar, n + 1, f0=eps)
        return [first] + [coeffs[k + 1] * math.factorial(k + 1) for k in range(2, n + 1)]


class AutodiffProvider(_Bindable, AutodiffBackend):
    """The core ``"autodiff"`` backend used on the DDIM ODE (eq. (12); nested JVPs for app. B.3).

    One step of TTM-p costs one eps evaluation plus, for coefficient ``k + 1``, a nested JVP of
    depth ``k`` (counted in ``counters.jvp_passes``); TTM-2 = GENIE with exactly one JVP pass.
    The schedule enters only through the right-hand side (``t = t(gamma)``), so :meth:`bind` is a no-op.
    """

    name = "autodiff"

    def __init__(self, schedule: Schedule | str | None = None) -> None:
        AutodiffBackend.__init__(self)
        self.schedule = schedule

    def overhead(self, order: int) -> float:
        """One model evaluation per JVP pass (the paper's "additional overhead of 100 %" for TTM-2, sec. 5);
        TTM-p nests JVPs of depth 1..p-1, counted ``p (p - 1) / 2`` passes (the core's convention)."""
        return (order - 1) * order / 2.0


class FusedAutodiffProvider(DerivativeProvider):
    r"""GENIE by autodiff with one ``torch.func.jvp`` per step: eps is the JVP's primal output.

    The tangent of eq. (12) along the DDIM ODE is ``(d gamma, d xbar) = (1, eps)``, and eps is only known
    after a forward pass, so an exact ``d eps/d gamma`` costs a forward pass plus a JVP (the JVP's own
    primal is that same eps again).  This provider instead takes the ``xbar`` tangent from the previous
    step's Taylor prediction ``eps_pred = eps_{n-1} + (gamma_n - gamma_{n-1}) d eps_{n-1}``: one JVP at
    ``(gamma_n, xbar_n)`` then returns the exact ``eps_n`` as its primal and

        d_n = J (eps_pred / ...) + d eps/d gamma|_xbar = d eps/d gamma + J_xbar (eps_pred - eps_n),

    whose error ``J_xbar (eps_pred - eps_n) = O(h^2)`` enters the step as ``h^2 / 2 O(h^2) = O(h^4)``:
    the method stays second order (it is not bit-identical to exact GENIE-AD).  The first step without
    history (and the step after the analytical first step) uses the exact forward + JVP.  Cost per
    step: one JVP pass (about 3.4 forward passes on a GPU U-Net, about 5 here on CPU) instead of one
    forward pass plus one JVP.  Counted as one NFE and one JVP pass per step.
    """

    name = "autodiff_fused"
    max_derivative = 1

    def __init__(self) -> None:
        super().__init__()
        self._prev: tuple[float, torch.Tensor, torch.Tensor] | None = None
        self._boundary: Any = None

    def reset(self) -> None:
        super().reset()
        self._prev = None

    def attach(self, ctx: Any) -> None:
        super().attach(ctx)
        self._boundary = ctx.boundary

    def overhead(self, order: int) -> float:
        return 1.0

    def coefficients(self, f, t, y, order, *, f0=None):
        order = validate_order(order)
        if order > 2:
            raise TaylorSolveError("the fused autodiff provider gives d eps/d gamma only (TTM order <= 2, GENIE)")
        one = torch.ones_like(t)
        if f0 is not None or self._prev is None or order < 2:
            eps = self.eval_f(f, t, y) if f0 is None else f0
            if order < 2:
                return [y, eps]
            _, d = torch.func.jvp(f, (t, y), (one, eps))
        else:
            g_prev, e_prev, d_prev = self._prev
            pred = e_prev + (float(t) - g_prev) * d_prev
            eps, d = torch.func.jvp(f, (t, y), (one, pred))
            if self._boundary is not None:
                x_t, t_d = self._x_t(y, t)
                self._boundary.book_primal(eps, x_t, t_d)
            self.counters.f_evals += 1
        self.counters.derivative_evals += 1
        self.counters.jvp_passes += 1
        self._prev = (float(t), eps, d)
        return [y, eps, d / 2.0]

    def eps_derivatives(self, f, gamma, xbar, eps, n):  # pragma: no cover - coefficients() is overridden
        raise NotImplementedError


class FiniteDifferenceProvider(_Bindable, FiniteDifferenceBackend):
    """The core ``"finite_difference"`` backend on the DDIM ODE: TTM-p = variable-step AB-p in gamma.

    Stateful (keeps the history of eps values); warms up with lower orders.
    """

    name = "finite_difference"

    def __init__(self, schedule: Schedule | str | None = None, **options: Any) -> None:
        FiniteDifferenceBackend.__init__(self, **options)
        self.schedule = schedule


class IdealPFBackend(_Bindable, CoefficientBackend):
    r"""The ideal derivative trick on the probability-flow ODE ``dx/dt = f = -beta/2 (x - eps/sigma)`` (eq. (33)).

    Recovers ``eps = sigma (x + 2 f / beta)`` from ``f``, freezes ``x_0 = (x - sigma eps)/alpha`` and
    differentiates the surrogate right-hand side with ``eps(x', t') = (x' - alpha_{t'} x_0)/sigma_{t'}``
    by nested JVPs.  For TTM-2 this is eq. (51), which does *not* vanish: unlike on the DDIM ODE, the
    trick changes Euler's method on the probability-flow ODE.  (Re-deriving eq. (47) -> (51) gives
    ``-beta^2/(4 sigma)`` as the second eps coefficient; the paper prints ``+``.  The surrogate
    differentiation here matches the corrected sign, checked in ``tests/diffusion/test_providers.py``.)
    """

    name = "ideal_pf"

    def __init__(self, schedule: Schedule | str | None = None) -> None:
        CoefficientBackend.__init__(self)
        self.schedule = schedule

    def coefficients(self, f, t, y, order, *, f0=None):
        order = validate_order(order)
        f0 = self.eval_f(f, t, y) if f0 is None else f0
        if order < 2:
            return [y, f0]
        sched = self._schedule
        tt = as_time_tensor(t)
        a, s, b = (v.to(y.dtype) for v in (sched.alpha(tt), sched.sigma(tt), sched.beta(tt)))
        eps = s * (y + 2.0 * f0 / b)
        x0 = (y - s * eps) / a

        def surrogate(tq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            aq, sq, bq = (v.to(x.dtype) for v in (sched.alpha(tq), sched.sigma(tq), sched.beta(tq)))
            eps_hat = (x - aq * x0) / sq
            return -0.5 * bq * (x - eps_hat / sq)

        inner = AutodiffBackend()
        coeffs = inner.coefficients(surrogate, t, y, order, f0=f0)
        self.counters.derivative_evals += inner.counters.derivative_evals
        return coeffs


class HeadProvider(DerivativeProvider):
    """``derivative="head"``: the ``k ~ d eps/d gamma`` the network computed in its own forward pass.

    The network returns ``(prediction, k)`` (a distilled head attached to it, GENIE sec. 3.1, Fig. 4);
    the model boundary keeps ``k`` of the last evaluation, which is the evaluation of eps at this very
    point.  With classifier-free guidance each branch's head saw its own branch's eps, and the
    derivative is eq. (81): ``(1 + w) k_c - w k_u`` -- not the guided ODE's derivative (module docstring).
    A network with a second head returns ``(prediction, (k1, k2))``, ``k2 ~ d^2 eps/d gamma^2``
    (app. B.3), and TTM-3 runs on heads alone (``order=3``); guided, each order is combined as eq. (81).
    Cost: the network's declared ``overhead`` (all heads together).
    """

    name = "head"
    max_derivative = 2

    def __init__(self) -> None:
        super().__init__()
        self._boundary: Any = None

    def attach(self, ctx: Any) -> None:
        super().attach(ctx)
        self._boundary = ctx.boundary

    def overhead(self, order: int) -> float:
        ov = getattr(getattr(self._boundary, "model", None), "overhead", None)
        return float(ov or 0.0)

    def eps_derivatives(self, f, gamma, xbar, eps, n):
        b = self._boundary
        if b is None:
            raise TaylorSolveError("the 'head' provider is bound to a sampling run by sample(); it cannot be used alone")
        last = b.last
        if last.eps is not eps:
            raise TaylorSolveError("internal: the 'head' provider must follow the evaluation of eps at the same point")
        if last.aux is None:
            raise TaylorSolveError(
                "derivative='head' needs a model that returns (eps, k) with a derivative head "
                "(e.g. images.heads.attach_head(model)); this model returned a single tensor"
            )
        self.counters.derivative_evals += 1

        def orders(aux: Any) -> tuple[torch.Tensor, ...]:
            ks = tuple(aux) if isinstance(aux, (tuple, list)) else (aux,)
            if n > len(ks):
                raise TaylorSolveError(
                    f"derivative='head' with TTM order {n + 1} needs heads for the first {n} derivatives of eps; the "
                    f"model returned {len(ks)} (attach a second-order head: images.heads.attach_head(model, head, head2=...))")
            return ks[:n]

        if b.guidance_scale is None:
            return list(orders(last.aux))
        w = float(b.guidance_scale)
        k_c, k_u = last.aux
        return [(1.0 + w) * c - w * u for c, u in zip(orders(k_c), orders(k_u))]   # eq. (81)


class GuidedHeadsProvider(DerivativeProvider):
    """Eq. (81) with two heads: ``(1 + w) head_c(x, t, eps_c) - w head_u(x, t, eps_u)``.

    Each head is called with its own branch's eps (as it was distilled, Alg. 1); needs
    ``sample(..., cond=..., guidance_scale=w)``.  Not the guided ODE's derivative (module docstring).
    """

    name = "guided_heads"
    max_derivative = 1

    def __init__(self, head_cond: Callable[..., torch.Tensor], head_uncond: Callable[..., torch.Tensor],
                 overhead: float = 0.0) -> None:
        super().__init__()
        if not (callable(head_cond) and callable(head_uncond)):
            raise TaylorSolveError("guided_heads needs two callables head(x, t, eps): (conditional, unconditional)")
        self.head_cond, self.head_uncond = head_cond, head_uncond
        self._overhead = float(overhead)
        self._boundary: Any = None

    def attach(self, ctx: Any) -> None:
        super().attach(ctx)
        self._boundary = ctx.boundary

    def overhead(self, order: int) -> float:
        return self._overhead

    def eps_derivatives(self, f, gamma, xbar, eps, n):
        b = self._boundary
        if b is None or b.guidance_scale is None:
            raise TaylorSolveError("a pair of guided heads (eq. (81)) needs sample(..., cond=..., guidance_scale=w)")
        last = b.last
        if last.eps is not eps or last.branches is None:
            raise TaylorSolveError("internal: guided heads must follow the guided evaluation of eps at the same point")
        x, t = self._x_t(xbar, gamma)
        eps_c, eps_u = last.branches
        k_c = self.head_cond(x, t, eps_c)
        k_u = self.head_uncond(x, t, eps_u)
        self.counters.derivative_evals += 2
        for k in (k_c, k_u):
            if not isinstance(k, torch.Tensor):
                raise TaylorSolveError(f"a guided head must return a tensor, got {type(k).__name__}")
        w = float(b.guidance_scale)
        return [((1.0 + w) * k_c - w * k_u).to(xbar.dtype)]                  # eq. (81)


ProviderSpec = Any

#: names accepted by ``derivative=`` (besides provider instances and callables = learned heads)
PROVIDER_NAMES = ("autodiff", "autodiff_fused", "exact", "learned", "finite_difference", "ideal", "zero", "head")


def exact(fn: Callable[..., Sequence[torch.Tensor]], *, includes_eps: bool = False) -> ExactProvider:
    """Provider from a closed form ``fn(xbar, gamma, eps, order) -> [d eps/d gamma, ..., d^order eps/d gamma^order]``."""
    return ExactProvider(fn, includes_eps=includes_eps)


def autodiff(*, fused: bool = False) -> AutodiffProvider | FusedAutodiffProvider:
    """Provider by forward-mode autodiff through the model (eq. (12)): a forward pass and one JVP per
    GENIE step; ``fused=True``: one JVP per step (:class:`FusedAutodiffProvider`, second order, not exact)."""
    return FusedAutodiffProvider() if fused else AutodiffProvider()


def learned(head: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
            schedule: Schedule | str | None = None) -> LearnedProvider:
    """Provider from a learned ``head(x, t, eps) -> d eps/d gamma`` (e.g. a distilled GENIE head)."""
    return LearnedProvider(head, schedule)


def finite_difference(**options: Any) -> FiniteDifferenceProvider:
    """Provider from the history of eps values (TTM-p = Adams-Bashforth-p in gamma); options of the core backend."""
    return FiniteDifferenceProvider(**options)


def ideal() -> IdealProvider:
    """The ideal derivative trick of app. B.2 (zero to rounding on the DDIM ODE: reproduces DDIM)."""
    return IdealProvider()


def zero() -> ZeroProvider:
    """Zero derivatives: GENIE / TTM-p with it is exactly DDIM."""
    return ZeroProvider()


def head() -> HeadProvider:
    """The derivative head computed inside the network's forward pass (``derivative="head"``)."""
    return HeadProvider()


def guided_heads(head_cond: Callable[..., torch.Tensor], head_uncond: Callable[..., torch.Tensor],
                 overhead: float = 0.0) -> GuidedHeadsProvider:
    """Eq. (81)'s pair of heads, each called with its own branch's eps (``derivative=(head_c, head_u)``)."""
    return GuidedHeadsProvider(head_cond, head_uncond, overhead)


def provider_overhead(provider: CoefficientBackend, order: int) -> float:
    """Cost of a provider's derivatives per TTM-``order`` step in model evaluations (0 if undeclared)."""
    fn = getattr(provider, "overhead", None)
    return float(fn(order)) if callable(fn) else 0.0


def get_provider(spec: ProviderSpec, schedule: DiffusionProcess | Schedule | str | None = None) -> CoefficientBackend:
    """Resolve ``derivative=``: ``None``/``"autodiff"``, ``"zero"``, ``"ideal"``, ``"finite_difference"``,
    ``"head"``, a provider / backend instance, a callable ``head(x, t, eps)`` (wrapped by :func:`learned`)
    or a pair of callables (eq. (81), :func:`guided_heads`).

    Providers that map ``gamma -> t`` are bound to ``schedule`` (a process or a schedule).
    """
    if spec is None:
        spec = "autodiff"
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        table: dict[str, Callable[[], CoefficientBackend]] = {
            "autodiff": autodiff,
            "ad": autodiff,
            "zero": zero,
            "ideal": ideal,
            "finite_difference": finite_difference,
            "fd": finite_difference,
            "head": head,
            "autodiff_fused": lambda: autodiff(fused=True),
        }
        if key not in table:
            raise TaylorSolveError(
                f"unknown derivative provider {spec!r}; use one of 'autodiff', 'zero', 'ideal', "
                f"'finite_difference', a provider (taylorsolve.diffusion.providers.exact(fn), learned(head)) "
                f"or a callable head(x, t, eps)"
            )
        prov = table[key]()
    elif isinstance(spec, CoefficientBackend):
        prov = spec
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and all(callable(h) for h in spec):
        prov = guided_heads(spec[0], spec[1])
    elif callable(spec):
        prov = learned(spec)
    else:
        raise TaylorSolveError(f"derivative= must be a name, a provider or a callable head, got {type(spec).__name__}")
    if isinstance(prov, _Bindable) and schedule is not None:
        prov.bind(schedule)
    return prov


# -- eq. (12), term by term -------------------------------------------------------------------------
@dataclass
class AutodiffTerms:
    r"""The pieces of eq. (12) at one point ``(x_t, t)``.

    ``jvp1 = (d eps/dx) eps`` and ``jvp2 = (d eps/dx) x`` (the raw JVPs), ``time_term =
    (d eps/dt) dt/dgamma``, with ``coef1 = 1/sqrt(1 + gamma^2)`` and ``coef2 = -gamma/(1 + gamma^2)``
    (VP; in general ``alpha_t`` and ``d log(alpha)/d gamma``), so that

        total = coef1 * jvp1 + coef2 * jvp2 + time_term = d eps / d gamma.
    """

    eps: torch.Tensor
    jvp1: torch.Tensor
    jvp2: torch.Tensor
    time_term: torch.Tensor
    coef1: torch.Tensor
    coef2: torch.Tensor
    gamma: torch.Tensor
    dt_dgamma: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.coef1 * self.jvp1 + self.coef2 * self.jvp2 + self.time_term


def autodiff_terms(eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, t: Any,
                   schedule: Schedule | str | None = None) -> AutodiffTerms:
    """The three terms of eq. (12) by three separate forward-mode JVPs (for tests and tutorials).

    ``eps_model(x, t)`` is an eps-prediction (``t`` a float64 0-d tensor).  Costs one evaluation and
    three JVP passes; samplers use :func:`autodiff` instead (one JVP for the sum).
    """
    sched = get_schedule(schedule)
    t = as_time_tensor(t)
    if t.ndim != 0:
        raise TaylorSolveError(f"autodiff_terms needs a scalar time, got shape {tuple(t.shape)}")
    eps = eps_model(x, t)
    fx = lambda x_: eps_model(x_, t)  # noqa: E731
    jvp1 = torch.func.jvp(fx, (x,), (eps,))[1]                         # JVP_1 = (d eps/dx) eps
    jvp2 = torch.func.jvp(fx, (x,), (x,))[1]                           # JVP_2 = (d eps/dx) x
    deps_dt = torch.func.jvp(lambda t_: eps_model(x, t_), (t,), (torch.ones_like(t),))[1]
    gamma = sched.gamma(t)
    dt_dg = sched.dt_dgamma(gamma)
    if getattr(sched, "variance_preserving", True):
        coef1 = torch.rsqrt(1.0 + gamma * gamma)                       # dx/dgamma = coef1 eps + coef2 x, eq. (11)
        coef2 = -gamma / (1.0 + gamma * gamma)
    else:
        coef1 = sched.alpha(t)
        coef2 = sched.dlog_alpha_dt(t) * dt_dg
    dt = x.dtype
    return AutodiffTerms(
        eps=eps, jvp1=jvp1, jvp2=jvp2, time_term=deps_dt * dt_dg.to(dt),
        coef1=coef1.to(dt), coef2=coef2.to(dt), gamma=gamma, dt_dgamma=dt_dg,
    )
