"""Noise schedules ``(alpha_t, sigma_t)`` of continuous-time diffusion models.

Conventions (GENIE paper, sec. 2 and app. A): time runs from data (``t = 0``) to noise (``t = 1``);
the forward marginals are ``p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` (eq. (1)); variance
preserving (VP) schedules have ``sigma_t^2 = 1 - alpha_t^2``.  Derived quantities:

* ``gamma_t = sigma_t / alpha_t``, the inverse signal-to-noise ratio, the "time" of the DDIM ODE
  ``d xbar / d gamma = eps`` (eq. (6)); for VP schedules ``gamma_t = sqrt((1 - alpha_t^2) / alpha_t^2)``.
* ``lambda_t = log(alpha_t / sigma_t) = -log(gamma_t)``, the (half) log-SNR; decreasing in ``t``.
* ``beta_t = -d log(alpha_t^2) / dt`` (eq. (2)), and for general schedules the coefficients of the
  forward SDE ``dx = f(t) x dt + g(t) dw``: ``f(t) = d log(alpha_t) / dt`` and
  ``g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2`` (for VP: ``f = -beta/2``, ``g^2 = beta``).

All time quantities are float64: every method converts its input with :func:`as_time_tensor`.
Every method is built from differentiable torch operations of its argument, so it can be used
inside ``torch.func.jvp`` (nested, for higher Taylor orders), inside ordinary autograd, and on the
Taylor-mode jets of the core's ``"taylor_mode"`` backend.  In particular
:meth:`Schedule.t_from_gamma` is differentiable in ``gamma`` to all orders for the closed forms
(:class:`LinearVPSchedule`, :class:`CosineVPSchedule`) and, for the generic numerical inverse used
by :class:`CustomSchedule`, to as many orders as there are nested ``torch.func`` transforms (and up
to :attr:`Schedule.refine_steps` = 8 under autograd or jets; see :meth:`Schedule.t_from_log_snr`).
Limitation: the *generic* time derivatives (``dalpha_dt`` etc. of a :class:`CustomSchedule`, used by
the probability-flow ODE and the reverse SDE, not by the DDIM ODE) are computed with
``torch.func.jvp`` and therefore reject jets (clear :class:`TaylorSolveError`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..errors import TaylorSolveError

__all__ = [
    "Schedule",
    "LinearVPSchedule",
    "CosineVPSchedule",
    "CustomSchedule",
    "DiscreteVPSchedule",
    "VESchedule",
    "get_schedule",
    "as_time_tensor",
    "is_tensor_like",
]

_F64 = torch.float64


def is_tensor_like(x: Any) -> bool:
    """True for tensors and tensor-like objects dispatching torch functions (e.g. Taylor-mode jets)."""
    return isinstance(x, torch.Tensor) or (
        hasattr(type(x), "__torch_function__") and hasattr(x, "dtype") and hasattr(x, "shape")
    )


def as_time_tensor(t: Any) -> torch.Tensor:
    """Return ``t`` as a float64 tensor (python numbers, lists, tensors of other dtypes).

    The conversion is differentiable (``Tensor.to``), so dual tensors and Taylor-mode jets (objects
    with ``__torch_function__``, passed through) keep their derivative information.
    """
    if is_tensor_like(t):
        return t if t.dtype == _F64 else t.to(_F64)
    try:
        return torch.as_tensor(t, dtype=_F64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TaylorSolveError(f"cannot convert {type(t).__name__} {t!r} to a float64 time tensor") from exc


def _primal(x: torch.Tensor) -> torch.Tensor:
    """The plain value of ``x`` without any derivative information (functorch levels unwrapped,
    the ``primal`` of a Taylor-mode jet)."""
    if not isinstance(x, torch.Tensor):
        p = getattr(x, "primal", None)
        return p.detach() if isinstance(p, torch.Tensor) else x.detach()
    try:
        functorch = torch._C._functorch
        # unwrap grad/jvp levels only; a vmap-batched tensor's storage has a different shape
        while functorch.is_functorch_wrapped_tensor(x) and not functorch.is_batchedtensor(x):
            x = functorch.get_unwrapped(x)
    except (AttributeError, RuntimeError):  # pragma: no cover - other torch builds
        pass
    return x.detach()


def _n_refine(x: torch.Tensor, max_steps: int) -> int:
    """How many derivative orders may be asked of a function of ``x``: the number of active
    ``torch.func`` transforms for plain tensors, ``max_steps`` under autograd or for tensor subclasses."""
    if type(x) is not torch.Tensor or x.requires_grad:
        return max_steps
    try:
        depth = len(torch._C._functorch.get_interpreter_stack() or [])
    except (AttributeError, RuntimeError):  # pragma: no cover
        return max_steps
    return min(max_steps, depth)


def _derivative(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """Elementwise derivative ``fn'(t)`` of an elementwise function.

    Outside any ``torch.func`` transform and for a plain tensor that does not require grad, one cheap
    reverse-mode pass; otherwise one forward-mode pass (``torch.func.jvp``), which composes with
    outer transforms (nested JVPs for higher Taylor orders) and with autograd.
    """
    if type(t) is torch.Tensor and not t.requires_grad and _n_refine(t, 1) == 0:
        with torch.enable_grad():
            u = t.detach().requires_grad_(True)
            y = fn(u)
            if not (isinstance(y, torch.Tensor) and y.requires_grad):
                return torch.zeros_like(t)
            (g,) = torch.autograd.grad(y.sum(), u, allow_unused=True)
        return torch.zeros_like(t) if g is None else g
    if not isinstance(t, torch.Tensor):
        raise TaylorSolveError(
            f"the generic time derivatives of a schedule use torch.func.jvp, which does not accept "
            f"{type(t).__name__} arguments (e.g. Taylor-mode jets); use the 'autodiff' backend, or a "
            "Schedule subclass with closed-form dalpha_dt/dsigma_dt (and dlog_alpha_dt, g2)"
        )
    return torch.func.jvp(fn, (t,), (torch.ones_like(t),))[1]


class Schedule:
    """Base class of noise schedules; subclasses implement :meth:`alpha` and :meth:`sigma`.

    Subclasses may override any derived quantity with a closed form (more accurate, cheaper).
    Generic implementations here use forward-mode autodiff (``torch.func.jvp``) for derivatives and
    a safeguarded Newton/bisection root finder on ``[0, 1]`` for the inverses.

    Attributes:
        name: short name (``"linear"``, ``"cosine"``, ``"custom"``).
        variance_preserving: whether ``alpha^2 + sigma^2 = 1``; the DDIM ODE then uses
            ``x = xbar / sqrt(1 + gamma^2)`` instead of ``x = alpha_t xbar``.
        refine_steps: number of differentiable chord iterations after the numerical inverse; the
            inverse's derivatives in ``gamma``/``lambda`` are exact up to this order (see
            :meth:`t_from_log_snr`).
    """

    name: str = "schedule"
    variance_preserving: bool = True
    refine_steps: int = 8

    # -- to be provided by subclasses -------------------------------------------------------------
    def alpha(self, t: Any) -> torch.Tensor:
        """Signal scale ``alpha_t`` (eq. (1))."""
        raise NotImplementedError

    def sigma(self, t: Any) -> torch.Tensor:
        """Noise scale ``sigma_t`` (eq. (1))."""
        raise NotImplementedError

    # -- derived quantities -----------------------------------------------------------------------
    def marginal_params(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` of ``p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` (eq. (1))."""
        return self.alpha(t), self.sigma(t)

    def gamma(self, t: Any) -> torch.Tensor:
        """Inverse SNR ``gamma_t = sigma_t / alpha_t`` (sec. 2, the time variable of eq. (6))."""
        t = as_time_tensor(t)
        return self.sigma(t) / self.alpha(t)

    def log_snr(self, t: Any) -> torch.Tensor:
        """``lambda_t = log(alpha_t / sigma_t) = -log gamma_t`` (half the log-SNR of sec. 2)."""
        t = as_time_tensor(t)
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_from_gamma(self, gamma: Any) -> torch.Tensor:
        """Inverse of :meth:`gamma`: the ``t`` with ``gamma_t = gamma``; differentiable in ``gamma``."""
        gamma = as_time_tensor(gamma)
        return self.t_from_log_snr(-torch.log(gamma))

    def t_from_log_snr(self, lam: Any) -> torch.Tensor:
        """Inverse of :meth:`log_snr` (generic, vectorised, on ``[0, 1]``).

        The root of ``lambda(t) = lam`` is found on detached values by a safeguarded Newton
        iteration (Newton steps that leave the current bracket are replaced by bisection).  The
        result ``t*`` carries no derivative, so it is followed by :attr:`refine_steps` chord
        iterations ``t <- t - (lambda(t) - lam) / lambda'(t*)`` made of differentiable torch
        operations of ``lam``.  At the primal level these leave ``t*`` unchanged (to rounding); as
        functions of ``lam`` each iteration gains one order of contact with the true inverse, so
        after ``k`` iterations all derivatives up to order ``k`` are exact.  This works under
        ``torch.func.jvp`` (nested), reverse-mode autograd and any tensor type whose
        ``detach()`` drops derivative information.  The number of iterations is the number of
        active ``torch.func`` transforms (none for a plain call), or :attr:`refine_steps` when
        ``lam`` requires grad or is a tensor subclass (e.g. a Taylor-mode jet).

        Raises :class:`TaylorSolveError` when ``lam`` lies outside ``[lambda(1), lambda(0)]``.
        """
        lam = as_time_tensor(lam)
        t_star = self._solve_log_snr(_primal(lam))
        n_refine = _n_refine(lam, self.refine_steps)
        if n_refine <= 0:
            return t_star
        with torch.no_grad():
            slope = _primal(self.dlog_snr_dt(t_star))
        t = t_star
        for _ in range(n_refine):
            t = t - (self.log_snr(t) - lam) / slope
        return t

    def _solve_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        """Vectorised safeguarded Newton/bisection for ``lambda(t) = lam`` on ``t in [0, 1]``."""
        with torch.no_grad():
            if not torch.isfinite(lam).all():
                raise TaylorSolveError("cannot invert the schedule at a non-finite log-SNR / gamma")
            one = torch.ones((), dtype=_F64)
            lam_1 = self.log_snr(one).detach()
            lam_0 = self.log_snr(torch.zeros((), dtype=_F64)).detach()
            if torch.isnan(lam_0):
                lam_0 = torch.tensor(math.inf, dtype=_F64)
            tol = 1e-12 * max(1.0, float(lam_1.abs()))
            if (lam < lam_1 - tol).any() or (lam > lam_0 + 1e-12 * max(1.0, abs(float(lam_0)))).any():
                bad = lam[(lam < lam_1 - tol) | (lam > lam_0)]
                raise TaylorSolveError(
                    f"log-SNR {float(bad.flatten()[0])!r} (gamma {math.exp(-float(bad.flatten()[0])):.6g}) "
                    f"is outside the range of the schedule on t in [0, 1]: "
                    f"lambda(1) = {float(lam_1):.6g}, lambda(0) = {float(lam_0):.6g}"
                )
            lo = torch.zeros_like(lam)
            hi = torch.ones_like(lam)
            t = torch.full_like(lam, 0.5)
            done = torch.zeros_like(lam, dtype=torch.bool)
            eps = torch.finfo(_F64).eps
            for _ in range(300):
                val = self.log_snr(t)
                r = val - lam
                lo = torch.where(r > 0, t, lo)  # lambda decreasing: lambda(t) > lam -> root right of t
                hi = torch.where(r < 0, t, hi)
                # Newton with a one-sided difference quotient (relative step 1e-7, stays inside (0, 1]);
                # its ~1e-7 relative slope error only slows the quadratic convergence to a
                # 1e-7-per-step linear one.  Plain evaluations are far cheaper than forward-mode AD.
                t_b = t * (1.0 - 1e-7)
                der = (val - self.log_snr(t_b)) / (t - t_b)
                newton = t - r / der
                ok = torch.isfinite(newton) & (newton > lo) & (newton < hi)
                t_new = torch.where(ok, newton, 0.5 * (lo + hi))
                t_new = torch.where(r == 0, t, t_new)
                step_small = (t_new - t).abs() <= 4 * eps * t.abs() + 1e-300
                bracket_small = (hi - lo) <= 4 * eps * hi.abs() + 1e-300
                done = done | step_small | bracket_small | (r == 0)
                t = torch.where(done, t, t_new)
                if bool(done.all()):
                    break
            return t

    # -- derivatives ------------------------------------------------------------------------------
    def dalpha_dt(self, t: Any) -> torch.Tensor:
        """``d alpha_t / dt`` (forward-mode autodiff unless overridden)."""
        return _derivative(self.alpha, as_time_tensor(t))

    def dsigma_dt(self, t: Any) -> torch.Tensor:
        """``d sigma_t / dt`` (forward-mode autodiff unless overridden)."""
        return _derivative(self.sigma, as_time_tensor(t))

    def dgamma_dt(self, t: Any) -> torch.Tensor:
        """``d gamma_t / dt``."""
        return _derivative(self.gamma, as_time_tensor(t))

    def dlog_snr_dt(self, t: Any) -> torch.Tensor:
        """``d lambda_t / dt`` (negative)."""
        return _derivative(self.log_snr, as_time_tensor(t))

    def dt_dgamma(self, gamma: Any) -> torch.Tensor:
        """``dt / d gamma = 1 / (d gamma_t / dt)`` at ``t = t(gamma)`` (generic form of eq. (67))."""
        gamma = as_time_tensor(gamma)
        return 1.0 / self.dgamma_dt(self.t_from_gamma(gamma))

    def dlog_alpha_dt(self, t: Any) -> torch.Tensor:
        """Drift coefficient ``f(t) = d log(alpha_t) / dt`` of the forward SDE ``dx = f x dt + g dw``."""
        t = as_time_tensor(t)
        return self.dalpha_dt(t) / self.alpha(t)

    def beta(self, t: Any) -> torch.Tensor:
        """``beta_t = -d log(alpha_t^2) / dt = -2 f(t)`` (eq. (2))."""
        return -2.0 * self.dlog_alpha_dt(t)

    def g2(self, t: Any) -> torch.Tensor:
        """Squared diffusion coefficient ``g(t)^2 = d sigma_t^2/dt - 2 f(t) sigma_t^2``.

        Derivation: ``x_t = alpha_t x_0 + sigma_t eps`` solves ``dx = f x dt + g dw`` iff
        ``alpha' = f alpha`` and ``d sigma^2/dt = 2 f sigma^2 + g^2``.  For VP schedules
        ``g^2 = beta_t`` (eq. (2)).
        """
        t = as_time_tensor(t)
        sigma = self.sigma(t)
        return 2.0 * sigma * self.dsigma_dt(t) - 2.0 * self.dlog_alpha_dt(t) * sigma**2

    # -- checks -----------------------------------------------------------------------------------
    def validate(self, n: int = 257) -> None:
        """Check on ``n`` points of ``(0, 1]`` that alpha, sigma are finite and positive and that the
        log-SNR is strictly decreasing (needed for the inverses); raise :class:`TaylorSolveError`."""
        t = torch.linspace(0.0, 1.0, n, dtype=_F64)[1:]
        with torch.no_grad():
            try:
                a, s = self.alpha(t), self.sigma(t)
            except Exception as exc:  # noqa: BLE001 - user callables may raise anything
                raise TaylorSolveError(f"schedule {self.name!r}: alpha/sigma failed on a float64 time vector: {exc}") from exc
            for nm, v in (("alpha", a), ("sigma", s)):
                if not isinstance(v, torch.Tensor) or v.shape != t.shape:
                    got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                    raise TaylorSolveError(
                        f"schedule {self.name!r}: {nm}(t) must return a tensor shaped like t "
                        f"(expected {tuple(t.shape)}, got {got})"
                    )
                bad = ~(torch.isfinite(v) & (v > 0))
                if bad.any():
                    i = int(torch.nonzero(bad)[0])
                    raise TaylorSolveError(
                        f"schedule {self.name!r}: {nm}(t) must be finite and > 0 on (0, 1]; "
                        f"{nm}({float(t[i]):.6g}) = {float(v[i])!r}"
                    )
            lam = torch.log(a) - torch.log(s)
            d = torch.diff(lam)
            if not (d < 0).all():
                i = int(torch.nonzero(d >= 0)[0])
                raise TaylorSolveError(
                    f"schedule {self.name!r}: the log-SNR log(alpha/sigma) must decrease strictly in t; "
                    f"it does not between t = {float(t[i]):.6g} and t = {float(t[i + 1]):.6g}"
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearVPSchedule(Schedule):
    """VP schedule with linear ``beta(t) = beta_0 + (beta_1 - beta_0) t`` (app. C.1; default 0.1, 20).

    ``-log alpha_t^2 = L(t) = beta_0 t + (beta_1 - beta_0) t^2 / 2``, ``sigma_t^2 = 1 - alpha_t^2``,
    ``gamma_t^2 = e^{L(t)} - 1``.  Closed-form inverse: ``L = log(1 + gamma^2)`` and
    ``t = 2 L / (beta_0 + sqrt(beta_0^2 + 2 (beta_1 - beta_0) L))`` (the stable root of the
    quadratic), and

        dt/dgamma = 2 gamma / ((1 + gamma^2) sqrt(beta_0^2 + 2 (beta_1 - beta_0) log(1 + gamma^2)))

    which for ``beta_0 = 0.1, beta_1 = 20`` is eq. (67).  Closed forms are not range-checked: a
    ``gamma`` beyond ``gamma_1`` gives the formula's extrapolation ``t > 1``.
    """

    name = "linear"
    variance_preserving = True

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0):
        beta_0, beta_1 = float(beta_0), float(beta_1)
        if not (math.isfinite(beta_0) and math.isfinite(beta_1)) or beta_0 < 0 or beta_1 <= 0:
            raise TaylorSolveError(
                f"LinearVPSchedule needs finite beta_0 >= 0 and beta_1 > 0 (beta(t) > 0 on (0, 1]); "
                f"got beta_0={beta_0!r}, beta_1={beta_1!r}"
            )
        self.beta_0 = beta_0
        self.beta_1 = beta_1
        self._d = beta_1 - beta_0

    def __repr__(self) -> str:
        return f"LinearVPSchedule(beta_0={self.beta_0!r}, beta_1={self.beta_1!r})"

    def integrated_beta(self, t: Any) -> torch.Tensor:
        """``L(t) = int_0^t beta = -log alpha_t^2 = beta_0 t + (beta_1 - beta_0) t^2 / 2``."""
        t = as_time_tensor(t)
        return self.beta_0 * t + 0.5 * self._d * t * t

    def alpha(self, t: Any) -> torch.Tensor:
        return torch.exp(-0.5 * self.integrated_beta(t))

    def sigma(self, t: Any) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def gamma(self, t: Any) -> torch.Tensor:
        return torch.sqrt(torch.expm1(self.integrated_beta(t)))

    def log_snr(self, t: Any) -> torch.Tensor:
        return -0.5 * torch.log(torch.expm1(self.integrated_beta(t)))

    def _t_from_L(self, L: torch.Tensor) -> torch.Tensor:
        return 2.0 * L / (self.beta_0 + torch.sqrt(self.beta_0**2 + 2.0 * self._d * L))

    def t_from_gamma(self, gamma: Any) -> torch.Tensor:
        gamma = as_time_tensor(gamma)
        return self._t_from_L(torch.log1p(gamma * gamma))

    def t_from_log_snr(self, lam: Any) -> torch.Tensor:
        lam = as_time_tensor(lam)
        return self._t_from_L(torch.log1p(torch.exp(-2.0 * lam)))

    def dt_dgamma(self, gamma: Any) -> torch.Tensor:
        """Eq. (67), generalised to any ``beta_0, beta_1``."""
        gamma = as_time_tensor(gamma)
        g2 = gamma * gamma
        return 2.0 * gamma / ((1.0 + g2) * torch.sqrt(self.beta_0**2 + 2.0 * self._d * torch.log1p(g2)))

    def beta(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return self.beta_0 + self._d * t

    def dlog_alpha_dt(self, t: Any) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def dalpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return -0.5 * self.beta(t) * self.alpha(t)

    def dsigma_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        a = self.alpha(t)
        return 0.5 * self.beta(t) * a * a / self.sigma(t)

    def g2(self, t: Any) -> torch.Tensor:
        return self.beta(t)


class CosineVPSchedule(Schedule):
    """Cosine VP schedule of Nichol & Dhariwal (2021), continuous time, normalised to ``alpha_0 = 1``.

    ``alpha_t = cos(phi(t)) / cos(phi_0)`` with ``phi(t) = (pi/2) (t_end t + s) / (1 + s)`` and
    ``phi_0 = phi(0)``; ``sigma_t^2 = 1 - alpha_t^2 = sin(phi - phi_0) sin(phi + phi_0) / cos^2 phi_0``.

    The untruncated formula has ``alpha = 0`` (``gamma = inf``) at the end of its time range, where no
    ODE can start, so the physical time ``t_end t`` is stopped at ``t_end = 0.9946`` (the choice of
    DPM-Solver for this schedule; ``gamma_1 ~ 119``, close to the linear schedule's ``~152``).
    ``t in [0, 1]`` keeps the package-wide convention.  Closed-form inverse:
    ``tan phi = sqrt(sin^2 phi_0 + gamma^2) / cos phi_0`` and, written without cancellation,
    ``phi - phi_0 = atan((tan phi - tan phi_0) / (1 + tan phi tan phi_0))`` with
    ``tan phi - tan phi_0 = gamma^2 / (cos phi_0 (sqrt(sin^2 phi_0 + gamma^2) + sin phi_0))``.
    """

    name = "cosine"
    variance_preserving = True

    def __init__(self, s: float = 0.008, t_end: float = 0.9946):
        s, t_end = float(s), float(t_end)
        if not (math.isfinite(s) and s > 0):
            raise TaylorSolveError(f"CosineVPSchedule needs s > 0 (so that sigma_t > 0 for t > 0), got {s!r}")
        if not (0.0 < t_end < 1.0):
            raise TaylorSolveError(
                f"CosineVPSchedule needs 0 < t_end < 1 (alpha would vanish at t_end = 1), got {t_end!r}"
            )
        self.s = s
        self.t_end = t_end
        self._phi0 = 0.5 * math.pi * s / (1.0 + s)
        self._c0 = math.cos(self._phi0)
        self._s0 = math.sin(self._phi0)
        self._dphi = 0.5 * math.pi * t_end / (1.0 + s)  # d phi / dt

    def __repr__(self) -> str:
        return f"CosineVPSchedule(s={self.s!r}, t_end={self.t_end!r})"

    def _phi_minus_phi0(self, t: torch.Tensor) -> torch.Tensor:
        return self._dphi * t

    def alpha(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return torch.cos(self._phi0 + self._dphi * t) / self._c0

    def _sigma_c0(self, t: torch.Tensor) -> torch.Tensor:
        dphi = self._dphi * t
        return torch.sqrt(torch.sin(dphi) * torch.sin(dphi + 2.0 * self._phi0))

    def sigma(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return self._sigma_c0(t) / self._c0

    def gamma(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return self._sigma_c0(t) / torch.cos(self._phi0 + self._dphi * t)

    def log_snr(self, t: Any) -> torch.Tensor:
        return -torch.log(self.gamma(t))

    def t_from_gamma(self, gamma: Any) -> torch.Tensor:
        gamma = as_time_tensor(gamma)
        g2 = gamma * gamma
        root = torch.sqrt(self._s0**2 + g2)
        diff_tan = g2 / (self._c0 * (root + self._s0))  # tan(phi) - tan(phi_0)
        tan_phi = root / self._c0
        dphi = torch.atan(diff_tan / (1.0 + tan_phi * (self._s0 / self._c0)))
        return dphi / self._dphi

    def t_from_log_snr(self, lam: Any) -> torch.Tensor:
        lam = as_time_tensor(lam)
        return self.t_from_gamma(torch.exp(-lam))

    def dlog_alpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return -torch.tan(self._phi0 + self._dphi * t) * self._dphi

    def dalpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return -torch.sin(self._phi0 + self._dphi * t) * (self._dphi / self._c0)

    def dsigma_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return -self.alpha(t) * self.dalpha_dt(t) / self.sigma(t)

    def g2(self, t: Any) -> torch.Tensor:
        return self.beta(t)


class CustomSchedule(Schedule):
    """Any user pair ``alpha_fn(t), sigma_fn(t)`` (float64 tensors in, same shape out).

    ``alpha^2 + sigma^2 = 1`` is *not* required (``variance_preserving`` is detected numerically on the
    validation grid), but ``alpha, sigma`` must be finite and positive on ``(0, 1]`` and the log-SNR
    must decrease strictly (checked at construction unless ``validate=False``).  Derivatives use
    forward-mode autodiff through the callables, and the inverses the generic root finder of
    :meth:`Schedule.t_from_log_snr`; so the callables should be written with differentiable torch
    operations for derivative-based solvers to work.
    """

    name = "custom"

    def __init__(
        self,
        alpha_fn: Callable[[torch.Tensor], torch.Tensor],
        sigma_fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        name: str = "custom",
        validate: bool = True,
        refine_steps: int = 8,
    ):
        if not callable(alpha_fn) or not callable(sigma_fn):
            raise TaylorSolveError("CustomSchedule needs two callables alpha_fn(t) and sigma_fn(t)")
        self._alpha_fn = alpha_fn
        self._sigma_fn = sigma_fn
        self.name = name
        self.refine_steps = int(refine_steps)
        self.variance_preserving = False
        if validate:
            self.validate()
            t = torch.linspace(0.0, 1.0, 65, dtype=_F64)[1:]
            with torch.no_grad():
                a, s = self.alpha(t), self.sigma(t)
                self.variance_preserving = bool(((a * a + s * s - 1.0).abs() < 1e-12).all())

    def __repr__(self) -> str:
        return f"CustomSchedule(name={self.name!r}, variance_preserving={self.variance_preserving})"

    def alpha(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        out = self._alpha_fn(t)
        return out if isinstance(out, torch.Tensor) and out.dtype == _F64 else as_time_tensor(out)

    def sigma(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        out = self._sigma_fn(t)
        return out if isinstance(out, torch.Tensor) and out.dtype == _F64 else as_time_tensor(out)


def _segment(knots_ascending: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Index ``k`` of the segment ``[knots[k], knots[k+1]]`` holding ``value`` (clamped to the ends).

    Found on the detached value, so the piecewise-linear formulas built on it stay differentiable in
    ``value`` (under autograd, ``torch.func`` transforms and Taylor-mode jets).
    """
    v = _primal(value).to(_F64)
    idx = torch.searchsorted(knots_ascending, v.reshape(-1).contiguous(), right=True) - 1
    idx = idx.clamp(0, knots_ascending.numel() - 2)
    return idx.reshape(v.shape)


class DiscreteVPSchedule(Schedule):
    r"""VP schedule of a discrete-time model, from its table ``alphas_cumprod`` (``abar_n``, ``n = 0..N-1``).

    Timestep ``n`` sits at ``t_n = (n + 1) / N`` with ``alpha_{t_n}^2 = abar_n``; between the knots
    ``log alpha_t`` is linear in ``t`` (the continuous interpolation DPM-Solver uses for discrete
    models, Lu et al. 2022, app. D), and on ``[0, 1/N]`` it runs linearly from ``log alpha_0 = 0``
    (the data) to ``log alpha_{1/N}``, so that "one step past timestep 0" is ``alpha = 1``: the last
    step of diffusers' ``DDIMScheduler`` with ``set_alpha_to_one=True``.  A model trained on the table
    takes the continuous timestep ``t N - 1`` (:meth:`timestep`), which equals ``n`` at the knots.

    ``gamma``, its inverse and ``dt/dgamma`` are closed forms per segment; ``beta(t) = -2 d log alpha/dt``
    is piecewise constant.

    Raises:
        TaylorSolveError: ``alphas_cumprod`` not 1-D with at least 2 entries, not finite, outside
            ``(0, 1)``, or not strictly decreasing.
    """

    name = "discrete"
    variance_preserving = True

    def __init__(self, alphas_cumprod: Any):
        try:
            abar = torch.as_tensor(alphas_cumprod).detach().to(device="cpu", dtype=_F64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TaylorSolveError(f"alphas_cumprod cannot be converted to a float64 tensor: {exc}") from exc
        if abar.ndim != 1 or abar.numel() < 2:
            raise TaylorSolveError(f"alphas_cumprod must be a 1-D table with at least 2 entries, got shape {tuple(abar.shape)}")
        if not bool(torch.isfinite(abar).all()):
            raise TaylorSolveError("alphas_cumprod contains NaN or Inf")
        if bool((abar <= 0).any()) or bool((abar >= 1).any()):
            i = int(torch.nonzero((abar <= 0) | (abar >= 1))[0])
            raise TaylorSolveError(
                f"alphas_cumprod must lie in (0, 1) (alpha_bar = 1 would mean no noise at a timestep); "
                f"alphas_cumprod[{i}] = {float(abar[i])!r}"
            )
        d = torch.diff(abar)
        if not bool((d < 0).all()):
            i = int(torch.nonzero(d >= 0)[0])
            raise TaylorSolveError(
                f"alphas_cumprod must be strictly decreasing in (0, 1); it does not decrease between "
                f"timestep {i} ({float(abar[i])!r}) and {i + 1} ({float(abar[i + 1])!r})"
            )
        self.alphas_cumprod = abar
        self.num_timesteps = int(abar.numel())
        n = self.num_timesteps
        self._t_knots = torch.arange(n + 1, dtype=_F64) / n                         # 0, 1/N, ..., 1
        self._la_knots = torch.cat([torch.zeros(1, dtype=_F64), 0.5 * torch.log(abar)])  # log alpha
        self._neg_la = -self._la_knots                                               # ascending
        self._slope = torch.diff(self._la_knots) * n                                 # d log alpha/dt per segment

    def __repr__(self) -> str:
        return f"DiscreteVPSchedule(num_timesteps={self.num_timesteps})"

    # -- the time convention of discrete models ----------------------------------------------------
    def timestep(self, t: Any) -> torch.Tensor:
        """The model's continuous timestep ``t N - 1`` (``n`` at the knot ``t_n = (n + 1)/N``)."""
        return as_time_tensor(t) * self.num_timesteps - 1.0

    def t_of_timestep(self, n: Any) -> torch.Tensor:
        """``t_n = (n + 1) / N`` for (integer or continuous) timesteps ``n``."""
        return (as_time_tensor(n) + 1.0) / self.num_timesteps

    # -- alpha, sigma --------------------------------------------------------------------------------
    def log_alpha(self, t: Any) -> torch.Tensor:
        """Piecewise-linear ``log alpha_t`` (see the class docstring)."""
        t = as_time_tensor(t)
        k = _segment(self._t_knots, t)
        return self._la_knots[k] + self._slope[k] * (t - self._t_knots[k])

    def alpha(self, t: Any) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Any) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def gamma(self, t: Any) -> torch.Tensor:
        return torch.sqrt(torch.expm1(-2.0 * self.log_alpha(t)))

    def log_snr(self, t: Any) -> torch.Tensor:
        return -0.5 * torch.log(torch.expm1(-2.0 * self.log_alpha(t)))

    def t_from_gamma(self, gamma: Any) -> torch.Tensor:
        gamma = as_time_tensor(gamma)
        la = -0.5 * torch.log1p(gamma * gamma)
        k = _segment(self._neg_la, -la)
        return self._t_knots[k] + (la - self._la_knots[k]) / self._slope[k]

    def t_from_log_snr(self, lam: Any) -> torch.Tensor:
        return self.t_from_gamma(torch.exp(-as_time_tensor(lam)))

    def dlog_alpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return self._slope[_segment(self._t_knots, t)] + 0.0 * t

    def dalpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return self.alpha(t) * self.dlog_alpha_dt(t)

    def dsigma_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        a = self.alpha(t)
        return -a * a * self.dlog_alpha_dt(t) / self.sigma(t)

    def dgamma_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return -self.dlog_alpha_dt(t) / (self.alpha(t) ** 2 * self.gamma(t))

    def dt_dgamma(self, gamma: Any) -> torch.Tensor:
        gamma = as_time_tensor(gamma)
        t = self.t_from_gamma(gamma)
        return -(1.0 / (1.0 + gamma * gamma)) * gamma / self.dlog_alpha_dt(t)

    def g2(self, t: Any) -> torch.Tensor:
        return self.beta(t)


class VESchedule(Schedule):
    r"""Variance-exploding schedule: ``alpha_t = 1``, ``sigma_t = sigma_min^(1 - t) sigma_max^t``.

    The score-SDE VE process (Song et al. 2021) and the EDM noise levels (Karras et al. 2022) in the
    package's time convention ``t in (0, 1]``; ``gamma_t = sigma_t`` is EDM's ``sigma``, so the
    ``"edm"`` grid (uniform in ``gamma^(1/rho)``) is EDM's time discretisation.  The DDIM ODE is
    ``dx / d sigma = eps`` (eq. (6) with ``xbar = x``); the prior is ``N(0, sigma_max^2 I)``.
    """

    name = "ve"
    variance_preserving = False

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0.0 < sigma_min < sigma_max):
            raise TaylorSolveError(f"VESchedule needs 0 < sigma_min < sigma_max (finite); got {sigma_min!r}, {sigma_max!r}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_min = math.log(sigma_min)
        self._log_ratio = math.log(sigma_max / sigma_min)

    def __repr__(self) -> str:
        return f"VESchedule(sigma_min={self.sigma_min!r}, sigma_max={self.sigma_max!r})"

    def alpha(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return torch.ones_like(t) + 0.0 * t

    def sigma(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return torch.exp(self._log_min + self._log_ratio * t)

    def gamma(self, t: Any) -> torch.Tensor:
        return self.sigma(t)

    def log_snr(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return -(self._log_min + self._log_ratio * t)

    def t_from_gamma(self, gamma: Any) -> torch.Tensor:
        gamma = as_time_tensor(gamma)
        return (torch.log(gamma) - self._log_min) / self._log_ratio

    def t_from_log_snr(self, lam: Any) -> torch.Tensor:
        lam = as_time_tensor(lam)
        return (-lam - self._log_min) / self._log_ratio

    def dalpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return 0.0 * t

    def dlog_alpha_dt(self, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        return 0.0 * t

    def dsigma_dt(self, t: Any) -> torch.Tensor:
        return self._log_ratio * self.sigma(t)

    def dgamma_dt(self, t: Any) -> torch.Tensor:
        return self.dsigma_dt(t)

    def dt_dgamma(self, gamma: Any) -> torch.Tensor:
        gamma = as_time_tensor(gamma)
        return 1.0 / (self._log_ratio * gamma)

    def g2(self, t: Any) -> torch.Tensor:
        s = self.sigma(t)
        return 2.0 * self._log_ratio * s * s


_NAMES: dict[str, Callable[..., Schedule]] = {
    "linear": LinearVPSchedule,
    "linear_vp": LinearVPSchedule,
    "vp": LinearVPSchedule,
    "cosine": CosineVPSchedule,
    "cosine_vp": CosineVPSchedule,
    "ve": VESchedule,
    "edm": VESchedule,
}


def get_schedule(name_or_obj: str | Schedule | None = None, **kwargs: Any) -> Schedule:
    """A :class:`Schedule` from a name (``"linear"`` (default for ``None``), ``"cosine"``) or itself.

    ``kwargs`` go to the constructor of a named schedule (e.g. ``beta_1=20.0``).
    """
    if name_or_obj is None:
        name_or_obj = "linear"
    if isinstance(name_or_obj, Schedule):
        if kwargs:
            raise TaylorSolveError(f"schedule options {sorted(kwargs)} cannot be applied to a Schedule instance")
        return name_or_obj
    if isinstance(name_or_obj, str) and name_or_obj.lower() in _NAMES:
        return _NAMES[name_or_obj.lower()](**kwargs)
    raise TaylorSolveError(
        f"unknown schedule {name_or_obj!r}; use 'linear', 'cosine', 've' or a Schedule instance "
        f"(e.g. CustomSchedule(alpha_fn, sigma_fn))"
    )
