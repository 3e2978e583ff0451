"""Sub-commands of ``python -m images``: sample, evaluate, all, bench, classifier, conditioning."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "run"]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def add_parsers(sub: Any) -> None:
    from .main_job import DEFAULT_OUT

    p = sub.add_parser("sample", help="sample images with any method of taylorsolve.diffusion.sample at an NFE budget")
    p.add_argument("--checkpoint", default=None, help="weights file or run folder (default: the committed digits model)")
    p.add_argument("--method", default="genie", help="ddim, genie (autodiff derivative), s-pndm, f-pndm, dpm-solver++2m, deis, ...")
    p.add_argument("--nfe", type=int, required=True, help="NFE budget (steps from taylorsolve.diffusion.steps_for_nfe)")
    p.add_argument("--afs", action="store_true", help="analytical first step (saves one NFE)")
    p.add_argument("--denoise", action="store_true", help="final denoising step (costs one NFE)")
    p.add_argument("--jvp-cost", type=float, default=0.0,
                   help="count GENIE's JVP pass as this many NFE when fitting the budget (default 0: not counted)")
    p.add_argument("--grid", default=None, help="time grid (default per method: quadratic, linear for PNDM, logsnr for DPM-Solver++)")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--class-label", type=int, default=None, help="class for a class-conditional model")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--format", default="safetensors", choices=["safetensors", "npz"])
    p.add_argument("--out", default=str(DEFAULT_OUT / "samples"), help="output folder")

    p = sub.add_parser("evaluate", help="reference-trajectory error, classifier FD, optional Inception FID, grids")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--methods", default="ddim,genie,dpm-solver++2m", help="comma-separated methods")
    p.add_argument("--nfe", default="10,25", help="comma-separated NFE budgets")
    p.add_argument("--afs", action="store_true")
    p.add_argument("--denoise", action="store_true")
    p.add_argument("--jvp-cost", type=float, default=0.0,
                   help="count GENIE's JVP pass as this many NFE when fitting the budget (default 0: not counted)")
    p.add_argument("--num", type=int, default=64, help="images for the reference-trajectory error")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--fd-num", type=int, default=360, help="samples per seed for the classifier FD (0: skip)")
    p.add_argument("--fd-seeds", default="0,1,2")
    p.add_argument("--samples", default=None, help="a samples file (safetensors/npz of `sample`) to score by FD/FID")
    p.add_argument("--inception-weights", default=None, help="Inception weights on disk for FID (else skipped)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT / "evaluate"))

    p = sub.add_parser("all", help="the main job: every solver on the committed digits model (results/images/)")
    p.add_argument("--checkpoint", default=None, help="weights (default: the committed tiny digits checkpoint)")
    p.add_argument("--retrain", action="store_true", help="first retrain the committed checkpoint from its record")
    p.add_argument("--retrain-dir", default=None, help="run folder of --retrain (default runs/digits_tiny_retrain)")
    p.add_argument("--num", type=int, default=64, help="images for the reference-trajectory error")
    p.add_argument("--nfe", default="5,10,15,20,25")
    p.add_argument("--fd-num", type=int, default=360)
    p.add_argument("--fd-seeds", default="0,1,2")
    p.add_argument("--seed", type=int, default=1000, help="seed of the evaluation noise")
    p.add_argument("--jvp-cost", type=float, default=None,
                   help="cost of GENIE's JVP pass in NFE (default: measured at the start of the run)")
    p.add_argument("--heads-dir", default=None,
                   help="distilled heads (default: the committed heads beside the committed model)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quiet", action="store_true")

    p.add_argument("--full", action="store_true",
                   help="also run guidance, encode, interpolate and upsample (into subfolders of --out)")

    for mod in _EXPERIMENTS():
        mod.add_parsers(sub)

    p = sub.add_parser("bench", help="forward / JVP time and sampler overhead of a config (TF32 off and on)")
    p.add_argument("--config", default=None, help="tiny, small, cifar (default: cifar on CUDA, tiny on CPU)")
    p.add_argument("--batch", default="auto", help="batch size or auto (fills the GPU; 64 on CPU)")
    p.add_argument("--methods", default=",".join(("ddim", "genie", "s-pndm", "dpm-solver++2m", "deis", "unipc")))
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--sampler-repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--list-configs", action="store_true", help="print the configs' parameter counts and exit")
    p.add_argument("--out", default=str(DEFAULT_OUT))

    p = sub.add_parser("distill", help="distil a prediction head (d eps/d gamma, GENIE Alg. 1) from a frozen U-Net",
                       description="Distil (or --resume) a prediction head on a frozen teacher; head.safetensors in --out.")
    p.add_argument("--checkpoint", default=None, help="the teacher (default: the committed digits model)")
    p.add_argument("--out", required=True, help="run folder (head.safetensors, run.json, log.jsonl, eval.json)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--resume", action="store_true", help="continue the head checkpoint in --out")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--order", type=int, default=1, choices=[1, 2], help="1: d eps/d gamma; 2: d^2 eps/d gamma^2 (TTM-3)")
    p.add_argument("--no-mixed", action="store_true", help="ablation: no mixed parameterisation (eq. (14))")
    p.add_argument("--no-weighting", action="store_true", help="ablation: g_d = 1 instead of gamma^2 (eq. (15))")
    p.add_argument("--feed", default="eps_theta", choices=["eps_theta", "true_noise"], help="the head's eps input")
    p.add_argument("--objective", default="autodiff", choices=["autodiff", "ad_free"], help="targets: JVP or app. D")
    p.add_argument("--time-sampling", default="uniform+log", choices=["uniform", "uniform+log"])
    p.add_argument("--t-cutoff", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=None, help="head width (default: the feature map's channels)")
    p.add_argument("--num-blocks", type=int, default=1, help="residual blocks (2: 'bigger')")
    p.add_argument("--no-normalize-features", action="store_true")
    p.add_argument("--pool", type=int, default=0,
                   help="precompute targets for a fixed pool of N draws and train on it (0: fresh draws, Alg. 1)")
    p.add_argument("--label-dropout", type=float, default=0.2,
                   help="class-conditional teacher: probability of 'no label' (one head for both branches, eq. (81))")
    p.add_argument("--guidance", default="",
                   help="'lo:hi': distil along the guided ODE of a class-conditional teacher, w ~ U[lo, hi]")
    p.add_argument("--aug-max", type=float, default=0.1,
                   help="upsampler teacher: conditioning noise-augmentation levels s ~ U[0, aug_max]")
    p.add_argument("--dataset", default=None, help="default: the teacher's")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--eval-samples", type=int, default=384, help="held-out draws for the final evaluation (0: skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("export-head", help="the EMA head of a distillation run as a small head file to ship")
    p.add_argument("--head", required=True, help="a distillation run folder or its head.safetensors")
    p.add_argument("--out", required=True, help="destination .safetensors (the run's eval.json joins its record)")

    p = sub.add_parser("heads", help="distil the standard head, Table 2's ablations and the second-order head on one pool")
    p.add_argument("--checkpoint", default=None, help="the teacher (default: the committed digits model)")
    p.add_argument("--out", default="runs/digits_heads", help="run folders, one per variant")
    p.add_argument("--variants", default="standard,no_mixed,no_weighting,bigger,true_noise,ad_free,second_order")
    p.add_argument("--pool", type=int, default=8192, help="target pool size")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--commit-to", default=None, help="also write the EMA heads here (e.g. images/checkpoints/digits_tiny/heads)")
    p.add_argument("--threads", type=int, default=None)

    p = sub.add_parser("classifier", help="the digits classifier of the classifier FD (show, or --retrain it)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--out", default=None, help="where --retrain writes (default: the committed file)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("conditioning", help="compare noise conditionings: DDIM vs GENIE-AD error, eps smoothness")
    p.add_argument("--checkpoint", action="append", required=True, help="a weights file or run folder (repeat)")
    p.add_argument("--steps", default="10,25")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--times", default="0.02,0.05,0.1,0.2,0.4,0.6,0.8,1.0")
    p.add_argument("--dts", default="1e-2,1e-3,1e-4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(DEFAULT_OUT / "conditioning"))


def run(a: argparse.Namespace) -> int:
    import torch

    if getattr(a, "threads", None):
        torch.set_num_threads(int(a.threads))
    extra = {name: mod.run for mod in _EXPERIMENTS() for name in _names(mod)}
    return {"sample": _sample, "evaluate": _evaluate, "all": _all, "bench": _bench, "classifier": _classifier,
            "conditioning": _conditioning, "distill": _distill,
            "heads": _heads, "export-head": _export_head, **extra}[a.command](a)


def _EXPERIMENTS() -> list[Any]:
    """The experiments of sec. 5.2 / 5.4 with their own sub-commands (``add_parsers``, ``run``)."""
    from . import encode_exp, guidance_exp, upsample_exp

    return [guidance_exp, encode_exp, upsample_exp]


def _names(mod: Any) -> tuple[str, ...]:
    return tuple(mod.COMMANDS)


# ------------------------------------------------------------------------------------------------
def _load(checkpoint: str | None, device: str, weights: str = "ema") -> Any:
    from . import DEFAULT_DIGITS_CHECKPOINT
    from .checkpoint import load_model

    return load_model(checkpoint if checkpoint is not None else DEFAULT_DIGITS_CHECKPOINT, weights=weights,
                      device=_device(device))


def _sample(a: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .checkpoint import atomic_save, FORMAT
    from .evaluate import save_grid
    from .sampling import canonical, generate, steps_for_budget

    model = _load(a.checkpoint, a.device, a.weights)
    m = canonical(a.method)
    steps = steps_for_budget(m, a.nfe, afs=a.afs, denoise=a.denoise, jvp_cost=a.jvp_cost)
    labels = None
    if a.class_label is not None:
        labels = torch.full((a.num,), int(a.class_label), dtype=torch.long)
    t0 = time.perf_counter()
    x, info = generate(model, a.num, seed=a.seed, method=m, steps=steps, afs=a.afs, denoise=a.denoise, grid=a.grid,
                       batch_size=a.batch_size, class_labels=labels, progress=True)
    secs = time.perf_counter() - t0
    out = Path(a.out)
    stem = f"{m}_nfe{a.nfe}{'_afs' if a.afs else ''}{'_denoise' if a.denoise else ''}_seed{a.seed}"
    save_grid(x[:min(64, a.num)], out / f"{stem}.png")
    meta = {"method": m, "nfe_budget": a.nfe, "nfe": info["nfe"], "jvp_passes": info["jvp_passes"], "steps": steps,
            "afs": a.afs, "denoise": a.denoise, "seed": a.seed, "num": a.num,
            "checkpoint": str(a.checkpoint or "committed digits_tiny")}
    if a.format == "safetensors":
        atomic_save({"samples": x.float()}, out / f"{stem}.safetensors",
                    {"format": FORMAT, "kind": "samples", "info": json.dumps(meta)})
        path = out / f"{stem}.safetensors"
    else:
        path = out / f"{stem}.npz"
        tmp = out / f".tmp-{stem}.npz"
        np.savez(tmp, samples=x.float().numpy(), info=json.dumps(meta))
        tmp.replace(path)
    print(f"{a.num} samples, {m}, {steps} steps ({info['nfe']} NFE per batch"
          f"{', ' + str(info['jvp_passes']) + ' JVP passes' if info['jvp_passes'] else ''}) in {secs:.1f} s -> {path}, "
          f"{out / (stem + '.png')}")
    return 0


def _read_samples(path: str) -> Any:
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        from .errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"samples file {path!r} does not exist")
    if p.suffix == ".npz":
        return torch.from_numpy(np.load(p)["samples"])
    from safetensors.torch import load_file

    return load_file(str(p))["samples"]


def _evaluate(a: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_text
    from .evaluate import denoise_with, inception_fid, save_grid, trajectory_error, write_csv
    from .sampling import canonical, generate, initial_noise, reference_solve, run_sampler, steps_for_budget

    model = _load(a.checkpoint, a.device)
    cfg = model.config
    out = Path(a.out)
    res: dict[str, Any] = {"checkpoint": str(a.checkpoint or "committed digits_tiny"), "rows": [], "fd": [], "messages": []}
    x1 = initial_noise(a.num, (cfg.in_channels, cfg.resolution, cfg.resolution), a.seed).to(next(model.parameters()).device)
    refs = {n: reference_solve(model, x1, n) for n in ("rk45", "dpm3")}
    ref = refs["rk45"].x
    ref_cmp = denoise_with(model, ref) if a.denoise else ref
    alt = denoise_with(model, refs["dpm3"].x) if a.denoise else refs["dpm3"].x
    res["reference_disagreement_rmse"] = trajectory_error(alt, ref_cmp)["rmse"]
    print(f"references RK45 ({refs['rk45'].nfe} NFE) vs DPM-Solver-3 ({refs['dpm3'].nfe} NFE): RMSE {res['reference_disagreement_rmse']:.2e}")
    for m in a.methods.split(","):
        m = canonical(m)
        for nfe in _ints(a.nfe):
            try:
                steps = steps_for_budget(m, nfe, afs=a.afs, denoise=a.denoise, jvp_cost=a.jvp_cost)
            except Exception as exc:  # noqa: BLE001
                print(f"{m} at NFE {nfe}: n/a ({exc})")
                continue
            r = run_sampler(model, x1, m, steps, afs=a.afs, denoise=a.denoise)
            e = trajectory_error(r.x, ref_cmp)
            res["rows"].append({"method": m, "nfe_budget": nfe, "steps": steps, "nfe": r.nfe, "jvp_passes": r.jvp_passes, **e})
            print(f"{m:16s} NFE {nfe:3d} ({steps} steps, {r.jvp_passes} JVP): RMSE {e['rmse']:.4g} +- {e['rmse_se']:.2g}")
            save_grid(r.x[:64], out / f"grid_{m}_nfe{nfe}.png")
    write_csv(out / "errors.csv", res["rows"])
    samples = _read_samples(a.samples) if a.samples else None
    if a.fd_num > 0 and cfg.in_channels == 1 and cfg.resolution == 16:
        from .classifier import classifier_fd, load_classifier
        from .data import load_digits

        clf = load_classifier()
        train_x, _ = load_digits().train_images()
        if samples is not None:
            r = classifier_fd(clf, [samples], train_x)
            res["fd"].append({"samples": a.samples, "fd": r["mean"]})
            print(f"classifier FD of {a.samples}: {r['mean']:.3f}")
        for m in a.methods.split(","):
            m = canonical(m)
            nfe = max(_ints(a.nfe))
            steps = steps_for_budget(m, nfe, afs=a.afs, denoise=a.denoise, jvp_cost=a.jvp_cost)
            sets = [generate(model, a.fd_num, seed=s, method=m, steps=steps, afs=a.afs, denoise=a.denoise)[0]
                    for s in _ints(a.fd_seeds)]
            r = classifier_fd(clf, sets, train_x)
            res["fd"].append({"method": m, "nfe": nfe, "fd_mean": r["mean"], "fd_std": r["std"], "values": r["values"]})
            print(f"classifier FD {m} NFE {nfe}: {r['mean']:.3f} +- {r['std']:.3f} over seeds {a.fd_seeds}")
    elif a.fd_num > 0:
        res["messages"].append("classifier FD skipped: the digits classifier applies to 1x16x16 models only")
        print(res["messages"][-1])
    if samples is not None or a.inception_weights is not None:
        from .data import load_dataset

        dataset = model.checkpoint_metadata.get("train_args", {}).get("dataset", "digits")
        try:
            reference, _ = load_dataset(dataset, model.checkpoint_metadata.get("train_args", {}).get("data_dir")).train_images()
        except Exception as exc:  # noqa: BLE001
            reference = None
            res["messages"].append(f"Inception FID skipped: cannot load the training data ({exc})")
        if reference is not None:
            gen = samples if samples is not None else generate(model, 1000, seed=0, method="genie", steps=25)[0]
            val, msg = inception_fid(gen, reference, a.inception_weights)
            res["inception_fid"] = val
            res["messages"].append(msg)
        print(res["messages"][-1])
    else:
        msg = "Inception FID skipped: no --inception-weights PATH given (nothing is downloaded)"
        res["messages"].append(msg)
        print(msg)
    atomic_write_text(out / "evaluate.json", json.dumps(res, indent=2, default=float) + "\n")
    return 0


def _all(a: argparse.Namespace) -> int:
    from .main_job import run_all

    run_all(Path(a.out), checkpoint=a.checkpoint, retrain=a.retrain, retrain_dir=a.retrain_dir, num=a.num, seed=a.seed,
            nfes=_ints(a.nfe), fd_num=a.fd_num, fd_seeds=_ints(a.fd_seeds), quiet=a.quiet, device=_device(a.device),
            jvp_cost=a.jvp_cost, heads_dir=a.heads_dir)
    if a.full:
        run_full_experiments(Path(a.out), quiet=a.quiet)
    return 0


def run_full_experiments(out: Path, *, quiet: bool = False) -> dict[str, float]:
    """``all --full``: every experiment of sec. 5.2 / 5.4 with its defaults, into ``out/<command>``; the
    seconds each took are written to ``out/full_times.json``."""
    from .checkpoint import atomic_write_text

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    times: dict[str, float] = {}
    for mod in _EXPERIMENTS():
        mod.add_parsers(sub)
        for name in _names(mod):
            args = parser.parse_args([name, "--out", str(out / name)] + (["--quiet"] if quiet else []))
            t0 = time.perf_counter()
            mod.run(args)
            times[name] = time.perf_counter() - t0
            atomic_write_text(out / "full_times.json", json.dumps(times, indent=2) + "\n")
    return times


def _bench(a: argparse.Namespace) -> int:
    if a.list_configs:
        from .unet import CONFIGS, UNet, get_config

        for name in CONFIGS:
            for ch, res in ((1, 16), (3, 32)):
                cfg = get_config(name, in_channels=ch, resolution=res)
                m = UNet(cfg)
                print(f"{name:6s} {ch}x{res}x{res}: {m.num_parameters():>12,} parameters  ch={cfg.ch} ch_mult={cfg.ch_mult} "
                      f"blocks={cfg.num_res_blocks} attention={cfg.attn_resolutions} dropout={cfg.dropout}")
        return 0
    from .bench import run_bench

    run_bench(a.config, batch=a.batch, device=a.device, methods=a.methods.split(","), nfe=a.nfe, warmup=a.warmup,
              repeats=a.repeats, sampler_repeats=a.sampler_repeats, out=Path(a.out))
    return 0


def _distill(a: argparse.Namespace) -> int:
    from . import DEFAULT_DIGITS_CHECKPOINT
    from .cli import _rank
    from .distill import DistillArgs, distill
    from .train import Interrupted

    args = DistillArgs(checkpoint=a.checkpoint or str(DEFAULT_DIGITS_CHECKPOINT), out=a.out, steps=a.steps,
                       resume=a.resume, batch_size=a.batch_size, seed=a.seed, lr=a.lr, warmup=a.warmup, ema=a.ema,
                       order=a.order, mixed=not a.no_mixed, weighting=not a.no_weighting, feed=a.feed,
                       objective=a.objective, time_sampling=a.time_sampling, t_cutoff=a.t_cutoff, channels=a.channels,
                       num_blocks=a.num_blocks, normalize_features=not a.no_normalize_features, pool=a.pool,
                       label_dropout=a.label_dropout, guidance=a.guidance, aug_max=a.aug_max,
                       dataset=a.dataset, data_dir=a.data_dir, checkpoint_every=a.checkpoint_every,
                       eval_samples=a.eval_samples, device=_device(a.device), threads=a.threads,
                       progress=not a.no_progress)
    try:
        res = distill(args)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return 128 + int(exc.signum)
    if _rank() == 0:
        print(f"distilled to step {res['step']} (from {res['start_step']}) in {res['session_seconds']:.1f} s; "
              f"{res['head_parameters']:,} head parameters; head {res['checkpoint']}")
        ev = res.get("eval")
        if ev:
            bands = ", ".join(f"[{b['lo']:g}, {b['hi']:g}]: {b['rel_mse']:.3f}" for b in ev["bands"])
            print(f"held-out relative error (gamma^2-weighted) {ev['rel_mse']:.3f}, unweighted {ev['rel_mse_unweighted']:.3f}; "
                  f"by band of t: {bands}")
    return 0


def _export_head(a: argparse.Namespace) -> int:
    from .distill import HEAD_FILE
    from .heads import export_head

    src = Path(a.head)
    src = src / HEAD_FILE if src.is_dir() else src
    ev = src.parent / "eval.json"
    extra = {"eval": json.loads(ev.read_text())} if ev.is_file() else {}
    dst = export_head(src, a.out, extra_record=extra)
    print(f"wrote {dst} ({dst.stat().st_size / 1e3:.0f} KB)")
    return 0


def _heads(a: argparse.Namespace) -> int:
    from . import DEFAULT_DIGITS_CHECKPOINT
    from .head_experiments import distill_variants

    distill_variants(Path(a.out), checkpoint=a.checkpoint or str(DEFAULT_DIGITS_CHECKPOINT),
                     variants=[v for v in a.variants.split(",") if v], pool_size=a.pool, steps=a.steps, seed=a.seed,
                     threads=a.threads, commit_to=Path(a.commit_to) if a.commit_to else None)
    return 0


def _classifier(a: argparse.Namespace) -> int:
    from . import DEFAULT_CLASSIFIER
    from .classifier import load_classifier, save_classifier, train_classifier

    if a.retrain:
        model, info = train_classifier(epochs=a.epochs, seed=a.seed, progress=True)
        info["command"] = " ".join(["python -m images", *sys.argv[1:]]) if sys.argv else None
        dst = Path(a.out) if a.out else DEFAULT_CLASSIFIER
        save_classifier(model, dst, info)
        print(f"classifier: held-out accuracy {info['held_out_accuracy']:.4f}, {info['parameters']:,} parameters, "
              f"{info['train_seconds']:.1f} s -> {dst}")
        return 0
    clf = load_classifier(a.out)
    print(json.dumps(clf.info, indent=2))  # type: ignore[attr-defined]
    return 0


def _conditioning(a: argparse.Namespace) -> int:
    from .conditioning import compare_conditionings

    compare_conditionings(a.checkpoint, steps=_ints(a.steps), num=a.num, seed=a.seed, times=_floats(a.times),
                          dts=_floats(a.dts), out=Path(a.out))
    return 0
