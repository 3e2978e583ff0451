"""Named errors of the image pipeline (:mod:`images`).

Every error a user can cause (a missing dataset folder, an unknown name, a missing, corrupt or
mismatched checkpoint, a diverging run) is a subclass of :class:`ImagesError` whose message names the
file, folder or value at fault and what was expected.  ``python -m images`` prints the message and
exits with status 2 (status 3 for :class:`NonFiniteLossError`) instead of a traceback.
"""
from __future__ import annotations

__all__ = [
    "ImagesError",
    "UnknownNameError",
    "ConfigError",
    "DatasetNotFoundError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "CheckpointMismatchError",
    "ResumeError",
    "NonFiniteLossError",
    "HookError",
    "HeadMismatchError",
    "NotDifferentiableError",
    "ClassLabelError",
    "GuidanceError",
    "MissingConditioningError",
    "ResolutionMismatchError",
]


class ImagesError(Exception):
    """Base class of the image pipeline's errors."""


class UnknownNameError(ImagesError, ValueError):
    """An unknown dataset, config, method or conditioning name (the message lists the known ones)."""


class ConfigError(ImagesError, ValueError):
    """Invalid arguments or settings (a value out of range, incompatible options)."""


class DatasetNotFoundError(ImagesError, FileNotFoundError):
    """A dataset read from ``--data-dir`` is missing (the message names the folder and the layout expected)."""


class CheckpointNotFoundError(ImagesError, FileNotFoundError):
    """A checkpoint file does not exist (the message names it)."""


class CorruptCheckpointError(ImagesError):
    """A checkpoint file cannot be read as a checkpoint of this pipeline (the message names it)."""


class CheckpointMismatchError(ImagesError):
    """A checkpoint's tensors do not fit the model or run (missing/unexpected keys and shape mismatches listed)."""


class ResumeError(ImagesError):
    """``--resume`` without a checkpoint in the run folder, or a run folder that already holds one."""


class NonFiniteLossError(ImagesError):
    """The training loss became NaN/Inf; training stopped at ``step`` and the last good checkpoint was kept."""

    def __init__(self, message: str, step: int, last_checkpoint_step: int | None = None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint_step = last_checkpoint_step


class HookError(ImagesError, LookupError):
    """A prediction head cannot be attached: no module of the network matches the hook preset or the
    names given, or a hooked module was not called / gave the wrong shape (the message lists the
    candidate modules)."""


class HeadMismatchError(CheckpointMismatchError):
    """A head checkpoint belongs to another teacher (other weights or config) or another head config."""


class NotDifferentiableError(ImagesError):
    """The teacher's eps is not differentiable in (x, t) (e.g. integer timesteps with rounding on), so
    the distillation targets of eq. (12) do not exist (the message says what to switch off)."""


class ClassLabelError(ConfigError):
    """Class labels out of range, of a non-integer dtype, or given to an unconditional model."""


class GuidanceError(ConfigError):
    """Classifier-free guidance asked of a model that cannot be guided (no class embedding, no "no label" branch)."""


class MissingConditioningError(ConfigError):
    """A conditional model (a cascaded upsampler) called without its conditioning (the low-resolution image)."""


class ResolutionMismatchError(ConfigError):
    """Images whose resolutions do not fit together (a low-resolution input and the upsampler's output size)."""
