r"""The guidance experiment (``python -m images guidance``; GENIE sec. 5.2, Fig. 6, app. F.3).

On the committed class-conditional digits model (:data:`DEFAULT_COND_DIR`: one U-Net trained with the
label dropped, :mod:`images.guidance`) and for guidance scales ``w`` (eq. (79)):

1. **Reference-trajectory error** (per-image RMSE to a tight RK45 solve of the *guided* ODE from the same
   noise, a DPM-Solver-3 solve as a second reference) at NFE 10 and 20 for

   * DDIM,
   * GENIE with eq. (81): one head distilled with the label dropped serves both branches,
     ``(1 + w) k_c - w k_u`` (``heads/eq81.safetensors``),
   * GENIE with a head distilled along the guided ODE, ``w`` an input (``heads/guided.safetensors``),
   * GENIE with the exact guided derivative by autodiff (one JVP through both branches; its measured
     cost ``jvp / forward`` counted in the NFE budget).

   Heads are priced by their measured overhead (``round(N / (1 + overhead))`` steps), GENIE-AD's JVP by
   its measured cost and, in a second row, by the paper's "one JVP = one NFE" rule; every guided
   evaluation (both branches) counts as one NFE, as in the paper; each entry is the better of AFS off
   and on (app. F.2; both runs in ``trajectory.csv``).  The same methods at equal steps (10 and 20, no
   AFS, derivative cost not counted) isolate the derivative's quality: ``equal_steps.csv``.
2. **Fig. 6 form**: ``num_fd`` samples with requested classes ``0..9`` in turn; the accuracy of the
   project's digits classifier for the requested class, and the classifier FD against the digits
   training split, as functions of ``w``, for DDIM and GENIE (both heads) at NFE 10 and 20.

Outputs in ``out``: ``results.json``, ``trajectory.csv``, ``fig6.csv``, ``guidance.md`` (tables),
``guidance.png`` (Fig. 6 form and the trajectory errors), ``samples_w{w}.png`` (rows: classes; DDIM and
GENIE at NFE 10).  The targets of the issue are checked and written into ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import CHECKPOINT_DIR
from .main_job import _log, _savefig

__all__ = ["COMMANDS", "DEFAULT_COND_DIR", "run_guidance", "add_parsers", "run", "guidance_verdicts"]

#: the committed class-conditional digits model and its two heads
DEFAULT_COND_DIR = CHECKPOINT_DIR / "digits_cond"

#: (label, sampler, head) of the trajectory comparison; head: None, "eq81", "guided"
TRAJ_METHODS: tuple[tuple[str, str, str | None], ...] = (
    ("DDIM", "ddim", None),
    ("GENIE (eq. (81) heads)", "genie", "eq81"),
    ("GENIE (guided-ODE head)", "genie", "guided"),
    ("GENIE (exact guided derivative)", "genie", None),
    ("GENIE (exact guided derivative, JVP = 1 NFE)", "genie", "jvp1"),
)

#: step counts of the equal-steps comparison (derivative cost not counted)
EQUAL_STEPS = (10, 20)

#: eq. (81) with perfect heads (each branch's exact derivative along its own ODE): equal steps only
EQ81_EXACT = "GENIE (eq. (81), exact branch derivatives)"


class _Models:
    """The conditional U-Net, its two headed versions and the JVP's measured cost."""

    def __init__(self, model: nn.Module, eq81: Any, guided: Any, jvp_cost: float):
        self.model, self.eq81, self.guided, self.jvp_cost = model, eq81, guided, jvp_cost

    def run(self, label: str, x1: torch.Tensor, y: torch.Tensor, w: float, nfe: int | None = None,
            steps: int | None = None, afs: bool = False) -> Any:
        """One sampling run of a method of :data:`TRAJ_METHODS` (by label) at an NFE budget or with
        ``steps`` steps (then no cost is counted)."""
        from .sampling import run_sampler

        _, method, head = next(m for m in TRAJ_METHODS if m[0] == label)
        kw: dict[str, Any] = {"nfe": nfe, "afs": afs}
        if head == "eq81":
            return run_sampler(self.eq81, x1, "genie", steps, class_labels=y, guidance_scale=w, derivative="head", **kw)
        if head == "guided":
            cond = {"class_labels": y, "guidance": torch.full((x1.shape[0],), float(w), dtype=torch.float64)}
            return run_sampler(self.guided, x1, "genie", steps, cond=cond, derivative="head", **kw)
        if method == "genie":
            cost = 1.0 if head == "jvp1" else self.jvp_cost
            return run_sampler(self.model, x1, "genie", steps, class_labels=y, guidance_scale=w,
                               jvp_cost=cost if nfe is not None else None, **kw)
        return run_sampler(self.model, x1, method, steps, class_labels=y, guidance_scale=w, **kw)

    def eq81_exact(self, x1: torch.Tensor, y: torch.Tensor, w: float, steps: int) -> Any:
        """GENIE with eq. (81) on exact per-branch derivatives, ``(1 + w) d eps_c - w d eps_u`` each along its own
        branch's ODE (perfect heads), at ``steps`` steps (no AFS)."""
        from taylorsolve.diffusion.providers import guided_heads

        from .guidance import branch_eps, ode_derivative
        from .sampling import run_sampler

        fc, fu = branch_eps(self.model, y), branch_eps(self.model, None)
        pair = guided_heads(lambda x, t, eps: ode_derivative(fc, x, t)[1], lambda x, t, eps: ode_derivative(fu, x, t)[1])
        if not w:                      # w = 0: the conditional model's own ODE, its exact derivative
            return run_sampler(self.model, x1, "genie", steps, class_labels=y)
        return run_sampler(self.model, x1, "genie", steps, class_labels=y, guidance_scale=float(w), derivative=pair)


def load_models(cond_dir: str | Path = DEFAULT_COND_DIR, *, overhead_batch: int = 64, quiet: bool = True) -> _Models:
    """The class-conditional model of ``cond_dir`` (``model.safetensors``) with ``heads/eq81.safetensors``
    and ``heads/guided.safetensors`` attached (overheads measured here) and GENIE-AD's JVP cost."""
    from .checkpoint import load_model
    from .errors import CheckpointNotFoundError
    from .guidance import GuidedUNet, check_guidable
    from .heads import attach_head, measure_overhead
    from .main_job import measure_jvp_cost

    d = Path(cond_dir)
    paths = {k: d / p for k, p in (("model", "model.safetensors"), ("eq81", "heads/eq81.safetensors"),
                                   ("guided", "heads/guided.safetensors"))}
    for k, p in paths.items():
        if not p.is_file():
            raise CheckpointNotFoundError(f"the guidance experiment needs {str(p)!r} ({k}); {d / 'README.md'} "
                                          f"gives the commands that make it")
    model = load_model(paths["model"]).eval()
    check_guidable(model)
    eq81 = attach_head(model, head=paths["eq81"], overhead=None)
    guided = attach_head(GuidedUNet(model).eval(), head=paths["guided"], overhead=None)
    for h in (eq81, guided):     # medians of 60 paired passes (a shared machine's drift cancels in the pairs)
        h.overhead_info = measure_overhead(h, batch=overhead_batch, repeats=60)
        h.overhead = h.overhead_info["overhead"]
    cost = measure_jvp_cost(model, overhead_batch)["jvp_cost"]
    _log(f"[guidance] head overheads: eq. (81) {100 * eq81.overhead:.1f} %, guided {100 * guided.overhead:.1f} % "
         f"(of one guided evaluation); JVP cost {cost:.2f} forward passes", quiet)
    return _Models(model, eq81, guided, cost)


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


def guidance_verdicts(rows: Sequence[dict[str, Any]], ws: Sequence[float]) -> dict[str, Any]:
    """The issue's targets from the trajectory rows: the guided-ODE head's error at most the eq. (81)
    pair's at every ``w > 0`` and NFE, and GENIE (either head) below DDIM at NFE 10 for every ``w``."""
    err = {(r["method"], r["w"], r["nfe"]): r["rmse"] for r in rows}
    nfes = sorted({r["nfe"] for r in rows})
    g, e, dd = TRAJ_METHODS[2][0], TRAJ_METHODS[1][0], TRAJ_METHODS[0][0]
    head_vs_pair = {f"w={w:g},nfe={n}": err[(g, w, n)] <= err[(e, w, n)] for w in ws if w > 0 for n in nfes}
    below_ddim = {f"w={w:g}": min(err[(g, w, 10)], err[(e, w, 10)]) < err[(dd, w, 10)] for w in ws} if 10 in nfes else {}
    return {"guided_head_at_most_eq81": head_vs_pair, "guided_head_at_most_eq81_all": all(head_vs_pair.values()),
            "genie_below_ddim_nfe10": below_ddim, "genie_below_ddim_nfe10_all": all(below_ddim.values())}


def run_guidance(out: Path, *, cond_dir: str | Path = DEFAULT_COND_DIR, ws: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
                 nfes: Sequence[int] = (10, 20), num: int = 64, num_fd: int = 500, seed: int = 0,
                 threads: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the experiment of the module docstring; returns (and writes) the results."""
    from .checkpoint import atomic_write_text
    from .classifier import features, frechet_distance, load_classifier
    from .data import load_digits
    from .evaluate import per_image_rmse, save_grid, write_csv
    from .sampling import initial_noise, reference_solve

    if threads:
        torch.set_num_threads(int(threads))
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ms = load_models(cond_dir, quiet=quiet)
    cfg = ms.model.config
    shape = (cfg.in_channels, cfg.resolution, cfg.resolution)

    # 1. reference-trajectory errors
    x1 = initial_noise(num, shape, seed)
    y = _labels(num)
    traj: list[dict[str, Any]] = []
    all_runs: list[dict[str, Any]] = []
    equal: list[dict[str, Any]] = []
    refs: dict[float, dict[str, Any]] = {}
    for w in ws:
        t0 = time.perf_counter()
        ref = reference_solve(ms.model, x1, "rk45", class_labels=y, guidance_scale=w)
        ref2 = reference_solve(ms.model, x1, "dpm3", class_labels=y, guidance_scale=w)
        agree = float(per_image_rmse(ref2.x, ref.x).mean())
        refs[w] = {"rk45_nfe": ref.nfe, "dpm3_nfe": ref2.nfe, "agreement_rmse": agree,
                   "seconds": time.perf_counter() - t0}
        for label, _, _ in TRAJ_METHODS:
            for n in nfes:
                runs = []
                for afs in (False, True):       # the better of AFS off / on (app. F.2), as the main job does
                    r = ms.run(label, x1, y, w, n, afs=afs)
                    runs.append({"method": label, "w": float(w), "nfe": int(n), "afs": afs, "actual_nfe": r.nfe,
                                 "steps": r.steps, "rmse": float(per_image_rmse(r.x, ref.x).mean()),
                                 "seconds": r.wall_time})
                all_runs += runs
                best = min(runs, key=lambda q: q["rmse"])
                traj.append(best)
                _log(f"[guidance] w={w:g} {label} NFE {n} ({best['steps']} steps{', AFS' if best['afs'] else ''}): "
                     f"RMSE {best['rmse']:.4f}", quiet)
            if label.endswith("JVP = 1 NFE)"):
                continue
            for k in EQUAL_STEPS:
                r = ms.run(label, x1, y, w, steps=k)
                equal.append({"method": label, "w": float(w), "steps": k, "rmse": float(per_image_rmse(r.x, ref.x).mean())})
        for k in EQUAL_STEPS:          # eq. (81)'s gap with exact derivatives: the structural error alone
            r = ms.eq81_exact(x1, y, w, k)
            equal.append({"method": EQ81_EXACT, "w": float(w), "steps": k, "rmse": float(per_image_rmse(r.x, ref.x).mean())})
        _log(f"[guidance] w={w:g}: references agree to {agree:.1e}", quiet)

    # 2. Fig. 6 form: classifier accuracy for the requested class and classifier FD, against w
    clf = load_classifier()
    train_x, _ = load_digits().train_images()
    ref_feats = features(clf, train_x)
    fig6: list[dict[str, Any]] = []
    yf = _labels(num_fd)
    xf = initial_noise(num_fd, shape, seed + 1)
    grids: dict[float, list[torch.Tensor]] = {}
    afs_of = {(r["method"], r["w"], r["nfe"]): r["afs"] for r in traj}
    for w in ws:
        for label in (TRAJ_METHODS[0][0], TRAJ_METHODS[1][0], TRAJ_METHODS[2][0]):
            for n in nfes:
                r = ms.run(label, xf, yf, w, n, afs=afs_of[(label, float(w), n)])
                xs = r.x.float().clamp(-1, 1)
                with torch.no_grad():
                    pred = clf(xs).argmax(1)
                acc = float((pred == yf).float().mean())
                fd = frechet_distance(features(clf, xs), ref_feats)
                fig6.append({"method": label, "w": float(w), "nfe": int(n), "accuracy": acc, "fd": fd,
                             "seconds": r.wall_time})
                _log(f"[guidance] Fig. 6 w={w:g} {label} NFE {n}: accuracy {acc:.3f}, FD {fd:.2f}", quiet)
                if n == min(nfes) and label != TRAJ_METHODS[1][0]:
                    grids.setdefault(w, []).append(_class_grid(xs, yf))
    for w, panels in grids.items():
        save_grid(torch.cat(panels), out / f"samples_w{w:g}.png", nrow=10)

    verdicts = guidance_verdicts(traj, ws)
    res = {"ws": list(map(float, ws)), "nfes": list(nfes), "num": num, "num_fd": num_fd, "seed": seed,
           "overheads": {"eq81": ms.eq81.overhead, "guided": ms.guided.overhead, "jvp_cost": ms.jvp_cost},
           "references": {f"{w:g}": v for w, v in refs.items()}, "trajectory": traj, "equal_steps": equal,
           "fig6": fig6,
           "verdicts": verdicts, "threads": torch.get_num_threads(), "seconds": time.perf_counter() - t_start}
    atomic_write_text(out / "results.json", json.dumps(res, indent=2) + "\n")
    write_csv(out / "trajectory.csv", all_runs)
    write_csv(out / "equal_steps.csv", equal)
    write_csv(out / "fig6.csv", fig6)
    atomic_write_text(out / "guidance.md", _tables(traj, equal, fig6, ws, nfes, res))
    _figure(out / "guidance.png", traj, fig6, ws, nfes)
    _log(f"[guidance] done in {res['seconds']:.0f} s; verdicts {json.dumps(verdicts)}", quiet)
    return res


def _class_grid(xs: torch.Tensor, y: torch.Tensor, per_class: int = 4) -> torch.Tensor:
    """``per_class`` samples of each class, ordered class by class (rows of a 10-wide grid)."""
    per_class = min(per_class, min(int((y == c).sum()) for c in range(10)))
    idx = [torch.nonzero(y == c).flatten()[:per_class] for c in range(10)]
    return torch.stack([xs[idx[c][i]] for i in range(per_class) for c in range(10)])


def _tables(traj: list[dict[str, Any]], equal: list[dict[str, Any]], fig6: list[dict[str, Any]], ws: Sequence[float],
            nfes: Sequence[int], res: dict[str, Any]) -> str:
    err = {(r["method"], r["w"], r["nfe"]): r for r in traj}
    head = "| method | " + " | ".join(f"w = {w:g}, NFE {n}" for w in ws for n in nfes) + " |"
    lines = ["Reference-trajectory error (per-image RMSE to RK45 on the guided ODE; steps in parentheses, * AFS):", "",
             head, "|---|" + "---:|" * (len(ws) * len(nfes))]

    def cell(r: dict[str, Any]) -> str:
        return f"{r['rmse']:.4f} ({r['steps']}{'*' if r['afs'] else ''})"

    for label, _, _ in TRAJ_METHODS:
        lines.append(f"| {label} | " + " | ".join(cell(err[(label, float(w), n)]) for w in ws for n in nfes) + " |")
    eq = {(r["method"], r["w"], r["steps"]): r["rmse"] for r in equal}
    ks = sorted({r["steps"] for r in equal})
    lines += ["", "Equal steps (no AFS; derivative cost not counted):", "",
              "| method | " + " | ".join(f"w = {w:g}, {k} steps" for w in ws for k in ks) + " |",
              "|---|" + "---:|" * (len(ws) * len(ks))]
    for m in dict.fromkeys(r["method"] for r in equal):
        lines.append(f"| {m} | " + " | ".join(f"{eq[(m, float(w), k)]:.4f}" for w in ws for k in ks) + " |")
    f6 = {(r["method"], r["w"], r["nfe"]): r for r in fig6}
    methods = list(dict.fromkeys(r["method"] for r in fig6))
    lines += ["", "Classifier accuracy for the requested class / classifier FD (Fig. 6 form):", "",
              "| method | NFE | " + " | ".join(f"w = {w:g}" for w in ws) + " |", "|---|---|" + "---|" * len(ws)]
    for m in methods:
        for n in nfes:
            lines.append(f"| {m} | {n} | " + " | ".join(
                f"{f6[(m, float(w), n)]['accuracy']:.3f} / {f6[(m, float(w), n)]['fd']:.1f}" for w in ws) + " |")
    ov = res["overheads"]
    lines += ["", f"Head overheads (fraction of one guided evaluation): eq. (81) {ov['eq81']:.3f}, guided "
              f"{ov['guided']:.3f}; GENIE-AD's JVP counted as {ov['jvp_cost']:.2f} evaluations.", ""]
    return "\n".join(lines)


def _figure(path: Path, traj: list[dict[str, Any]], fig6: list[dict[str, Any]], ws: Sequence[float],
            nfes: Sequence[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {10: "-o", 20: "--s"}
    for label, _, _ in TRAJ_METHODS:
        for n in nfes:
            v = [next(r["rmse"] for r in traj if r["method"] == label and r["w"] == float(w) and r["nfe"] == n) for w in ws]
            axes[0].plot(ws, v, styles.get(n, "-"), label=f"{label}, NFE {n}")
    axes[0].set(yscale="log", xlabel="guidance scale w", ylabel="RMSE to the guided ODE's solution",
                title="reference-trajectory error")
    for m in dict.fromkeys(r["method"] for r in fig6):
        for n in nfes:
            rows = [next(r for r in fig6 if r["method"] == m and r["w"] == float(w) and r["nfe"] == n) for w in ws]
            axes[1].plot(ws, [r["accuracy"] for r in rows], styles.get(n, "-"), label=f"{m}, NFE {n}")
            axes[2].plot(ws, [r["fd"] for r in rows], styles.get(n, "-"), label=f"{m}, NFE {n}")
    axes[1].set(xlabel="guidance scale w", ylabel="classifier accuracy (requested class)", title="Fig. 6 form: accuracy")
    axes[2].set(xlabel="guidance scale w", ylabel="classifier FD", title="Fig. 6 form: FD")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
#: the sub-commands of ``python -m images`` this module adds
COMMANDS = ("guidance",)


def add_parsers(sub: Any) -> None:
    from .main_job import DEFAULT_OUT

    p = sub.add_parser("guidance", help="classifier-free guidance with GENIE: eq. (81) heads, a guided-ODE head, "
                                        "exact derivative; Fig. 6 form")
    p.add_argument("--cond-dir", default=str(DEFAULT_COND_DIR), help="class-conditional model folder (model + heads)")
    p.add_argument("--w", default="0,1,2,4", help="guidance scales")
    p.add_argument("--nfe", default="10,20", help="NFE budgets")
    p.add_argument("--num", type=int, default=64, help="images for the trajectory error")
    p.add_argument("--num-fd", type=int, default=500, help="samples per (method, w, NFE) for accuracy and FD")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT / "guidance"))
    p.add_argument("--quiet", action="store_true")


def run(a: argparse.Namespace) -> int:
    run_guidance(Path(a.out), cond_dir=a.cond_dir, ws=[float(v) for v in a.w.split(",") if v.strip()],
                 nfes=[int(v) for v in a.nfe.split(",") if v.strip()], num=a.num, num_fd=a.num_fd, seed=a.seed,
                 threads=a.threads, quiet=a.quiet)
    return 0
