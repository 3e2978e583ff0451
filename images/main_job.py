r"""The main job, ``python -m images all``: solver accuracy on the committed digits model.

Steps (every figure printed and written to ``results/images/``):

1. load the committed ``tiny`` digits checkpoint (or ``--retrain`` it with its recorded command);
2. measure the cost of one ``torch.func.jvp`` pass through the model in units of one forward pass
   (GENIE with the autodiff derivative pays it every step, eq. (12));
3. solve the DDIM ODE from ``num`` noise images with two different high-accuracy reference solvers
   (RK45 on the probability-flow ODE, rtol = atol = 1e-7; DPM-Solver-3 with 100 log-SNR steps); their disagreement is
   reported and must stay under a tenth of the smallest error in the table;
4. for DDIM, S-PNDM, F-PNDM, DPM-Solver++(2M), DEIS, UniPC (skipped with a note while ``sample()``
   lacks it) and GENIE with the autodiff derivative at NFE 5, 10, 15, 20, 25, with every combination of
   AFS and denoising: steps that fit the NFE budget (GENIE-AD's JVP passes counted at their measured
   cost; a second row counts them as one NFE each, the paper's "100 % overhead" rule), the
   per-image RMSE to the reference (``errors.csv``); the best combination per method and NFE is the
   table (``table.md``), as the paper picks the best of AFS / denoising;
5. the target: GENIE-AD against DDIM at equal steps (every NFE value as a step count; the target is
   at 10 steps);
6. the classifier FD of every method's samples at NFE 25 (best combination), over seeds, against
   the reference solver's and the held-out set's (``fd.csv``);
7. figures: error against NFE and, for DDIM and GENIE-AD, against steps (``error_vs_nfe.png``), samples
   at NFE 10 per method from the same noise (``samples_nfe10.png``), the reference samples
   (``samples_reference.png``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .checkpoint import atomic_write_text, load_model
from .evaluate import denoise_with, save_grid, trajectory_error, write_csv
from .sampling import (
    initial_noise,
    method_available,
    reference_solve,
    run_sampler,
    steps_for_budget,
)

__all__ = ["MethodSpec", "MAIN_METHODS", "measure_jvp_cost", "run_all", "DEFAULT_OUT"]

DEFAULT_OUT = Path("results") / "images"


@dataclass(frozen=True)
class MethodSpec:
    """A row of the comparison: display ``label``, ``sample()`` method, and how a JVP pass is counted
    (``jvp_cost``: ``None`` = not a JVP method, ``"measured"``, or a number of NFE); ``heads``: the
    committed head variants the method runs on (:mod:`images.head_experiments`; their measured
    overhead prices them), ``options``: further ``sample()`` options as ``(name, value)`` pairs."""

    label: str
    method: str
    jvp_cost: Any = None
    heads: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()


MAIN_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("DDIM", "ddim"),
    MethodSpec("S-PNDM", "s-pndm"),
    MethodSpec("F-PNDM", "f-pndm"),
    MethodSpec("DPM-Solver++(2M)", "dpm-solver++2m"),
    MethodSpec("DEIS", "deis"),
    MethodSpec("UniPC", "unipc"),
    MethodSpec("GENIE (head)", "genie", heads=("standard",), options=(("derivative", "head"),)),
    MethodSpec("TTM-3 (heads)", "ttm", heads=("standard", "second_order"), options=(("derivative", "head"), ("order", 3))),
    MethodSpec("GENIE-AD", "genie", "measured"),
    MethodSpec("GENIE-AD (JVP = 1 NFE)", "genie", 1.0),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_jvp_cost(model: nn.Module, batch: int, *, warmup: int = 2, repeats: int = 15,
                     cond: dict[str, Any] | None = None) -> dict[str, float]:
    """Seconds of one forward and of one ``torch.func.jvp`` (tangents in x and t) pass at ``batch``, and
    ``jvp_cost = jvp / forward``: the minimum of each over ``repeats`` interleaved (forward, jvp)
    pairs after ``warmup`` pairs, synchronised on CUDA (the minimum is the least disturbed run on a
    shared machine, as in ``timeit``); the median ratio of the pairs is reported beside it.
    ``cond``: the network's conditioning keyword arguments for ``batch`` images (an upsampler's
    ``low_res`` / ``aug_level``), held fixed (no tangent)."""
    cfg = model.config  # type: ignore[attr-defined]
    p = next(model.parameters())
    x = torch.randn(batch, cfg.in_channels, cfg.resolution, cfg.resolution, dtype=p.dtype, device=p.device)
    v = torch.randn_like(x)
    t = torch.full((batch,), 0.5, dtype=p.dtype, device=p.device)
    kw = dict(cond or {})
    model.eval()

    def timed(fn: Any) -> float:
        _sync(p.device)
        t0 = time.perf_counter()
        fn()
        _sync(p.device)
        return time.perf_counter() - t0

    fs, js, ratios = [], [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            f = timed(lambda: model(x, t, **kw))
            j = timed(lambda: torch.func.jvp(lambda a, b: model(a, b, **kw), (x, t), (v, torch.ones_like(t))))
            if i >= warmup:
                fs.append(f)
                js.append(j)
                ratios.append(j / f)

    def med(a: list[float]) -> float:
        return sorted(a)[len(a) // 2]

    return {"forward_s": min(fs), "jvp_s": min(js), "jvp_cost": min(js) / min(fs), "median_pair_ratio": med(ratios),
            "batch": batch, "pairs": repeats}


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def run_all(out: Path = DEFAULT_OUT, *, checkpoint: str | Path | None = None, retrain: bool = False,
            retrain_dir: str | Path | None = None, num: int = 64, seed: int = 1000, nfes: Sequence[int] = (5, 10, 15, 20, 25),
            fd_num: int = 360, fd_seeds: Sequence[int] = (0, 1, 2), fd_nfe: int = 25,
            methods: Sequence[MethodSpec] = MAIN_METHODS, quiet: bool = False, device: str = "cpu",
            jvp_cost: float | None = None, heads_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the main job; returns the summary (also written to ``out/summary.json``).

    ``jvp_cost`` (in forward passes) replaces the measured cost of a JVP pass, e.g. to compare
    tables from a busy machine (where the measurement is disturbed) with a quiet one.  ``heads_dir``:
    the distilled heads (default: the committed ones beside the committed model; heads distilled from
    another teacher are refused and their methods skipped with a note).
    """
    from . import DEFAULT_DIGITS_CHECKPOINT

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if retrain:
        from .retrain import retrain_committed

        t0 = time.perf_counter()
        checkpoint = retrain_committed(retrain_dir, quiet=quiet)
        timings["retrain_s"] = time.perf_counter() - t0
    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_DIGITS_CHECKPOINT
    model = load_model(ckpt, device=device)
    meta = model.checkpoint_metadata  # type: ignore[attr-defined]
    _log(f"[all] model {ckpt} (step {meta['step']}, {sum(p.numel() for p in model.parameters()):,} parameters, "
         f"conditioning {model.config.conditioning})", quiet)

    # 2. JVP cost
    t0 = time.perf_counter()
    cost = measure_jvp_cost(model, num)
    timings["jvp_cost_s"] = time.perf_counter() - t0
    if jvp_cost is not None:
        cost["measured_jvp_cost"] = cost["jvp_cost"]
        cost["jvp_cost"] = float(jvp_cost)
        _log(f"[all] measured JVP cost {cost['measured_jvp_cost']:.2f} NFE replaced by --jvp-cost {jvp_cost}", quiet)
    jvp_cost = cost["jvp_cost"]
    _log(f"[all] forward {cost['forward_s'] * 1e3:.1f} ms, jvp {cost['jvp_s'] * 1e3:.1f} ms at batch {num}: "
         f"one JVP pass = {jvp_cost:.2f} NFE", quiet)

    # 2b. the committed heads and their overhead (app. C.2.5)
    t0 = time.perf_counter()
    headed, head_notes, overheads = _load_heads(model, methods, heads_dir, num, quiet)
    timings["heads_overhead_s"] = time.perf_counter() - t0

    # 3. references
    t0 = time.perf_counter()
    cfg = model.config
    x1 = initial_noise(num, (cfg.in_channels, cfg.resolution, cfg.resolution), seed).to(device)
    refs = {name: reference_solve(model, x1, name) for name in ("rk45", "dpm3")}
    ref = refs["rk45"].x
    ref_den = denoise_with(model, ref)
    agree = trajectory_error(refs["dpm3"].x, ref)
    agree_den = trajectory_error(denoise_with(model, refs["dpm3"].x), ref_den)
    timings["references_s"] = time.perf_counter() - t0
    _log(f"[all] references: RK45 {refs['rk45'].nfe} NFE, DPM-Solver-3 {refs['dpm3'].nfe} NFE; disagreement "
         f"RMSE {agree['rmse']:.2e} (denoised {agree_den['rmse']:.2e})", quiet)

    # 4. every method, NFE and knob combination
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    finals: dict[tuple[str, int, bool, bool], torch.Tensor] = {}
    for spec in methods:
        if not method_available(spec.method):
            notes.append(f"{spec.label}: skipped, taylorsolve.diffusion.sample has no method {spec.method!r} yet")
            _log(f"[all] note: {notes[-1]}", quiet)
            continue
        if spec.heads and spec.heads not in headed:
            notes.append(f"{spec.label}: skipped, {head_notes.get(spec.heads, 'no distilled head')}")
            _log(f"[all] note: {notes[-1]}", quiet)
            continue
        c = None if spec.jvp_cost is None else (jvp_cost if spec.jvp_cost == "measured" else float(spec.jvp_cost))
        sampler_model = headed[spec.heads] if spec.heads else model
        head_ov = overheads.get(spec.heads, 0.0) if spec.heads else 0.0
        for nfe in nfes:
            for afs in (False, True):
                for den in (False, True):
                    row: dict[str, Any] = {"method": spec.label, "nfe_budget": nfe, "afs": afs, "denoise": den}
                    try:
                        steps = _steps(spec, nfe, afs, den, c, head_ov)
                    except Exception as exc:  # noqa: BLE001 - N/A budgets (F-PNDM <= 10 NFE, GENIE-AD at 5)
                        row.update(status=f"n/a: {exc}")
                        rows.append(row)
                        continue
                    r = run_sampler(sampler_model, x1, spec.method, steps, afs=afs, denoise=den, **dict(spec.options))
                    e = trajectory_error(r.x, ref_den if den else ref)
                    cost_nfe = r.nfe * (1.0 + head_ov) + (c or 0.0) * r.jvp_passes
                    row.update(status="ok", steps=steps, grid=r.grid, nfe=r.nfe, jvp_passes=r.jvp_passes,
                               cost_nfe=round(cost_nfe, 2), **e, seconds=round(r.wall_time, 3))
                    rows.append(row)
                    finals[(spec.label, nfe, afs, den)] = r.x
        _log(f"[all] {spec.label}: done ({time.perf_counter() - t0:.0f} s so far)", quiet)
    timings["solvers_s"] = time.perf_counter() - t0
    write_csv(out / "errors.csv", rows)

    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        k = (r["method"], r["nfe_budget"])
        if k not in best or r["rmse"] < best[k]["rmse"]:
            best[k] = r
    smallest = min((r["rmse"] for r in best.values()), default=float("nan"))

    # 5. the target: GENIE-AD vs DDIM at equal steps
    equal: dict[str, Any] = {}
    for steps in sorted(set(nfes) | {10, 25}):
        d = run_sampler(model, x1, "ddim", steps)
        g = run_sampler(model, x1, "genie", steps)
        ed, eg = trajectory_error(d.x, ref)["rmse"], trajectory_error(g.x, ref)["rmse"]
        equal[str(steps)] = {"ddim": ed, "genie_ad": eg, "ratio": eg / ed}
        if ("standard",) in headed:
            h = run_sampler(headed[("standard",)], x1, "genie", steps, derivative="head")
            equal[str(steps)]["genie_head"] = trajectory_error(h.x, ref)["rmse"]
        _log(f"[all] equal steps {steps}: DDIM {ed:.4g}, GENIE-AD {eg:.4g}, ratio {eg / ed:.3f}"
             + (f"; GENIE (head) {equal[str(steps)]['genie_head']:.4g}" if "genie_head" in equal[str(steps)] else ""), quiet)
    smallest = min(smallest, *(v["genie_ad"] for v in equal.values()))
    timings["equal_steps_s"] = time.perf_counter() - t0 - timings["solvers_s"]

    # 5b. the heads' ablations (Table 2's form)
    t0 = time.perf_counter()
    ablations = _ablations(model, x1, ref, ref_den, nfes, heads_dir, overheads, headed, quiet)
    timings["ablations_s"] = time.perf_counter() - t0
    if ablations:
        write_csv(out / "ablations.csv", ablations)

    # 6. classifier FD at fd_nfe
    t0 = time.perf_counter()
    if fd_nfe not in nfes:
        fd_nfe = max(nfes)
    fd_rows = _fd_block(model, best, methods, fd_nfe, fd_num, fd_seeds, jvp_cost, quiet, headed) if fd_num > 0 else []
    fd_nfe_rows = (_fd_by_nfe(model, best, methods, nfes, fd_num, fd_seeds, quiet, headed)
                   if fd_num > 0 and ("standard",) in headed else [])
    timings["fd_s"] = time.perf_counter() - t0
    if fd_rows:
        write_csv(out / "fd.csv", fd_rows)
    if fd_nfe_rows:
        write_csv(out / "fd_by_nfe.csv", fd_nfe_rows)

    # 7. figures
    t0 = time.perf_counter()
    _figures(out, best, finals, ref, nfes, methods, equal)
    timings["figures_s"] = time.perf_counter() - t0

    total = time.perf_counter() - t_start
    timings["total_s"] = total
    summary = {
        "checkpoint": str(ckpt),
        "checkpoint_step": meta["step"],
        "model_config": cfg.to_dict(),
        "num_images": num,
        "noise_seed": seed,
        "jvp": cost,
        "head_overhead": {"+".join(k): v for k, v in overheads.items()},
        "ablations": ablations,
        "reference": {"rk45_nfe": refs["rk45"].nfe, "dpm3_nfe": refs["dpm3"].nfe, "disagreement_rmse": agree["rmse"],
                      "disagreement_rmse_denoised": agree_den["rmse"], "smallest_error_reported": smallest,
                      "ok": max(agree["rmse"], agree_den["rmse"]) < 0.1 * smallest},
        "best": [best[k] for k in sorted(best, key=lambda k: (k[0], k[1]))],
        "equal_steps": equal,
        "target_genie_ad_half_of_ddim_at_10_steps": equal["10"]["ratio"] <= 0.5,
        "head_targets": _head_targets(best, overheads, nfes, _fd_head_vs_ddim(fd_nfe_rows)),
        "fd_by_nfe": fd_nfe_rows,
        "fd_within_reference_spread": _fd_verdicts(fd_rows),
        "fd": fd_rows,
        "notes": notes,
        "timings": timings,
        "threads": torch.get_num_threads(),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    table = _table_md(best, methods, nfes, equal, fd_rows, summary)
    atomic_write_text(out / "table.md", table)
    _log(table, quiet)
    _log(f"[all] total {total:.0f} s -> {out}", quiet)
    return summary


def _fd_block(model: nn.Module, best: dict[tuple[str, int], dict[str, Any]], methods: Sequence[MethodSpec], nfe: int,
              n: int, seeds: Sequence[int], jvp_cost: float, quiet: bool, headed: dict[tuple[str, ...], Any] | None = None
              ) -> list[dict[str, Any]]:
    """Classifier FD over seeds at ``nfe`` (each method's best combination), the reference solver's and the data's."""
    from .classifier import classifier_fd, load_classifier
    from .data import load_digits
    from .sampling import generate

    if model.config.in_channels != 1 or model.config.resolution != 16:  # type: ignore[attr-defined]
        return []
    clf = load_classifier()
    ds = load_digits()
    train_x, _ = ds.train_images()
    held, _ = ds.held_out()
    rows = []
    # the data's own FD: the held-out set against the training set (the floor)
    rows.append({"method": "held-out data", **_fd_row(classifier_fd(clf, [held[:n]], train_x))})
    # the reference solver: DPM-Solver-3 with 20 log-SNR steps (60 NFE; on the committed model its RMSE to
    # the 100-step solve is about 4e-4, far below the samplers' errors at NFE 25)
    bs = max(1, min(n, 512))
    sets = [generate(model, n, seed=s, method="dpm-solver-3", steps=20, grid="logsnr", batch_size=bs)[0] for s in seeds]
    rows.append({"method": "reference (DPM-Solver-3, 60 NFE)", "nfe": 60, **_fd_row(classifier_fd(clf, sets, train_x))})
    _log(f"[all] FD reference {rows[-1]['fd_mean']:.2f} +- {rows[-1]['fd_std']:.2f}", quiet)
    for spec in methods:
        b = best.get((spec.label, nfe))
        if b is None:
            continue
        sm = (headed or {}).get(spec.heads, model) if spec.heads else model
        sets = [generate(sm, n, seed=s, method=spec.method, steps=b["steps"], afs=b["afs"], denoise=b["denoise"],
                         batch_size=bs, **dict(spec.options))[0] for s in seeds]
        rows.append({"method": spec.label, "nfe": nfe, "steps": b["steps"], "afs": b["afs"], "denoise": b["denoise"],
                     **_fd_row(classifier_fd(clf, sets, train_x))})
        _log(f"[all] FD {spec.label} NFE {nfe}: {rows[-1]['fd_mean']:.2f} +- {rows[-1]['fd_std']:.2f}", quiet)
    return rows


def _steps(spec: MethodSpec, nfe: int, afs: bool, den: bool, jvp_cost: float | None, head_overhead: float) -> int:
    """Steps within the budget: GENIE-AD's JVP passes at their cost, heads at their measured overhead
    (sec. 5: ``round(nfe / (1 + overhead))`` evaluations)."""
    from taylorsolve.diffusion import steps_for_nfe

    from .sampling import canonical

    if spec.heads:
        return steps_for_nfe(canonical(spec.method), nfe, afs=afs, denoise=den, overhead=head_overhead)
    return steps_for_budget(spec.method, nfe, afs=afs, denoise=den, jvp_cost=jvp_cost or 0.0)


def _load_heads(model: nn.Module, methods: Sequence[MethodSpec], heads_dir: str | Path | None, batch: int, quiet: bool
                ) -> tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], str], dict[tuple[str, ...], float]]:
    """The headed models the methods need, from ``heads_dir``, with their overhead measured (app. C.2.5:
    5 warm-up and 50 timed passes of the network alone and with the heads, at ``batch``)."""
    from .errors import HeadMismatchError
    from .head_experiments import DEFAULT_HEADS_DIR
    from .heads import attach_head, measure_overhead

    folder = Path(heads_dir) if heads_dir is not None else DEFAULT_HEADS_DIR
    headed: dict[tuple[str, ...], Any] = {}
    notes: dict[tuple[str, ...], str] = {}
    overheads: dict[tuple[str, ...], float] = {}
    wanted = {spec.heads for spec in methods if spec.heads} | {("bigger",)}
    for key in sorted(wanted):
        files = [folder / f"{v}.safetensors" for v in key]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            notes[key] = f"no distilled head file(s) {', '.join(missing)} (python -m images heads --commit-to {folder})"
            continue
        try:
            h = attach_head(model, head=files[0], head2=files[1] if len(files) > 1 else None, overhead=None)
        except HeadMismatchError as exc:
            notes[key] = f"the heads in {folder} belong to another teacher ({exc})"
            continue
        info = measure_overhead(h, batch=batch, warmup=5, repeats=50, rounds=3)
        h.overhead = info["overhead"]
        h.overhead_info = info
        headed[key], overheads[key] = h, info["overhead"]
        _log(f"[all] head(s) {'+'.join(key)}: {info['head_parameters']:,} parameters, overhead "
             f"{100 * info['overhead']:.2f} % of the network (quartiles of the paired ratios "
             f"{100 * info['overhead_quartiles'][0]:.1f} to {100 * info['overhead_quartiles'][1]:.1f} %; "
             f"{info['model_s'] * 1e3:.1f} ms vs "
             f"{info['headed_s'] * 1e3:.1f} ms at batch {info['batch']})", quiet)
    return headed, notes, overheads


def _ablations(model: nn.Module, x1: torch.Tensor, ref: torch.Tensor, ref_den: torch.Tensor, nfes: Sequence[int],
               heads_dir: str | Path | None, overheads: dict[tuple[str, ...], float], headed: dict[tuple[str, ...], Any],
               quiet: bool) -> list[dict[str, Any]]:
    """Table 2's form: each first-order head variant as GENIE's derivative at the NFE budgets (best of
    AFS / denoise; the variant's overhead: measured for ``standard`` and ``bigger``, the others have
    ``standard``'s architecture), with its held-out relative error per band of t (from its record)."""
    from taylorsolve.diffusion import steps_for_nfe

    from .head_experiments import DEFAULT_HEADS_DIR, VARIANTS
    from .heads import attach_head, read_head_metadata

    folder = Path(heads_dir) if heads_dir is not None else DEFAULT_HEADS_DIR
    if ("standard",) not in headed:
        return []
    rows: list[dict[str, Any]] = []
    for v in VARIANTS:
        if VARIANTS[v].get("order") == 2:
            continue
        f = folder / f"{v}.safetensors"
        if not f.is_file():
            continue
        h = headed.get((v,)) or attach_head(model, head=f, overhead=None)
        ov = overheads.get((v,), overheads[("standard",)])
        meta = read_head_metadata(f)
        ev = (meta.get("record") or {}).get("eval") or {}
        row: dict[str, Any] = {"variant": v, "overhead": round(ov, 4), "rel_mse": ev.get("rel_mse"),
                               "rel_mse_unweighted": ev.get("rel_mse_unweighted")}
        for b in ev.get("bands", []):
            row[f"rel_mse_t[{b['lo']:g},{b['hi']:g}]"] = b["rel_mse"]
        for nfe in nfes:
            best_e, best_k = float("inf"), ""
            for afs in (False, True):
                for den in (False, True):
                    try:
                        steps = steps_for_nfe("genie", nfe, afs=afs, denoise=den, overhead=ov)
                    except Exception:  # noqa: BLE001
                        continue
                    r = run_sampler(h, x1, "genie", steps, afs=afs, denoise=den, derivative="head")
                    e = trajectory_error(r.x, ref_den if den else ref)["rmse"]
                    if e < best_e:
                        best_e, best_k = e, f"{steps}" + ("*" if afs else "") + ("d" if den else "")
            row[f"rmse_nfe{nfe}"] = best_e
            row[f"steps_nfe{nfe}"] = best_k
        rows.append(row)
        if h is not headed.get((v,)):
            h.remove()
        _log(f"[all] ablation {v}: relative error {row['rel_mse']:.3f}; RMSE "
             + ", ".join(f"NFE {n} {row[f'rmse_nfe{n}']:.4f}" for n in nfes), quiet)
    return rows


#: the methods whose classifier FD is computed at every NFE budget (the head's target compares them)
FD_BY_NFE = ("DDIM", "GENIE (head)")


def _fd_by_nfe(model: nn.Module, best: dict[tuple[str, int], dict[str, Any]], methods: Sequence[MethodSpec],
               nfes: Sequence[int], n: int, seeds: Sequence[int], quiet: bool, headed: dict[tuple[str, ...], Any]
               ) -> list[dict[str, Any]]:
    """Classifier FD of :data:`FD_BY_NFE` at every NFE budget (each method's best combination there)."""
    from .classifier import classifier_fd, load_classifier
    from .data import load_digits
    from .sampling import generate

    if model.config.in_channels != 1 or model.config.resolution != 16:  # type: ignore[attr-defined]
        return []
    clf = load_classifier()
    train_x, _ = load_digits().train_images()
    rows = []
    for spec in methods:
        if spec.label not in FD_BY_NFE:
            continue
        sm = headed.get(spec.heads, model) if spec.heads else model
        for nfe in nfes:
            b = best.get((spec.label, nfe))
            if b is None:
                continue
            sets = [generate(sm, n, seed=s, method=spec.method, steps=b["steps"], afs=b["afs"], denoise=b["denoise"],
                             batch_size=max(1, min(n, 512)), **dict(spec.options))[0] for s in seeds]
            rows.append({"method": spec.label, "nfe": nfe, "steps": b["steps"], "afs": b["afs"], "denoise": b["denoise"],
                         **_fd_row(classifier_fd(clf, sets, train_x))})
            _log(f"[all] FD {spec.label} NFE {nfe}: {rows[-1]['fd_mean']:.2f} +- {rows[-1]['fd_std']:.2f}", quiet)
    return rows


def _fd_head_vs_ddim(rows: list[dict[str, Any]]) -> dict[str, bool] | None:
    """Per NFE: is GENIE (head)'s classifier FD no worse than DDIM's beyond the seed spread (its mean at most
    DDIM's mean plus the larger of the two seed standard deviations)?"""
    by = {(r["method"], r["nfe"]): r for r in rows}
    out = {}
    for (m, nfe), a in by.items():
        b = by.get(("GENIE (head)", nfe))
        if m != "DDIM" or b is None:
            continue
        out[str(nfe)] = b["fd_mean"] <= a["fd_mean"] + max(a["fd_std"], b["fd_std"])
    return out or None


def _head_targets(best: dict[tuple[str, int], dict[str, Any]], overheads: dict[tuple[str, ...], float],
                  nfes: Sequence[int], fd_ok: dict[str, bool] | None) -> dict[str, Any]:
    """The issue's targets for GENIE (head), checked on this run's figures."""
    out: dict[str, Any] = {}
    if ("standard",) not in overheads:
        return out
    out["overhead_at_most_5_percent_cpu"] = overheads[("standard",)] <= 0.05
    lowest = {}
    for n in nfes:
        rows = [(b["rmse"], m) for (m, nn), b in best.items() if nn == n and m != "GENIE-AD (JVP = 1 NFE)"]
        if rows:
            lowest[str(n)] = min(rows)[1]
    out["lowest_error_method_by_nfe"] = lowest
    out["genie_head_lowest_at_10_15_20_25"] = all(lowest.get(str(n)) == "GENIE (head)" for n in (10, 15, 20, 25)
                                                  if str(n) in lowest)
    g, d = best.get(("GENIE (head)", 10)), best.get(("DDIM", 10))
    if g and d:
        out["genie_head_vs_ddim_at_nfe10"] = g["rmse"] / d["rmse"]
        out["genie_head_30_percent_below_ddim_at_nfe10"] = g["rmse"] <= 0.7 * d["rmse"]
    out["fd_no_worse_than_ddim_by_nfe"] = fd_ok
    return out


def _fd_row(r: dict[str, Any]) -> dict[str, Any]:
    return {"fd_mean": r["mean"], "fd_std": r["std"], "fd_values": " ".join(f"{v:.3f}" for v in r["values"])}


def _table_md(best: dict[tuple[str, int], dict[str, Any]], methods: Sequence[MethodSpec], nfes: Sequence[int],
              equal: dict[str, Any], fd_rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["Per-image RMSE to the reference ODE solution (mean over images; best of AFS / denoise; "
             "solver steps in parentheses, * = AFS, d = denoise)", "",
             "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|" + "---:|" * len(nfes)]
    for spec in methods:
        cells = []
        any_ok = False
        for n in nfes:
            b = best.get((spec.label, n))
            if b is None:
                cells.append("n/a")
                continue
            any_ok = True
            knobs = ("*" if b["afs"] else "") + ("d" if b["denoise"] else "")
            cells.append(f"{b['rmse']:.4f} ({b['steps']}{knobs})")
        if any_ok:
            lines.append(f"| {spec.label} | " + " | ".join(cells) + " |")
    ref = summary["reference"]
    lines += ["", f"References: RK45 ({ref['rk45_nfe']} NFE) and DPM-Solver-3 ({ref['dpm3_nfe']} NFE) differ by RMSE "
              f"{ref['disagreement_rmse']:.1e} (denoised {ref['disagreement_rmse_denoised']:.1e}); smallest error reported "
              f"{ref['smallest_error_reported']:.1e} (agreement under a tenth of it: {ref['ok']}).",
              f"One JVP pass = {summary['jvp']['jvp_cost']:.2f} forward passes (batch {summary['jvp']['batch']}).", "",
              "Equal steps (no AFS, no denoising; GENIE-AD's JVP not counted): " + "; ".join(
                  f"{k} steps DDIM {v['ddim']:.4f}, GENIE-AD {v['genie_ad']:.4f} (ratio {v['ratio']:.2f})" for k, v in equal.items())]
    if fd_rows:
        lines += ["", "Classifier FD (digits classifier features; mean +- std over seeds; lower is better)", "",
                  "| samples | NFE | classifier FD |", "|---|---:|---:|"]
        verdict = summary.get("fd_within_reference_spread", {})
        lines[-2:] = ["| samples | NFE | classifier FD | within the reference's spread |", "|---|---:|---:|:---:|"]
        for r in fd_rows:
            v = verdict.get(r["method"])
            mark = "" if v is None else ("yes" if v else "no")
            lines.append(f"| {r['method']} | {r.get('nfe', '')} | {r['fd_mean']:.2f} +- {r['fd_std']:.2f} | {mark} |")
    fbn = summary.get("fd_by_nfe") or []
    if fbn:
        ns = sorted({r["nfe"] for r in fbn})
        lines += ["", "Classifier FD at every NFE budget (mean +- std over seeds)", "",
                  "| samples | " + " | ".join(f"NFE {n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for m in FD_BY_NFE:
            cells = {r["nfe"]: f"{r['fd_mean']:.2f} +- {r['fd_std']:.2f}" for r in fbn if r["method"] == m}
            lines.append(f"| {m} | " + " | ".join(cells.get(n, "n/a") for n in ns) + " |")
    if summary.get("head_overhead"):
        lines += ["", "Head overhead (app. C.2.5; CPU, 5 warm-up + 50 timed passes, batch "
                  f"{summary['num_images']}): " + "; ".join(f"{k} {100 * v:.2f} %" for k, v in summary["head_overhead"].items())]
    abl = summary.get("ablations") or []
    if abl:
        ns = [k[len("rmse_nfe"):] for k in abl[0] if k.startswith("rmse_nfe")]
        bands = [k for k in abl[0] if k.startswith("rel_mse_t[")]
        lines += ["", "Head ablations (Table 2's form): held-out gamma^2-weighted relative error of the head "
                  "(a zero head scores 1), overall and per band of t, and GENIE (head)'s RMSE at overhead-adjusted NFE", "",
                  "| head | rel. error | " + " | ".join(b[len("rel_mse_"):] for b in bands) + " | "
                  + " | ".join(f"NFE {n}" for n in ns) + " |",
                  "|---|---:|" + "---:|" * len(bands) + "---:|" * len(ns)]
        for r in abl:
            rel = "" if r.get("rel_mse") is None else f"{r['rel_mse']:.3f}"
            lines.append(f"| {r['variant']} | {rel} | " + " | ".join(f"{r[b]:.3f}" for b in bands) + " | "
                         + " | ".join(f"{r[f'rmse_nfe{n}']:.4f}" for n in ns) + " |")
    ht = summary.get("head_targets") or {}
    if ht:
        lines += ["", "Head targets: " + json.dumps(ht)]
    for n in summary.get("notes", []):
        lines.append(f"\nNote: {n}")
    return "\n".join(lines) + "\n"


def _fd_verdicts(fd_rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Per method: is its mean classifier FD within one seed standard deviation of the reference solver's?"""
    ref = next((r for r in fd_rows if r["method"].startswith("reference")), None)
    if ref is None:
        return {}
    return {r["method"]: abs(r["fd_mean"] - ref["fd_mean"]) <= ref["fd_std"] for r in fd_rows
            if r is not ref and r["method"] != "held-out data"}


def _figures(out: Path, best: dict[tuple[str, int], dict[str, Any]], finals: dict[tuple[str, int, bool, bool], torch.Tensor],
             ref: torch.Tensor, nfes: Sequence[int], methods: Sequence[MethodSpec], equal: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec in methods:
        pts = [(n, best[(spec.label, n)]["rmse"]) for n in nfes if (spec.label, n) in best]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=spec.label)
    ax.set_xlabel("NFE budget (GENIE-AD: JVP passes counted)")
    ax.set_ylabel("RMSE to the reference ODE solution")
    ax.set_title("best of AFS / denoising at equal NFE", fontsize=10)
    steps = sorted(int(k) for k in equal)
    ax2.plot(steps, [equal[str(k)]["ddim"] for k in steps], marker="o", label="DDIM")
    ax2.plot(steps, [equal[str(k)]["genie_ad"] for k in steps], marker="o", label="GENIE-AD")
    ax2.set_xlabel("solver steps")
    ax2.set_title("equal steps (no AFS, no denoising)", fontsize=10)
    for a in (ax, ax2):
        a.set_yscale("log")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, out / "error_vs_nfe.png")
    plt.close(fig)

    k = min(16, ref.shape[0])
    rows, labels = [ref[:k]], ["reference"]
    for spec in methods:
        b = best.get((spec.label, 10))
        if b is not None:
            rows.append(finals[(spec.label, 10, b["afs"], b["denoise"])][:k])
            knobs = ", AFS" if b["afs"] else ""
            knobs += ", denoise" if b["denoise"] else ""
            labels.append(f"{spec.label}\n{b['steps']} steps{knobs}")
    fig, axes = plt.subplots(len(rows), 1, figsize=(k * 0.55 + 1.8, len(rows) * 0.62 + 0.3))
    for a, r, lab in zip(axes, rows, labels):
        imgs = r.detach().cpu().float().clamp(-1, 1)
        if imgs.shape[1] == 1:
            a.imshow(torch.cat(list(imgs[:, 0]), dim=1).numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        else:
            a.imshow(((torch.cat(list(imgs), dim=2).permute(1, 2, 0) + 1) / 2).numpy(), interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        a.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle("NFE 10, same noise in every row", fontsize=9)
    fig.tight_layout()
    _savefig(fig, out / "samples_nfe10.png")
    plt.close(fig)
    save_grid(ref[:64], out / "samples_reference.png", nrow=8)


def _savefig(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=120, format="png")
    tmp.replace(path)
