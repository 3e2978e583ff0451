r"""``fd_error``: how wrong is the finite-difference ``d eps / d gamma`` of multistep methods? (GENIE Fig. 3 bottom)

Adams-Bashforth-2 is GENIE (TTM-2) with ``d eps / d gamma`` replaced by the first-order difference of two
eps values along the trajectory (sec. 3, "Comparison to Multistep Methods").  From ``N`` points
``x_t ~ p_t`` the DDIM ODE (eq. (6)) is solved very accurately to ``t' = t + dt`` (the previous point of a
sampler running from noise to data: what a multistep method has) and to ``t' = t - dt`` (the formula
``(eps(t) - eps(t - dt)) / (gamma(t) - gamma(t - dt))``), and

    xi_t(dt) = mean_i | (eps(x_t, t) - eps(x_t', t')) / (gamma_t - gamma_t') - d eps/d gamma (x_t, t) |

is compared with the exact derivative (closed form).  Both are first-order accurate, ``xi ~ |eps''| dt / 2``
for small dt; at small ``t`` the score of the mixture varies on the scale of the mode width and the
difference quotient is useless unless ``dt`` is tiny.  Writes ``fd_error.png`` and ``fd_error.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from taylorsolve.diffusion import LinearVPSchedule
from taylorsolve.diffusion.odes import to_xbar

from ..presets import nested_mixture
from .common import (
    DEFAULT_OUT,
    F64,
    iso_eps_derivatives,
    progress,
    pyplot,
    reference_solve,
    save_figure,
    write_csv,
    write_json,
)

NAME = "fd_error"
COLUMNS = ("t", "dt", "xi_past", "xi_future", "rel_xi_past", "rel_xi_future", "mean_abs_deps", "n_points")


def _dts(t: float, n_dt: int) -> np.ndarray:
    return np.logspace(-4, np.log10(0.9 * t), n_dt)


def run(out: Path | str = DEFAULT_OUT, *, full: bool = False, n: int | None = None,
        ts: Sequence[float] = (0.01, 0.05, 0.1, 0.2, 0.5), n_dt: int | None = None, seed: int = 0,
        quiet: bool = False) -> dict[str, Any]:
    out = Path(out)
    t_start = time.perf_counter()
    n = n or (1000 if full else 300)
    n_dt = n_dt or (16 if full else 10)
    mix = nested_mixture()
    sch = LinearVPSchedule()
    rows: list[dict[str, Any]] = []
    curves: dict[float, dict[str, np.ndarray]] = {}
    for i, t in enumerate(progress(list(ts), desc="fd_error", quiet=quiet)):
        x_t = mix.sample_t(n, t, generator=torch.Generator().manual_seed(seed + 100 + i))
        g0 = float(sch.gamma(torch.tensor(t, dtype=F64)))
        xb0 = to_xbar(x_t, g0)
        eps0, deps0 = iso_eps_derivatives(mix, xb0, g0, 1)
        mag = float(deps0.norm(dim=-1).mean())
        dts = _dts(t, n_dt)
        res: dict[str, list[float]] = {"past": [], "future": []}
        for direction, sign in (("past", 1.0), ("future", -1.0)):
            gs = sch.gamma(torch.as_tensor(t + sign * dts, dtype=F64))
            xbs = reference_solve(mix, xb0, g0, gs.tolist())
            for j in range(len(dts)):
                e1 = mix.eps_gamma(xbs[j], gs[j])
                fd = (eps0 - e1) / (g0 - gs[j])
                res[direction].append(float((fd - deps0).norm(dim=-1).mean()))
        curves[t] = {k: np.asarray(v) for k, v in res.items()}
        for j, dt in enumerate(dts):
            rows.append({"t": t, "dt": float(dt), "xi_past": res["past"][j], "xi_future": res["future"][j],
                         "rel_xi_past": res["past"][j] / mag, "rel_xi_future": res["future"][j] / mag,
                         "mean_abs_deps": mag, "n_points": n})
    write_csv(out / "fd_error.csv", rows, COLUMNS)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, t in enumerate(ts):
        dts = _dts(t, n_dt)
        c = f"C{k}"
        axes[0].loglog(dts, curves[t]["past"], "o-", ms=3, c=c, label=f"t = {t}")
        axes[0].loglog(dts, curves[t]["future"], "--", c=c, alpha=0.6)
        mag = rows[k * len(dts)]["mean_abs_deps"]
        axes[1].loglog(dts, curves[t]["past"] / mag, "o-", ms=3, c=c, label=f"t = {t}")
    axes[0].set_ylabel(r"$\xi_t(\Delta t)$ (mean $L_2$)")
    axes[1].set_ylabel(r"$\xi_t(\Delta t)\;/\;$mean$|d\epsilon/d\gamma|$")
    axes[1].axhline(1.0, c="k", lw=0.8, ls=":")
    for ax in axes:
        ax.set_xlabel(r"$\Delta t$")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("FD error (solid: previous point t+dt, dashed: t-dt)", fontsize=9)
    axes[1].set_title("relative to the exact derivative", fontsize=9)
    fig.suptitle(r"First-order finite difference of $d\epsilon/d\gamma$ along the DDIM ODE (GENIE Fig. 3 bottom)",
                 fontsize=10)
    save_figure(fig, out / "fd_error.png")

    # the step size at which the relative FD error reaches 10 % (past direction), per t
    dt_10pct = {}
    for t in ts:
        rel = curves[t]["past"] / rows[[r["t"] for r in rows].index(t)]["mean_abs_deps"]
        above = np.nonzero(rel > 0.1)[0]
        dt_10pct[str(t)] = float(_dts(t, n_dt)[above[0]]) if len(above) else float("nan")
    summary = {
        "experiment": NAME,
        "n_points": n,
        "rel_xi_past_at_dt_1e-2": {str(t): float(np.interp(np.log(1e-2), np.log(_dts(t, n_dt)),
                                                           curves[t]["past"] / rows[[r["t"] for r in rows].index(t)]["mean_abs_deps"]))
                                   if 0.9 * t >= 1e-2 else None for t in ts},
        "dt_where_rel_error_exceeds_10pct": dt_10pct,
        "files": [str(out / "fd_error.png"), str(out / "fd_error.csv"), str(out / "fd_error.json")],
        "seconds": time.perf_counter() - t_start,
    }
    write_json(out / "fd_error.json", summary)
    return {"summary": summary, "rows": rows}
