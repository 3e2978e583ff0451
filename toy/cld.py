r"""Exact critically-damped Langevin diffusion (CLD) of the toy Gaussian mixtures.

CLD (:class:`taylorsolve.diffusion.cld.CLD`, thesis ch. 2) is linear and Gaussian, and its initial
velocities are ``N(0, gamma M)``, independent of the data.  A mixture ``p_0 = sum_k w_k N(m_k, S_k)``
therefore diffuses component by component into a Gaussian mixture in the joint ``u = (x, v)`` space.
With ``S_k = U_k diag(lambda_k) U_k^T`` the process acts on each pair ``(x_i, v_i)`` alike, so in the
rotated coordinates ``(U_k^T x, U_k^T v)`` every eigen-direction ``e`` is an independent 2-D Gaussian:

    mean  mu_ke(t) = Psi(t, 0) (m~_ke, 0),          m~_k = U_k^T m_k,
    cov   C_ke(t)  = Psi(t, 0) diag(lambda_ke, gamma M) Psi(t, 0)^T + Q_t           (thesis eq. (2.31)-(2.36))

(:meth:`CLD.cov_parts` with ``x_var = lambda_ke``).  Hence, with ``delta = (U_k^T x, U_k^T v) - mu_k``,

    log p_t(u) = logsumexp_k [log w_k - 1/2 sum_e delta_e^T C_ke^{-1} delta_e - 1/2 sum_e log det C_ke] - d log 2 pi,
    score(u, t) = sum_k r_k g_k,   g_k = -(U_k otimes I_2) C_k^{-1} delta_k,   r_k = softmax of the bracket,

and the eps of either parameterisation ``eps_K = -K_t^T score`` (gDDIM eq. (4)).  Along the
probability-flow ODE ``du/dt = F u - 1/2 G G^T score`` the total derivative is, per component,

    C' = F C + C F^T + G G^T,   delta' = U^T u' - F mu,   g' = -C^{-1} (C' g + delta'),
    l'_k = g_k . delta'_k + 1/2 g_k^T C'_k g_k - 1/2 tr(C_k^{-1} C'_k),   r'_k = r_k (l'_k - sum_j r_j l'_j),
    score' = sum_k r'_k g_k + r_k g'_k,   eps_K' = -K'^T score - K^T score'

(``K'`` by a forward-mode JVP of the closed-form ``K_t``): the exact derivative GENIE-on-CLD
(``gddim-ttm``) can use.  :meth:`CLDMixture.simulate_forward` integrates the forward SDE by
Euler-Maruyama, an independent check of all of the above (moments, Stein identities).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from taylorsolve.diffusion.cld import CLD
from taylorsolve.diffusion.schedules import as_time_tensor
from taylorsolve.errors import TaylorSolveError

from .mixture import GaussianMixture

__all__ = ["CLDMixture"]

F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


class CLDMixture:
    """The CLD-diffused ``p_t(u)`` of a :class:`toy.GaussianMixture` ``p_0(x)`` (module docstring).

    ``process``: a :class:`CLD` (default thesis hyper-parameters); its ``factor`` is the eps returned by
    :meth:`eps` / ``__call__`` (so the instance is an eps-model for ``sample(..., process=process)``).
    States are ``[B, 2d]`` (``x`` then ``v``).  Bad input raises :class:`TaylorSolveError`.
    """

    def __init__(self, mixture: GaussianMixture, process: CLD | None = None) -> None:
        if not isinstance(mixture, GaussianMixture):
            raise TaylorSolveError(f"CLDMixture needs a toy.GaussianMixture, got {type(mixture).__name__}")
        self.mixture = mixture
        self.process = process if process is not None else CLD(data_channels=mixture.dim)
        if not isinstance(self.process, CLD):
            raise TaylorSolveError(f"CLDMixture needs a CLD process, got {type(self.process).__name__}")
        cov = mixture.covariances
        lam, U = torch.linalg.eigh(0.5 * (cov + cov.transpose(-1, -2)))
        self._lam = lam.clamp_min(0.0)                # [K, d]
        self._U = U                                   # [K, d, d]
        self._mt = torch.einsum("kji,kj->ki", U, mixture.means)     # U_k^T m_k  [K, d]
        self._logw = torch.log(mixture.weights)

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def with_process(self, process: CLD) -> "CLDMixture":
        return CLDMixture(self.mixture, process)

    def __repr__(self) -> str:
        return f"CLDMixture({self.mixture!r}, {self.process!r})"

    # -- checks and layout ---------------------------------------------------------------------------------
    def _check_u(self, u: Any, name: str = "u") -> torch.Tensor:
        if not isinstance(u, torch.Tensor):
            u = torch.as_tensor(u, dtype=F64)
        if u.ndim != 2 or u.shape[1] != 2 * self.dim:
            raise TaylorSolveError(
                f"CLD toy: data dimension mismatch: {name} must be [B, 2d] = [B, {2 * self.dim}] "
                f"(x and v of the {self.dim}-D mixture), got shape {tuple(u.shape)}")
        return u

    def _rotated(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U_k^T x, U_k^T v)``, each ``[B, K, d]``."""
        d = self.dim
        x, v = u[:, :d], u[:, d:]
        U = self._U.to(u.dtype)
        return torch.einsum("kji,bj->bki", U, x), torch.einsum("kji,bj->bki", U, v)

    def _unrotate(self, gx: torch.Tensor, gv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        U = self._U.to(gx.dtype)
        return torch.einsum("kij,bkj->bki", U, gx), torch.einsum("kij,bkj->bki", U, gv)

    # -- component moments -------------------------------------------------------------------------------
    def component_moments(self, t: Any) -> dict[str, torch.Tensor]:
        """Per component and eigen-direction: mean ``(mx, mv)`` ``[K, d]`` and covariance entries ``[K, d]``."""
        t = as_time_tensor(t)
        proc = self.process
        sxx, sxv, svv, det = proc.cov_parts(t, x_var=self._lam)
        psi = proc.psi(t)
        return {"mx": psi[0, 0] * self._mt, "mv": psi[1, 0] * self._mt,
                "sxx": sxx, "sxv": sxv, "svv": svv, "det": det}

    def mean_cov(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[2d]`` and covariance ``[2d, 2d]`` of ``p_t(u)`` (u layout: x then v)."""
        mo = self.component_moments(t)
        d, K = self.dim, self.mixture.n_components
        U = self._U
        w = self.mixture.weights
        means = torch.cat([torch.einsum("kij,kj->ki", U, mo["mx"]), torch.einsum("kij,kj->ki", U, mo["mv"])], -1)
        covs = torch.zeros(K, 2 * d, 2 * d, dtype=F64)
        for blk, key in (((0, 0), "sxx"), ((0, 1), "sxv"), ((1, 0), "sxv"), ((1, 1), "svv")):
            block = torch.einsum("kij,kj,klj->kil", U, mo[key], U)
            covs[:, blk[0] * d:(blk[0] + 1) * d, blk[1] * d:(blk[1] + 1) * d] = block
        mu = w @ means
        second = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0)
        return mu, second - mu[:, None] * mu[None, :]

    # -- density, score, eps -------------------------------------------------------------------------------
    def _terms(self, u: torch.Tensor, t: torch.Tensor):
        mo = self.component_moments(t)
        xr, vr = self._rotated(u)
        dx, dv = xr - mo["mx"], vr - mo["mv"]
        sxx, sxv, svv, det = mo["sxx"], mo["sxv"], mo["svv"], mo["det"]
        quad = ((svv * dx * dx - 2.0 * sxv * dx * dv + sxx * dv * dv) / det).sum(-1)
        logits = self._logw - 0.5 * quad - 0.5 * torch.log(det).sum(-1) - self.dim * _LOG_2PI
        gx = -(svv * dx - sxv * dv) / det          # -C^{-1} delta in the eigenbasis
        gv = -(-sxv * dx + sxx * dv) / det
        return logits, (dx, dv), (gx, gv), mo

    def log_prob(self, u: Any, t: Any) -> torch.Tensor:
        """``log p_t(u)`` ``[B]``."""
        u = self._check_u(u).to(F64)
        logits, *_ = self._terms(u, as_time_tensor(t))
        return torch.logsumexp(logits, -1)

    def score(self, u: Any, t: Any) -> torch.Tensor:
        """``grad_u log p_t(u)`` ``[B, 2d]`` (computed in float64, returned in ``u``'s dtype)."""
        u = self._check_u(u)
        dt = u.dtype
        logits, _, (gx, gv), _ = self._terms(u.to(F64), as_time_tensor(t))
        r = torch.softmax(logits, -1).unsqueeze(-1)
        sx, sv = self._unrotate(gx, gv)
        return torch.cat([(r * sx).sum(1), (r * sv).sum(1)], -1).to(dt)

    def eps(self, u: Any, t: Any, factor: str | None = None) -> torch.Tensor:
        """``eps_K = -K_t^T score`` (``factor``: ``"R"``/``"L"``, default the process's)."""
        u = self._check_u(u)
        t = as_time_tensor(t)
        s = self.score(u.to(F64), t)
        return self.process.eps_from_score(s, t, factor).to(u.dtype)

    def __call__(self, u: torch.Tensor, t: Any) -> torch.Tensor:
        return self.eps(u, t)

    def pf_velocity(self, u: torch.Tensor, t: Any) -> torch.Tensor:
        """``du/dt = F u - 1/2 G G^T score`` (gDDIM eq. (7))."""
        proc = self.process
        s = self.score(u, t)
        fu = proc.apply(proc.F, u)
        d = self.dim
        return torch.cat([fu[:, :d], fu[:, d:] - 0.5 * proc.q * s[:, d:]], -1)

    def eps_dt(self, u: Any, t: Any, eps: Any = None, factor: str | None = None) -> torch.Tensor:
        """The exact total derivative ``d eps_K / dt`` along the probability-flow ODE (module docstring).

        Signature ``fn(u, t, eps)`` of ``gddim-ttm``'s ``derivative=``; ``eps`` is ignored (recomputed)."""
        u = self._check_u(u)
        dtype = u.dtype
        u = u.to(F64)
        t = as_time_tensor(t)
        proc = self.process
        logits, (dx, dv), (gx, gv), mo = self._terms(u, t)
        r = torch.softmax(logits, -1)
        sx, sv = self._unrotate(gx, gv)
        score = torch.cat([(r.unsqueeze(-1) * sx).sum(1), (r.unsqueeze(-1) * sv).sum(1)], -1)
        d = self.dim
        fu = proc.apply(proc.F, u)
        udot = torch.cat([fu[:, :d], fu[:, d:] - 0.5 * proc.q * score[:, d:]], -1)
        xd, vd = self._rotated(udot)
        F = proc.F
        mx, mv = mo["mx"], mo["mv"]
        # delta' = U^T u' - F mu
        ddx = xd - (F[0, 0] * mx + F[0, 1] * mv)
        ddv = vd - (F[1, 0] * mx + F[1, 1] * mv)
        # C' = F C + C F^T + G G^T (entries)
        sxx, sxv, svv, det = mo["sxx"], mo["sxv"], mo["svv"], mo["det"]
        f00, f01, f10, f11 = (float(F[i, j]) for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
        cxx = 2.0 * (f00 * sxx + f01 * sxv)
        cxv = f10 * sxx + f11 * sxv + f00 * sxv + f01 * svv
        cvv = 2.0 * (f10 * sxv + f11 * svv) + proc.q
        # C' g
        cgx = cxx * gx + cxv * gv
        cgv = cxv * gx + cvv * gv
        ax, av = cgx + ddx, cgv + ddv
        gdx = -(svv * ax - sxv * av) / det              # g' = -C^{-1} (C' g + delta')
        gdv = -(-sxv * ax + sxx * av) / det
        tr = (svv * cxx - 2.0 * sxv * cxv + sxx * cvv) / det
        ldot = (gx * ddx + gv * ddv + 0.5 * (gx * cgx + gv * cgv) - 0.5 * tr).sum(-1)
        rdot = r * (ldot - (r * ldot).sum(-1, keepdim=True))
        gdx_o, gdv_o = self._unrotate(gdx, gdv)
        sdot = torch.cat([(rdot.unsqueeze(-1) * sx + r.unsqueeze(-1) * gdx_o).sum(1),
                          (rdot.unsqueeze(-1) * sv + r.unsqueeze(-1) * gdv_o).sum(1)], -1)
        K, Kdot = torch.func.jvp(lambda tt: proc.K(tt, factor), (t,), (torch.ones_like(t),))
        out = proc.apply(-Kdot.transpose(-1, -2), score) + proc.apply(-K.transpose(-1, -2), sdot)
        return out.to(dtype)

    # -- sampling ------------------------------------------------------------------------------------------
    def sample0(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``u_0 = (x_0, v_0)``: ``x_0 ~ p_0``, ``v_0 ~ N(0, gamma M I)`` ``[n, 2d]``."""
        x0 = self.mixture.sample(n, generator)
        v0 = math.sqrt(self.process.gamma * self.process.M) * torch.randn(n, self.dim, dtype=F64, generator=generator)
        return torch.cat([x0, v0], -1)

    def sample_t(self, n: int, t: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples of ``p_t(u)`` ``[n, 2d]``: a component, then its joint Gaussian (closed form)."""
        t = as_time_tensor(t)
        mo = self.component_moments(t)
        idx = torch.multinomial(self.mixture.weights, n, replacement=True, generator=generator)
        z = torch.randn(2, n, self.dim, dtype=F64, generator=generator)
        a = torch.sqrt(mo["sxx"][idx])
        b = mo["sxv"][idx] / a
        c = torch.sqrt(mo["det"][idx]) / a
        xr = mo["mx"][idx] + a * z[0]
        vr = mo["mv"][idx] + b * z[0] + c * z[1]
        U = self._U[idx]
        return torch.cat([torch.einsum("nij,nj->ni", U, xr), torch.einsum("nij,nj->ni", U, vr)], -1)

    def simulate_forward(self, n: int, t: float, steps: int, generator: torch.Generator | None = None,
                         u0: torch.Tensor | None = None) -> torch.Tensor:
        """Euler-Maruyama on the forward CLD SDE ``du = F u dt + G dw`` (thesis eq. (2.8)) from ``u_0``
        (default :meth:`sample0`) to ``t`` in ``steps`` equal steps: an independent Monte-Carlo check of the
        closed forms (weak error ``O(t / steps)``)."""
        proc = self.process
        u = self.sample0(n, generator) if u0 is None else u0.to(F64).clone()
        h = float(t) / int(steps)
        A = torch.eye(2, dtype=F64) + h * proc.F
        d = u.shape[1] // 2
        sq = math.sqrt(proc.q * h)
        for _ in range(int(steps)):
            u = proc.apply(A, u)
            u[:, d:] += sq * torch.randn(u.shape[0], d, dtype=F64, generator=generator)
        return u

    # -- reference solutions ---------------------------------------------------------------------------------
    def reference_solve(self, u1: torch.Tensor, times: Any, *, rtol: float = 1e-11, atol: float = 1e-12) -> torch.Tensor:
        r"""A very accurate solution of the probability-flow ODE from ``u(times[0]) = u1`` at every ``times``
        ``[len(times), *u1.shape]``: scipy's DOP853 on gDDIM's transformed ODE ``dy/dt = B_t eps_R``
        (``y = Psi(0, t) u``), where eps is nearly constant (gDDIM Prop. 4) and the solver takes few steps."""
        from scipy.integrate import solve_ivp
        import numpy as np

        proc = self.process.with_factor("R") if self.process.factor != "R" else self.process
        cm = self if proc is self.process else self.with_process(proc)
        co = proc.coordinates("ei")
        times = as_time_tensor(times).reshape(-1)
        shape = u1.shape
        y0 = co.to_state(u1.to(F64), times[0])

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            tt = torch.tensor(t, dtype=F64)
            yy = torch.from_numpy(y).reshape(shape)
            return co.velocity(cm.eps(co.to_x(yy, tt), tt), yy, tt, tt).reshape(-1).numpy()

        t_eval = times.numpy()
        sol = solve_ivp(fun, (float(times[0]), float(times[-1])), y0.reshape(-1).numpy(), method="DOP853",
                        rtol=rtol, atol=atol, t_eval=t_eval, dense_output=False)
        if not sol.success:  # pragma: no cover
            raise RuntimeError(f"reference solve failed: {sol.message}")
        ys = torch.from_numpy(np.ascontiguousarray(sol.y.T)).reshape(len(t_eval), *shape)
        return torch.stack([co.to_x(ys[k], times[k]) for k in range(len(t_eval))])
