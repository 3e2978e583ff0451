r"""Seeded Adam training loops with atomic, resumable safetensors checkpoints.

* :func:`train_eps_model` -- the eps model by denoising score matching (eq. (7)) on samples of a
  :class:`toy.GaussianMixture` (default :func:`toy.nested_mixture`), ``t ~ U[t_cutoff, 1]``.
* :func:`train_loop` -- the generic loop (also used to distil heads, :mod:`toy.learned.head`).

Checkpoints (one ``.safetensors`` file) hold the module's parameters (``module.*``), Adam's state
(``optim.<param index>.<key>``), the step, the data generator's state and the loss history; the
configuration and Adam's hyper-parameters go into the file's string metadata.  Files are written to
a temporary file in the same folder and moved into place with ``os.replace`` (atomic on POSIX), so an
interrupted run never leaves a half-written checkpoint.  :func:`train_loop` resumes from
``ckpt_path`` if it exists: the continued run is the same as an uninterrupted one (same data stream,
same optimizer state).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from taylorsolve.diffusion.schedules import LinearVPSchedule

from taylorsolve.diffusion.distillation import sample_times

from .model import EpsMLP, dsm_loss

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointConfigError",
    "TrainConfig",
    "TrainState",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "train_loop",
    "train_eps_model",
    "load_eps_model",
]


class CheckpointNotFoundError(FileNotFoundError):
    """A named checkpoint file does not exist."""


@dataclass
class TrainConfig:
    """Training hyper-parameters (eps model: DSM; heads reuse ``iters``, ``batch``, ``lr``, ``seed``)."""

    iters: int = 4000
    batch: int = 512
    lr: float = 2e-3
    lr_final: float = 1e-4          # cosine decay from lr to lr_final
    seed: int = 0
    t_cutoff: float = 1e-3
    grad_clip: float = 1.0
    ckpt_every: int = 1000
    hidden: int = 128
    depth: int = 3
    temb_dim: int = 32
    x_fourier: int = 64             # random Fourier features of x (0: plain MLP input)
    x_scale: float = 1.0            # std of their frequencies (docs/CONVENTIONS.md: smooth teachers)
    time_input: str = "loggamma"    # time embedding of log gamma_t ("t": of t itself)
    t_fmax: float = 8.0             # highest frequency of the Fourier time embedding
    time_sampling: str = "uniform+log"  # DSM times (taylorsolve.diffusion.distillation.sample_times)


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def _atomic_save(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    os.close(fd)
    _umask = os.umask(0)
    os.umask(_umask)
    os.chmod(tmp, 0o666 & ~_umask)  # mkstemp creates 0600; give the usual permissions
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str, module: nn.Module, optimizer: torch.optim.Optimizer | None, state: TrainState,
                    generator: torch.Generator | None = None, config: dict[str, Any] | None = None,
                    kind: str = "module") -> None:
    """Write ``module`` (+ Adam state, step, generator state, losses) to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {f"module.{k}": v for k, v in module.state_dict().items()}
    meta: dict[str, str] = {"kind": kind, "step": str(state.step), "config": json.dumps(config or {})}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for idx, st in sd["state"].items():
            for key, val in st.items():
                tensors[f"optim.{idx}.{key}"] = val if isinstance(val, torch.Tensor) else torch.tensor(val)
        meta["optim_param_groups"] = json.dumps(sd["param_groups"])
    tensors["train.step"] = torch.tensor(state.step, dtype=torch.int64)
    tensors["train.losses"] = torch.tensor(state.losses, dtype=torch.float64).reshape(-1)
    if generator is not None:
        tensors["train.generator_state"] = generator.get_state()
    _atomic_save(tensors, path, meta)


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(
            f"checkpoint file {path!r} does not exist (train first, e.g. `python -m toy.learned`, "
            f"or pass the path of an existing .safetensors checkpoint)"
        )


def read_checkpoint_metadata(path: str) -> dict[str, Any]:
    """The string metadata of a checkpoint (``kind``, ``step``, ``config`` parsed from JSON)."""
    from safetensors import safe_open

    _check_exists(path)
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata() or {})
    meta["config"] = json.loads(meta.get("config", "{}"))
    meta["step"] = int(meta.get("step", 0))
    return meta


def load_checkpoint(path: str, module: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    generator: torch.Generator | None = None) -> TrainState:
    """Load a checkpoint written by :func:`save_checkpoint` into ``module`` (and optimizer/generator).

    Raises :class:`CheckpointNotFoundError` (a ``FileNotFoundError``) naming the path if it is missing.
    """
    from safetensors.torch import load_file

    _check_exists(path)
    tensors = load_file(path)
    meta = read_checkpoint_metadata(path)
    module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
    if optimizer is not None and "optim_param_groups" in meta:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["optim_param_groups"])})
    if generator is not None and "train.generator_state" in tensors:
        generator.set_state(tensors["train.generator_state"])
    return TrainState(step=int(tensors["train.step"]), losses=tensors["train.losses"].tolist())


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def _lr_at(step: int, iters: int, lr: float, lr_final: float) -> float:
    import math

    frac = min(step / max(iters, 1), 1.0)
    return lr_final + 0.5 * (lr - lr_final) * (1.0 + math.cos(math.pi * frac))


#: settings a resumed run may change (a longer run continues the same one)
_RESUMABLE_CHANGES = ("iters", "ckpt_every")


class CheckpointConfigError(ValueError):
    """A checkpoint to resume from was written with different settings."""


def _check_same_config(path: str, conf: dict[str, Any]) -> None:
    saved = read_checkpoint_metadata(path)["config"]
    now = json.loads(json.dumps(conf))
    diff = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        raise CheckpointConfigError(
            f"checkpoint {path!r} was written with other settings ({', '.join(f'{k}: {saved.get(k)!r} there, {now.get(k)!r} now' for k in diff)}); "
            f"resume with the same settings, or pass another path (or resume=False to overwrite it)")


def train_loop(
    module: nn.Module,
    loss_fn: Callable[[torch.Generator], torch.Tensor],
    cfg: TrainConfig,
    ckpt_path: str | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    desc: str = "train",
    kind: str = "module",
    extra_config: dict[str, Any] | None = None,
    stop_after: int | None = None,
) -> TrainState:
    """Adam on ``loss_fn(generator)`` for ``cfg.iters`` steps (cosine learning-rate decay, gradient clipping).

    Seeded: parameters are not touched here (initialise them under ``torch.manual_seed`` yourself);
    all training randomness must come from the ``generator`` passed to ``loss_fn`` (seeded with
    ``cfg.seed``).  With ``ckpt_path``: resumes from it if it exists (``resume=True``; its settings must
    match, except ``iters``/``ckpt_every``: :class:`CheckpointConfigError` otherwise) and saves every
    ``cfg.ckpt_every`` steps and at the end.  ``stop_after`` stops after that many steps of this call
    (to simulate an interruption in tests).
    """
    from tqdm.auto import tqdm

    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    state = TrainState()
    conf = {**asdict(cfg), **(extra_config or {})}
    if ckpt_path is not None and resume and os.path.isfile(ckpt_path):
        _check_same_config(ckpt_path, conf)
        state = load_checkpoint(ckpt_path, module, opt, gen)
    done_here = 0
    bar = tqdm(total=cfg.iters, initial=state.step, desc=desc, disable=not progress, leave=False)
    module.train()
    while state.step < cfg.iters:
        if stop_after is not None and done_here >= stop_after:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(state.step, cfg.iters, cfg.lr, cfg.lr_final)
        loss = loss_fn(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        state.step += 1
        done_here += 1
        state.losses.append(float(loss.detach()))
        bar.update(1)
        if state.step % 50 == 0:
            bar.set_postfix(loss=f"{sum(state.losses[-50:]) / 50:.4g}")
        if ckpt_path is not None and (state.step % cfg.ckpt_every == 0 or state.step == cfg.iters):
            save_checkpoint(ckpt_path, module, opt, state, gen, conf, kind)
    bar.close()
    if ckpt_path is not None and stop_after is not None and state.step < cfg.iters:
        save_checkpoint(ckpt_path, module, opt, state, gen, conf, kind)
    module.eval()
    return state


def train_eps_model(
    mixture: Any = None,
    cfg: TrainConfig | None = None,
    ckpt_path: str | None = None,
    *,
    schedule: Any = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[EpsMLP, TrainState]:
    """Train an :class:`EpsMLP` on ``mixture`` (default :func:`toy.nested_mixture`) by DSM (eq. (7)).

    ``t`` by :func:`taylorsolve.diffusion.distillation.sample_times` (``cfg.time_sampling``), linear VP
    schedule by default.  Returns ``(model, state)``; the model is
    in eval mode.  See :func:`train_loop` for checkpointing/resuming.
    """
    from toy import nested_mixture

    cfg = cfg or TrainConfig()
    mixture = mixture if mixture is not None else nested_mixture()
    schedule = schedule if schedule is not None else LinearVPSchedule()
    torch.manual_seed(cfg.seed)
    model = EpsMLP(dim=mixture.dim, hidden=cfg.hidden, depth=cfg.depth, temb_dim=cfg.temb_dim,
                   x_fourier=cfg.x_fourier, x_scale=cfg.x_scale, time_input=cfg.time_input,
                   t_fmax=cfg.t_fmax)

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        x0 = mixture.sample(cfg.batch, gen).float()
        t = sample_times(cfg.batch, cfg.t_cutoff, gen, kind=cfg.time_sampling)
        return dsm_loss(model, x0, t, schedule, gen)

    state = train_loop(model, loss_fn, cfg, ckpt_path, resume=resume, progress=progress, desc="eps model (DSM)",
                       kind="eps_model", extra_config={"model": model.config}, stop_after=stop_after)
    return model, state


def load_eps_model(path: str) -> EpsMLP:
    """An :class:`EpsMLP` from a checkpoint of :func:`train_eps_model` (architecture from its metadata)."""
    meta = read_checkpoint_metadata(path)
    model = EpsMLP(**{"t_fmax": 64.0, **meta["config"].get("model", {})})   # (older checkpoints: 64)
    load_checkpoint(path, model)
    return model.eval()
