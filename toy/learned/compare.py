r"""Equal-NFE comparison of samplers on a learned toy eps model, in the form of GENIE's Table 2.

Rows (methods/ablations) x columns (NFE = 5, 10, 15, 20, 25), all with the final denoising step
(sec. 5; it costs one NFE) and the quadratic grid (S-PNDM on linear striding, as in the paper):

* ``DDIM`` and ``S-PNDM`` on the learned model;
* ``GENIE (AD)``: GENIE with the learned model's autodiff derivative (eq. (12)), NFE adjusted for
  100 % overhead (the paper's convention, :func:`taylorsolve.diffusion.cost.overhead_adjusted_nfe`);
* ``GENIE (head)``: GENIE with the distilled head ``k_psi`` (:mod:`toy.learned.head`), NFE adjusted
  for the head's *measured* overhead (head time / eps-model time on this CPU);
* ablations (same adjustment): ``no mixed`` (eq. (14) off), ``no gamma^2 weighting`` (eq. (15)),
  ``head fed true noise`` (released-code choice), ``AD-free spatial JVP`` (app. D);
* ``GENIE (head), NFE not adjusted``: the head charged no overhead (for reference: on a CPU the
  measured overhead of a tiny head over a tiny MLP is far above the paper's 1.5 % on a U-Net);
* references on the *true* mixture: ``DDIM (true eps)`` and ``GENIE (exact, true eps)`` with the exact
  derivative of the mixture (no overhead charged), and ``p_0 samples`` (fresh data).

Measures (:mod:`toy.experiments.metrics`, shared with the exact-score experiments): fraction within ``h sigma`` of a mode (h = 1..4), mean
``log p_0``, sliced W2 to fresh ``p_0`` samples.  Outputs (atomically, temp file + ``os.replace``)
in ``out_dir``: ``table.csv`` (long format), ``table.md`` (one Table-2-style table per measure),
``comparison.png``, ``summary.json``; checkpoints in ``out_dir/checkpoints`` (training resumes).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, replace
from typing import Any, Iterator, Sequence

import torch

from taylorsolve.diffusion import providers, sample
from taylorsolve.diffusion.cost import overhead_adjusted_nfe, steps_for_nfe
from taylorsolve.diffusion.schedules import LinearVPSchedule

from .head import HeadConfig, HeadedModel, count_parameters, distill_head, evaluate_head, measure_overhead
from ..experiments.common import atomic_write_bytes
from ..experiments.metrics import quality
from .train import TrainConfig, train_eps_model

__all__ = ["DEFAULT_NFES", "HEAD_VARIANTS", "METRICS", "run_comparison", "format_markdown", "format_head_errors",
           "single_thread"]

DEFAULT_NFES = (5, 10, 15, 20, 25)
METRICS = ("frac_1sigma", "frac_2sigma", "frac_3sigma", "frac_4sigma", "mean_logp0", "sliced_w2")
CSV_COLUMNS = ("method", "kind", "nfe", "nfe_used", "steps", "grid") + METRICS
#: head variants: row name -> HeadConfig overrides (the first one is the standard GENIE head)
HEAD_VARIANTS: dict[str, dict[str, Any]] = {
    "GENIE (head)": {},
    "no mixed param.": {"mixed": False},
    "no gamma^2 weighting": {"weighting": False},
    "head fed true noise": {"feed": "true_noise"},
    "AD-free spatial JVP (app. D)": {"objective": "ad_free"},
}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread (tiny MLPs run much faster so on a shared CPU); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def format_markdown(rows: list[dict[str, Any]], nfes: Sequence[int], metrics: Sequence[str] = METRICS) -> str:
    """One Table-2-style Markdown table per measure (rows = methods, columns = NFE)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["nfe"]): r for r in rows}
    better = {"sliced_w2": "lower is better"}
    out = []
    for m in metrics:
        out.append(f"### {m} ({better.get(m, 'higher is better')})\n")
        out.append("| method | " + " | ".join(f"NFEs={n}" for n in nfes) + " |")
        out.append("|---|" + "---|" * len(nfes))
        for meth in methods:
            cells = []
            for n in nfes:
                r = by.get((meth, n))
                if r is None:
                    cells.append("-")
                else:
                    v = r[m]
                    s = f"{v:.3f}" if m != "mean_logp0" else f"{v:.2f}"
                    cells.append(s if r["steps"] is None else f"{s} ({r['steps']})")
            out.append(f"| {meth} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("Cells: value (solver steps; every run adds one NFE for the final denoising step).")
    return "\n".join(out) + "\n"


def format_head_errors(head_info: dict[str, dict[str, Any]]) -> str:
    """The heads' held-out relative errors: overall (gamma^2-weighted, unweighted) and per band of ``t``."""
    first = next(iter(head_info.values()))
    bands = [f"t in [{b['lo']:g}, {b['hi']:g}{')' if i < len(first['bands']) - 1 else ']'}"
             for i, b in enumerate(first["bands"])]
    out = ["Held-out relative error of the heads against the autodiff target (eq. (12); a zero derivative "
           "scores 1), gamma^2-weighted as eq. (15) (per band of t: weighted, unweighted in parentheses), "
           f"t drawn as in distillation ({first.get('time_sampling', 'uniform+log')}):\n",
           "| head | rel. error (gamma^2-weighted) | unweighted | " + " | ".join(bands) + " | final loss |",
           "|---|---|---|" + "---|" * len(bands) + "---|"]
    for name, info in head_info.items():
        cells = [f"{b['rel_mse']:.3f} ({b['rel_mse_unweighted']:.3f})" for b in info["bands"]]
        out.append(f"| {name} | {info['rel_mse']:.3f} | {info['rel_mse_unweighted']:.3f} | " + " | ".join(cells)
                   + f" | {info['final_loss']:.4g} |")
    return "\n".join(out) + "\n"


def _figure(rows: list[dict[str, Any]], nfes: Sequence[int], samples: dict[str, torch.Tensor], mixture: Any,
            path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "p_0 samples"]
    fig, axes = plt.subplots(1, 3 + len(samples), figsize=(4.2 * (3 + len(samples)), 4.0))
    by = {(r["method"], r["nfe"]): r for r in rows}
    for ax, m in zip(axes[:3], ("frac_2sigma", "mean_logp0", "sliced_w2")):
        for meth in methods:
            ys = [by[(meth, n)][m] if (meth, n) in by else float("nan") for n in nfes]
            style = "--" if ("true eps" in meth) else ("-." if meth in list(HEAD_VARIANTS)[1:] else "-")
            ax.plot(list(nfes), ys, style, marker="o", ms=3, label=meth)
        ref = by.get(("p_0 samples", nfes[0]))
        if ref is not None:
            ax.axhline(ref[m], color="k", lw=0.8, ls=":", label="p_0 samples")
        ax.set_xlabel("NFE")
        ax.set_title(m)
        if m == "sliced_w2":
            ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    means = mixture.means
    for ax, (name, x) in zip(axes[3:], samples.items()):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.scatter(means[:, 0], means[:, 1], s=4, c="r", marker="x", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-1.4, 1.4)
        ax.set_ylim(-1.4, 1.4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run_comparison(
    out_dir: str | None = "results/toy_learned",
    *,
    full: bool = False,
    nfes: Sequence[int] = DEFAULT_NFES,
    n_samples: int = 2000,
    seed: int = 0,
    eps_cfg: TrainConfig | None = None,
    head_cfg: HeadConfig | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    figure: bool = True,
    figure_nfe: int = 10,
) -> dict[str, Any]:
    """Train (or resume) the eps model and heads, sample at equal NFE, measure, write the table.

    Returns ``{"rows": [...], "summary": {...}, "markdown": str, "samples": {...}}``.  ``out_dir=None``
    writes nothing (and keeps no checkpoints).
    """
    from toy import nested_mixture

    t_start = time.perf_counter()
    mixture = nested_mixture()
    schedule = LinearVPSchedule()
    tag = "full" if full else "default"
    if eps_cfg is None:
        eps_cfg = TrainConfig(iters=20000, batch=512, ckpt_every=2000) if full else TrainConfig(iters=4000, batch=256)
    if head_cfg is None:
        head_cfg = HeadConfig(iters=6000, batch=256, ckpt_every=2000) if full else HeadConfig(iters=2000, batch=256)
    variants = HEAD_VARIANTS if variants is None else variants
    ckdir = None if out_dir is None else os.path.join(out_dir, "checkpoints")


    def ck(name: str, cfg: Any) -> str | None:   # the settings' hash in the name: other settings, other file
        if ckdir is None:
            return None
        key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
        return os.path.join(ckdir, f"{name}_{tag}_{key}.safetensors")

    with single_thread():
        teacher, eps_state = train_eps_model(mixture, eps_cfg, ck("eps_model", eps_cfg), schedule=schedule, progress=progress)
        t_eps = time.perf_counter() - t_start
        heads, head_info = {}, {}
        for i, (name, over) in enumerate(variants.items()):
            hcfg = replace(head_cfg, **over)
            slug = "head_" + "_".join(f"{k}-{v}" for k, v in over.items()) if over else "head_standard"
            head, st = distill_head(teacher, mixture, hcfg, ck(slug, hcfg), schedule=schedule, progress=progress)
            heads[name] = head
            info = {"config": {k: v for k, v in asdict(hcfg).items()}, "final_loss": float(sum(st.losses[-50:]) / max(1, len(st.losses[-50:]))),
                    "params": count_parameters(head)}
            info.update(evaluate_head(teacher, head, mixture, n=4096, schedule=schedule, time_sampling=hcfg.time_sampling))
            info["time_sampling"] = hcfg.time_sampling
            head_info[name] = info
        std_name = next(iter(variants))
        ov = measure_overhead(teacher, heads[std_name])
        t_train = time.perf_counter() - t_start

        gen = torch.Generator().manual_seed(seed)
        x1 = torch.randn(n_samples, mixture.dim, dtype=torch.float64, generator=gen)
        reference = mixture.sample(n_samples, torch.Generator().manual_seed(seed + 1))
        exact = providers.exact(lambda xbar, gamma, eps, order: mixture.eps_derivatives(xbar, gamma, order)[1:])

        rows: list[dict[str, Any]] = []
        shown: dict[str, torch.Tensor] = {}

        def run(method_name: str, kind: str, model: Any, method: str, nfe: int, overhead: float,
                derivative: Any = None, grid: str = "quadratic") -> None:
            used = overhead_adjusted_nfe(nfe, overhead) if overhead else nfe
            try:
                steps = steps_for_nfe(method, used, denoise=True)
            except Exception:  # budget too small for one step
                return
            res = sample(model, x1, steps, method=method, grid=grid, schedule=schedule, derivative=derivative,
                         denoise=True)
            assert res.stats.nfe <= used, (method_name, res.stats.nfe, used)
            x = res.x.detach()
            row = {"method": method_name, "kind": kind, "nfe": nfe, "nfe_used": int(res.stats.nfe), "steps": steps,
                   "grid": grid}
            row.update(quality(mixture, x, reference, seed=seed, n_proj=256, mmd=False, log_prob_clip=-50.0))
            rows.append(row)
            if nfe == figure_nfe and method_name in ("DDIM", "GENIE (AD)", std_name, "GENIE (exact, true eps)"):
                shown[f"{method_name}, NFE={nfe}"] = x

        for nfe in nfes:
            run("DDIM", "baseline", teacher, "ddim", nfe, 0.0)
            run("S-PNDM", "baseline", teacher, "s-pndm", nfe, 0.0, grid="linear")
            run("GENIE (AD)", "genie", teacher, "genie", nfe, 1.0, derivative="autodiff")
            for name, head in heads.items():
                hm = HeadedModel(teacher, head, schedule)
                run(name, "genie" if name == std_name else "ablation", hm, "genie", nfe, ov["overhead"],
                    derivative=hm.provider())
                if name == std_name:  # the CPU-measured overhead of a tiny head on a tiny MLP is not the paper's
                    run(f"{name}, NFE not adjusted", "genie-unadjusted", hm, "genie", nfe, 0.0,
                        derivative=hm.provider())
            run("DDIM (true eps)", "reference", mixture, "ddim", nfe, 0.0)
            run("GENIE (exact, true eps)", "reference", mixture, "genie", nfe, 0.0, derivative=exact)
        ref_q = quality(mixture, mixture.sample(n_samples, torch.Generator().manual_seed(seed + 2)), reference, seed=seed,
                        n_proj=256, mmd=False, log_prob_clip=-50.0)
        for nfe in nfes:
            rows.append({"method": "p_0 samples", "kind": "reference", "nfe": nfe, "nfe_used": 0, "steps": None,
                         "grid": "", **ref_q})

    summary = {
        "tag": tag,
        "eps_model": {"config": asdict(eps_cfg), "params": count_parameters(teacher), "steps": eps_state.step,
                      "final_dsm_loss": float(sum(eps_state.losses[-200:]) / max(1, len(eps_state.losses[-200:])))},
        "heads": head_info,
        "overhead": ov,
        "nfes": list(nfes),
        "n_samples": n_samples,
        "seed": seed,
        "train_seconds": t_train,
        "eps_train_seconds": t_eps,
        "total_seconds": time.perf_counter() - t_start,
        "metrics_source": "toy.experiments.metrics (log p_0 clipped at -50)",
    }
    md = format_markdown(rows, nfes)
    header = (f"# Toy learned-score comparison ({tag})\n\nnested_mixture (GENIE app. E), eps-MLP "
              f"{summary['eps_model']['params']} params, head {ov['head_params']} params, measured head "
              f"overhead {100 * ov['overhead']:.1f} % (GENIE(head) and ablations get "
              f"round(NFE / {1 + ov['overhead']:.3f}) NFE; GENIE (AD) round(NFE / 2)).\n\n")
    md = header + format_head_errors(head_info) + "\n" + md
    if out_dir is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CSV_COLUMNS})
        atomic_write_bytes(os.path.join(out_dir, "table.csv"), buf.getvalue().encode())
        atomic_write_bytes(os.path.join(out_dir, "table.md"), md.encode())
        atomic_write_bytes(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
        if figure:
            _figure(rows, nfes, shown, mixture, os.path.join(out_dir, "comparison.png"))
    return {"rows": rows, "summary": summary, "markdown": md, "samples": shown}
