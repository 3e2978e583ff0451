"""``samples``: DDIM and GENIE (exact derivatives) beside the ground truth (GENIE Fig. 2 and Fig. 12).

Both integrate the DDIM ODE (eq. (6)) from the same noise ``x_1`` on the quadratic grid down to
``t_cutoff = 1e-3`` with the analytical score of the nested mixture (app. E, eq. (73)-(74)); GENIE gets
the exact ``d eps / d gamma`` along the ODE.  Writes ``samples.png`` (scatter grid) and
``samples.csv`` (quality measures, :mod:`toy.experiments.metrics`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch

from taylorsolve.diffusion import sample

from ..presets import nested_mixture
from . import metrics
from .common import DEFAULT_OUT, F64, exact_provider, progress, pyplot, save_figure, write_csv

NAME = "samples"
COLUMNS = ("method", "steps", "nfe", "derivative_evals", "n_samples") + metrics.QUALITY_COLUMNS + ("wall_s",)


def run(out: Path | str = DEFAULT_OUT, *, full: bool = False, n: int | None = None,
        steps: Sequence[int] = (5, 10, 15, 20, 25), seed: int = 0, t_cutoff: float = 1e-3,
        grid: str = "quadratic", quiet: bool = False) -> dict[str, Any]:
    out = Path(out)
    t_start = time.perf_counter()
    n = n or (20000 if full else 2000)
    mix = nested_mixture()
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, 2, dtype=F64, generator=gen)
    ref = mix.sample(max(n, 2000), generator=torch.Generator().manual_seed(seed + 1))
    truth = mix.sample(n, generator=torch.Generator().manual_seed(seed + 2))
    rows: list[dict[str, Any]] = []
    finals: dict[tuple[str, int], torch.Tensor] = {}
    q_truth = metrics.quality(mix, truth, ref, seed=seed)
    rows.append({"method": "ground_truth", "steps": 0, "nfe": 0, "derivative_evals": 0, "n_samples": n,
                 **q_truth, "wall_s": 0.0})
    # the exact law of the samples at t_cutoff (what a perfect ODE solver produces; slightly wider than p_0)
    xt = mix.sample_t(n, t_cutoff, generator=torch.Generator().manual_seed(seed + 3))
    rows.append({"method": "exact_p_tcutoff", "steps": 0, "nfe": 0, "derivative_evals": 0, "n_samples": n,
                 **metrics.quality(mix, xt, ref, seed=seed), "wall_s": 0.0})
    jobs = [(m, s) for s in steps for m in ("ddim", "genie")]
    for method, s in progress(jobs, desc="samples", quiet=quiet):
        kw = {"derivative": exact_provider(mix)} if method == "genie" else {}
        res = sample(mix.eps, x1, s, method=method, grid=grid, t_cutoff=t_cutoff, **kw)
        finals[(method, s)] = res.x
        rows.append({"method": method, "steps": s, "nfe": res.stats.nfe,
                     "derivative_evals": res.stats.derivative_evals, "n_samples": n,
                     **metrics.quality(mix, res.x, ref, seed=seed), "wall_s": res.stats.wall_time})
    write_csv(out / "samples.csv", rows, COLUMNS)

    plt = pyplot()
    ncol = len(steps) + 1
    fig, axes = plt.subplots(2, ncol, figsize=(2.6 * ncol, 5.4), squeeze=False)
    lim = 1.35
    n_show = min(n, 5000)
    for r, method in enumerate(("ddim", "genie")):
        ax = axes[r, 0]
        ax.scatter(truth[:n_show, 0], truth[:n_show, 1], s=0.5, c="k", alpha=0.5, linewidths=0)
        ax.set_title("ground truth", fontsize=9)
        for c, s in enumerate(steps, start=1):
            x = finals[(method, s)]
            ax = axes[r, c]
            ax.scatter(x[:n_show, 0], x[:n_show, 1], s=0.5, c="C0" if method == "ddim" else "C3",
                       alpha=0.5, linewidths=0)
            ax.set_title(f"{method.upper()}, n = {s}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Nested mixture (GENIE app. E), exact scores, {grid} grid, t_cutoff={t_cutoff:g}", fontsize=10)
    save_figure(fig, out / "samples.png")

    by = {(r["method"], r["steps"]): r for r in rows}
    summary = {
        "experiment": NAME,
        "n_samples": n,
        "frac_2sigma": {f"{m}@{s}": by[(m, s)]["frac_2sigma"] for s in steps for m in ("ddim", "genie")},
        "frac_2sigma_truth": q_truth["frac_2sigma"],
        "files": [str(out / "samples.png"), str(out / "samples.csv")],
        "seconds": time.perf_counter() - t_start,
    }
    return {"summary": summary, "rows": rows}
