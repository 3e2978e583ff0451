"""Cost of Taylor coefficients up to order p, relative to one evaluation of f.

For the backends ``"autodiff"`` (nested ``torch.func.jvp``), ``"taylor_mode"`` (jets, O(p^2)) and
``"symbolic"`` (SymPy Lie derivatives + cse + lambdify) this prints, for p = 1..8, the median wall
time of one call ``backend.coefficients(f, t0, y0, p)`` -- all of ``c_0 .. c_p`` -- divided by the
median time of one plain call ``f(t0, y0)``.  Two problems share one right-hand side, the Kepler
problem (``y = (q, p)``, ``q'' = -q / |q|^3``):

* **small**: one 4-dimensional Kepler system (per-call Python overhead dominates);
* **wide**: a batch of 25,000 independent Kepler systems (10^5 entries; arithmetic dominates).

The symbolic backend is reported in two parts: the one-time derivation (Lie derivatives from scratch
up to order p, plus ``cse``/``lambdify`` compilation, in seconds) and the per-call evaluation of the
compiled function (relative to f).  The derivation depends only on f and the event shape, so the
wide problem reuses the small problem's.

Budgets: when one call of a backend takes longer than ``--budget`` seconds at order p, higher
orders are skipped and shown as ``> X s``; likewise a symbolic derivation longer than
``--derive-budget`` seconds stops the symbolic column.

Run::

    python benchmarks/coefficient_cost.py            # full table (a few minutes on 2 CPU cores)
    python benchmarks/coefficient_cost.py --quick    # smoke run: orders 1..4, small batch
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

import torch

import taylorsolve
from taylorsolve import math as tm
from taylorsolve.coefficients import get_backend
from taylorsolve.coefficients.symbolic import clear_cache, derive

F64 = torch.float64


def kepler(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kepler problem ``q' = p, p' = -q / |q|^3`` (unit gravitational parameter); ``y = (q0, q1, p0, p1)``."""
    q0, q1, p0, p1 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    inv_r3 = (q0 * q0 + q1 * q1) ** -1.5
    return tm.stack([p0, p1, -q0 * inv_r3, -q1 * inv_r3], dim=-1)


def kepler_initial_state(eccentricity: float = 0.5, batch: int | None = None, seed: int = 0) -> torch.Tensor:
    """Perihelion state of an orbit with semi-major axis 1; a batch gets slightly perturbed copies."""
    e = eccentricity
    y0 = torch.tensor([1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e))], dtype=F64)
    if batch is None:
        return y0
    g = torch.Generator().manual_seed(seed)
    return y0 + 0.01 * torch.randn(batch, 4, generator=g, dtype=F64)


def median_time(fn: Callable[[], object], repeats: int, max_total: float = 2.0) -> float:
    """Median of up to ``repeats`` timed calls (after one untimed warm-up call when it is cheap).

    A call slower than ``max_total`` seconds is timed once (its first call is the measurement).
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > max_total:
        return first
    times = []
    spent = 0.0
    for _ in range(repeats):
        a = time.perf_counter()
        fn()
        dt = time.perf_counter() - a
        times.append(dt)
        spent += dt
        if spent > max_total and len(times) >= 3:
            break
    return statistics.median(times)


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_ratio(r: float) -> str:
    if r < 10:
        return f"{r:.1f}x"
    if r < 1e4:
        return f"{r:.0f}x"
    return f"{r:.2g}x".replace("e+0", "e").replace("e+", "e")


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "\n".join(
        [
            f"python {platform.python_version()}, torch {torch.__version__}, taylorsolve {taylorsolve.__version__}, "
            f"sympy {__import__('sympy').__version__}",
            f"{platform.system()} {platform.machine()}, CPU: {cpu}, os.cpu_count()={os.cpu_count()}, "
            f"torch threads={torch.get_num_threads()}, interop threads={torch.get_num_interop_threads()}, "
            f"load average {os.getloadavg()[0]:.1f}",
            "dtype float64, device cpu, times: time.perf_counter, median of repeats",
        ]
    )


def run(orders: list[int], batch: int, repeats: int, budget: float, derive_budget: float) -> None:
    t0 = torch.tensor(0.0, dtype=F64)
    problems = [
        ("small: one Kepler system (4 entries)", kepler_initial_state()),
        (f"wide: batch of {batch:,} Kepler systems ({4 * batch:,} entries)", kepler_initial_state(batch=batch)),
    ]
    print(machine_info())
    print()

    # warm-up: first use of torch.func / the jet tracer has one-time costs that are not per-call costs
    y_small = problems[0][1]
    for name in ("autodiff", "taylor_mode"):
        get_backend(name).coefficients(kepler, t0, y_small, 2)

    # symbolic derivation: one-time, shared by both problems (same f, event shape (4,))
    clear_cache()
    derive_time: dict[int, float] = {}
    extend_total = 0.0
    derive_skipped_from: int | None = None
    for p in orders:
        if derive_skipped_from is not None:
            break
        a = time.perf_counter()
        d = derive(kepler, (4,), p)  # cached: extends the previous order's derivation by one Lie step
        extend_total += time.perf_counter() - a
        a = time.perf_counter()
        d.compile("torch", p)  # cse + lambdify of all orders 1..p
        compile_time = time.perf_counter() - a
        derive_time[p] = extend_total + compile_time
        if derive_time[p] > derive_budget:
            derive_skipped_from = p + 1
    ops = derive(kepler, (4,), max(derive_time)).operation_counts if derive_time else []

    for title, y in problems:
        f_time = median_time(lambda: kepler(t0, y), repeats=max(repeats, 21))
        print(f"### {title}")
        print()
        print(f"one evaluation of f: {fmt_time(f_time)}; each cell: time of all coefficients c_0..c_p "
              f"(one call) / time of f, and the absolute time")
        print()
        results: dict[str, dict[int, str]] = {}
        for name in ("autodiff", "taylor_mode", "symbolic"):
            backend = get_backend(name)
            col: dict[int, str] = {}
            over: float | None = None
            for p in orders:
                if name == "symbolic" and p not in derive_time:
                    col[p] = f"derivation > {derive_budget:g} s"
                    continue
                if over is not None:
                    col[p] = f"> {over:g} s"
                    continue
                # symbolic: the first call compiles/validates (already compiled above); not counted
                dt = median_time(lambda: backend.coefficients(kepler, t0, y, p), repeats=repeats)
                col[p] = f"{fmt_ratio(dt / f_time)} ({fmt_time(dt)})"
                if dt > budget:
                    over = budget
            results[name] = col
        header = "| p | autodiff | taylor_mode | symbolic: evaluation | symbolic: derivation (one-time) |"
        print(header)
        print("|---:|---:|---:|---:|---:|")
        for p in orders:
            if p in derive_time:
                dcell = f"{derive_time[p]:.2f} s" + (" (shared)" if y.ndim > 1 else "")
            else:
                dcell = f"> {derive_budget:g} s (skipped)"
            print(f"| {p} | {results['autodiff'][p]} | {results['taylor_mode'][p]} | {results['symbolic'][p]} | {dcell} |")
        print()
    if ops:
        print("symbolic expression size (sympy.count_ops summed over components), y' .. y^(p): "
              + ", ".join(str(o) for o in ops))
    print("notes: autodiff = nested torch.func.jvp (one nesting level per order); taylor_mode = jets, "
          "traced at every call;\n       symbolic evaluation = the compiled (cse'd) torch function; "
          "derivation = Lie derivatives from scratch up to p + cse + lambdify.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: orders 1..4, batch 2,500, few repeats")
    ap.add_argument("--max-order", type=int, default=None, help="highest order (default 8; 4 with --quick)")
    ap.add_argument("--batch", type=int, default=None, help="batch size of the wide problem (default 25,000)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per cell (default 7; 3 with --quick)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per call above which higher orders of a backend are skipped (default 5)")
    ap.add_argument("--derive-budget", type=float, default=None,
                    help="seconds of symbolic derivation above which higher orders are skipped (default 20)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    max_order = args.max_order or (4 if q else 8)
    run(
        orders=list(range(1, max_order + 1)),
        batch=args.batch or (2_500 if q else 25_000),
        repeats=args.repeats or (3 if q else 7),
        budget=args.budget if args.budget is not None else (0.5 if q else 5.0),
        derive_budget=args.derive_budget if args.derive_budget is not None else (5.0 if q else 20.0),
    )


if __name__ == "__main__":
    sys.exit(main())
