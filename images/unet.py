r"""A DDPM++-style U-Net eps-model ``eps_theta(x_t, t)`` for the image pipeline (GENIE app. C.1).

Architecture (Song et al. 2021's DDPM++ without FIR resampling, the model GENIE used on CIFAR-10):
an input 3x3 convolution; per resolution ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3x3
convolutions, dropout, the embedding added after the first convolution, skip connections rescaled
by ``1/sqrt(2)``), self-attention at the resolutions in ``attn_resolutions``, BigGAN-style residual
blocks for down- and up-sampling (average pooling / nearest-neighbour); a middle block
(residual, attention, residual); a decoder mirroring the encoder with concatenated skips; then
GroupNorm, SiLU and a zero-initialised 3x3 convolution to eps.

Noise-level conditioning (``conditioning=``), the input of a sinusoidal (positional) embedding
followed by the MLP ``time_embed``:

* ``"log_gamma"`` (default): ``c_noise = log(gamma_t) / 4`` with ``gamma_t = sigma_t / alpha_t`` of the
  linear VP schedule (``LinearVPSchedule``, differentiable in ``t``) -- EDM's ``c_noise = ln(sigma)/4``
  with sigma the VE noise level ``gamma``.  The DDIM ODE runs in ``gamma`` (eq. (6)), so eps varies
  smoothly along it, which the second-order GENIE step needs (measured: README, "conditioning").
* ``"sinusoidal_t"``: ``c_noise = 1000 t`` (DDPM's integer-timestep scale, continuous).

Interface: ``model(x, t, class_labels=None, low_res=None, aug_level=None) -> eps`` (or ``v`` with
``prediction="v"``; :func:`images.sampling.diffusion_model` tells the diffusion layer which) with ``x [B, C, H, W]``, ``t`` a ``[B]`` or 0-d
tensor (or a number) of continuous times in ``(0, 1]`` of any float dtype; computation in the
parameters' dtype, the result in ``x``'s dtype.  Everything is plain differentiable torch (attention
by matmul and softmax), so ``torch.func.jvp`` works in ``x`` and ``t`` (GENIE's eq. (12)).
``class_labels`` (int ``[B]``; ``num_classes > 0``) adds a label embedding to the noise embedding;
index ``num_classes`` (or ``class_labels=None``) is the "no label" embedding used for classifier-free
guidance.

A cascaded upsampler (GENIE sec. 5.4, app. C; Ho et al.'s cascaded diffusion) sets ``cond_channels`` (and
``low_resolution``, the resolution it up-samples from): ``low_res`` is then the *up-scaled*, noise-augmented
low-resolution image ``[B, cond_channels, H, W]`` at the model's own resolution, concatenated to ``x`` at the
input, and ``aug_level`` (``[B]`` or 0-d, the augmentation's diffusion time ``s``; default 0) enters the
embedding through ``aug_embed`` (a positional embedding of ``1000 s`` and an MLP).  :mod:`images.upsampler`
prepares the conditioning (down-scaling, up-scaling, augmentation).

Hook points (the distilled head of the next issue attaches here by forward hooks, nothing edited):

* ``model.time_embed`` -> the noise-level embedding ``temb`` ``[B, emb_dim]``;
* ``model.embedding`` (``nn.Identity``) -> the embedding the blocks use (``temb`` plus the label embedding);
* ``model.last_features`` (``nn.Identity``) -> the last decoder feature map ``[B, ch * ch_mult[0], H, W]``
  before the output norm and convolution.

Named configurations (``CONFIGS``; unconditional parameter counts; ``python -m images bench --list-configs``
prints them for both input shapes):

========== ==== ============ ========== ============ ======= ========= ======= =================================
config      ch   ch_mult      res blocks attention    dropout emb dim   params  use
========== ==== ============ ========== ============ ======= ========= ======= =================================
``tiny``     16  (1, 2, 4)    1          (8,)         0.1     128       0.77 M  digits 16x16 on a CPU (minutes)
``small``    64  (1, 2, 2, 2) 2          (16,)        0.1     256       9.91 M  32x32 on a small GPU / patient CPU
``cifar``   128  (1, 2, 2, 2) 8          (16,)        0.1     512       108.4 M GENIE's CIFAR-10 model (GPU)
========== ==== ============ ========== ============ ======= ========= ======= =================================

(``tiny`` counted for 1 x 16 x 16 input, ``small`` and ``cifar`` for 3 x 32 x 32; the middle block
always has attention.)

``cifar`` is the shape of score_sde's ``ddpmpp_deep_continuous`` VP model (the checkpoint GENIE used
on CIFAR-10, GENIE Tab. 4: 8 blocks per resolution, attention at 16, 128 base channels, 107M
parameters; Tab. 4 prints channel multipliers 1,2,3,4, but that checkpoint's config and its 107M
parameters are (1, 2, 2, 2); ours has 108.4M, the difference being FIR-free resampling and the
embedding layout).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taylorsolve.diffusion.schedules import LinearVPSchedule

from .errors import ClassLabelError, ConfigError, MissingConditioningError, ResolutionMismatchError, UnknownNameError

__all__ = ["UNetConfig", "UNet", "CONFIGS", "CONDITIONINGS", "get_config", "build_unet", "float32_unet",
           "noise_conditioning"]

CONDITIONINGS = ("log_gamma", "sinusoidal_t")
#: what the network can predict (``UNetConfig.prediction``)
PREDICTIONS = ("eps", "v")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet` (data shape and classes included, so a checkpoint rebuilds it)."""

    name: str = "custom"
    in_channels: int = 1
    resolution: int = 16
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (8,)
    dropout: float = 0.0
    num_classes: int = 0
    conditioning: str = "log_gamma"
    emb_mult: int = 4
    num_heads: int = 1
    skip_rescale: bool = True
    #: channels of a conditioning image concatenated to ``x`` (a cascaded upsampler's up-scaled low-res input)
    cond_channels: int = 0
    #: the resolution an upsampler up-samples from (0: not an upsampler)
    low_resolution: int = 0
    #: what the network predicts: ``"eps"`` (the noise, eq. (7)) or ``"v"`` (``alpha_t eps - sigma_t x_0``,
    #: whose eps ``alpha_t v + sigma_t x_t`` scales the network's error by ``alpha_t`` at high noise)
    prediction: str = "eps"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        for k in ("cond_channels", "low_resolution"):  # upsampler fields: absent for ordinary models, so records
            if not d[k]:                                # and resumable runs from before they existed still match
                del d[k]
        if d["prediction"] == "eps":                    # likewise the default prediction
            del d["prediction"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown U-Net config keys {unknown}")
        d = dict(d)
        for k in ("ch_mult", "attn_resolutions"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)


#: named architectures (data shape, classes and conditioning are filled in by :func:`get_config`)
CONFIGS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(name="tiny", ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1,
                       emb_mult=8),
    "small": UNetConfig(name="small", ch=64, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    "cifar": UNetConfig(name="cifar", ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=8, attn_resolutions=(16,), dropout=0.1),
}


def get_config(name: str, *, in_channels: int | None = None, resolution: int | None = None, **overrides: Any) -> UNetConfig:
    """The named config with the data shape and any field overridden (``conditioning=``, ``dropout=``, ...)."""
    if name not in CONFIGS:
        raise UnknownNameError(f"unknown model config {name!r}; known configs: {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]
    if in_channels is not None:
        overrides["in_channels"] = int(in_channels)
    if resolution is not None:
        overrides["resolution"] = int(resolution)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "conditioning" in overrides and overrides["conditioning"] not in CONDITIONINGS:
        raise UnknownNameError(f"unknown conditioning {overrides['conditioning']!r}; known: {', '.join(CONDITIONINGS)}")
    if "prediction" in overrides and overrides["prediction"] not in PREDICTIONS:
        raise UnknownNameError(f"unknown prediction {overrides['prediction']!r}; known: {', '.join(PREDICTIONS)}")
    return replace(cfg, **overrides)


def build_unet(config: UNetConfig | str, **overrides: Any) -> "UNet":
    """A float32 :class:`UNet` from a config or a config name (see :func:`get_config`)."""
    if isinstance(config, str):
        config = get_config(config, **overrides)
    elif overrides:
        config = replace(config, **overrides)
    return float32_unet(config)


def float32_unet(config: UNetConfig) -> "UNet":
    """``UNet(config)`` initialised in float32 whatever ``torch.get_default_dtype()`` is (the
    initial weights, and so a training run, must not depend on that global setting)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        return UNet(config)
    finally:
        torch.set_default_dtype(old)


# ------------------------------------------------------------------------------------------------
# noise-level conditioning
# ------------------------------------------------------------------------------------------------
_SCHEDULE = LinearVPSchedule()


def noise_conditioning(t: torch.Tensor, kind: str) -> torch.Tensor:
    """``c_noise(t)``: ``log(gamma_t) / 4`` (``"log_gamma"``) or ``1000 t`` (``"sinusoidal_t"``), float64.

    ``gamma_t = sqrt(exp(0.1 t + 9.95 t^2) - 1)`` (linear VP, app. C.1) is computed in float64 by
    :class:`LinearVPSchedule` (differentiable, also under ``torch.func.jvp``).
    """
    if kind == "log_gamma":
        return 0.25 * torch.log(_SCHEDULE.gamma(t))
    if kind == "sinusoidal_t":
        return 1000.0 * t.to(torch.float64)
    raise UnknownNameError(f"unknown conditioning {kind!r}; known: {', '.join(CONDITIONINGS)}")


class PositionalEmbedding(nn.Module):
    """``c -> [cos(c f_j), sin(c f_j)]_j``, ``f_j = (1/10000)^(j/(n/2 - 1))`` (DDPM / EDM's positional embedding)."""

    def __init__(self, num_channels: int, max_positions: float = 10000.0):
        super().__init__()
        half = num_channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        ang = c[:, None] * self.freqs.to(c.dtype)[None, :]
        return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)


# ------------------------------------------------------------------------------------------------
# activation
# ------------------------------------------------------------------------------------------------
def silu(x: torch.Tensor) -> torch.Tensor:
    """``x sigmoid(x)`` (SiLU) written out: numerically ``F.silu`` to round-off, but differentiable by
    *nested* forward-mode AD (``F.silu``'s backward has no forward-mode formula in torch 2.x, so
    ``jvp`` of ``jvp`` -- the second derivative of eps along the ODE, app. B.3 -- fails through it)."""
    return x * torch.sigmoid(x)


class SiLU(nn.Module):
    """Module form of :func:`silu` (no parameters: checkpoints of ``nn.SiLU`` models load unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silu(x)


# ------------------------------------------------------------------------------------------------
# blocks
# ------------------------------------------------------------------------------------------------
def _groups(ch: int) -> int:
    return min(32, max(1, ch // 4))


def _zero_init(m: nn.Module, scale: float = 1e-5) -> nn.Module:
    """Near-zero initial weights (DDPM++'s ``init_scale = 0``): the block starts as the identity."""
    with torch.no_grad():
        m.weight.mul_(scale)
        if getattr(m, "bias", None) is not None:
            m.bias.zero_()
    return m


class ResBlock(nn.Module):
    """BigGAN-style residual block with the embedding added after the first convolution (DDPM++)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, *, up: bool = False,
                 down: bool = False, skip_rescale: bool = True):
        super().__init__()
        self.up, self.down, self.skip_rescale = up, down, skip_rescale
        self.norm0 = nn.GroupNorm(_groups(in_ch), in_ch, eps=1e-6)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm1 = nn.GroupNorm(_groups(out_ch), out_ch, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = silu(self.norm0(x))
        h = self._resample(h)
        x = self._resample(x)
        h = self.conv0(h)
        h = h + self.emb_proj(silu(emb))[:, :, None, None].to(h.dtype)
        h = self.conv1(self.dropout(silu(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        out = x + h
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out


class AttnBlock(nn.Module):
    """Self-attention over the ``H W`` positions (plain matmul + softmax: works under forward-mode AD)."""

    def __init__(self, ch: int, num_heads: int = 1, skip_rescale: bool = True):
        super().__init__()
        if ch % num_heads:
            raise ValueError(f"attention channels {ch} not divisible by num_heads {num_heads}")
        self.num_heads, self.skip_rescale = num_heads, skip_rescale
        self.norm = nn.GroupNorm(_groups(ch), ch, eps=1e-6)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        nh = self.num_heads
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, nh, c // nh, hh * ww).unbind(1)  # [B, nh, d, N]
        w = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) * (c // nh) ** -0.5, dim=-1)
        h = torch.einsum("bhnm,bhdm->bhdn", w, v).reshape(b, c, hh, ww)
        out = x + self.proj(h)
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out


# ------------------------------------------------------------------------------------------------
# the U-Net
# ------------------------------------------------------------------------------------------------
class UNet(nn.Module):
    """DDPM++-style eps-model; see the module docstring for the interface and the hook points."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        cfg = config
        if cfg.conditioning not in CONDITIONINGS:
            raise UnknownNameError(f"unknown conditioning {cfg.conditioning!r}; known: {', '.join(CONDITIONINGS)}")
        if cfg.prediction not in PREDICTIONS:
            raise UnknownNameError(f"unknown prediction {cfg.prediction!r}; known: {', '.join(PREDICTIONS)}")
        n_levels = len(cfg.ch_mult)
        if cfg.resolution % (2 ** (n_levels - 1)):
            raise ConfigError(f"resolution {cfg.resolution} must be divisible by 2^{n_levels - 1} for ch_mult {cfg.ch_mult}")
        self.config = cfg
        ch, emb_dim = cfg.ch, cfg.ch * cfg.emb_mult
        self.emb_dim = emb_dim
        self.noise_embed = PositionalEmbedding(ch)
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None
        if cfg.cond_channels < 0 or (cfg.cond_channels > 0) != (cfg.low_resolution > 0):
            raise ConfigError(f"an upsampler sets both cond_channels and low_resolution (> 0); got cond_channels "
                              f"{cfg.cond_channels}, low_resolution {cfg.low_resolution}")
        if cfg.low_resolution and (cfg.low_resolution >= cfg.resolution or cfg.resolution % cfg.low_resolution):
            raise ResolutionMismatchError(f"an upsampler's low_resolution ({cfg.low_resolution}) must divide its "
                                          f"resolution ({cfg.resolution}) and be smaller")
        # the noise-augmentation level of an upsampler's conditioning (cascaded diffusion)
        self.aug_embed = (nn.Sequential(PositionalEmbedding(ch), nn.Linear(ch, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim)) if cfg.cond_channels > 0 else None)
        self.embedding = nn.Identity()

        rb = dict(emb_dim=emb_dim, dropout=cfg.dropout, skip_rescale=cfg.skip_rescale)
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skip_chs = [ch]
        cur, res = ch, cfg.resolution
        for i, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                out = ch * mult
                layer = nn.ModuleList([ResBlock(cur, out, **rb)])
                if res in cfg.attn_resolutions:
                    layer.append(AttnBlock(out, cfg.num_heads, cfg.skip_rescale))
                self.down.append(layer)
                cur = out
                skip_chs.append(cur)
            if i != n_levels - 1:
                self.down.append(nn.ModuleList([ResBlock(cur, cur, down=True, **rb)]))
                skip_chs.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, **rb), AttnBlock(cur, cfg.num_heads, cfg.skip_rescale),
                                  ResBlock(cur, cur, **rb)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                out = ch * mult
                layer = nn.ModuleList([ResBlock(cur + skip_chs.pop(), out, **rb)])
                if res in cfg.attn_resolutions:
                    layer.append(AttnBlock(out, cfg.num_heads, cfg.skip_rescale))
                self.up.append(layer)
                cur = out
            if i != 0:
                self.up.append(nn.ModuleList([ResBlock(cur, cur, up=True, **rb)]))
                res *= 2
        assert not skip_chs
        self.last_features = nn.Identity()
        self.norm_out = nn.GroupNorm(_groups(cur), cur, eps=1e-6)
        self.conv_out = _zero_init(nn.Conv2d(cur, cfg.in_channels, 3, padding=1))
        self.feature_channels = cur

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _times(self, t: Any, batch: int, device: torch.device) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=torch.float64)
        if not torch.is_floating_point(t):
            raise TypeError(f"t must hold continuous times in (0, 1] (a float tensor), got dtype {t.dtype}")
        t = t.to(device)
        if t.ndim == 0:
            return t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be 0-d or of shape [{batch}] (one time per image), got {tuple(t.shape)}")
        return t

    def _labels(self, class_labels: Any, batch: int, device: torch.device) -> torch.Tensor | None:
        nc = self.config.num_classes
        if self.class_embed is None:
            if class_labels is not None:
                raise ClassLabelError("class_labels given to an unconditional model (num_classes = 0)")
            return None
        if class_labels is None:
            return torch.full((batch,), nc, dtype=torch.long, device=device)
        y = torch.as_tensor(class_labels, device=device)
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"class_labels must be integers, got dtype {y.dtype}")
        y = y.long()
        if y.ndim == 0:
            y = y.expand(batch)
        if y.shape != (batch,):
            raise ClassLabelError(f"class_labels must be 0-d or of shape [{batch}], got {tuple(y.shape)}")
        if bool(((y < 0) | (y > nc)).any()):
            raise ClassLabelError(f"class_labels must lie in [0, {nc - 1}] (or {nc} = no label); got "
                                  f"{y.min().item()}..{y.max().item()}")
        return y

    def embed(self, t: torch.Tensor, class_labels: Any = None, batch: int | None = None,
              aug_level: Any = None) -> torch.Tensor:
        """The embedding the residual blocks use, ``[B, emb_dim]`` (through the hookable modules)."""
        batch = t.shape[0] if batch is None else batch
        dev = self.conv_in.weight.device
        t = self._times(t, batch, dev)
        # the embedding is computed in float32 (float64 for a float64 model), then cast
        c = noise_conditioning(t, self.config.conditioning).to(torch.promote_types(self.dtype, torch.float32))
        temb = self.time_embed(self.noise_embed(c).to(self.dtype))
        y = self._labels(class_labels, batch, dev)
        emb = temb if y is None else temb + self.class_embed(y)
        if self.aug_embed is not None:
            s = self._times(0.0 if aug_level is None else aug_level, batch, dev)
            emb = emb + self.aug_embed((1000.0 * s).to(self.dtype))
        elif aug_level is not None:
            raise ConfigError("aug_level given to a model without a conditioning image (not an upsampler)")
        return self.embedding(emb)

    def example_kwargs(self, batch: int, device: Any = None) -> dict[str, torch.Tensor]:
        """The conditioning a dummy pass needs (:func:`images.heads.example_kwargs`): an upsampler's
        (zero) conditioning image and augmentation level; nothing for other models."""
        cfg = self.config
        if not cfg.cond_channels:
            return {}
        return {"low_res": torch.zeros((batch, cfg.cond_channels, cfg.resolution, cfg.resolution), device=device),
                "aug_level": torch.zeros(batch, dtype=torch.float64, device=device)}

    def _conditioning(self, x: torch.Tensor, low_res: Any) -> torch.Tensor | None:
        """The upsampler's conditioning image, checked against ``x`` (named errors)."""
        cfg = self.config
        if cfg.cond_channels == 0:
            if low_res is not None:
                raise ConfigError("low_res given to a model without a conditioning input (cond_channels = 0): "
                                  "not an upsampler")
            return None
        if low_res is None:
            raise MissingConditioningError(
                f"this upsampler ({cfg.low_resolution}x{cfg.low_resolution} -> {cfg.resolution}x{cfg.resolution}) "
                f"needs its low-resolution input: low_res=[B, {cfg.cond_channels}, {cfg.resolution}, {cfg.resolution}] "
                f"(up-scaled and noise-augmented by images.upsampler.condition)")
        if not isinstance(low_res, torch.Tensor) or low_res.ndim != 4:
            raise MissingConditioningError(f"low_res must be a [B, C, H, W] tensor, got {type(low_res).__name__}"
                                           + (f" of shape {tuple(low_res.shape)}" if isinstance(low_res, torch.Tensor) else ""))
        b, c, h, w = low_res.shape
        if (h, w) != tuple(x.shape[-2:]):
            hint = (" (a low-resolution image: up-scale it first with images.upsampler.condition)"
                    if (h, w) == (cfg.low_resolution, cfg.low_resolution) else "")
            raise ResolutionMismatchError(
                f"the upsampler's conditioning image is {h}x{w} but x is {x.shape[-2]}x{x.shape[-1]}{hint}")
        if c != cfg.cond_channels or b != x.shape[0]:
            raise ResolutionMismatchError(f"low_res must be [{x.shape[0]}, {cfg.cond_channels}, {h}, {w}], "
                                          f"got {tuple(low_res.shape)}")
        return low_res

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: Any, class_labels: Any = None, low_res: Any = None,
                aug_level: Any = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"x must be [B, {self.config.in_channels}, H, W], got {tuple(x.shape)}")
        if self.config.cond_channels and tuple(x.shape[-2:]) != (self.config.resolution,) * 2:
            raise ResolutionMismatchError(f"this upsampler generates {self.config.resolution}x{self.config.resolution} "
                                          f"images; x is {x.shape[-2]}x{x.shape[-1]}")
        cond_img = self._conditioning(x, low_res)
        emb = self.embed(t, class_labels, batch=x.shape[0], aug_level=aug_level)
        xin = x if cond_img is None else torch.cat([x, cond_img.to(x.dtype)], dim=1)
        h = self.conv_in(xin.to(self.dtype))
        hs = [h]
        for layer in self.down:
            for m in layer:
                h = m(h, emb) if isinstance(m, ResBlock) else m(h)
            hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for layer in self.up:
            if not layer[0].up:
                h = torch.cat([h, hs.pop()], dim=1)
            for m in layer:
                h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        h = self.last_features(h)
        out = self.conv_out(silu(self.norm_out(h)))
        return out.to(x.dtype)
