"""taylorsolve against scipy's DOP853 and heyoka, side by side in one run (ratios printed, no timed tests).

Problems (float64):

* **Kepler** (``q'' = -q/|q|^3``, semi-major axis 1, perihelion start) with eccentricity 0.5 and 0.9 over
  10 orbits (``t1 = 20 pi``): the exact state at ``t1`` is the initial state.
* **Lorenz** (sigma 10, rho 28, beta 8/3) from (1, 1, 1) to ``t1 = 10``; the reference end state comes
  from heyoka in 80-bit long double at tol 1e-19 (when heyoka is installed; otherwise from taylorsolve
  at tol 1e-16, and the Lorenz error column is then not independent).

Methods at the same tolerance (``rtol = atol = tol``, tol in 1e-9, 1e-12, 1e-15):

* ``taylorsolve.solve(f, y0, t_span=..., order="auto")``: default backend ("auto" = taylor_mode,
  compiled with numba), heyoka's order and step rule.  Compile time is reported apart (first call, then
  cached in memory and on disk).
* ``scipy.integrate.solve_ivp(method="DOP853")`` on a NumPy right-hand side.
* ``heyoka.taylor_adaptive(..., tol=tol).propagate_until(t1)`` (optional: ``pip install "taylorsolve[bench]"``).

Also: 1,000 perturbed Kepler orbits solved as one batch (per-orbit step counts against solving each
orbit alone; time per orbit against DOP853 on the stacked 4,000-dimensional system), and dense output
throughput (points per second on the Kepler solution).

Times: median wall time over ``--repeats`` runs (``time.perf_counter``) after one warm-up run, and the
process CPU time of the same runs (less sensitive to other load on a shared machine).

Run::

    python benchmarks/compare.py                 # everything (a few minutes)
    python benchmarks/compare.py --quick         # tol 1e-12 only, 200 orbits, fewer repeats
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

import taylorsolve as ts

try:  # optional peer
    import heyoka as hy
except ImportError:  # pragma: no cover - depends on the environment
    hy = None

F64 = torch.float64
T_KEPLER = 20 * math.pi
T_LORENZ = 10.0


# ---- right-hand sides -----------------------------------------------------------------------------
def kepler(t, y):
    x, yy, vx, vy = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    inv_r3 = (x * x + yy * yy) ** -1.5
    return torch.stack([vx, vy, -x * inv_r3, -yy * inv_r3], dim=-1)


def kepler_np(t, y):
    x, yy, vx, vy = y
    inv_r3 = (x * x + yy * yy) ** -1.5
    return np.array([vx, vy, -x * inv_r3, -yy * inv_r3])


def lorenz(t, y):
    x, yy, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([10.0 * (yy - x), x * (28.0 - z) - yy, x * yy - (8.0 / 3.0) * z], dim=-1)


def lorenz_np(t, y):
    x, yy, z = y
    return np.array([10.0 * (yy - x), x * (28.0 - z) - yy, x * yy - (8.0 / 3.0) * z])


def kepler_y0(e: float) -> np.ndarray:
    return np.array([1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e))])


def heyoka_system(name: str):
    if name == "lorenz":
        x, y, z = hy.make_vars("x", "y", "z")
        return [(x, 10.0 * (y - x)), (y, x * (28.0 - z) - y), (z, x * y - (8.0 / 3.0) * z)]
    x, y, vx, vy = hy.make_vars("x", "y", "vx", "vy")
    r3 = (x * x + y * y) ** -1.5
    return [(x, vx), (y, vy), (vx, -x * r3), (vy, -y * r3)]


# ---- timing -----------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median wall seconds, median CPU seconds, last result) after one untimed warm-up call."""
    out = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import scipy

    hv = hy.__version__ if hy is not None else "not installed"
    try:
        import numba

        nv = numba.__version__
    except ImportError:
        nv = "not installed"
    return (f"python {platform.python_version()}, taylorsolve {ts.__version__}, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread), numba {nv}, scipy {scipy.__version__}, heyoka {hv}\n"
            f"CPU: {cpu}, os.cpu_count()={os.cpu_count()}, load average at start {os.getloadavg()[0]:.1f}")


# ---- single trajectories ------------------------------------------------------------------------------
def reference_end(name: str, y0: np.ndarray, t1: float) -> np.ndarray:
    if name.startswith("kepler"):
        return y0.copy()  # 10 full orbits
    if hy is not None:
        ta = hy.taylor_adaptive(heyoka_system(name), y0.astype(np.longdouble), tol=np.longdouble(1e-19),
                                fp_type=np.longdouble)
        ta.propagate_until(np.longdouble(t1))
        return np.asarray(ta.state, dtype=np.float64)
    sol = ts.solve(lorenz, torch.tensor(y0, dtype=F64), t_span=(0.0, t1), order=30, rtol=1e-16, atol=1e-16, dense=False)
    return sol.ys[-1].numpy()


def run_single(tols: list[float], repeats: int) -> None:
    problems = [("kepler e=0.5", kepler, kepler_np, kepler_y0(0.5), T_KEPLER),
                ("kepler e=0.9", kepler, kepler_np, kepler_y0(0.9), T_KEPLER),
                ("lorenz", lorenz, lorenz_np, np.array([1.0, 1.0, 1.0]), T_LORENZ)]
    print("## One trajectory: wall time (CPU time), steps, end error; ratios against DOP853 and heyoka\n")
    print("| problem | tol | taylorsolve | DOP853 | heyoka | time ts/DOP853 | time ts/heyoka | steps ts / DOP853 / heyoka "
          "| end error ts | DOP853 | heyoka | error DOP853/ts | error ts/heyoka |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    compile_notes = []
    for name, f, fnp, y0, t1 in problems:
        ref = reference_end(name, y0, t1)
        yt = torch.tensor(y0, dtype=F64)
        key = name.split()[0]
        for tol in tols:
            c0 = time.perf_counter()
            first = ts.solve(f, yt, t_span=(0.0, t1), order="auto", rtol=tol, atol=tol, dense=False)
            first_wall = time.perf_counter() - c0
            if first.stats.compile_time > 0:
                compile_notes.append(f"{name}, tol {tol:.0e}: first call {fmt_t(first_wall)} of which compiling/loading "
                                     f"{fmt_t(first.stats.compile_time)} (order {first.stats.order})")
            w_ts, c_ts, sol = timed(lambda: ts.solve(f, yt, t_span=(0.0, t1), order="auto", rtol=tol, atol=tol,
                                                     dense=False), repeats)
            err_ts = float(np.abs(sol.ys[-1].numpy() - ref).max())
            w_dp, c_dp, res = timed(lambda: solve_ivp(fnp, (0.0, t1), y0, method="DOP853", rtol=tol, atol=tol),
                                    max(1, repeats // 3))
            err_dp = float(np.abs(res.y[:, -1] - ref).max())
            if hy is not None:
                def run_hy():
                    ta = hy.taylor_adaptive(heyoka_system(key), y0.copy(), tol=tol)
                    return ta, ta.propagate_until(t1)

                ta0, _ = run_hy()  # construction (JIT compile) outside the timing
                def prop():
                    ta0.time = 0.0
                    ta0.state[:] = y0
                    return ta0.propagate_until(t1)

                w_hy, c_hy, out = timed(prop, repeats)
                err_hy = float(np.abs(ta0.state - ref).max())
                steps_hy = int(out[3])
                hy_cells = (f"{fmt_t(w_hy)} ({fmt_t(c_hy)})", f"{w_ts / w_hy:.1f}x", str(steps_hy), f"{err_hy:.1e}",
                            f"{err_ts / err_hy:.2f}" if err_hy > 0 else "-")
            else:
                hy_cells = ("-", "-", "-", "-", "-")
            print(f"| {name} | {tol:.0e} | {fmt_t(w_ts)} ({fmt_t(c_ts)}) | {fmt_t(w_dp)} ({fmt_t(c_dp)}) | {hy_cells[0]} "
                  f"| {w_ts / w_dp:.3f} | {hy_cells[1]} | {sol.stats.steps} / {len(res.t) - 1} / {hy_cells[2]} "
                  f"| {err_ts:.1e} | {err_dp:.1e} | {hy_cells[3]} | {err_dp / max(err_ts, 1e-300):.0f} | {hy_cells[4]} |",
                  flush=True)
    print()
    for note in compile_notes:
        print(f"- compile: {note}")
    # the interpreted path, for reference
    yt = torch.tensor(kepler_y0(0.5), dtype=F64)
    w_int, c_int, s_int = timed(lambda: ts.solve(kepler, yt, t_span=(0.0, T_KEPLER), order="auto", rtol=1e-12, atol=1e-12,
                                                 backend_options={"compile": False}, dense=False), 1)
    print(f"- interpreted jets (backend_options={{'compile': False}}), kepler e=0.5, tol 1e-12: {fmt_t(w_int)} "
          f"({fmt_t(c_int)} CPU), {s_int.stats.steps} steps, {w_int / s_int.stats.steps * 1e6:.0f} us a step")
    print()


# ---- a batch of orbits -----------------------------------------------------------------------------------
def run_batch(n: int, tol: float, repeats: int) -> None:
    g = np.random.default_rng(0)
    y0 = kepler_y0(0.5) + 0.01 * g.standard_normal((n, 4))
    yt = torch.tensor(y0, dtype=F64)
    print(f"## {n:,} Kepler orbits (e ~ 0.5, perturbed), 10 periods, tol {tol:.0e}\n")
    first = ts.solve(kepler, yt, t_span=(0.0, T_KEPLER), order="auto", rtol=tol, atol=tol, dense=False)
    w_b, c_b, sb = timed(lambda: ts.solve(kepler, yt, t_span=(0.0, T_KEPLER), order="auto", rtol=tol, atol=tol,
                                          dense=False), repeats)
    w_bd, c_bd, sbd = timed(lambda: ts.solve(kepler, yt, t_span=(0.0, T_KEPLER), order="auto", rtol=tol, atol=tol),
                            max(1, repeats // 2))
    w_sh, c_sh, ssh = timed(lambda: ts.solve(kepler, yt, t_span=(0.0, T_KEPLER), order="auto", rtol=tol, atol=tol,
                                             batch_steps="shared", dense=False), max(1, repeats // 2))
    alone_steps = []
    alone_end = []
    w_alone = 0.0
    for i in range(n):
        w = time.perf_counter()
        s = ts.solve(kepler, yt[i], t_span=(0.0, T_KEPLER), order="auto", rtol=tol, atol=tol, dense=False)
        w_alone += time.perf_counter() - w
        alone_steps.append(s.stats.steps)
        alone_end.append(s.ys[-1].numpy())
    alone_steps = np.array(alone_steps)
    ratio = sb.stats.steps_per_member.numpy() / alone_steps
    ratio_sh = ssh.stats.steps / alone_steps

    def stacked(t, y):
        y = y.reshape(n, 4)
        x, yy, vx, vy = y.T
        r = (x * x + yy * yy) ** -1.5
        return np.stack([vx, vy, -x * r, -yy * r], 1).ravel()

    w_dp, c_dp, res = timed(lambda: solve_ivp(stacked, (0.0, T_KEPLER), y0.ravel(), method="DOP853", rtol=tol, atol=tol),
                            1)
    print("| method | wall (CPU) | per orbit | steps per orbit | steps / steps alone (min, max) |")
    print("|:---|---:|---:|---:|---:|")
    print(f"| taylorsolve batch, per-trajectory steps | {fmt_t(w_b)} ({fmt_t(c_b)}) | {fmt_t(w_b / n)} "
          f"| {sb.stats.steps_per_member.float().mean():.0f} (max {sb.stats.steps}) | {ratio.min():.2f}, {ratio.max():.2f} |")
    print(f"| same, with dense output | {fmt_t(w_bd)} ({fmt_t(c_bd)}) | {fmt_t(w_bd / n)} | | |")
    print(f"| taylorsolve batch, batch_steps='shared' | {fmt_t(w_sh)} ({fmt_t(c_sh)}) | {fmt_t(w_sh / n)} | {ssh.stats.steps} "
          f"| {ratio_sh.min():.2f}, {ratio_sh.max():.2f} |")
    print(f"| taylorsolve, each orbit alone (loop of solves) | {fmt_t(w_alone)} | {fmt_t(w_alone / n)} | "
          f"{alone_steps.mean():.0f} | 1 |")
    print(f"| DOP853, stacked {4 * n}-dimensional system | {fmt_t(w_dp)} ({fmt_t(c_dp)}) | {fmt_t(w_dp / n)} "
          f"| {len(res.t) - 1} (shared) | |")
    if hy is not None:
        tas = hy.taylor_adaptive(heyoka_system("kepler"), y0[0].copy(), tol=tol)
        w = time.perf_counter()
        for i in range(n):
            tas.time = 0.0
            tas.state[:] = y0[i]
            tas.propagate_until(T_KEPLER)
        w_hy = time.perf_counter() - w
        print(f"| heyoka, each orbit alone (loop) | {fmt_t(w_hy)} | {fmt_t(w_hy / n)} | | |")
    same = float(np.abs(sb.ys[-1].numpy() - np.stack(alone_end)).max())
    diff_dp = float(np.abs(res.y[:, -1].reshape(n, 4) - sb.ys[-1].numpy()).max())
    print(f"\nratio per orbit taylorsolve / DOP853 stacked: {w_b / w_dp:.3f}; max |batch - each alone| at t1: {same:.1e}; "
          f"max |taylorsolve - DOP853| at t1: {diff_dp:.1e} (compile/load on the first batch call "
          f"{fmt_t(first.stats.compile_time)})\n")


# ---- dense output ------------------------------------------------------------------------------------------
def run_dense(points: int, repeats: int) -> None:
    y0 = kepler_y0(0.5)
    yt = torch.tensor(y0, dtype=F64)
    tq = np.linspace(0.0, T_KEPLER, points)
    tqt = torch.tensor(tq, dtype=F64)
    sol = ts.solve(kepler, yt, t_span=(0.0, T_KEPLER), order="auto", rtol=1e-12, atol=1e-12)
    w_ts, _, d_ts = timed(lambda: sol(tqt), repeats)
    res = solve_ivp(kepler_np, (0.0, T_KEPLER), y0, method="DOP853", rtol=1e-12, atol=1e-12, dense_output=True)
    w_dp, _, d_dp = timed(lambda: res.sol(tq), max(1, repeats // 2))
    print(f"## Dense output: {points:,} points on the Kepler e=0.5 solution (tol 1e-12)\n")
    print("| method | time | points per second |")
    print("|:---|---:|---:|")
    print(f"| taylorsolve Solution.__call__ (vectorised) | {fmt_t(w_ts)} | {points / w_ts:.2e} |")
    print(f"| DOP853 OdeSolution | {fmt_t(w_dp)} | {points / w_dp:.2e} |")
    if hy is not None:
        ta = hy.taylor_adaptive(heyoka_system("kepler"), y0.copy(), tol=1e-12)
        co = ta.propagate_until(T_KEPLER, c_output=True)[4]
        w_hy, _, d_hy = timed(lambda: co(tq), repeats)
        print(f"| heyoka continuous_output | {fmt_t(w_hy)} | {points / w_hy:.2e} |")
    diff = float(np.abs(d_ts.numpy() - d_dp.T).max())
    print(f"\nmax |taylorsolve - DOP853| over the points: {diff:.1e} (DOP853's own error is larger; both are below 1e-7)\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tol 1e-12 only, 200 orbits, 2 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7; 2 with --quick)")
    ap.add_argument("--orbits", type=int, default=None, help="batch size (default 1000; 200 with --quick)")
    ap.add_argument("--points", type=int, default=1_000_000, help="dense-output points")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 7)
    print(machine())
    print()
    run_single([1e-12] if args.quick else [1e-9, 1e-12, 1e-15], repeats)
    run_batch(args.orbits or (200 if args.quick else 1000), 1e-12, max(1, repeats // 2))
    run_dense(args.points, repeats)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
