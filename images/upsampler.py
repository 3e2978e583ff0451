r"""A cascaded diffusion upsampler's conditioning (GENIE sec. 5.4, app. C; Ho et al. 2021, cascaded diffusion).

The upsampler is an eps-model ``eps_theta(x_t, t, z, s)`` at the high resolution (``UNetConfig.cond_channels``,
``low_resolution``; :mod:`images.unet`) conditioned on ``z``, the low-resolution image *up-scaled* to the
high resolution and *noise-augmented* at level ``s``:

    low = down(x_0)                          (antialiased bilinear, :func:`downsample`)
    up  = upscale(low)                       (bilinear, :func:`upscale`)
    z   = alpha_s up + sigma_s n,  n ~ N(0, I)     (the linear VP schedule of the diffusion itself; eq. (1))

In training ``s ~ U[0, aug_max]``; in sampling ``s`` is fixed (:data:`SAMPLE_AUG_LEVEL`) and ``z`` is drawn
once per image and held fixed along the whole ODE trajectory, so sampling stays a deterministic ODE solve
(the conditioning is part of the model, not of the state).  Augmentation makes the upsampler robust to the
mismatch between the ground-truth low-resolution images it was trained on and a base model's samples it
is applied to in a cascade (Ho et al.'s "conditioning augmentation").

The distilled head of the upsampler sees ``z`` too (app. C.2.1: "for the upsampler, we also condition on
the noisy up-scaled lower resolution image"): :mod:`images.distill` draws that
conditioning for each distillation draw, and the head file records the input's name (``low_res``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from taylorsolve.diffusion.schedules import LinearVPSchedule

from .errors import ConfigError, ResolutionMismatchError

__all__ = ["downsample", "upscale", "augment", "condition", "SAMPLE_AUG_LEVEL", "DEFAULT_AUG_MAX"]

#: training draws the augmentation level ``s ~ U[0, DEFAULT_AUG_MAX]`` (diffusion time of the VP schedule)
DEFAULT_AUG_MAX = 0.1
#: the fixed augmentation level used when sampling (sigma_s ~ 0.045)
SAMPLE_AUG_LEVEL = 0.01

_SCHED = LinearVPSchedule()


def _check_images(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ResolutionMismatchError(f"{what} must be square images [B, C, H, H], got {shape}")
    return x


def downsample(x: torch.Tensor, low_resolution: int) -> torch.Tensor:
    """``[B, C, H, H] -> [B, C, r, r]`` by antialiased bilinear interpolation (``H`` a multiple of ``r``)."""
    x = _check_images(x, "the high-resolution images")
    h = x.shape[-1]
    if low_resolution <= 0 or h % low_resolution or low_resolution >= h:
        raise ResolutionMismatchError(f"cannot down-sample {h}x{h} images to {low_resolution}x{low_resolution}: "
                                      f"the low resolution must be a smaller divisor of {h}")
    return F.interpolate(x, size=(low_resolution, low_resolution), mode="bilinear", align_corners=False,
                         antialias=True)


def upscale(low: torch.Tensor, resolution: int) -> torch.Tensor:
    """``[B, C, r, r] -> [B, C, R, R]`` by bilinear interpolation (``R`` a multiple of ``r``)."""
    low = _check_images(low, "the low-resolution images")
    r = low.shape[-1]
    if resolution % r or resolution <= r:
        raise ResolutionMismatchError(f"cannot up-scale {r}x{r} images to {resolution}x{resolution}: the upsampler's "
                                      f"resolution must be a larger multiple of its input's")
    return F.interpolate(low, size=(resolution, resolution), mode="bilinear", align_corners=False)


def augment(up: torch.Tensor, aug_level: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """``alpha_s up + sigma_s n`` (eq. (1) at diffusion time ``s``; ``s = 0`` returns ``up`` itself)."""
    s = torch.as_tensor(aug_level, dtype=torch.float64)
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()) or bool((s > 1).any()):
        raise ConfigError(f"the augmentation level s must lie in [0, 1], got {aug_level!r}")
    if s.ndim == 1:
        s = s.reshape(-1, *([1] * (up.ndim - 1)))
    a = _SCHED.alpha(s).to(up.dtype)
    sg = _SCHED.sigma(s).to(up.dtype)
    return a * up + sg * noise.to(up.dtype)


def condition(low: torch.Tensor, resolution: int, aug_level: float = SAMPLE_AUG_LEVEL, *,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The conditioning keyword arguments of an upsampler for low-resolution images ``low``:
    ``{"low_res": z [B, C, R, R] (float32), "aug_level": s [B] (float64)}`` with ``z`` up-scaled and augmented
    at the fixed level ``aug_level`` (noise from ``generator``); pass them as ``cond=`` to sampling."""
    up = upscale(low.to(torch.float32), resolution)
    s = torch.full((up.shape[0],), float(aug_level), dtype=torch.float64)
    noise = torch.randn(up.shape, generator=generator, dtype=torch.float32)
    return {"low_res": augment(up, s, noise), "aug_level": s}
