r"""Learned scores and a distilled GENIE head on the toy data (GENIE sec. 3.1, Fig. 4, Alg. 1, Table 2).

* :mod:`toy.learned.model` -- ``EpsMLP``: a small MLP ``eps_theta(x, t)`` (Fourier time embedding),
  exposing its last hidden features; DSM loss (eq. (7)).
* :mod:`toy.learned.train` -- seeded Adam loops, atomic resumable safetensors checkpoints.
* :mod:`toy.learned.head` -- the MLP head ``k_psi`` and its training loop; the objective (targets by
  ``torch.func.jvp`` eq. (12), mixed parameterization eq. (14), gamma^2 weighting eq. (15), time
  sampling, relative errors per band of t) is :mod:`taylorsolve.diffusion.distillation`, shared with
  the image heads.
* :mod:`toy.learned.compare` -- equal-NFE comparison in the form of Table 2 (``python -m toy.learned``).
* quality measures against ``p_0`` come from :mod:`toy.experiments.metrics`.
"""
from .head import (
    DerivativeHead,
    HeadConfig,
    HeadedModel,
    autodiff_target,
    count_parameters,
    distill_head,
    evaluate_head,
    freeze,
    load_head,
    measure_overhead,
)
from taylorsolve.diffusion.distillation import sample_times

from .model import EpsMLP, FourierTimeEmbedding, diffuse, dsm_loss
from .train import (
    CheckpointNotFoundError,
    TrainConfig,
    TrainState,
    load_checkpoint,
    load_eps_model,
    save_checkpoint,
    train_eps_model,
    train_loop,
)

__all__ = [
    "EpsMLP", "FourierTimeEmbedding", "diffuse", "dsm_loss", "sample_times",
    "TrainConfig", "TrainState", "CheckpointNotFoundError", "save_checkpoint", "load_checkpoint",
    "train_loop", "train_eps_model", "load_eps_model",
    "DerivativeHead", "HeadConfig", "HeadedModel", "autodiff_target", "distill_head",
    "evaluate_head", "measure_overhead", "count_parameters", "freeze", "load_head",
]
