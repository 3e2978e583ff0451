r"""How the noise level enters the U-Net, measured (``python -m images conditioning --checkpoint A --checkpoint B``).

GENIE's second-order step (eq. (9)) uses ``d eps / d gamma`` along the DDIM ODE; it helps only if eps
is smooth in gamma along the trajectory.  For each checkpoint (same size and training, different
``conditioning``) this reports

* the reference-trajectory RMSE of DDIM, GENIE with the autodiff derivative and DPM-Solver++(2M) at
  equal steps (default 10 and 25), without and with the analytical first step (AFS);
* the smoothness of eps along the ODE: the relative difference between the autodiff ``d eps/d gamma``
  and central finite differences with steps ``dt`` in ``t`` at several times, on a float64 copy of the
  model (:func:`images.evaluate.derivative_smoothness`).  For a smooth eps the difference falls as
  ``dt^2``; where it stays large at ``dt = 1e-3``, eps changes on a finer scale in t than a sampler step.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import atomic_write_text, load_model
from .evaluate import derivative_smoothness, trajectory_error, write_csv
from .sampling import initial_noise, reference_solve, run_sampler

__all__ = ["compare_conditionings"]


def compare_conditionings(checkpoints: Sequence[str | Path], *, steps: Sequence[int] = (10, 25), num: int = 64,
                          seed: int = 1000, times: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
                          dts: Sequence[float] = (1e-2, 1e-3, 1e-4), smooth_num: int = 8, out: Path | None = None,
                          quiet: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"models": []}
    err_rows, smooth_rows = [], []
    for ck in checkpoints:
        model = load_model(ck)
        cfg = model.config
        meta = model.checkpoint_metadata  # type: ignore[attr-defined]
        name = f"{cfg.conditioning} ({Path(ck).name}, step {meta['step']})"
        x1 = initial_noise(num, (cfg.in_channels, cfg.resolution, cfg.resolution), seed)
        ref = reference_solve(model, x1, "rk45").x
        alt = reference_solve(model, x1, "dpm3").x
        entry: dict[str, Any] = {"checkpoint": str(ck), "conditioning": cfg.conditioning, "step": meta["step"],
                                 "reference_disagreement": trajectory_error(alt, ref)["rmse"], "errors": {}}
        for n in steps:
            for afs in (False, True):
                for m in ("ddim", "genie", "dpm-solver++2m"):
                    r = run_sampler(model, x1, m, n, afs=afs)
                    e = trajectory_error(r.x, ref)
                    key = f"{m}{'+afs' if afs else ''}@{n}"
                    entry["errors"][key] = e["rmse"]
                    err_rows.append({"model": name, "conditioning": cfg.conditioning, "method": m, "afs": afs, "steps": n, **e})
        m64 = copy.deepcopy(model).double()
        rows = derivative_smoothness(m64, x1[:smooth_num], times, dts)
        entry["smoothness"] = rows
        for r in rows:
            smooth_rows.append({"model": name, "conditioning": cfg.conditioning, **r})
        results["models"].append(entry)
        if not quiet:
            print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry["errors"].items()))
            for r in rows:
                print(f"   t={r['t']:.3f} |deps/dgamma|={r['deps_dgamma_rms']:.3g} " +
                      " ".join(f"{k}: {v:.2e}" for k, v in r.items() if k.startswith("rel_diff")))
    text = _markdown(results, steps, dts)
    if not quiet:
        print(text)
    if out is not None:
        out = Path(out)
        write_csv(out / "errors.csv", err_rows)
        write_csv(out / "smoothness.csv", smooth_rows)
        atomic_write_text(out / "conditioning.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(out / "conditioning.md", text)
    return results


def _markdown(results: dict[str, Any], steps: Sequence[int], dts: Sequence[float]) -> str:
    lines = ["Reference-trajectory RMSE at equal steps (GENIE-AD / DDIM ratio in brackets)", "",
             "| conditioning | step | " + " | ".join(
                 f"DDIM {n} | GENIE-AD {n} | DPM++(2M) {n}" for n in steps) + " |",
             "|---|---:|" + "---:|" * (3 * len(steps))]
    for afs in (False, True):
        for e in results["models"]:
            cells = []
            for n in steps:
                s = "+afs" if afs else ""
                d, g, p = e["errors"][f"ddim{s}@{n}"], e["errors"][f"genie{s}@{n}"], e["errors"][f"dpm-solver++2m{s}@{n}"]
                cells += [f"{d:.4f}", f"{g:.4f} ({g / d:.2f}x)", f"{p:.4f}"]
            lines.append(f"| {e['conditioning']}{' + AFS' if afs else ''} | {e['step']} | " + " | ".join(cells) + " |")
    lines += ["", "Smoothness of eps along the DDIM ODE: |AD - FD| / |AD| of d eps/d gamma, central FD with step dt in t "
              "(float64 model)", "",
              "| conditioning | t | |d eps/d gamma| | " + " | ".join(f"dt = {d:g}" for d in dts) + " |",
              "|---|---:|---:|" + "---:|" * len(dts)]
    for e in results["models"]:
        for r in e["smoothness"]:
            lines.append(f"| {e['conditioning']} | {r['t']:g} | {r['deps_dgamma_rms']:.3g} | " +
                         " | ".join(f"{r[f'rel_diff_dt={d:g}']:.1e}" for d in dts) + " |")
    return "\n".join(lines) + "\n"
