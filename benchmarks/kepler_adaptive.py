"""Adaptive truncated Taylor method (TTM) against DOP853 on the Kepler problem.

Kepler problem ``q'' = -q / |q|^3`` (unit gravitational parameter), eccentricity 0.5, semi-major axis
1, started at perihelion and integrated over 10 orbital periods (``t1 = 10 * 2 pi``).  The exact
solution at ``t1`` is the initial state, and energy ``H = |p|^2/2 - 1/|q|`` and angular momentum
``L = q0 p1 - q1 p0`` are conserved, so all errors are measured against exact values.

Methods, at the same tolerances (``rtol = atol = tol`` for tol in 1e-6, 1e-9, 1e-12):

* ``taylorsolve.solve(..., t_span=..., backend="taylor_mode")`` with ``order="auto"`` (heyoka's order
  ``p = ceil(-ln tol / 2) + 1`` and heyoka's step rule) and a few fixed orders (the Jorba-Zou step rule
  with the tolerances); steps are never rejected.  The stepping runs compiled (numba); the first
  solve's compile time is not in the table (see ``benchmarks/compare.py``, which reports it);
* ``scipy.integrate.solve_ivp(method="DOP853")`` (explicit Runge-Kutta of order 8 with embedded
  error control) on a NumPy right-hand side.

Columns: accepted steps; f evaluations (for TTM: one traced evaluation of f per step, each followed by
an O(p^2) Taylor-mode sweep -- not comparable one-to-one with DOP853's plain evaluations, hence also
the wall time); the maximum energy and angular-momentum errors over ``--samples`` uniformly spaced
times, evaluated with each method's dense output; the max-abs error of the final state; the wall
time and the process CPU time of the solve (CPU time is less sensitive to other load on the machine).

Run::

    python benchmarks/kepler_adaptive.py            # full table
    python benchmarks/kepler_adaptive.py --quick    # tolerances 1e-6 and 1e-9, order "auto" only
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

import taylorsolve
from taylorsolve import math as tm

F64 = torch.float64
ECC = 0.5
ORBITS = 10
T1 = ORBITS * 2.0 * math.pi  # period 2 pi a^{3/2} with a = 1


def kepler(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    q0, q1, p0, p1 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    inv_r3 = (q0 * q0 + q1 * q1) ** -1.5
    return tm.stack([p0, p1, -q0 * inv_r3, -q1 * inv_r3], dim=-1)


def kepler_np(t: float, y: np.ndarray) -> np.ndarray:
    q0, q1, p0, p1 = y
    inv_r3 = (q0 * q0 + q1 * q1) ** -1.5
    return np.array([p0, p1, -q0 * inv_r3, -q1 * inv_r3])


def initial_state(e: float = ECC) -> np.ndarray:
    return np.array([1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e))])


def energy(y: np.ndarray) -> np.ndarray:
    """``y`` shaped ``[..., 4]``."""
    q0, q1, p0, p1 = np.moveaxis(y, -1, 0)
    return 0.5 * (p0 * p0 + p1 * p1) - 1.0 / np.sqrt(q0 * q0 + q1 * q1)


def angular_momentum(y: np.ndarray) -> np.ndarray:
    q0, q1, p0, p1 = np.moveaxis(y, -1, 0)
    return q0 * p1 - q1 * p0


def invariant_errors(ys: np.ndarray, y0: np.ndarray) -> tuple[float, float]:
    return (
        float(np.max(np.abs(energy(ys) - energy(y0)))),
        float(np.max(np.abs(angular_momentum(ys) - angular_momentum(y0)))),
    )


def run_ttm(order: int | str, tol: float, samples: np.ndarray) -> dict:
    y0 = torch.tensor(initial_state(), dtype=F64)
    taylorsolve.solve(kepler, y0, t_span=(0.0, T1), order=order, rtol=tol, atol=tol, backend="taylor_mode")  # compile
    start, cpu = time.perf_counter(), time.process_time()
    sol = taylorsolve.solve(kepler, y0, t_span=(0.0, T1), order=order, rtol=tol, atol=tol, backend="taylor_mode")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    dense = sol(torch.as_tensor(samples, dtype=F64)).numpy()
    e_err, l_err = invariant_errors(dense, initial_state())
    return {
        "method": f"TTM taylor_mode, order {order}" + (f" (= {sol.stats.order})" if order == "auto" else ""),
        "steps": sol.stats.steps,
        "f_evals": sol.stats.f_evals,
        "energy": e_err,
        "angmom": l_err,
        "end": float(np.max(np.abs(sol.ys[-1].numpy() - initial_state()))),
        "wall": wall,
        "cpu": cpu,
    }


def fmt_t(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def run_dop853(tol: float, samples: np.ndarray) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    res = solve_ivp(kepler_np, (0.0, T1), initial_state(), method="DOP853", rtol=tol, atol=tol, dense_output=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if not res.success:
        raise RuntimeError(f"DOP853 failed: {res.message}")
    dense = res.sol(samples).T
    e_err, l_err = invariant_errors(dense, initial_state())
    return {
        "method": "scipy DOP853",
        "steps": len(res.t) - 1,
        "f_evals": res.nfev,
        "energy": e_err,
        "angmom": l_err,
        "end": float(np.max(np.abs(res.y[:, -1] - initial_state()))),
        "wall": wall,
        "cpu": cpu,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tolerances 1e-6 and 1e-9, order 'auto' only")
    ap.add_argument("--orders", type=str, default="auto,8,12,20", help="comma-separated TTM orders ('auto' allowed)")
    ap.add_argument("--tols", type=str, default="1e-6,1e-9,1e-12", help="comma-separated tolerances")
    ap.add_argument("--samples", type=int, default=2000, help="uniform times for the invariant errors")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    orders: list[int | str] = [o if o == "auto" else int(o) for o in args.orders.split(",")]
    tols = [float(x) for x in args.tols.split(",")]
    if args.quick:
        orders, tols = ["auto"], [1e-6, 1e-9]
    samples = np.linspace(0.0, T1, args.samples)

    print(f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"taylorsolve {taylorsolve.__version__}, scipy {__import__('scipy').__version__}, numpy {np.__version__}, "
          f"os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"Kepler, e = {ECC}, {ORBITS} orbits (t1 = {T1:.4f}), rtol = atol = tol; invariant errors: max over "
          f"{args.samples} uniform times via dense output; end error: max |y(t1) - y(0)|")
    print()
    print("| tol | method | steps | f evals | max energy err | max ang. mom. err | end error | wall time | CPU time |")
    print("|---:|:---|---:|---:|---:|---:|---:|---:|---:|")
    for tol in tols:
        rows = [run_ttm(o, tol, samples) for o in orders] + [run_dop853(tol, samples)]
        for r in rows:
            print(f"| {tol:.0e} | {r['method']} | {r['steps']} | {r['f_evals']} | {r['energy']:.2e} | "
                  f"{r['angmom']:.2e} | {r['end']:.2e} | {fmt_t(r['wall'])} | {fmt_t(r['cpu'])} |", flush=True)
    print()
    print("TTM f evals: one evaluation of f per step (a compiled replay of the traced tape), followed by an O(p^2) "
          "Taylor-mode sweep (the work of a step grows with the order). TTM times: the second solve (the first compiles).")


if __name__ == "__main__":
    sys.exit(main())
