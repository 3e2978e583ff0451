r"""scipy's adaptive Dormand-Prince RK45 (``solve_ivp``) on the probability-flow ODE (eq. (4)).

The whole batch is one flattened state (as in score_sde); NFE is scipy's ``nfev`` (minus one with the
analytical first step, whose eps at ``t = 1`` is analytic).  States at the grid's nodes come from the
solver's dense output (no extra evaluations).  Options ``rtol``, ``atol`` (default 1e-5).
"""
from __future__ import annotations

import numpy as np
import torch

from ...errors import SolverError, TaylorSolveError
from ..registry import Sampler, register

__all__ = ["RK45"]


@register
class RK45(Sampler):
    name = "rk45"
    summary = "adaptive Dormand-Prince (scipy solve_ivp) on the probability-flow ODE"
    coordinates = "pf"
    orders = (5,)
    adaptive = True
    options = {"rtol": 1e-5, "atol": 1e-5}
    nfe_rule = "adaptive: scipy's nfev"
    exact_on_single_point = False

    def validate(self) -> None:
        rtol, atol = self.opts["rtol"], self.opts["atol"]
        try:
            ok = float(rtol) > 0 and float(atol) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TaylorSolveError(f"rk45 needs rtol > 0 and atol > 0, got rtol={rtol!r}, atol={atol!r}")

    def nfe(self, steps: int) -> int:
        raise TaylorSolveError("rk45 is adaptive: its NFE is only known after the solve (stats.nfe)")

    def solve(self, ctx, y, eps0=None):
        from scipy.integrate import solve_ivp

        shape, dtype, device = y.shape, y.dtype, y.device
        rhs = ctx.rhs
        t0, t1 = float(ctx.t[0]), float(ctx.t[-1])
        first = {"pending": eps0 is not None}

        def fun(t: float, yv: np.ndarray) -> np.ndarray:
            yt = torch.from_numpy(np.ascontiguousarray(yv)).reshape(shape).to(dtype=dtype, device=device)
            tt = torch.tensor(t, dtype=torch.float64)
            if first["pending"] and t == t0:
                first["pending"] = False
                dy = ctx.coords.velocity(eps0, yt, tt, tt)  # AFS: eps(x_1, 1) analytic (eq. (75))
            else:
                dy = rhs(tt, yt)
            return dy.detach().to(torch.float64).cpu().reshape(-1).numpy()

        y0 = y.detach().to(torch.float64).cpu().reshape(-1).numpy()
        sol = solve_ivp(fun, (t0, t1), y0, method="RK45", rtol=float(self.opts["rtol"]),
                        atol=float(self.opts["atol"]), dense_output=True)
        if not sol.success:
            raise SolverError(f"rk45 (scipy solve_ivp) failed: {sol.message}", time=float(sol.t[-1]))
        ctx.stats.steps = len(sol.t) - 1
        ctx.stats.extra["scipy_nfev"] = int(sol.nfev)
        times = ctx.t.cpu().numpy()
        ys = sol.sol(times) if len(times) > 2 else np.stack([y0, sol.y[:, -1]], axis=1)
        ys[:, 0], ys[:, -1] = y0, sol.y[:, -1]
        return [torch.from_numpy(ys[:, i].copy()).reshape(shape).to(dtype=dtype, device=device)
                for i in range(ys.shape[1])]
