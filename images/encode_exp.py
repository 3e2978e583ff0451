r"""Encoding and decoding (Fig. 8 form, app. F.4) and interpolation (app. F.5) on the committed digits model.

**Encoding** runs the generative (probability-flow / DDIM) ODE backwards, from ``t_cutoff`` up to
``t = 1`` (:func:`taylorsolve.diffusion.encoding.encode`); **decoding** runs it forwards from the latent
(:func:`~taylorsolve.diffusion.encoding.decode`), with the same NFE budget each way.  Two protocols,
both reported:

* ``"state"`` (the headline; it measures the solvers): the held-out digit ``x`` is taken as the state
  at ``t_cutoff`` itself (``diffuse=False``) and ``decode(encode(x), denoise=False)`` is compared with
  ``x``.  An exact solver returns ``x`` exactly (the ODE's flow is invertible), so the reconstruction
  error is the round trip's discretisation error alone, as in the reference-trajectory error of the
  main job; it shrinks as ``steps^-p`` for a method of order ``p``.
* ``"f4"`` (the paper's app. F.4): ``x`` is first diffused to ``t_cutoff``, ``x_t = alpha x + sigma
  eps`` (eq. (1), ``diffuse=True``, ``eps`` seeded), and the decoder ends with the denoising step
  ``(x_t - sigma eps_theta) / alpha`` (``denoise=True``; its evaluation is inside the decoder's budget).
  Its error has a floor that no solver removes: the denoised diffused input
  ``||denoise(x_t) - x||``, reported beside it (``f4_floor``).

Reconstruction error: per-image RMSE over the pixels (mean over images), the per-image L2 norm
(mean), and the L2 norm of the difference of the digits classifier's penultimate features
(:func:`images.classifier.features`; mean over images).

Budgets (sec. 5): every method gets the steps whose evaluations fit the NFE budget each way
(:func:`images.main_job._steps`): GENIE (head) with the committed standard head at its overhead
measured on this machine (:func:`images.heads.measure_overhead`, app. C.2.5; ``heads.json`` records none),
GENIE-AD (the exact derivative by autodiff, a reference row) with its JVP pass at its measured cost
in forward passes (:func:`images.main_job.measure_jvp_cost`); no AFS (encoding has no analytic first
step).  Each method runs on its customary grid (:data:`images.sampling.DEFAULT_GRIDS`), reversed for
encoding.

**Interpolation** (app. F.5): two held-out digits are encoded, their latents mixed by eq. (82),
``x^(alpha) = sqrt(1 - alpha) x_a + sqrt(alpha) x_b`` (:func:`taylorsolve.diffusion.guidance.slerp`,
which keeps the variance of independent standard normal codes), and each mixture is decoded, with the
same method and NFE as the encoding.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from taylorsolve.diffusion.encoding import decode, encode
from taylorsolve.diffusion.guidance import slerp

from .checkpoint import atomic_write_text, load_model
from .evaluate import denoise_with, per_image_rmse, save_grid, write_csv
from .errors import UnknownNameError
from .main_job import DEFAULT_OUT, MethodSpec, _log, _savefig, _steps, measure_jvp_cost
from .sampling import DEFAULT_GRIDS, canonical, diffusion_model

__all__ = ["ENCODE_METHODS", "PROTOCOLS", "RoundTrip", "round_trip", "interpolate_codes", "encode_target",
           "run_encode", "run_interpolate", "add_parsers", "run", "COMMANDS"]

#: the methods by name: display label, ``sample()`` method, how a JVP pass is priced, heads, options
ENCODE_METHODS: dict[str, MethodSpec] = {
    "ddim": MethodSpec("DDIM", "ddim"),
    "genie-head": MethodSpec("GENIE (head)", "genie", heads=("standard",), options=(("derivative", "head"),)),
    "dpm-solver++2m": MethodSpec("DPM-Solver++(2M)", "dpm-solver++2m"),
    "genie": MethodSpec("GENIE-AD", "genie", "measured", options=(("derivative", "autodiff"),)),
}

#: ``"state"``: compare ``decode(encode(x))`` with ``x`` as states at ``t_cutoff``; ``"f4"``: app. F.4
PROTOCOLS = ("state", "f4")


def resolve_methods(names: Sequence[str]) -> list[tuple[str, MethodSpec]]:
    """``[(name, spec)]`` for method names of :data:`ENCODE_METHODS`; an unknown one is an :class:`UnknownNameError`."""
    out = []
    for n in names:
        key = n.strip().lower().replace("_", "-")
        key = {"genie-ad": "genie"}.get(key, key)
        if key not in ENCODE_METHODS:
            raise UnknownNameError(f"unknown encoding method {n!r}; known: {', '.join(ENCODE_METHODS)}")
        out.append((key, ENCODE_METHODS[key]))
    return out


@dataclass
class RoundTrip:
    """One encode-decode round trip: the latent ``z`` (``x_1``), the reconstruction ``x`` and both runs' stats."""

    z: torch.Tensor
    x: torch.Tensor
    encode_stats: Any
    decode_stats: Any


def round_trip(model: Any, x: torch.Tensor, method: str, steps: int, *, decode_steps: int | None = None,
               protocol: str = "state", t_cutoff: float = 1e-3, seed: int = 0, **options: Any) -> RoundTrip:
    """Encode ``x`` with ``steps`` steps of ``method`` (``sample()`` name) on its customary grid, then decode
    with ``decode_steps`` (default ``steps``).  ``protocol="state"``: ``diffuse=False``, ``denoise=False``;
    ``"f4"``: ``x`` diffused to ``t_cutoff`` with noise from ``seed`` (eq. (1)), final denoising on.
    ``model``: a U-Net or a headed model (then ``derivative="head"`` in ``options``)."""
    if protocol not in PROTOCOLS:
        raise UnknownNameError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    m = canonical(method)
    grid = DEFAULT_GRIDS.get(m, "quadratic")
    dm = diffusion_model(model)
    f4 = protocol == "f4"
    gen = torch.Generator().manual_seed(int(seed)) if f4 else None
    z = encode(dm, x, steps, method=m, grid=grid, t_cutoff=t_cutoff, diffuse=f4, generator=gen, **options)
    r = decode(dm, z.x, decode_steps or steps, method=m, grid=grid, t_cutoff=t_cutoff, denoise=f4, **options)
    return RoundTrip(z=z.x, x=r.x, encode_stats=z.stats, decode_stats=r.stats)


def _errors(rec: torch.Tensor, x: torch.Tensor, clf: nn.Module | None) -> dict[str, float]:
    """Pixel RMSE (mean, standard error), per-image L2 norm, and the classifier-feature L2 distance."""
    from .classifier import features

    r = per_image_rmse(rec, x)
    n = r.numel()
    d = (rec.double() - x.double()).flatten(1).norm(dim=1)
    out = {"rmse": float(r.mean()), "rmse_se": float(r.std() / n ** 0.5) if n > 1 else 0.0, "l2": float(d.mean())}
    if clf is not None:
        out["feat_l2"] = float((features(clf, rec) - features(clf, x)).norm(dim=1).mean())
    return out


def _headed(model: nn.Module, heads_dir: str | Path | None, batch: int, overhead: float | None) -> tuple[Any, dict[str, Any]]:
    """The committed standard head on ``model``, its overhead measured as in the main job (5 warm-up and
    50 timed pairs, 3 rounds, at ``batch``) unless ``overhead`` is given."""
    from .head_experiments import DEFAULT_HEADS_DIR
    from .heads import attach_head, measure_overhead

    f = Path(heads_dir) if heads_dir is not None else DEFAULT_HEADS_DIR
    h = attach_head(model, head=f / "standard.safetensors", overhead=None)
    if overhead is None:
        info = measure_overhead(h, batch=batch, warmup=5, repeats=50, rounds=3)
        info["source"] = "measured (images.heads.measure_overhead)"
    else:
        info = {"overhead": float(overhead), "source": "given"}
    h.overhead = info["overhead"]
    return h, info


def _held_out(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num`` held-out digits (float64 ``[num, 1, 16, 16]``) chosen by a seeded permutation, their labels and indices."""
    from .data import load_digits

    xs, labels = load_digits().held_out()
    idx = torch.randperm(xs.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:num]
    return xs[idx].double(), labels[idx], idx


def encode_target(rows: Sequence[dict[str, Any]], nfe: int = 10) -> dict[str, Any]:
    """The issue's target: GENIE (head)'s reconstruction error (pixel RMSE, state protocol) at most half of
    DDIM's at NFE ``nfe`` each way.  Also the same ratio for the feature error, the F.4 protocol and
    GENIE-AD, for information.  ``met`` is None when a number is missing."""
    by = {(r["protocol"], r["method"], r["nfe_budget"]): r for r in rows if r.get("status") == "ok"}

    def ratio(protocol: str, label: str, key: str) -> float | None:
        a, b = by.get((protocol, label, nfe)), by.get((protocol, "DDIM", nfe))
        return None if a is None or b is None else a[key] / b[key]

    d, g = by.get(("state", "DDIM", nfe)), by.get(("state", "GENIE (head)", nfe))
    ok = None if d is None or g is None else g["rmse"] <= 0.5 * d["rmse"]
    return {"nfe": nfe, "criterion": "GENIE (head) pixel RMSE <= 0.5 x DDIM's, state protocol, same NFE each way",
            "ddim_rmse": d and d["rmse"], "genie_head_rmse": g and g["rmse"],
            "ratio": ratio("state", "GENIE (head)", "rmse"), "met": ok,
            "ratio_features": ratio("state", "GENIE (head)", "feat_l2"),
            "ratio_f4": ratio("f4", "GENIE (head)", "rmse"),
            "ratio_genie_ad": ratio("state", "GENIE-AD", "rmse")}


def _setup(methods: Sequence[str], threads: int | None, out: Path, checkpoint: str | Path | None
           ) -> tuple[list[tuple[str, MethodSpec]], float, Path, nn.Module]:
    """The methods (checked before anything is written), threads, start time, output folder, model."""
    from . import DEFAULT_DIGITS_CHECKPOINT

    specs = resolve_methods(methods)
    if threads:
        torch.set_num_threads(int(threads))
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return specs, t_start, out, load_model(Path(checkpoint) if checkpoint is not None else DEFAULT_DIGITS_CHECKPOINT)


def run_encode(out: Path, *, nfes: Sequence[int] = (5, 10, 15, 20, 25),
               num: int = 64, methods: Sequence[str] = ("ddim", "genie-head", "dpm-solver++2m", "genie"),
               t_cutoff: float = 1e-3, seed: int = 0, heads_dir: str | Path | None = None, threads: int | None = None,
               quiet: bool = False, checkpoint: str | Path | None = None, jvp_cost: float | None = None,
               head_overhead: float | None = None, equal_steps: Sequence[int] = (10, 20)) -> dict[str, Any]:
    """Encode ``num`` held-out digits and decode them at each NFE budget with each method, both protocols
    (module docstring); writes ``results.json``, ``errors.csv``, ``encode.md``, ``encode_error.png`` and
    ``reconstructions_nfe10[_f4].png`` (inputs, then one row per method, at NFE 10 or the budget nearest it)
    to ``out``; returns the results.  ``jvp_cost`` / ``head_overhead`` replace the measured costs.
    ``equal_steps``: step counts at which DDIM, GENIE-AD and GENIE (head) also run with the same steps
    (state protocol, the derivative's cost not counted), which shows what the exact derivative gives."""
    from . import DEFAULT_DIGITS_CHECKPOINT
    from .classifier import load_classifier

    specs, t_start, out, model = _setup(methods, threads, out, checkpoint)
    x, labels, idx = _held_out(num, seed)
    clf = load_classifier()
    costs: dict[str, Any] = {}
    if any(s.jvp_cost == "measured" for _, s in specs):
        costs["jvp"] = measure_jvp_cost(model, num)
        if jvp_cost is not None:
            costs["jvp"].update(measured_jvp_cost=costs["jvp"]["jvp_cost"], jvp_cost=float(jvp_cost))
        _log(f"[encode] one JVP pass = {costs['jvp']['jvp_cost']:.2f} forward passes (batch {num})", quiet)
    headed = None
    if any(s.heads for _, s in specs):
        headed, costs["head"] = _headed(model, heads_dir, num, head_overhead)
        _log(f"[encode] standard head overhead {100 * costs['head']['overhead']:.2f} % ({costs['head']['source']})", quiet)
    c = costs.get("jvp", {}).get("jvp_cost", 0.0)
    ov = costs.get("head", {}).get("overhead", 0.0)

    # the floor of the F.4 protocol: an exact round trip returns the diffused input x_t, which the decoder
    # denoises; x_t is the one round_trip draws (same seed), read off an encoding's trajectory
    gen = torch.Generator().manual_seed(int(seed))
    x_t = encode(diffusion_model(model), x, 1, method="ddim", t_cutoff=t_cutoff, diffuse=True, generator=gen,
                 return_trajectory=True).trajectory[0]
    floor = _errors(denoise_with(model, x_t, t_cutoff), x, clf)

    nfe_grid = min(nfes, key=lambda n: abs(n - 10))
    rows: list[dict[str, Any]] = []
    grids: dict[str, list[tuple[str, torch.Tensor]]] = {p: [("input", x)] for p in PROTOCOLS}
    for key, spec in specs:
        sm = headed if spec.heads else model
        jc = None if spec.jvp_cost is None else c
        head_ov = ov if spec.heads else 0.0
        for protocol in PROTOCOLS:
            for nfe in nfes:
                row: dict[str, Any] = {"protocol": protocol, "method": spec.label, "key": key, "nfe_budget": nfe}
                try:
                    s_enc = _steps(spec, nfe, False, False, jc, head_ov)
                    s_dec = _steps(spec, nfe, False, protocol == "f4", jc, head_ov)
                except Exception as exc:  # noqa: BLE001 - a budget too small for one step (GENIE-AD at NFE 5)
                    row["status"] = f"n/a: {exc}"
                    rows.append(row)
                    continue
                rt = round_trip(sm, x, spec.method, s_enc, decode_steps=s_dec, protocol=protocol, t_cutoff=t_cutoff,
                                seed=seed, **dict(spec.options))
                es, ds = rt.encode_stats, rt.decode_stats
                row.update(status="ok", steps_encode=s_enc, steps_decode=s_dec, nfe_encode=int(es.nfe),
                           nfe_decode=int(ds.nfe), jvp_encode=int(es.jvp_passes), jvp_decode=int(ds.jvp_passes),
                           cost_encode=round(es.nfe * (1 + head_ov) + (jc or 0.0) * es.jvp_passes, 2),
                           cost_decode=round(ds.nfe * (1 + head_ov) + (jc or 0.0) * ds.jvp_passes, 2),
                           **_errors(rt.x, x, clf), seconds_encode=round(float(es.wall_time), 3),
                           seconds_decode=round(float(ds.wall_time), 3))
                rows.append(row)
                if nfe == nfe_grid:
                    grids[protocol].append((spec.label, rt.x))
                _log(f"[encode] {protocol:5s} {spec.label:16s} NFE {nfe:2d} ({s_enc}/{s_dec} steps): RMSE "
                     f"{row['rmse']:.4g}, features {row['feat_l2']:.4g} ({row['seconds_encode'] + row['seconds_decode']:.1f} s)",
                     quiet)
    write_csv(out / "errors.csv", rows)
    target = encode_target(rows, 10)
    equal = []
    for n in equal_steps:
        for key, spec in specs:
            if spec.method not in ("ddim", "genie"):
                continue
            rt = round_trip(headed if spec.heads else model, x, spec.method, n, t_cutoff=t_cutoff, **dict(spec.options))
            equal.append({"steps": n, "method": spec.label, **_errors(rt.x, x, clf),
                          "seconds": round(float(rt.encode_stats.wall_time + rt.decode_stats.wall_time), 3)})
            _log(f"[encode] equal steps {n}: {spec.label} RMSE {equal[-1]['rmse']:.4g}", quiet)
    eqd = {(r["method"], r["steps"]): r["rmse"] for r in equal}
    target["equal_steps_ratio_to_ddim"] = {f"{lab} at {n} steps": eqd[(lab, n)] / eqd[("DDIM", n)]
                                           for (lab, n) in eqd if lab != "DDIM" and ("DDIM", n) in eqd}
    k = min(16, num)
    for protocol in PROTOCOLS:
        suffix = "" if protocol == "state" else "_f4"
        save_grid(torch.cat([g[:k] for _, g in grids[protocol]]), out / f"reconstructions_nfe{nfe_grid}{suffix}.png", nrow=k)
    _figure(out / "encode_error.png", rows, specs, nfes, floor)
    res = {
        "checkpoint": str(checkpoint if checkpoint is not None else DEFAULT_DIGITS_CHECKPOINT), "num": num, "seed": seed, "t_cutoff": t_cutoff, "nfes": list(nfes),
        "methods": [k_ for k_, _ in specs], "held_out_indices": idx.tolist(), "labels": labels.tolist(),
        "protocols": {"state": "diffuse=False, denoise=False: decode(encode(x)) vs x as states at t_cutoff",
                      "f4": "app. F.4: x diffused to t_cutoff (eq. (1)), decoder denoises at the end (its NFE in the budget)"},
        "costs": costs, "f4_floor": floor, "rows": rows, "target": target, "equal_steps": equal,
        "grid_rows": {p: [lab for lab, _ in grids[p]] for p in PROTOCOLS}, "grid_nfe": nfe_grid,
        "threads": torch.get_num_threads(), "seconds": time.perf_counter() - t_start,
    }
    atomic_write_text(out / "results.json", json.dumps(res, indent=2) + "\n")
    md = _table_md(res, specs)
    atomic_write_text(out / "encode.md", md)
    _log(md, quiet)
    return res


def _table_md(res: dict[str, Any], specs: Sequence[tuple[str, MethodSpec]]) -> str:
    nfes = res["nfes"]
    by = {(r["protocol"], r["method"], r["nfe_budget"]): r for r in res["rows"]}
    lines = [f"Encode then decode {res['num']} held-out digits, same NFE budget each way (encode / decode steps "
             "in parentheses). Cells: per-image pixel RMSE / classifier-feature L2 distance (means over images)."]
    for protocol, title in (("state", "State protocol (x as the state at t_cutoff; no diffusion, no denoising)"),
                            ("f4", "App. F.4 protocol (x diffused to t_cutoff, decoder denoises)")):
        lines += ["", title, "", "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---:|" * len(nfes)]
        for _, s in specs:
            cells = []
            for n in nfes:
                r = by.get((protocol, s.label, n))
                cells.append("n/a" if r is None or r.get("status") != "ok" else
                             f"{r['rmse']:.4f} / {r['feat_l2']:.3f} ({r['steps_encode']}/{r['steps_decode']})")
            lines.append(f"| {s.label} | " + " | ".join(cells) + " |")
    eq = res.get("equal_steps") or []
    if eq:
        ns = sorted({r["steps"] for r in eq})
        lines += ["", "Equal steps each way (state protocol; the derivative's cost not counted)", "",
                  "| method | " + " | ".join(f"{n} steps" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for lab in dict.fromkeys(r["method"] for r in eq):
            cell = {r["steps"]: f"{r['rmse']:.4f} / {r['feat_l2']:.3f}" for r in eq if r["method"] == lab}
            lines.append(f"| {lab} | " + " | ".join(cell.get(n, "n/a") for n in ns) + " |")
    if res.get("f4_floor"):
        f = res["f4_floor"]
        lines += ["", f"F.4 floor (the diffused input denoised, what an exact round trip gives): RMSE {f['rmse']:.4f}, "
                  f"features {f['feat_l2']:.3f}."]
    cs = res["costs"]
    if "jvp" in cs:
        lines.append(f"GENIE-AD: one JVP pass counted as {cs['jvp']['jvp_cost']:.2f} forward passes (measured, batch {res['num']}).")
    if "head" in cs:
        lines.append(f"GENIE (head): standard head, overhead {100 * cs['head']['overhead']:.2f} % ({cs['head']['source']}).")
    t = res["target"]
    if t["ratio"] is not None:
        lines.append(f"Target (GENIE (head) at most half of DDIM at NFE {t['nfe']}, state protocol): ratio "
                     f"{t['ratio']:.3f} ({t['genie_head_rmse']:.4f} / {t['ddim_rmse']:.4f}): "
                     f"{'met' if t['met'] else 'not met'}.")
    lines.append(f"Total {res['seconds']:.0f} s, {res['threads']} thread(s).")
    return "\n".join(lines) + "\n"


def _figure(path: Path, rows: Sequence[dict[str, Any]], specs: Sequence[tuple[str, MethodSpec]], nfes: Sequence[int],
            floor: dict[str, float] | None) -> None:
    """Error against NFE: pixel RMSE and feature L2 (columns) for each protocol (rows), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for i, protocol in enumerate(PROTOCOLS):
        for j, (key, ylabel) in enumerate((("rmse", "pixel RMSE"), ("feat_l2", "classifier-feature L2"))):
            ax = axes[i][j]
            for _, s in specs:
                pts = [(r["nfe_budget"], r[key]) for r in rows
                       if r["protocol"] == protocol and r["method"] == s.label and r.get("status") == "ok"]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=s.label)
            if protocol == "f4" and floor is not None:
                ax.axhline(floor[key], color="k", ls=":", lw=1, label="floor (denoised input)")
            ax.set_yscale("log")
            ax.set_xticks(list(nfes))
            ax.set_xlabel("NFE each way")
            ax.set_ylabel(ylabel)
            ax.set_title("x as the state at t_cutoff" if protocol == "state" else "app. F.4 (diffuse, denoise)", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.suptitle("decode(encode(x)) against x, held-out digits", fontsize=10)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def interpolate_codes(model: Any, xa: torch.Tensor, xb: torch.Tensor, method: str, steps: int, points: int, *,
                      t_cutoff: float = 1e-3, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the pairs ``(xa[i], xb[i])`` (state protocol), mix their latents by eq. (82) at ``points``
    weights ``alpha = 0 .. 1`` and decode every mixture with the same method and steps.  Returns
    ``(decoded [P, points, C, H, W], latents [2, P, C, H, W])``."""
    m = canonical(method)
    grid = DEFAULT_GRIDS.get(m, "quadratic")
    dm = diffusion_model(model)
    p = xa.shape[0]
    z = encode(dm, torch.cat([xa, xb]), steps, method=m, grid=grid, t_cutoff=t_cutoff, **options).x
    za, zb = z[:p], z[p:]
    alphas = torch.linspace(0, 1, points, dtype=torch.float64)
    mix = torch.stack([slerp(za, zb, float(a)) for a in alphas], dim=1)  # [P, points, ...], eq. (82)
    dec = decode(dm, mix.flatten(0, 1), steps, method=m, grid=grid, t_cutoff=t_cutoff, denoise=False, **options).x
    return dec.reshape(p, points, *xa.shape[1:]), torch.stack([za, zb])


def run_interpolate(out: Path, *, nfe: int = 10, pairs: int = 4, points: int = 9, seed: int = 0,
                    methods: Sequence[str] = ("ddim", "genie-head"), t_cutoff: float = 1e-3,
                    heads_dir: str | Path | None = None, threads: int | None = None, quiet: bool = False,
                    checkpoint: str | Path | None = None, head_overhead: float | None = None) -> dict[str, Any]:
    """App. F.5: ``pairs`` pairs of held-out digits (seeded), encoded and decoded by each method at NFE ``nfe``
    each way, ``points`` mixtures by eq. (82); ``interpolate_<method>.png`` (one row per pair: input a,
    the decoded mixtures from alpha = 0 to 1, input b) and ``interpolate.json`` in ``out``."""
    specs, t_start, out, model = _setup(methods, threads, out, checkpoint)
    x, labels, idx = _held_out(2 * pairs, seed)
    xa, xb = x[:pairs], x[pairs:]
    costs: dict[str, Any] = {}
    if any(s.jvp_cost == "measured" for _, s in specs):
        costs["jvp"] = measure_jvp_cost(model, pairs * points)
    headed = None
    if any(s.heads for _, s in specs):
        headed, costs["head"] = _headed(model, heads_dir, pairs * points, head_overhead)
    runs = []
    for key, spec in specs:
        jc = costs["jvp"]["jvp_cost"] if spec.jvp_cost is not None else None
        ov = costs["head"]["overhead"] if spec.heads else 0.0
        steps = _steps(spec, nfe, False, False, jc, ov)
        t0 = time.perf_counter()
        dec, _ = interpolate_codes(headed if spec.heads else model, xa, xb, spec.method, steps, points,
                                   t_cutoff=t_cutoff, **dict(spec.options))
        secs = time.perf_counter() - t0
        rows = torch.cat([xa[:, None], dec, xb[:, None]], dim=1)  # [P, points + 2, C, H, W]
        png = save_grid(rows.flatten(0, 1), out / f"interpolate_{key}.png", nrow=points + 2)
        end = (per_image_rmse(dec[:, 0], xa).mean().item(), per_image_rmse(dec[:, -1], xb).mean().item())
        runs.append({"method": spec.label, "key": key, "steps": steps, "seconds": round(secs, 3), "png": png.name,
                     "endpoint_rmse": end})
        _log(f"[interpolate] {spec.label}: {steps} steps each way, {secs:.1f} s, endpoint round-trip RMSE "
             f"{end[0]:.4f} / {end[1]:.4f} -> {png}", quiet)
    res = {"nfe": nfe, "pairs": pairs, "points": points, "seed": seed, "t_cutoff": t_cutoff,
           "alphas": torch.linspace(0, 1, points, dtype=torch.float64).tolist(),
           "interpolation": "eq. (82): sqrt(1 - alpha) z_a + sqrt(alpha) z_b (state protocol: no diffusion, no denoising)",
           "pairs_held_out_indices": [[int(a), int(b)] for a, b in zip(idx[:pairs], idx[pairs:])],
           "pairs_labels": [[int(a), int(b)] for a, b in zip(labels[:pairs], labels[pairs:])],
           "costs": costs, "runs": runs, "threads": torch.get_num_threads(), "seconds": time.perf_counter() - t_start}
    atomic_write_text(out / "interpolate.json", json.dumps(res, indent=2) + "\n")
    return res


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
#: the sub-commands of ``python -m images`` this module adds
COMMANDS = ("encode", "interpolate")


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def add_parsers(sub: Any) -> None:
    """Sub-commands ``encode`` and ``interpolate`` of ``python -m images``."""
    p = sub.add_parser("encode", help="encode held-out digits and decode them back (Fig. 8 form, app. F.4)")
    p.add_argument("--out", default=str(DEFAULT_OUT / "encode"))
    p.add_argument("--nfe", default="5,10,15,20,25", help="comma-separated NFE budgets (each way)")
    p.add_argument("--methods", default="ddim,genie-head,dpm-solver++2m,genie", help=f"of {', '.join(ENCODE_METHODS)}")
    p.add_argument("--num", type=int, default=64, help="held-out digits")
    p.add_argument("--t-cutoff", type=float, default=1e-3)
    p.add_argument("--heads-dir", default=None, help="distilled heads (default: the committed ones)")
    p.add_argument("--seed", type=int, default=0, help="choice of digits and the F.4 diffusion noise")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("interpolate", help="spherical interpolation of encodings, eq. (82) (app. F.5)")
    p.add_argument("--out", default=str(DEFAULT_OUT / "interpolate"))
    p.add_argument("--nfe", type=int, default=10, help="NFE budget each way")
    p.add_argument("--methods", default="ddim,genie-head", help=f"of {', '.join(ENCODE_METHODS)}")
    p.add_argument("--num", type=int, default=4, help="pairs of held-out digits")
    p.add_argument("--points", type=int, default=9, help="mixtures per pair, alpha = 0 .. 1")
    p.add_argument("--t-cutoff", type=float, default=1e-3)
    p.add_argument("--heads-dir", default=None)
    p.add_argument("--seed", type=int, default=0, help="choice of the pairs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")


def run(a: argparse.Namespace) -> int:
    """Run ``encode`` or ``interpolate`` (``python -m images``; its named errors exit with status 2)."""
    if a.command == "encode":
        run_encode(Path(a.out), nfes=_ints(a.nfe), num=a.num, methods=a.methods.split(","), t_cutoff=a.t_cutoff,
                   seed=a.seed, heads_dir=a.heads_dir, threads=a.threads, quiet=a.quiet)
    else:
        run_interpolate(Path(a.out), nfe=a.nfe, pairs=a.num, points=a.points, seed=a.seed,
                        methods=a.methods.split(","), t_cutoff=a.t_cutoff, heads_dir=a.heads_dir,
                        threads=a.threads, quiet=a.quiet)
    return 0
