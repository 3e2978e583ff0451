r"""GENIE's prediction head on any U-Net, attached by forward hooks (sec. 3.1, Fig. 4, app. C.2.1).

::

    from images.heads import attach_head
    headed = attach_head(model)      # the project's U-Net, or taylorsolve.diffusion.from_diffusers(unet, scheduler)
    eps, k = headed(x, t)            # one forward pass of the U-Net, then the head (t continuous in (0, 1])
    out = sample(headed, x1, nfe=10, method="genie", derivative="head")

**Hooks.**  Forward hooks on two modules of the network capture the last decoder feature map and the
time embedding during the network's own forward pass; nothing in the network is edited or copied,
and the hooks record only while the headed model calls the network (the network called on its own
is unaffected).  Presets (:data:`PRESETS`): the project's :class:`images.unet.UNet` (output of
``last_features``, output of ``embedding``: the noise embedding plus the label embedding) and
diffusers' ``UNet2DModel`` (input of ``conv_norm_out``, output of ``time_embedding``).  Other networks
name the modules: ``attach_head(model, features="decoder.out_norm:input", embedding="temb")``
(``name`` or ``name:input`` / ``name:output``).  A network without the modules gets a
:class:`~images.errors.HookError` listing candidate modules.

**Head** (:class:`PredictionHead`, app. C.2.1): the features, ``x_t`` and ``eps`` concatenated
(optionally the features group-normalised first, and an extra image-shaped input such as an
upsampler's low-resolution image), a 3x3 convolution, one BigGAN-style residual block conditioned on
the time embedding (the U-Net's own :class:`images.unet.ResBlock`; "bigger" = two blocks), GroupNorm
and SiLU, and a 3x3 convolution to three times the image channels: ``k^(1), k^(2), k^(3)`` of the
mixed parameterisation eq. (14), combined by :func:`taylorsolve.diffusion.distillation.combine_outputs`.
A second head (``order=2``) predicts ``d^2 eps / d gamma^2`` the same way (its own prefactors); a
model with both returns ``(eps, (k1, k2))`` and runs TTM-3 (``method="ttm", order=3, derivative="head"``).

**Through the diffusion layer.**  :class:`HeadedModel` is a :class:`taylorsolve.diffusion.DiffusionModel`:
``net(x, t)`` with continuous float64 ``t`` returns ``(prediction, k)``, the boundary converts the
prediction to eps and keeps ``k`` for the ``"head"`` provider, and ``headed.overhead`` (the head's
measured cost as a fraction of one network evaluation, app. C.2.5, :func:`measure_overhead`) enters NFE
budgets (sec. 5: ``round(N / (1 + overhead))`` evaluations).

**Checkpoints** (:func:`save_head`, :func:`load_head`): one safetensors file per head with the head's
config, the hooks, the distillation objective and record, and the teacher's fingerprint (SHA-256 of
its weights and its config); loading it for another teacher or config is a
:class:`~images.errors.HeadMismatchError`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from taylorsolve.diffusion import DiffusionModel
from taylorsolve.diffusion.distillation import combine_outputs
from taylorsolve.diffusion.processes import get_process

from .errors import CorruptCheckpointError, HeadMismatchError, HookError
from .unet import ResBlock, SiLU, _groups

__all__ = [
    "HEAD_FORMAT",
    "HookSpec",
    "PRESETS",
    "HeadConfig",
    "PredictionHead",
    "HeadedModel",
    "attach_head",
    "build_head",
    "save_head",
    "load_head",
    "read_head_metadata",
    "teacher_fingerprint",
    "measure_overhead",
    "resolve_hooks",
]

HEAD_FORMAT = "taylorsolve-images-head-1"


# ------------------------------------------------------------------------------------------------
# hooks
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HookSpec:
    """Which modules to hook: ``features`` (the last decoder feature map ``[B, C_f, H, W]``) and
    ``embedding`` (the time embedding ``[B, D]``), each read from the module's ``"input"`` (first
    positional argument) or ``"output"``."""

    features: str
    embedding: str
    features_from: str = "output"
    embedding_from: str = "output"

    def __post_init__(self) -> None:
        for side in (self.features_from, self.embedding_from):
            if side not in ("input", "output"):
                raise HookError(f"a hook reads a module's 'input' or 'output', got {side!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @staticmethod
    def parse(spec: str, default_side: str = "output") -> tuple[str, str]:
        """``"name"`` or ``"name:input"`` / ``"name:output"`` -> ``(name, side)``."""
        name, _, side = spec.partition(":")
        side = side or default_side
        if side not in ("input", "output"):
            raise HookError(f"hook spec {spec!r}: the part after ':' must be 'input' or 'output'")
        return name, side


#: hook presets by network class name
PRESETS: dict[str, HookSpec] = {
    "UNet": HookSpec("last_features", "embedding"),                                     # images.unet.UNet
    "GuidedUNet": HookSpec("last_features", "embedding"),                               # images.guidance.GuidedUNet
    "UNet2DModel": HookSpec("conv_norm_out", "time_embedding", features_from="input"),   # diffusers
}


def _candidates(module: nn.Module, limit: int = 12) -> tuple[list[str], list[str]]:
    """Module names that look like a last feature map and like a time embedding (for error messages)."""
    feats, embs = [], []
    for name, m in module.named_modules():
        if not name:
            continue
        low = name.lower()
        leaf = low.rsplit(".", 1)[-1]
        if any(k in leaf for k in ("time", "temb", "emb")):
            embs.append(f"{name} ({type(m).__name__})")
        elif isinstance(m, nn.GroupNorm) or any(k in leaf for k in ("norm_out", "out_norm", "last", "final", "conv_out", "feature")):
            feats.append(f"{name} ({type(m).__name__})")
    return feats[-limit:], embs[:limit]


def resolve_hooks(module: nn.Module, *, preset: str | None = None, features: str | None = None,
                  embedding: str | None = None) -> HookSpec:
    """The :class:`HookSpec` for ``module``: explicit ``features`` / ``embedding`` names, else a preset
    (``preset=`` or by the network's class name).  Raises :class:`HookError` naming candidates."""
    names = dict(module.named_modules())
    spec: HookSpec | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise HookError(f"unknown hook preset {preset!r}; presets: {', '.join(PRESETS)} (or pass features=, embedding=)")
        spec = PRESETS[preset]
    elif type(module).__name__ in PRESETS:
        spec = PRESETS[type(module).__name__]
    if features is not None or embedding is not None:
        if spec is None and (features is None or embedding is None):
            raise HookError("name both modules for a network without a preset: attach_head(model, features=..., embedding=...)")
        f_name, f_side = HookSpec.parse(features) if features is not None else (spec.features, spec.features_from)  # type: ignore[union-attr]
        e_name, e_side = HookSpec.parse(embedding) if embedding is not None else (spec.embedding, spec.embedding_from)  # type: ignore[union-attr]
        spec = HookSpec(f_name, e_name, f_side, e_side)
    feats, embs = _candidates(module)
    hint = (f"; candidates for the feature map: {', '.join(feats) or 'none found'}; for the time embedding: "
            f"{', '.join(embs) or 'none found'}. Name them: attach_head(model, features='NAME[:input|:output]', "
            f"embedding='NAME[:input|:output]')")
    if spec is None:
        raise HookError(f"no hook preset for a {type(module).__name__} (presets: {', '.join(PRESETS)})" + hint)
    missing = [n for n in (spec.features, spec.embedding) if n not in names]
    if missing:
        raise HookError(f"the {type(module).__name__} has no module named {', '.join(repr(m) for m in missing)} "
                        f"(hooks {spec.features!r}:{spec.features_from}, {spec.embedding!r}:{spec.embedding_from})" + hint)
    return spec


class _Capture:
    """The tensors the hooks saw during the last headed call (only while ``active``)."""

    def __init__(self) -> None:
        self.active = False
        self.features: torch.Tensor | None = None
        self.embedding: torch.Tensor | None = None

    @contextlib.contextmanager
    def recording(self) -> Iterator["_Capture"]:
        self.features = self.embedding = None
        self.active = True
        try:
            yield self
        finally:
            self.active = False


def _install(module: nn.Module, spec: HookSpec, cap: _Capture) -> list[Any]:
    """Register the two hooks (they return None: the network's computation is untouched)."""
    mods = dict(module.named_modules())

    def grab(slot: str, side: str) -> Any:
        if side == "output":
            def hook(mod: nn.Module, args: tuple, out: Any) -> None:
                if cap.active:
                    setattr(cap, slot, out[0] if isinstance(out, (tuple, list)) else out)
            return hook

        def pre(mod: nn.Module, args: tuple) -> None:
            if cap.active and args:
                setattr(cap, slot, args[0])
        return pre

    handles = []
    for name, slot, side in ((spec.features, "features", spec.features_from), (spec.embedding, "embedding", spec.embedding_from)):
        fn = grab(slot, side)
        if side == "output":
            handles.append(mods[name].register_forward_hook(fn))
        else:
            handles.append(mods[name].register_forward_pre_hook(fn))
    return handles


# ------------------------------------------------------------------------------------------------
# the head
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadConfig:
    """Architecture of :class:`PredictionHead` (the data- and network-given sizes included, so a
    checkpoint rebuilds it).

    ``channels``: width of the head; ``num_blocks``: residual blocks (1; "bigger": 2); ``mixed``:
    eq. (14) (False: one direct output, the ablation "no mixed"); ``order``: 1 (``d eps/d gamma``) or
    2 (``d^2 eps/d gamma^2``); ``normalize_features``: GroupNorm on the features before the
    concatenation (app. C.2.1 "normalize x_embed", Tab. 5); ``extra_channels``: an extra image-shaped
    input (an upsampler's low-resolution image, app. C.2.1); ``extra_emb_dim``: an extra vector input
    added to the embedding (e.g. an embedding of the guidance scale).
    """

    feature_channels: int
    image_channels: int
    emb_dim: int
    channels: int = 32
    num_blocks: int = 1
    mixed: bool = True
    order: int = 1
    normalize_features: bool = False
    extra_channels: int = 0
    extra_emb_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise CorruptCheckpointError(f"unknown head config keys {unknown}")
        return cls(**d)


class PredictionHead(nn.Module):
    r"""``k_psi(features, emb, x_t, eps, gamma) ~ d eps/d gamma`` (or ``d^2 eps/d gamma^2``), app. C.2.1.

    ``forward`` computes in the parameters' dtype and returns it; ``gamma`` is a scalar or ``[B]``
    (float64 is fine).  With ``mixed=True`` the last convolution gives ``3 C`` channels combined by
    eq. (14) (:func:`~taylorsolve.diffusion.distillation.combine_outputs`).
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        c = config
        if c.order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {c.order}")
        if c.num_blocks < 1 or c.channels < 1:
            raise ValueError(f"need num_blocks >= 1 and channels >= 1, got {c.num_blocks}, {c.channels}")
        self.config = c
        self.feature_norm = nn.GroupNorm(_groups(c.feature_channels), c.feature_channels, eps=1e-6) \
            if c.normalize_features else nn.Identity()
        in_ch = c.feature_channels + 2 * c.image_channels + c.extra_channels
        self.conv_in = nn.Conv2d(in_ch, c.channels, 3, padding=1)
        self.extra_emb = nn.Linear(c.extra_emb_dim, c.emb_dim) if c.extra_emb_dim else None
        self.blocks = nn.ModuleList([ResBlock(c.channels, c.channels, c.emb_dim, 0.0) for _ in range(c.num_blocks)])
        self.norm_out = nn.GroupNorm(_groups(c.channels), c.channels, eps=1e-6)
        self.act = SiLU()
        n_out = (3 if c.mixed else 1) * c.image_channels
        self.conv_out = nn.Conv2d(c.channels, n_out, 3, padding=1)
        with torch.no_grad():  # a small start: k ~ 0 (the zero derivative, i.e. DDIM)
            self.conv_out.weight.mul_(1e-2)
            self.conv_out.bias.zero_()

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def raw(self, features: torch.Tensor, emb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
            extra: torch.Tensor | None = None, extra_emb: torch.Tensor | None = None) -> torch.Tensor:
        """The head's channels before the mixed combination (``3 C`` or ``C``)."""
        dt = self.dtype
        parts = [self.feature_norm(features.to(dt)), x.to(dt), eps.to(dt)]
        if self.config.extra_channels:
            if extra is None:
                raise ValueError(f"this head takes an extra {self.config.extra_channels}-channel input (extra=...)")
            parts.append(extra.to(dt))
        h = self.conv_in(torch.cat(parts, dim=1))
        e = emb.to(dt)
        if self.extra_emb is not None:
            if extra_emb is None:
                raise ValueError(f"this head takes an extra {self.config.extra_emb_dim}-dimensional embedding input (extra_emb=...)")
            e = e + self.extra_emb(extra_emb.to(dt))
        for blk in self.blocks:
            h = blk(h, e)
        return self.conv_out(self.act(self.norm_out(h)))

    def forward(self, features: torch.Tensor, emb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, gamma: Any,
                extra: torch.Tensor | None = None, extra_emb: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.raw(features, emb, x, eps, extra, extra_emb)
        return combine_outputs(raw, gamma, mixed=self.config.mixed, order=self.config.order)   # eq. (14)


def build_head(config: HeadConfig, *, seed: int | None = None, device: Any = None, dtype: torch.dtype = torch.float32
               ) -> PredictionHead:
    """A new :class:`PredictionHead` (initialised in float32 under ``torch.manual_seed(seed)`` if given)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                head = PredictionHead(config)
        else:
            head = PredictionHead(config)
    finally:
        torch.set_default_dtype(old)
    return head.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# the headed model
# ------------------------------------------------------------------------------------------------
def _as_diffusion_model(model: Any) -> DiffusionModel:
    if isinstance(model, HeadedModel):
        raise HookError("this model already has a head attached (attach_head returns a new HeadedModel; "
                        "use its .base to attach another)")
    if isinstance(model, DiffusionModel):
        return model
    if isinstance(model, nn.Module):
        from .sampling import diffusion_model

        return diffusion_model(model)
    raise HookError(f"attach_head needs a torch.nn.Module or a taylorsolve.diffusion.DiffusionModel, got {type(model).__name__}")


class HeadedModel(DiffusionModel):
    """A network with prediction head(s): ``headed(x, t, *cond)`` -> ``(prediction, k)`` (or
    ``(prediction, (k1, k2))`` with a second-order head); a :class:`~taylorsolve.diffusion.DiffusionModel`
    (continuous float64 ``t``) for :func:`taylorsolve.diffusion.sample` with ``derivative="head"``.

    Attributes: ``base`` (the network's own :class:`DiffusionModel`), ``heads`` (``[order-1 head]`` or
    ``[order-1, order-2]``), ``hooks`` (:class:`HookSpec`), ``overhead`` (fraction of one evaluation),
    ``overhead_info`` (the measurement), ``head_metadata`` (of loaded heads).
    """

    def __init__(self, base: DiffusionModel, heads: Sequence[PredictionHead], hooks: HookSpec, *,
                 overhead: float | None = None, extra_input: str | None = None, extra_emb_input: str | None = None,
                 head_only: Sequence[str] = ()):
        if base.module is None:
            raise HookError("attach_head needs a network that is a torch.nn.Module (forward hooks)")
        if base.parameterization == "edm":
            raise HookError("heads support eps, x0 and v networks; an EDM denoiser (parameterization='edm') is not supported")
        heads = list(heads)
        if not heads or len(heads) > 2:
            raise HookError(f"a headed model has one head (d eps/d gamma) or two (and d^2 eps/d gamma^2); got {len(heads)}")
        for i, h in enumerate(heads, start=1):
            if h.config.order != i:
                raise HookError(f"head {i} must predict derivative order {i}, but its config says order {h.config.order}")
        process = base.process if base.process is not None else get_process(None)
        super().__init__(self._headed_net, parameterization=base.parameterization, time="continuous", t_shape="batch",
                         dtype=base.dtype, t_dtype=torch.float64, process=process, overhead=overhead,
                         name=f"{base.name}+head")
        self.base = base
        self.module = base.module
        self.heads = heads
        self.hooks = hooks
        self.extra_input, self.extra_emb_input = extra_input, extra_emb_input
        self.head_only = tuple(head_only)
        self.overhead_info: dict[str, Any] = {}
        self.head_metadata: list[dict[str, Any]] = []
        self._capture = _Capture()
        self._handles = _install(base.module, hooks, self._capture)

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def head(self) -> PredictionHead:
        """The first-order head."""
        return self.heads[0]

    def remove(self) -> None:
        """Remove the hooks from the network (the headed model is unusable afterwards)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def eval(self) -> "HeadedModel":
        self.base.module.eval()
        for h in self.heads:
            h.eval()
        return self

    def to(self, *args: Any, **kwargs: Any) -> "HeadedModel":
        self.base.module.to(*args, **kwargs)
        for h in self.heads:
            h.to(*args, **kwargs)
        return self

    def _split_kwargs(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        net_kw = {k: v for k, v in kwargs.items() if k not in self.head_only}
        head_kw: dict[str, Any] = {}
        if self.extra_input is not None:
            head_kw["extra"] = kwargs.get(self.extra_input)
        if self.extra_emb_input is not None:
            head_kw["extra_emb"] = kwargs.get(self.extra_emb_input)
        return net_kw, head_kw

    # -- the network's forward pass with the hooks recording -----------------------------------------
    def features(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(prediction, eps, features, embedding)`` of one network pass at continuous times ``t``
        (float64 ``[B]`` or 0-d); ``x`` is cast to the network's dtype.  No head is run."""
        base = self.base
        x_in = x.to(base.dtype) if base.dtype is not None and x.dtype != base.dtype else x
        tt = torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, torch.Tensor) else t
        t_in = base.model_time(tt, x_in, self.process)
        net_kw, _ = self._split_kwargs(kwargs)
        with self._capture.recording() as cap:
            pred = base.net(x_in, t_in, *args, **net_kw)
        pred = getattr(pred, "sample", pred)
        feats, emb = cap.features, cap.embedding
        if feats is None or emb is None:
            which = [n for n, v in ((f"{self.hooks.features!r}", feats), (f"{self.hooks.embedding!r}", emb)) if v is None]
            raise HookError(f"the hooked module(s) {', '.join(which)} did not run in the network's forward pass "
                            f"(hooks {self.hooks.to_dict()})")
        if feats.ndim != 4 or feats.shape[0] != x.shape[0] or feats.shape[-2:] != x.shape[-2:]:
            raise HookError(f"the hooked feature map {self.hooks.features!r} has shape {tuple(feats.shape)}, but a head "
                            f"needs [B, C, H, W] at the image's resolution {tuple(x.shape[-2:])} (the last decoder features)")
        if emb.ndim != 2 or emb.shape[0] != x.shape[0]:
            raise HookError(f"the hooked time embedding {self.hooks.embedding!r} has shape {tuple(emb.shape)}; expected [B, D]")
        eps = pred if base.parameterization == "eps" else self.process.to_eps(pred, base.parameterization, x_in, tt)
        return pred, eps, feats, emb

    def run_heads(self, features: torch.Tensor, emb: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, t: Any,
                  **head_kw: Any) -> list[torch.Tensor]:
        """Every head on the given features (``t`` continuous, float64)."""
        gamma = self.process.schedule.gamma(torch.as_tensor(t, dtype=torch.float64))  # type: ignore[attr-defined]
        return [h(features, emb, x, eps, gamma, **head_kw).to(eps.dtype) for h in self.heads]

    def _headed_net(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        pred, eps, feats, emb = self.features(x, t, *args, **kwargs)
        _, head_kw = self._split_kwargs(kwargs)
        x_in = x.to(eps.dtype)
        ks = self.run_heads(feats, emb, x_in, eps, t, **head_kw)
        return pred, (ks[0] if len(ks) == 1 else tuple(ks))

    def __repr__(self) -> str:
        orders = "+".join(f"order {h.config.order}" for h in self.heads)
        ov = "unmeasured" if self.overhead is None else f"{100 * self.overhead:.2f} %"
        return f"HeadedModel({self.base.name}, heads: {orders}, hooks {self.hooks.to_dict()}, overhead {ov})"


def _sample_shape(module: nn.Module) -> tuple[int, int, int] | None:
    cfg = getattr(module, "config", None)
    if cfg is None:
        return None
    ch = getattr(cfg, "in_channels", None) if not isinstance(cfg, dict) else cfg.get("in_channels")
    res = None
    for key in ("resolution", "sample_size"):
        res = getattr(cfg, key, None) if not isinstance(cfg, dict) else cfg.get(key)
        if res is not None:
            break
    if isinstance(res, (tuple, list)):
        res = res[0] if len(set(res)) == 1 else None
    if ch is None or res is None:
        return None
    return int(ch), int(res), int(res)


def example_kwargs(module: nn.Module, batch: int, device: Any) -> dict[str, Any]:
    """Conditioning keyword arguments a network needs for a dummy pass (probing, overhead timing): its
    own ``example_kwargs(batch, device)`` when it has one (an upsampler's image, a guided model's labels
    and scale), else none."""
    fn = getattr(module, "example_kwargs", None)
    return dict(fn(batch, device)) if callable(fn) else {}


def probe_dimensions(base: DiffusionModel, hooks: HookSpec, *, sample_shape: Sequence[int] | None = None,
                     probe_kwargs: dict[str, Any] | None = None) -> dict[str, int]:
    """Feature channels, image channels and embedding width by one forward pass on a dummy batch of 2."""
    mod = base.module
    shape = tuple(sample_shape) if sample_shape is not None else _sample_shape(mod)
    if shape is None:
        raise HookError("cannot tell the network's input shape; pass sample_shape=(C, H, W) to attach_head")
    p = next(mod.parameters())
    cap = _Capture()
    handles = _install(mod, hooks, cap)
    try:
        x = torch.zeros((2, *shape), dtype=p.dtype, device=p.device)
        t = torch.full((2,), 0.5, dtype=torch.float64, device=p.device)
        proc = base.process if base.process is not None else get_process(None)
        was = mod.training
        mod.eval()
        with torch.no_grad(), cap.recording():
            kw = probe_kwargs if probe_kwargs is not None else example_kwargs(mod, 2, p.device)
            base.net(x, base.model_time(t, x, proc), **kw)
        mod.train(was)
    finally:
        for h in handles:
            h.remove()
    feats, emb = cap.features, cap.embedding
    if feats is None or emb is None:
        raise HookError(f"the hooked modules did not run in a forward pass (hooks {hooks.to_dict()})")
    if feats.ndim != 4 or tuple(feats.shape[-2:]) != tuple(shape[-2:]):
        raise HookError(f"the hooked feature map {hooks.features!r}:{hooks.features_from} has shape {tuple(feats.shape)}; "
                        f"a head needs the last decoder feature map at the input resolution {tuple(shape[-2:])}")
    if emb.ndim != 2:
        raise HookError(f"the hooked time embedding {hooks.embedding!r}:{hooks.embedding_from} has shape "
                        f"{tuple(emb.shape)}; expected [B, D]")
    return {"feature_channels": int(feats.shape[1]), "image_channels": int(shape[0]), "emb_dim": int(emb.shape[1])}


def attach_head(model: Any, head: PredictionHead | str | Path | None = None, *, head2: PredictionHead | str | Path | None = None,
                preset: str | None = None, features: str | None = None, embedding: str | None = None,
                channels: int | None = None, num_blocks: int = 1, mixed: bool = True, normalize_features: bool = True,
                extra_channels: int = 0, extra_emb_dim: int = 0, seed: int = 0,
                overhead: float | str | None = "measure", overhead_batch: int | None = None,
                sample_shape: Sequence[int] | None = None, probe_kwargs: dict[str, Any] | None = None,
                extra_input: str | None = None, extra_emb_input: str | None = None,
                head_only: Sequence[str] = ()) -> HeadedModel:
    """Attach a prediction head to ``model`` by forward hooks; returns a :class:`HeadedModel`.

    Args:
        model: the project's :class:`images.unet.UNet`, a ``taylorsolve.diffusion.from_diffusers(unet,
            scheduler)`` model, any ``DiffusionModel`` over a ``torch.nn.Module``, or a module (an eps
            network with continuous ``t``).
        head: ``None`` (a new, untrained head: distil it with :mod:`images.distill`), a
            :class:`PredictionHead`, or a head file (:func:`save_head`) checked against this teacher
            (:class:`~images.errors.HeadMismatchError` otherwise); its recorded hooks are used.
        head2: the same for a second-order head (``d^2 eps/d gamma^2``; TTM-3 with heads).
        preset / features / embedding: the hooks (module docstring, :func:`resolve_hooks`).
        channels, num_blocks, mixed, normalize_features, extra_channels, extra_emb_dim, seed: a new
            head's :class:`HeadConfig` and initialisation seed (``channels=None``: the feature map's width,
            as the U-Net's own last level).
        overhead: ``"measure"`` (default: :func:`measure_overhead`, 5 warm-up and 20 timed passes at
            ``overhead_batch``), a fraction (e.g. a value measured before), or ``None`` (no NFE adjustment).
        sample_shape: ``(C, H, W)`` for the probe pass that sizes a new head (read from the network's
            config when it has ``in_channels`` and ``resolution`` / ``sample_size``).
        probe_kwargs: keyword arguments for that probe pass (e.g. class labels a network requires).
        extra_input / extra_emb_input: keyword arguments of the network call also given to the head
            (``extra`` image, ``extra_emb`` vector); ``head_only``: keyword arguments given to the head only.
            A head file distilled with an extra image input (an upsampler's, :mod:`images.distill`)
            records its name, used when ``extra_input`` is not given.
    """
    base = _as_diffusion_model(model)
    if base.module is None:
        raise HookError("attach_head needs a network that is a torch.nn.Module (forward hooks)")
    p = next(base.module.parameters())
    metas: list[dict[str, Any]] = []
    loaded: list[PredictionHead | None] = []
    hooks: HookSpec | None = None
    for order, h in ((1, head), (2, head2)):
        if isinstance(h, (str, Path)):
            mod, meta = load_head(h, teacher=base)
            if mod.config.order != order:
                raise HeadMismatchError(f"head file {str(h)!r} predicts derivative order {mod.config.order}; "
                                        f"it was passed as {'head' if order == 1 else 'head2'} (order {order})")
            spec = HookSpec(**meta["hooks"])
            if hooks is not None and spec != hooks:
                raise HeadMismatchError(f"the two head files were distilled with different hooks: {hooks} vs {spec}")
            hooks = spec
            if extra_input is None:   # the conditioning image the head was distilled with (an upsampler's)
                extra_input = dict(meta.get("record", {}).get("inputs") or {}).get("extra_input")
            loaded.append(mod.to(device=p.device, dtype=p.dtype).eval())
            metas.append(meta)
        else:
            loaded.append(h)
    if hooks is None or features is not None or embedding is not None or preset is not None:
        explicit = resolve_hooks(base.module, preset=preset, features=features, embedding=embedding)
        if hooks is not None and explicit != hooks:
            raise HeadMismatchError(f"the head was distilled on the hooks {hooks.to_dict()}, not {explicit.to_dict()}")
        hooks = explicit
    else:
        resolve_hooks(base.module, features=f"{hooks.features}:{hooks.features_from}",
                      embedding=f"{hooks.embedding}:{hooks.embedding_from}")  # the modules must exist
    dims: dict[str, int] | None = None
    heads: list[PredictionHead] = []
    for order, h in ((1, loaded[0]), (2, loaded[1])):
        if h is None and order == 2:
            continue
        if h is None:
            dims = dims or probe_dimensions(base, hooks, sample_shape=sample_shape, probe_kwargs=probe_kwargs)
            cfg = HeadConfig(**dims, channels=channels or dims["feature_channels"], num_blocks=num_blocks, mixed=mixed, order=1,
                             normalize_features=normalize_features, extra_channels=extra_channels,
                             extra_emb_dim=extra_emb_dim)
            h = build_head(cfg, seed=seed, device=p.device, dtype=p.dtype).eval()
        elif not isinstance(h, PredictionHead):
            raise HookError(f"head must be a PredictionHead, a head file or None, got {type(h).__name__}")
        heads.append(h)
    headed = HeadedModel(base, heads, hooks, extra_input=extra_input, extra_emb_input=extra_emb_input, head_only=head_only)
    headed.head_metadata = metas
    if isinstance(overhead, str):
        if overhead != "measure":
            raise HookError(f"overhead must be 'measure', a fraction (0.05 for 5 %) or None, got {overhead!r}")
        info = measure_overhead(headed, batch=overhead_batch, repeats=20, probe_kwargs=probe_kwargs,
                                sample_shape=sample_shape)
        headed.overhead, headed.overhead_info = info["overhead"], info
    elif overhead is not None:
        ov = float(overhead)
        if not ov >= 0:
            raise HookError(f"overhead must be a fraction >= 0, got {overhead!r}")
        headed.overhead = ov
    return headed


# ------------------------------------------------------------------------------------------------
# overhead (app. C.2.5)
# ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_overhead(headed: HeadedModel, *, batch: int | None = None, warmup: int = 5, repeats: int = 50,
                     rounds: int = 1, sample_shape: Sequence[int] | None = None,
                     probe_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The head's cost as a fraction of the network's (app. C.2.5): the network alone against the network
    with the hooks recording plus the head(s), ``warmup`` passes of each, then ``repeats`` timed pairs
    (one pass of each, in alternating order, ``torch.cuda.synchronize`` around every pass on CUDA),
    ``rounds`` times over.  ``overhead`` is the median over the pairs of ``headed / plain - 1``: pairing
    adjacent passes cancels the drift of a shared machine, which moves the network's own time by more
    than the head costs (the means of separate blocks of passes differed by up to +-20 % here).
    ``model_s`` / ``headed_s`` are the medians of the single passes.  ``batch``: default 64 on a CPU,
    256 on CUDA (the bench command picks one that fills the GPU).
    """
    base = headed.base
    mod = base.module
    p = next(mod.parameters())
    shape = tuple(sample_shape) if sample_shape is not None else _sample_shape(mod)
    if shape is None:
        raise HookError("cannot tell the network's input shape; pass sample_shape=(C, H, W)")
    if batch is None:
        batch = 256 if p.device.type == "cuda" else 64
    x = torch.randn((batch, *shape), dtype=p.dtype, device=p.device)
    t = torch.full((batch,), 0.5, dtype=torch.float64, device=p.device)
    t_in = base.model_time(t, x, headed.process)
    kw = probe_kwargs if probe_kwargs is not None else example_kwargs(mod, batch, p.device)
    was = [mod.training] + [h.training for h in headed.heads]
    headed.eval()

    def plain() -> Any:
        return base.net(x, t_in, **kw)

    def with_head() -> Any:
        return headed._headed_net(x, t, **kw)

    def once(fn: Any) -> float:
        _sync(p.device)
        t0 = time.perf_counter()
        fn()
        _sync(p.device)
        return time.perf_counter() - t0

    for _ in range(warmup):
        plain()
        with_head()
    tm, th, ratios = [], [], []
    for i in range(max(1, rounds) * repeats):
        if i % 2:
            b, a = once(with_head), once(plain)
        else:
            a, b = once(plain), once(with_head)
        tm.append(a)
        th.append(b)
        ratios.append(b / a)
    mod.train(was[0])
    for h, w in zip(headed.heads, was[1:]):
        h.train(w)

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    q = sorted(ratios)
    return {"overhead": max(0.0, med(ratios) - 1.0), "model_s": med(tm), "headed_s": med(th), "batch": batch,
            "overhead_quartiles": (q[len(q) // 4] - 1.0, q[(3 * len(q)) // 4] - 1.0),
            "warmup": warmup, "repeats": repeats, "rounds": rounds, "device": str(p.device),
            "threads": torch.get_num_threads(), "head_parameters": sum(h.num_parameters() for h in headed.heads),
            "model_parameters": sum(q_.numel() for q_ in mod.parameters())}


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def teacher_fingerprint(model: Any) -> dict[str, Any]:
    """``{"sha256", "class", "parameters", "config"}`` of a teacher: SHA-256 of its weights (state-dict
    names, shapes and float32 values; independent of the device and of a float64 copy) and its config."""
    base = model.base if isinstance(model, HeadedModel) else model
    mod = base.module if isinstance(base, DiffusionModel) else base
    if not isinstance(mod, nn.Module):
        raise HookError(f"cannot fingerprint a {type(mod).__name__}")
    hsh = hashlib.sha256()
    n = 0
    for name, v in sorted(mod.state_dict().items()):
        if not torch.is_tensor(v):
            continue
        vv = v.detach().cpu()
        vv = vv.float() if vv.is_floating_point() else vv
        hsh.update(name.encode())
        hsh.update(str(tuple(vv.shape)).encode())
        hsh.update(vv.contiguous().numpy().tobytes())
        n += v.numel()
    cfg = getattr(mod, "config", None)
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    try:
        cfg = json.loads(json.dumps(dict(cfg) if cfg is not None else {}, default=str))
    except (TypeError, ValueError):
        cfg = {"repr": repr(cfg)}
    return {"sha256": hsh.hexdigest(), "class": type(mod).__name__, "parameters": n, "config": cfg}


def save_head(path: str | Path, head: PredictionHead, *, teacher: dict[str, Any], hooks: HookSpec,
              objective: dict[str, Any] | None = None, record: dict[str, Any] | None = None,
              raw_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a head file atomically: ``head.*`` weights (the EMA weights when distilled) and metadata
    (``format``, ``kind="head"``, ``head_config``, ``hooks``, ``teacher`` fingerprint, ``objective``, ``record``)."""
    from .checkpoint import atomic_save

    tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
    if raw_state is not None:
        tensors.update({f"raw.{k}": v for k, v in raw_state.items()})
    meta = {
        "format": HEAD_FORMAT,
        "kind": "head",
        "head_config": json.dumps(head.config.to_dict()),
        "hooks": json.dumps(hooks.to_dict()),
        "teacher": json.dumps(teacher),
        "objective": json.dumps(objective or {}),
        "record": json.dumps(record or {}, default=str),
        "torch": torch.__version__,
    }
    path = Path(path)
    atomic_save(tensors, path, meta)
    return path


def read_head_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a head file (JSON fields parsed); named errors for a missing or foreign file."""
    from safetensors import safe_open

    from .errors import CheckpointNotFoundError

    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(f"head file {str(p)!r} does not exist (distil one with `python -m images distill`)")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise CorruptCheckpointError(f"head file {str(p)!r} is not a readable safetensors file ({exc})") from exc
    if meta.get("format") != HEAD_FORMAT:
        raise CorruptCheckpointError(f"{str(p)!r} is not a head file (metadata format {meta.get('format')!r}, "
                                     f"expected {HEAD_FORMAT!r}); a model checkpoint is loaded with images.checkpoint.load_model")
    out: dict[str, Any] = dict(meta)
    try:
        for k in ("head_config", "hooks", "teacher", "objective", "record"):
            out[k] = json.loads(meta.get(k, "{}"))
    except ValueError as exc:
        raise CorruptCheckpointError(f"head file {str(p)!r} has unreadable metadata ({exc})") from exc
    out["path"] = str(p)
    return out


def _teacher_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diffs = []
    if saved.get("class") != now.get("class"):
        diffs.append(f"network class: head distilled on {saved.get('class')!r}, this is {now.get('class')!r}")
    sc, nc = saved.get("config") or {}, now.get("config") or {}
    for k in sorted(set(sc) | set(nc)):
        if sc.get(k) != nc.get(k):
            diffs.append(f"config.{k}: head's teacher {sc.get(k)!r} vs {nc.get(k)!r}")
    if not diffs and saved.get("sha256") != now.get("sha256"):
        diffs.append(f"weights differ (SHA-256 {str(saved.get('sha256'))[:12]}... vs {str(now.get('sha256'))[:12]}...): "
                     f"same architecture, another checkpoint")
    return diffs


def load_head(path: str | Path, *, teacher: Any = None) -> tuple[PredictionHead, dict[str, Any]]:
    """``(head, metadata)`` from a head file; with ``teacher`` (a network or DiffusionModel) the head must
    have been distilled from exactly that teacher (:class:`~images.errors.HeadMismatchError` listing
    what differs: network class, config entries, or weights)."""
    from safetensors.torch import load_file

    from .checkpoint import load_module_state

    meta = read_head_metadata(path)
    if teacher is not None:
        diffs = _teacher_diff(meta["teacher"], teacher_fingerprint(teacher))
        if diffs:
            raise HeadMismatchError(f"head file {meta['path']!r} was distilled from another teacher: " + "; ".join(diffs))
    try:
        cfg = HeadConfig.from_dict(meta["head_config"])
    except (TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"head file {meta['path']!r}: bad head_config ({exc})") from exc
    head = build_head(cfg)
    tensors = load_file(meta["path"])
    try:
        load_module_state(head, tensors, "head.", meta["path"])
    except Exception as exc:  # CheckpointMismatchError -> the head-specific error
        raise HeadMismatchError(str(exc)) from exc
    return head.eval(), meta


def export_head(src: str | Path, dst: str | Path, *, teacher: Any = None, extra_record: dict[str, Any] | None = None) -> Path:
    """The EMA head of a distillation run's head file as a small head file to ship: no raw weights, no
    optimizer state; the hooks, objective, teacher fingerprint and record are kept (``extra_record`` is
    added to the record).  With ``teacher`` the head is checked against it first."""
    head, meta = load_head(src, teacher=teacher)
    record = {k: v for k, v in meta["record"].items() if k != "optim_param_groups"}
    record.update(extra_record or {})
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    return save_head(dst, head, teacher=meta["teacher"], hooks=HookSpec(**meta["hooks"]), objective=meta["objective"],
                     record=record)


def head_config_for(headed_or_dims: Any, **overrides: Any) -> HeadConfig:
    """A :class:`HeadConfig` with the sizes of an existing head (or a dims dict) and ``overrides``."""
    if isinstance(headed_or_dims, HeadedModel):
        base = headed_or_dims.head.config.to_dict()
    elif isinstance(headed_or_dims, HeadConfig):
        base = headed_or_dims.to_dict()
    else:
        base = dict(headed_or_dims)
    base.update(overrides)
    return HeadConfig(**base)


__all__ += ["head_config_for", "probe_dimensions", "export_head"]
