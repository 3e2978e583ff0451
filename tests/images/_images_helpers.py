"""Shared helpers of the image-pipeline tests: tiny models and runs (imported as ``_images_helpers``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

#: a very small U-Net (about 20k parameters) for 8x8 test images
TINY_KW = {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "emb_mult": 2}


def train_args(out, steps=8, **kw):
    from images.train import TrainArgs

    base = dict(dataset="gaussian", config="tiny", steps=steps, batch_size=8, seed=3, out=str(out), checkpoint_every=4,
                model_kwargs=dict(TINY_KW), progress=False, threads=1, warmup=2, lr=2e-3)
    base.update(kw)
    return TrainArgs(**base)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def python() -> str:
    return sys.executable


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-initialise every convolution (the DDPM++ init starts residual branches and the output near
    zero), so that eps depends on x and t as in a trained network."""
    torch.manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.reset_parameters()
    return model.eval()
