r"""A small digits classifier trained by the project; its penultimate features define the "classifier FD".

The classifier FD is the Frechet distance between Gaussians fitted to the 64-d penultimate features
of two image sets (the construction of FID, Heusel et al. 2017, with this classifier in place of
Inception; it is not FID and its values are not comparable to FID values):

    FD = |mu_1 - mu_2|^2 + tr(C_1 + C_2 - 2 (C_1^{1/2} C_2 C_1^{1/2})^{1/2}).

Architecture (16x16 grey input in ``[-1, 1]``): conv 3x3 (16) - SiLU - conv 3x3 stride 2 (32) - SiLU -
conv 3x3 stride 2 (64) - SiLU - linear 1024 -> 64 - SiLU (the features) - linear 64 -> 10.
Trained (:func:`train_classifier`) with Adam on the digits training split with random one-pixel shifts;
the committed weights (``images/checkpoints/digits_classifier/``) come from ``python -m images classifier --retrain``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import FORMAT, atomic_save, atomic_write_text, find_checkpoint
from .errors import CheckpointMismatchError, CorruptCheckpointError

__all__ = ["DigitsClassifier", "train_classifier", "load_classifier", "frechet_distance", "features",
           "classifier_fd", "FDResult"]


class DigitsClassifier(nn.Module):
    """The digits CNN; :meth:`features` gives the 64-d penultimate features."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, feature_dim: int = 64):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "width": width, "feature_dim": feature_dim}
        w = width
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, feature_dim]`` of images in ``[-1, 1]`` (clamped, cast to the weights' dtype)."""
        w = self.head.weight
        return self.fc(self.conv(x.to(device=w.device, dtype=w.dtype).clamp(-1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts by -1, 0 or +1 pixel in each direction (background value -1 shifted in)."""
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    n, _, h, w = x.shape
    d = torch.randint(0, 3, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = pad[i, :, d[i, 0]:d[i, 0] + h, d[i, 1]:d[i, 1] + w]
    return out


def train_classifier(epochs: int = 40, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                     progress: bool = False) -> tuple[DigitsClassifier, dict[str, Any]]:
    """Train on the digits training split; returns ``(model, info)`` with held-out accuracy and time."""
    from tqdm.auto import tqdm

    from .data import load_digits

    ds = load_digits()
    x, y = ds.train_images()
    xt, yt = ds.held_out()
    torch.manual_seed(seed)
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    model.train()
    for _ in tqdm(range(epochs), disable=not progress, desc="classifier"):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(_shift(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
        acc_train = float((model(x).argmax(1) == y).float().mean())
    info = {"held_out_accuracy": acc, "train_accuracy": acc_train, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "seed": seed, "train_seconds": time.perf_counter() - t0,
            "parameters": sum(p.numel() for p in model.parameters())}
    return model, info


def save_classifier(model: DigitsClassifier, path: str | Path, info: dict[str, Any]) -> None:
    meta = {"format": FORMAT, "kind": "classifier", "config": json.dumps(model.config), "info": json.dumps(info),
            "model_config": json.dumps({}), "step": "0"}
    atomic_save({f"classifier.{k}": v for k, v in model.state_dict().items()}, path, meta)
    atomic_write_text(Path(path).with_suffix(".json"), json.dumps(info, indent=2) + "\n")


def load_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """The committed classifier (default) or one saved by :func:`save_classifier`, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from . import DEFAULT_CLASSIFIER

    p = find_checkpoint(path if path is not None else DEFAULT_CLASSIFIER)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(p))
        cfg = json.loads(meta["config"])
    except Exception as exc:  # noqa: BLE001
        raise CorruptCheckpointError(f"classifier file {str(p)!r} cannot be read ({exc})") from exc
    model = DigitsClassifier(**cfg).float()
    sd = {k[len("classifier."):]: v for k, v in tensors.items() if k.startswith("classifier.")}
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise CheckpointMismatchError(f"classifier file {str(p)!r} does not fit the classifier ({exc})") from exc
    model.info = json.loads(meta.get("info", "{}"))  # type: ignore[attr-defined]
    return model.eval()


@torch.no_grad()
def features(model: DigitsClassifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features ``[N, 64]`` (float64) of images ``x`` in ``[-1, 1]`` (clamped)."""
    p = next(model.parameters())
    out = [model.features(x[i:i + batch_size].to(p)).double().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: torch.Tensor | np.ndarray, f2: torch.Tensor | np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to two feature sets ``[N1, d]``, ``[N2, d]`` (float64)."""
    a = np.asarray(f1, dtype=np.float64)
    b = np.asarray(f2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N, d] feature sets with N >= 2 and equal d, got {a.shape}, {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s1 = _sqrtm_psd(c1)
    m = s1 @ c2 @ s1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)


class FDResult(dict):
    """``{"mean", "std", "values"}``: classifier FD over seeds (std: sample standard deviation)."""


def classifier_fd(model: DigitsClassifier, sample_sets: Sequence[torch.Tensor], reference: torch.Tensor) -> FDResult:
    """Classifier FD of each sample set (one per seed) against ``reference`` images; mean and spread."""
    ref = features(model, reference)
    vals = [frechet_distance(features(model, s), ref) for s in sample_sets]
    arr = np.asarray(vals)
    return FDResult(mean=float(arr.mean()), std=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, values=vals)
