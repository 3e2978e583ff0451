"""Fixtures of the image-pipeline tests (helpers live in _images_helpers.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 8x8 gaussian-data run of 8 steps (checkpoint folder)."""
    from _images_helpers import train_args

    from images.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    train(train_args(out, steps=8))
    return out


@pytest.fixture(autouse=True)
def _float32_default():
    """Other test modules set torch's default dtype to float64 at import (tests/core/test_order.py);
    these tests assume the usual float32 default."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)
