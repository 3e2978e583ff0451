"""Command line of the image pipeline (``python -m images``); the work is done by the library modules."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


def _add_train(sub: Any) -> None:
    from .train import TRAIN_DEFAULTS

    p = sub.add_parser("train", help="train a U-Net eps-model by denoising score matching (eq. (7))",
                       description="Train (or --resume) a U-Net eps-model; checkpoints in --out.")
    p.add_argument("--dataset", default="digits", help="digits, patches, cifar10, mnist, folder, gaussian")
    p.add_argument("--data-dir", default=None, help="folder of cifar10 / mnist / folder datasets")
    p.add_argument("--config", default="tiny", help=f"model config: {', '.join(TRAIN_DEFAULTS)}")
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps of the run")
    p.add_argument("--batch-size", type=int, default=128, help="global batch (split over torchrun processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (checkpoint.safetensors, run.json, log.jsonl)")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--conditioning", default="log_gamma", help="noise-level input: log_gamma (default) or sinusoidal_t")
    p.add_argument("--dropout", type=float, default=None, help="override the config's dropout")
    p.add_argument("--model-kwargs", default="{}", help='JSON overrides of the U-Net config, e.g. \'{"ch": 8}\'')
    p.add_argument("--class-cond", action="store_true", help="class-conditional model (label embedding)")
    p.add_argument("--label-dropout", type=float, default=0.0, help="probability of dropping the label (CFG)")
    p.add_argument("--upsample-from", type=int, default=0,
                   help="train a cascaded upsampler from this low resolution (conditioned on the up-scaled image)")
    p.add_argument("--aug-max", type=float, default=0.1,
                   help="upsampler: noise-augmentation levels s ~ U[0, aug_max] of the conditioning")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default per config)")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default per config)")
    p.add_argument("--ema", type=float, default=None, help="EMA decay (default per config)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--t-min", type=float, default=1e-5, help="t ~ U[t_min, 1]")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="mixed precision (default off)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions on CUDA (default off)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def _cmd_train(a: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .train import Interrupted, TrainArgs, train

    try:
        kw = json.loads(a.model_kwargs)
    except ValueError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON ({exc})") from exc
    args = TrainArgs(dataset=a.dataset, config=a.config, steps=a.steps, batch_size=a.batch_size, seed=a.seed,
                     out=a.out, checkpoint_every=a.checkpoint_every, resume=a.resume, data_dir=a.data_dir,
                     conditioning=a.conditioning, dropout=a.dropout, model_kwargs=kw, class_cond=a.class_cond,
                     label_dropout=a.label_dropout, upsample_from=a.upsample_from, aug_max=a.aug_max, lr=a.lr, warmup=a.warmup, ema=a.ema, grad_clip=a.grad_clip,
                     t_min=a.t_min, amp=a.amp, tf32=a.tf32, device=a.device, threads=a.threads,
                     progress=not a.no_progress)
    try:
        res = train(args)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return 128 + int(exc.signum)
    if res.get("world_size", 1) == 1 or _rank() == 0:
        print(f"trained to step {res['step']} (from {res['start_step']}) in {res['session_seconds']:.1f} s this session, "
              f"{res['train_seconds']:.1f} s in all; {res['parameters']:,} parameters; checkpoint {res['checkpoint']}")
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write the EMA weights of a training checkpoint to a small weights file")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint.safetensors")
    p.add_argument("--out", required=True, help="destination .safetensors")
    p.add_argument("--include-raw", action="store_true", help="also keep the raw (non-EMA) weights")


def _cmd_export(a: argparse.Namespace) -> int:
    import hashlib

    from .checkpoint import atomic_write_text, export_weights, find_checkpoint

    src = find_checkpoint(a.checkpoint)
    meta = export_weights(src, a.out, include_raw=a.include_raw)
    out = Path(a.out)
    size = out.stat().st_size
    # the training record beside the weights: run.json of the run folder plus what was exported
    run_json = src.parent / "run.json"
    record: dict[str, Any] = json.loads(run_json.read_text()) if run_json.is_file() else {}
    record["train_args"] = meta.get("train_args", record.get("train_args"))
    record["export"] = {"file": out.name, "step": meta["step"], "train_seconds": meta["train_seconds"],
                        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "bytes": size,
                        "weights": "ema" + (" + raw" if a.include_raw else "")}
    atomic_write_text(out.parent / "train.json", json.dumps(record, indent=2) + "\n")
    print(f"wrote {a.out} ({size / 1e6:.2f} MB; step {meta['step']}) and {out.parent / 'train.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_export(sub)
    from . import commands

    commands.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from taylorsolve.errors import TaylorSolveError

    from .errors import ImagesError, NonFiniteLossError

    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if a.command == "train":
            return _cmd_train(a)
        if a.command == "export":
            return _cmd_export(a)
        from . import commands

        return commands.run(a)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ImagesError, TaylorSolveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
