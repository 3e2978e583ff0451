r"""Gaussian mixtures whose diffused densities, scores and DDIM-ODE derivatives are known exactly.

Diffusion conventions (GENIE paper, sec. 2 and app. A; ``docs/CONVENTIONS.md``)
-------------------------------------------------------------------------------
VP diffusion ``x_t = alpha_t x_0 + sigma_t eps`` with ``eps ~ N(0, I)``; time runs from data (t = 0)
to noise (t = 1).  ``gamma_t = sigma_t / alpha_t`` and ``xbar_t = x_t / alpha_t = x_t sqrt(1 + gamma_t^2)``
(VP: ``alpha = 1/sqrt(1+gamma^2)``, ``sigma = gamma/sqrt(1+gamma^2)``).

A mixture ``p_0 = sum_k w_k N(m_k, S_k)`` diffuses component by component:

    p_t(x) = sum_k w_k N(x; alpha_t m_k, alpha_t^2 S_k + sigma_t^2 I),

so with ``C_k(t) = alpha_t^2 S_k + sigma_t^2 I`` and the responsibilities
``r_k(x, t) = softmax_k(log w_k + log N(x; alpha_t m_k, C_k(t)))``

    score(x, t) = grad_x log p_t(x) = - sum_k r_k C_k^{-1} (x - alpha_t m_k),
    eps(x, t)   = - sigma_t score(x, t)                  (the eps-prediction of an ideal model).

DDIM ODE in (xbar, gamma) coordinates (eq. (6)):  ``d xbar / d gamma = eps(x_t, t)``.  Substituting
``x = alpha xbar`` and ``C_k = alpha^2 (S_k + gamma^2 I)`` every ``alpha`` cancels (the Gaussian
normalisers differ by the same ``alpha^d`` for every component, which cancels in the softmax):

    eps_gamma(xbar, gamma) = gamma sum_k rbar_k (S_k + gamma^2 I)^{-1} (xbar - m_k),
    rbar_k = softmax_k(log w_k - 1/2 (xbar - m_k)^T (S_k + gamma^2 I)^{-1} (xbar - m_k)
                       - 1/2 log det(S_k + gamma^2 I)).

This is a function of ``gamma`` alone: for VP diffusions the DDIM ODE does not depend on the schedule
(the schedule only picks the gamma grid).  It is written with :mod:`taylorsolve.math` (``log``,
``sum``, ``softmax``, ``matmul``) plus arithmetic, ``unsqueeze``/``squeeze``, so the same function runs
on tensors, under ``torch.func.jvp``, on Taylor-mode jets and on SymPy ``SymbolicArray``\ s: every
core backend (``autodiff``, ``taylor_mode``, ``symbolic``) can differentiate it (the symbolic one is
only practical for a few components).

One Gaussian component ``N(m, S)``, ``S = U diag(lambda) U^T``: in the eigenbasis, ``u = U^T (xbar - m)``,

    d u_e / d gamma = gamma u_e / (lambda_e + gamma^2)  =>  u_e(gamma) = u_e(g0) sqrt((lambda_e + gamma^2)/(lambda_e + g0^2)),

i.e. the DDIM ODE is linear in ``xbar`` and solved in closed form.  Along the solution
``eps_e(gamma) = K_e h_{lambda_e}(gamma)`` with the trajectory constant ``K_e = u_e / sqrt(lambda_e + gamma^2)``
and ``h_lambda(gamma) = gamma / sqrt(lambda + gamma^2)``; the Legendre generating function
``(1 - 2 z tau + tau^2)^{-1/2} = sum_n P_n(z) tau^n`` gives every derivative in closed form,

    h_lambda^{(k)}(gamma) / k! = (-1)^k r^{-k} (z P_k(z) - P_{k-1}(z)),  r = sqrt(lambda + gamma^2), z = gamma / r,

(``P_{-1} = 0``).  For a point mass (``lambda = 0``) ``z = 1`` and ``P_n(1) = 1``: every derivative
``k >= 1`` vanishes, ``eps = (xbar - m)/gamma`` is constant and trajectories are straight lines
``xbar(gamma) = m + (xbar0 - m) gamma / g0`` (GENIE app. B.2 / C.2.3).  For an isotropic Gaussian
with ``s > 0`` trajectories are still straight lines in space (the direction ``xbar - m`` is kept) but
``d eps / d gamma != 0``: DDIM is *not* exact in one step.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from taylorsolve.errors import TaylorSolveError

from taylorsolve import math as tm  # dispatches torch tensors, jets (__torch_function__) and SymPy arrays

__all__ = ["GaussianMixture", "legendre_polynomials"]

_DTYPE = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _as_f64(value: Any, name: str) -> torch.Tensor:
    try:
        # python floats must not pass through float32 (torch's default dtype)
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    except Exception as exc:  # noqa: BLE001
        raise TaylorSolveError(f"{name} must be convertible to a float tensor, got {type(value).__name__}") from exc
    if t.is_complex():
        raise TaylorSolveError(f"{name} must be real, got a complex tensor")
    t = t.detach().to(dtype=_DTYPE)
    if not torch.isfinite(t).all():
        raise TaylorSolveError(f"{name} contains NaN or Inf")
    return t


def _time_tensor(t: Any) -> torch.Tensor:
    """A time argument (python float, 0-d or [B] tensor) as a float64 tensor."""
    if isinstance(t, torch.Tensor):
        return t if t.dtype == _DTYPE else t.to(_DTYPE)
    return torch.as_tensor(t, dtype=_DTYPE)


def legendre_polynomials(z: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``[P_0(z), ..., P_n(z)]`` by Bonnet's recurrence ``(k+1) P_{k+1} = (2k+1) z P_k - k P_{k-1}``."""
    ps = [torch.ones_like(z)]
    if n >= 1:
        ps.append(z.clone())
    for k in range(1, n):
        ps.append(((2 * k + 1) * z * ps[k] - k * ps[k - 1]) / (k + 1))
    return ps


# ----------------------------------------------------------------------------------------------
# the mixture
# ----------------------------------------------------------------------------------------------
class GaussianMixture:
    r"""``p_0 = sum_k w_k N(m_k, S_k)`` in ``d`` dimensions with exact diffused quantities (float64).

    Parameters
    ----------
    weights:
        ``[K]`` non-negative, summing to one within ``1e-8`` (renormalised exactly).
    means:
        ``[K, d]``.  A 1-D ``[K]`` array with ``K > 1`` means ``d = 1``; with ``K = 1`` a 1-D array of
        length ``d`` is the single component's mean.
    covariances:
        Full covariances, ``[K, d, d]`` (or one shared ``[d, d]``), symmetric positive definite.
    stds:
        Isotropic components ``S_k = stds_k^2 I``: a scalar (shared) or ``[K]``; strictly positive unless
        ``allow_point_masses=True`` (then ``0`` is a Dirac point mass, fine for ``t > 0``).
    schedule:
        Any object with ``alpha(t)`` and ``sigma(t)`` on float64 tensors; default
        ``taylorsolve.diffusion.schedules.LinearVPSchedule()`` (``beta(t) = 0.1 + 19.9 t``), imported on
        first use.  Only the ``(x, t)`` methods use it; ``eps_gamma`` and friends are schedule-free.

    Exactly one of ``covariances`` and ``stds`` must be given.  Bad input raises
    :class:`taylorsolve.errors.TaylorSolveError` (a ``ValueError``).

    The instance is an eps model: ``mixture(x, t) == mixture.eps(x, t)``.
    """

    def __init__(
        self,
        weights: Any,
        means: Any,
        covariances: Any = None,
        stds: Any = None,
        *,
        schedule: Any = None,
        allow_point_masses: bool = False,
    ) -> None:
        if (covariances is None) == (stds is None):
            raise TaylorSolveError("give exactly one of `covariances` (full, [K, d, d]) and `stds` (isotropic)")
        w = _as_f64(weights, "weights")
        if w.ndim == 0:
            w = w.reshape(1)
        if w.ndim != 1:
            raise TaylorSolveError(f"weights must be 1-D [K], got shape {tuple(w.shape)}")
        K = w.numel()
        if K == 0:
            raise TaylorSolveError("a mixture needs at least one component (weights is empty)")
        if (w < 0).any():
            bad = int(torch.nonzero(w < 0)[0])
            raise TaylorSolveError(f"weights must be non-negative; weights[{bad}] = {float(w[bad])!r}")
        total = float(w.sum())
        if abs(total - 1.0) > 1e-8:
            raise TaylorSolveError(f"weights must sum to one (within 1e-8); they sum to {total!r}")
        w = w / w.sum()

        m = _as_f64(means, "means")
        if m.ndim == 1:
            if K == 1:
                m = m.reshape(1, -1)
            elif m.numel() == K:
                m = m.reshape(K, 1)
            else:
                raise TaylorSolveError(
                    f"1-D means of length {m.numel()} do not match {K} weights; pass means as [K, d]"
                )
        if m.ndim != 2:
            raise TaylorSolveError(f"means must be [K, d], got shape {tuple(m.shape)}")
        if m.shape[0] != K:
            raise TaylorSolveError(f"{K} weights but {m.shape[0]} means (means has shape {tuple(m.shape)})")
        d = m.shape[1]
        if d == 0:
            raise TaylorSolveError("means must have dimension d >= 1")

        self._iso = stds is not None
        if self._iso:
            s = _as_f64(stds, "stds")
            if s.ndim == 0:
                s = s.expand(K).clone()
            if s.ndim != 1 or s.numel() != K:
                raise TaylorSolveError(f"stds must be a scalar or [K] = [{K}], got shape {tuple(s.shape)}")
            if (s < 0).any():
                bad = int(torch.nonzero(s < 0)[0])
                raise TaylorSolveError(f"stds must be positive; stds[{bad}] = {float(s[bad])!r}")
            if not allow_point_masses and (s == 0).any():
                bad = int(torch.nonzero(s == 0)[0])
                raise TaylorSolveError(
                    f"stds[{bad}] = 0 gives a zero variance; pass allow_point_masses=True for a point mass"
                )
            self._var = s * s  # [K]
            self._evals = self._var[:, None].expand(K, d).clone()  # [K, d]
            self._evecs = torch.eye(d, dtype=_DTYPE).expand(K, d, d).clone()
        else:
            c = _as_f64(covariances, "covariances")
            if c.ndim == 2:
                c = c.expand(K, *c.shape).clone()
            if c.ndim != 3 or c.shape[0] != K or c.shape[1:] != (d, d):
                raise TaylorSolveError(
                    f"covariances must be [K, d, d] = [{K}, {d}, {d}] (or one shared [d, d]), got {tuple(c.shape)}"
                )
            asym = (c - c.transpose(-1, -2)).abs().amax(dim=(-1, -2))
            scale = c.abs().amax(dim=(-1, -2)).clamp_min(1.0)
            if (asym > 1e-10 * scale).any():
                bad = int(torch.nonzero(asym > 1e-10 * scale)[0])
                raise TaylorSolveError(f"covariances[{bad}] is not symmetric (max |S - S^T| = {float(asym[bad]):.3g})")
            c = 0.5 * (c + c.transpose(-1, -2))
            evals, evecs = torch.linalg.eigh(c)
            tol = 1e-12 * c.abs().amax(dim=(-1, -2)).clamp_min(1e-300)
            if (evals[:, 0] <= tol).any():
                bad = int(torch.nonzero(evals[:, 0] <= tol)[0])
                raise TaylorSolveError(
                    f"covariances[{bad}] is not positive definite (smallest eigenvalue {float(evals[bad, 0]):.3g})"
                )
            self._var = None
            self._evals, self._evecs = evals, evecs  # S_k = U_k diag(evals_k) U_k^T
        self._weights = w
        self._log_weights = torch.log(w)  # -inf for zero weights; softmax handles it
        self._means = m
        self._schedule = schedule
        self._has_point_mass = bool((self._evals == 0).any())

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._means.shape[1]

    @property
    def n_components(self) -> int:
        return self._means.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        return self._weights.clone()

    @property
    def means(self) -> torch.Tensor:
        return self._means.clone()

    @property
    def is_isotropic(self) -> bool:
        return self._iso

    @property
    def stds(self) -> torch.Tensor | None:
        """Per-component standard deviations ``[K]`` (isotropic mixtures), else ``None``."""
        return None if self._var is None else self._var.sqrt()

    @property
    def covariances(self) -> torch.Tensor:
        """``[K, d, d]`` covariances of p_0 (``U diag(lambda) U^T``)."""
        u, lam = self._evecs, self._evals
        return (u * lam[:, None, :]) @ u.transpose(-1, -2)

    @property
    def schedule(self) -> Any:
        if self._schedule is None:
            from taylorsolve.diffusion.schedules import LinearVPSchedule

            self._schedule = LinearVPSchedule()
        return self._schedule

    def mean(self) -> torch.Tensor:
        """Mean of p_0: ``sum_k w_k m_k``."""
        return self._weights @ self._means

    def covariance(self) -> torch.Tensor:
        """Covariance of p_0: ``sum_k w_k (S_k + m_k m_k^T) - mu mu^T``."""
        mu = self.mean()
        second = (self._weights[:, None, None] * (self.covariances + self._means[:, :, None] * self._means[:, None, :])).sum(0)
        return second - mu[:, None] * mu[None, :]

    def __repr__(self) -> str:
        kind = "isotropic" if self._iso else "full-covariance"
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, {kind})"

    # ------------------------------------------------------------------ internals
    def _check_x(self, x: Any, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise TaylorSolveError(f"{name} must have shape [..., {self.dim}], got {tuple(x.shape)}")
        return x

    def _alpha_sigma(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        t = _time_tensor(t)
        sch = self.schedule
        a = _time_tensor(sch.alpha(t))
        s = _time_tensor(sch.sigma(t))
        return a, s

    def _terms(self, x: torch.Tensor, a: Any, a2: Any, s2: Any):
        """Component terms of ``sum_k w_k N(x; a m_k, a2 S_k + s2 I)``.

        ``a``, ``a2``, ``s2`` are 0-d or ``[B]`` (then they line up with x's leading dimension);
        ``a = a2 = None`` means 1 (the (xbar, gamma) form, ``s2 = gamma^2``).
        Returns ``logits [..., K]`` (log w_k + log N_k, with normaliser) and ``prec_diff [..., K, d]`` =
        ``C_k^{-1} (x - a m_k)``.  Only elementwise arithmetic, ``log``, sums and matmuls are used.
        """
        means = self._means.to(x.device)

        def k_(v):  # [B] -> [B, 1] so it broadcasts against [..., K]
            return v.unsqueeze(-1) if getattr(v, "ndim", 0) > 0 else v

        diff = x.unsqueeze(-2) - (means if a is None else k_(k_(a)) * means)  # [..., K, d]
        d = self.dim
        if self._iso:
            var = self._var.to(x.device)
            v = (var if a2 is None else k_(a2) * var) + k_(s2)  # [..., K]
            quad = tm.sum(diff * diff, dim=-1) / v
            logdet = d * tm.log(v)
            prec_diff = diff / v.unsqueeze(-1)
        else:
            u = self._evecs.to(x.device)  # [K, d, d]
            lam = self._evals.to(x.device)
            ev = (lam if a2 is None else k_(k_(a2)) * lam) + k_(k_(s2))  # [..., K, d]
            proj = tm.matmul(diff.unsqueeze(-2), u).squeeze(-2)  # U_k^T (x - a m_k), [..., K, d]
            scaled = proj / ev
            quad = tm.sum(proj * scaled, dim=-1)
            logdet = tm.sum(tm.log(ev), dim=-1)
            prec_diff = tm.matmul(scaled.unsqueeze(-2), u.transpose(-1, -2)).squeeze(-2)
        logits = self._log_weights.to(x.device) - 0.5 * quad - 0.5 * logdet - 0.5 * d * _LOG_2PI
        return logits, prec_diff

    @staticmethod
    def _cast_in(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype | None]:
        if isinstance(x, torch.Tensor) and x.dtype != _DTYPE:
            return x.to(_DTYPE), x.dtype
        return x, None

    # ------------------------------------------------------------------ data distribution p_0
    def log_prob0(self, x: Any) -> torch.Tensor:
        """``log p_0(x)`` for ``x [..., d]`` (schedule-free)."""
        if self._has_point_mass:
            raise TaylorSolveError("log_prob0 is undefined for a mixture with point masses (zero variance)")
        x = self._check_x(x).to(_DTYPE)
        one = torch.ones((), dtype=_DTYPE)
        logits, _ = self._terms(x, one, one, torch.zeros((), dtype=_DTYPE))
        return torch.logsumexp(logits, dim=-1)

    def score0(self, x: Any) -> torch.Tensor:
        """``grad_x log p_0(x)``."""
        if self._has_point_mass:
            raise TaylorSolveError("score0 is undefined for a mixture with point masses (zero variance)")
        x = self._check_x(x).to(_DTYPE)
        one = torch.ones((), dtype=_DTYPE)
        logits, prec_diff = self._terms(x, one, one, torch.zeros((), dtype=_DTYPE))
        return -(torch.softmax(logits, dim=-1).unsqueeze(-1) * prec_diff).sum(-2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``[n, d]`` from p_0: component ``k ~ Cat(w)``, then ``m_k + U_k diag(sqrt(lambda_k)) z``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise TaylorSolveError(f"n must be a non-negative integer, got {n!r}")
        if n == 0:
            return torch.empty(0, self.dim, dtype=_DTYPE)
        idx = torch.multinomial(self._weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=_DTYPE, generator=generator)
        scaled = z * self._evals[idx].sqrt()
        return self._means[idx] + torch.matmul(self._evecs[idx], scaled.unsqueeze(-1)).squeeze(-1)

    def sample_t(self, n: int, t: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``[n, d]`` from p_t: ``alpha_t x_0 + sigma_t eps`` (``t`` a scalar)."""
        t = _time_tensor(t)
        if t.ndim != 0:
            raise TaylorSolveError(f"sample_t needs a scalar time, got shape {tuple(t.shape)}")
        a, s = self._alpha_sigma(t)
        x0 = self.sample(n, generator)
        return a * x0 + s * torch.randn(n, self.dim, dtype=_DTYPE, generator=generator)

    # ------------------------------------------------------------------ diffused p_t in (x, t)
    def log_prob(self, x: Any, t: Any) -> torch.Tensor:
        """``log p_t(x) = logsumexp_k(log w_k + log N(x; alpha_t m_k, alpha_t^2 S_k + sigma_t^2 I))``."""
        x = self._check_x(x).to(_DTYPE)
        a, s = self._alpha_sigma(t)
        logits, _ = self._terms(x, a, a * a, s * s)
        return torch.logsumexp(logits, dim=-1)

    def score(self, x: Any, t: Any) -> torch.Tensor:
        """``grad_x log p_t(x) = -sum_k r_k C_k^{-1} (x - alpha_t m_k)``, ``C_k = alpha_t^2 S_k + sigma_t^2 I``."""
        x = self._check_x(x)
        x, dt = self._cast_in(x)
        a, s = self._alpha_sigma(t)
        logits, prec_diff = self._terms(x, a, a * a, s * s)
        out = -(torch.softmax(logits, dim=-1).unsqueeze(-1) * prec_diff).sum(-2)
        return out if dt is None else out.to(dt)

    def eps(self, x: Any, t: Any) -> torch.Tensor:
        """``eps(x, t) = -sigma_t score(x, t)``; ``x [B, d]``, ``t`` a float, 0-d tensor or ``[B]`` vector.

        The output has x's shape and dtype (computed in float64)."""
        x = self._check_x(x)
        x, dt = self._cast_in(x)
        a, s = self._alpha_sigma(t)
        logits, prec_diff = self._terms(x, a, a * a, s * s)
        sc = (torch.softmax(logits, dim=-1).unsqueeze(-1) * prec_diff).sum(-2)
        out = (s.unsqueeze(-1) if s.ndim > 0 else s) * sc
        return out if dt is None else out.to(dt)

    __call__ = eps

    # ------------------------------------------------------------------ DDIM ODE in (xbar, gamma)
    def eps_gamma(self, xbar: Any, gamma: Any) -> torch.Tensor:
        r"""Right-hand side of the DDIM ODE ``d xbar / d gamma = eps`` (eq. (6)) as a function of gamma only.

        ``eps_gamma(xbar, gamma) = gamma sum_k rbar_k (S_k + gamma^2 I)^{-1} (xbar - m_k)`` with
        ``rbar_k = softmax_k(log w_k + log N(xbar; m_k, S_k + gamma^2 I))``; equals
        ``eps(xbar / sqrt(1+gamma^2), t(gamma))`` for every VP schedule.  ``gamma``: float, 0-d tensor
        (also a dual / jet tensor) or a ``[B]`` vector matching ``xbar``'s leading dimension.
        """
        if not hasattr(xbar, "unsqueeze"):  # lists / numpy; tensors, jets and SymbolicArrays pass as they are
            xbar = torch.as_tensor(np.asarray(xbar, dtype=np.float64))
        if isinstance(xbar, torch.Tensor):
            xbar = self._check_x(xbar, "xbar")
        xbar, dt = self._cast_in(xbar)
        if isinstance(gamma, (int, float)) or (isinstance(gamma, torch.Tensor) and gamma.dtype != _DTYPE):
            gamma = _time_tensor(gamma)  # dual / jet / symbolic gammas are kept as they are
        g2 = gamma * gamma
        logits, prec_diff = self._terms(xbar, None, None, g2)
        r = tm.softmax(logits, dim=-1)
        g = gamma.unsqueeze(-1) if getattr(gamma, "ndim", 0) > 0 else gamma
        out = g * tm.sum(r.unsqueeze(-1) * prec_diff, dim=-2)
        return out if dt is None else out.to(dt)

    def ddim_rhs(self, gamma: Any, xbar: Any) -> torch.Tensor:
        """``f(t, y)`` for the core: ``f(gamma, xbar) = eps_gamma(xbar, gamma)``."""
        return self.eps_gamma(xbar, gamma)

    def eps_derivatives(
        self, xbar: Any, gamma: Any, order: int, backend: Any = "autodiff", **backend_options: Any
    ) -> list[torch.Tensor]:
        r"""``[eps, d eps/d gamma, ..., d^order eps/d gamma^order]``: total derivatives along the DDIM ODE.

        With ``f = eps_gamma`` the Taylor coefficients of the solution through ``(gamma, xbar)`` are
        ``c_{k+1} = eps^{(k)} / (k+1)!``, so ``eps^{(k)} = (k+1)! c_{k+1}``.

        ``backend``: a core backend (``"autodiff"``, ``"taylor_mode"``, ``"symbolic"`` or a
        ``CoefficientBackend``) used through ``taylorsolve.taylor_coefficients``; ``"closed_form"`` for one
        component.
        ``gamma`` must be a scalar (one gamma for the whole batch ``xbar [..., d]``).
        """
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise TaylorSolveError(f"order must be an integer >= 0, got {order!r}")
        gamma = _time_tensor(gamma)
        if gamma.ndim != 0:
            raise TaylorSolveError(f"eps_derivatives needs a scalar gamma, got shape {tuple(gamma.shape)}")
        xbar = self._check_x(xbar, "xbar").to(_DTYPE)
        if isinstance(backend, str) and backend == "closed_form":
            return self.eps_derivatives_closed_form(xbar, gamma, order)
        import taylorsolve

        coeffs = taylorsolve.taylor_coefficients(self.ddim_rhs, gamma, xbar, order + 1, backend=backend, **backend_options)
        return [coeffs[k + 1] * math.factorial(k + 1) for k in range(order + 1)]

    # ------------------------------------------------------------------ closed forms for one component
    def _require_single(self, what: str) -> None:
        if self.n_components != 1:
            raise TaylorSolveError(f"{what} is only available for a single Gaussian (K = 1), this mixture has K = {self.n_components}")

    def eps_derivatives_closed_form(self, xbar: Any, gamma: Any, order: int) -> list[torch.Tensor]:
        r"""Closed-form ``[eps, ..., d^order eps / d gamma^order]`` along the DDIM ODE for ``K = 1``.

        In the eigenbasis of ``S``: ``eps_e^{(k)} = K_e h_{lambda_e}^{(k)}(gamma)``, ``K_e = u_e / r_e``,
        ``h^{(k)}/k! = (-1)^k r^{-k} (z P_k(z) - P_{k-1}(z))``, ``r = sqrt(lambda + gamma^2)``, ``z = gamma/r``.
        """
        self._require_single("eps_derivatives_closed_form")
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise TaylorSolveError(f"order must be an integer >= 0, got {order!r}")
        gamma = _time_tensor(gamma)
        xbar = self._check_x(xbar, "xbar").to(_DTYPE)
        g = gamma.unsqueeze(-1) if gamma.ndim > 0 else gamma
        lam, u_mat, m = self._evals[0], self._evecs[0], self._means[0]
        u = (xbar - m) @ u_mat  # [..., d] eigen-coordinates
        r = torch.sqrt(lam + g * g)
        z = g / r
        kconst = u / r
        ps = legendre_polynomials(z, order)
        out = []
        for k in range(order + 1):
            prev = ps[k - 1] if k >= 1 else torch.zeros_like(z)
            hk = (-1) ** k * math.factorial(k) * r ** (-k) * (z * ps[k] - prev)
            out.append((kconst * hk) @ u_mat.transpose(-1, -2))
        return out

    def ddim_solution(self, xbar0: Any, gamma0: Any, gamma: Any) -> torch.Tensor:
        r"""Exact DDIM-ODE solution for ``K = 1`` from ``xbar(gamma0) = xbar0`` to ``gamma``.

        ``xbar(gamma) = m + U diag(sqrt((lambda + gamma^2) / (lambda + gamma0^2))) U^T (xbar0 - m)``;
        for a point mass ``xbar(gamma) = m + (xbar0 - m) gamma / gamma0`` (a straight line).
        ``gamma``: scalar (output shaped like ``xbar0``) or 1-D ``[n]`` (output ``[n, *xbar0.shape]``).
        """
        self._require_single("ddim_solution")
        xbar0 = self._check_x(xbar0, "xbar0").to(_DTYPE)
        gamma0 = _time_tensor(gamma0)
        gamma = _time_tensor(gamma)
        if gamma0.ndim != 0:
            raise TaylorSolveError("gamma0 must be a scalar")
        if gamma.ndim > 1:
            raise TaylorSolveError("gamma must be a scalar or 1-D")
        lam, u_mat, m = self._evals[0], self._evecs[0], self._means[0]
        if bool((lam + gamma0 * gamma0 == 0).any()):
            raise TaylorSolveError("gamma0 = 0 with a point mass: the solution is not determined")
        u0 = (xbar0 - m) @ u_mat
        g = gamma.reshape(-1, *([1] * xbar0.ndim)) if gamma.ndim == 1 else gamma
        factor = torch.sqrt((lam + g * g) / (lam + gamma0 * gamma0))
        return m + (u0 * factor) @ u_mat.transpose(-1, -2)
