"""``--retrain``: reproduce the committed ``tiny`` digits checkpoint with the training arguments recorded
beside it (``images/checkpoints/digits_tiny/train.json``).

Training is a pure function of its arguments (seeded per step, :mod:`images.train`), so on the same
software and thread count the retrained EMA weights equal the committed ones; elsewhere they differ by
floating-point summation order only.  An interrupted retrain continues where it stopped (the run
folder's checkpoint is resumed).
"""
from __future__ import annotations

import json
from pathlib import Path

from . import CHECKPOINT_DIR
from .checkpoint import CHECKPOINT_NAME, export_weights
from .errors import CheckpointNotFoundError
from .train import TrainArgs, train

__all__ = ["committed_train_args", "retrain_committed", "DEFAULT_RETRAIN_DIR"]

DEFAULT_RETRAIN_DIR = Path("runs") / "digits_tiny_retrain"


def committed_train_args(record: str | Path | None = None) -> TrainArgs:
    """The :class:`TrainArgs` recorded for the committed checkpoint."""
    path = Path(record) if record is not None else CHECKPOINT_DIR / "digits_tiny" / "train.json"
    if not path.is_file():
        raise CheckpointNotFoundError(f"training record {str(path)!r} does not exist")
    rec = json.loads(path.read_text())
    fields = {k: v for k, v in rec["train_args"].items() if k in TrainArgs.__dataclass_fields__}
    return TrainArgs(**fields)


def retrain_committed(out: str | Path | None = None, *, quiet: bool = False, threads: int | None = None) -> Path:
    """Train with the recorded arguments into ``out`` (resuming a partial run there) and export the
    EMA weights to ``out/model.safetensors``; returns that path."""
    out = Path(out) if out is not None else DEFAULT_RETRAIN_DIR
    args = committed_train_args()
    args.out = str(out)
    args.resume = (out / CHECKPOINT_NAME).is_file()
    args.progress = not quiet
    if threads is not None:
        args.threads = threads
    import torch

    before = torch.get_num_threads()
    try:
        train(args)  # sets the recorded thread count (bit-exactness depends on it)
    finally:
        torch.set_num_threads(before)
    dst = out / "model.safetensors"
    export_weights(out / CHECKPOINT_NAME, dst)
    return dst
