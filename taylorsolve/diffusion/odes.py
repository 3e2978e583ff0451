"""The generative differential equations of diffusion models as core right-hand sides ``f(t, y)``.

1. The DDIM ODE (eq. (6), derived in app. A, eq. (17)-(31)): in coordinates
   ``xbar = x / alpha_t`` (``= x sqrt(1 + gamma^2)`` for VP) and time ``gamma = sigma_t / alpha_t``,

       d xbar / d gamma = eps(x, t),    x = xbar / sqrt(1 + gamma^2) (VP) or alpha_t xbar,  t = t(gamma).

   For any schedule ``x = alpha x0 + sigma eps`` gives ``x / alpha = x0 + gamma eps``; the ODE holds
   for general (not only VP) schedules.  The schedule enters only through ``t(gamma)``, the time
   argument of the model (docs/CONVENTIONS.md: in (xbar, gamma) coordinates the ODE does not depend on beta).
   DDIM is Euler's method on it; GENIE the second truncated Taylor method (eq. (9)).

2. The probability-flow ODE (eq. (4), (17)/(18)), for a general schedule with forward SDE
   ``dx = f(t) x dt + g(t) dw`` where ``f = d log alpha / dt`` and ``g^2 = d sigma^2/dt - 2 f sigma^2``:

       dx/dt = f(t) x - 1/2 g(t)^2 score(x, t) = f(t) x + 1/2 g(t)^2 eps(x, t) / sigma_t.

   For VP, ``f = -beta/2``, ``g^2 = beta``: ``dx/dt = -1/2 beta_t (x - eps / sigma_t)`` (eq. (33)).

3. The reverse SDE (eq. (3)): ``dx = [f x - g^2 score] dt + g dw_bar`` run backwards in time; VP:
   ``dx = -1/2 beta [x + 2 score] dt + sqrt(beta) dw_bar``.

Equivalence of 1 and 2 (checked in the tests): with ``xbar = x / alpha``,
``d xbar/dt = (dx/dt) / alpha - f xbar = g^2 eps / (2 sigma alpha)``, and
``d gamma/dt = gamma (sigma'/sigma - f) = g^2 / (2 sigma alpha)``, so ``d xbar/d gamma = eps``.

The right-hand sides keep every time operation differentiable (``t(gamma)`` through the schedule's
differentiable inverse), so the core's forward-mode backends can differentiate them in ``gamma``/``t``:
the total derivative of eq. (10)-(12) comes out of one JVP with tangent ``(dx/dgamma, dt/dgamma)``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from ..errors import TaylorSolveError
from .parameterization import broadcast_to_x
from .schedules import Schedule, as_time_tensor, get_schedule, is_tensor_like

__all__ = [
    "to_xbar",
    "from_xbar",
    "dx_dgamma",
    "ddim_ode_rhs",
    "probability_flow_rhs",
    "reverse_sde",
    "ReverseSDE",
]

EpsFn = Callable[..., torch.Tensor]


def _resolve_schedule(eps_model: Any, schedule: str | Schedule | None) -> Schedule:
    if schedule is None and isinstance(getattr(eps_model, "schedule", None), Schedule):
        return eps_model.schedule
    return get_schedule(schedule)


def _check_eps(eps: Any, x: torch.Tensor) -> torch.Tensor:
    if not is_tensor_like(eps):
        raise TaylorSolveError(f"eps_model must return a torch.Tensor, got {type(eps).__name__}")
    if eps.shape != x.shape:
        raise TaylorSolveError(f"eps_model returned shape {tuple(eps.shape)}, expected {tuple(x.shape)} (the shape of x)")
    return eps if eps.dtype == x.dtype else eps.to(x.dtype)


def to_xbar(x: torch.Tensor, gamma: Any, alpha: Any = None) -> torch.Tensor:
    """``xbar = x sqrt(1 + gamma^2)`` (VP, sec. 2), or ``x / alpha`` when ``alpha`` is given (any schedule)."""
    if alpha is not None:
        return x / broadcast_to_x(alpha, x)
    gamma = as_time_tensor(gamma)
    return x * broadcast_to_x(torch.sqrt(1.0 + gamma * gamma), x)


def from_xbar(xbar: torch.Tensor, gamma: Any, alpha: Any = None) -> torch.Tensor:
    """``x = xbar / sqrt(1 + gamma^2)`` (VP), or ``alpha xbar`` when ``alpha`` is given (any schedule)."""
    if alpha is not None:
        return xbar * broadcast_to_x(alpha, xbar)
    gamma = as_time_tensor(gamma)
    return xbar / broadcast_to_x(torch.sqrt(1.0 + gamma * gamma), xbar)


def dx_dgamma(x: torch.Tensor, eps: torch.Tensor, gamma: Any) -> torch.Tensor:
    """Eq. (11) (VP): ``dx/dgamma = eps / sqrt(1 + gamma^2) - gamma x / (1 + gamma^2)`` along the DDIM ODE.

    With ``dt/dgamma`` (``Schedule.dt_dgamma``) this is the tangent of the one-pass JVP of eq. (12).
    """
    gamma = as_time_tensor(gamma)
    g2 = 1.0 + gamma * gamma
    return eps * broadcast_to_x(1.0 / torch.sqrt(g2), x) - x * broadcast_to_x(gamma / g2, x)


def ddim_ode_rhs(
    eps_model: EpsFn, schedule: str | Schedule | None = None, *, cond: dict | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The DDIM ODE ``d xbar / d gamma = eps(x, t(gamma))`` (eq. (6)) as a core rhs ``f(gamma, xbar)``.

    Args:
        eps_model: ``eps_model(x, t, **cond) -> eps`` (e.g. an :class:`EpsModel`); ``t`` is a float64
            0-d tensor (or ``[B]`` if ``gamma`` is ``[B]``).
        schedule: defaults to ``eps_model.schedule`` if it has one, else the linear VP schedule.
        cond: keyword conditioning passed to every model call.

    ``gamma`` is a 0-d tensor (any float dtype, converted to float64 for ``t(gamma)``) or a
    per-sample vector ``[B]``; ``xbar`` any shape ``[B, ...]``; the result is shaped and typed like
    ``xbar``.  ``x`` is recovered as ``xbar / sqrt(1 + gamma^2)`` for VP schedules and as
    ``alpha_{t(gamma)} xbar`` otherwise.  All operations on ``gamma`` are differentiable.
    """
    sched = _resolve_schedule(eps_model, schedule)
    kw = dict(cond or {})

    def f(gamma: torch.Tensor, xbar: torch.Tensor) -> torch.Tensor:
        g = as_time_tensor(gamma)
        t = sched.t_from_gamma(g)
        if sched.variance_preserving:
            x = from_xbar(xbar, g)
        else:
            x = from_xbar(xbar, g, alpha=sched.alpha(t))
        return _check_eps(eps_model(x, t, **kw), xbar)

    f.schedule = sched  # type: ignore[attr-defined]
    f.__doc__ = "DDIM ODE rhs f(gamma, xbar) = eps(xbar / sqrt(1 + gamma^2), t(gamma)) (eq. (6))"
    return f


def probability_flow_rhs(
    eps_model: EpsFn, schedule: str | Schedule | None = None, *, cond: dict | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The probability-flow ODE as a core rhs ``f(t, x)`` (eq. (4), (18), general schedule).

        dx/dt = f(t) x + 1/2 g(t)^2 eps(x, t) / sigma_t,
        f(t) = d log alpha_t / dt,   g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2,

    which for VP schedules is ``-1/2 beta_t (x - eps / sigma_t)`` (eq. (33)), i.e. eq. (18) with
    ``s_theta = -eps_theta / sigma_t``.  ``t`` is a 0-d tensor (or ``[B]``); the result is shaped and
    typed like ``x``.  Integrate it from ``t = 1`` down to ``t_cutoff``.
    """
    sched = _resolve_schedule(eps_model, schedule)
    kw = dict(cond or {})

    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = as_time_tensor(t)
        eps = _check_eps(eps_model(x, t, **kw), x)
        drift = broadcast_to_x(sched.dlog_alpha_dt(t), x)
        half_g2_over_sigma = broadcast_to_x(0.5 * sched.g2(t) / sched.sigma(t), x)
        return drift * x + half_g2_over_sigma * eps

    f.schedule = sched  # type: ignore[attr-defined]
    return f


class ReverseSDE(NamedTuple):
    """Drift and diffusion of the reverse-time SDE (eq. (3)) for Euler-Maruyama.

    ``drift(t, x) = f(t) x - g(t)^2 score = f(t) x + g(t)^2 eps / sigma_t`` and ``diffusion(t) = g(t)``
    describe ``dx = drift dt + g dw_bar`` integrated *backwards* in time: one Euler-Maruyama step from
    ``t`` to ``t_next < t`` is ``x + drift(t, x) (t_next - t) + g(t) sqrt(t - t_next) z``
    (:meth:`euler_maruyama_step`).  VP: ``drift = -1/2 beta_t (x + 2 score)``, ``g = sqrt(beta_t)``.
    """

    drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    diffusion: Callable[[torch.Tensor], torch.Tensor]

    def euler_maruyama_step(
        self, x: torch.Tensor, t: Any, t_next: Any, noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One Euler-Maruyama step of the reverse SDE from ``t`` to ``t_next`` (``t_next < t``)."""
        t = as_time_tensor(t)
        t_next = as_time_tensor(t_next)
        h = t_next - t
        if (h >= 0).any():
            raise TaylorSolveError(f"the reverse SDE runs backwards in time: need t_next < t, got {float(t_next.max())} >= {float(t.min())}")
        if noise is None:
            noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        return x + broadcast_to_x(h, x) * self.drift(t, x) + broadcast_to_x(self.diffusion(t) * torch.sqrt(-h), x) * noise


def reverse_sde(
    eps_model: EpsFn, schedule: str | Schedule | None = None, *, cond: dict | None = None
) -> ReverseSDE:
    """``ReverseSDE(drift, diffusion)`` of eq. (3) for a general schedule (see :class:`ReverseSDE`)."""
    sched = _resolve_schedule(eps_model, schedule)
    kw = dict(cond or {})

    def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = as_time_tensor(t)
        eps = _check_eps(eps_model(x, t, **kw), x)
        return broadcast_to_x(sched.dlog_alpha_dt(t), x) * x + broadcast_to_x(sched.g2(t) / sched.sigma(t), x) * eps

    def diffusion(t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(sched.g2(as_time_tensor(t)))

    return ReverseSDE(drift, diffusion)
