r"""The cascaded upsampler experiment in the form of GENIE's Table 3 (sec. 5.4, app. C, Table 13):
``python -m images upsample``.

A ``r x r -> R x R`` upsampler (:mod:`images.upsampler`; the project's run: ``patches``, 16 -> 32) is
sampled from held-out ground-truth crops ``x_0`` (a seeded choice of ``num`` of them):

    low = down(x_0),   z = alpha_s up(low) + sigma_s n   (s = ``aug_level``, n drawn once from ``seed``),

the same ``z`` for every method (the conditioning is part of the model, so sampling stays one
deterministic ODE per image), from the same noise ``x_1`` (float64 state).  Each method runs at the NFE
budgets with and without the analytical first step, and the table keeps the better of the two by
reference-trajectory error, as the paper's Table 3 keeps the better of Table 13's AFS rows (no final
denoising step: the samples are the ODE solution at ``t_cutoff``, like the reference's).

Figures per method and budget (every run in ``upsample.csv``):

* **reference-trajectory error** (:func:`images.evaluate.trajectory_error`): the mean over images of
  ``sqrt(mean_pixels (x - x_ref)^2)`` against the same model's ODE solution from the same ``x_1`` and
  ``z`` by RK45 (rtol = atol = 1e-7; :data:`images.sampling.REFERENCE_SOLVERS`).  A second reference,
  DPM-Solver-3 with 100 log-SNR steps, is reported as its own row: its error is the two references'
  disagreement, which must stay under a tenth of the smallest error in the table;
* **PSNR** to the ground-truth crop (:func:`psnr`), pixels in ``[-1, 1]`` (peak-to-peak 2), samples
  clamped to ``[-1, 1]`` first:  ``PSNR = 10 log10(2^2 / MSE)`` dB per image,
  ``MSE = mean_pixels (clamp(x) - x_0)^2``, averaged over the images.  Context rows: the plain bilinear
  up-scaling ``up(low)`` (no noise) and the reference ODE solution (the model's own error, which no
  sampler removes);
* the NFE actually spent and the cost counted against the budget: GENIE (head) pays its head's
  overhead, ``NFE (1 + overhead)`` (sec. 5; the overhead measured on this model with
  :func:`images.heads.measure_overhead`, app. C.2.5, or given), GENIE-AD its JVP passes at their
  measured cost in forward passes (:func:`images.main_job.measure_jvp_cost`), as in the main job;
* wall time of the solve.

The issue's target (the paper's "with only five NFEs GENIE outperforms all other methods at NFEs=15"):
GENIE at NFE 5 below DDIM at NFE 10 in reference-trajectory error (:func:`genie_vs_ddim`).

Outputs in ``out``: ``results.json``, ``upsample.csv``, ``upsample.md`` (the tables) and
``samples_nfe5.png`` / ``samples_nfe10.png`` (rows: the low-resolution input enlarged with nearest
neighbours, DDIM, GENIE, the reference solution, the ground truth; same images in every column).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_write_text, load_model
from .errors import CheckpointNotFoundError, ConfigError, HeadMismatchError, ResolutionMismatchError
from .evaluate import save_grid, trajectory_error, write_csv
from .main_job import DEFAULT_OUT, MethodSpec, _log, _steps, measure_jvp_cost
from .sampling import initial_noise, method_available, reference_solve, run_sampler
from .upsampler import SAMPLE_AUG_LEVEL, condition, downsample, upscale

__all__ = ["COMMANDS", "run_upsample", "psnr", "genie_vs_ddim", "method_spec", "add_parsers", "run", "DEFAULT_CHECKPOINT",
           "DEFAULT_HEAD", "METHODS"]

#: the committed upsampler and its head (``images/checkpoints/patches_up/``, beside this module)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "patches_up" / "model.safetensors"
DEFAULT_HEAD = DEFAULT_CHECKPOINT.parent / "heads" / "head.safetensors"
#: the default rows (Table 3's methods); ``"genie"`` = GENIE with the exact autodiff derivative
METHODS = ("ddim", "s-pndm", "f-pndm", "genie-head")
_HEAD_KEY = ("upsampler",)


def method_spec(name: str) -> MethodSpec:
    """The row of a method name: ``ddim``, ``s-pndm``, ``f-pndm``, ``genie-head`` (the distilled head),
    ``genie`` (autodiff derivative, JVP priced at its measured cost) or any other registered sampler."""
    key = name.strip().lower()
    fixed = {"ddim": MethodSpec("DDIM", "ddim"), "s-pndm": MethodSpec("S-PNDM", "s-pndm"),
             "f-pndm": MethodSpec("F-PNDM", "f-pndm"),
             "genie-head": MethodSpec("GENIE (head)", "genie", heads=_HEAD_KEY, options=(("derivative", "head"),)),
             "genie": MethodSpec("GENIE-AD", "genie", "measured")}
    if key in fixed:
        return fixed[key]
    if not method_available(key):
        raise ConfigError(f"unknown method {name!r}; use {', '.join(fixed)} or a registered sampler")
    return MethodSpec(key.upper(), key)


def psnr(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    r"""Per-image PSNR in dB of ``x`` against ``x0``, pixels in ``[-1, 1]`` (peak-to-peak 2):
    ``10 log10(4 / mean_pixels (clamp(x, -1, 1) - x0)^2)``, float64 ``[N]`` (``inf`` where equal)."""
    if x.shape != x0.shape:
        raise ResolutionMismatchError(f"PSNR of images of different shapes {tuple(x.shape)} and {tuple(x0.shape)}")
    mse = (x.double().clamp(-1, 1) - x0.double()).flatten(1).square().mean(1)
    return 10.0 * torch.log10(4.0 / mse)


def _psnr_stats(x: torch.Tensor, x0: torch.Tensor) -> dict[str, float]:
    p = psnr(x, x0)
    n = p.numel()
    return {"psnr": float(p.mean()), "psnr_se": float(p.std() / math.sqrt(n)) if n > 1 else 0.0}


def genie_vs_ddim(best: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """The target: GENIE at NFE 5 (the head if it ran, else GENIE-AD) against DDIM at NFE 10 in
    reference-trajectory error (``best[(label, nfe)]["rmse"]``), and against every other method at NFE 15
    (the paper's claim).  ``met`` is ``None`` when an entry is missing."""
    genie = next((g for g in ("GENIE (head)", "GENIE-AD") if (g, 5) in best), None)
    d10 = best.get(("DDIM", 10))
    out: dict[str, Any] = {"genie": genie, "genie_nfe5_rmse": best[(genie, 5)]["rmse"] if genie else None,
                           "ddim_nfe10_rmse": d10["rmse"] if d10 else None}
    if genie is None or d10 is None:
        out.update(met=None, ratio=None,
                   verdict="n/a: " + ("no GENIE run at NFE 5" if genie is None else "no DDIM run at NFE 10"))
        return out
    g5 = out["genie_nfe5_rmse"]
    out["ratio"] = g5 / d10["rmse"]
    out["met"] = g5 < d10["rmse"]
    others15 = {m: b["rmse"] for (m, n), b in best.items() if n == 15 and not m.startswith("GENIE")}
    out["others_nfe15_rmse"] = others15
    out["beats_others_at_nfe15"] = all(g5 < e for e in others15.values()) if others15 else None
    out["verdict"] = (f"{genie} at NFE 5: RMSE {g5:.4g} {'<' if out['met'] else '>='} DDIM at NFE 10: "
                      f"{d10['rmse']:.4g} (ratio {out['ratio']:.3f}); target {'met' if out['met'] else 'not met'}")
    return out


def _attach(model: nn.Module, head: str | Path, cond: dict[str, Any], overhead: float | None, batch: int
            ) -> tuple[Any, dict[str, Any]]:
    """The headed upsampler (the head sees ``low_res`` when it was built with the conditioning channels,
    app. C.2.1) and its overhead: given, or measured here (5 warm-up + 20 timed pairs at ``batch``)."""
    from .heads import attach_head, measure_overhead, read_head_metadata

    hc = read_head_metadata(head)["head_config"]
    extra = int(hc.get("extra_channels", 0))
    cc = model.config.cond_channels  # type: ignore[attr-defined]
    if extra not in (0, cc):
        raise HeadMismatchError(f"head file {str(head)!r} takes a {extra}-channel extra input; this upsampler's "
                                f"conditioning image has {cc} channels")
    h = attach_head(model, head=head, extra_input="low_res" if extra else None, overhead=None)
    if overhead is not None:
        h.overhead = float(overhead)
        return h, {"overhead": float(overhead), "source": "given"}
    c = {k: v[:batch] for k, v in cond.items()}
    info = measure_overhead(h, batch=batch, warmup=5, repeats=20, probe_kwargs=c)
    h.overhead = info["overhead"]
    return h, {**info, "source": "measured", "head_sees_low_res": bool(extra)}


def run_upsample(out: Path, *, checkpoint: str | Path | nn.Module, head: str | Path | None,
                 nfes: Sequence[int] = (5, 10, 15), num: int = 64, methods: Sequence[str] = METHODS,
                 aug_level: float = SAMPLE_AUG_LEVEL, seed: int = 0, reference: str = "rk45",
                 overhead: float | None = None, jvp_cost: float | None = None, dataset: str = "patches",
                 threads: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the experiment (module docstring); returns the results (also ``out/results.json``).

    ``checkpoint``: the upsampler's weights file / run folder (or the network itself); ``head``: its
    distilled head file, ``None`` to drop ``genie-head`` and add ``genie`` (GENIE-AD); ``overhead`` /
    ``jvp_cost``: use these instead of measuring the head's overhead / the JVP's cost; ``reference``:
    the reference solver, the other one of :data:`images.sampling.REFERENCE_SOLVERS` checks it.
    """
    from .data import load_dataset
    from .sampling import REFERENCE_SOLVERS

    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    if reference not in REFERENCE_SOLVERS:
        raise ConfigError(f"unknown reference solver {reference!r}; known: {', '.join(REFERENCE_SOLVERS)}")
    model = checkpoint if isinstance(checkpoint, nn.Module) else load_model(checkpoint)
    cfg = model.config  # type: ignore[attr-defined]
    if not cfg.cond_channels:
        raise ConfigError(f"{checkpoint if not isinstance(checkpoint, nn.Module) else 'the model'} is not an upsampler "
                          f"(no conditioning image; train one with --upsample-from)")
    specs = [method_spec(m) for m in methods]
    if head is None:
        specs = [s for s in specs if not s.heads]
        if not any(s.label == "GENIE-AD" for s in specs):
            specs.append(method_spec("genie"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # held-out crops, their low-resolution versions and the conditioning (fixed across methods)
    held, _ = load_dataset(dataset, resolution=cfg.resolution).held_out()
    if tuple(held.shape[1:]) != (cfg.in_channels, cfg.resolution, cfg.resolution):
        raise ResolutionMismatchError(f"the {dataset!r} held-out images are {tuple(held.shape[1:])}; the upsampler "
                                      f"generates {(cfg.in_channels, cfg.resolution, cfg.resolution)}")
    if not 1 <= num <= held.shape[0]:
        raise ConfigError(f"num must be in [1, {held.shape[0]}] (the held-out crops), got {num}")
    pick = torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(seed))[:num].sort().values
    x0 = held[pick].float()
    low = downsample(x0, cfg.low_resolution)
    cond = condition(low, cfg.resolution, aug_level, generator=torch.Generator().manual_seed(seed + 1))
    x1 = initial_noise(num, (cfg.in_channels, cfg.resolution, cfg.resolution), seed)
    _log(f"[upsample] {num} held-out {dataset} crops, {cfg.low_resolution}x{cfg.low_resolution} -> "
         f"{cfg.resolution}x{cfg.resolution}, augmentation level s = {aug_level}", quiet)

    # costs: the head's overhead, the JVP's
    headed, head_info = None, None
    if any(s.heads for s in specs):
        headed, head_info = _attach(model, head, cond, overhead, min(num, 64))  # type: ignore[arg-type]
        _log(f"[upsample] head overhead {100 * head_info['overhead']:.2f} % ({head_info['source']})", quiet)
    jvp = None
    if any(s.jvp_cost == "measured" for s in specs):
        jvp = ({"jvp_cost": float(jvp_cost), "source": "given"} if jvp_cost is not None else
               {**measure_jvp_cost(model, num, cond=cond), "source": "measured"})
        _log(f"[upsample] one JVP pass = {jvp['jvp_cost']:.2f} forward passes ({jvp['source']})", quiet)

    # the references: the chosen one and the other as a check
    other = next(n for n in REFERENCE_SOLVERS if n != reference)
    refs = {n: reference_solve(model, x1, n, cond=cond) for n in (reference, other)}
    ref = refs[reference].x
    _log(f"[upsample] references {reference} ({refs[reference].nfe} NFE), {other} ({refs[other].nfe} NFE)", quiet)

    rows: list[dict[str, Any]] = []
    finals: dict[tuple[str, int], torch.Tensor] = {}
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for spec in specs:
        sm = headed if spec.heads else model
        head_ov = head_info["overhead"] if spec.heads and head_info else 0.0
        c = jvp["jvp_cost"] if spec.jvp_cost == "measured" and jvp else None
        for nfe in nfes:
            for afs in (False, True):
                row: dict[str, Any] = {"method": spec.label, "nfe_budget": nfe, "afs": afs}
                try:
                    steps = _steps(spec, nfe, afs, False, c, head_ov)
                except Exception as exc:  # noqa: BLE001 - N/A budgets (F-PNDM <= 10 NFE; GENIE-AD's JVPs)
                    rows.append({**row, "status": f"n/a: {exc}"})
                    continue
                r = run_sampler(sm, x1, spec.method, steps, afs=afs, cond=cond, **dict(spec.options))
                cost = r.nfe * (1.0 + head_ov) + (c or 0.0) * r.jvp_passes
                row.update(status="ok", steps=steps, grid=r.grid, nfe=r.nfe, jvp_passes=r.jvp_passes,
                           cost_nfe=round(cost, 2), **trajectory_error(r.x, ref), **_psnr_stats(r.x, x0),
                           seconds=round(r.wall_time, 3))
                rows.append(row)
                k = (spec.label, nfe)
                if k not in best or row["rmse"] < best[k]["rmse"]:
                    best[k], finals[k] = row, r.x
        _log(f"[upsample] {spec.label}: " + ", ".join(
            f"NFE {n} RMSE {best[(spec.label, n)]['rmse']:.4g} PSNR {best[(spec.label, n)]['psnr']:.2f}"
            for n in nfes if (spec.label, n) in best), quiet)
    if headed is not None:
        headed.remove()

    smallest = min((b["rmse"] for b in best.values()), default=float("nan"))
    agree = trajectory_error(refs[other].x, ref)
    context = [
        {"method": "bilinear up-scaling (no noise)", **_psnr_stats(upscale(low, cfg.resolution), x0)},
        {"method": f"reference ({reference})", "nfe": refs[reference].nfe, **trajectory_error(ref, ref),
         **_psnr_stats(ref, x0), "seconds": round(refs[reference].wall_time, 3)},
        {"method": f"reference ({other})", "nfe": refs[other].nfe, **agree, **_psnr_stats(refs[other].x, x0),
         "seconds": round(refs[other].wall_time, 3)},
    ]
    write_csv(out / "upsample.csv", rows + context)
    target = genie_vs_ddim(best)
    results = {
        "checkpoint": str(checkpoint) if not isinstance(checkpoint, nn.Module) else "(in memory)",
        "head": None if head is None else str(head),
        "model_config": cfg.to_dict(), "num_images": num, "seed": seed, "dataset": dataset,
        "held_out_indices": pick.tolist(), "aug_level": aug_level, "nfes": list(nfes),
        "head_overhead": head_info, "jvp": jvp,
        "reference": {"solver": reference, "nfe": refs[reference].nfe, "check": other, "check_nfe": refs[other].nfe,
                      "disagreement_rmse": agree["rmse"], "smallest_error_reported": smallest,
                      "ok": agree["rmse"] < 0.1 * smallest},
        "best": [best[k] for k in sorted(best)], "context": context, "runs": rows,
        "target_genie_nfe5_below_ddim_nfe10": target,
        "threads": torch.get_num_threads(), "total_s": 0.0,
    }
    _grids(out, best, finals, low, ref, x0, nfes, cfg.resolution)
    results["total_s"] = round(time.perf_counter() - t_start, 2)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    table = _table_md(best, specs, nfes, results)
    atomic_write_text(out / "upsample.md", table)
    _log(table, quiet)
    _log(f"[upsample] total {results['total_s']:.0f} s -> {out}", quiet)
    return results


def _grids(out: Path, best: dict[tuple[str, int], dict[str, Any]], finals: dict[tuple[str, int], torch.Tensor],
           low: torch.Tensor, ref: torch.Tensor, x0: torch.Tensor, nfes: Sequence[int], resolution: int) -> None:
    """``samples_nfe{5,10}.png``: rows low-res input (nearest), DDIM, GENIE, reference, ground truth."""
    k = min(8, x0.shape[0])
    nearest = F.interpolate(low[:k].float(), size=(resolution, resolution), mode="nearest")
    for n in (5, 10):
        if n not in nfes:
            continue
        rows = [nearest]
        for label in ("DDIM", "GENIE (head)" if ("GENIE (head)", n) in best else "GENIE-AD"):
            if (label, n) in finals:
                rows.append(finals[(label, n)][:k].float())
        rows += [ref[:k].float(), x0[:k].float()]
        save_grid(torch.cat(rows), out / f"samples_nfe{n}.png", nrow=k)


def _table_md(best: dict[tuple[str, int], dict[str, Any]], specs: Sequence[MethodSpec], nfes: Sequence[int],
              res: dict[str, Any]) -> str:
    head = "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    rule = "|---|" + "---:|" * len(nfes)

    def cell(label: str, n: int, key: str, fmt: str) -> str:
        b = best.get((label, n))
        return "n/a" if b is None else f"{b[key]:{fmt}} ({b['steps']}{'*' if b['afs'] else ''})"

    lines = [f"Upsampler {res['model_config']['low_resolution']}->{res['model_config']['resolution']}, "
             f"{res['num_images']} held-out {res['dataset']} crops, augmentation level {res['aug_level']}; best of "
             "AFS on/off per cell (solver steps in parentheses, * = AFS).", "",
             "Reference-trajectory error (per-image RMSE to the reference ODE solution, mean):", "", head, rule]
    lines += [f"| {s.label} | " + " | ".join(cell(s.label, n, "rmse", ".4f") for n in nfes) + " |" for s in specs]
    lines += ["", "PSNR to the ground truth (dB; 10 log10(4 / MSE) per image, samples clamped to [-1, 1], mean):", "",
              head, rule]
    lines += [f"| {s.label} | " + " | ".join(cell(s.label, n, "psnr", ".2f") for n in nfes) + " |" for s in specs]
    lines += ["", "| context | PSNR | RMSE to the reference |", "|---|---:|---:|"]
    lines += [f"| {c['method']} | {c['psnr']:.2f} | {c['rmse']:.2e} |" if "rmse" in c else
              f"| {c['method']} | {c['psnr']:.2f} | |" for c in res["context"]]
    r = res["reference"]
    lines += ["", f"References agree to RMSE {r['disagreement_rmse']:.1e}; smallest error in the table "
              f"{r['smallest_error_reported']:.1e} (agreement under a tenth of it: {r['ok']})."]
    if res["head_overhead"]:
        lines.append(f"Head overhead {100 * res['head_overhead']['overhead']:.2f} % of one evaluation "
                     f"({res['head_overhead']['source']}).")
    if res["jvp"]:
        lines.append(f"One JVP pass = {res['jvp']['jvp_cost']:.2f} forward passes ({res['jvp']['source']}).")
    lines += [f"Target (GENIE at NFE 5 below DDIM at NFE 10): {res['target_genie_nfe5_below_ddim_nfe10']['verdict']}.",
              "", "Figures samples_nfe5.png / samples_nfe10.png, rows: low-resolution input (nearest), DDIM, GENIE, "
              "reference, ground truth."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
#: the sub-commands of ``python -m images`` this module adds
COMMANDS = ("upsample",)


def add_parsers(sub: Any) -> None:
    """The sub-command ``upsample``."""
    p = sub.add_parser("upsample", help="the cascaded upsampler's Table 3: GENIE vs DDIM, S-PNDM, F-PNDM at NFE 5, 10, 15")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="the upsampler's weights file or run folder")
    p.add_argument("--head", default=str(DEFAULT_HEAD),
                   help="its distilled head ('none': no head; GENIE with the autodiff derivative instead)")
    p.add_argument("--nfe", default="5,10,15", help="comma-separated NFE budgets")
    p.add_argument("--num", type=int, default=64, help="held-out crops")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops' choice, the noise and the augmentation")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT / "upsample"))
    p.add_argument("--quiet", action="store_true")


def run(a: argparse.Namespace) -> int:
    """Run ``upsample`` (``python -m images``; its named errors exit with status 2)."""
    ck = Path(a.checkpoint)
    if not ck.exists():
        raise CheckpointNotFoundError(
            f"upsampler checkpoint {str(ck)!r} does not exist (train one: python -m images train --dataset patches "
            f"--config tiny --upsample-from 16 --model-kwargs '{{\"prediction\": \"v\"}}' --out runs/patches_up; then "
            f"python -m images export --checkpoint runs/patches_up --out {ck})")
    head = None if str(a.head).lower() == "none" else Path(a.head)
    if head is not None and not head.is_file():
        raise CheckpointNotFoundError(
            f"head file {str(head)!r} does not exist (distil one from the upsampler: python -m images distill "
            f"--checkpoint {ck} --out runs/up_head --steps 3000 --pool 8192, then python -m images export-head "
            f"--head runs/up_head --out {head}; or pass --head none to run GENIE with the autodiff derivative)")
    run_upsample(Path(a.out), checkpoint=ck, head=head, nfes=[int(v) for v in a.nfe.split(",") if v.strip()],
                 num=a.num, seed=a.seed, threads=a.threads, quiet=a.quiet)
    return 0
