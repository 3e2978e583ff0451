r"""Training of the U-Net eps-model by denoising score matching (``python -m images train``).

Objective (GENIE eq. (7) with ``g(t) = 1``, app. C.1 eq. (61)), on the continuous linear VP schedule
``beta(t) = 0.1 + 19.9 t``:

    min_theta E_{t ~ U[t_min, 1], x_0, eps ~ N(0, I)} mean || eps - eps_theta(alpha_t x_0 + sigma_t eps, t) ||^2

(mean over pixels; ``t_min = 1e-5`` as score_sde's continuous VP training, below the samplers'
``t_cutoff = 1e-3``).  Adam with a linear learning-rate warm-up, gradient-norm clipping, an EMA of
the weights (decay ``min(ema, (1 + k) / (10 + k))`` at step ``k``), optional label dropout for
class-conditional models (classifier-free guidance, Ho and Salimans).

Exactness and robustness:

* every random draw of step ``k`` (batch order, flips, times, noise, label dropout, dropout masks)
  comes from generators seeded by ``(seed, k)``: a run stopped after a checkpoint and resumed with
  ``--resume`` reaches the same weights bit for bit (CPU) as an uninterrupted run;
* checkpoints (:mod:`images.checkpoint`) are written atomically every ``checkpoint_every`` steps and
  at exit, also on SIGTERM / SIGINT (the step finishes, the checkpoint is written, the run exits with
  status 128 + signal);
* a non-finite loss stops training before the optimizer touches the weights
  (:class:`~images.errors.NonFiniteLossError` naming the step); the last good checkpoint is kept;
* ``--batch-size`` is the global batch: under ``torchrun`` (DDP; gloo on CPU, NCCL on CUDA) rank
  ``r`` of ``W`` trains on slice ``r`` of the same global batch, so the run does not depend on ``W``
  beyond floating-point summation order; rank 0 alone writes;
* TF32 (``--tf32``) and mixed precision (``--amp bf16|fp16``) are explicit and off by default.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taylorsolve.diffusion.schedules import LinearVPSchedule

from .checkpoint import CHECKPOINT_NAME, FORMAT, atomic_save, atomic_write_text, load_module_state, read_checkpoint
from .data import ImageDataset, derived_seed, load_dataset, step_generator
from .errors import CheckpointMismatchError, ConfigError, NonFiniteLossError, ResumeError, UnknownNameError
from .unet import UNetConfig, float32_unet, get_config

__all__ = ["TrainArgs", "TRAIN_DEFAULTS", "train", "dsm_loss", "build_model_config", "Interrupted"]

#: per-config defaults of the optimisation hyper-parameters (``TrainArgs`` fields left ``None``)
TRAIN_DEFAULTS: dict[str, dict[str, float]] = {
    "tiny": {"lr": 1e-3, "warmup": 200, "ema": 0.999},
    "small": {"lr": 2e-4, "warmup": 1000, "ema": 0.9995},
    "cifar": {"lr": 2e-4, "warmup": 5000, "ema": 0.9999},
}

#: fields that may change between a run and its resumption
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "resume", "out", "progress", "device", "threads", "data_dir"}

#: TrainArgs fields added after runs were recorded (a record without them had their defaults)
_ADDED_FIELDS = {"upsample_from", "aug_max"}

_SCHEDULE = LinearVPSchedule()


@dataclass
class TrainArgs:
    """Arguments of :func:`train` (the CLI's flags)."""

    dataset: str = "digits"
    config: str = "tiny"
    steps: int = 1000
    batch_size: int = 128
    seed: int = 0
    out: str = "runs/digits_tiny"
    checkpoint_every: int = 500
    resume: bool = False
    data_dir: str | None = None
    conditioning: str = "log_gamma"
    dropout: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    class_cond: bool = False
    label_dropout: float = 0.0
    #: a cascaded upsampler from this resolution (0: an ordinary model), :mod:`images.upsampler`
    upsample_from: int = 0
    #: an upsampler's conditioning is noise-augmented at ``s ~ U[0, aug_max]``
    aug_max: float = 0.1
    lr: float | None = None
    warmup: int | None = None
    ema: float | None = None
    grad_clip: float = 1.0
    t_min: float = 1e-5
    amp: str = "off"
    tf32: bool = False
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def resolved(self) -> "TrainArgs":
        """A copy with the per-config defaults (:data:`TRAIN_DEFAULTS`) filled in and values checked."""
        if self.config not in TRAIN_DEFAULTS:
            raise UnknownNameError(f"unknown model config {self.config!r}; known configs: {', '.join(TRAIN_DEFAULTS)}")
        d = asdict(self)
        for k, v in TRAIN_DEFAULTS[self.config].items():
            if d[k] is None:
                d[k] = v
        a = TrainArgs(**d)
        a.warmup = int(a.warmup)  # type: ignore[arg-type]
        if a.steps < 0 or a.batch_size < 1 or a.checkpoint_every < 1:
            raise ConfigError(f"need steps >= 0, batch_size >= 1, checkpoint_every >= 1; got {a.steps}, {a.batch_size}, {a.checkpoint_every}")
        if a.amp not in ("off", "bf16", "fp16"):
            raise UnknownNameError(f"unknown --amp {a.amp!r}; known: off, bf16, fp16")
        if not (0.0 < a.t_min < 1.0):
            raise ConfigError(f"t_min must lie in (0, 1), got {a.t_min}")
        if not (0.0 <= a.label_dropout < 1.0):
            raise ConfigError(f"label_dropout must lie in [0, 1), got {a.label_dropout}")
        if a.upsample_from < 0 or not (0.0 <= a.aug_max <= 1.0):
            raise ConfigError(f"need upsample_from >= 0 and aug_max in [0, 1]; got {a.upsample_from}, {a.aug_max}")
        return a


class Interrupted(Exception):
    """Raised by :func:`train` after SIGTERM/SIGINT once the checkpoint is written (``signum``, ``step``)."""

    def __init__(self, signum: int, step: int, path: str):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; checkpoint written to {path}; "
                         f"continue with --resume")
        self.signum, self.step, self.path = signum, step, path


def build_model_config(args: TrainArgs, ds: ImageDataset) -> UNetConfig:
    """The :class:`UNetConfig` of a run: the named config, the data shape, the conditioning, overrides."""
    kw = dict(args.model_kwargs)
    if args.dropout is not None:
        kw["dropout"] = args.dropout
    if args.upsample_from:
        if ds.resolution % args.upsample_from or args.upsample_from >= ds.resolution:
            from .errors import ResolutionMismatchError

            raise ResolutionMismatchError(f"--upsample-from {args.upsample_from}: must be a smaller divisor of the "
                                          f"dataset's resolution {ds.resolution}")
        kw["cond_channels"] = ds.channels
        kw["low_resolution"] = int(args.upsample_from)
    return get_config(args.config, in_channels=ds.channels, resolution=ds.resolution,
                      num_classes=ds.num_classes if args.class_cond else 0, conditioning=args.conditioning, **kw)


def dsm_loss(model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             labels: torch.Tensor | None = None, *, prediction: str = "eps", **cond: Any) -> torch.Tensor:
    """Eq. (7)/(61) with ``g = 1``: ``mean (eps - eps_theta(alpha_t x_0 + sigma_t eps, t))^2`` (float32 loss);
    ``prediction="v"``: the target is ``v = alpha_t eps - sigma_t x_0`` instead.  ``cond``: further
    conditioning keyword arguments (an upsampler's ``low_res``, ``aug_level``)."""
    a = _SCHEDULE.alpha(t).to(x0.dtype)[:, None, None, None]
    s = _SCHEDULE.sigma(t).to(x0.dtype)[:, None, None, None]
    xt = a * x0 + s * noise
    pred = model(xt, t, **cond) if labels is None else model(xt, t, labels, **cond)
    target = noise if prediction == "eps" else a * noise - s * x0
    return (pred.float() - target.float()).square().mean()


# ------------------------------------------------------------------------------------------------
# distributed environment
# ------------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_max(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _init_dist(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        here = True
    return _Dist(rank=rank, world=world, local_rank=local, initialized_here=here)


def _device(args: TrainArgs, local_rank: int) -> torch.device:
    if args.device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = args.device.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank if ":" not in args.device else int(args.device.split(":")[1]))
    return torch.device(args.device if args.device != "auto" else "cpu")


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


# ------------------------------------------------------------------------------------------------
# checkpoints of a run
# ------------------------------------------------------------------------------------------------
def _args_json(args: TrainArgs) -> dict[str, Any]:
    return asdict(args)


def with_added_defaults(saved: dict[str, Any], defaults: Any, added: set[str]) -> dict[str, Any]:
    """A recorded argument dict with the fields ``added`` after it was written filled in with their
    defaults from the dataclass instance ``defaults`` (the run had that behaviour)."""
    return {**{k: v for k, v in asdict(defaults).items() if k in added}, **dict(saved)}


def _check_resume_compatible(meta: dict[str, Any], args: TrainArgs, cfg: UNetConfig, path: str) -> None:
    # fields added after a run was started are read as their defaults (the run had that behaviour)
    saved = with_added_defaults(meta.get("train_args", {}), TrainArgs(), _ADDED_FIELDS)
    now = _args_json(args)
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in sorted(set(saved) | set(now))
             if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    saved_cfg = meta.get("model_config", {})
    cfg_now = cfg.to_dict()
    diffs += [f"model_config.{k}: checkpoint {saved_cfg.get(k)!r} vs now {cfg_now.get(k)!r}"
              for k in sorted(set(saved_cfg) | set(cfg_now)) if saved_cfg.get(k) != cfg_now.get(k)]
    if diffs:
        raise CheckpointMismatchError(
            f"cannot resume from {path!r}: the run was started with other settings (resuming must repeat them; "
            f"only {', '.join(sorted(_RESUMABLE_CHANGES - {'resume'}))} may change): " + "; ".join(diffs)
        )


def _save(path: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, scaler: Any, step: int,
          args: TrainArgs, cfg: UNetConfig, train_seconds: float, world: int) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for key, val in st.items():
            tensors[f"optim.{idx}.{key}"] = val if isinstance(val, torch.Tensor) else torch.tensor(val)
    meta = {
        "format": FORMAT,
        "kind": "train",
        "step": str(step),
        "model_config": json.dumps(cfg.to_dict()),
        "train_args": json.dumps(_args_json(args)),
        "optim_param_groups": json.dumps(sd["param_groups"]),
        "train_seconds": repr(float(train_seconds)),
        "world_size": str(world),
        "torch": torch.__version__,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if scaler is not None:
        meta["scaler"] = json.dumps(scaler.state_dict())
    atomic_save(tensors, path, meta)


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["optim_param_groups"]})


def _command_line() -> str | None:
    """The command as typed: ``python -m images train ...`` (torchrun and plain scripts as they are)."""
    if not sys.argv:
        return None
    argv = list(sys.argv)
    if argv[0].replace(os.sep, "/").endswith("images/__main__.py"):
        return " ".join(["python -m images", *argv[1:]])
    return " ".join([os.path.basename(sys.executable), *argv])


def _record_run(out: Path, args: TrainArgs, cfg: UNetConfig, start_step: int, world: int, device: torch.device,
                nparams: int) -> None:
    """``run.json``: the command, seed, commit, host and time of every session of this run."""
    path = out / "run.json"
    try:
        rec = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        rec = {}
    rec.setdefault("train_args", _args_json(args))
    rec["model_config"] = cfg.to_dict()
    rec["parameters"] = nparams
    rec.setdefault("sessions", []).append({
        "command": _command_line(),
        "start_step": start_step,
        "target_steps": args.steps,
        "commit": _git_commit(),
        "host": socket.gethostname(),
        "world_size": world,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    atomic_write_text(path, json.dumps(rec, indent=2) + "\n")


def _append_log(out: Path, row: dict[str, Any]) -> None:
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def _slice(x: torch.Tensor | None, rank: int, per: int) -> torch.Tensor | None:
    return None if x is None else x[rank * per:(rank + 1) * per]


class StopSignals:
    """While installed, SIGTERM / SIGINT set :attr:`signum` instead of killing the process: a training
    loop finishes its step, writes its checkpoint and stops.  :meth:`restore` puts the old handlers
    back.  (Only the main thread can install handlers; elsewhere this does nothing.)"""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}
        try:
            import threading

            if threading.current_thread() is threading.main_thread():
                for s in (signal.SIGTERM, signal.SIGINT):
                    self._old[s] = signal.signal(s, self._handler)
        except (ValueError, OSError):  # pragma: no cover
            pass

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def wrap_ddp(module: nn.Module, de: "_Dist", device: torch.device) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` under torchrun (more than one process), else itself."""
    if de.world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """tqdm over optimizer steps (redrawn twice a second on a terminal, every 30 s in a log file)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", disable=not enabled, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ep = [p for p in ema.parameters()]
    mp = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ep, mp, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def train(args: TrainArgs, *, dataset: ImageDataset | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary dict (``step``, ``checkpoint``, ``train_seconds``, ...).

    ``stop_after`` ends this call after that many steps as if interrupted (checkpoint written), for tests.
    Raises :class:`Interrupted` after SIGTERM/SIGINT (checkpoint written), :class:`NonFiniteLossError`,
    :class:`ResumeError`, :class:`CheckpointMismatchError` and the dataset / name errors.
    """
    args = args.resolved()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    kind = "cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device.startswith("cuda") else "cpu"
    dist_env = _init_dist(kind)
    try:
        return _train(args, dist_env, dataset, stop_after)
    finally:
        if dist_env.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(args: TrainArgs, de: _Dist, dataset: ImageDataset | None, stop_after: int | None) -> dict[str, Any]:
    device = _device(args, de.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # explicit numerics: TF32 only when asked for
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    if args.batch_size % de.world:
        raise ConfigError(f"--batch-size {args.batch_size} (the global batch) must be divisible by the {de.world} processes")
    per = args.batch_size // de.world

    out = Path(args.out)
    ckpt = out / CHECKPOINT_NAME
    if args.resume and not ckpt.is_file():
        raise ResumeError(f"--resume: no checkpoint in {str(out)!r} (expected {str(ckpt)!r}); start without --resume")
    if not args.resume and ckpt.is_file():
        raise ResumeError(
            f"{str(out)!r} already holds a checkpoint ({str(ckpt)!r}); pass --resume to continue it or choose "
            f"another --out (nothing was overwritten)"
        )
    ds = dataset if dataset is not None else load_dataset(args.dataset, args.data_dir)
    cfg = build_model_config(args, ds)

    torch.manual_seed(args.seed)
    model = float32_unet(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.Adam(model.parameters(), lr=float(args.lr), betas=(0.9, 0.999), eps=1e-8)
    use_scaler = args.amp == "fp16"
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    step, train_seconds = 0, 0.0
    if args.resume:
        tensors, meta = read_checkpoint(ckpt)
        _check_resume_compatible(meta, args, cfg, str(ckpt))
        load_module_state(model, tensors, "model.", str(ckpt))
        load_module_state(ema, tensors, "ema.", str(ckpt))
        _load_optimizer(opt, tensors, meta)
        if scaler is not None and "scaler" in meta:
            scaler.load_state_dict(json.loads(meta["scaler"]))
        step, train_seconds = int(meta["step"]), float(meta["train_seconds"])
        del tensors
    start_step = step
    if de.main:
        out.mkdir(parents=True, exist_ok=True)
        _record_run(out, args, cfg, start_step, de.world, device, model.num_parameters())

    net = wrap_ddp(model, de, device)
    stop = StopSignals()   # signals: finish the step, write the checkpoint, stop

    def save(at_step: int, seconds: float) -> None:
        if de.main:
            _save(ckpt, model, ema, opt, scaler, at_step, args, cfg, seconds, de.world)
        de.barrier()

    bar = progress_bar(args.steps, step, f"train {args.dataset}/{args.config}", args.progress and de.main)
    losses: list[float] = []
    t_session = time.perf_counter()
    seconds_at_start = train_seconds
    done_here = 0
    last_saved = start_step if args.resume else None
    signum = 0
    net.train()
    try:
        while step < args.steps:
            if stop_after is not None and done_here >= stop_after:
                break
            lr = float(args.lr) * min(1.0, (step + 1) / max(1, args.warmup))
            for g in opt.param_groups:
                g["lr"] = lr
            x0, labels = ds.batch(args.seed, step, args.batch_size)
            gen = step_generator(args.seed, step, 1, device)
            t = args.t_min + (1.0 - args.t_min) * torch.rand(args.batch_size, generator=gen, device=device, dtype=torch.float64)
            noise = torch.randn((args.batch_size, *ds.shape), generator=gen, device=device, dtype=torch.float32)
            if labels is not None and cfg.num_classes > 0:
                labels = labels.to(device)
                if args.label_dropout > 0:
                    drop = torch.rand(args.batch_size, generator=gen, device=device, dtype=torch.float32) < args.label_dropout
                    labels = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels)
            else:
                labels = None
            x0 = x0.to(device)
            low_res = aug = None
            if cfg.cond_channels:  # a cascaded upsampler: up-scaled, noise-augmented low-res input (own stream)
                from .upsampler import augment, downsample, upscale

                g_aug = step_generator(args.seed, step, 3, device)
                aug = float(args.aug_max) * torch.rand(args.batch_size, generator=g_aug, device=device, dtype=torch.float64)
                up = upscale(downsample(x0, cfg.low_resolution), cfg.resolution)
                low_res = augment(up, aug, torch.randn(up.shape, generator=g_aug, device=device, dtype=up.dtype))
            x0, t, noise, labels, low_res, aug = (_slice(v, de.rank, per) for v in (x0, t, noise, labels, low_res, aug))
            cond_kw = {} if low_res is None else {"low_res": low_res, "aug_level": aug}
            torch.manual_seed(derived_seed(args.seed, step, 2, de.rank))  # dropout masks
            ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with ctx:
                loss = dsm_loss(net, x0, t, noise, labels, prediction=cfg.prediction, **cond_kw)
            bad = 0.0 if bool(torch.isfinite(loss)) else 1.0
            bad = de.all_max([bad], device)[0]
            if bad:
                raise NonFiniteLossError(
                    f"training stopped: the loss is {float(loss.detach())} at step {step} (on some rank); the weights were not "
                    f"updated. " + (f"The last good checkpoint (step {last_saved}) is kept at {str(ckpt)!r}."
                                    if last_saved is not None else "No checkpoint had been written yet.")
                    + " Lower --lr, raise --warmup, or switch --amp off.",
                    step=step, last_checkpoint_step=last_saved,
                )
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if args.grad_clip and args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(args.grad_clip))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            _ema_update(ema, model, min(float(args.ema), (1.0 + step) / (10.0 + step)))
            step += 1
            done_here += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 10 == 0 or step == args.steps:
                rate = done_here / max(time.perf_counter() - t_session, 1e-9)
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", img_s=f"{args.batch_size * rate:.0f}",
                                refresh=False)
            signum = int(de.all_max([float(stop.signum)], device)[0])
            if step % args.checkpoint_every == 0 or step == args.steps or signum:
                secs = seconds_at_start + (time.perf_counter() - t_session)
                save(step, secs)
                last_saved = step
                if de.main:
                    recent = losses[-args.checkpoint_every:]
                    _append_log(out, {"step": step, "loss": sum(recent) / max(1, len(recent)), "lr": lr,
                                      "train_seconds": round(secs, 2)})
            if signum:
                break
        if last_saved != step:  # stopped by stop_after, or nothing to do
            save(step, seconds_at_start + (time.perf_counter() - t_session))
            last_saved = step
    finally:
        bar.close()
        stop.restore()
    train_seconds = seconds_at_start + (time.perf_counter() - t_session)
    if signum:
        raise Interrupted(signum, step, str(ckpt))
    return {"step": step, "start_step": start_step, "checkpoint": str(ckpt), "train_seconds": train_seconds,
            "session_seconds": time.perf_counter() - t_session, "final_loss": (sum(losses[-50:]) / len(losses[-50:])) if losses else None,
            "parameters": model.num_parameters(), "world_size": de.world, "model_config": cfg.to_dict()}
