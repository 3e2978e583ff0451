r"""Checkpoints of the image pipeline: one safetensors file, written atomically, read with named errors.

A training checkpoint (``<run dir>/checkpoint.safetensors``, kind ``"train"``) holds

* ``model.<name>`` -- the raw weights, ``ema.<name>`` -- the EMA weights (what sampling uses);
* ``optim.<param index>.<key>`` -- Adam's state; ``scaler.<key>`` -- the fp16 loss scaler (``--amp fp16``);
* string metadata: ``format``, ``kind``, ``step``, ``model_config`` (JSON of :class:`~images.unet.UNetConfig`),
  ``train_args`` (JSON), ``optim_param_groups`` (JSON), ``train_seconds`` (training time so far,
  summed over resumed runs), ``torch``, ``written``.

The random state needs no tensors: every random draw of step ``k`` comes from generators seeded by
``(seed, k)`` (:func:`images.data.step_generator`), so ``seed`` and ``step`` restore it exactly.

A weights file (kind ``"weights"``, :func:`export_weights`) keeps only ``ema.*`` (and optionally
``model.*``) and the metadata: the committed checkpoints are of this kind.

Files are written to a temporary file in the target folder and moved into place with
``os.replace`` (atomic on POSIX and Windows), so an interrupted write never damages the previous file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import CheckpointMismatchError, CheckpointNotFoundError, CorruptCheckpointError

__all__ = [
    "FORMAT",
    "CHECKPOINT_NAME",
    "atomic_save",
    "atomic_write_text",
    "read_checkpoint",
    "read_metadata",
    "load_module_state",
    "load_model",
    "export_weights",
    "find_checkpoint",
]

FORMAT = "taylorsolve-images-1"
CHECKPOINT_NAME = "checkpoint.safetensors"


def _tmp_in(folder: Path, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def _usual_permissions(path: str) -> None:
    """mkstemp (and safetensors) create 0600 files; give the permissions of an ordinary new file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def _atomic(path: str | os.PathLike, suffix: str) -> Iterator[str]:
    """A temporary path in ``path``'s folder to write; on success it replaces ``path`` (``os.replace``),
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_in(path.parent, suffix)
    try:
        yield tmp
        _usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (temporary file in the same folder + ``os.replace``)."""
    from safetensors.torch import save_file

    with _atomic(path, ".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with _atomic(path, Path(path).suffix or ".txt") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself if a file, ``path/checkpoint.safetensors`` if a folder; else :class:`CheckpointNotFoundError`."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint file {str(p)!r} does not exist (train one with `python -m images train ... --out DIR`, "
            f"or pass the path of a .safetensors checkpoint)"
        )
    return p


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint with the JSON fields parsed (``model_config``, ``train_args``, ...)."""
    from safetensors import safe_open

    p = find_checkpoint(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CorruptCheckpointError(f"checkpoint file {str(p)!r} is not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CorruptCheckpointError(
            f"checkpoint file {str(p)!r} was not written by `python -m images` (metadata format "
            f"{meta.get('format')!r}, expected {FORMAT!r})"
        )
    out: dict[str, Any] = dict(meta)
    try:
        for k in ("model_config", "train_args", "optim_param_groups", "extra"):
            if k in meta:
                out[k] = json.loads(meta[k])
        out["step"] = int(meta.get("step", 0))
        out["train_seconds"] = float(meta.get("train_seconds", 0.0))
    except (ValueError, TypeError) as exc:
        raise CorruptCheckpointError(f"checkpoint file {str(p)!r} has unreadable metadata ({exc})") from exc
    if "model_config" not in out:
        raise CorruptCheckpointError(f"checkpoint file {str(p)!r} has no model_config in its metadata")
    out["path"] = str(p)
    return out


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a checkpoint; named errors for a missing or unreadable file."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        tensors = load_file(meta["path"])
    except Exception as exc:  # noqa: BLE001
        raise CorruptCheckpointError(f"checkpoint file {meta['path']!r} cannot be read ({exc})") from exc
    return tensors, meta


def load_module_state(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: str = "") -> None:
    """Load ``tensors[prefix + name]`` into ``module``; :class:`CheckpointMismatchError` lists every
    missing key, unexpected key and shape mismatch."""
    own = module.state_dict()
    given = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(given) if tuple(given[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f" ... ({len(items)} in all)" if len(items) > 20 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        where = f" in {path!r}" if path else ""
        raise CheckpointMismatchError(
            f"the {prefix.rstrip('.') or 'model'} weights{where} do not fit this model (a checkpoint of another "
            f"config?): " + "; ".join(parts)
        )
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()})


def load_model(path: str | os.PathLike, weights: str = "ema", device: str | torch.device = "cpu",
               config: Any = None) -> nn.Module:
    """The U-Net of a checkpoint (architecture from its metadata unless ``config`` is given), in eval mode.

    ``weights``: ``"ema"`` (default; what sampling uses) or ``"model"`` (the raw weights).
    """
    from .unet import UNetConfig, float32_unet

    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    tensors, meta = read_checkpoint(path)
    if config is None:
        try:
            config = UNetConfig.from_dict(meta["model_config"])
        except (TypeError, ValueError) as exc:
            raise CorruptCheckpointError(f"checkpoint {meta['path']!r}: bad model_config ({exc})") from exc
    model = float32_unet(config)
    if not any(k.startswith(weights + ".") for k in tensors):
        raise CheckpointMismatchError(f"checkpoint {meta['path']!r} holds no {weights!r} weights")
    load_module_state(model, tensors, weights + ".", meta["path"])
    model.checkpoint_metadata = meta  # type: ignore[attr-defined]
    return model.to(device).eval()


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, *, include_raw: bool = False,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the EMA weights (and the raw ones with ``include_raw``) of a training checkpoint to ``dst``."""
    tensors, meta = read_checkpoint(src)
    keep = ("ema.", "model.") if include_raw else ("ema.",)
    out = {k: v for k, v in tensors.items() if k.startswith(keep)}
    md = {
        "format": FORMAT,
        "kind": "weights",
        "step": str(meta["step"]),
        "model_config": json.dumps(meta["model_config"]),
        "train_args": json.dumps(meta.get("train_args", {})),
        "train_seconds": str(meta.get("train_seconds", 0.0)),
        "torch": torch.__version__,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "extra": json.dumps(extra or {}),
    }
    atomic_save(out, dst, md)
    return read_metadata(dst)
