"""Toy experiments on the nested Gaussian mixture of GENIE app. E (exact scores and derivatives).

Each experiment is ``run(out, *, full=False, n=None, seed=0, quiet=False, ...) -> {"summary", "rows"}``
and writes a PNG and a CSV (plus a JSON summary) into ``out`` atomically:

* :mod:`~toy.experiments.samples` -- DDIM vs GENIE samples at 5..25 steps (Fig. 2 / 12).
* :mod:`~toy.experiments.single_step` -- single-step error vs step size, DDIM / GENIE / TTM-3 (Fig. 3 top, 10).
* :mod:`~toy.experiments.fd_error` -- finite-difference d eps/d gamma error (Fig. 3 bottom).
* :mod:`~toy.experiments.global_error` -- global error and quality vs NFE for every sampler.
* :mod:`~toy.experiments.cld` -- critically-damped Langevin diffusion and gDDIM (Prop. 4, L vs R, lambda,
  every CLD sampler vs NFE with GENIE on CLD, HSM-trained models); results in ``<out>/cld/``.

Command line: ``python -m toy <name|all> [--out DIR] [--full]``.
"""
from __future__ import annotations

from . import cld, fd_error, global_error, metrics, samples, single_step

EXPERIMENTS = {
    "samples": samples.run,
    "single_step": single_step.run,
    "fd_error": fd_error.run,
    "global_error": global_error.run,
    "cld": cld.run,
}

__all__ = ["EXPERIMENTS", "metrics", "samples", "single_step", "fd_error", "global_error", "cld", "summarize"]


def summarize(results: dict) -> str:
    """A short plain-text summary of the experiments' results (what ``python -m toy all`` prints)."""
    lines = []
    if "samples" in results:
        s = results["samples"]["summary"]
        fr = s["frac_2sigma"]
        steps = sorted({int(k.split("@")[1]) for k in fr})
        lines.append(f"samples (n={s['n_samples']}, quadratic grid): fraction within 2 sigma of a mode "
                     f"(ground truth p_0 {s['frac_2sigma_truth']:.2f})")
        lines.append("  steps      " + " ".join(f"{k:>6d}" for k in steps))
        for m in ("ddim", "genie"):
            lines.append(f"  {m:<10s} " + " ".join(f"{fr[f'{m}@{k}']:6.2f}" for k in steps))
    if "single_step" in results:
        s = results["single_step"]["summary"]
        lines.append(f"single_step (n={s['n_points']}): log-log slopes at small dt (expected 2/3/4)")
        for t, d in s["slopes"].items():
            lines.append(f"  t={t}: " + ", ".join(f"{k} {v:.2f}" for k, v in d.items())
                         + f"; TTM-3 < GENIE at small dt: {s['ttm3_beats_genie_small_dt'][t]}")
    if "fd_error" in results:
        s = results["fd_error"]["summary"]
        lines.append("fd_error: dt at which the FD derivative's relative error exceeds 10%: "
                     + ", ".join(f"t={t}: {v:.2g}" for t, v in s["dt_where_rel_error_exceeds_10pct"].items()))
    if "global_error" in results:
        s = results["global_error"]["summary"]
        lines.append(f"global_error (n={s['n_samples']}; mean L2 error vs reference ODE solution, best grid):")
        for m, d in s["table"].items():
            items = sorted(d.items(), key=lambda kv: int(kv[0]))
            g = items[0][1]["grid"]
            vals = ", ".join(
                f"{k}:{v['global_error']:.2g}" if v["global_error"] == v["global_error"] and v["global_error"] is not None
                else f"{k}:q2s={v['frac_2sigma']:.2f}" for k, v in items)
            lines.append(f"  {m:<16s} [{g}] NFE {vals}")
        rc = s["derivative_relative_cost"]
        lines.append("  derivative cost relative to one eps evaluation: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in rc.items()))
    if "cld" in results:
        lines.append("cld (critically-damped Langevin diffusion, gDDIM; details in cld/cld_summary.json):")
        lines.append(results["cld"]["summary"]["text"])
    checks = {}
    for name, r in results.items():
        for k, v in r["summary"].get("checks", {}).items():
            checks[f"{name}.{k}"] = v
    if checks:
        lines.append("checks:")
        for k, v in checks.items():
            extra = f" (ratio {v['ratio']:.3f}, required <= {v['required_ratio']})" if "ratio" in v else ""
            lines.append(f"  [{'PASS' if v['pass'] else 'FAIL'}] {k}{extra}")
    return "\n".join(lines)
