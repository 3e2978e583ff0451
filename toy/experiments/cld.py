r"""CLD and gDDIM on toy data with exact scores (``python -m toy cld``): results in ``<out>/cld/``.

Critically-damped Langevin diffusion (thesis ch. 2; :class:`taylorsolve.diffusion.CLD`, thesis defaults
``M = 0.25``, ``beta = 4``, ``gamma = 0.04``) of the thesis' 9-mode lattice (thesis eq. (2.100),
:func:`toy.lattice_9`), exact scores from :class:`toy.CLDMixture`, ``t_cutoff = 1e-3``, quadratic time grid.

* **prop4** -- gDDIM Prop. 4 and our version of gDDIM Fig. 1: along accurate probability-flow
  trajectories ``eps_R`` is constant for Gaussian data (a point in ``x``, Gaussian velocities) while
  ``eps_L`` rotates with ``theta_t``; one deterministic gDDIM step samples that data exactly.  On the
  lattice ``eps_R`` is nearly flat and ``eps_L`` oscillates.  ``cld_prop4.png``, ``cld_prop4.csv``.
* **table1** -- ``K_t = L_t`` against ``R_t`` (gDDIM Table 1 / 6 form): deterministic gDDIM with
  ``q = 1, 2, 3`` at NFE 10-50; mean error against a high-accuracy PF solution and the sliced
  Wasserstein-2 distance of the ``x`` samples to ``p_0``.  ``cld_table1.csv``.
* **table2** -- ``lambda`` from 0 to 1 at NFE 50 (gDDIM Table 2 form): stochastic gDDIM (gDDIM eq. (20))
  against Euler-Maruyama on gDDIM eq. (6) with the same ``lambda``, and SSCS (``lambda = 1``).
  ``cld_table2.csv``.
* **global** -- every CLD sampler's global error (deterministic ones) and sample distance (all) against
  NFE in one figure, with GENIE on CLD (``gddim-ttm``, exact and autodiff derivatives).
  ``cld_global.png``, ``cld_global.csv``.
* **thesis_tab2_8** -- thesis Table 2.8's form: ``-log p_0`` of the samples for CLD with EM and SSCS and
  VP with EM at 20-200 steps.  ``cld_thesis_tab2_8.csv``.
* **vp_deis** -- on the VP process (GENIE's nested mixture, exact eps): gDDIM's multistep (eps extrapolated
  in ``t``) against DEIS (in ``log gamma``).  ``cld_vp_deis.csv``.
* **learned** -- hybrid score matching of a small model in both parameterisations (gDDIM eq. (22), (23);
  :mod:`toy.learned.cld`), sampled with gDDIM; checkpoints in ``<out>/cld/models/`` (resumed).
  ``cld_learned.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from taylorsolve.diffusion import CLD, sample
from taylorsolve.diffusion.processes import vp_linear
from taylorsolve.errors import SolverError

from ..cld import CLDMixture
from ..presets import lattice_9, nested_mixture, single_point
from . import metrics
from .common import DEFAULT_OUT, F64, progress, pyplot, reference_solve, save_figure, write_csv, write_json

NAME = "cld"
T_CUT = 1e-3
__all__ = ["run", "NAME"]


def _x(u: torch.Tensor) -> torch.Tensor:
    return u[:, : u.shape[1] // 2]


def _safe_sample(*args: Any, **kw: Any) -> Any:
    try:
        return sample(*args, **kw)
    except SolverError:
        return None


def _quality(mix: Any, u: torch.Tensor | None, ref0: torch.Tensor, seed: int) -> dict[str, float]:
    if u is None or not bool(torch.isfinite(u).all()):
        return {"sliced_w2": float("nan"), "mean_logp0": float("nan"), "frac_2sigma": float("nan")}
    q = metrics.quality(mix, _x(u), ref0, seed=seed, mmd=False)
    return {"sliced_w2": q["sliced_w2"], "mean_logp0": q["mean_logp0"], "frac_2sigma": q["frac_2sigma"]}


def _err(u: torch.Tensor | None, ref: torch.Tensor) -> float:
    """Mean L2 error over the samples that have a reference (the first ``n_err``; the others are NaN)."""
    if u is None or not bool(torch.isfinite(u).all()):
        return float("nan")
    mask = torch.isfinite(ref).all(dim=1)
    return float((u[mask] - ref[mask]).norm(dim=1).mean())


# -- prop4 -------------------------------------------------------------------------------------------------
def _prop4(out: Path, seed: int, quiet: bool) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    times = torch.linspace(1.0, T_CUT, 61, dtype=F64)
    rows, summary, panels = [], {}, {}
    for name, mix in (("point", single_point([0.35])), ("lattice", lattice_9())):
        cm = CLDMixture(mix, CLD(data_channels=mix.dim))
        u1 = cm.sample_t(3, 1.0, gen)
        traj = cm.reference_solve(u1, times, rtol=1e-11, atol=1e-12)
        er = torch.stack([cm.eps(traj[k], times[k], "R") for k in range(len(times))])
        el = torch.stack([cm.eps(traj[k], times[k], "L") for k in range(len(times))])
        late = times >= 0.1
        var_r = float((er - er[0]).abs().max()) / float(er.abs().max())
        var_l = float((el - el[0]).abs().max()) / float(el.abs().max())
        var_r_late = float((er[late] - er[0]).abs().max()) / float(er.abs().max())
        var_l_late = float((el[late] - el[0]).abs().max()) / float(el.abs().max())
        one_r = sample(cm, u1, None, method="gddim", process=cm.process, grid=times[[0, -1]]).x
        one_l = sample(cm, u1, None, method="gddim", process=cm.process.with_factor("L"), grid=times[[0, -1]]).x
        summary[name] = {"eps_R_relative_variation": var_r, "eps_L_relative_variation": var_l,
                         "eps_R_relative_variation_t_ge_0.1": var_r_late, "eps_L_relative_variation_t_ge_0.1": var_l_late,
                         "one_gddim_step_error_R": float((one_r - traj[-1]).abs().max()),
                         "one_gddim_step_error_L": float((one_l - traj[-1]).abs().max())}
        panels[name] = (traj, er, el)
        d = mix.dim
        for k in range(len(times)):
            for j in range(u1.shape[0]):
                rows.append({"data": name, "trajectory": j, "t": float(times[k]),
                             **{f"x{i}": float(traj[k, j, i]) for i in range(d)},
                             **{f"v{i}": float(traj[k, j, d + i]) for i in range(d)},
                             **{f"epsR_{c}{i}": float(er[k, j, (0 if c == 'x' else d) + i]) for c in "xv" for i in range(d)},
                             **{f"epsL_{c}{i}": float(el[k, j, (0 if c == 'x' else d) + i]) for c in "xv" for i in range(d)}})
    # gDDIM's released code regularises the singular start R_0: a constant rotation of our R_t (docs)
    reg = CLD(x_var=1e-6)
    summary["gddim_code_regularised_R0_rotation_rad"] = float(reg.theta(torch.tensor(0.5, dtype=F64))
                                                             - CLD().theta(torch.tensor(0.5, dtype=F64)))
    write_csv(out / "cld_prop4.csv", rows)
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    tt = times.numpy()
    for r, name in enumerate(("point", "lattice")):
        traj, er, el = panels[name]
        d = traj.shape[2] // 2
        for j in range(traj.shape[1]):
            axes[r, 0].plot(tt, traj[:, j, 0].numpy(), c=f"C{j}")
            axes[r, 1].plot(tt, el[:, j, d].numpy(), c=f"C{j}")
            axes[r, 2].plot(tt, er[:, j, 0].numpy(), c=f"C{j}", ls="-")
            axes[r, 2].plot(tt, er[:, j, d].numpy(), c=f"C{j}", ls="--")
        axes[r, 0].set_ylabel(f"{name}: x_0(t) along the PF ODE")
        axes[r, 1].set_ylabel(r"$\epsilon^{(L)}$, v channel")
        axes[r, 2].set_ylabel(r"$\epsilon^{(R)}$, x (solid) and v (dashed)")
        for ax in axes[r]:
            ax.set_xlabel("t")
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
    fig.suptitle("gDDIM Prop. 4 / Fig. 1 on toy data with exact scores: eps under R_t is flat, under L_t it "
                 "oscillates", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "cld_prop4.png")
    return summary


# -- table 1: L vs R -----------------------------------------------------------------------------------------
def _table1(cm: CLDMixture, u1: torch.Tensor, ref: torch.Tensor, ref0: torch.Tensor, nfes: Sequence[int],
            seed: int, quiet: bool) -> list[dict[str, Any]]:
    rows = []
    jobs = [(f, q, nfe) for f in ("L", "R") for q in (1, 2, 3) for nfe in nfes]
    for f, q, nfe in progress(jobs, desc="cld table1 (L vs R)", quiet=quiet):
        proc = cm.process.with_factor(f)
        res = _safe_sample(cm.with_process(proc), u1, nfe, method="gddim", order=q, process=proc)
        u = None if res is None else res.x
        rows.append({"K": f, "q": q, "nfe": nfe, "pf_error": _err(u, ref), **_quality(cm.mixture, u, ref0, seed)})
    return rows


# -- table 2: lambda -----------------------------------------------------------------------------------------
def _table2(cm: CLDMixture, u1: torch.Tensor, ref: torch.Tensor, ref0: torch.Tensor, nfe: int, lams: Sequence[float],
            seed: int, quiet: bool) -> list[dict[str, Any]]:
    rows = []
    jobs = [(m, lam) for m in ("gddim", "euler-maruyama") for lam in lams] + [("sscs", 1.0)]
    for m, lam in progress(jobs, desc="cld table2 (lambda)", quiet=quiet):
        gen = torch.Generator().manual_seed(seed + 11)
        kw = {} if m == "sscs" else {"lam": lam}
        res = _safe_sample(cm, u1, nfe, method=m, process=cm.process, generator=gen, **kw)
        u = None if res is None else res.x
        rows.append({"method": m, "lam": lam, "nfe": nfe, "pf_error": _err(u, ref) if lam == 0 else float("nan"),
                     **_quality(cm.mixture, u, ref0, seed)})
    return rows


# -- global error vs NFE ---------------------------------------------------------------------------------------
def _global(cm: CLDMixture, u1: torch.Tensor, ref: torch.Tensor, ref0: torch.Tensor, nfes: Sequence[int],
            rk45_tols: Sequence[float], seed: int, quiet: bool) -> list[dict[str, Any]]:
    proc = cm.process
    det = [("gddim q=1", "gddim", {"order": 1}, 1), ("gddim q=2", "gddim", {"order": 2}, 1),
           ("gddim q=3", "gddim", {"order": 3}, 1), ("gddim q=2 (L)", "gddim", {"order": 2, "_L": True}, 1),
           ("gddim-ttm exact (GENIE on CLD)", "gddim-ttm", {"derivative": cm.eps_dt}, 1),
           ("gddim-ttm autodiff", "gddim-ttm", {}, 2),
           ("ttm-pf p=2 autodiff", "ttm-pf", {"order": 2}, 2),
           ("euler (PF, EM lam=0)", "euler-maruyama", {"lam": 0.0}, 1)]
    sto = [("euler-maruyama", "euler-maruyama", {}, 1), ("sscs", "sscs", {}, 1),
           ("gddim lam=1", "gddim", {"lam": 1.0}, 1)]
    rows = []
    jobs = [(lab, m, kw, cost, nfe, False) for lab, m, kw, cost in det for nfe in nfes]
    jobs += [(lab, m, kw, cost, nfe, True) for lab, m, kw, cost in sto for nfe in nfes]
    for lab, m, kw, cost, nfe, stochastic in progress(jobs, desc="cld global error", quiet=quiet):
        steps = nfe // cost
        if steps < 1 or (m in ("ttm-pf",) and nfe > 100) or (lab == "gddim-ttm autodiff" and nfe > 100):
            continue                                  # autodiff through the toy is slow; NFE <= 100 shows the trend
        kw = dict(kw)
        p = proc.with_factor("L") if kw.pop("_L", False) else proc
        if stochastic or m == "euler-maruyama":
            kw["generator"] = torch.Generator().manual_seed(seed + 5)
        t0 = time.perf_counter()
        res = _safe_sample(cm.with_process(p), u1, steps, method=m, process=p, **kw)
        u = None if res is None else res.x
        rows.append({"method": lab, "nfe": nfe, "steps": steps, "stochastic": stochastic,
                     "pf_error": float("nan") if stochastic else _err(u, ref),
                     **_quality(cm.mixture, u, ref0, seed), "wall_s": time.perf_counter() - t0})
    for tol in progress(list(rk45_tols), desc="cld global rk45", quiet=quiet):
        res = sample(cm, u1, None, method="rk45", process=proc, rtol=tol, atol=tol)
        rows.append({"method": "rk45", "nfe": int(res.stats.nfe), "steps": res.stats.steps, "stochastic": False,
                     "rtol": tol, "pf_error": _err(res.x, ref), **_quality(cm.mixture, res.x, ref0, seed),
                     "wall_s": res.stats.wall_time})
    return rows


def _plot_global(rows: list[dict[str, Any]], exact_w2: float, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    labels = list(dict.fromkeys(r["method"] for r in rows))
    cmap = plt.get_cmap("tab20")
    for k, lab in enumerate(labels):
        rr = sorted([r for r in rows if r["method"] == lab], key=lambda r: r["nfe"])
        nf = [r["nfe"] for r in rr]
        mk = "o" if "ttm" in lab else ("s" if rr[0]["stochastic"] else "^")
        lw = 2.2 if "gddim-ttm" in lab else 1.2
        if not rr[0]["stochastic"]:
            axes[0].loglog(nf, [r["pf_error"] for r in rr], marker=mk, ms=4, lw=lw, c=cmap(k % 20), label=lab)
        axes[1].loglog(nf, [r["sliced_w2"] for r in rr], marker=mk, ms=4, lw=lw, c=cmap(k % 20),
                       ls="--" if rr[0]["stochastic"] else "-", label=lab)
    axes[1].axhline(exact_w2, c="k", ls=":", lw=1, label="exact samples of p_tcutoff")
    axes[0].set_ylabel("mean error vs high-accuracy PF solution")
    axes[1].set_ylabel("sliced W2 of x-samples to p_0")
    for ax in axes:
        ax.set_xlabel("NFE (autodiff JVP counted as one evaluation)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylim(top=10.0)
    axes[1].set_ylim(top=10.0)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle("CLD samplers on the 9-mode lattice (thesis eq. (2.100)), exact scores, quadratic grid", fontsize=10)
    save_figure(fig, path)


# -- thesis Table 2.8 ---------------------------------------------------------------------------------------------
def _thesis_tab(mix: Any, n: int, steps: Sequence[int], seed: int, quiet: bool) -> list[dict[str, Any]]:
    proc = CLD(data_channels=mix.dim)
    cm = CLDMixture(mix, proc)
    gen = torch.Generator().manual_seed(seed + 21)
    u1 = proc.prior_sample((n, 2 * mix.dim), generator=gen, dtype=F64)
    x1 = torch.randn(n, mix.dim, dtype=F64, generator=gen)
    rows = []
    for N in progress(list(steps), desc="cld thesis table 2.8", quiet=quiet):
        for model, sampler in (("CLD", "euler-maruyama"), ("CLD", "sscs"), ("VPSDE", "euler-maruyama")):
            g = torch.Generator().manual_seed(seed + N)
            if model == "CLD":
                res = _safe_sample(cm, u1, N, method=sampler, process=proc, generator=g)
                x = None if res is None else _x(res.x)
            else:
                res = _safe_sample(mix, x1, N, method=sampler, process=vp_linear(), generator=g)
                x = None if res is None else res.x
            ok = x is not None and bool(torch.isfinite(x).all())
            rows.append({"model": model, "sampler": sampler.replace("euler-maruyama", "EM").upper(), "steps": N,
                         "nll": -metrics.mean_log_prob(mix, x) if ok else float("nan")})
    exact = mix.sample(n, generator=torch.Generator().manual_seed(seed + 22))
    for N in steps:                                   # the entropy of p_0: what exact samples score
        rows.append({"model": "exact p_0", "sampler": "-", "steps": N, "nll": -metrics.mean_log_prob(mix, exact)})
    return rows


# -- VP: gDDIM multistep vs DEIS ------------------------------------------------------------------------------------
def _vp_deis(n: int, nfes: Sequence[int], seed: int, quiet: bool) -> list[dict[str, Any]]:
    from taylorsolve.diffusion import from_xbar, to_xbar
    from taylorsolve.diffusion.schedules import LinearVPSchedule

    mix = nested_mixture()
    sch = LinearVPSchedule()
    x1 = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed + 31))
    g1 = float(sch.gamma(torch.tensor(1.0, dtype=F64)))
    gc = float(sch.gamma(torch.tensor(T_CUT, dtype=F64)))
    x_ref = from_xbar(reference_solve(mix, to_xbar(x1, g1), g1, [gc])[0], gc)
    rows = []
    for m in progress(["gddim", "deis"], desc="cld vp: gddim vs deis", quiet=quiet):
        for q in (1, 2, 3):
            for nfe in nfes:
                res = sample(mix.eps, x1, nfe, method=m, order=q, t_cutoff=T_CUT)
                rows.append({"method": m, "q": q, "nfe": nfe, "error": float((res.x - x_ref).norm(dim=1).mean())})
    return rows


# -- learned (HSM) ---------------------------------------------------------------------------------------------------
def _learned(out: Path, mix: Any, n: int, nfes: Sequence[int], full: bool, seed: int, quiet: bool) -> list[dict[str, Any]]:
    from ..learned.cld import cld_diffusion_model, train_cld_model
    from ..learned.train import TrainConfig

    cfg = TrainConfig(iters=20000 if full else 6000, batch=512, lr=5e-3, lr_final=1e-4, seed=seed, hidden=256,
                      depth=3, x_fourier=64, x_scale=8.0, ckpt_every=1000, time_sampling="uniform")
    gen = torch.Generator().manual_seed(seed + 41)
    proc = CLD(data_channels=mix.dim)
    u1 = proc.prior_sample((n, 2 * mix.dim), generator=gen, dtype=F64)
    ref0 = mix.sample(max(n, 2000), generator=torch.Generator().manual_seed(seed + 1))
    rows = []
    for f in ("R", "L"):
        model, state = train_cld_model(mix, f, cfg, str(out / "models" / f"cld_hsm_{f}.safetensors"),
                                       process=proc.with_factor(f), progress=not quiet)
        p = proc.with_factor(f)
        dm = cld_diffusion_model(model, p)
        cm = CLDMixture(mix, p)
        for q in (1, 2):
            for nfe in nfes:
                for label, mdl in (("learned", dm), ("exact", cm)):
                    res = _safe_sample(mdl, u1, nfe, method="gddim", order=q, process=None if label == "learned" else p)
                    rows.append({"K": f, "score": label, "q": q, "nfe": nfe,
                                 "final_loss": float(np.mean(state.losses[-100:])),
                                 **_quality(mix, None if res is None else res.x, ref0, seed)})
    return rows


def _fmt_table(rows: list[dict[str, Any]], row_keys: Sequence[str], col_key: str, val_key: str, fmt: str = "{:.3g}") -> str:
    cols = sorted({r[col_key] for r in rows})
    keys = list(dict.fromkeys(tuple(r[k] for k in row_keys) for r in rows))
    lines = ["  " + " / ".join(row_keys) + " | " + " ".join(f"{c:>9}" for c in cols)]
    for key in keys:
        vals = []
        for c in cols:
            v = [r[val_key] for r in rows if tuple(r[k] for k in row_keys) == key and r[col_key] == c]
            vals.append(fmt.format(v[0]) if v and v[0] == v[0] else "-")
        lines.append("  " + " / ".join(str(k) for k in key) + " | " + " ".join(f"{s:>9}" for s in vals))
    return "\n".join(lines)


def run(out: Path | str = DEFAULT_OUT, *, full: bool = False, n: int | None = None, seed: int = 0,
        quiet: bool = False, parts: Sequence[str] | None = None) -> dict[str, Any]:
    """All parts (module docstring); ``parts`` picks a subset.  Returns ``{"summary", "rows"}``."""
    out = Path(out) / "cld"
    t_start = time.perf_counter()
    n = n or (2000 if full else 500)
    n_err = min(n, 400 if full else 200)               # PF errors need the (slow) reference solve
    parts = list(parts) if parts is not None else ["prop4", "table1", "table2", "global", "thesis_tab2_8",
                                                   "vp_deis", "learned"]
    mix = lattice_9()
    proc = CLD(data_channels=mix.dim)
    cm = CLDMixture(mix, proc)
    gen = torch.Generator().manual_seed(seed)
    u1 = cm.sample_t(n, 1.0, gen)
    ref0 = mix.sample(max(n, 2000), generator=torch.Generator().manual_seed(seed + 1))
    need_ref = any(p in parts for p in ("table1", "table2", "global"))
    ref = cm.reference_solve(u1[:n_err], [1.0, T_CUT], rtol=1e-10, atol=1e-11)[-1] if need_ref else None
    # PF error on the first n_err samples, sample quality on all n
    ref_full = torch.full_like(u1, float("nan"))
    if ref is not None:
        ref_full[:n_err] = ref
    exact_tc = cm.sample_t(n, T_CUT, torch.Generator().manual_seed(seed + 3))
    exact_q = _quality(mix, exact_tc, ref0, seed)
    summary: dict[str, Any] = {"experiment": NAME, "n_samples": n, "n_pf_error": n_err, "t_cutoff": T_CUT,
                               "process": repr(proc), "exact_p_tcutoff_quality": exact_q}
    rows: dict[str, list[dict[str, Any]]] = {}
    text: list[str] = []

    if "prop4" in parts:
        summary["prop4"] = _prop4(out, seed, quiet)
        p4 = summary["prop4"]
        text.append("prop4 (gDDIM Prop. 4): max |eps(t) - eps(1)| / max |eps| along PF trajectories, t in [1e-3, 1] "
                    f"(t in [0.1, 1]): [point data] R {p4['point']['eps_R_relative_variation']:.1e}, "
                    f"L {p4['point']['eps_L_relative_variation']:.2f}; "
                    f"[lattice] R {p4['lattice']['eps_R_relative_variation']:.2f} "
                    f"({p4['lattice']['eps_R_relative_variation_t_ge_0.1']:.3f}), "
                    f"L {p4['lattice']['eps_L_relative_variation']:.2f} "
                    f"({p4['lattice']['eps_L_relative_variation_t_ge_0.1']:.2f}); one gDDIM step on point data: "
                    f"max error R {p4['point']['one_gddim_step_error_R']:.1e}, L {p4['point']['one_gddim_step_error_L']:.3g}; "
                    f"gDDIM's regularised R_0 (eps = 1e-6) = our R_t rotated by "
                    f"{p4['gddim_code_regularised_R0_rotation_rad']:.3f} rad")

    if "table1" in parts:
        nfes = (10, 20, 30, 40, 50)
        r1 = _table1(cm, u1, ref_full, ref0, nfes, seed, quiet)
        rows["table1"] = r1
        write_csv(out / "cld_table1.csv", r1)
        text.append("table1 (gDDIM Table 1 form), mean error vs PF solution:\n" + _fmt_table(r1, ("K", "q"), "nfe", "pf_error"))
        text.append("table1, sliced W2 to p_0:\n" + _fmt_table(r1, ("K", "q"), "nfe", "sliced_w2"))
    if "table2" in parts:
        r2 = _table2(cm, u1, ref_full, ref0, 50, (0.0, 0.1, 0.3, 0.5, 0.7, 1.0), seed, quiet)
        rows["table2"] = r2
        write_csv(out / "cld_table2.csv", r2)
        text.append("table2 (gDDIM Table 2 form, NFE 50), sliced W2 to p_0:\n"
                    + _fmt_table(r2, ("method",), "lam", "sliced_w2"))
        text.append("table2, -mean log p_0:\n" + _fmt_table([{**r, "nll": -r["mean_logp0"]} for r in r2],
                                                          ("method",), "lam", "nll"))
    if "global" in parts:
        nfes = (10, 20, 50, 100, 200) if full else (10, 20, 50, 100)
        rg = _global(cm, u1, ref_full, ref0, nfes, (1e-2, 1e-3, 1e-4, 1e-6), seed, quiet)
        rows["global"] = rg
        write_csv(out / "cld_global.csv", rg)
        _plot_global(rg, exact_q["sliced_w2"], out / "cld_global.png")
        fixed = [r for r in rg if r["method"] != "rk45"]
        text.append("global: mean error vs PF solution:\n" + _fmt_table([r for r in fixed if not r["stochastic"]],
                                                                       ("method",), "nfe", "pf_error"))
        text.append("global: sliced W2 to p_0 (exact samples of p_tcutoff: "
                    f"{exact_q['sliced_w2']:.3g}):\n" + _fmt_table(fixed, ("method",), "nfe", "sliced_w2"))
        text.append("global: rk45 (rtol = atol) " + "; ".join(
            f"{r['rtol']:g}: NFE {r['nfe']}, error {r['pf_error']:.3g}, W2 {r['sliced_w2']:.3g}"
            for r in rg if r["method"] == "rk45"))
    if "thesis_tab2_8" in parts:
        rt = _thesis_tab(mix, 4 * n if full else 2 * n, (20, 50, 100, 200), seed, quiet)
        rows["thesis_tab2_8"] = rt
        write_csv(out / "cld_thesis_tab2_8.csv", rt)
        text.append("thesis Table 2.8 form, -log p_0 (thesis: CLD EM 60.6/9.71/0.72/-1.04, CLD SSCS "
                    "10.5/1.55/-1.25/-1.54, VPSDE EM 14.2/4.68/-0.35/-1.11):\n"
                    + _fmt_table(rt, ("model", "sampler"), "steps", "nll"))
    if "vp_deis" in parts:
        rv = _vp_deis(n, (10, 20, 50), seed, quiet)
        rows["vp_deis"] = rv
        write_csv(out / "cld_vp_deis.csv", rv)
        text.append("vp_deis (VP, nested mixture): mean error vs DDIM-ODE reference:\n"
                    + _fmt_table(rv, ("method", "q"), "nfe", "error"))
    if "learned" in parts:
        rl = _learned(out, mix, n, (20, 50), full, seed, quiet)
        rows["learned"] = rl
        write_csv(out / "cld_learned.csv", rl)
        text.append("learned (HSM, gDDIM eq. (22)/(23)), sliced W2 to p_0:\n"
                    + _fmt_table(rl, ("K", "score", "q"), "nfe", "sliced_w2"))
    summary["text"] = "\n".join(text)
    summary["seconds"] = time.perf_counter() - t_start
    summary["files"] = sorted(str(p) for p in out.glob("cld_*"))
    write_json(out / "cld_summary.json", {**summary, "rows": rows})
    return {"summary": summary, "rows": rows}
