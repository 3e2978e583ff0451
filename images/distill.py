r"""Distillation of a prediction head from a frozen U-Net (``python -m images distill``; GENIE Alg. 1).

Per step (global batch ``B``; every draw seeded by ``(seed, step)``, so a resumed run equals an
uninterrupted one bit for bit on a CPU):

1. ``x_0`` from the teacher's training set, ``t`` from
   :func:`taylorsolve.diffusion.distillation.sample_times` (``t_cutoff`` to 1), noise ``n ~ N(0, I)``,
   ``x_t = alpha_t x_0 + sigma_t n``;
2. one forward pass of the frozen teacher (eval mode, no graph, fp32, TF32 off) with the head's hooks
   recording: ``eps_theta``, the last decoder features, the time embedding;
3. the target: ``d eps_theta / d gamma`` by one ``torch.func.jvp`` with the tangent pair
   ``(dx/dgamma, dt/dgamma)`` (eq. (11)-(12), ``+`` sign), or ``d^2 eps/d gamma^2`` by a nested JVP
   (``--order 2``, app. B.3), or the AD-free target of app. D (``--objective ad_free``);
4. the head on ``(features, embedding, x_t, eps_in)`` with ``eps_in = eps_theta`` (the paper's text) or
   the true noise ``n`` (``--feed true_noise``, the released code's choice), the mixed
   parameterisation eq. (14), loss eq. (15) with ``g_d = gamma^2``;
5. Adam with warm-up and gradient clipping, an EMA of the head's weights.

The objective is :mod:`taylorsolve.diffusion.distillation` (shared with ``toy.learned``).  The run
folder holds ``head.safetensors`` (atomic; the EMA head in the form :func:`images.heads.load_head`
reads, plus the raw weights and Adam's state for ``--resume``), ``run.json`` and ``log.jsonl``; at the
end a held-out evaluation (:func:`evaluate_head`) is written to ``eval.json``.  Under ``torchrun``
each rank takes its slice of the global batch and the head is wrapped in DDP; rank 0 writes.

**Conditional teachers** (:class:`Conditioner`; every draw from its own stream of ``(seed, step)``):

* a class-conditional U-Net: the training set's labels, each replaced by "no label" with probability
  ``label_dropout`` (as in its training), so one head serves the conditional and the unconditional
  branch -- eq. (81)'s pair of heads (:mod:`images.guidance`);
* ``guidance="lo:hi"``: the teacher is the guided model :class:`images.guidance.GuidedUNet`, the labels
  are kept and the scale ``w ~ U[lo, hi]`` per image: the head is distilled along the guided ODE;
* a cascaded upsampler (:mod:`images.upsampler`): the conditioning image is the training image
  down-scaled, up-scaled and noise-augmented at ``s ~ U[0, aug_max]``, and the head sees it too
  (app. C.2.1; its ``extra_input``).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taylorsolve.diffusion import eps_function
from taylorsolve.diffusion.distillation import (
    DEFAULT_BANDS,
    DistillationObjective,
    ad_free_target,
    derivative_targets,
    distillation_loss,
    relative_errors,
    sample_times,
)

from .checkpoint import atomic_write_text, find_checkpoint, load_model, load_module_state, read_metadata
from .data import ImageDataset, derived_seed, load_dataset, step_generator
from .errors import (CheckpointMismatchError, ConfigError, GuidanceError, NonFiniteLossError, NotDifferentiableError,
                     ResumeError)
from .heads import (HeadConfig, HeadedModel, PredictionHead, attach_head, build_head, head_config_for, read_head_metadata,
                    save_head, teacher_fingerprint)
from .train import (Interrupted, StopSignals, _append_log, _command_line, _Dist, _ema_update, _git_commit, _init_dist,
                    _load_optimizer, progress_bar, with_added_defaults, wrap_ddp)

__all__ = ["DistillArgs", "distill", "evaluate_head", "build_pool", "HEAD_FILE", "teacher_batch", "Conditioner",
           "distill_teacher"]

HEAD_FILE = "head.safetensors"

#: fields that may change between a run and its resumption
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "resume", "out", "progress", "device", "threads", "data_dir",
                      "eval_samples"}

#: DistillArgs fields added after runs were recorded (a record without them had their defaults)
_ADDED_FIELDS = {"label_dropout", "guidance", "aug_max"}

#: the tensors of a target pool (:func:`build_pool`)
_POOL_KEYS = ("x_t", "t", "noise", "eps", "features", "embedding", "gamma")


@dataclass
class DistillArgs:
    """Arguments of :func:`distill` (the CLI's flags).  The objective's knobs default to the paper's
    choices; the others are the ablations of Table 2."""

    checkpoint: str = "images/checkpoints/digits_tiny/model.safetensors"
    out: str = "runs/digits_tiny_head"
    steps: int = 1500
    batch_size: int = 64
    seed: int = 0
    lr: float = 1e-3
    warmup: int = 50
    ema: float = 0.995
    grad_clip: float = 1.0
    order: int = 1
    mixed: bool = True
    weighting: bool = True
    feed: str = "eps_theta"
    objective: str = "autodiff"
    time_sampling: str = "uniform+log"
    t_cutoff: float = 1e-3
    channels: int | None = None
    num_blocks: int = 1
    normalize_features: bool = True
    #: class-conditional teacher: probability of replacing a label by "no label" (both branches' head)
    label_dropout: float = 0.2
    #: "lo:hi": distil along the guided ODE (images.guidance.GuidedUNet), w ~ U[lo, hi] per image
    guidance: str = ""
    #: upsampler teacher: the conditioning's noise-augmentation levels s ~ U[0, aug_max]
    aug_max: float = 0.1
    dataset: str | None = None
    data_dir: str | None = None
    checkpoint_every: int = 250
    resume: bool = False
    eval_samples: int = 384
    pool: int = 0
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True

    def objective_(self) -> DistillationObjective:
        return DistillationObjective(order=self.order, mixed=self.mixed, weighting=self.weighting, feed=self.feed,
                                     objective=self.objective, time_sampling=self.time_sampling, t_cutoff=self.t_cutoff)

    def check(self) -> "DistillArgs":
        if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ConfigError(f"need steps >= 0, batch_size >= 1, checkpoint_every >= 1; got {self.steps}, "
                              f"{self.batch_size}, {self.checkpoint_every}")
        if not (self.lr > 0 and 0.0 <= self.ema < 1.0):
            raise ConfigError(f"need lr > 0 and 0 <= ema < 1; got {self.lr}, {self.ema}")
        if self.num_blocks < 1 or (self.channels is not None and self.channels < 1):
            raise ConfigError(f"need num_blocks >= 1 and channels >= 1; got {self.num_blocks}, {self.channels}")
        if not (0.0 <= self.label_dropout < 1.0 and 0.0 <= self.aug_max <= 1.0):
            raise ConfigError(f"need label_dropout in [0, 1) and aug_max in [0, 1]; got {self.label_dropout}, {self.aug_max}")
        self.guidance_range()
        try:
            self.objective_()
        except Exception as exc:  # TaylorSolveError -> the pipeline's config error
            raise ConfigError(str(exc)) from exc
        return self

    def guidance_range(self) -> tuple[float, float] | None:
        """``(lo, hi)`` of ``guidance="lo:hi"`` (or ``"w"`` for one scale); ``None`` when not guided."""
        if not self.guidance:
            return None
        try:
            parts = [float(v) for v in str(self.guidance).split(":")]
        except ValueError:
            parts = []
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not (0.0 <= parts[0] <= parts[1] < float("inf")):
            raise GuidanceError(f"guidance must be 'lo:hi' with 0 <= lo <= hi (or one scale), got {self.guidance!r}")
        return parts[0], parts[1]


class Conditioner:
    """The conditioning of a teacher's passes in distillation (module docstring): ``cond(x0, labels, gen)``
    -> the network's keyword arguments; :meth:`head_kw` -> the head's (``extra`` for an upsampler).

    Built by :func:`distill_teacher`; an unconditional teacher gets an empty conditioning."""

    def __init__(self, module: nn.Module, args: DistillArgs):
        from .guidance import GuidedUNet

        self.guided = isinstance(module, GuidedUNet)
        inner = module.unet if self.guided else module
        cfg = getattr(inner, "config", None)
        self.num_classes = int(getattr(cfg, "num_classes", 0) or 0)
        self.cond_channels = int(getattr(cfg, "cond_channels", 0) or 0)
        self.low_resolution = int(getattr(cfg, "low_resolution", 0) or 0)
        self.resolution = int(getattr(cfg, "resolution", 0) or 0)
        self.range = args.guidance_range() if self.guided else None
        self.label_dropout = float(args.label_dropout)
        self.aug_max = float(args.aug_max)

    @property
    def extra_channels(self) -> int:
        """Channels of the head's extra image input (an upsampler's conditioning image)."""
        return self.cond_channels

    @property
    def extra_input(self) -> str | None:
        return "low_res" if self.cond_channels else None

    def __call__(self, x0: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator) -> dict[str, Any]:
        n, dev = x0.shape[0], x0.device
        out: dict[str, Any] = {}
        if self.num_classes:
            if labels is None:
                raise ConfigError("a class-conditional teacher needs a dataset with class labels")
            y = labels.long().to(dev)
            if self.guided:
                lo, hi = self.range  # type: ignore[misc]
                w = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
                out.update(class_labels=y, guidance=w.to(dev))
            else:
                drop = torch.rand(n, generator=gen) < self.label_dropout
                out["class_labels"] = torch.where(drop.to(dev), torch.full_like(y, self.num_classes), y)
        if self.cond_channels:
            from .upsampler import augment, downsample, upscale

            s = self.aug_max * torch.rand(n, generator=gen, dtype=torch.float64)
            up = upscale(downsample(x0, self.low_resolution), self.resolution)
            z = augment(up, s.to(dev), torch.randn(up.shape, generator=gen, dtype=up.dtype).to(dev))
            out.update(low_res=z, aug_level=s.to(dev))
        return out

    def head_kw(self, cond: dict[str, Any]) -> dict[str, Any]:
        return {"extra": cond["low_res"]} if self.cond_channels else {}


# ------------------------------------------------------------------------------------------------
# the teacher
# ------------------------------------------------------------------------------------------------
def _check_differentiable(headed: HeadedModel) -> None:
    """Integer-timestep networks with rounding on have no derivative in ``t``: the targets of eq. (12)
    do not exist (:class:`NotDifferentiableError` saying what to switch off)."""
    base = headed.base
    if getattr(base, "time", "continuous") != "continuous" and getattr(base, "round_timesteps", False):
        raise NotDifferentiableError(
            "the teacher rounds its timesteps to integers, so eps is piecewise constant in t and d eps/d gamma "
            "(eq. (12)) does not exist; build it with rounding off: from_diffusers(unet, scheduler, round_timesteps=False)")


def teacher_batch(headed: HeadedModel, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None,
                  objective: DistillationObjective, cond: dict[str, Any] | None = None
                  ) -> dict[str, torch.Tensor]:
    """One teacher pass with the hooks recording, and the regression target (steps 2-3 of the module
    docstring): ``{"eps", "features", "embedding", "target", "gamma", "eps_in"}`` and ``"extra"`` (the head's
    extra image input, an upsampler's conditioning) when the headed model has one."""
    _check_differentiable(headed)
    cond = cond or {}
    with torch.no_grad():
        _, eps, feats, emb = headed.features(x_t, t, **cond)
    eps_fn = eps_function(headed.base, cond=cond or None)
    if objective.objective == "ad_free":
        if noise is None:
            raise ConfigError("the AD-free objective needs the true noise of x_t")
        target = ad_free_target(eps_fn, x_t, t, noise, process=headed.process, eps=eps)
        gamma = headed.process.schedule.gamma(t)  # type: ignore[attr-defined]
    else:
        tg = derivative_targets(eps_fn, x_t, t, process=headed.process, order=objective.order, eps=eps,
                                module=headed.base.module)
        target = tg.d1 if objective.order == 1 else tg.d2
        gamma = tg.gamma
        if not bool(torch.isfinite(target).all()):
            raise NotDifferentiableError("the teacher's derivative target is not finite (is eps differentiable in x and t?)")
    eps_in = noise if (objective.feed == "true_noise" and noise is not None) else eps
    out = {"eps": eps, "features": feats, "embedding": emb, "target": target, "gamma": gamma, "eps_in": eps_in}
    extra = headed._split_kwargs(cond)[1].get("extra")
    if extra is not None:
        out["extra"] = extra
    return out


def _head_kw(tb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"extra": tb["extra"]} if "extra" in tb else {}


def _diffuse(headed: HeadedModel, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    sched = headed.process.schedule  # type: ignore[attr-defined]
    a = sched.alpha(t).to(x0.dtype).reshape(-1, 1, 1, 1)
    s = sched.sigma(t).to(x0.dtype).reshape(-1, 1, 1, 1)
    return a * x0 + s * noise


def _dataset_for(args: DistillArgs, teacher_path: Path) -> ImageDataset:
    name = args.dataset
    if name is None:
        meta = read_metadata(teacher_path)
        name = dict(meta.get("train_args") or {}).get("dataset")
        if name is None:
            raise ConfigError(f"the teacher {str(teacher_path)!r} does not record its dataset; pass --dataset")
    return load_dataset(name, args.data_dir)


def build_pool(headed: HeadedModel, dataset: ImageDataset, size: int, *, seed: int = 0, batch: int = 64,
               t_cutoff: float = 1e-3, time_sampling: str = "uniform+log",
               targets: tuple[str, ...] = ("autodiff",), order: int = 1, progress: bool = False,
               conditioner: Conditioner | None = None) -> dict[str, torch.Tensor]:
    """A fixed pool of ``size`` teacher passes and targets (``--pool N``): draws ``x_0, t, noise`` as the
    fresh loop does (seeded by ``(seed, i)``) and keeps ``x_t, t, noise, eps, features, embedding, gamma``
    and one target per entry of ``targets`` (``"autodiff"``: order ``order`` by JVP; ``"ad_free"``;
    ``"autodiff2"``: the second derivative), stored as ``target_<name>``; with a ``conditioner`` also the
    network's conditioning (``cond.<name>``) and the head's extra input (``extra``).

    The teacher is frozen, so its pass and JVP -- about six network evaluations, nearly all of a fresh
    step's cost -- can be paid once and shared by every head trained on the pool (the ablations of
    Table 2 train on one pool).  The pool is a finite sample of Alg. 1's distribution; heads trained on
    it are evaluated on fresh held-out draws (:func:`evaluate_head`)."""
    from tqdm.auto import tqdm

    chunks: dict[str, list[torch.Tensor]] = {}
    device = next(headed.base.module.parameters()).device
    for i in tqdm(range(0, size, batch), desc="target pool", disable=not progress, mininterval=30.0):
        n = min(batch, size - i)
        x0, labels = dataset.batch(seed + 7919, i // batch, n)
        gen = step_generator(seed + 7919, i // batch, 1)
        t = sample_times(n, t_cutoff, gen, kind=time_sampling)
        noise = torch.randn((n, *dataset.shape), generator=gen, dtype=torch.float32)
        x0, t, noise = x0.float().to(device), t.to(device), noise.to(device)
        cond = conditioner(x0, labels, step_generator(seed + 7919, i // batch, 4)) if conditioner is not None else {}
        x_t = _diffuse(headed, x0, t, noise)
        row: dict[str, torch.Tensor] = {}
        for name in targets:
            kind_order = 2 if name == "autodiff2" else order
            obj = DistillationObjective(order=kind_order, objective="ad_free" if name == "ad_free" else "autodiff")
            tb = teacher_batch(headed, x_t, t, noise, obj, cond=cond)
            row[f"target_{name}"] = tb["target"]
            for k in ("eps", "features", "embedding", "gamma", "extra"):
                if k in tb:
                    row[k] = tb[k]
        row.update({"x_t": x_t, "t": t, "noise": noise})
        row.update({f"cond.{k}": v for k, v in cond.items()})
        for k, v in row.items():
            chunks.setdefault(k, []).append(v.detach())
    return {k: torch.cat(v) for k, v in chunks.items()}


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------
def evaluate_head(headed: HeadedModel, dataset: ImageDataset, *, order: int = 1, samples: int = 384, seed: int = 1234,
                  batch: int = 64, t_cutoff: float = 1e-3, bands: Any = DEFAULT_BANDS,
                  conditioner: Conditioner | None = None) -> dict[str, Any]:
    """Held-out relative errors of the headed model's ``order`` head (:func:`relative_errors`): images of
    the held-out split, times spread evenly in ``log t`` over ``[t_cutoff, 1]`` (each band of
    :data:`DEFAULT_BANDS` gets a third), exact autodiff targets (a conditional teacher's conditioning
    drawn by ``conditioner`` from the held-out labels).  A zero head scores 1."""
    x_all, y_all = dataset.held_out()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x_all.shape[0], (samples,), generator=gen)
    t_all = torch.exp(torch.linspace(float(torch.log(torch.tensor(t_cutoff))), 0.0, samples, dtype=torch.float64))
    t_all = t_all[torch.randperm(samples, generator=gen)]
    noise_all = torch.randn((samples, *x_all.shape[1:]), generator=gen)
    obj = DistillationObjective(order=order)
    ks, ds, ts, gs = [], [], [], []
    head = headed.heads[order - 1]
    for i in range(0, samples, batch):
        x0 = x_all[idx[i:i + batch]].float()
        t = t_all[i:i + batch]
        x_t = _diffuse(headed, x0, t, noise_all[i:i + batch])
        labels = None if y_all is None else y_all[idx[i:i + batch]]
        cond = conditioner(x0, labels, gen) if conditioner is not None else {}
        tb = teacher_batch(headed, x_t, t, None, obj, cond=cond)
        with torch.no_grad():
            k = head(tb["features"], tb["embedding"], x_t, tb["eps"], tb["gamma"], **_head_kw(tb))
        ks.append(k.double()), ds.append(tb["target"].double()), ts.append(t), gs.append(tb["gamma"])
    out = relative_errors(torch.cat(ks), torch.cat(ds), torch.cat(ts), torch.cat(gs), order=order, bands=bands)
    out.update({"samples": samples, "seed": seed, "order": order})
    return out


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def _save(path: Path, headed: HeadedModel, head: PredictionHead, ema: PredictionHead, opt: torch.optim.Optimizer,
          step: int, args: DistillArgs, seconds: float, teacher: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    sd = opt.state_dict()
    raw = {k: v for k, v in head.state_dict().items()}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            raw[f"__optim.{idx}.{key}"] = val if isinstance(val, torch.Tensor) else torch.tensor(val)
    record = {"step": step, "distill_args": asdict(args), "optim_param_groups": sd["param_groups"],
              "distill_seconds": seconds, "inputs": {"extra_input": headed.extra_input}, **(extra or {})}
    save_head(path, ema, teacher=teacher, hooks=headed.hooks, objective=asdict(args.objective_()), record=record,
              raw_state=raw)


def _check_resume(meta: dict[str, Any], args: DistillArgs, teacher: dict[str, Any], path: str) -> None:
    saved = with_added_defaults(meta["record"].get("distill_args", {}), DistillArgs(), _ADDED_FIELDS)
    now = asdict(args)
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in sorted(set(saved) | set(now))
             if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    if meta["teacher"].get("sha256") != teacher.get("sha256"):
        diffs.append("the teacher's weights differ")
    if diffs:
        raise CheckpointMismatchError(f"cannot resume from {path!r}: the run was started with other settings: " + "; ".join(diffs))


def _split_raw(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    raw = {k[4:]: v for k, v in tensors.items() if k.startswith("raw.") and not k.startswith("raw.__optim.")}
    opt = {k[len("raw.__"):]: v for k, v in tensors.items() if k.startswith("raw.__optim.")}
    return raw, opt


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def distill(args: DistillArgs, *, dataset: ImageDataset | None = None, teacher: Any = None,
            stop_after: int | None = None, pool: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Run (or resume) a distillation; returns ``{"step", "checkpoint", "eval", "final_loss", ...}``.

    ``teacher`` replaces the checkpoint's network: a ``torch.nn.Module`` eps-network with continuous
    ``t`` or a ``DiffusionModel`` over one (e.g. ``from_diffusers(unet, scheduler)``); ``pool`` a target pool already built for this
    teacher (:func:`build_pool`; else one of ``args.pool`` entries is built when ``args.pool > 0``, and
    steps draw fresh batches when it is 0); ``stop_after`` ends this call after that many
    steps as if interrupted (checkpoint written).  Raises :class:`~images.train.Interrupted` after
    SIGTERM/SIGINT (checkpoint written), :class:`NonFiniteLossError`, :class:`ResumeError`,
    :class:`CheckpointMismatchError`, :class:`NotDifferentiableError`.
    """
    args = args.check()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    de = _init_dist("cuda" if args.device.startswith("cuda") else "cpu")
    try:
        return _distill(args, de, dataset, teacher, stop_after, pool)
    finally:
        if de.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def distill_teacher(teacher: Any, module: nn.Module, args: DistillArgs) -> tuple[Any, nn.Module]:
    """``(teacher, module)`` to distil from: the guided model :class:`images.guidance.GuidedUNet` of the
    U-Net for ``args.guidance``, else the teacher itself."""
    if not args.guidance:
        return teacher, module
    from .guidance import GuidedUNet

    guided = GuidedUNet(module).eval()
    return guided, guided


def _pool_target_name(args: DistillArgs) -> str:
    if args.objective == "ad_free":
        return "ad_free"
    return "autodiff2" if args.order == 2 else "autodiff"


def _distill(args: DistillArgs, de: _Dist, dataset: ImageDataset | None, teacher: Any,
             stop_after: int | None, pool: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    device = torch.device(args.device if args.device != "cuda" else f"cuda:{de.local_rank}")
    torch.backends.cuda.matmul.allow_tf32 = False          # the targets in plain fp32
    torch.backends.cudnn.allow_tf32 = False
    if args.batch_size % de.world:
        raise ConfigError(f"--batch-size {args.batch_size} must be divisible by the {de.world} processes")
    per = args.batch_size // de.world
    out = Path(args.out)
    ckpt = out / HEAD_FILE
    if args.resume and not ckpt.is_file():
        raise ResumeError(f"--resume: no head checkpoint in {str(out)!r} (expected {str(ckpt)!r}); start without --resume")
    if not args.resume and ckpt.is_file():
        raise ResumeError(f"{str(out)!r} already holds a head checkpoint ({str(ckpt)!r}); pass --resume to continue it "
                          f"or choose another --out (nothing was overwritten)")
    if teacher is None:
        tpath = find_checkpoint(args.checkpoint)
        teacher = load_model(tpath, device=device)
        ds = dataset if dataset is not None else _dataset_for(args, tpath)
    else:
        if dataset is None:
            raise ConfigError("distill(teacher=...) needs dataset=...")
        ds = dataset
    from taylorsolve.diffusion import DiffusionModel

    module = teacher.module if isinstance(teacher, DiffusionModel) else teacher   # e.g. from_diffusers(unet, ...)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"the teacher must be a torch.nn.Module or a DiffusionModel over one, got {type(teacher).__name__}")
    module.to(device).eval().requires_grad_(False)
    teacher, module = distill_teacher(teacher, module, args)
    conditioner = Conditioner(module, args)
    fingerprint = teacher_fingerprint(module)
    obj = args.objective_()
    xin = {"extra_channels": conditioner.extra_channels, "extra_input": conditioner.extra_input}

    # the head: sized by a probe pass through the hooks
    probe = attach_head(teacher, overhead=None, normalize_features=args.normalize_features, **xin)
    dims = {k: getattr(probe.head.config, k) for k in ("feature_channels", "image_channels", "emb_dim")}
    probe.remove()
    cfg = head_config_for(dims, channels=args.channels or dims["feature_channels"], num_blocks=args.num_blocks,
                          mixed=args.mixed, order=args.order, normalize_features=args.normalize_features,
                          extra_channels=conditioner.extra_channels)
    head = build_head(cfg, seed=args.seed, device=device)
    ema = copy.deepcopy(head).requires_grad_(False).eval()
    # the headed model runs the teacher with the hooks; the head being trained is ours
    headed = attach_head(teacher, head=build_head(head_config_for(cfg, order=1), device=device) if args.order == 2 else head,
                         overhead=None, normalize_features=args.normalize_features, extra_input=conditioner.extra_input)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    tname = _pool_target_name(args)
    if pool is None and args.pool > 0:
        pool = build_pool(headed, ds, args.pool, seed=args.seed, t_cutoff=args.t_cutoff, time_sampling=args.time_sampling,
                          targets=(tname,), progress=args.progress and de.main, conditioner=conditioner)
    if pool is not None and f"target_{tname}" not in pool:
        raise ConfigError(f"the target pool has no {tname!r} targets (it holds {sorted(k for k in pool if k.startswith('target_'))})")
    step, seconds = 0, 0.0
    if args.resume:
        meta = read_head_metadata(ckpt)
        _check_resume(meta, args, fingerprint, str(ckpt))
        from safetensors.torch import load_file

        tensors = load_file(str(ckpt))
        raw, optim = _split_raw(tensors)
        load_module_state(head, {f"h.{k}": v for k, v in raw.items()}, "h.", str(ckpt))
        load_module_state(ema, tensors, "head.", str(ckpt))
        _load_optimizer(opt, {f"optim.{k[len('optim.'):]}": v for k, v in optim.items()},
                        {"optim_param_groups": meta["record"]["optim_param_groups"]})
        step, seconds = int(meta["record"]["step"]), float(meta["record"]["distill_seconds"])
    start_step = step
    if de.main:
        out.mkdir(parents=True, exist_ok=True)
        _record(out, args, cfg, start_step, de.world, device, head, fingerprint)
    net = wrap_ddp(head, de, device)
    stop = StopSignals()   # signals: finish the step, write the checkpoint, stop

    def save(at: int, secs: float, extra: dict[str, Any] | None = None) -> None:
        if de.main:
            _save(ckpt, headed, head, ema, opt, at, args, secs, fingerprint, extra)
        de.barrier()

    bar = progress_bar(args.steps, step, f"distill order {args.order}", args.progress and de.main)
    losses: list[float] = []
    t0 = time.perf_counter()
    done = 0
    last_saved = start_step if args.resume else None
    signum = 0
    head.train()
    try:
        while step < args.steps:
            if stop_after is not None and done >= stop_after:
                break
            lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
            for g in opt.param_groups:
                g["lr"] = lr
            sl = slice(de.rank * per, (de.rank + 1) * per)
            if pool is None:                                   # Alg. 1: fresh draws and targets every step
                x0, labels = ds.batch(args.seed, step, args.batch_size)
                gen = step_generator(args.seed, step, 1)
                t = sample_times(args.batch_size, args.t_cutoff, gen, kind=args.time_sampling)
                noise = torch.randn((args.batch_size, *ds.shape), generator=gen, dtype=torch.float32)
                cond = conditioner(x0.float().to(device), labels, step_generator(args.seed, step, 4))
                cond = {k: v[sl] for k, v in cond.items()}
                x0, t, noise = x0[sl].float().to(device), t[sl].to(device), noise[sl].to(device)
                x_t = _diffuse(headed, x0, t, noise)
                tb = teacher_batch(headed, x_t, t, noise, obj, cond=cond)
            else:                                              # a minibatch of the fixed pool
                gen = step_generator(args.seed, step, 3)
                pick = torch.randint(0, pool["t"].shape[0], (args.batch_size,), generator=gen)[sl]
                tb = {k: pool[k][pick] for k in _POOL_KEYS + ("extra",) if k in pool}
                tb["target"] = pool[f"target_{tname}"][pick]
                tb["eps_in"] = tb["noise"] if args.feed == "true_noise" else tb["eps"]
                x_t = tb["x_t"]
            torch.manual_seed(derived_seed(args.seed, step, 2, de.rank))
            k = net(tb["features"], tb["embedding"], x_t, tb["eps_in"], tb["gamma"], **_head_kw(tb))
            loss = distillation_loss(k, tb["target"], tb["gamma"], weighting=args.weighting, order=args.order)
            bad = de.all_max([0.0 if bool(torch.isfinite(loss)) else 1.0], device)[0]
            if bad:
                raise NonFiniteLossError(
                    f"distillation stopped: the loss is {float(loss.detach())} at step {step}; the head was not updated. "
                    + (f"The last good checkpoint (step {last_saved}) is kept at {str(ckpt)!r}." if last_saved is not None
                       else "No checkpoint had been written yet.") + " Lower --lr or raise --t-cutoff.",
                    step=step, last_checkpoint_step=last_saved)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), args.grad_clip)
            opt.step()
            _ema_update(ema, head, min(args.ema, (1.0 + step) / (10.0 + step)))
            step += 1
            done += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4g}", refresh=False)
            signum = int(de.all_max([float(stop.signum)], device)[0])
            if step % args.checkpoint_every == 0 or step == args.steps or signum:
                secs = seconds + (time.perf_counter() - t0)
                save(step, secs)
                last_saved = step
                if de.main:
                    recent = losses[-args.checkpoint_every:]
                    _append_log(out, {"step": step, "loss": sum(recent) / max(1, len(recent)), "lr": lr,
                                      "distill_seconds": round(secs, 2)})
            if signum:
                break
        if last_saved != step:
            save(step, seconds + (time.perf_counter() - t0))
            last_saved = step
    finally:
        bar.close()
        stop.restore()
    total = seconds + (time.perf_counter() - t0)
    if signum:
        raise Interrupted(signum, step, str(ckpt))
    result: dict[str, Any] = {"step": step, "start_step": start_step, "checkpoint": str(ckpt), "distill_seconds": total,
                              "session_seconds": time.perf_counter() - t0,
                              "final_loss": (sum(losses[-50:]) / len(losses[-50:])) if losses else None,
                              "head_parameters": head.num_parameters(), "head_config": cfg.to_dict(),
                              "world_size": de.world}
    if de.main and step >= args.steps and args.eval_samples > 0:
        ev_model = attach_head(teacher, head=ema if args.order == 1 else headed.head, head2=ema if args.order == 2 else None,
                               overhead=None, extra_input=conditioner.extra_input)
        ev = evaluate_head(ev_model, ds, order=args.order, samples=args.eval_samples, t_cutoff=args.t_cutoff,
                           conditioner=conditioner)
        ev_model.remove()
        result["eval"] = ev
        atomic_write_text(out / "eval.json", json.dumps(ev, indent=2) + "\n")
    headed.remove()
    return result


def _record(out: Path, args: DistillArgs, cfg: HeadConfig, start_step: int, world: int, device: torch.device,
            head: PredictionHead, teacher: dict[str, Any]) -> None:
    path = out / "run.json"
    try:
        rec = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        rec = {}
    rec.setdefault("distill_args", asdict(args))
    rec["head_config"] = cfg.to_dict()
    rec["head_parameters"] = head.num_parameters()
    rec["teacher"] = {k: teacher[k] for k in ("sha256", "class", "parameters")}
    rec.setdefault("sessions", []).append({"command": _command_line(), "start_step": start_step, "target_steps": args.steps,
                                           "commit": _git_commit(), "world_size": world, "device": str(device),
                                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    atomic_write_text(path, json.dumps(rec, indent=2) + "\n")
