r"""Evaluation building blocks: reference-trajectory error, classifier FD, Inception FID (optional),
smoothness of eps along the DDIM ODE, and sample grids.

* **Reference-trajectory error**: a sampler's output against the same model's ODE solution from the
  same noise ``x_1`` by a high-accuracy solve (:func:`images.sampling.reference_solve`), as the
  per-image RMSE ``sqrt(mean_pixels (x - x_ref)^2)``; two different reference solvers are run and
  their disagreement is reported beside the errors (it must stay under a tenth of the smallest
  error reported).  Comparing with the same model's ODE isolates solver error from model error.
* **Classifier FD**: :func:`images.classifier.classifier_fd` (digits only), its spread over seeds.
* **Inception FID**: only through ``torchmetrics`` or ``pytorch-fid`` with Inception weights the user
  has on disk (:func:`inception_fid`); otherwise skipped with the reason.
* **Smoothness along the ODE** (:func:`derivative_smoothness`): ``d eps / d gamma`` by one
  forward-mode JVP with the tangent ``(d xbar, d gamma) = (eps, 1)`` (eq. (10)-(12)) against central
  finite differences along the same line with steps ``dt`` in ``t``; GENIE's Taylor step needs eps
  to be smooth in gamma.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from taylorsolve.diffusion.schedules import LinearVPSchedule

from .checkpoint import atomic_write_text

__all__ = [
    "per_image_rmse",
    "trajectory_error",
    "denoise_with",
    "derivative_smoothness",
    "inception_fid",
    "save_grid",
    "write_csv",
]

_SCHED = LinearVPSchedule()


def per_image_rmse(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean over C, H, W of (x - ref)^2)`` per image, float64 ``[N]``."""
    if x.shape != ref.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}")
    d = (x.double() - ref.double()).flatten(1)
    return d.square().mean(1).sqrt()


def trajectory_error(x: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Mean, standard error and median of :func:`per_image_rmse` over the images."""
    r = per_image_rmse(x, ref)
    n = r.numel()
    return {"rmse": float(r.mean()), "rmse_se": float(r.std() / math.sqrt(n)) if n > 1 else 0.0,
            "rmse_median": float(r.median())}


@torch.no_grad()
def denoise_with(model: nn.Module, x: torch.Tensor, t: float = 1e-3) -> torch.Tensor:
    """``x_0 = (x_t - sigma_t eps(x_t, t)) / alpha_t`` with the model at time ``t`` (sec. 5's final step)."""
    from taylorsolve.diffusion import eps_function

    from .sampling import diffusion_model

    tt = torch.tensor(t, dtype=torch.float64)
    eps = eps_function(diffusion_model(model))(x, tt)
    a, s = float(_SCHED.alpha(tt)), float(_SCHED.sigma(tt))
    return (x - s * eps) / a


def derivative_smoothness(model: nn.Module, x1: torch.Tensor, times: Sequence[float],
                          dts: Sequence[float] = (1e-2, 1e-3, 1e-4), ref_steps: int = 200) -> list[dict[str, Any]]:
    r"""Autodiff against finite-difference ``d eps / d gamma`` along the DDIM ODE at several times.

    The states ``x_t`` come from a DPM-Solver-3 solve from ``x1`` (``ref_steps`` steps, log-SNR grid)
    evaluated at ``times``.  In ``(xbar, gamma)`` coordinates the ODE direction is ``(eps, 1)``; the
    autodiff derivative is ``D = d/ds eps(xbar + s eps_0, gamma + s)|_{s=0}`` by one ``torch.func.jvp``
    (eq. (12)), the finite difference ``(eps(xbar + h eps_0, gamma + h) - eps(xbar - h eps_0, gamma - h)) / 2h``
    with ``h = dt * d gamma/dt``.  Returns per time: ``t``, ``gamma``, ``|D|`` (RMS) and the relative
    difference ``|D - FD_h| / |D|`` per ``dt``.  Run it with a float64 copy of the model so that rounding
    does not mask the smoothness (``model.double()``).
    """
    from taylorsolve.diffusion import eps_function, sample

    from .sampling import diffusion_model

    eps_fn = eps_function(diffusion_model(model))
    dtype = next(model.parameters()).dtype
    ts = sorted({float(t) for t in times}, reverse=True)
    states = {1.0: x1.to(dtype)}
    if min(ts) < 1.0:
        # a fine log-SNR grid from 1 down to min(times), with the requested times inserted exactly
        lam = torch.linspace(float(_SCHED.log_snr(torch.tensor(1.0, dtype=torch.float64))),
                             float(_SCHED.log_snr(torch.tensor(min(ts), dtype=torch.float64))), ref_steps + 1,
                             dtype=torch.float64)
        fine = torch.cat([_SCHED.t_from_log_snr(lam), torch.tensor(ts, dtype=torch.float64)])
        fine = torch.unique(torch.round(fine * 1e12) / 1e12).flip(0)
        fine[0] = 1.0
        out = sample(diffusion_model(model), x1.to(dtype), None, method="dpm-solver-3", grid=fine, return_trajectory=True)
        for t in ts:
            states[t] = out.trajectory[int(torch.argmin((fine - t).abs()))]
    rows = []
    for t in ts:
        x = states[t]
        tt = torch.tensor(t, dtype=torch.float64)
        g = _SCHED.gamma(tt)
        xbar = x * torch.sqrt(1.0 + g * g).to(x.dtype)

        def eps_of(xb: torch.Tensor, gam: torch.Tensor) -> torch.Tensor:
            xx = xb / torch.sqrt(1.0 + gam * gam).to(xb.dtype)
            return eps_fn(xx, _SCHED.t_from_gamma(gam))

        with torch.no_grad():
            e0 = eps_of(xbar, g)
            _, d_ad = torch.func.jvp(eps_of, (xbar, g), (e0, torch.ones_like(g)))
            rms = float(d_ad.double().square().mean().sqrt())
            row: dict[str, Any] = {"t": t, "gamma": float(g), "deps_dgamma_rms": rms}
            dg_dt = float(_SCHED.dgamma_dt(tt))
            for dt in dts:
                h = dt * dg_dt
                if h >= float(g):
                    row[f"rel_diff_dt={dt:g}"] = float("nan")
                    continue
                hh = torch.tensor(h, dtype=torch.float64)
                fd = (eps_of(xbar + h * e0, g + hh) - eps_of(xbar - h * e0, g - hh)) / (2 * h)
                row[f"rel_diff_dt={dt:g}"] = float((fd - d_ad).double().square().mean().sqrt()) / max(rms, 1e-300)
        rows.append(row)
    return rows


def inception_fid(samples: torch.Tensor, reference: torch.Tensor, weights: str | Path | None) -> tuple[float | None, str]:
    """FID with Inception weights from disk (``torchmetrics`` or ``pytorch-fid``); ``(None, reason)`` if skipped.

    ``samples`` and ``reference`` in ``[-1, 1]``, 1 or 3 channels (grey is repeated to RGB).  Nothing
    is downloaded: without ``weights`` or without either package the FID is skipped.
    """
    if weights is None:
        return None, "Inception FID skipped: no --inception-weights PATH given (nothing is downloaded)"
    wpath = Path(weights)
    if not wpath.is_file():
        return None, f"Inception FID skipped: weights file {str(wpath)!r} does not exist"

    def rgb01(x: torch.Tensor) -> torch.Tensor:
        x = ((x.clamp(-1, 1) + 1) / 2).float()
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    try:
        from torchmetrics.image.fid import FrechetInceptionDistance  # type: ignore[import-not-found]

        fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(wpath))
        for i in range(0, reference.shape[0], 256):
            fid.update(rgb01(reference[i:i + 256]), real=True)
        for i in range(0, samples.shape[0], 256):
            fid.update(rgb01(samples[i:i + 256]), real=False)
        return float(fid.compute()), f"Inception FID by torchmetrics with weights {str(wpath)!r}"
    except ImportError:
        pass
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance  # type: ignore[import-not-found]
        from pytorch_fid.inception import InceptionV3  # type: ignore[import-not-found]
    except ImportError:
        return None, ("Inception FID skipped: neither torchmetrics nor pytorch-fid is installed "
                      "(pip install torchmetrics[image] or pytorch-fid; weights are read from disk)")
    import pytorch_fid.inception as pin  # type: ignore[import-not-found]

    original = pin.load_state_dict_from_url
    pin.load_state_dict_from_url = lambda *a, **k: torch.load(str(wpath), map_location="cpu")  # no download
    try:
        net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pin.load_state_dict_from_url = original

    @torch.no_grad()
    def acts(x: torch.Tensor) -> np.ndarray:
        out = [net(rgb01(x[i:i + 128]))[0].squeeze(-1).squeeze(-1).numpy() for i in range(0, x.shape[0], 128)]
        return np.concatenate(out).astype(np.float64)

    a, b = acts(samples), acts(reference)
    val = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    return float(val), f"Inception FID by pytorch-fid with weights {str(wpath)!r}"


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None,
              pad: int = 1) -> Path:
    """Tile images in ``[-1, 1]`` ``[N, C, H, W]`` into a PNG (Pillow), enlarged ``scale`` times (nearest)."""
    from PIL import Image

    x = images.detach().cpu().float().clamp(-1, 1)
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    canvas = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
    arr = ((canvas + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")
    scale = scale or max(1, 128 // max(h, w))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of dicts to CSV (columns: union of keys, first-seen order), atomically."""
    import csv
    import io

    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=cols)
    wr.writeheader()
    for r in rows:
        wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())
