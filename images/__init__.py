"""Image diffusion pipeline of taylorsolve: offline datasets, a DDPM++-style U-Net eps-model, training
that survives interruption and scales out with torchrun, sampling through ``taylorsolve.diffusion``,
and solver-accuracy evaluation.  Command line: ``python -m images {train,sample,evaluate,all,bench,export}``.

Modules: :mod:`images.data`, :mod:`images.unet`, :mod:`images.train`, :mod:`images.checkpoint`,
:mod:`images.sampling` (``diffusion_model``: the U-Net as the diffusion layer's model), :mod:`images.evaluate`,
:mod:`images.classifier`, :mod:`images.main_job`, :mod:`images.bench`, :mod:`images.errors`.
"""
from pathlib import Path

__all__ = ["PACKAGE_DIR", "CHECKPOINT_DIR", "DEFAULT_DIGITS_CHECKPOINT", "DEFAULT_CLASSIFIER"]

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"
#: the committed tiny digits model (EMA weights), see checkpoints/digits_tiny/README.md
DEFAULT_DIGITS_CHECKPOINT = CHECKPOINT_DIR / "digits_tiny" / "model.safetensors"
#: the committed digits classifier of the classifier FD
DEFAULT_CLASSIFIER = CHECKPOINT_DIR / "digits_classifier" / "classifier.safetensors"
