r"""The truncated Taylor family: DDIM, GENIE, TTM-p on the DDIM ODE, TTM-p on the probability-flow ODE, AB-k.

One step of TTM-p from node ``n`` (state ``y``, solver time ``s``) to ``n + 1`` is

    y_{n+1} = sum_{k=0}^{p} c_k h^k,   h = s_{n+1} - s_n,   c_0 = y,  c_1 = dy/ds,  c_{k+1} = (d^k/ds^k dy/ds) / (k+1)!   (eq. (8))

with the coefficients from a core :class:`~taylorsolve.coefficients.CoefficientBackend`: on the DDIM
ODE (``y = xbar``, ``s = gamma``, ``dy/ds = eps``, eq. (6)) the backend is a derivative provider
(:mod:`taylorsolve.diffusion.providers`), so DDIM is TTM-1 (eq. (6)), GENIE TTM-2 (eq. (9)) and
app. B.3's third-order method TTM-3.  With the finite-difference provider TTM-p is the variable-step
``p``-step Adams-Bashforth method in ``gamma`` (sec. 3, "Comparison to Multistep Methods").

Analytical first step (app. F.2): the loop hands the first step ``eps0 = x_1`` (eq. (75)); the step
is then Euler with ``d eps / d gamma ~ 0`` (eq. (76)-(78), Alg. 2).  A finite-difference history
records that analytic value as its first entry.
"""
from __future__ import annotations

from typing import Any, ClassVar


from ...coefficients import CoefficientBackend
from ...stepping import check_coefficients, taylor_step
from ...errors import TaylorSolveError
from ..providers import (
    AutodiffProvider,
    HeadProvider,
    IdealPFBackend,
    ZeroProvider,
    finite_difference,
    get_provider,
    provider_overhead,
)
from ..registry import Sampler, register

__all__ = ["TaylorSampler", "DDIM", "GENIE", "TTM", "TTMProbabilityFlow", "AdamsBashforth"]


class TaylorSampler(Sampler):
    """Base unit of the Taylor family: the coefficient backend is built in :meth:`make_backend`."""

    takes_derivative = True

    def make_backend(self) -> CoefficientBackend:
        return get_provider(self.derivative)

    def setup(self, ctx) -> None:
        be = self.make_backend()
        attach = getattr(be, "attach", None)
        if callable(attach):
            attach(ctx)
        be.reset()
        self.backend = be

    def derivative_overhead(self, model: Any = None) -> float:
        be = self.make_backend()
        if isinstance(be, HeadProvider):
            return float(getattr(model, "overhead", None) or 0.0)
        return provider_overhead(be, self.order)

    def step_order(self, ctx, n: int) -> int:
        """The order used at step ``n`` (multistep units lower it at the end)."""
        return self.order

    def step(self, ctx, n, y, eps0=None):
        be = self.backend
        s, s1 = ctx.s[n], ctx.s[n + 1]
        p = self.step_order(ctx, n)
        if eps0 is not None:
            f0 = ctx.coords.velocity(eps0, y, s, ctx.t[n])
            # AFS: Euler with the analytic eps (eq. (75)-(78)); a history keeps the analytic value
            coeffs = [y, f0] if be.stateless else be.coefficients(ctx.rhs, s, y, p, f0=f0)
        else:
            coeffs = be.coefficients(ctx.rhs, s, y, p)
            if p >= 2:
                ctx.stats.derivative_steps += 1
        check_coefficients(coeffs, len(coeffs) - 1, y, step=n, time_=float(ctx.t[n]))
        return taylor_step(coeffs, s1 - s)

    def finish(self, ctx) -> None:
        c = self.backend.counters
        ctx.stats.derivative_evals += int(c.derivative_evals)
        ctx.stats.jvp_passes += int(getattr(c, "jvp_passes", 0))


@register
class DDIM(TaylorSampler):
    name = "ddim"
    summary = "Euler on the DDIM ODE d xbar/d gamma = eps (eq. (6)) = TTM-1"
    orders = (1,)
    takes_derivative = False

    def make_backend(self) -> CoefficientBackend:
        return ZeroProvider()


@register
class GENIE(TaylorSampler):
    name = "genie"
    summary = "TTM-2 on the DDIM ODE (eq. (9)); d eps/d gamma from a provider (default autodiff, eq. (12))"
    orders = (2,)
    nfe_rule = "steps (the derivative comes from the provider)"


@register
class TTM(TaylorSampler):
    name = "ttm"
    summary = "TTM-p on the DDIM ODE (order=p; p = 3 is app. B.3, eq. (52))"
    orders = None
    nfe_rule = "steps (derivatives from the provider)"


@register
class TTMProbabilityFlow(TaylorSampler):
    name = "ttm-pf"
    aliases = ("ttm_pf",)
    summary = "TTM-p on the probability-flow ODE in t (eq. (33); default p = 2)"
    coordinates = "pf"
    orders = None
    default_order = 2
    exact_on_single_point = False

    def make_backend(self) -> CoefficientBackend:
        d = self.derivative
        if d is None or d == "autodiff":
            return AutodiffProvider()
        if d == "ideal":
            return IdealPFBackend()
        if d == "zero":
            return ZeroProvider()
        if isinstance(d, CoefficientBackend):
            return d
        raise TaylorSolveError(
            "ttm-pf takes derivative='autodiff' (default), 'ideal' (app. B.2, eq. (51)), 'zero' or a "
            f"core backend instance; got {d!r}"
        )

    def validate(self) -> None:
        self.make_backend()


class MultistepMixin:
    """The option ``lower_order_final`` of the multistep units (default off), diffusers' rule.

    diffusers' multistep schedulers (``DPMSolverMultistepScheduler``, ``DEISMultistepScheduler``,
    ``UniPCMultistepScheduler``) take ``N`` steps for ``N`` timesteps, the last one to
    ``final_sigmas_type``: ``"sigma_min"`` (timestep 0's noise level; DEIS always) or ``"zero"``
    (``gamma = 0``; the default of DPM-Solver++ and UniPC).  A step to ``gamma = 0`` is forced to first
    order, and a first-order step to ``gamma = 0`` *is* the final denoising step
    ``x_0 = xbar - gamma eps`` (``h = inf`` in ``lambda``).  So here the steps are counted as

        total = (grid steps) + (1 if denoise=True),

    the denoising step being the final, first-order one, and with ``lower_order_final=True``:

    * the last step (``n = total - 1``, a grid step only without ``denoise``) is first order,
    * the one before (``n = total - 2``) at most second order,

    and only while ``total < lower_order_final_below`` (15, diffusers' DPM-Solver and DEIS; ``None``
    for UniPC, whose scheduler and reference code lower the final orders at any ``N``).  Thus
    ``sample(..., grid=scheduler.timesteps, denoise=True, lower_order_final=True)`` runs diffusers'
    orders for ``final_sigmas_type="zero"`` and ``sample(..., grid=cat(timesteps, [0]))`` those for
    ``"sigma_min"``.  Not offered: DPM-Solver's ``euler_at_final`` (first order at the last step for
    any ``N``); with ``denoise=True`` the last step is first order anyway.
    """

    #: lower the final orders only when the run has fewer steps than this (``None``: always)
    lower_order_final_below: ClassVar[int | None] = 15

    @staticmethod
    def total_steps(ctx) -> int:
        """Steps of the run, the final denoising step included (``ctx.denoise``)."""
        return int(ctx.steps) + int(bool(getattr(ctx, "denoise", False)))

    def lowered_order(self, ctx, n: int, order: int) -> int:
        if not self.opts.get("lower_order_final"):
            return order
        total = self.total_steps(ctx)
        below = type(self).lower_order_final_below
        if below is not None and total >= below:
            return order
        left = total - n                      # steps left, this one included
        if left <= 1:
            return 1
        if left == 2:
            return min(order, 2)
        return order


@register
class AdamsBashforth(MultistepMixin, TaylorSampler):
    name = "adams-bashforth"
    aliases = ("ab", "adams_bashforth")
    summary = "variable-step AB-k on the DDIM ODE in gamma (core finite differences; order=k, default 2)"
    orders = None
    default_order = 2
    takes_derivative = False
    options = {"lower_order_final": False}
    nfe_rule = "steps (history reused)"

    def make_backend(self) -> CoefficientBackend:
        return finite_difference()

    def step_order(self, ctx, n: int) -> int:
        return self.lowered_order(ctx, n, self.order)


def _ensure_registered() -> tuple[Any, ...]:  # pragma: no cover - import side effect only
    return (DDIM, GENIE, TTM, TTMProbabilityFlow, AdamsBashforth)
